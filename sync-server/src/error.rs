//! The one error type of the HTTP API. Every error answers with a JSON body
//! `{"error": "<snake_case_code>", "message": "<clear words>"}`: a 4xx says what was wrong with
//! the request; a 5xx says only that the server failed, and the details go to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patrol_core::DecodeError;
use serde::Serialize;
use thiserror::Error;

use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum AppError {
    #[error("expected Content-Type {expected}, got {got}")]
    UnsupportedMediaType { expected: &'static str, got: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    UnreadableBody(String),
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
    /// The request is well-formed but the current state refuses it (a stale version, an
    /// incident action its status rules forbid).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Any other bad input: a query parameter, a path segment.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The server's own failure; never shown to the client.
    #[error("internal error: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
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

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnreadableBody(_)
            | AppError::MalformedRequest(_)
            | AppError::UnsupportedVersion(_)
            | AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::UnknownSite(_)
            | AppError::UnknownIncident(_)
            | AppError::UnknownAlarm(_)
            | AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::SiteExists(_) | AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            AppError::Conflict { code, .. } | AppError::BadRequest { code, .. } => code,
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed { .. } => "method_not_allowed",
            AppError::Internal(_) => "internal_error",
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
            StoreError::SiteExists(site) => AppError::SiteExists(site.to_string()),
            e @ StoreError::UnknownIncident { .. } => AppError::UnknownIncident(e.to_string()),
            e @ StoreError::UnknownAlarm { .. } => AppError::UnknownAlarm(e.to_string()),
            e @ StoreError::StaleConfig { .. } => AppError::Conflict {
                code: "stale_config",
                message: e.to_string(),
            },
            StoreError::ActionRefused(message) => AppError::Conflict {
                code: "action_not_allowed",
                message,
            },
            StoreError::InvalidAction(message) => AppError::bad_request("invalid_action", message),
            other => AppError::internal(other),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
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
        };
        (
            status,
            Json(ErrorBody {
                error: self.code(),
                message,
            }),
        )
            .into_response()
    }
}
