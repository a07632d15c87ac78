// LivePanelClient against a fake WebSocket and mocked timers: reconnect, resume, probe, watchdog.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { LivePanelClient, connectUrl, probeUrl, splitFrames } from "../../src/livepanel/static/livepanel.js";
import { FakeSocket } from "./fake_socket.mjs";

const latest = () => FakeSocket.instances.at(-1);
const flush = () => new Promise((resolve) => setImmediate(resolve));
const unreachable = async () => {
  throw new TypeError("Failed to fetch");
};

function client(options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FakeSocket,
    fetch: unreachable,
    random: () => 0.5,
    ...options,
  });
  const statuses = [];
  c.on("status", (change) => statuses.push(change.status));
  return { c, statuses };
}

beforeEach(() => {
  FakeSocket.instances = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("connects once listeners are registered, with ?batch=1 and no since", async () => {
  const { c, statuses } = client();
  assert.equal(FakeSocket.instances.length, 0);
  await flush();
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(new URL(latest().url).searchParams.get("batch"), "1");
  assert.equal(latest().since, null);
  latest().welcome();
  assert.deepEqual(statuses, ["connecting", "open"]);
  assert.equal(c.isConnected, true);
});

test("resumes from welcome.lastEventId when no event has arrived yet", async () => {
  const { c } = client();
  await flush();
  latest().welcome("e1:41");
  latest().drop();
  mock.timers.tick(250);
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(latest().since, "e1:41");
  assert.equal(c.lastEventId, "e1:41");
});

test("resumes from the last event received", async () => {
  const { c } = client();
  await flush();
  latest().welcome("e1:41");
  latest().frame("session.created", { sessionKey: "s1" }, "e1:42");
  latest().frame("session.killed", { sessionKey: "s1" }, "e1:43");
  latest().drop();
  mock.timers.tick(250);
  assert.equal(latest().since, "e1:43");
  assert.equal(c.lastEvent.id, "e1:43");
});

test("dispatches by type and to '*', splitting newline-delimited frames", async () => {
  const { c } = client();
  const created = [];
  const all = [];
  c.on("session.created", (e) => created.push(e.payload.sessionKey));
  c.on("*", (e) => all.push(e.id));
  await flush();
  latest().welcome();
  const line = (n) =>
    JSON.stringify({ type: n % 2 ? "session.created" : "cron.executed", payload: { sessionKey: `s${n}` }, id: `e1:${n}` });
  latest().onmessage({ data: [1, 2, 3].map(line).join("\n") });
  assert.deepEqual(created, ["s1", "s3"]);
  assert.deepEqual(all, ["e1:1", "e1:2", "e1:3"]);
});

test("a listener that throws does not stop the others", async () => {
  const { c } = client();
  const seen = [];
  c.on("agent.status", () => {
    throw new Error("boom");
  });
  c.on("agent.status", (e) => seen.push(e.id));
  await flush();
  const rethrown = [];
  const original = globalThis.queueMicrotask;
  globalThis.queueMicrotask = (fn) => rethrown.push(fn); // where the client reports it
  try {
    latest().welcome();
    latest().frame("agent.status", {}, "e1:1");
  } finally {
    globalThis.queueMicrotask = original;
  }
  assert.deepEqual(seen, ["e1:1"]);
  assert.equal(rethrown.length, 1);
  assert.throws(rethrown[0], /boom/);
});

test("a refused handshake probed with 401 ends in auth_failed and never retries", async () => {
  const probes = [];
  const fetch = async (url) => {
    probes.push(url);
    return { status: 401, json: async () => ({ error: "unauthorized", message: "authentication required" }) };
  };
  const { c, statuses } = client({ fetch });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  await flush();
  latest().drop();
  await flush();
  assert.deepEqual(probes, ["http://panel.test/ws?batch=1"]);
  assert.deepEqual(statuses, ["connecting", "auth_failed"]);
  assert.equal(changes.at(-1).httpStatus, 401);
  assert.equal(changes.at(-1).code, "unauthorized");
  mock.timers.tick(120_000);
  assert.equal(FakeSocket.instances.length, 1);
});

test("a 403 probe ends in auth_failed too", async () => {
  const { statuses } = client({ fetch: async () => ({ status: 403, json: async () => ({}) }) });
  await flush();
  latest().drop();
  await flush();
  assert.equal(statuses.at(-1), "auth_failed");
});

test("a probe answering 426 (the checks pass) means retry", async () => {
  const { statuses } = client({ fetch: async () => ({ status: 426, json: async () => ({}) }) });
  await flush();
  latest().drop();
  await flush();
  assert.equal(statuses.at(-1), "reconnecting");
});

test("gives up with status closed after 10 failed retries", async () => {
  const { c, statuses } = client({ random: () => 0.999 });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  await flush();
  for (let i = 0; i < 11; i += 1) {
    latest().drop();
    await flush();
    mock.timers.tick(30_000);
  }
  assert.equal(FakeSocket.instances.length, 11, "the first connection and 10 retries");
  assert.equal(statuses.at(-1), "closed");
  assert.equal(changes.at(-1).reason, "gave_up");
  assert.deepEqual(
    changes.filter((ch) => ch.status === "reconnecting").map((ch) => ch.delay),
    [499, 999, 1998, 3996, 7992, 15984, 29970, 29970, 29970, 29970],
  );
  mock.timers.tick(120_000);
  assert.equal(FakeSocket.instances.length, 11);
});

test("a connection that stays open for stableAfter resets the retry budget", async () => {
  const { statuses } = client({ retries: 2 });
  await flush();
  for (let round = 0; round < 3; round += 1) {
    latest().welcome();
    mock.timers.tick(5000); // DEFAULT_OPTIONS.stableAfter
    latest().drop();
    await flush();
    mock.timers.tick(30_000);
  }
  latest().welcome();
  assert.equal(statuses.at(-1), "open");
});

test("attack: welcomes of connections dropped at once do not reset the retry budget", async () => {
  // a forged or flapping server that welcomes and drops must not earn endless fast retries
  const { statuses } = client({ retries: 3 });
  await flush();
  let opened = 1;
  for (let round = 0; round < 10 && statuses.at(-1) !== "closed"; round += 1) {
    latest().welcome();
    mock.timers.tick(4999);
    latest().drop();
    await flush();
    mock.timers.tick(30_000);
    opened = FakeSocket.instances.length;
  }
  assert.equal(statuses.at(-1), "closed");
  assert.equal(opened, 4, "the first connection and three retries");
});

test("attack: a second welcome on one connection is ignored", async () => {
  const { c } = client();
  await flush();
  latest().welcome("e1:0", 25);
  latest().welcome("e1:0", 0.001); // forged, e.g. through a poisoned stream
  assert.equal(c.heartbeatInterval, 25);
  mock.timers.tick(49_999);
  assert.equal(FakeSocket.instances.length, 1);
});

test("no frame within two heartbeat intervals forces a reconnect", async () => {
  const { statuses } = client();
  await flush();
  const first = latest();
  first.welcome("e1:0", 1);
  mock.timers.tick(1500);
  first.frame("ping");
  mock.timers.tick(1999);
  assert.equal(FakeSocket.instances.length, 1, "a ping within two intervals keeps it");
  mock.timers.tick(1);
  assert.equal(first.closed.code, 4000);
  assert.equal(statuses.at(-1), "reconnecting");
  mock.timers.tick(250);
  assert.equal(FakeSocket.instances.length, 2);
});

test("resume_unavailable is surfaced, and the next resume starts from this welcome", async () => {
  const { c } = client({ since: "old:9" });
  const gone = [];
  c.on("resume_unavailable", (error) => gone.push(error.code));
  await flush();
  assert.equal(latest().since, "old:9");
  latest().welcome("new:3");
  latest().frame("error", { code: "resume_unavailable", message: "refetch" });
  assert.deepEqual(gone, ["resume_unavailable"]);
  assert.equal(c.lastEventId, "new:3");
  latest().drop();
  mock.timers.tick(250);
  assert.equal(latest().since, "new:3");
});

test("other server errors go to 'error' listeners", async () => {
  const { c } = client();
  const errors = [];
  c.on("error", (error) => errors.push(error.code));
  await flush();
  latest().welcome();
  latest().frame("error", { code: "rate_limited", message: "slow down" });
  latest().onmessage({ data: "not json" });
  assert.deepEqual(errors, ["rate_limited", "invalid_frame"]);
});

test("reconnect({since}) connects at once from the given id", async () => {
  const { c, statuses } = client();
  await flush();
  latest().welcome("e1:5");
  const first = latest();
  c.reconnect({ since: "e1:9" });
  assert.equal(first.closed.code, 4000);
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(latest().since, "e1:9");
  first.drop(); // the old socket's late close is ignored
  assert.deepEqual(statuses, ["connecting", "open", "connecting"]);
});

test("close() closes for good", async () => {
  const { c, statuses } = client();
  await flush();
  latest().welcome();
  c.close();
  assert.equal(latest().closed.code, 1000);
  mock.timers.tick(120_000);
  assert.equal(FakeSocket.instances.length, 1);
  assert.deepEqual(statuses, ["connecting", "open", "closed"]);
});

test("no welcome within connectTimeout drops the attempt and retries", async () => {
  const { statuses } = client({ connectTimeout: 1000 });
  await flush();
  mock.timers.tick(1000);
  assert.equal(statuses.at(-1), "reconnecting");
  mock.timers.tick(250);
  assert.equal(FakeSocket.instances.length, 2);
});

test("the page coming back online cuts the backoff short", async () => {
  const page = new EventTarget();
  globalThis.addEventListener = page.addEventListener.bind(page);
  globalThis.removeEventListener = page.removeEventListener.bind(page);
  try {
    const { c } = client({ random: () => 0.999 });
    await flush();
    latest().welcome();
    for (let i = 0; i < 5; i += 1) {
      latest().drop();
      await flush();
      mock.timers.tick(30_000);
    }
    latest().drop();
    await flush();
    assert.equal(c.status, "reconnecting");
    const before = FakeSocket.instances.length;
    page.dispatchEvent(new Event("online"));
    assert.equal(FakeSocket.instances.length, before + 1);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

test("URLs: relative and http URLs become ws, the probe is http without since", () => {
  assert.equal(connectUrl("/ws", { since: "e:1" }, "https://panel.test/app"), "wss://panel.test/ws?batch=1&since=e%3A1");
  assert.equal(
    connectUrl("http://panel.test/ws?types=x", { types: ["session.*", "cron.*"], batch: false }),
    "ws://panel.test/ws?types=session.*%2Ccron.*",
  );
  assert.equal(probeUrl("wss://panel.test/ws?batch=1&since=e%3A1"), "https://panel.test/ws?batch=1");
  assert.throws(() => connectUrl("ftp://panel.test/ws"), TypeError);
  assert.deepEqual(splitFrames('{"a":1}\n{"b":2}\n'), ['{"a":1}', '{"b":2}']);
});

test("a client that gave up wakes up with the page, unless closed", async () => {
  const page = new EventTarget();
  globalThis.addEventListener = page.addEventListener.bind(page);
  globalThis.removeEventListener = page.removeEventListener.bind(page);
  try {
    const { c, statuses } = client({ retries: 1 });
    await flush();
    latest().drop();
    await flush();
    mock.timers.tick(1000);
    latest().drop();
    await flush();
    assert.equal(statuses.at(-1), "closed");
    page.dispatchEvent(new Event("online"));
    assert.equal(statuses.at(-1), "connecting", "a fresh start when the network returns");
    assert.equal(FakeSocket.instances.length, 3);
    c.close();
    page.dispatchEvent(new Event("online"));
    assert.equal(FakeSocket.instances.length, 3);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

// ---------------------------------------------------------------------------- state on connect

const STATE = {
  lastEventId: "e1:5",
  collections: {
    sessions: {
      key: "sessionKey",
      keep: null,
      entries: [
        { type: "session.created", id: "e1:1", timestamp: "t", payload: { sessionKey: "s1" } },
        { type: "session.created", id: "e1:4", timestamp: "t", payload: { sessionKey: "s2" } },
      ],
    },
    gateway: { key: null, keep: 1, entries: [] },
  },
  types: {
    "session.created": { collection: "sessions", removes: false },
    "session.killed": { collection: "sessions", removes: true },
    "gateway.status": { collection: "gateway", removes: false },
  },
};

test("with {state: true} it asks for ?state=1 and keeps client.state from the state frame", async () => {
  const { c } = client({ state: true });
  const changes = [];
  c.on("state", (change) => changes.push(change));
  await flush();
  assert.equal(new URL(latest().url).searchParams.get("state"), "1");
  latest().welcome("e1:5");
  latest().frame("state", STATE);
  assert.deepEqual([...c.state.sessions.keys()], ["s1", "s2"]);
  assert.equal(c.lastEventId, "e1:5");
  assert.equal(changes.length, 1);
  assert.equal(changes[0].reset, true);
});

test("live events update client.state by the types rules, one changed Map each", async () => {
  const { c } = client({ state: true });
  const changes = [];
  c.on("state", (change) => changes.push(change));
  await flush();
  latest().welcome("e1:5");
  latest().frame("state", STATE);
  const gateway = c.state.gateway;
  latest().frame("session.killed", { sessionKey: "s1", agentId: "a" }, "e1:6");
  latest().frame("session.created", { sessionKey: "s3" }, "e1:7");
  latest().frame("session.created", { sessionKey: "s2" }, "e1:8");
  assert.deepEqual([...c.state.sessions.keys()], ["s3", "s2"]);
  assert.equal(c.state.sessions.get("s2").id, "e1:8");
  assert.equal(c.state.gateway, gateway); // untouched collections keep their identity
  latest().frame("gateway.status", { status: "running" }, "e1:9");
  latest().frame("gateway.status", { status: "stopped" }, "e1:10");
  assert.deepEqual([...c.state.gateway.values()].map((e) => e.id), ["e1:10"]);
  latest().frame("agent.status", { agentId: "a1" }, "e1:11"); // no collection it knows
  assert.deepEqual(
    changes.map((change) => change.collection),
    [null, "sessions", "sessions", "sessions", "gateway", "gateway"],
  );
});

test("a reconnect resumes with since and state; a new state frame replaces the old", async () => {
  const { c } = client({ state: true });
  await flush();
  latest().welcome("e1:5");
  latest().frame("state", STATE);
  latest().frame("session.created", { sessionKey: "s3" }, "e1:6");
  latest().drop();
  mock.timers.tick(30000);
  await flush();
  assert.equal(latest().since, "e1:6");
  assert.equal(new URL(latest().url).searchParams.get("state"), "1");
  latest().welcome("e2:0");
  latest().frame("state", { ...STATE, lastEventId: "e2:0", collections: { sessions: { key: "sessionKey", keep: null, entries: [] } } });
  assert.deepEqual([...c.state.sessions.keys()], []);
  assert.equal(c.state.gateway, undefined);
  assert.equal(c.lastEventId, "e2:0");
});

test("without {state: true} a state frame is ignored", async () => {
  const { c } = client();
  await flush();
  assert.equal(new URL(latest().url).searchParams.get("state"), null);
  latest().welcome();
  latest().frame("state", STATE);
  assert.equal(c.state, null);
});

test("URLs: credentials in the page's URL are left out of the WebSocket and probe URLs", () => {
  const url = connectUrl("/ws", { state: true }, "http://user:pa%3Ass@panel.test:8000/");
  assert.equal(url, "ws://panel.test:8000/ws?batch=1&state=1");
  assert.equal(probeUrl(url), "http://panel.test:8000/ws?batch=1&state=1");
});

// ---------------------------------------------------------------------------- tickets

function numberedTickets() {
  let issued = 0;
  const ticket = async () => `t${++issued}`;
  return { ticket, count: () => issued };
}

const ticketOf = (url) => new URL(url).searchParams.get("ticket");

test("tickets: a fresh ticket is fetched before every connection and sent as ?ticket=", async () => {
  const { ticket } = numberedTickets();
  client({ ticket });
  await flush();
  assert.equal(ticketOf(latest().url), "t1");
  latest().welcome();
  latest().drop();
  mock.timers.tick(250);
  await flush();
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(ticketOf(latest().url), "t2", "never the spent one");
});

test("tickets: the probe of a refused handshake carries a fresh ticket, not the spent one", async () => {
  const { ticket } = numberedTickets();
  const probes = [];
  const fetch = async (url) => {
    probes.push(url);
    return { status: 426, json: async () => ({}) };
  };
  const { statuses } = client({ ticket, fetch });
  await flush();
  latest().drop(); // refused: the server answered 401 to the handshake, say, after a restart
  await flush();
  assert.deepEqual(probes, ["http://panel.test/ws?batch=1&ticket=t2"]);
  assert.equal(statuses.at(-1), "reconnecting");
  mock.timers.tick(250);
  await flush();
  assert.equal(ticketOf(latest().url), "t3");
});

test("tickets: a probe refused with a fresh ticket ends in auth_failed", async () => {
  const { ticket } = numberedTickets();
  const fetch = async () => ({ status: 401, json: async () => ({ error: "unauthorized" }) });
  const { statuses } = client({ ticket, fetch });
  await flush();
  latest().drop();
  await flush();
  assert.equal(statuses.at(-1), "auth_failed");
});

test("tickets: a ticket function that fails is reported and retried with backoff", async () => {
  let calls = 0;
  const ticket = async () => {
    calls += 1;
    if (calls === 1) throw new Error("503 from /api/livepanel-ticket");
    return calls === 2 ? "" : "t3";
  };
  const { c, statuses } = client({ ticket });
  const errors = [];
  c.on("error", (error) => errors.push(error));
  await flush();
  assert.equal(FakeSocket.instances.length, 0);
  assert.deepEqual(errors, [{ code: "ticket_unavailable", message: "503 from /api/livepanel-ticket" }]);
  assert.equal(statuses.at(-1), "reconnecting");
  mock.timers.tick(250);
  await flush();
  assert.equal(errors.length, 2, "an empty ticket is a failure too");
  assert.equal(FakeSocket.instances.length, 0);
  mock.timers.tick(1000);
  await flush();
  assert.equal(ticketOf(latest().url), "t3");
});

test("tickets: close() while a ticket is on its way opens no socket", async () => {
  let release;
  const ticket = () => new Promise((resolve) => (release = resolve));
  const { c } = client({ ticket });
  await flush();
  c.close();
  release("t1");
  await flush();
  assert.equal(FakeSocket.instances.length, 0);
});

test("tickets: a ticket that never comes counts against connectTimeout", async () => {
  let calls = 0;
  const ticket = () => {
    calls += 1;
    return calls === 1 ? new Promise(() => {}) : Promise.resolve("t2");
  };
  const { statuses } = client({ ticket });
  await flush();
  mock.timers.tick(10_000);
  assert.equal(statuses.at(-1), "reconnecting");
  mock.timers.tick(1000);
  await flush();
  assert.equal(ticketOf(latest().url), "t2");
});

test("tickets: connectUrl adds the ticket, probeUrl swaps it for a fresh one or drops it", () => {
  assert.equal(connectUrl("/ws", { ticket: "a.b" }, "https://panel.test/"), "wss://panel.test/ws?batch=1&ticket=a.b");
  assert.equal(probeUrl("wss://panel.test/ws?batch=1&ticket=old"), "https://panel.test/ws?batch=1");
  assert.equal(probeUrl("wss://panel.test/ws?ticket=old", "new"), "https://panel.test/ws?ticket=new");
});
