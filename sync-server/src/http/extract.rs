//! What handlers share to read a request: JSON bodies (`read_json`, `json_body`), the
//! content-type check, the answer to an unreadable body, and site (and id) path segments. Each
//! turns bad input into the [`AppError`] its handler answers with.
//!
//! It also describes, for the OpenAPI document, the values those checks accept ([`SlugId`],
//! [`EventKind`], [`FlagName`], [`UserName`]): built from the very constants the checks use, so that the
//! document cannot claim more or less than the server accepts.

use std::borrow::Cow;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use patrol_core::flags::EventFlag;
use patrol_core::ids::MAX_SLUG_LEN;
use patrol_core::{EventBody, SiteId};
use serde::de::DeserializeOwned;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

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
    parse_json(&body).map_err(|e| AppError::bad_request("invalid_json", e.to_string()))
}

/// Parses a JSON body, refusing other content types (415) and bodies that do not fit `T` (400,
/// with serde's words: which field, where).
pub(super) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AppError> {
    check_media_type(headers, JSON)?;
    let body = body.map_err(|r| body_error(r, MAX_CONTROL_JSON_BODY_BYTES))?;
    parse_json(&body)
        .map_err(|e| AppError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

/// Decodes a JSON body into `T`, reading numbers by their value as JSON does: `3.0` is the
/// integer 3 (JSON Schema's `integer` admits it), where serde alone would refuse it for an
/// integer field. Only a body that fails as it is, and has such a number, is decoded again by
/// value, so that serde's errors otherwise keep their line and column.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let first = match serde_json::from_slice(body) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(first);
    };
    if !whole_floats_to_integers(&mut value) {
        return Err(first);
    }
    // Its error, if any, is about what is still wrong (without a position).
    serde_json::from_value(value)
}

/// Rewrites every float of `value` that is a whole number, exactly (within ±2^53), as an
/// integer; tells whether there was one.
fn whole_floats_to_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return false };
            if f.fract() != 0.0 || f.abs() > EXACT {
                return false;
            }
            // Exact by the bound above.
            *value = Value::from(f as i64);
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, item| whole_floats_to_integers(item) | found),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |found, item| whole_floats_to_integers(item) | found),
        _ => false,
    }
}

/// The query parameters of a request, or 400 `invalid_query` saying what is wrong with them:
/// a parameter the endpoint does not take (the parameter structs deny unknown fields, so that a
/// misspelt filter, `gaurd=g1`, is refused rather than ignored; serde's message names it and
/// the ones taken), one given twice, or an unreadable query string.
pub(super) fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    let rejection = match query {
        Ok(Query(params)) => return Ok(params),
        Err(rejection) => rejection,
    };
    // The innermost cause is serde's own words, without axum's preamble.
    let mut cause: &(dyn std::error::Error + 'static) = &rejection;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let message = cause
        .to_string()
        .replacen("unknown field", "unknown query parameter", 1)
        .replacen("duplicate field", "query parameter given twice:", 1);
    // Without the `name: ` the parameter's path puts before it: the message names it already.
    let message = ["unknown query parameter", "query parameter given twice"]
        .iter()
        .find_map(|start| message.find(start))
        .map_or(message.as_str(), |at| &message[at..]);
    Err(AppError::bad_request("invalid_query", message.to_owned()))
}

/// A query parameter's value; an empty one (`guard=`) counts as not given.
pub(super) fn query_value(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// A time filter (`from`, `to`) as milliseconds since the epoch, from RFC 3339.
pub(super) fn query_time(name: &str, v: &Option<String>) -> Result<Option<i64>, AppError> {
    query_value(v)
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
}

/// A yes/no filter (`open`): `true` or `false`, `None` when not given.
pub(super) fn query_bool(name: &str, v: &Option<String>) -> Result<Option<bool>, AppError> {
    match query_value(v) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(AppError::bad_request(
            "invalid_query",
            format!("{name} must be true or false, got {other:?}"),
        )),
    }
}

