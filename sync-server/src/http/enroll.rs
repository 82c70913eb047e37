//! Enrollment: an administrator issues a one-time code for a site
//! (`POST /api/v1/sites/{site}/enrollment-codes`); a phone trades it for its device id and
//! credential (`POST /api/v1/enroll`, where the code is the credential).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use patrol_core::DeviceId;
use patrol_core::event::format_time_ms;
use patrol_core::evidence::PublicKey;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{self, AuthUser};
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_JSON_BODY_BYTES, SlugId, read_json, site_from_path};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::config::MAX_ENROLLMENT_CODE_TTL_SECS;
use crate::credentials::{Secret, TokenHash, TokenKind};
use crate::now_ms;
use crate::store::{DeviceCredential, Enrollment, NewEnrollmentCode};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(Verb::Post, "/api/v1/enroll", enroll, MAX_JSON_BODY_BYTES),
        endpoint(
            Verb::Post,
            "/api/v1/sites/{site}/enrollment-codes",
            create_enrollment_code,
            MAX_JSON_BODY_BYTES,
        ),
    ]
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCodeBody {
    /// Lifetime in seconds, up to 30 days; the server's default when absent.
    #[schema(minimum = 1, maximum = 2592000)]
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
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
    ),
    request_body(content = NewCodeBody, content_type = "application/json", description = "Optional; an empty body takes the server's default lifetime"),
    responses(
        (status = 201, description = "The one-time code, shown once", body = EnrollmentCodeView),
        (status = 400, description = "`invalid_json`, `invalid_site_id`, `invalid_ttl`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
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
    #[schema(pattern = r"^\s*[0-9A-Fa-f]{64}\s*$")]
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
        (status = 400, description = "`invalid_json`, or `invalid_public_key`: not 64 hex digits of an ed25519 key, or a weak key (a point of small order) or a point's non-canonical encoding", body = ErrorBody),
        (status = 401, description = "`invalid_enrollment_code`: not an enrollment code, or unknown", body = ErrorBody),
        (status = 410, description = "`enrollment_code_used` or `enrollment_code_expired`", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn enroll(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<serde_json::Value>, AppError> {
    // The code is the credential: a wrong one counts as a failed authentication.
    let client = state
        .throttle
        .client(request.extensions(), request.headers());
    let (enrolled, device, credential) =
        auth::throttled(&state, client, "enrollment code", redeem(&state, request)).await?;
    tracing::info!(site = %enrolled.site, %device, "enrolled a device");
    Ok(Json(serde_json::json!({
        "site": enrolled.site.as_str(),
        "device_id": device.to_string(),
        "actor_id": device.actor_id().to_hex_string(),
        "credential": credential.expose(),
    })))
}

/// Reads the enrollment request and trades its code for a new device and its credential.
async fn redeem(
    state: &AppState,
    request: Request,
) -> Result<(DeviceCredential, DeviceId, Secret), AppError> {
    let body: EnrollBody = read_json(state, request, None).await?;
    if TokenKind::of(body.code.trim()) != Some(TokenKind::Enrollment) {
        return Err(AppError::Unauthorized {
            code: "invalid_enrollment_code",
            message: format!(
                "the code is not {}; check it, or ask an administrator for a new one",
                TokenKind::Enrollment.describe()
            ),
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
    Ok((enrolled, device, credential))
}
