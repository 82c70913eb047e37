//! Operations: `GET /healthz` (liveness) and `GET /metrics` (the counters of
//! [`crate::metrics`] as Prometheus text), open, no credential; and the side listener's router
//! that serves both outside the traffic counters ([`metrics_router`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::MAX_JSON_BODY_BYTES;
use super::{Endpoint, Verb, endpoint};
use crate::metrics::{CONTENT_TYPE, Metrics};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(Verb::Get, "/healthz", healthz, MAX_JSON_BODY_BYTES),
        endpoint(Verb::Get, "/metrics", metrics_handler, MAX_JSON_BODY_BYTES),
    ]
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

/// `GET /metrics`: the counters as Prometheus text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The counters in Prometheus text format", content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

/// The side listener's router: `/metrics` and `/healthz`, without the counting layer, so
/// reading it adds nothing to the counters it reports.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics)
}