/// A page size: `default` when not given, else 1 to `max`.
pub(super) fn query_limit(v: &Option<String>, default: u32, max: u32) -> Result<u32, AppError> {
    match query_value(v) {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(AppError::bad_request(
                "invalid_query",
                format!("limit must be an integer from 1 to {max}, got {s:?}"),
            )),
        },
    }
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

/// A string schema: `pattern` (anchored at both ends) and length bounds.
fn string_schema(description: String, pattern: String, max_len: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max_len))
        .into()
}

/// Rust's white space (`char::is_whitespace`, Unicode `White_Space`), as a regex class's body.
pub(super) const WHITE_SPACE: &str =
    r"\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// Rust's control characters (`char::is_control`, Unicode `Cc`), as a regex class's body.
pub(super) const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// A text that `str::trim` leaves something of, of at most `max_len` bytes. (JSON Schema
/// counts characters: a text of multi-byte characters can be within `maxLength` and still too
/// long; the server's answer is then 400.)
pub(super) fn not_blank_schema(description: &str, max_len: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(format!("[^{WHITE_SPACE}]")))
        .min_length(Some(1))
        .max_length(Some(max_len))
        .into()
}

/// A site, guard or checkpoint id as the document describes it: the rule of
/// [`patrol_core::SiteId`] and its kin (1 to [`MAX_SLUG_LEN`] ASCII letters, digits, `-`, `_`,
/// `.`, `:`). Documentation only, as are the types below.
#[derive(Debug)]
pub(super) struct SlugId;

impl PartialSchema for SlugId {
    fn schema() -> RefOr<Schema> {
        string_schema(
            format!(
                "A site, guard or checkpoint id: 1 to {MAX_SLUG_LEN} ASCII letters, digits, \
                 '-', '_', '.' or ':'"
            ),
            format!("^[A-Za-z0-9._:-]{{1,{MAX_SLUG_LEN}}}$"),
            MAX_SLUG_LEN,
        )
    }
}

impl ToSchema for SlugId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SlugId")
    }
}

/// A user's name as [`crate::credentials::user_scope`] accepts it. Documentation only.
#[derive(Debug)]
pub(super) struct UserName;

impl PartialSchema for UserName {
    fn schema() -> RefOr<Schema> {
        use crate::credentials::MAX_NAME_LEN;
        string_schema(
            format!("A user name: 1 to {MAX_NAME_LEN} ASCII letters, digits, '-', '_', '.' or '@'"),
            format!("^[A-Za-z0-9._@-]{{1,{MAX_NAME_LEN}}}$"),
            MAX_NAME_LEN,
        )
    }
}

impl ToSchema for UserName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("UserName")
    }
}

/// An event kind as the feed names it: one of [`EventBody::KINDS`]. Documentation only.
#[derive(Debug)]
pub(super) struct EventKind;

impl PartialSchema for EventKind {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An event kind"))
            .enum_values(Some(EventBody::KINDS))
            .into()
    }
}

impl ToSchema for EventKind {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventKind")
    }
}

/// A flag's name as the feed's `flag` filter takes it: one of [`EventFlag::NAMES`].
/// Documentation only.
#[derive(Debug)]
pub(super) struct FlagName;

impl PartialSchema for FlagName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A flag's name"))
            .enum_values(Some(EventFlag::NAMES.iter().copied()))
            .into()
    }
}

impl ToSchema for FlagName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("FlagName")
    }
}

/// The JSON value `true`, as a schema. Documentation only.
#[derive(Debug)]
pub(super) struct JsonTrue;

impl PartialSchema for JsonTrue {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([true]))
            .into()
    }
}

impl ToSchema for JsonTrue {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("True")
    }
}

/// The JSON value `false`, as a schema. Documentation only.
#[derive(Debug)]
pub(super) struct JsonFalse;

impl PartialSchema for JsonFalse {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([false]))
            .into()
    }
}

impl ToSchema for JsonFalse {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("False")
    }
}
