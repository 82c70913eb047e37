//! Shared helpers of the integration tests: a real store (SQLite in a temp dir, or a scratch
//! database on the local PostgreSQL) with a first administrator, phones built on
//! `patrol_core::ShiftLog` and enrolled through the API, and requests sent through the real
//! router with their credentials. [`on_every_backend!`] runs a test once per backend: the
//! conformance suite of the [`Store`] contract.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use automerge::ChangeHash;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use patrol_core::evidence::DeviceKey;
use patrol_core::merge::{acknowledge, plan_push};
use patrol_core::protocol::{self, DocOutcome, DocPush, SyncRequest, SyncResponse};
use patrol_core::{
    CheckpointId, DeviceId, DeviceTime, EventBody, EventId, EventRecord, GuardId, Hlc, Scan,
    ScanMethod, ShiftId, ShiftLog, ShiftMeta, SiteId,
};
use patrol_server::config::ApiConfig;
use patrol_server::credentials::new_user;
use patrol_server::credentials::{Role, Scope};
use patrol_server::store::Site;
use patrol_server::{AppState, PostgresOptions, PostgresStore, SqliteStore, Store, router};
use patrol_testkit::{ScratchDatabase, postgres_admin_url};
use tempfile::TempDir;
use tower::ServiceExt;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const SITE: &str = "site-1";

pub fn site() -> SiteId {
    SiteId::new(SITE).unwrap_or_else(|e| panic!("{e}"))
}

/// Where a test server keeps its record: one backend, fresh and empty.
#[derive(Debug)]
pub enum Backend {
    /// SQLite in a temporary data directory.
    Sqlite(TempDir),
    /// A scratch database on the local PostgreSQL server, dropped afterwards.
    Postgres(Box<ScratchDatabase>),
}

impl Backend {
    pub fn sqlite() -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Backend::Sqlite(tempfile::tempdir()?))
    }

    /// A fresh database on the local PostgreSQL server; `None` (with a notice) when there is
    /// none, unless `PATROL_REQUIRE_POSTGRES=1`: then an error (see [`ScratchDatabase::create`]).
    pub async fn postgres() -> Result<Option<Self>, Box<dyn std::error::Error>> {
        Ok(ScratchDatabase::create()
            .await?
            .map(|db| Backend::Postgres(Box::new(db))))
    }

    /// Another fresh, empty backend of the same kind.
    pub async fn another(&self) -> Result<Self, Box<dyn std::error::Error>> {
        match self {
            Backend::Sqlite(_) => Self::sqlite(),
            Backend::Postgres(_) => Ok(Backend::Postgres(Box::new(
                ScratchDatabase::create_on(&postgres_admin_url()).await?,
            ))),
        }
    }

    /// Opens a store over this backend (again, after a restart).
    pub async fn open(&self) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        Ok(match self {
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open_dir(dir.path())?),
            Backend::Postgres(db) => {
                Arc::new(PostgresStore::connect(db.url(), PostgresOptions::default()).await?)
            }
        })
    }
}

/// Runs each listed test function (`async fn name(backend: Backend) -> TestResult`) once per
/// backend: `sqlite::name` and `postgres::name`. The PostgreSQL one skips with a notice when no
/// server is reachable, and fails then if `PATROL_REQUIRE_POSTGRES=1`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> $crate::common::TestResult {
                    super::$name($crate::common::Backend::sqlite()?).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> $crate::common::TestResult {
                    match $crate::common::Backend::postgres().await? {
                        Some(backend) => super::$name(backend).await,
                        None => Ok(()),
                    }
                }
            )*
        }
    };
}

/// A server over a fresh backend holding one site, [`SITE`], and an administrator over all
/// sites whose token is `admin`.
pub struct TestServer {
    // Dropped first: the store closes before its database is dropped.
    pub state: AppState,
    pub backend: Backend,
    pub admin: String,
    /// The credential of every device enrolled through [`TestServer::enroll`].
    credentials: Mutex<HashMap<DeviceId, String>>,
    /// The tokens of users made by [`TestServer::user_token`], by name.
    users: Mutex<HashMap<String, String>>,
}

