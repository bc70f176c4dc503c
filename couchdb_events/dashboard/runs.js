// The runs: a filtered, paged listing (newest first, by the indexed `accepted` time), and one
// run's page with its retry and cancel buttons.
import { runsTable } from "./views.js";
import { api, ApiError, badge, duration, h, json, ms, runLink, text, toast, when } from "./util.js";

export const STATES = ["scheduled", "accepted", "running", "succeeded", "failed", "timeout", "lost", "rejected", "cancelled"];
const RETRYABLE = ["failed", "timeout", "cancelled", "lost"];
const CANCELLABLE = ["scheduled", "accepted", "running"];
const FINAL = ["succeeded", "failed", "timeout", "lost", "rejected", "cancelled"];
export const PAGE = 50;

// A page of the listing: `until` the accepted time of the previous page's last row, skipping
// only the rows of that same millisecond already shown (never a growing skip).
export function listingPath(filters, cursor) {
  const q = new URLSearchParams();
  for (const key of ["event", "worker", "state"]) if (filters[key]) q.set(key, filters[key]);
  if (filters.since) q.set("since", new Date(filters.since).toISOString());
  let until = filters.until ? new Date(filters.until).toISOString() : null;
  if (cursor) { until = cursor.until; if (cursor.skip) q.set("skip", String(cursor.skip)); }
  if (until) q.set("until", until);
  q.set("limit", String(PAGE + 1));
  return "_activations?" + q.toString();
}

function nextCursor(rows) {
  const last = rows[rows.length - 1];
  const skip = rows.filter((r) => r.accepted === last.accepted).length;
  return { until: last.accepted, skip };
}

export class RunsPage {
  constructor(filters, status) {
    this.filters = filters;
    this.status = status;
    this.cursors = []; // the cursor of each page after the first
    this.rows = [];
    this.more = false;
    this.seen = null;
    this.table = h("div", { class: "card table-card" });
    this.el = h("div", {}, this.filterBar(), this.table);
  }

  filterBar() {
    const f = this.filters;
    const select = (key, options) => h("label", {}, key,
      h("select", { name: key, onchange: (e) => this.setFilter(key, e.target.value) },
        h("option", { value: "" }, "any"),
        options.map((o) => h("option", { value: o, selected: o === f[key] }, o))));
    const time = (key) => h("label", {}, key,
      h("input", { type: "datetime-local", name: key, value: f[key] || "", onchange: (e) => this.setFilter(key, e.target.value) }));
    return h("div", { class: "filters" },
      select("event", Object.keys(this.status.events || {}).concat(f.event && !(f.event in (this.status.events || {})) ? [f.event] : [])),
      select("worker", Object.keys(this.status.workers || {}).concat(f.worker && !(f.worker in (this.status.workers || {})) ? [f.worker] : [])),
      select("state", STATES), time("since"), time("until"),
      h("button", { type: "button", onclick: () => { location.hash = "#/runs"; } }, "Clear"));
  }

  setFilter(key, value) {
    const f = { ...this.filters, [key]: value };
    const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v));
    location.hash = "#/runs" + (q.toString() ? "?" + q : "");
  }

  async refresh() {
    const cursor = this.cursors[this.cursors.length - 1] || null;
    const body = await api(listingPath(this.filters, cursor));
    const rows = body.activations;
    this.more = rows.length > PAGE;
    const fresh = new Set();
    if (this.seen) for (const r of rows) if (!this.seen.has(r._id)) fresh.add(r._id);
    this.seen = new Set(rows.map((r) => r._id));
    this.rows = rows.slice(0, PAGE);
    this.draw(fresh);
  }

  draw(fresh) {
    const page = this.cursors.length + 1;
    this.table.replaceChildren(
      runsTable(this.rows, { fresh }),
      h("div", { class: "pager" },
        h("span", { class: "grow" }, page === 1 ? "Newest first · live" : `Page ${page} · older runs, not live`),
        h("button", { type: "button", disabled: page === 1, onclick: () => this.go(() => { this.cursors = []; }) }, "Newest"),
        h("button", { type: "button", disabled: page === 1, onclick: () => this.go(() => { this.cursors.pop(); }) }, "← Newer"),
        h("button", { type: "button", class: "older", disabled: !this.more,
          onclick: () => this.go(() => { this.cursors.push(nextCursor(this.rows)); }) }, "Older →")));
  }

  go(change) { change(); this.seen = null; this.refresh().catch((e) => toast(e.message, true)); }

  get live() { return this.cursors.length === 0; }
}

function section(title, ...body) { return h("div", { class: "card section" }, h("h2", {}, title), ...body); }

function lines(name, list) {
  const items = list || [];
  return section(`${name} (${items.length} lines, the last kept)`,
    items.length ? h("pre", { class: name === "stderr" ? "err" : "", "data-stream": name }, items.join("\n"))
      : h("div", { class: "muted" }, "empty"));
}

