/**
 * livepanel.js: the browser client of a livepanel endpoint (WebSocket, or Server-Sent Events).
 *
 * An ES module without dependencies. It connects, dispatches events by type,
 * reconnects with exponential backoff and full jitter, resumes with `since`
 * so nothing is missed, stops on 401/403 (learned with an HTTP probe of the
 * same URL), and reports its status.
 *
 *   import { connect } from "/livepanel.js";
 *
 *   const client = connect("/ws");
 *   client.on("session.created", (event) => addRow(event.payload));
 *   client.on("status", ({ status }) => showStatus(status));
 *   client.on("resume_unavailable", () => refetchState());
 *
 * With `{state: true}` the server sends the dashboard's state first (and again
 * whenever a resume is not possible), and the client keeps it up to date:
 *
 *   const client = connect("/ws", { state: true });
 *   client.on("state", ({ state }) => render(state.sessions)); // Maps by key
 *
 * A page that cannot send Basic credentials connects with a ticket fetched
 * from its own REST endpoint before every (re)connection (`?ticket=`):
 *
 *   connect("wss://panel.example/ws", {
 *     ticket: async () => (await (await fetch("/api/livepanel-ticket", { method: "POST" })).json()).ticket,
 *   });
 *
 * Where a proxy drops WebSocket upgrades, `transport: "auto"` (the default) falls
 * back to Server-Sent Events on the same URL, with the same frames, statuses and
 * resume; `transport: "sse"` uses them from the start. The fallback is logged
 * (`console.warn`), shown in the `open` status (`fallback: true`) and counted by the
 * server (`?fallback=1`, `livepanel_sse_fallbacks_total`).
 *
 * A mount that redirects `/ws` to `/ws/` (Starlette's `app.mount`) redirects HTTP only:
 * the probe of a refused handshake follows it, and when it lands on the same origin at
 * the same path but for a trailing slash, the client connects there from then on and
 * logs it (`console.info`).
 *
 * The status tells a screen that is current from one that is not: `catching_up` while a
 * replay (a resume with `since`) or the state is still on its way, `open` once live.
 * `client.staleness` is the number of seconds since the newest event or heartbeat arrived.
 *
 * A server that is busy or shutting down says when to come back: a probe answered 429 with
 * `Retry-After`, or a close with 1013 or 1012 and the reason `retry_after=<seconds>`. The
 * client waits that long plus a jitter (status `reconnecting`, `retryIn` in the detail),
 * without counting it as a failed attempt, then resumes with `since` as always.
 *
 * The backoff schedule, its jitter, the give-up rule and the retry hints' parsing are pure
 * functions exported below, so they can be tested without a browser.
 */

/** The defaults of every option; times are in milliseconds. */
export const DEFAULT_OPTIONS = Object.freeze({
  /** Reconnection attempts after a loss before the client gives up (status `closed`). */
  retries: 10,
  /** The ceiling of the first backoff delay. */
  initialDelay: 500,
  /** No backoff delay is ever longer than this. */
  maxDelay: 30000,
  /** How much the ceiling grows with each failed attempt. */
  factor: 2,
  /** A connection that has not said `welcome` within this time is dropped and retried. */
  connectTimeout: 10000,
  /** A connection must stay open this long before its loss starts a fresh retry budget. */
  stableAfter: 5000,
  /** Ask the server to pack queued frames into one, newline-delimited (`?batch=1`). */
  batch: true,
  /** Event type globs to receive (`["session.*"]`); `null` for all. */
  types: null,
  /** Resume after this event id on the first connection (an id from your own snapshot). */
  since: null,
  /** Ask for the state on connect (`?state=1`) and keep `client.state` up to date. */
  state: false,
  /**
   * `async () => string`: a fresh connect ticket, fetched before every connection attempt
   * (and before the probe of a refused one) and sent as `?ticket=`; `null` for none.
   */
  ticket: null,
  /**
   * `"websocket"`, `"sse"` (Server-Sent Events, read with `fetch`) or `"auto"`: WebSocket,
   * falling back to SSE when handshakes fail although the endpoint answers HTTP without
   * refusing (a proxy that drops the upgrade), and trying WebSocket again later.
   */
  transport: "auto",
  /** In `auto`: WebSocket handshakes failed that way before the client falls back to SSE. */
  fallbackAfter: 2,
  /**
   * In `auto`: after this long on an open SSE stream, a WebSocket is tried beside it
   * (and the client switches when it is welcomed); a lost stream tries WebSocket first
   * again once this long has passed since the fallback.
   */
  websocketRetryAfter: 300000,
  /**
   * One connection for all the tabs of this browser on the same endpoint (and the same
   * `types` and `state`): a Web Lock elects the tab that holds it, a BroadcastChannel
   * hands its frames and status to the others, and another tab takes over, resuming
   * with `since`, when that one closes.
   */
  shared: false,
  /**
   * The schema fingerprint this bundle was built on (`SCHEMA_FINGERPRINT` from the module
   * `livepanel typescript` generates); when the server's `welcome.schema` differs the client
   * emits `schemaChanged`. `null`: no comparison.
   */
  schema: null,
  /**
   * Acks are coalesced to at most one per this many milliseconds: the newest event id whose
   * handlers all ran (and whose returned promises resolved) is told to the server.
   */
  ackInterval: 250,
  /**
   * Retry hints (429 `Retry-After`, close 1012/1013 `retry_after=`) followed in a row, with no
   * connection staying open `stableAfter` between them, before further ones count as failed
   * attempts: a server that keeps saying `retry_after=0` cannot make the client spin.
   */
  maxHintedWaits: 20,
});

/** No server's retry hint makes the client wait longer than this many seconds (plus jitter). */
export const MAX_RETRY_HINT = 300;

/** The transports the `transport` option names. */
export const TRANSPORTS = Object.freeze(["auto", "websocket", "sse"]);

/** Every status the client reports, in the order a connection usually goes through them. */
export const STATUSES = Object.freeze(["connecting", "catching_up", "open", "reconnecting", "auth_failed", "closed"]);

/**
 * The URL a probe was redirected to, when the client should connect there instead: same
 * origin, and the same path but for one trailing slash added or removed (what a mount's
 * slash redirect does), as `ws:`/`wss:` without a query. `null` for any other redirect,
 * which is never followed.
 */