/// What `POST /api/v1/enroll` gave a device.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub device: DeviceId,
    pub credential: String,
}

impl TestServer {
    pub async fn new(backend: Backend) -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_config(backend, ApiConfig::default()).await
    }

    /// A server over SQLite, for tests of the API rather than of the store.
    pub async fn sqlite() -> Result<Self, Box<dyn std::error::Error>> {
        Self::new(Backend::sqlite()?).await
    }

    pub async fn with_config(
        backend: Backend,
        config: ApiConfig,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let store = backend.open().await?;
        store
            .create_site(Site {
                id: site(),
                name: "Test site".into(),
                created_at_ms: 0,
            })
            .await?;
        // As `patrol-server admin create` does.
        let (new, token) = new_user(
            "admin".into(),
            Role::Admin,
            Scope::AllSites,
            None,
            0,
            i64::MAX,
        )?;
        store.create_user(new).await?;
        Ok(TestServer {
            backend,
            state: AppState::with_config(store, config),
            admin: token.expose().to_owned(),
            credentials: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
        })
    }

    /// Drops the store and opens the same backend again, as a restarted server does.
    pub async fn reopen(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        self.state = AppState::new(self.backend.open().await?);
        Ok(())
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.state.store)
    }

    /// Another server whose data is a copy of this one's as it is now, as a server restored
    /// from a backup is: it knows the same users and devices, and nothing synced after the copy.
    /// (SQLite only.)
    pub fn copy(&self) -> Result<TestServer, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let conn = rusqlite::Connection::open(self.db_path()?)?;
        conn.execute(
            "VACUUM INTO ?1",
            [dir.path().join("patrol.db").display().to_string()],
        )?;
        let state = AppState::new(Arc::new(SqliteStore::open_dir(dir.path())?));
        let credentials = self.credentials.lock().map_err(|_| "poisoned")?.clone();
        Ok(TestServer {
            backend: Backend::Sqlite(dir),
            state,
            admin: self.admin.clone(),
            credentials: Mutex::new(credentials),
            users: Mutex::new(HashMap::new()),
        })
    }

    /// Enrolls a device on `site` through the API, as an administrator and a phone do. These
    /// calls go through a router with counters of its own, so that tests of the server's
    /// counters see only the traffic they make.
    pub async fn enroll_on(&self, site: &str) -> Result<Enrolled, Box<dyn std::error::Error>> {
        self.enroll_with_key(site, None).await
    }

    /// As [`TestServer::enroll_on`], registering `key`'s public half as a phone of this
    /// version does (without one, the device is one enrolled before keys existed).
    pub async fn enroll_with_key(
        &self,
        site: &str,
        key: Option<&DeviceKey>,
    ) -> Result<Enrolled, Box<dyn std::error::Error>> {
        let mut uncounted = self.state.clone();
        uncounted.metrics = Arc::new(patrol_server::Metrics::new());
        let (status, code) = post_json(
            &uncounted,
            &self.admin,
            &format!("/api/v1/sites/{site}/enrollment-codes"),
            serde_json::json!({}),
        )
        .await?;
        assert_eq!(status, StatusCode::CREATED, "{code}");
        let (status, enrolled) = post_json(
            &uncounted,
            "",
            "/api/v1/enroll",
            match key {
                Some(key) => serde_json::json!({
                    "code": code["code"],
                    "public_key": key.public_key().to_string(),
                }),
                None => serde_json::json!({"code": code["code"]}),
            },
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{enrolled}");
        let device: DeviceId = enrolled["device_id"]
            .as_str()
            .ok_or("no device id")?
            .parse()?;
        let credential = enrolled["credential"]
            .as_str()
            .ok_or("no credential")?
            .to_owned();
        self.credentials
            .lock()
            .map_err(|_| "poisoned")?
            .insert(device, credential.clone());
        Ok(Enrolled { device, credential })
    }

    /// A phone enrolled on [`SITE`], with one shift log.
    pub async fn phone(&self, guard: &str) -> Result<Phone, Box<dyn std::error::Error>> {
        let enrolled = self.enroll_on(SITE).await?;
        Phone::new(enrolled, guard)
    }

    /// The credential of a device enrolled here.
    pub fn credential(&self, device: DeviceId) -> Result<String, Box<dyn std::error::Error>> {
        Ok(self
            .credentials
            .lock()
            .map_err(|_| "poisoned")?
            .get(&device)
            .cloned()
            .ok_or("device not enrolled here")?)
    }

    /// The SQLite database file (SQLite only).
    pub fn db_path(&self) -> Result<PathBuf, Box<dyn std::error::Error>> {
        match &self.backend {
            Backend::Sqlite(dir) => Ok(dir.path().join("patrol.db")),
            Backend::Postgres(_) => Err("not a SQLite backend".into()),
        }
    }

    pub async fn call(
        &self,
        req: Request<Body>,
    ) -> Result<(StatusCode, String, Bytes), Box<dyn std::error::Error>> {
        call(&self.state, req).await
    }

    /// Posts raw bytes to the sync endpoint with the given credential and content type.
    pub async fn post_sync(
        &self,
        credential: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, String, Bytes), Box<dyn std::error::Error>> {
        let mut req = Request::post("/api/v1/sync");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(credential) = credential {
            req = req.header(header::AUTHORIZATION, format!("Bearer {credential}"));
        }
        self.call(req.body(Body::from(body))?).await
    }

    /// Sends a request with its device's credential, as is.
    pub async fn try_sync(
        &self,
        request: &SyncRequest,
    ) -> Result<(StatusCode, String, Bytes), Box<dyn std::error::Error>> {
        let credential = self.credential(request.device)?;
        self.post_sync(
            Some(&credential),
            Some(protocol::CONTENT_TYPE),
            request.encode()?,
        )
        .await
    }

    /// Sends a well-formed request with its device's credential and decodes the answer
    /// (failing on anything but 200).
    pub async fn sync(
        &self,
        request: &SyncRequest,
    ) -> Result<SyncResponse, Box<dyn std::error::Error>> {
        let (status, ct, body) = self.try_sync(request).await?;
        assert_eq!(
            status,
            StatusCode::OK,
            "sync failed: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(ct, protocol::CONTENT_TYPE);
        Ok(SyncResponse::decode(&body)?)
    }

    /// The response headers of a GET.
    pub async fn get_headers(
        &self,
        uri: &str,
    ) -> Result<axum::http::HeaderMap, Box<dyn std::error::Error>> {
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin))
            .body(Body::empty())?;
        let resp = router(self.state.clone()).oneshot(req).await?;
        Ok(resp.headers().clone())
    }

    /// Sends `request`; while it is refused as replayed (a later request of the phone committed
    /// first), sends its documents again in a fresh request from `phone`, as a phone does.
    pub async fn sync_fresh_on_replay(
        &self,
        phone: &Phone,
        request: &SyncRequest,
    ) -> Result<SyncResponse, Box<dyn std::error::Error>> {
        let mut request = request.clone();
        loop {
            let (status, _, body) = self.try_sync(&request).await?;
            if status != StatusCode::CONFLICT {
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                return Ok(SyncResponse::decode(&body)?);
            }
            request = phone.request(request.docs);
        }
    }

    /// A GET as the administrator.
    pub async fn get_json(
        &self,
        uri: &str,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        self.get_json_as(&self.admin, uri).await
    }

    /// A GET with `token` (none if empty).
    pub async fn get_json_as(
        &self,
        token: &str,
        uri: &str,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        let mut req = Request::get(uri);
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (status, _, body) = self.call(req.body(Body::empty())?).await?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    /// Sends `body` with `method` to `uri` as JSON and parses the answer as JSON: as the user
    /// the body names in `by` (the operator acting on an incident or alarm, see
    /// [`TestServer::user_token`]), else as the administrator.
    pub async fn send_json(
        &self,
        method: &str,
        uri: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        let token = match body["by"].as_str() {
            Some(name) => self.user_token(name).await?,
            None => self.admin.clone(),
        };
        self.send_json_as(&token, method, uri, body).await
    }

    /// The token of the user `name`, made on first use as an administrator over all sites (so
    /// that a call about an unknown site still gets its 404).
    pub async fn user_token(&self, name: &str) -> Result<String, Box<dyn std::error::Error>> {
        if let Some(token) = self.users.lock().map_err(|_| "poisoned")?.get(name) {
            return Ok(token.clone());
        }
        let (new, token) = new_user(name.into(), Role::Admin, Scope::AllSites, None, 0, i64::MAX)?;
        self.state.store.create_user(new).await?;
        let token = token.expose().to_owned();
        self.users
            .lock()
            .map_err(|_| "poisoned")?
            .insert(name.to_owned(), token.clone());
        Ok(token)
    }

    /// Sends `body` with `method` to `uri` as JSON with `token`, and parses the answer as JSON.
    pub async fn send_json_as(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(serde_json::to_vec(body)?))?;
        let (status, _, body) = self.call(req).await?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    /// A JSON POST with `token` (none if empty).
    pub async fn post_json(
        &self,
        token: &str,
        uri: &str,
        body: serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        post_json(&self.state, token, uri, body).await
    }

    /// Every event of the feed, paging with `limit`.
    pub async fn whole_feed(
        &self,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
        let mut after = 0;
        let mut out = Vec::new();
        loop {
            let (status, page) = self
                .get_json(&format!(
                    "/api/v1/sites/{SITE}/events?after={after}&limit={limit}"
                ))
                .await?;
            assert_eq!(status, StatusCode::OK, "{page}");
            let events = page["events"].as_array().cloned().unwrap_or_default();
            assert!(events.len() <= limit as usize);
            out.extend(events);
            after = page["next"]
                .as_u64()
                .unwrap_or_else(|| panic!("no next in {page}"));
            if page["more"] != serde_json::Value::Bool(true) {
                return Ok(out);
            }
        }
    }

    /// The ids of the feed's first page of events matching `query` (e.g. `flag=clock_skew`).
    pub async fn feed_ids(
        &self,
        query: &str,
    ) -> Result<std::collections::BTreeSet<String>, Box<dyn std::error::Error>> {
        let (status, page) = self
            .get_json(&format!("/api/v1/sites/{SITE}/events?{query}"))
            .await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        Ok(page["events"]
            .as_array()
            .ok_or("no events")?
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// The stored canonical record (every table but `devices`, whose last-sync time moves on
    /// every contact, and SQLite's event-id index), row by row, read through a separate
    /// connection. Compared only with another snapshot of the same backend.
    pub async fn snapshot(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        const TABLES: [(&str, &str); 8] = [
            ("sites", "site_id"),
            ("docs", "site_id, doc_id"),
            ("doc_chunks", "site_id, doc_id, chunk_id"),
            ("events", "site_id, seq"),
            ("incidents", "site_id, incident_id"),
            ("incident_participants", "site_id, device_id, incident_id"),
            ("site_configs", "site_id, version"),
            ("alarm_acks", "site_id, event_id"),
        ];
        let mut out = Vec::new();
        match &self.backend {
            Backend::Sqlite(_) => {
                let conn = rusqlite::Connection::open(self.db_path()?)?;
                for (table, order) in TABLES {
                    let mut stmt =
                        conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
                    let columns = stmt.column_count();
                    let mut rows = stmt.query([])?;
                    while let Some(row) = rows.next()? {
                        let mut line = format!("{table}:");
                        for i in 0..columns {
                            line.push_str(&format!(" {:?}", row.get_ref(i)?));
                        }
                        out.push(line);
                    }
                }
            }
            Backend::Postgres(db) => {
                let client = pg_client(db).await?;
                for (table, order) in TABLES {
                    let sql = format!("SELECT t::text FROM {table} t ORDER BY {order}");
                    for row in client.query(&sql, &[]).await? {
                        out.push(format!("{table}: {}", row.try_get::<_, String>(0)?));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The number `sql` (one row, one integer column) gives, on either backend.
    pub async fn count(&self, sql: &str) -> Result<i64, Box<dyn std::error::Error>> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let conn = rusqlite::Connection::open(self.db_path()?)?;
                Ok(conn.query_row(sql, [], |r| r.get(0))?)
            }
            Backend::Postgres(db) => {
                let client = pg_client(db).await?;
                let row = client
                    .query_one(&format!("SELECT CAST(({sql}) AS BIGINT)"), &[])
                    .await?;
                Ok(row.try_get(0)?)
            }
        }
    }

    /// The text `sql` (one row, one text column) gives, on either backend.
    pub async fn text(&self, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let conn = rusqlite::Connection::open(self.db_path()?)?;
                Ok(conn.query_row(sql, [], |r| r.get(0))?)
            }
            Backend::Postgres(db) => {
                let client = pg_client(db).await?;
                Ok(client.query_one(sql, &[]).await?.try_get(0)?)
            }
        }
    }
}

/// A plain connection to a scratch database, beside the store's own.
async fn pg_client(
    db: &ScratchDatabase,
) -> Result<tokio_postgres::Client, Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error then is of no interest.
        let _ = connection.await;
    });
    Ok(client)
}

