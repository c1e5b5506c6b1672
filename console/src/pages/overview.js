// Overview: work and spend over the window, tokens by kind over time, spend by model and
// subscription, quota gauges, the latest runs; refreshed from the API when a run is recorded.
import { get } from "../api.js";
import { COLORS, timeChart } from "../charts.js";
import { bars, card, empty, errorBox, fmt, gauge, h, modelLink, outcomeBadge, runLink, section, table, taskLink, fill } from "../ui.js";

const SDK_HINT = `import tally
async with tally.connect("nats://127.0.0.1:4222", workspace="acme") as t:
    async with t.run("T-42", model="claude-sonnet-4") as run:
        await run.worker_call(worker="coder", usage=resp.usage.model_dump())`;

export async function render(box, { state }) {
  const scope = { since: state.windowSince, workspace: state.workspace || undefined };
  let charts = [];
  let timer = null;
  let lastLive = null;

  async function load() {
    const quota = state.me.operator ? get("/quota").catch((err) => err) : Promise.resolve(null);
    const [stats, series, byModel, latest, quotas] = await Promise.all([
      get("/dashboard/stats", scope),
      get("/dashboard/series", scope),
      get("/tokens", { ...scope, by: "model" }),
      get("/runs", { workspace: scope.workspace, limit: 10 }),
      quota,
    ]);
    charts.forEach((c) => c.destroy());
    charts = [];
    const x = series.points.map((p) => Date.parse(p.start) / 1000);
    const tokens = timeChart({
      title: `Tokens per ${series.bucket}`,
      x,
      series: [
        { label: "input", values: series.points.map((p) => p.input_tokens), color: COLORS.input },
        { label: "output", values: series.points.map((p) => p.output_tokens), color: COLORS.output },
        { label: "cache read", values: series.points.map((p) => p.cache_read_tokens), color: COLORS.cache_read },
        { label: "cache write", values: series.points.map((p) => p.cache_write_tokens), color: COLORS.cache_write },
      ],
    });
    const spend = timeChart({
      title: `Spend per ${series.bucket}`,
      x,
      bars: true,
      yFormat: fmt.usd,
      series: [{ label: "spend", values: series.points.map((p) => p.spend_micros), color: COLORS.spend }],
    });
    const done = timeChart({
      title: `Runs finished per ${series.bucket}`,
      x,
      bars: true,
      series: [
        { label: "finished", values: series.points.map((p) => p.runs_finished), color: COLORS.runs },
        { label: "succeeded", values: series.points.map((p) => p.runs_succeeded), color: COLORS.ok },
      ],
    });
    charts = [tokens, spend, done];
    const unpriced = series.points.reduce((a, p) => a + p.unpriced_calls, 0);
    const nothing = stats.runs_finished === 0 && stats.tasks_created === 0 && !series.points.some((p) => p.input_tokens || p.output_tokens);
    fill(box, 
      h("h1", {}, "Overview", h("small", {}, ` ${state.workspace || "all workspaces"} · since ${fmt.time(stats.since)}`)),
      lastLive ? h("p", { class: "live-note", role: "status" }, "Updated live: run ", runLink(lastLive.run_id), ` recorded at ${fmt.short(lastLive.finished_at)}.`) : null,
      nothing ? empty("Nothing in this window yet. Create a task with the CLI and report a run with the SDK:", `uv run tally task create "Add OAuth login" --priority P1\n\n${SDK_HINT}`) : null,
      h(
        "div",
        { class: "cards", id: "stats" },
        card("tasks created", fmt.int(stats.tasks_created), null, { "data-stat": "tasks_created" }),
        card("assigned", fmt.int(stats.tasks_assigned), null, { "data-stat": "tasks_assigned" }),
        card("deferred", fmt.int(stats.tasks_deferred), null, { "data-stat": "tasks_deferred" }),
        card("finished", fmt.int(stats.tasks_finished), null, { "data-stat": "tasks_finished" }),
        card("runs", fmt.int(stats.runs_finished), `${fmt.int(stats.runs_succeeded)} succeeded`, { "data-stat": "runs_finished" }),
        card("success rate", fmt.pct(stats.success_rate), null, { "data-stat": "success_rate" }),
        card("spend", fmt.usd(stats.spend_micros), unpriced ? `${unpriced} calls with no known price not counted` : null, { "data-stat": "spend" }),
      ),
      h(
        "div",
        { class: "cards tokens" },
        card("input tokens", fmt.int(stats.input_tokens)),
        card("output tokens", fmt.int(stats.output_tokens)),
        card("cache read", fmt.int(stats.cache_read_tokens)),
        card("cache write", fmt.int(stats.cache_write_tokens)),
      ),
      h("div", { class: "grid2" }, tokens, spend),
      h("div", { class: "grid2" },
        done,
        section("Latest runs",
          table(
            [
              { label: "run", cell: (r) => runLink(r.run_id) },
              { label: "task", cell: (r) => taskLink(r.task_id) },
              { label: "model", cell: (r) => modelLink(r.model) },
              { label: "outcome", cell: (r) => outcomeBadge(r.outcome, r.success) },
              { label: "cost", cell: (r) => fmt.usd(r.cost_micros), num: true },
            ],
            latest.runs,
            empty("No runs yet — report one with the SDK:", SDK_HINT),
            { id: "latest-runs" },
          ),
        ),
      ),
      h(
        "div",
        { class: "grid2" },
        section("Spend by model", bars(byModel.rows.map((r) => ({ label: modelLink(r.key === "(none)" ? null : r.key), value: r.cost_micros, text: `${fmt.usd(r.cost_micros)} · ${tokenText(r)}${r.unpriced_calls ? ` · ${r.unpriced_calls} unpriced` : ""}` })), empty("No model calls in this window."), COLORS.spend)),
        section("Spend by subscription", bars(series.by_subscription.map((s) => ({ label: s.subscription, value: s.spend_micros, text: `${fmt.usd(s.spend_micros)} · ${tokenText(s)}` })), empty("No spend in this window."), COLORS.spend)),
      ),
      quotaPanel(quotas, state),
    );
  }

  await load();

  return {
    cleanup() {
      clearTimeout(timer);
      charts.forEach((c) => c.destroy());
    },
    onLive(name, data) {
      if (name !== "runs") return;
      lastLive = data;
      clearTimeout(timer);
      timer = setTimeout(() => load().catch((err) => box.prepend(errorBox(err))), 250);
    },
  };
}

