import { act, render, screen } from "@testing-library/react";
import { afterEach, expect, it, vi } from "vitest";

import { Header } from "../src/Header";

/** The browser's WebSocket, played by the test: Header uses the global one, as a page does. */
class FakeSocket {
  static instances: FakeSocket[] = [];
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {
    FakeSocket.instances.push(this);
  }

  send() {}

  close() {}

  frame(type: string, payload: object, id?: string) {
    this.onmessage?.({ data: JSON.stringify({ type, timestamp: "2026-02-21T10:00:00.000Z", payload, id }) });
  }
}

afterEach(() => {
  vi.unstubAllGlobals();
  FakeSocket.instances = [];
});

it("shows the connection's status and hands session events to dispatch (docs/browser.md)", async () => {
  vi.stubGlobal("WebSocket", FakeSocket);
  const dispatch = vi.fn();
  const refetch = vi.fn();
  render(<Header dispatch={dispatch} refetch={refetch} />);
  await act(async () => {});
  expect(screen.getByRole("status").dataset.status).toBe("connecting");

  const socket = FakeSocket.instances[0];
  const url = new URL(socket.url);
  expect(url.pathname).toBe("/ws");
  expect(url.searchParams.get("types")).toBe("session.*");
  act(() => socket.frame("welcome", { connectionId: "c1", heartbeatInterval: 25, lastEventId: "e1:0", server: "livepanel/test" }));
  expect(screen.getByRole("status").dataset.status).toBe("open");

  act(() => socket.frame("session.created", { sessionKey: "s1", agentId: "a1", kind: "direct" }, "e1:1"));
  expect(dispatch).toHaveBeenCalledWith(expect.objectContaining({ type: "session.created", id: "e1:1" }));

  act(() => socket.frame("error", { code: "resume_unavailable", message: "refetch your state" }));
  expect(refetch).toHaveBeenCalledTimes(1);
});

it("says how far behind it is once nothing arrived for more than 30 s (docs/staying-live.md)", async () => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  try {
    vi.stubGlobal("WebSocket", FakeSocket);
    render(<Header dispatch={() => {}} refetch={() => {}} />);
    await act(async () => {});
    const socket = FakeSocket.instances[0];
    act(() => socket.frame("welcome", { connectionId: "c1", heartbeatInterval: 25, lastEventId: "e1:0", server: "livepanel/test" }));
    act(() => vi.advanceTimersByTime(24_000));
    act(() => socket.frame("ping", {}));
    act(() => vi.advanceTimersByTime(30_000));
    expect(screen.getByRole("status").textContent).toBe("Live");
    act(() => vi.advanceTimersByTime(2_000));
    expect(screen.getByRole("status").textContent).toBe("Live32 s behind");
  } finally {
    vi.useRealTimers();
  }
});
