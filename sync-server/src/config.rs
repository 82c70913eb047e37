//! Command line and configuration. Every flag of `serve` also reads an environment variable,
//! so a container or service unit can configure the server without arguments.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use patrol_core::siteconfig::{SiteConfig, SiteRules};

use crate::credentials::sessions::SessionPolicy;
use crate::store::webhooks::RetryPolicy;

/// Default request body limit for `POST /api/v1/sync`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Sync requests handled at once, per core, unless set otherwise
/// (`AppState::with_max_concurrent_syncs`).
pub const DEFAULT_CONCURRENT_SYNCS_PER_CPU: usize = 16;

/// Sync requests that may wait for a permit, per core, unless set otherwise
/// (`AppState::with_max_queued_syncs`). A waiting request costs a connection and a small
/// task: its body stays unread in the kernel. Enough places that a whole large site coming back
/// into signal at once (a thousand phones at a shift change) is queued rather than bounced into
/// retries, which would cost the phones seconds of backoff; the wait bound
/// ([`DEFAULT_MAX_SYNC_WAIT_MS`]) still refuses what the server cannot serve in time. A fixed
/// number rather than a multiple of the permits in force, so that a server run with few
/// permits still queues a burst instead of refusing it.
pub const DEFAULT_QUEUED_SYNCS_PER_CPU: usize = 512;

/// Longest wait of a sync request for a permit before `503 server_busy`, in milliseconds:
/// inside the phone's 30 s request timeout with room for the sync itself, so that a phone is
/// answered before it gives up, and everything that can be served in that time is served
/// rather than bounced into backoff (a thousand phones' whole shifts take about 11 s on the
/// benchmark machine, `docs/benchmarks.md`).
pub const DEFAULT_MAX_SYNC_WAIT_MS: u64 = 25_000;

/// The `Retry-After` of a refused sync, in seconds.
pub const DEFAULT_SYNC_RETRY_AFTER_SECS: u64 = 1;

/// How long an enrollment code stays usable unless its request says otherwise: a day.
pub const DEFAULT_ENROLLMENT_CODE_TTL_SECS: u64 = 24 * 60 * 60;

/// The longest lifetime an enrollment code may be given: 30 days.
pub const MAX_ENROLLMENT_CODE_TTL_SECS: u64 = 30 * 24 * 60 * 60;

/// How long a client has to send a request's head (request line and headers), in seconds,
/// counted from when the server starts waiting for it. A head is a few hundred bytes, one or two
/// TCP segments: 10 s covers a poor link losing them three times over (retransmissions after 1,
/// 2 and 4 s), while a socket that sends nothing, or a byte now and then, is closed soon.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// Longest wait for the next piece of a request body while a handler reads it, in seconds. The
/// wait restarts with every piece received, so a large sync on a slow link is never cut while
/// its data keeps coming; 60 s with nothing is a stalled or gone client (the phone itself gives
/// up on a request after 30 s).
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 60;

/// How long a connection may stay open with no request in flight, in seconds. A live stream is
/// a request in flight until it ends, so it is never idle. (On HTTP/1.1 the header timeout also
/// runs while the server waits for a kept-alive connection's next request, so it is the tighter
/// bound there; this one bounds HTTP/2 connections, which send no head between requests.)
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;

/// Most connections open at once. Each takes a file descriptor: the server raises its soft
/// open-file limit to the hard one at start and lowers this cap, with a warning, if the limit
/// cannot hold it besides the store's and its own descriptors (`listener::RESERVED_FDS` and the
/// PostgreSQL connections). 4,096: a thousand phones syncing at a shift change and a control
/// room's live streams, several times over.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// Most connections open at once from one peer address: one client cannot take every place.
/// Phones behind one NAT (a site's Wi-Fi) share an address; behind a reverse proxy every
/// connection comes from the proxy, where this must be raised to `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDR: usize = 256;

/// How long a graceful shutdown lets requests in flight finish, in seconds, before it closes
/// what is left: inside the 30 s a container orchestrator waits after SIGTERM by default, so the
/// server stops by itself rather than being killed.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 20;

/// The failed authentication within the window from which each failed answer is held back a
/// second more than the one before: the third, so that a person's typo or two costs nothing.
pub const DEFAULT_AUTH_SLOW_AFTER: u32 = 3;
/// Failed authentications from one address within the window that lock it out: a person
/// mistyping a token a few times is never locked out; a guesser is within seconds.
pub const DEFAULT_AUTH_MAX_FAILURES: u32 = 10;
/// The window failed authentications are counted in.
pub const DEFAULT_AUTH_FAILURE_WINDOW_SECS: u64 = 5 * 60;
/// How long a locked-out address is refused.
pub const DEFAULT_AUTH_LOCKOUT_SECS: u64 = 15 * 60;
/// How long a user token stays valid from when it is issued, in days, unless set otherwise
/// (`--user-token-ttl-days`): a month, so that a token copied somewhere it should not be stops
/// working within weeks even if nobody notices, while people and programs rotate it without
/// downtime well before then (`POST /api/v1/users/me/token`).
pub const DEFAULT_USER_TOKEN_TTL_DAYS: u64 = 30;

/// The longest lifetime a user token may be given: about ten years.
pub const MAX_USER_TOKEN_TTL_DAYS: u64 = 3_650;

