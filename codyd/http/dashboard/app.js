// The codyd dashboard: the runs table and a run's page, over /api/v1 (docs/http.md#dashboard).
//
// Live updates come from the server-sent events of /api/v1/events, read with fetch() so the
// request carries the Authorization header (EventSource cannot). An event changes the run in
// memory at once and marks its row dirty; rows are redrawn once per animation frame, and only
// the cells whose text changed. Rows off screen cost nothing to redraw (content-visibility). Events that change what an event alone cannot tell (state,
// phase, wait, attention) also fetch the run's snapshot, a few at a time.
"use strict";

const API = "/api/v1";
const STATES = ["queued", "running", "pausing", "paused", "cancelling", "cancelled", "completed", "failed"];
const TERMINAL = new Set(["cancelled", "completed", "failed"]);
const STATE_OF_EVENT = {
  run_queued: "queued", run_started: "running", run_resumed: "running", run_recovered: "running",
  run_retried: "running", run_pausing: "pausing", run_paused: "paused",
  run_cancelling: "cancelling", run_cancelled: "cancelled", run_completed: "completed",
  run_failed: "failed",
};
// Events a summary can follow by itself; any other type fetches the snapshot.
const LOCAL_EVENTS = new Set([
  "subprocess_output", "token_usage", "cost", "file_read", "file_written", "file_deleted",
  "test_run_started", "test_run_completed", "message", "tool_call", "command", "log_updated",
  "session_started", "turn_started", "custom", "quota", "agent_retry", "context_compacted",
  "permission_denied", "tool_failed", "operator_message", "budget_warning",
]);
const RECONCILE_MS = 30000;
const FETCHES_AT_ONCE = 4;
const TAIL_CHARS = 64 * 1024;
const EVENTS_KEPT = 300;
const EVENTS_BACK = 400;

const $ = (id) => document.getElementById(id);

// -- tokens and API calls ------------------------------------------------------------------

const tokens = {
  key: (level) => `codyd.token.${level}`,
  get(level) { return sessionStorage.getItem(this.key(level)) || ""; },
  set(level, value) { sessionStorage.setItem(this.key(level), value); },
  clear(level) { sessionStorage.removeItem(this.key(level)); },
  forRead() { return this.get("read") || this.get("control"); },
};

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.data = error.data || {};
  }
  get refused() { return this.status === 401 || this.status === 403; }
  describe() { return `${this.status} ${this.code}: ${this.message}`; }
}

const tokenFor = (level) => (level === "control" ? tokens.get("control") : tokens.forRead());

function headers(token, extra) {
  const all = { ...extra };
  if (token) all.Authorization = `Bearer ${token}`;
  return all;
}

// The error of a response; `token` is the one the request carried, so that a refusal
// forgets that token and not one given since.
async function failure(response, token) {
  const text = await response.text();
  let error = { message: text.slice(0, 300) || response.statusText };
  try { error = JSON.parse(text).error || error; } catch (_) { /* not JSON: keep the text */ }
  const err = new ApiError(response.status, error);
  err.token = token;
  return err;
}

async function call(path, { method = "GET", body, level = "read", signal } = {}) {
  const token = tokenFor(level);
  const init = { method, headers: headers(token, { Accept: "application/json" }), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { code: "unreachable", message: `codyd did not answer (${err.message})` });
  }
  if (!response.ok) throw await failure(response, token);
  return response.json();
}

// A read refused for want of a token waits here until one is given, then tries again.
async function read(path, options = {}) {
  for (;;) {
    try {
      return await call(path, options);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
      await askToken("read", err);
    }
  }
}

// -- the token form --------------------------------------------------------------------------

const asking = { level: null, promise: null, resolve: null, reject: null };

function askToken(level, refusal, why) {
  if (refusal) {
    const stored = tokenFor(level);
    if (stored && stored !== refusal.token) return Promise.resolve(); // a newer one: try it
    if (stored) tokens.clear(tokens.get(level) === stored ? level : "control");
  }
  showAuth(level, refusal, why);
  if (asking.promise && asking.level === level) return asking.promise;
  if (asking.reject) asking.reject(new Error("superseded"));
  asking.level = level;
  asking.promise = new Promise((resolve, reject) => {
    asking.resolve = resolve;
    asking.reject = reject;
  });
  return asking.promise;
}

