// The ClawPanel demo page: a snapshot, then events only.
//
// The page fetches /api/snapshot once, connects with `since` set to the
// snapshot's lastEventId, and from then on applies events. When the server
// says `resume_unavailable` (it restarted and lost its history), the page
// refetches the snapshot and reconnects from it, so it ends identical to the
// server's state.
import { connect } from "/livepanel.js";

const MAX_CRON_RUNS = 20; // as livepanel/demo/state.py
const MAX_FEED = 60;

const STATUS_TEXT = {
  connecting: "Connecting…",
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

let state = emptyState();
let client = null;
let resyncing = false;
const feed = [];
const counters = { resumeUnavailable: 0, resyncs: 0, events: 0 };

function emptyState() {
  return { lastEventId: null, sessions: {}, agents: {}, cronRuns: [], gateway: null };
}

// The reducer: the same as DashboardState.apply in livepanel/demo/state.py.
function apply(s, event) {
  const p = event.payload;
  const at = event.timestamp;
  switch (event.type) {
    case "session.created":
      s.sessions[p.sessionKey] = { ...p, startedAt: at };
      break;
    case "session.killed":
      delete s.sessions[p.sessionKey];
      break;
    case "agent.status":
      s.agents[p.agentId] = { ...p, updatedAt: at };
      break;
    case "cron.executed":
      s.cronRuns.unshift({ ...p, id: event.id, at });
      s.cronRuns.length = Math.min(s.cronRuns.length, MAX_CRON_RUNS);
      break;
    case "gateway.status":
      s.gateway = { ...p, at };
      break;
    default:
      break;
  }
  if (event.id != null) s.lastEventId = event.id;
}

// ---------------------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

async function fetchSnapshot() {
  for (let delay = 500; ; delay = Math.min(delay * 2, 8000)) {
    try {
      const response = await fetch("/api/snapshot", {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (response.ok) return await response.json();
    } catch {
      // the server is away: try again
    }
    await sleep(delay);
  }
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
  const rows = Object.values(state.sessions).sort((a, b) => b.startedAt.localeCompare(a.startedAt));
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
  const agents = Object.values(state.agents).sort((a, b) => a.agentId.localeCompare(b.agentId));
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
  const runs = state.cronRuns;
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
  const g = state.gateway;
  const status = $("gateway-status");
  status.textContent = g ? g.status : "unknown";
  status.dataset.tone = g ? (TONES[g.status] ?? "muted") : "muted";
  if (!g) return;
  // uptime as reported, plus the time since the report
  const live = g.status === "running" ? g.uptime + (Date.now() - Date.parse(g.at)) / 1000 : g.uptime;
  $("gateway-detail").textContent = `v${g.version} · up ${uptime(live)}`;
}

function render() {
  renderSessions();
  renderAgents();
  renderCron();
  renderGateway();
  renderFeed();
  $("last-event-id").textContent = state.lastEventId ?? "–";
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

function renderStatus({ status, attempt }) {
  const box = $("connection");
  box.dataset.status = status;
  $("connection-text").textContent =
    status === "reconnecting" && attempt > 1 ? `Reconnecting… (try ${attempt})` : STATUS_TEXT[status];
  $("reconnect").hidden = !(status === "closed" || status === "auth_failed");
  if (status === "auth_failed") {
    notice("The server refused our credentials. Reload the page to log in again.", { tone: "red" });
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

async function resync() {
  counters.resumeUnavailable += 1;
  if (resyncing) return;
  resyncing = true; // events are ignored until the snapshot is in: the reconnect replays them
  notice("Some events were missed while disconnected: reloading the current state…");
  const snapshot = await fetchSnapshot();
  state = snapshot;
  resyncing = false;
  counters.resyncs += 1;
  pushFeed({ marker: "state reloaded from the server" });
  render();
  client.reconnect({ since: snapshot.lastEventId });
  notice("State reloaded: the dashboard is up to date.", { hideAfter: 4000 });
}

// "3 watching": presence.changed, sent by the server at most once a second
function renderPresence({ users, connections }) {
  const box = $("watching");
  box.textContent = `${connections} watching`;
  box.title = users.map((u) => (u.connections > 1 ? `${u.user} (${u.connections} tabs)` : u.user)).join(", ");
  box.hidden = false;
}

async function main() {
  $("spawn-form").addEventListener("submit", spawn);
  $("reconnect").addEventListener("click", () => client.reconnect());
  state = await fetchSnapshot();
  render();
  client = connect("/ws", { since: state.lastEventId });
  client.on("status", renderStatus);
  client.on("resume_unavailable", resync);
  client.on("*", (event) => {
    if (resyncing) return;
    counters.events += 1;
    apply(state, event);
    if (event.type === "presence.changed") {
      renderPresence(event.payload); // the top bar, not the activity feed
      return;
    }
    pushFeed({ id: event.id, type: event.type, timestamp: event.timestamp, text: describe(event), tone: toneOf(event) });
    scheduleRender();
  });
  setInterval(tick, 1000);
}

// for tests and the curious: window.livepanelDemo.state()
window.livepanelDemo = {
  get client() {
    return client;
  },
  state: () => structuredClone(state),
  feedIds: () => feed.filter((entry) => entry.id).map((entry) => entry.id),
  counters,
};

main();
