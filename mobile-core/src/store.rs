//! The device store: one SQLite file holding this phone's shift logs, owned by one store
//! object at a time (the file stays locked while it is open). Every recording call commits the
//! event's record before it returns; the automerge change that carries it in the shift log is
//! committed with it, or (with `synchronous=FULL`, where it is built while the disk syncs) with
//! the next commit, and built again from the record if the app died in between. Delivery is
//! tracked per event and set only from the server's heads. The file and its WAL are the app's
//! alone (0600), as they hold the device credential and the signing key ([`files`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use patrol_core::evidence::{DeviceKey, PublicKey};
use patrol_core::merge::{acknowledge, plan_push};
use patrol_core::protocol::{DocOutcome, DocPush, DocRef, SyncRequest, SyncResponse};
use patrol_core::{
    ChangeHash, DeviceId, DeviceTime, Event, EventBody, EventId, EventRecord, GuardId, Hlc,
    LocalChange, PreparedEvent, Scan, ShiftId, ShiftLog, ShiftMeta, SiteId,
};
use rusqlite::{Connection, OptionalExtension, params};

mod attachments;
mod change_builder;
mod checkin;
mod collab;
mod files;

use attachments::KeptFile;
pub use attachments::{NewFile, PendingUpload};
pub use checkin::CheckInStatus;
pub use collab::{Alarm, AlarmState, Corrected, LocalIncident};

use crate::backoff::RetryPolicy;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::schema;
use change_builder::ChangeBuilder;

/// How hard each commit pushes to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a returned call survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives the app being killed, may lose the last commits on power loss.
    Normal,
}

/// Options for opening a store.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub durability: Durability,
    /// The clock to read; the system's if `None`.
    pub clock: Option<Arc<dyn Clock>>,
}

/// Optional overrides when recording an event.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordOptions {
    /// An id chosen by the app, so a call retried after a crash records the event once.
    pub event_id: Option<EventId>,
    /// The wall-clock time of the observation, when the app read it earlier than the call.
    pub wall_ms: Option<i64>,
}

/// An event as the phone holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalEvent {
    pub event: Event,
    /// The server's acknowledged heads include this event's change.
    pub delivered: bool,
}

/// The shift in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShiftInfo {
    pub shift: ShiftId,
    pub guard: GuardId,
    pub started_ms: i64,
}

/// A log the server refused, as the app should show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedLog {
    pub shift: ShiftId,
    pub code: String,
    pub message: String,
}

/// What the app shows about syncing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    pub pending_events: u64,
    /// Device wall time of the oldest undelivered event.
    pub oldest_pending_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Failed attempts since the last success, and when the outbox will try again.
    pub consecutive_failures: u32,
    pub next_attempt_ms: Option<i64>,
    /// An undelivered panic alarm: sync is retried within seconds, whatever the backoff.
    pub urgent: bool,
    pub rejected: Vec<RejectedLog>,
    /// Attachments whose bytes the server does not hold yet, and their bytes: the phone refuses
    /// new ones past [`patrol_core::protocol::MAX_DEVICE_PENDING_ATTACHMENT_BYTES`].
    pub pending_attachments: u64,
    pub pending_attachment_bytes: u64,
}

/// A sync request ready to send, with what is needed to apply its response.
#[derive(Debug)]
pub struct PreparedSync {
    pub request: SyncRequest,
    /// It carries a panic alarm not delivered yet ([`SyncStatus::urgent`]).
    pub urgent: bool,
    /// Logs of finished shifts, loaded to build the request (the open one stays in the store).
    logs: HashMap<ShiftId, ShiftLog>,
    /// Row id and delivered count of every shift when the request was built.
    delivered: HashMap<ShiftId, (i64, u64)>,
}

/// What one sync round achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub docs_sent: usize,
    pub events_delivered: u64,
    pub pending_events: u64,
    pub rejected: Vec<RejectedLog>,
    /// The server lacks history a push built on; another round will send it.
    pub needs_another_round: bool,
    /// The device's credential was rotated in this sync: the store holds the new one, and the
    /// server no longer takes the old one.
    pub credential_rotated: bool,
    /// The server has a newer site configuration in a format this build cannot read: what to
    /// do, in words. The configuration held stays in force.
    pub config_unreadable: Option<String>,
    /// Attachments whose upload finished in this sync, after its metadata.
    pub attachments_uploaded: u64,
    /// Attachments still to upload after it (waiting for their incident, or failed).
    pub attachments_pending: u64,
    /// Why the uploads stopped, if they failed: they never fail the sync itself, and are
    /// tried again at the next one.
    pub attachment_error: Option<String>,
}

/// What a server gave a phone that enrolled with it (`POST /api/v1/enroll`): the site, the
/// device id it made (whose 16 bytes are the actor id of every change the phone writes) and the
/// device's credential; with the signing key the phone made and registered in that enrollment.
#[derive(Clone)]
pub struct Enrollment {
    pub site: SiteId,
    pub device: DeviceId,
    /// The bearer credential of every sync; a secret.
    pub credential: String,
    /// The server it came from, e.g. `https://patrol.example.org`.
    pub server_url: String,
    /// The key every sync signs the shift logs' heads with; the server holds its public half.
    pub signing_key: Option<DeviceKey>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential is a secret: never in logs.
        f.debug_struct("Enrollment")
            .field("site", &self.site)
            .field("device", &self.device)
            .field("server_url", &self.server_url)
            .field("signing_key", &self.signing_key)
            .finish_non_exhaustive()
    }
}

/// How a store is opened.
enum Setup {
    /// An existing store.
    Existing,
    /// An existing store, or a new one for this site with a device id of its own (not enrolled:
    /// it records, but cannot sync).
    ForSite(SiteId),
    /// A new store for an enrolled device.
    Enrolled(Box<Enrollment>),
}

/// A guard's phone: its identity, its shift logs and their delivery state.
#[derive(Debug)]
pub struct DeviceStore {
    conn: Connection,
    path: String,
    device: DeviceId,
    site: SiteId,
    /// The credential of an enrolled store (kept out of `Debug` output by [`Credential`]).
    credential: Option<Credential>,
    /// A credential a rotation gave that has not yet worked once ([`DeviceStore::stage_credential`]).
    next_credential: Option<Credential>,
    server_url: Option<String>,
    /// Signs the heads of every shift log a sync pushes changes of ([`patrol_core::evidence`]).
    signing_key: Option<DeviceKey>,
    clock: Arc<dyn Clock>,
    open: Option<OpenShift>,
    /// Changes of the open shift built but not yet written (sequence number, change bytes):
    /// their events' records are committed; the next commit writes them.
    unwritten: Vec<UnwrittenChange>,
    /// Builds changes while the disk syncs; only with `synchronous=FULL`.
    builder: Option<ChangeBuilder>,
    next_seq: u64,
    hlc: Hlc,
    config_version: u64,
}

