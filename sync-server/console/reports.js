// Reports: the daily activity report for a date in the site's time zone, as the server renders
// it, downloaded as CSV or PDF (plain links: the browser saves the server's attachment).

import { sitePath, query } from "./api.js";
import { h, localDate, siteZone } from "./util.js";

export function render(ctx) {
  // Today in the site's zone (util.js holds it, set from the site's configuration).
  const date = h("input", { type: "date", id: "report-date", value: localDate() });
  const csv = h("a.button", { id: "report-csv" }, "Download CSV");
  const pdf = h("a.button", { id: "report-pdf" }, "Download PDF");
  function links() {
    csv.href = sitePath(ctx.site, "/reports/dar") + query({ date: date.value, format: "csv" });
    pdf.href = sitePath(ctx.site, "/reports/dar") + query({ date: date.value, format: "pdf" });
  }
  date.addEventListener("change", links);
  links();
  return {
    el: h("section.reports", {},
      h("h2", {}, "Daily activity report"),
      h("p", {}, "Guards, rounds, incidents, alarms, notes and flagged events of one day in the site's time zone (", siteZone(), "), every line from a recorded event."),
      h("div.filters", {}, h("label", {}, "Date", date), csv, pdf)),
  };
}
