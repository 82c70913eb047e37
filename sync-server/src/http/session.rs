//! Signing in like a person: `POST /api/v1/session` with a name and password sets the session
//! cookie ([`SESSION_COOKIE`], HttpOnly, SameSite=Strict, Secure over HTTPS) that then
//! authenticates the console's requests as the user's token would, with the same role and site
//! checks ([`super::auth`]); `GET /api/v1/session` says who it is; `DELETE /api/v1/session` signs
//! out. How long a session lasts: [`crate::credentials::sessions`].
//!
//! A wrong name and a wrong password get the same answer, in about the same time (an unknown
//! name is checked against a dummy hash), so that the answer does not tell which names exist; a
//! revoked user, or one without a password, is refused the same way. Failed sign-ins are
//! throttled per client address and per user name ([`super::throttle`]).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use patrol_core::event::format_time_ms;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{
    AuthSession, SESSION_COOKIE, check_cookie_request, session_cookie, sign_in_allowed,
    verify_password, wrong_password,
};
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_JSON_BODY_BYTES, read_json};
use super::state::AppState;
use super::user_view::UserView;
use super::{Endpoint, Verb, endpoint};
use crate::credentials::passwords::MAX_PASSWORD_CHARS;
use crate::credentials::sessions::new_session;
use crate::credentials::{MAX_NAME_LEN, TokenHash, TokenKind, User};
use crate::now_ms;
use crate::store::UserKey;

pub(super) fn routes() -> Vec<Endpoint> {
    use Verb::{Delete, Get, Post};
    let json = MAX_JSON_BODY_BYTES;
    vec![
        endpoint(Post, "/api/v1/session", sign_in, json),
        endpoint(Get, "/api/v1/session", current, json),
        endpoint(Delete, "/api/v1/session", sign_out, json),
    ]
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignInBody {
    #[schema(max_length = 64)]
    name: String,
    #[schema(max_length = 256)]
    password: String,
}

/// The signed-in user (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct SessionView {
    user: UserView,
    /// When the session ends unless used before (RFC 3339): its idle limit, or its lifetime's
    /// end if sooner. Each use moves the idle limit on.
    expires_at: String,
}

/// The one answer to every refused sign-in.
fn refused() -> AppError {
    AppError::Unauthorized {
        code: "invalid_sign_in",
        message: "wrong name or password".into(),
    }
}

/// Signs in with a name and password: the answer sets the session cookie.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "administration",
    request_body(content = SignInBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in; `Set-Cookie: patrol_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…` (and `Secure` over HTTPS)", body = SessionView),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`invalid_sign_in`: wrong name or password (the same for both), or a revoked user or one without a password", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 429, description = "`too_many_failed_attempts`: too many failed sign-ins from this address or as this name (`Retry-After`)", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    let client = state
        .throttle
        .client(request.extensions(), request.headers());
    let body: SignInBody = read_json(&state, request, None).await?;
    sign_in_allowed(&state, client, &body.name)?;
    // A name or password no user can have is refused without a look-up, but after the same
    // hash as any other, so that its time says nothing either.
    let plausible =
        body.name.len() <= MAX_NAME_LEN && body.password.chars().count() <= MAX_PASSWORD_CHARS;
    let found = if plausible {
        state
            .store
            .user_with_password(UserKey::Name(body.name.clone()))
            .await?
    } else {
        None
    };
    let (user, stored) = match found {
        Some((user, stored)) => (Some(user), stored),
        None => (None, None),
    };
    let password = if plausible {
        body.password
    } else {
        String::new()
    };
    let verified = verify_password(&state, stored, password).await?;
    let user = match user {
        Some(user) if verified && user.revoked_at_ms.is_none() => user,
        _ => {
            tokio::time::sleep(wrong_password(&state, client, &body.name)).await;
            return Err(refused());
        }
    };
    let now = now_ms();
    let policy = state.config.sessions;
    let (session, token) = new_session(now, policy).map_err(AppError::internal)?;
    state
        .store
        .create_session(user.id.clone(), session, policy.idle_ms)
        .await?;
    tracing::info!(user = %user.name, ?client, "a user signed in");
    let max_age_secs = policy.ttl_ms / 1000;
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{}",
        token.expose(),
        if state.config.https { "; Secure" } else { "" }
    );
    answer(&user, session.ends_at_ms(policy.idle_ms), Some(cookie))
}

/// The session's user and end, with a `Set-Cookie` if given.
fn answer(user: &User, ends_at_ms: i64, cookie: Option<String>) -> Result<Response, AppError> {
    let body = Json(serde_json::json!({
        "user": UserView::from(user.clone()),
        "expires_at": format_time_ms(ends_at_ms),
    }));
    let mut response = (StatusCode::OK, body).into_response();
    if let Some(cookie) = cookie {
        let value = HeaderValue::from_str(&cookie).map_err(AppError::internal)?;
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

/// Who the session cookie (or bearer token) is, and when the session ends: 401 when it ended.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "administration",
    security(("session_cookie" = []), ("user_token" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = SessionView),
        (status = 401, description = "No session, or it ended: sign in again", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn current(session: AuthSession) -> Result<Response, AppError> {
    answer(&session.0.user, session.0.expires_at_ms, None)
}

/// Signs out: the session ends on the server (its live streams close) and the cookie is
/// cleared. Idempotent: without a session, or with one that ended, it only clears the cookie.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "administration",
    responses(
        (status = 204, description = "Signed out; `Set-Cookie` clears the cookie"),
        (status = 403, description = "A cookie request without `X-Patrol-Request: 1` or from another origin", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn sign_out(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    let (parts, _) = request.into_parts();
    if let Some(cookie) = session_cookie(&parts.headers) {
        check_cookie_request(&parts, state.config.https)?;
        if TokenKind::of(cookie) == Some(TokenKind::Session)
            && state.store.delete_session(TokenHash::of(cookie)).await?
        {
            state.feed.credentials_changed();
            tracing::info!("a user signed out");
        }
    }
    let mut headers = HeaderMap::new();
    let clear = format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if state.config.https { "; Secure" } else { "" }
    );
    headers.insert(
        SET_COOKIE,
        HeaderValue::from_str(&clear).map_err(AppError::internal)?,
    );
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}
