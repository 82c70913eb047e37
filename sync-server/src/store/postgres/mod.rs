//! The PostgreSQL backend: the same record as SQLite, shared by any number of server instances.
//!
//! - A pool of connections ([`deadpool_postgres`]); statements are prepared once per connection.
//! - Sync requests run the two phases of [`super::merge`]. The merge reads each document in one
//!   statement (one snapshot) and runs on the blocking pool, at most one per core at a time,
//!   outside any transaction. The write phase is one READ COMMITTED transaction per request:
//!   1. it locks every document it writes, in doc-id order so that two requests never wait on
//!      each other in a cycle: an existing one with `SELECT .. FOR NO KEY UPDATE`, comparing its heads to
//!      those the merge started from; a new one by inserting its row, which a concurrent first
//!      push of the same document waits on, then finds taken. A moved version means the merge is
//!      redone; in the last of [`OPTIMISTIC_ROUNDS`](super::merge::OPTIMISTIC_ROUNDS) it is
//!      redone under the lock;
//!   2. it writes the chunks and `docs` rows;
//!   3. before the first new event it locks the site's row and numbers the events from its
//!      `next_seq`. Every writer of a site's events holds that lock until it commits, so sequence
//!      numbers are gap-free and commit (become visible) in order, whichever instance wrote them;
//!      event ids are checked against the site's feed under the same lock, and the schema keeps
//!      them unique per site;
//!   4. it records the device's sync and sends `NOTIFY patrol_events, '<site> <last seq>'`,
//!      which PostgreSQL delivers to every listener when (and only if) the transaction commits.
//! - Incidents, configurations and alarm acks ([`collab`]): each incident write locks the
//!   incident's row for its read-modify-write.
//! - Row locks are `FOR NO KEY UPDATE`, never `FOR UPDATE`: inserting a row that references
//!   another (a document of a site) takes a key-share lock on the referenced row, which
//!   `FOR UPDATE` would wait for, so two writers that had each inserted such a row would wait on
//!   each other for good.
//! - A listener task per store keeps one connection that `LISTEN`s on `patrol_events` and wakes
//!   the local subscribers ([`Store::subscribe`]). If the connection drops it reconnects, then
//!   wakes every subscribed site with its current last seq, so no one waits for a missed wake-up.
//! - Migrations in `postgres/migrations/`, each in its own transaction under an advisory lock
//!   (instances starting at once apply each migration once), recorded in `schema_migrations`.
//!
//! - Tour compliance (migration 0011, [`compliance`]): kept in each sync's write transaction
//!   under the site's row lock; the periodic pass takes the same lock, and leaves a site whose
//!   lock another instance holds to that instance (`SKIP LOCKED`).
//!
//! - Attachment blobs (migration 0018, [`blobs`]): in tables, chunked, so that every instance
//!   sees every upload and one backup holds everything.
//!
//! One file per concern, as in the SQLite backend: [`schema`], [`sync`], [`feed`], [`auth`],
//! [`collab`], [`compliance`], [`blobs`]; this one sets the store up (pool, listener) and forwards the [`Store`] methods.

use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use patrol_core::protocol::DocOutcome;
use patrol_core::{DeviceId, ShiftId, SiteId};
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use self::schema::{MIGRATIONS, migrate};
use super::blobs::{AttachmentRef, BlobChunk, BlobHash, ChunkOutcome, UploadState};
use super::compliance::{StoredChange, WindowQuery, WindowsAnswer};
use super::incident::ServerClock;
use super::notify::Notifier;
use super::rows::to_i64;
use super::{
    Acknowledged, AlarmAckRecord, AlarmChange, BackendError, BoxFuture, CollabAnswer, CollabSync,
    DeviceCredential, DeviceStatus, Enrollment, EventPage, FeedFilter, IncidentList, IncidentQuery,
    NewEnrollmentCode, OperatorAction, PanicAlarm, SettleReport, ShiftLogEvidence, ShiftPage,
    ShiftQuery, ShiftSummary, Site, Store, StoreError, StoredConfig, SyncBatch, TimeCursor,
    TimePage, UserKey, UserWithPassword, check_ins::CheckInTimerView,
};
use crate::credentials::passwords::PasswordHashString;
use crate::credentials::sessions::StoredSession;
use crate::credentials::{
    NewUser, StoredDeviceCredentials, StoredUserTokens, TokenHash, User, UserTokenRotation,
};

mod alarms;
mod auth;
mod blobs;
mod collab;
mod compliance;
mod feed;
mod schema;
mod sync;
mod webhooks;

