import { ConnectionStatus, useLivePanelState } from "livepanel-react";

import { SCHEMA_FINGERPRINT } from "./events";
import type { EventPayloads, LivePanelCollections, TypedEvent } from "./events";

/** ClawPanel: sessions, agents, cron runs and the gateway, kept by livepanel's state. */
export function App({ url }: { url: string }) {
  const { status, staleness, ready, collections, schemaChanged, reconnect } = useLivePanelState<
    LivePanelCollections,
    EventPayloads
  >(url, { schema: SCHEMA_FINGERPRINT });
  const sessions = [...(collections.sessions?.values() ?? [])];
  const agents = [...(collections.agents?.values() ?? [])];
  const runs = [...(collections.cronRuns?.values() ?? [])].reverse();
  const gateway = [...(collections.gateway?.values() ?? [])].at(-1);
  return (
    <main>
      <header>
        <h1>ClawPanel</h1>
        <ConnectionStatus
          status={status}
          staleness={staleness}
          onReconnect={reconnect}
          schemaChanged={schemaChanged}
        />
      </header>
      {ready ? null : <p>Loading…</p>}
      <Gateway event={gateway} />
      <section>
        <h2>Sessions</h2>
        <table data-table="sessions">
          <tbody>
            {sessions.map(({ payload }) => (
              <tr key={payload.sessionKey} data-key={payload.sessionKey}>
                <td>{payload.sessionKey}</td>
                <td>{payload.agentId}</td>
                <td>{payload.kind}</td>
                <td>{payload.label ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section>
        <h2>Agents</h2>
        <table data-table="agents">
          <tbody>
            {agents.map(({ payload }) => (
              <tr key={payload.agentId} data-key={payload.agentId}>
                <td>{payload.agentId}</td>
                <td>{payload.status}</td>
                <td>{payload.activeSessionCount}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section>
        <h2>Cron runs</h2>
        <table data-table="cronRuns">
          <tbody>
            {runs.map(({ id, payload }) => (
              <tr key={id} data-key={payload.jobId}>
                <td>{payload.jobId}</td>
                <td>{payload.exitCode}</td>
                <td>{payload.durationMs} ms</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </main>
  );
}

function Gateway({ event }: { event: TypedEvent<"gateway.status"> | undefined }) {
  if (event === undefined) return <p data-gateway="">Gateway: unknown</p>;
  const { status, version, uptime } = event.payload;
  return (
    <p data-gateway={status}>
      Gateway {version}: {status}, up {Math.round(uptime)} s
    </p>
  );
}
