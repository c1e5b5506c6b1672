// A run: its timeline as a waterfall, its 10-line KPI summary, and "compare with…".
import { get, seg } from "../api.js";
import { waterfall } from "../charts.js";
import { empty, facts, fmt, h, hashOf, modelLink, outcomeBadge, section, taskLink, fill } from "../ui.js";

const PAIRS = { phase_start: ["phase_end", "phase"], subtask_started: ["subtask_completed", "subtask"] };
const ENDS = new Set(["phase_end", "subtask_completed"]);

function tokens(u) {
  if (!u) return "";
  const parts = [`${fmt.int(u.input_tokens)} in`, `${fmt.int(u.output_tokens)} out`];
  if (u.cache_read_tokens) parts.push(`${fmt.int(u.cache_read_tokens)} cache read`);
  if (u.cache_write_tokens) parts.push(`${fmt.int(u.cache_write_tokens)} cache write`);
  return parts.join(" · ");
}

/** The waterfall's rows from the timeline: spans for phases, subtasks, calls and checks. */
export function rowsOf(timeline, runEnd) {
  const rows = [];
  const open = new Map();
  for (const e of timeline) {
    const at = Date.parse(e.at);
    const d = e.data || {};
    if (PAIRS[e.kind]) {
      const key = `${e.kind}:${d[PAIRS[e.kind][1]]}:${d.attempt || 1}`;
      const row = { kind: PAIRS[e.kind][1], label: d[PAIRS[e.kind][1]] + (d.attempt > 1 ? ` (attempt ${d.attempt})` : ""), start: at, end: null, detail: "" };
      open.set(key, row);
      rows.push(row);
    } else if (ENDS.has(e.kind)) {
      const startKind = e.kind === "phase_end" ? "phase_start" : "subtask_started";
      const key = `${startKind}:${d[PAIRS[startKind][1]]}:${d.attempt || 1}`;
      const row = open.get(key);
      if (row) {
        row.end = at;
        row.detail = fmt.ms(at - row.start) + (e.kind === "subtask_completed" ? (d.success === false ? " · failed" : "") + (d.quality != null ? ` · quality ${fmt.num(d.quality, 2)}` : "") : "");
        open.delete(key);
      } else rows.push({ kind: e.kind, label: d[PAIRS[startKind][1]] || "", start: at, end: at, detail: "end without a start" });
    } else if (e.kind === "worker_call") {
      const ms = d.duration_ms ?? d.latency_ms;
      const end = d.finished_at ? Date.parse(d.finished_at) : at;
      const start = d.started_at ? Date.parse(d.started_at) : ms ? end - ms : end;
      const cost = d.cost_micros != null ? fmt.usd(d.cost_micros) : d.cost_known === false ? "no known price" : "";
      rows.push({ kind: "worker_call", kindLabel: "call", label: `${d.worker || "worker"} → ${d.model || "?"}`, start, end, detail: [ms != null ? fmt.ms(ms) : null, tokens(d.usage), cost].filter(Boolean).join(" · ") });
    } else if (e.kind === "verification") {
      const end = at;
      rows.push({ kind: "verification", kindLabel: d.passed ? "check ✓" : "check ✗", label: d.command || "", start: d.duration_ms ? end - d.duration_ms : end, end, detail: [d.duration_ms ? fmt.ms(d.duration_ms) : null, d.passed ? "passed" : "failed", d.retry ? `retry ${d.retry}` : null].filter(Boolean).join(" · ") });
    } else if (e.kind === "checkpoint") {
      rows.push({ kind: "checkpoint", label: d.commit || "", start: at, end: at, detail: d.verified ? "verified" : "not verified" });
    } else if (e.kind === "milestone") {
      rows.push({ kind: "milestone", label: d.name || "", start: at, end: at, detail: d.status || "" });
    } else {
      rows.push({ kind: e.kind, label: d.text || (d.files != null ? `${Array.isArray(d.files) ? d.files.length : d.files} files, +${d.lines_added || 0} −${d.lines_removed || 0}` : ""), start: at, end: at, detail: "" });
    }
  }
  for (const row of open.values()) {
    row.end = runEnd || row.start;
    row.detail = "still open";
  }
  return rows;
}

export async function render(box, { args, state }) {
  const id = args[0];
  const [view, kpi] = await Promise.all([get(`/runs/${seg(id)}`), get(`/runs/${seg(id)}/kpi`)]);
  const run = view.run || {};
  const times = view.timeline.map((e) => Date.parse(e.at));
  const runStart = run.started_at ? Date.parse(run.started_at) : Math.min(...times);
  const runEnd = run.finished_at ? Date.parse(run.finished_at) : Math.max(...times, runStart);
  const rows = rowsOf(view.timeline, runEnd);
  // A call's latency can reach back before the run's start as the agent reported it.
  const t0 = Math.min(runStart, ...rows.map((r) => r.start));
  const t1 = Math.max(runEnd, ...rows.map((r) => r.end || r.start));
  const others = run.task_id ? (await get("/runs", { task_id: run.task_id, limit: 50 })).runs.filter((r) => r.run_id !== id) : [];
  const recent = (await get("/runs", { workspace: state.workspace || undefined, limit: 50 })).runs.filter((r) => r.run_id !== id && !others.some((o) => o.run_id === r.run_id));
  const pick = h(
    "select",
    { id: "compare-with", "aria-label": "Run to compare with" },
    h("option", { value: "" }, "choose a run…"),
    others.length ? h("optgroup", { label: "same task" }, others.map((r) => h("option", { value: r.run_id }, `${r.run_id} · ${r.model || "?"} · ${r.outcome || "running"}`))) : null,
    recent.length ? h("optgroup", { label: "recent runs" }, recent.map((r) => h("option", { value: r.run_id }, `${r.run_id} · ${r.task_id}`))) : null,
  );
  fill(box, 
    h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("span", { class: "mono" }, id)),
    h("h1", {}, "Run ", h("span", { class: "mono" }, id), " ", outcomeBadge(run.outcome, run.success), h("small", {}, ` ${view.state}`)),
    facts([
      ["task", taskLink(run.task_id)],
      ["model", modelLink(run.model)],
      ["agent", run.agent_id],
      ["started", fmt.time(run.started_at)],
      ["finished", fmt.time(run.finished_at)],
    ]),
    h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); if (pick.value) location.hash = hashOf("#/compare", { a: id, b: pick.value }); } }, h("label", {}, h("span", {}, "Compare with…"), pick), h("button", { type: "submit" }, "Compare")),
    section("Timeline", rows.length ? [h("p", { class: "hint" }, `${fmt.time(new Date(t0).toISOString())} → ${fmt.short(new Date(t1).toISOString())} (${fmt.ms(t1 - t0)})`), waterfall(rows, t0, t1)] : empty("No timeline events: the agent reported only the start and finish. Report phases and calls with run.phase(...) and run.worker_call(...).")),
    section("KPI summary", h("ol", { class: "kpi-lines" }, kpi.summary.map((line) => h("li", {}, line)))),
  );
}
