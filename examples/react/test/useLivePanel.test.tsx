import { act, render, renderHook, screen } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ClientOptions, WebSocketLike } from "livepanel";

import { ConnectionStatus, STATUSES, STATUS_LABELS, useLivePanel, useLivePanelState } from "livepanel-react";
import type { UseLivePanelOptions } from "livepanel-react";

/** Stands in for the browser's WebSocket: the test plays the server. */
class FakeSocket implements WebSocketLike {
  static instances: FakeSocket[] = [];
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  closed: { code?: number; reason?: string } | null = null;
  sent: unknown[] = [];

  constructor(readonly url: string) {
    FakeSocket.instances.push(this);
  }

  send(data: string) {
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string) {
    this.closed = { code, reason };
  }

  frame(type: string, payload: object = {}, id?: string) {
    this.onmessage?.({ data: JSON.stringify({ type, timestamp: "2026-02-21T10:00:00.000Z", payload, id }) });
  }

  welcome(lastEventId = "e1:0") {
    this.frame("welcome", { connectionId: "c1", heartbeatInterval: 25, lastEventId, server: "livepanel/test" });
  }

  drop() {
    this.onclose?.({ code: 1006 });
  }
}

const latest = () => FakeSocket.instances[FakeSocket.instances.length - 1];
const fake = (extra: UseLivePanelOptions = {}): UseLivePanelOptions => ({
  WebSocket: FakeSocket as unknown as ClientOptions["WebSocket"],
  fetch: async () => {
    throw new TypeError("offline");
  },
  base: "http://panel.test/",
  ...extra,
});
const settle = () => act(async () => {});

beforeEach(() => {
  FakeSocket.instances = [];
});

afterEach(() => {
  vi.useRealTimers();
});

