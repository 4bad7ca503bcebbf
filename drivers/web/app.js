// The ticktock Control Center: one page on ticktockd's HTTP API (docs/http.md).
// No build step, no dependencies. The admin token lives in the cookie
// ticktock_token, which the server accepts only from its own pages; an
// agent-scoped token given as ?token= on a HUD link stays in memory.
"use strict";

const $ = (sel) => document.querySelector(sel);
const enc = encodeURIComponent;
const ui = {
  shown: 0,          // counts views shown: a slow answer for an earlier one is dropped
  streams: [],       // open EventSources of the view
  timers: [],        // its refresh timers
  agentsNext: null,  // `next` of the agents list
  hudToken: null,    // an agent token for the HUD view, from ?token=
  inspected: null,   // the index of the record in the inspector
};

// -- the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The answer's JSON, or its text with `asText` (to keep 64-bit numbers).
async function api(method, path, body, asText) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = typeof body === "string" ? "text/plain" : "application/json";
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (res.status === 401) {
    forgetToken();
    showSignIn("The token was refused. Sign in again.");
    throw new ApiError(401, "UNAUTHORIZED", "not signed in");
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: "HTTP_" + res.status, message: text };
    throw new ApiError(res.status, err.code, err.message);
  }
  return asText ? text : data;
}

const agentPath = (id, rest) => "/v1/agents/" + enc(id) + (rest || "");

// -- small helpers ---------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children)
    if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}

function kv(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
}

function usd(micro) {
  const n = Number(micro || 0);
  return "$" + (n / 1e6).toFixed(n % 1e4 === 0 ? 2 : 6);
}
const limit = (micro) => (Number(micro) ? usd(micro) : "no limit");

function when(us) {
  if (!us) return "";
  return new Date(Number(us) / 1000).toLocaleString(undefined, { hour12: false });
}

function duration(ns) {
  const n = Number(ns || 0);
  if (n < 1e6) return (n / 1e3).toFixed(1) + " µs";
  if (n < 1e9) return (n / 1e6).toFixed(1) + " ms";
  return (n / 1e9).toFixed(2) + " s";
}

function summaryText(s) {
  if (s === undefined || s === null) return "";
  if (typeof s === "object" && Object.keys(s).length === 0) return "";
  return typeof s === "string" ? s : JSON.stringify(s);
}

function badge(text) { return el("span", { class: "badge " + text }, text); }

let errorTimer = null;
function showError(e) {
  if (e instanceof ApiError && e.status === 401) return;
  const p = $("#error");
  p.textContent = e instanceof ApiError ? e.code + ": " + e.message : String(e.message || e);
  p.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { p.hidden = true; }, 6000);
}

function message(text) {
  const p = $("#agent-message");
  p.textContent = text;
  p.hidden = !text;
}

// -- signing in --------------------------------------------------------------

// RFC 6265 cookie-octets: the token goes into the cookie as it is.
const cookieSafe = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$/;

function setToken(token) {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "ticktock_token=" + token + "; path=/; SameSite=Strict" + secure;
}

function showSignIn(why) {
  closeView();
  $("#nav").hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("#sign-in").hidden = false;
  const p = $("#sign-in-error");
  p.textContent = why || "";
  p.hidden = !why;
  $("#token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#token").value.trim();
  if (!cookieSafe.test(token)) {
    showSignIn("That token has characters a cookie cannot hold (blanks, quotes, commas, semicolons or backslashes).");
    return;
  }
  setToken(token);
  $("#token").value = "";
  if (await signedIn()) route();
}

const hasToken = () => document.cookie.split("; ").some((c) => c.startsWith("ticktock_token="));

async function signedIn() {
  if (!hasToken()) return false;
  try {
    await api("GET", "/v1/agents?limit=1");
    $("#sign-in").hidden = true;
    $("#nav").hidden = false;
    return true;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) showError(e);
    return false;
  }
}

function forgetToken() {
  document.cookie = "ticktock_token=; path=/; Max-Age=0; SameSite=Strict";
}

function signOut() {
  forgetToken();
  showSignIn("Signed out.");
}

// -- views ---------------------------------------------------------------------

function closeView() {
  for (const s of ui.streams) s.close();
  for (const t of ui.timers) clearInterval(t);
  ui.streams = [];
  ui.timers = [];
}

function show(name) {
  closeView();
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const a of document.querySelectorAll("[data-nav]"))
    a.classList.toggle("active", a.dataset.nav === name || (name === "agent" && a.dataset.nav === "agents"));
  return ++ui.shown;
}

