//! Shared helpers of the integration tests: a real SQLite store in a temp dir, phones built on
//! `patrol_core::ShiftLog`, and requests sent through the real router.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use automerge::ChangeHash;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use patrol_core::merge::{acknowledge, plan_push};
use patrol_core::protocol::{self, DocOutcome, DocPush, SyncRequest, SyncResponse};
use patrol_core::{
    CheckpointId, DeviceId, DeviceTime, EventBody, EventId, EventRecord, GuardId, Hlc, Scan,
    ScanMethod, ShiftId, ShiftLog, ShiftMeta, SiteId,
};
use patrol_server::config::ApiConfig;
use patrol_server::store::Site;
use patrol_server::{AppState, SqliteStore, Store, router};
use tempfile::TempDir;
use tower::ServiceExt;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const SITE: &str = "site-1";

pub fn site() -> SiteId {
    SiteId::new(SITE).unwrap_or_else(|e| panic!("{e}"))
}

/// A server over a fresh data dir holding one site, [`SITE`].
pub struct TestServer {
    pub dir: TempDir,
    pub state: AppState,
}

impl TestServer {
    pub async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open_dir(dir.path())?;
        store
            .create_site(Site {
                id: site(),
                name: "Test site".into(),
                created_at_ms: 0,
            })
            .await?;
        Ok(TestServer {
            dir,
            state: AppState::with_config(Arc::new(store), config),
        })
    }

    /// Drops the store and opens the same data dir again, as a restarted server does.
    pub fn reopen(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        self.state = AppState::new(Arc::new(SqliteStore::open_dir(self.dir.path())?));
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("patrol.db")
    }

    pub async fn call(
        &self,
        req: Request<Body>,
    ) -> Result<(StatusCode, String, Bytes), Box<dyn std::error::Error>> {
        let resp = router(self.state.clone()).oneshot(req).await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        Ok((status, ct, body))
    }

    /// Posts raw bytes to the sync endpoint with the given content type.
    pub async fn post_sync(
        &self,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, String, Bytes), Box<dyn std::error::Error>> {
        let mut req = Request::post("/api/v1/sync");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        self.call(req.body(Body::from(body))?).await
    }

    /// Sends a well-formed request and decodes the answer (failing on anything but 200).
    pub async fn sync(
        &self,
        request: &SyncRequest,
    ) -> Result<SyncResponse, Box<dyn std::error::Error>> {
        let (status, ct, body) = self
            .post_sync(Some(protocol::CONTENT_TYPE), request.encode()?)
            .await?;
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
        let resp = router(self.state.clone())
            .oneshot(Request::get(uri).body(Body::empty())?)
            .await?;
        Ok(resp.headers().clone())
    }

    pub async fn get_json(
        &self,
        uri: &str,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        let (status, _, body) = self.call(Request::get(uri).body(Body::empty())?).await?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    /// Sends `body` with `method` to `uri` as JSON and parses the answer as JSON.
    pub async fn send_json(
        &self,
        method: &str,
        uri: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body)?))?;
        let (status, _, body) = self.call(req).await?;
        Ok((status, serde_json::from_slice(&body)?))
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

    /// The stored canonical record (every table but `devices`, whose last-sync time moves on
    /// every contact, and the event-id index), row by row, read through a separate connection.
    pub fn snapshot(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let conn = rusqlite::Connection::open(self.db_path())?;
        let mut out = Vec::new();
        for (table, order) in [
            ("sites", "site_id"),
            ("docs", "site_id, doc_id"),
            ("doc_chunks", "site_id, doc_id, chunk_id"),
            ("events", "site_id, seq"),
            ("incidents", "site_id, incident_id"),
            ("incident_participants", "site_id, device_id, incident_id"),
            ("site_configs", "site_id, version"),
            ("alarm_acks", "site_id, event_id"),
        ] {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
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
        Ok(out)
    }

    pub fn count(&self, sql: &str) -> Result<i64, Box<dyn std::error::Error>> {
        let conn = rusqlite::Connection::open(self.db_path())?;
        Ok(conn.query_row(sql, [], |r| r.get(0))?)
    }
}

/// A guard's phone with one shift log, as mobile-core would drive patrol-core.
pub struct Phone {
    pub device: DeviceId,
    pub log: ShiftLog,
    pub acked: Vec<ChangeHash>,
    pub seq: u64,
    pub recorded: Vec<EventId>,
}

impl Phone {
    pub fn new(guard: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let device = DeviceId::generate();
        let meta = ShiftMeta {
            site: site(),
            device,
            shift: ShiftId::generate(),
            guard: GuardId::new(guard)?,
        };
        let (log, _first_change) = ShiftLog::create(meta)?;
        let mut phone = Phone {
            device,
            log,
            acked: Vec::new(),
            seq: 0,
            recorded: Vec::new(),
        };
        phone.record(EventBody::ShiftStarted)?;
        Ok(phone)
    }

    pub fn shift(&self) -> ShiftId {
        self.log.meta().shift
    }

    pub fn wall_ms(seq: u64) -> i64 {
        1_740_866_400_000 + 60_000 * seq as i64
    }

    pub fn record(&mut self, body: EventBody) -> Result<EventId, Box<dyn std::error::Error>> {
        self.seq += 1;
        let id = EventId::generate();
        let record = EventRecord {
            seq: self.seq,
            time: DeviceTime {
                wall_ms: Self::wall_ms(self.seq),
                boot_id: uuid::Uuid::nil(),
                mono_ms: 1_000 * self.seq,
                hlc: Hlc {
                    wall_ms: Self::wall_ms(self.seq) as u64,
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
        self.record(EventBody::CheckpointScanned(Scan {
            checkpoint: CheckpointId::new(checkpoint)?,
            method: ScanMethod::Nfc {
                tag: format!("tag-{checkpoint}"),
            },
            location: None,
            note: None,
        }))
    }

    pub fn push(&mut self) -> Result<DocPush, Box<dyn std::error::Error>> {
        Ok(plan_push(&mut self.log, &self.acked)?)
    }

    /// A request carrying this phone's push.
    pub fn push_request(&mut self) -> Result<SyncRequest, Box<dyn std::error::Error>> {
        let push = self.push()?;
        Ok(self.request(vec![push]))
    }

    /// A request from this phone carrying `docs`.
    pub fn request(&self, docs: Vec<DocPush>) -> SyncRequest {
        SyncRequest {
            site: site(),
            device: self.device,
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

pub fn crate_now_ms() -> i64 {
    patrol_server::now_ms()
}
