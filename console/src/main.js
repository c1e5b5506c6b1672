// The console's shell: sign-in, the workspace and window, the router, the live stream.
import "./console.css";
import { follow, get, token } from "./api.js";
import { errorBox, h } from "./ui.js";
import * as overview from "./pages/overview.js";
import * as tasks from "./pages/tasks.js";
import * as task from "./pages/task.js";
import * as runs from "./pages/runs.js";
import * as run from "./pages/run.js";
import * as compare from "./pages/compare.js";
import * as models from "./pages/models.js";
import * as flow from "./pages/flow.js";
import * as budgets from "./pages/budgets.js";

const PAGES = { overview, tasks, task, runs, run, compare, models, flow, budgets };
const $ = (id) => document.getElementById(id);

/** What every page reads: who is signed in, the workspace and the window chosen. */
const state = {
  me: null,
  workspace: sessionStorage.getItem("tally.workspace") || "",
  window: sessionStorage.getItem("tally.window") || "7d",
  since: sessionStorage.getItem("tally.since") || "",
  /** The window as the API's ``since``: 24h, 7d, 30d or an ISO time. */
  get windowSince() {
    return this.window === "custom" && this.since ? new Date(this.since).toISOString() : this.window === "custom" ? "7d" : this.window;
  },
  can(scope) {
    return !!this.me && this.me.allows.includes(scope);
  },
};

let current = null; // {page, cleanup, onLive}
let stream = null;

function parseHash() {
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "overview", args: parts.slice(1), params: Object.fromEntries(new URLSearchParams(query || "")) };
}

async function render() {
  const { name, args, params } = parseHash();
  const page = PAGES[name];
  if (current && current.cleanup) current.cleanup();
  current = null;
  const section = { task: "tasks", run: "runs", compare: "runs" }[name] || name;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.page === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const view = $("view");
  if (!page) {
    view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No such page: ", h("a", { href: "#/overview" }, "go to the overview"), "."));
    return;
  }
  const box = h("div", { class: "page" });
  view.replaceChildren(box);
  const me = { cleanup: null, onLive: null };
  current = me;
  try {
    const out = (await page.render(box, { args, params, state, rerender: render })) || {};
    if (current !== me) {
      if (out.cleanup) out.cleanup();
      return;
    }
    Object.assign(me, out);
  } catch (err) {
    if (err.status === 401) return signIn("The token was refused: " + err.message);
    box.replaceChildren(errorBox(err));
    console.warn(err);
  }
  document.title = `Tally · ${name[0].toUpperCase()}${name.slice(1)}`;
}

function setLive(text, cls) {
  const el = $("live");
  el.textContent = text;
  el.className = "live " + (cls || "");
}

function startLive() {
  if (stream) stream.stop();
  stream = null;
  // A workspace token's stream carries only its own workspace (the reporter filters it).
  if (!state.can("reports:read")) {
    setLive("live: needs reports:read", "off");
    return;
  }
  stream = follow(
    "/live/events",
    (name, data) => {
      if (state.workspace && data.workspace && data.workspace !== state.workspace) return;
      if (current && current.onLive) current.onLive(name, data);
    },
    (s) => setLive(s === "live" ? "live" : s === "refused" ? "live: refused" : s === "stopped" ? "offline" : "reconnecting…", s === "live" ? "on" : "off"),
  );
}

async function loadWorkspaces() {
  const select = $("workspace");
  let names = [];
  if (state.can("reports:read")) names = (await get("/workspaces")).workspaces;
  else if (!state.me.operator) names = [state.me.workspace];
  const options = state.me.operator ? [["", "all workspaces"]] : [];
  select.replaceChildren(...options.concat(names.map((n) => [n, n])).map(([v, t]) => h("option", { value: v, selected: v === state.workspace }, t)));
  if (!state.me.operator) state.workspace = state.me.workspace;
  else if (state.workspace && !names.includes(state.workspace)) select.append(h("option", { value: state.workspace, selected: true }, state.workspace));
}

async function signIn(message) {
  const dialog = $("signin");
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  if (!dialog.open) dialog.showModal();
  $("token").focus();
}

async function start() {
  try {
    state.me = await get("/auth/me");
  } catch (err) {
    token.clear();
    return signIn(err.status === 401 || err.status === 403 ? `That token cannot read this console: ${err.message}` : err.message);
  }
  $("signout").hidden = false;
  await loadWorkspaces();
  startLive();
  await render();
}

function wire() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    token.set(value);
    $("token").value = "";
    $("signin").close();
    start();
  });
  $("signin").addEventListener("cancel", (e) => e.preventDefault());
  $("signout").addEventListener("click", () => {
    token.clear();
    if (stream) stream.stop();
    location.hash = "#/overview";
    location.reload();
  });
  $("window").value = state.window;
  $("since").value = state.since;
  $("since").hidden = state.window !== "custom";
  $("window").addEventListener("change", (e) => {
    state.window = e.target.value;
    sessionStorage.setItem("tally.window", state.window);
    $("since").hidden = state.window !== "custom";
    if (state.window === "custom") $("since").focus();
    else render();
  });
  $("since").addEventListener("change", (e) => {
    state.since = e.target.value;
    sessionStorage.setItem("tally.since", state.since);
    render();
  });
  $("workspace").addEventListener("change", (e) => {
    state.workspace = e.target.value;
    sessionStorage.setItem("tally.workspace", state.workspace);
    render();
  });
  window.addEventListener("hashchange", () => {
    if (state.me) render().then(() => $("view").focus({ preventScroll: true }));
  });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName) || e.target.isContentEditable;
    if (typing || !state.me) return;
    const pages = ["overview", "tasks", "runs", "models", "flow", "budgets"];
    if (/^[1-6]$/.test(e.key)) location.hash = `#/${pages[Number(e.key) - 1]}`;
    else if (e.key === "r") render();
    else if (e.key === "/") {
      const search = document.querySelector("[data-search]");
      if (search) {
        e.preventDefault();
        search.focus();
      }
    }
  });
}

wire();
if (token.get()) start();
else signIn();
