//! The HTTP API (axum). Endpoints, and the credential each needs (see [`crate::auth`]):
//!
//! - `POST /api/v1/sync`: a device's sync request (binary, [`protocol::CONTENT_TYPE`]); the
//!   device's credential, which must name the request's site and device.
//! - `POST /api/v1/enroll`: `{"code"}` → a new device's id and credential; the code is the
//!   credential.
//! - `GET /api/v1/sites`: the sites the user covers; `POST /api/v1/sites`: a new site
//!   (administrators over all sites).
//! - `GET /api/v1/sites/{site}/events?after=<seq>&limit=<n>`: the site's event feed, in server
//!   sequence order; a user covering the site.
//! - `GET /api/v1/sites/{site}/devices`: the site's devices: enrollment, revocation, last sync,
//!   pending count, skew; a user covering the site.
//! - `GET /api/v1/sites/{site}/incidents?status=<s>&limit=<n>`, `GET .../incidents/{id}`,
//!   `POST .../incidents/{id}/actions`: incidents for the control room ([`crate::control`]);
//!   `GET /api/v1/sites/{site}/config`; `POST /api/v1/sites/{site}/alarms/{event_id}/acknowledge`:
//!   acknowledges a panic alarm; a user covering the site.
//! - `PUT /api/v1/sites/{site}/config`: the site configuration, versioned; an administrator of
//!   the site.
//! - `POST /api/v1/sites/{site}/enrollment-codes`: a one-time code to enroll a phone on the
//!   site; `POST /api/v1/sites/{site}/devices/{device}/revoke`; an administrator of the site.
//! - `POST /api/v1/users`, `GET /api/v1/users`, `POST /api/v1/users/{id}/revoke`: an
//!   administrator, for users within its scope.
//! - `GET /healthz`: liveness; `GET /metrics`: the counters in Prometheus text format
//!   ([`crate::metrics`]); `GET /openapi.json`: this list as an OpenAPI document
//!   ([`crate::openapi`]); open, no credential.
//!
//! The router is built from one table ([`routes`] lists it), which the OpenAPI test holds the
//! document to.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequest, OriginalUri, Path, Query, RawQuery, Request, State,
};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use patrol_core::event::format_time_ms;
use patrol_core::evidence::{PublicKey, ShiftLogExport};
use patrol_core::protocol::{self, DocOutcome, DocRef, DocResult, SyncRequest, SyncResponse};
use patrol_core::{CheckpointId, DeviceId, EventBody, GuardId, ShiftId, ShiftLog, SiteId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{self, AuthUser, Secret, TokenHash, TokenKind};
use crate::config::{
    ApiConfig, DEFAULT_MAX_SYNC_WAIT_MS, DEFAULT_SYNC_RETRY_AFTER_SECS,
    MAX_ENROLLMENT_CODE_TTL_SECS,
};
use crate::control;
use crate::counting::count_traffic;
use crate::error::AppError;
use crate::feed::FeedNotifier;
use crate::metrics::{Metrics, metrics_handler};
use crate::now_ms;
use crate::store::{
    CollabSync, DeviceCredential, Enrollment, FeedFilter, IncidentPush, NewEnrollmentCode, Role,
    Scope, ShiftLogPush, Site, Store, StoreError, SyncBatch, User,
};

/// Events per feed page when `limit` is not given.
pub const DEFAULT_FEED_LIMIT: u32 = 1_000;
/// Largest feed page.
pub const MAX_FEED_LIMIT: u32 = 10_000;

/// Sync requests handled at once, per core, unless set otherwise
/// ([`AppState::with_max_concurrent_syncs`]).
pub const DEFAULT_CONCURRENT_SYNCS_PER_CPU: usize = 16;

/// Sync requests that may wait for a permit, per core, unless set otherwise
/// ([`AppState::with_max_queued_syncs`]). A waiting request costs a connection and a small task:
/// its body stays unread in the kernel. Enough places that a whole large site coming back into
/// signal at once (a thousand phones at a shift change) is queued rather than bounced into
/// retries, which would cost the phones seconds of backoff; the wait bound
/// ([`DEFAULT_MAX_SYNC_WAIT`]) still refuses what the server cannot serve in time. A fixed
/// number rather than a multiple of the permits in force, so that a server run with few
/// permits still queues a burst instead of refusing it.
pub const DEFAULT_QUEUED_SYNCS_PER_CPU: usize = 512;

/// How long a sync request may wait for a permit before it is refused, unless set otherwise
/// ([`AppState::with_max_sync_wait`]): well inside a phone's 30 s request timeout.
pub const DEFAULT_MAX_SYNC_WAIT: Duration = Duration::from_millis(DEFAULT_MAX_SYNC_WAIT_MS);

/// Largest JSON request body (users, sites, enrollment): these are a few hundred bytes.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares: the store, the API settings and the counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    /// Admits sync requests ([`SyncAdmission`]).
    syncs: Arc<SyncAdmission>,
    /// Wakes live feed streams when a site gets new events.
    pub feed: Arc<FeedNotifier>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, ApiConfig::default())
    }

    pub fn with_config(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            syncs: Arc::new(SyncAdmission::new(AdmissionLimits {
                permits: DEFAULT_CONCURRENT_SYNCS_PER_CPU * cpus,
                max_waiting: DEFAULT_QUEUED_SYNCS_PER_CPU * cpus,
                max_wait: DEFAULT_MAX_SYNC_WAIT,
                retry_after_secs: DEFAULT_SYNC_RETRY_AFTER_SECS,
            })),
            feed: Arc::new(FeedNotifier::default()),
        }
    }

    /// Sets the admission limits; meant for start-up, before any request (requests already
    /// waiting keep the old limits).
    fn with_limits(mut self, change: impl FnOnce(&mut AdmissionLimits)) -> Self {
        let mut limits = self.syncs.limits;
        change(&mut limits);
        self.syncs = Arc::new(SyncAdmission::new(limits));
        self
    }

    /// Handles at most `n` (at least 1) sync requests at once.
    pub fn with_max_concurrent_syncs(self, n: usize) -> Self {
        self.with_limits(|l| l.permits = n.max(1))
    }

    /// Lets at most `n` sync requests wait for a permit; more are refused at once with `503
    /// server_busy`. 0 refuses every request that finds no permit free.
    pub fn with_max_queued_syncs(self, n: usize) -> Self {
        self.with_limits(|l| l.max_waiting = n)
    }

    /// Refuses, with `503 server_busy`, a sync request that waited `wait` for a permit.
    pub fn with_max_sync_wait(self, wait: Duration) -> Self {
        self.with_limits(|l| l.max_wait = wait)
    }

    /// The `Retry-After` a refused sync is given, in seconds (at least 1).
    pub fn with_sync_retry_after(self, secs: u64) -> Self {
        self.with_limits(|l| l.retry_after_secs = secs.max(1))
    }
}

