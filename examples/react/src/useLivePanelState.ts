import { useCallback, useEffect, useRef, useState } from "react";
import { LivePanelClient } from "livepanel";
import type { ClientOptions, StateCollections, Status } from "livepanel";

export interface UseLivePanelStateOptions extends Omit<ClientOptions, "state"> {
  /** `false` keeps the hook disconnected (status `closed`). Default `true`. */
  enabled?: boolean;
}

export interface LivePanelStateResult {
  status: Status;
  isConnected: boolean;
  /** `true` once the first `state` frame arrived: `collections` shows the server's state. */
  ready: boolean;
  /**
   * The collections, `{name: Map(key -> event)}`, oldest update first. A live
   * event replaces only the Map of the collection it changes: components given
   * another collection (`React.memo`, `useMemo`) do not re-render.
   */
  collections: StateCollections;
  /** Connect again now, with a fresh retry budget (also after `auth_failed` or `closed`). */
  reconnect: () => void;
}

const EMPTY: StateCollections = Object.freeze({}) as StateCollections;

/**
 * The dashboard's state, kept by livepanel: the server sends it on connect
 * (and again whenever a resume is not possible), live events keep it current.
 *
 *   const { status, ready, collections } = useLivePanelState("/ws", { types: ["session.*"] });
 *   const sessions = [...(collections.sessions?.values() ?? [])];
 *
 * No snapshot endpoint, no reducer: the collections follow the rules the
 * server declares with `event_type(..., collection=...)`.
 */
export function useLivePanelState(url: string, options: UseLivePanelStateOptions = {}): LivePanelStateResult {
  const { enabled = true } = options;
  const [status, setStatus] = useState<Status>(enabled ? "connecting" : "closed");
  const [collections, setCollections] = useState<StateCollections | null>(null);
  const client = useRef<LivePanelClient | null>(null);
  const latest = useRef(options);
  latest.current = options;
  const types = options.types?.join(",") ?? "";

  useEffect(() => {
    if (!enabled) {
      setStatus("closed");
      return undefined;
    }
    const { enabled: _enabled, ...clientOptions } = latest.current;
    const current = new LivePanelClient(url, { ...clientOptions, state: true });
    client.current = current;
    setStatus(current.status);
    setCollections(null);
    const unsubscribe = [
      current.on("status", (change) => setStatus(change.status)),
      current.on("state", (change) => setCollections(change.state)),
    ];
    return () => {
      for (const off of unsubscribe) off();
      current.close();
      if (client.current === current) client.current = null;
    };
  }, [url, types, options.transport, options.shared, enabled]);

  const reconnect = useCallback(() => client.current?.reconnect(), []);
  return {
    status,
    isConnected: status === "open",
    ready: collections !== null,
    collections: collections ?? EMPTY,
    reconnect,
  };
}
