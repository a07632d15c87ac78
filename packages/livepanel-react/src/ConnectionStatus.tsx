import type { CSSProperties } from "react";
import type { SchemaChange, Status } from "./livepanel.js";

/** The words shown for each status; `labels` replaces any of them (to translate, say). */
export const STATUS_LABELS: Readonly<Record<Status, string>> = Object.freeze({
  connecting: "Connecting…",
  catching_up: "Catching up…",
  open: "Live",
  reconnecting: "Reconnecting…",
  auth_failed: "Sign-in failed",
  closed: "Offline",
});

const COLORS: Record<Status, string> = {
  connecting: "#f79009",
  catching_up: "#2e90fa",
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
  /** The hook's `staleness` (seconds): shown as "x s behind" once beyond `staleAfter`. */
  staleness?: number;
  /**
   * Seconds of staleness before "x s behind" is shown (default 30). Keep it above the
   * server's heartbeat interval (25 s by default): an idle stream is that stale between pings.
   */
  staleAfter?: number;
  /** The staleness text; default `${seconds} s behind`. */
  behindLabel?: (seconds: number) => string;
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

/**
 * A dot and a word for the connection's state (Live, Catching up…, Reconnecting…, Offline,
 * Connecting…, Sign-in failed); its colour follows the status. Given the hook's `staleness`,
 * it also says how far behind the screen is once that passes `staleAfter` seconds.
 */
export function ConnectionStatus({
  status,
  onReconnect,
  labels,
  className,
  staleness,
  staleAfter = 30,
  behindLabel = (seconds) => `${seconds} s behind`,
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
  const behind =
    staleness !== undefined && Number.isFinite(staleness) && staleness > staleAfter ? Math.floor(staleness) : null;
  return (
    <span role="status" aria-live="polite" data-status={status} className={className} style={{ color }}>
      <span aria-hidden="true" style={dot} />
      {labels?.[status] ?? STATUS_LABELS[status]}
      {behind !== null ? (
        <span data-behind={behind} style={{ marginLeft: 8, color: "#344054" }}>
          {behindLabel(behind)}
        </span>
      ) : null}
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
