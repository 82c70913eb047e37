//! The HTTP API (axum), one file per resource, each with its own `routes`. Endpoints, and the
//! credential each needs (see [`auth`]):
//!
//! - [`sync`]: `POST /api/v1/sync`, a device's sync request (binary,
//!   [`patrol_core::protocol::CONTENT_TYPE`]); the device's credential, which must name the
//!   request's site and device.
//! - [`enroll`]: `POST /api/v1/enroll`: `{"code"}` → a new device's id and credential; the code
//!   is the credential. `POST /api/v1/sites/{site}/enrollment-codes`: a one-time code to enroll
//!   a phone on the site; an administrator of the site.
//! - [`admin`]: `GET /api/v1/sites`: the sites the user covers; `POST /api/v1/sites`: a new site
//!   (administrators over all sites). `POST /api/v1/users`, `GET /api/v1/users`,
//!   `POST /api/v1/users/{id}/revoke`, `PUT /api/v1/users/{id}/password`: an administrator, for
//!   users within its scope. `PUT /api/v1/users/me/password`: any user, its own password.
//! - [`session`]: `POST`, `GET` and `DELETE /api/v1/session`: a person signing in with a name and
//!   password, receiving the session cookie that authenticates the console's requests like a
//!   user token, and signing out.
//! - [`feed`]: `GET /api/v1/sites/{site}/events?after=<seq>&limit=<n>`: the site's event feed,
//!   in server sequence order; `GET /api/v1/sites/{site}/stream`: the same, live ([`live`]); a
//!   user covering the site.
//! - [`devices`]: `GET /api/v1/sites/{site}/devices`: the site's devices: enrollment,
//!   revocation, last sync, pending count and when it was reported, skew, the guard of the
//!   latest shift, the open shift, silent since and overdue ([`gaps`]); a user covering the
//!   site.
//!   `POST /api/v1/sites/{site}/devices/{device}/revoke`; an administrator of the site.
//! - [`shifts`]: `GET /api/v1/sites/{site}/shifts` (filters, paged) and `GET
//!   .../shifts/{shift}`: the site's shifts (guard, device, start, end, events, whether the end
//!   was delivered and the log signed); a user covering the site.
//! - [`export`]: `GET /api/v1/sites/{site}/shift-logs/{shift}/export`: a shift log and its
//!   signatures, as evidence; a user covering the site.
//! - [`tours`]: `GET /api/v1/sites/{site}/tours/windows` and `GET
//!   .../tours/{tour}/windows`, for a date or a span: tour windows with each checkpoint's state,
//!   compliance, provisional or final, amendments; a user covering the site.
//! - [`incidents`]: `GET /api/v1/sites/{site}/incidents?status=<s>&limit=<n>`,
//!   `GET .../incidents/{id}`, `POST .../incidents/{id}/actions`; a user covering the site.
//! - [`config`]: `GET /api/v1/sites/{site}/config`, a user covering the site; `PUT`, an
//!   administrator of the site.
//! - [`alarms`]: `POST /api/v1/sites/{site}/alarms/{event_id}/acknowledge`: acknowledges a
//!   panic alarm; a user covering the site.
//! - [`reports`]: `GET /api/v1/sites/{site}/reports/dar?date=..&format=csv|pdf`: the daily
//!   activity report ([`crate::report`]); a user covering the site.
//! - [`attachments`]: `GET` and `PUT /api/v1/blobs/{sha256}`: a phone's chunked, resumable
//!   upload of an attachment's bytes; the device's credential. `GET
//!   /api/v1/sites/{site}/attachments` and `.../attachments/{sha256}`: the site's attachments
//!   and their bytes; a user covering the site.
//! - [`console`]: `GET /` and `GET /console/{file}`: the control room's web console, a page and
//!   its scripts compiled into the binary; `POST /console/qr`: a QR code (SVG) of an
//!   enrollment code, for an administrator. Not API routes: not in [`routes`] nor the OpenAPI
//!   document.
//! - [`health`]: `GET /healthz`: liveness; `GET /metrics`: the counters in Prometheus text
//!   format ([`crate::metrics`]); [`openapi`]: `GET /openapi.json`: this list as an OpenAPI
//!   document; open, no credential.
//!
//! What they share: [`state`] ([`AppState`]), [`admission`] (the sync queue), [`extract`]
//! (reading bodies, paths and their checks), [`error`] ([`AppError`] and the JSON error body),
//! [`auth`] (bearer tokens and session cookies, [`auth::AuthUser`]), [`user_view`] (a user's
//! JSON), [`throttle`] (failed authentications per
//! client address), [`counting`] (the traffic counters' socket and
//! body wrappers), [`live`] (the live feed's wake-ups and stream), [`gaps`] (devices gone
//! silent and shifts overdue: the rule, and the watcher that announces them on live streams)
//! and [`finaliser`] (the periodic pass that closes and finalises tour windows, and announces
//! window changes on live streams), and [`webhook_sender`] (the periodic sender of webhook
//! deliveries).
//!
//! What may import what: a resource imports the shared modules, the layers below
//! (`crate::store`, `crate::credentials`) and `crate::config`, `crate::metrics`; never another
//! resource, nor [`openapi`], which only lists the resources' handlers. The shared modules import
//! no resource. This module merges the resources' routes into the router, with its 404 and 405
//! fallbacks and its layers (tracing, traffic counting).
//!
//! The router is built from one table ([`routes`] lists it), which the OpenAPI test holds the
//! document to. To add a resource: a file with its handlers and a `routes()`, one line in
//! `endpoints`, its handlers in [`openapi::ApiDoc`].