/// The channel new events are announced on; the payload is `<site id> <last seq>`.
pub const EVENTS_CHANNEL: &str = "patrol_events";

/// Attempts of a transaction that PostgreSQL aborted to break a deadlock or a serialization
/// conflict; the lock order above should make these rare.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// How long a request waits for a pooled connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delays between the listener's reconnection attempts.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Settings of the PostgreSQL backend.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most pooled connections (the listener's is extra).
    pub max_connections: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 16,
        }
    }
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    /// Merges running at once on the blocking pool (one per core: they are CPU-bound).
    merges: Semaphore,
    /// Stamps operators' incident entries.
    clock: Arc<ServerClock>,
    notifier: Arc<Notifier>,
    listener: tokio::task::JoinHandle<()>,
    /// Where the database is, for logs: host, port and database, never the password.
    description: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The PostgreSQL store. Cheap to clone; clones share the pool and the listener, which stop once
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

/// Host, port and database of a connection config, for logs (no user or password).
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "postgres://{}:{}/{}",
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// PostgreSQL's and its pool's errors, as the store reports them.
#[derive(Debug, thiserror::Error)]
enum PostgresError {
    /// The driver's message with its causes (its own `Display` leaves them out).
    #[error("postgres: {}", postgres_message(.0))]
    Driver(tokio_postgres::Error),
    #[error("postgres connection pool: {0}")]
    Pool(String),
}

/// `e` and each of its causes, joined by `: `.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

/// The driver's error, marked transient when PostgreSQL aborted the transaction to break a
/// deadlock or a serialization conflict (the same transaction may then succeed).
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let transient = e.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        });
        let e = PostgresError::Driver(e);
        StoreError::Backend(if transient {
            BackendError::transient(e)
        } else {
            BackendError::new(e)
        })
    }
}

fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(BackendError::new(PostgresError::Pool(e.to_string())))
}