function every(ms, f) { ui.timers.push(setInterval(f, ms)); }

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "hud" && parts[1]) return showHud(parts[1]);
  if ($("#nav").hidden && !(await signedIn())) return showSignIn();
  if (parts[0] === "agent" && parts[1])
    return showAgent(parts[1], parts[2] === "record" ? Number(parts[3]) : null);
  if (parts[0] === "approvals") return showApprovals();
  return showAgents();
}

// Agents: the list with status and budgets.

function agentRow(s, budget) {
  return el("tr", { "data-agent": s.id },
    el("td", {}, el("a", { href: "#/agent/" + enc(s.id) }, s.id)),
    el("td", {}, s.type),
    el("td", {}, badge(s.state)),
    el("td", { class: "num" }, s.last_tick),
    el("td", { class: "num" }, s.queue_depth),
    el("td", { class: "budget" }, budget ? usd(budget.spent_total) + " / " + limit(budget.limit_total) : ""),
    el("td", { class: "summary mono", title: summaryText(s.summary) }, summaryText(s.summary)));
}

async function loadAgents(append) {
  const q = append && ui.agentsNext ? "?limit=100&after=" + enc(ui.agentsNext) : "?limit=100";
  const page = await api("GET", "/v1/agents" + q);
  // Budgets are in each agent's status file.
  const statuses = await Promise.all(page.agents.map((a) =>
    api("GET", agentPath(a.id, "/fs/status")).catch(() => null)));
  const rows = page.agents.map((a, i) => agentRow(statuses[i] || a, statuses[i] && statuses[i].budget));
  const body = $("#agents-rows");
  if (append) body.append(...rows); else body.replaceChildren(...rows);
  ui.agentsNext = page.next;
  $("#agents-more").hidden = !page.next;
  $("#agents-empty").hidden = body.children.length > 0;
}

async function createAgent(ev) {
  ev.preventDefault();
  const body = { id: $("#create-id").value.trim(), type: $("#create-type").value.trim() };
  const config = $("#create-config").value.trim();
  if (config) {
    try { body.config = JSON.parse(config); } catch (e) { return showError(new Error("config: " + e.message)); }
  }
  try {
    await api("POST", "/v1/agents", body);
    $("#create-form").reset();
    $("#create-form").hidden = true;
    location.hash = "#/agent/" + enc(body.id);
  } catch (e) { showError(e); }
}

function showAgents() {
  show("agents");
  loadAgents(false).catch(showError);
  every(5000, () => { if (!ui.agentsNext) loadAgents(false).catch(() => {}); });
}

// One agent: status, budget, live timeline, inspector, deadletter.

async function loadStatus(id) {
  const s = await api("GET", agentPath(id, "/fs/status"));
  $("#agent-title").textContent = s.id;
  const st = $("#agent-state");
  st.className = "badge " + s.state;
  st.textContent = s.state;
  const pairs = [["type", s.type], ["ticks", s.last_tick], ["last tick", when(s.last_tick_time_us)],
    ["queue", s.queue_depth], ["records", s.trajectory_records], ["last outbox seq", s.outbox_next - 1],
    ["throttled", s.throttled ? "until " + when(s.throttled_until_us) : "no"]];
  if (s.error) pairs.push(["error", s.error]);
  const hits = Object.entries(s.limits_hit || {});
  if (hits.length) pairs.push(["limits hit", hits.map(([k, v]) => k + " " + v).join(", ")]);
  pairs.push(["summary", summaryText(s.summary)]);
  kv($("#agent-status"), pairs);
  const b = s.budget || {};
  kv($("#agent-budget"), [["spent", usd(b.spent_total)], ["reserved", usd(b.reserved)],
    ["limit, total", limit(b.limit_total)], ["limit, day", limit(b.limit_day)],
    ["limit, month", limit(b.limit_month)]]);
  return s;
}

function recordRow(id, r) {
  const selected = r.index === ui.inspected ? " selected" : "";
  const tr = el("tr", { class: "clickable" + selected, "data-index": r.index, onclick: () => inspect(id, r.index) },
    el("td", { class: "num" }, r.index),
    el("td", { class: "num" }, r.attempt > 1 ? r.tick + " (attempt " + r.attempt + ")" : r.tick),
    el("td", {}, r.trigger),
    el("td", {}, badge(r.outcome)),
    el("td", { class: "num" }, duration(r.duration_ns)),
    el("td", {}, when(r.start_us)),
    el("td", { class: "mono" }, r.request_id || ""));
  return tr;
}

