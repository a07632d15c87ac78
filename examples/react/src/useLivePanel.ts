import { useCallback, useEffect, useRef, useState } from "react";
import { LivePanelClient } from "livepanel";
import type { ClientOptions, LivePanelEvent, ServerError, Status } from "livepanel";

export interface UseLivePanelOptions extends ClientOptions {
  /** Called with every event the server broadcasts. */
  onEvent?: (event: LivePanelEvent) => void;
  /** The events since the last one seen are gone (the server restarted): refetch your state. */
  onResumeUnavailable?: (error: ServerError) => void;
  /** `false` keeps the hook disconnected (status `closed`). Default `true`. */
  enabled?: boolean;
}

export interface LivePanelState {
  status: Status;
  isConnected: boolean;
  lastEvent: LivePanelEvent | null;
  /** Connect again now, with a fresh retry budget (also after `auth_failed` or `closed`). */
  reconnect: () => void;
}

/**
 * Connect to a livepanel endpoint for as long as the component is mounted.
 *
 *   const { status, isConnected, lastEvent, reconnect } = useLivePanel("/ws", {
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
 * A single-page app that logs in on its own passes `ticket`, called before every
 * (re)connection for a fresh ticket from its REST endpoint:
 *
 *   useLivePanel("wss://panel.example/ws", {
 *     ticket: async () => (await (await fetch("/api/livepanel-ticket", { method: "POST" })).json()).ticket,
 *   });
 */
export function useLivePanel(url: string, options: UseLivePanelOptions = {}): LivePanelState {
  const { enabled = true } = options;
  const [status, setStatus] = useState<Status>(enabled ? "connecting" : "closed");
  const [lastEvent, setLastEvent] = useState<LivePanelEvent | null>(null);
  const client = useRef<LivePanelClient | null>(null);
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
    const current = new LivePanelClient(url, {
      ...clientOptions,
      // whether there is one is fixed per connection; which function, the latest render's
      ticket: ticket ? () => (latest.current.ticket ?? ticket)() : null,
    });
    client.current = current;
    setStatus(current.status);
    const unsubscribe = [
      current.on("status", (change) => setStatus(change.status)),
      current.on("*", (event) => {
        setLastEvent(event);
        latest.current.onEvent?.(event);
      }),
      current.on("resume_unavailable", (error) => latest.current.onResumeUnavailable?.(error)),
    ];
    return () => {
      for (const off of unsubscribe) off();
      current.close();
      if (client.current === current) client.current = null;
    };
  }, [url, types, options.transport, options.shared, enabled]);

  const reconnect = useCallback(() => client.current?.reconnect(), []);
  return { status, isConnected: status === "open", lastEvent, reconnect };
}
