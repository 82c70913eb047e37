//! What handlers share to read a request: JSON bodies (`read_json`, `json_body`), the
//! content-type check, the answer to an unreadable body, and site (and id) path segments. Each
//! turns bad input into the [`AppError`] its handler answers with.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use patrol_core::SiteId;
use serde::de::DeserializeOwned;

use super::error::AppError;
use super::state::AppState;

/// Largest JSON request body (users, sites, enrollment): these are a few hundred bytes.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;
/// Largest JSON body of a control-room call (a site configuration is the largest).
pub const MAX_CONTROL_JSON_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The media type of every JSON body.
pub(super) const JSON: &str = "application/json";

/// Accepts the media type `expected`, with or without parameters, in any letter case.
pub(super) fn check_media_type(
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

pub(super) fn body_error(rejection: BytesRejection, limit: usize) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge { limit }
    } else if stalled(&rejection) {
        AppError::BodyTimeout
    } else {
        AppError::UnreadableBody(rejection.body_text())
    }
}

/// Whether the body stopped arriving for the body read timeout (see `crate::listener`).
fn stalled(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Reads a JSON body of at most [`MAX_JSON_BODY_BYTES`]. An empty body is `empty` when given
/// (the request's fields are all optional); otherwise it must be `application/json` that
/// decodes into `T`.
pub(super) async fn read_json<T: DeserializeOwned>(
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

/// Parses a JSON body, refusing other content types (415) and bodies that do not fit `T` (400,
/// with serde's words: which field, where).
pub(super) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AppError> {
    check_media_type(headers, JSON)?;
    let body = body.map_err(|r| body_error(r, MAX_CONTROL_JSON_BODY_BYTES))?;
    serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

pub(super) fn site_from_path(
    path: Result<Path<String>, PathRejection>,
) -> Result<SiteId, AppError> {
    let Path(raw) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    SiteId::new(raw).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))
}

pub(super) fn site_and<T: FromStr>(
    path: Result<Path<(String, String)>, PathRejection>,
    code: &'static str,
    what: &str,
) -> Result<(SiteId, T), AppError>
where
    T::Err: std::fmt::Display,
{
    let Path((site, id)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    let id = id
        .parse::<T>()
        .map_err(|e| AppError::bad_request(code, format!("bad {what} {id:?}: {e}")))?;
    Ok((site, id))
}