/// How long a rotated user token keeps working after its rotation, in seconds: ten minutes for
/// a program to switch to the new one (a configuration reload, a restart).
pub const DEFAULT_USER_TOKEN_ROTATION_OVERLAP_SECS: u64 = 10 * 60;

/// How long a sign-in session lasts from sign-in, in hours, whatever its use: a twelve-hour
/// night shift, after which the operator signs in again.
pub const DEFAULT_SESSION_TTL_HOURS: u64 = 12;

/// How long a sign-in session lasts without use, in minutes: a console left open with its live
/// stream is in use; a browser closed or a screen abandoned for an hour is not.
pub const DEFAULT_SESSION_IDLE_MINUTES: u64 = 60;

/// The age, in days, at which a phone's credential is rotated at its next sync.
pub const DEFAULT_DEVICE_CREDENTIAL_MAX_AGE_DAYS: u64 = 30;

/// How often an open live stream checks that its user may still read it, in seconds (a
/// revocation through this instance ends it at once; through another instance sharing the
/// database, at this check).
pub const DEFAULT_STREAM_RECHECK_SECS: u64 = 60;

/// Most live streams one user may have open at once, on one instance: a control room with a
/// few screens, and no more, so that one token cannot tie up the server's connections.
pub const DEFAULT_MAX_STREAMS_PER_USER: usize = 8;
/// Seconds between the checks that announce devices gone silent, back, and shifts overdue on
/// live streams.
pub const DEFAULT_GAP_CHECK_SECS: u64 = 60;

/// Seconds between an instance's passes over every site's tour windows (closing those whose
/// grace ended, finalising those that are final) and its announcements of window changes on
/// its live streams.
pub const DEFAULT_COMPLIANCE_CHECK_SECS: u64 = 30;

/// Seconds between an instance's checks for panic alarms to escalate: a few, so that an
/// escalation is at most this late, at the cost of one read per site each time.
pub const DEFAULT_ALARM_CHECK_SECS: u64 = 5;

/// Milliseconds between an instance's looks for due webhook deliveries: a panic's webhook
/// leaves within a second of its sync, for one indexed read of the outbox each time.
pub const DEFAULT_WEBHOOK_CHECK_MS: u64 = 1_000;
/// The first retry's wait of a failed webhook delivery ([`RetryPolicy`]).
pub const DEFAULT_WEBHOOK_RETRY_BASE_MS: u64 = 10_000;
/// Failed attempts after which a webhook delivery is parked ([`RetryPolicy`]).
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 24;
/// The longest a webhook request may take, connecting included.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;

const MS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

/// The lifetime of the user tokens a command issues (`admin create`, `user create`,
/// `user rotate`, and the server for the API).
#[derive(Debug, Clone, Args)]
pub struct UserTokenTtlArg {
    /// Days a user token issued from now on stays valid (tokens issued before keep their
    /// expiry); rotate it before then with `POST /api/v1/users/me/token` or
    /// `patrol control token rotate`.
    #[arg(long, env = "PATROL_USER_TOKEN_TTL_DAYS",
          default_value_t = DEFAULT_USER_TOKEN_TTL_DAYS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_USER_TOKEN_TTL_DAYS))]
    pub user_token_ttl_days: u64,
}

impl UserTokenTtlArg {
    /// The lifetime in milliseconds.
    pub fn ttl_ms(&self) -> i64 {
        days_ms(self.user_token_ttl_days)
    }
}

fn days_ms(days: u64) -> i64 {
    i64::try_from(days)
        .unwrap_or(i64::MAX)
        .saturating_mul(MS_PER_DAY)
}

