// Tours: tonight's windows as a grid of checkpoints × windows, one grid per tour, each cell
// coloured on time, late, missed or not due; provisional windows marked (a phone may still
// deliver), amended ones too (a late sync changed a final window). Redrawn when the stream says
// a window changed, and every minute as windows open and close.

import { api, sitePath, query } from "./api.js";
import { h, fill, time, hm, localDate, localHour } from "./util.js";

const STATE = {
  done: ["on time", "ok"],
  done_late: ["late", "late"],
  missed: ["missed", "missed"],
  late: ["late, not scanned", "late-open"],
  due: ["due", "due"],
  upcoming: ["not due", "upcoming"],
  pending: ["not due", "upcoming"],
};

let chosenDate = "";

/** The night shown by default: the one that started today, or yesterday's before noon. */
/** The night under way in the site's zone (util.js holds it): before noon, the one that began
 * yesterday. */
function tonight() {
  const now = new Date();
  const hour = localHour(undefined, now);
  return localDate(undefined, hour < 12 ? new Date(now.getTime() - 24 * 3600 * 1000) : now);
}

export function render(ctx) {
  const grids = h("div.grids", { id: "tour-grids" }, h("p.empty", {}, "Loading…"));
  const dateInput = h("input", { type: "date", id: "tour-date", onchange: (e) => { chosenDate = e.target.value; load(); } });
  const asOf = h("span.meta");

  async function load() {
    // A night named in the address (#/<site>/tours/2026-12-06) is shown as asked.
    const date = chosenDate || (/^\d{4}-\d{2}-\d{2}$/.test(ctx.arg) ? ctx.arg : tonight());
    dateInput.value = date;
    try {
      const answer = await api("GET", sitePath(ctx.site, "/tours/windows") + query({ date }));
      asOf.textContent = `${answer.time_zone}, as of ${time(answer.as_of)}${answer.tracked_since ? `; tracked since ${time(answer.tracked_since)}` : ""}`;
      draw(answer.windows);
    } catch (e) {
      fill(grids, h("p.empty", {}, e.message));
    }
  }

  function draw(windows) {
    if (!windows.length) {
      fill(grids, h("p.empty", {}, "No tour windows on this night. Tours and their schedules are set in the site's configuration."));
      return;
    }
    const tours = new Map();
    for (const w of windows) {
      if (!tours.has(w.tour_id)) tours.set(w.tour_id, { name: w.tour_name, windows: [] });
      tours.get(w.tour_id).windows.push(w);
    }
    fill(grids, [...tours.entries()].map(([tourId, tour]) => grid(tourId, tour)));
  }

  function grid(tourId, tour) {
    const checkpoints = [];
    for (const w of tour.windows) {
      for (const c of w.checkpoints) if (!checkpoints.some((x) => x.id === c.checkpoint_id)) checkpoints.push({ id: c.checkpoint_id, name: c.name });
    }
    const head = h("tr", {}, h("th", {}, "Checkpoint"), tour.windows.map((w) =>
      h("th", {
        class: ["window", w.status, w.amendments.length ? "amended" : "", `phase-${w.phase}`].join(" "),
        title: `${w.status}${w.final_by ? ` (${w.final_by})` : ""}; ${w.phase}; closes ${time(w.closes_at)}`,
      },
        h("div", {}, hm(w.start)),
        h("div.pct", {}, `${w.percent}%`),
        h("div.mark", {}, w.status === "provisional" ? "provisional" : "final", w.amendments.length ? " · amended" : ""))));
    const rows = checkpoints.map((cp) => h("tr", {},
      h("th.cp", {}, cp.name || cp.id),
      tour.windows.map((w) => {
        const c = w.checkpoints.find((x) => x.checkpoint_id === cp.id);
        if (!c) return h("td.none", {}, "");
        const [label, cls] = STATE[c.state] || [c.state, "upcoming"];
        const amended = w.amendments.some((a) => a.checkpoint_id === cp.id);
        return h("td", {
          class: ["cell", cls, w.status === "provisional" ? "provisional" : "", amended ? "amended" : ""].join(" "),
          dataset: { checkpoint: cp.id, state: c.state, window: w.start },
          title: c.corrected_time ? `${label}: ${c.guard} at ${time(c.corrected_time)}` : label,
        }, label, amended ? h("span.amend", { title: "changed after the window was final" }, "A") : null,
          c.corrected_time ? h("div.meta", {}, `${c.guard} ${hm(c.corrected_time)}`) : null);
      })));
    return h("div.tour", { dataset: { tour: tourId } },
      h("h2", {}, tour.name || tourId),
      h("div.scroll", {}, h("table.grid", {}, h("thead", {}, head), h("tbody", {}, rows))));
  }

  const legend = h("div.legend", {},
    ["ok", "late", "missed", "late-open", "due", "upcoming"].map((cls) =>
      h("span", { class: `cell ${cls}` }, Object.values(STATE).find(([, c]) => c === cls)[0])),
    h("span.cell.provisional", {}, "provisional: a phone may still deliver"),
    h("span.cell", {}, h("span.amend", {}, "A"), " amended after final"));

  load();
  const timer = setInterval(load, 60_000);
  return {
    el: h("section.tours", {}, h("div.filters", {}, h("label", {}, "Night of", dateInput), asOf), legend, grids),
    update(kind, data) {
      if (kind === "window" || (kind === "event" && data.kind === "checkpoint_scanned")) load();
    },
    dispose() {
      clearInterval(timer);
    },
  };
}
