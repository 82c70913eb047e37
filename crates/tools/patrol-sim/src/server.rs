//! The real server in process: `patrol_server::router` over a real `SqliteStore` in the run's
//! directory, called one request at a time through `tower::ServiceExt::oneshot`, so that the
//! order of everything the server does is the simulation's. Phones enroll through the API and
//! sync with their credentials; the control room's operators and its administrator call with
//! their user tokens.

use patrol_core::evidence::DeviceKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use patrol_core::protocol::{CONTENT_TYPE, SyncResponse};
use patrol_core::{DeviceId, SiteId};
use patrol_mobile::Enrollment;
use patrol_server::credentials::new_user;
use patrol_server::credentials::{Role, Scope};
use patrol_server::store::Site;
use patrol_server::{AppState, SqliteStore, Store, router};
use tokio::runtime::Runtime;
use tower::ServiceExt;

use crate::SimError;

/// The one site every simulated phone is enrolled on.
pub const SITE: &str = "site-1";

/// The control room's operators (users covering [`SITE`]).
pub const OPERATORS: [&str; 2] = ["op-anna", "op-ben"];

pub fn site() -> Result<SiteId, SimError> {
    SiteId::new(SITE).map_err(SimError::from_display("site id"))
}

/// The server's answer to a sync request.
#[derive(Debug)]
pub enum SyncAnswer {
    Applied(SyncResponse),
    /// 409 `replayed_request`: a request of the phone with this number or a later one was
    /// applied already; nothing changed.
    Replayed {
        last_seq: u64,
    },
}

#[derive(Debug)]
pub struct SimServer {
    dir: PathBuf,
    /// `None` only while restarting.
    state: Option<AppState>,
    /// The administrator's token (enrollment codes, site configuration, reading the feed).
    admin: String,
    /// Each operator's token, in the order of [`OPERATORS`].
    operators: Vec<String>,
}

async fn create_user(
    store: &SqliteStore,
    name: &str,
    role: Role,
    scope: Scope,
) -> Result<String, SimError> {
    let (user, token) = new_user(name.into(), role, scope, None, 0, i64::MAX)
        .map_err(SimError::from_display("new user"))?;
    store
        .create_user(user)
        .await
        .map_err(SimError::from_display("create user"))?;
    Ok(token.expose().to_owned())
}

impl SimServer {
    /// A server over a new data directory `dir`, holding the site [`SITE`], its administrator
    /// and its operators.
    pub fn create(rt: &Runtime, dir: &Path) -> Result<Self, SimError> {
        let store = SqliteStore::open_dir(dir).map_err(SimError::from_display("open server"))?;
        let (admin, operators) = rt.block_on(async {
            store
                .create_site(Site {
                    id: site()?,
                    name: "Simulated site".into(),
                    created_at_ms: 0,
                })
                .await
                .map_err(SimError::from_display("create site"))?;
            let admin = create_user(&store, "admin", Role::Admin, Scope::AllSites).await?;
            let mut operators = Vec::new();
            for name in OPERATORS {
                let scope = Scope::Sites(vec![site()?]);
                operators.push(create_user(&store, name, Role::Operator, scope).await?);
            }
            Ok::<_, SimError>((admin, operators))
        })?;
        Ok(SimServer {
            dir: dir.to_path_buf(),
            state: Some(AppState::new(Arc::new(store))),
            admin,
            operators,
        })
    }

