// The site plan: the configuration's checkpoints drawn where they are (their coordinates,
// projected onto the page; no map tiles, no network), each with its latest scan, and each
// guard's last known position. Checkpoints without a position are listed below.

import { h, s, fill, time, ago } from "./util.js";

const W = 1000;
const H = 620;
const PAD = 60;

export function render(ctx) {
  const { store } = ctx;
  const holder = h("div.plan", { id: "site-plan" });
  const unplaced = h("p.meta");

  function draw() {
    const cps = (store.config?.checkpoints || []).filter((c) => c.location);
    const guards = new Map();
    for (const e of store.events) if (e.location) guards.set(e.guard_id, e);
    const points = [...cps.map((c) => c.location), ...[...guards.values()].map((e) => e.location)];
    if (!cps.length) {
      fill(holder, h("p.empty", {}, store.config ? "No checkpoint has a position in the site's configuration." : "Loading…"));
      return;
    }
    // An equirectangular projection, longitude scaled by the latitude's cosine: true to
    // within a hair over the few hundred metres of a site.
    const lat0 = points.reduce((a, p) => a + p.lat, 0) / points.length;
    const kx = Math.cos((lat0 * Math.PI) / 180);
    const xs = points.map((p) => p.lon * kx);
    const ys = points.map((p) => p.lat);
    const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const span = Math.max(maxX - minX, maxY - minY, 1e-5);
    const scale = Math.min((W - 2 * PAD) / Math.max(maxX - minX, span / 4), (H - 2 * PAD) / Math.max(maxY - minY, span / 4));
    const cx = (W - scale * (maxX - minX)) / 2;
    const cy = (H - scale * (maxY - minY)) / 2;
    const at = (p) => [cx + (p.lon * kx - minX) * scale, H - (cy + (p.lat - minY) * scale)];
    const metres = 111_320 / scale; // metres per SVG unit
    const latest = new Map();
    for (const e of store.events) if (e.kind === "checkpoint_scanned") latest.set(e.checkpoint, e);
    const now = Date.now();

    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Site plan" });
    svg.append(s("rect", { x: 0, y: 0, width: W, height: H, class: "ground" }));
    // A scale bar of a round number of metres.
    const bar = [10, 20, 50, 100, 200, 500, 1000].find((m) => m / metres > 80) || 1000;
    svg.append(s("line", { x1: 20, y1: H - 20, x2: 20 + bar / metres, y2: H - 20, class: "scale" }),
      s("text", { x: 20, y: H - 28, class: "scale-label" }, `${bar} m`));
    for (const c of cps) {
      const [x, y] = at(c.location);
      const scan = latest.get(c.id);
      const age = scan ? (now - new Date(scan.corrected_time)) / 60000 : Infinity;
      const cls = age < 30 ? "recent" : age < 120 ? "older" : "stale";
      const r = c.radius_m ? Math.max(6, c.radius_m / metres) : 10;
      const g = s("g", { class: `checkpoint ${cls}`, "data-checkpoint": c.id },
        s("circle", { cx: x, cy: y, r, class: "radius" }),
        s("circle", { cx: x, cy: y, r: 7, class: "dot" }),
        s("text", { x: x + 12, y: y - 4, class: "name" }, c.name),
        s("text", { x: x + 12, y: y + 12, class: "scan" }, scan ? `${scan.guard_id} ${time(scan.corrected_time)} (${ago(scan.corrected_time)})` : "not scanned tonight"));
      g.append(s("title", {}, `${c.name} (${c.id})`));
      svg.append(g);
    }
    for (const [guard, e] of guards) {
      const [x, y] = at(e.location);
      svg.append(s("g", { class: `guard ${e.kind === "panic" ? "panic" : ""}` },
        s("rect", { x: x - 6, y: y - 6, width: 12, height: 12, transform: `rotate(45 ${x} ${y})` }),
        s("text", { x: x + 10, y: y + 26, class: "who" }, `${guard} · ${time(e.corrected_time)}`)));
    }
    fill(holder, svg);
    const missing = (store.config?.checkpoints || []).filter((c) => !c.location);
    unplaced.textContent = missing.length ? `Without a position: ${missing.map((c) => c.name).join(", ")}.` : "";
  }

  draw();
  const timer = setInterval(draw, 30_000);
  return {
    el: h("section.plan-view", {},
      h("p.legend", {},
        h("span.dot-recent", {}, "scanned in the last 30 min"), " ",
        h("span.dot-older", {}, "in the last 2 h"), " ",
        h("span.dot-stale", {}, "not since"), " ◆ a guard's last known position"),
      holder, unplaced),
    update(kind) {
      if (["event", "events", "reset"].includes(kind)) draw();
    },
    dispose() {
      clearInterval(timer);
    },
  };
}