/// A device credential, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(…)")
    }
}

fn heads_from_blob(blob: &[u8]) -> Result<Vec<ChangeHash>> {
    patrol_core::codec::heads_from_blob(blob)
        .map_err(|e| Error::Corrupt(format!("acknowledged heads: {e}")))
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::Corrupt(format!("stored {what} {s:?} does not parse")))
}

/// An event id as the store keeps it: its 16 bytes.
fn stored_event_id(bytes: &[u8], what: &str) -> Result<EventId> {
    uuid::Uuid::from_slice(bytes)
        .map(EventId)
        .map_err(|_| Error::Corrupt(format!("stored {what} is not a UUID")))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A change built after its event's record was committed, not yet written: the event's
/// sequence number and the change's bytes.
type UnwrittenChange = (u64, Vec<u8>);

/// A shift as stored, with how many events it holds (derived from the sequence numbers).
#[derive(Debug)]
struct ShiftRow {
    id: i64,
    shift: ShiftId,
    guard: GuardId,
    started_ms: i64,
    ended: bool,
    first_seq: u64,
    /// Events recorded in this shift.
    recorded: u64,
    delivered: u64,
    acked: Vec<ChangeHash>,
    meta_change: Vec<u8>,
}

impl ShiftRow {
    /// The sequence numbers of this shift's events.
    fn seqs(&self) -> std::ops::Range<u64> {
        self.first_seq..self.first_seq + self.recorded
    }

    fn pending(&self) -> u64 {
        self.recorded.saturating_sub(self.delivered)
    }
}

/// The open shift: its row id and first sequence number, and its log in memory.
#[derive(Debug)]
struct OpenShift {
    info: ShiftInfo,
    row_id: i64,
    /// Boxed: it moves to the change builder's thread and back for every FULL recording.
    log: Box<ShiftLog>,
}

impl DeviceStore {
    /// Opens the store at `path`, creating it for `site` if it does not exist yet. A store made
    /// this way records offline but is not enrolled, so it cannot sync ([`Error::NotEnrolled`]):
    /// phones are set up with [`DeviceStore::create_enrolled`].
    pub fn create(path: impl AsRef<Path>, site: SiteId) -> Result<Self> {
        Self::open_with(path, Some(site), StoreOptions::default())
    }

    /// Opens an existing store. Creates and changes nothing when there is none:
    /// [`Error::NoStore`] when nothing is at `path`, [`Error::NotInitialised`] when what is
    /// there is not a phone store.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, None, StoreOptions::default())
    }

    /// As [`DeviceStore::open`], for a path a person typed: a file that is damaged or not a
    /// store at all is refused with [`Error::Unreadable`] and left where it is, where `open`
    /// moves a damaged store aside so that the app can go on recording in a new one.
    pub fn open_in_place(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_in_place_with(path, StoreOptions::default())
    }

    /// [`DeviceStore::open_in_place`] with `options` (a clock of its own, for instance).
    pub fn open_in_place_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref();
        match Self::open_inner(path, Setup::Existing, options) {
            Err(e) if is_corruption(&e) => Err(Error::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            other => Self::typed(path, other),
        }
    }

    /// Opens (and with `site`, creates if needed) a store; without `site`, as
    /// [`DeviceStore::open`].
    pub fn open_with(
        path: impl AsRef<Path>,
        site: Option<SiteId>,
        options: StoreOptions,
    ) -> Result<Self> {
        let setup = site.map_or(Setup::Existing, Setup::ForSite);
        Self::open_setup(path.as_ref(), setup, options)
    }

    /// Creates the store of an enrolled phone at `path`, with the device id, site and credential
    /// the server gave it ([`crate::SyncClient::enroll`]). Fails with [`Error::AlreadySetUp`]
    /// if a store is already set up there.
    pub fn create_enrolled(
        path: impl AsRef<Path>,
        enrollment: Enrollment,
        options: StoreOptions,
    ) -> Result<Self> {
        Self::open_setup(
            path.as_ref(),
            Setup::Enrolled(Box::new(enrollment)),
            options,
        )
    }

    /// Whether a store is set up at `path` (a phone enrolls only into a new store). Reads, never
    /// creates or changes anything.
    pub fn is_set_up(path: impl AsRef<Path>) -> Result<bool> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok(false);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        let tables = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'device'",
            [],
            |r| r.get::<_, i64>(0),
        );
        let tables = match tables.map_err(Error::from) {
            // A store object holds it (or is creating it): in use, so set up.
            Err(e) if is_locked(&e) => return Ok(true),
            other => other?,
        };
        if tables == 0 {
            return Ok(false);
        }
        let devices: i64 = conn.query_row("SELECT COUNT(*) FROM device", [], |r| r.get(0))?;
        Ok(devices > 0)
    }

    fn open_setup(path: &Path, setup: Setup, options: StoreOptions) -> Result<Self> {
        match Self::open_inner(path, setup, options) {
            Err(e) if is_corruption(&e) => Err(quarantine(path, &e)),
            other => Self::typed(path, other),
        }
    }

    /// A lock held by another store object, as the error that says so.
    fn typed(path: &Path, opened: Result<Self>) -> Result<Self> {
        match opened {
            Err(e) if is_locked(&e) => Err(Error::InUse {
                path: path.display().to_string(),
            }),
            other => other,
        }
    }

    /// Opens the file and builds the store from it, one step after another: the connection and
    /// its settings, the integrity check, the schema, the device's identity (read, or written
    /// for a new store), where the log stands, and the open shift.
    fn open_inner(path: &Path, setup: Setup, options: StoreOptions) -> Result<Self> {
        let path_str = path.display().to_string();
        // Opening what should exist touches nothing until it is known to be a store: a
        // mistyped path must not leave an empty store (or a changed file) behind.
        if let Setup::Existing = setup {
            if !path.exists() {
                return Err(Error::NoStore { path: path_str });
            }
            if !Self::is_set_up(path)? {
                return Err(Error::NotInitialised { path: path_str });
            }
        }
        let mut conn = connect(path, options.durability)?;
        check_integrity(&conn)?;
        schema::upgrade(&mut conn, &path_str)?;
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let identity = set_up_identity(&conn, setup, &path_str, clock.as_ref())?;
        let (last_seq, local_hlc) = last_event(&conn)?;

        let mut store = DeviceStore {
            conn,
            path: path_str,
            device: identity.device,
            site: identity.site,
            credential: identity.credential,
            next_credential: identity.next_credential,
            server_url: identity.server_url,
            signing_key: identity.signing_key,
            clock,
            open: None,
            unwritten: Vec::new(),
            builder: match options.durability {
                Durability::Full => Some(ChangeBuilder::spawn()?),
                Durability::Normal => None,
            },
            next_seq: last_seq + 1,
            hlc: local_hlc.max(identity.server_hlc),
            config_version: identity.config_version,
        };
        store.reload_open_shift()?;
        // A shift ended just before the app was killed may still wait for compaction.
        store.compact_finished()?;
        Ok(store)
    }

    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    pub fn site(&self) -> &SiteId {
        &self.site
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The credential a sync presents; `None` for a store that was not enrolled.
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_ref().map(|c| c.0.as_str())
    }

    /// A credential a rotation gave that has not worked yet: the sync client tries it before the
    /// current one ([`DeviceStore::confirm_credential`] once it has worked,
    /// [`DeviceStore::drop_next_credential`] if the server refuses it).
    pub fn next_credential(&self) -> Option<&str> {
        self.next_credential.as_ref().map(|c| c.0.as_str())
    }

    /// Keeps `credential`, which a rotation just gave, beside the current one. Durable on return
    /// whatever the store's synchronous setting: the phone uses the new credential only after
    /// this, and once it has been used the server refuses the old one.
    pub fn stage_credential(&mut self, credential: &str) -> Result<()> {
        let mode: i64 = self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let staged = self
            .conn
            .execute("UPDATE device SET next_credential = ?1", [credential]);
        self.conn.pragma_update(None, "synchronous", mode)?;
        staged?;
        self.next_credential = Some(Credential(credential.to_owned()));
        Ok(())
    }

    /// The next credential worked: it becomes the current one, and the old one is forgotten
    /// (the server no longer takes it).
    pub fn confirm_credential(&mut self) -> Result<()> {
        let Some(next) = self.next_credential.clone() else {
            return Ok(());
        };
        self.conn.execute(
            "UPDATE device SET credential = next_credential, next_credential = NULL
             WHERE next_credential IS NOT NULL",
            [],
        )?;
        self.credential = Some(next);
        self.next_credential = None;
        Ok(())
    }

    /// The server refused the next credential (a later rotation replaced it): forget it and keep
    /// the current one, which the server still takes.
    pub fn drop_next_credential(&mut self) -> Result<()> {
        self.conn
            .execute("UPDATE device SET next_credential = NULL", [])?;
        self.next_credential = None;
        Ok(())
    }

    /// The public half of the key this device signs its shift logs with (`None` for a store
    /// enrolled before keys existed, or never enrolled): what `patrol verify` checks a log with.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.signing_key.as_ref().map(DeviceKey::public_key)
    }

    /// The server the store was enrolled with.
    pub fn server_url(&self) -> Option<&str> {
        self.server_url.as_deref()
    }

    /// The request_seq of the last sync request prepared (0 before the first).
    pub fn request_seq(&self) -> Result<u64> {
        let seq: i64 = self
            .conn
            .query_row("SELECT request_seq FROM device", [], |r| r.get(0))?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Moves the request counter past `last_seq`, the last request the server says it
    /// accepted from this device (after a refusal as stale: the store's counter fell behind,
    /// as when it was restored from an old copy). Never moves it back.
    pub fn advance_request_seq(&mut self, last_seq: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE device SET request_seq = MAX(request_seq, ?1)",
            [to_i64(last_seq)],
        )?;
        Ok(())
    }

    /// The shift in progress, if any.
    pub fn current_shift(&self) -> Option<&ShiftInfo> {
        self.open.as_ref().map(|o| &o.info)
    }

    /// Every shift, in the order they were worked.
    fn shift_rows(&self) -> Result<Vec<ShiftRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, shift_id, guard_id, started_ms, ended_ms IS NOT NULL, first_seq, delivered,
                    acked_heads, meta_change
             FROM shifts ORDER BY first_seq",
        )?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, Vec<u8>>(8)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = Vec::with_capacity(raw.len());
        for (i, (id, shift, guard, started_ms, ended, first, delivered, acked, meta)) in
            raw.iter().enumerate()
        {
            let first_seq = *first as u64;
            let end = raw.get(i + 1).map_or(self.next_seq, |next| next.5 as u64);
            rows.push(ShiftRow {
                id: *id,
                shift: parse(shift, "shift id")?,
                guard: parse(guard, "guard id")?,
                started_ms: *started_ms,
                ended: *ended,
                first_seq,
                recorded: end.saturating_sub(first_seq),
                delivered: *delivered as u64,
                acked: heads_from_blob(acked)?,
                meta_change: meta.clone(),
            });
        }
        Ok(rows)
    }

    fn load_log(&self, row: &ShiftRow) -> Result<ShiftLog> {
        Ok(self.load_log_rebuilding(row)?.0)
    }

    /// A shift's log from the store, with the changes it had to build again from their records
    /// (committed records whose change was not written yet: see the module's guide).
    fn load_log_rebuilding(&self, row: &ShiftRow) -> Result<(ShiftLog, Vec<UnwrittenChange>)> {
        let snapshot: Option<Vec<u8>> =
            self.conn
                .query_row("SELECT snapshot FROM shifts WHERE id = ?1", [row.id], |r| {
                    r.get(0)
                })?;
        if let Some(snapshot) = snapshot {
            return Ok((ShiftLog::load(&snapshot, self.device)?, Vec::new()));
        }
        let mut bytes = row.meta_change.clone();
        let mut missing = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, event_id, record, change FROM events
             WHERE seq >= ?1 AND seq < ?2 AND shift = ?3 ORDER BY seq",
        )?;
        let seqs = row.seqs();
        let mut rows = stmt.query(params![to_i64(seqs.start), to_i64(seqs.end), row.id])?;
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(0)? as u64;
            match r
                .get_ref(3)?
                .as_blob_or_null()
                .map_err(rusqlite::Error::from)?
            {
                // Changes are written in order, so the missing ones are the last.
                Some(change) if missing.is_empty() => bytes.extend_from_slice(change),
                Some(_) => {
                    return Err(Error::Corrupt(format!(
                        "event {seq} has its change but an earlier event has none"
                    )));
                }
                None => {
                    let id = stored_event_id(
                        r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
                        "event id",
                    )?;
                    let record = r.get::<_, Option<Vec<u8>>>(2)?.ok_or_else(|| {
                        Error::Corrupt(format!("event {seq} has neither record nor change"))
                    })?;
                    missing.push((seq, id, record));
                }
            }
        }
        let mut log = ShiftLog::load(&bytes, self.device)?;
        let mut rebuilt = Vec::with_capacity(missing.len());
        for (seq, id, record) in missing {
            let change = log.append(PreparedEvent::from_record_bytes(id, record)?)?;
            rebuilt.push((seq, change.bytes));
        }
        Ok((log, rebuilt))
    }

    /// Loads the open shift (if any) from the store into memory, with the changes it had to
    /// build again, to be written with the next commit.
    fn reload_open_shift(&mut self) -> Result<()> {
        self.open = None;
        self.unwritten.clear();
        if let Some((open, rebuilt)) = self.load_open_shift()? {
            self.open = Some(open);
            self.unwritten = rebuilt;
        }
        Ok(())
    }

    fn load_open_shift(&self) -> Result<Option<(OpenShift, Vec<UnwrittenChange>)>> {
        let Some(row) = self.shift_rows()?.into_iter().rev().find(|r| !r.ended) else {
            return Ok(None);
        };
        let (log, rebuilt) = self.load_log_rebuilding(&row)?;
        if log.event_count() as u64 != row.recorded {
            return Err(Error::Corrupt(format!(
                "shift {} holds {} events, its sequence numbers say {}",
                row.shift,
                log.event_count(),
                row.recorded
            )));
        }
        let info = ShiftInfo {
            shift: row.shift,
            guard: row.guard,
            started_ms: row.started_ms,
        };
        Ok(Some((
            OpenShift {
                info,
                row_id: row.id,
                log: Box::new(log),
            },
            rebuilt,
        )))
    }

    /// Starts a shift for `guard`: creates its log and records `ShiftStarted`, in one transaction.
    pub fn start_shift(&mut self, guard: GuardId) -> Result<ShiftId> {
        if let Some(open) = &self.open {
            return Err(Error::ShiftAlreadyOpen(open.info.shift));
        }
        let shift = ShiftId::generate();
        let meta = ShiftMeta {
            site: self.site.clone(),
            device: self.device,
            shift,
            guard: guard.clone(),
        };
        let (log, first) = ShiftLog::create(meta)?;
        let started_ms = self.clock.now().wall_ms;
        let info = ShiftInfo {
            shift,
            guard,
            started_ms,
        };
        // The row id is set when the shift row is inserted, with the ShiftStarted event.
        self.open = Some(OpenShift {
            info,
            row_id: 0,
            log: Box::new(log),
        });
        let result = self.append(
            EventBody::ShiftStarted,
            RecordOptions::default(),
            Some(&first),
            &[],
        );
        if let Err(e) = result {
            self.open = None;
            return Err(e);
        }
        Ok(shift)
    }

    /// Ends the shift in progress; its log takes no more events.
    pub fn end_shift(&mut self, note: Option<String>) -> Result<EventId> {
        let id = self.record(EventBody::ShiftEnded { note }, RecordOptions::default())?;
        self.open = None;
        self.compact_finished()?;
        Ok(id)
    }

    /// Replaces the per-event changes of every ended shift by one compacted save of its log
    /// (about a quarter of the size), in one transaction per shift. Delivery state is kept:
    /// the saved log has the same changes and heads.
    fn compact_finished(&mut self) -> Result<()> {
        let pending: Vec<ShiftRow> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM shifts WHERE ended_ms IS NOT NULL AND snapshot IS NULL",
            )?;
            let ids: Vec<i64> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            if ids.is_empty() {
                return Ok(());
            }
            self.shift_rows()?
                .into_iter()
                .filter(|r| ids.contains(&r.id))
                .collect()
        };
        for row in pending {
            let mut log = self.load_log(&row)?;
            let snapshot = log.save();
            let seqs = row.seqs();
            let tx = self.conn.transaction()?;
            tx.execute(
                "UPDATE shifts SET snapshot = ?2 WHERE id = ?1",
                params![row.id, snapshot],
            )?;
            tx.execute(
                "UPDATE events SET change = x'' WHERE seq >= ?1 AND seq < ?2 AND shift = ?3",
                params![to_i64(seqs.start), to_i64(seqs.end), row.id],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Records a checkpoint scan.
    pub fn scan(&mut self, scan: Scan, options: RecordOptions) -> Result<EventId> {
        self.record(EventBody::CheckpointScanned(scan), options)
    }

    /// Records a free-text note in the shift log.
    pub fn note(&mut self, text: impl Into<String>) -> Result<EventId> {
        self.record(
            EventBody::Note { text: text.into() },
            RecordOptions::default(),
        )
    }

    /// Records any event in the shift in progress. Durable when this returns.
    pub fn record(&mut self, body: EventBody, options: RecordOptions) -> Result<EventId> {
        if matches!(body, EventBody::ShiftStarted) {
            return Err(Error::Invalid(patrol_core::ValidationError::BadId {
                what: "event",
                reason: "a shift is started with start_shift".into(),
            }));
        }
        self.append(body, options, None, &[])
    }

    /// Appends an event to the open shift's log, with the bytes of the `files` it references
    /// (kept in the same commit).
    pub(crate) fn append(
        &mut self,
        body: EventBody,
        options: RecordOptions,
        new_shift: Option<&LocalChange>,
        files: &[KeptFile<'_>],
    ) -> Result<EventId> {
        let Some(open) = self.open.as_mut() else {
            return Err(Error::NoOpenShift);
        };
        let id = options.event_id.unwrap_or_else(EventId::generate);
        let reading = self.clock.now();
        let wall_ms = options.wall_ms.unwrap_or(reading.wall_ms);
        let hlc = self.hlc.tick(reading.wall_ms.max(0) as u64);
        let record = EventRecord {
            seq: self.next_seq,
            time: DeviceTime {
                wall_ms,
                boot_id: reading.boot_id,
                mono_ms: reading.mono_ms,
                hlc,
            },
            config_version: self.config_version,
            body,
        };
        let Some(prepared) = open.log.prepare(id, &record)? else {
            return Ok(id);
        };
        let incident = match &record.body {
            EventBody::IncidentReported(report) => Some(collab::new_incident(
                self.device,
                &self.site,
                &open.info.guard,
                report,
                &record.time,
            )?),
            _ => None,
        };
        if self.builder.is_some() && row_only(&record.body, new_shift, incident.as_ref()) {
            self.append_while_syncing(id, &record, prepared)?;
            return Ok(id);
        }
        let change = open.log.append(prepared)?;
        let row = EventRow {
            id,
            record: &record,
            bytes: RowBytes::Change(&change.bytes),
        };
        let shift = match new_shift {
            Some(first) => ShiftOfRow::New(&open.info, first),
            None => ShiftOfRow::Stored(open.row_id),
        };
        let written = write_event(
            &mut self.conn,
            shift,
            &row,
            incident.as_ref(),
            files,
            &self.unwritten,
        );
        match written {
            Ok(row_id) => {
                open.row_id = row_id;
                self.unwritten.clear();
            }
            Err(e) => {
                // The log in memory holds a change the disk does not: rebuild it from the disk.
                self.reload_open_shift()?;
                return Err(e);
            }
        }
        self.next_seq += 1;
        self.hlc = record.time.hlc;
        Ok(id)
    }

    /// Records a plain event with `synchronous=FULL`: commits its record (and the changes not
    /// yet written) while the builder thread appends it to the log, so the disk's sync and the
    /// change's building overlap; the change is written with the next commit.
    fn append_while_syncing(
        &mut self,
        id: EventId,
        record: &EventRecord,
        prepared: PreparedEvent,
    ) -> Result<()> {
        let Some(builder) = self.builder.as_ref() else {
            return Err(Error::NoOpenShift);
        };
        let Some(OpenShift { info, row_id, log }) = self.open.take() else {
            return Err(Error::NoOpenShift);
        };
        let record_bytes = prepared.record_bytes().to_vec();
        let row = EventRow {
            id,
            record,
            bytes: RowBytes::Record(&record_bytes),
        };
        let (written, built) = match builder.start(log, prepared) {
            Ok(()) => {
                let shift = ShiftOfRow::Stored(row_id);
                let written = write_event(&mut self.conn, shift, &row, None, &[], &self.unwritten);
                (written, builder.finish())
            }
            Err(e) => (Err(e), None),
        };
        if written.is_ok() {
            // The record is committed: the event is recorded, whatever becomes of its change.
            self.next_seq += 1;
            self.hlc = record.time.hlc;
        }
        match built {
            Some((log, Ok(change))) if written.is_ok() => {
                self.open = Some(OpenShift { info, row_id, log });
                self.unwritten = vec![(record.seq, change.bytes)];
                return Ok(());
            }
            Some((_, Err(e))) => {
                tracing::warn!(error = %e, "building a change failed; loading the log again");
            }
            Some(_) => {}
            None => {
                // The thread is gone, and the log with it: build changes here from now on.
                tracing::error!("the change builder stopped; building changes on the caller");
                self.builder = None;
            }
        }
        // The log in memory and the disk disagree: load the log again from the disk, where a
        // committed record's change is built again from the record.
        self.reload_open_shift()?;
        written.map(|_| ())
    }

    /// Events in the device's order; of one shift, or all.
    pub fn events(&self, shift: Option<ShiftId>) -> Result<Vec<LocalEvent>> {
        let mut out = Vec::new();
        for row in self.shift_rows()? {
            if shift.is_some_and(|s| s != row.shift) {
                continue;
            }
            let events = match &self.open {
                Some(open) if open.info.shift == row.shift => open.log.events()?,
                _ => self.load_log(&row)?.events()?,
            };
            out.extend(events.into_iter().enumerate().map(|(i, event)| LocalEvent {
                event,
                delivered: (i as u64) < row.delivered,
            }));
        }
        Ok(out)
    }

    /// One event by id; from the open shift's log without reading the others.
    pub fn event(&self, id: EventId) -> Result<Option<LocalEvent>> {
        if let Some(open) = &self.open
            && let Some(record) = open.log.get(&id)?
        {
            let meta = open.log.meta();
            let delivered = self
                .shift_rows()?
                .iter()
                .find(|r| r.id == open.row_id)
                .is_some_and(|r| record.seq < r.first_seq + r.delivered);
            let event = meta.event(id, record);
            return Ok(Some(LocalEvent { event, delivered }));
        }
        Ok(self.events(None)?.into_iter().find(|e| e.event.id == id))
    }

    /// What the app shows about syncing.
    pub fn status(&self) -> Result<SyncStatus> {
        let rows = self.shift_rows()?;
        let pending_events = rows.iter().map(ShiftRow::pending).sum();
        let oldest_pending_ms = match rows.iter().find(|r| r.pending() > 0) {
            Some(r) => self
                .conn
                .query_row(
                    "SELECT wall_ms FROM events WHERE seq = ?1",
                    [to_i64(r.first_seq + r.delivered)],
                    |row| row.get(0),
                )
                .optional()?,
            None => None,
        };
        let (last_attempt_ms, last_success_ms, last_error, failures, next_attempt_ms) =
            self.conn.query_row(
                "SELECT last_attempt_ms, last_success_ms, last_error, failures, next_attempt_ms
                 FROM sync_state",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, i64>(3)?,
                        r.get(4)?,
                    ))
                },
            )?;
        let urgent = self.undelivered_panic(&rows)?.is_some();
        Ok(SyncStatus {
            pending_events,
            oldest_pending_ms,
            last_attempt_ms,
            last_success_ms,
            last_error,
            consecutive_failures: u32::try_from(failures).unwrap_or(u32::MAX),
            next_attempt_ms,
            urgent,
            rejected: self.rejected()?,
            pending_attachments: self.pending_uploads()?,
            pending_attachment_bytes: self.pending_upload_bytes()?,
        })
    }

    /// The shift whose log holds a panic alarm of this phone not delivered yet, if any, given
    /// the shifts' rows.
    fn undelivered_panic(&self, rows: &[ShiftRow]) -> Result<Option<ShiftId>> {
        let urgent_seq: Option<i64> =
            self.conn
                .query_row("SELECT urgent_seq FROM sync_state", [], |r| r.get(0))?;
        let Some(seq) = urgent_seq else {
            return Ok(None);
        };
        let seq = seq as u64;
        // Delivered events are a prefix of each shift, so a panic is delivered when its shift's
        // delivered prefix reaches it.
        Ok(rows
            .iter()
            .find(|r| r.seqs().contains(&seq) && seq >= r.first_seq + r.delivered)
            .map(|r| r.shift))
    }

    fn rejected(&self) -> Result<Vec<RejectedLog>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT shift_id, reject_code, reject_message FROM shifts
             WHERE reject_code IS NOT NULL ORDER BY first_seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (shift, code, message) = row?;
            out.push(RejectedLog {
                shift: parse(&shift, "shift id")?,
                code,
                message,
            });
        }
        Ok(out)
    }

    /// Builds the next sync request: every log with events the server has not acknowledged,
    /// and every incident held.
    pub fn prepare_sync(&mut self) -> Result<PreparedSync> {
        let rows = self.shift_rows()?;
        let urgent = self.undelivered_panic(&rows)?.is_some();
        self.prepare(&rows, urgent, None)
    }

    /// Builds the request to send before [`DeviceStore::prepare_sync`]'s while a panic alarm is
    /// undelivered and other work is pending (other shifts' undelivered events, incident changes
    /// to push): the panic's shift log alone, so that the panic travels in a small request of
    /// its own, in the server's panic lane, rather than behind a backlog or too large for the
    /// lane. The log is sent from what the server has acknowledged of it: the events recorded
    /// before the panic in that shift travel with it, as a shift log's changes each build on the
    /// one before (the server could not apply the panic without them).
    ///
    /// `None` when no panic is undelivered, or when nothing else is pending: the ordinary
    /// request then is the panic's own. [`DeviceStore::complete_sync`] applies its answer as any
    /// other: it marks delivered what the server's heads cover of that log, and the rest stays
    /// pending for the next request.
    pub fn prepare_urgent_sync(&mut self) -> Result<Option<PreparedSync>> {
        let rows = self.shift_rows()?;
        let Some(shift) = self.undelivered_panic(&rows)? else {
            return Ok(None);
        };
        let other_logs = rows.iter().any(|r| r.shift != shift && r.pending() > 0);
        if !other_logs && !self.incidents_pending()? {
            return Ok(None);
        }
        self.prepare(&rows, true, Some(shift)).map(Some)
    }

    /// Builds a sync request of the logs with events the server has not acknowledged, and of
    /// every incident held; or, with `only`, of that shift's log alone.
    fn prepare(
        &mut self,
        rows: &[ShiftRow],
        urgent: bool,
        only: Option<ShiftId>,
    ) -> Result<PreparedSync> {
        // Every event held undelivered, those of logs left out of this request included: the
        // server subtracts what it accepts, and shows the rest as the device's backlog.
        let pending: u64 = rows.iter().map(ShiftRow::pending).sum();
        let mut logs = HashMap::new();
        let mut docs = Vec::new();
        // One reading for the whole request: the signatures' time and the request's.
        let now = self.clock.now();
        let sent = |r: &&ShiftRow| r.pending() > 0 && only.is_none_or(|s| s == r.shift);
        for row in rows.iter().filter(sent) {
            let sign = |push: &mut DocPush, log: &mut ShiftLog| {
                if let Some(key) = &self.signing_key {
                    key.sign_push(push, log, now.wall_ms);
                }
            };
            let push = match self.open.as_mut() {
                Some(open) if open.info.shift == row.shift => {
                    let mut push = plan_push(&mut open.log, &row.acked)?;
                    sign(&mut push, &mut open.log);
                    push
                }
                _ => {
                    let mut log = self.load_log(row)?;
                    let mut push = plan_push(&mut log, &row.acked)?;
                    sign(&mut push, &mut log);
                    logs.insert(row.shift, log);
                    push
                }
            };
            docs.push(push);
        }
        if only.is_none() {
            docs.extend(self.incident_pushes()?);
        }
        let delivered = rows
            .iter()
            .map(|r| (r.shift, (r.id, r.delivered)))
            .collect::<HashMap<_, _>>();
        // Each request takes a new number, committed before it is sent, so that a retry (a new
        // request) is never mistaken for a replay of one the server already applied.
        let tx = self.conn.transaction()?;
        // Nothing is sent that the store does not hold: a change sent before it was written
        // could, if the app died, be built again differently by another version of automerge.
        write_changes(&tx, &self.unwritten)?;
        tx.execute("UPDATE sync_state SET last_attempt_ms = ?1", [now.wall_ms])?;
        let request_seq: i64 = tx.query_row(
            "UPDATE device SET request_seq = request_seq + 1 RETURNING request_seq",
            [],
            |r| r.get(0),
        )?;
        tx.commit()?;
        self.unwritten.clear();
        Ok(PreparedSync {
            request: SyncRequest {
                site: self.site.clone(),
                device: self.device,
                request_seq: u64::try_from(request_seq).unwrap_or(0),
                device_time_ms: now.wall_ms,
                hlc: self.hlc,
                pending_events: pending,
                docs,
                guard: self.open.as_ref().map(|o| o.info.guard.clone()),
                config_version: self.config_version,
                awaiting_ack: self.awaiting_ack()?,
            },
            urgent,
            logs,
            delivered,
        })
    }

    /// Applies the server's answer: marks delivered what its heads cover, notes rejections.
    pub fn complete_sync(
        &mut self,
        mut prepared: PreparedSync,
        response: &SyncResponse,
    ) -> Result<SyncReport> {
        let mut report = SyncReport {
            docs_sent: prepared.request.docs.len(),
            ..Default::default()
        };
        let sent: HashSet<DocRef> = prepared.request.docs.iter().map(|d| d.doc).collect();
        let tx = self.conn.transaction()?;
        for result in &response.docs {
            // Only documents this request sent are answered; anything else is ignored.
            if !sent.contains(&result.doc) {
                continue;
            }
            let DocRef::ShiftLog(shift) = result.doc else {
                continue;
            };
            let Some(&(row_id, before)) = prepared.delivered.get(&shift) else {
                continue;
            };
            let log = match self.open.as_mut() {
                Some(open) if open.info.shift == shift => &mut open.log,
                _ => match prepared.logs.get_mut(&shift) {
                    Some(log) => log,
                    None => continue,
                },
            };
            match &result.outcome {
                DocOutcome::Accepted {
                    heads,
                    missing_deps,
                    ..
                } => {
                    let ack = acknowledge(log, heads);
                    let delivered = ack.delivered_events as u64;
                    report.events_delivered += delivered.saturating_sub(before);
                    tx.execute(
                        "UPDATE shifts SET acked_heads = ?2, delivered = ?3, reject_code = NULL,
                                reject_message = NULL
                         WHERE id = ?1",
                        params![
                            row_id,
                            patrol_core::codec::heads_to_blob(&ack.acked),
                            to_i64(delivered)
                        ],
                    )?;
                    report.needs_another_round |= *missing_deps || !ack.unacked.is_empty();
                }
                DocOutcome::Rejected { code, message } => {
                    tx.execute(
                        "UPDATE shifts SET reject_code = ?2, reject_message = ?3 WHERE id = ?1",
                        params![row_id, code.as_str(), message],
                    )?;
                    report.rejected.push(RejectedLog {
                        shift,
                        code: code.as_str().to_owned(),
                        message: message.clone(),
                    });
                }
            }
        }
        let now = self.clock.now();
        let config_version = match collab::apply_response(&tx, self.device, response, now.wall_ms)?
        {
            collab::ConfigApplied::Stored(version) => Some(version),
            collab::ConfigApplied::Unchanged => None,
            collab::ConfigApplied::Unreadable(why) => {
                report.config_unreadable = Some(why);
                None
            }
        };
        collab::keep_tours(&tx, response)?;
        let server = Hlc {
            wall_ms: response.server_time_ms.max(0) as u64,
            counter: 0,
        };
        let hlc = self.hlc.observe(server, now.wall_ms.max(0) as u64);
        tx.execute(
            "UPDATE device SET hlc_wall = ?1, hlc_counter = ?2",
            params![to_i64(hlc.wall_ms), hlc.counter],
        )?;
        let error = (!report.rejected.is_empty()).then(|| {
            format!(
                "{} shift log(s) refused by the server",
                report.rejected.len()
            )
        });
        // The answer's server time against this clock: the phone's offset, as the server
        // measures it from the request (`patrol_core::clock`).
        let offset = patrol_core::clock::clock_offset_ms(response.server_time_ms, now.wall_ms);
        tx.execute(
            "UPDATE sync_state SET last_success_ms = ?1, last_error = ?2, failures = 0,
                    next_attempt_ms = NULL, clock_offset_ms = ?3",
            params![now.wall_ms, error, offset],
        )?;
        tx.commit()?;
        self.hlc = hlc;
        if let Some(v) = config_version {
            self.config_version = self.config_version.max(v);
        }
        report.pending_events = self.status()?.pending_events;
        // A rejected log will be rejected again; only missing history warrants a new round.
        report.needs_another_round &= report.pending_events > 0;
        Ok(report)
    }

    /// Notes a failed sync attempt and schedules the next one (see [`RetryPolicy`]).
    pub fn sync_failed(&mut self, error: &Error, policy: &RetryPolicy) -> Result<()> {
        let status = self.status()?;
        let failures = status.consecutive_failures.saturating_add(1);
        let delay = policy.delay_after(error, failures, status.urgent, rand::random::<f64>());
        let next = self.clock.now().wall_ms.saturating_add(to_i64(delay));
        self.conn.execute(
            "UPDATE sync_state SET last_error = ?1, failures = ?2, next_attempt_ms = ?3",
            params![error.to_string(), failures, next],
        )?;
        Ok(())
    }

    /// Whether the outbox should sync now: something is pending and the backoff after the last
    /// failure has passed. Raising a panic makes it due at once; while the panic is
    /// undelivered, the backoff is the short fixed schedule of [`RetryPolicy`].
    pub fn sync_due(&self) -> Result<bool> {
        let status = self.status()?;
        if status.pending_events == 0 {
            return Ok(false);
        }
        Ok(status
            .next_attempt_ms
            .is_none_or(|at| self.clock.now().wall_ms >= at))
    }
}