/// The patrol sync server: merges devices' shift logs into the canonical site record and
/// serves the control-room API. Without a subcommand it serves.
#[derive(Debug, Parser)]
#[command(
    name = "patrol-server",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted here too since serving is the default.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run, `serve` when none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(Box::new(self.serve)))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the sync and control-room API (the default).
    Serve(Box<ServeArgs>),
    /// Manage sites (a site must exist before devices can sync to it).
    #[command(subcommand)]
    Site(SiteCommand),
    /// Create an administrator (the first one, or one more); prints its token once.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage users (administrators and operators) on the data directory.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an administrator over all sites (or, with --site, over those sites) and print its
    /// bearer token on stdout, once: only its hash is stored. Works while the server runs.
    Create {
        /// The user's name: 1-64 letters, digits, '-', '_', '.' or '@'; unique.
        name: String,
        /// Administer only this site (repeatable); without it, all sites.
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Also give it a password to sign in to the console with, read as one line from
        /// standard input (at least 12 characters).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        ttl: UserTokenTtlArg,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print its bearer token on stdout, once.
    Create {
        /// The user's name: 1-64 letters, digits, '-', '_', '.' or '@'; unique.
        name: String,
        /// admin or operator.
        #[arg(long)]
        role: String,
        /// A site the user covers (repeatable); operators need at least one.
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Cover all sites (administrators only).
        #[arg(long, conflicts_with = "sites")]
        all_sites: bool,
        /// Also give it a password to sign in to the console with, read as one line from
        /// standard input (at least 12 characters).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        ttl: UserTokenTtlArg,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List users: a table of id, name, role, sites, status, creation, token expiry and
    /// revocation (times in local time), or JSON with --json.
    List {
        /// Print one JSON document, `{"users": [...]}`, with the fields of `GET /api/v1/users`
        /// (docs/operations.md), instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Revoke a user's token (by id or name); its requests are refused from then on.
    Revoke {
        /// The user's id or name (`patrol-server user list` shows both).
        user: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Set a user's (by id or name) password to sign in to the console with, read as one line
    /// from standard input (at least 12 characters); its sign-in sessions end (a running
    /// server's open live streams within --stream-recheck-secs).
    Password {
        /// The user's id or name (`patrol-server user list` shows both).
        user: String,
        /// Read the password as one line from standard input (the only way: never an argument,
        /// which other users of the machine could see).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Give a user (by id or name) a new token, printed on stdout once, for one who lost theirs
    /// or let it expire: the old token stops working at once. A user who still has a working
    /// token rotates it without downtime through the API instead.
    Rotate {
        /// The user's id or name (`patrol-server user list` shows both).
        user: String,
        #[command(flatten)]
        ttl: UserTokenTtlArg,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Directory of the server's data; the SQLite database is `<data-dir>/patrol.db`. Unused
    /// with `--database-url`.
    #[arg(long, env = "PATROL_DATA_DIR", default_value = "./patrol-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database to keep the record in instead of SQLite, as
    /// `postgres://user:password@host:port/dbname` (or libpq's key=value form). Several server
    /// instances can share one.
    #[arg(long, env = "PATROL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "PATROL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM: the server's certificate first, then its
    /// intermediates); needs `--tls-key`. SIGHUP re-reads both files. Without it the API is
    /// plain HTTP: off loopback, put a TLS-terminating proxy in front (docs/operations.md).
    #[arg(
        long,
        env = "PATROL_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM), readable by its owner alone (mode 0600).
    #[arg(
        long,
        env = "PATROL_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Largest accepted sync request body, in bytes.
    #[arg(long, env = "PATROL_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Also serve `/metrics` on this address, outside the traffic counters (its own requests
    /// are not counted); port 0 picks a free port (printed as `metrics on http://ADDR`).
    #[arg(long, env = "PATROL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Sync requests handled at once (default: [`DEFAULT_CONCURRENT_SYNCS_PER_CPU`] per core);
    /// the flag's help is `concurrent_syncs_help`, which takes the default from the constant.
    #[arg(long, env = "PATROL_MAX_CONCURRENT_SYNCS", help = concurrent_syncs_help())]
    pub max_concurrent_syncs: Option<usize>,
    /// Sync requests that may wait for a permit (default: [`DEFAULT_QUEUED_SYNCS_PER_CPU`] per
    /// core); the flag's help is `queued_syncs_help`, which takes the default from the constant.
    #[arg(long, env = "PATROL_MAX_QUEUED_SYNCS", help = queued_syncs_help())]
    pub max_queued_syncs: Option<usize>,
    /// Longest wait for a permit, in milliseconds; a sync that waited this long is refused with
    /// `503 server_busy`.
    #[arg(long, env = "PATROL_MAX_SYNC_WAIT_MS", default_value_t = DEFAULT_MAX_SYNC_WAIT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sync_wait_ms: u64,
    /// The `Retry-After` of a refused sync, in seconds.
    #[arg(long, env = "PATROL_SYNC_RETRY_AFTER_SECS", default_value_t = DEFAULT_SYNC_RETRY_AFTER_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sync_retry_after_secs: u64,
    /// Lifetime of an enrollment code whose request does not set one, in seconds.
    #[arg(
        long,
        env = "PATROL_ENROLLMENT_CODE_TTL_SECS",
        default_value_t = DEFAULT_ENROLLMENT_CODE_TTL_SECS,
        value_parser = clap::value_parser!(u64).range(1..=MAX_ENROLLMENT_CODE_TTL_SECS)
    )]
    pub enrollment_code_ttl_secs: u64,
    /// Most connections to PostgreSQL (with `--database-url`), besides one that listens for
    /// other instances' events.
    #[arg(long, env = "PATROL_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: usize,
    /// Seconds a client has to send a request's head (request line and headers), counted from
    /// when the server starts waiting for it; on HTTP/1.1 this also closes a kept-alive
    /// connection that sends no next request in that time.
    #[arg(long, env = "PATROL_HEADER_READ_TIMEOUT_SECS",
          default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may send nothing while it is read; the wait restarts with every
    /// piece received, so a slow but steady upload is never cut.
    #[arg(long, env = "PATROL_BODY_READ_TIMEOUT_SECS",
          default_value_t = DEFAULT_BODY_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight (a live stream is in
    /// flight until it ends).
    #[arg(long, env = "PATROL_IDLE_TIMEOUT_SECS",
          default_value_t = DEFAULT_IDLE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// Most connections open at once; one more is closed as soon as it is accepted. Lowered at
    /// start, with a warning, if the open-file limit cannot hold it.
    #[arg(long, env = "PATROL_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Most connections open at once from one peer address; one more is closed as soon as it
    /// is accepted. Behind a reverse proxy every connection comes from the proxy: set it to
    /// `--max-connections` there.
    #[arg(long, env = "PATROL_MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDR,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections_per_address: usize,
    /// Seconds a graceful shutdown (SIGTERM, Ctrl-C) lets requests in flight finish before it
    /// closes the connections still open.
    #[arg(long, env = "PATROL_SHUTDOWN_TIMEOUT_SECS",
          default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_secs: u64,
    /// From this failed authentication of one client address within the window on, each
    /// failed answer is held back a second longer than the one before (up to 5 s).
    #[arg(long, env = "PATROL_AUTH_SLOW_AFTER", default_value_t = DEFAULT_AUTH_SLOW_AFTER,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_slow_after: u32,
    /// Failed authentications from one client address within `--auth-failure-window-secs`
    /// after which that address is refused (`429`) for `--auth-lockout-secs`.
    #[arg(long, env = "PATROL_AUTH_MAX_FAILURES", default_value_t = DEFAULT_AUTH_MAX_FAILURES,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_max_failures: u32,
    /// The window, in seconds, failed authentications are counted in.
    #[arg(long, env = "PATROL_AUTH_FAILURE_WINDOW_SECS",
          default_value_t = DEFAULT_AUTH_FAILURE_WINDOW_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub auth_failure_window_secs: u64,
    /// Seconds a client address is refused after too many failed authentications.
    #[arg(long, env = "PATROL_AUTH_LOCKOUT_SECS", default_value_t = DEFAULT_AUTH_LOCKOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub auth_lockout_secs: u64,
    /// A reverse proxy in front of the server (repeat for several; comma-separated in the
    /// environment): for connections from it, the client is the last address of
    /// `X-Forwarded-For`, for throttling and logs. Never list an address clients can reach
    /// the server from directly.
    #[arg(
        long,
        env = "PATROL_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub trusted_proxy: Vec<IpAddr>,
    #[command(flatten)]
    pub user_token_ttl: UserTokenTtlArg,
    /// Seconds a user token replaced by a rotation (`POST /api/v1/users/me/token`) keeps
    /// working, so that programs using it can switch; 0 stops it at once.
    #[arg(long, env = "PATROL_USER_TOKEN_ROTATION_OVERLAP_SECS",
          default_value_t = DEFAULT_USER_TOKEN_ROTATION_OVERLAP_SECS,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub user_token_rotation_overlap_secs: u64,
    /// Hours a sign-in session (the console's cookie) lasts from sign-in, whatever its use.
    #[arg(long, env = "PATROL_SESSION_TTL_HOURS",
          default_value_t = DEFAULT_SESSION_TTL_HOURS,
          value_parser = clap::value_parser!(u64).range(1..=168))]
    pub session_ttl_hours: u64,
    /// Minutes a sign-in session lasts without use (an open live stream is use).
    #[arg(long, env = "PATROL_SESSION_IDLE_MINUTES",
          default_value_t = DEFAULT_SESSION_IDLE_MINUTES,
          value_parser = clap::value_parser!(u64).range(1..=10_080))]
    pub session_idle_minutes: u64,
    /// Mark the session cookie `Secure` even though this server serves plain HTTP: for a
    /// TLS-terminating proxy in front of it (with --tls-cert the cookie is always `Secure`).
    #[arg(long, env = "PATROL_SESSION_COOKIE_SECURE")]
    pub session_cookie_secure: bool,
    /// Days after which a phone's credential is rotated at its next sync (the phone keeps its
    /// old one until the new one has worked once); 0 rotates it at every sync.
    #[arg(long, env = "PATROL_DEVICE_CREDENTIAL_MAX_AGE_DAYS",
          default_value_t = DEFAULT_DEVICE_CREDENTIAL_MAX_AGE_DAYS,
          value_parser = clap::value_parser!(u64).range(0..=3650))]
    pub device_credential_max_age_days: u64,
    /// Seconds between the checks an open live stream makes that its user may still read it
    /// (a revocation or rotation through this instance ends it at once).
    #[arg(long, env = "PATROL_STREAM_RECHECK_SECS",
          default_value_t = DEFAULT_STREAM_RECHECK_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stream_recheck_secs: u64,
    /// Most live streams one user may have open at once on this instance; one more is refused
    /// with `429 too_many_streams`.
    #[arg(long, env = "PATROL_MAX_STREAMS_PER_USER",
          default_value_t = DEFAULT_MAX_STREAMS_PER_USER,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub max_streams_per_user: usize,
    /// Overrides every site's `clock_skew_threshold_secs` (its rules, docs/protocol.md, "Site
    /// configuration"), for drills and tests: a phone's clock offset beyond this many seconds
    /// flags the events its sync delivers `clock_skew`. Unset: each site's own.
    #[arg(long, env = "PATROL_CLOCK_SKEW_THRESHOLD_SECS",
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub clock_skew_threshold_secs: Option<u32>,
    /// Overrides every site's `no_contact_after_min`, for drills and tests: a device on shift
    /// without a sync for longer is marked silent. Unset: each site's own.
    #[arg(long, env = "PATROL_NO_CONTACT_AFTER_MINS",
          value_parser = clap::value_parser!(u64).range(1..=10_080))]
    pub no_contact_after_mins: Option<u64>,
    /// The same in seconds, instead of --no-contact-after-mins (for drills and tests).
    #[arg(long, env = "PATROL_NO_CONTACT_AFTER_SECS", conflicts_with = "no_contact_after_mins",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub no_contact_after_secs: Option<u64>,
    /// Overrides every site's `shift_overdue_after_hours`, for drills and tests: a shift still
    /// open this long after its start is marked overdue. Unset: each site's own.
    #[arg(long, env = "PATROL_SHIFT_OVERDUE_AFTER_HOURS",
          value_parser = clap::value_parser!(u64).range(1..=168))]
    pub shift_overdue_after_hours: Option<u64>,
    /// The same in seconds, instead of --shift-overdue-after-hours (for drills and tests).
    #[arg(long, env = "PATROL_SHIFT_OVERDUE_AFTER_SECS",
          conflicts_with = "shift_overdue_after_hours",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub shift_overdue_after_secs: Option<u64>,
    /// Seconds between this instance's checks for devices gone silent or back and shifts
    /// overdue, which it announces on its live streams.
    #[arg(long, env = "PATROL_GAP_CHECK_SECS",
          default_value_t = DEFAULT_GAP_CHECK_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gap_check_secs: u64,
    /// Seconds between this instance's passes over every site's tour windows: windows whose
    /// grace ended are closed (what was not scanned is missed) and windows that are final are
    /// marked so; window changes (`window_changed`, `window_final`, `window_amended`) reach its
    /// live streams at the next pass. Safe with several instances on one database.
    #[arg(long, env = "PATROL_COMPLIANCE_CHECK_SECS",
          default_value_t = DEFAULT_COMPLIANCE_CHECK_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub compliance_check_secs: u64,
    /// Overrides every site's `alarm_escalation_after_secs`, for drills and tests: a panic
    /// alarm not acknowledged this long after its receipt is escalated. Unset: each site's own.
    #[arg(long, env = "PATROL_ALARM_ESCALATION_AFTER_SECS",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub alarm_escalation_after_secs: Option<u32>,
    /// Seconds between this instance's checks for panic alarms to escalate, and its
    /// announcements of alarm changes made through other instances (`alarm_escalated`,
    /// `alarm_acknowledged`) on its live streams. Safe with several instances on one database.
    #[arg(long, env = "PATROL_ALARM_CHECK_SECS",
          default_value_t = DEFAULT_ALARM_CHECK_SECS,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub alarm_check_secs: u64,
    /// Milliseconds between this instance's looks for webhook deliveries due (docs/operations.md,
    /// "Webhooks"). Safe with several instances on one database: each delivery is claimed by one.
    #[arg(long, env = "PATROL_WEBHOOK_CHECK_MS",
          default_value_t = DEFAULT_WEBHOOK_CHECK_MS,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub webhook_check_ms: u64,
    /// The wait before a failed webhook delivery is tried again the first time, in milliseconds;
    /// it doubles after each further failure (with jitter), up to an hour.
    #[arg(long, env = "PATROL_WEBHOOK_RETRY_BASE_MS",
          default_value_t = DEFAULT_WEBHOOK_RETRY_BASE_MS,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_retry_base_ms: u64,
    /// Failed attempts after which a webhook delivery is parked (also parked at a failure a day
    /// after it was queued); an administrator may re-queue it.
    #[arg(long, env = "PATROL_WEBHOOK_MAX_ATTEMPTS",
          default_value_t = DEFAULT_WEBHOOK_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// The longest a webhook request may take, connecting included, in milliseconds; a slower
    /// receiver's attempt fails and is tried again.
    #[arg(long, env = "PATROL_WEBHOOK_TIMEOUT_MS",
          default_value_t = DEFAULT_WEBHOOK_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub webhook_timeout_ms: u64,
}

