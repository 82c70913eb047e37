//! `patrol device`: a guard's phone, on its own store file, through the library calls an app
//! makes. Commands that record something print the new id alone on stdout and a sentence for
//! people on stderr, so that `SHIFT=$(patrol device ... shift start --guard g1)` works.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use patrol_core::flags::EventFlag;
use patrol_core::incident::{Attachment, IncidentAction, IncidentState};
use patrol_core::incident_view::IncidentView;
use patrol_core::siteconfig::SiteZone;
use patrol_core::{
    CheckpointId, Event, EventBody, EventId, GuardId, IncidentCategory, IncidentId, IncidentReport,
    Location, Scan, ScanMethod, Severity,
};
use patrol_mobile::clock::{Clock, ClockReading, SystemClock};
use patrol_mobile::sync::DEFAULT_TIMEOUT;
use patrol_mobile::{AlarmState, DeviceStore, NewFile, RecordOptions, StoreOptions, SyncClient};
use serde_json::{Value, json};

use crate::show::{self, NONE, local_ms, rfc3339_ms};
use crate::{JsonArg, TransportArgs};
use patrol_term::shown;

#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// The phone's store (one SQLite file).
    #[arg(long, env = "PATROL_STORE")]
    store: PathBuf,
    /// Set the phone's wall clock to read this time (RFC 3339) as the command starts, for
    /// rehearsing a night: what the command records is stamped with it. A phone whose clock is
    /// set so and syncs with its clock right is one that recorded then; synced with its clock
    /// still set, the server corrects its times by the offset it measures.
    #[arg(long, value_parser = parse_time_ms, global = true)]
    clock: Option<i64>,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Enroll this phone with a server using a one-time code from an administrator, creating
    /// its store (once per phone); prints the device id, site and the phone's public key
    /// (record the key: `patrol verify` checks the phone's shift logs against it).
    Enroll {
        /// The server to enroll with, e.g. http://127.0.0.1:8080 (kept for later syncs).
        #[arg(long, env = "PATROL_SERVER")]
        server: String,
        /// The enrollment code (pe_…).
        #[arg(long)]
        code: String,
    },
    /// Show the device id, site, public key, shift in progress and sync status.
    Status(JsonArg),
    /// Start or end a shift.
    Shift {
        #[command(subcommand)]
        command: ShiftCommand,
    },
    /// Record a checkpoint scan; prints its event id (flags, if any, on stderr).
    Scan(ScanArgs),
    /// Record a note in the shift log, with files attached if given (photos, short videos,
    /// audio; uploaded after the note at a sync); prints its event id.
    Note {
        /// The note's text (may be empty when files are attached).
        text: String,
        /// A file to attach (repeat for more, at most 10; its media type is guessed from its
        /// extension).
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<PathBuf>,
    },
    /// Raise a panic alarm; prints its event id (the control room acknowledges it by that id).
    Panic(LocationArgs),
    /// Report an incident; prints the incident id.
    Incident {
        /// theft, shoplifting, fraud, robbery, fighting, provocation, dispute, fire, explosive,
        /// toxic, radioactive or other.
        #[arg(long)]
        category: IncidentCategory,
        /// low, medium, high or critical.
        #[arg(long, default_value = "medium")]
        severity: Severity,
        /// What happened.
        #[arg(long)]
        description: String,
        #[command(flatten)]
        location: LocationArgs,
        /// A photo or recording the app keeps: SHA256HEX:MEDIA_TYPE:SIZE[:NAME] (repeatable).
        #[arg(long = "attach", value_parser = parse_attachment)]
        attachments: Vec<Attachment>,
    },
    /// List the incidents this phone holds (reported here, worked here, or assigned to the
    /// guard), as of the last sync; or show one in full.
    Incidents {
        /// Show only this incident (its id), with its notes and attachments.
        incident: Option<IncidentId>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Act on an incident as the guard on duty: one action per call; shows the incident after.
    IncidentUpdate {
        /// The incident id.
        incident: IncidentId,
        #[command(flatten)]
        action: IncidentActionArgs,
    },
    /// Attach a file (photo, short video, audio) to an incident this phone holds, as the guard
    /// on duty: the phone keeps its bytes and uploads them after the incident at a sync (at most
    /// 25 MiB a file); prints the file's SHA-256.
    Attach {
        /// The incident id.
        #[arg(long)]
        incident: IncidentId,
        /// The file.
        file: PathBuf,
        /// Its media type (default: guessed from the file name's extension).
        #[arg(long = "type")]
        media_type: Option<String>,
        /// The name shown for it (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show the site configuration the phone holds.
    Config(JsonArg),
    /// Tour progress (works offline): the scans the server counted at the last sync, every
    /// guard's, with this phone's own since, at times corrected by this phone's clock offset;
    /// the windows within 24 hours either side of now, in the site's time zone.
    Tour {
        /// The tour's id (`patrol device config` lists them).
        tour: String,
        /// The time to evaluate at: RFC 3339 (2026-12-06T22:30:00+01:00) or ms since the Unix
        /// epoch (default: now).
        #[arg(long, value_parser = parse_time_ms)]
        at: Option<i64>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Panic alarms raised on this phone: queued, delivered or acknowledged.
    Alarms(JsonArg),
    /// The lone-worker check-in timer: start it, check in, stop it, or see when the next
    /// check-in is due (a missed one is recorded, to reach the control room first).
    Checkin {
        #[command(subcommand)]
        command: CheckinCommand,
    },
    /// Leave a handover note for the next guard; prints its event id.
    Handover {
        /// The note's text.
        text: String,
        /// The guard taking over.
        #[arg(long)]
        to: Option<GuardId>,
    },
    /// List the local log, each scan with its flags under the site configuration the phone
    /// holds.
    Log(JsonArg),
    /// Send every unacknowledged event to the server and apply its answer.
    Sync {
        /// The server; the one the phone enrolled with if not given.
        #[arg(long, env = "PATROL_SERVER")]
        server: Option<String>,
        /// On a network or server failure, retry up to this many times, waiting the outbox's
        /// backoff (exponential with jitter; seconds while a panic alarm is undelivered).
        #[arg(long, default_value_t = 0)]
        retry: u32,
    },
}

#[derive(Subcommand, Debug)]
enum CheckinCommand {
    /// Start (or reset) the timer: check in within this many minutes, and again within as long
    /// of each check-in; prints the event id.
    Start {
        /// Minutes between check-ins (1 to 1440).
        #[arg(long)]
        every: u32,
    },
    /// Check in now; prints the event id.
    Now,
    /// Stop the timer; prints the event id.
    Stop,
    /// When the next check-in is due, and whether it is missed.
    Status(JsonArg),
}

#[derive(Subcommand, Debug)]
enum ShiftCommand {
    /// Start a shift for a guard; prints the shift id.
    Start {
        /// The guard working the shift.
        #[arg(long)]
        guard: GuardId,
    },
    /// End the shift in progress; prints its shift id (as `export-shift-log --shift` takes it).
    End {
        /// A closing remark for the log.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Args, Debug)]
#[group(id = "method", required = true, multiple = false)]
struct MethodArgs {
    /// Scanned an NFC tag with this id.
    #[arg(long, group = "method")]
    nfc: Option<String>,
    /// Scanned a QR code with this payload.
    #[arg(long, group = "method")]
    qr: Option<String>,
    /// Proven by GPS position (needs --lat and --lon).
    #[arg(long, group = "method")]
    gps: bool,
    /// Entered by hand; give the reason the tag could not be read.
    #[arg(long, group = "method")]
    manual: Option<String>,
}

#[derive(Args, Debug)]
#[group(id = "incident_action", required = true, multiple = false)]
struct IncidentActionArgs {
    /// Add a note to the incident.
    #[arg(long, group = "incident_action")]
    note: Option<String>,
    /// low, medium, high or critical.
    #[arg(long, group = "incident_action")]
    severity: Option<Severity>,
    /// acknowledge, dispatch, resolve, close or reopen.
    #[arg(long, group = "incident_action")]
    status: Option<String>,
    /// Assign to a guard or operator by name.
    #[arg(long, group = "incident_action")]
    assign: Option<String>,
    /// Attach a file the app keeps: SHA256HEX:MEDIA_TYPE:SIZE[:NAME].
    #[arg(long, group = "incident_action", value_parser = parse_attachment)]
    attach: Option<Attachment>,
}

impl IncidentActionArgs {
    fn action(self) -> Result<IncidentAction> {
        if let Some(text) = self.note {
            return Ok(IncidentAction::AddNote(text));
        }
        if let Some(severity) = self.severity {
            return Ok(IncidentAction::SetSeverity(severity));
        }
        if let Some(to) = self.assign {
            return Ok(IncidentAction::Assign(Some(to)));
        }
        if let Some(attachment) = self.attach {
            return Ok(IncidentAction::Attach(attachment));
        }
        match self.status.as_deref() {
            Some("acknowledge") => Ok(IncidentAction::Acknowledge),
            Some("dispatch") => Ok(IncidentAction::Dispatch),
            Some("resolve") => Ok(IncidentAction::Resolve),
            Some("close") => Ok(IncidentAction::Close),
            Some("reopen") => Ok(IncidentAction::Reopen),
            Some(other) => Err(anyhow!(
                "--status must be acknowledge, dispatch, resolve, close or reopen, not {other:?}"
            )),
            None => Err(anyhow!("give one action")),
        }
    }
}

fn parse_attachment(s: &str) -> Result<Attachment, String> {
    let mut parts = s.splitn(4, ':');
    let (Some(hex), Some(media_type), Some(size)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected SHA256HEX:MEDIA_TYPE:SIZE[:NAME]".into());
    };
    let mut sha256 = [0u8; 32];
    if hex.len() != 64 {
        return Err("the SHA-256 must be 64 hex digits".into());
    }
    for (i, byte) in sha256.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or("the SHA-256 must be 64 hex digits")?;
    }
    Ok(Attachment {
        sha256,
        media_type: media_type.to_owned(),
        size: size
            .parse()
            .map_err(|_| format!("size {size:?} is not a number"))?,
        name: parts.next().map(str::to_owned),
    })
}

/// A time given as RFC 3339 or as milliseconds since the epoch.
/// The system's clocks with the wall clock moved to read a given time when it was set
/// (`--clock`); it runs on from there.
#[derive(Debug)]
struct SetClock {
    offset_ms: i64,
}

impl SetClock {
    fn reading(at_ms: i64) -> Self {
        SetClock {
            offset_ms: at_ms.saturating_sub(SystemClock.now().wall_ms),
        }
    }
}

impl Clock for SetClock {
    fn now(&self) -> ClockReading {
        let reading = SystemClock.now();
        ClockReading {
            wall_ms: reading.wall_ms.saturating_add(self.offset_ms),
            ..reading
        }
    }
}

fn parse_time_ms(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            format!("{s:?} is neither an RFC 3339 time (2026-12-06T22:30:00+01:00) nor ms")
        })
}

#[derive(Args, Debug)]
struct ScanArgs {
    /// The checkpoint scanned; with --nfc or --qr it may be left out, and the site
    /// configuration says which checkpoint the tag proves.
    checkpoint: Option<CheckpointId>,
    #[command(flatten)]
    method: MethodArgs,
    #[command(flatten)]
    location: LocationArgs,
    /// A remark about the checkpoint (e.g. "door found unlocked").
    #[arg(long)]
    note: Option<String>,
    /// Record under this event id (a retried scan with the same id is recorded once).
    #[arg(long)]
    event_id: Option<EventId>,
}

#[derive(Args, Debug)]
struct LocationArgs {
    /// Latitude of the phone's position, in degrees (with --lon).
    #[arg(long, requires = "lon", allow_hyphen_values = true)]
    lat: Option<f64>,
    /// Longitude of the phone's position, in degrees (with --lat).
    #[arg(long, requires = "lat", allow_hyphen_values = true)]
    lon: Option<f64>,
    /// Accuracy radius of the position in metres.
    #[arg(long, requires = "lat")]
    accuracy: Option<f32>,
}

impl LocationArgs {
    fn location(&self) -> Option<Location> {
        Some(Location {
            lat: self.lat?,
            lon: self.lon?,
            accuracy_m: self.accuracy,
        })
    }
}

/// What an event says, in a few words, for the log's DETAIL column.
fn describe(body: &EventBody) -> String {
    match body {
        EventBody::ShiftStarted => String::new(),
        EventBody::ShiftEnded { note } => note.clone().unwrap_or_default(),
        EventBody::CheckpointScanned(scan) => {
            let how = match &scan.method {
                ScanMethod::Nfc { tag } => format!("nfc {tag}"),
                ScanMethod::Qr { payload } => format!("qr {payload}"),
                ScanMethod::Gps => "gps".into(),
                ScanMethod::Manual { reason } => format!("manual: {reason}"),
            };
            match &scan.note {
                Some(note) => format!("{} ({how}): {note}", scan.checkpoint),
                None => format!("{} ({how})", scan.checkpoint),
            }
        }
        EventBody::IncidentReported(r) => format!(
            "{}, {}: {} (incident {})",
            r.category, r.severity, r.description, r.incident
        ),
        EventBody::Panic { .. } => "PANIC".into(),
        EventBody::Note { text } => text.clone(),
        EventBody::NoteWithAttachments { text, attachments } => {
            show::note_with_files(text, attachments.len())
        }
        EventBody::Handover { to_guard, text } => match to_guard {
            Some(g) => format!("to {g}: {text}"),
            None => text.clone(),
        },
        EventBody::CheckInTimerStarted { every_min } => {
            format!("check in every {every_min} min")
        }
        EventBody::CheckedIn | EventBody::CheckInTimerStopped => String::new(),
        EventBody::CheckInMissed { due_ms } => {
            format!("CHECK-IN MISSED (due {})", show::local_ms(*due_ms))
        }
    }
}

fn flags_in_words(flags: &[EventFlag]) -> String {
    flags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An incident as the phone holds it, in the control-room API's shape (docs/protocol.md; no
/// `updated_at`, which only the server knows), with the phone's `pending` and `refused`.
fn incident_json(s: &IncidentState, pending: bool, refused: Option<&str>) -> Result<Value> {
    let mut json = serde_json::to_value(IncidentView::without_update_time(s))?;
    if let Some(fields) = json.as_object_mut() {
        fields.insert("pending".into(), json!(pending));
        fields.insert("refused".into(), json!(refused));
    }
    Ok(json)
}

pub async fn device(args: DeviceArgs) -> Result<()> {
    if let DeviceCommand::Enroll { server, code } = &args.command {
        // Checked before the code is spent.
        if DeviceStore::is_set_up(&args.store)? {
            bail!(
                "a store is already set up at {}; enroll into a new store",
                args.store.display()
            );
        }
        let transport = args.transport.transport()?;
        let enrollment = SyncClient::with_transport(server, &transport, DEFAULT_TIMEOUT)?
            .enroll(code)
            .await
            .context("enrolling")?;
        let store = DeviceStore::create_enrolled(&args.store, enrollment, StoreOptions::default())
            .with_context(|| format!("creating {}", args.store.display()))?;
        outln!("device   {}", store.device_id());
        outln!("site     {}", shown(store.site().as_str()));
        match store.public_key() {
            Some(key) => {
                outln!("key      {key}");
                eprintln!(
                    "enrolled. Record the phone's public key now: `patrol verify --public-key \
                     {key}` checks its exported shift logs against it"
                );
            }
            None => outln!("key      none: this phone's logs are not signed"),
        }
        return Ok(());
    }
    let options = StoreOptions {
        clock: args
            .clock
            .map(|at| Arc::new(SetClock::reading(at)) as Arc<dyn Clock>),
        ..StoreOptions::default()
    };
    let mut store = DeviceStore::open_in_place_with(&args.store, options)
        .with_context(|| format!("opening {}", args.store.display()))?;
    match args.command {
        DeviceCommand::Enroll { .. } => {}
        DeviceCommand::Status(JsonArg { json: true }) => {
            let st = store.status()?;
            let shift = store.current_shift().map(|s| {
                json!({
                    "shift_id": s.shift,
                    "guard_id": s.guard,
                    "started_at": rfc3339_ms(s.started_ms),
                })
            });
            let doc = json!({
                "device_id": store.device_id(),
                "site_id": store.site(),
                "server": store.server_url(),
                "public_key": store.public_key().map(|k| k.to_string()),
                "shift": shift,
                "pending_events": st.pending_events,
                "oldest_pending_at": st.oldest_pending_ms.map(rfc3339_ms),
                "last_sync_at": st.last_success_ms.map(rfc3339_ms),
                "last_error": st.last_error,
                "consecutive_failures": st.consecutive_failures,
                "next_attempt_at": st.next_attempt_ms.map(rfc3339_ms),
                "urgent": st.urgent,
                "pending_attachments": st.pending_attachments,
                "pending_attachment_bytes": st.pending_attachment_bytes,
                "refused": st.rejected.iter().map(|r| json!({
                    "shift_id": r.shift,
                    "code": r.code,
                    "message": r.message,
                })).collect::<Vec<_>>(),
            });
            outln!("{doc}");
        }
        DeviceCommand::Status(JsonArg { json: false }) => {
            // One field a line, `name value`: scripts read `key` and `shift` with awk.
            outln!("device   {}", store.device_id());
            outln!("site     {}", shown(store.site().as_str()));
            match store.server_url() {
                Some(url) => outln!("server   {}", shown(url)),
                None => outln!("server   none: not enrolled, cannot sync"),
            }
            match store.public_key() {
                Some(key) => outln!("key      {key}"),
                None => outln!("key      none: this phone's logs are not signed"),
            }
            match store.current_shift() {
                Some(s) => outln!(
                    "shift    {} (guard {}, since {})",
                    s.shift,
                    shown(s.guard.as_str()),
                    local_ms(s.started_ms)
                ),
                None => outln!("shift    none open"),
            }
            let st = store.status()?;
            outln!("pending  {} event(s)", st.pending_events);
            if st.pending_attachments > 0 {
                outln!(
                    "files    {} attachment(s) to upload, {} of at most {} bytes",
                    st.pending_attachments,
                    st.pending_attachment_bytes,
                    patrol_core::protocol::MAX_DEVICE_PENDING_ATTACHMENT_BYTES
                );
            }
            if let Some(ms) = st.oldest_pending_ms {
                outln!("oldest   {}", local_ms(ms));
            }
            if let Some(ms) = st.last_success_ms {
                outln!("synced   {}", local_ms(ms));
            }
            if let Some(err) = st.last_error {
                outln!("error    {}", shown(&err));
            }
            if st.consecutive_failures > 0 {
                let next = st.next_attempt_ms.map(local_ms);
                outln!(
                    "retry    {} failure(s); next attempt {}",
                    st.consecutive_failures,
                    next.unwrap_or_else(|| "now".into())
                );
            }
            if st.urgent {
                outln!("URGENT   a panic alarm is not delivered yet");
            }
            for r in st.rejected {
                outln!(
                    "refused  shift {}: {} ({})",
                    r.shift,
                    shown(&r.message),
                    shown(&r.code)
                );
            }
        }
        DeviceCommand::Shift {
            command: ShiftCommand::Start { guard },
        } => {
            let shift = store.start_shift(guard.clone())?;
            eprintln!("shift started for guard {}", shown(guard.as_str()));
            outln!("{shift}");
        }
        DeviceCommand::Shift {
            command: ShiftCommand::End { note },
        } => {
            let Some(shift) = store.current_shift().map(|s| s.shift) else {
                bail!("no shift is open on this phone; `patrol device status` shows the last one");
            };
            store.end_shift(note)?;
            eprintln!("shift ended; sync to deliver its end to the control room");
            outln!("{shift}");
        }
        DeviceCommand::Scan(scan) => {
            let scan_event_id = scan.event_id;
            let m = scan.method;
            let method = if let Some(tag) = m.nfc {
                ScanMethod::Nfc { tag }
            } else if let Some(payload) = m.qr {
                ScanMethod::Qr { payload }
            } else if let Some(reason) = m.manual {
                ScanMethod::Manual { reason }
            } else {
                ScanMethod::Gps
            };
            let checkpoint = match (scan.checkpoint, &method) {
                (Some(cp), _) => cp,
                (None, ScanMethod::Nfc { tag } | ScanMethod::Qr { payload: tag }) => {
                    store.checkpoint_for_tag(tag)?
                }
                (None, _) => bail!("name the checkpoint (only a tag or QR scan can look it up)"),
            };
            let scan = Scan {
                checkpoint,
                method,
                location: scan.location.location(),
                note: scan.note,
            };
            let checkpoint = scan.checkpoint.clone();
            let id = store.scan(
                scan,
                RecordOptions {
                    event_id: scan_event_id,
                    wall_ms: None,
                },
            )?;
            let flags = store.event_flags(id)?.unwrap_or_default();
            if flags.is_empty() {
                eprintln!("scan of {} recorded", shown(checkpoint.as_str()));
            } else {
                eprintln!(
                    "scan of {} recorded, flagged: {}",
                    shown(checkpoint.as_str()),
                    shown(&flags_in_words(&flags))
                );
            }
            outln!("{id}");
        }
        DeviceCommand::Attach {
            incident,
            file,
            media_type,
            name,
        } => {
            let bytes = read_attachment(&file)?;
            let media_type = media_type.unwrap_or_else(|| guess_media_type(&file).to_owned());
            let name = name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned()));
            let (attachment, _) = store.attach_file(incident, &bytes, &media_type, name)?;
            eprintln!(
                "attached {} ({media_type}, {} bytes) to incident {incident}; uploaded at the next sync",
                file.display(),
                attachment.size
            );
            outln!("{}", hex::encode(attachment.sha256));
        }
        DeviceCommand::Note { text, attach } if attach.is_empty() => {
            let id = store.note(text)?;
            eprintln!("note recorded");
            outln!("{id}");
        }
        DeviceCommand::Note { text, attach } => {
            let mut read = Vec::with_capacity(attach.len());
            for file in &attach {
                let bytes = read_attachment(file)?;
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                read.push((bytes, guess_media_type(file), name));
            }
            let files: Vec<NewFile<'_>> = read
                .iter()
                .map(|(bytes, media_type, name)| NewFile {
                    bytes,
                    media_type,
                    name: name.as_deref(),
                })
                .collect();
            let (id, refs) = store.note_with_files(text, &files, RecordOptions::default())?;
            let bytes: u64 = refs.iter().map(|r| r.size).sum();
            eprintln!(
                "note recorded with {} attached ({bytes} bytes); uploaded at the next sync after it",
                show::files(refs.len())
            );
            outln!("{id}");
        }
        DeviceCommand::Panic(loc) => {
            let id = store.record(
                EventBody::Panic {
                    location: loc.location(),
                },
                RecordOptions::default(),
            )?;
            eprintln!("PANIC recorded; sync to raise it in the control room");
            outln!("{id}");
        }
        DeviceCommand::Incident {
            category,
            severity,
            description,
            location,
            attachments,
        } => {
            let incident = store.report_incident(
                IncidentReport {
                    incident: IncidentId::generate(),
                    category,
                    severity,
                    description,
                    location: location.location(),
                },
                attachments,
                RecordOptions::default(),
            )?;
            eprintln!("incident reported ({category}, {severity})");
            outln!("{incident}");
        }
        DeviceCommand::Incidents { incident, json } => {
            let incidents = match incident {
                Some(id) => vec![
                    store
                        .incident(id)?
                        .ok_or_else(|| anyhow!("this phone holds no incident {id}"))?,
                ],
                None => store.incidents()?,
            };
            let list: Vec<Value> = incidents
                .iter()
                .map(|i| incident_json(&i.state, i.pending, i.rejected.as_deref()))
                .collect::<Result<_>>()?;
            match (incident.is_some(), json.json) {
                (true, true) => outln!("{}", list.first().unwrap_or(&Value::Null)),
                (true, false) => {
                    outln!(
                        "{}",
                        show::incident_detail(list.first().unwrap_or(&Value::Null))
                    )
                }
                (false, true) => outln!("{}", json!({ "incidents": list })),
                (false, false) => outln!("{}", show::incidents_table(&list, true)),
            }
        }
        DeviceCommand::IncidentUpdate { incident, action } => {
            let i = store.act_on_incident(incident, action.action()?)?;
            outln!(
                "{}",
                show::incident_detail(&incident_json(&i.state, i.pending, i.rejected.as_deref())?)
            );
        }
        DeviceCommand::Config(JsonArg { json }) => match store.site_config()? {
            None if json => outln!("null"),
            None => {
                eprintln!("no site configuration yet; sync once with the server");
            }
            Some(c) if json => outln!("{}", serde_json::to_string(&c)?),
            Some(c) => outln!(
                "{}",
                show::config(&c, None, chrono::Utc::now().timestamp_millis())
            ),
        },
        DeviceCommand::Tour { tour, at, json } => {
            let now = at.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            let windows = store.tour_progress(&tour, now)?;
            // Present: tour_progress has just read it.
            let zone = store.site_config()?.map_or(SiteZone::UTC, |c| c.time_zone);
            // The flags of this phone's scan that counted for each checkpoint, found by its
            // checkpoint and time (a state's scan time is corrected; another guard's scan, from
            // the server, has none here).
            let events = store.events(None)?;
            let corrected = store.corrected(now)?;
            let mut scan_flags: HashMap<(CheckpointId, i64), Vec<EventFlag>> = HashMap::new();
            for (e, flags) in events.iter().zip(store.flags_of(&events)?) {
                if let EventBody::CheckpointScanned(scan) = &e.event.record.body {
                    scan_flags.insert((scan.checkpoint.clone(), corrected.event(e)), flags);
                }
            }
            let none = Vec::new();
            let flags_of = |cp: &CheckpointId, at: Option<i64>| {
                at.and_then(|at| scan_flags.get(&(cp.clone(), at)))
                    .unwrap_or(&none)
            };
            if json.json {
                let windows: Vec<Value> = windows
                    .iter()
                    .map(|w| {
                        let checkpoints: Vec<Value> = w
                            .checkpoints
                            .iter()
                            .map(|(cp, state)| {
                                let at = state.scanned_at_ms();
                                json!({
                                    "checkpoint": cp,
                                    "state": state.code(),
                                    "scanned_at": at.map(rfc3339_ms),
                                    "flags": flags_of(cp, at),
                                })
                            })
                            .collect();
                        json!({
                            "start": rfc3339_ms(w.window.start_ms),
                            "end": rfc3339_ms(w.window.end_ms),
                            "checkpoints": checkpoints,
                        })
                    })
                    .collect();
                outln!(
                    "{}",
                    json!({
                        "tour": tour,
                        "at": rfc3339_ms(now),
                        "time_zone": zone.name(),
                        "windows": windows,
                    })
                );
            } else if windows.is_empty() {
                outln!(
                    "tour {} has no window within 24 hours of {}: nothing is due, late or missed",
                    shown(&tour),
                    show::site_ms(zone, now)
                );
            } else {
                let mut t = show::table(&[
                    "WINDOW START",
                    "WINDOW END",
                    "CHECKPOINT",
                    "STATE",
                    "SCANNED",
                    "FLAGS",
                ]);
                for w in &windows {
                    for (cp, state) in &w.checkpoints {
                        let at = state.scanned_at_ms();
                        let flags: &[EventFlag] = flags_of(cp, at);
                        t.add_row(vec![
                            show::site_ms(zone, w.window.start_ms),
                            show::site_ms(zone, w.window.end_ms),
                            shown(cp.as_str()),
                            state.to_string(),
                            at.map_or_else(|| NONE.to_owned(), |ms| show::site_ms(zone, ms)),
                            if flags.is_empty() {
                                NONE.to_owned()
                            } else {
                                shown(&flags_in_words(flags))
                            },
                        ]);
                    }
                }
                outln!("{}", show::render(&mut t));
            }
        }
        DeviceCommand::Alarms(JsonArg { json }) => {
            let alarms = store.alarms()?;
            if json {
                let list: Vec<Value> = alarms
                    .iter()
                    .map(|a| {
                        let (state, by, at) = match &a.state {
                            AlarmState::Queued => ("queued", None, None),
                            AlarmState::Delivered => ("delivered", None, None),
                            AlarmState::Acknowledged { by, at_ms } => {
                                ("acknowledged", Some(by), Some(rfc3339_ms(*at_ms)))
                            }
                        };
                        json!({
                            "event_id": a.event,
                            "raised_at": rfc3339_ms(a.recorded_ms),
                            "state": state,
                            "acknowledged_by": by,
                            "acknowledged_at": at,
                        })
                    })
                    .collect();
                outln!("{}", json!({ "alarms": list }));
            } else {
                let mut t = show::table(&["RAISED", "ALARM", "STATE", "ACKNOWLEDGED"]);
                for a in &alarms {
                    let acknowledged = match &a.state {
                        AlarmState::Acknowledged { at_ms, .. } => local_ms(*at_ms),
                        _ => NONE.to_owned(),
                    };
                    t.add_row(vec![
                        local_ms(a.recorded_ms),
                        a.event.to_string(),
                        shown(&a.state.to_string()),
                        acknowledged,
                    ]);
                }
                outln!("{}", show::render(&mut t));
            }
        }
        DeviceCommand::Checkin { command } => match command {
            CheckinCommand::Start { every } => {
                let id = store.start_check_in_timer(every)?;
                eprintln!("check-in timer started: check in within {every} min");
                outln!("{id}");
            }
            CheckinCommand::Now => {
                let id = store.check_in()?;
                eprintln!("checked in");
                outln!("{id}");
            }
            CheckinCommand::Stop => {
                let id = store.stop_check_in_timer()?;
                eprintln!("check-in timer stopped");
                outln!("{id}");
            }
            CheckinCommand::Status(JsonArg { json }) => {
                let status = store.check_in_status()?;
                if json {
                    let value = match status {
                        Some(s) => json!({
                            "every_min": s.every_min,
                            "since": rfc3339_ms(s.since_ms),
                            "due_at": rfc3339_ms(s.due_ms),
                            "missed": s.missed,
                        }),
                        None => Value::Null,
                    };
                    outln!("{}", json!({ "check_in": value }));
                } else {
                    match status {
                        None => outln!("no check-in timer running"),
                        Some(s) if s.missed => outln!(
                            "CHECK-IN MISSED: was due {} (every {} min); check in now",
                            local_ms(s.due_ms),
                            s.every_min
                        ),
                        Some(s) => outln!(
                            "next check-in due {} (every {} min)",
                            local_ms(s.due_ms),
                            s.every_min
                        ),
                    }
                }
            }
        },
        DeviceCommand::Handover { text, to } => {
            let id = store.record(
                EventBody::Handover { to_guard: to, text },
                RecordOptions::default(),
            )?;
            eprintln!("handover note recorded");
            outln!("{id}");
        }
        DeviceCommand::Log(JsonArg { json }) => {
            // Flags under the configuration held now and the last measured clock offset, as
            // the phone shows them to the guard.
            let events = store.events(None)?;
            let flags = store.flags_of(&events)?;
            if json {
                let mut list = Vec::with_capacity(events.len());
                for (e, flags) in events.iter().zip(&flags) {
                    let mut v = e.event.to_json(None);
                    v["delivered"] = e.delivered.into();
                    v["flags"] = serde_json::to_value(flags)?;
                    list.push(v);
                }
                outln!("{}", json!({ "events": list }));
            } else {
                let mut t =
                    show::table(&["SEQ", "TIME", "GUARD", "KIND", "SYNC", "DETAIL", "FLAGS"]);
                for (e, flags) in events.iter().zip(&flags) {
                    t.add_row(log_row(&e.event, e.delivered, flags));
                }
                outln!("{}", show::render(&mut t));
            }
        }
        DeviceCommand::Sync { server, retry } => {
            let server = match server.as_deref().or(store.server_url()) {
                Some(url) => url.to_owned(),
                None => return Err(patrol_mobile::Error::NotEnrolled.into()),
            };
            let client =
                SyncClient::with_transport(&server, &args.transport.transport()?, DEFAULT_TIMEOUT)?;
            let mut attempt = 0;
            let report = loop {
                match client.sync(&mut store).await {
                    Ok(report) => break report,
                    Err(e) if e.is_retryable() && attempt < retry => {
                        attempt += 1;
                        let status = store.status()?;
                        let now = chrono::Utc::now().timestamp_millis();
                        let wait = status.next_attempt_ms.map_or(0, |at| at - now).max(0);
                        eprintln!(
                            "sync failed ({}); retry {attempt}/{retry} in {wait} ms",
                            shown(&e.to_string())
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            outln!(
                "synced: {} event(s) delivered, {} pending",
                report.events_delivered,
                report.pending_events
            );
            if report.attachments_uploaded > 0 || report.attachments_pending > 0 {
                outln!(
                    "attachments: {} uploaded, {} pending",
                    report.attachments_uploaded,
                    report.attachments_pending
                );
            }
            if let Some(why) = &report.attachment_error {
                eprintln!("warning: attachment upload: {}", shown(why));
            }
            if report.credential_rotated {
                outln!("the device's credential was rotated, as the server asked");
            }
            if let Some(why) = &report.config_unreadable {
                eprintln!("warning: {}", shown(why));
            }
            for r in &report.rejected {
                outln!(
                    "refused: shift {}: {} ({})",
                    r.shift,
                    shown(&r.message),
                    shown(&r.code)
                );
            }
            if !report.rejected.is_empty() {
                bail!(
                    "{} shift log(s) refused by the server",
                    report.rejected.len()
                );
            }
        }
    }
    Ok(())
}

/// One row of the log's table.
fn log_row(e: &Event, delivered: bool, flags: &[EventFlag]) -> Vec<String> {
    let detail = describe(&e.record.body);
    vec![
        e.record.seq.to_string(),
        local_ms(e.record.time.wall_ms),
        shown(e.guard.as_str()),
        e.record.body.kind().to_owned(),
        if delivered { "delivered" } else { "pending" }.to_owned(),
        if detail.is_empty() {
            NONE.to_owned()
        } else {
            shown(&detail)
        },
        if flags.is_empty() {
            NONE.to_owned()
        } else {
            shown(&flags_in_words(flags))
        },
    ]
}

/// A file to attach, read whole; one over the size limit is refused before it is read.
fn read_attachment(file: &std::path::Path) -> Result<Vec<u8>> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > patrol_core::protocol::MAX_ATTACHMENT_BYTES {
        return Err(patrol_mobile::Error::AttachmentTooLarge {
            size,
            limit: patrol_core::protocol::MAX_ATTACHMENT_BYTES,
        }
        .into());
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// A media type from a file name's extension, for the common kinds a phone records.
fn guess_media_type(file: &std::path::Path) -> &'static str {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "heic" => "image/heic",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "3gp" => "video/3gpp",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}
