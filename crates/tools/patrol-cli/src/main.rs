//! `patrol`: plays a guard's phone (`patrol device`) and the control room (`patrol control`)
//! from a terminal, through the same library calls and API an app and a console use. A phone
//! store is made by enrolling with a code from an administrator; the control room presents a
//! user token (`--token` or `PATROL_TOKEN`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use patrol_core::evidence::{PublicKey, ShiftLogExport, verify_export};
use patrol_core::incident::{Attachment, IncidentAction, IncidentState, Party};
use patrol_core::{
    CheckpointId, Event, EventBody, EventId, GuardId, IncidentCategory, IncidentId, IncidentReport,
    Location, Scan, ScanMethod, Severity, ShiftId, SiteId,
};
use patrol_mobile::sync::DEFAULT_TIMEOUT;
use patrol_mobile::{DeviceStore, RecordOptions, StoreOptions, SyncClient, Transport};

mod shown;
use shown::shown;

/// `println!` that returns the write's error from the function instead of panicking on it (a
/// reader that closed the pipe, `patrol ... | head -1`); `main` ends such a run quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            return Err(anyhow::Error::from(e));
        }
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "patrol",
    version,
    about = "Guard patrol from a terminal: a guard's phone and the control room"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Act as a guard's phone: record a shift offline into a local store, then sync it.
    Device(DeviceArgs),
    /// Act as the control room or an administrator: read the merged site record, issue
    /// enrollment codes, manage users and devices.
    Control(ControlArgs),
    /// Check an exported shift log (`patrol control export-shift-log`) offline against the
    /// device's public key: every signature holds, and no change of the log was altered,
    /// removed or inserted. Exits non-zero if it does not verify.
    Verify {
        /// The exported file (JSON).
        file: PathBuf,
        /// The device's ed25519 public key, 64 hex digits, as recorded at enrollment (`patrol
        /// device status` on the phone; `patrol control devices` on the server).
        #[arg(long)]
        public_key: String,
    },
}

#[derive(Args, Debug)]
struct DeviceArgs {
    /// The phone's store (one SQLite file).
    #[arg(long, env = "PATROL_STORE")]
    store: PathBuf,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(subcommand)]
    command: DeviceCommand,
}

/// How the server may be reached: `https://` (checked against the system's certificate roots
/// or `--ca-cert`), and `http://` only on this machine unless `--allow-plain-http`.
#[derive(Args, Debug)]
struct TransportArgs {
    /// Trust only the PEM certificates in FILE for the server's HTTPS (the site's own
    /// certificate authority, or the server's self-signed certificate) instead of the system's
    /// roots.
    #[arg(long, env = "PATROL_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<PathBuf>,
    /// Allow plain http:// to a server that is not on this machine, for a lab: anyone on the
    /// network can then read and alter the traffic, credentials included.
    #[arg(long, env = "PATROL_ALLOW_PLAIN_HTTP", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    allow_plain_http: bool,
}

