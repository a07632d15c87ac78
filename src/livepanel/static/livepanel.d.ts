// Type declarations for livepanel.js, the browser client of a livepanel endpoint.

export type Transport = "websocket" | "sse";

/**
 * `catching_up`: welcomed, but a replay (a resume with `since`) or the state is still on its
 * way; `open`: live, the screen is current.
 */
export type Status = "connecting" | "catching_up" | "open" | "reconnecting" | "auth_failed" | "closed";

/** A server frame carrying a broadcast event. */
export interface LivePanelEvent<P = Record<string, unknown>, T extends string = string> {
  type: T;
  id: string;
  timestamp: string;
  payload: P;
}

/**
 * Without a module from `livepanel typescript`: any event type, payloads as plain records.
 * With one, pass its `EventPayloads` (each type string to its payload interface) as the
 * client's first type parameter: `new LivePanelClient<EventPayloads>(url, {schema: SCHEMA_FINGERPRINT})`.
 */
export type UntypedPayloads = Record<string, Record<string, unknown>>;

/** The event of type `K` of a payload map (`EventPayloads`). */
export type EventOf<M, K extends keyof M & string> = LivePanelEvent<M[K], K>;

/** Every event of a payload map, discriminated by `type`. */
export type AnyEventOf<M> = { [K in keyof M & string]: EventOf<M, K> }[keyof M & string];

/** `schemaChanged`: the fingerprint this bundle was built on, and the server's. */
export interface SchemaChange {
  expected: string;
  actual: string;
}

export interface Welcome {
  connectionId: string;
  heartbeatInterval: number;
  lastEventId: string;
  server: string;
  /** The fingerprint of the server's event types (`livepanel schema`). */
  schema?: string;
}

export interface ServerError {
  code: string;
  message: string;
}

export interface StatusChange {
  status: Status;
  previous: Status | null;
  /** `open`: the transport the connection uses. */
  transport?: Transport;
  /** `open` on SSE in `auto`: the WebSocket handshakes failed, this is the fallback. */
  fallback?: boolean;
  /** `reconnecting`: the attempt about to be made (1 for the first). */
  attempt?: number;
  /** `reconnecting`: milliseconds until that attempt. */
  delay?: number;
  /** `reconnecting`: milliseconds until the next attempt (the same as `delay`). */
  retryIn?: number;
  /**
   * `reconnecting`: the server's retry hint in seconds (a 429's `Retry-After`, a close's
   * `retry_after=`, an ended event stream's `retry:`), capped at 300; `null` for the
   * ordinary backoff. A hinted wait is not a failed attempt.
   */
  retryAfter?: number | null;
  /** `reconnecting` on a hint: the close code that carried it (1012 restarting, 1013 busy). */
  closeCode?: number;
  /** `reconnecting` on a hint an event stream gave in its `retry:` field as it ended. */
  streamRetry?: boolean;
  /** `closed`: `"client"` after close(), `"gave_up"` after the last retry failed. */
  reason?: "client" | "gave_up";
  /**
   * `auth_failed`: the probe's HTTP status (401 or 403) and the server's error code;
   * `reconnecting`: 429 when the hint came as `Retry-After`.
   */
  httpStatus?: number;
  code?: string;
  message?: string;
}

export interface BackoffOptions {
  initialDelay?: number;
  maxDelay?: number;
  factor?: number;
  retries?: number;
}