/// Sends `req` through the real router over `state`.
pub async fn call(
    state: &AppState,
    req: Request<Body>,
) -> Result<(StatusCode, String, Bytes), Box<dyn std::error::Error>> {
    let resp = router(state.clone()).oneshot(req).await?;
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
    Ok((status, ct, body))
}

/// A JSON POST with `token` (none if empty) through the real router over `state`.
pub async fn post_json(
    state: &AppState,
    token: &str,
    uri: &str,
    body: serde_json::Value,
) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if !token.is_empty() {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let (status, _, body) = call(state, req.body(Body::from(body.to_string()))?).await?;
    Ok((status, serde_json::from_slice(&body)?))
}

/// A guard's phone with one shift log, as mobile-core would drive patrol-core.
pub struct Phone {
    pub device: DeviceId,
    pub credential: String,
    pub log: ShiftLog,
    pub acked: Vec<ChangeHash>,
    pub seq: u64,
    pub recorded: Vec<EventId>,
    /// The last request seq given out: each request gets the next one.
    pub request_seq: AtomicU64,
    /// Signs every push of changes, when set ([`Phone::signing`]).
    pub key: Option<DeviceKey>,
    /// Added to every event's device time ([`Phone::new_at`]).
    pub clock_offset_ms: i64,
}