/// A connection the pool could not get: the database's own error when there is one.
fn checkout_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
        other => pool_error(other),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname?..`, or the
    /// key-value form), migrates it to the current schema and starts listening for other
    /// instances' events. Returns once the listener is listening.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::DatabaseUrl(e.to_string()))?;
        if config.get_application_name().is_none() {
            config.application_name("patrol-server");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let description = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(pool_error)?;
        {
            let mut client = pool.get().await.map_err(checkout_error)?;
            migrate(&mut client, MIGRATIONS.len()).await?;
            let tx = client.transaction().await?;
            auth::revoke_refused_keys(&tx, crate::now_ms()).await?;
            tx.commit().await?;
            let refreshed = collab::refresh_incident_states(&mut client).await?;
            if refreshed > 0 {
                tracing::info!(refreshed, "recomputed stored incident states");
            }
        }
        let notifier = Arc::new(Notifier::default());
        let (ready, listening) = oneshot::channel();
        let listener = tokio::spawn(listen(config, Arc::clone(&notifier), Some(ready)));
        match listening.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                listener.abort();
                return Err(e);
            }
            Err(_) => return Err(StoreError::Closed),
        }
        tracing::info!(database = %description, "opened the PostgreSQL store");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                merges: Semaphore::new(cpus()),
                clock: Arc::new(ServerClock::default()),
                notifier,
                listener,
                description,
            }),
        })
    }

    /// Host, port and database (no credentials), for logs.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner.pool.get().await.map_err(checkout_error)
    }

    /// Runs `attempt` (one transaction) again if PostgreSQL aborted it to break a deadlock or a
    /// serialization conflict.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(e) if tries < TRANSACTION_ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, tries, "transaction aborted by the database; retrying");
                    tries += 1;
                }
                other => return other,
            }
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Whether PostgreSQL aborted the transaction to break a deadlock or a serialization conflict
/// (the same transaction may then succeed).
fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(e) if e.is_transient())
}

pub(super) fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::CorruptData(format!("negative {what} {n}")))
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

// Every statement goes through the connection's statement cache: parsed once per connection.
async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

async fn query_one<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_one(&stmt, params).await?)
}

async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// A read-only transaction whose reads all see one snapshot.
async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The listener: keeps a connection that `LISTEN`s on [`EVENTS_CHANNEL`] and wakes the local
/// subscribers, reconnecting when it drops. `ready` hears how the first connection went (a
/// failure there ends the task: the store does not open).
async fn listen(
    config: tokio_postgres::Config,
    notifier: Arc<Notifier>,
    mut ready: Option<oneshot::Sender<Result<(), StoreError>>>,
) {
    let mut delay = LISTEN_RETRY_MIN;
    loop {
        let result = listen_once(&config, &notifier, &mut ready, &mut delay).await;
        let error = match result {
            Ok(()) => StoreError::Closed,
            Err(e) => e,
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(error));
            return;
        }
        tracing::warn!(error = %error, retry_in = ?delay, "lost the PostgreSQL listener connection; reconnecting");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LISTEN_RETRY_MAX);
    }
}

/// One listener connection, until it fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    notifier: &Notifier,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
    delay: &mut Duration,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    // The connection delivers notifications only to whoever polls it for messages.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listened = async {
        client
            .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
            .await?;
        // Whatever was committed while nobody listened.
        let sites = notifier.subscribed();
        if !sites.is_empty() {
            let rows = client
                .query(
                    "SELECT site_id, next_seq - 1 FROM sites WHERE site_id = ANY($1)",
                    &[&sites],
                )
                .await?;
            for row in rows {
                let site: String = row.try_get(0)?;
                let last: i64 = row.try_get(1)?;
                if last > 0 {
                    notifier.notify(&site, to_u64(last, "seq")?);
                }
            }
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        *delay = LISTEN_RETRY_MIN;
        while let Some(n) = notifications.recv().await {
            match parse_payload(n.payload()) {
                Some((site, seq)) => notifier.notify(site, seq),
                None => tracing::warn!(payload = n.payload(), "malformed event notification"),
            }
        }
        Ok::<(), StoreError>(())
    }
    .await;
    // Dropping the client lets the connection finish, and so the driver.
    drop(client);
    let driven = driver.await?;
    listened?;
    driven?;
    Ok(())
}

/// `<site id> <last seq>` (a site id has no spaces).
fn parse_payload(payload: &str) -> Option<(&str, u64)> {
    let (site, seq) = payload.rsplit_once(' ')?;
    Some((site, seq.parse().ok()?))
}

impl Store for PostgresStore {
    fn create_site(&self, site: Site) -> BoxFuture<'_, Result<Site, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::create_site(&client, site).await
        })
    }

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::list_sites(&client).await
        })
    }

    fn get_site(&self, site: SiteId) -> BoxFuture<'_, Result<Option<Site>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::get_site(&client, &site).await
        })
    }

    fn sync(&self, batch: SyncBatch) -> BoxFuture<'_, Result<Vec<DocOutcome>, StoreError>> {
        Box::pin(self.sync_batch(batch))
    }

    fn events_after(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            feed::events_after(&client, &site, after, limit).await
        })
    }

    fn events_filtered(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
        filter: FeedFilter,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>> {
        Box::pin(async move {
            if filter.is_empty() {
                return self.events_after(site, after, limit).await;
            }
            let client = self.client().await?;
            feed::events_filtered(&client, &site, after, limit, &filter).await
        })
    }

    fn events_between(
        &self,
        site: SiteId,
        from_ms: i64,
        to_ms: i64,
        after: Option<TimeCursor>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<TimePage>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            feed::events_between(&client, &site, (from_ms, to_ms), after, limit).await
        })
    }

    fn alarm_acks(
        &self,
        site: SiteId,
        events: Vec<patrol_core::EventId>,
    ) -> BoxFuture<'_, Result<Vec<AlarmAckRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::alarm_acks(&client, &site, &events).await
        })
    }

    fn panic_alarms(
        &self,
        site: SiteId,
        open_only: bool,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<Vec<PanicAlarm>>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            alarms::panic_alarms(&client, &site, open_only, limit).await
        })
    }

    fn devices(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            feed::devices(&client, &site).await
        })
    }

    fn shifts(
        &self,
        site: SiteId,
        query: ShiftQuery,
    ) -> BoxFuture<'_, Result<Option<ShiftPage>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            feed::shifts(&client, &site, &query).await
        })
    }

    fn shift(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftSummary>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            feed::shift(&client, &site, &shift).await
        })
    }

    fn sync_collab(&self, sync: CollabSync) -> BoxFuture<'_, Result<CollabAnswer, StoreError>> {
        Box::pin(async move {
            if sync.incidents.is_empty() {
                // Nothing to write: the answer's reads share one snapshot.
                let mut client = self.client().await?;
                let tx = snapshot(&mut client).await?;
                let mut answer = CollabAnswer::default();
                collab::sync_extras(&tx, &sync, &HashSet::new(), &mut answer).await?;
                tx.commit().await?;
                return Ok(answer);
            }
            self.retrying(|| async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let answer = collab::write_collab(&tx, &sync).await?;
                tx.commit().await?;
                Ok(answer)
            })
            .await
        })
    }

    fn incidents(
        &self,
        site: SiteId,
        query: IncidentQuery,
    ) -> BoxFuture<'_, Result<IncidentList, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::incidents(&client, &site, &query).await
        })
    }

    fn incident(
        &self,
        site: SiteId,
        incident: patrol_core::IncidentId,
    ) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::incident_state(&client, &site, incident).await
        })
    }

    fn act_on_incident(&self, action: OperatorAction) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(async move {
            let clock = &self.inner.clock;
            self.retrying(|| async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let state = collab::act_on_incident(&tx, action.clone(), clock).await?;
                tx.commit().await?;
                Ok(state)
            })
            .await
        })
    }

    fn site_config(&self, site: SiteId) -> BoxFuture<'_, Result<StoredConfig, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::site_config(&client, &site).await
        })
    }

    fn put_site_config(
        &self,
        config: patrol_core::siteconfig::SiteConfig,
        base_version: u64,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<StoredConfig, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::put_site_config(&client, config, base_version, at_ms).await
        })
    }

    fn acknowledge_alarm(
        &self,
        site: SiteId,
        event: patrol_core::EventId,
        by: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Acknowledged, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let acknowledged = alarms::acknowledge_alarm(&tx, &site, event, &by, at_ms).await?;
            tx.commit().await?;
            Ok(acknowledged)
        })
    }

    fn escalate_alarms(
        &self,
        site: SiteId,
        after_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<AlarmChange>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let changes = alarms::escalate_alarms(&tx, &site, after_ms, now_ms).await?;
            tx.commit().await?;
            Ok(changes)
        })
    }

    fn check_in_timers(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<CheckInTimerView>>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            alarms::check_in_timers(&client, &site, now_ms).await
        })
    }

    fn record_overdue_check_ins(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<CheckInTimerView>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let recorded = alarms::record_overdue_check_ins(&tx, &site, now_ms).await?;
            tx.commit().await?;
            Ok(recorded)
        })
    }

    fn create_webhook(
        &self,
        webhook: super::webhooks::NewWebhook,
    ) -> BoxFuture<'_, Result<super::webhooks::Webhook, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let out = webhooks::create_webhook(&tx, &webhook).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn webhooks(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Vec<super::webhooks::Webhook>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            webhooks::webhooks(&client, &site).await
        })
    }

    fn delete_webhook(&self, site: SiteId, id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            webhooks::delete_webhook(&tx, &site, id).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn enqueue_webhook(
        &self,
        outgoing: super::webhooks::Outgoing,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            webhooks::enqueue(&client, &outgoing).await
        })
    }

    fn has_webhook_for(
        &self,
        site: SiteId,
        event_type: &'static str,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            webhooks::has_webhook_for(&client, &site, event_type).await
        })
    }

    fn webhook_deliveries(
        &self,
        site: SiteId,
        state: Option<super::webhooks::DeliveryState>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<super::webhooks::Delivery>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            webhooks::deliveries(&client, &site, state, limit).await
        })
    }

    fn retry_webhook_delivery(
        &self,
        site: SiteId,
        id: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<super::webhooks::Delivery, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let out = webhooks::retry_delivery(&tx, &site, id, now_ms).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn claim_webhook_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<super::webhooks::DueDelivery>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let out = webhooks::claim(&tx, now_ms, lease_until_ms, limit).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn prune_webhook_deliveries(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            webhooks::prune(&client, before_ms).await
        })
    }

    fn record_webhook_attempt(
        &self,
        id: i64,
        attempts_before: u32,
        attempt: super::webhooks::Attempt,
        next: super::webhooks::NextStep,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let out = webhooks::record_attempt(&tx, id, attempts_before, &attempt, next).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn alarm_changes(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<AlarmChange>, u64), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            alarms::alarm_changes(&client, after, limit).await
        })
    }

    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let user = auth::create_user(&tx, user).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::users(&client).await
        })
    }

    fn user_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, StoredUserTokens)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::user_by_token(&client, &hash).await
        })
    }

    fn rotate_user_token(
        &self,
        id: String,
        rotation: UserTokenRotation,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let user = auth::rotate_user_token(&tx, &id, rotation).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    fn revoke_user(
        &self,
        id: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let user = auth::revoke_user(&tx, &id, at_ms).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    fn user_with_password(
        &self,
        key: UserKey,
    ) -> BoxFuture<'_, Result<Option<UserWithPassword>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::user_with_password(&client, &key).await
        })
    }

    fn set_user_password(
        &self,
        id: String,
        password: PasswordHashString,
        keep: Option<TokenHash>,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let user = auth::set_user_password(&tx, &id, &password, keep).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    fn create_session(
        &self,
        user_id: String,
        session: StoredSession,
        idle_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            auth::create_session(&tx, &user_id, &session, idle_ms).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn session_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, StoredSession)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::session_by_token(&client, &hash).await
        })
    }

    fn touch_session(&self, hash: TokenHash, now_ms: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            execute(
                &client,
                "UPDATE user_sessions SET last_used_at = GREATEST(last_used_at, $2)
                 WHERE session_hash = $1",
                &[&hash.0.as_slice(), &now_ms],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_session(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let deleted = execute(
                &client,
                "DELETE FROM user_sessions WHERE session_hash = $1",
                &[&hash.0.as_slice()],
            )
            .await?;
            Ok(deleted > 0)
        })
    }

    fn create_enrollment_code(
        &self,
        code: NewEnrollmentCode,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::create_enrollment_code(&client, code).await
        })
    }

    fn enroll_device(
        &self,
        enrollment: Enrollment,
    ) -> BoxFuture<'_, Result<DeviceCredential, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let credential = auth::enroll_device(&tx, enrollment).await?;
            tx.commit().await?;
            Ok(credential)
        })
    }

    fn device_by_credential(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(DeviceCredential, StoredDeviceCredentials)>, StoreError>>
    {
        Box::pin(async move {
            let client = self.client().await?;
            auth::device_by_credential(&client, &hash).await
        })
    }

    fn stage_device_credential(
        &self,
        site: SiteId,
        device: DeviceId,
        next: TokenHash,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::stage_device_credential(&client, &site, &device, &next, at_ms).await
        })
    }

    fn promote_device_credential(
        &self,
        site: SiteId,
        device: DeviceId,
        next: TokenHash,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::promote_device_credential(&client, &site, &device, &next).await
        })
    }

    fn shift_log_evidence(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftLogEvidence>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            sync::shift_log_evidence(&mut client, &site, &shift).await
        })
    }

    fn device_credentials(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceCredential>>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::device_credentials(&client, &site).await
        })
    }

    fn revoke_device(
        &self,
        site: SiteId,
        device: DeviceId,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let credential = auth::revoke_device(&tx, &site, &device, at_ms).await?;
            tx.commit().await?;
            Ok(credential)
        })
    }

    fn tour_windows(
        &self,
        site: SiteId,
        query: WindowQuery,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<WindowsAnswer, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let answer = compliance::windows(&tx, &site, &query, now_ms).await?;
            tx.commit().await?;
            Ok(answer)
        })
    }

    fn settle_windows(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettleReport>, StoreError>> {
        Box::pin(async move {
            self.retrying(|| async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let report = compliance::settle(&tx, &site, now_ms).await?;
                tx.commit().await?;
                Ok(report)
            })
            .await
        })
    }

    fn window_changes(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<StoredChange>, u64), StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let changes = compliance::changes(&tx, &site, after, limit).await?;
            tx.commit().await?;
            Ok(changes)
        })
    }

    fn subscribe(&self, site: SiteId) -> broadcast::Receiver<u64> {
        self.inner.notifier.subscribe(site)
    }

    fn attachment_refs(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Vec<AttachmentRef>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            blobs::attachment_refs(&client, &site).await
        })
    }

    fn stored_blobs(
        &self,
        hashes: Vec<BlobHash>,
    ) -> BoxFuture<'_, Result<Vec<BlobHash>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            blobs::stored_blobs(&client, &hashes).await
        })
    }

    fn read_blob(&self, sha256: BlobHash) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            // One snapshot for the row and its chunks.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let bytes = blobs::read_blob(&tx, &sha256).await?;
            tx.commit().await?;
            Ok(bytes)
        })
    }

    fn blob_upload(
        &self,
        device: DeviceId,
        sha256: BlobHash,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<UploadState, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let state = blobs::upload_state(&tx, &device, &sha256, now_ms).await?;
            tx.commit().await?;
            Ok(state)
        })
    }

    fn put_blob_chunk(&self, chunk: BlobChunk) -> BoxFuture<'_, Result<ChunkOutcome, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let outcome = blobs::put_chunk(&tx, &chunk).await?;
            tx.commit().await?;
            Ok(outcome)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn notification_payloads_parse() {
        assert_eq!(parse_payload("site-1 42"), Some(("site-1", 42)));
        assert_eq!(parse_payload("site-1"), None);
        assert_eq!(parse_payload("site-1 x"), None);
    }

    #[test]
    fn logs_never_show_credentials() -> TestResult {
        let config = tokio_postgres::Config::from_str("postgres://anna:s3cret@db.local:6543/p")?;
        let shown = describe(&config);
        assert_eq!(shown, "postgres://db.local:6543/p");
        Ok(())
    }
}
