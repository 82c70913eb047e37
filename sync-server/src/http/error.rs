//! The one error type of the HTTP API. Every error answers with a JSON body
//! `{"error": "<snake_case_code>", "message": "<clear words>"}` (a `replayed_request` also
//! gives `last_seq`; a 401 also has `WWW-Authenticate: Bearer`): a 4xx says what was wrong with
//! the request; a 5xx says only that the server failed, and the details go to the log.
//! [`ErrorBody`] documents that body in the OpenAPI document.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patrol_core::DecodeError;
use patrol_core::event::format_time_ms;
use serde::Serialize;
use thiserror::Error;
use utoipa::ToSchema;

use crate::store::{EnrollRefusal, StoreError, SyncRefusal};

#[derive(Debug, Error)]
pub enum AppError {
    #[error("expected Content-Type {expected}, got {got}")]
    UnsupportedMediaType { expected: &'static str, got: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A body within the request limits whose content the server's limits refuse (an
    /// attachment over its size, a device's uploads over their quota); the limit is in words.
    #[error("{message}")]
    PayloadTooLargeCode { code: &'static str, message: String },
    /// Well-formed, but its content is wrong (an upload that does not hash to its address).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// An attachment referenced but whose bytes have not reached the server.
    #[error("{0}")]
    NotUploaded(String),
    #[error("could not read the request body: {0}")]
    UnreadableBody(String),
    /// The body stopped arriving for the body read timeout; nothing was changed.
    #[error(
        "the request body stopped arriving before it was whole; nothing was changed: send it again"
    )]
    BodyTimeout,
    #[error("malformed sync request: {0}")]
    MalformedRequest(String),
    #[error("unsupported sync protocol: {0}")]
    UnsupportedVersion(String),
    #[error("unknown site {0:?}: create it first with `patrol-server site create {0}`")]
    UnknownSite(String),
    #[error("site {0} already exists")]
    SiteExists(String),
    #[error("{0}")]
    UnknownIncident(String),
    #[error("{0}")]
    UnknownAlarm(String),
    /// No such webhook endpoint (`unknown_webhook`) or delivery (`unknown_delivery`).
    #[error("{message}")]
    UnknownWebhook { code: &'static str, message: String },
    /// The request is well-formed but the current state refuses it (a stale version, an
    /// incident action its status rules forbid).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A missing, malformed, unknown or revoked credential.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// A valid credential that does not cover the request.
    #[error("{0}")]
    Forbidden(String),
    /// Refused for a reason a client tells apart from a role or site check (`wrong_password`).
    #[error("{message}")]
    ForbiddenCode { code: &'static str, message: String },
    #[error(
        "this request's request_seq is not greater than {last_seq}, the last one accepted from \
         this device: a replayed or stale request; prepare a new one"
    )]
    Replayed { last_seq: u64 },
    #[error("a user named {0:?} already exists")]
    UserExists(String),
    #[error("no user with id {0:?}")]
    UnknownUser(String),
    #[error("no enrolled device {device} on site {site}")]
    UnknownDevice { site: String, device: String },
    #[error("site {site} has no shift {shift}: no log of it has reached the server")]
    UnknownShift { site: String, shift: String },
    #[error("site {site} has no tour {tour:?} in its configuration")]
    UnknownTour { site: String, tour: String },
    /// An enrollment code that exists but can no longer be used.
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// Any other bad input: a query parameter, a path segment.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// A sync request refused admission (see `http::admission::SyncAdmission`): its body was not read and
    /// nothing changed; the client sends it again after `retry_after_secs`.
    #[error(
        "the server is busy with other syncs ({reason}); nothing was read or changed: send the \
         sync again in {retry_after_secs} s"
    )]
    ServerBusy {
        reason: &'static str,
        retry_after_secs: u64,
    },
    /// Every attachment upload slot is taken (see `http::attachments`): the chunk was not read;
    /// the phone sends it again later. Never queued, so that uploads never hold up syncs.
    #[error(
        "the server is busy with other uploads; nothing was read or changed: send the chunk \
         again in {retry_after_secs} s"
    )]
    UploadsBusy { retry_after_secs: u64 },
    /// The client's address failed to authenticate too often (see `http::throttle`): refused
    /// before its credential was looked at.
    #[error(
        "too many failed authentications from this address; nothing was checked or changed: \
         try again in {retry_after_secs} s"
    )]
    TooManyFailedAttempts { retry_after_secs: u64 },
    /// A user asked for one more live stream than it may have open at once.
    #[error(
        "this user already has {max} live streams open, the most this server allows; close one \
         (another screen or program may hold it) and try again"
    )]
    TooManyStreams { max: usize },
    /// The server's own failure; never shown to the client.
    #[error("internal error: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

