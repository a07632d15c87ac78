// Server-Sent Events in livepanel.js: the stream parser, the SSE transport and the `auto` fallback.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import {
  LivePanelClient,
  shouldFallBack,
  sseParser,
  streamUrl,
} from "../../src/livepanel/static/livepanel.js";

const flush = async (rounds = 5) => {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
};
const encoder = new TextEncoder();

/** A fake fetch: SSE requests get a stream the test writes to; anything else `probeStatus`. */
class FakeServer {
  constructor({ probeStatus = 426, streamStatus = 200 } = {}) {
    this.probeStatus = probeStatus;
    this.streamStatus = streamStatus;
    this.streams = [];
    this.probes = [];
    this.fetch = async (url, init = {}) => {
      if (init.headers?.Accept !== "text/event-stream") {
        this.probes.push(url);
        return new Response(JSON.stringify({ error: "x", message: "y" }), { status: this.probeStatus });
      }
      const stream = { url, init, controller: null, aborted: false };
      const body = new ReadableStream({
        start(controller) {
          stream.controller = controller;
        },
      });
      init.signal?.addEventListener("abort", () => {
        stream.aborted = true;
      });
      this.streams.push(stream);
      if (this.streamStatus !== 200) {
        return new Response(JSON.stringify({ error: "unauthorized", message: "no" }), {
          status: this.streamStatus,
        });
      }
      return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
    };
  }

  get latest() {
    return this.streams.at(-1);
  }

  write(text) {
    this.latest.controller.enqueue(encoder.encode(text));
  }

  frame(type, payload = {}, id) {
    const frame = { type, timestamp: "2026-02-21T10:00:00.000Z", payload };
    if (id !== undefined) frame.id = id;
    this.write(`event: ${type}\n${id ? `id: ${id}\n` : ""}data: ${JSON.stringify(frame)}\n\n`);
  }

  welcome(lastEventId = "e1:0", heartbeatInterval = 25) {
    this.frame("welcome", { connectionId: "c", heartbeatInterval, lastEventId, server: "livepanel/test" });
  }

  end() {
    this.latest.controller.close();
  }
}

class FailingSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.onmessage = this.onclose = this.onerror = null;
    FailingSocket.instances.push(this);
  }

  send() {}

  refuse() {
    this.onclose({ code: 1006 });
  }

  close(code) {
    this.closed = code;
  }

  welcome(lastEventId = "e1:0") {
    const payload = { connectionId: "c", heartbeatInterval: 25, lastEventId, server: "livepanel/test" };
    this.onmessage({ data: JSON.stringify({ type: "welcome", timestamp: "t", payload }) });
  }
}

function client(server, options = {}) {
  const c = new LivePanelClient("ws://panel.test/ws", {
    WebSocket: FailingSocket,
    fetch: server.fetch,
    random: () => 0.5,
    ...options,
  });
  const statuses = [];
  c.on("status", (change) => statuses.push(change.status));
  return { c, statuses };
}