export function slashRedirect(from, to) {
  let source, target;
  try {
    source = new URL(from);
    target = new URL(to);
  } catch {
    return null;
  }
  const secure = (url) => url.protocol === "wss:" || url.protocol === "https:";
  if (secure(source) !== secure(target) || source.host !== target.host) return null;
  const a = source.pathname;
  const b = target.pathname;
  if (a + "/" !== b && b + "/" !== a) return null;
  target.search = "";
  target.hash = "";
  target.username = "";
  target.password = "";
  target.protocol = secure(source) ? "wss:" : "ws:";
  return target.href;
}

/** Names the client emits itself; server event types never use them. */
const CLIENT_EVENTS = new Set(["status", "welcome", "error", "resume_unavailable", "state", "schemaChanged"]);

// ---------------------------------------------------------------------------- pure functions

function backoffOptions(options) {
  return {
    initialDelay: options?.initialDelay ?? DEFAULT_OPTIONS.initialDelay,
    maxDelay: options?.maxDelay ?? DEFAULT_OPTIONS.maxDelay,
    factor: options?.factor ?? DEFAULT_OPTIONS.factor,
  };
}

/**
 * The longest delay before reconnection attempt `attempt` (0 for the first):
 * `initialDelay * factor ** attempt`, capped at `maxDelay`.
 */
export function backoffCeiling(attempt, options) {
  const { initialDelay, maxDelay, factor } = backoffOptions(options);
  const ceiling = initialDelay * factor ** Math.max(0, attempt);
  return Number.isFinite(ceiling) ? Math.min(maxDelay, ceiling) : maxDelay;
}

/**
 * The delay before attempt `attempt`, with full jitter: uniform in
 * `[0, backoffCeiling(attempt))`, so clients dropped together do not return together.
 * `random` returns a number in `[0, 1)`, like `Math.random`.
 */
export function backoffDelay(attempt, options, random = Math.random) {
  const ceiling = backoffCeiling(attempt, options);
  return Math.min(ceiling, Math.floor(random() * ceiling));
}

/** The ceilings of the first `count` attempts: the schedule before jitter. */
export function backoffSchedule(count, options) {
  return Array.from({ length: count }, (_, attempt) => backoffCeiling(attempt, options));
}

/** True when `attempts` reconnection attempts have been made and `retries` allows no more. */
export function shouldGiveUp(attempts, retries = DEFAULT_OPTIONS.retries) {
  return attempts >= retries;
}

/** The delay before the next attempt after `attempts` failed ones, or `null` to give up. */
export function planReconnect(attempts, options, random = Math.random) {
  if (shouldGiveUp(attempts, options?.retries ?? DEFAULT_OPTIONS.retries)) return null;
  return backoffDelay(attempts, options, random);
}

/** True when an HTTP probe's status means retrying cannot help: 401 and 403. */
export function isAuthFailure(httpStatus) {
  return httpStatus === 401 || httpStatus === 403;
}

/** The close codes whose reason may carry `retry_after=<seconds>`: try again later, and restart. */
const HINTED_CLOSE_CODES = new Set([1012, 1013]);

/**
 * The seconds a close reason asks the client to wait (`retry_after=2.35`: a decimal number of
 * seconds), capped at `MAX_RETRY_HINT`; `null` for anything else (no hint, a negative or
 * garbled number, an exponent, junk), which leaves the ordinary backoff in charge.
 */
export function parseRetryHint(reason) {
  if (typeof reason !== "string" || reason.length > 64) return null;
  const match = /^\s*retry_after=(\d{1,12}(?:\.\d{1,9})?)\s*$/.exec(reason);
  if (match === null) return null;
  const seconds = Number(match[1]);
  return Number.isFinite(seconds) ? Math.min(seconds, MAX_RETRY_HINT) : null;
}

/**
 * The seconds an HTTP `Retry-After` header asks for: whole seconds, or an HTTP date
 * (measured from `now`, milliseconds since the epoch); capped at `MAX_RETRY_HINT`, and
 * `null` when the header is missing or unreadable.
 */
export function parseRetryAfter(header, now = Date.now()) {
  if (typeof header !== "string" || header.length > 64) return null;
  const value = header.trim();
  if (/^\d{1,12}$/.test(value)) return Math.min(Number(value), MAX_RETRY_HINT);
  if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(value)) return null;
  const at = Date.parse(value);
  if (!Number.isFinite(at)) return null;
  return Math.min(Math.max(0, (at - now) / 1000), MAX_RETRY_HINT);
}

/**
 * The milliseconds to wait for a retry hint of `seconds`: the hint plus a jitter uniform in
 * `[0, max(0.25 s, 20 % of the hint)]`, so clients told the same thing do not return together.
 */
export function retryHintDelay(seconds, random = Math.random) {
  const hint = Math.min(Math.max(0, Number(seconds) || 0), MAX_RETRY_HINT) * 1000;
  return Math.round(hint + random() * Math.max(250, 0.2 * hint));
}

/**
 * True when a refused WebSocket handshake's probe shows an endpoint that answers HTTP
 * and does not refuse: `426 Upgrade Required` (the upgrade was lost on the way, as
 * behind a proxy that strips it) or a success. Worth trying SSE; 401/403/429/503 are not.
 */
export function shouldFallBack(httpStatus) {
  return httpStatus === 426 || (httpStatus >= 200 && httpStatus < 300);
}

/**
 * An incremental `text/event-stream` parser: `push(text)` returns the messages
 * completed by that chunk, each `{event, id, data}` (`event` defaults to
 * `"message"`, `id` is `null` without an `id:` line). Comments (`: ping`) give
 * no message; `onComment`, when given, is called with each comment's text (`"ping"`).
 * Chunks may split lines and messages anywhere.
 */
export function sseParser(onComment = null, onRetry = null) {
  let buffer = "";
  let event = "";
  let id = null;
  let data = [];
  return {
    push(text) {
      buffer += text;
      const messages = [];
      // a trailing "\r" waits for the next chunk: it may be the first half of "\r\n"
      const held = buffer.endsWith("\r") ? 1 : 0;
      const lines = buffer.slice(0, buffer.length - held).split(/\r\n|\r|\n/);
      buffer = lines.pop() + (held ? "\r" : ""); // the line not finished yet
      for (const line of lines) {
        if (line === "") {
          if (data.length) messages.push({ event: event || "message", id, data: data.join("\n") });
          event = "";
          id = null;
          data = [];
          continue;
        }
        if (line.startsWith(":")) {
          onComment?.(line.slice(1).trim()); // `: ping`, the stream's heartbeat
          continue;
        }
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^[0-9]+$/.test(value)) onRetry?.(Number(value)); // ms
      }
      return messages;
    },
  };
}

