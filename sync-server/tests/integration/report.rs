//! The daily activity report on every backend: a scripted night of two guards (one whose phone
//! clock is 3 hours slow), checked against what was worked out by hand; its CSV tables and
//! PDF text; the same record giving the same bytes; and who may download it.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::NaiveDate;
use patrol_core::incident::{Entry, IncidentDoc, Party, Stamped};
use patrol_core::merge::plan_incident_push;
use patrol_core::{EventBody, GuardId, Hlc, IncidentCategory, IncidentId, Severity};
use patrol_server::report::tours::CheckpointStatus;
use patrol_server::report::{self, Dar, DarRequest};
use serde_json::json;

use crate::common::{Backend, Phone, SITE, TestResult, TestServer, crate_now_ms, scan_of, site};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// 2025-03-01 in London (GMT, +00:00).
const DAY_START: i64 = 1_740_787_200_000;

/// `hh:mm` on 2025-03-01 (later than 24:00: the next day), in ms.
fn at(hour: i64, minute: i64) -> i64 {
    DAY_START + hour * HOUR + minute * MINUTE
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 1).unwrap_or_default()
}

/// Syncs what the phone has not delivered (and `incident`, if given) in a request stamped with
/// its clock, `skew_ms` off the true time.
async fn sync(
    server: &TestServer,
    phone: &mut Phone,
    skew_ms: i64,
    incident: Option<&mut IncidentDoc>,
) -> TestResult {
    let mut docs = vec![phone.push()?];
    if let Some(doc) = incident {
        docs.push(plan_incident_push(doc, &[])?);
    }
    let mut request = phone.request(docs);
    request.device_time_ms = crate_now_ms() + skew_ms;
    let response = server.sync(&request).await?;
    phone.on_accepted(&response.docs[0].outcome);
    Ok(())
}

/// What the night holds, for the checks.
struct Night {
    server: TestServer,
    ben_shift: patrol_core::ShiftId,
    incident: IncidentId,
}

