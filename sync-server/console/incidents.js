// Incidents: the list, newest first, and one incident with everything the API lets an operator
// do (acknowledge, dispatch, resolve, close, reopen, assign, severity, notes), its attachments
// (images shown) and its history. A phone's edits reach the server in its syncs, which the
// stream does not announce: an open incident is re-read every few seconds and redrawn only
// when it changed.

import { api, sitePath, query } from "./api.js";
import { h, fill, time, words, short } from "./util.js";
import { files, fileList, images } from "./files.js";

const STATUSES = ["open", "acknowledged", "dispatched", "resolved", "closed"];
const SEVERITIES = ["low", "medium", "high", "critical"];
const POLL_MS = 3000;

let statusFilter = "";

export function render(ctx) {
  return ctx.arg ? detail(ctx) : list(ctx);
}

function by(party) {
  if (!party) return "—";
  return party.kind === "operator" ? `${party.user} (control room)` : `${party.guard} (${short(party.device)})`;
}

function list(ctx) {
  const body = h("tbody", { id: "incident-rows" });
  const note = h("p.empty");
  let last = "";

  async function load() {
    try {
      const { incidents } = await api("GET", sitePath(ctx.site, "/incidents") + query({ status: statusFilter, limit: 200 }));
      const key = JSON.stringify(incidents.map((i) => [i.id, i.updated_at]));
      if (key === last) return;
      last = key;
      fill(body, incidents.map((i) =>
        h("tr", {
          class: `status-${i.status} severity-${i.severity}`,
          dataset: { id: i.id },
          onclick: () => ctx.navigate(`#/${encodeURIComponent(ctx.site)}/incidents/${i.id}`),
        },
          h("td", {}, time(i.reported_at)),
          h("td", {}, h("span.badge", { class: `badge sev-${i.severity}` }, i.severity)),
          h("td", {}, words(i.category)),
          h("td.what", {}, i.description),
          h("td", {}, h("span", { class: `badge st-${i.status}` }, i.status)),
          h("td", {}, i.assignee || "—"),
          h("td", {}, i.reported_by?.guard || by(i.reported_by)),
          h("td", {}, i.attachments.length ? files(i.attachments.length) : ""))));
      note.textContent = incidents.length ? "" : "No incidents.";
    } catch (e) {
      note.textContent = e.message;
    }
  }

  const filter = h("select", {
    id: "incident-status",
    onchange: (e) => {
      statusFilter = e.target.value;
      load();
    },
  }, h("option", { value: "" }, "all"), STATUSES.map((s) => h("option", { value: s, selected: s === statusFilter }, s)));

  load();
  const timer = setInterval(load, POLL_MS * 2);
  return {
    el: h("section.incidents", {},
      h("div.filters", {}, h("label", {}, "Status", filter)),
      h("div.scroll", {}, h("table.log", {},
        h("thead", {}, h("tr", {}, ["Reported", "Severity", "Category", "Description", "Status", "Assigned", "By", ""].map((t) => h("th", {}, t)))),
        body)),
      note),
    update(kind, ev) {
      if (kind === "event" && ev.kind === "incident_reported") load();
    },
    dispose() {
      clearInterval(timer);
    },
  };
}

function detail(ctx) {
  const id = ctx.arg;
  const path = sitePath(ctx.site, `/incidents/${encodeURIComponent(id)}`);
  const el = h("section.incident", { id: "incident-detail" }, h("p.empty", {}, "Loading…"));
  const message = h("p.message", { role: "status", id: "incident-message" });
  let shown = "";
  // The operator's half-typed note survives redraws.
  const noteText = h("textarea", { id: "incident-note", rows: 2, placeholder: "A note for the record" });
  const assignTo = h("input", { id: "incident-assign", placeholder: "guard id", size: 12 });

  async function act(body) {
    message.textContent = "";
    try {
      const incident = await api("POST", `${path}/actions`, body);
      draw(incident);
      return true;
    } catch (e) {
      message.textContent = e.message;
      return false;
    }
  }

  function draw(i) {
    const key = i.updated_at + i.history.length;
    if (key === shown) return;
    shown = key;
    const actions = [
      ["acknowledge", "Acknowledge"], ["dispatch", "Dispatch"], ["resolve", "Resolve"], ["close", "Close"], ["reopen", "Reopen"],
    ].map(([action, label]) => h("button", { dataset: { action }, onclick: () => act({ action }) }, label));
    const severity = h("select", { id: "incident-severity", onchange: (e) => act({ action: "set_severity", severity: e.target.value }) },
      SEVERITIES.map((s) => h("option", { value: s, selected: s === i.severity }, s)));
    if (document.activeElement !== assignTo) assignTo.value = i.assignee || "";
    fill(el,
      h("p", {}, h("a", { href: `#/${encodeURIComponent(ctx.site)}/incidents` }, "← All incidents")),
      h("header.incident-head", {},
        h("h2", {}, `${words(i.category)}: ${i.description}`),
        h("span", { class: `badge st-${i.status}`, id: "incident-status-badge" }, i.status),
        h("span", { class: `badge sev-${i.severity}` }, i.severity),
        i.round ? h("span.badge", {}, `round ${i.round}`) : null),
      h("dl.facts", {},
        h("dt", {}, "Reported"), h("dd", {}, `${time(i.reported_at)} by ${by(i.reported_by)}`),
        h("dt", {}, "Assigned to"), h("dd", {}, i.assignee || "nobody"),
        h("dt", {}, "Position"), h("dd", {}, i.location ? `${i.location.lat}, ${i.location.lon}` : "—"),
        h("dt", {}, "Last change"), h("dd", {}, time(i.updated_at))),
      h("div.actions", {}, actions,
        h("label", {}, "Severity", severity),
        h("form.inline", { onsubmit: (e) => { e.preventDefault(); act({ action: "assign", to: assignTo.value.trim() || null }); } },
          assignTo, h("button", { type: "submit" }, "Assign"))),
      message,
      h("h3", {}, "Notes"),
      h("ul.notes", { id: "incident-notes" }, i.notes.map((n) => h("li", {}, h("span.meta", {}, `${time(n.at)} ${by(n.by)}`), " ", n.text))),
      h("form.note", {
        onsubmit: async (e) => {
          e.preventDefault();
          const text = noteText.value.trim();
          if (text && (await act({ action: "add_note", text }))) noteText.value = "";
        },
      }, noteText, h("button", { type: "submit", id: "incident-add-note" }, "Add note")),
      h("h3", {}, "Attachments"),
      fileList(ctx.site, i.attachments),
      images(ctx.site, i.attachments),
      h("h3", {}, "History"),
      h("ol.history", {}, i.history.map((e) => h("li", { class: e.took_effect ? "" : "no-effect" },
        h("span.meta", {}, `${time(e.at)} ${by(e.by)}`), " ", e.what))));
  }

  async function load() {
    try {
      draw(await api("GET", path));
    } catch (e) {
      if (!shown) fill(el, h("p.empty", {}, e.status === 404 ? "No such incident on this site." : e.message));
    }
  }

  load();
  const timer = setInterval(load, POLL_MS);
  return {
    el: h("div", {}, el),
    dispose() {
      clearInterval(timer);
    },
  };
}