impl Phone {
    /// A phone with the device id and credential it was enrolled with.
    pub fn new(enrolled: Enrolled, guard: &str) -> Result<Self, Box<dyn std::error::Error>> {
        Self::new_at(enrolled, guard, 0)
    }

    /// As [`Phone::new`], its events' device times `offset_ms` later than [`Phone::wall_ms`]
    /// says (its shift starts then).
    pub fn new_at(
        enrolled: Enrolled,
        guard: &str,
        offset_ms: i64,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let Enrolled { device, credential } = enrolled;
        let meta = ShiftMeta {
            site: site(),
            device,
            shift: ShiftId::generate(),
            guard: GuardId::new(guard)?,
        };
        let (log, _first_change) = ShiftLog::create(meta)?;
        let mut phone = Phone {
            device,
            credential,
            log,
            acked: Vec::new(),
            seq: 0,
            recorded: Vec::new(),
            request_seq: AtomicU64::new(0),
            key: None,
            clock_offset_ms: offset_ms,
        };
        phone.record(EventBody::ShiftStarted)?;
        Ok(phone)
    }

    /// A phone that signs its pushes with `key`, as phones of this version do.
    pub fn signing(mut self, key: DeviceKey) -> Self {
        self.key = Some(key);
        self
    }

    pub fn shift(&self) -> ShiftId {
        self.log.meta().shift
    }

