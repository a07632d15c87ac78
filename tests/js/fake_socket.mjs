// The fake WebSocket that the browser client's unit tests drive: it records what the client
// sends, and lets a test play the server's frames and closes.
export class FakeSocket {
  /** Every socket made since the test reset it (a subclass may keep its own list). */
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    this.onmessage = this.onclose = this.onerror = null;
    this.constructor.instances.push(this);
  }

  get since() {
    return new URL(this.url).searchParams.get("since");
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closed = { code, reason };
  }

  frame(type, payload = {}, id) {
    const frame = { type, timestamp: "2026-02-21T10:00:00.000Z", payload };
    if (id !== undefined) frame.id = id;
    this.onmessage({ data: JSON.stringify(frame) });
  }

  welcome(lastEventId = "e1:0", heartbeatInterval = 25) {
    this.frame("welcome", { connectionId: "c", heartbeatInterval, lastEventId, server: "livepanel/test" });
  }

  /** The connection is lost without a close frame. */
  drop() {
    this.onclose({ code: 1006, reason: "" });
  }

  /** The server closes (after accepting): `code` and `reason` as a browser's CloseEvent has them. */
  serverClose(code, reason = "") {
    this.onclose({ code, reason, wasClean: true });
  }
}
