import { useCallback, useEffect, useRef, useState } from "react";
import { LivePanelClient } from "./livepanel.js";
import { watchStaleness, wholeSeconds } from "./staleness.js";
import type { ClientOptions, SchemaChange, StateCollections, Status, UntypedPayloads } from "./livepanel.js";

export interface UseLivePanelStateOptions extends Omit<ClientOptions, "state"> {
  /** `false` keeps the hook disconnected (status `closed`). Default `true`. */
  enabled?: boolean;
}

/**
 * Typed collections may be missing (before the first state frame, or filtered out by `types`);
 * untyped ones read as before.
 */
export type CollectionsOf<C> = StateCollections extends C ? C : Partial<C>;

/** `C`: the state collections, `LivePanelCollections` from `livepanel typescript`. */
export interface LivePanelStateResult<C extends object = StateCollections> {
  /** `catching_up` until the state (or a replay) has arrived, `open` once live. */
  status: Status;
  /** `true` only while live (`open`). */
  isConnected: boolean;
  /** Whole seconds since the newest event or heartbeat arrived (`Infinity` before any did), read about once a second. */
  staleness: number;
  /** `true` once the first `state` frame arrived: `collections` shows the server's state. */
  ready: boolean;
  /**
   * The collections, `{name: Map(key -> event)}`, oldest update first. A live
   * event replaces only the Map of the collection it changes: components given
   * another collection (`React.memo`, `useMemo`) do not re-render.
   */
  collections: CollectionsOf<C>;
  /** With the `schema` option: the fingerprints while the server's types differ; else `null`. */
  schemaChanged: SchemaChange | null;
  /** Connect again now, with a fresh retry budget (also after `auth_failed` or `closed`). */
  reconnect: () => void;
}

const EMPTY = Object.freeze({});

/**
 * The dashboard's state, kept by livepanel: the server sends it on connect
 * (and again whenever a resume is not possible), live events keep it current.
 *
 *   const { status, ready, collections } = useLivePanelState("/ws", { types: ["session.*"] });
 *   const sessions = [...(collections.sessions?.values() ?? [])];
 *
 * Typed by the module `livepanel typescript` generates:
 *
 *   const { collections } = useLivePanelState<LivePanelCollections, EventPayloads>("/ws", { schema: SCHEMA_FINGERPRINT });
 *   collections.sessions?.get(key)?.payload.agentId; // checked
 *
 * No snapshot endpoint, no reducer: the collections follow the rules the
 * server declares with `event_type(..., collection=...)`.
 */
export function useLivePanelState<C extends object = StateCollections, M extends object = UntypedPayloads>(
  url: string,
  options: UseLivePanelStateOptions = {},
): LivePanelStateResult<C> {
  const { enabled = true } = options;
  const [status, setStatus] = useState<Status>(enabled ? "connecting" : "closed");
  const [collections, setCollections] = useState<C | null>(null);
  const [schemaChanged, setSchemaChanged] = useState<SchemaChange | null>(null);
  const [staleness, setStaleness] = useState(Infinity);
  const client = useRef<LivePanelClient<M, C> | null>(null);
  const latest = useRef(options);
  latest.current = options;
  const types = options.types?.join(",") ?? "";

  useEffect(() => {
    if (!enabled) {
      setStatus("closed");
      return undefined;
    }
    const { enabled: _enabled, ...clientOptions } = latest.current;
    const current = new LivePanelClient<M, C>(url, { ...clientOptions, state: true });
    client.current = current;
    setStatus(current.status);
    setCollections(null);
    const unsubscribe = [
      current.on("status", (change) => {
        setStatus(change.status);
        setStaleness(wholeSeconds(current.staleness));
      }),
      watchStaleness(current, setStaleness),
      current.on("state", (change) => setCollections(change.state)),
      current.on("schemaChanged", (change) => setSchemaChanged(change)),
    ];
    return () => {
      for (const off of unsubscribe) off();
      current.close();
      if (client.current === current) client.current = null;
    };
  }, [url, types, options.transport, options.shared, options.schema, enabled]);

  const reconnect = useCallback(() => client.current?.reconnect(), []);
  return {
    status,
    isConnected: status === "open",
    staleness,
    ready: collections !== null,
    collections: (collections ?? EMPTY) as CollectionsOf<C>,
    schemaChanged,
    reconnect,
  };
}
