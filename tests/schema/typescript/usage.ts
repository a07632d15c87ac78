// What a dashboard writes against the module `livepanel typescript` generates: every line
// here must compile under `tsc --strict`, and every `@ts-expect-error` must be an error.
import { LivePanelClient, connect } from "livepanel";
import type { LivePanelEvent } from "livepanel";

import { EVENT_TYPES, SCHEMA_FINGERPRINT } from "./events";
import type { EventPayloads, LivePanelCollections, LivePanelEvents, SessionCreatedPayload } from "./events";

const client = new LivePanelClient<EventPayloads, LivePanelCollections>("/ws", {
  schema: SCHEMA_FINGERPRINT,
  state: true,
});

// one type: the payload is that type's interface
client.on("session.created", (e) => {
  const key: string = e.payload.sessionKey;
  const kind: "direct" | "cron" | "subagent" = e.payload.kind;
  const label: string | undefined = e.payload.label;
  const type: "session.created" = e.type;
  return [key, kind, label, type, e.id, e.timestamp];
});
client.on("agent.status", (e) => e.payload.activeSessionCount + 1);
client.on("cron.executed", (e) => e.payload.stdout?.length ?? e.payload.exitCode);
client.on("deploy.finished", (e) => e.payload.hosts.map((h) => h.name + h.port));
client.on("deploy.finished", (e) => e.payload.outcome === "rolled_back" || e.payload.tags.red === 1);

// every event: a union discriminated by type
client.on("*", (e) => {
  switch (e.type) {
    case "session.killed":
      return e.payload.agentId;
    case "gateway.status":
      return e.payload.uptime.toFixed(0);
    default:
      return e.type;
  }
});

// the state, typed by its entries
client.on("state", ({ state, collection }) => {
  const session = state.sessions.get("s1");
  const agents: number = state.agents.size;
  const name: "sessions" | "agents" | "cronRuns" | "gateway" | "deploys" | null = collection;
  return [session?.payload.sessionKey, agents, name];
});

client.on("schemaChanged", (change) => (change === null ? "" : `${change.expected} -> ${change.actual}`));

const all: readonly (keyof EventPayloads)[] = EVENT_TYPES;
const union: LivePanelEvents | null = client.lastEvent;
const created: SessionCreatedPayload = { sessionKey: "s", agentId: "a", kind: "cron" };
const typed = connect<EventPayloads>("/ws");
typed.on("session.killed", (e) => e.payload.sessionKey);

// without the generated module, the client stays untyped: any name, plain records
const untyped = connect("/ws");
untyped.on("anything.at.all", (e: LivePanelEvent) => e.payload["whatever"]);

// ---------------------------------------------------------------- what must not compile

// @ts-expect-error a misspelt field
client.on("session.created", (e) => e.payload.sesionKey);

// @ts-expect-error a misspelt event type
client.on("session.craeted", (e) => e);

// @ts-expect-error a field of another type
client.on("session.killed", (e) => e.payload.kind);

// @ts-expect-error a literal the server never sends
client.on("session.created", (e) => e.payload.kind === "batch");

// @ts-expect-error an optional field used as if always there
client.on("session.created", (e) => e.payload.label.length);

// @ts-expect-error an integer field used as a string
client.on("agent.status", (e) => e.payload.activeSessionCount.toUpperCase());

// @ts-expect-error a nested dataclass's misspelt field
client.on("deploy.finished", (e) => e.payload.hosts[0].nmae);

// @ts-expect-error a payload missing a required field
const incomplete: SessionCreatedPayload = { sessionKey: "s", agentId: "a" };

// @ts-expect-error an unknown state collection
client.on("state", ({ state }) => state.sesions);

// @ts-expect-error the removing type is no entry of its collection
client.on("state", ({ state }) => state.sessions.get("s1")?.type === "session.killed");

export { all, created, incomplete, union };