/// The limits of [`SyncAdmission`].
#[derive(Clone, Copy, Debug)]
struct AdmissionLimits {
    permits: usize,
    max_waiting: usize,
    max_wait: Duration,
    retry_after_secs: u64,
}

/// Admits sync requests: a request's body is read only once it holds a permit, so that however
/// many devices sync at once, the server holds the bodies of a bounded number of them (the
/// others wait in their sockets). Bodies are small; the store bounds the larger merge results
/// separately. Enough permits that the server always has bodies at hand while slow clients
/// finish sending theirs.
///
/// The wait is bounded too, in length and in time: a request that finds `max_waiting` others
/// already waiting, or that waited `max_wait`, is answered `503 server_busy` with a
/// `Retry-After`, its body unread and nothing changed. Without the bound, a flood of phones
/// would pile up waiting requests (each a socket and a task) until they time out at the phones
/// and are sent again on top of the queue, and the server would answer no one in time.
#[derive(Debug)]
struct SyncAdmission {
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit now.
    waiting: AtomicUsize,
    limits: AdmissionLimits,
}

/// Why a sync request was refused a permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyReason {
    /// `max_waiting` requests were already waiting.
    QueueFull,
    /// It waited `max_wait` without a permit.
    WaitedTooLong,
}

impl BusyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BusyReason::QueueFull => "queue_full",
            BusyReason::WaitedTooLong => "wait_timeout",
        }
    }
}

/// Takes a request off the waiting count however its wait ends (a permit, the time bound, or
/// the client going away, which drops the handler's future).
struct Waiting<'a> {
    admission: &'a SyncAdmission,
    metrics: &'a Metrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
        self.metrics.leave_sync_queue();
    }
}

impl SyncAdmission {
    fn new(limits: AdmissionLimits) -> Self {
        SyncAdmission {
            permits: Arc::new(Semaphore::new(limits.permits)),
            waiting: AtomicUsize::new(0),
            limits,
        }
    }

    /// A permit at once if one is free, else after a bounded wait in the queue, or the reason
    /// there is none.
    async fn admit(&self, metrics: &Metrics) -> Result<OwnedSemaphorePermit, AppError> {
        let busy = |reason: BusyReason| {
            metrics.add_sync_refused(reason);
            AppError::ServerBusy {
                reason: reason.as_str(),
                retry_after_secs: self.limits.retry_after_secs,
            }
        };
        // The semaphore is never closed, so the only failure is "no permit free".
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let max = self.limits.max_waiting;
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(busy(BusyReason::QueueFull));
        }
        metrics.enter_sync_queue();
        let _waiting = Waiting {
            admission: self,
            metrics,
        };
        match tokio::time::timeout(self.limits.max_wait, self.permits.clone().acquire_owned()).await
        {
            Ok(permit) => permit.map_err(AppError::internal),
            Err(_) => Err(busy(BusyReason::WaitedTooLong)),
        }
    }
}

/// Lets handlers of the API router take `State<Arc<Metrics>>`, as the side listener's do.
impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// An HTTP method the API routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
        }
    }
}