/// The help of `--max-concurrent-syncs`, with the default as the server applies it.
fn concurrent_syncs_help() -> String {
    format!(
        "Sync requests handled at once; more wait, unread, in their connections (default: \
         {DEFAULT_CONCURRENT_SYNCS_PER_CPU} per core). Bounds the memory that many devices \
         syncing at once take"
    )
}

/// The help of `--max-queued-syncs`, with the default as the server applies it.
fn queued_syncs_help() -> String {
    format!(
        "Sync requests that may wait for a permit; one more is refused at once with `503 \
         server_busy` and a `Retry-After`, its body unread (default: \
         {DEFAULT_QUEUED_SYNCS_PER_CPU} per core). 0 refuses every sync that finds no permit \
         free"
    )
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site.
    Create {
        /// The site's id: 1-64 letters, digits, '-', '_', '.' or ':'.
        site_id: String,
        /// A human-readable name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List sites: a table of id, name and creation time (local time), or JSON with --json.
    List {
        /// Print one JSON document, `{"sites": [...]}`, with the fields of `GET /api/v1/sites`
        /// (docs/operations.md), instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// Settings of the HTTP API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub max_body_bytes: usize,
    /// Lifetime of an enrollment code whose request does not set one.
    pub enrollment_code_ttl_secs: u64,
    pub auth_throttle: ThrottleConfig,
    /// Lifetime of the user tokens the API issues, in milliseconds.
    pub user_token_ttl_ms: i64,
    /// How long a rotated user token keeps working, in milliseconds (0: not at all).
    pub user_token_rotation_overlap_ms: i64,
    /// The age at which a device credential is due for rotation, in milliseconds.
    pub device_credential_max_age_ms: i64,
    /// How long sign-in sessions last.
    pub sessions: SessionPolicy,
    /// Whether the session cookie is `Secure` and browsers' origins `https`: the server serves
    /// TLS, or a proxy in front of it does.
    pub https: bool,
    /// How often an open live stream re-checks its user.
    pub stream_recheck: Duration,
    /// Most live streams open at once per user.
    pub max_streams_per_user: usize,
    /// The server's overrides of the sites' own thresholds (none by default).
    pub overrides: RuleOverrides,
    /// How often the gap watcher checks (`http::gaps`).
    pub gap_check: Duration,
    /// How often the finaliser passes over every site's tour windows (`http::finaliser`).
    pub compliance_check: Duration,
    /// How often the alarm watcher escalates and announces (`http::alarm_watch`).
    pub alarm_check: Duration,
    /// How often the webhook sender looks for due deliveries (`http::webhooks`).
    pub webhook_check: Duration,
    /// How failed webhook deliveries are tried again, and when they are parked.
    pub webhook_retry: RetryPolicy,
    /// The longest a webhook request may take.
    pub webhook_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            enrollment_code_ttl_secs: DEFAULT_ENROLLMENT_CODE_TTL_SECS,
            auth_throttle: ThrottleConfig::default(),
            user_token_ttl_ms: days_ms(DEFAULT_USER_TOKEN_TTL_DAYS),
            user_token_rotation_overlap_ms: secs_ms(DEFAULT_USER_TOKEN_ROTATION_OVERLAP_SECS),
            device_credential_max_age_ms: days_ms(DEFAULT_DEVICE_CREDENTIAL_MAX_AGE_DAYS),
            sessions: SessionPolicy {
                ttl_ms: hours_ms(DEFAULT_SESSION_TTL_HOURS),
                idle_ms: secs_ms(DEFAULT_SESSION_IDLE_MINUTES * 60),
            },
            https: false,
            stream_recheck: Duration::from_secs(DEFAULT_STREAM_RECHECK_SECS),
            max_streams_per_user: DEFAULT_MAX_STREAMS_PER_USER,
            overrides: RuleOverrides::default(),
            gap_check: Duration::from_secs(DEFAULT_GAP_CHECK_SECS),
            compliance_check: Duration::from_secs(DEFAULT_COMPLIANCE_CHECK_SECS),
            alarm_check: Duration::from_secs(DEFAULT_ALARM_CHECK_SECS),
            webhook_check: Duration::from_millis(DEFAULT_WEBHOOK_CHECK_MS),
            webhook_retry: RetryPolicy::default(),
            webhook_timeout: Duration::from_millis(DEFAULT_WEBHOOK_TIMEOUT_MS),
        }
    }
}

