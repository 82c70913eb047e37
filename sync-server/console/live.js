// The live log: the merged site record as it arrives, newest on top, filtered by guard, kind,
// checkpoint and flag; anomaly flags shown on the row; a click opens every time the event has.

import { api, sitePath, query } from "./api.js";
import { h, fill, time, fullTime, words, short, offset } from "./util.js";
import { noteWithFiles, fileList, images } from "./files.js";

const KINDS = [
  "shift_started", "shift_ended", "checkpoint_scanned", "incident_reported", "panic", "note",
  "handover", "checkin_timer_started", "checked_in", "checkin_timer_stopped", "checkin_missed",
];
const FLAGS = [
  "unknown_checkpoint", "unknown_tag", "tag_of_another_checkpoint", "manual", "far_from_checkpoint",
  "method_not_accepted", "padding", "impossible_speed", "cloned_tag", "outside_window",
  "out_of_order", "clock_skew",
];
/** Rows drawn at once: an operator reads the top; the filters reach further back. */
const MAX_ROWS = 400;

// Kept across visits to other views, so coming back shows the same selection.
const filters = { guard: "", kind: "", checkpoint: "", flag: "" };
let selected = null;

export function matches(ev) {
  return (!filters.guard || ev.guard_id === filters.guard)
    && (!filters.kind || ev.kind === filters.kind)
    && (!filters.checkpoint || ev.checkpoint === filters.checkpoint)
    && (!filters.flag || ev.flags.some((f) => f.flag === filters.flag));
}

/** What happened, in a few words. */
export function summary(ev, checkpointName) {
  switch (ev.kind) {
    case "checkpoint_scanned":
      return `${checkpointName(ev.checkpoint)} by ${Object.keys(ev.method || {})[0] || "scan"}${ev.note ? ` (${ev.note})` : ""}`;
    case "incident_reported":
      return `${words(ev.category)}, ${ev.severity}: ${ev.description}`;
    case "panic":
      return "PANIC";
    case "note":
      return noteWithFiles(ev.text, ev.attachments?.length);
    case "handover":
      return `${ev.to_guard ? `to ${ev.to_guard}: ` : ""}${ev.text}`;
    case "shift_ended":
      return ev.note || "";
    case "checkin_timer_started":
      return `check in every ${ev.every_min} min`;
    case "checkin_missed":
      return `check-in due ${time(new Date(ev.due_ms).toISOString())} missed`;
    default:
      return "";
  }
}

