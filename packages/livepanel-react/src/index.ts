export { ConnectionStatus, STATUS_LABELS } from "./ConnectionStatus.js";
export type { ConnectionStatusProps } from "./ConnectionStatus.js";
export { useLivePanel } from "./useLivePanel.js";
export type { LivePanelState, UseLivePanelOptions } from "./useLivePanel.js";
export { useLivePanelState } from "./useLivePanelState.js";
export type { CollectionsOf, LivePanelStateResult, UseLivePanelStateOptions } from "./useLivePanelState.js";
export type {
  AnyEventOf,
  ClientOptions,
  EventOf,
  LivePanelEvent,
  SchemaChange,
  StateCollections,
  Status,
  StatusChange,
  UntypedPayloads,
} from "./livepanel.js";
export { LivePanelClient, STATUSES, connect } from "./livepanel.js";
