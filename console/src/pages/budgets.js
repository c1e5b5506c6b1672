// Budgets: subscriptions and their windows, reservations, thresholds crossed, the alerts
// the quota service fired, the freeze switch (quota:admin) and the tasks deferred for want
// of quota.
import { get, post, seg } from "../api.js";
import { badge, empty, errorBox, fmt, gauge, h, modelLink, section, table, taskLink, fill } from "../ui.js";

/** An alert's use or limit: tokens, or micro-dollars for the ``usd`` metric. */
const amount = (a, x) => (a.metric === "usd" ? fmt.usd(x) : `${fmt.int(x)} tok`);

/** "d:2026-11-30" -> "Day 2026-11-30", "m:2026-11" -> "Month 2026-11". */
const windowName = (w) => (w.startsWith("d:") ? `Day ${w.slice(2)}` : w.startsWith("m:") ? `Month ${w.slice(2)}` : w);

export async function render(box, { state, rerender }) {
  const workspace = state.workspace || undefined;
  const deferred = await get("/tasks", { workspace, assigner: "deferred", limit: 200 });
  const exhausted = await get("/tasks", { workspace, assigner: "exhausted", limit: 200 });
  const alerts = state.can("reports:read") ? await get("/quota/alerts", { workspace, since: state.windowSince, limit: 200 }) : null;
  let quota = null;
  // The thresholds each window reached, as the quota service applied them (a
  // subscription's own alert_thresholds too): the alerts it fired, never recomputed here.
  const fired = new Map();
  if (state.me.operator) {
    quota = await get("/quota").catch((err) => err);
    for (const a of alerts ? (await get("/quota/alerts", { limit: 500 })).alerts : []) {
      const key = `${a.subscription} ${a.window_id}`;
      fired.set(key, [...new Set([...(fired.get(key) || []), a.threshold_pct])].sort((x, y) => x - y));
    }
  }
  const admin = state.can("quota:admin") && state.me.operator;

  async function toggle(sub, frozen, button) {
    button.disabled = true;
    try {
      await post(`/quota/${seg(sub)}/${frozen ? "unfreeze" : "freeze"}`);
      await rerender();
    } catch (err) {
      button.after(errorBox(err));
      button.disabled = false;
    }
  }

  const windowCells = (sub, w, thresholds) => {
    const reached = fired.get(`${sub} ${w.window}`) || [];
    return [
    h("h3", {}, windowName(w.window)),
    gauge("dollars", w.used_micros, w.reserved_micros, w.limit_micros, fmt.usd, thresholds),
    gauge("tokens", w.used_tokens, w.reserved_tokens, w.limit_tokens, fmt.int, thresholds),
    h("p", { class: "hint" }, `resets ${fmt.time(w.resets_at)} · reserved ${fmt.usd(w.reserved_micros)} / ${fmt.int(w.reserved_tokens)} tok`, reached.length ? [" · alerts fired at ", reached.map((t) => badge(`${t}%`, t >= 100 ? "bad" : "warn"))] : ""),
    ];
  };

  let timer = null;
  fill(box, 
    h("h1", {}, "Budgets"),
    !state.me.operator
      ? empty("Subscriptions are shared by every workspace: an operator token (workspace *) sees their use.")
      : quota instanceof Error
        ? errorBox(quota)
        : !quota.subscriptions.length
          ? empty("No subscriptions configured: add them to deploy/config/subscriptions.yaml.")
          : h(
              "div",
              { class: "subs" },
              quota.subscriptions.map((s) =>
                h(
                  "section",
                  { class: "panel sub", "data-subscription": s.subscription, "aria-label": `subscription ${s.subscription}` },
                  h("h2", {}, s.subscription, " ", s.frozen ? badge("frozen", "bad") : badge("open", "ok")),
                  h("div", { class: "grid2" }, h("div", {}, windowCells(s.subscription, s.day, s.alert_thresholds)), h("div", {}, windowCells(s.subscription, s.month, s.alert_thresholds))),
                  admin
                    ? h("button", { type: "button", class: s.frozen ? "" : "danger", onclick: (e) => toggle(s.subscription, s.frozen, e.target) }, s.frozen ? `Unfreeze ${s.subscription}` : `Freeze ${s.subscription}`)
                    : h("p", { class: "hint" }, "Freezing needs a token with the quota:admin scope."),
                ),
              ),
            ),
    alerts
      ? section(
          "Alerts fired",
          table(
            [
              { label: "time", cell: (a) => fmt.time(a.fired_at) },
              { label: "subscription", cell: (a) => a.subscription },
              { label: "window", cell: (a) => windowName(a.window_id) },
              { label: "threshold", cell: (a) => badge(`${a.threshold_pct}%`, a.threshold_pct >= 100 ? "bad" : "warn") },
              { label: "used", cell: (a) => `${amount(a, a.used)} of ${amount(a, a.limit)}`, num: true },
              { label: "workspace", cell: (a) => a.workspace },
            ],
            alerts.alerts,
            empty("No quota alert fired in this window. The quota service alerts once per window at each of a subscription's thresholds (alert_thresholds, 75/90/100% unless set)."),
            { id: "alerts-table" },
          ),
        )
      : null,
    section(
      "Deferred tasks",
      table(
        [
          { label: "task", cell: (t) => taskLink(t.task_id) },
          { label: "title", cell: (t) => t.title },
          { label: "priority", cell: (t) => badge(t.priority, t.priority) },
          { label: "value", cell: (t) => fmt.num(t.value_score, 0), num: true },
          { label: "why", cell: (t) => t.assigner_reason || "–" },
          { label: "retry after", cell: (t) => fmt.time(t.retry_after) },
        ],
        deferred.tasks,
        empty("No task is waiting for quota. Deferred tasks are retried as quota frees up; `uv run tally assign --pending --dry-run` shows a batch plan."),
        { id: "deferred-table" },
      ),
    ),
    exhausted.tasks.length
      ? section("Tasks no model could take", table([{ label: "task", cell: (t) => taskLink(t.task_id) }, { label: "title", cell: (t) => t.title }, { label: "model", cell: (t) => modelLink(t.model) }, { label: "why", cell: (t) => t.assigner_reason || "–" }], exhausted.tasks))
      : null,
  );
  return {
    // An alert the reporter just recorded: read the page again (its history is the API's).
    onLive(name) {
      if (name !== "alerts") return;
      clearTimeout(timer);
      timer = setTimeout(rerender, 250);
    },
    cleanup: () => clearTimeout(timer),
  };
}