pub mod admin;
pub mod admission;
pub mod alarm_watch;
pub mod alarms;
pub mod attachments;
pub mod auth;
pub mod config;
pub mod console;
pub mod counting;
pub mod devices;
pub mod enroll;
pub mod error;
pub mod export;
pub mod extract;
pub mod feed;
pub mod finaliser;
pub mod gaps;
pub mod health;
pub mod incidents;
pub mod live;
pub mod openapi;
pub mod reports;
pub mod session;
pub mod shifts;
pub mod state;
pub mod sync;
pub mod throttle;
pub mod tours;
pub mod user_view;
pub mod webhook_sender;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::{MethodFilter, MethodRouter, on};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use self::counting::count_traffic;
pub use self::error::AppError;
pub use self::state::AppState;

/// An HTTP method the API routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One entry of the route table: method, path, and its handler with its body limit.
type Endpoint = (Verb, &'static str, MethodRouter<AppState>);

/// A route of `handler`. A handler that reads no body is given the JSON limit
/// ([`extract::MAX_JSON_BODY_BYTES`]): it bounds nothing it does.
fn endpoint<H, T>(verb: Verb, path: &'static str, handler: H, body_limit: usize) -> Endpoint
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let route = on(verb.filter(), handler).layer(DefaultBodyLimit::max(body_limit));
    (verb, path, route)
}

/// Every route the API serves, in one table: [`router`] is built from it, and [`routes`] lists
/// it, so that a test can hold the OpenAPI document ([`openapi`]) to it. Each resource lists its
/// own routes; only the sync body's limit is the server's setting.
fn endpoints(sync_body_limit: usize) -> Vec<Endpoint> {
    [
        health::routes(),
        openapi::routes(),
        sync::routes(sync_body_limit),
        enroll::routes(),
        admin::routes(),
        session::routes(),
        feed::routes(),
        devices::routes(),
        shifts::routes(),
        export::routes(),
        tours::routes(),
        incidents::routes(),
        config::routes(),
        alarms::routes(),
        reports::routes(),
        webhooks::routes(),
        attachments::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every method and path the API serves (paths in axum's `{param}` form, as in OpenAPI).
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
        .merge(console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        // Answers carry credentials (enrollment, new users, rotations) and guards' records:
        // no cache keeps them, and no browser guesses their type.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
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

async fn not_found(OriginalUri(uri): OriginalUri) -> AppError {
    AppError::NotFound(uri.path().to_string())
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}