describe("useLivePanel", () => {
  it("is connecting, then open and connected once the server says welcome", async () => {
    const { result } = renderHook(() => useLivePanel("/ws", fake()));
    expect(result.current.status).toBe("connecting");
    expect(result.current.isConnected).toBe(false);
    await settle();
    expect(FakeSocket.instances).toHaveLength(1);
    expect(latest().url).toBe("ws://panel.test/ws?batch=1");
    act(() => latest().welcome());
    expect(result.current.status).toBe("open");
    expect(result.current.isConnected).toBe(true);
  });

  it("exposes the last event and hands every event to onEvent", async () => {
    const onEvent = vi.fn();
    const { result } = renderHook(() => useLivePanel("/ws", fake({ onEvent })));
    await settle();
    act(() => {
      latest().welcome();
      latest().frame("session.created", { sessionKey: "s1" }, "e1:1");
      latest().frame("session.killed", { sessionKey: "s1" }, "e1:2");
    });
    expect(result.current.lastEvent).toMatchObject({ type: "session.killed", id: "e1:2" });
    expect(onEvent.mock.calls.map(([event]) => event.id)).toEqual(["e1:1", "e1:2"]);
  });

  it("shows reconnecting after a drop and resumes from the last event", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { result } = renderHook(() => useLivePanel("/ws", fake({ random: () => 0 })));
    await settle();
    act(() => {
      latest().welcome();
      latest().frame("agent.status", { agentId: "a1" }, "e1:7");
    });
    await act(async () => latest().drop());
    expect(result.current.status).toBe("reconnecting");
    await act(async () => vi.advanceTimersByTime(1));
    expect(FakeSocket.instances).toHaveLength(2);
    expect(new URL(latest().url).searchParams.get("since")).toBe("e1:7");
    act(() => latest().welcome("e1:7"));
    expect(result.current.status).toBe("open");
  });

  it("calls onResumeUnavailable so the app can refetch its state", async () => {
    const onResumeUnavailable = vi.fn();
    renderHook(() => useLivePanel("/ws", fake({ onResumeUnavailable })));
    await settle();
    act(() => {
      latest().welcome();
      latest().frame("error", { code: "resume_unavailable", message: "refetch" });
    });
    expect(onResumeUnavailable).toHaveBeenCalledWith({ code: "resume_unavailable", message: "refetch" });
  });

  it("ends in auth_failed when the probe answers 401, and reconnect() tries again", async () => {
    const fetch = vi.fn(async () => ({ status: 401, json: async () => ({ error: "unauthorized" }) }));
    const { result } = renderHook(() => useLivePanel("/ws", fake({ fetch })));
    await settle();
    await act(async () => latest().drop());
    expect(fetch).toHaveBeenCalledWith("http://panel.test/ws?batch=1", expect.anything());
    expect(result.current.status).toBe("auth_failed");
    act(() => result.current.reconnect());
    expect(result.current.status).toBe("connecting");
    expect(FakeSocket.instances).toHaveLength(2);
  });

  it("closes the socket on unmount and never reconnects", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { unmount } = renderHook(() => useLivePanel("/ws", fake()));
    await settle();
    act(() => latest().welcome());
    unmount();
    expect(latest().closed?.code).toBe(1000);
    vi.advanceTimersByTime(120_000);
    expect(FakeSocket.instances).toHaveLength(1);
  });

  it("reconnects when the url changes, not when a callback does", async () => {
    const { rerender } = renderHook(({ url, onEvent }) => useLivePanel(url, fake({ onEvent })), {
      initialProps: { url: "/ws", onEvent: () => {} },
    });
    await settle();
    rerender({ url: "/ws", onEvent: () => {} });
    await settle();
    expect(FakeSocket.instances).toHaveLength(1);
    rerender({ url: "/other", onEvent: () => {} });
    await settle();
    expect(FakeSocket.instances).toHaveLength(2);
    expect(FakeSocket.instances[0].closed?.code).toBe(1000);
    expect(latest().url).toBe("ws://panel.test/other?batch=1");
  });

  it("fetches a fresh ticket before every connection, with the latest ticket function", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const ticketOf = (url: string) => new URL(url).searchParams.get("ticket");
    const { rerender } = renderHook(({ ticket }) => useLivePanel("/ws", fake({ random: () => 0, ticket })), {
      initialProps: { ticket: async () => "first" },
    });
    await settle();
    expect(ticketOf(latest().url)).toBe("first");
    rerender({ ticket: async () => "second" });
    await settle();
    expect(FakeSocket.instances).toHaveLength(1); // a new function is no reason to reconnect
    act(() => latest().welcome());
    await act(async () => latest().drop());
    await act(async () => vi.advanceTimersByTime(1));
    await settle();
    expect(FakeSocket.instances).toHaveLength(2);
    expect(ticketOf(latest().url)).toBe("second");
  });

  it("is catching_up, not connected, while a resume's replay is on its way; open once it is through", async () => {
    const { result } = renderHook(() => useLivePanel("/ws", fake({ since: "e1:2" })));
    await settle();
    act(() => latest().welcome("e1:4"));
    expect(result.current.status).toBe("catching_up");
    expect(result.current.isConnected).toBe(false);
    act(() => {
      latest().frame("session.created", { sessionKey: "s3" }, "e1:3");
      latest().frame("session.created", { sessionKey: "s4" }, "e1:4");
    });
    expect(result.current.status).toBe("open");
    expect(result.current.isConnected).toBe(true);
  });

  it("exposes staleness in whole seconds, read about once a second, not on every frame", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    let clock = 1_000_000;
    let renders = 0;
    const { result } = renderHook(() => {
      renders += 1;
      return useLivePanel("/ws", fake({ now: () => clock }));
    });
    expect(result.current.staleness).toBe(Infinity);
    await settle();
    act(() => latest().welcome());
    expect(result.current.staleness).toBe(0);
    const before = renders;
    // heartbeats every 200 ms for 5 s: current all along, so not one re-render
    for (let i = 0; i < 25; i += 1) {
      clock += 200;
      act(() => {
        latest().frame("ping");
        vi.advanceTimersByTime(200);
      });
    }
    // (React may render once more to find that an unchanged value needs no commit)
    expect(renders - before).toBeLessThanOrEqual(1);
    // then silence: the number grows once a second, one render each
    const quiet = renders;
    for (let i = 0; i < 5; i += 1) {
      clock += 1000;
      act(() => vi.advanceTimersByTime(1000));
    }
    expect(result.current.staleness).toBe(5);
    expect(renders - quiet).toBe(5);
    clock += 300;
    act(() => latest().frame("session.created", { sessionKey: "s1" }, "e1:1"));
    act(() => vi.advanceTimersByTime(1000));
    expect(result.current.staleness).toBe(0);
  });

  it("useLivePanelState exposes status and staleness too", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    let clock = 1_000_000;
    const { result } = renderHook(() => useLivePanelState("/ws", fake({ now: () => clock })));
    await settle();
    act(() => latest().welcome("e1:0"));
    expect(result.current.status).toBe("catching_up");
    act(() => latest().frame("state", { lastEventId: "e1:0", collections: {}, types: {} }));
    expect(result.current.status).toBe("open");
    expect(result.current.ready).toBe(true);
    clock += 3000;
    act(() => vi.advanceTimersByTime(1000));
    expect(result.current.staleness).toBe(3);
  });

  it("stays closed while disabled", async () => {
    const { result } = renderHook(() => useLivePanel("/ws", { ...fake(), enabled: false }));
    await settle();
    expect(result.current.status).toBe("closed");
    expect(FakeSocket.instances).toHaveLength(0);
  });
});