function showAuth(level, refusal, why) {
  $("auth-why").textContent = why || (level === "read"
    ? "This codyd needs a token to show its runs: give the read token (or the control token)."
    : "This needs the control token; it is kept in this tab only.");
  const error = $("auth-error");
  error.hidden = !refusal;
  error.textContent = refusal ? `Refused (${refusal.describe()}).` : "";
  $("auth-cancel").hidden = level === "read";
  $("auth").dataset.level = level;
  $("auth").hidden = false;
  if (level === "read") setLink("token", "token needed");
  $("auth-token").focus();
}

function settleAuth(given) {
  const { resolve, reject, level } = asking;
  asking.level = asking.promise = asking.resolve = asking.reject = null;
  $("auth").hidden = true;
  $("auth-token").value = "";
  // The refusal shown was of the token before: the next one, if any, says so anew.
  $("auth-error").hidden = true;
  $("auth-error").textContent = "";
  if (given !== null) {
    tokens.set(level, given);
    resolve();
  } else if (reject) {
    reject(new Error("no token given"));
  }
}

function setupAuth() {
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("auth-token").value.trim();
    if (value && asking.resolve) settleAuth(value);
  });
  $("auth-cancel").addEventListener("click", () => settleAuth(null));
}

// -- server-sent events over fetch -------------------------------------------------------------

// Follows one event stream: reconnects with its cursor after a drop, asks for a token on 401,
// restarts from the oldest retained event on 410, stops on `end` or close().
class EventFeed {
  constructor(path, after, handlers) {
    this.path = path;
    this.after = after;
    this.handlers = handlers;
    this.abort = new AbortController();
    this.retryMs = 2000;
    this.closed = false;
    this.run();
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }

  url() {
    return this.after === null ? this.path : `${this.path}?after=${this.after}`;
  }

  async run() {
    while (!this.closed) {
      try {
        await this.once();
      } catch (err) {
        if (this.closed) return;
        if (err instanceof ApiError && err.status === 401) {
          this.handlers.state("token");
          try { await askToken("read", err); } catch (_) { /* asked again later */ }
          continue;
        }
        if (err instanceof ApiError && err.code === "trimmed") {
          this.after = Math.max(0, (err.data.oldest_seq || 1) - 1);
          continue;
        }
        this.handlers.state("down", err);
      }
      if (this.closed) return;
      await sleep(this.retryMs);
    }
  }

  async once() {
    const token = tokenFor("read");
    const init = { headers: headers(token, { Accept: "text/event-stream" }), signal: this.abort.signal, cache: "no-store" };
    const response = await fetch(this.url(), init);
    if (!response.ok) throw await failure(response, token);
    this.handlers.state("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 4 : 2));
        if (this.dispatch(block) === "end") {
          this.closed = true;
          this.abort.abort();
          return;
        }
      }
    }
    this.handlers.state("down");
  }

  dispatch(block) {
    let type = "message";
    let id = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
      else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    }
    if (!data.length) return null;
    const payload = JSON.parse(data.join("\n"));
    if (type === "end") {
      this.handlers.end(payload);
      return "end";
    }
    if (type === "error") {
      this.handlers.state("down", new ApiError(0, payload.error || {}));
      return null;
    }
    if (id !== null) this.after = Number(id);
    this.handlers.event(payload);
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setLink(state, text) {
  const link = $("link");
  link.dataset.state = state;
  link.textContent = text;
}

// -- what an event tells about its run ----------------------------------------------------------

function blankSummary(event) {
  const spec = event.data.spec || {};
  return {
    run_id: event.run_id, name: spec.name || null, agent: spec.agent || "", state: "queued",
    phase: "idle", created_at: event.ts, last_activity: null, current_turn: 0,
    stats: { turns: 0, failed_turns: 0, tokens: { input: 0, output: 0, cached: 0, total: 0 }, cost_usd: 0,
      files: { read: 0, written: 0, deleted: 0 }, tests: { runs: 0, passed: 0, failed: 0 } },
    wait: null, attention: null, error: null, labels: spec.labels || {}, last_seq: 0,
  };
}

