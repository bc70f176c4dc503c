// The pages drawn from the status document: overview, workers, events and triggers.
import { sparkline } from "./chart.js";
import { badge, bytes, h, ms, runLink, span, text, when } from "./util.js";

const SERIES = [
  ["fired", "Fired"], ["succeeded", "Succeeded"], ["failed", "Failed"], ["timeout", "Timeouts"],
];
const WINDOW = 300; // seconds shown in the graphs

function sum(values) { return values.reduce((a, b) => a + b, 0); }

function chartCard(recent, key, label) {
  const values = recent && recent.series && recent.series[key];
  if (!Array.isArray(values) || !values.length) {
    return h("div", { class: "card chart-card", "data-series": key },
      h("div", { class: "head" }, h("span", { class: "label" }, label)),
      h("div", { class: "nodata" }, "no data yet"));
  }
  const shown = values.slice(-WINDOW);
  const lastMinute = sum(shown.slice(-60));
  return h("div", { class: `card chart-card c-${key}`, "data-series": key },
    h("div", { class: "head" },
      h("span", { class: "label" }, label),
      h("span", { class: "sub" }, `last ${span(shown.length * (recent.interval || 1))}`)),
    h("div", {}, h("span", { class: "big" }, (lastMinute / 60).toFixed(lastMinute && lastMinute < 60 ? 2 : 1)),
      h("span", { class: "unit" }, "/s"), h("span", { class: "sub" }, ` · ${lastMinute} in the last minute`)),
    sparkline(shown, `c-${key}`));
}

function tile(label, value, sub, cls) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: `big ${cls || ""}` }, value), sub ? h("div", { class: "sub" }, sub) : null);
}

function latency(recent, key) {
  const l = recent && recent.latency_ms && recent.latency_ms[key];
  if (!l || !l.count) return [h("span", { class: "nodata-text" }, recent && recent.latency_ms ? "no runs" : "no data yet"), "p50 · p99, last 60 s"];
  return [h("span", {}, ms(l.p50), h("span", { class: "unit" }, " / " + ms(l.p99))), `p50 · p99 of ${l.count} runs, last 60 s`];
}

export function overview(status, recentRuns) {
  const me = status.couchdb_events || {};
  const recent = status.recent;
  const workers = Object.values(status.workers || {});
  const queued = sum(workers.map((w) => w.queued || 0));
  const procs = sum(workers.map((w) => (w.processes || []).length));
  const busy = sum(workers.map((w) => (w.processes || []).filter((p) => p.current).length));
  const failing = workers.filter((w) => w.state !== "ok").length;
  const acts = status.activations || {};
  return h("div", {},
    h("div", { class: "grid g4" }, SERIES.map(([key, label]) => chartCard(recent, key, label))),
    h("div", { class: "grid g4 section" },
      tile("Queue depth", String(queued), `${busy} of ${procs} processes busy`),
      tile("Accept latency", ...latency(recent, "accept")),
      tile("Queue wait", ...latency(recent, "queue_wait")),
      tile("Run latency", ...latency(recent, "run"))),
    h("div", { class: "grid g4 section" },
      tile("CouchDB", me.couchdb_connected ? "connected" : "disconnected", text(me.couchdb),
        me.couchdb_connected ? "c-succeeded" : "c-failed"),
      tile("Uptime", span(me.uptime || 0), h("span", {}, "since ", when(me.started))),
      tile("Version", text(me.version), `${text(me.host)} · pid ${text(me.pid)}`),
      tile("Workers", `${workers.length}`, failing ? `${failing} not ok` : "all ok", failing ? "c-failed" : "")),
    h("div", { class: "grid g2 section" },
      h("div", { class: "card table-card" },
        h("h2", { class: "pad" }, "Latest runs"),
        recentRuns === null ? h("div", { class: "empty" }, "activation records are off (durable = false)")
          : runsTable(recentRuns, { compact: true })),
      h("div", { class: "card" }, h("h2", {}, "Activation records"),
        h("dl", { class: "kv" },
          h("dt", {}, "recorded"), h("dd", {}, acts.durable ? `yes, in ${acts.db}` : "no (durable = false)"),
          h("dt", {}, "written"), h("dd", {}, text(acts.written)),
          h("dt", {}, "backlog"), h("dd", {}, text(acts.backlog)),
          h("dt", {}, "resumed · retried"), h("dd", {}, `${text(acts.resumed)} · ${text(acts.retried)}`)),
        h("h3", {}, "Last warning or error"),
        status.last_error ? h("div", { class: "error-box" }, h("b", {}, status.last_error.level), " ",
          when(status.last_error.time), h("div", { class: "mono" }, status.last_error.message))
          : h("div", { class: "muted" }, "none"))));
}

export function runsTable(runs, { compact = false, fresh = new Set() } = {}) {
  if (!runs.length) return h("div", { class: "empty" }, "No runs yet.");
  return h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Event"), compact ? null : h("th", {}, "Worker"),
      h("th", {}, "State"), h("th", {}, "Accepted"), h("th", { class: "num" }, "Duration"),
      compact ? null : h("th", { class: "num" }, "Attempt"))),
    h("tbody", {}, runs.map((r) => h("tr", {
      class: "click" + (fresh.has(r._id) ? " fresh" : ""), "data-id": r._id,
      onclick: (e) => { if (!e.target.closest("a")) location.hash = `#/run/${encodeURIComponent(r._id)}`; },
    },
      h("td", {}, runLink(r._id, compact ? 8 : 12)), h("td", {}, text(r.event)),
      compact ? null : h("td", {}, text(r.worker)),
      h("td", {}, badge(r.state)), h("td", {}, when(r.accepted)),
      h("td", { class: "num" }, r.ended ? ms(Date.parse(r.ended) - Date.parse(r.started || r.accepted)) : "–"),
      compact ? null : h("td", { class: "num" }, text(r.attempt))))));
}