/** The server frames in one WebSocket message: one, or several newline-delimited (`?batch=1`). */
export function splitFrames(data) {
  return String(data)
    .split("\n")
    .filter((line) => line.trim() !== "");
}

/**
 * The URL to connect to: `url` resolved against `base` (the page), its scheme
 * made `ws:`/`wss:`, with `batch`, `types`, `since`, `state` and `ticket` in the query.
 */
export function connectUrl(
  url,
  { since = null, types = null, batch = true, state = false, ticket = null, fallback = false } = {},
  base,
) {
  const target = new URL(url, base ?? globalThis.location?.href);
  if (target.protocol === "http:") target.protocol = "ws:";
  else if (target.protocol === "https:") target.protocol = "wss:";
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new TypeError(`livepanel: cannot connect to ${target.protocol} URLs; use ws(s):// or http(s)://`);
  }
  target.hash = "";
  // a page opened as http://user:pass@host/ resolves to a URL with credentials, which
  // fetch() (the probe) refuses; the browser sends the credentials it cached anyway
  target.username = "";
  target.password = "";
  if (batch) target.searchParams.set("batch", "1");
  if (types && types.length) target.searchParams.set("types", types.join(","));
  if (since) target.searchParams.set("since", since);
  else target.searchParams.delete("since");
  if (state) target.searchParams.set("state", "1");
  if (ticket) target.searchParams.set("ticket", ticket);
  if (fallback) target.searchParams.set("fallback", "1");
  return target.href;
}

/**
 * The URL of the Server-Sent Events stream: `connectUrl`'s, over `http:`/`https:`,
 * without `batch` (one frame per message).
 */
export function streamUrl(url, query = {}, base) {
  const target = new URL(connectUrl(url, { ...query, batch: false }, base));
  target.protocol = target.protocol === "wss:" ? "https:" : "http:";
  return target.href;
}

/**
 * The name of the Web Lock and BroadcastChannel of `shared: true` tabs: tabs share a
 * connection only when it would be the same (endpoint, `types`, `state`).
 */
export function sharedName(url, { types = null, state = false } = {}, base) {
  return `livepanel:${streamUrl(url, { types, state }, base)}`;
}

/** How many event ids a shared tab remembers to drop a frame it got twice (takeover). */
const SEEN_IDS = 4096;

/** The key an event's payload gives its entry: a scalar as is, anything else as JSON. */
function entryKey(value) {
  return value !== null && typeof value === "object" ? JSON.stringify(value) : value;
}

/**
 * The collections of a `state` frame's payload: `{name: Map}`, keyed by the
 * collection's key (keyless collections by event id), oldest update first;
 * and the rules to apply live events with.
 */
export function stateFromFrame(payload) {
  const collections = {};
  const layout = {};
  for (const [name, collection] of Object.entries(payload?.collections ?? {})) {
    const key = collection.key ?? null;
    const entries = new Map();
    for (const event of collection.entries ?? []) {
      entries.set(key === null ? event.id : entryKey(event.payload?.[key]), event);
    }
    collections[name] = entries;
    layout[name] = { key, keep: collection.keep ?? null };
  }
  const rules = {};
  for (const [type, rule] of Object.entries(payload?.types ?? {})) {
    if (layout[rule.collection]) rules[type] = { ...layout[rule.collection], ...rule };
  }
  return { collections, rules };
}

/**
 * Apply one live event to the collections (`stateFromFrame`'s): returns the
 * new collections, where only the changed collection is a new `Map` (so a
 * React component of another collection does not re-render), or `null` when
 * the event changes no collection.
 */
export function applyToState(collections, rules, event) {
  const rule = rules[event.type];
  if (!rule || !collections[rule.collection]) return null;
  const entries = new Map(collections[rule.collection]);
  if (rule.key === null) {
    entries.set(event.id, event);
    const keep = rule.keep ?? 1;
    for (const oldest of entries.keys()) {
      if (entries.size <= keep) break;
      entries.delete(oldest);
    }
  } else {
    const key = entryKey(event.payload?.[rule.key]);
    if (key === undefined || key === null) return null;
    entries.delete(key); // an update moves to the end: newest last, as on the server
    if (!rule.removes) entries.set(key, event);
  }
  return { ...collections, [rule.collection]: entries };
}

/**
 * The same URL over HTTP: what the client fetches to learn why a handshake was refused.
 * Without `since`; and without the ticket, which was spent: pass a fresh one as `ticket`.
 */
export function probeUrl(wsUrl, ticket = null) {
  const target = new URL(wsUrl);
  target.protocol = target.protocol === "wss:" ? "https:" : "http:";
  target.searchParams.delete("since");
  target.searchParams.delete("ticket");
  if (ticket) target.searchParams.set("ticket", ticket);
  return target.href;
}

// ---------------------------------------------------------------------------- the client

/**
 * A connection to a livepanel endpoint that keeps itself alive.
 *
 * Listen with `on(name, fn)`: an event type (`"session.created"`), `"*"` for
 * every event, or one of the client's own notifications: `"status"`
 * (`{status, previous, ...detail}`; `reconnecting` has `retryIn`, the milliseconds until the
 * next attempt, and `retryAfter`, the server's hint in seconds or `null`), `"welcome"`, `"resume_unavailable"`
 * (the events since the last one seen are gone: refetch your state),
 * `"error"` (other server error frames) and, with `{state: true}`, `"state"`
 * (`{state, reset, collection, event}` on every change of `client.state`) and, with
 * `{schema}`, `"schemaChanged"` (`{expected, actual}` when the server's event types differ
 * from the bundle's, `null` when they match again).
 */
