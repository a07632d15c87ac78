import { act, renderHook } from "@testing-library/react";
import { beforeEach, expect, it } from "vitest";
import type { ClientOptions, WebSocketLike } from "livepanel";

import { useLivePanelState } from "livepanel-react";
import type { UseLivePanelStateOptions } from "livepanel-react";

/** Stands in for the browser's WebSocket: the test plays the server. */
class FakeSocket implements WebSocketLike {
  static instances: FakeSocket[] = [];
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {
    FakeSocket.instances.push(this);
  }

  send() {}

  close() {}

  frame(type: string, payload: object = {}, id?: string) {
    this.onmessage?.({ data: JSON.stringify({ type, timestamp: "2026-02-21T10:00:00.000Z", payload, id }) });
  }
}

const latest = () => FakeSocket.instances[FakeSocket.instances.length - 1];
const fake = (extra: UseLivePanelStateOptions = {}): UseLivePanelStateOptions => ({
  WebSocket: FakeSocket as unknown as ClientOptions["WebSocket"],
  fetch: async () => {
    throw new TypeError("offline");
  },
  base: "http://panel.test/",
  ...extra,
});
const settle = () => act(async () => {});

const STATE = {
  lastEventId: "e1:2",
  collections: {
    sessions: {
      key: "sessionKey",
      keep: null,
      entries: [{ type: "session.created", id: "e1:1", timestamp: "t", payload: { sessionKey: "s1" } }],
    },
    agents: {
      key: "agentId",
      keep: null,
      entries: [{ type: "agent.status", id: "e1:2", timestamp: "t", payload: { agentId: "a1" } }],
    },
  },
  types: {
    "session.created": { collection: "sessions", removes: false },
    "session.killed": { collection: "sessions", removes: true },
    "agent.status": { collection: "agents", removes: false },
  },
};

beforeEach(() => {
  FakeSocket.instances = [];
});

it("asks for the state and returns the collections once it arrives", async () => {
  const { result } = renderHook(() => useLivePanelState("/ws", fake()));
  await settle();
  expect(new URL(latest().url).searchParams.get("state")).toBe("1");
  expect(result.current.ready).toBe(false);
  expect(result.current.collections).toEqual({});
  act(() => latest().frame("welcome", { connectionId: "c", heartbeatInterval: 25, lastEventId: "e1:2", server: "t" }));
  act(() => latest().frame("state", STATE));
  expect(result.current.status).toBe("open");
  expect(result.current.ready).toBe(true);
  expect([...result.current.collections.sessions.keys()]).toEqual(["s1"]);
});

it("a live event replaces only the Map of the collection it changes", async () => {
  const { result } = renderHook(() => useLivePanelState("/ws", fake()));
  await settle();
  act(() => latest().frame("welcome", { connectionId: "c", heartbeatInterval: 25, lastEventId: "e1:2", server: "t" }));
  act(() => latest().frame("state", STATE));
  const { sessions, agents } = result.current.collections;
  act(() => latest().frame("session.killed", { sessionKey: "s1", agentId: "a1" }, "e1:3"));
  expect(result.current.collections.sessions).not.toBe(sessions);
  expect(result.current.collections.sessions.size).toBe(0);
  expect(result.current.collections.agents).toBe(agents);
});
