// Acks that mean something: the client acks the newest event whose handlers ran, coalesced.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { LivePanelClient } from "../../src/livepanel/static/livepanel.js";

class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.instances.push(this);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close() {}

  frame(type, payload = {}, id) {
    const frame = { type, timestamp: "2026-02-21T10:00:00.000Z", payload };
    if (id !== undefined) frame.id = id;
    this.onmessage({ data: JSON.stringify(frame) });
  }

  welcome(lastEventId = "e1:0") {
    this.frame("welcome", { connectionId: "c", heartbeatInterval: 25, lastEventId, server: "livepanel/test" });
  }

  get acks() {
    return this.sent.filter((m) => m.type === "ack").map((m) => m.payload.id);
  }
}

const latest = () => FakeSocket.instances.at(-1);
const flush = () => new Promise((resolve) => setImmediate(resolve));

async function open(options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FakeSocket,
    fetch: async () => {
      throw new TypeError("Failed to fetch");
    },
    random: () => 0.5,
    ...options,
  });
  return c;
}

beforeEach(() => {
  FakeSocket.instances = [];
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
});

afterEach(() => {
  mock.timers.reset();
});

test("acks an event once its handlers ran, and coalesces a burst into one more ack", async () => {
  const c = await open();
  const seen = [];
  c.on("tick", (e) => seen.push(e.id));
  await flush();
  latest().welcome();
  for (const n of [1, 2, 3]) latest().frame("tick", { n }, `e1:${n}`);
  assert.deepEqual(seen, ["e1:1", "e1:2", "e1:3"]);
  assert.deepEqual(latest().acks, ["e1:1"]); // at once, then at most one per ackInterval
  mock.timers.tick(250);
  assert.deepEqual(latest().acks, ["e1:1", "e1:3"]);
  assert.equal(c.ackedId, "e1:3");
});

test("a handler that throws does not ack its event", async () => {
  const c = await open();
  c.on("tick", (e) => {
    if (e.payload.n === 2) throw new Error("broken handler");
  });
  process.removeAllListeners("uncaughtException");
  const thrown = [];
  process.on("uncaughtException", (error) => thrown.push(error.message));
  await flush();
  latest().welcome();
  latest().frame("tick", { n: 1 }, "e1:1");
  mock.timers.tick(300);
  latest().frame("tick", { n: 2 }, "e1:2");
  await flush();
  mock.timers.tick(300);
  assert.deepEqual(latest().acks, ["e1:1"]);
  assert.equal(c.ackedId, "e1:1");
  assert.deepEqual(thrown, ["broken handler"]); // still reported, as before
});

test("an async handler acks once it resolves, and later events wait for it", async () => {
  const c = await open();
  let finish;
  const pending = new Promise((resolve) => {
    finish = resolve;
  });
  c.on("tick", (e) => (e.payload.n === 1 ? pending : undefined));
  await flush();
  latest().welcome();
  latest().frame("tick", { n: 1 }, "e1:1");
  latest().frame("tick", { n: 2 }, "e1:2");
  await flush();
  mock.timers.tick(300);
  assert.deepEqual(latest().acks, []); // e1:2 would count for e1:1, whose handler still runs
  finish();
  await flush();
  mock.timers.tick(250);
  assert.deepEqual(latest().acks, ["e1:1", "e1:2"]); // in order, never the later one first
  assert.equal(c.ackedId, "e1:2");
});

test("a handler that never completes keeps every later event unacked", async () => {
  const c = await open();
  c.on("tick", (e) => (e.payload.n === 1 ? new Promise(() => {}) : undefined));
  await flush();
  latest().welcome();
  for (const n of [1, 2, 3]) latest().frame("tick", { n }, `e1:${n}`);
  await flush();
  mock.timers.tick(1000);
  await flush();
  assert.deepEqual(latest().acks, []);
  assert.equal(c.ackedId, null);
});

test("a new connection is told the newest ack after its welcome", async () => {
  await open();
  await flush();
  latest().welcome();
  latest().frame("tick", { n: 1 }, "e1:1");
  const first = latest();
  first.onclose({ code: 1006 });
  mock.timers.tick(1000);
  assert.notEqual(latest(), first);
  latest().welcome("e1:1");
  assert.deepEqual(latest().acks, ["e1:1"]);
});