export class LivePanelClient {
  constructor(url, options = {}) {
    this.options = { ...DEFAULT_OPTIONS, ...options };
    this.url = url;
    /** Where the client connects: `url`, or where a same-origin slash redirect sent it. */
    this.endpoint = url;
    /** One of STATUSES. */
    this.status = "connecting";
    /** The id to resume after: the newest event seen, else the last welcome's `lastEventId`. */
    this.lastEventId = this.options.since ?? null;
    /** The newest event received, or `null`. */
    this.lastEvent = null;
    /** With `{state: true}`: the collections, `{name: Map(key -> event)}`; `null` until the first state frame. */
    this.state = null;
    this._stateRules = {};
    /**
     * With `schema` (the `SCHEMA_FINGERPRINT` of the module `livepanel typescript` made):
     * `{expected, actual}` while the server's event types differ from this bundle's (a deploy
     * happened since the page loaded); else `null`. Events keep flowing either way.
     */
    this.schemaChanged = null;
    /** The server's heartbeat interval in seconds, once welcomed. */
    this.heartbeatInterval = null;
    this._now = this.options.now ?? Date.now; // wall clock: shared tabs compare their readings
    this._freshAt = null; // when the newest event or heartbeat arrived (or the client went live)
    this._catchingUp = false; // welcomed, but a replay or the state is still on its way
    this._sinceOnSocket = null; // the `since` this connection asked for
    this._openDetail = {}; // the `open` status's detail, held while catching up
    this._hinted = false; // the wait under way is the server's retry hint
    this._hintedRun = 0; // hints followed since a connection last stayed open
    if (!TRANSPORTS.includes(this.options.transport)) {
      const given = this.options.transport;
      throw new TypeError(`livepanel: transport must be "auto", "websocket" or "sse", not ${given}`);
    }
    /** The transport in use or being tried: `"websocket"` or `"sse"`. */
    this.transport = this.options.transport === "sse" ? "sse" : "websocket";
    this._fallbacks = 0; // WebSocket handshakes lost although the endpoint answered HTTP
    this._sseSince = null; // when `auto` fell back to SSE
    this._stream = null; // the AbortController of the SSE request
    this._trial = null; // auto on SSE: the timer, then the WebSocket, of a try at WebSocket
    this._WebSocket = this.options.WebSocket ?? globalThis.WebSocket;
    this._fetch = this.options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._random = this.options.random ?? Math.random;
    this._console = this.options.console ?? globalThis.console;
    this._locks = this.options.locks ?? globalThis.navigator?.locks;
    this._BroadcastChannel = this.options.BroadcastChannel ?? globalThis.BroadcastChannel;
    this._listeners = new Map();
    this._socket = null;
    this._welcome = null;
    this._eventsOnSocket = 0;
    this._attempts = 0;
    this._timer = null;
    this._watchdog = null;
    this._stableTimer = null;
    this._generation = 0;
    this._stopped = false;
    this._gaveUp = false;
    this._watching = false;
    /** The newest event id every handler has run for (what the server is told in `ack`). */
    this.ackedId = null;
    this._ackSent = null; // the id last sent on this connection
    this._ackSentAt = -Infinity;
    this._ackTimer = null;
    this._ackChain = Promise.resolve(); // handlers that returned promises, in event order
    this._ackWaits = 0;
    if (this.transport === "websocket" && typeof this._WebSocket !== "function") {
      throw new TypeError("livepanel: no WebSocket here; pass options.WebSocket");
    }
    if (this.options.transport === "sse" && typeof this._fetch !== "function") {
      throw new TypeError("livepanel: Server-Sent Events need fetch; pass options.fetch");
    }
    connectUrl(url, {}, this.options.base); // fail now on a URL that can never work
    /** With `shared: true`: `"leader"` (holds the connection) or `"follower"`; else `null`. */
    this.role = null;
    this._seen = new Set(); // shared: recent event ids, so a takeover shows none twice
    this._term = 0; // shared: the newest leadership heard of; an older leader's status is stale
    this._channel = null;
    this._unlock = null; // a leader's: releases the Web Lock
    this._lockAbort = null; // a follower's: withdraws its request for the lock
    this._onOnline = () => this._wakeUp();
    this._onVisible = () => {
      if (globalThis.document?.visibilityState === "visible") this._wakeUp();
    };
    this._watchPage(true);
    // start after the caller's synchronous on(...) calls, so they see every status
    queueMicrotask(() => {
      if (this._stopped || this._socket !== null || this._stream !== null || this._timer !== null) return;
      if (this._generation !== 0 || this.role !== null) return;
      this._emit("status", { status: this.status, previous: null });
      if (this.options.shared && this._canShare()) this._joinShared();
      else this._open();
    });
  }

  /**
   * True while the client is live (status `open`): welcomed and caught up. While
   * `catching_up` the socket is open but the screen is not current yet: `false`.
   */
  get isConnected() {
    return this.status === "open";
  }

  /**
   * Seconds since the newest event or heartbeat arrived (or the client went live, which
   * proves it current too); `Infinity` before any did. It keeps growing while disconnected.
   */
  get staleness() {
    return this._freshAt === null ? Infinity : Math.max(0, (this._now() - this._freshAt) / 1000);
  }

