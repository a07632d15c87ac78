// The ClawPanel demo page: the state inside the stream, then events only.
//
// The page connects with `{state: true}`: the server sends the state first
// (sessions, agents, cron runs, gateway: the collections the event types
// declare), then every later event, and livepanel.js keeps `client.state` up
// to date. When the server cannot resume the page (it restarted and lost its
// history), it sends the state again. The page folds nothing by hand and
// fetches no snapshot: it renders `client.state`.
import { connect } from "/livepanel.js";

const MAX_FEED = 60;

const STATUS_TEXT = {
  connecting: "Connecting…",
  catching_up: "Catching up…",
  open: "Live",
  reconnecting: "Reconnecting…",
  auth_failed: "Authentication failed",
  closed: "Disconnected",
};
const TONES = {
  running: "green",
  idle: "muted",
  error: "red",
  stopped: "muted",
  direct: "blue",
  cron: "violet",
  subagent: "teal",
};

let client = null;
let staleSince = null; // Date.now() when the connection was lost; null while live
const feed = [];
const counters = { states: 0, events: 0 };

/** A collection of `client.state` as an array of events, oldest update first. */
function entries(name) {
  return [...(client?.state?.[name]?.values() ?? [])];
}

// ---------------------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);
// relative to the origin, never to the page's URL: a page opened as
// http://user:pass@host/ has credentials in its URL, and fetch() refuses those
const api = (path) => new URL(path, location.origin).href;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function badge(text, tone = TONES[text] ?? "muted") {
  return h("span", { class: "badge", dataset: { tone } }, String(text));
}

