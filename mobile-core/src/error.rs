//! Errors of the phone library.

use thiserror::Error;

/// Everything that can go wrong in a device store or a sync.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] patrol_core::ValidationError),
    #[error(transparent)]
    Log(#[from] patrol_core::LogError),
    #[error("storage error")]
    Sqlite(#[from] rusqlite::Error),
    /// Nothing at `path`: a mistyped path, or a phone that was never enrolled. Nothing was
    /// created there.
    #[error(
        "there is no phone store at {path}: enroll the phone first (`patrol device --store \
         {path} enroll --server URL --code CODE`), or check the path"
    )]
    NoStore { path: String },
    /// A file at `path` that holds no phone's identity (not a store, or one whose creation
    /// never finished). It was left as it was.
    #[error(
        "{path} is not a phone store (it holds no device identity): enroll the phone into a new \
         store (`patrol device --store NEW.db enroll --server URL --code CODE`), or check the \
         path"
    )]
    NotInitialised { path: String },
    #[error(
        "the store at {path} was written by a newer version (schema {found}, this build knows {known})"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the store is already set up for site {existing}, not {requested}")]
    WrongSite { existing: String, requested: String },
    #[error("a store is already set up at {path}; enroll into a new store")]
    AlreadySetUp { path: String },
    /// Another store object (in this process or another) has the store open: a store has one
    /// owner at a time, which holds it locked until it is dropped.
    #[error("the store at {path} is already open; close the other store object first")]
    InUse { path: String },
    #[error("cannot start the store's worker thread: {0}")]
    Thread(std::io::Error),
    /// The store cannot keep its file private to the app (it holds the device credential and
    /// the signing key), so it does not open it.
    #[error("store file {path}: {what}: {source}")]
    Permissions {
        path: String,
        what: String,
        source: std::io::Error,
    },
    #[error(
        "this store is not enrolled with a server, so it cannot sync: enroll the phone first, \
         into a new store (`patrol device --store NEW.db enroll --server URL --code CODE`)"
    )]
    NotEnrolled,
    /// The server refused an enrollment code: unknown, already used or expired (or the
    /// enrollment request itself was bad). The code cannot be used; nothing was created.
    #[error("enrollment failed (HTTP {status}): {message}")]
    EnrollmentRefused {
        status: u16,
        /// The server's error code (`enrollment_code_used`, `enrollment_code_expired`,
        /// `invalid_enrollment_code`, ...), when it gave one.
        code: Option<String>,
        message: String,
    },
    /// The server does not accept the device's credential (401): revoked, or unknown to it.
    #[error("the server refused the device's credential (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// The server had accepted a request with a seq at least `last_seq`: this one was stale.
    #[error("the server refused a stale sync request (last accepted request {last_seq})")]
    Replayed { last_seq: u64 },
    #[error("no shift is open; start one first")]
    NoOpenShift,
    #[error("no check-in timer is running; start one first")]
    NoCheckInTimer,
    #[error("this phone holds no incident {0}")]
    UnknownIncident(patrol_core::IncidentId),
    #[error("{0}")]
    IncidentRule(String),
    /// A file larger than the protocol allows
    /// ([`patrol_core::protocol::MAX_ATTACHMENT_BYTES`]); nothing was attached.
    #[error("the file is {size} bytes; an attachment may be at most {limit} bytes")]
    AttachmentTooLarge { size: u64, limit: u64 },
    /// The attachments not yet uploaded would pass the phone's limit
    /// ([`patrol_core::protocol::MAX_DEVICE_PENDING_ATTACHMENT_BYTES`]); nothing was attached.
    #[error(
        "{pending} bytes of attachments are waiting to be uploaded; with this {size}-byte file \
         they would pass the limit of {limit} bytes: sync first, then attach it"
    )]
    AttachmentQuota { pending: u64, size: u64, limit: u64 },
    #[error("no site configuration yet; sync once with the server")]
    NoSiteConfig,
    #[error("the site configuration has no tour {0:?}")]
    UnknownTour(String),
    #[error("a shift is already open ({0}); end it first")]
    ShiftAlreadyOpen(patrol_core::ShiftId),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the store at {path} is damaged ({reason}); it was moved aside to {moved_to}, untouched, for recovery"
    )]
    Quarantined {
        path: String,
        moved_to: String,
        reason: String,
    },
    /// [`crate::DeviceStore::open_in_place`] found a file that is not a readable phone store
    /// (damaged, or not SQLite at all) and left it as it was.
    #[error(
        "{path} is not a readable phone store ({reason}); it was left as it is: check the path, \
         or move a damaged store aside and enroll the phone into a new one"
    )]
    Unreadable { path: String, reason: String },
    #[error(transparent)]
    Encode(#[from] patrol_core::EncodeError),
    #[error("the phone has no random source for its signing key: {0}")]
    KeyGeneration(String),
    #[error("network: {0}")]
    Network(String),
    #[error("{url} is not a server URL: {reason}")]
    BadServerUrl { url: String, reason: String },
    /// Plain `http://` to a server off this machine: refused unless allowed for a lab.
    #[error(
        "refusing plain http:// to {url}: the device credential and the guards' records would \
         cross the network readable; use https://, or allow plain HTTP explicitly for a lab"
    )]
    PlainHttp { url: String },
    #[error("the trusted certificates cannot be used: {0}")]
    BadCertificate(String),
    #[error("server error (HTTP {status}), will retry: {message}")]
    ServerTransient {
        status: u16,
        message: String,
        /// The answer's `Retry-After`, when it gave one in seconds: the earliest the server
        /// wants the request again (see [`crate::backoff::RetryPolicy::delay_after`]).
        retry_after_ms: Option<u64>,
    },
    #[error("server refused the sync (HTTP {status}): {message}")]
    ServerRejected { status: u16, message: String },
    #[error("bad response from server: {0}")]
    BadResponse(String),
}

impl Error {
    /// Whether trying again later may succeed (network down, server busy or failing).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Network(_) | Error::ServerTransient { .. } | Error::BadResponse(_)
        )
    }
}

impl Error {
    /// How long the server asked to be left alone (`Retry-After` of a 503 or 429).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::ServerTransient { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