  /** Call `listener` for `name`; returns a function that removes it. */
  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(listener);
    return () => this.off(name, listener);
  }

  off(name, listener) {
    this._listeners.get(name)?.delete(listener);
  }

  /**
   * Drop the connection and connect again now, with a fresh retry budget;
   * also after `auth_failed` or `closed`. With `{since}`, resume after that id
   * (e.g. the `lastEventId` of a snapshot just fetched).
   */
  reconnect({ since } = {}) {
    if (since !== undefined) this.lastEventId = since;
    if (this.role === "follower") {
      this._post({ kind: "reconnect", since }); // the leader's connection is everyone's
      return;
    }
    this._stopped = false;
    this._gaveUp = false;
    this._attempts = 0;
    this._hintedRun = 0;
    if (this.options.transport === "auto") this._useWebSocket(); // a full reconnect tries WebSocket again
    this._drop(4000, "reconnect");
    this._watchPage(true);
    this._setStatus("connecting");
    this._open();
  }

  /** Close for good: no reconnection until `reconnect()`. */
  close() {
    this._gaveUp = false; // a closed client no longer wakes up with the page
    this._leaveShared();
    if (this._stopped && this.status === "closed") {
      this._watchPage(false);
      return;
    }
    this._stop("closed", { reason: "client" });
  }

  // ------------------------------------------------------------------------ internals

  /** Call the listeners of `name`; returns whether one threw, and the promises they returned. */
  _emit(name, value) {
    const outcome = { failed: false, pending: [] };
    for (const key of CLIENT_EVENTS.has(name) ? [name] : [name, "*"]) {
      for (const listener of [...(this._listeners.get(key) ?? [])]) {
        try {
          const result = listener(value);
          if (typeof result?.then === "function") outcome.pending.push(result);
        } catch (error) {
          outcome.failed = true;
          // one broken listener must not break the client or the others
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
    return outcome;
  }

  /** An event's handlers were called: ack it once they all ran, after every earlier one. */
  _handled(id, { failed, pending }) {
    if (failed) return; // a handler threw: this event was not processed, so it is not acked
    if (pending.length === 0 && this._ackWaits === 0) {
      this._ackReady(id);
      return;
    }
    this._ackWaits += 1;
    // an ack counts for every earlier event: wait for their handlers too
    this._ackChain = Promise.all([this._ackChain, ...pending])
      .then(
        () => this._ackReady(id),
        () => {}, // a handler's promise rejected: not processed, not acked
      )
      .finally(() => {
        this._ackWaits -= 1;
      });
  }

  _ackReady(id) {
    this.ackedId = id;
    this._flushAck();
  }

  /** Send the newest ack now, or when `ackInterval` has passed since the last one. */
  _flushAck() {
    if (this._ackTimer !== null || this.ackedId === null || this.ackedId === this._ackSent) return;
    if (this.transport !== "websocket" || this._socket === null || this._welcome === null) return;
    const wait = this._ackSentAt + this.options.ackInterval - Date.now();
    if (wait > 0) {
      this._ackTimer = setTimeout(() => {
        this._ackTimer = null;
        this._flushAck();
      }, wait);
      return;
    }
    this._ackSent = this.ackedId;
    this._ackSentAt = Date.now();
    this._send({ type: "ack", payload: { id: this.ackedId } });
  }

  _setStatus(status, detail = {}) {
    if (status === this.status && status !== "reconnecting") return;
    const previous = this.status;
    this.status = status;
    if (this.role === "leader" && !(status === "closed" && detail.reason === "client")) {
      this._post({ kind: "status", status, detail });
    }
    this._emit("status", { status, previous, ...detail });
  }

  // ------------------------------------------------------------------------ shared tabs

  _canShare() {
    return typeof this._locks?.request === "function" && typeof this._BroadcastChannel === "function";
  }

  _joinShared() {
    const name = sharedName(this.url, this.options, this.options.base);
    this._channel = new this._BroadcastChannel(name);
    this._channel.onmessage = (message) => this._onShared(message.data);
    this.role = "follower";
    this._post({ kind: "hello" }); // the leader, if any, answers with where it is
    this._lockAbort = new AbortController();
    this._locks
      .request(name, { signal: this._lockAbort.signal }, () => {
        if (this._channel === null) return undefined; // closed while waiting
        this._lockAbort = null;
        this.role = "leader";
        this._term += 1;
        this._attempts = 0;
        // hold the lock until close() or the tab goes away
        const held = new Promise((resolve) => {
          this._unlock = resolve;
        });
        this._open(); // resumes after the last id this tab saw, as a follower or alone
        return held;
      })
      .catch(() => {}); // the request was withdrawn by close()
  }

  _leaveShared() {
    if (this._channel === null) return;
    // no goodbye: the next tab's status comes from its own connection (a "leaving" could
    // arrive after the new leader's "open", from another tab, and undo it)
    this._lockAbort?.abort();
    this._lockAbort = null;
    this._unlock?.();
    this._unlock = null;
    this._channel.close();
    this._channel = null;
    this.role = null;
  }

  _post(message) {
    try {
      this._channel?.postMessage({ ...message, term: this._term });
    } catch {
      // a frame that cannot be cloned: nothing another tab could use
    }
  }

  _onShared(message) {
    if (this.role === "leader") {
      if (message.kind === "frame" && message.frame?.id != null) {
        // the old leader's last events, still on their way when this tab took over
        this._dispatch(message.frame, true);
        return;
      }
      if (message.kind === "hello") {
        this._post({
          kind: "sync",
          status: this.status,
          welcome: this._welcome,
          lastEventId: this.lastEventId,
          state: this.options.state ? this.state : null,
          rules: this._stateRules,
          freshAt: this._freshAt,
        });
      } else if (message.kind === "reconnect") {
        this.reconnect(message.since === undefined ? {} : { since: message.since });
      }
      return;
    }
    if (this.role !== "follower") return;
    if (message.term < this._term && !(message.kind === "frame" && message.frame?.id != null)) {
      return; // from a leader that has since gone: its events still count, nothing else
    }
    this._term = Math.max(this._term, message.term ?? 0);
    switch (message.kind) {
      case "frame":
        this._dispatch(message.frame, true);
        return;
      case "status":
        this._setStatus(message.status, message.detail);
        return;
      case "sync":
        if (this._welcome === null && message.welcome) {
          this._dispatch({ type: "welcome", payload: message.welcome }, true);
        }
        if (message.lastEventId) this.lastEventId = message.lastEventId; // the leader is never behind
        if (typeof message.freshAt === "number") this._freshAt = Math.max(this._freshAt ?? 0, message.freshAt);
        if (this.options.state && message.state && this.state === null) {
          this.state = message.state;
          this._stateRules = message.rules;
          this._emit("state", { state: this.state, reset: true, collection: null, event: null });
        }
        this._setStatus(message.status);
    }
  }

  _open() {
    this._clearTimer();
    const generation = ++this._generation;
    if (
      this.options.transport === "auto" &&
      this.transport === "sse" &&
      Date.now() - this._sseSince >= this.options.websocketRetryAfter
    ) {
      this._useWebSocket(); // maybe the network lets WebSocket through by now
    }
    if (typeof this.options.ticket !== "function") {
      this._openTransport(generation, null);
      this._armWatchdog(this.options.connectTimeout);
      return;
    }
    this._armWatchdog(this.options.connectTimeout); // the ticket's fetch counts in the time
    this._fetchTicket().then(
      (ticket) => {
        if (generation === this._generation && !this._stopped) this._openTransport(generation, ticket);
      },
      (error) => {
        if (generation === this._generation && !this._stopped) this._ticketFailed(error);
      },
    );
  }

  /** A fresh ticket from `options.ticket`; rejects unless it is a non-empty string. */
  async _fetchTicket() {
    const ticket = await this.options.ticket();
    if (typeof ticket !== "string" || ticket === "") {
      throw new TypeError("livepanel: options.ticket() must resolve to a non-empty string");
    }
    return ticket;
  }

  _ticketFailed(error) {
    // the ticket endpoint is down or refuses: a failed attempt, retried with backoff
    this._clearWatchdog();
    this._emit("error", { code: "ticket_unavailable", message: String(error?.message ?? error) });
    this._scheduleReconnect();
  }

  _useWebSocket() {
    this.transport = "websocket";
    this._fallbacks = 0;
    this._sseSince = null;
  }

  _openTransport(generation, ticket) {
    if (this.transport === "sse") this._openStream(generation, ticket);
    else this._openSocket(generation, ticket);
  }

  _query(ticket) {
    return {
      since: this.lastEventId,
      types: this.options.types,
      batch: this.options.batch,
      state: this.options.state,
      ticket,
    };
  }

  _openStream(generation, ticket) {
    // fetch, not EventSource: the server names each message by its event type, and an
    // EventSource only hands over the names it was given listeners for (no "*")
    const fallback = this.options.transport === "auto"; // SSE in auto is always a fallback
    const url = streamUrl(this.endpoint, { ...this._query(ticket), fallback }, this.options.base);
    this._sinceOnSocket = this.lastEventId;
    const controller = new AbortController();
    this._stream = controller;
    this._welcome = null;
    this._eventsOnSocket = 0;
    const current = () => generation === this._generation && !this._stopped;
    let hint = null; // a 429's Retry-After
    let retry = null; // the stream's `retry:` field (seconds): a worker shutting down says when
    const read = async () => {
      const response = await this._fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (!current()) return;
      if (isAuthFailure(response.status)) {
        let body = {};
        try {
          body = await response.json();
        } catch {
          body = {};
        }
        if (current()) {
          this._stop("auth_failed", { httpStatus: response.status, code: body.error, message: body.message });
        }
        return;
      }
      if (response.status === 429) {
        hint = parseRetryAfter(response.headers?.get?.("Retry-After") ?? null, this._now());
        return;
      }
      if (!response.ok || !response.body) return; // 503, a proxy's error page: retry
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = sseParser(
        (comment) => {
          // the stream's heartbeat, handled (and passed on to shared tabs) as a `ping` frame
          if (comment === "ping" && this._welcome !== null && current()) this._dispatch({ type: "ping", payload: {} });
        },
        (ms) => {
          retry = ms / 1000;
        },
      );
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done || !current()) return;
          // any bytes, a `: ping` comment among them, show the stream is alive
          if (this._welcome !== null) this._armWatchdog(2 * this.heartbeatInterval * 1000);
          for (const message of parser.push(decoder.decode(value, { stream: true }))) {
            if (!current()) return;
            this._receive(message.data);
          }
        }
      } finally {
        reader.cancel().catch(() => {});
      }
    };
    read()
      .catch(() => {}) // unreachable, aborted or cut off: the same as an end
      .then(() => {
        if (generation !== this._generation || this._stream !== controller) return;
        if (hint !== null) this._streamEnded(hint, { httpStatus: 429 });
        else this._streamEnded(retry, { streamRetry: true });
      });
  }

  _streamEnded(hint = null, detail = {}) {
    // the response said why, so no probe: an ended stream is retried with backoff (or as told)
    this._stream = null;
    this._catchingUp = false;
    this._clearWatchdog();
    this._clearStable();
    if (this._stopped) return;
    if (hint !== null) this._scheduleHinted(hint, detail);
    else this._scheduleReconnect();
  }

  _openSocket(generation, ticket) {
    const url = connectUrl(this.endpoint, this._query(ticket), this.options.base);
    this._sinceOnSocket = this.lastEventId;
    const socket = new this._WebSocket(url);
    this._socket = socket;
    this._welcome = null;
    this._eventsOnSocket = 0;
    socket.onmessage = (message) => {
      if (generation === this._generation) this._receive(message.data);
    };
    socket.onclose = (event) => {
      if (generation === this._generation) this._lost(url, event);
    };
    socket.onerror = () => {}; // a close event follows
  }

  _receive(data) {
    const welcomed = this._welcome !== null;
    if (welcomed) this._armWatchdog(2 * this.heartbeatInterval * 1000);
    for (const line of splitFrames(data)) {
      let frame;
      try {
        frame = JSON.parse(line);
      } catch {
        this._emit("error", { code: "invalid_frame", message: "the server sent a frame that is not JSON" });
        continue;
      }
      this._dispatch(frame);
    }
  }

  /** Compare `welcome.schema` with the bundle's fingerprint; say so when that changes. */
  _checkSchema(welcome) {
    const expected = this.options.schema;
    const actual = typeof welcome.schema === "string" ? welcome.schema : null;
    if (!expected || actual === null) return; // an older server sends none: nothing to compare
    const changed = actual === expected ? null : { expected, actual };
    if ((changed?.actual ?? null) === (this.schemaChanged?.actual ?? null)) return; // said once
    this.schemaChanged = changed;
    this._emit("schemaChanged", changed);
  }

  _dispatch(frame, fromChannel = false) {
    const payload = frame.payload ?? {};
    if (this.role === "leader" && !fromChannel && frame.type !== "pong") {
      this._post({ kind: "frame", frame }); // heartbeats too: the other tabs' staleness
    }
    switch (frame.type) {
      case "welcome": {
        if (this.role === "follower") {
          // the leader's new connection: no timers here, the leader keeps it alive
          this._welcome = payload;
          this._eventsOnSocket = 0;
          this.heartbeatInterval = Number(payload.heartbeatInterval) || 25;
          if (this.lastEventId === null) this.lastEventId = payload.lastEventId ?? null;
          this._emit("welcome", payload);
          this._checkSchema(payload);
          return;
        }
        if (this._welcome !== null) return; // one welcome per connection: a later one is forged
        this._welcome = payload;
        this.heartbeatInterval = Number(payload.heartbeatInterval) || 25;
        if (this.lastEventId === null) this.lastEventId = payload.lastEventId ?? null;
        // not at once: a server that welcomes and drops must not get endless fast retries
        this._stableTimer = setTimeout(() => {
          this._stableTimer = null;
          this._attempts = 0;
          this._hintedRun = 0;
        }, this.options.stableAfter);
        this._armWatchdog(2 * this.heartbeatInterval * 1000);
        if (this.transport === "websocket") this._fallbacks = 0;
        else if (this.options.transport === "auto") this._planTrial(); // WebSocket may come back
        const fallback = this.transport === "sse" && this.options.transport === "auto";
        this._openDetail = fallback ? { transport: "sse", fallback } : { transport: this.transport };
        this._catchingUp = catchesUp(this._sinceOnSocket, payload.lastEventId ?? null, this.options.state);
        if (this._catchingUp) {
          this._setStatus("catching_up", this._openDetail);
          // frames go out in order and the replay or state is queued before the welcome is
          // sent: the answer to this ping comes after them (the server sends no other marker)
          // (the connection's generation: an older connection's pong is not this one's)
          if (this.transport === "websocket") this._send({ type: "ping", payload: { caughtUp: this._generation } });
        } else {
          this._fresh(); // nothing owed: the welcome is as current as a heartbeat
          this._setStatus("open", this._openDetail);
        }
        this._emit("welcome", payload);
        this._checkSchema(payload);
        this._ackSent = null; // a new connection knows nothing: tell it the newest ack again
        this._flushAck();
        return;
      }
      case "ping":
        this._heartbeat(); // sent after a heartbeat interval of silence: nothing is owed
        return;
      case "pong":
        if (payload.caughtUp === this._generation) this._caughtUp();
        return;
      case "state": {
        if (!this.options.state) return;
        const { collections, rules } = stateFromFrame(payload);
        this.state = collections;
        this._stateRules = rules;
        if (payload.lastEventId) this.lastEventId = payload.lastEventId;
        this._fresh();
        this._emit("state", { state: this.state, reset: true, collection: null, event: null });
        this._caughtUp(); // the state replaces the replay
        return;
      }
      case "error": {
        if (payload.code === "resume_unavailable") {
          // the server goes on live from the welcome: resume from there next time
          if (this._eventsOnSocket === 0) this.lastEventId = this._welcome?.lastEventId ?? null;
          this._emit("resume_unavailable", payload);
          this._caughtUp(); // no replay comes, and no state (it would have replaced this error)
        } else {
          // an answer to a message sent after the welcome (the ping, an ack): after the replay
          if (payload.code === "rate_limited") this._caughtUp();
          this._emit("error", payload);
        }
        return;
      }
      default: {
        if (typeof frame.type !== "string" || CLIENT_EVENTS.has(frame.type)) return;
        // the newest event when the connection opened: the replay ends with it
        const replayEnds = this._catchingUp && frame.id != null && frame.id === this._welcome?.lastEventId;
        if (this.options.shared && frame.id != null) {
          // after a takeover the new leader's replay may repeat what the old one passed on
          if (this._seen.has(frame.id)) {
            if (replayEnds) this._caughtUp();
            return;
          }
          this._seen.add(frame.id);
          if (this._seen.size > SEEN_IDS) this._seen.delete(this._seen.values().next().value);
        }
        if (frame.id != null) this.lastEventId = frame.id;
        this._eventsOnSocket += 1;
        this.lastEvent = frame;
        this._freshAt = this._now();
        if (this.state !== null) {
          const changed = applyToState(this.state, this._stateRules, frame);
          if (changed !== null) {
            this.state = changed;
            const collection = this._stateRules[frame.type].collection;
            this._emit("state", { state: this.state, reset: false, collection, event: frame });
          }
        }
        const outcome = this._emit(frame.type, frame);
        // a follower's tab is not the connection's: the leader acks what its handlers ran
        if (frame.id != null && this.role !== "follower") this._handled(frame.id, outcome);
        if (replayEnds) this._caughtUp();
      }
    }
  }

  /** A heartbeat arrived: the client is current as of now, and owed nothing queued before it. */
  _heartbeat() {
    this._fresh();
    this._caughtUp();
  }

  _fresh() {
    this._freshAt = this._now();
  }

  /** The replay or state asked for has arrived: live from here. */
  _caughtUp() {
    if (!this._catchingUp || this.role === "follower") return;
    this._catchingUp = false;
    this._fresh();
    this._setStatus("open", this._openDetail);
  }

  _lost(url, event) {
    const welcomed = this._welcome !== null;
    this._socket = null;
    this._catchingUp = false;
    this._clearWatchdog();
    this._clearStable();
    if (this._stopped) return;
    const hint = HINTED_CLOSE_CODES.has(event?.code) ? parseRetryHint(event.reason) : null;
    if (hint !== null) {
      // the server is restarting (1012) or busy (1013) and said when to come back
      this._scheduleHinted(hint, { closeCode: event.code });
    } else if (welcomed) {
      this._scheduleReconnect();
    } else {
      this._probe(url); // refused or unreachable: find out which
    }
  }

  async _probe(url) {
    const generation = this._generation;
    let response = null;
    let ticket = null;
    if (typeof this.options.ticket === "function") {
      // the handshake spent its ticket: a probe with the same one would be refused as reused
      try {
        ticket = await this._fetchTicket();
      } catch (error) {
        if (generation === this._generation && !this._stopped) this._ticketFailed(error);
        return;
      }
      if (generation !== this._generation || this._stopped) return;
    }
    try {
      response = this._fetch
        ? await this._fetch(probeUrl(url, ticket), {
            credentials: "same-origin",
            cache: "no-store",
            headers: { Accept: "application/json" },
          })
        : null;
    } catch {
      response = null; // the server is unreachable: retry
    }
    if (generation !== this._generation || this._stopped) return;
    if (response && isAuthFailure(response.status)) {
      let body = {};
      try {
        body = await response.json();
      } catch {
        body = {};
      }
      if (generation !== this._generation || this._stopped) return;
      this._stop("auth_failed", { httpStatus: response.status, code: body.error, message: body.message });
      return;
    }
    if (response?.status === 429) {
      const hint = parseRetryAfter(response.headers?.get?.("Retry-After") ?? null, this._now());
      if (hint !== null) {
        this._scheduleHinted(hint, { httpStatus: 429 });
        return;
      }
    }
    const moved = response?.redirected ? slashRedirect(url, response.url) : null;
    if (moved !== null && this.transport === "websocket" && shouldFallBack(response.status)) {
      // a mount's slash redirect, which WebSocket handshakes do not get: connect there
      const from = new URL(url).pathname;
      const to = new URL(moved).pathname;
      this.endpoint = moved;
      this._console?.info?.(`livepanel: ${from} redirects to ${to}; connecting the WebSocket to ${to}`);
      this._scheduleReconnect();
      return;
    }
    if (
      this.options.transport === "auto" &&
      this.transport === "websocket" &&
      response &&
      shouldFallBack(response.status) // without fetch there is no probe, and no fallback
    ) {
      // the endpoint is there and would let us in, but the upgrade does not get through
      this._fallbacks += 1;
      if (this._fallbacks >= this.options.fallbackAfter) {
        this.transport = "sse";
        this._sseSince = Date.now();
        this._console?.warn?.(
          `livepanel: WebSocket handshakes to ${new URL(url).pathname} fail although the ` +
            `endpoint answers HTTP ${response.status}; falling back to Server-Sent Events ` +
            "(does a proxy drop the upgrade?)",
        );
      }
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect(atLeast = 0, hint = null) {
    const backoff = planReconnect(this._attempts, this.options, this._random);
    if (backoff === null) {
      this._gaveUp = true;
      this._stop("closed", { reason: "gave_up", attempts: this._attempts });
      return;
    }
    const delay = Math.max(backoff, atLeast);
    this._attempts += 1;
    this._wait(delay, { attempt: this._attempts, delay, retryIn: delay, retryAfter: hint }, false);
  }

  /**
   * Come back when the server said (`seconds`), plus jitter: not a failed attempt, so the
   * retry budget and the backoff stay as they are; unless hints keep coming with no
   * connection staying open between them, when each counts as one (and waits at least it).
   */
  _scheduleHinted(seconds, detail) {
    this._hintedRun += 1;
    const delay = retryHintDelay(seconds, this._random);
    if (this._hintedRun > this.options.maxHintedWaits) {
      this._scheduleReconnect(delay, seconds);
      return;
    }
    this._wait(delay, { attempt: this._attempts, delay, retryIn: delay, retryAfter: seconds, ...detail }, true);
  }

  _wait(delay, detail, hinted) {
    this._clearTimer();
    this._hinted = hinted;
    this._setStatus("reconnecting", detail);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._hinted = false;
      this._open();
    }, delay);
  }

  _wakeUp() {
    // the network or the tab came back: do not sit out the backoff (but the server's hint, yes)
    if (this.status === "reconnecting" && this._timer !== null) {
      if (this._hinted) return;
      this._open();
    } else if (this.status === "closed" && this._gaveUp) {
      this.reconnect();
    } else if (this.status === "open" && this.transport === "websocket") {
      this._send({ type: "ping", payload: {} }); // a dead socket shows itself sooner
    }
  }

  _send(message) {
    try {
      this._socket?.send(JSON.stringify(message));
    } catch {
      // not open yet or already closing: the watchdog handles a dead socket
    }
  }

  _armWatchdog(ms) {
    this._clearWatchdog();
    this._watchdog = setTimeout(() => {
      this._watchdog = null;
      // no frame for two heartbeats (or no welcome in time): the connection is dead
      this._drop(4000, "no heartbeat");
      this._scheduleReconnect();
    }, ms);
  }

  _clearWatchdog() {
    if (this._watchdog !== null) clearTimeout(this._watchdog);
    this._watchdog = null;
  }

  _planTrial() {
    this._clearTrial();
    const generation = this._generation;
    const planned = { socket: null, timer: null };
    planned.timer = setTimeout(() => {
      if (this._trial === planned) this._tryWebSocket(generation);
    }, this.options.websocketRetryAfter);
    this._trial = planned;
  }

  /**
   * On SSE in `auto`: open a WebSocket beside the stream, without resuming; when it is
   * welcomed, WebSocket gets through again: switch, resuming with `since`. Else stay.
   */
  async _tryWebSocket(generation) {
    const current = () => generation === this._generation && !this._stopped;
    let ticket = null;
    if (typeof this.options.ticket === "function") {
      try {
        ticket = await this._fetchTicket();
      } catch {
        ticket = null;
      }
      if (!current()) return;
      if (ticket === null) return this._planTrial();
    }
    const query = { types: this.options.types, batch: this.options.batch, ticket };
    let socket;
    try {
      socket = new this._WebSocket(connectUrl(this.endpoint, query, this.options.base));
    } catch {
      return this._planTrial();
    }
    const trial = { socket, timer: null };
    this._trial = trial;
    const end = (welcomed) => {
      if (this._trial !== trial) return;
      this._trial = null;
      clearTimeout(trial.timer);
      socket.onmessage = socket.onclose = null;
      try {
        socket.close(1000, "trial");
      } catch {
        // already closed
      }
      if (!current()) return;
      if (!welcomed) {
        this._planTrial();
        return;
      }
      this._useWebSocket();
      this._drop(4000, "back to websocket");
      this._open();
    };
    trial.timer = setTimeout(() => end(false), this.options.connectTimeout);
    socket.onmessage = (message) => {
      for (const line of splitFrames(message.data)) {
        try {
          if (JSON.parse(line).type === "welcome") end(true);
        } catch {
          // not JSON: not a welcome
        }
      }
    };
    socket.onclose = () => end(false);
    socket.onerror = () => {};
  }

  _clearTrial() {
    const trial = this._trial;
    this._trial = null;
    if (trial === null) return;
    clearTimeout(trial.timer);
    if (trial.socket === null) return;
    trial.socket.onmessage = trial.socket.onclose = null;
    try {
      trial.socket.close(1000, "trial");
    } catch {
      // already closed
    }
  }

  _clearStable() {
    if (this._stableTimer !== null) clearTimeout(this._stableTimer);
    this._stableTimer = null;
  }

  _clearTimer() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
  }

  _drop(code, reason) {
    this._generation += 1; // the old socket's events are ignored from now on
    this._catchingUp = false;
    this._hinted = false;
    this._clearTimer();
    this._clearTrial();
    this._clearWatchdog();
    this._clearStable();
    const socket = this._socket;
    this._socket = null;
    const stream = this._stream;
    this._stream = null;
    stream?.abort();
    if (socket) {
      try {
        socket.close(code, reason);
      } catch {
        // already closed
      }
    }
  }

  _stop(status, detail) {
    this._stopped = true;
    this._drop(1000, status);
    if (!this._gaveUp) this._watchPage(false); // a client that gave up wakes up when the page does
    this._setStatus(status, detail);
  }

  _watchPage(on) {
    if (on === this._watching) return;
    this._watching = on;
    const method = on ? "addEventListener" : "removeEventListener";
    globalThis[method]?.("online", this._onOnline);
    globalThis.document?.[method]?.("visibilitychange", this._onVisible);
  }
}

/**
 * Whether a connection welcomed at `lastEventId`, opened with `since` (and `state`), still has
 * a replay or the state on its way: a `since` other than the welcome's position is replayed
 * (or answered with the state, or `resume_unavailable`); without `since`, `state` is sent.
 */
export function catchesUp(since, lastEventId, state = false) {
  if (since !== null && since !== undefined) return since !== lastEventId;
  return Boolean(state);
}

/** Create a client and start connecting (after the current task, so `on(...)` calls come first). */
export function connect(url, options) {
  return new LivePanelClient(url, options);
}
