// Helpers: the service's URLs (all relative to the service's root), DOM building, formatting.

// The page is <root>/_dashboard/ (the service redirects <root>/_dashboard there); in case a
// proxy served it without the slash, the root is then the page's own folder.
export const ROOT = new URL(/\/_dashboard$/.test(location.pathname) ? "./" : "../", location.href);

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.reason || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, options = {}) {
  const response = await fetch(new URL(path, ROOT), {
    cache: "no-store",
    credentials: "same-origin",
    headers: { Accept: "application/json" },
    ...options,
  });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function h(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
                 : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class" && !svg) el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const badge = (state) =>
  h("span", { class: `badge s-${String(state).replace(/[^a-z_-]/gi, "")}` }, String(state));

// A long id shortened (the full id on hover and in the link).
// Ids begin with their time, so the end tells them apart: "0661…5d2f81c0".
export function shortId(id, keep = 10) {
  const text = String(id);
  const tail = Math.max(4, keep - 4);
  return h("span", { class: "id", title: text },
    text.length > keep + 3 ? text.slice(0, 4) + "…" + text.slice(-tail) : text);
}

export const runLink = (id, keep) => h("a", { href: `#/run/${encodeURIComponent(id)}` }, shortId(id, keep));

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

export function ago(value, now = Date.now()) {
  const t = parseTime(value);
  if (t === null) return "–";
  const s = (now - t) / 1000;
  if (s < 0) return "in " + span(-s);
  if (s < 1) return "just now";
  return span(s) + " ago";
}

export function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// A time as "3 s ago" with the exact time on hover.
export const when = (value) =>
  h("span", { title: value || "", "data-ago": value || "" }, ago(value));

export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 10) return `${value.toFixed(1)} ms`;
  if (value < 1000) return `${Math.round(value)} ms`;
  return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
}

export function duration(start, end) {
  const a = parseTime(start), b = parseTime(end);
  return a === null || b === null ? null : b - a;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const json = (value) => JSON.stringify(value, null, 2);

export function text(value) {
  return value === null || value === undefined || value === "" ? "–" : String(value);
}

export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "toast bad" : "toast";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

// Refresh the "… ago" texts between polls.
setInterval(() => {
  for (const el of document.querySelectorAll("[data-ago]")) {
    if (el.dataset.ago) el.textContent = ago(el.dataset.ago);
  }
}, 1000);
