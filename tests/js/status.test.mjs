// Statuses and staleness in livepanel.js: `catching_up` while a replay or the state is on its
// way, `open` once live, and `client.staleness`, against a fake WebSocket and mocked timers.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { LivePanelClient, STATUSES, catchesUp } from "../../src/livepanel/static/livepanel.js";
import { FakeSocket as BaseSocket } from "./fake_socket.mjs";

class FakeSocket extends BaseSocket {
  static instances = [];

  /** The pong the server sends for the client's catch-up ping (its payload echoed). */
  answerPing() {
    const ping = this.sent.find((message) => message.type === "ping");
    assert.ok(ping, "the client sent no ping");
    this.frame("pong", ping.payload);
  }
}

const latest = () => FakeSocket.instances.at(-1);
const flush = () => new Promise((resolve) => setImmediate(resolve));
let clock = 0;

function client(options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FakeSocket,
    fetch: async () => {
      throw new TypeError("Failed to fetch");
    },
    random: () => 0.5,
    now: () => clock,
    ...options,
  });
  const statuses = [];
  c.on("status", (change) => statuses.push(change.status));
  return { c, statuses };
}

beforeEach(() => {
  FakeSocket.instances = [];
  clock = 1_000_000;
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("the statuses, in the order a connection goes through them", () => {
  assert.deepEqual(STATUSES, ["connecting", "catching_up", "open", "reconnecting", "auth_failed", "closed"]);
});

test("catchesUp: a since other than the welcome's position, or state without since", () => {
  assert.equal(catchesUp(null, "e:5"), false);
  assert.equal(catchesUp("e:5", "e:5"), false);
  assert.equal(catchesUp("e:3", "e:5"), true);
  assert.equal(catchesUp(null, "e:5", true), true);
  assert.equal(catchesUp("e:5", "e:5", true), false, "a resumable since sends no state frame");
});

test("a first connection without since or state is live at the welcome, and sends no ping", async () => {
  const { c, statuses } = client();
  await flush();
  latest().welcome("e1:7");
  assert.deepEqual(statuses, ["connecting", "open"]);
  assert.equal(c.isConnected, true);
  assert.deepEqual(latest().sent, []);
});

test("a resume with a replay in flight is catching_up until the welcome's newest event arrives", async () => {
  const { c, statuses } = client({ since: "e1:2" });
  const seen = [];
  c.on("session.created", (event) => seen.push([event.id, c.status]));
  await flush();
  latest().welcome("e1:5");
  assert.deepEqual(statuses, ["connecting", "catching_up"]);
  assert.equal(c.isConnected, false, "the socket is up but the screen is not current");
  for (const id of ["e1:3", "e1:4"]) latest().frame("session.created", {}, id);
  assert.equal(c.status, "catching_up");
  latest().frame("session.created", {}, "e1:5");
  assert.deepEqual(statuses, ["connecting", "catching_up", "open"]);
  assert.equal(c.isConnected, true);
  // the handlers of the replay's last event ran before the status said live
  assert.deepEqual(seen.at(-1), ["e1:5", "catching_up"]);
  latest().frame("session.created", {}, "e1:6");
  assert.deepEqual(statuses, ["connecting", "catching_up", "open"]);
});

test("a resume from the welcome's own position has nothing to replay: open at once", async () => {
  const { statuses } = client({ since: "e1:5" });
  await flush();
  latest().welcome("e1:5");
  assert.deepEqual(statuses, ["connecting", "open"]);
  assert.equal(latest().sent.filter((m) => m.type === "ping").length, 0);
});

test("a replay whose last event the type filter drops ends with the answer to the catch-up ping", async () => {
  const { statuses } = client({ since: "e1:2", types: ["session.*"] });
  await flush();
  latest().welcome("e1:9");
  const pings = latest().sent.filter((m) => m.type === "ping");
  assert.equal(pings.length, 1);
  latest().frame("session.created", {}, "e1:4"); // the last session event; e1:9 was another type
  assert.equal(statuses.at(-1), "catching_up");
  latest().answerPing();
  assert.deepEqual(statuses, ["connecting", "catching_up", "open"]);
});

test("attack: a pong that is not the answer to this connection's ping does not end catching_up", async () => {
  const { c } = client({ since: "e1:2" });
  await flush();
  latest().welcome("e1:9");
  const mine = latest().sent.find((m) => m.type === "ping").payload.caughtUp;
  latest().frame("pong", {});
  latest().frame("pong", { caughtUp: mine - 1 });
  latest().frame("pong", { caughtUp: String(mine) });
  latest().frame("session.created", {}, "e1:8");
  assert.equal(c.status, "catching_up");
});

test("a server that never finishes the replay never shows open: the watchdog reconnects", async () => {
  const { c, statuses } = client({ since: "e1:2" });
  await flush();
  latest().welcome("e1:9", 1);
  latest().frame("session.created", {}, "e1:3");
  mock.timers.tick(1999);
  assert.equal(c.status, "catching_up");
  mock.timers.tick(1);
  assert.deepEqual(statuses, ["connecting", "catching_up", "reconnecting"]);
  mock.timers.tick(250);
  assert.equal(latest().since, "e1:3", "the next resume goes on after what did arrive");
});

test("state: true waits for the state frame; resume_unavailable ends catching_up; so does a heartbeat", async () => {
  const withState = client({ state: true });
  await flush();
  const first = latest();
  first.welcome("e1:4");
  assert.equal(withState.c.status, "catching_up");
  first.frame("state", { lastEventId: "e1:4", collections: {}, types: {} });
  assert.deepEqual(withState.statuses, ["connecting", "catching_up", "open"]);
  withState.c.close();

  const unavailable = client({ since: "old:1" });
  await flush();
  latest().welcome("e2:0");
  latest().frame("error", { code: "resume_unavailable", message: "gone" });
  assert.deepEqual(unavailable.statuses, ["connecting", "catching_up", "open"]);
  unavailable.c.close();

  const quiet = client({ since: "e1:1", transport: "websocket" });
  await flush();
  latest().welcome("e1:3");
  latest().frame("ping", {}); // a heartbeat: the server had nothing queued for an interval
  assert.deepEqual(quiet.statuses, ["connecting", "catching_up", "open"]);
});

test("rate_limited after the welcome answers a message sent after it: the replay is through", async () => {
  const { c } = client({ since: "e1:1" });
  await flush();
  latest().welcome("e1:30");
  latest().frame("error", { code: "rate_limited", message: "slow down" });
  assert.equal(c.status, "open");
});

test("staleness: Infinity before anything arrived, then seconds since the newest event or heartbeat", async () => {
  const { c } = client();
  assert.equal(c.staleness, Infinity);
  await flush();
  latest().welcome("e1:0");
  assert.equal(c.staleness, 0, "live at the welcome: current as of now");
  clock += 4_000;
  assert.equal(c.staleness, 4);
  latest().frame("session.created", {}, "e1:1");
  assert.equal(c.staleness, 0);
  clock += 2_500;
  assert.equal(c.staleness, 2.5);
  latest().frame("ping", {});
  assert.equal(c.staleness, 0);
  clock += 1_000;
  latest().frame("pong", {}); // an answer to a ping of ours is not a heartbeat
  assert.equal(c.staleness, 1);
});

test("staleness keeps growing while reconnecting, and a catching-up welcome does not reset it", async () => {
  const { c } = client();
  await flush();
  latest().welcome("e1:0");
  latest().frame("session.created", {}, "e1:1");
  latest().drop();
  clock += 30_000;
  mock.timers.tick(250);
  assert.equal(c.status, "reconnecting");
  assert.equal(FakeSocket.instances.length, 2);
  latest().welcome("e1:6"); // resumes after e1:1: five events to replay
  assert.equal(c.status, "catching_up");
  assert.equal(c.staleness, 30);
  latest().frame("session.created", {}, "e1:6");
  assert.equal(c.status, "open");
  assert.equal(c.staleness, 0);
});