/// The body every error answers with ([`ErrorBody`] documents it).
#[derive(Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    message: String,
    /// For `replayed_request`: the last request seq the server accepted from the device, so
    /// that a phone whose counter fell behind (a store restored from a backup) can move past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
}

/// The error body of every 4xx and 5xx answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documentation only: `ErrorJson` is what is written.
pub struct ErrorBody {
    /// A stable snake_case code, e.g. `unknown_site`, `forbidden`, `invalid_query`.
    error: String,
    /// What was wrong, in words (for a 5xx, only that the server failed).
    message: String,
    /// For `replayed_request` only: the last request seq accepted from the device.
    last_seq: Option<u64>,
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        AppError::Internal(e.into())
    }

    /// The `message` the client is shown. An internal error's details go to the log instead.
    pub fn client_message(&self) -> String {
        match self {
            AppError::Internal(e) => {
                let mut chain = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::error!(error = %chain, "request failed with an internal error");
                "the server failed to handle the request; it has been logged, please retry later"
                    .to_string()
            }
            other => other.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PayloadTooLarge { .. } | AppError::PayloadTooLargeCode { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AppError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::UnreadableBody(_)
            | AppError::MalformedRequest(_)
            | AppError::UnsupportedVersion(_)
            | AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::UnknownSite(_)
            | AppError::UnknownIncident(_)
            | AppError::UnknownAlarm(_)
            | AppError::UnknownWebhook { .. }
            | AppError::UnknownUser(_)
            | AppError::UnknownDevice { .. }
            | AppError::UnknownShift { .. }
            | AppError::UnknownTour { .. }
            | AppError::NotUploaded(_)
            | AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::SiteExists(_)
            | AppError::Conflict { .. }
            | AppError::UserExists(_)
            | AppError::Replayed { .. } => StatusCode::CONFLICT,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::ForbiddenCode { .. } => StatusCode::FORBIDDEN,
            AppError::Gone { .. } => StatusCode::GONE,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::ServerBusy { .. } | AppError::UploadsBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyFailedAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The stable, machine-readable code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::UnsupportedMediaType { .. } => "unsupported_media_type",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::UnreadableBody(_) => "unreadable_body",
            AppError::MalformedRequest(_) => "malformed_request",
            AppError::UnsupportedVersion(_) => "unsupported_version",
            AppError::UnknownSite(_) => "unknown_site",
            AppError::SiteExists(_) => "site_exists",
            AppError::UnknownIncident(_) => "unknown_incident",
            AppError::UnknownAlarm(_) => "unknown_alarm",
            AppError::NotUploaded(_) => "not_uploaded",
            AppError::Conflict { code, .. }
            | AppError::PayloadTooLargeCode { code, .. }
            | AppError::Unprocessable { code, .. }
            | AppError::BadRequest { code, .. }
            | AppError::Unauthorized { code, .. }
            | AppError::ForbiddenCode { code, .. }
            | AppError::UnknownWebhook { code, .. }
            | AppError::Gone { code, .. } => code,
            AppError::Forbidden(_) => "forbidden",
            AppError::Replayed { .. } => "replayed_request",
            AppError::UserExists(_) => "user_exists",
            AppError::UnknownUser(_) => "unknown_user",
            AppError::UnknownDevice { .. } => "unknown_device",
            AppError::UnknownShift { .. } => "unknown_shift",
            AppError::UnknownTour { .. } => "unknown_tour",
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed { .. } => "method_not_allowed",
            AppError::Internal(_) => "internal_error",
            AppError::ServerBusy { .. } | AppError::UploadsBusy { .. } => "server_busy",
            AppError::BodyTimeout => "request_timeout",
            AppError::TooManyFailedAttempts { .. } => "too_many_failed_attempts",
            AppError::TooManyStreams { .. } => "too_many_streams",
        }
    }
}

