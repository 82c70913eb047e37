//! The HTTP API (axum). Endpoints:
//!
//! - `POST /api/v1/sync`: a device's sync request (binary, [`protocol::CONTENT_TYPE`]).
//! - `GET /api/v1/sites/{site}/events?after=<seq>&limit=<n>`: the site's event feed, in server
//!   sequence order.
//! - `GET /api/v1/sites/{site}/devices`: the site's devices, last sync, pending count, skew.
//! - `GET /api/v1/sites/{site}/incidents?status=<s>&limit=<n>`, `GET .../incidents/{id}`,
//!   `POST .../incidents/{id}/actions`: incidents for the control room ([`crate::control`]).
//! - `GET`, `PUT /api/v1/sites/{site}/config`: the site configuration, versioned.
//! - `POST /api/v1/sites/{site}/alarms/{event_id}/acknowledge`: acknowledges a panic alarm.
//! - `GET /healthz`: liveness.
//! - `GET /metrics`: the counters in Prometheus text format ([`crate::metrics`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequest, OriginalUri, Path, Query, RawQuery, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use patrol_core::event::format_time_ms;
use patrol_core::protocol::{self, DocOutcome, DocRef, DocResult, SyncRequest, SyncResponse};
use patrol_core::{CheckpointId, DeviceId, EventBody, GuardId, SiteId};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

use crate::config::ApiConfig;
use crate::control;
use crate::counting::count_traffic;
use crate::error::AppError;
use crate::feed::FeedNotifier;
use crate::metrics::{Metrics, metrics_handler};
use crate::now_ms;
use crate::store::FeedFilter;
use crate::store::{CollabSync, IncidentPush, ShiftLogPush, Store, SyncBatch};

/// Events per feed page when `limit` is not given.
pub const DEFAULT_FEED_LIMIT: u32 = 1_000;
/// Largest feed page.
pub const MAX_FEED_LIMIT: u32 = 10_000;

/// Sync requests handled at once, per core, unless set otherwise
/// ([`AppState::with_max_concurrent_syncs`]).
pub const DEFAULT_CONCURRENT_SYNCS_PER_CPU: usize = 16;

/// What every handler shares: the store, the API settings and the counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    /// Admits sync requests: a request's body is read only once it holds a permit, so that
    /// however many devices sync at once, the server holds the bodies of a bounded number of
    /// them (the others wait in their sockets). Bodies are small; the store bounds the larger
    /// merge results separately. Enough permits that the server always has bodies at hand while
    /// slow clients finish sending theirs.
    syncs: Arc<Semaphore>,
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
            syncs: Arc::new(Semaphore::new(DEFAULT_CONCURRENT_SYNCS_PER_CPU * cpus)),
            feed: Arc::new(FeedNotifier::default()),
        }
    }

    /// Handles at most `n` (at least 1) sync requests at once.
    pub fn with_max_concurrent_syncs(mut self, n: usize) -> Self {
        self.syncs = Arc::new(Semaphore::new(n.max(1)));
        self
    }
}

/// Lets handlers of the API router take `State<Arc<Metrics>>`, as the side listener's do.
impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// The API's router, ready to serve. Its traffic is counted into `state.metrics`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .route(
            "/api/v1/sync",
            post(sync).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/api/v1/sites/{site}/events", get(events))
        .route("/api/v1/sites/{site}/stream", get(stream))
        .route("/api/v1/sites/{site}/devices", get(devices))
        .route(
            "/api/v1/sites/{site}/incidents",
            get(control::list_incidents),
        )
        .route(
            "/api/v1/sites/{site}/incidents/{incident}",
            get(control::get_incident),
        )
        .route(
            "/api/v1/sites/{site}/incidents/{incident}/actions",
            post(control::act_on_incident).layer(DefaultBodyLimit::max(control::MAX_JSON_BODY)),
        )
        .route(
            "/api/v1/sites/{site}/config",
            get(control::get_config)
                .put(control::put_config)
                .layer(DefaultBodyLimit::max(control::MAX_JSON_BODY)),
        )
        .route(
            "/api/v1/sites/{site}/alarms/{event}/acknowledge",
            post(control::acknowledge_alarm).layer(DefaultBodyLimit::max(control::MAX_JSON_BODY)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
        // Outermost, so that it sees bodies exactly as they go to and come from hyper: after
        // any encoding a layer inside it applies, and including error responses of every layer.
        .layer(axum::middleware::from_fn_with_state(metrics, count_traffic))
        .with_state(state)
}

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

async fn sync(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    state.metrics.add_sync_request();
    check_content_type(request.headers())?;
    // Held until the answer is ready. The semaphore is never closed.
    let _admitted = state.syncs.acquire().await.map_err(AppError::internal)?;
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|r| body_error(r, state.config.max_body_bytes))?;
    let request = SyncRequest::decode(&body)?;
    let received_at_ms = now_ms();
    if state.store.get_site(request.site.clone()).await?.is_none() {
        return Err(AppError::UnknownSite(request.site.to_string()));
    }

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
            }),
            DocRef::Incident(incident) => incidents.push(IncidentPush {
                incident,
                have: protocol::from_wire(&push.have),
                changes: push.changes,
            }),
        }
    }
    let batch = SyncBatch {
        site: request.site.clone(),
        device: request.device,
        received_at_ms,
        device_time_ms: request.device_time_ms,
        pending_events: request.pending_events,
        pushes: shift_logs,
    };
    let collab = CollabSync {
        site: request.site,
        device: request.device,
        guard: request.guard,
        received_at_ms,
        incidents,
        config_version: request.config_version,
        awaiting_ack: request.awaiting_ack,
    };
    let (site, device) = (batch.site.clone(), batch.device);
    let (outcomes, collab) = tokio::join!(state.store.sync(batch), state.store.sync_collab(collab));
    let (outcomes, collab) = (outcomes?, collab?);

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

pub(crate) fn site_from_path(
    path: Result<Path<String>, PathRejection>,
) -> Result<SiteId, AppError> {
    let Path(raw) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    SiteId::new(raw).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))
}

/// Kept as text so that a bad value gets our message, not the extractor's.
#[derive(Debug, Deserialize)]
struct FeedParams {
    after: Option<String>,
    limit: Option<String>,
    from: Option<String>,
    to: Option<String>,
    guard: Option<String>,
    device: Option<String>,
    kind: Option<String>,
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
async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedParams>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
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
async fn stream(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
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

#[derive(Debug, Serialize)]
struct DeviceView {
    device_id: String,
    first_seen: String,
    last_sync_at: String,
    pending_events: u64,
    clock_skew_ms: i64,
}

#[derive(Debug, Serialize)]
struct DevicesView {
    site_id: String,
    devices: Vec<DeviceView>,
}

async fn devices(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DevicesView>, AppError> {
    let site = site_from_path(path)?;
    let Some(devices) = state.store.devices(site.clone()).await? else {
        return Err(AppError::UnknownSite(site.to_string()));
    };
    Ok(Json(DevicesView {
        site_id: site.to_string(),
        devices: devices
            .into_iter()
            .map(|d| DeviceView {
                device_id: d.device.to_string(),
                first_seen: format_time_ms(d.first_seen_ms),
                last_sync_at: format_time_ms(d.last_sync_at_ms),
                pending_events: d.pending_events,
                clock_skew_ms: d.clock_skew_ms,
            })
            .collect(),
    }))
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
}
