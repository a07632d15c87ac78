export { ConnectionStatus } from "./ConnectionStatus.js";
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
  UntypedPayloads,
} from "./livepanel.js";
export { LivePanelClient, connect } from "./livepanel.js";