export function runPage(run, { onRetry, onCancel }) {
  const total = duration(run.accepted, run.ended);
  const wait = duration(run.accepted, run.started);
  const took = duration(run.started, run.ended);
  const chain = run.chain || {};
  const emitted = run.emitted || [];
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const canRetry = RETRYABLE.includes(run.state) && !run.retried_as;
  const canCancel = CANCELLABLE.includes(run.state);
  const req = run.request || {};
  return h("div", { class: "run", "data-id": run._id },
    h("div", { class: "run-head" },
      h("span", { class: "id", title: run._id }, run._id), badge(run.state),
      h("span", { class: "sub" }, `${text(run.event)} → ${text(run.worker)} · attempt ${text(run.attempt)}`),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary retry", disabled: !canRetry, onclick: onRetry,
          title: canRetry ? "start a new attempt with the same arguments and request"
            : run.retried_as ? "retried already" : "only a failed, timed-out, cancelled or lost run" }, "Retry"),
        h("button", { type: "button", class: "danger cancel", disabled: !canCancel, onclick: onCancel,
          title: canCancel ? "never start it, or stop it" : "only a scheduled, queued or running run" }, "Cancel"))),
    run.error || run.last_error ? h("div", { class: "error-box section" },
      run.error ? [h("b", {}, "error "), h("span", { class: "mono run-error" }, typeof run.error === "string" ? run.error : json(run.error))] : null,
      run.last_error ? h("div", { class: "sub" }, "last error of an earlier attempt: ", typeof run.last_error === "string" ? run.last_error : json(run.last_error)) : null) : null,
    h("div", { class: "grid g2 section" },
      h("div", { class: "card" }, h("h2", {}, "Timings"),
        total !== null && wait !== null ? h("div", { class: "timeline", title: `queued ${ms(wait)}, ran ${ms(took)}` },
          h("i", { class: "t-queue", "data-share": wait / (total || 1) }), h("i", { class: "t-run", "data-share": (took || 0) / (total || 1) })) : null,
        kv([["accepted", when(run.accepted)], run.run_at ? ["runs at", when(run.run_at)] : null,
          ["started", when(run.started)], ["ended", when(run.ended)],
          ["queue wait", ms(wait)], ["run", ms(took)], ["total", ms(total)]])),
      h("div", { class: "card" }, h("h2", {}, "Run"),
        kv([["event", h("a", { href: `#/runs?event=${encodeURIComponent(run.event || "")}` }, text(run.event))],
          ["worker", text(run.worker)], ["worker rev", h("span", { class: "id" }, text(run.worker_rev))],
          ["attempt", text(run.attempt)],
          ["chain", chain.parent ? h("span", {}, `depth ${chain.depth}, parent `, runLink(chain.parent)) : `depth ${chain.depth ?? 0}, no parent`],
          run.retry_of ? ["retry of", runLink(run.retry_of)] : null,
          run.retried_as ? ["retried as", runLink(run.retried_as)] : null,
          run.idempotency_key ? ["idempotency key", h("span", { class: "mono" }, run.idempotency_key)] : null,
          run.daemon ? ["daemon", h("span", { class: "mono" }, text(run.daemon.host || run.daemon.id || json(run.daemon)))] : null]))),
    emitted.length ? section("Emitted (children)", h("table", {}, h("tbody", {}, emitted.map((e) => h("tr", {},
      h("td", {}, text(e.event)), h("td", {}, e.error ? h("span", { class: "c-failed" }, e.error)
        : h("div", { class: "tags" }, (e.runs || []).map((id) => runLink(id))))))))) : null,
    h("div", { class: "grid g2" },
      section("Answer", h("pre", { class: "answer" }, run.answer === undefined ? "–" : json(run.answer))),
      section("Arguments", h("pre", {}, json(run.arguments ?? null)))),
    h("div", { class: "grid g2" }, lines("stdout", run.stdout), lines("stderr", run.stderr)),
    section("Request", kv([["method", text(req.method)], ["path", h("span", { class: "mono" }, text(req.path))],
      ["peer", text(req.peer)], ["user", req.user ? text(req.user.name) + (req.user.roles && req.user.roles.length ? ` (${req.user.roles.join(", ")})` : "") : "anonymous"]]),
      h("h3", {}, "query"), h("pre", {}, json(req.query ?? {})),
      h("h3", {}, "headers"), h("pre", {}, json(req.headers ?? {})),
      h("h3", {}, "body"), h("pre", {}, req.body === undefined || req.body === null ? "–" : typeof req.body === "string" ? req.body : json(req.body))));
}

export const isFinal = (state) => FINAL.includes(state);

export async function retry(id) {
  const body = await api(`_activations/${encodeURIComponent(id)}/retry`, { method: "POST" });
  return body.runs && body.runs[0] ? body.runs[0].id : null;
}

export async function cancel(id) {
  return api(`_activations/${encodeURIComponent(id)}/cancel`, { method: "POST" });
}

export { ApiError };