    pub fn wall_ms(seq: u64) -> i64 {
        1_740_866_400_000 + 60_000 * seq as i64
    }

    pub fn record(&mut self, body: EventBody) -> Result<EventId, Box<dyn std::error::Error>> {
        self.record_at(Self::wall_ms(self.seq + 1), body)
    }

    /// Records `body` at `wall_ms` by the phone's clock.
    pub fn record_at(
        &mut self,
        wall_ms: i64,
        body: EventBody,
    ) -> Result<EventId, Box<dyn std::error::Error>> {
        self.seq += 1;
        let id = EventId::generate();
        let wall_ms = wall_ms + self.clock_offset_ms;
        let record = EventRecord {
            seq: self.seq,
            time: DeviceTime {
                wall_ms,
                boot_id: uuid::Uuid::nil(),
                mono_ms: 1_000 * self.seq,
                hlc: Hlc {
                    wall_ms: wall_ms.max(0) as u64,
                    counter: 0,
                },
            },
            config_version: 1,
            body,
        };
        self.log.record(id, &record)?;
        self.recorded.push(id);
        Ok(id)
    }

    pub fn scan(&mut self, checkpoint: &str) -> Result<EventId, Box<dyn std::error::Error>> {
        self.record(scan_of(checkpoint)?)
    }