export function flagBadges(ev) {
  return ev.flags.map((f) => {
    const { flag, ...rest } = f;
    const detail = Object.entries(rest).map(([k, v]) => `${words(k)}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
    return h("span.flag", { title: detail || words(flag), dataset: { flag } }, words(flag));
  });
}

export function render(ctx) {
  const { store, checkpointName } = ctx;
  const body = h("tbody", { id: "live-rows" });
  const detail = h("aside.detail", { id: "event-detail" });
  const count = h("span.count");

  function select(name, label, values, describe = words) {
    return h("label", {}, label,
      h("select", {
        id: `filter-${name}`,
        onchange: (e) => {
          filters[name] = e.target.value;
          draw();
        },
      },
        h("option", { value: "" }, "all"),
        values.map((v) => h("option", { value: v, selected: filters[name] === v }, describe(v)))));
  }

  const filterBar = h("div.filters");
  function drawFilters() {
    const guards = [...new Set(store.events.map((e) => e.guard_id))].sort();
    if (filters.guard && !guards.includes(filters.guard)) guards.push(filters.guard);
    const checkpoints = [...new Set([...(store.config?.checkpoints || []).map((c) => c.id), ...store.events.map((e) => e.checkpoint).filter(Boolean)])].sort();
    fill(filterBar,
      select("guard", "Guard", guards, String),
      select("kind", "Kind", KINDS),
      select("checkpoint", "Checkpoint", checkpoints, checkpointName),
      select("flag", "Flag", FLAGS),
      count);
  }

  function row(ev, fresh) {
    const tr = h("tr", {
      class: [ev.kind === "panic" ? "panic" : "", ev.flags.length ? "flagged" : "", fresh ? "fresh" : "", selected === ev.id ? "selected" : ""].join(" ").trim(),
      dataset: { id: ev.id, kind: ev.kind },
      onclick: () => {
        selected = ev.id;
        for (const r of body.querySelectorAll("tr.selected")) r.classList.remove("selected");
        tr.classList.add("selected");
        showDetail(ev);
      },
    },
      h("td.time", { title: `device ${ev.device_time}` }, time(ev.corrected_time)),
      h("td.guard", {}, ev.guard_id),
      h("td.kind", {}, words(ev.kind)),
      h("td.what", {}, summary(ev, checkpointName)),
      h("td.flags", {}, flagBadges(ev)));
    return tr;
  }

  function draw() {
    const shown = [];
    for (let i = store.events.length - 1; i >= 0 && shown.length < MAX_ROWS; i--) {
      if (matches(store.events[i])) shown.push(row(store.events[i], false));
    }
    fill(body, shown);
    count.textContent = shown.length ? "" : "Nothing matches.";
    if (!store.events.length) count.textContent = store.connection === "connecting" ? "Loading…" : "No events in the last 12 hours.";
  }

  function showDetail(ev) {
    const loc = ev.location;
    const what = [
      ["Kind", words(ev.kind)],
      ["Guard", ev.guard_id],
      ["What", summary(ev, checkpointName)],
    ];
    const rows = [
      ["Corrected time", fullTime(ev.corrected_time)],
      ["Device time", fullTime(ev.device_time)],
      ["Received by the server", fullTime(ev.received_at)],
      ["Device clock offset", offset(new Date(ev.corrected_time) - new Date(ev.device_time))],
      ["Hybrid clock", `${ev.hlc?.wall_ms} / ${ev.hlc?.counter}`],
      ["Monotonic", `${ev.mono_ms} ms since boot ${short(ev.boot_id)}`],
      ["Device", ev.device_id],
      ["Device sequence", ev.device_seq],
      ["Server sequence", ev.seq],
      ["Shift", ev.shift_id],
      ["Configuration version", ev.config_version],
      ["Position", loc ? `${loc.lat}, ${loc.lon}${loc.accuracy_m ? ` ±${loc.accuracy_m} m` : ""}` : "—"],
      ev.incident ? ["Incident", h("a", { href: `#/${encodeURIComponent(ctx.site)}/incidents/${ev.incident}` }, short(ev.incident))] : null,
      ev.method ? ["Method", JSON.stringify(ev.method)] : null,
      ["Flags", ev.flags.length ? flagBadges(ev) : "none"],
    ].filter(Boolean);
    const attached = ev.attachments || [];
    const files = h("div", { id: "event-files" }, fileList(ctx.site, attached));
    const dl = (list) => h("dl", {}, list.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    // A note's files are what it says: right below its text, above the times.
    fill(detail,
      h("header", {}, h("h2", {}, "Event"), h("button", { onclick: () => { selected = null; fill(detail); detail.classList.remove("open"); } }, "Close")),
      dl(what),
      attached.length ? [h("h3", {}, "Files"), files, images(ctx.site, attached)] : null,
      dl(rows));
    detail.classList.add("open");
    if (attached.length) markUploaded(ev, files);
  }

  /** Which of a note's files the phone has uploaded yet, as the server says. */
  async function markUploaded(ev, files) {
    try {
      const { attachments } = await api("GET", sitePath(ctx.site, "/attachments") + query({ note: ev.id }));
      if (selected !== ev.id || !files.isConnected) return;
      const uploaded = new Set(attachments.filter((a) => a.uploaded).map((a) => a.sha256));
      fill(files, fileList(ctx.site, ev.attachments, uploaded));
    } catch {
      // The list as the event gives it stays: each link says what the server has when followed.
    }
  }

  drawFilters();
  draw();
  const selectedEvent = selected && store.eventsById.get(selected);
  if (selectedEvent) showDetail(selectedEvent);

  const el = h("section.live", {},
    filterBar,
    h("div.split", {},
      h("div.scroll", {},
        h("table.log", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Guard"), h("th", {}, "Kind"), h("th", {}, "What"), h("th", {}, "Flags"))),
          body)),
      detail));

  return {
    el,
    update(kind, ev) {
      if (kind === "event") {
        if (matches(ev)) {
          body.prepend(row(ev, true));
          while (body.children.length > MAX_ROWS) body.lastChild.remove();
          count.textContent = "";
        }
        if (!filterBar.contains(document.activeElement)) drawFilters();
      } else if (kind === "events" || kind === "reset") {
        drawFilters();
        draw();
      }
    },
  };
}
