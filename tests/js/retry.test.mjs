// Retry hints in livepanel.js: a probe answered 429 with Retry-After, closes 1012/1013 with
// `retry_after=<seconds>`; the wait is the hint plus jitter and is not a failed attempt.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import {
  LivePanelClient,
  MAX_RETRY_HINT,
  parseRetryAfter,
  parseRetryHint,
  retryHintDelay,
} from "../../src/livepanel/static/livepanel.js";
import { FakeSocket } from "./fake_socket.mjs";

const latest = () => FakeSocket.instances.at(-1);
const flush = async (rounds = 3) => {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

/** A fake fetch for the probe: answers `status` with `headers`, and counts the probes. */
function prober(status, headers = {}) {
  const probe = async (url) => {
    probe.calls.push(url);
    return new Response(JSON.stringify({ error: "busy", message: "later" }), { status, headers });
  };
  probe.calls = [];
  return probe;
}

function client(options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FakeSocket,
    fetch: prober(426),
    random: () => 0.5,
    transport: "websocket",
    ...options,
  });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  return { c, changes };
}

beforeEach(() => {
  FakeSocket.instances = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("parseRetryHint reads retry_after=<decimal seconds>, capped at MAX_RETRY_HINT", () => {
  assert.equal(parseRetryHint("retry_after=2.35"), 2.35);
  assert.equal(parseRetryHint("retry_after=1.5"), 1.5);
  assert.equal(parseRetryHint("retry_after=0"), 0);
  assert.equal(parseRetryHint("retry_after=12"), 12);
  assert.equal(parseRetryHint(" retry_after=3 "), 3);
  assert.equal(parseRetryHint("retry_after=900"), MAX_RETRY_HINT);
  assert.equal(MAX_RETRY_HINT, 300);
});

test("attack: a hostile or garbled reason is no hint at all", () => {
  const hostile = [
    "retry_after=-5",
    "retry_after=1e309",
    "retry_after=1e3",
    "retry_after=NaN",
    "retry_after=Infinity",
    "retry_after=",
    "retry_after=.5",
    "retry_after=2.",
    "retry_after=0x10",
    "retry_after=2.35junk",
    "retry_after=2;retry_after=0",
    "RETRY_AFTER=2",
    "retry_after=9".repeat(20),
    "x".repeat(123),
    "\u0000retry_after=1",
    "",
    null,
    undefined,
    42,
  ];
  for (const reason of hostile) assert.equal(parseRetryHint(reason), null, String(reason));
});

test("parseRetryAfter reads whole seconds or an HTTP date, capped; junk is null", () => {
  const now = Date.parse("2026-02-21T10:00:00Z");
  assert.equal(parseRetryAfter("7", now), 7);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter("900", now), MAX_RETRY_HINT);
  assert.equal(parseRetryAfter("Sat, 21 Feb 2026 10:00:30 GMT", now), 30);
  assert.equal(parseRetryAfter("Sat, 21 Feb 2026 09:00:00 GMT", now), 0, "a date in the past: now");
  assert.equal(parseRetryAfter("Sat, 21 Feb 2099 09:00:00 GMT", now), MAX_RETRY_HINT);
  for (const junk of ["-5", "1.5", "1e309", "NaN", "soon", "", "9".repeat(80), null]) {
    assert.equal(parseRetryAfter(junk, now), null, String(junk));
  }
});

test("retryHintDelay: the hint plus a jitter uniform in [0, max(0.25 s, 20 % of the hint)]", () => {
  assert.equal(retryHintDelay(1.5, () => 0), 1500);
  assert.equal(retryHintDelay(1.5, () => 0.999999), 1800);
  assert.equal(retryHintDelay(1, () => 0.999999), 1250);
  assert.equal(retryHintDelay(10, () => 0), 10_000);
  assert.equal(retryHintDelay(10, () => 0.999999), 12_000);
  assert.equal(retryHintDelay(0, () => 0.5), 125);
  assert.equal(retryHintDelay(MAX_RETRY_HINT, () => 0.999999), 360_000);
  assert.equal(retryHintDelay(Infinity, () => 0), MAX_RETRY_HINT * 1000);
  assert.equal(retryHintDelay(NaN, () => 0), 0);
});

test("a close 1012 retry_after=1.5 waits the hint plus jitter, then resumes with since", async () => {
  const { c, changes } = client();
  await flush();
  latest().welcome("e1:0");
  latest().frame("session.created", {}, "e1:4");
  latest().serverClose(1012, "retry_after=1.5");
  const waiting = changes.at(-1);
  assert.equal(waiting.status, "reconnecting");
  assert.equal(waiting.retryAfter, 1.5);
  assert.equal(waiting.closeCode, 1012);
  assert.equal(waiting.retryIn, 1500 + Math.round(0.5 * 300));
  assert.equal(waiting.attempt, 0, "not a failed attempt");
  mock.timers.tick(waiting.retryIn - 1);
  assert.equal(FakeSocket.instances.length, 1, "not before the hint");
  mock.timers.tick(1);
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(latest().since, "e1:4");
  assert.equal(c.status, "reconnecting");
});

test("a close 1013 with a hint before the welcome is followed without a probe", async () => {
  const fetch = prober(426);
  const { changes } = client({ fetch });
  await flush();
  latest().serverClose(1013, "retry_after=2.35");
  await flush();
  assert.equal(fetch.calls.length, 0);
  assert.equal(changes.at(-1).retryIn, 2350 + Math.round(0.5 * 470));
  mock.timers.tick(changes.at(-1).retryIn);
  assert.equal(FakeSocket.instances.length, 2);
});

test("a 1013 without a reason (a slow consumer) keeps the ordinary backoff", async () => {
  const { changes } = client();
  await flush();
  latest().welcome();
  latest().serverClose(1013, "");
  assert.equal(changes.at(-1).attempt, 1);
  assert.equal(changes.at(-1).retryAfter, null);
  assert.equal(changes.at(-1).retryIn, 250);
});

test("a probe answered 429 with Retry-After waits that long, not counted as an attempt", async () => {
  const fetch = prober(429, { "Retry-After": "3" });
  const { c, changes } = client({ fetch });
  await flush();
  latest().serverClose(1006);
  await flush();
  assert.equal(fetch.calls.length, 1);
  const waiting = changes.at(-1);
  assert.equal(waiting.status, "reconnecting");
  assert.equal(waiting.httpStatus, 429);
  assert.equal(waiting.retryAfter, 3);
  assert.equal(waiting.retryIn, 3000 + 300);
  mock.timers.tick(3299);
  assert.equal(FakeSocket.instances.length, 1);
  mock.timers.tick(1);
  assert.equal(FakeSocket.instances.length, 2);
  // the hinted wait did not grow the backoff: the next plain failure starts at the first ceiling
  c.options.fetch = null;
  fetch.calls.length = 0;
  latest().welcome();
  latest().serverClose(1006);
  assert.equal(changes.at(-1).retryIn, 250);
});

test("a 429 without a readable Retry-After falls back to the backoff", async () => {
  const { changes } = client({ fetch: prober(429, { "Retry-After": "later" }) });
  await flush();
  latest().serverClose(1006);
  await flush();
  assert.equal(changes.at(-1).attempt, 1);
  assert.equal(changes.at(-1).retryAfter, null);
});

test("attack: garbled reasons on 1012/1013 count as failed attempts, so the client gives up", async () => {
  const { c, changes } = client({ retries: 3 });
  await flush();
  const reasons = ["retry_after=-5", "retry_after=1e309", "retry_after=NaN", "x".repeat(123)];
  for (let i = 0; i < 8 && c.status !== "closed"; i += 1) {
    latest().serverClose(i % 2 ? 1012 : 1013, reasons[i % reasons.length]);
    await flush();
    mock.timers.tick(30_000);
  }
  assert.equal(c.status, "closed");
  assert.equal(changes.at(-1).reason, "gave_up");
});

test("attack: retry_after=0 forever cannot make the client spin: past maxHintedWaits they count", async () => {
  const { c } = client({ retries: 3, maxHintedWaits: 5 });
  await flush();
  let cycles = 0;
  for (; cycles < 50 && c.status !== "closed"; cycles += 1) {
    latest().welcome();
    latest().serverClose(1012, "retry_after=0");
    await flush();
    mock.timers.tick(60_000);
  }
  assert.equal(c.status, "closed");
  assert.equal(cycles, 5 + 3 + 1, "five free hints, three counted retries, then it gave up");
});

test("attack: retry_after=900 waits at most the cap plus its jitter, never longer", async () => {
  const { changes } = client({ random: () => 0.999999 });
  await flush();
  latest().welcome();
  latest().serverClose(1012, "retry_after=900");
  assert.equal(changes.at(-1).retryAfter, MAX_RETRY_HINT);
  assert.ok(changes.at(-1).retryIn <= 360_000);
  mock.timers.tick(360_000);
  assert.equal(FakeSocket.instances.length, 2);
});

test("the page coming online does not cut a server's retry hint short", async () => {
  const page = new EventTarget();
  globalThis.addEventListener = page.addEventListener.bind(page);
  globalThis.removeEventListener = page.removeEventListener.bind(page);
  try {
    client();
    await flush();
    latest().welcome();
    latest().serverClose(1012, "retry_after=10");
    page.dispatchEvent(new Event("online"));
    assert.equal(FakeSocket.instances.length, 1);
    mock.timers.tick(12_000);
    assert.equal(FakeSocket.instances.length, 2);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

test("a connection that stays open stableAfter resets the run of hints", async () => {
  const { changes } = client({ maxHintedWaits: 1 });
  await flush();
  for (let i = 0; i < 3; i += 1) {
    latest().welcome();
    mock.timers.tick(5000);
    latest().serverClose(1012, "retry_after=1");
    assert.equal(changes.at(-1).attempt, 0, `hint ${i} was counted`);
    mock.timers.tick(1200);
  }
});