impl Drop for DeviceStore {
    fn drop(&mut self) {
        // Otherwise built again from their records at the next open.
        if !self.unwritten.is_empty()
            && let Err(e) = write_changes(&self.conn, &self.unwritten)
        {
            tracing::warn!(error = %e, "changes not written at close; rebuilt at the next open");
        }
    }
}

/// An event's row: what is needed without loading its log, and its change, or (until the
/// change is written) its record.
struct EventRow<'a> {
    id: EventId,
    record: &'a EventRecord,
    bytes: RowBytes<'a>,
}

/// What an event's row holds of it besides its columns.
enum RowBytes<'a> {
    /// The change that carries the event in its shift log (which holds the record).
    Change(&'a [u8]),
    /// The encoded record alone, until its change is written.
    Record(&'a [u8]),
}

/// The shift an event's row belongs to.
enum ShiftOfRow<'a> {
    /// Stored, with this row id.
    Stored(i64),
    /// Its first event: the shift's row is written with it, with the log's first change.
    New(&'a ShiftInfo, &'a LocalChange),
}

/// Whether recording an event writes its row and nothing else: not a shift's first or last
/// event, a panic (an alarm to track) or an incident (its document).
fn row_only(
    body: &EventBody,
    new_shift: Option<&LocalChange>,
    incident: Option<&collab::NewIncident>,
) -> bool {
    new_shift.is_none()
        && incident.is_none()
        && !matches!(
            body,
            EventBody::ShiftEnded { .. }
                | EventBody::Panic { .. }
                | EventBody::CheckInMissed { .. }
                | EventBody::NoteWithAttachments { .. }
        )
}