    /// Stops the server (drops its state and store, whose threads then end) and starts it again
    /// on the same directory, as a restarted process does.
    pub fn restart(&mut self) -> Result<(), SimError> {
        self.state = None;
        let store = SqliteStore::open_dir(&self.dir).map_err(|e| {
            SimError::invariant(format!("the server's store does not open again: {e}"))
        })?;
        self.state = Some(AppState::new(Arc::new(store)));
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join(patrol_server::store::sqlite::DB_FILE)
    }

    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// The token of operator `i` of [`OPERATORS`].
    pub fn operator(&self, i: usize) -> Result<&str, SimError> {
        self.operators
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| SimError::Failed(format!("no operator {i}")))
    }

    pub fn call(&self, rt: &Runtime, req: Request<Body>) -> Result<(StatusCode, Bytes), SimError> {
        let state = self
            .state
            .clone()
            .ok_or_else(|| SimError::Failed("the server is not running".into()))?;
        rt.block_on(async {
            let resp = router(state)
                .oneshot(req)
                .await
                .map_err(SimError::from_display("router"))?;
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .map_err(SimError::from_display("response body"))?;
            Ok((status, body))
        })
    }

    /// Enrolls a phone as an administrator and the phone do: a one-time code, then the
    /// enrollment that gives the device its id and credential.
    pub fn enroll(&self, rt: &Runtime) -> Result<Enrollment, SimError> {
        let uri = format!("/api/v1/sites/{SITE}/enrollment-codes");
        let (status, code) =
            self.send_json(rt, &self.admin, "POST", &uri, &serde_json::json!({}))?;
        if status != StatusCode::CREATED {
            return Err(SimError::invariant(format!("POST {uri}: {status} {code}")));
        }
        // Every phone signs its shift logs, so every push the simulation makes is verified.
        let key = DeviceKey::generate().map_err(SimError::from_display("signing key"))?;
        let body =
            serde_json::json!({ "code": code["code"], "public_key": key.public_key().to_string() });
        let (status, enrolled) = self.send_json(rt, "", "POST", "/api/v1/enroll", &body)?;
        if status != StatusCode::OK {
            return Err(SimError::invariant(format!(
                "POST /api/v1/enroll: {status} {enrolled}"
            )));
        }
        let field = |name: &str| {
            enrolled[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| SimError::invariant(format!("enrollment without {name}")))
        };
        Ok(Enrollment {
            site: field("site")?
                .parse()
                .map_err(SimError::from_display("enrolled site"))?,
            device: field("device_id")?
                .parse::<DeviceId>()
                .map_err(SimError::from_display("enrolled device id"))?,
            credential: field("credential")?,
            server_url: "http://patrol-sim.invalid".into(),
            signing_key: Some(key),
        })
    }

    /// Delivers one encoded sync request with the phone's credential. Every request a phone
    /// makes is well formed and authorised, so anything but 200 or a refusal as a replay is the
    /// server failing.
    pub fn sync(
        &self,
        rt: &Runtime,
        credential: &str,
        body: &[u8],
    ) -> Result<SyncAnswer, SimError> {
        let req = Request::post("/api/v1/sync")
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header(header::AUTHORIZATION, format!("Bearer {credential}"))
            .body(Body::from(body.to_vec()))
            .map_err(SimError::from_display("request"))?;
        let (status, bytes) = self.call(rt, req)?;
        if status == StatusCode::CONFLICT {
            let answer: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(SimError::from_display("409 body"))?;
            if let (Some("replayed_request"), Some(last_seq)) =
                (answer["error"].as_str(), answer["last_seq"].as_u64())
            {
                return Ok(SyncAnswer::Replayed { last_seq });
            }
        }
        if status != StatusCode::OK {
            return Err(SimError::invariant(format!(
                "the server answered a well-formed sync request with {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        SyncResponse::decode(&bytes)
            .map(SyncAnswer::Applied)
            .map_err(SimError::from_display("sync response"))
    }

    /// A GET with `token`.
    pub fn get_json(
        &self,
        rt: &Runtime,
        token: &str,
        uri: &str,
    ) -> Result<(StatusCode, serde_json::Value), SimError> {
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .map_err(SimError::from_display("request"))?;
        let (status, body) = self.call(rt, req)?;
        let json = serde_json::from_slice(&body).map_err(SimError::from_display(uri))?;
        Ok((status, json))
    }

    /// A JSON call with `token` (none if empty).
    pub fn send_json(
        &self,
        rt: &Runtime,
        token: &str,
        method: &str,
        uri: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value), SimError> {
        let bytes = serde_json::to_vec(body).map_err(SimError::from_display("json"))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Body::from(bytes))
            .map_err(SimError::from_display("request"))?;
        let (status, body) = self.call(rt, req)?;
        let json = serde_json::from_slice(&body).map_err(SimError::from_display(uri))?;
        Ok((status, json))
    }

    /// The whole feed, in canonical order, as the administrator reads it.
    pub fn feed(&self, rt: &Runtime, filter: &str) -> Result<Vec<serde_json::Value>, SimError> {
        let mut after = 0u64;
        let mut out = Vec::new();
        loop {
            let uri = format!("/api/v1/sites/{SITE}/events?after={after}&limit=10000{filter}");
            let (status, page) = self.get_json(rt, &self.admin, &uri)?;
            if status != StatusCode::OK {
                return Err(SimError::invariant(format!("GET {uri}: {status} {page}")));
            }
            if let Some(events) = page["events"].as_array() {
                out.extend(events.iter().cloned());
            }
            after = page["next"]
                .as_u64()
                .ok_or_else(|| SimError::invariant(format!("feed page without next: {page}")))?;
            if page["more"] != serde_json::Value::Bool(true) {
                return Ok(out);
            }
        }
    }
}
