//! The server's HTTP API under arbitrary requests: the real router (`patrol_server::router`)
//! over a real SQLite store in a temporary directory holding the site `site-1`, called
//! in-process with `tower::ServiceExt::oneshot`. Shared, file for file, by the fuzz target
//! `http_body` and the stable replay test `sync-server/tests/integration/fuzz_regressions.rs`.
//!
//! The store also holds an administrator and an enrolled device, the one the seed corpus is
//! built for (`harness/ingest.rs`'s owner), so that requests get past authentication to the
//! merge and the control-room handlers. An input's first byte picks the request's shape, the
//! rest fills it:
//!
//! | `data[0] % 8` | request |
//! |---|---|
//! | 0 | `POST /api/v1/sync`, `Content-Type: application/x-patrol-sync`, body = rest |
//! | 1 | as 0, but a body that decodes as a request gets the next `request_seq` first, so that replay protection lets every such input through to the merge |
//! | 2 | `POST /api/v1/sync`, `Content-Type` = the rest's first line, body = the rest after it |
//! | 3 | `GET /api/v1/sites/{first line}/events?{rest}` (both percent-encoded where needed) |
//! | 4 | `GET /api/v1/sites/{rest}/devices` |
//! | 5 | `POST {first line as a path}`, `Content-Type: application/json`, body = the rest after it |
//! | 6 | `PUT {first line as a path}`, `Content-Type: application/json`, body = the rest after it |
//! | 7 | `GET {rest as a path and query}` |
//!
//! Sync requests carry the device's credential, the others the administrator's token; with
//! `data[0] & 8` set, a request carries none. The JSON endpoints (incident actions, site
//! configuration, alarm acknowledgements, enrollment) are reached through 5 and 6; a live stream
//! (`text/event-stream`) is checked by its status only, since it does not end.
//!
//! Properties: nothing panics; no status is 5xx; every error answer is the documented JSON body
//! `{"error": .., "message": ..}`; a 200 to a sync request is a sync response the phone reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use patrol_core::protocol::{CONTENT_TYPE, SyncRequest, SyncResponse};
use patrol_core::{DeviceId, SiteId};
use patrol_server::credentials::{Role, Scope};
use patrol_server::credentials::{Secret, TokenKind, new_user};
use patrol_server::store::{Enrollment, NewEnrollmentCode, Site};
use patrol_server::{AppState, SqliteStore, Store, router};
use tower::ServiceExt;

pub const SITE: &str = "site-1";

/// The enrolled device: the owner the seed corpus's pushes are made for.
pub fn device() -> DeviceId {
    DeviceId(uuid::Uuid::from_u128(
        0x0195_0000_0000_7000_8000_0000_0000_0001,
    ))
}

