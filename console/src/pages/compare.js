// Two runs side by side: their KPI summaries and the difference of each metric.
import { get } from "../api.js";
import { empty, h, runLink, section, table, fill } from "../ui.js";

export async function render(box, { params }) {
  if (!params.a || !params.b) {
    fill(box, h("h1", {}, "Compare runs"), empty("Pick two runs: tick them on the Runs page, or use “Compare with…” on a run's page."));
    return;
  }
  const c = await get("/compare", { a: params.a, b: params.b });
  fill(box, 
    h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / compare"),
    h("h1", {}, "Compare ", runLink(params.a), " with ", runLink(params.b)),
    table(
      [
        { label: "metric", cell: (r) => r.metric },
        { label: h("span", { class: "mono" }, params.a), cell: (r) => r.a, num: true },
        { label: h("span", { class: "mono" }, params.b), cell: (r) => r.b, num: true },
        { label: "b − a", cell: (r) => r.delta, num: true },
      ],
      c.rows,
      empty("Neither run has KPIs to compare yet."),
      { id: "compare-table" },
    ),
    h("div", { class: "grid2" },
      section(`Summary of ${params.a}`, h("ol", { class: "kpi-lines" }, c.a.summary.map((l) => h("li", {}, l)))),
      section(`Summary of ${params.b}`, h("ol", { class: "kpi-lines" }, c.b.summary.map((l) => h("li", {}, l)))),
    ),
  );
}