/// One entry of the route table: method, path, and its handler with its body limit.
type Endpoint = (Verb, &'static str, MethodRouter<AppState>);

fn endpoint<H, T>(verb: Verb, path: &'static str, handler: H, body_limit: usize) -> Endpoint
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let route = on(verb.filter(), handler).layer(DefaultBodyLimit::max(body_limit));
    (verb, path, route)
}

/// Every route the API serves, in one table: [`router`] is built from it, and [`routes`] lists
/// it, so that a test can hold the OpenAPI document ([`crate::openapi`]) to it.
fn endpoints(sync_body_limit: usize) -> Vec<Endpoint> {
    use Verb::{Get, Post, Put};
    // Handlers that read no body keep the JSON limit: it bounds nothing they do.
    let json = MAX_JSON_BODY_BYTES;
    let control = control::MAX_JSON_BODY;
    vec![
        endpoint(Get, "/healthz", healthz, json),
        endpoint(Get, "/metrics", metrics_handler, json),
        endpoint(Get, "/openapi.json", crate::openapi::openapi_json, json),
        endpoint(Post, "/api/v1/sync", sync, sync_body_limit),
        endpoint(Post, "/api/v1/enroll", enroll, json),
        endpoint(Get, "/api/v1/sites", list_sites, json),
        endpoint(Post, "/api/v1/sites", create_site, json),
        endpoint(Get, "/api/v1/sites/{site}/events", events, json),
        endpoint(Get, "/api/v1/sites/{site}/stream", stream, json),
        endpoint(Get, "/api/v1/sites/{site}/devices", devices, json),
        endpoint(
            Get,
            "/api/v1/sites/{site}/shift-logs/{shift}/export",
            export_shift_log,
            json,
        ),
        endpoint(
            Post,
            "/api/v1/sites/{site}/devices/{device}/revoke",
            revoke_device,
            json,
        ),
        endpoint(
            Post,
            "/api/v1/sites/{site}/enrollment-codes",
            create_enrollment_code,
            json,
        ),
        endpoint(
            Get,
            "/api/v1/sites/{site}/incidents",
            control::list_incidents,
            control,
        ),
        endpoint(
            Get,
            "/api/v1/sites/{site}/incidents/{incident}",
            control::get_incident,
            control,
        ),
        endpoint(
            Post,
            "/api/v1/sites/{site}/incidents/{incident}/actions",
            control::act_on_incident,
            control,
        ),
        endpoint(
            Get,
            "/api/v1/sites/{site}/config",
            control::get_config,
            control,
        ),
        endpoint(
            Put,
            "/api/v1/sites/{site}/config",
            control::put_config,
            control,
        ),
        endpoint(
            Post,
            "/api/v1/sites/{site}/alarms/{event}/acknowledge",
            control::acknowledge_alarm,
            control,
        ),
        endpoint(Get, "/api/v1/users", list_users, json),
        endpoint(Post, "/api/v1/users", create_user, json),
        endpoint(Post, "/api/v1/users/{id}/revoke", revoke_user, json),
    ]
}

/// Every method and path the router serves (paths in axum's `{param}` form, as in OpenAPI).
pub fn routes() -> Vec<(Method, &'static str)> {
    endpoints(0)
        .into_iter()
        .map(|(verb, path, _)| (verb.method(), path))
        .collect()
}

/// The API's router, ready to serve. Its traffic is counted into `state.metrics`.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let mut router = Router::new();
    // Two methods on one path are merged by axum into one method router.
    for (_, path, method_router) in endpoints(state.config.max_body_bytes) {
        router = router.route(path, method_router);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        // Outermost, so that it sees bodies exactly as they go to and come from hyper: after
        // any encoding a layer inside it applies, and including error responses of every layer.
        .layer(axum::middleware::from_fn_with_state(metrics, count_traffic))
        .with_state(state)
}

/// Logs a 5xx answer as an error, except a refused sync (`503 server_busy`): that is
/// back-pressure doing its work, counted in `patrol_sync_refused_total`, and under a flood one
/// error line per refusal would only cost the CPU the refusal saved.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, span: &tracing::Span) {
    let latency_ms = latency.as_millis();
    match class {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(parent: span, latency_ms, "refused: server busy")
        }
        other => {
            tracing::error!(parent: span, classification = %other, latency_ms, "response failed")
        }
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The server is up", content_type = "text/plain", body = String, example = "ok"))
)]
async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(OriginalUri(uri): OriginalUri) -> AppError {
    AppError::NotFound(uri.path().to_string())
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Accepts `application/x-patrol-sync`, with or without parameters, in any letter case.
fn check_content_type(headers: &HeaderMap) -> Result<(), AppError> {
    check_media_type(headers, protocol::CONTENT_TYPE)
}

/// Accepts the media type `expected`, with or without parameters, in any letter case.
pub(crate) fn check_media_type(
    headers: &HeaderMap,
    expected: &'static str,
) -> Result<(), AppError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let matches = got.as_deref().is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected))
    });
    if matches {
        return Ok(());
    }
    Err(AppError::UnsupportedMediaType {
        expected,
        got: got.unwrap_or_else(|| "none".into()),
    })
}

pub(crate) fn body_error(rejection: BytesRejection, limit: usize) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge { limit }
    } else {
        AppError::UnreadableBody(rejection.body_text())
    }
}

