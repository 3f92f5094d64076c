// The web view of asm-http: plain JavaScript, no build step, no external resources.
// Every value from the server is written with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "asm_token";

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

function setToken(value) {
  localStorage.setItem(TOKEN_KEY, value);
  document.cookie = TOKEN_KEY + "=" + encodeURIComponent(value) + "; path=/; SameSite=Strict";
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (response.status === 401) { askToken(); }
  if (!response.ok) {
    const error = new Error(json && json.message ? json.message : response.statusText);
    error.code = json && json.code;
    throw error;
  }
  return json;
}

function askToken() {
  const box = document.getElementById("auth");
  box.hidden = false;
  document.getElementById("auth-form").onsubmit = (e) => {
    e.preventDefault();
    setToken(document.getElementById("auth-token").value);
    location.reload();
  };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(status) { return el("span", { class: "badge " + (status || "") }, status || "–"); }
function tokens(u) { return u ? (u.input_tokens + u.output_tokens).toLocaleString() + " (" + u.input_tokens + " in / " + u.output_tokens + " out)" : "–"; }
function cost(c) { return c === null || c === undefined ? "–" : "$" + c.toFixed(4); }
function when(t) { return t ? new Date(t).toLocaleString() : "–"; }
// Ids are a prefix and a UUIDv7 whose first digits are its creation time: ids made in the same
// minute share them, so the short form keeps the prefix and the random tail.
function short(id) { return id ? (id.length > 16 ? id.slice(0, 4) + "…" + id.slice(-8) : id) : ""; }

// ----- sessions list --------------------------------------------------------------------------

async function sessionsPage(app) {
  const health = await api("GET", "/v1/health");
  const list = await api("GET", "/v1/sessions?limit=100");
  const providers = el("select", { id: "new-provider" }, health.providers.map((p) => el("option", { value: p }, p)));
  const agent = el("input", { id: "new-agent", placeholder: "agent id", value: "web" });
  const form = el("form", { class: "inline card", id: "new-session", onsubmit: async (e) => {
    e.preventDefault();
    const session = await api("POST", "/v1/sessions", { agent_id: agent.value, provider: providers.value });
    location.href = "/sessions/" + session.id;
  } }, el("strong", {}, "New session"), agent, providers, el("button", { type: "submit" }, "Create"));
  const rows = list.sessions.map((s) => el("tr", { "data-session": s.id },
    el("td", {}, el("a", { href: "/sessions/" + s.id, class: "mono", title: s.id }, short(s.id))),
    el("td", {}, badge(s.status)), el("td", {}, s.agent_id), el("td", {}, s.provider || "–"),
    el("td", {}, s.run_count), el("td", {}, tokens(s.token_usage)), el("td", {}, cost(s.cost_usd)),
    el("td", { class: "muted" }, when(s.updated_at))));
  app.replaceChildren(
    el("h1", {}, "Sessions"), form,
    el("table", { id: "sessions" },
      el("thead", {}, el("tr", {}, ["Session", "Status", "Agent", "Provider", "Runs", "Tokens", "Cost", "Updated"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No sessions yet.")))));
}

// ----- one session ----------------------------------------------------------------------------

const RENDER = {
  session_created: (e) => ["lifecycle", "session created (" + (e.data.provider || "?") + ")"],
  session_started: () => ["lifecycle", "session started"],
  run_started: (e) => ["lifecycle", "▶ " + short(e.run_id) + " started" + (e.data.model ? " · " + e.data.model : "")],
  run_completed: (e) => ["lifecycle", "■ " + short(e.run_id) + " completed" + (e.data.stop_reason ? " (" + e.data.stop_reason + ")" : "")],
  run_cancelled: (e) => ["error", "■ " + short(e.run_id) + " cancelled" + (e.data.reason ? ": " + e.data.reason : "")],
  run_failed: (e) => ["error", "✗ " + short(e.run_id) + " failed [" + (e.data.error_code || "?") + "] " + (e.data.error_message || "")],
  run_timeout: (e) => ["error", "✗ " + short(e.run_id) + " timed out: " + (e.data.error_message || "")],
  message_sent: (e) => ["user", (e.data.role || "user") + ": " + (e.data.content || "")],
  tool_call_started: (e) => ["tool", "⚙ " + (e.data.tool_name || "tool") + " " + JSON.stringify(e.data.tool_input || {})],
  tool_call_completed: (e) => ["tool-ok", "✓ " + (e.data.tool_name || "tool") + " → " + clip(e.data.tool_output)],
  tool_call_failed: (e) => ["error", "✗ " + (e.data.tool_name || "tool") + " → " + clip(e.data.tool_output)],
  error_occurred: (e) => ["error", "error [" + (e.data.error_code || "?") + "] " + (e.data.error_message || "")],
  token_usage_updated: (e) => ["usage", "usage: " + (e.data.input_tokens || 0) + " in / " + (e.data.output_tokens || 0) + " out"],
  reasoning_completed: (e) => ["reasoning", "thinking: " + (e.data.redacted ? "(redacted)" : e.data.content || "")],
  reasoning_streamed: () => null,
  turn_completed: () => null,
};

function clip(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > 400 ? text.slice(0, 400) + "…" : (text || "");
}

class EventLog {
  constructor(node) { this.node = node; this.streaming = new Map(); this.lastSequence = 0; }

  line(event, cls, text) {
    const row = el("div", { class: "event " + cls, "data-kind": event.kind, "data-sequence": event.sequence, "data-run": event.run_id || "" },
      el("span", { class: "seq" }, "#" + event.sequence), text);
    this.node.append(row);
    return row;
  }

  add(event) {
    if (event.sequence <= this.lastSequence) return; // exactly once, also across reconnects
    this.lastSequence = event.sequence;
    const stick = this.node.scrollTop + this.node.clientHeight >= this.node.scrollHeight - 30;
    if (event.kind === "message_streamed") {
      let row = this.streaming.get(event.run_id);
      if (!row) { row = this.line(event, "assistant", "assistant: "); this.streaming.set(event.run_id, row); }
      row.append(document.createTextNode(event.data.delta || event.data.content || ""));
    } else if (event.kind === "message_received" && (event.data.role || "assistant") === "assistant") {
      const row = this.streaming.get(event.run_id);
      this.streaming.delete(event.run_id);
      if (row) { row.dataset.kind = "message_received"; row.replaceChildren(row.firstChild, "assistant: " + (event.data.content || "")); }
      else this.line(event, "assistant", "assistant: " + (event.data.content || ""));
    } else {
      const render = RENDER[event.kind];
      const out = render ? render(event) : ["other", event.kind + " " + clip(event.data)];
      if (out) this.line(event, out[0], out[1]);
    }
    if (stick) this.node.scrollTop = this.node.scrollHeight;
  }
}

async function sessionPage(app, id) {
  const summary = el("div", { class: "summary card", id: "summary" });
  const runs = el("tbody", { id: "runs" });
  const prompt = el("textarea", { id: "prompt", placeholder: "Ask the agent…" });
  const formError = el("div", { class: "error-box", id: "form-error" });
  const state = el("span", { id: "stream-state", class: "muted" }, "connecting…");
  const events = el("div", { id: "events" });
  const form = el("form", { class: "run card", id: "run-form", onsubmit: async (e) => {
    e.preventDefault();
    formError.textContent = "";
    try {
      await api("POST", "/v1/sessions/" + id + "/runs", { input: prompt.value });
      prompt.value = "";
      scheduleRefresh();
    } catch (error) { formError.textContent = "[" + (error.code || "error") + "] " + error.message; }
  } }, el("h2", {}, "New run"), prompt, el("div", { class: "inline spaced" }, el("button", { type: "submit" }, "Run"), formError));

  app.replaceChildren(
    el("h1", {}, "Session ", el("span", { class: "mono" }, id)), summary,
    el("h2", {}, "Runs"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Run", "Status", "Provider", "Tokens", "Cost", "Started", ""].map((h) => el("th", {}, h)))), runs),
    form,
    el("h2", {}, "Events ", state), events);

  async function refresh() {
    const [session, list] = await Promise.all([api("GET", "/v1/sessions/" + id), api("GET", "/v1/sessions/" + id + "/runs")]);
    summary.replaceChildren(
      el("div", {}, el("span", {}, "status"), badge(session.status)),
      el("div", {}, el("span", {}, "agent"), session.agent_id),
      el("div", {}, el("span", {}, "provider"), session.provider || "–"),
      el("div", {}, el("span", {}, "runs"), session.run_count),
      el("div", {}, el("span", {}, "tokens"), tokens(session.token_usage)),
      el("div", {}, el("span", {}, "cost"), cost(session.cost_usd)),
      el("div", {}, el("span", {}, "created"), when(session.created_at)));
    runs.replaceChildren(...list.slice().reverse().map((r) => el("tr", { "data-run": r.id },
      el("td", { class: "mono", title: r.id }, short(r.id)), el("td", {}, badge(r.status)), el("td", {}, r.provider || "–"),
      el("td", {}, tokens(r.token_usage)), el("td", {}, cost(r.cost_usd)), el("td", { class: "muted" }, when(r.started_at)),
      el("td", {}, r.status === "pending" || r.status === "running"
        ? el("button", { class: "small", onclick: async () => {
          try { await api("POST", "/v1/runs/" + r.id + "/cancel"); } catch (error) { formError.textContent = "[" + (error.code || "error") + "] " + error.message; }
          scheduleRefresh();
        } }, "Cancel") : ""))));
    if (!list.length) runs.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No runs yet.")));
  }

  // Refreshes the summary and the runs table after lifecycle events: one request pair at a
  // time, and one more at most when events arrived meanwhile (a replayed history of many
  // runs costs two refreshes, not two per run).
  let refreshing = null;
  let again = false;
  function scheduleRefresh() {
    if (refreshing) { again = true; return; }
    refreshing = refresh()
      .catch((error) => { state.textContent = "refresh failed: [" + (error.code || "error") + "] " + error.message; })
      .finally(() => { refreshing = null; if (again) { again = false; scheduleRefresh(); } });
  }

  await refresh();
  const log = new EventLog(events);
  // EventSource reconnects by itself and sends Last-Event-ID; the server resumes after it.
  const source = new EventSource("/v1/sessions/" + id + "/events/stream?after=0");
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  const onEvent = (message) => {
    const event = JSON.parse(message.data);
    log.add(event);
    if (event.kind.startsWith("run_") || event.kind.startsWith("session_")) scheduleRefresh();
  };
  for (const kind of ["session_created", "session_started", "session_paused", "session_resumed", "session_completed",
    "session_failed", "session_cancelled", "run_started", "run_completed", "run_failed", "run_cancelled", "run_timeout",
    "message_sent", "message_received", "message_streamed", "tool_call_started", "tool_call_completed", "tool_call_failed",
    "error_occurred", "error_recovered", "token_usage_updated", "turn_completed", "workspace_snapshot_taken",
    "workspace_diff_computed", "policy_violation", "tool_approval_requested", "tool_approval_granted",
    "tool_approval_denied", "reasoning_streamed", "reasoning_completed", "provider_raw"]) {
    source.addEventListener(kind, onEvent);
  }
  source.addEventListener("error", (message) => {
    if (message.data) { const body = JSON.parse(message.data); log.line({ kind: "error", sequence: "!" }, "error", "[" + body.code + "] " + body.message); }
  });
}

async function main() {
  const app = document.getElementById("app");
  if (token()) setToken(token());
  try {
    const health = await api("GET", "/v1/health");
    document.getElementById("server-info").textContent = "v" + health.version + " · providers: " + health.providers.join(", ");
    const match = location.pathname.match(/^\/sessions\/([^/]+)$/);
    if (match) await sessionPage(app, decodeURIComponent(match[1]));
    else await sessionsPage(app);
  } catch (error) {
    app.replaceChildren(el("p", { class: "error-box" }, "[" + (error.code || "error") + "] " + error.message));
  }
}

main();