export interface ClientOptions extends BackoffOptions {
  connectTimeout?: number;
  stableAfter?: number;
  batch?: boolean;
  types?: string[] | null;
  since?: string | null;
  /** Ask for the state on connect (`?state=1`) and keep `client.state` up to date. */
  state?: boolean;
  /**
   * The `SCHEMA_FINGERPRINT` of the module `livepanel typescript` generated: when the server's
   * `welcome.schema` differs (a deploy since this bundle was built) the client emits
   * `schemaChanged`, and keeps receiving.
   */
  schema?: string | null;
  /**
   * Milliseconds between two acks at least: the client acks the newest event id whose
   * handlers all ran without throwing (and whose returned promises resolved). Default 250.
   */
  ackInterval?: number;
  /**
   * Retry hints followed in a row, with no connection staying open `stableAfter` between
   * them, before further ones count as failed attempts (default 20).
   */
  maxHintedWaits?: number;
  /**
   * A fresh connect ticket (from your REST endpoint), fetched before every connection attempt
   * and before the probe of a refused one, sent as `?ticket=`. A rejection or an empty string
   * is an `error` (`code: "ticket_unavailable"`) and a retry with backoff.
   */
  ticket?: (() => Promise<string> | string) | null;
  /**
   * `"auto"` (default): WebSocket, falling back to Server-Sent Events when handshakes fail
   * although the endpoint answers HTTP without refusing (426: a proxy drops the upgrade),
   * and trying WebSocket again after `websocketRetryAfter` or on `reconnect()`.
   */
  transport?: "auto" | Transport;
  /** In `auto`: handshakes lost that way before falling back to SSE (default 2). */
  fallbackAfter?: number;
  /**
   * In `auto`: milliseconds on SSE before WebSocket is tried again (default 300000): beside an
   * open stream (switching once it is welcomed, resuming with `since`), or first on the next
   * reconnection.
   */
  websocketRetryAfter?: number;
  /**
   * One connection for all tabs of this browser on the same endpoint, `types` and `state`:
   * a Web Lock elects the tab holding it, a BroadcastChannel shares its frames and status,
   * and another tab takes over (resuming with `since`) when it closes. Without Web Locks
   * or BroadcastChannel the client connects on its own.
   */
  shared?: boolean;
  /** Where the client logs a followed redirect (`info`) and a fallback to SSE (`warn`); default `console`. */
  console?: { info(message: string): void; warn(message: string): void } | null;
  /** Resolve relative URLs against this (default: the page's location). */
  base?: string;
  /** For tests and non-browser runtimes. */
  WebSocket?: new (url: string) => WebSocketLike;
  fetch?: (
    url: string,
    init?: RequestInit,
  ) => Promise<{
    status: number;
    ok?: boolean;
    redirected?: boolean;
    url?: string;
    headers?: { get(name: string): string | null };
    body?: ReadableStream<Uint8Array> | null;
    json(): Promise<unknown>;
  }>;
  random?: () => number;
  /** The clock of `staleness`, milliseconds since the epoch (default `Date.now`). */
  now?: () => number;
  locks?: { request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<unknown> | unknown): Promise<unknown> } | null;
  BroadcastChannel?: new (name: string) => {
    onmessage: ((event: { data: any }) => void) | null;
    postMessage(message: unknown): void;
    close(): void;
  };
}