fn hours_ms(hours: u64) -> i64 {
    secs_ms(hours.saturating_mul(3_600))
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

impl From<&ServeArgs> for ApiConfig {
    fn from(args: &ServeArgs) -> Self {
        ApiConfig {
            max_body_bytes: args.max_body_bytes,
            enrollment_code_ttl_secs: args.enrollment_code_ttl_secs,
            auth_throttle: ThrottleConfig {
                slow_after: args.auth_slow_after,
                max_failures: args.auth_max_failures,
                window: Duration::from_secs(args.auth_failure_window_secs),
                lockout: Duration::from_secs(args.auth_lockout_secs),
                trusted_proxies: args.trusted_proxy.clone(),
            },
            user_token_ttl_ms: args.user_token_ttl.ttl_ms(),
            user_token_rotation_overlap_ms: secs_ms(args.user_token_rotation_overlap_secs),
            device_credential_max_age_ms: days_ms(args.device_credential_max_age_days),
            sessions: SessionPolicy {
                ttl_ms: hours_ms(args.session_ttl_hours),
                idle_ms: secs_ms(args.session_idle_minutes.saturating_mul(60)),
            },
            https: args.tls_cert.is_some() || args.session_cookie_secure,
            stream_recheck: Duration::from_secs(args.stream_recheck_secs),
            max_streams_per_user: args.max_streams_per_user,
            overrides: RuleOverrides {
                clock_skew_threshold_secs: args.clock_skew_threshold_secs,
                alarm_escalation_after_secs: args.alarm_escalation_after_secs,
                no_contact_after: args
                    .no_contact_after_secs
                    .or(args.no_contact_after_mins.map(|m| m * 60))
                    .map(Duration::from_secs),
                shift_overdue_after: args
                    .shift_overdue_after_secs
                    .or(args.shift_overdue_after_hours.map(|h| h * 3600))
                    .map(Duration::from_secs),
            },
            gap_check: Duration::from_secs(args.gap_check_secs),
            compliance_check: Duration::from_secs(args.compliance_check_secs),
            alarm_check: Duration::from_secs(args.alarm_check_secs),
            webhook_check: Duration::from_millis(args.webhook_check_ms),
            webhook_retry: RetryPolicy {
                base_ms: i64::try_from(args.webhook_retry_base_ms).unwrap_or(i64::MAX),
                max_attempts: args.webhook_max_attempts,
                ..RetryPolicy::default()
            },
            webhook_timeout: Duration::from_millis(args.webhook_timeout_ms),
        }
    }
}

/// The server's explicit overrides of every site's thresholds (`serve`'s
/// `--clock-skew-threshold-secs`, `--no-contact-after-*` and `--shift-overdue-after-*`), for
/// drills and tests. Each `None` leaves every site its own rule (`SiteRules`, in its
/// configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleOverrides {
    pub clock_skew_threshold_secs: Option<u32>,
    pub alarm_escalation_after_secs: Option<u32>,
    pub no_contact_after: Option<Duration>,
    pub shift_overdue_after: Option<Duration>,
}

