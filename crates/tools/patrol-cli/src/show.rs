//! What `patrol` prints for people: tables with a header row and stable columns, times in the
//! reader's time zone, and the pieces of the site record (incidents, site configurations) that
//! the phone and the control room both show. `--json` output is not made here: it keeps the
//! API's field names and RFC 3339 UTC times.

use chrono::DateTime;
use patrol_core::siteconfig::{SiteConfig, SiteZone};
use serde_json::Value;

use patrol_term::shown;

pub use patrol_term::{NONE, local_ms, local_time, render, table};

/// Milliseconds since the epoch in a site's time zone, with the offset, as [`local_time`]
/// writes times: tour windows are shown as the site's schedule is written.
pub fn site_ms(zone: SiteZone, ms: i64) -> String {
    patrol_term::ms_in(ms, &zone.tz())
}

/// [`local_time`] of an RFC 3339 time from the server; other text as it is (made safe).
pub fn local_text(text: &str) -> String {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => local_time(t.to_utc()),
        Err(_) => shown(text),
    }
}

/// [`local_text`] of a JSON field holding an RFC 3339 time; [`NONE`] if absent or null.
pub fn local_field(value: &Value) -> String {
    match value.as_str() {
        Some(text) => local_text(text),
        None => NONE.to_owned(),
    }
}

/// RFC 3339 UTC with milliseconds, as the API writes times (for `--json`).
pub fn rfc3339_ms(ms: i64) -> Value {
    patrol_core::event::try_format_time_ms(ms).map_or(Value::Null, Value::String)
}

/// A JSON string field, made safe; [`NONE`] if absent, null or empty.
pub fn text_field(value: &Value) -> String {
    match value.as_str() {
        Some(text) if !text.is_empty() => shown(text),
        _ => NONE.to_owned(),
    }
}

/// Who wrote an incident entry, from its JSON (`{"kind": "guard", "guard", "device"}` or
/// `{"kind": "operator", "user"}`).
fn party(value: &Value) -> String {
    match value["kind"].as_str() {
        Some("guard") => format!("guard {}", text_field(&value["guard"])),
        Some("operator") => format!("control room ({})", text_field(&value["user"])),
        _ => NONE.to_owned(),
    }
}

/// "1 file", "3 files".
pub fn files(n: usize) -> String {
    match n {
        1 => "1 file".to_owned(),
        n => format!("{n} files"),
    }
}

/// A note's text with the number of files attached to it: `text [2 files]`, or `[1 file]`
/// for a note that is only its files.
pub fn note_with_files(text: &str, n: usize) -> String {
    match (text.is_empty(), n) {
        (_, 0) => text.to_owned(),
        (true, n) => format!("[{}]", files(n)),
        (false, n) => format!("{text} [{}]", files(n)),
    }
}

/// A table of incidents (the API's incident objects), newest first as given; `sync` adds the
/// phone's column saying whether its last change reached the server.
pub fn incidents_table(incidents: &[Value], sync: bool) -> String {
    let mut header = vec![
        "INCIDENT", "REPORTED", "CATEGORY", "SEVERITY", "STATUS", "ASSIGNEE", "NOTES",
    ];
    if sync {
        header.push("SYNC");
    }
    header.push("DESCRIPTION");
    let mut t = table(&header);
    for i in incidents {
        let mut row = vec![
            text_field(&i["id"]),
            local_field(&i["reported_at"]),
            text_field(&i["category"]),
            text_field(&i["severity"]),
            text_field(&i["status"]),
            text_field(&i["assignee"]),
            i["notes"].as_array().map_or(0, Vec::len).to_string(),
        ];
        if sync {
            row.push(incident_sync(i));
        }
        row.push(text_field(&i["description"]));
        t.add_row(row);
    }
    render(&mut t)
}

/// Whether a phone's incident reached the server: `synced`, `pending` or `refused: <why>`.
fn incident_sync(incident: &Value) -> String {
    match incident["refused"].as_str() {
        Some(why) => format!("refused: {}", shown(why)),
        None if incident["pending"] == true => "pending".to_owned(),
        None => "synced".to_owned(),
    }
}

/// One incident in full: its fields, one a line, then its notes, attachments and history (who
/// did what, when, in the reader's time zone) as tables.
pub fn incident_detail(i: &Value) -> String {
    let mut lines = vec![
        format!("incident     {}", text_field(&i["id"])),
        format!("status       {}", text_field(&i["status"])),
        format!("category     {}", text_field(&i["category"])),
        format!("severity     {}", text_field(&i["severity"])),
        format!("assignee     {}", text_field(&i["assignee"])),
        format!(
            "reported     {} by {}",
            local_field(&i["reported_at"]),
            party(&i["reported_by"])
        ),
    ];
    if i.get("updated_at").is_some() {
        lines.push(format!("updated      {}", local_field(&i["updated_at"])));
    }
    if i.get("pending").is_some() {
        lines.push(format!("sync         {}", incident_sync(i)));
    }
    lines.push(format!("description  {}", text_field(&i["description"])));
    let notes = i["notes"].as_array().cloned().unwrap_or_default();
    if !notes.is_empty() {
        let mut t = table(&["NOTE AT", "BY", "TEXT"]);
        for n in &notes {
            t.add_row(vec![
                local_field(&n["at"]),
                party(&n["by"]),
                text_field(&n["text"]),
            ]);
        }
        lines.push(String::new());
        lines.push(render(&mut t));
    }
    let attachments = i["attachments"].as_array().cloned().unwrap_or_default();
    if !attachments.is_empty() {
        let mut t = table(&["ATTACHMENT", "MEDIA TYPE", "BYTES", "SHA256"]);
        for a in &attachments {
            t.add_row(vec![
                text_field(&a["name"]),
                text_field(&a["media_type"]),
                a["size"]
                    .as_u64()
                    .map_or_else(|| NONE.to_owned(), |s| s.to_string()),
                text_field(&a["sha256"]),
            ]);
        }
        lines.push(String::new());
        lines.push(render(&mut t));
    }
    let history = i["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        let mut t = table(&["HISTORY AT", "BY", "WHAT"]);
        for h in &history {
            t.add_row(vec![
                local_field(&h["at"]),
                party(&h["by"]),
                text_field(&h["what"]),
            ]);
        }
        lines.push(String::new());
        lines.push(render(&mut t));
    }
    lines.join("\n")
}

