//! A site's webhooks, for an administrator of the site (docs/protocol.md, "Webhooks"; the rules
//! are in [`crate::store::webhooks`]): register an endpoint (its secret shown once), list and
//! remove them, list the deliveries with their attempts, re-queue a parked one. Only
//! administrators: an endpoint's URL and its deliveries' bodies leave the system, so whoever may
//! see or change them may choose where the site's alarms go.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use patrol_core::event::format_time_ms;
use rand::TryRngCore as _;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{
    CONTROL, MAX_CONTROL_JSON_BODY_BYTES, MAX_JSON_BODY_BYTES, SlugId, WHITE_SPACE, json_body,
    query_params, site_and, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::webhooks::{
    self as rules, Delivery, DeliveryState, EVENT_TYPES, MAX_LISTED_DELIVERIES, MAX_URL_LEN,
    NewWebhook, Webhook,
};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(
            Verb::Post,
            "/api/v1/sites/{site}/webhooks",
            create_webhook,
            MAX_CONTROL_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/webhooks",
            list_webhooks,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Delete,
            "/api/v1/sites/{site}/webhooks/{id}",
            delete_webhook,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/webhooks/deliveries",
            list_deliveries,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Post,
            "/api/v1/sites/{site}/webhooks/deliveries/{id}/retry",
            retry_delivery,
            MAX_JSON_BODY_BYTES,
        ),
    ]
}

/// An endpoint's URL as the document describes it: exactly the rule of
/// [`rules::validate`], so that the fuzzer's valid URLs are the server's. Documentation only.
#[derive(Debug)]
pub(super) struct WebhookUrl;

impl PartialSchema for WebhookUrl {
    fn schema() -> RefOr<Schema> {
        let bad = format!("{WHITE_SPACE}{CONTROL}");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An absolute http:// or https:// URL with a host, without user name, password \
                 or fragment, spaces or control characters",
            ))
            .pattern(Some(format!(
                "^https?://[^/?#@:{bad}][^/?#@{bad}]*([/?][^#{bad}]*)?$"
            )))
            .max_length(Some(MAX_URL_LEN))
            .into()
    }
}

impl ToSchema for WebhookUrl {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookUrl")
    }
}

/// The event types an endpoint subscribes to: some of [`EVENT_TYPES`], each once.
/// Documentation only.
#[derive(Debug)]
pub(super) struct WebhookEvents;

impl PartialSchema for WebhookEvents {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(EVENT_TYPES.iter().copied())),
            )
            .min_items(Some(1))
            .unique_items(true)
            .into()
    }
}

impl ToSchema for WebhookEvents {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookEvents")
    }
}

/// An endpoint to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// Where deliveries are POSTed: an absolute `http` or `https` URL, at most 2,000 characters,
    /// without user name, password or fragment.
    #[schema(value_type = WebhookUrl, example = "https://alerts.example.org/patrol")]
    url: String,
    /// The event types to deliver: `panic.raised`, `panic.unacknowledged`, `incident.created`,
    /// `incident.changed`, `window.missed`, `device.silent`, `checkin.overdue`.
    #[schema(value_type = WebhookEvents, example = json!(["panic.raised", "panic.unacknowledged"]))]
    events: Vec<String>,
}

/// A registered endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    id: i64,
    site_id: String,
    url: String,
    events: Vec<String>,
    created_at: String,
    /// The administrator who registered it.
    created_by: String,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        WebhookView {
            id: w.id,
            site_id: w.site.to_string(),
            url: w.url,
            events: w.events,
            created_at: format_time_ms(w.created_at_ms),
            created_by: w.created_by,
        }
    }
}

/// A new endpoint, with the secret that signs its deliveries: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhookView {
    #[serde(flatten)]
    webhook: WebhookView,
    /// The key of every delivery's `Patrol-Webhook-Signature` (docs/protocol.md, "Webhooks").
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhooksView {
    site_id: String,
    webhooks: Vec<WebhookView>,
}

/// One attempt at a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    at: String,
    /// The HTTP status answered; null when no answer came (see `error`).
    status: Option<u16>,
    /// Why no answer came (timed out, connection refused ...); null when one did.
    error: Option<String>,
    duration_ms: i64,
}