// Newest first; a record seen twice (a stream resumed) is shown once.
function addRecord(body, row, index, max) {
  if (body.querySelector('tr[data-index="' + index + '"]')) return;
  let before = null;
  for (const tr of body.children)
    if (Number(tr.dataset.index) < index) { before = tr; break; }
  body.insertBefore(row, before);
  while (body.children.length > max) body.lastChild.remove();
}

// An EventSource resumes by itself after a drop, sending Last-Event-ID,
// which the server prefers to the from_seq of the URL.
function follow(url, onEvent, indicator) {
  const es = new EventSource(url);
  if (onEvent) es.addEventListener("tick", (e) => onEvent(JSON.parse(e.data), Number(e.lastEventId)));
  es.onopen = () => { indicator.textContent = "live"; indicator.className = "live on"; };
  es.onerror = () => {
    const closed = es.readyState === EventSource.CLOSED;
    indicator.textContent = closed ? "closed" : "reconnecting";
    indicator.className = "live off";
  };
  ui.streams.push(es);
  return es;
}

// JSON text indented, its numbers left as they are: a JavaScript number
// would round the 64-bit ones (a direct trigger's seq has bit 63 set).
function indentJson(text) {
  let out = "", depth = 0, inString = false;
  const nl = () => "\n" + "  ".repeat(depth);
  for (let i = 0; i < text.length; ++i) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i];
      else if (c === '"') inString = false;
    } else if (c === '"') { inString = true; out += c; }
    else if (c === "{" || c === "[") {
      const empty = text[i + 1] === (c === "{" ? "}" : "]");
      out += empty ? c + text[++i] : c + (++depth, nl());
    } else if (c === "}" || c === "]") { --depth; out += nl() + c; }
    else if (c === ",") out += "," + nl();
    else if (c === ":") out += ": ";
    else out += c;
  }
  return out;
}

// A trigger's seq from the record's text: direct triggers (HTTP requests
// on /a/, node::run_trigger) number in a space of their own, bit 63 set.
function triggerSeq(text) {
  const m = /"trigger_seq":(\d+)/.exec(text);
  if (!m) return "";
  const seq = BigInt(m[1]), direct = 1n << 63n;
  return seq >= direct ? " (direct #" + (seq - direct) + ")" : " #" + seq;
}

async function inspect(id, index) {
  let text;
  try {
    text = await api("GET", agentPath(id, "/fs/logs/trajectory?from=" + index + "&limit=1"),
      undefined, true);
  } catch (e) { return showError(e); }
  const r = JSON.parse(text).records[0];
  if (!r || r.index !== index) return showError(new Error("no record " + index));
  // The record's own text: from after `"records":[` to its closing `]}`.
  const raw = text.slice(text.indexOf("[") + 1, text.lastIndexOf("]"));
  ui.inspected = index;
  for (const tr of document.querySelectorAll("#timeline-rows tr"))
    tr.classList.toggle("selected", Number(tr.dataset.index) === index);
  $("#inspector-title").textContent = "Record " + index + " (tick " + r.tick + ", attempt " + r.attempt + ")";
  const pairs = [["trigger", r.trigger + triggerSeq(raw)],
    ["outcome", r.outcome], ["started", when(r.start_us)], ["duration", duration(r.duration_ns)]];
  if (r.request_id) pairs.push(["request id", r.request_id]);
  if (r.error) pairs.push(["error", r.error]);
  if (r.state_hash) pairs.push(["state hash", r.state_hash]);
  if (r.prev_hash) pairs.push(["previous record", r.prev_hash]);
  kv($("#inspector-fields"), pairs);
  $("#inspector-json").textContent = indentJson(raw);
  $("#inspector").hidden = false;
  history.replaceState(null, "", "#/agent/" + enc(id) + "/record/" + index);
}

async function loadDeadletter(id) {
  const d = await api("GET", agentPath(id, "/fs/deadletter?limit=200"));
  const rows = d.entries.map((e) => el("tr", { "data-deadletter": e.id },
    el("td", { class: "num" }, e.id),
    el("td", { class: "num" }, e.seq),
    el("td", {}, e.reason),
    el("td", { class: "summary", title: e.error || "" }, e.error || ""),
    el("td", { class: "num" }, e.attempts),
    el("td", {}, e.trigger),
    el("td", {}, el("button", { type: "button", "data-requeue": e.id,
      onclick: () => requeue(id, { ids: [e.id] }) }, "Requeue"))));
  $("#deadletter-rows").replaceChildren(...rows);
  $("#deadletter-empty").hidden = rows.length > 0;
  $("#deadletter-requeue-all").disabled = rows.length === 0;
}

