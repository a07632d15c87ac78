import { ConnectionStatus, useLivePanel } from "livepanel-react";
import type { LivePanelEvent } from "livepanel-react";

export interface HeaderProps {
  /** Apply one event to the app's state (a reducer's `dispatch`, say). */
  dispatch: (event: LivePanelEvent) => void;
  /** Reload the app's state: the server could not resume where this tab left off. */
  refetch: () => void;
}

/** A page header that shows the live connection's status (and staleness) and feeds session events to the app. */
export function Header({ dispatch, refetch }: HeaderProps) {
  const { status, staleness, reconnect } = useLivePanel("/ws", {
    types: ["session.*"],
    onEvent: (event) => dispatch(event),
    onResumeUnavailable: () => refetch(),
  });
  // Live, Catching up…, Reconnecting…, Offline; and "42 s behind" once nothing came for 30 s
  return <ConnectionStatus status={status} staleness={staleness} staleAfter={30} onReconnect={reconnect} />;
}
