// Charts: time series with uPlot; the cost–quality scatter and the waterfall in plain SVG
// and HTML (few points, and readable without a chart library).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h, fmt } from "./ui.js";

export const COLORS = {
  input: "#4e79a7",
  output: "#e15759",
  cache_read: "#59a14f",
  cache_write: "#b07aa1",
  spend: "#f28e2b",
  runs: "#76b7b2",
  ok: "#59a14f",
};

/**
 * A time chart. x: seconds since the epoch; series: [{label, values, color, fmt}].
 * Redraws at its box's width; ``destroy`` is kept on the returned element.
 */
export function timeChart({ title, x, series, height = 220, bars = false, yFormat = fmt.int }) {
  const box = h("figure", { class: "chart" }, h("figcaption", {}, title));
  const area = h("div", { class: "chart-area", role: "img", "aria-label": `${title}: ${series.map((s) => `${s.label} ${yFormat(s.values.reduce((a, b) => a + (b || 0), 0))}`).join(", ")}` });
  box.append(area);
  const opts = {
    width: 600,
    height,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [{ stroke: "#555", grid: { stroke: "#eee" } }, { stroke: "#555", grid: { stroke: "#eee" }, size: 64, values: (u, vals) => vals.map(yFormat) }],
    series: [
      {},
      ...series.map((s) => ({
        label: s.label,
        stroke: s.color,
        fill: bars ? s.color + "cc" : s.color + "22",
        width: 2,
        value: (u, v) => (v === null ? "–" : yFormat(v)),
        paths: bars ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
        points: { show: x.length < 60 },
      })),
    ],
  };
  const plot = new uPlot(opts, [x, ...series.map((s) => s.values)], area);
  const fit = () => plot.setSize({ width: Math.max(240, area.clientWidth), height });
  const observer = new ResizeObserver(fit);
  observer.observe(area);
  requestAnimationFrame(fit);
  box.destroy = () => {
    observer.disconnect();
    plot.destroy();
  };
  return box;
}

/**
 * Cost per point (x) against success rate (y) for each model; the models no other beats
 * on both (cheaper and at least as good) are joined as the frontier.
 */
export function frontierChart(points) {
  const W = 560, H = 300, P = 48;
  const xs = points.map((p) => p.cost);
  const maxX = Math.max(...xs, 1) * 1.1;
  const sx = (v) => P + ((W - 2 * P) * v) / maxX;
  const sy = (v) => H - P + -(H - 2 * P) * v;
  const frontier = points
    .filter((p) => !points.some((o) => o !== p && o.cost <= p.cost && o.success >= p.success && (o.cost < p.cost || o.success > p.success)))
    .sort((a, b) => a.cost - b.cost);
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "frontier", role: "img", "aria-label": "Cost per point against success rate, per model" });
  svg.append(s("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }), s("line", { x1: P, y1: P, x2: P, y2: H - P, class: "axis" }));
  for (const t of [0, 0.5, 1]) svg.append(s("text", { x: P - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt.pct(t)));
  for (const t of [0, maxX / 2, maxX]) svg.append(s("text", { x: sx(t), y: H - P + 18, "text-anchor": "middle" }, fmt.usd(t)));
  svg.append(s("text", { x: W / 2, y: H - 8, "text-anchor": "middle", class: "axis-title" }, "cost per story point"));
  svg.append(s("text", { x: 12, y: H / 2, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle", class: "axis-title" }, "success rate"));
  if (frontier.length > 1) svg.append(s("polyline", { points: frontier.map((p) => `${sx(p.cost)},${sy(p.success)}`).join(" "), class: "front" }));
  for (const p of points) {
    const on = frontier.includes(p);
    const g = s("g", {});
    g.append(s("circle", { cx: sx(p.cost), cy: sy(p.success), r: on ? 6 : 4, class: on ? "on" : "off" }));
    g.append(s("text", { x: sx(p.cost) + 8, y: sy(p.success) - 6 }, p.model));
    g.append(s("title", {}, `${p.model}: ${fmt.usd(p.cost)} per point, ${fmt.pct(p.success)} success${on ? " (on the frontier)" : ""}`));
    svg.append(g);
  }
  return h("figure", { class: "chart" }, h("figcaption", {}, "Cost–quality frontier"), svg);
}

/**
 * A run's timeline as a waterfall: each row a phase, subtask, worker call or check with
 * its bar on the run's time axis; point events (checkpoints, milestones) as marks.
 * rows: [{kind, label, start, end, detail}] with times in ms.
 */
export function waterfall(rows, t0, t1) {
  const span = Math.max(t1 - t0, 1);
  const pos = (t) => (100 * (t - t0)) / span;
  return h(
    "ol",
    { class: "waterfall", "aria-label": "Run timeline" },
    rows.map((r) =>
      h(
        "li",
        { class: `wf-row wf-${r.kind}`, "data-kind": r.kind },
        h("span", { class: "wf-label" }, h("span", { class: "wf-kind" }, r.kindLabel || r.kind), " ", r.label),
        h(
          "span",
          { class: "wf-track" },
          r.end > r.start
            ? h("span", { class: "wf-bar", style: `left:${pos(r.start)}%;width:${Math.max(pos(r.end) - pos(r.start), 0.4)}%`, title: `${fmt.ms(r.end - r.start)}` })
            : h("span", { class: "wf-mark", style: `left:${pos(r.start)}%`, title: fmt.short(new Date(r.start).toISOString()) }),
        ),
        h("span", { class: "wf-detail" }, r.detail),
      ),
    ),
  );
}
