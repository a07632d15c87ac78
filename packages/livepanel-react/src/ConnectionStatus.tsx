import type { CSSProperties } from "react";
import type { SchemaChange, Status } from "./livepanel.js";

const LABELS: Record<Status, string> = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  auth_failed: "Authentication failed",
  closed: "Disconnected",
};

const COLORS: Record<Status, string> = {
  connecting: "#f79009",
  open: "#12b76a",
  reconnecting: "#f79009",
  auth_failed: "#f04438",
  closed: "#98a2b3",
};

export interface ConnectionStatusProps {
  status: Status;
  /** Shown as a button once the client has stopped (`closed`, `auth_failed`). */
  onReconnect?: () => void;
  /** Replace the default labels, e.g. to translate them. */
  labels?: Partial<Record<Status, string>>;
  className?: string;
  /**
   * The hook's `schemaChanged`: when set, the server's event types are newer than this
   * bundle's, and a reload is offered (events keep arriving meanwhile).
   */
  schemaChanged?: SchemaChange | null;
  /** What the reload offer does; default `location.reload()`. */
  onReload?: () => void;
  /** The reload offer's text. */
  reloadLabel?: string;
}

/** A dot and a word for the connection's state; its colour follows the status. */
export function ConnectionStatus({
  status,
  onReconnect,
  labels,
  className,
  schemaChanged,
  onReload,
  reloadLabel = "A new version is available",
}: ConnectionStatusProps) {
  const color = COLORS[status];
  const dot: CSSProperties = {
    display: "inline-block",
    width: 8,
    height: 8,
    borderRadius: "50%",
    background: color,
    marginRight: 6,
  };
  const stopped = status === "closed" || status === "auth_failed";
  return (
    <span role="status" aria-live="polite" data-status={status} className={className} style={{ color }}>
      <span aria-hidden="true" style={dot} />
      {labels?.[status] ?? LABELS[status]}
      {onReconnect && stopped ? (
        <button type="button" onClick={onReconnect} style={{ marginLeft: 8 }}>
          Reconnect
        </button>
      ) : null}
      {schemaChanged ? (
        <span data-schema-changed={schemaChanged.actual} style={{ marginLeft: 8, color: "#344054" }}>
          {reloadLabel}{" "}
          <button type="button" onClick={onReload ?? (() => globalThis.location?.reload())}>
            Reload
          </button>
        </span>
      ) : null}
    </span>
  );
}