async function requeue(id, body) {
  try {
    const r = await api("POST", agentPath(id, "/fs/deadletter"), body);
    message("Requeued " + r.requeued + ".");
    await loadDeadletter(id);
  } catch (e) { showError(e); }
}

async function ctl(id, command) {
  try {
    const r = await api("PUT", agentPath(id, "/fs/ctl"), command);
    message(command === "tick" ? "Tick queued (seq " + r.seq + ")." : command + ": done.");
    await loadStatus(id);
  } catch (e) { showError(e); }
}

// Re-hashes the whole chain on the server (fs/logs/trajectory?verify).
async function verify(id) {
  const out = $("#verify-result");
  out.className = "muted";
  out.textContent = "verifying…";
  try {
    const v = await api("GET", agentPath(id, "/fs/logs/trajectory?verify"));
    out.className = v.ok ? "good" : "error";
    out.textContent = v.ok ? "✓ " + v.records + " records verified"
      : "✗ record " + v.first_bad + ": " + v.reason;
  } catch (e) {
    out.textContent = "";
    showError(e);
  }
}

async function send(id, ev) {
  ev.preventDefault();
  const text = $("#send-body").value;
  let body = text;
  if ($("#send-text").checked) body = JSON.stringify(text);
  else try { JSON.parse(text); } catch (e) {
    return showError(new Error("the message is not JSON (" + e.message + "); tick “as text” to send it as a string"));
  }
  try {
    const r = await api("POST", agentPath(id, "/inbox"), body);
    message("Message accepted (seq " + r.seq + ").");
    $("#send-body").value = "";
  } catch (e) { showError(e); }
}

// Two clicks: the first arms the button for 4 s.
async function remove(id, button) {
  if (!button.dataset.armed) {
    button.dataset.armed = "1";
    button.textContent = "Delete " + id + "?";
    setTimeout(() => { delete button.dataset.armed; button.textContent = "Delete"; }, 4000);
    return;
  }
  try {
    await api("DELETE", agentPath(id));
    location.hash = "#/agents";
  } catch (e) { showError(e); }
}

async function showAgent(id, record) {
  const shown = show("agent");
  $("#agent-title").textContent = id;
  $("#agent-hud-link").href = "#/hud/" + enc(id);
  $("#timeline-rows").replaceChildren();
  $("#inspector").hidden = true;
  message("");
  for (const b of document.querySelectorAll("[data-ctl]")) b.onclick = () => ctl(id, b.dataset.ctl);
  $("#deadletter-requeue-all").onclick = () => requeue(id, "");
  $("#verify").onclick = () => verify(id);
  $("#send-form").onsubmit = (ev) => send(id, ev);
  const del = $("#agent-delete");
  delete del.dataset.armed;
  del.textContent = "Delete";
  del.onclick = () => remove(id, del);
  $("#outbox-rows").replaceChildren();
  $("#verify-result").textContent = "";
  ui.inspected = null;
  $("#inspector-close").onclick = () => {
    ui.inspected = null;
    for (const tr of document.querySelectorAll("#timeline-rows tr.selected")) tr.classList.remove("selected");
    $("#inspector").hidden = true;
    history.replaceState(null, "", "#/agent/" + enc(id));
  };
  let s;
  try { s = await loadStatus(id); } catch (e) { return showError(e); }
  if (ui.shown !== shown) return;
  const from = Math.max(0, s.trajectory_records - 50);
  const body = $("#timeline-rows");
  // A new record also refreshes the status (at most every 300 ms).
  let pending = null;
  follow(agentPath(id, "/fs/logs/trace?from_seq=" + from), (r) => {
    addRecord(body, recordRow(id, r), r.index, 500);
    pending = pending || setTimeout(() => {
      pending = null;
      if (ui.shown === shown) loadStatus(id).catch(() => {});
    }, 300);
  }, $("#timeline-live"));
  // The last 20 outbox events, then live ones.
  const outbox = $("#outbox-rows");
  const stream = follow(agentPath(id, "/fs/outbox?from_seq=" + Math.max(0, s.outbox_next - 20)), null,
    $("#outbox-live"));
  stream.addEventListener("outbox", (e) => addRecord(outbox,
    el("tr", { "data-index": e.lastEventId }, el("td", { class: "num" }, e.lastEventId),
      el("td", { class: "mono" }, e.data)), Number(e.lastEventId), 200));
  loadDeadletter(id).catch(showError);
  if (record !== null && !Number.isNaN(record)) inspect(id, record);
  every(3000, () => { loadStatus(id).catch(() => {}); loadDeadletter(id).catch(() => {}); });
}

// Approvals: the inbox of parked actions.

