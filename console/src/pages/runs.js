// Runs: newest first, with tokens by kind and cost; pick two to compare.
import { get } from "../api.js";
import { empty, filterForm, fmt, h, hashOf, modelLink, outcomeBadge, runLink, table, taskLink, fill } from "../ui.js";

const FIELDS = [
  { name: "task_id", label: "Task", placeholder: "task id", search: true },
  { name: "model", label: "Model" },
  { name: "outcome", label: "Outcome", options: ["complete", "partial", "error", "cancelled"] },
];

export async function render(box, { params, state, rerender }) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f.name, params[f.name]]).filter(([, v]) => v));
  const list = await get("/runs", { ...filters, workspace: state.workspace || undefined, since: state.windowSince, limit: 200 });
  const picked = new Set();
  const compareButton = h("button", { type: "button", disabled: true, onclick: () => {
    const [a, b] = [...picked];
    location.hash = hashOf("#/compare", { a, b });
  } }, "Compare the two ticked runs");
  const tick = (r) =>
    h("input", {
      type: "checkbox",
      "aria-label": `pick ${r.run_id} to compare`,
      onchange: (e) => {
        if (e.target.checked) picked.add(r.run_id);
        else picked.delete(r.run_id);
        compareButton.disabled = picked.size !== 2;
      },
    });
  fill(box, 
    h("h1", {}, "Runs", h("small", {}, ` ${list.runs.length}${list.more ? "+" : ""} in the window`)),
    filterForm(FIELDS, filters, (values) => (location.hash = hashOf("#/runs", values))),
    table(
      [
        { label: "", cell: tick },
        { label: "run", cell: (r) => runLink(r.run_id) },
        { label: "task", cell: (r) => taskLink(r.task_id) },
        { label: "model", cell: (r) => modelLink(r.model) },
        { label: "started", cell: (r) => fmt.time(r.started_at) },
        { label: "outcome", cell: (r) => outcomeBadge(r.outcome, r.success) },
        { label: "calls", cell: (r) => fmt.int(r.calls), num: true },
        { label: "input", cell: (r) => fmt.int(r.input_tokens), num: true },
        { label: "output", cell: (r) => fmt.int(r.output_tokens), num: true },
        { label: "cache read", cell: (r) => fmt.int(r.cache_read_tokens), num: true },
        { label: "cache write", cell: (r) => fmt.int(r.cache_write_tokens), num: true },
        { label: "cost", cell: (r) => [fmt.usd(r.cost_micros), r.unpriced_calls ? h("small", { class: "warn-text", title: "calls with no known price are not in the cost" }, ` +${r.unpriced_calls} unpriced`) : null], num: true },
      ],
      list.runs,
      Object.keys(filters).length
        ? empty("No run matches these filters in this window. Widen the window or clear a filter.")
        : empty("No runs in this window — an agent reports one with the SDK (or `uv run tally run replay docs/examples/run.jsonl`):", `async with tally.connect(url, workspace="acme") as t:\n    async with t.run("T-42", model="claude-sonnet-4") as run:\n        ...`),
      { id: "runs-table" },
    ),
    list.runs.length > 1 ? h("p", {}, compareButton) : null,
  );
  let timer = null;
  return {
    cleanup: () => clearTimeout(timer),
    // A run recorded while the page is open: read the list again (unless the user is
    // ticking runs or typing a filter).
    onLive(name) {
      const typing = box.contains(document.activeElement) && document.activeElement.tagName === "INPUT";
      if (name !== "runs" || picked.size || typing) return;
      clearTimeout(timer);
      timer = setTimeout(rerender, 250);
    },
  };
}