export function workers(status) {
  const entries = Object.entries(status.workers || {});
  if (!entries.length) return h("div", { class: "card empty" }, "No workers.");
  return h("div", { class: "grid" }, entries.map(([name, w]) => h("div", { class: "card worker", "data-worker": name },
    h("div", { class: "worker-head" }, h("h2", {}, name), badge(w.state),
      h("span", { class: "tag" }, text(w.mode)), h("span", { class: "grow" }),
      h("span", { class: "sub" }, "rev ", h("span", { class: "id", title: w.rev || "" }, text((w.rev || "").slice(0, 12))))),
    w.last_error ? h("div", { class: "error-box" }, h("b", {}, "last error "), w.last_error) : null,
    h("div", { class: "counters" }, [["queued", w.queued], ["fired", w.fired], ["delivered", w.delivered],
      ["succeeded", w.succeeded], ["failed", w.failed], ["timeouts", w.timeouts], ["restarts", w.restarts],
      ["recycled", w.recycled]].map(([k, v]) => h("div", {}, h("span", { class: "label" }, k), h("b", {}, text(v ?? 0))))),
    h("h3", {}, `Processes (${(w.processes || []).length})`),
    (w.processes || []).length ? h("table", {},
      h("thead", {}, h("tr", {}, ["pid", "state", "rss", "cpu", "handled", "current run", "started", "rev"].map((c) =>
        h("th", { class: ["rss", "cpu", "handled"].includes(c) ? "num" : "" }, c)))),
      h("tbody", {}, w.processes.map((p) => h("tr", {},
        h("td", { class: "mono" }, text(p.pid)), h("td", {}, badge(p.state)),
        h("td", { class: "num" }, bytes(p.rss)), h("td", { class: "num" }, p.cpu === null || p.cpu === undefined ? "–" : `${Number(p.cpu).toFixed(1)} %`),
        h("td", { class: "num" }, text(p.handled)), h("td", {}, p.current ? runLink(p.current) : h("span", { class: "muted" }, "idle")),
        h("td", {}, when(p.started)), h("td", { class: "id", title: p.rev || "" }, text((p.rev || "").slice(0, 8)))))))
      : h("div", { class: "muted" }, "none running"))));
}

function triggerTags(id, event) {
  const tags = (event.triggers || []).map((t) => h("span", { class: "tag" },
    (t.methods ? t.methods.join(",") + " " : "") + t.path));
  return h("div", { class: "tags" }, tags, h("span", { class: "tag muted", title: "every event fires at its own id" }, "/" + id));
}

function every(seconds) {
  const n = Number(seconds);
  if (n % 86400 === 0) return `every ${n / 86400} d`;
  if (n % 3600 === 0) return `every ${n / 3600} h`;
  if (n % 60 === 0) return `every ${n / 60} min`;
  return `every ${n} s`;
}

function scheduleCell(event, state) {
  const s = event.schedule;
  if (!s) return h("span", { class: "muted" }, "–");
  const what = [s.cron ? `cron ${s.cron}` : null, s.every ? every(s.every) : null,
    s.timezone && s.timezone !== "UTC" ? s.timezone : null,
    s.catch_up && s.catch_up !== "skip" ? `catch up ${s.catch_up}` : null].filter(Boolean).join(" · ");
  return h("div", {}, h("span", { class: "tag" }, what),
    state ? h("div", { class: "sub" }, "next ", when(state.next_fire), " · last ", when(state.last_fire),
      ` · ${state.fired || 0} fired`) : null,
    state && state.last_error ? h("div", { class: "c-failed sub" }, state.last_error) : null);
}

function changesCell(event, state) {
  if (!event.changes) return h("span", { class: "muted" }, "–");
  const c = state || { db: event.changes };
  return h("div", {}, h("span", { class: "tag" }, c.db || event.changes), " ", c.state ? badge(c.state) : null,
    h("div", { class: "sub" }, "checkpoint ", h("span", { class: "id", title: String(c.checkpoint ?? "") }, text(String(c.checkpoint ?? "").slice(0, 12) || null)),
      " · lag ", text(c.lag), " · owner ", text(c.owner), ` · ${c.fired || 0} fired`),
    c.last_error ? h("div", { class: "c-failed sub" }, c.last_error) : null);
}

export function events(status) {
  const entries = Object.entries(status.events || {});
  if (!entries.length) return h("div", { class: "card empty" }, "No events.");
  return h("div", { class: "card table-card" }, h("table", { class: "events" },
    h("thead", {}, h("tr", {}, ["Event", "HTTP triggers", "Schedule", "Changes", "Workers", "State"].map((c) => h("th", {}, c)))),
    h("tbody", {}, entries.map(([id, e]) => h("tr", { "data-event": id },
      h("td", {}, h("a", { href: `#/runs?event=${encodeURIComponent(id)}`, title: "its runs" }, h("b", {}, id)),
        h("div", { class: "sub id", title: e.rev || "" }, (e.rev || "").slice(0, 10))),
      h("td", {}, triggerTags(id, e)),
      h("td", {}, scheduleCell(e, (status.schedules || {})[id])),
      h("td", {}, changesCell(e, (status.changes || {})[id])),
      h("td", {}, h("div", { class: "tags" }, (e.workers || []).map((w) => h("a", { class: "tag", href: "#/workers" }, w)))),
      h("td", {}, e.error ? h("div", {}, badge("invalid"), h("div", { class: "c-failed sub" }, e.error))
        : e.disabled ? badge("disabled") : badge("ok")))))));
}
