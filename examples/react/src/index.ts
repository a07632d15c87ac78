export { ConnectionStatus } from "./ConnectionStatus";
export type { ConnectionStatusProps } from "./ConnectionStatus";
export { useLivePanel } from "./useLivePanel";
export type { LivePanelState, UseLivePanelOptions } from "./useLivePanel";
