// Small DOM helpers: elements, tables, cards, bars, gauges, empty states, formatting.

/** An element: h("a", {href: "#/runs", class: "x"}, "text", child, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const nf = new Intl.NumberFormat("en-US");

export const fmt = {
  int: (x) => (x === null || x === undefined ? "–" : nf.format(Math.round(x))),
  num: (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(d)),
  usd: (micros) => {
    if (micros === null || micros === undefined) return "–";
    const usd = micros / 1e6;
    return "$" + (Math.abs(usd) >= 100 ? nf.format(Math.round(usd)) : usd.toFixed(usd && Math.abs(usd) < 0.01 ? 4 : 2));
  },
  pct: (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%"),
  hours: (x) => {
    if (x === null || x === undefined) return "–";
    if (x < 1) return Math.round(x * 60) + " min";
    return x < 48 ? x.toFixed(1) + " h" : (x / 24).toFixed(1) + " d";
  },
  ms: (x) => {
    if (x === null || x === undefined) return "–";
    return x < 1000 ? Math.round(x) + " ms" : x < 120000 ? (x / 1000).toFixed(1) + " s" : (x / 60000).toFixed(1) + " min";
  },
  time: (iso) => (iso ? new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" }) : "–"),
  short: (iso) => (iso ? new Date(iso).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "–"),
};

/** A link inside the console. */
export const link = (hash, text, attrs) => h("a", { href: hash, ...attrs }, text);
export const q = encodeURIComponent;
export const taskLink = (id) => (id ? link(`#/task/${q(id)}`, id, { class: "mono" }) : "–");
export const runLink = (id) => (id ? link(`#/run/${q(id)}`, id, { class: "mono" }) : "–");
export const modelLink = (m) => (m ? link(`#/models?model=${q(m)}`, m) : "–");

/** A status word with its colour. */
export function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}` }, text ?? "–");
}
export const outcomeBadge = (outcome, success) =>
  badge(outcome || "running", success === true ? "ok" : success === false ? "bad" : "");

export function section(title, ...children) {
  const id = "s-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export function card(label, value, sub, attrs) {
  return h("div", { class: "card", ...attrs }, h("span", { class: "label" }, label), h("b", {}, value), sub ? h("small", {}, sub) : null);
}

/** What to do when there is nothing to show: a sentence and, optionally, a command. */
export function empty(message, code) {
  return h("div", { class: "empty", role: "note" }, h("p", {}, message), code ? h("pre", {}, h("code", {}, code)) : null);
}

export function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, h("b", {}, err.status ? `${err.status} ${err.code}` : "Error"), " ", err.message || String(err));
}

/**
 * A table. columns: [{label, cell: (row) => text|Node, num: bool}].
 * With no rows, the empty state ``whenEmpty`` (a Node) is shown instead.
 */
export function table(columns, rows, whenEmpty, attrs) {
  if (!rows.length && whenEmpty) return whenEmpty;
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "n" : null, scope: "col" }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "n" : null }, c.cell(r)))))),
    ),
  );
}

/** Horizontal bars: [{label: text|Node, value: number, text: shown value}]. */
export function bars(items, whenEmpty, color) {
  if (!items.length && whenEmpty) return whenEmpty;
  const max = Math.max(...items.map((i) => i.value), 0) || 1;
  return h(
    "ul",
    { class: "bars" },
    items.map((i) =>
      h(
        "li",
        {},
        h("span", { class: "bar-label" }, i.label),
        h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${(100 * i.value) / max}%;${color ? `background:${color}` : ""}` })),
        h("span", { class: "bar-value" }, i.text),
      ),
    ),
  );
}

/**
 * A quota gauge: used and reserved against the limit, a tick at each alert threshold
 * (percent; the subscription's own, 75/90/100 unless set).
 */
export function gauge(label, used, reserved, limit, format, thresholds = [75, 90, 100]) {
  if (limit === null || limit === undefined) {
    return h("div", { class: "gauge" }, h("div", { class: "gauge-head" }, h("span", {}, label), h("span", {}, `${format(used)} used · no limit`)));
  }
  const share = limit ? used / limit : 0;
  const below = [...thresholds].filter((t) => t < 100).sort((a, b) => a - b);
  const crossed = below.filter((t) => share * 100 >= t).length;
  const level = share >= 1 ? "bad" : crossed === 0 ? "ok" : crossed === below.length && crossed > 1 ? "warn2" : "warn";
  const pct = (x) => Math.min(100, limit ? (100 * x) / limit : 0);
  return h(
    "div",
    { class: `gauge ${level}` },
    h("div", { class: "gauge-head" }, h("span", {}, label), h("span", {}, `${format(used)} of ${format(limit)} (${Math.round(share * 100)}%)`, reserved ? ` · ${format(reserved)} reserved` : "")),
    h(
      "div",
      { class: "gauge-track", role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": String(limit), "aria-valuenow": String(used) },
      h("span", { class: "gauge-used", style: `width:${pct(used)}%` }),
      h("span", { class: "gauge-reserved", style: `left:${pct(used)}%;width:${pct(reserved) && Math.min(pct(reserved), 100 - pct(used))}%` }),
      thresholds.filter((t) => t <= 100).map((t) => h("span", { class: "tick", style: `left:${t}%`, title: `alert at ${t}%` })),
    ),
  );
}

/** A definition list of [label, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

/** A form of filters; ``onSubmit`` gets the non-empty values. */
export function filterForm(fields, values, onSubmit) {
  const form = h(
    "form",
    { class: "filters", role: "search" },
    fields.map((f) =>
      h(
        "label",
        {},
        h("span", {}, f.label),
        f.options
          ? h("select", { name: f.name }, h("option", { value: "" }, "any"), f.options.map((o) => h("option", { value: o, selected: values[f.name] === o }, o)))
          : h("input", { name: f.name, type: "search", value: values[f.name] || "", placeholder: f.placeholder || "", "data-search": f.search ? "" : null }),
      ),
    ),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const out = {};
    for (const [k, v] of new FormData(form)) if (v) out[k] = v;
    onSubmit(out);
  });
  form.addEventListener("change", (e) => {
    if (e.target.tagName === "SELECT") form.requestSubmit();
  });
  return form;
}

/** ``#/path?query`` from a path and an object of parameters (empty ones left out). */
export function hashOf(path, params) {
  const s = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v)).toString();
  return s ? `${path}?${s}` : path;
}

/** Replace ``el``'s content (null and false children are left out, arrays flattened). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}
