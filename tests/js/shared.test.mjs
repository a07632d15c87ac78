// shared: true in livepanel.js: one leader tab holds the connection, the others follow over a
// BroadcastChannel (Node's own) and one takes over, resuming with since, when the leader leaves.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { LivePanelClient, sharedName } from "../../src/livepanel/static/livepanel.js";

const flush = async (rounds = 10) => {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

/** Web Locks, exclusive mode only: granted in request order, released when the callback's promise settles. */
class FakeLocks {
  constructor() {
    this.queues = new Map();
  }

  request(name, options, callback) {
    return new Promise((resolve, reject) => {
      const queue = this.queues.get(name) ?? [];
      this.queues.set(name, queue);
      const entry = { callback, resolve, reject, held: false };
      options.signal?.addEventListener("abort", () => {
        if (entry.held) return;
        queue.splice(queue.indexOf(entry), 1);
        reject(new Error("AbortError"));
      });
      queue.push(entry);
      this.grant(name);
    });
  }

  grant(name) {
    const queue = this.queues.get(name);
    const first = queue[0];
    if (!first || first.held) return;
    first.held = true;
    Promise.resolve(first.callback()).then(first.resolve, first.reject).finally(() => {
      queue.shift();
      this.grant(name);
    });
  }
}

class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.closed = null;
    this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.instances.push(this);
  }

  get since() {
    return new URL(this.url).searchParams.get("since");
  }

  send() {}

  close(code) {
    this.closed = { code };
  }

  frame(type, payload = {}, id) {
    const frame = { type, timestamp: "2026-02-21T10:00:00.000Z", payload };
    if (id !== undefined) frame.id = id;
    this.onmessage({ data: JSON.stringify(frame) });
  }

  welcome(lastEventId = "e1:0") {
    this.frame("welcome", { connectionId: "c", heartbeatInterval: 25, lastEventId, server: "livepanel/test" });
  }
}

let locks;
let tabs;

function tab(options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FakeSocket,
    fetch: async () => {
      throw new TypeError("offline");
    },
    random: () => 0.5,
    shared: true,
    locks,
    BroadcastChannel,
    ...options,
  });
  const seen = [];
  const statuses = [];
  c.on("*", (event) => seen.push(event.id));
  c.on("status", (change) => statuses.push(change.status));
  tabs.push(c);
  return { c, seen, statuses };
}

beforeEach(() => {
  FakeSocket.instances = [];
  locks = new FakeLocks();
  tabs = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  for (const c of tabs) c.close();
  mock.timers.reset();
});

test("three shared tabs open one connection; every tab gets every event once", async () => {
  const a = tab();
  await flush();
  const b = tab();
  const c = tab();
  await flush();
  assert.equal(FakeSocket.instances.length, 1);
  assert.deepEqual([a.c.role, b.c.role, c.c.role], ["leader", "follower", "follower"]);
  const socket = FakeSocket.instances[0];
  socket.welcome("e1:0");
  for (const n of [1, 2, 3]) socket.frame("session.created", { sessionKey: `s${n}` }, `e1:${n}`);
  await flush();
  for (const t of [a, b, c]) {
    assert.deepEqual(t.seen, ["e1:1", "e1:2", "e1:3"]);
    assert.equal(t.c.status, "open");
    assert.equal(t.c.lastEventId, "e1:3");
  }
});

test("a tab that joins later learns the leader's status and state", async () => {
  const a = tab({ state: true });
  await flush();
  const socket = FakeSocket.instances[0];
  socket.welcome("e1:0");
  socket.frame("state", {
    lastEventId: "e1:5",
    collections: { sessions: { key: "sessionKey", keep: null, entries: [{ type: "session.created", id: "e1:5", payload: { sessionKey: "s5" } }] } },
    types: { "session.created": { collection: "sessions", removes: false } },
  });
  const b = tab({ state: true });
  await flush();
  assert.equal(b.c.status, "open");
  assert.deepEqual([...b.c.state.sessions.keys()], ["s5"]);
  assert.equal(b.c.lastEventId, "e1:5");
  assert.equal(a.c.role, "leader");
});

test("when the leader closes, a follower takes over with since and no event is lost or doubled", async () => {
  const a = tab();
  await flush();
  const b = tab();
  const c = tab();
  await flush();
  const first = FakeSocket.instances[0];
  first.welcome("e1:0");
  first.frame("session.created", {}, "e1:1");
  await flush();
  first.frame("session.created", {}, "e1:2");
  a.c.close(); // e1:2 is still on its way to the other tabs when the lock passes on
  await flush();
  assert.equal(FakeSocket.instances.length, 2, "one follower opened the connection, not both");
  const second = FakeSocket.instances[1];
  assert.ok(["e1:1", "e1:2"].includes(second.since), second.since);
  second.welcome("e1:2");
  // the replay overlaps what the old leader passed on: nobody shows e1:2 twice
  second.frame("session.created", {}, "e1:2");
  second.frame("session.created", {}, "e1:3");
  await flush();
  assert.deepEqual(b.seen, ["e1:1", "e1:2", "e1:3"]);
  assert.deepEqual(c.seen, ["e1:1", "e1:2", "e1:3"]);
  assert.equal([b.c.role, c.c.role].filter((role) => role === "leader").length, 1);
  assert.equal(b.c.status, "open");
  assert.equal(c.c.status, "open");
});

test("a follower's reconnect() asks the leader; a follower's close() leaves the leader alone", async () => {
  const a = tab();
  await flush();
  const b = tab();
  await flush();
  FakeSocket.instances[0].welcome();
  await flush();
  b.c.reconnect();
  await flush();
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(FakeSocket.instances[0].closed.code, 4000);
  b.c.close();
  await flush();
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(a.c.role, "leader");
});

test("tabs with other types or state do not share", async () => {
  assert.notEqual(sharedName("ws://p/ws", { types: ["session.*"] }), sharedName("ws://p/ws", {}));
  assert.notEqual(sharedName("ws://p/ws", { state: true }), sharedName("ws://p/ws", {}));
  assert.equal(sharedName("/ws", {}, "http://p/"), sharedName("ws://p/ws", {}));
  tab();
  tab({ types: ["session.*"] });
  await flush();
  assert.equal(FakeSocket.instances.length, 2);
});

test("without Web Locks or BroadcastChannel, shared: true connects on its own", async () => {
  const { c } = tab({ locks: null });
  await flush();
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(c.role, null);
});

test("followers see catching_up then open, and their staleness follows the leader's heartbeats", async () => {
  let clock = 5_000_000;
  const now = () => clock;
  const a = tab({ since: "e1:1", now });
  await flush();
  const b = tab({ now });
  await flush();
  const socket = FakeSocket.instances[0];
  socket.welcome("e1:3");
  await flush();
  assert.equal(b.c.status, "catching_up");
  socket.frame("session.created", {}, "e1:2");
  socket.frame("session.created", {}, "e1:3");
  await flush();
  assert.deepEqual(a.statuses, ["connecting", "catching_up", "open"]);
  assert.deepEqual(b.statuses.slice(-2), ["catching_up", "open"]);
  clock += 20_000;
  assert.equal(b.c.staleness, 20);
  socket.frame("ping", {}); // a heartbeat reaches the leader only: it passes it on
  await flush();
  assert.equal(a.c.staleness, 0);
  assert.equal(b.c.staleness, 0);
  // a tab opened later takes the leader's reading with the sync
  clock += 7_000;
  const c = tab({ now });
  await flush();
  assert.equal(c.c.status, "open");
  assert.equal(c.c.staleness, 7);
});
