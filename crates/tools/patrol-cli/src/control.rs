//! `patrol control`: the control room and administrators, through the server's API with a
//! user token. Listings print a table, or with `--json` one JSON document: the API's answer
//! (for `pull`, the pages pulled as one page), with the fields docs/cli.md lists.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use patrol_core::flags::EventFlag;
use patrol_core::siteconfig::{SiteConfig, SiteZone};
use patrol_core::{DeviceId, EventId, GuardId, IncidentId, Severity, ShiftId, SiteId};
use patrol_mobile::sync::DEFAULT_TIMEOUT;
use serde_json::{Value, json};

use crate::show::{self, NONE, local_field, local_text, text_field};
use crate::{JsonArg, TransportArgs};
use patrol_term::shown;

#[derive(Args, Debug)]
pub struct ControlArgs {
    /// The patrol server, e.g. http://127.0.0.1:8080 (or set PATROL_SERVER).
    #[arg(long, env = "PATROL_SERVER")]
    server: Option<String>,
    /// A user token (pu_…), from `patrol-server admin create` or an administrator (or set
    /// PATROL_TOKEN, which keeps it out of the shell's history and the process list).
    #[arg(long, env = "PATROL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(subcommand)]
    command: ControlCommand,
}

#[derive(Subcommand, Debug)]
enum ControlCommand {
    /// Pull the merged site log in canonical order (all of it, or what follows a cursor).
    Pull {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Start after this server sequence number (the cursor a previous pull ended at).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Events per request to the server.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Also show each event's own device time and when the server received it, beside
        /// its corrected time.
        #[arg(long)]
        wide: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the site's devices: guard, open shift, enrollment, last sync, pending events and
    /// when reported, clock skew, state, warnings (no contact for a while on shift, a shift open
    /// too long), public key.
    Devices {
        /// The site.
        #[arg(long)]
        site: SiteId,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the site's shifts (in the order their phones started them): guard, device, start,
    /// end, events, whether the end was delivered and the log signed; the SHIFT column is what
    /// `export-shift-log --shift` takes.
    Shifts {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Only this guard's shifts.
        #[arg(long)]
        guard: Option<GuardId>,
        /// Only this device's shifts (its id, as `devices` lists it).
        #[arg(long)]
        device: Option<DeviceId>,
        /// Only shifts still open (whose end has not reached the server).
        #[arg(long)]
        open: bool,
        /// Only shifts that started at or after this time (RFC 3339, e.g. 2026-12-06T18:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Only shifts that started before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Tour compliance of a date: each window of the site's tours (of the nights starting on
    /// that date, in the site's time zone), each checkpoint's state (done, done late, missed;
    /// upcoming, due or late while it may still come), the time and guard of the scan that
    /// counted, the window's share done, and whether it is FINAL or provisional; then the
    /// amendments made to final windows.
    Tours {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The date, YYYY-MM-DD, in the site's time zone (a night belongs to the date it starts
        /// on).
        #[arg(long)]
        date: chrono::NaiveDate,
        /// Only this tour (its id, as the site's configuration names it).
        #[arg(long)]
        tour: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Export a shift log with the device's signatures, as evidence `patrol verify` checks.
    ExportShiftLog {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The shift id (printed by `patrol device shift start` and `shift end`; the
        /// `shift_id` of its events).
        #[arg(long)]
        shift: ShiftId,
        /// Where to write the export (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// List the site's incidents (newest first), or show one in full.
    Incidents {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Show only this incident (its id), with its notes and attachments.
        incident: Option<IncidentId>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// The files attached to a site's incidents (or one incident's): hash, type, size, name
    /// and whether the phone has uploaded them yet.
    Attachments {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Only this incident's.
        #[arg(long, conflicts_with = "note")]
        incident: Option<IncidentId>,
        /// Only this note's (the note's event id).
        #[arg(long)]
        note: Option<EventId>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// One attachment's bytes.
    Attachment {
        #[command(subcommand)]
        command: AttachmentCommand,
    },
    /// Act on an incident: acknowledge, dispatch, resolve, close, reopen, assign (--to),
    /// set_severity (--severity) or add_note (--text); shows the incident after.
    IncidentAction {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The incident id.
        incident: IncidentId,
        /// acknowledge, dispatch, resolve, close, reopen, assign, set_severity or add_note.
        action: String,
        /// With assign: the guard or operator to assign to.
        #[arg(long)]
        to: Option<String>,
        /// With set_severity: low, medium, high or critical.
        #[arg(long)]
        severity: Option<Severity>,
        /// With add_note: the note's text.
        #[arg(long)]
        text: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show the site configuration, or replace it with a JSON file
    /// ({"base_version", "checkpoints", "tours", "post_orders"}; see docs/protocol.md).
    Config {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Replace the configuration with this JSON file (administrators).
        #[arg(long, value_name = "FILE")]
        set: Option<PathBuf>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the site's panic alarms, the latest first: guard, device, when raised (by the
    /// phone's corrected clock), received and acknowledged; the ALARM column is what
    /// `ack-alarm` takes.
    Alarms {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Only the alarms nobody has acknowledged yet.
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// The lone-worker check-in timers running on the site's open shifts: when each guard's
    /// next check-in is due, and which are overdue.
    CheckIns {
        /// The site.
        #[arg(long)]
        site: SiteId,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Acknowledge a guard's panic alarm (its event id, as `alarms` and `pull` show it); the
    /// phone shows it at its next sync.
    AckAlarm {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The panic's event id.
        event: EventId,
    },
    /// Issue a one-time code that enrolls one phone on a site (administrators); prints the code
    /// alone on stdout and when it expires on stderr.
    EnrollmentCode {
        /// The site the phone will belong to.
        #[arg(long)]
        site: SiteId,
        /// Lifetime in seconds (the server's default, a day, if not given).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Revoke a device: its syncs are refused from then on (administrators).
    RevokeDevice {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The device id (`patrol control devices` lists them).
        device: String,
    },
    /// Reports for a site's client.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Manage users (administrators, within their sites).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Your own user token.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// A site's webhook endpoints and their deliveries (administrators of the site;
    /// docs/operations.md, "Webhooks").
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Register an endpoint for some event types; prints its signing secret alone on stdout,
    /// once (with --json, the API's answer, which holds it).
    Add {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Where deliveries are POSTed (http:// or https://).
        #[arg(long)]
        url: String,
        /// Event types, comma-separated: panic.raised, panic.unacknowledged, incident.created,
        /// incident.changed, window.missed, device.silent, checkin.overdue.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the site's endpoints.
    List {
        /// The site.
        #[arg(long)]
        site: SiteId,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Remove an endpoint, with its deliveries (those not sent are not sent).
    Remove {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The endpoint's id (`webhook list` shows it).
        id: i64,
    },
    /// List the site's latest deliveries with their attempts.
    Deliveries {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// Only the parked ones (given up on after the retry limit).
        #[arg(long)]
        parked: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Re-queue a parked delivery: tried again at once, its attempts counted afresh.
    Retry {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The delivery's id (`webhook deliveries` shows it).
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
enum AttachmentCommand {
    /// Download an attachment (by its SHA-256) into a file (`-`: standard output); prints the
    /// file's path.
    Get {
        /// The site whose incident references it.
        #[arg(long)]
        site: SiteId,
        /// The attachment's SHA-256 (64 hex digits), as `patrol control attachments` lists it.
        sha256: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ReportCommand {
    /// Download the daily activity report of a site's local day (or of one shift's part of
    /// it) as PDF or CSV; writes the file and prints its path (docs/reports.md).
    Dar {
        /// The site.
        #[arg(long)]
        site: SiteId,
        /// The local date in the site's time zone, YYYY-MM-DD.
        #[arg(long)]
        date: chrono::NaiveDate,
        /// pdf or csv.
        #[arg(long, value_parser = ["pdf", "csv"])]
        format: String,
        /// The file to write; `-` writes the report to standard output.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Only this shift's part of the day (its id, as `patrol control shifts` lists it).
        #[arg(long)]
        shift: Option<ShiftId>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Show who the token belongs to and when it expires.
    Show,
    /// Replace your token with a new one (fresh expiry), printed alone on stdout, once; the old
    /// one keeps working for the server's overlap (10 minutes by default) so that programs
    /// using it can switch, then stops.
    Rotate,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user; prints its token alone on stdout, once.
    Create {
        /// The user's name (unique; how they are shown and assigned).
        name: String,
        /// admin or operator.
        #[arg(long)]
        role: String,
        /// A site the user covers (repeatable).
        #[arg(long = "site")]
        sites: Vec<SiteId>,
        /// Cover all sites (administrators only).
        #[arg(long, conflicts_with = "sites")]
        all_sites: bool,
        /// Also give the user a password to sign in to the console with, read as one line from
        /// standard input (at least 12 characters).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a password to sign in to the console with, read from standard input. With a user
    /// (an administrator, for a user it manages): one line, the new password; all the user's
    /// sign-in sessions end. Without: your own, two lines, your current password (an empty
    /// line if you have none yet) then the new one; your other sessions end.
    Password {
        /// The user's id or name; without it, your own password.
        user: Option<String>,
        /// Read the password(s) from standard input (the only way: never an argument, which
        /// other users of the machine could see).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the users you manage.
    List(JsonArg),
    /// Revoke a user's token.
    Revoke {
        /// The user's id or name.
        user: String,
    },
    /// Give a user a new token, printed alone on stdout, once, for one who lost theirs or let it
    /// expire; the old one stops at once.
    Token {
        /// The user's id or name.
        user: String,
    },
}

/// The control room's HTTP client: every request presents the user's token.
#[derive(Debug)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        answer(self.authorized(self.http.get(&url)), &url).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        answer(self.authorized(self.http.post(&url).json(&body)), &url).await
    }

    async fn put(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        answer(self.authorized(self.http.put(&url).json(&body)), &url).await
    }

    /// A DELETE, which answers no body when it succeeds.
    async fn delete(&self, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.base);
        no_content(self.authorized(self.http.delete(&url)), &url).await
    }

    /// A PUT that answers no body when it succeeds (204).
    async fn put_no_content(&self, path: &str, body: Value) -> Result<()> {
        let url = format!("{}{path}", self.base);
        no_content(self.authorized(self.http.put(&url).json(&body)), &url).await
    }

    /// The body of a GET that answers a file (a report), not JSON.
    async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .authorized(self.http.get(&url))
            .send()
            .await
            .with_context(|| url.clone())?;
        if !resp.status().is_success() {
            // An error answers the usual JSON body.
            return answer_of(resp, &url).await.map(|_| Vec::new());
        }
        Ok(resp
            .bytes()
            .await
            .with_context(|| format!("reading {url}"))?
            .to_vec())
    }

    /// With the token; an empty one is left out, so that the server says none was given.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            request
        } else {
            request.bearer_auth(&self.token)
        }
    }

    /// The id of the one user whose id, else name, is `given` (as `patrol-server user revoke`
    /// takes it), with the user's name.
    async fn user(&self, given: &str) -> Result<(String, String)> {
        let body = self.get("/api/v1/users").await?;
        let users = body["users"].as_array().cloned().unwrap_or_default();
        let pick =
            |field: &str| -> Vec<&Value> { users.iter().filter(|u| u[field] == given).collect() };
        let by_id = pick("id");
        let found = if by_id.is_empty() {
            pick("name")
        } else {
            by_id
        };
        match found.as_slice() {
            [user] => Ok((
                user["id"].as_str().unwrap_or_default().to_owned(),
                user["name"].as_str().unwrap_or_default().to_owned(),
            )),
            [] => bail!(
                "no user with id or name {:?} among the users you manage; `patrol control user \
                 list` lists them",
                shown(given)
            ),
            _ => bail!(
                "{} users are named {:?}; give the id (`patrol control user list`)",
                found.len(),
                shown(given)
            ),
        }
    }
}

async fn answer(request: reqwest::RequestBuilder, url: &str) -> Result<Value> {
    let resp = request.send().await.with_context(|| url.to_owned())?;
    answer_of(resp, url).await
}

/// Sends a request whose success answers no body; the error its message says otherwise.
async fn no_content(request: reqwest::RequestBuilder, url: &str) -> Result<()> {
    let resp = request.send().await.with_context(|| url.to_owned())?;
    if resp.status().is_success() {
        return Ok(());
    }
    answer_of(resp, url).await.map(drop)
}

/// One line from standard input, its line break dropped (a password: never an argument).
fn stdin_line(what: &str) -> Result<String> {
    let mut line = String::new();
    let read = std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("cannot read {what} from standard input"))?;
    if read == 0 {
        bail!("standard input ended before {what}");
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// A response's JSON body, or the error its message says.
async fn answer_of(resp: reqwest::Response, url: &str) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        let msg = body
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message");
        bail!("server answered {status}: {msg}");
    }
    Ok(body)
}

/// One line about a pulled event, from its JSON fields, for the DETAIL column.
fn feed_detail(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    match e["kind"].as_str().unwrap_or("") {
        "checkpoint_scanned" => {
            let method = e["method"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .or_else(|| e["method"].as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{} ({method})", s("checkpoint"))
        }
        "incident_reported" => {
            format!("{}, {}: {}", s("category"), s("severity"), s("description"))
        }
        // What the operator does next, with the id it needs.
        "panic" => format!("PANIC  ack-alarm {}", s("id")),
        "note" => {
            show::note_with_files(&s("text"), e["attachments"].as_array().map_or(0, Vec::len))
        }
        "handover" => s("text"),
        "shift_ended" => s("note"),
        _ => String::new(),
    }
}

/// A pulled event's flags in words, `; ` between them; a flag this patrol does not know (from
/// a newer server) by its name.
fn feed_flags(e: &Value) -> String {
    let flags: Vec<String> = e["flags"]
        .as_array()
        .map(|flags| {
            flags
                .iter()
                .map(|f| match serde_json::from_value::<EventFlag>(f.clone()) {
                    Ok(flag) => flag.to_string(),
                    Err(_) => f["flag"].as_str().unwrap_or("?").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    if flags.is_empty() {
        NONE.to_owned()
    } else {
        shown(&flags.join("; "))
    }
}

/// The pulled events: TIME is the corrected time (the device's clock corrected by the offset
/// the server measured), in local time; `wide` adds the device's own time and the receipt.
fn pull_table(events: &[Value], wide: bool) -> String {
    let mut header = vec!["SEQ", "TIME"];
    if wide {
        header.extend(["DEVICE TIME", "RECEIVED"]);
    }
    header.extend(["GUARD", "KIND", "FLAGS", "DETAIL"]);
    let mut t = show::table(&header);
    for e in events {
        let detail = feed_detail(e);
        let mut row = vec![
            e["seq"]
                .as_u64()
                .map_or_else(|| NONE.to_owned(), |s| s.to_string()),
            local_field(&e["corrected_time"]),
        ];
        if wide {
            row.extend([
                local_field(&e["device_time"]),
                local_field(&e["received_at"]),
            ]);
        }
        row.extend([
            text_field(&e["guard_id"]),
            text_field(&e["kind"]),
            feed_flags(e),
            if detail.is_empty() {
                NONE.to_owned()
            } else {
                shown(&detail)
            },
        ]);
        t.add_row(row);
    }
    show::render(&mut t)
}

/// Whole seconds, minutes or hours between two RFC 3339 times, in words ("40 s", "47 min",
/// "13 h").
fn duration_words(from: &Value, to: &Value) -> Option<String> {
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok();
    let secs = (at(to)? - at(from)?).num_seconds().max(0);
    Some(if secs < 60 {
        format!("{secs} s")
    } else if secs < 2 * 3600 {
        format!("{} min", secs / 60)
    } else {
        format!("{} h", secs / 3600)
    })
}

/// The WARNING column of a device: its gaps in words, as of the view's `as_of`; [`NONE`] if
/// none.
fn device_warnings(d: &Value, as_of: &Value) -> String {
    let mut warnings = Vec::new();
    if !d["silent_since"].is_null() {
        let long = duration_words(&d["silent_since"], as_of).unwrap_or_else(|| "a while".into());
        warnings.push(format!("no contact for {long}"));
    }
    if d["overdue"] == true {
        let long = duration_words(&d["open_shift"]["started_at"], as_of)
            .unwrap_or_else(|| "too long".into());
        warnings.push(format!("shift open {long}"));
    }
    if warnings.is_empty() {
        NONE.to_owned()
    } else {
        warnings.join("; ")
    }
}

/// A listing as its `--json` document, or as the table `table` makes of it.
fn print_listing(body: &Value, json: bool, table: fn(&Value) -> String) -> Result<()> {
    if json {
        outln!("{body}");
    } else {
        outln!("{}", table(body));
    }
    Ok(())
}

fn check_ins_table(view: &Value) -> String {
    let timers = view["check_ins"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&["GUARD", "DEVICE", "EVERY", "SINCE", "DUE", "STATE"]);
    for c in &timers {
        let state = if c["overdue"] == true {
            "OVERDUE: call the guard"
        } else {
            "on time"
        };
        t.add_row(vec![
            text_field(&c["guard"]),
            text_field(&c["device_id"]),
            format!("{} min", c["every_min"]),
            local_field(&c["since"]),
            local_field(&c["due_at"]),
            state.to_owned(),
        ]);
    }
    show::render(&mut t)
}

fn attachments_table(view: &Value) -> String {
    let list = view["attachments"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&["ATTACHED TO", "SHA256", "TYPE", "SIZE", "NAME", "UPLOADED"]);
    for a in &list {
        let to = match (a["incident_id"].as_str(), a["note_event_id"].as_str()) {
            (Some(incident), _) => format!("incident {incident}"),
            (None, Some(note)) => format!("note {note}"),
            (None, None) => String::new(),
        };
        t.add_row(vec![
            to,
            text_field(&a["sha256"]),
            text_field(&a["media_type"]),
            a["size"].as_u64().map_or(String::new(), |n| n.to_string()),
            text_field(&a["name"]),
            if a["uploaded"] == true {
                "yes"
            } else {
                "not yet"
            }
            .to_owned(),
        ]);
    }
    show::render(&mut t)
}

fn alarms_table(view: &Value) -> String {
    let alarms = view["alarms"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&[
        "ALARM", "GUARD", "DEVICE", "RAISED", "RECEIVED", "STATE", "BY",
    ]);
    for a in &alarms {
        let state = match (a["acknowledged_at"].as_str(), a["escalated_at"].as_str()) {
            (Some(at), _) => format!("acknowledged {}", local_text(at)),
            (None, Some(at)) => format!("OPEN, ESCALATED {}", local_text(at)),
            (None, None) => "OPEN".to_owned(),
        };
        t.add_row(vec![
            text_field(&a["event_id"]),
            text_field(&a["guard"]),
            text_field(&a["device_id"]),
            local_field(&a["raised_at_corrected"]),
            local_field(&a["received_at"]),
            state,
            text_field(&a["acknowledged_by"]),
        ]);
    }
    show::render(&mut t)
}

fn webhooks_table(view: &Value) -> String {
    let hooks = view["webhooks"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&["ID", "URL", "EVENTS", "CREATED", "BY"]);
    for h in &hooks {
        let events: Vec<&str> = h["events"]
            .as_array()
            .map(|e| e.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        t.add_row(vec![
            h["id"].to_string(),
            text_field(&h["url"]),
            shown(&events.join(",")),
            local_field(&h["created_at"]),
            text_field(&h["created_by"]),
        ]);
    }
    show::render(&mut t)
}

fn deliveries_table(view: &Value) -> String {
    let deliveries = view["deliveries"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&[
        "ID", "WEBHOOK", "EVENT", "KEY", "STATE", "ATTEMPTS", "LAST", "NEXT",
    ]);
    for d in &deliveries {
        let last =
            d["attempt_log"]
                .as_array()
                .and_then(|a| a.last())
                .map_or(NONE.to_owned(), |a| match a["status"].as_u64() {
                    Some(status) => format!("{status} at {}", local_field(&a["at"])),
                    None => format!("{} at {}", text_field(&a["error"]), local_field(&a["at"])),
                });
        t.add_row(vec![
            d["id"].to_string(),
            d["webhook_id"].to_string(),
            text_field(&d["event_type"]),
            text_field(&d["idempotency_key"]),
            text_field(&d["state"]),
            d["attempts"].to_string(),
            last,
            local_field(&d["next_attempt_at"]),
        ]);
    }
    show::render(&mut t)
}

fn devices_table(view: &Value) -> String {
    let devices = view["devices"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&[
        "DEVICE",
        "GUARD",
        "OPEN SHIFT",
        "ENROLLED",
        "LAST SYNC",
        "PENDING",
        "REPORTED",
        "CLOCK SKEW",
        "STATE",
        "WARNING",
        "PUBLIC KEY",
    ]);
    for d in &devices {
        let state = match d["revoked_at"].as_str() {
            Some(at) => format!("revoked {}", local_text(at)),
            None => "active".to_owned(),
        };
        t.add_row(vec![
            text_field(&d["device_id"]),
            text_field(&d["guard"]),
            text_field(&d["open_shift"]["shift_id"]),
            local_field(&d["enrolled_at"]),
            local_field(&d["last_sync_at"]),
            d["pending_events"]
                .as_u64()
                .map_or_else(|| NONE.to_owned(), |n| n.to_string()),
            local_field(&d["pending_reported_at"]),
            d["clock_skew_ms"].as_i64().map_or_else(
                || NONE.to_owned(),
                |ms| format!("{:+.1} s", ms as f64 / 1000.0),
            ),
            state,
            device_warnings(d, &view["as_of"]),
            text_field(&d["public_key"]),
        ]);
    }
    show::render(&mut t)
}

fn shifts_table(shifts: &[Value]) -> String {
    let mut t = show::table(&[
        "SHIFT",
        "GUARD",
        "DEVICE",
        "STARTED",
        "ENDED",
        "EVENTS",
        "LAST EVENT",
        "SIGNED",
    ]);
    for s in shifts {
        let ended = if s["end_delivered"] == true {
            local_field(&s["ended_at"])
        } else {
            "open".to_owned()
        };
        let signed = match s["signatures"].as_u64() {
            Some(0) | None => "no".to_owned(),
            Some(n) if s["signed"] == true => format!("yes ({n})"),
            Some(n) => format!("not the last events ({n})"),
        };
        t.add_row(vec![
            text_field(&s["shift_id"]),
            text_field(&s["guard"]),
            text_field(&s["device_id"]),
            local_field(&s["started_at"]),
            ended,
            s["events"]
                .as_u64()
                .map_or_else(|| NONE.to_owned(), |n| n.to_string()),
            local_field(&s["last_event_at"]),
            signed,
        ]);
    }
    show::render(&mut t)
}

/// An RFC 3339 time of the answer in the site's zone `zone` (schedules are written in it);
/// [`NONE`] if absent.
fn site_field(zone: SiteZone, value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || NONE.to_owned(),
            |t| show::site_ms(zone, t.timestamp_millis()),
        )
}

/// A window's or checkpoint's state code in words (`done_late`: done late).
fn state_words(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| NONE.to_owned(), |s| shown(&s.replace('_', " ")))
}

/// The windows of `patrol control tours`: one row per checkpoint of each window, times in the
/// site's zone; then, if any, the amendments of final windows.
fn tours_shown(body: &Value) -> String {
    let zone = body["time_zone"]
        .as_str()
        .and_then(|z| SiteZone::new(z).ok())
        .unwrap_or_default();
    let windows = body["windows"].as_array().cloned().unwrap_or_default();
    let mut t = show::table(&[
        "TOUR",
        "WINDOW START",
        "WINDOW END",
        "CHECKPOINT",
        "STATE",
        "SCANNED",
        "GUARD",
        "DONE",
        "STATUS",
    ]);
    let mut amendments = show::table(&[
        "AMENDED",
        "TOUR",
        "WINDOW START",
        "CHECKPOINT",
        "BEFORE",
        "AFTER",
        "SCAN",
    ]);
    let mut amended = 0;
    for w in &windows {
        let status = if w["status"] == "final" {
            format!("FINAL ({})", text_field(&w["final_by"]))
        } else {
            "provisional".to_owned()
        };
        for c in w["checkpoints"].as_array().into_iter().flatten() {
            t.add_row(vec![
                text_field(&w["tour_id"]),
                site_field(zone, &w["start"]),
                site_field(zone, &w["end"]),
                text_field(&c["checkpoint_id"]),
                state_words(&c["state"]),
                site_field(zone, &c["corrected_time"]),
                text_field(&c["guard"]),
                w["percent"]
                    .as_u64()
                    .map_or_else(|| NONE.to_owned(), |p| format!("{p}%")),
                status.clone(),
            ]);
        }
        for a in w["amendments"].as_array().into_iter().flatten() {
            amended += 1;
            amendments.add_row(vec![
                site_field(zone, &a["at"]),
                text_field(&w["tour_id"]),
                site_field(zone, &w["start"]),
                text_field(&a["checkpoint_id"]),
                state_words(&a["before"]["state"]),
                state_words(&a["after"]["state"]),
                text_field(&a["event_id"]),
            ]);
        }
    }
    let mut out = show::render(&mut t);
    if amended > 0 {
        out.push_str("\n\namendments (changes after the window was final):\n");
        out.push_str(&show::render(&mut amendments));
    }
    out
}

fn users_table(users: &[Value]) -> String {
    let mut t = show::table(&[
        "USER",
        "NAME",
        "ROLE",
        "SITES",
        "CREATED",
        "TOKEN EXPIRES",
        "STATE",
    ]);
    for u in users {
        let sites = if u["all_sites"] == true {
            "all sites".to_owned()
        } else {
            let sites: Vec<&str> = u["sites"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if sites.is_empty() {
                NONE.to_owned()
            } else {
                shown(&sites.join(","))
            }
        };
        let state = match u["revoked_at"].as_str() {
            Some(at) => format!("revoked {}", local_text(at)),
            None => "active".into(),
        };
        t.add_row(vec![
            text_field(&u["id"]),
            text_field(&u["name"]),
            text_field(&u["role"]),
            sites,
            local_field(&u["created_at"]),
            local_field(&u["token_expires_at"]),
            state,
        ]);
    }
    show::render(&mut t)
}

/// The configuration the server answered, for people.
fn config_shown(body: &Value) -> Result<String> {
    let config: SiteConfig = serde_json::from_value(body.clone())
        .context("the server's site configuration is not one this patrol reads")?;
    Ok(show::config(
        &config,
        body["created_at"].as_str(),
        chrono::Utc::now().timestamp_millis(),
    ))
}

pub async fn control(args: ControlArgs) -> Result<()> {
    let Some(server) = args.server else {
        bail!("no server given: pass --server URL or set PATROL_SERVER");
    };
    let Some(token) = args.token else {
        bail!(
            "no user token given: pass --token pu_… or set PATROL_TOKEN (an administrator \
             creates users; `patrol-server admin create` makes the first)"
        );
    };
    let transport = args.transport.transport()?;
    let api = Api {
        http: transport.client(DEFAULT_TIMEOUT)?,
        base: transport.checked_base_url(&server)?.to_owned(),
        token: token.trim().to_owned(),
    };
    match args.command {
        ControlCommand::Pull {
            site,
            after,
            limit,
            wide,
            json,
        } => {
            let mut cursor = after;
            let mut more;
            let mut events: Vec<Value> = Vec::new();
            loop {
                let page = api
                    .get(&format!(
                        "/api/v1/sites/{site}/events?after={cursor}&limit={limit}"
                    ))
                    .await?;
                let page_events = page["events"].as_array().cloned().unwrap_or_default();
                cursor = page["next"].as_u64().unwrap_or(cursor);
                more = page["more"].as_bool().unwrap_or(false);
                let empty = page_events.is_empty();
                events.extend(page_events);
                if empty || !more {
                    break;
                }
            }
            if json.json {
                outln!(
                    "{}",
                    json!({ "events": events, "next": cursor, "more": more })
                );
            } else {
                outln!("{}", pull_table(&events, wide));
                eprintln!(
                    "{} event(s); next cursor {cursor} (`pull --after {cursor}` shows what \
                     arrives next)",
                    events.len()
                );
            }
        }
        ControlCommand::Devices { site, json } => {
            let body = api.get(&format!("/api/v1/sites/{site}/devices")).await?;
            print_listing(&body, json.json, devices_table)?;
        }
        ControlCommand::Shifts {
            site,
            guard,
            device,
            open,
            from,
            to,
            json,
        } => {
            // The filters, URL-encoded (an RFC 3339 offset holds a '+').
            let mut query = reqwest::Url::parse("http://filters/")?;
            {
                let mut pairs = query.query_pairs_mut();
                if let Some(guard) = guard {
                    pairs.append_pair("guard", guard.as_str());
                }
                if let Some(device) = device {
                    pairs.append_pair("device", &device.to_string());
                }
                if open {
                    pairs.append_pair("open", "true");
                }
                if let Some(from) = &from {
                    pairs.append_pair("from", from);
                }
                if let Some(to) = &to {
                    pairs.append_pair("to", to);
                }
            }
            let filters = match query.query() {
                Some(q) if !q.is_empty() => format!("&{q}"),
                _ => String::new(),
            };
            // Every page: a site's shifts are a few a day.
            let mut shifts: Vec<Value> = Vec::new();
            let mut after = String::new();
            loop {
                let page = api
                    .get(&format!(
                        "/api/v1/sites/{site}/shifts?limit=1000{after}{filters}"
                    ))
                    .await?;
                shifts.extend(page["shifts"].as_array().cloned().unwrap_or_default());
                match page["next"].as_str() {
                    Some(next) if page["more"] == true => after = format!("&after={next}"),
                    _ => break,
                }
            }
            if json.json {
                outln!("{}", json!({ "site_id": site.as_str(), "shifts": shifts }));
            } else {
                outln!("{}", shifts_table(&shifts));
                eprintln!(
                    "{} shift(s); `patrol control export-shift-log --site {site} --shift SHIFT \
                     --out FILE` exports one",
                    shifts.len()
                );
            }
        }
        ControlCommand::Tours {
            site,
            date,
            tour,
            json,
        } => {
            let date = date.format("%Y-%m-%d");
            let path = match &tour {
                Some(tour) => format!("/api/v1/sites/{site}/tours/{tour}/windows?date={date}"),
                None => format!("/api/v1/sites/{site}/tours/windows?date={date}"),
            };
            let body = api.get(&path).await?;
            if json.json {
                outln!("{body}");
            } else {
                let windows = body["windows"].as_array().map_or(0, Vec::len);
                let finals = body["windows"]
                    .as_array()
                    .map_or(0, |w| w.iter().filter(|w| w["status"] == "final").count());
                outln!("{}", tours_shown(&body));
                eprintln!(
                    "{windows} window(s) on {date}, {finals} final; times in {}",
                    shown(body["time_zone"].as_str().unwrap_or("UTC"))
                );
            }
        }
        ControlCommand::ExportShiftLog { site, shift, out } => {
            let body = api
                .get(&format!("/api/v1/sites/{site}/shift-logs/{shift}/export"))
                .await?;
            std::fs::write(&out, serde_json::to_string_pretty(&body)?)
                .with_context(|| format!("writing {}", out.display()))?;
            outln!(
                "shift log {shift}: {} change(s), {} signature(s) written to {}",
                body["changes"].as_array().map_or(0, Vec::len),
                body["signatures"].as_array().map_or(0, Vec::len),
                out.display()
            );
        }
        ControlCommand::Incidents {
            site,
            incident,
            json,
        } => match incident {
            Some(id) => {
                let body = api
                    .get(&format!("/api/v1/sites/{site}/incidents/{id}"))
                    .await?;
                if json.json {
                    outln!("{body}");
                } else {
                    outln!("{}", show::incident_detail(&body));
                }
            }
            None => {
                let body = api.get(&format!("/api/v1/sites/{site}/incidents")).await?;
                if json.json {
                    outln!("{body}");
                } else {
                    let list = body["incidents"].as_array().cloned().unwrap_or_default();
                    outln!("{}", show::incidents_table(&list, false));
                    if body["more"] == true {
                        eprintln!("more incidents than these: the newest are shown");
                    }
                }
            }
        },
        ControlCommand::IncidentAction {
            site,
            incident,
            action,
            to,
            severity,
            text,
            json,
        } => {
            // The operator acting is the token's user.
            let mut body = json!({ "action": action });
            if let Some(to) = to {
                body["to"] = to.into();
            }
            if let Some(severity) = severity {
                body["severity"] = severity.to_string().into();
            }
            if let Some(text) = text {
                body["text"] = text.into();
            }
            let state = api
                .post(
                    &format!("/api/v1/sites/{site}/incidents/{incident}/actions"),
                    body,
                )
                .await?;
            if json.json {
                outln!("{state}");
            } else {
                outln!("{}", show::incident_detail(&state));
            }
        }
        ControlCommand::Config { site, set, json } => {
            let path = format!("/api/v1/sites/{site}/config");
            let body = match &set {
                None => api.get(&path).await?,
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let body: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))?;
                    api.put(&path, body).await?
                }
            };
            if set.is_some() {
                eprintln!(
                    "site {site} configuration version {} stored; phones get it at their next \
                     sync",
                    body["version"]
                );
            }
            if json.json {
                outln!("{body}");
            } else {
                outln!("{}", config_shown(&body)?);
            }
        }
        ControlCommand::Report {
            command:
                ReportCommand::Dar {
                    site,
                    date,
                    format,
                    out,
                    shift,
                },
        } => {
            let mut path = format!("/api/v1/sites/{site}/reports/dar?date={date}&format={format}");
            if let Some(shift) = shift {
                path.push_str(&format!("&shift={shift}"));
            }
            let bytes = api.get_bytes(&path).await?;
            if out.as_os_str() == "-" {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            } else {
                std::fs::write(&out, &bytes)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!(
                    "daily activity report of {site} for {date} ({format}, {} bytes)",
                    bytes.len()
                );
                outln!("{}", out.display());
            }
        }
        ControlCommand::Attachments {
            site,
            incident,
            note,
            json,
        } => {
            let query = match (incident, note) {
                (Some(i), _) => format!("?incident={i}"),
                (None, Some(e)) => format!("?note={e}"),
                (None, None) => String::new(),
            };
            let body = api
                .get(&format!("/api/v1/sites/{site}/attachments{query}"))
                .await?;
            print_listing(&body, json.json, attachments_table)?;
        }
        ControlCommand::Attachment {
            command: AttachmentCommand::Get { site, sha256, out },
        } => {
            let sha256 = sha256.trim().to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{sha256:?} is not a SHA-256 (64 hexadecimal digits)");
            }
            let bytes = api
                .get_bytes(&format!("/api/v1/sites/{site}/attachments/{sha256}"))
                .await?;
            if out.as_os_str() == "-" {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            } else {
                std::fs::write(&out, &bytes)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!("attachment {sha256} ({} bytes)", bytes.len());
                outln!("{}", out.display());
            }
        }
        ControlCommand::Alarms { site, open, json } => {
            let query = if open { "?open=true" } else { "" };
            let body = api
                .get(&format!("/api/v1/sites/{site}/alarms{query}"))
                .await?;
            print_listing(&body, json.json, alarms_table)?;
        }
        ControlCommand::CheckIns { site, json } => {
            let body = api.get(&format!("/api/v1/sites/{site}/check-ins")).await?;
            print_listing(&body, json.json, check_ins_table)?;
        }
        ControlCommand::AckAlarm { site, event } => {
            let ack = api
                .post(
                    &format!("/api/v1/sites/{site}/alarms/{event}/acknowledge"),
                    json!({}),
                )
                .await?;
            outln!(
                "alarm {event} acknowledged by {} at {}",
                text_field(&ack["by"]),
                local_field(&ack["at"])
            );
        }
        ControlCommand::EnrollmentCode { site, ttl_secs } => {
            let body = match ttl_secs {
                Some(ttl) => json!({ "ttl_secs": ttl }),
                None => json!({}),
            };
            let code = api
                .post(&format!("/api/v1/sites/{site}/enrollment-codes"), body)
                .await?;
            eprintln!(
                "enrollment code for site {site}, one use, expires {}:",
                local_field(&code["expires_at"])
            );
            outln!("{}", shown(code["code"].as_str().unwrap_or_default()));
        }
        ControlCommand::RevokeDevice { site, device } => {
            let body = api
                .post(
                    &format!("/api/v1/sites/{site}/devices/{device}/revoke"),
                    json!({}),
                )
                .await?;
            outln!(
                "device {} of site {site} revoked at {}",
                shown(&device),
                local_field(&body["revoked_at"])
            );
        }
        ControlCommand::User {
            command:
                UserCommand::Create {
                    name,
                    role,
                    sites,
                    all_sites,
                    password_stdin,
                },
        } => {
            let sites: Vec<&str> = sites.iter().map(SiteId::as_str).collect();
            let mut request = json!({
                "name": name, "role": role, "sites": sites, "all_sites": all_sites
            });
            if password_stdin {
                request["password"] = json!(stdin_line("the password")?);
            }
            let body = api.post("/api/v1/users", request).await?;
            eprintln!(
                "created {} {} ({}){}; its token follows, shown this once",
                text_field(&body["user"]["role"]),
                text_field(&body["user"]["name"]),
                text_field(&body["user"]["id"]),
                if password_stdin {
                    " with a password to sign in to the console"
                } else {
                    ""
                },
            );
            outln!("{}", shown(body["token"].as_str().unwrap_or_default()));
        }
        ControlCommand::User {
            command:
                UserCommand::Password {
                    user,
                    password_stdin: _,
                    json,
                },
        } => {
            let (id, name, ended) = match user {
                Some(user) => {
                    let (id, name) = api.user(&user).await?;
                    let new = stdin_line("the new password")?;
                    api.put_no_content(
                        &format!("/api/v1/users/{id}/password"),
                        json!({ "new": new }),
                    )
                    .await?;
                    (id, name, "all its sign-in sessions ended")
                }
                None => {
                    let current = stdin_line("the current password")?;
                    let new = stdin_line("the new password")?;
                    api.put_no_content(
                        "/api/v1/users/me/password",
                        json!({ "current": current, "new": new }),
                    )
                    .await?;
                    let me = api.get("/api/v1/users/me").await?;
                    let field = |k: &str| me["user"][k].as_str().unwrap_or_default().to_owned();
                    (
                        field("id"),
                        field("name"),
                        "your other sign-in sessions ended",
                    )
                }
            };
            if json.json {
                outln!(
                    "{}",
                    json!({ "user": { "id": id, "name": name }, "password_set": true })
                );
            } else {
                outln!(
                    "set the password of user {} ({}); {ended}",
                    shown(&name),
                    shown(&id)
                );
            }
        }
        ControlCommand::User {
            command: UserCommand::List(json),
        } => {
            let body = api.get("/api/v1/users").await?;
            if json.json {
                outln!("{body}");
            } else {
                let users = body["users"].as_array().cloned().unwrap_or_default();
                outln!("{}", users_table(&users));
            }
        }
        ControlCommand::User {
            command: UserCommand::Revoke { user },
        } => {
            let (id, _) = api.user(&user).await?;
            let body = api
                .post(&format!("/api/v1/users/{id}/revoke"), json!({}))
                .await?;
            outln!(
                "user {} ({}) revoked at {}",
                text_field(&body["name"]),
                shown(&id),
                local_field(&body["revoked_at"])
            );
        }
        ControlCommand::User {
            command: UserCommand::Token { user },
        } => {
            let (id, _) = api.user(&user).await?;
            let body = api
                .post(&format!("/api/v1/users/{id}/token"), json!({}))
                .await?;
            eprintln!(
                "gave user {} a new token, valid until {}; the old one no longer works. The token \
                 follows, shown this once",
                text_field(&body["user"]["name"]),
                local_field(&body["expires_at"])
            );
            outln!("{}", shown(body["token"].as_str().unwrap_or_default()));
        }
        ControlCommand::Token {
            command: TokenCommand::Show,
        } => {
            let body = api.get("/api/v1/users/me").await?;
            let user = &body["user"];
            outln!(
                "{} ({}), {}",
                text_field(&user["name"]),
                text_field(&user["role"]),
                text_field(&user["id"])
            );
            let expires = local_field(&body["token_expires_at"]);
            if body["token_superseded"] == true {
                outln!(
                    "this token was replaced by a rotation and stops working at {expires}: use \
                     the new one"
                );
            } else {
                outln!(
                    "this token expires at {expires}: rotate it before then with `patrol control \
                     token rotate`"
                );
            }
        }
        ControlCommand::Webhook { command } => webhook(&api, command).await?,
        ControlCommand::Token {
            command: TokenCommand::Rotate,
        } => {
            let body = api.post("/api/v1/users/me/token", json!({})).await?;
            let old = match body["previous_token_valid_until"].as_str() {
                Some(until) => format!("the old one works until {}", local_text(until)),
                None => "the old one no longer works".to_owned(),
            };
            eprintln!(
                "your new token, valid until {}, follows, shown this once; {old}",
                local_field(&body["expires_at"])
            );
            outln!("{}", shown(body["token"].as_str().unwrap_or_default()));
        }
    }
    Ok(())
}

async fn webhook(api: &Api, command: WebhookCommand) -> Result<()> {
    match command {
        WebhookCommand::Add {
            site,
            url,
            events,
            json,
        } => {
            let body = api
                .post(
                    &format!("/api/v1/sites/{site}/webhooks"),
                    json!({ "url": url, "events": events }),
                )
                .await?;
            if json.json {
                outln!("{body}");
            } else {
                eprintln!(
                    "webhook {} of site {site} registered for {}; its signing secret follows, \
                     shown this once",
                    body["id"],
                    shown(&events.join(","))
                );
                outln!("{}", shown(body["secret"].as_str().unwrap_or_default()));
            }
        }
        WebhookCommand::List { site, json } => {
            let body = api.get(&format!("/api/v1/sites/{site}/webhooks")).await?;
            print_listing(&body, json.json, webhooks_table)?;
        }
        WebhookCommand::Remove { site, id } => {
            api.delete(&format!("/api/v1/sites/{site}/webhooks/{id}"))
                .await?;
            outln!("webhook {id} of site {site} removed, with its deliveries");
        }
        WebhookCommand::Deliveries { site, parked, json } => {
            let query = if parked { "?state=parked" } else { "" };
            let body = api
                .get(&format!("/api/v1/sites/{site}/webhooks/deliveries{query}"))
                .await?;
            print_listing(&body, json.json, deliveries_table)?;
        }
        WebhookCommand::Retry { site, id } => {
            api.post(
                &format!("/api/v1/sites/{site}/webhooks/deliveries/{id}/retry"),
                json!({}),
            )
            .await?;
            outln!("delivery {id} of site {site} re-queued");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_shows_the_id_ack_alarm_takes() {
        let id = "0190f3a2-7b1c-7d2e-9f00-123456789abc";
        assert_eq!(
            feed_detail(&json!({"kind": "panic", "id": id})),
            format!("PANIC  ack-alarm {id}")
        );
    }

    /// An open alarm says so, and whether it was escalated; an acknowledged one says when and
    /// by whom; ALARM is the id `ack-alarm` takes.
    #[test]
    fn the_alarms_table_shows_open_and_acknowledged_alarms() {
        let view = json!({"alarms": [
            {"event_id": "e-3", "guard": "carl", "device_id": "d-3",
             "raised_at_corrected": "2025-03-01T22:00:20.000Z",
             "received_at": "2025-03-01T22:00:21.000Z", "open": true,
             "acknowledged_by": null, "acknowledged_at": null,
             "escalated_at": "2025-03-01T22:02:21.000Z"},
            {"event_id": "e-2", "guard": "bob", "device_id": "d-2",
             "raised_at_corrected": "2025-03-01T22:00:10.000Z",
             "received_at": "2025-03-01T22:00:11.000Z", "open": true,
             "acknowledged_by": null, "acknowledged_at": null},
            {"event_id": "e-1", "guard": "anna", "device_id": "d-1",
             "raised_at_corrected": "2025-03-01T22:00:00.000Z",
             "received_at": "2025-03-01T22:00:01.000Z", "open": false,
             "acknowledged_by": "op-anna", "acknowledged_at": "2025-03-01T22:01:00.000Z"},
        ]});
        let table = alarms_table(&view);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ALARM"), "{table}");
        let escalated = show::local_text("2025-03-01T22:02:21.000Z");
        assert!(
            lines[1].starts_with("e-3")
                && lines[1].contains(&format!("OPEN, ESCALATED {escalated}")),
            "{table}"
        );
        assert!(
            lines[2].starts_with("e-2") && lines[2].contains("OPEN") && !lines[2].contains("ESC"),
            "{table}"
        );
        let acked = show::local_text("2025-03-01T22:01:00.000Z");
        assert!(
            lines[3].starts_with("e-1")
                && lines[3].contains(&format!("acknowledged {acked}"))
                && lines[3].contains("op-anna"),
            "{table}"
        );
    }

    /// TIME is the corrected time; the device's own time shows only in the wide view; flags
    /// read as words, one this patrol does not know by its name.
    #[test]
    fn a_pulled_event_shows_its_corrected_time_and_flags_in_words() {
        let event = json!({
            "seq": 4, "kind": "note", "guard_id": "anna", "text": "late",
            "device_time": "2025-03-01T19:00:00.000Z",
            "corrected_time": "2025-03-01T22:00:00.000Z",
            "received_at": "2025-03-01T22:30:00.000Z",
            "flags": [
                {"flag": "clock_skew", "offset_ms": 10_800_000},
                {"flag": "from_the_future"}
            ],
        });
        let corrected = show::local_text("2025-03-01T22:00:00.000Z");
        let device = show::local_text("2025-03-01T19:00:00.000Z");
        let table = pull_table(std::slice::from_ref(&event), false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SEQ  TIME"), "{table}");
        assert!(lines[1].contains(&corrected), "{table}");
        assert!(!lines[1].contains(&device), "{table}");
        assert!(
            lines[1].contains("clock 3 h 0 min slow; from_the_future"),
            "{table}"
        );
        let wide = pull_table(&[event], true);
        assert!(
            wide.contains("DEVICE TIME") && wide.contains(&device),
            "{wide}"
        );
        assert_eq!(feed_flags(&json!({"flags": []})), NONE);
    }

    #[test]
    fn a_device_shows_its_guard() {
        let table = devices_table(&json!({"devices": [{"device_id": "d-1", "guard": "anna"}]}));
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header.get(..2), Some(&["DEVICE", "GUARD"][..]), "{table}");
        assert_eq!(row.get(..2), Some(&["d-1", "anna"][..]), "{table}");
    }

    #[test]
    fn a_device_without_a_guard_shows_a_dash() {
        let table = devices_table(&json!({"devices": [{"device_id": "d-1", "pending_events": 0}]}));
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row.get(..2), Some(&["d-1", "-"][..]), "{table}");
    }

    /// A silent device on an overdue shift says both in words, as of the view's time.
    #[test]
    fn a_device_s_gaps_are_said_in_words() {
        let as_of = json!("2026-12-06T23:47:00Z");
        let device = json!({
            "silent_since": "2026-12-06T23:00:00Z",
            "overdue": true,
            "open_shift": {"started_at": "2026-12-06T10:30:00Z"},
        });
        assert_eq!(
            device_warnings(&device, &as_of),
            "no contact for 47 min; shift open 13 h"
        );
        assert_eq!(device_warnings(&json!({"overdue": false}), &as_of), NONE);
    }

    /// A shift's end and signature in words: open, signed to its last events or not.
    #[test]
    fn a_shift_shows_whether_it_ended_and_is_signed() {
        let table = shifts_table(&[
            json!({"shift_id": "s-1", "guard": "anna", "end_delivered": false, "signatures": 2, "signed": true, "events": 5}),
            json!({"shift_id": "s-2", "guard": "bob", "end_delivered": true, "ended_at": "2026-12-06T06:00:00Z", "signatures": 0, "signed": false, "events": 9}),
        ]);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].starts_with("SHIFT"), "{table}");
        assert!(
            rows[1].contains("open") && rows[1].contains("yes (2)"),
            "{table}"
        );
        assert!(
            !rows[2].contains("open") && rows[2].contains(" no"),
            "{table}"
        );
    }

    /// A supervisor reads each checkpoint's state in words with the scan's time and guard in
    /// the site's zone, the window's share done and FINAL or provisional; amendments follow.
    #[test]
    fn tours_show_states_finality_and_amendments_in_the_sites_time() {
        let scan = json!({"checkpoint_id": "cp-1", "state": "done_late", "guard": "anna",
                          "corrected_time": "2026-07-10T22:05:00Z"});
        let missed = json!({"checkpoint_id": "cp-2", "state": "missed"});
        let body = json!({
            "time_zone": "Europe/London",
            "windows": [
                {"tour_id": "night", "start": "2026-07-10T21:00:00Z", "end": "2026-07-10T22:00:00Z",
                 "status": "final", "final_by": "delivery", "percent": 50,
                 "checkpoints": [scan, missed],
                 "amendments": [{"checkpoint_id": "cp-2", "before": {"state": "missed"},
                                 "after": {"state": "done"}, "event_id": "e-1",
                                 "at": "2026-07-11T09:00:00Z"}]},
                {"tour_id": "night", "start": "2026-07-10T22:00:00Z", "end": "2026-07-10T23:00:00Z",
                 "status": "provisional", "percent": 0,
                 "checkpoints": [{"checkpoint_id": "cp-1", "state": "due"}], "amendments": []},
            ],
        });
        let shown = tours_shown(&body);
        let rows: Vec<&str> = shown.lines().collect();
        assert!(rows[0].starts_with("TOUR"), "{shown}");
        assert!(
            rows[1].contains("2026-07-10 22:00:00 +01:00")
                && rows[1].contains("done late")
                && rows[1].contains("2026-07-10 23:05:00 +01:00")
                && rows[1].contains("anna")
                && rows[1].contains("50%")
                && rows[1].contains("FINAL (delivery)"),
            "{shown}"
        );
        assert!(
            rows[2].contains("missed") && rows[2].contains("FINAL"),
            "{shown}"
        );
        assert!(
            rows[3].contains("due") && rows[3].contains("provisional"),
            "{shown}"
        );
        let amended = rows
            .iter()
            .position(|r| r.starts_with("amendments"))
            .unwrap_or(0);
        assert!(amended > 3, "{shown}");
        assert!(
            rows[amended + 2].contains("missed") && rows[amended + 2].contains("done"),
            "{shown}"
        );
    }
}
