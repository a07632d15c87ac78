import { useCallback, useEffect, useRef, useState } from "react";
import { LivePanelClient } from "./livepanel.js";
import { watchStaleness, wholeSeconds } from "./staleness.js";
import type { AnyEventOf, ClientOptions, SchemaChange, ServerError, Status, UntypedPayloads } from "./livepanel.js";

/** `M`: the payloads by event type, `EventPayloads` from `livepanel typescript`. */
export interface UseLivePanelOptions<M extends object = UntypedPayloads> extends ClientOptions {
  /** Called with every event the server broadcasts. */
  onEvent?: (event: AnyEventOf<M>) => void;
  /** The events since the last one seen are gone (the server restarted): refetch your state. */
  onResumeUnavailable?: (error: ServerError) => void;
  /** `false` keeps the hook disconnected (status `closed`). Default `true`. */
  enabled?: boolean;
}

export interface LivePanelState<M extends object = UntypedPayloads> {
  /** `catching_up` while a replay or the state is on its way, `open` once live. */
  status: Status;
  /** `true` only while live (`open`); not while `catching_up`, when the screen is not current yet. */
  isConnected: boolean;
  /**
   * Whole seconds since the newest event or heartbeat arrived (`Infinity` before any did),
   * read about once a second: the component re-renders when the number changes, never per frame.
   */
  staleness: number;
  lastEvent: AnyEventOf<M> | null;
  /**
   * With the `schema` option: the two fingerprints while the server's event types differ
   * from this bundle's (a deploy since the page loaded: offer a reload); else `null`.
   */
  schemaChanged: SchemaChange | null;
  /** Connect again now, with a fresh retry budget (also after `auth_failed` or `closed`). */
  reconnect: () => void;
}

/**
 * Connect to a livepanel endpoint for as long as the component is mounted.
 *
 *   const { status, isConnected, staleness, lastEvent, reconnect } = useLivePanel("/ws", {
 *     types: ["session.*"],
 *     onEvent: (event) => dispatch(event),
 *     onResumeUnavailable: () => refetch(),
 *   });
 *
 * The connection is made again only when `url`, `types`, `transport`, `shared` or
 * `enabled` change;
 * the callbacks, `ticket` among them, may change on every render: the latest is used.
 *
 * `shared: true` keeps one connection for all the tabs open on the dashboard:
 *
 *   useLivePanel("/ws", { shared: true, onEvent: (event) => dispatch(event) });
 *
 * Typed by the module `livepanel typescript` generates, and told when the server's
 * event types are no longer the bundle's:
 *
 *   const { lastEvent, schemaChanged } = useLivePanel<EventPayloads>("/ws", { schema: SCHEMA_FINGERPRINT });
 *
 * A single-page app that logs in on its own passes `ticket`, called before every
 * (re)connection for a fresh ticket from its REST endpoint:
 *
 *   useLivePanel("wss://panel.example/ws", {
 *     ticket: async () => (await (await fetch("/api/livepanel-ticket", { method: "POST" })).json()).ticket,
 *   });
 */
export function useLivePanel<M extends object = UntypedPayloads>(
  url: string,
  options: UseLivePanelOptions<M> = {},
): LivePanelState<M> {
  const { enabled = true } = options;
  const [status, setStatus] = useState<Status>(enabled ? "connecting" : "closed");
  const [lastEvent, setLastEvent] = useState<AnyEventOf<M> | null>(null);
  const [schemaChanged, setSchemaChanged] = useState<SchemaChange | null>(null);
  const [staleness, setStaleness] = useState(Infinity);
  const client = useRef<LivePanelClient<M> | null>(null);
  const latest = useRef(options);
  latest.current = options;
  const types = options.types?.join(",") ?? "";

  useEffect(() => {
    if (!enabled) {
      setStatus("closed");
      return undefined;
    }
    const {
      onEvent: _onEvent,
      onResumeUnavailable: _onResume,
      enabled: _enabled,
      ticket,
      ...clientOptions
    } = latest.current;
    const current = new LivePanelClient<M>(url, {
      ...clientOptions,
      // whether there is one is fixed per connection; which function, the latest render's
      ticket: ticket ? () => (latest.current.ticket ?? ticket)() : null,
    });
    client.current = current;
    setStatus(current.status);
    const unsubscribe = [
      current.on("status", (change) => {
        setStatus(change.status);
        setStaleness(wholeSeconds(current.staleness));
      }),
      watchStaleness(current, setStaleness),
      current.on("*", (event) => {
        setLastEvent(event);
        latest.current.onEvent?.(event);
      }),
      current.on("resume_unavailable", (error) => latest.current.onResumeUnavailable?.(error)),
      current.on("schemaChanged", (change) => setSchemaChanged(change)),
    ];
    return () => {
      for (const off of unsubscribe) off();
      current.close();
      if (client.current === current) client.current = null;
    };
  }, [url, types, options.transport, options.shared, options.schema, enabled]);

  const reconnect = useCallback(() => client.current?.reconnect(), []);
  return { status, isConnected: status === "open", staleness, lastEvent, schemaChanged, reconnect };
}