/// The request as a whole must come from the device its credential names: another site or
/// device is 403, an old `request_seq` 409, and nothing is applied. The batch's owner is the
/// credential's device, so every change must be made by that device's actor.
fn check_sync_request(
    request: &SyncRequest,
    credential: &DeviceCredential,
) -> Result<(), AppError> {
    if request.site != credential.site || request.device != credential.device {
        return Err(AppError::Forbidden(format!(
            "this credential belongs to device {} of site {}, not to device {} of site {}",
            credential.device, credential.site, request.device, request.site
        )));
    }
    // Stored as a signed 64-bit integer; no phone counts that far.
    if i64::try_from(request.request_seq).is_err() {
        return Err(AppError::MalformedRequest(format!(
            "request_seq {} is out of range",
            request.request_seq
        )));
    }
    // Checked again, authoritatively, in the request's transaction; this spares a replay the
    // merge.
    if request.request_seq <= credential.last_request_seq {
        return Err(AppError::Replayed {
            last_seq: credential.last_request_seq,
        });
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/sync",
    tag = "sync",
    security(("device_credential" = [])),
    request_body(
        content = SyncBody,
        content_type = "application/x-patrol-sync",
        description = "A `SyncRequest`, postcard-encoded after a version byte (docs/protocol.md)"
    ),
    responses(
        (status = 200, description = "A `SyncResponse`, postcard-encoded (docs/protocol.md): each document's outcome, the configuration, incidents and alarm acks due to the device", content_type = "application/x-patrol-sync", body = SyncBody),
        (status = 400, description = "Malformed or truncated request, unsupported protocol version, or unreadable body", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked device credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The credential belongs to another site or device", body = crate::openapi::ErrorBody),
        (status = 409, description = "`replayed_request`: request_seq not above the last accepted one (`last_seq` given)", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the server's sync body limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "Content-Type is not `application/x-patrol-sync`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
        (status = 503, description = "`server_busy`: too many sync requests are already waiting, or this one waited too long; its body was not read and nothing changed. Send it again after `Retry-After` seconds", body = crate::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before sending the sync again"))),
    )
)]
async fn sync(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    state.metrics.add_sync_request();
    let credential = auth::authenticate_device(&state, request.headers()).await?;
    check_content_type(request.headers())?;
    // Held until the answer is ready. Refused (503) before a byte of the body is read.
    let _admitted = state.syncs.admit(&state.metrics).await?;
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|r| body_error(r, state.config.max_body_bytes))?;
    let request = SyncRequest::decode(&body)?;
    let received_at_ms = now_ms();
    check_sync_request(&request, &credential)?;

    // Shift logs take the batch path unchanged; incidents, the configuration and alarm acks
    // go to the store's collaborative path, at the same time.
    let refs: Vec<DocRef> = request.docs.iter().map(|push| push.doc).collect();
    let mut shift_logs = Vec::with_capacity(request.docs.len());
    let mut incidents = Vec::new();
    for push in request.docs {
        match push.doc {
            DocRef::ShiftLog(shift) => shift_logs.push(ShiftLogPush {
                shift,
                changes: push.changes,
                events: push.events,
                signature: push.signature,
            }),
            DocRef::Incident(incident) => incidents.push(IncidentPush {
                incident,
                have: protocol::from_wire(&push.have),
                changes: push.changes,
            }),
        }
    }
    let batch = SyncBatch {
        site: credential.site,
        device: credential.device,
        request_seq: request.request_seq,
        received_at_ms,
        device_time_ms: request.device_time_ms,
        pending_events: request.pending_events,
        pushes: shift_logs,
        public_key: credential.public_key,
    };
    let collab = CollabSync {
        site: batch.site.clone(),
        device: batch.device,
        guard: request.guard,
        received_at_ms,
        incidents,
        config_version: request.config_version,
        awaiting_ack: request.awaiting_ack,
    };
    let (site, device) = (batch.site.clone(), batch.device);
    // The shift-log transaction is where a replayed, stale or revoked request is refused. Without
    // incident pushes the collaborative part only reads, so it runs alongside; with them it
    // writes, and runs only once the request was accepted, so a refused one changes nothing.
    let (outcomes, collab) = if collab.incidents.is_empty() {
        let (outcomes, collab) =
            tokio::join!(state.store.sync(batch), state.store.sync_collab(collab));
        (outcomes?, collab?)
    } else {
        let outcomes = state.store.sync(batch).await?;
        (outcomes, state.store.sync_collab(collab).await?)
    };

    // Back into the request's order.
    let mut shift_outcomes = outcomes.into_iter();
    let mut incident_outcomes = collab.outcomes.into_iter();
    let mut docs = Vec::with_capacity(refs.len());
    for doc in refs {
        let outcome = match doc {
            DocRef::ShiftLog(_) => shift_outcomes.next(),
            DocRef::Incident(_) => incident_outcomes.next(),
        }
        .ok_or_else(|| AppError::internal("the store answered fewer documents than were pushed"))?;
        match (&doc, &outcome) {
            (_, DocOutcome::Rejected { code, message }) => {
                state.metrics.add_doc_rejected(*code);
                tracing::warn!(
                    %site, %device, ?doc, code = code.as_str(), %message,
                    "rejected a document push"
                )
            }
            (
                DocRef::ShiftLog(shift),
                DocOutcome::Accepted {
                    new_events,
                    missing_deps,
                    ..
                },
            ) => {
                state.metrics.add_doc_accepted(*new_events);
                tracing::debug!(
                    %site, %device, %shift, new_events, missing_deps,
                    "merged a shift log push"
                )
            }
            (DocRef::Incident(incident), DocOutcome::Accepted { missing_deps, .. }) => {
                state.metrics.add_doc_accepted(0);
                tracing::debug!(%site, %device, %incident, missing_deps, "merged an incident push")
            }
        }
        docs.push(DocResult { doc, outcome });
    }

    let new_events = docs
        .iter()
        .any(|d| matches!(d.outcome, DocOutcome::Accepted { new_events, .. } if new_events > 0));
    if new_events {
        state.feed.bump(&site);
    }
    let response = SyncResponse {
        server_time_ms: now_ms(),
        docs,
        config: collab.config,
        incidents: collab.incidents,
        alarm_acks: collab.alarm_acks,
    }
    .encode()
    .map_err(AppError::internal)?;
    Ok(([(header::CONTENT_TYPE, protocol::CONTENT_TYPE)], response).into_response())
}

/// A postcard-encoded sync message (documentation only: the handler decodes the bytes).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct SyncBody(Vec<u8>);

/// A feed page (documentation only: the handler writes it from the stored JSON text).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct EventsPage {
    site_id: String,
    /// The events, oldest first; each event's JSON is described in docs/protocol.md.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// The cursor for the next page: the last event's sequence number, or `after`.
    next: u64,
    /// Whether more events follow.
    more: bool,
}

pub(crate) fn site_from_path(
    path: Result<Path<String>, PathRejection>,
) -> Result<SiteId, AppError> {
    let Path(raw) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    SiteId::new(raw).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))
}

/// Kept as text so that a bad value gets our message, not the extractor's; the documented types
/// are what the values must parse as.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FeedParams {
    /// Events after this sequence number (the previous page's `next`); 0 when absent.
    #[param(value_type = Option<u64>)]
    after: Option<String>,
    /// Events per page, 1 to 10000; 1000 when absent. (The stream ignores it.)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only events before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this guard's events (guard id).
    guard: Option<String>,
    /// Only this device's events (device id, UUID).
    device: Option<String>,
    /// Only events of this kind (e.g. `checkpoint_scan`, `panic`).
    kind: Option<String>,
    /// Only events at this checkpoint (checkpoint id).
    checkpoint: Option<String>,
}

/// The feed's filters, checked: times as RFC 3339, ids by their rules, kinds by name.
fn parse_feed_filter(params: &FeedParams) -> Result<FeedFilter, AppError> {
    fn present(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, AppError> {
        present(v)
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_millis())
                    .map_err(|_| {
                        AppError::bad_request(
                            "invalid_query",
                            format!("{name} must be an RFC 3339 time, got {s:?}"),
                        )
                    })
            })
            .transpose()
    };
    let bad = |name: &str, e: &dyn std::fmt::Display| {
        AppError::bad_request("invalid_query", format!("{name}: {e}"))
    };
    let guard = present(&params.guard)
        .map(|g| GuardId::new(g).map_err(|e| bad("guard", &e)))
        .transpose()?;
    let checkpoint = present(&params.checkpoint)
        .map(|c| CheckpointId::new(c).map_err(|e| bad("checkpoint", &e)))
        .transpose()?;
    let device = present(&params.device)
        .map(|d| d.parse::<DeviceId>().map_err(|e| bad("device", &e)))
        .transpose()?;
    let kind = present(&params.kind)
        .map(|k| {
            if EventBody::KINDS.contains(&k) {
                Ok(k.to_owned())
            } else {
                Err(AppError::bad_request(
                    "invalid_query",
                    format!(
                        "kind must be one of {}, got {k:?}",
                        EventBody::KINDS.join(", ")
                    ),
                ))
            }
        })
        .transpose()?;
    Ok(FeedFilter {
        from_ms: time("from", &params.from)?,
        to_ms: time("to", &params.to)?,
        guard: guard.map(|g| g.to_string()),
        device: device.map(|d| d.to_string()),
        kind,
        checkpoint: checkpoint.map(|c| c.to_string()),
    })
}

