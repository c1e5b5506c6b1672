// Tasks: a searchable, filterable table; each row links to its task page.
import { get } from "../api.js";
import { badge, empty, filterForm, fmt, h, hashOf, modelLink, table, taskLink, fill } from "../ui.js";

const FIELDS = [
  { name: "q", label: "Search", placeholder: "words in the title or id", search: true },
  { name: "lane", label: "Lane", options: ["backlog", "work", "review", "qa", "blocked", "done"] },
  { name: "status", label: "Status", options: ["backlog", "in_progress", "ready_to_review", "ready_to_qa", "blocked", "completed"] },
  { name: "priority", label: "Priority", options: ["P0", "P1", "P2", "P3", "P4"] },
  { name: "assigner", label: "Assigner", options: ["assigned", "deferred", "exhausted"] },
  { name: "model", label: "Model" },
  { name: "label", label: "Label" },
];

export async function render(box, { params, state }) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f.name, params[f.name]]).filter(([, v]) => v));
  const list = await get("/tasks", { ...filters, plan_id: params.plan_id, workspace: state.workspace || undefined, limit: 200 });
  const filtered = Object.keys(filters).length > 0;
  fill(box, 
    h("h1", {}, "Tasks", h("small", {}, ` ${list.tasks.length}${list.more ? "+" : ""} shown`)),
    filterForm(FIELDS, filters, (values) => (location.hash = hashOf("#/tasks", values))),
    table(
      [
        { label: "task", cell: (t) => taskLink(t.task_id) },
        { label: "title", cell: (t) => h("span", { class: "title" }, t.title, t.labels.map((l) => h("a", { class: "tag", href: hashOf("#/tasks", { label: l }) }, l))) },
        { label: "priority", cell: (t) => badge(t.priority, t.priority) },
        { label: "status", cell: (t) => [badge(t.status, "lane-" + (t.lane || "")), t.assigner_status === "deferred" ? badge("deferred", "warn") : null] },
        { label: "model", cell: (t) => modelLink(t.model) },
        { label: "points", cell: (t) => fmt.num(t.story_points, 0), num: true },
        { label: "value", cell: (t) => fmt.num(t.value_score, 0), num: true },
        { label: "runs", cell: (t) => (t.runs ? h("a", { href: hashOf("#/runs", { task_id: t.task_id }) }, String(t.runs)) : "0"), num: true },
        { label: "created", cell: (t) => fmt.time(t.created_at) },
      ],
      list.tasks,
      filtered
        ? empty("No task matches these filters. Clear one, or search for fewer words.")
        : empty("No tasks yet. Create one with the CLI (or POST /tasks):", 'uv run tally task create "Add OAuth login" --priority P1 --label backend'),
      { id: "tasks-table" },
    ),
    list.more ? h("p", { class: "hint" }, "More tasks match: narrow the filters to see them.") : null,
  );
}