impl From<DecodeError> for AppError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::UnknownVersion(v) => AppError::UnsupportedVersion(format!(
                "protocol version {v} is not supported; this server speaks version {}",
                patrol_core::protocol::PROTOCOL_VERSION
            )),
            DecodeError::Malformed(detail) => AppError::MalformedRequest(detail),
            other => AppError::MalformedRequest(other.to_string()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownSite(site) => AppError::UnknownSite(site.to_string()),
            StoreError::UnknownTour { site, tour } => AppError::UnknownTour {
                site: site.to_string(),
                tour,
            },
            StoreError::SiteExists(site) => AppError::SiteExists(site.to_string()),
            e @ StoreError::UnknownIncident { .. } => AppError::UnknownIncident(e.to_string()),
            e @ StoreError::UnknownAlarm { .. } => AppError::UnknownAlarm(e.to_string()),
            e @ StoreError::UnknownWebhook { .. } => AppError::UnknownWebhook {
                code: "unknown_webhook",
                message: e.to_string(),
            },
            e @ StoreError::UnknownDelivery { .. } => AppError::UnknownWebhook {
                code: "unknown_delivery",
                message: e.to_string(),
            },
            e @ StoreError::DeliveryNotParked { .. } => AppError::Conflict {
                code: "delivery_not_parked",
                message: e.to_string(),
            },
            e @ StoreError::TooManyWebhooks(_) => AppError::Conflict {
                code: "too_many_webhooks",
                message: e.to_string(),
            },
            e @ StoreError::StaleConfig { .. } => AppError::Conflict {
                code: "stale_config",
                message: e.to_string(),
            },
            StoreError::ActionRefused(message) => AppError::Conflict {
                code: "action_not_allowed",
                message,
            },
            StoreError::InvalidAction(message) => AppError::bad_request("invalid_action", message),
            StoreError::UserExists(name) => AppError::UserExists(name),
            e @ StoreError::LastAdministrator(_) => AppError::Conflict {
                code: "last_administrator",
                message: e.to_string(),
            },
            StoreError::SyncRefused(SyncRefusal::Replayed { last_seq }) => {
                AppError::Replayed { last_seq }
            }
            StoreError::SyncRefused(SyncRefusal::Revoked) => AppError::Unauthorized {
                code: "revoked_credential",
                message: "this device's credential has been revoked; enroll the phone again".into(),
            },
            StoreError::SyncRefused(SyncRefusal::NotEnrolled) => AppError::Unauthorized {
                code: "invalid_credential",
                message: "this device is not enrolled on the site; enroll the phone".into(),
            },
            StoreError::Enrollment(EnrollRefusal::Unknown) => AppError::Unauthorized {
                code: "invalid_enrollment_code",
                message: "this enrollment code is not known to the server; check it, or ask an \
                          administrator for a new one"
                    .into(),
            },
            StoreError::Enrollment(EnrollRefusal::Used { used_at_ms }) => AppError::Gone {
                code: "enrollment_code_used",
                message: format!(
                    "this enrollment code was already used (at {}); ask an administrator for a \
                     new one",
                    format_time_ms(used_at_ms)
                ),
            },
            StoreError::Enrollment(EnrollRefusal::Expired { expired_at_ms }) => AppError::Gone {
                code: "enrollment_code_expired",
                message: format!(
                    "this enrollment code expired at {}; ask an administrator for a new one",
                    format_time_ms(expired_at_ms)
                ),
            },
            other => AppError::internal(other),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let last_seq = match &self {
            AppError::Replayed { last_seq } => Some(*last_seq),
            _ => None,
        };
        let message = self.client_message();
        let mut response = (
            status,
            Json(ErrorJson {
                error: self.code(),
                message,
                last_seq,
            }),
        )
            .into_response();
        if let AppError::ServerBusy {
            retry_after_secs, ..
        }
        | AppError::UploadsBusy { retry_after_secs }
        | AppError::TooManyFailedAttempts { retry_after_secs } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"patrol\""),
            );
        }
        response
    }
}
