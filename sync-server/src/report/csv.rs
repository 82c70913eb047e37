//! A report as CSV: one tidy table per section, in one file. Each table starts with its header
//! row and is followed by a blank line; the first column is `section`, which holds the section's
//! name on every data row, so a table can be cut out by its first column or by the blank lines. Times are RFC 3339 in the site's local time with its offset
//! (`2025-03-01T23:10:04+00:00`); an empty field is a value that does not exist. The sections
//! and their columns: [`SECTIONS`], documented in `docs/reports.md`.

use patrol_core::compliance::Tally;
use patrol_core::siteconfig::SiteZone;

use super::Dar;

/// Every section, in order, with its columns after `section`.
pub const SECTIONS: &[(&str, &[&str])] = &[
    (
        "report",
        &[
            "site",
            "site_name",
            "date",
            "time_zone",
            "from",
            "to",
            "as_of",
            "shift",
            "config_version",
            "windows",
            "checkpoints",
            "on_time",
            "late",
            "missed",
            "pending",
            "compliance_pct",
        ],
    ),
    (
        "guards",
        &[
            "guard", "device", "shift", "started", "ended", "end_note", "events", "scans",
        ],
    ),
    (
        "handovers",
        &["at", "guard", "to_guard", "text", "shift", "event"],
    ),
    (
        "tour_windows",
        &[
            "tour",
            "tour_name",
            "window_start",
            "window_end",
            "grace_min",
            "status",
            "final",
            "checkpoints",
            "on_time",
            "late",
            "missed",
            "pending",
            "compliance_pct",
        ],
    ),
    (
        "tour_checkpoints",
        &[
            "tour",
            "window_start",
            "checkpoint",
            "checkpoint_name",
            "status",
            "final",
            "scanned_at",
            "guard",
            "event",
        ],
    ),
    (
        "amendments",
        &[
            "tour",
            "window_start",
            "checkpoint",
            "before",
            "after",
            "event",
            "at",
        ],
    ),
    (
        "incidents",
        &[
            "incident",
            "category",
            "severity",
            "status",
            "reported_at",
            "reported_by",
            "assignee",
            "description",
        ],
    ),
    (
        "incident_history",
        &["incident", "at", "by", "action", "what"],
    ),
    (
        "alarms",
        &[
            "event",
            "guard",
            "device",
            "raised_at",
            "device_time",
            "received_at",
            "acknowledged_at",
            "acknowledged_by",
        ],
    ),
    ("notes", &["at", "guard", "text", "shift", "event", "files"]),
    (
        "anomalies",
        &[
            "at",
            "guard",
            "device",
            "kind",
            "checkpoint",
            "flags",
            "details",
            "event",
        ],
    ),
];