/// A delivery of an event to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    id: i64,
    webhook_id: i64,
    event_type: String,
    /// The `Patrol-Webhook-Id` header and the body's `id`: the same for every attempt.
    idempotency_key: String,
    /// `pending`, `delivered` or `parked`.
    state: String,
    /// Attempts since it was queued or last re-queued.
    attempts: u32,
    created_at: String,
    /// When a pending delivery is tried next.
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
    /// The JSON body sent.
    #[schema(value_type = Object)]
    body: serde_json::Value,
    /// Every attempt, the first first.
    attempt_log: Vec<AttemptView>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            webhook_id: d.endpoint,
            event_type: d.event_type,
            idempotency_key: d.key,
            state: d.state.as_str().into(),
            attempts: d.attempts,
            created_at: format_time_ms(d.created_at_ms),
            next_attempt_at: d.next_attempt_at_ms.map(format_time_ms),
            delivered_at: d.delivered_at_ms.map(format_time_ms),
            body: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::String(d.body)),
            attempt_log: d
                .attempt_log
                .into_iter()
                .map(|a| AttemptView {
                    at: format_time_ms(a.at_ms),
                    status: a.status,
                    error: a.error,
                    duration_ms: a.duration_ms,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesView {
    site_id: String,
    /// The latest first, at most 500.
    deliveries: Vec<DeliveryView>,
}

/// Kept as text so that a bad value gets our message. Any other parameter is refused.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// Only deliveries in this state: `pending`, `delivered` or `parked`.
    #[param(value_type = Option<String>, pattern = "^(pending|delivered|parked)$")]
    state: Option<String>,
}

/// A new secret: `whsec_` and 32 random bytes in unpadded base64url.
fn new_secret() -> Result<String, AppError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AppError::internal(std::io::Error::other(e.to_string())))?;
    Ok(format!("whsec_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// `POST /api/v1/sites/{site}/webhooks`: registers an endpoint for the site's events of the
/// types given. The answer carries the secret that signs its deliveries, this once.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/webhooks",
    tag = "webhooks",
    security(("user_token" = [])),
    params(("site" = SlugId, Path, description = "Site id", example = "site-1")),
    request_body(content = NewWebhookBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The endpoint, with its secret (shown once)", body = CreatedWebhookView),
        (status = 400, description = "`invalid_json`, `invalid_webhook` (a bad URL or event type), `invalid_site_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 409, description = "`too_many_webhooks`: the site has 20 already", body = ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn create_webhook(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedWebhookView>), AppError> {
    let site = site_from_path(path)?;
    user.administers(&site)?;
    let body: NewWebhookBody = json_body(&headers, body)?;
    rules::validate(&body.url, &body.events)
        .map_err(|e| AppError::bad_request("invalid_webhook", e))?;
    let secret = new_secret()?;
    let webhook = state
        .store
        .create_webhook(NewWebhook {
            site,
            url: body.url,
            events: body.events,
            secret: secret.clone(),
            created_at_ms: now_ms(),
            created_by: user.0.name.clone(),
        })
        .await?;
    tracing::info!(
        site = %webhook.site, id = webhook.id, url = %webhook.url, by = %user.0.name,
        "registered a webhook"
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhookView {
            webhook: webhook.into(),
            secret,
        }),
    ))
}

/// `GET /api/v1/sites/{site}/webhooks`: the site's endpoints (without their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/webhooks",
    tag = "webhooks",
    security(("user_token" = [])),
    params(("site" = SlugId, Path, description = "Site id", example = "site-1")),
    responses(
        (status = 200, description = "The site's endpoints, in order of registration", body = WebhooksView),
        (status = 400, description = "`invalid_site_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn list_webhooks(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WebhooksView>, AppError> {
    let site = site_from_path(path)?;
    user.administers(&site)?;
    let webhooks = state.store.webhooks(site.clone()).await?;
    Ok(Json(WebhooksView {
        site_id: site.to_string(),
        webhooks: webhooks.into_iter().map(WebhookView::from).collect(),
    }))
}

/// `DELETE /api/v1/sites/{site}/webhooks/{id}`: removes an endpoint, with its deliveries (those
/// not sent are not sent).
#[utoipa::path(
    delete,
    path = "/api/v1/sites/{site}/webhooks/{id}",
    tag = "webhooks",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("id" = i64, Path, description = "The endpoint's id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`invalid_site_id`, `invalid_webhook_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_webhook`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, AppError> {
    let (site, id) = site_and::<i64>(path, "invalid_webhook_id", "webhook id")?;
    user.administers(&site)?;
    state.store.delete_webhook(site.clone(), id).await?;
    tracing::info!(%site, id, by = %user.0.name, "removed a webhook");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/sites/{site}/webhooks/deliveries`: the site's latest deliveries, each with its
/// attempts; `state=parked` for those given up on.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/webhooks/deliveries",
    tag = "webhooks",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        DeliveryParams,
    ),
    responses(
        (status = 200, description = "The latest deliveries first (at most 500)", body = DeliveriesView),
        (status = 400, description = "A bad or unknown query parameter, or a bad site id (`invalid_query`, `invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn list_deliveries(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DeliveryParams>, QueryRejection>,
) -> Result<Json<DeliveriesView>, AppError> {
    let site = site_from_path(path)?;
    user.administers(&site)?;
    let params = query_params(query)?;
    let wanted = match params.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).map_err(|_| {
            AppError::bad_request(
                "invalid_query",
                format!("state must be pending, delivered or parked, got {s:?}"),
            )
        })?),
    };
    let deliveries = state
        .store
        .webhook_deliveries(site.clone(), wanted, MAX_LISTED_DELIVERIES)
        .await?;
    Ok(Json(DeliveriesView {
        site_id: site.to_string(),
        deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
    }))
}

/// `POST /api/v1/sites/{site}/webhooks/deliveries/{id}/retry`: re-queues a parked delivery, due
/// now, its attempts counted afresh (the earlier ones stay listed).
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/webhooks/deliveries/{id}/retry",
    tag = "webhooks",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("id" = i64, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 200, description = "The delivery, pending again", body = DeliveryView),
        (status = 400, description = "`invalid_site_id`, `invalid_delivery_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_delivery`", body = ErrorBody),
        (status = 409, description = "`delivery_not_parked`: only a parked delivery is re-queued", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn retry_delivery(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<DeliveryView>, AppError> {
    let (site, id) = site_and::<i64>(path, "invalid_delivery_id", "delivery id")?;
    user.administers(&site)?;
    let delivery = state
        .store
        .retry_webhook_delivery(site.clone(), id, now_ms())
        .await?;
    tracing::info!(%site, id, by = %user.0.name, "re-queued a parked webhook delivery");
    Ok(Json(delivery.into()))
}