/// When a device or shift of a site shows a gap: its rules, or the server's overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapThresholds {
    /// A device on shift without a sync for longer is silent.
    pub no_contact_after: Duration,
    /// A shift still open this long after its start is overdue.
    pub shift_overdue_after: Duration,
}

impl RuleOverrides {
    /// A site's configuration as the server applies it: its rules with the overrides set.
    pub fn apply(&self, config: &mut SiteConfig) {
        if let Some(secs) = self.clock_skew_threshold_secs {
            config.rules.clock_skew_threshold_secs = secs;
        }
        if let Some(secs) = self.alarm_escalation_after_secs {
            config.rules.alarm_escalation_after_secs = secs;
        }
    }

    /// A site's gap thresholds: its rules', or the overrides.
    pub fn gaps(&self, rules: &SiteRules) -> GapThresholds {
        GapThresholds {
            no_contact_after: self.no_contact_after.unwrap_or(Duration::from_secs(
                u64::from(rules.no_contact_after_min) * 60,
            )),
            shift_overdue_after: self.shift_overdue_after.unwrap_or(Duration::from_secs(
                u64::from(rules.shift_overdue_after_hours) * 3600,
            )),
        }
    }
}

/// The failed-authentication throttle's settings (`http::throttle`; `serve`'s `--auth-*` and
/// `--trusted-proxy` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures within the window from which each failed answer is held back.
    pub slow_after: u32,
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            slow_after: DEFAULT_AUTH_SLOW_AFTER,
            max_failures: DEFAULT_AUTH_MAX_FAILURES,
            window: Duration::from_secs(DEFAULT_AUTH_FAILURE_WINDOW_SECS),
            lockout: Duration::from_secs(DEFAULT_AUTH_LOCKOUT_SECS),
            trusted_proxies: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_and_flags_parse() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "patrol-server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
        ])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(args.listen.port(), 0);
        assert_eq!(args.data.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(args.metrics_listen, None);

        let cli = Cli::try_parse_from([
            "patrol-server",
            "serve",
            "--metrics-listen",
            "127.0.0.1:9100",
        ])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(args.metrics_listen.map(|a| a.port()), Some(9100));

        let cli = Cli::try_parse_from([
            "patrol-server",
            "site",
            "create",
            "mall-1",
            "--name",
            "Mall",
        ])?;
        let Command::Site(SiteCommand::Create { site_id, name, .. }) = cli.into_command() else {
            panic!("expected site create")
        };
        assert_eq!(
            (site_id.as_str(), name.as_deref()),
            ("mall-1", Some("Mall"))
        );
        assert!(Cli::try_parse_from(["patrol-server", "--listen", "nonsense"]).is_err());

        let cli = Cli::try_parse_from(["patrol-server", "admin", "create", "root"])?;
        let Command::Admin(AdminCommand::Create { name, sites, .. }) = cli.into_command() else {
            panic!("expected admin create")
        };
        assert_eq!((name.as_str(), sites.len()), ("root", 0));
        let cli = Cli::try_parse_from([
            "patrol-server",
            "user",
            "create",
            "ann",
            "--role",
            "operator",
            "--site",
            "a",
            "--site",
            "b",
        ])?;
        let Command::User(UserCommand::Create { sites, .. }) = cli.into_command() else {
            panic!("expected user create")
        };
        assert_eq!(sites, ["a", "b"]);
        assert!(
            Cli::try_parse_from([
                "patrol-server",
                "user",
                "create",
                "x",
                "--role",
                "admin",
                "--site",
                "a",
                "--all-sites"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["patrol-server", "--enrollment-code-ttl-secs", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "patrol-server",
            "serve",
            "--database-url",
            "postgres://u@db/patrol",
            "--database-max-connections",
            "4",
        ])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(
            (
                args.data.database_url.as_deref(),
                args.database_max_connections
            ),
            (Some("postgres://u@db/patrol"), 4)
        );
        let cli = Cli::try_parse_from([
            "patrol-server",
            "site",
            "list",
            "--database-url",
            "postgres://u@db/patrol",
        ])?;
        let Command::Site(SiteCommand::List { data, json }) = cli.into_command() else {
            panic!("expected site list")
        };
        assert_eq!(data.database_url.as_deref(), Some("postgres://u@db/patrol"));
        assert!(!json);

        let cli = Cli::try_parse_from([
            "patrol-server",
            "--max-concurrent-syncs",
            "2",
            "--max-queued-syncs",
            "0",
            "--max-sync-wait-ms",
            "250",
            "--sync-retry-after-secs",
            "3",
        ])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(
            (
                args.max_concurrent_syncs,
                args.max_queued_syncs,
                args.max_sync_wait_ms,
                args.sync_retry_after_secs
            ),
            (Some(2), Some(0), 250, 3)
        );
        let cli = Cli::try_parse_from(["patrol-server"])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(
            (
                args.max_queued_syncs,
                args.max_sync_wait_ms,
                args.sync_retry_after_secs
            ),
            (
                None,
                DEFAULT_MAX_SYNC_WAIT_MS,
                DEFAULT_SYNC_RETRY_AFTER_SECS
            )
        );
        assert!(Cli::try_parse_from(["patrol-server", "--sync-retry-after-secs", "0"]).is_err());
        Ok(())
    }

    #[test]
    fn credential_ages_and_stream_limits_parse_with_defaults() -> Result<(), clap::Error> {
        let Command::Serve(args) = Cli::try_parse_from(["patrol-server"])?.into_command() else {
            panic!("expected serve")
        };
        let config = ApiConfig::from(&*args);
        assert_eq!(config.user_token_ttl_ms, 30 * MS_PER_DAY);
        assert_eq!(config.user_token_rotation_overlap_ms, 600_000);
        assert_eq!(config.device_credential_max_age_ms, 30 * MS_PER_DAY);
        assert_eq!(config.stream_recheck, Duration::from_secs(60));
        assert_eq!(config.max_streams_per_user, 8);
        // No override: every site's own rules.
        assert_eq!(config.overrides, RuleOverrides::default());
        let defaults = config.overrides.gaps(&SiteRules::default());
        assert_eq!(defaults.no_contact_after, Duration::from_secs(30 * 60));
        assert_eq!(defaults.shift_overdue_after, Duration::from_secs(12 * 3600));
        assert_eq!(config.gap_check, Duration::from_secs(60));
        let cli = Cli::try_parse_from([
            "patrol-server",
            "--clock-skew-threshold-secs",
            "300",
            "--user-token-ttl-days",
            "7",
            "--device-credential-max-age-days",
            "0",
            "--max-streams-per-user",
            "2",
        ])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        let config = ApiConfig::from(&*args);
        assert_eq!(config.overrides.clock_skew_threshold_secs, Some(300));
        assert_eq!(
            (
                config.user_token_ttl_ms,
                config.device_credential_max_age_ms,
                config.max_streams_per_user
            ),
            (7 * MS_PER_DAY, 0, 2)
        );
        let cli = Cli::try_parse_from([
            "patrol-server",
            "user",
            "rotate",
            "ann",
            "--user-token-ttl-days",
            "3",
        ])?;
        let Command::User(UserCommand::Rotate { user, ttl, .. }) = cli.into_command() else {
            panic!("expected user rotate")
        };
        assert_eq!((user.as_str(), ttl.ttl_ms()), ("ann", 3 * MS_PER_DAY));
        for refused in [
            ["--user-token-ttl-days", "0"],
            ["--stream-recheck-secs", "0"],
            ["--max-streams-per-user", "0"],
        ] {
            assert!(Cli::try_parse_from(["patrol-server", refused[0], refused[1]]).is_err());
        }
        Ok(())
    }

    #[test]
    fn connection_limits_parse_with_safe_defaults() -> Result<(), clap::Error> {
        let Command::Serve(args) = Cli::try_parse_from(["patrol-server"])?.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(
            (
                args.header_read_timeout_secs,
                args.body_read_timeout_secs,
                args.idle_timeout_secs,
                args.max_connections,
                args.max_connections_per_address,
                args.shutdown_timeout_secs
            ),
            (10, 60, 60, 4_096, 256, 20)
        );
        let cli = Cli::try_parse_from([
            "patrol-server",
            "--max-connections",
            "64",
            "--max-connections-per-address",
            "16",
            "--header-read-timeout-secs",
            "1",
        ])?;
        let Command::Serve(args) = cli.into_command() else {
            panic!("expected serve")
        };
        assert_eq!(
            (
                args.max_connections,
                args.max_connections_per_address,
                args.header_read_timeout_secs
            ),
            (64, 16, 1)
        );
        for refused in [
            ["--max-connections", "0"],
            ["--max-connections-per-address", "0"],
            ["--header-read-timeout-secs", "0"],
            ["--body-read-timeout-secs", "0"],
            ["--idle-timeout-secs", "0"],
        ] {
            assert!(Cli::try_parse_from(["patrol-server", refused[0], refused[1]]).is_err());
        }
        Ok(())
    }

    /// Every flag and positional argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory as _;
        fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                // clap's own --help and --version describe themselves.
                let own = matches!(arg.get_id().as_str(), "help" | "version");
                if !own && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    out.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                undescribed(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undescribed(&Cli::command(), "patrol-server", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// The defaults per core that `serve --help` states are the ones the server applies.
    #[test]
    fn serve_help_states_the_admission_defaults() {
        use clap::CommandFactory as _;
        let mut cli = Cli::command();
        let serve = cli
            .find_subcommand_mut("serve")
            .unwrap_or_else(|| panic!("no serve subcommand"));
        let help = serve.render_long_help().to_string();
        for default in [
            DEFAULT_CONCURRENT_SYNCS_PER_CPU,
            DEFAULT_QUEUED_SYNCS_PER_CPU,
        ] {
            let said = format!("(default: {default} per core)");
            assert!(help.contains(&said), "no {said:?} in\n{help}");
        }
    }
}