export interface WebSocketLike {
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export const DEFAULT_OPTIONS: Readonly<Required<BackoffOptions> & {
  connectTimeout: number;
  stableAfter: number;
  batch: boolean;
  types: null;
  since: null;
  state: boolean;
  ticket: null;
  transport: "auto";
  fallbackAfter: number;
  websocketRetryAfter: number;
  shared: boolean;
  schema: null;
  ackInterval: number;
  maxHintedWaits: number;
}>;
/** No retry hint makes the client wait longer than this many seconds (plus jitter). */
export const MAX_RETRY_HINT: number;
export const STATUSES: readonly Status[];
export const TRANSPORTS: readonly ("auto" | Transport)[];

export function backoffCeiling(attempt: number, options?: BackoffOptions): number;
export function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
export function backoffSchedule(count: number, options?: BackoffOptions): number[];
export function shouldGiveUp(attempts: number, retries?: number): boolean;
export function planReconnect(attempts: number, options?: BackoffOptions, random?: () => number): number | null;
export function isAuthFailure(httpStatus: number): boolean;
/** The seconds of a close reason `retry_after=<decimal>`, capped at 300; `null` for anything else. */
export function parseRetryHint(reason: unknown): number | null;
/** The seconds of an HTTP `Retry-After` (whole seconds or a date), capped at 300; `null` if unreadable. */
export function parseRetryAfter(header: unknown, now?: number): number | null;
/** Milliseconds to wait for a hint: the hint plus a jitter in `[0, max(0.25 s, 20 % of it)]`. */
export function retryHintDelay(seconds: number, random?: () => number): number;
/** Whether a connection opened with `since` (and `state`) and welcomed at `lastEventId` has a replay or state on its way. */
export function catchesUp(since: string | null | undefined, lastEventId: string | null, state?: boolean): boolean;
export function splitFrames(data: unknown): string[];
export function connectUrl(
  url: string,
  query?: {
    since?: string | null;
    types?: string[] | null;
    batch?: boolean;
    state?: boolean;
    ticket?: string | null;
    /** Mark the request as a fallback from WebSocket (`?fallback=1`), which the server counts. */
    fallback?: boolean;
  },
  base?: string,
): string;
export function streamUrl(
  url: string,
  query?: { since?: string | null; types?: string[] | null; state?: boolean; ticket?: string | null; fallback?: boolean },
  base?: string,
): string;
/** The Web Lock and BroadcastChannel name of `shared: true` tabs. */
export function sharedName(url: string, query?: { types?: string[] | null; state?: boolean }, base?: string): string;
/** True when a probe's status means the endpoint answers without refusing (426, 2xx): worth trying SSE. */
export function shouldFallBack(httpStatus: number): boolean;
export interface SseMessage {
  event: string;
  id: string | null;
  data: string;
}
/**
 * An incremental `text/event-stream` parser; `onComment` gets each comment's text (`"ping"`),
 * `onRetry` each `retry:` field's milliseconds (digits only, as the field wants).
 */
export function sseParser(
  onComment?: ((text: string) => void) | null,
  onRetry?: ((milliseconds: number) => void) | null,
): { push(text: string): SseMessage[] };
export function probeUrl(wsUrl: string, ticket?: string | null): string;
/**
 * Where to connect after a probe of `from` was redirected to `to`: `to` as `ws(s):` without a
 * query when it is on the same origin at the same path but for a trailing slash, else `null`.
 */
export function slashRedirect(from: string, to: string): string | null;

/** The collections kept for a client: `{name: Map(key -> event)}`, oldest update first. */
export type StateCollections = Record<string, Map<unknown, LivePanelEvent>>;

export interface StateRule {
  collection: string;
  key: string | null;
  keep: number | null;
  removes: boolean;
}

export interface StateChange<C = StateCollections, E = LivePanelEvent> {
  state: C;
  /** `true` for a state frame (everything may have changed). */
  reset: boolean;
  /** The collection a live event changed (`null` on reset). */
  collection: (keyof C & string) | null;
  event: E | null;
}

export function stateFromFrame(payload: unknown): { collections: StateCollections; rules: Record<string, StateRule> };
export function applyToState(
  collections: StateCollections,
  rules: Record<string, StateRule>,
  event: LivePanelEvent,
): StateCollections | null;

export type Unsubscribe = () => void;

/**
 * `M`: the event payloads by type (`EventPayloads` from `livepanel typescript`), so that
 * `client.on("session.created", (e) => e.payload.sessionKey)` is checked; `C`: the state
 * collections (`LivePanelCollections`). Both default to untyped.
 */
export class LivePanelClient<M extends object = UntypedPayloads, C extends object = StateCollections> {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  /** Where the client connects: `url`, or where a same-origin slash redirect of it leads. */
  readonly endpoint: string;
  readonly status: Status;
  /** With `shared: true`: whether this tab holds the connection (`null` before the lock answers or unshared). */
  readonly role: "leader" | "follower" | null;
  /** The transport in use or being tried. */
  readonly transport: Transport;
  /** `true` only while live (`open`): not while `catching_up`. */
  readonly isConnected: boolean;
  /**
   * Seconds since the newest event or heartbeat arrived (or the client went live);
   * `Infinity` before any did. Read it when needed: no event fires as it grows.
   */
  readonly staleness: number;
  readonly lastEventId: string | null;
  /** The newest event id every handler has run for: what the server is told in `ack`. */
  readonly ackedId: string | null;
  readonly lastEvent: AnyEventOf<M> | null;
  readonly heartbeatInterval: number | null;
  /** With `{state: true}`: the collections, `null` until the first state frame. */
  readonly state: C | null;
  /** With `schema`: the two fingerprints while the server's event types differ; else `null`. */
  readonly schemaChanged: SchemaChange | null;
  on(name: "status", listener: (change: StatusChange) => void): Unsubscribe;
  on(name: "welcome", listener: (welcome: Welcome) => void): Unsubscribe;
  on(name: "state", listener: (change: StateChange<C, AnyEventOf<M>>) => void): Unsubscribe;
  on(name: "resume_unavailable" | "error", listener: (error: ServerError) => void): Unsubscribe;
  /** `null` when the server's types match the bundle's again (a rollback). */
  on(name: "schemaChanged", listener: (change: SchemaChange | null) => void): Unsubscribe;
  /** Every event. A listener that returns a promise is acknowledged once it resolves. */
  on(name: "*", listener: (event: AnyEventOf<M>) => unknown): Unsubscribe;
  /** The events of one type. */
  on<K extends keyof M & string>(
    name: K,
    listener: (event: EventOf<M, K>) => unknown,
  ): Unsubscribe;
  off(name: string, listener: (...args: never[]) => void): void;
  reconnect(options?: { since?: string | null }): void;
  close(): void;
}

export function connect<M extends object = UntypedPayloads, C extends object = StateCollections>(
  url: string,
  options?: ClientOptions,
): LivePanelClient<M, C>;