    /// The phone's push as a sync batch, straight to a store, with its next request seq:
    /// received at `received_at_ms`, carrying the phone's clock then (so its offset is
    /// measured exactly, and corrected times are the times [`Phone::record_at`] was given).
    pub fn batch(
        &mut self,
        received_at_ms: i64,
    ) -> Result<patrol_server::store::SyncBatch, Box<dyn std::error::Error>> {
        let push = self.push()?;
        Ok(patrol_server::store::SyncBatch {
            site: site(),
            device: self.device,
            request_seq: self.request_seq.fetch_add(1, Ordering::Relaxed) + 1,
            received_at_ms,
            device_time_ms: received_at_ms + self.clock_offset_ms,
            pending_events: self.recorded.len() as u64,
            pushes: vec![patrol_server::store::ShiftLogPush {
                shift: self.shift(),
                changes: push.changes,
                events: push.events,
                signature: None,
            }],
            public_key: None,
            config: std::sync::Arc::new(patrol_core::siteconfig::SiteConfig::empty(site())),
        })
    }

    pub fn push(&mut self) -> Result<DocPush, Box<dyn std::error::Error>> {
        let mut push = plan_push(&mut self.log, &self.acked)?;
        if let Some(key) = &self.key {
            key.sign_push(&mut push, &mut self.log, crate_now_ms());
        }
        Ok(push)
    }

    /// A request carrying this phone's push.
    pub fn push_request(&mut self) -> Result<SyncRequest, Box<dyn std::error::Error>> {
        let push = self.push()?;
        Ok(self.request(vec![push]))
    }

    /// A request from this phone carrying `docs`, with the next request seq.
    pub fn request(&self, docs: Vec<DocPush>) -> SyncRequest {
        SyncRequest {
            site: site(),
            device: self.device,
            request_seq: self.request_seq.fetch_add(1, Ordering::Relaxed) + 1,
            device_time_ms: crate_now_ms() - 1_500,
            hlc: Hlc::default(),
            pending_events: self.recorded.len() as u64,
            docs,
            guard: Some(self.log.meta().guard.clone()),
            config_version: 0,
            awaiting_ack: Vec::new(),
        }
    }

    /// Marks delivered what the server's heads cover; returns how many changes are still unacked.
    pub fn on_accepted(&mut self, outcome: &DocOutcome) -> usize {
        let DocOutcome::Accepted { heads, .. } = outcome else {
            panic!("expected Accepted, got {outcome:?}");
        };
        let ack = acknowledge(&mut self.log, heads);
        self.acked = ack.acked;
        ack.unacked.len()
    }
}

/// A scan of `checkpoint` by its NFC tag `tag-<checkpoint>`, to record at a chosen time.
pub fn scan_of(checkpoint: &str) -> Result<EventBody, Box<dyn std::error::Error>> {
    Ok(EventBody::CheckpointScanned(Scan {
        checkpoint: CheckpointId::new(checkpoint)?,
        method: ScanMethod::Nfc {
            tag: format!("tag-{checkpoint}"),
        },
        location: None,
        note: None,
    }))
}

pub fn crate_now_ms() -> i64 {
    patrol_server::now_ms()
}