// Applies one event to a summary, once: an event at or before the summary's last_seq is
// already in it. Returns whether the snapshot should be fetched for what events cannot tell.
function apply(run, event) {
  if (event.seq <= run.last_seq) return false;
  run.last_seq = event.seq;
  const data = event.data || {};
  const stats = run.stats;
  switch (event.type) {
    case "subprocess_output": run.last_activity = event.ts; break;
    case "token_usage":
      stats.tokens.input += data.input || 0;
      stats.tokens.output += data.output || 0;
      stats.tokens.cached += data.cached || 0;
      stats.tokens.total = stats.tokens.input + stats.tokens.output;
      break;
    case "cost": stats.cost_usd += data.usd || 0; break;
    case "file_read": stats.files.read += 1; break;
    case "file_written": stats.files.written += 1; break;
    case "file_deleted": stats.files.deleted += 1; break;
    case "test_run_completed":
      stats.tests.runs += 1;
      stats.tests.passed += data.passed || 0;
      stats.tests.failed += data.failed || 0;
      break;
    case "turn_started":
      run.phase = "in_turn";
      run.current_turn = event.turn || run.current_turn;
      run.wait = null;
      break;
    case "attention":
      run.attention = { reason: data.reason, message: data.message, at: event.ts };
      break;
    default: break;
  }
  if (STATE_OF_EVENT[event.type]) run.state = STATE_OF_EVENT[event.type];
  return !LOCAL_EVENTS.has(event.type);
}

// -- formatting ------------------------------------------------------------------------------

function ago(ts, now) {
  if (!ts) return "—";
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function clock(ts) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const today = new Date().toDateString() === d.toDateString();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return today ? hm : `${d.toISOString().slice(0, 10)} ${hm}`;
}

const words = (reason) => String(reason || "").replace(/_/g, " ");

function waitText(run) {
  if (run.wait) {
    const who = run.wait.account || run.agent || "the agent";
    const until = run.wait.until ? ` until ${clock(run.wait.until)}` : "";
    return `waiting for ${who}${until} (${words(run.wait.reason)})`;
  }
  if (run.attention) {
    const message = run.attention.message ? `: ${run.attention.message}` : "";
    return `needs attention (${words(run.attention.reason)})${message}`;
  }
  if (run.error) return `${run.error.code}: ${run.error.message}`;
  return "";
}