describe("ConnectionStatus", () => {
  it.each([
    ["connecting", "Connecting…", "rgb(247, 144, 9)"],
    ["catching_up", "Catching up…", "rgb(46, 144, 250)"],
    ["open", "Live", "rgb(18, 183, 106)"],
    ["reconnecting", "Reconnecting…", "rgb(247, 144, 9)"],
    ["auth_failed", "Sign-in failed", "rgb(240, 68, 56)"],
    ["closed", "Offline", "rgb(152, 162, 179)"],
  ] as const)("shows %s as %s in its colour", (status, text, color) => {
    render(<ConnectionStatus status={status} />);
    const box = screen.getByRole("status");
    expect(box.textContent).toBe(text);
    expect(box.dataset.status).toBe(status);
    expect(box.style.color).toBe(color);
  });

  it("offers Reconnect only once the client has stopped", () => {
    const onReconnect = vi.fn();
    const { rerender } = render(<ConnectionStatus status="open" onReconnect={onReconnect} />);
    expect(screen.queryByRole("button")).toBeNull();
    rerender(<ConnectionStatus status="auth_failed" onReconnect={onReconnect} />);
    act(() => screen.getByRole("button", { name: "Reconnect" }).click());
    expect(onReconnect).toHaveBeenCalledOnce();
  });

  it("has a label for every status the client reports", () => {
    for (const status of STATUSES) expect(STATUS_LABELS[status]).toBeTruthy();
    expect(Object.keys(STATUS_LABELS).sort()).toEqual([...STATUSES].sort());
  });

  it("says how far behind it is once staleness passes staleAfter, and nothing before", () => {
    const { rerender } = render(<ConnectionStatus status="open" staleness={12} staleAfter={30} />);
    expect(screen.getByRole("status").textContent).toBe("Live");
    rerender(<ConnectionStatus status="reconnecting" staleness={42} staleAfter={30} />);
    expect(screen.getByRole("status").textContent).toBe("Reconnecting…42 s behind");
    rerender(<ConnectionStatus status="closed" staleness={95.7} />);
    expect(screen.getByRole("status").textContent).toBe("Offline95 s behind");
    rerender(<ConnectionStatus status="connecting" staleness={Infinity} />);
    expect(screen.getByRole("status").textContent).toBe("Connecting…");
    rerender(<ConnectionStatus status="open" staleness={8} staleAfter={5} behindLabel={(s) => `${s} s de retard`} />);
    expect(screen.getByRole("status").textContent).toBe("Live8 s de retard");
  });

  it("takes translated labels", () => {
    render(<ConnectionStatus status="open" labels={{ open: "En direct" }} />);
    expect(screen.getByRole("status").textContent).toBe("En direct");
  });
});

describe("the hook and the component together", () => {
  function Panel() {
    const { status, reconnect, lastEvent } = useLivePanel("/ws", fake());
    return (
      <div>
        <ConnectionStatus status={status} onReconnect={reconnect} />
        <p data-testid="last">{lastEvent?.type ?? "none"}</p>
      </div>
    );
  }

  it("renders live status and the last event type", async () => {
    render(<Panel />);
    await settle();
    act(() => {
      latest().welcome();
      latest().frame("cron.executed", { jobId: "backup" }, "e1:3");
    });
    expect(screen.getByRole("status").textContent).toBe("Live");
    expect(screen.getByTestId("last").textContent).toBe("cron.executed");
  });
});

describe("shared: true", () => {
  /** Web Locks, exclusive only: the first request holds the lock, the others wait. */
  function fakeLocks(): NonNullable<ClientOptions["locks"]> {
    const waiting: Array<() => void> = [];
    let held = false;
    return {
      request(_name, _options, callback) {
        return new Promise((resolve) => {
          const run = () => {
            held = true;
            Promise.resolve(callback()).then(resolve, resolve).finally(() => {
              held = false;
              waiting.shift()?.();
            });
          };
          if (held) waiting.push(run);
          else run();
        });
      },
    };
  }

  it("passes shared through: two hooks, one connection, both get the events", async () => {
    const { BroadcastChannel } = await import("node:worker_threads");
    const locks = fakeLocks();
    const options = () =>
      fake({ shared: true, locks, BroadcastChannel: BroadcastChannel as unknown as ClientOptions["BroadcastChannel"] });
    const first = renderHook(() => useLivePanel("/ws", options()));
    await settle();
    const second = renderHook(() => useLivePanel("/ws", options()));
    await settle();
    expect(FakeSocket.instances).toHaveLength(1);
    act(() => {
      latest().welcome();
      latest().frame("session.created", { sessionKey: "s1" }, "e1:1");
    });
    await vi.waitFor(() => expect(second.result.current.lastEvent?.id).toBe("e1:1"));
    expect(first.result.current.lastEvent?.id).toBe("e1:1");
    expect(second.result.current.status).toBe("open");
    first.unmount();
    second.unmount();
  });
});
