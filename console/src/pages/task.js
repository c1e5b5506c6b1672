// A task: its estimate and evidence, value, assignments and attempts, runs, status history
// and the hours it spent in each lane.
import { get, seg } from "../api.js";
import { badge, bars, empty, facts, fmt, h, hashOf, modelLink, outcomeBadge, runLink, section, table, taskLink, fill } from "../ui.js";

const LANE = { in_progress: "work", ready_to_review: "review", ready_to_qa: "qa", blocked: "blocked" };

/** Hours per lane from the status history (the current status counts up to now). */
export function laneHours(history, now = Date.now()) {
  const hours = {};
  history.forEach((e, i) => {
    const lane = LANE[e.to_status];
    if (!lane) return;
    const end = i + 1 < history.length ? Date.parse(history[i + 1].changed_at) : now;
    hours[lane] = (hours[lane] || 0) + (end - Date.parse(e.changed_at)) / 3.6e6;
  });
  return hours;
}

export async function render(box, { args }) {
  const id = args[0];
  const t = await get(`/tasks/${seg(id)}`);
  const est = t.estimate;
  const lanes = laneHours(t.status_history);
  fill(box, 
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), " / ", h("span", { class: "mono" }, t.task_id)),
    h("h1", {}, t.title || t.task_id, " ", badge(t.status, "lane-" + (LANE[t.status] || t.status)), t.priority ? badge(t.priority, t.priority) : null),
    facts([
      ["workspace", t.workspace],
      ["type", t.task_type],
      ["labels", t.labels.length ? t.labels.map((l) => h("a", { class: "tag", href: hashOf("#/tasks", { label: l }) }, l)) : "–"],
      ["plan", t.plan_id ? h("a", { href: hashOf("#/flow", { plan: t.plan_id }) }, t.plan_id) : "–"],
      ["created", fmt.time(t.created_at)],
      ["completed", fmt.time(t.completed_at)],
      ["actual hours", fmt.hours(t.actual_hours)],
    ]),
    section(
      "Estimate",
      est
        ? [
            h("div", { class: "cards" },
              h("div", { class: "card" }, h("span", { class: "label" }, "story points"), h("b", {}, fmt.num(est.story_points, 0)), h("small", {}, `${est.band} · from ${est.points_source}`)),
              h("div", { class: "card" }, h("span", { class: "label" }, "hours P50 / P90"), h("b", {}, `${fmt.num(est.hours_p50)} / ${fmt.num(est.hours_p90)}`), h("small", {}, `velocity from ${est.velocity_source}`)),
              h("div", { class: "card" }, h("span", { class: "label" }, "value score"), h("b", {}, fmt.num(est.value_score, 0)), h("small", {}, "of 100")),
              h("div", { class: "card" }, h("span", { class: "label" }, "tokens (in / out)"), h("b", {}, `${fmt.int(est.tokens.input_tokens)} / ${fmt.int(est.tokens.output_tokens)}`)),
            ),
            h("h3", {}, "Evidence: the nearest past tasks"),
            table(
              [
                { label: "task", cell: (e) => taskLink(e.task_id) },
                { label: "title", cell: (e) => e.title },
                { label: "points", cell: (e) => fmt.num(e.story_points, 0), num: true },
                { label: "similarity", cell: (e) => fmt.pct(e.similarity), num: true },
              ],
              est.evidence,
              empty("No similar completed task in history: the estimate is a prior. Import history with `tally history import done.csv`."),
            ),
            est.subtasks.length ? [h("h3", {}, "Subtasks"), table([{ label: "subtask", cell: (s) => s.title || s.name || JSON.stringify(s) }, { label: "points", cell: (s) => fmt.num(s.story_points, 0), num: true }], est.subtasks)] : null,
          ]
        : empty("Not estimated yet: the estimator answers task.created within seconds when it runs (`make run`)."),
    ),
    section(
      "Assignment and attempts",
      t.assigner ? facts([["assigner", badge(t.assigner.status, t.assigner.status === "assigned" ? "ok" : "warn")], ["attempt", String(t.attempts)], ["reason", t.assigner.reason || "–"], ["retry after", fmt.time(t.assigner.retry_after)], ["failed models", t.assigner.failed_models.join(", ") || "–"]]) : null,
      table(
        [
          { label: "attempt", cell: (a) => String(a.attempt), num: true },
          { label: "model", cell: (a) => modelLink(a.model) },
          { label: "subscription", cell: (a) => a.subscription },
          { label: "strategy", cell: (a) => a.strategy },
          { label: "arm", cell: (a) => a.arm || "–" },
        ],
        t.assignments,
        empty("No assignment yet: the assigner picks a model once the task is estimated."),
      ),
    ),
    section(
      "Runs",
      table(
        [
          { label: "run", cell: (r) => runLink(r.run_id) },
          { label: "model", cell: (r) => modelLink(r.model) },
          { label: "agent", cell: (r) => r.agent_id || "–" },
          { label: "started", cell: (r) => fmt.time(r.started_at) },
          { label: "outcome", cell: (r) => outcomeBadge(r.outcome, r.success) },
        ],
        t.runs,
        empty("No runs of this task yet — an agent reports one with the SDK:", `async with t.run("${t.task_id}", model="…") as run: ...`),
      ),
    ),
    h("div", { class: "grid2" },
      section("Time per lane", bars(Object.entries(lanes).map(([lane, hrs]) => ({ label: lane, value: hrs, text: fmt.hours(hrs) })), empty("The task has not entered a lane yet (work starts at in_progress)."))),
      section(
        "Status history",
        table(
          [
            { label: "when", cell: (s) => fmt.time(s.changed_at) },
            { label: "from", cell: (s) => s.from_status || "–" },
            { label: "to", cell: (s) => s.to_status },
            { label: "run", cell: (s) => (s.task_run_id ? runLink(s.task_run_id) : "–") },
          ],
          t.status_history,
          empty("No status changes yet. Move it with `tally task status ID in_progress`."),
        ),
      ),
    ),
  );
}
