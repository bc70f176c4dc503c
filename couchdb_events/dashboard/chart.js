// A small per-second graph in SVG: area and line of a series of counts, oldest first.
import { h } from "./util.js";

const W = 300, H = 64;

export function sparkline(values, cls) {
  const n = values.length;
  const top = Math.max(1, ...values);
  const x = (i) => (n <= 1 ? W : (i / (n - 1)) * W);
  const y = (v) => H - 2 - (v / top) * (H - 6);
  let line = "";
  values.forEach((v, i) => { line += `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`; });
  const area = `${line}L${W},${H}L0,${H}Z`;
  return h("svg:svg", { class: `chart ${cls}`, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                        role: "img", "aria-label": `peak ${top} per second` },
    h("svg:line", { class: "base", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, "vector-effect": "non-scaling-stroke" }),
    h("svg:path", { class: "area", d: area, fill: "currentColor" }),
    h("svg:path", { class: "line", d: line, stroke: "currentColor", "vector-effect": "non-scaling-stroke" }),
    h("svg:title", {}, `peak ${top}/s`));
}