impl TransportArgs {
    fn transport(&self) -> Result<Transport> {
        let ca_certificates_pem = match &self.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --ca-cert {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Transport {
            allow_plain_http: self.allow_plain_http,
            ca_certificates_pem,
        })
    }
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Enroll this phone with a server using a one-time code from an administrator, creating
    /// its store (once per phone); prints the device id and site the server assigned.
    Enroll {
        #[arg(long, env = "PATROL_SERVER")]
        server: String,
        /// The enrollment code (pe_…).
        #[arg(long)]
        code: String,
    },
    /// Show the device id, site, shift in progress and sync status.
    Status,
    /// Start or end a shift.
    Shift {
        #[command(subcommand)]
        command: ShiftCommand,
    },
    /// Record a checkpoint scan.
    Scan(ScanArgs),
    /// Record a note in the shift log.
    Note { text: String },
    /// Raise a panic alarm.
    Panic(LocationArgs),
    /// Report an incident.
    Incident {
        /// theft, shoplifting, fraud, robbery, fighting, provocation, dispute, fire, explosive,
        /// toxic, radioactive or other.
        #[arg(long)]
        category: IncidentCategory,
        /// low, medium, high or critical.
        #[arg(long, default_value = "medium")]
        severity: Severity,
        #[arg(long)]
        description: String,
        #[command(flatten)]
        location: LocationArgs,
        /// A photo or recording the app keeps: SHA256HEX:MEDIA_TYPE:SIZE[:NAME] (repeatable).
        #[arg(long = "attach", value_parser = parse_attachment)]
        attachments: Vec<Attachment>,
    },
    /// List the incidents this phone holds (reported here, worked here, or assigned to the
    /// guard), as of the last sync.
    Incidents,
    /// Act on an incident as the guard on duty: one action per call.
    IncidentUpdate {
        /// The incident id.
        incident: IncidentId,
        #[command(flatten)]
        action: IncidentActionArgs,
    },
    /// Show the site configuration the phone holds.
    Config,
    /// Tour progress from this phone's scans and its site configuration (works offline).
    Tour {
        tour: String,
        /// The time to evaluate at, ms since the Unix epoch (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
    /// Panic alarms raised on this phone: queued, delivered or acknowledged.
    Alarms,
    /// Leave a handover note for the next guard.
    Handover {
        text: String,
        /// The guard taking over.
        #[arg(long)]
        to: Option<GuardId>,
    },
    /// List the local log.
    Log {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
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
enum ShiftCommand {
    /// Start a shift for a guard.
    Start {
        #[arg(long)]
        guard: GuardId,
    },
    /// End the shift in progress.
    End {
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
    /// SHA256HEX:MEDIA_TYPE:SIZE[:NAME]
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
    #[arg(long, requires = "lon", allow_hyphen_values = true)]
    lat: Option<f64>,
    #[arg(long, requires = "lat", allow_hyphen_values = true)]
    lon: Option<f64>,
    /// Accuracy radius in metres.
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

#[derive(Args, Debug)]
struct ControlArgs {
    /// The patrol server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "PATROL_SERVER")]
    server: String,
    /// A user token (pu_…), from `patrol-server admin create` or an administrator.
    #[arg(long, env = "PATROL_TOKEN", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(subcommand)]
    command: ControlCommand,
}

#[derive(Subcommand, Debug)]
enum ControlCommand {
    /// Pull the merged site log in canonical order (all of it, or pages after a cursor).
    Pull {
        #[arg(long)]
        site: SiteId,
        /// Start after this server sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Events per page.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the site's devices: enrollment, revocation, public key, last sync, pending events,
    /// clock skew.
    Devices {
        #[arg(long)]
        site: SiteId,
    },
    /// Export a shift log with the device's signatures, as evidence `patrol verify` checks.
    ExportShiftLog {
        #[arg(long)]
        site: SiteId,
        /// The shift id (the `shift_id` of its events).
        #[arg(long)]
        shift: ShiftId,
        /// Where to write the export (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// List the site's incidents (newest first), or show one.
    Incidents {
        #[arg(long)]
        site: SiteId,
        /// Show only this incident, in full.
        incident: Option<IncidentId>,
    },
    /// Act on an incident: acknowledge, dispatch, resolve, close, reopen, assign (--to),
    /// set_severity (--severity) or add_note (--text).
    IncidentAction {
        #[arg(long)]
        site: SiteId,
        incident: IncidentId,
        action: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        severity: Option<Severity>,
        #[arg(long)]
        text: Option<String>,
    },
    /// Show the site configuration, or replace it with a JSON file
    /// ({"base_version", "checkpoints", "tours", "post_orders"}; see docs/protocol.md).
    Config {
        #[arg(long)]
        site: SiteId,
        #[arg(long)]
        set: Option<PathBuf>,
    },
    /// Acknowledge a guard's panic alarm (its event id); the phone shows it at its next sync.
    AckAlarm {
        #[arg(long)]
        site: SiteId,
        event: EventId,
    },
    /// Issue a one-time code that enrolls one phone on a site (administrators); prints the code
    /// alone on stdout and when it expires on stderr.
    EnrollmentCode {
        #[arg(long)]
        site: SiteId,
        /// Lifetime in seconds (the server's default, a day, if not given).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Revoke a device: its syncs are refused from then on (administrators).
    RevokeDevice {
        #[arg(long)]
        site: SiteId,
        device: String,
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
    },
    /// List the users you manage.
    List,
    /// Revoke a user's token, by id.
    Revoke { id: String },
    /// Give a user (by id) a new token, printed alone on stdout, once, for one who lost theirs
    /// or let it expire; the old one stops at once.
    Token { id: String },
}

fn short(id: &impl ToString) -> String {
    id.to_string().chars().take(8).collect()
}

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
            format!("{} ({how})", scan.checkpoint)
        }
        EventBody::IncidentReported(r) => {
            format!(
                "{:?}/{:?} {}: {}",
                r.category,
                r.severity,
                short(&r.incident),
                r.description
            )
        }
        EventBody::Panic { .. } => "PANIC".into(),
        EventBody::Note { text } => text.clone(),
        EventBody::Handover { to_guard, text } => match to_guard {
            Some(g) => format!("to {g}: {text}"),
            None => text.clone(),
        },
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn print_incident(s: &IncidentState, pending: bool, rejected: Option<&str>) -> Result<()> {
    let category = s.category.map(|c| c.to_string()).unwrap_or_default();
    let severity = s.severity.map(|c| c.to_string()).unwrap_or_default();
    outln!(
        "incident {} {category} {severity} {}{}{}{}",
        s.id,
        s.status.as_str(),
        s.assignee
            .as_deref()
            .map(|a| format!(" assigned to {}", shown(a)))
            .unwrap_or_default(),
        if pending { " (not yet synced)" } else { "" },
        rejected
            .map(|r| format!(" REFUSED: {}", shown(r)))
            .unwrap_or_default()
    );
    if let Some(d) = &s.description {
        outln!("  {}", shown(d));
    }
    for n in &s.notes {
        let by = match &n.by {
            Party::Guard { guard, .. } => guard.to_string(),
            Party::Operator { user } => format!("control room ({user})"),
        };
        outln!(
            "  note {} {}: {}",
            ms_to_rfc3339(n.wall_ms),
            shown(&by),
            shown(&n.text)
        );
    }
    for a in &s.attachments {
        let hex: String = a.sha256.iter().map(|b| format!("{b:02x}")).collect();
        outln!(
            "  attachment {} {} bytes sha256 {hex}",
            shown(&a.media_type),
            a.size
        );
    }
    Ok(())
}

fn print_event(e: &Event, delivered: bool) -> Result<()> {
    outln!(
        "{:>5}  {}  {:<8}  {:<18}  {:<9}  {}",
        e.record.seq,
        patrol_core::event::format_time_ms(e.record.time.wall_ms),
        shown(&e.guard.to_string()),
        e.record.body.kind(),
        if delivered { "delivered" } else { "pending" },
        shown(&describe(&e.record.body))
    );
    Ok(())
}

async fn device(args: DeviceArgs) -> Result<()> {
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
        outln!("device {} on site {}", store.device_id(), store.site());
        return Ok(());
    }
    let mut store = DeviceStore::open(&args.store)
        .with_context(|| format!("opening {}", args.store.display()))?;
    match args.command {
        DeviceCommand::Enroll { .. } => {}
        DeviceCommand::Status => {
            outln!("device   {}", store.device_id());
            outln!("site     {}", store.site());
            match store.server_url() {
                Some(url) => outln!("server   {url}"),
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
                    s.guard,
                    patrol_core::event::format_time_ms(s.started_ms)
                ),
                None => outln!("shift    none open"),
            }
            let st = store.status()?;
            outln!("pending  {} event(s)", st.pending_events);
            if let Some(ms) = st.oldest_pending_ms {
                outln!("oldest   {}", patrol_core::event::format_time_ms(ms));
            }
            if let Some(ms) = st.last_success_ms {
                outln!("synced   {}", patrol_core::event::format_time_ms(ms));
            }
            if let Some(err) = st.last_error {
                outln!("error    {}", shown(&err.to_string()));
            }
            if st.consecutive_failures > 0 {
                let next = st.next_attempt_ms.map(patrol_core::event::format_time_ms);
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
                    shown(&r.code.to_string())
                );
            }
        }
        DeviceCommand::Shift {
            command: ShiftCommand::Start { guard },
        } => {
            let shift = store.start_shift(guard)?;
            outln!("shift {shift} started");
        }
        DeviceCommand::Shift {
            command: ShiftCommand::End { note },
        } => {
            let id = store.end_shift(note)?;
            outln!("shift ended ({id})");
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
            let flags = store.scan_flags(&scan)?;
            let checkpoint = scan.checkpoint.clone();
            let id = store.scan(
                scan,
                RecordOptions {
                    event_id: scan_event_id,
                    wall_ms: None,
                },
            )?;
            if flags.is_empty() {
                outln!("recorded {id} at {checkpoint}");
            } else {
                outln!("recorded {id} at {checkpoint}, flagged: {flags:?}");
            }
        }
        DeviceCommand::Note { text } => outln!("recorded {}", store.note(text)?),
        DeviceCommand::Panic(loc) => {
            let id = store.record(
                EventBody::Panic {
                    location: loc.location(),
                },
                RecordOptions::default(),
            )?;
            outln!("PANIC recorded {id}; sync to raise it in the control room");
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
            outln!("incident {incident} reported");
        }
        DeviceCommand::Incidents => {
            for i in store.incidents()? {
                print_incident(&i.state, i.pending, i.rejected.as_deref())?;
            }
        }
        DeviceCommand::IncidentUpdate { incident, action } => {
            let i = store.act_on_incident(incident, action.action()?)?;
            print_incident(&i.state, i.pending, i.rejected.as_deref())?;
        }
        DeviceCommand::Config => match store.site_config()? {
            None => outln!("no site configuration yet; sync once with the server"),
            Some(c) => {
                outln!("site config version {}", c.version);
                for cp in &c.checkpoints {
                    outln!(
                        "  checkpoint {:<16} {} (tags: {})",
                        cp.id,
                        shown(&cp.name),
                        shown(&cp.tags.join(", "))
                    );
                }
                for t in &c.tours {
                    let cps: Vec<String> = t.checkpoints.iter().map(ToString::to_string).collect();
                    outln!(
                        "  tour {:<16} {}: {}",
                        t.id,
                        shown(&t.name),
                        shown(&cps.join(" -> "))
                    );
                }
                for p in &c.post_orders {
                    outln!("  post order {}: {}", shown(&p.title), shown(&p.text));
                }
            }
        },
        DeviceCommand::Tour { tour, at } => {
            let now = at.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            for w in store.tour_progress(&tour, now)? {
                outln!(
                    "window {} .. {}",
                    ms_to_rfc3339(w.window.start_ms),
                    ms_to_rfc3339(w.window.end_ms)
                );
                for (cp, state) in w.checkpoints {
                    outln!("  {cp:<16} {state:?}");
                }
            }
        }
        DeviceCommand::Alarms => {
            for a in store.alarms()? {
                outln!("{} {} {:?}", ms_to_rfc3339(a.recorded_ms), a.event, a.state);
            }
        }
        DeviceCommand::Handover { text, to } => {
            let id = store.record(
                EventBody::Handover { to_guard: to, text },
                RecordOptions::default(),
            )?;
            outln!("recorded {id}");
        }
        DeviceCommand::Log { json } => {
            for e in store.events(None)? {
                if json {
                    let mut v = e.event.to_json(None);
                    v["delivered"] = e.delivered.into();
                    outln!("{v}");
                } else {
                    print_event(&e.event, e.delivered)?;
                }
            }
        }
        DeviceCommand::Sync { server, retry } => {
            let server = match server.as_deref().or(store.server_url()) {
                Some(url) => url.to_owned(),
                None => bail!("this store is not enrolled, so it cannot sync; enroll the phone"),
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
            if report.credential_rotated {
                outln!("the device's credential was rotated, as the server asked");
            }
            for r in &report.rejected {
                outln!(
                    "refused: shift {}: {} ({})",
                    r.shift,
                    shown(&r.message),
                    shown(&r.code.to_string())
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

/// One line about a pulled event, from its JSON fields.
fn feed_detail(e: &serde_json::Value) -> String {
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
            format!("{}/{}: {}", s("category"), s("severity"), s("description"))
        }
        "panic" => "PANIC".into(),
        "note" | "handover" => s("text"),
        "shift_ended" => s("note"),
        _ => String::new(),
    }
}

/// The control room's HTTP client: every request presents the user's token.
#[derive(Debug)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        answer(self.authorized(self.http.get(&url)), &url).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        answer(self.authorized(self.http.post(&url).json(&body)), &url).await
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        answer(self.authorized(self.http.put(&url).json(&body)), &url).await
    }

    /// With the token; an empty one is left out, so that the server says none was given.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            request
        } else {
            request.bearer_auth(&self.token)
        }
    }
}

async fn answer(request: reqwest::RequestBuilder, url: &str) -> Result<serde_json::Value> {
    let resp = request.send().await.with_context(|| url.to_owned())?;
    let status = resp.status();
    let body: serde_json::Value = resp
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

async fn control(args: ControlArgs) -> Result<()> {
    let transport = args.transport.transport()?;
    let api = Api {
        http: transport.client(DEFAULT_TIMEOUT)?,
        base: transport.checked_base_url(&args.server)?.to_owned(),
        token: args.token.trim().to_owned(),
    };
    match args.command {
        ControlCommand::Pull {
            site,
            after,
            limit,
            json,
        } => {
            let mut cursor = after;
            let mut total = 0u64;
            loop {
                let page = api
                    .get(&format!(
                        "/api/v1/sites/{site}/events?after={cursor}&limit={limit}"
                    ))
                    .await?;
                let events = page["events"].as_array().cloned().unwrap_or_default();
                for e in &events {
                    if json {
                        outln!("{e}");
                    } else {
                        let s = |k: &str| shown(e[k].as_str().unwrap_or(""));
                        outln!(
                            "{:>6}  {}  {}  {:<10}  {:<18}  {}",
                            e["seq"],
                            s("device_time"),
                            s("received_at"),
                            s("guard_id"),
                            s("kind"),
                            shown(&feed_detail(e))
                        );
                    }
                }
                total += events.len() as u64;
                cursor = page["next"].as_u64().unwrap_or(cursor);
                if events.is_empty() || !page["more"].as_bool().unwrap_or(false) {
                    break;
                }
            }
            if !json {
                outln!("{total} event(s); next cursor {cursor}");
            }
        }
        ControlCommand::Devices { site } => {
            let body = api.get(&format!("/api/v1/sites/{site}/devices")).await?;
            outln!("{}", serde_json::to_string_pretty(&body)?);
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
        ControlCommand::Incidents { site, incident } => {
            let path = match incident {
                Some(id) => format!("/api/v1/sites/{site}/incidents/{id}"),
                None => format!("/api/v1/sites/{site}/incidents"),
            };
            let body = api.get(&path).await?;
            outln!("{}", serde_json::to_string_pretty(&body)?);
        }
        ControlCommand::IncidentAction {
            site,
            incident,
            action,
            to,
            severity,
            text,
        } => {
            // The operator acting is the token's user.
            let mut body = serde_json::json!({ "action": action });
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
            outln!("{}", serde_json::to_string_pretty(&state)?);
        }
        ControlCommand::Config { site, set } => {
            let path = format!("/api/v1/sites/{site}/config");
            let body = match set {
                None => api.get(&path).await?,
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let json: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))?;
                    api.put(&path, json).await?
                }
            };
            outln!("{}", serde_json::to_string_pretty(&body)?);
        }
        ControlCommand::AckAlarm { site, event } => {
            let ack = api
                .post(
                    &format!("/api/v1/sites/{site}/alarms/{event}/acknowledge"),
                    serde_json::json!({}),
                )
                .await?;
            outln!("{}", serde_json::to_string_pretty(&ack)?);
        }
        ControlCommand::EnrollmentCode { site, ttl_secs } => {
            let body = match ttl_secs {
                Some(ttl) => serde_json::json!({ "ttl_secs": ttl }),
                None => serde_json::json!({}),
            };
            let code = api
                .post(&format!("/api/v1/sites/{site}/enrollment-codes"), body)
                .await?;
            eprintln!(
                "enrollment code for site {site}, one use, expires {}:",
                shown(code["expires_at"].as_str().unwrap_or("?"))
            );
            outln!("{}", shown(code["code"].as_str().unwrap_or_default()));
        }
        ControlCommand::RevokeDevice { site, device } => {
            let body = api
                .post(
                    &format!("/api/v1/sites/{site}/devices/{device}/revoke"),
                    serde_json::json!({}),
                )
                .await?;
            outln!(
                "device {} of site {site} revoked at {}",
                shown(&device),
                shown(body["revoked_at"].as_str().unwrap_or("?"))
            );
        }
        ControlCommand::User {
            command:
                UserCommand::Create {
                    name,
                    role,
                    sites,
                    all_sites,
                },
        } => {
            let sites: Vec<&str> = sites.iter().map(SiteId::as_str).collect();
            let body = api
                .post(
                    "/api/v1/users",
                    serde_json::json!({
                        "name": name, "role": role, "sites": sites, "all_sites": all_sites
                    }),
                )
                .await?;
            eprintln!(
                "created {} {} ({}); its token follows, shown this once",
                shown(body["user"]["role"].as_str().unwrap_or("?")),
                shown(body["user"]["name"].as_str().unwrap_or("?")),
                shown(body["user"]["id"].as_str().unwrap_or("?")),
            );
            outln!("{}", shown(body["token"].as_str().unwrap_or_default()));
        }
        ControlCommand::User {
            command: UserCommand::List,
        } => {
            let body = api.get("/api/v1/users").await?;
            for u in body["users"].as_array().cloned().unwrap_or_default() {
                let s = |k: &str| shown(u[k].as_str().unwrap_or(""));
                let sites = if u["all_sites"] == true {
                    "all sites".to_owned()
                } else {
                    u["sites"]
                        .as_array()
                        .map(|a| {
                            shown(
                                &a.iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            )
                        })
                        .unwrap_or_default()
                };
                let state = match u["revoked_at"].as_str() {
                    Some(at) => format!("revoked {}", shown(at)),
                    None => "active".into(),
                };
                outln!(
                    "{}\t{}\t{}\t{sites}\t{}\ttoken expires {}\t{state}",
                    s("id"),
                    s("name"),
                    s("role"),
                    s("created_at"),
                    s("token_expires_at")
                );
            }
        }
        ControlCommand::User {
            command: UserCommand::Revoke { id },
        } => {
            let body = api
                .post(&format!("/api/v1/users/{id}/revoke"), serde_json::json!({}))
                .await?;
            outln!(
                "user {} revoked at {}",
                shown(body["name"].as_str().unwrap_or("?")),
                shown(body["revoked_at"].as_str().unwrap_or("?"))
            );
        }
        ControlCommand::User {
            command: UserCommand::Token { id },
        } => {
            let body = api
                .post(&format!("/api/v1/users/{id}/token"), serde_json::json!({}))
                .await?;
            eprintln!(
                "gave user {} a new token, valid until {}; the old one no longer works. The token \
                 follows, shown this once",
                shown(body["user"]["name"].as_str().unwrap_or("?")),
                shown(body["expires_at"].as_str().unwrap_or("?"))
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
                shown(user["name"].as_str().unwrap_or("?")),
                shown(user["role"].as_str().unwrap_or("?")),
                shown(user["id"].as_str().unwrap_or("?"))
            );
            let expires = shown(body["token_expires_at"].as_str().unwrap_or("?"));
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
        ControlCommand::Token {
            command: TokenCommand::Rotate,
        } => {
            let body = api
                .post("/api/v1/users/me/token", serde_json::json!({}))
                .await?;
            let old = match body["previous_token_valid_until"].as_str() {
                Some(until) => format!("the old one works until {}", shown(until)),
                None => "the old one no longer works".to_owned(),
            };
            eprintln!(
                "your new token, valid until {}, follows, shown this once; {old}",
                shown(body["expires_at"].as_str().unwrap_or("?"))
            );
            outln!("{}", shown(body["token"].as_str().unwrap_or_default()));
        }
    }
    Ok(())
}

/// `patrol verify`: offline, no server involved.
fn verify(file: &std::path::Path, public_key: &str) -> Result<()> {
    let key: PublicKey = public_key.parse().context("--public-key")?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let export: ShiftLogExport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a shift-log export", file.display()))?;
    let verified = verify_export(&export, &key)
        .map_err(|e| anyhow!("NOT VERIFIED: {e}"))
        .with_context(|| format!("{}", file.display()))?;
    outln!(
        "verified: shift {} of device {} on site {} (guard {})",
        verified.meta.shift,
        verified.meta.device,
        shown(verified.meta.site.as_str()),
        shown(&verified.meta.guard.to_string())
    );
    outln!(
        "  {} event(s) in {} change(s), exactly those the device signed; {} signature(s), the \
         last made at {} (device clock)",
        verified.events,
        verified.changes,
        verified.signatures,
        patrol_core::event::format_time_ms(verified.last_signed_at_ms)
    );
    if verified.ended {
        outln!("  the shift's end is among the signed events: the log is complete");
    } else {
        outln!(
            "  the shift's end is not among the signed events: the shift was still open at the \
             device's last sync, or events after that sync are not in this export"
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Device(args) => device(args).await,
        Command::Control(args) => control(args).await,
        Command::Verify { file, public_key } => verify(&file, &public_key),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever reads the output stopped (`patrol ... | head -1`): nothing is wrong.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // The error can carry a server's message or a store's text.
            eprintln!("error: {}", shown(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a write to standard output that found its reader gone.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
