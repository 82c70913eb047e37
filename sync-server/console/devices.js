// Devices and guards: each phone's last contact, what it still holds undelivered, its clock's
// offset, its open shift, and a warning when a phone on shift has not been heard from for
// longer than the site allows.

import { api, sitePath } from "./api.js";
import { h, fill, ago, time, offset, short } from "./util.js";

export function render(ctx) {
  const body = h("tbody", { id: "device-rows" });
  const note = h("p.meta");
  let answer = null;
  let soon = null;

  async function load() {
    try {
      answer = await api("GET", sitePath(ctx.site, "/devices"));
      draw();
    } catch (e) {
      note.textContent = e.message;
    }
  }

  function draw() {
    if (!answer) return;
    const secs = answer.no_contact_after_secs;
    note.textContent = `A phone on shift is shown silent after ${secs < 120 ? `${secs} s` : `${Math.round(secs / 60)} min`} without contact.`;
    const devices = [...answer.devices].sort((a, b) => (a.revoked_at ? 1 : 0) - (b.revoked_at ? 1 : 0) || String(a.guard).localeCompare(String(b.guard)));
    fill(body, devices.map((d) => {
      const warnings = [];
      if (d.silent_since) warnings.push(h("span.warn", {}, `No contact since ${time(d.silent_since)}`));
      if (d.overdue) warnings.push(h("span.warn", {}, "Shift overdue"));
      if (d.revoked_at) warnings.push(h("span.badge", {}, `revoked ${time(d.revoked_at)}`));
      if (d.pending_events > 0) warnings.push(h("span.badge", {}, "undelivered events"));
      return h("tr", { class: d.silent_since ? "silent" : d.revoked_at ? "revoked" : "", dataset: { device: d.device_id } },
        h("td", {}, d.guard || "—"),
        h("td.mono", { title: d.device_id }, short(d.device_id)),
        h("td", { title: d.last_sync_at || "" }, d.last_sync_at ? ago(d.last_sync_at) : "never"),
        h("td", {}, d.pending_events ?? "—", d.pending_reported_at ? h("div.meta", {}, `as of ${time(d.pending_reported_at)}`) : null),
        h("td", {}, offset(d.clock_skew_ms)),
        h("td", {}, d.open_shift ? `since ${time(d.open_shift.started_at)}` : "off shift"),
        h("td", {}, warnings));
    }));
    if (!devices.length) fill(body, h("tr", {}, h("td", { colSpan: 7 }, "No phone enrolled on this site yet.")));
  }

  load();
  const timer = setInterval(load, 30_000);
  const ticker = setInterval(draw, 10_000);
  return {
    el: h("section.devices", {},
      h("div.scroll", {}, h("table.log", {},
        h("thead", {}, h("tr", {}, ["Guard", "Device", "Last contact", "Pending", "Clock offset", "Shift", ""].map((t) => h("th", {}, t)))),
        body)),
      note),
    update(kind) {
      // A burst of a phone's events is one sync: read the devices once after it.
      if (kind === "gap" || kind === "event") {
        clearTimeout(soon);
        soon = setTimeout(load, 500);
      }
    },
    dispose() {
      clearInterval(timer);
      clearInterval(ticker);
      clearTimeout(soon);
    },
  };
}
