// Flow: cycle times per lane (work, review, QA), WIP, blocked time, ETAs per open task,
// and a plan's Monte Carlo completion forecast.
import { get, seg } from "../api.js";
import { COLORS } from "../charts.js";
import { bars, card, empty, errorBox, fmt, h, hashOf, section, table, taskLink, fill } from "../ui.js";

/** A lane's cycle-time spread: P50 to P85 as a band, the mean as a tick, on a shared scale. */
function spread(name, lane, max) {
  const pos = (v) => (v == null ? 0 : (100 * v) / max);
  return h(
    "li",
    {},
    h("span", { class: "bar-label" }, name),
    h("span", { class: "bar-track", title: `P50 ${fmt.hours(lane.p50_hours)}, P85 ${fmt.hours(lane.p85_hours)}, mean ${fmt.hours(lane.mean_hours)}` },
      h("span", { class: "band", style: `left:${pos(lane.p50_hours)}%;width:${Math.max(pos(lane.p85_hours) - pos(lane.p50_hours), 0.5)}%` }),
      lane.mean_hours != null ? h("span", { class: "mean", style: `left:${pos(lane.mean_hours)}%` }) : null),
    h("span", { class: "bar-value" }, lane.count ? `P50 ${fmt.hours(lane.p50_hours)} · P85 ${fmt.hours(lane.p85_hours)}` : "no task left it yet"),
  );
}

export async function render(box, { params, state }) {
  const workspace = state.workspace || undefined;
  const since = state.window === "24h" || state.window === "7d" ? "30d" : state.windowSince;
  const [lanes, planned] = await Promise.all([get("/lanes", { since, workspace }), get("/tasks", { workspace, limit: 500 })]);
  const plans = [...new Set(planned.tasks.map((t) => t.plan_id).filter(Boolean))].sort();
  const plan = params.plan || plans[0];
  const view = plan ? await get(`/plans/${seg(plan)}`, { workspace }).catch((err) => err) : null;
  const names = ["work", "review", "qa", "blocked"].filter((n) => lanes.lanes[n]);
  const max = Math.max(...names.map((n) => lanes.lanes[n].p85_hours || lanes.lanes[n].mean_hours || 0), 0.01) * 1.1;
  fill(box, 
    h("h1", {}, "Flow", h("small", {}, ` cycle times since ${fmt.time(lanes.since)}`)),
    h("div", { class: "cards" }, names.map((n) => card(`${n} WIP`, fmt.int(lanes.lanes[n].wip), lanes.lanes[n].wip_hours != null ? `${fmt.hours(lanes.lanes[n].wip_hours)} in lane so far` : null, { "data-lane": n }))),
    section(
      "Cycle time per lane",
      names.some((n) => lanes.lanes[n].count)
        ? [h("p", { class: "hint" }, "The band runs from P50 to P85; the tick is the mean. Blocked time is counted apart from the lane it interrupted."), h("ul", { class: "bars spreads" }, names.map((n) => spread(n, lanes.lanes[n], max)))]
        : empty("No task has left a lane in this window. Lanes follow status changes: `tally task status T-42 ready_to_review`, or let runs move tasks."),
    ),
    section(
      "ETAs of open tasks",
      lanes.etas_total > lanes.etas.length ? h("p", { class: "hint" }, `The ${fmt.int(lanes.etas.length)} due soonest of ${fmt.int(lanes.etas_total)} open tasks.`) : null,
      table(
        [
          { label: "task", cell: (e) => taskLink(e.task_id) },
          { label: "title", cell: (e) => e.title || "–" },
          { label: "lane", cell: (e) => [e.lane, e.blocked ? h("span", { class: "badge bad" }, "blocked") : null] },
          { label: "in lane", cell: (e) => fmt.hours(e.spent_hours), num: true },
          { label: "ahead", cell: (e) => fmt.int(e.wip_ahead), num: true },
          { label: "ETA", cell: (e) => (e.eta_hours == null ? "no history" : fmt.hours(e.eta_hours)), num: true },
          { label: "done by", cell: (e) => [fmt.time(e.eta_at), e.overdue ? h("span", { class: "badge bad" }, "overdue") : null] },
        ],
        lanes.etas,
        empty("No open task is in a lane. Work starts when a task moves to in_progress (a run does it)."),
        { id: "etas-table" },
      ),
    ),
    section(
      "Plan forecast",
      plans.length ? h("form", { class: "filters", onchange: (e) => (location.hash = hashOf("#/flow", { plan: e.target.value })) }, h("label", {}, h("span", {}, "Plan"), h("select", { name: "plan" }, plans.map((p) => h("option", { value: p, selected: p === plan }, p))))) : null,
      !plan ? empty("No plan yet. Import one from CSV and its completion forecast shows here:", "uv run tally plan import plan.csv") : view instanceof Error ? errorBox(view) : planView(view),
    ),
  );
}

function planView(p) {
  const f = p.forecast_hours;
  return [
    h("div", { class: "cards" },
      card("tasks", `${p.totals.completed} / ${p.totals.tasks}`, "completed"),
      card("points", `${fmt.num(p.totals.tally_points, 0)}`, `team said ${fmt.num(p.totals.team_points, 0)}`),
      card("critical path", fmt.hours(p.critical_path.hours_p50), `${p.critical_path.tasks.length} tasks (P50)`),
    ),
    h("h3", {}, `Completion forecast (${fmt.int(f.draws)} Monte Carlo draws)`),
    bars([
      { label: "P50", value: f.p50, text: fmt.hours(f.p50) },
      { label: "P85", value: f.p85, text: fmt.hours(f.p85) },
      { label: "P95", value: f.p95, text: fmt.hours(f.p95) },
    ], null, COLORS.runs),
    h("p", { class: "hint" }, "Hours of work left: half the draws finished by P50, 85 in 100 by P85."),
    table(
      [
        { label: "task", cell: (t) => taskLink(t.task_id) },
        { label: "title", cell: (t) => t.title },
        { label: "status", cell: (t) => t.status },
        { label: "team", cell: (t) => fmt.num(t.team_estimate, 0), num: true },
        { label: "Tally", cell: (t) => fmt.num(t.story_points, 0), num: true },
        { label: "depends on", cell: (t) => t.dependencies.join(", ") || "–" },
      ],
      p.tasks,
    ),
  ];
}