fn parse_feed_params(params: &FeedParams) -> Result<(u64, u32), AppError> {
    let after = match params.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            AppError::bad_request(
                "invalid_query",
                format!("after must be a non-negative integer (a sequence number), got {s:?}"),
            )
        })?,
    };
    let limit = match params.limit.as_deref() {
        None | Some("") => DEFAULT_FEED_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_FEED_LIMIT).contains(&n) => n,
            _ => {
                return Err(AppError::bad_request(
                    "invalid_query",
                    format!("limit must be an integer from 1 to {MAX_FEED_LIMIT}, got {s:?}"),
                ));
            }
        },
    };
    Ok((after, limit))
}

/// The feed page, assembled from the stored JSON text without parsing it again:
/// `{"site_id":..,"events":[..],"next":<last seq or after>,"more":bool}`.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/events",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        FeedParams,
    ),
    responses(
        (status = 200, description = "One page of the feed, in server sequence order", body = EventsPage,
            headers(
                ("patrol-next-cursor" = u64, description = "The cursor to ask the next page from (`next` in the body)"),
                ("patrol-more" = bool, description = "`true` when more events follow (`more` in the body)"),
                ("Link" = String, description = "RFC 8288 `rel=\"next\"` link to the next page, with the same filters; only when more follow"),
            )
        ),
        (status = 400, description = "A bad query parameter or site id (`invalid_query`, `invalid_site_id`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn events(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedParams>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let Query(params) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let (after, limit) = parse_feed_params(&params)?;
    let filter = parse_feed_filter(&params)?;
    let Some(page) = state
        .store
        .events_filtered(site.clone(), after, limit, filter)
        .await?
    else {
        return Err(AppError::UnknownSite(site.to_string()));
    };

    let next = page.next(after);
    let site_json = serde_json::to_string(site.as_str()).map_err(AppError::internal)?;
    let size: usize = page.events.iter().map(|(_, json)| json.len() + 1).sum();
    let mut body = String::with_capacity(size + site_json.len() + 64);
    body.push_str("{\"site_id\":");
    body.push_str(&site_json);
    body.push_str(",\"events\":[");
    for (i, (_, json)) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(json);
    }
    // Writing to a String cannot fail.
    let _ = write!(body, "],\"next\":{next},\"more\":{}}}", page.more);
    // The cursor also travels in headers, so a client can ask for the next page as soon as the
    // headers arrive and read this page's body meanwhile (RFC 8288 `Link` for generic clients).
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(NEXT_CURSOR_HEADER, HeaderValue::from(next));
    headers.insert(
        MORE_HEADER,
        HeaderValue::from_static(if page.more { "true" } else { "false" }),
    );
    if page.more {
        // The same filters, the next cursor (pairs kept as sent: already URL-encoded).
        let mut query = format!("after={next}&limit={limit}");
        for pair in raw_query.as_deref().unwrap_or("").split('&') {
            if !pair.is_empty() && !pair.starts_with("after=") && !pair.starts_with("limit=") {
                query.push('&');
                query.push_str(pair);
            }
        }
        let link = format!("</api/v1/sites/{site}/events?{query}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// Response header of a feed page: the cursor to ask the next page from (as `next` in the body).
pub const NEXT_CURSOR_HEADER: &str = "patrol-next-cursor";
/// Response header of a feed page: `true` when more events follow (as `more` in the body).
pub const MORE_HEADER: &str = "patrol-more";

/// The live feed as server-sent events: each event's SSE id is its sequence number, so a
/// client that reconnects with `Last-Event-ID` (or `after`) resumes exactly where it was. The
/// same filters as the paged feed apply.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/stream",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        FeedParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number (a reconnecting EventSource sends it); overrides `after`"),
    ),
    responses(
        (status = 200, description = "Server-sent events, one per feed event: `id` is its sequence number, `data` the event's JSON as in the paged feed. Never ends by itself; keep-alive comments are sent while idle.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad query parameter, site id or `Last-Event-ID`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn stream(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let Query(params) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let (mut after, _) = parse_feed_params(&params)?;
    let filter = parse_feed_filter(&params)?;
    if let Some(last) = headers.get("last-event-id") {
        after = last
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                AppError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be an event sequence number",
                )
            })?;
    }
    if state.store.get_site(site.clone()).await?.is_none() {
        return Err(AppError::UnknownSite(site.to_string()));
    }
    let events = crate::feed::stream(state.store.clone(), state.feed.clone(), site, filter, after);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A device as the control room sees it: its enrollment (absent for a device that synced
/// before enrollment existed) and its last sync (absent until its first).
#[derive(Debug, Default, Serialize, ToSchema)]
struct DeviceView {
    device_id: String,
    enrolled_at: Option<String>,
    revoked_at: Option<String>,
    first_seen: Option<String>,
    last_sync_at: Option<String>,
    pending_events: u64,
    clock_skew_ms: Option<i64>,
    /// The ed25519 key (hex) the device registered at enrollment, which its shift logs'
    /// signatures verify against; absent for a device enrolled before keys existed.
    public_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DevicesView {
    site_id: String,
    devices: Vec<DeviceView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/devices",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
    ),
    responses(
        (status = 200, description = "The site's devices", body = DevicesView),
        (status = 400, description = "`invalid_site_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn devices(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DevicesView>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let (Some(synced), Some(enrolled)) = (
        state.store.devices(site.clone()).await?,
        state.store.device_credentials(site.clone()).await?,
    ) else {
        return Err(AppError::UnknownSite(site.to_string()));
    };
    let mut views: BTreeMap<DeviceId, DeviceView> = BTreeMap::new();
    for c in enrolled {
        let view = views.entry(c.device).or_default();
        view.enrolled_at = Some(format_time_ms(c.enrolled_at_ms));
        view.revoked_at = c.revoked_at_ms.map(format_time_ms);
        view.public_key = c.public_key.map(|k| k.to_string());
    }
    for d in synced {
        let view = views.entry(d.device).or_default();
        view.first_seen = Some(format_time_ms(d.first_seen_ms));
        view.last_sync_at = Some(format_time_ms(d.last_sync_at_ms));
        view.pending_events = d.pending_events;
        view.clock_skew_ms = Some(d.clock_skew_ms);
    }
    Ok(Json(DevicesView {
        site_id: site.to_string(),
        devices: views
            .into_iter()
            .map(|(id, view)| DeviceView {
                device_id: id.to_string(),
                ..view
            })
            .collect(),
    }))
}

/// Reads a JSON body of at most [`MAX_JSON_BODY_BYTES`]. An empty body is `empty` when given
/// (the request's fields are all optional); otherwise it must be `application/json` that
/// decodes into `T`.
async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    request: Request,
    empty: Option<T>,
) -> Result<T, AppError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = Bytes::from_request(request, state)
        .await
        .map_err(|r| body_error(r, MAX_JSON_BODY_BYTES))?;
    if body.is_empty()
        && let Some(value) = empty
    {
        return Ok(value);
    }
    let is_json = content_type.as_deref().is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(AppError::UnsupportedMediaType {
            expected: "application/json",
            got: content_type.unwrap_or_else(|| "none".into()),
        });
    }
    serde_json::from_slice(&body).map_err(|e| AppError::bad_request("invalid_json", e.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
struct SiteView {
    site_id: String,
    name: String,
    created_at: String,
}

impl From<Site> for SiteView {
    fn from(s: Site) -> Self {
        SiteView {
            site_id: s.id.to_string(),
            name: s.name,
            created_at: format_time_ms(s.created_at_ms),
        }
    }
}

/// The sites the user covers (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct SitesList {
    sites: Vec<SiteView>,
}

/// The sites the user covers.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "administration",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The sites the user covers", body = SitesList),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn list_sites(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    let sites: Vec<SiteView> = state
        .store
        .list_sites()
        .await?
        .into_iter()
        .filter(|s| user.0.can_read(&s.id))
        .map(SiteView::from)
        .collect();
    Ok(Json(serde_json::json!({ "sites": sites })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSiteBody {
    site_id: String,
    name: Option<String>,
}

/// Longest site name.
const MAX_SITE_NAME_LEN: usize = 200;

#[utoipa::path(
    post,
    path = "/api/v1/sites",
    tag = "administration",
    security(("user_token" = [])),
    request_body(content = NewSiteBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new site", body = SiteView),
        (status = 400, description = "`invalid_json`, `invalid_site_id`, `invalid_site_name`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator over all sites", body = crate::openapi::ErrorBody),
        (status = 409, description = "`site_exists`", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn create_site(
    user: AuthUser,
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<SiteView>), AppError> {
    user.is_global_admin()?;
    let body: NewSiteBody = read_json(&state, request, None).await?;
    let id = SiteId::new(body.site_id)
        .map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    let name = body.name.unwrap_or_else(|| id.to_string());
    if name.trim().is_empty() || name.len() > MAX_SITE_NAME_LEN {
        return Err(AppError::bad_request(
            "invalid_site_name",
            format!("a site name is 1 to {MAX_SITE_NAME_LEN} bytes, not blank"),
        ));
    }
    let site = state
        .store
        .create_site(Site {
            id,
            name,
            created_at_ms: now_ms(),
        })
        .await?;
    tracing::info!(site = %site.id, by = %user.0.name, "created a site");
    Ok((StatusCode::CREATED, Json(site.into())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCodeBody {
    /// Lifetime in seconds; the server's default when absent.
    ttl_secs: Option<u64>,
}

/// An enrollment code as issued (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct EnrollmentCodeView {
    site: String,
    /// The one-time code (`pe_…`), shown only here.
    code: String,
    /// RFC 3339.
    expires_at: String,
}

/// A one-time code that enrolls one phone on the site, shown once.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/enrollment-codes",
    tag = "administration",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
    ),
    request_body(content = Option<NewCodeBody>, content_type = "application/json", description = "Optional; an empty body takes the server's default lifetime"),
    responses(
        (status = 201, description = "The one-time code, shown once", body = EnrollmentCodeView),
        (status = 400, description = "`invalid_json`, `invalid_site_id`, `invalid_ttl`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn create_enrollment_code(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let site = site_from_path(path)?;
    user.administers(&site)?;
    let body: NewCodeBody = read_json(&state, request, Some(NewCodeBody::default())).await?;
    let ttl_secs = body
        .ttl_secs
        .unwrap_or(state.config.enrollment_code_ttl_secs);
    if !(1..=MAX_ENROLLMENT_CODE_TTL_SECS).contains(&ttl_secs) {
        return Err(AppError::bad_request(
            "invalid_ttl",
            format!("ttl_secs must be from 1 to {MAX_ENROLLMENT_CODE_TTL_SECS}, got {ttl_secs}"),
        ));
    }
    let code = Secret::generate(TokenKind::Enrollment).map_err(AppError::internal)?;
    let now = now_ms();
    let expires_at_ms = now.saturating_add(i64::try_from(ttl_secs * 1000).unwrap_or(i64::MAX));
    state
        .store
        .create_enrollment_code(NewEnrollmentCode {
            site: site.clone(),
            code_hash: code.hash(),
            created_by: Some(user.0.id.clone()),
            created_at_ms: now,
            expires_at_ms,
        })
        .await?;
    tracing::info!(%site, by = %user.0.name, ttl_secs, "issued an enrollment code");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "site": site.as_str(),
            "code": code.expose(),
            "expires_at": format_time_ms(expires_at_ms),
        })),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    code: String,
    /// The ed25519 public key (64 hex digits) the phone made for this enrollment: every push of
    /// shift-log changes it makes must then be signed with it. Phones of this version always
    /// send one; without it the device syncs unsigned, and its logs cannot be verified.
    #[serde(default)]
    public_key: Option<String>,
}

/// An enrolled device (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct EnrolledView {
    site: String,
    device_id: String,
    /// The automerge actor id every change of the device must carry (hex).
    actor_id: String,
    /// The device credential (`pd_…`), shown only here.
    credential: String,
}

/// Enrolls a phone: the code (one-time, unexpired) decides the site; the server makes the
/// device id and its credential, shown once. The device's automerge actor id is its id's 16
/// bytes, which the server requires of every change the device sends.
#[utoipa::path(
    post,
    path = "/api/v1/enroll",
    tag = "sync",
    request_body(content = EnrollBody, content_type = "application/json", description = "The one-time enrollment code is the credential"),
    responses(
        (status = 200, description = "The new device, its actor id and its credential, shown once", body = EnrolledView),
        (status = 400, description = "`invalid_json`, or `invalid_public_key`: not 64 hex digits of an ed25519 key", body = crate::openapi::ErrorBody),
        (status = 401, description = "`invalid_enrollment_code`: not an enrollment code, or unknown", body = crate::openapi::ErrorBody),
        (status = 410, description = "`enrollment_code_used` or `enrollment_code_expired`", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn enroll(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<serde_json::Value>, AppError> {
    let body: EnrollBody = read_json(&state, request, None).await?;
    if TokenKind::of(body.code.trim()) != Some(TokenKind::Enrollment) {
        return Err(AppError::Unauthorized {
            code: "invalid_enrollment_code",
            message: format!("the code is not {}", TokenKind::Enrollment.describe()),
        });
    }
    let public_key = body
        .public_key
        .as_deref()
        .map(str::parse::<PublicKey>)
        .transpose()
        .map_err(|e| AppError::bad_request("invalid_public_key", e.to_string()))?;
    let credential = Secret::generate(TokenKind::Device).map_err(AppError::internal)?;
    let device = DeviceId::generate();
    let enrolled = state
        .store
        .enroll_device(Enrollment {
            code_hash: TokenHash::of(body.code.trim()),
            device,
            credential_hash: credential.hash(),
            public_key,
            now_ms: now_ms(),
        })
        .await?;
    tracing::info!(site = %enrolled.site, %device, "enrolled a device");
    Ok(Json(serde_json::json!({
        "site": enrolled.site.as_str(),
        "device_id": device.to_string(),
        "actor_id": device.actor_id().to_hex_string(),
        "credential": credential.expose(),
    })))
}

/// A shift log with its device's signatures (documentation only: the handler serves
/// [`patrol_core::evidence::ShiftLogExport`]).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct ShiftLogExportView {
    /// `patrol-shift-log-export/1`.
    format: String,
    site: String,
    device: String,
    shift: String,
    /// The key the device registered at enrollment (hex), for information: a verifier checks
    /// the log against a key it holds, not this one.
    public_key: Option<String>,
    /// The log's raw automerge changes (hex), each after those it depends on.
    changes: Vec<String>,
    /// Each `{heads: [hex], signed_at_ms, signature: hex, received_at_ms}`.
    signatures: Vec<serde_json::Value>,
}

/// Exports a shift log as evidence: its changes exactly as the device made them and every
/// signature the device made over the log's heads. `patrol verify` checks the file offline
/// against the device's public key.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/shift-logs/{shift}/export",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        ("shift" = String, Path, description = "Shift id (UUID): the `shift_id` of its events"),
    ),
    responses(
        (status = 200, description = "The shift log and its signatures", body = ShiftLogExportView),
        (status = 400, description = "`invalid_site_id`, `invalid_shift_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site", body = crate::openapi::ErrorBody),
        (status = 404, description = "`not_found`: the site has no such shift log", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn export_shift_log(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ShiftLogExport>, AppError> {
    let Path((site, shift)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    user.can_read(&site)?;
    let shift: ShiftId = shift.parse().map_err(|e: patrol_core::ValidationError| {
        AppError::bad_request("invalid_shift_id", e.to_string())
    })?;
    let Some(evidence) = state.store.shift_log_evidence(site.clone(), shift).await? else {
        return Err(AppError::NotFound(format!(
            "site {site} has no shift log {shift}"
        )));
    };
    // Loading the document and writing out its changes is CPU work.
    let export = tokio::task::spawn_blocking(move || {
        let mut log = ShiftLog::load(&evidence.bytes, evidence.device)?;
        let changes = log.changes();
        Ok::<_, patrol_core::LogError>(ShiftLogExport::new(
            log.meta(),
            evidence.public_key,
            &changes,
            &evidence.signatures,
        ))
    })
    .await
    .map_err(AppError::internal)?
    .map_err(|e| {
        AppError::from(StoreError::CorruptDocument {
            site,
            doc: shift.to_string(),
            reason: e.to_string(),
        })
    })?;
    Ok(Json(export))
}

/// A revoked device (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct RevokedDeviceView {
    site: String,
    device_id: String,
    enrolled_at: String,
    revoked_at: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/devices/{device}/revoke",
    tag = "administration",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        ("device" = String, Path, description = "Device id (UUID)"),
    ),
    responses(
        (status = 200, description = "The revoked device", body = RevokedDeviceView),
        (status = 400, description = "`invalid_site_id`, `invalid_device_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_device`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn revoke_device(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path((site, device)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    user.administers(&site)?;
    let device: DeviceId = device.parse().map_err(|e: patrol_core::ValidationError| {
        AppError::bad_request("invalid_device_id", e.to_string())
    })?;
    let Some(revoked) = state
        .store
        .revoke_device(site.clone(), device, now_ms())
        .await?
    else {
        return Err(AppError::UnknownDevice {
            site: site.to_string(),
            device: device.to_string(),
        });
    };
    tracing::info!(%site, %device, by = %user.0.name, "revoked a device");
    Ok(Json(serde_json::json!({
        "site": site.as_str(),
        "device_id": device.to_string(),
        "enrolled_at": format_time_ms(revoked.enrolled_at_ms),
        "revoked_at": revoked.revoked_at_ms.map(format_time_ms),
    })))
}

#[derive(Debug, Serialize, ToSchema)]
struct UserView {
    id: String,
    name: String,
    role: &'static str,
    all_sites: bool,
    sites: Vec<String>,
    created_at: String,
    created_by: Option<String>,
    revoked_at: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        let (all_sites, sites) = match u.scope {
            Scope::AllSites => (true, Vec::new()),
            Scope::Sites(sites) => (false, sites.iter().map(|s| s.to_string()).collect()),
        };
        UserView {
            id: u.id,
            name: u.name,
            role: u.role.as_str(),
            all_sites,
            sites,
            created_at: format_time_ms(u.created_at_ms),
            created_by: u.created_by,
            revoked_at: u.revoked_at_ms.map(format_time_ms),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    name: String,
    role: String,
    #[serde(default)]
    sites: Vec<String>,
    #[serde(default)]
    all_sites: bool,
}

/// A new user and its token (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct CreatedUserView {
    user: UserView,
    /// The user's token (`pu_…`), shown only here.
    token: String,
}

/// Creates a user within the caller's scope; its token is in the answer, once.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "administration",
    security(("user_token" = [])),
    request_body(content = NewUserBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new user and its token, shown once", body = CreatedUserView),
        (status = 400, description = "`invalid_json`, `invalid_role`, `invalid_site_id`, `invalid_user`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator, or the scope is beyond the caller's", body = crate::openapi::ErrorBody),
        (status = 409, description = "`user_exists`", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn create_user(
    user: AuthUser,
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    user.is_admin()?;
    let body: NewUserBody = read_json(&state, request, None).await?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| AppError::bad_request("invalid_role", e))?;
    let sites = body
        .sites
        .into_iter()
        .map(SiteId::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    let scope = auth::user_scope(&body.name, role, sites, body.all_sites)
        .map_err(|e| AppError::bad_request("invalid_user", e))?;
    if !user.0.manages(&scope) {
        return Err(AppError::Forbidden(format!(
            "user {} may not create a user over sites it does not administer",
            user.0.name
        )));
    }
    let (new, token) = auth::new_user(body.name, role, scope, Some(user.0.id.clone()), now_ms())
        .map_err(AppError::internal)?;
    let created = state.store.create_user(new).await?;
    tracing::info!(user = %created.name, role = created.role.as_str(), by = %user.0.name, "created a user");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "user": UserView::from(created),
            "token": token.expose(),
        })),
    ))
}

/// The users the caller manages (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct UsersList {
    users: Vec<UserView>,
}

/// The users the caller manages (all of them, for an administrator over all sites).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "administration",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The users the caller manages", body = UsersList),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn list_users(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    user.is_admin()?;
    let users: Vec<UserView> = state
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| user.0.manages(&u.scope))
        .map(UserView::from)
        .collect();
    Ok(Json(serde_json::json!({ "users": users })))
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/revoke",
    tag = "administration",
    security(("user_token" = [])),
    params(
        ("id" = String, Path, description = "User id"),
    ),
    responses(
        (status = 200, description = "The revoked user", body = UserView),
        (status = 400, description = "`invalid_path`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator, or the user is beyond the caller's scope", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_user`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
async fn revoke_user(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserView>, AppError> {
    user.is_admin()?;
    let Path(id) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let target = state
        .store
        .users()
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    if !user.0.manages(&target.scope) {
        return Err(AppError::Forbidden(format!(
            "user {} may not revoke a user over sites it does not administer",
            user.0.name
        )));
    }
    let revoked = state
        .store
        .revoke_user(target.id, now_ms())
        .await?
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    tracing::info!(user = %revoked.name, by = %user.0.name, "revoked a user");
    Ok(Json(revoked.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(after: Option<&str>, limit: Option<&str>) -> FeedParams {
        FeedParams {
            after: after.map(Into::into),
            limit: limit.map(Into::into),
            from: None,
            to: None,
            guard: None,
            device: None,
            kind: None,
            checkpoint: None,
        }
    }

    #[test]
    fn feed_params_default_and_reject_out_of_range() {
        assert!(matches!(
            parse_feed_params(&params(None, None)),
            Ok((0, DEFAULT_FEED_LIMIT))
        ));
        assert!(matches!(
            parse_feed_params(&params(Some("5"), Some("10000"))),
            Ok((5, 10_000))
        ));
        for (a, l) in [
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("0")),
            (None, Some("10001")),
        ] {
            let err = parse_feed_params(&params(a, l));
            assert!(
                matches!(
                    err,
                    Err(AppError::BadRequest {
                        code: "invalid_query",
                        ..
                    })
                ),
                "{a:?} {l:?}"
            );
        }
    }

    #[test]
    fn content_type_allows_parameters_and_case() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("Application/X-Patrol-Sync; v=1"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        assert!(check_content_type(&h).is_err());
    }

    #[tokio::test]
    async fn admission_queues_up_to_its_bound_then_refuses() -> Result<(), AppError> {
        use futures_util::FutureExt as _;
        let admission = SyncAdmission::new(AdmissionLimits {
            permits: 1,
            max_waiting: 1,
            max_wait: Duration::from_millis(50),
            retry_after_secs: 3,
        });
        let metrics = Metrics::new();
        let held = admission.admit(&metrics).await?;
        // One may wait; while it does, the next is refused at once.
        let waiter = admission.admit(&metrics);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        assert_eq!(metrics.snapshot().sync_waiting, 1);
        match admission.admit(&metrics).await {
            Err(e @ AppError::ServerBusy { .. }) => {
                assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(e.code(), "server_busy");
                let response = e.into_response();
                assert_eq!(response.headers()[header::RETRY_AFTER], "3");
            }
            other => panic!("expected server_busy, got {other:?}"),
        }
        // The waiter waits out its bound.
        assert!(matches!(
            waiter.await,
            Err(AppError::ServerBusy {
                reason: "wait_timeout",
                ..
            })
        ));
        let m = metrics.snapshot();
        assert_eq!(
            (
                m.sync_waiting,
                m.sync_queued,
                m.sync_refused_queue_full,
                m.sync_refused_wait_timeout
            ),
            (0, 1, 1, 1)
        );
        // A freed permit goes to the next request.
        drop(held);
        let again = admission.admit(&metrics).await?;
        // And one freed while a request waits goes to it.
        let waiter = admission.admit(&metrics);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        drop(again);
        let _admitted = waiter.await?;
        assert_eq!(metrics.snapshot().sync_waiting, 0);
        Ok(())
    }
}
