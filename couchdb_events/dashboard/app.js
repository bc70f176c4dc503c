// The dashboard: hash routing between the pages, and a light poll of _status and
// _activations (every POLL ms) that redraws the page shown, never reloading it.
import { cancel, isFinal, retry, RunsPage, runPage } from "./runs.js";
import { events, overview, workers } from "./views.js";
import { api, h, span, text, toast } from "./util.js";

const POLL = 2000;
const TITLES = { overview: "Overview", workers: "Workers", events: "Events & triggers", runs: "Runs", run: "Run" };
const view = document.getElementById("view");
let status = null;
let route = null;
let runs = null; // the RunsPage while the runs page is shown
let timer = null;
let busy = false;

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const [page, ...rest] = path.split("/");
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  if (page === "run" && rest.length) return { page: "run", id: decodeURIComponent(rest.join("/")), params };
  return { page: TITLES[page] ? page : "overview", params };
}

function setLive(ok, message) {
  const live = document.getElementById("live");
  live.className = "live " + (ok ? "on" : "off");
  live.lastElementChild.textContent = ok ? "live" : "offline";
  const banner = document.getElementById("banner");
  banner.hidden = ok;
  if (!ok) banner.textContent = message;
}

function problem(error) {
  if (error.status === 401 || error.status === 403)
    return `${error.message}. Log in to CouchDB (or reload the page to be asked) to see the dashboard.`;
  if (error.status === 404 && /durable/.test(error.message)) return error.message;
  if (error.status) return `couchdb-events answered ${error.status}: ${error.message}`;
  return "couchdb-events does not answer; trying again…";
}

function header() {
  const me = (status && status.couchdb_events) || {};
  const couch = document.getElementById("couch");
  couch.textContent = me.couchdb_connected ? "CouchDB connected" : "CouchDB disconnected";
  couch.className = "pill " + (me.couchdb_connected ? "good" : "bad");
  couch.title = text(me.couchdb);
  document.getElementById("foot").replaceChildren(
    h("div", {}, `v${text(me.version)}`), h("div", { title: text(me.host) }, text(me.host)),
    h("div", {}, `up ${span(me.uptime || 0)}`));
}

function sized() {
  for (const el of view.querySelectorAll("[data-share]")) el.style.width = `${Math.max(0, Number(el.dataset.share)) * 100}%`;
}

async function drawRun(id) {
  let run;
  try {
    run = await api(`_activations/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) { view.replaceChildren(h("div", { class: "card empty" }, `No run ${id}.`)); return; }
    throw error;
  }
  if (route.page !== "run" || route.id !== id) return;
  view.replaceChildren(runPage(run, {
    onRetry: async () => {
      try {
        const next = await retry(id);
        toast(next ? "Retried: a new attempt is queued" : "Retried");
        if (next) location.hash = `#/run/${encodeURIComponent(next)}`;
        else tick();
      } catch (error) { toast(`Retry refused: ${error.message}`, true); tick(); }
    },
    onCancel: async () => {
      try {
        const body = await cancel(id);
        toast(`Cancelled (was ${body.was || "queued"})`);
      } catch (error) { toast(`Cancel refused: ${error.message}`, true); }
      tick();
    },
  }));
  sized();
  document.getElementById("title").textContent = `Run · ${isFinal(run.state) ? run.state : "live"}`;
}

async function draw() {
  const page = route.page;
  if (page === "overview") {
    let latest = [];
    try { latest = (await api("_activations?limit=8")).activations; } catch (error) { if (error.status !== 404) throw error; latest = null; }
    if (route.page === "overview") view.replaceChildren(overview(status, latest));
  } else if (page === "workers") view.replaceChildren(workers(status));
  else if (page === "events") view.replaceChildren(events(status));
  else if (page === "runs") {
    if (!runs) { runs = new RunsPage(route.params, status); view.replaceChildren(runs.el); await runs.refresh(); }
    else if (runs.live) await runs.refresh();
  } else if (page === "run") await drawRun(route.id);
}

async function tick() {
  clearTimeout(timer);
  if (busy) { timer = setTimeout(tick, 200); return; }
  busy = true;
  try {
    status = await api("_status");
    header();
    await draw();
    setLive(true);
  } catch (error) {
    setLive(false, problem(error));
  } finally {
    busy = false;
    timer = setTimeout(tick, document.hidden ? POLL * 5 : POLL);
  }
}

function navigate() {
  route = parseRoute();
  runs = null;
  for (const a of document.querySelectorAll(".nav")) a.classList.toggle("active", a.dataset.page === (route.page === "run" ? "runs" : route.page));
  document.getElementById("title").textContent = TITLES[route.page];
  document.title = `${TITLES[route.page]} · couchdb-events`;
  if (status) view.replaceChildren(h("div", { class: "empty" }, "Loading…"));
  tick();
}

window.addEventListener("hashchange", navigate);
document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
navigate();