function count(n) {
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)}M`;
}

function money(usd) {
  if (!usd) return "$0";
  return usd < 1 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

// -- the runs table ----------------------------------------------------------------------------

const CELLS = ["run", "state", "phase", "wait", "turn", "activity", "tokens", "cost"];
const LABELS = ["Run", "State", "Phase", "Wait / attention", "Turn", "Last activity", "Tokens", "Cost"];

const table = {
  runs: new Map(), // run_id -> {run, row, cells, shown: {cell: text}}
  dirty: new Set(),
  frame: 0,
  fetching: new Set(),
  wanted: new Set(),
  filter: { state: "", label: null, matching: null },
  feed: null,
  received: 0, // events read from the all-runs stream (benchmarks read it)

  entry(id) { return this.runs.get(id); },

  put(run, { top = false } = {}) {
    let entry = this.runs.get(run.run_id);
    if (entry) {
      if (run.last_seq < entry.run.last_seq) return entry; // older than what events showed
      if (!run.labels && entry.run.labels) run.labels = entry.run.labels;
      entry.run = run;
    } else {
      entry = this.makeRow(run);
      this.runs.set(run.run_id, entry);
      this.place(entry, top);
    }
    this.touch(run.run_id);
    return entry;
  },

  makeRow(run) {
    const row = document.createElement("div");
    row.className = "row";
    row.setAttribute("role", "row");
    row.dataset.runId = run.run_id;
    const cells = {};
    CELLS.forEach((name, i) => {
      const cell = document.createElement("span");
      cell.className = `cell c-${name}`;
      cell.setAttribute("role", "cell");
      cell.dataset.label = LABELS[i];
      row.appendChild(cell);
      cells[name] = cell;
    });
    const link = document.createElement("a");
    link.href = `#/runs/${encodeURIComponent(run.run_id)}`;
    cells.run.appendChild(link);
    cells.link = link;
    return { run, row, cells, shown: {} };
  },

  place(entry, top) {
    const body = $("runs-body");
    if (top || !body.firstChild) { body.insertBefore(entry.row, body.firstChild); return; }
    // Newest first, as run.list orders them; runs arrive mostly in that order.
    const created = entry.run.created_at;
    let before = null;
    for (const other of body.children) {
      const them = this.runs.get(other.dataset.runId);
      if (them && them !== entry && them.run.created_at < created) { before = other; break; }
    }
    body.insertBefore(entry.row, before);
  },

  remove(id) {
    const entry = this.runs.get(id);
    if (!entry) return;
    entry.row.remove();
    this.runs.delete(id);
    this.schedule();
  },

  touch(id) {
    this.dirty.add(id);
    this.schedule();
  },

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  },

  // One pass per animation frame over the runs that changed.
  flush() {
    this.frame = 0;
    const now = Date.now() / 1000;
    for (const id of this.dirty) {
      const entry = this.runs.get(id);
      if (entry) this.draw(entry, now);
    }
    this.dirty.clear();
    this.counts();
  },

  set(entry, name, text, title) {
    if (entry.shown[name] === text) return;
    entry.shown[name] = text;
    const cell = name === "run" ? entry.cells.link : entry.cells[name];
    cell.textContent = text;
    if (title !== undefined) cell.title = title;
  },

  draw(entry, now) {
    const run = entry.run;
    this.set(entry, "run", run.name ? `${run.name}` : run.run_id, run.run_id);
    this.set(entry, "state", run.state);
    if (entry.row.dataset.state !== run.state) entry.row.dataset.state = run.state;
    this.set(entry, "phase", run.phase);
    this.set(entry, "wait", waitText(run));
    entry.row.classList.toggle("attention", Boolean(run.attention));
    this.set(entry, "turn", String(run.current_turn));
    this.set(entry, "activity", ago(run.last_activity, now));
    const tokens = run.stats.tokens;
    this.set(entry, "tokens", count(tokens.total), `input ${tokens.input}, output ${tokens.output}, cached ${tokens.cached}`);
    this.set(entry, "cost", money(run.stats.cost_usd));
    const hidden = !this.matches(run);
    if (entry.row.hidden !== hidden) entry.row.hidden = hidden;
  },

  matches(run) {
    const { state, label, matching } = this.filter;
    if (state === "active" ? TERMINAL.has(run.state) : state && run.state !== state) return false;
    if (!label) return true;
    if (run.labels) return Object.entries(label).every(([k, v]) => run.labels[k] === v);
    return Boolean(matching && matching.has(run.run_id));
  },

  counts() {
    let shown = 0;
    for (const entry of this.runs.values()) if (!entry.row.hidden) shown += 1;
    const total = this.runs.size;
    $("count").textContent = shown === total ? `${total} runs` : `${shown} of ${total} runs`;
    $("empty").hidden = shown > 0;
  },

  redrawAll() {
    for (const id of this.runs.keys()) this.dirty.add(id);
    this.schedule();
  },

  onEvent(event) {
    this.received += 1;
    let entry = this.runs.get(event.run_id);
    if (!entry) {
      if (event.type !== "run_queued") { this.want(event.run_id); return; }
      entry = this.put(blankSummary(event), { top: true });
    }
    if (apply(entry.run, event)) this.want(event.run_id);
    this.touch(event.run_id);
    if (page.runId === event.run_id) page.onTableEvent(event);
  },

  // Fetch the snapshot of a run, a few runs at a time, once per run however many ask.
  want(id) {
    this.wanted.add(id);
    this.pump();
  },

  pump() {
    for (const id of this.wanted) {
      if (this.fetching.size >= FETCHES_AT_ONCE) return;
      if (this.fetching.has(id)) continue;
      this.wanted.delete(id);
      this.fetching.add(id);
      read(`${API}/runs/${encodeURIComponent(id)}`)
        .then((run) => { this.put(run); })
        .catch((err) => { if (err instanceof ApiError && err.status === 404) this.remove(id); })
        .finally(() => { this.fetching.delete(id); this.pump(); });
    }
  },

  async listAll(query = "") {
    const runs = [];
    let cursor = null;
    do {
      const params = new URLSearchParams(query);
      params.set("limit", "1000");
      if (cursor) params.set("cursor", cursor);
      const page = await read(`${API}/runs?${params}`);
      runs.push(...page.runs);
      cursor = page.cursor;
    } while (cursor);
    return runs;
  },

  // The list, then the all-runs stream from the gid the list was read at.
  async start() {
    const head = await read(`${API}/events`);
    const runs = await this.listAll();
    $("list-error").hidden = true;
    const fragment = document.createDocumentFragment();
    const body = $("runs-body");
    body.textContent = "";
    this.runs.clear();
    for (const run of runs) {
      const entry = this.makeRow(run);
      this.runs.set(run.run_id, entry);
      fragment.appendChild(entry.row);
      this.dirty.add(run.run_id);
    }
    body.appendChild(fragment);
    this.schedule();
    this.feed = new EventFeed(`${API}/events`, head.last_seq, {
      event: (event) => this.onEvent(event),
      end: () => {},
      state: (state, err) => linkState(state, err),
    });
    setInterval(() => this.reconcile(), RECONCILE_MS);
    setInterval(() => this.tick(), 1000);
  },

  // Every while, the list again: a run forgotten, or one whose events were missed, mends.
  async reconcile() {
    let runs;
    try { runs = await this.listAll(); } catch (_) { return; }
    const seen = new Set();
    for (const run of runs) {
      seen.add(run.run_id);
      this.put(run);
    }
    for (const id of [...this.runs.keys()]) if (!seen.has(id)) this.remove(id);
  },

  tick() {
    const now = Date.now() / 1000;
    for (const entry of this.runs.values()) {
      if (!entry.row.hidden && entry.run.last_activity) this.set(entry, "activity", ago(entry.run.last_activity, now));
    }
  },

  async setLabel(text) {
    const pairs = text.split(/[\s,]+/).filter(Boolean);
    if (!pairs.length) {
      this.filter.label = null;
      this.filter.matching = null;
      $("filter-label").setCustomValidity("");
      this.redrawAll();
      return;
    }
    const label = {};
    const query = new URLSearchParams();
    for (const pair of pairs) {
      const cut = pair.indexOf("=");
      if (cut < 1) {
        $("filter-label").setCustomValidity("expected key=value");
        $("filter-label").reportValidity();
        return;
      }
      label[pair.slice(0, cut)] = pair.slice(cut + 1);
      query.append("label", pair);
    }
    $("filter-label").setCustomValidity("");
    try {
      const runs = await this.listAll(query.toString());
      this.filter.label = label;
      this.filter.matching = new Set(runs.map((run) => run.run_id));
      $("list-error").hidden = true;
    } catch (err) {
      showListError(err);
      return;
    }
    this.redrawAll();
  },
};