/// The site in London with one tour, "Night round", at 22:00 and 23:00 for 30 minutes with 15
/// minutes' grace over cp-1..cp-3; anna on duty from 22:01 (a late scan, a note, a panic the
/// control room acknowledges, a handover and her shift's end), ben from 22:01 with a phone 3
/// hours slow (two scans, cp-3 missed, an incident, and a note of the day after that the
/// report must leave out).
async fn night(backend: Backend) -> Result<Night, Box<dyn std::error::Error>> {
    let server = TestServer::new(backend).await?;
    let (status, answer) = server
        .send_json(
            "PUT",
            &format!("/api/v1/sites/{SITE}/config"),
            &json!({
                "base_version": 0,
                "time_zone": "Europe/London",
                "checkpoints": [
                    {"id": "cp-1", "name": "Ramp entrance", "tags": ["tag-cp-1"]},
                    {"id": "cp-2", "name": "Pay station", "tags": ["tag-cp-2"]},
                    {"id": "cp-3", "name": "Bay 14", "tags": ["tag-cp-3"]}
                ],
                "tours": [{"id": "night", "name": "Night round", "grace_min": 15,
                           "schedule": [{"at": ["22:00", "23:00"], "window_min": 30}],
                           "checkpoints": ["cp-1", "cp-2", "cp-3"]}],
                "post_orders": []
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let mut anna = Phone::new(server.enroll_on(SITE).await?, "anna")?;
    anna.record_at(at(22, 5), scan_of("cp-1")?)?;
    anna.record_at(at(22, 10), scan_of("cp-2")?)?;
    anna.record_at(
        at(22, 20),
        EventBody::Note {
            text: "fire door B2 propped open".into(),
        },
    )?;
    anna.record_at(at(22, 40), scan_of("cp-3")?)?;
    let panic = anna.record_at(at(22, 50), EventBody::Panic { location: None })?;
    anna.record_at(
        at(23, 55),
        EventBody::Handover {
            to_guard: Some(GuardId::new("ben")?),
            text: "B2 door reported to estates".into(),
        },
    )?;
    anna.record_at(
        at(23, 58),
        EventBody::ShiftEnded {
            note: Some("quiet night".into()),
        },
    )?;
    sync(&server, &mut anna, 0, None).await?;

    // Ben's phone is 3 hours slow: its times are 3 hours behind, and so is the clock it syncs
    // with; the server corrects them back and flags them.
    let slow = -3 * HOUR;
    let mut ben = Phone::new_at(server.enroll_on(SITE).await?, "ben", slow)?;
    ben.record_at(at(23, 5), scan_of("cp-1")?)?;
    ben.record_at(at(23, 10), scan_of("cp-2")?)?;
    let incident_id = IncidentId::generate();
    let reported_ms = at(23, 20) + slow;
    ben.record_at(
        at(23, 20),
        EventBody::IncidentReported(patrol_core::IncidentReport {
            incident: incident_id,
            category: IncidentCategory::Fire,
            severity: Severity::High,
            description: "smoke in plant room 2".into(),
            location: None,
        }),
    )?;
    // The next day: not in this report.
    ben.record_at(
        at(24, 20),
        EventBody::Note {
            text: "after midnight".into(),
        },
    )?;
    let (mut incident, _) = IncidentDoc::create(
        incident_id,
        ben.device.actor_id(),
        Stamped {
            by: Party::Guard {
                device: ben.device,
                guard: GuardId::new("ben")?,
            },
            at: Hlc {
                wall_ms: reported_ms as u64,
                counter: 0,
            },
            // The phone's own (slow) clock, as its history shows it.
            wall_ms: reported_ms,
            entry: Entry::Reported {
                site: site(),
                category: IncidentCategory::Fire,
                severity: Severity::High,
                description: "smoke in plant room 2".into(),
                location: None,
            },
        },
    )?;
    sync(&server, &mut ben, slow, Some(&mut incident)).await?;

    // The control room: the panic and the incident acknowledged.
    let (status, ack) = server
        .send_json(
            "POST",
            &format!("/api/v1/sites/{SITE}/alarms/{panic}/acknowledge"),
            &json!({"by": "op-carol"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let (status, acted) = server
        .send_json(
            "POST",
            &format!("/api/v1/sites/{SITE}/incidents/{incident_id}/actions"),
            &json!({"action": "acknowledge", "by": "op-carol"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{acted}");
    Ok(Night {
        server,
        ben_shift: ben.shift(),
        incident: incident_id,
    })
}

async fn dar(
    night: &Night,
    shift: Option<patrol_core::ShiftId>,
) -> Result<Dar, report::ReportError> {
    report::build(
        night.server.store().as_ref(),
        DarRequest {
            site: site(),
            date: date(),
            shift,
            now_ms: crate_now_ms(),
        },
    )
    .await
}

/// Guard, start and end (to the minute), events, scans.
type GuardRow = (String, Option<i64>, Option<i64>, u64, u64);
/// Checkpoint, status, guard of the scan that counted.
type CheckpointRow<'a> = (&'a str, CheckpointStatus, Option<String>);

/// The night's report, worked out by hand: on every backend the same guards, windows,
/// checkpoint statuses, incident, alarm, notes and anomalies.
async fn the_report_of_a_night_is_what_happened(backend: Backend) -> TestResult {
    let night = night(backend).await?;
    let dar = dar(&night, None).await?;
    assert_eq!((dar.from_ms, dar.to_ms), (at(0, 0), at(24, 0)));
    // The day is over and so is the finalisation deadline of its last window (the 23:00-23:30
    // round, 6 hours on): as of that deadline, whatever the clock says.
    assert_eq!(dar.as_of_ms, at(29, 30));

    let mut guards: Vec<GuardRow> = dar
        .guards
        .iter()
        .map(|g| {
            (
                g.guard.to_string(),
                g.started_ms.map(|t| t / MINUTE * MINUTE),
                g.ended_ms.map(|t| t / MINUTE * MINUTE),
                g.events,
                g.scans,
            )
        })
        .collect();
    guards.sort();
    // Started at 22:01 both; ben's 5th event is the next day's.
    assert_eq!(
        guards,
        [
            ("anna".to_owned(), Some(at(22, 1)), Some(at(23, 58)), 8, 3),
            ("ben".to_owned(), Some(at(22, 1)), None, 4, 2),
        ]
    );
    let end_notes: Vec<Option<&str>> = dar.guards.iter().map(|g| g.end_note.as_deref()).collect();
    assert!(end_notes.contains(&Some("quiet night")), "{end_notes:?}");
    assert_eq!(dar.handovers.len(), 1);
    assert_eq!(
        dar.handovers[0].to_guard.as_ref().map(ToString::to_string),
        Some("ben".into())
    );

    let windows: Vec<(i64, Vec<CheckpointRow<'_>>)> = dar
        .tours
        .windows
        .iter()
        .map(|w| {
            assert!(w.is_final, "every window is past its deadline, so final");
            (
                w.start_ms,
                w.checkpoints
                    .iter()
                    .map(|c| {
                        (
                            c.checkpoint.as_str(),
                            c.status,
                            c.guard.as_ref().map(ToString::to_string),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    use CheckpointStatus::*;
    let anna = || Some("anna".to_owned());
    let ben = || Some("ben".to_owned());
    assert_eq!(
        windows,
        [
            (
                at(22, 0),
                vec![
                    ("cp-1", OnTime, anna()),
                    ("cp-2", OnTime, anna()),
                    ("cp-3", Late, anna())
                ]
            ),
            (
                at(23, 0),
                vec![
                    ("cp-1", OnTime, ben()),
                    ("cp-2", OnTime, ben()),
                    ("cp-3", Missed, None)
                ]
            ),
        ]
    );
    assert_eq!(dar.tours.totals().percent_if_any(), Some(83));
    // Rounded down, as the windows API gives it: 2 of 3 is 66%.
    assert_eq!(dar.tours.windows[1].counts().percent_if_any(), Some(66));

    assert_eq!(dar.incidents.len(), 1);
    let incident = &dar.incidents[0];
    assert_eq!(incident.id, night.incident);
    assert_eq!(incident.status, "acknowledged");
    assert_eq!(
        incident.description.as_deref(),
        Some("smoke in plant room 2")
    );
    let who: Vec<(&str, &str)> = incident
        .history
        .iter()
        .map(|h| (h.by.as_str(), h.action.as_str()))
        .collect();
    assert_eq!(
        who,
        [("ben", "reported"), ("op-carol (control room)", "status")]
    );

    assert_eq!(dar.alarms.len(), 1);
    let alarm = &dar.alarms[0];
    assert_eq!(alarm.guard.as_str(), "anna");
    assert_eq!(alarm.raised_ms / MINUTE * MINUTE, at(22, 50));
    assert!(alarm.received_ms >= alarm.raised_ms);
    assert_eq!(alarm.acknowledged_by.as_deref(), Some("op-carol"));
    assert!(alarm.acknowledged_ms.is_some());

    let notes: Vec<&str> = dar.notes.iter().map(|n| n.text.as_str()).collect();
    assert_eq!(notes, ["fire door B2 propped open"]);

    // Every event of ben's, flagged for his clock; none of anna's.
    assert_eq!(dar.anomalies.len(), 4);
    for a in &dar.anomalies {
        assert_eq!(a.guard.as_str(), "ben");
        assert_eq!(a.flags[0].0, "clock_skew");
        assert!(
            a.flags[0].1.starts_with("clock 3 h 0 min slow"),
            "{:?}",
            a.flags
        );
    }
    Ok(())
}

/// One shift's report: that guard alone, the day's windows the shift overlaps, its incident,
/// nothing of the other guard's.
async fn one_shift_has_its_own_report(backend: Backend) -> TestResult {
    let night = night(backend).await?;
    let shift = dar(&night, Some(night.ben_shift)).await?;
    let guards: Vec<&str> = shift.guards.iter().map(|g| g.guard.as_str()).collect();
    assert_eq!(guards, ["ben"]);
    assert!(shift.notes.is_empty() && shift.alarms.is_empty() && shift.handovers.is_empty());
    assert_eq!(shift.incidents.len(), 1);
    assert_eq!(shift.tours.windows.len(), 2);
    assert_eq!(shift.anomalies.len(), 4);
    let unknown = patrol_core::ShiftId::generate();
    assert!(matches!(
        dar(&night, Some(unknown)).await,
        Err(report::ReportError::UnknownShift { .. })
    ));
    Ok(())
}

/// The CSV: one table per section with its documented columns, the night's rows in them; the
/// same record renders the same bytes, as CSV and as PDF.
async fn the_csv_holds_one_table_per_section(backend: Backend) -> TestResult {
    let night = night(backend).await?;
    let first = dar(&night, None).await?;
    let csv = report::csv::render(&first)?;
    let text = String::from_utf8(csv.clone())?;
    let tables: Vec<&str> = text.split("\r\n\r\n").filter(|t| !t.is_empty()).collect();
    assert_eq!(tables.len(), report::csv::SECTIONS.len(), "{text}");
    for (table, (name, columns)) in tables.iter().zip(report::csv::SECTIONS) {
        let mut reader = csv::ReaderBuilder::new().from_reader(table.as_bytes());
        let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
        let expected: Vec<String> = std::iter::once("section")
            .chain(columns.iter().copied())
            .map(str::to_owned)
            .collect();
        assert_eq!(header, expected, "{name}");
        for row in reader.records() {
            assert_eq!(&row?[0], *name);
        }
    }
    let rows = |section: &str| -> Vec<Vec<String>> {
        let table = report::csv::SECTIONS
            .iter()
            .position(|(name, _)| *name == section)
            .map_or("", |i| tables[i]);
        csv::ReaderBuilder::new()
            .from_reader(table.as_bytes())
            .records()
            .filter_map(Result::ok)
            .map(|r| r.iter().map(str::to_owned).collect())
            .collect()
    };
    let windows = rows("tour_windows");
    let cells: Vec<[&str; 5]> = windows
        .iter()
        .map(|r| {
            [
                r[3].as_str(),
                r[6].as_str(),
                r[7].as_str(),
                r[11].as_str(),
                r[13].as_str(),
            ]
        })
        .collect();
    assert_eq!(
        cells,
        [
            [
                "2025-03-01T22:00:00+00:00",
                "complete_late",
                "true",
                "0",
                "100"
            ],
            ["2025-03-01T23:00:00+00:00", "incomplete", "true", "1", "66"],
        ]
    );
    let missed: Vec<(String, String)> = rows("tour_checkpoints")
        .into_iter()
        .filter(|r| r[5] != "on_time")
        .map(|r| (r[3].clone(), r[5].clone()))
        .collect();
    assert_eq!(
        missed,
        [
            ("cp-3".to_owned(), "late".to_owned()),
            ("cp-3".into(), "missed".into())
        ]
    );
    let report = rows("report");
    assert_eq!(
        &report[0][1..8],
        [
            SITE,
            "Test site",
            "2025-03-01",
            "Europe/London",
            "2025-03-01T00:00:00+00:00",
            "2025-03-02T00:00:00+00:00",
            "2025-03-02T05:30:00+00:00"
        ]
    );
    let notes = rows("notes");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0][2], "anna");
    assert_eq!(notes[0][3], "fire door B2 propped open");

    // Built again from the store and rendered again: the same bytes.
    let second = dar(&night, None).await?;
    assert_eq!(report::csv::render(&second)?, csv);
    assert_eq!(report::pdf::render(&second)?, report::pdf::render(&first)?);
    Ok(())
}

/// Asked for at 23:40, while the 23:00 round's grace runs, the report is as of then: that round
/// is provisional, its cp-3 overdue rather than missed (Ben may still scan it), and the CSV and
/// the PDF say so; the 22:00 round's grace is over, but no pass has made it final and its
/// deadline is hours away, so it is provisional too.
async fn a_report_before_the_rounds_are_final_marks_them_provisional(
    backend: Backend,
) -> TestResult {
    let night = night(backend).await?;
    let dar = report::build(
        night.server.store().as_ref(),
        DarRequest {
            site: site(),
            date: date(),
            shift: None,
            now_ms: at(23, 40),
        },
    )
    .await?;
    assert_eq!(dar.as_of_ms, at(23, 40));
    let rounds: Vec<(i64, bool, Vec<CheckpointStatus>)> = dar
        .tours
        .windows
        .iter()
        .map(|w| {
            (
                w.start_ms,
                w.is_final,
                w.checkpoints.iter().map(|c| c.status).collect(),
            )
        })
        .collect();
    use CheckpointStatus::*;
    assert_eq!(
        rounds,
        [
            (at(22, 0), false, vec![OnTime, OnTime, Late]),
            (at(23, 0), false, vec![OnTime, OnTime, Overdue]),
        ]
    );
    let csv = String::from_utf8(report::csv::render(&dar)?)?;
    assert!(
        csv.contains("tour_windows,night,Night round,2025-03-01T23:00:00+00:00"),
        "{csv}"
    );
    let row = csv
        .lines()
        .find(|l| l.starts_with("tour_windows,night,Night round,2025-03-01T23:00:00"))
        .ok_or("no row of the 23:00 round")?;
    assert!(row.contains(",false,"), "{row}");
    assert!(csv.contains(",overdue,"), "{csv}");
    let text = pdf_text(&report::pdf::render(&dar)?)?;
    assert!(text.contains("provisional"), "{text}");
    assert!(
        text.contains("Windows marked provisional are not final yet"),
        "{text}"
    );
    assert!(text.contains("overdue (in grace)"), "{text}");
    Ok(())
}

/// The day's read (`Store::events_between`), in pages of two: every event whose corrected time
/// is in the day, once, in seq order, whichever log and hour it came in (a later log with an
/// event in an hour already written included), and none of the day before or after.
async fn a_days_events_are_read_in_pages_once_each(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let note = |text: &str| EventBody::Note { text: text.into() };
    let mut anna = Phone::new(server.enroll_on(SITE).await?, "anna")?;
    let mut ben = Phone::new(server.enroll_on(SITE).await?, "ben")?;
    let mut expected = vec![anna.recorded[0], ben.recorded[0]];
    anna.record_at(at(-1, 50), note("the day before"))?;
    expected.push(anna.record_at(at(0, 10), note("00:10"))?);
    expected.push(anna.record_at(at(5, 30), note("05:30"))?);
    sync(&server, &mut anna, 0, None).await?;
    expected.push(ben.record_at(at(23, 59), note("23:59"))?);
    ben.record_at(at(24, 5), note("the day after"))?;
    sync(&server, &mut ben, 0, None).await?;
    expected.push(anna.record_at(at(3, 0), note("03:00, late"))?);
    sync(&server, &mut anna, 0, None).await?;

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .events_between(site(), at(0, 0), at(24, 0), cursor, 2)
            .await?
            .ok_or("no site")?;
        assert!(page.events.len() <= 2);
        for (seq, json) in &page.events {
            let event: serde_json::Value = serde_json::from_str(json)?;
            seen.push((*seq, event["id"].as_str().unwrap_or_default().to_owned()));
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    let mut ids: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    let mut expected: Vec<String> = expected.iter().map(ToString::to_string).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        store
            .events_between(patrol_core::SiteId::new("nowhere")?, 0, 1, None, 2)
            .await?
            .is_none()
    );
    Ok(())
}

crate::on_every_backend!(
    a_days_events_are_read_in_pages_once_each,
    a_report_before_the_rounds_are_final_marks_them_provisional,
    the_report_of_a_night_is_what_happened,
    one_shift_has_its_own_report,
    the_csv_holds_one_table_per_section,
);

/// The text `pdftotext` (poppler-utils) extracts from `pdf`.
pub fn pdf_text(pdf: &[u8]) -> Result<String, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dar.pdf");
    std::fs::write(&path, pdf)?;
    let out = std::process::Command::new("pdftotext")
        .args(["-layout"])
        .arg(&path)
        .arg("-")
        .output()
        .map_err(|e| format!("pdftotext (poppler-utils) is needed: {e}"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The PDF's text, as a reader extracts it, holds the guards, the windows, the incident and
/// the alarm.
#[tokio::test]
async fn the_pdf_text_holds_the_night() -> TestResult {
    let night = night(Backend::sqlite()?).await?;
    let pdf = report::pdf::render(&dar(&night, None).await?)?;
    assert!(pdf.starts_with(b"%PDF-"));
    // scripts/dar-sample.sh keeps this PDF to draw docs/reports.md's picture of it.
    if let Some(path) = std::env::var_os("PATROL_DAR_SAMPLE") {
        std::fs::write(path, &pdf)?;
    }
    let text = pdf_text(&pdf)?;
    for expected in [
        "Daily activity report",
        "Test site (site-1)",
        "Guards on duty",
        "anna",
        "ben",
        "quiet night",
        "Night round",
        "22:00:00 +00:00 to 22:30:00 +00:00",
        "complete, late",
        "incomplete",
        "Bay 14",
        "missed",
        "smoke in plant room 2",
        "op-carol (control room)",
        "Panic alarms",
        "fire door B2 propped open",
        "clock 3 h 0 min slow",
        "page 1 of",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    Ok(())
}

/// The API serves both formats with their type and file name to the site's operators and to
/// administrators; an operator of another site is refused, and a bad date or format is a 400
/// that says what was wrong.
#[tokio::test]
async fn the_report_is_served_to_the_site_only() -> TestResult {
    let night = night(Backend::sqlite()?).await?;
    let server = &night.server;
    let (status, _) = server
        .post_json(&server.admin, "/api/v1/sites", json!({"site_id": "mall-2"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let mut tokens = Vec::new();
    for (name, site) in [("op-here", SITE), ("op-elsewhere", "mall-2")] {
        let (status, user) = server
            .post_json(
                &server.admin,
                "/api/v1/users",
                json!({"name": name, "role": "operator", "sites": [site]}),
            )
            .await?;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        tokens.push(user["token"].as_str().ok_or("no token")?.to_owned());
    }
    let get = |token: &str, query: &str| {
        Request::get(format!("/api/v1/sites/{SITE}/reports/dar?{query}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
    };
    for (format, media_type) in [
        ("csv", "text/csv; charset=utf-8"),
        ("pdf", "application/pdf"),
    ] {
        for token in [&tokens[0], &server.admin] {
            let resp = tower::ServiceExt::oneshot(
                patrol_server::router(server.state.clone()),
                get(token, &format!("date=2025-03-01&format={format}"))?,
            )
            .await?;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], media_type);
            assert_eq!(
                resp.headers()[header::CONTENT_DISPOSITION],
                format!("attachment; filename=\"dar-site-1-2025-03-01.{format}\"").as_str()
            );
        }
    }
    let (status, _, body) = server
        .call(get(&tokens[1], "date=2025-03-01&format=pdf")?)
        .await?;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    for (query, words) in [
        ("date=2025-02-30&format=pdf", "YYYY-MM-DD"),
        ("date=2025-03-01&format=xlsx", "csv or pdf"),
        ("format=pdf", "date is required"),
        ("date=2025-03-01&format=csv&shift=x", "shift id"),
    ] {
        let (status, _, body) = server.call(get(&server.admin, query)?).await?;
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert_eq!(answer["error"], "invalid_query");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(words)),
            "{query}: {answer}"
        );
    }
    let unknown = patrol_core::ShiftId::generate();
    let (status, _, _) = server
        .call(get(
            &server.admin,
            &format!("date=2025-03-01&format=csv&shift={unknown}"),
        )?)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}