async function decide(id, decision, note) {
  try {
    await api("POST", "/v1/approvals/" + enc(id) + "/decide", note ? { decision, note } : { decision });
    await loadApprovals();
  } catch (e) { showError(e); }
}

async function loadApprovals() {
  const all = $("#approvals-all").checked;
  const page = await api("GET", "/v1/approvals" + (all ? "?limit=200" : "?status=pending&limit=200"));
  const rows = page.approvals.map((a) => {
    const note = el("input", { type: "text", placeholder: "note", "data-note": a.id });
    const decision = a.status === "pending"
      ? el("div", { class: "decide" }, note,
        el("button", { type: "button", class: "primary", "data-approve": a.id,
          onclick: () => decide(a.id, "approve", note.value) }, "Approve"),
        el("button", { type: "button", class: "danger", "data-deny": a.id,
          onclick: () => decide(a.id, "deny", note.value) }, "Deny"))
      : (a.note || "");
    return el("tr", { "data-approval": a.id },
      el("td", { class: "mono" }, a.id),
      el("td", {}, el("a", { href: "#/agent/" + enc(a.agent) }, a.agent)),
      el("td", {}, a.action),
      el("td", {}, a.destination || ""),
      el("td", { class: "num" }, usd(a.cost_micro_usd)),
      el("td", {}, a.reason || ""),
      el("td", {}, badge(a.status)),
      el("td", {}, decision));
  });
  $("#approvals-rows").replaceChildren(...rows);
  $("#approvals-empty").hidden = rows.length > 0;
}

function showApprovals() {
  show("approvals");
  loadApprovals().catch(showError);
  every(5000, () => {
    // Not while a note is being written.
    if (!document.activeElement || !document.activeElement.dataset.note) loadApprovals().catch(() => {});
  });
}

async function countPending() {
  if ($("#nav").hidden) return;
  try {
    const page = await api("GET", "/v1/approvals?status=pending&limit=200");
    const c = $("#pending-count");
    c.textContent = page.approvals.length + (page.next ? "+" : "");
    c.hidden = page.approvals.length === 0;
  } catch (e) { /* shown elsewhere */ }
}

// The HUD: the public, redacted stream of one agent.

async function showHud(id) {
  const shown = show("hud");
  $("#hud-title").textContent = id;
  const body = $("#hud-rows");
  body.replaceChildren();
  const token = ui.hudToken ? "token=" + enc(ui.hudToken) + "&" : "";
  // The last 50 records, then live; a viewer who may not read the status
  // gets live ones only. (Not api(): a refusal here is no reason to sign in.)
  let from = "";
  try {
    const res = await fetch(agentPath(id, "/fs/status?" + token), { credentials: "same-origin" });
    if (res.ok) from = "from_seq=" + Math.max(0, (await res.json()).trajectory_records - 50);
  } catch (e) { /* live only */ }
  if (ui.shown !== shown) return;
  follow(agentPath(id, "/fs/hud/stream?" + token + from), (r, index) => addRecord(body,
    el("tr", { "data-index": index },
      el("td", { class: "num" }, index),
      el("td", { class: "num" }, r.tick),
      el("td", {}, r.trigger),
      el("td", {}, badge(r.outcome)),
      el("td", { class: "num" }, duration(r.duration_ns)),
      el("td", {}, when(r.start_us)),
      el("td", { class: "num" }, r.outbox !== undefined ? r.outbox : "")), index, 200), $("#hud-live"));
}

// -- start -------------------------------------------------------------------

async function start() {
  // A token in the address (?token=) is taken once and removed from it, so it
  // stays out of the history: an agent token for the HUD, else the admin's.
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    if (location.hash.startsWith("#/hud/")) ui.hudToken = token;
    else if (cookieSafe.test(token)) setToken(token);
    history.replaceState(null, "", location.pathname + location.hash);
  }
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#agents-refresh").addEventListener("click", () => loadAgents(false).catch(showError));
  $("#agents-more").addEventListener("click", () => loadAgents(true).catch(showError));
  $("#agent-new").addEventListener("click", () => { $("#create-form").hidden = false; $("#create-id").focus(); });
  $("#create-cancel").addEventListener("click", () => { $("#create-form").hidden = true; });
  $("#create-form").addEventListener("submit", createAgent);
  $("#approvals-refresh").addEventListener("click", () => loadApprovals().catch(showError));
  $("#approvals-all").addEventListener("change", () => loadApprovals().catch(showError));
  window.addEventListener("hashchange", route);
  setInterval(countPending, 10000);
  await route();
  countPending();
}

start();
