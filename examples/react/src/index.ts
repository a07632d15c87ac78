export { ConnectionStatus } from "./ConnectionStatus";
export type { ConnectionStatusProps } from "./ConnectionStatus";
export { useLivePanel } from "./useLivePanel";
export type { LivePanelState, UseLivePanelOptions } from "./useLivePanel";
export { useLivePanelState } from "./useLivePanelState";
export type { LivePanelStateResult, UseLivePanelStateOptions } from "./useLivePanelState";