/// `ms` in the site's zone, RFC 3339 with the offset, to the second.
pub fn local_time(zone: SiteZone, ms: i64) -> String {
    zone.local(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
    )
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn counts_fields(c: &Tally) -> [String; 6] {
    [
        c.total().to_string(),
        c.done.to_string(),
        c.done_late.to_string(),
        c.missed.to_string(),
        c.open.to_string(),
        opt(&c.percent_if_any()),
    ]
}

/// The rows of every section, in [`SECTIONS`]' order and columns.
pub fn tables(dar: &Dar) -> Vec<(&'static str, Vec<Vec<String>>)> {
    let zone = dar.time_zone;
    let t = |ms: i64| local_time(zone, ms);
    let ot = |ms: Option<i64>| ms.map(t).unwrap_or_default();
    let totals = dar.tours.totals();
    let mut report = vec![
        dar.site.to_string(),
        dar.site_name.clone(),
        dar.date.to_string(),
        zone.name().to_owned(),
        t(dar.from_ms),
        t(dar.to_ms),
        t(dar.as_of_ms),
        opt(&dar.shift),
        dar.config_version.to_string(),
        dar.tours.windows.len().to_string(),
    ];
    report.extend(counts_fields(&totals));
    let guards = dar
        .guards
        .iter()
        .map(|g| {
            vec![
                g.guard.to_string(),
                g.device.to_string(),
                g.shift.to_string(),
                ot(g.started_ms),
                ot(g.ended_ms),
                opt(&g.end_note),
                g.events.to_string(),
                g.scans.to_string(),
            ]
        })
        .collect();
    let handovers = dar
        .handovers
        .iter()
        .map(|h| {
            vec![
                t(h.at_ms),
                h.guard.to_string(),
                opt(&h.to_guard),
                h.text.clone(),
                h.shift.to_string(),
                h.event.to_string(),
            ]
        })
        .collect();
    let windows = dar
        .tours
        .windows
        .iter()
        .map(|w| {
            let mut row = vec![
                w.tour.clone(),
                w.tour_name.clone(),
                t(w.start_ms),
                t(w.end_ms),
                w.grace_min.to_string(),
                w.status().code().to_owned(),
                w.is_final.to_string(),
            ];
            row.extend(counts_fields(&w.counts()));
            row
        })
        .collect();
    let checkpoints = dar
        .tours
        .windows
        .iter()
        .flat_map(|w| {
            w.checkpoints.iter().map(move |c| {
                vec![
                    w.tour.clone(),
                    t(w.start_ms),
                    c.checkpoint.to_string(),
                    c.name.clone(),
                    c.status.code().to_owned(),
                    w.is_final.to_string(),
                    ot(c.scanned_at_ms),
                    opt(&c.guard),
                    opt(&c.event),
                ]
            })
        })
        .collect();
    let amendments = dar
        .tours
        .amendments
        .iter()
        .map(|a| {
            vec![
                a.tour.clone(),
                t(a.window_start_ms),
                a.checkpoint.to_string(),
                a.before.code().to_owned(),
                a.after.code().to_owned(),
                opt(&a.event),
                t(a.at_ms),
            ]
        })
        .collect();
    let incidents = dar
        .incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                opt(&i.category),
                opt(&i.severity),
                i.status.clone(),
                ot(i.reported_at_ms),
                opt(&i.reported_by),
                opt(&i.assignee),
                opt(&i.description),
            ]
        })
        .collect();
    let history = dar
        .incidents
        .iter()
        .flat_map(|i| {
            i.history.iter().map(move |h| {
                vec![
                    i.id.to_string(),
                    t(h.at_ms),
                    h.by.clone(),
                    h.action.clone(),
                    h.what.clone(),
                ]
            })
        })
        .collect();
    let alarms = dar
        .alarms
        .iter()
        .map(|a| {
            vec![
                a.event.to_string(),
                a.guard.to_string(),
                a.device.to_string(),
                t(a.raised_ms),
                t(a.device_time_ms),
                t(a.received_ms),
                ot(a.acknowledged_ms),
                opt(&a.acknowledged_by),
            ]
        })
        .collect();
    let notes = dar
        .notes
        .iter()
        .map(|n| {
            vec![
                t(n.at_ms),
                n.guard.to_string(),
                n.text.clone(),
                n.shift.to_string(),
                n.event.to_string(),
                n.files.join("; "),
            ]
        })
        .collect();
    let anomalies = dar
        .anomalies
        .iter()
        .map(|a| {
            let names: Vec<&str> = a.flags.iter().map(|(n, _)| n.as_str()).collect();
            let words: Vec<&str> = a.flags.iter().map(|(_, w)| w.as_str()).collect();
            vec![
                t(a.at_ms),
                a.guard.to_string(),
                a.device.to_string(),
                a.kind.clone(),
                opt(&a.checkpoint),
                names.join(";"),
                words.join("; "),
                a.event.to_string(),
            ]
        })
        .collect();
    vec![
        ("report", vec![report]),
        ("guards", guards),
        ("handovers", handovers),
        ("tour_windows", windows),
        ("tour_checkpoints", checkpoints),
        ("amendments", amendments),
        ("incidents", incidents),
        ("incident_history", history),
        ("alarms", alarms),
        ("notes", notes),
        ("anomalies", anomalies),
    ]
}

/// The report as CSV (UTF-8, CRLF line ends as RFC 4180 writes them).
pub fn render(dar: &Dar) -> Result<Vec<u8>, ::csv::Error> {
    let mut out = Vec::new();
    for ((name, rows), (section, columns)) in tables(dar).into_iter().zip(SECTIONS) {
        debug_assert_eq!(name, *section);
        let mut w = ::csv::WriterBuilder::new()
            .terminator(::csv::Terminator::CRLF)
            .from_writer(&mut out);
        w.write_record(std::iter::once("section").chain(columns.iter().copied()))?;
        for row in rows {
            w.write_record(std::iter::once(name.to_owned()).chain(row))?;
        }
        w.flush()?;
        drop(w);
        // The blank line after the table (an empty record would be written `""`).
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}