function ago(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

function when(iso) {
  return h("time", { datetime: iso, title: iso, class: "ago" }, ago(iso));
}

function duration(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function uptime(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${s % 60} s`;
  return `${s % 60} s`;
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

let noticeTimer = null;
function notice(text, { tone = "blue", hideAfter = 0 } = {}) {
  const box = $("notice");
  box.textContent = text;
  box.dataset.tone = tone;
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (hideAfter) noticeTimer = setTimeout(() => (box.hidden = true), hideAfter);
}

async function post(path, body) {
  const response = await fetch(api(path), {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

// ---------------------------------------------------------------------------- activity feed

function describe(event) {
  const p = event.payload;
  switch (event.type) {
    case "session.created":
      return `${p.agentId} started ${p.kind} session ${p.sessionKey}${p.label ? ` · ${p.label}` : ""}`;
    case "session.killed":
      return `session ${p.sessionKey} on ${p.agentId} ended`;
    case "agent.status":
      return `${p.agentId} ${p.status === "error" ? "reports an error" : `is ${p.status}`} · ${p.activeSessionCount} active`;
    case "cron.executed":
      return `${p.jobId} exited ${p.exitCode} after ${duration(p.durationMs)}`;
    case "gateway.status":
      return `gateway ${p.status} · v${p.version}`;
    default:
      return JSON.stringify(p);
  }
}

function toneOf(event) {
  const p = event.payload;
  if (event.type === "cron.executed") return p.exitCode === 0 ? "green" : "red";
  if (event.type === "agent.status" || event.type === "gateway.status") return TONES[p.status];
  if (event.type === "session.killed") return "muted";
  return "blue";
}

function pushFeed(entry) {
  feed.unshift(entry);
  feed.length = Math.min(feed.length, MAX_FEED);
}

function renderFeed() {
  const list = $("activity");
  list.replaceChildren(
    ...feed.map((entry) =>
      entry.marker
        ? h("li", { class: "marker" }, entry.marker)
        : h(
            "li",
            { dataset: { id: entry.id, type: entry.type } },
            h("time", { datetime: entry.timestamp }, clock(entry.timestamp)),
            badge(entry.type, entry.tone),
            h("span", { class: "text" }, entry.text),
          ),
    ),
  );
}

// ---------------------------------------------------------------------------- rendering

const seen = new Set(); // session keys already drawn, to highlight new rows

function renderSessions() {
  const rows = entries("sessions")
    .map((event) => ({ ...event.payload, startedAt: event.timestamp }))
    .sort((a, b) => b.startedAt.localeCompare(a.startedAt));
  $("sessions").tBodies[0].replaceChildren(
    ...rows.map((s) => {
      const row = h(
        "tr",
        { dataset: { key: s.sessionKey }, class: seen.has(s.sessionKey) ? null : "fresh" },
        h("td", {}, h("code", {}, s.sessionKey)),
        h("td", {}, s.agentId),
        h("td", {}, badge(s.kind)),
        h("td", { class: `ellipsis${s.label ? "" : " muted"}` }, s.label ?? "–"),
        h("td", {}, when(s.startedAt)),
        h(
          "td",
          { class: "actions" },
          h("button", { class: "btn btn-danger", type: "button", onclick: (e) => kill(s.sessionKey, e.currentTarget) }, "Kill"),
        ),
      );
      seen.add(s.sessionKey);
      return row;
    }),
  );
  $("sessions-empty").hidden = rows.length > 0;
  $("session-count").textContent = rows.length;
  const kinds = {};
  for (const s of rows) kinds[s.kind] = (kinds[s.kind] ?? 0) + 1;
  $("session-breakdown").textContent =
    Object.entries(kinds)
      .map(([kind, n]) => `${n} ${kind}`)
      .join(" · ") || "none running";
}

function renderAgents() {
  const agents = entries("agents")
    .map((event) => ({ ...event.payload, updatedAt: event.timestamp }))
    .sort((a, b) => a.agentId.localeCompare(b.agentId));
  $("agents").tBodies[0].replaceChildren(
    ...agents.map((a) =>
      h(
        "tr",
        { dataset: { agent: a.agentId } },
        h("td", {}, h("strong", {}, a.agentId)),
        h("td", {}, badge(a.status)),
        h("td", { class: "num" }, String(a.activeSessionCount)),
        h("td", {}, when(a.lastActivity ?? a.updatedAt)),
      ),
    ),
  );
  const running = agents.filter((a) => a.status === "running").length;
  const failing = agents.filter((a) => a.status === "error").length;
  $("agent-count").textContent = `${running} / ${agents.length}`;
  $("agent-breakdown").textContent = agents.length
    ? `${agents.length - running - failing} idle${failing ? ` · ${failing} in error` : ""}`
    : "no agents yet";
  const select = $("spawn-agent");
  const names = agents.map((a) => a.agentId);
  if (select.options.length !== names.length) {
    const chosen = select.value;
    select.replaceChildren(...names.map((name) => h("option", { value: name }, name)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

function renderCron() {
  const runs = entries("cronRuns")
    .map((event) => ({ ...event.payload, id: event.id, at: event.timestamp }))
    .reverse(); // newest first
  $("cron").tBodies[0].replaceChildren(
    ...runs.map((r) =>
      h(
        "tr",
        { dataset: { id: r.id } },
        h("td", {}, h("strong", {}, r.jobId)),
        h("td", { class: "ellipsis", title: r.command }, h("code", {}, r.command)),
        h("td", { title: r.stderr ?? r.stdout ?? "" }, badge(r.exitCode === 0 ? "0 ok" : `${r.exitCode} failed`, r.exitCode === 0 ? "green" : "red")),
        h("td", { class: "num" }, duration(r.durationMs)),
        h("td", {}, when(r.at)),
      ),
    ),
  );
  $("cron-empty").hidden = runs.length > 0;
  const ok = runs.filter((r) => r.exitCode === 0).length;
  $("cron-rate").textContent = runs.length ? `${Math.round((100 * ok) / runs.length)}%` : "–";
  $("cron-breakdown").textContent = runs.length
    ? `${ok} of the last ${runs.length} runs succeeded`
    : "no runs yet";
}

function renderGateway() {
  const newest = entries("gateway").at(-1);
  const g = newest ? { ...newest.payload, at: newest.timestamp } : null;
  const status = $("gateway-status");
  status.textContent = g ? g.status : "unknown";
  status.dataset.tone = g ? (TONES[g.status] ?? "muted") : "muted";
  if (!g) return;
  // uptime as reported, plus the time since the report, but not past the moment we lost
  // the server: from then on nobody knows whether the gateway is still up
  const now = staleSince ?? Date.now();
  const live = g.status === "running" ? g.uptime + Math.max(0, now - Date.parse(g.at)) / 1000 : g.uptime;
  const asOf = staleSince === null ? "" : ` · as of ${clock(new Date(staleSince).toISOString())}`;
  $("gateway-detail").textContent = `v${g.version} · up ${uptime(live)}${asOf}`;
}

function render() {
  renderSessions();
  renderAgents();
  renderCron();
  renderGateway();
  renderFeed();
  $("last-event-id").textContent = client?.lastEventId ?? "–";
}

let frame = 0;
function scheduleRender() {
  if (!frame) frame = requestAnimationFrame(() => {
    frame = 0;
    render();
  });
}

function tick() {
  for (const node of document.querySelectorAll("time.ago")) node.textContent = ago(node.dateTime);
  renderGateway();
}

/** Live or not: while not, the numbers are the last ones known, and the page says so. */
function renderStaleness(live) {
  if (live === (staleSince === null)) return;
  staleSince = live ? null : Date.now();
  if (live) delete document.body.dataset.stale;
  else document.body.dataset.stale = "true";
  if (!live) {
    // who watches is only known while connected; the server sends it again on the next open
    const box = $("watching");
    box.textContent = "";
    box.title = "";
    box.hidden = true;
  }
  renderGateway();
}

function renderStatus({ status, attempt, delay, reason, message, retryAfter }) {
  renderStaleness(status === "open");
  const box = $("connection");
  box.dataset.status = status;
  $("connection-text").textContent =
    status === "reconnecting" && attempt > 1 ? `Reconnecting… (try ${attempt})` : STATUS_TEXT[status];
  $("reconnect").hidden = !(status === "closed" || status === "auth_failed");
  // every failure is said on the page, with its reason: never an endless "Connecting…"
  if (status === "auth_failed") {
    const why = message ? ` (${message})` : "";
    notice(`The server refused our credentials${why}. Reload the page to log in again.`, { tone: "red" });
  } else if (status === "reconnecting" && retryAfter != null) {
    const wait = Math.max(1, Math.round(delay / 1000));
    notice(`The server is restarting or busy and asked us to come back; trying again in ${wait} s.`, {
      tone: "amber",
    });
  } else if (status === "reconnecting") {
    const wait = delay ? `; trying again in ${Math.max(1, Math.round(delay / 1000))} s` : "";
    notice(`Cannot reach the server${wait} (try ${attempt ?? 1} of ${client?.options.retries ?? 10}).`, {
      tone: "amber",
    });
  } else if (status === "closed" && reason === "gave_up") {
    notice("Gave up connecting to the server: it is down or unreachable. Press Reconnect to try again.", {
      tone: "red",
    });
  } else if (status === "open") {
    $("notice").hidden = true;
  }
}

// ---------------------------------------------------------------------------- actions

async function kill(key, button) {
  button.disabled = true;
  try {
    await post(`/api/sessions/${encodeURIComponent(key)}/kill`);
  } catch (error) {
    button.disabled = false;
    notice(`Could not kill ${key}: ${error.message}`, { tone: "red", hideAfter: 5000 });
  }
}

async function spawn(event) {
  event.preventDefault();
  const button = $("spawn");
  button.disabled = true;
  try {
    await post("/api/sessions/spawn", {
      agentId: $("spawn-agent").value || undefined,
      kind: $("spawn-kind").value,
      label: $("spawn-label").value.trim() || undefined,
    });
    $("spawn-label").value = "";
  } catch (error) {
    notice(`Could not spawn a session: ${error.message}`, { tone: "red", hideAfter: 5000 });
  } finally {
    button.disabled = false;
  }
}

function onState({ reset, event }) {
  if (reset) {
    counters.states += 1;
    if (counters.states > 1) pushFeed({ marker: "state received from the server" });
  }
  scheduleRender();
  return event;
}

// "3 watching": presence.changed, sent by the server at most once a second
function renderPresence({ users, connections }) {
  const box = $("watching");
  box.textContent = `${connections} watching`;
  box.title = users.map((u) => (u.connections > 1 ? `${u.user} (${u.connections} tabs)` : u.user)).join(", ");
  box.hidden = false;
}

function main() {
  $("spawn-form").addEventListener("submit", spawn);
  $("reconnect").addEventListener("click", () => client.reconnect());
  try {
    client = connect("/ws", { state: true });
  } catch (error) {
    notice(`Cannot connect: ${error.message}`, { tone: "red" });
    renderStatus({ status: "closed" });
    return;
  }
  client.on("status", renderStatus);
  client.on("state", onState);
  client.on("error", ({ code, message }) => notice(`The server said ${code}: ${message}`, { tone: "red", hideAfter: 8000 }));
  client.on("*", (event) => {
    counters.events += 1;
    if (event.type === "presence.changed") {
      renderPresence(event.payload); // the top bar, not the activity feed
      return;
    }
    pushFeed({ id: event.id, type: event.type, timestamp: event.timestamp, text: describe(event), tone: toneOf(event) });
    scheduleRender();
  });
  setInterval(tick, 1000);
}

// for tests and the curious: window.livepanelDemo.state() is {lastEventId, collections: {name: [id]}}
window.livepanelDemo = {
  get client() {
    return client;
  },
  state: () => ({
    lastEventId: client?.lastEventId ?? null,
    collections: Object.fromEntries(
      Object.entries(client?.state ?? {}).map(([name, map]) => [name, [...map.values()].map((e) => e.id)]),
    ),
  }),
  feedIds: () => feed.filter((entry) => entry.id).map((entry) => entry.id),
  counters,
};

main();
