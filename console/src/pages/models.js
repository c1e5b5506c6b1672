// Models: learned performance by model × task type × band, routing shares, the cost–quality
// frontier and the A/B experiments with their significance.
import { get, seg } from "../api.js";
import { COLORS, frontierChart } from "../charts.js";
import { bars, empty, errorBox, fmt, h, hashOf, section, table, fill } from "../ui.js";

export async function render(box, { params, state }) {
  const workspace = state.workspace || undefined;
  const [perf, series, experiments, policy] = await Promise.all([
    get("/models/performance", { workspace, model: params.model }),
    get("/dashboard/series", { since: state.windowSince, workspace }),
    state.me.operator ? get("/experiments") : Promise.resolve({ experiments: [] }),
    workspace ? get("/models/policy", { workspace }).catch((err) => err) : Promise.resolve(null),
  ]);
  const byModel = new Map();
  for (const m of perf.models) {
    const a = byModel.get(m.model) || { model: m.model, runs: 0, ok: 0, cost: 0, points: 0 };
    a.runs += m.runs;
    a.ok += m.successes;
    a.cost += m.cost_micros;
    a.points += m.delivered_points;
    byModel.set(m.model, a);
  }
  const points = [...byModel.values()].filter((a) => a.runs && a.points).map((a) => ({ model: a.model, cost: a.cost / a.points, success: a.ok / a.runs }));
  const analyses = await Promise.all(
    experiments.experiments.filter((e) => e.active).map((e) => get(`/experiments/${seg(e.name)}`, { workspace: state.workspace || "default" }).catch((err) => err)),
  );
  fill(box, 
    h("h1", {}, "Models", params.model ? h("small", {}, " ", params.model, " · ", h("a", { href: "#/models" }, "all models")) : null),
    section(
      "Learned performance",
      table(
        [
          { label: "model", cell: (m) => h("a", { href: hashOf("#/models", { model: m.model }) }, m.model) },
          { label: "task type", cell: (m) => m.task_type },
          { label: "band", cell: (m) => m.band },
          { label: "runs", cell: (m) => h("a", { href: hashOf("#/runs", { model: m.model }) }, fmt.int(m.runs)), num: true },
          { label: "success", cell: (m) => fmt.pct(m.success_rate), num: true },
          { label: "velocity (pt/h)", cell: (m) => (m.velocity.mean == null ? "–" : `${fmt.num(m.velocity.mean, 2)}${m.velocity.stddev != null ? ` ± ${fmt.num(m.velocity.stddev, 2)}` : ""}`), num: true },
          { label: "quality", cell: (m) => fmt.num(m.quality.mean, 2), num: true },
          { label: "cost / point", cell: (m) => fmt.usd(m.cost_per_point_micros), num: true },
          { label: "spend", cell: (m) => fmt.usd(m.cost_micros), num: true },
        ],
        perf.models,
        empty("The learner has scored no model yet: it learns from every recorded run. Report runs with the SDK, or replay an example:", "uv run tally run replay docs/examples/run.jsonl"),
        { id: "models-table" },
      ),
    ),
    h(
      "div",
      { class: "grid2" },
      section("Routing: what the assigner chose in the window", bars(series.routing.map((r) => ({ label: h("a", { href: hashOf("#/models", { model: r.model }) }, r.model), value: r.share, text: `${fmt.pct(r.share)} · ${r.assignments}` })), empty("No assignments in this window: create tasks and the assigner routes them."), COLORS.input)),
      section("Cost against quality", points.length ? frontierChart(points) : empty("The frontier needs runs that delivered story points, per model.")),
    ),
    section("Routing policy (learned)", policyView(policy)),
    section(
      "Experiments",
      !state.me.operator
        ? empty("Experiments are installation-wide: an operator token (workspace *) sees them.")
        : table(
            [
              { label: "name", cell: (e) => e.name },
              { label: "task type", cell: (e) => e.task_type || "any" },
              { label: "active", cell: (e) => (e.active ? "yes" : "no") },
              { label: "variants", cell: (e) => e.variants.map((v) => `${v.name}: ${v.strategy} (${v.weight})`).join(", ") },
              { label: "significance", cell: (e) => significance(analyses[experiments.experiments.filter((x) => x.active).indexOf(e)]) },
            ],
            experiments.experiments,
            empty("No experiments. Start one:", "uv run tally experiment create NAME --variant A:strategy=learned --variant B:strategy=cheapest_capable"),
          ),
    ),
  );
}

/** The learner's routing probabilities per task class, each a set of bars. */
function policyView(policy) {
  if (policy === null) return empty("Choose a workspace at the top: each workspace learns its own routing policy.");
  if (policy instanceof Error) return errorBox(policy);
  if (!policy.classes.length) return empty("The learner has no routing policy for this workspace yet: it learns one from recorded runs (`tally models` shows the same).");
  return [
    h("p", { class: "hint" }, `Version ${policy.version}; ${policy.checkpoints.length} checkpoint(s). Each class's shares sum to 100%.`),
    h("div", { class: "policy-classes" }, policy.classes.map((c) => h("div", {}, h("h3", {}, `${c.task_type} · ${c.band}`), bars(c.models.map((m) => ({ label: h("a", { href: hashOf("#/models", { model: m.model }) }, m.model), value: m.probability, text: fmt.pct(m.probability) })), null, COLORS.runs)))),
  ];
}

function significance(analysis) {
  if (!analysis) return "–";
  if (analysis instanceof Error) return errorBox(analysis);
  if (!analysis.comparisons.length) return "not enough runs yet";
  return h("ul", { class: "plain" }, analysis.comparisons.map((c) => h("li", {}, `${c.metric || "metric"}: p = ${c.p_value != null ? Number(c.p_value).toFixed(3) : "–"}${c.verdict ? ` · ${c.verdict}` : ""}`)));
}