/// Writes an event's row (and the shift's row for its first event, and what the event implies)
/// with the changes built but not yet written, in one commit; returns the shift's row id.
fn write_event(
    conn: &mut Connection,
    shift: ShiftOfRow<'_>,
    row: &EventRow<'_>,
    incident: Option<&collab::NewIncident>,
    files: &[KeptFile<'_>],
    unwritten: &[UnwrittenChange],
) -> Result<i64> {
    let record = row.record;
    if let ShiftOfRow::Stored(row_id) = shift
        && row_only(&record.body, None, incident)
        && unwritten.is_empty()
    {
        // One statement commits atomically on its own: no BEGIN/COMMIT round on the hot path.
        insert_event(conn, row_id, row)?;
        return Ok(row_id);
    }
    let tx = conn.transaction()?;
    write_changes(&tx, unwritten)?;
    let row_id = match shift {
        ShiftOfRow::New(info, first) => {
            tx.execute(
                "INSERT INTO shifts (shift_id, guard_id, started_ms, first_seq, meta_change)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    info.shift.to_string(),
                    info.guard.as_str(),
                    info.started_ms,
                    to_i64(record.seq),
                    first.bytes
                ],
            )?;
            tx.last_insert_rowid()
        }
        ShiftOfRow::Stored(row_id) => row_id,
    };
    insert_event(&tx, row_id, row)?;
    if matches!(record.body, EventBody::ShiftEnded { .. }) {
        tx.execute(
            "UPDATE shifts SET ended_ms = ?2 WHERE id = ?1",
            params![row_id, record.time.wall_ms],
        )?;
    }
    if matches!(
        record.body,
        EventBody::Panic { .. } | EventBody::CheckInMissed { .. }
    ) {
        // The outbox treats the log as urgent until this event is delivered, and syncs at
        // once, whatever the backoff of earlier failures.
        tx.execute(
            "UPDATE sync_state SET urgent_seq = ?1, next_attempt_ms = NULL",
            [to_i64(record.seq)],
        )?;
    }
    if matches!(record.body, EventBody::Panic { .. }) {
        tx.execute(
            "INSERT INTO alarms (event_id, seq) VALUES (?1, ?2)",
            params![row.id.0.as_bytes().as_slice(), to_i64(record.seq)],
        )?;
    }
    if let Some(incident) = incident {
        collab::insert_incident(&tx, incident, record.time.wall_ms)?;
    }
    attachments::keep_files(&tx, files, record.seq, record.time.wall_ms)?;
    tx.commit()?;
    Ok(row_id)
}