/// A site configuration: its version and time zone, then its checkpoints, tours and post orders
/// as tables. `stored_at` is when the server stored this version (RFC 3339), if known. Tours'
/// next windows are in the site's time zone, as their schedules are written.
pub fn config(c: &SiteConfig, stored_at: Option<&str>, now_ms: i64) -> String {
    let mut lines = vec![match stored_at {
        Some(at) => format!(
            "site {} configuration version {}, time zone {}, stored {}",
            shown(c.site.as_str()),
            c.version,
            c.time_zone,
            local_text(at)
        ),
        None => format!(
            "site {} configuration version {}, time zone {}",
            shown(c.site.as_str()),
            c.version,
            c.time_zone
        ),
    }];
    let mut t = table(&[
        "CHECKPOINT",
        "NAME",
        "TAGS",
        "METHODS",
        "LOCATION",
        "RADIUS",
    ]);
    for cp in &c.checkpoints {
        t.add_row(vec![
            shown(cp.id.as_str()),
            shown(&cp.name),
            if cp.tags.is_empty() {
                NONE.to_owned()
            } else {
                shown(&cp.tags.join(", "))
            },
            if cp.methods.is_empty() {
                "any".to_owned()
            } else {
                let methods: Vec<&str> = cp.methods.iter().map(|m| m.as_str()).collect();
                methods.join(", ")
            },
            cp.location.as_ref().map_or_else(
                || NONE.to_owned(),
                |l| format!("{:.6}, {:.6}", l.lat, l.lon),
            ),
            cp.radius_m
                .map_or_else(|| NONE.to_owned(), |r| format!("{r} m")),
        ]);
    }
    lines.push(String::new());
    lines.push(render(&mut t));
    let mut t = table(&[
        "TOUR",
        "NAME",
        "CHECKPOINTS",
        "SCHEDULE",
        "NEXT WINDOW",
        "GUARDS",
    ]);
    for tour in &c.tours {
        let cps: Vec<&str> = tour.checkpoints.iter().map(|c| c.as_str()).collect();
        // An ordered tour's arrows say so.
        let arrow = if tour.ordered { " -> " } else { ", " };
        let guards: Vec<String> = tour
            .assigned_guards
            .iter()
            .map(ToString::to_string)
            .collect();
        let next = tour.next_window(c.time_zone, now_ms).map_or_else(
            || NONE.to_owned(),
            |w| {
                format!(
                    "{} to {}",
                    site_ms(c.time_zone, w.start_ms),
                    site_ms(c.time_zone, w.end_ms)
                )
            },
        );
        t.add_row(vec![
            shown(&tour.id),
            shown(&tour.name),
            shown(&cps.join(arrow)),
            tour.schedule_words(),
            next,
            if guards.is_empty() {
                "any".to_owned()
            } else {
                shown(&guards.join(", "))
            },
        ]);
    }
    lines.push(String::new());
    lines.push(render(&mut t));
    let r = &c.rules;
    lines.push(String::new());
    lines.push(format!(
        // The site's thresholds as configured; the server applies them as its flag and
        // compliance work lands (docs/protocol.md, "Site configuration").
        "site thresholds: clock skew {} s; padding {} min; speed {} km/h; cloned tag {} s; no \
         contact {} min; shift overdue {} h; windows final {} h after their end; alarms \
         escalated {} s unacknowledged",
        r.clock_skew_threshold_secs,
        r.padding_within_min,
        r.max_speed_kmh,
        r.cloned_tag_within_secs,
        r.no_contact_after_min,
        r.shift_overdue_after_hours,
        r.finalise_after_hours,
        r.alarm_escalation_after_secs
    ));
    if !c.post_orders.is_empty() {
        let mut t = table(&["POST ORDER", "TITLE", "TEXT"]);
        for p in &c.post_orders {
            t.add_row(vec![shown(&p.id), shown(&p.title), shown(&p.text)]);
        }
        lines.push(String::new());
        lines.push(render(&mut t));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_that_is_not_rfc3339_is_shown_as_it_is() {
        assert_eq!(local_text("soon\x1b[2J"), "soon");
        assert_eq!(local_field(&Value::Null), NONE);
    }
}
