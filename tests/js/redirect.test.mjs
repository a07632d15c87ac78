// livepanel.js on a mount that redirects /ws to /ws/: the slash redirect followed for the
// WebSocket too, any other redirect not, and a fallback to SSE logged, shown and marked.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { LivePanelClient, slashRedirect, streamUrl } from "../../src/livepanel/static/livepanel.js";

const flush = async (rounds = 5) => {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

class Socket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.onmessage = this.onclose = this.onerror = null;
    Socket.instances.push(this);
  }

  send() {}

  close() {}

  refuse() {
    this.onclose({ code: 1006 });
  }

  welcome() {
    const payload = { connectionId: "c", heartbeatInterval: 25, lastEventId: "e1:0", server: "livepanel/test" };
    this.onmessage({ data: JSON.stringify({ type: "welcome", timestamp: "t", payload }) });
  }
}

/** A fake fetch whose probes are redirected to `redirectTo(url)` (or not, for `null`) and answered 426. */
function server(redirectTo) {
  const seen = { probes: [], streams: [] };
  seen.fetch = async (url, init = {}) => {
    if (init.headers?.Accept === "text/event-stream") {
      seen.streams.push(url);
      return { status: 200, ok: true, body: new ReadableStream({ start() {} }), json: async () => ({}) };
    }
    seen.probes.push(url);
    const target = redirectTo(url);
    return {
      status: 426,
      ok: false,
      redirected: target !== null,
      url: target ?? url,
      json: async () => ({ error: "upgrade_required", message: "x" }),
    };
  };
  return seen;
}

function recorder() {
  const lines = { info: [], warn: [] };
  return { lines, console: { info: (m) => lines.info.push(m), warn: (m) => lines.warn.push(m) } };
}

beforeEach(() => {
  Socket.instances = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("slashRedirect: a trailing slash added or removed on the same origin, as ws(s) without a query", () => {
  assert.equal(slashRedirect("ws://panel.test/ws?batch=1", "http://panel.test/ws/?batch=1"), "ws://panel.test/ws/");
  assert.equal(slashRedirect("wss://panel.test/ws/", "https://panel.test/ws"), "wss://panel.test/ws");
  assert.equal(slashRedirect("ws://panel.test/ws", "http://evil.test/ws/"), null); // another host
  assert.equal(slashRedirect("ws://panel.test/ws", "http://panel.test:8080/ws/"), null); // another port
  assert.equal(slashRedirect("wss://panel.test/ws", "http://panel.test/ws/"), null); // a downgrade
  assert.equal(slashRedirect("ws://panel.test/ws", "http://panel.test/login"), null); // another path
  assert.equal(slashRedirect("ws://panel.test/ws", "http://panel.test/ws//"), null);
  assert.equal(slashRedirect("ws://panel.test/ws", "http://panel.test/ws"), null); // no move
  assert.equal(slashRedirect("ws://panel.test/ws", "not a url"), null);
});

test("a probe redirected to /ws/ moves the WebSocket there, logs it, and never falls back", async () => {
  const fake = server((url) => url.replace("/ws?", "/ws/?"));
  const { lines, console } = recorder();
  const c = new LivePanelClient("ws://panel.test/ws", { WebSocket: Socket, fetch: fake.fetch, random: () => 0.5, console });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  await flush();
  Socket.instances.at(-1).refuse();
  await flush();
  assert.equal(c.endpoint, "ws://panel.test/ws/");
  assert.deepEqual(lines.info, ["livepanel: /ws redirects to /ws/; connecting the WebSocket to /ws/"]);
  mock.timers.tick(30000);
  await flush();
  assert.equal(new URL(Socket.instances.at(-1).url).pathname, "/ws/");
  Socket.instances.at(-1).welcome();
  await flush();
  assert.equal(c.status, "open");
  assert.equal(c.transport, "websocket");
  assert.deepEqual(changes.at(-1), { status: "open", previous: "reconnecting", transport: "websocket" });
  assert.equal(fake.streams.length, 0);
  assert.deepEqual(lines.warn, []);
  assert.equal(c.url, "ws://panel.test/ws"); // what the caller gave is kept
  c.close();
});

test("a redirect to another origin is not followed: the client falls back to SSE as without one", async () => {
  const fake = server((url) => url.replace("panel.test", "evil.test").replace("/ws?", "/ws/?"));
  const { lines, console } = recorder();
  const c = new LivePanelClient("ws://panel.test/ws", { WebSocket: Socket, fetch: fake.fetch, random: () => 0.5, console });
  for (let i = 0; i < 2; i += 1) {
    await flush();
    Socket.instances.at(-1).refuse();
    await flush();
    mock.timers.tick(30000);
  }
  await flush();
  assert.equal(c.endpoint, "ws://panel.test/ws");
  assert.ok(Socket.instances.every((socket) => new URL(socket.url).host === "panel.test"));
  assert.deepEqual(lines.info, []);
  assert.equal(c.transport, "sse");
  assert.equal(new URL(fake.streams.at(-1)).host, "panel.test");
  c.close();
});

test("a fallback to SSE is a console warning, fallback: true in the open status, ?fallback=1 on the stream", async () => {
  const fake = server(() => null);
  const { lines, console } = recorder();
  const c = new LivePanelClient("ws://panel.test/ws", { WebSocket: Socket, fetch: fake.fetch, random: () => 0.5, console });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  for (let i = 0; i < 2; i += 1) {
    await flush();
    Socket.instances.at(-1).refuse();
    await flush();
    mock.timers.tick(30000);
  }
  await flush();
  assert.equal(lines.warn.length, 1);
  assert.match(lines.warn[0], /^livepanel: WebSocket handshakes to \/ws fail .*HTTP 426; falling back to Server-Sent Events/);
  assert.equal(new URL(fake.streams.at(-1)).searchParams.get("fallback"), "1");
  // the stream's welcome, through the client's own SSE reading
  c._receive(JSON.stringify({ type: "welcome", timestamp: "t", payload: { heartbeatInterval: 25, lastEventId: "e1:0" } }));
  assert.deepEqual(changes.at(-1), { status: "open", previous: "reconnecting", transport: "sse", fallback: true });
  c.close();
});

test("transport 'sse' chosen by the caller is no fallback: no ?fallback=1, no warning", async () => {
  assert.equal(new URL(streamUrl("ws://panel.test/ws", {})).searchParams.get("fallback"), null);
  const fake = server(() => null);
  const { lines, console } = recorder();
  const c = new LivePanelClient("ws://panel.test/ws", { transport: "sse", fetch: fake.fetch, console });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  await flush();
  assert.equal(new URL(fake.streams.at(-1)).searchParams.get("fallback"), null);
  c._receive(JSON.stringify({ type: "welcome", timestamp: "t", payload: { heartbeatInterval: 25, lastEventId: "e1:0" } }));
  assert.deepEqual(changes.at(-1), { status: "open", previous: "connecting", transport: "sse" });
  assert.deepEqual(lines.warn, []);
  c.close();
});