/// A server over a fresh store, and the runtime its requests run on.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    state: AppState,
    admin: String,
    credential: String,
    /// The next `request_seq` shape 1 gives a request.
    next_seq: AtomicU64,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Result<Self, Box<dyn std::error::Error>> {
        // A memory-backed directory where there is one: fsyncs cost nothing there.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)?
        } else {
            tempfile::tempdir()?
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store = SqliteStore::open_dir(dir.path())?;
        let site = SiteId::new(SITE)?;
        let (admin, credential) = runtime.block_on(async {
            store
                .create_site(Site {
                    id: site.clone(),
                    name: "Fuzz site".into(),
                    created_at_ms: 0,
                })
                .await?;
            let (user, admin) = new_user(
                "fuzz-admin".into(),
                Role::Admin,
                Scope::AllSites,
                None,
                0,
                i64::MAX,
            )?;
            store.create_user(user).await?;
            // As `POST /api/v1/enroll` does, with the device id the seeds are made for.
            let code = Secret::generate(TokenKind::Enrollment)?;
            store
                .create_enrollment_code(NewEnrollmentCode {
                    site,
                    code_hash: code.hash(),
                    created_by: None,
                    created_at_ms: 0,
                    expires_at_ms: i64::MAX,
                })
                .await?;
            let credential = Secret::generate(TokenKind::Device)?;
            store
                .enroll_device(Enrollment {
                    code_hash: code.hash(),
                    device: device(),
                    credential_hash: credential.hash(),
                    public_key: None,
                    now_ms: 1,
                })
                .await?;
            Ok::<_, Box<dyn std::error::Error>>((
                admin.expose().to_owned(),
                credential.expose().to_owned(),
            ))
        })?;
        Ok(Harness {
            runtime,
            state: AppState::new(Arc::new(store)),
            admin,
            credential,
            next_seq: AtomicU64::new(1),
            _dir: dir,
        })
    }

    /// Sends the request `data` describes; returns its status.
    pub fn run(&self, data: &[u8]) -> u16 {
        let Some(mut request) = request(data, &self.next_seq) else {
            return 0;
        };
        if data[0] & 8 == 0 {
            let token = if request.uri().path() == "/api/v1/sync" {
                &self.credential
            } else {
                &self.admin
            };
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
        }
        let is_sync = request.method() == Method::POST && request.uri().path() == "/api/v1/sync";
        let (status, content_type, body) = self.runtime.block_on(async {
            let response = router(self.state.clone())
                .oneshot(request)
                .await
                .unwrap_or_else(|e| match e {});
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            if content_type.starts_with("text/event-stream") {
                return (status, content_type, axum::body::Bytes::new());
            }
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_else(|e| panic!("the answer's body does not read: {e}"));
            (status, content_type, body)
        });
        assert!(
            !status.is_server_error(),
            "{status} for bad input: {}",
            String::from_utf8_lossy(&body)
        );
        if status == StatusCode::OK && is_sync {
            assert_eq!(content_type, CONTENT_TYPE);
            if let Err(e) = SyncResponse::decode(&body) {
                panic!("a 200 sync answer does not decode: {e}");
            }
        } else if status.is_client_error() {
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{status}: error body is not JSON ({e}): {body:?}"));
            assert!(
                json["error"].is_string() && json["message"].is_string(),
                "{status}: error body lacks error/message: {json}"
            );
        }
        status.as_u16()
    }
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Percent-encodes every byte outside `keep` and the unreserved characters.
fn encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request an input describes; `None` for inputs no HTTP client can send (an invalid
/// header value), which hyper refuses before the router sees them.
pub fn request(data: &[u8], next_seq: &AtomicU64) -> Option<Request<Body>> {
    let (&selector, rest) = data.split_first()?;
    let sync = |content_type: Option<&[u8]>, body: &[u8]| {
        // Shape 1's next number stays above any the server may have accepted.
        if let Ok(sent) = SyncRequest::decode(body) {
            next_seq.fetch_max(sent.request_seq.saturating_add(1), Ordering::Relaxed);
        }
        let mut builder = Request::post("/api/v1/sync");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Body::from(body.to_vec())).ok()
    };
    match selector % 8 {
        0 => sync(Some(CONTENT_TYPE.as_bytes()), rest),
        1 => match SyncRequest::decode(rest) {
            Ok(mut decoded) => {
                decoded.request_seq = next_seq.load(Ordering::Relaxed);
                sync(Some(CONTENT_TYPE.as_bytes()), &decoded.encode().ok()?)
            }
            Err(_) => sync(Some(CONTENT_TYPE.as_bytes()), rest),
        },
        2 => {
            let (ct, body) = split_line(rest);
            sync(Some(ct), body)
        }
        3 => {
            let (site, query) = split_line(rest);
            let uri = format!(
                "/api/v1/sites/{}/events?{}",
                encode(site, b""),
                encode(query, b"=&")
            );
            Request::get(uri).body(Body::empty()).ok()
        }
        4 => {
            let uri = format!("/api/v1/sites/{}/devices", encode(rest, b""));
            Request::get(uri).body(Body::empty()).ok()
        }
        5 => {
            let (path, body) = split_line(rest);
            let uri = format!("/{}", encode(path, b"/"));
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_vec()))
                .ok()
        }
        6 => {
            let (path, body) = split_line(rest);
            let uri = format!("/{}", encode(path, b"/"));
            Request::put(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_vec()))
                .ok()
        }
        _ => {
            let uri = format!("/{}", encode(rest, b"/?=&"));
            Request::get(uri).body(Body::empty()).ok()
        }
    }
}