function linkState(state, err) {
  if (state === "live") setLink("live", "live");
  else if (state === "token") setLink("token", "token needed");
  else setLink("down", err ? `reconnecting (${err.message})` : "reconnecting…");
}

function showListError(err) {
  const box = $("list-error");
  box.textContent = err instanceof ApiError ? err.describe() : String(err);
  box.hidden = false;
}

function setupFilters() {
  $("filter-state").addEventListener("change", (e) => {
    table.filter.state = e.target.value;
    table.redrawAll();
  });
  let timer = 0;
  $("filter-label").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => table.setLabel(e.target.value), 250);
  });
}

// -- a run's page ----------------------------------------------------------------------------

const page = {
  runId: null,
  run: null,
  feed: null,
  abort: null,
  pendingEvents: [],
  pendingTail: [],
  frame: 0,
  tailTurn: 0,
  refreshing: false,
  refreshAgain: false,

  async open(id) {
    this.close();
    this.runId = id;
    this.abort = new AbortController();
    $("run-title").textContent = id;
    $("run-events").textContent = "";
    $("run-tail").textContent = "";
    $("run-stats").textContent = "";
    $("control-status").textContent = "";
    $("events-state").textContent = "";
    $("run-note").hidden = true;
    let run;
    try {
      run = await read(`${API}/runs/${encodeURIComponent(id)}`, { signal: this.abort.signal });
    } catch (err) {
      if (err.name === "AbortError" || this.runId !== id) return;
      this.note(err instanceof ApiError ? err.describe() : String(err));
      return;
    }
    if (this.runId !== id) return;
    this.show(run);
    this.tailTurn = run.current_turn;
    const after = Math.max(0, run.last_seq - EVENTS_BACK);
    this.feed = new EventFeed(`${API}/runs/${encodeURIComponent(id)}/events`, after, {
      event: (event) => this.onEvent(event),
      end: () => { $("events-state").textContent = "(the run has ended)"; this.refresh(); },
      state: (state, err) => {
        $("events-state").textContent = state === "live" ? "(live)" : state === "token" ? "(token needed)" : `(reconnecting${err ? `: ${err.message}` : ""})`;
      },
    });
  },

  close() {
    if (this.feed) this.feed.close();
    if (this.abort) this.abort.abort();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.feed = this.abort = this.run = null;
    this.frame = 0;
    this.pendingEvents = [];
    this.pendingTail = [];
    this.runId = null;
  },

  note(text) {
    $("run-note").textContent = text;
    $("run-note").hidden = false;
  },

  show(run) {
    if (this.run && run.last_seq < this.run.last_seq) return;
    this.run = run;
    $("run-title").textContent = run.name ? `${run.name} (${run.run_id})` : run.run_id;
    this.drawStats();
    this.drawControls();
    table.put(structuredClone(run));
  },

  drawStats() {
    const run = this.run;
    const s = run.stats;
    const rows = [
      ["state", run.state], ["phase", run.phase], ["agent", run.agent],
      ["wait / attention", waitText(run) || "—"], ["turn", String(run.current_turn)],
      ["turns ended", `${s.turns} (${s.failed_turns} failed)`],
      ["tokens", `${s.tokens.total} (input ${s.tokens.input}, output ${s.tokens.output}, cached ${s.tokens.cached})`],
      ["cost", money(s.cost_usd)],
      ["files", `read ${s.files.read}, written ${s.files.written}, deleted ${s.files.deleted}`],
      ["tests", `${s.tests.runs} runs, ${s.tests.passed} passed, ${s.tests.failed} failed`],
      ["last activity", run.last_activity ? `${ago(run.last_activity, Date.now() / 1000)} (${clock(run.last_activity)})` : "—"],
      ["created", run.created_at ? clock(run.created_at) : "—"],
      ["workspace", run.workspace || ""],
      ["labels", run.labels ? Object.entries(run.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "—" : "—"],
    ];
    const list = document.createDocumentFragment();
    for (const [name, value] of rows) {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = value;
      detail.dataset.stat = name;
      list.append(term, detail);
    }
    $("run-stats").replaceChildren(list);
  },

  drawControls() {
    const state = this.run.state;
    const allowed = {
      pause: ["queued", "running", "pausing"].includes(state),
      resume: ["paused", "pausing"].includes(state),
      cancel: !TERMINAL.has(state),
      retry: state === "failed",
    };
    for (const button of document.querySelectorAll("#run-view [data-action]")) {
      // A pause during a turn cannot be made "now" later (docs/protocol.md 5.6).
      const now = button.dataset.now && state === "pausing";
      button.disabled = !allowed[button.dataset.action] || Boolean(now);
    }
  },

  onTableEvent(_event) { /* the run's own stream feeds this page */ },

  onEvent(event) {
    if (!this.run || event.run_id !== this.runId) return;
    if (event.type === "turn_started" && event.turn !== this.tailTurn) {
      this.tailTurn = event.turn;
      this.pendingTail = [{ reset: true }];
    }
    if (event.type === "subprocess_output") {
      if (event.turn === this.tailTurn) this.pendingTail.push(event);
    } else {
      this.pendingEvents.push(event);
    }
    if (apply(this.run, event)) this.refresh();
    this.schedule();
  },

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  },

  flush() {
    this.frame = 0;
    if (!this.run) return;
    this.flushTail();
    this.flushEvents();
    this.drawStats();
    this.drawControls();
  },

  flushTail() {
    if (!this.pendingTail.length) return;
    const tail = $("run-tail");
    const stick = tail.scrollTop + tail.clientHeight >= tail.scrollHeight - 4;
    for (const item of this.pendingTail) {
      if (item.reset) { tail.textContent = ""; continue; }
      const span = document.createElement("span");
      span.className = item.data.stream;
      let text = item.data.text;
      if (item.data.dropped_bytes) text += `[… ${item.data.dropped_bytes} bytes left out]\n`;
      span.textContent = text;
      tail.appendChild(span);
    }
    this.pendingTail = [];
    let size = tail.textContent.length;
    while (size > TAIL_CHARS && tail.firstChild) {
      size -= tail.firstChild.textContent.length;
      tail.firstChild.remove();
    }
    $("tail-turn").textContent = this.tailTurn ? `(turn ${this.tailTurn})` : "";
    if (stick) tail.scrollTop = tail.scrollHeight;
  },

  flushEvents() {
    if (!this.pendingEvents.length) return;
    const list = $("run-events");
    const fragment = document.createDocumentFragment();
    for (const event of this.pendingEvents.slice(-EVENTS_KEPT).reverse()) {
      const item = document.createElement("li");
      item.dataset.type = event.type;
      const when = document.createElement("time");
      when.textContent = new Date(event.ts * 1000).toLocaleTimeString();
      const type = document.createElement("b");
      type.textContent = event.type;
      const data = document.createElement("code");
      const json = JSON.stringify(event.data);
      data.textContent = json.length > 400 ? `${json.slice(0, 400)}…` : json;
      item.append(when, " ", type, event.turn ? ` turn ${event.turn} ` : " ", data);
      fragment.appendChild(item);
    }
    this.pendingEvents = [];
    list.insertBefore(fragment, list.firstChild);
    while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
  },

  // The snapshot again, once at a time, after events that change what events cannot tell.
  async refresh() {
    if (this.refreshing) { this.refreshAgain = true; return; }
    this.refreshing = true;
    const id = this.runId;
    try {
      const run = await read(`${API}/runs/${encodeURIComponent(id)}`, { signal: this.abort.signal });
      if (this.runId === id) { this.show(run); this.schedule(); }
    } catch (_) {
      /* the stream goes on; the next event refreshes again */
    } finally {
      this.refreshing = false;
      if (this.refreshAgain && this.runId === id) { this.refreshAgain = false; this.refresh(); }
    }
  },

  // A control call with the control token, asked once per tab; a refusal asks again.
  async control(action, body = {}) {
    const id = this.runId;
    const status = $("control-status");
    let refusal = null;
    for (;;) {
      if (!tokens.get("control") || refusal) {
        try {
          await askToken("control", refusal, refusal ? null : `The control token is needed to ${action} this run; it is kept in this tab only.`);
        } catch (_) {
          status.textContent = `${action}: not sent (no control token)`;
          status.dataset.kind = "error";
          return;
        }
      }
      status.textContent = `${action}: sending…`;
      status.dataset.kind = "";
      try {
        const result = await call(`${API}/runs/${encodeURIComponent(id)}/${action}`, { method: "POST", body, level: "control" });
        status.textContent = action === "say" ? `say: queued (${result.queued ?? "?"} waiting)` : `${action}: done, the run is ${result.state}`;
        status.dataset.kind = "ok";
        if (result.run_id === this.runId) this.show(result);
        return true;
      } catch (err) {
        if (err instanceof ApiError && err.refused) {
          refusal = err;
          status.textContent = `${action}: refused (${err.describe()})`;
          status.dataset.kind = "refused";
          continue;
        }
        status.textContent = `${action}: ${err instanceof ApiError ? err.describe() : err}`;
        status.dataset.kind = "error";
        return false;
      }
    }
  },
};

function setupControls() {
  for (const button of document.querySelectorAll("#run-view [data-action]")) {
    const body = button.dataset.now ? { now: true } : {};
    button.addEventListener("click", () => page.control(button.dataset.action, body));
  }
  $("say").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("say-text").value;
    if (!text.trim()) return;
    if (await page.control("say", { text })) $("say-text").value = "";
  });
}

// -- routing and start ----------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/runs\/(.+)$/);
  $("runs-view").hidden = Boolean(match);
  $("run-view").hidden = !match;
  if (match) {
    const id = decodeURIComponent(match[1]);
    if (page.runId !== id) page.open(id);
  } else {
    page.close();
  }
}

async function start() {
  setupAuth();
  setupFilters();
  setupControls();
  window.addEventListener("hashchange", route);
  route();
  for (;;) {
    try {
      const info = await read(`${API}/info`);
      $("daemon").textContent = `${info.node || ""} · ${info.version || ""}`;
      await table.start();
      return;
    } catch (err) {
      showListError(err);
      setLink("down", "codyd does not answer");
      await sleep(2000);
    }
  }
}

// For tests and benchmarks: what the page holds (read-only use).
window.codydDashboard = { table, page, waitText };

start();