/** Uncached and cached tokens apart: "9,240 in/out · 34,800 cached". */
const tokenText = (r) => `${fmt.int(r.input_tokens + r.output_tokens)} in/out · ${fmt.int(r.cache_read_tokens + r.cache_write_tokens)} cache r/w`;

function quotaPanel(quotas, state) {
  if (!state.me.operator) return null;
  if (quotas instanceof Error) return section("Quota", errorBox(quotas));
  if (!quotas || !quotas.subscriptions.length) return section("Quota", empty("No subscriptions configured: add them to deploy/config/subscriptions.yaml."));
  return section(
    "Quota",
    h("p", { class: "hint" }, "Ticks where alerts fire (each subscription's thresholds; 75, 90 and 100% unless set). ", h("a", { href: "#/budgets" }, "Budgets"), " has reservations and the freeze switch."),
    h("div", { class: "gauges" }, quotas.subscriptions.map((s) => h("div", { class: "gauge-group" }, h("h3", {}, s.subscription, s.frozen ? h("span", { class: "badge bad" }, "frozen") : null), gauge("today ($)", s.day.used_micros, s.day.reserved_micros, s.day.limit_micros, fmt.usd, s.alert_thresholds), gauge("this month ($)", s.month.used_micros, s.month.reserved_micros, s.month.limit_micros, fmt.usd, s.alert_thresholds)))),
  );
}