beforeEach(() => {
  FailingSocket.instances = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("parser: messages split anywhere come out whole, comments give nothing", () => {
  const text = 'event: welcome\ndata: {"a":1}\n\n: ping\n\nevent: session.created\nid: e1:1\ndata: {"b":2}\n\n';
  for (let cut = 0; cut <= text.length; cut += 1) {
    const parser = sseParser();
    const messages = [...parser.push(text.slice(0, cut)), ...parser.push(text.slice(cut))];
    assert.deepEqual(messages, [
      { event: "welcome", id: null, data: '{"a":1}' },
      { event: "session.created", id: "e1:1", data: '{"b":2}' },
    ]);
  }
});

test("parser: CRLF and CR line ends, multi-line data, a field without a space", () => {
  const parser = sseParser();
  const messages = [...parser.push("data:one\r\ndata: two\r"), ...parser.push("\n\r\nevent:x\rdata: 3\r\r\n")];
  assert.deepEqual(messages, [
    { event: "message", id: null, data: "one\ntwo" },
    { event: "x", id: null, data: "3" },
  ]);
});

test("shouldFallBack: 426 and 2xx yes; refusals and errors no", () => {
  assert.equal(shouldFallBack(426), true);
  assert.equal(shouldFallBack(200), true);
  for (const status of [401, 403, 404, 429, 500, 502, 503]) assert.equal(shouldFallBack(status), false);
});

test("streamUrl: http(s), no batch, since, state and ticket in the query", () => {
  const url = new URL(streamUrl("wss://panel.test/ws", { since: "e1:4", state: true, ticket: "t", batch: true }));
  assert.equal(url.protocol, "https:");
  assert.equal(url.searchParams.get("batch"), null);
  assert.equal(url.searchParams.get("since"), "e1:4");
  assert.equal(url.searchParams.get("state"), "1");
  assert.equal(url.searchParams.get("ticket"), "t");
  assert.equal(new URL(streamUrl("/ws", {}, "http://panel.test/")).protocol, "http:");
});

test("transport 'sse' reads the stream with Accept: text/event-stream and dispatches every type", async () => {
  const server = new FakeServer();
  const { c, statuses } = client(server, { transport: "sse" });
  const all = [];
  c.on("*", (event) => all.push(event.id));
  await flush();
  assert.equal(FailingSocket.instances.length, 0);
  assert.equal(server.streams.length, 1);
  assert.equal(server.latest.init.headers.Accept, "text/event-stream");
  assert.equal(new URL(server.latest.url).protocol, "http:");
  server.welcome("e1:0");
  server.frame("session.created", { sessionKey: "s1" }, "e1:1");
  server.write(": ping\n\n");
  server.frame("some.type.nobody.named", {}, "e1:2");
  await flush();
  assert.deepEqual(statuses, ["connecting", "open"]);
  assert.equal(c.transport, "sse");
  assert.deepEqual(all, ["e1:1", "e1:2"]);
  assert.equal(c.lastEventId, "e1:2");
});

test("sse: an ended stream reconnects with backoff and resumes with ?since=", async () => {
  const server = new FakeServer();
  const { c, statuses } = client(server, { transport: "sse" });
  await flush();
  server.welcome("e1:0");
  server.frame("session.created", { sessionKey: "s1" }, "e1:7");
  server.end();
  await flush();
  assert.equal(c.status, "reconnecting");
  mock.timers.tick(250);
  await flush();
  assert.equal(server.streams.length, 2);
  assert.equal(new URL(server.latest.url).searchParams.get("since"), "e1:7");
  server.welcome("e1:7");
  await flush();
  assert.deepEqual(statuses, ["connecting", "open", "reconnecting", "open"]);
});

test("sse: a 401 response ends in auth_failed and never retries", async () => {
  const server = new FakeServer({ streamStatus: 401 });
  const { c, statuses } = client(server, { transport: "sse" });
  const changes = [];
  c.on("status", (change) => changes.push(change));
  await flush();
  assert.equal(c.status, "auth_failed");
  assert.equal(changes.at(-1).httpStatus, 401);
  mock.timers.tick(60000);
  await flush();
  assert.equal(server.streams.length, 1);
  assert.deepEqual(statuses, ["connecting", "auth_failed"]);
});

test("sse: no bytes for two heartbeat intervals aborts the stream and reconnects; pings keep it", async () => {
  const server = new FakeServer();
  const { c } = client(server, { transport: "sse" });
  await flush();
  server.welcome("e1:0", 1);
  await flush();
  mock.timers.tick(1500);
  server.write(": ping\n\n");
  await flush();
  mock.timers.tick(1500);
  assert.equal(c.status, "open");
  mock.timers.tick(600);
  assert.equal(c.status, "reconnecting");
  assert.equal(server.streams[0].aborted, true);
});

test("sse: close() aborts the request", async () => {
  const server = new FakeServer();
  const { c } = client(server, { transport: "sse" });
  await flush();
  server.welcome();
  await flush();
  c.close();
  assert.equal(server.latest.aborted, true);
  assert.equal(c.status, "closed");
});

test("sse: a ticket is fetched for every stream and sent as ?ticket=", async () => {
  const server = new FakeServer();
  let n = 0;
  client(server, { transport: "sse", ticket: async () => `t${++n}` });
  await flush();
  assert.equal(new URL(server.latest.url).searchParams.get("ticket"), "t1");
  server.welcome();
  server.end();
  await flush();
  mock.timers.tick(250);
  await flush();
  assert.equal(new URL(server.latest.url).searchParams.get("ticket"), "t2");
});

test("auto: WebSocket handshakes lost while the probe says 426 fall back to SSE", async () => {
  const server = new FakeServer({ probeStatus: 426 });
  const { c } = client(server);
  await flush();
  FailingSocket.instances.at(-1).refuse();
  await flush();
  mock.timers.tick(250);
  await flush();
  assert.equal(c.transport, "websocket");
  FailingSocket.instances.at(-1).refuse();
  await flush();
  assert.equal(c.transport, "sse");
  mock.timers.tick(500);
  await flush();
  assert.equal(FailingSocket.instances.length, 2);
  assert.equal(server.streams.length, 1);
  server.welcome("e1:0");
  await flush();
  assert.equal(c.status, "open");
});

test("auto: a refusal (429, 401) or an unreachable server does not fall back", async () => {
  for (const probeStatus of [429, 503]) {
    const server = new FakeServer({ probeStatus });
    const { c } = client(server);
    await flush();
    for (let i = 0; i < 4; i += 1) {
      FailingSocket.instances.at(-1).refuse();
      await flush();
      mock.timers.tick(30000);
      await flush();
    }
    assert.equal(c.transport, "websocket");
    assert.equal(server.streams.length, 0);
    c.close();
  }
  const server = new FakeServer({ probeStatus: 401 });
  const { c } = client(server);
  await flush();
  FailingSocket.instances.at(-1).refuse();
  await flush();
  assert.equal(c.status, "auth_failed");
  assert.equal(server.streams.length, 0);
});

test("auto: after websocketRetryAfter on SSE, and on reconnect(), WebSocket is tried again", async () => {
  const server = new FakeServer({ probeStatus: 426 });
  const { c } = client(server, { fallbackAfter: 1, websocketRetryAfter: 0 });
  await flush();
  FailingSocket.instances.at(-1).refuse();
  await flush();
  assert.equal(c.transport, "sse");
  mock.timers.tick(250);
  await flush();
  assert.equal(FailingSocket.instances.length, 2, "the retry period is over: WebSocket first");
  const again = new FakeServer({ probeStatus: 426 });
  const second = client(again, { fallbackAfter: 1 });
  await flush();
  FailingSocket.instances.at(-1).refuse();
  await flush();
  mock.timers.tick(250);
  await flush();
  assert.equal(second.c.transport, "sse");
  assert.equal(again.streams.length, 1);
  second.c.reconnect();
  assert.equal(second.c.transport, "websocket");
  assert.equal(again.latest.aborted, true);
  c.close();
  second.c.close();
});

test("transport must be one of auto, websocket, sse", () => {
  assert.throws(() => new LivePanelClient("ws://panel.test/ws", { transport: "polling" }), /transport must be/);
});

test("auto without fetch connects over WebSocket and never falls back; sse without fetch is an error", async () => {
  const original = globalThis.fetch;
  globalThis.fetch = undefined; // a runtime without fetch
  try {
    const c = new LivePanelClient("ws://panel.test/ws", { WebSocket: FailingSocket });
    await flush();
    FailingSocket.instances.at(-1).refuse();
    await flush();
    assert.equal(c.transport, "websocket");
    assert.equal(c.status, "reconnecting");
    c.close();
    assert.throws(() => new LivePanelClient("ws://panel.test/ws", { transport: "sse" }), /need fetch/);
  } finally {
    globalThis.fetch = original;
  }
});

/** Let `ms` pass on an open stream, the server sending `: ping` every 20 s as it would. */
async function idle(server, ms) {
  for (let left = ms; left > 0; left -= 20000) {
    mock.timers.tick(Math.min(20000, left));
    if (!server.latest.aborted) server.write(": ping\n\n");
    await flush();
  }
}

test("auto on SSE tries a WebSocket beside the stream after websocketRetryAfter; a refused try stays", async () => {
  const server = new FakeServer({ probeStatus: 426 });
  const { c, statuses } = client(server, { fallbackAfter: 1, websocketRetryAfter: 60000 });
  await flush();
  FailingSocket.instances.at(-1).refuse();
  await flush();
  mock.timers.tick(250);
  await flush();
  server.welcome("e1:0");
  server.frame("session.created", {}, "e1:1");
  await flush();
  assert.equal(c.transport, "sse");
  await idle(server, 60000);
  assert.equal(FailingSocket.instances.length, 2, "one try at WebSocket");
  const attempt = FailingSocket.instances.at(-1);
  assert.equal(new URL(attempt.url).searchParams.get("since"), null, "a try does not replay");
  attempt.refuse();
  await flush();
  assert.equal(c.transport, "sse");
  assert.equal(server.latest.aborted, false);
  assert.equal(c.status, "open");
  await idle(server, 60000);
  assert.equal(FailingSocket.instances.length, 3, "and another one later");
  assert.deepEqual(statuses, ["connecting", "reconnecting", "open"]);
});

test("auto on SSE: a welcomed try switches to WebSocket, resuming with since, without a status flicker", async () => {
  const server = new FakeServer({ probeStatus: 426 });
  const { c, statuses } = client(server, { fallbackAfter: 1, websocketRetryAfter: 60000 });
  const seen = [];
  c.on("*", (event) => seen.push(event.id));
  await flush();
  FailingSocket.instances.at(-1).refuse();
  await flush();
  mock.timers.tick(250);
  await flush();
  server.welcome("e1:0");
  server.frame("session.created", {}, "e1:1");
  await flush();
  await idle(server, 60000);
  const attempt = FailingSocket.instances.at(-1);
  attempt.welcome("e1:1");
  await flush();
  assert.equal(attempt.closed, 1000, "the try is closed");
  assert.equal(server.latest.aborted, true, "the stream is closed");
  assert.equal(c.transport, "websocket");
  const socket = FailingSocket.instances.at(-1);
  assert.notEqual(socket, attempt);
  assert.equal(new URL(socket.url).searchParams.get("since"), "e1:1");
  socket.welcome("e1:1");
  assert.equal(c.status, "open");
  assert.deepEqual(statuses, ["connecting", "reconnecting", "open"]);
  assert.deepEqual(seen, ["e1:1"]);
  c.close();
});

test("parser: onComment hears each comment, split anywhere", () => {
  const text = ': ping\n\nevent: x\ndata: {}\n\n:ping\n';
  for (let cut = 0; cut <= text.length; cut += 1) {
    const comments = [];
    const parser = sseParser((comment) => comments.push(comment));
    parser.push(text.slice(0, cut));
    parser.push(text.slice(cut));
    assert.deepEqual(comments, ["ping", "ping"]);
  }
});

test("SSE: catching_up until the replay's last event, and a `: ping` comment resets staleness", async () => {
  const server = new FakeServer();
  let clock = 1_000_000;
  const { c, statuses } = client(server, { transport: "sse", since: "e1:1", now: () => clock });
  await flush();
  server.welcome("e1:3");
  await flush();
  assert.deepEqual(statuses, ["connecting", "catching_up"]);
  server.frame("session.created", {}, "e1:2");
  server.frame("session.created", {}, "e1:3");
  await flush();
  assert.deepEqual(statuses, ["connecting", "catching_up", "open"]);
  clock += 9_000;
  assert.equal(c.staleness, 9);
  server.write(": ping\n\n");
  await flush();
  assert.equal(c.staleness, 0);
  c.close();
});

test("SSE: a filtered replay ends at the stream's heartbeat comment", async () => {
  const server = new FakeServer();
  const { statuses } = client(server, { transport: "sse", since: "e1:1", types: ["session.*"] });
  await flush();
  server.welcome("e1:9");
  server.frame("session.created", {}, "e1:4");
  await flush();
  assert.equal(statuses.at(-1), "catching_up");
  server.write(": ping\n\n");
  await flush();
  assert.equal(statuses.at(-1), "open");
});

test("SSE: a stream answered 429 with Retry-After waits that long, not counted as an attempt", async () => {
  const server = new FakeServer();
  const changes = [];
  const fetch = async (url, init) => {
    if (server.streams.length === 0) {
      server.streams.push({ url, init });
      return new Response("{}", { status: 429, headers: { "Retry-After": "4" } });
    }
    return server.fetch(url, init);
  };
  const c = new LivePanelClient("ws://panel.test/ws", { transport: "sse", fetch, random: () => 0 });
  c.on("status", (change) => changes.push(change));
  await flush();
  assert.equal(changes.at(-1).status, "reconnecting");
  assert.equal(changes.at(-1).retryAfter, 4);
  assert.equal(changes.at(-1).httpStatus, 429);
  await waitsExactly(server, changes, 4000);
  c.close();
});

/** Not counted as an attempt, the next stream is requested `ms` after the hint, not sooner. */
async function waitsExactly(server, changes, ms) {
  assert.equal(changes.at(-1).attempt, 0);
  const before = server.streams.length;
  mock.timers.tick(ms - 1);
  await flush();
  assert.equal(server.streams.length, before);
  mock.timers.tick(1);
  await flush();
  assert.equal(server.streams.length, before + 1);
}

test("parser: a retry field with digits only is heard, in milliseconds; anything else is not", () => {
  const retries = [];
  const parser = sseParser(null, (ms) => retries.push(ms));
  parser.push("retry: 2349\n\nretry: -5\n\nretry: 1e9\n\nretry: NaN\n\nretry:\n\nret");
  parser.push("ry: 17\n\n");
  assert.deepEqual(retries, [2349, 17]);
});

/** An SSE client welcomed on a stream that then ends with `retry: <field>`; its status changes. */
async function endedWithRetry(field) {
  const server = new FakeServer();
  const changes = [];
  const c = new LivePanelClient("ws://panel.test/ws", { transport: "sse", fetch: server.fetch, random: () => 0 });
  c.on("status", (change) => changes.push(change));
  await flush();
  server.welcome();
  await flush();
  server.write(`retry: ${field}\n\n`);
  server.end();
  await flush();
  assert.equal(changes.at(-1).status, "reconnecting");
  return { server, changes, c };
}

test("SSE: a stream that ends with a retry field (a worker shutting down) waits that long, not as an attempt", async () => {
  const { server, changes, c } = await endedWithRetry("3250");
  assert.equal(changes.at(-1).retryAfter, 3.25);
  assert.equal(changes.at(-1).streamRetry, true);
  await waitsExactly(server, changes, 3250);
  c.close();
});

test("SSE: a hostile retry field is capped like any hint (300 s at most)", async () => {
  const { changes, c } = await endedWithRetry("99999999999999999999");
  assert.ok(changes.at(-1).retryIn <= 300_000, String(changes.at(-1).retryIn));
  c.close();
});
