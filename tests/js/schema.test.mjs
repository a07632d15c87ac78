// schemaChanged: a bundle built on one set of event types meets a server with another.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { LivePanelClient } from "../../src/livepanel/static/livepanel.js";

class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.instances.push(this);
  }

  send() {}

  close() {}

  frame(type, payload = {}, id) {
    const frame = { type, timestamp: "2026-02-21T10:00:00.000Z", payload };
    if (id !== undefined) frame.id = id;
    this.onmessage({ data: JSON.stringify(frame) });
  }

  welcome(schema) {
    const payload = { connectionId: "c", heartbeatInterval: 25, lastEventId: "e1:0", server: "livepanel/test" };
    if (schema !== undefined) payload.schema = schema;
    this.frame("welcome", payload);
  }

  drop() {
    this.onclose({ code: 1012 });
  }
}

const latest = () => FakeSocket.instances.at(-1);
const flush = () => new Promise((resolve) => setImmediate(resolve));

function client(options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FakeSocket,
    fetch: async () => {
      throw new TypeError("Failed to fetch");
    },
    random: () => 0.5,
    ...options,
  });
  const signals = [];
  const events = [];
  c.on("schemaChanged", (change) => signals.push(change));
  c.on("*", (event) => events.push(event.payload.n));
  return { c, signals, events };
}

beforeEach(() => {
  FakeSocket.instances = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("the same fingerprint says nothing", async () => {
  const { c, signals } = client({ schema: "aaaa" });
  await flush();
  latest().welcome("aaaa");
  assert.deepEqual(signals, []);
  assert.equal(c.schemaChanged, null);
  c.close();
});

test("another fingerprint signals schemaChanged once and events keep flowing", async () => {
  const { c, signals, events } = client({ schema: "aaaa" });
  await flush();
  latest().welcome("bbbb");
  latest().frame("deploy.finished", { n: 1 }, "e1:1");
  assert.deepEqual(signals, [{ expected: "aaaa", actual: "bbbb" }]);
  assert.deepEqual(c.schemaChanged, { expected: "aaaa", actual: "bbbb" });
  assert.deepEqual(events, [1]);
  // the same server again after a reconnect: said once, not on every welcome
  latest().drop();
  mock.timers.tick(30000);
  await flush();
  latest().welcome("bbbb");
  latest().frame("deploy.finished", { n: 2 }, "e1:2");
  assert.equal(signals.length, 1);
  assert.deepEqual(events, [1, 2]);
  c.close();
});

test("a rollback to the bundle's fingerprint clears the signal", async () => {
  const { c, signals } = client({ schema: "aaaa" });
  await flush();
  latest().welcome("bbbb");
  latest().drop();
  mock.timers.tick(30000);
  await flush();
  latest().welcome("aaaa");
  assert.deepEqual(signals, [{ expected: "aaaa", actual: "bbbb" }, null]);
  assert.equal(c.schemaChanged, null);
  c.close();
});

test("a server without fingerprints, or a client without one, compares nothing", async () => {
  const quiet = client({ schema: "aaaa" });
  await flush();
  latest().welcome();
  assert.deepEqual(quiet.signals, []);
  quiet.c.close();
  const unset = client();
  await flush();
  latest().welcome("bbbb");
  assert.deepEqual(unset.signals, []);
  unset.c.close();
});

test("an event type named like the signal cannot fake it", async () => {
  const { c, signals, events } = client({ schema: "aaaa" });
  await flush();
  latest().welcome("aaaa");
  // a hostile or confused server sends a broadcast event of that name: it is no signal
  latest().frame("schemaChanged", { n: 9, expected: "aaaa", actual: "zzzz" }, "e1:3");
  assert.equal(c.schemaChanged, null);
  assert.deepEqual(signals, []);
  assert.deepEqual(events, []);
  c.close();
});

test("a second welcome on one connection is forged and changes nothing", async () => {
  const { c, signals } = client({ schema: "aaaa" });
  await flush();
  latest().welcome("aaaa");
  latest().welcome("ffff"); // e.g. a welcome frame smuggled into a batch
  assert.deepEqual(signals, []);
  assert.equal(c.schemaChanged, null);
  c.close();
});