fn insert_event(conn: &Connection, shift_row: i64, row: &EventRow<'_>) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (seq, shift, event_id, wall_ms, hlc_wall, hlc_counter, record, change)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let record = row.record;
    let (record_bytes, change) = match row.bytes {
        RowBytes::Change(change) => (None, Some(change)),
        RowBytes::Record(bytes) => (Some(bytes), None),
    };
    stmt.execute(params![
        to_i64(record.seq),
        shift_row,
        row.id.0.as_bytes().as_slice(),
        record.time.wall_ms,
        to_i64(record.time.hlc.wall_ms),
        record.time.hlc.counter,
        record_bytes,
        change,
    ])?;
    Ok(())
}

/// Writes changes built after their events' records were committed.
fn write_changes(conn: &Connection, changes: &[UnwrittenChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut stmt =
        conn.prepare_cached("UPDATE events SET change = ?2, record = NULL WHERE seq = ?1")?;
    for (seq, change) in changes {
        stmt.execute(params![to_i64(*seq), change])?;
    }
    Ok(())
}

// Opening a store: the steps `DeviceStore::open_inner` takes, in its order, and (after them)
// what a failed open makes of the file.

/// Opens the file, private to the app, with the settings the store relies on.
fn connect(path: &Path, durability: Durability) -> Result<Connection> {
    files::private_store_file(path)?;
    let conn = Connection::open(path)?;
    // One owner: the connection keeps the file locked, so a commit takes and releases no
    // file locks and the WAL index lives in memory (no -shm file): about a quarter of the
    // cost of a recording commit. A second opener is refused rather than racing this one.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// A damaged file is found here, before anything is written to it.
fn check_integrity(conn: &Connection) -> Result<()> {
    let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(Error::Corrupt(format!("integrity check: {check}")));
    }
    Ok(())
}

/// Who the store belongs to, as its `device` row keeps it between opens.
struct Identity {
    device: DeviceId,
    site: SiteId,
    /// The clock as the last sync left it, after it saw the server's time.
    server_hlc: Hlc,
    config_version: u64,
    credential: Option<Credential>,
    next_credential: Option<Credential>,
    server_url: Option<String>,
    signing_key: Option<DeviceKey>,
}

/// The `device` row as stored: device id, site id, the clock (wall, counter), the site
/// configuration's version, credential, server URL, signing key, next credential.
type DeviceRow = (
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
);

/// The store's identity: read from its `device` row, or for a new store written there as
/// `setup` says. Refused when `setup` does not fit the file: a new identity for a store that
/// has one, another site, or an existing store where there is none.
fn set_up_identity(
    conn: &Connection,
    setup: Setup,
    path: &str,
    clock: &dyn Clock,
) -> Result<Identity> {
    match (read_device_row(conn)?, setup) {
        (Some(_), Setup::Enrolled(_)) => Err(Error::AlreadySetUp {
            path: path.to_owned(),
        }),
        (Some(row), requested) => stored_identity(row, requested),
        (None, Setup::ForSite(site)) => new_identity_for_site(conn, site, clock),
        (None, Setup::Enrolled(e)) => new_enrolled_identity(conn, *e, clock),
        (None, Setup::Existing) => Err(Error::NotInitialised {
            path: path.to_owned(),
        }),
    }
}

fn read_device_row(conn: &Connection) -> Result<Option<DeviceRow>> {
    Ok(conn
        .query_row(
            "SELECT device_id, site_id, hlc_wall, hlc_counter, config_version, credential,
                    server_url, signing_key, next_credential
             FROM device",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .optional()?)
}

/// The identity of an existing store, if it is for the site `requested` names (if it names one).
fn stored_identity(row: DeviceRow, requested: Setup) -> Result<Identity> {
    let (d, s, w, c, v, credential, url, key, next) = row;
    if let Setup::ForSite(requested) = requested
        && requested.as_str() != s
    {
        return Err(Error::WrongSite {
            existing: s,
            requested: requested.to_string(),
        });
    }
    let hlc = Hlc {
        wall_ms: w as u64,
        counter: c as u32,
    };
    Ok(Identity {
        device: parse::<DeviceId>(&d, "device id")?,
        site: parse::<SiteId>(&s, "site id")?,
        server_hlc: hlc,
        config_version: v as u64,
        credential: credential.map(Credential),
        next_credential: next.map(Credential),
        server_url: url,
        signing_key: key
            .map(|k| {
                <[u8; 32]>::try_from(k.as_slice())
                    .map(DeviceKey::from_seed)
                    .map_err(|_| Error::Corrupt("the stored signing key is not 32 bytes".into()))
            })
            .transpose()?,
    })
}

/// A new store for `site` with a device id of its own (not enrolled).
fn new_identity_for_site(conn: &Connection, site: SiteId, clock: &dyn Clock) -> Result<Identity> {
    let device = DeviceId::generate();
    conn.execute(
        "INSERT INTO device (id, device_id, site_id, created_ms)
         VALUES (1, ?1, ?2, ?3)",
        params![device.to_string(), site.as_str(), clock.now().wall_ms],
    )?;
    Ok(Identity {
        device,
        site,
        server_hlc: Hlc::default(),
        config_version: 0,
        credential: None,
        next_credential: None,
        server_url: None,
        signing_key: None,
    })
}

/// A new store with the identity enrollment gave the phone.
fn new_enrolled_identity(conn: &Connection, e: Enrollment, clock: &dyn Clock) -> Result<Identity> {
    let now = clock.now().wall_ms;
    conn.execute(
        "INSERT INTO device (id, device_id, site_id, created_ms, credential,
                             server_url, enrolled_ms, signing_key)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?3, ?6)",
        params![
            e.device.to_string(),
            e.site.as_str(),
            now,
            e.credential,
            e.server_url,
            e.signing_key.as_ref().map(|k| k.seed().to_vec()),
        ],
    )?;
    Ok(Identity {
        device: e.device,
        site: e.site,
        server_hlc: Hlc::default(),
        config_version: 0,
        credential: Some(Credential(e.credential)),
        next_credential: None,
        server_url: Some(e.server_url),
        signing_key: e.signing_key,
    })
}

/// Where the log stands: the last event's sequence number (0 without events) and clock.
fn last_event(conn: &Connection) -> Result<(u64, Hlc)> {
    // Sequence numbers are gap-free from 1, so the last one is the count of events.
    let last: Option<(i64, i64, i64)> = conn
        .query_row(
            "SELECT seq, hlc_wall, hlc_counter FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(last
        .map(|(seq, w, c)| {
            (
                seq as u64,
                Hlc {
                    wall_ms: w as u64,
                    counter: c as u32,
                },
            )
        })
        .unwrap_or_default())
}

/// Another connection holds the file (see [`Error::InUse`]).
fn is_locked(e: &Error) -> bool {
    matches!(
        e,
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether an error means the file itself is damaged (not a passing I/O or lock problem).
fn is_corruption(e: &Error) -> bool {
    match e {
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
        ),
        Error::Corrupt(_) => true,
        _ => false,
    }
}

/// Moves a damaged store (and its WAL and shared-memory files) aside, never deleting it, and
/// says where it went.
fn quarantine(path: &Path, cause: &Error) -> Error {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let moved = path.with_file_name(format!(
        "{}.corrupt-{stamp}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut reason = cause.to_string();
    for suffix in ["", "-wal", "-shm"] {
        let from = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = std::path::PathBuf::from(format!("{}{suffix}", moved.display()));
            if let Err(e) = std::fs::rename(&from, &to) {
                reason.push_str(&format!("; could not move {}: {e}", from.display()));
            }
        }
    }
    tracing::error!(path = %path.display(), moved_to = %moved.display(), %reason, "quarantined a damaged store");
    Error::Quarantined {
        path: path.display().to_string(),
        moved_to: moved.display().to_string(),
        reason,
    }
}
