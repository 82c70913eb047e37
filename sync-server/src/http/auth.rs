//! Who is asking. Requests carry `Authorization: Bearer <token>` (token kinds, their hashes and
//! users are [`crate::credentials`]), or, from a browser signed in with a password, the session
//! cookie [`SESSION_COOKIE`] ([`crate::credentials::sessions`]). [`AuthUser`] authenticates a
//! user for the control-room routes by either ([`AuthSession`] also says which credential);
//! [`authenticate_device`] a device for sync. A missing, malformed, unknown, revoked or expired
//! credential is 401; a valid one that does not cover the request is 403. Every check from a
//! request goes through [`throttled`]: an address that fails too often is slowed, then refused
//! with 429.
//!
//! The cookie is looked at only when there is no `Authorization` header, and a request it
//! authenticates that could change something (any method but GET and HEAD) must show it comes
//! from the console itself ([`check_cookie_request`]): an `X-Patrol-Request: 1` header, which
//! no cross-site form can send, and no `Origin` but the server's own. Beside the cookie's
//! `SameSite=Strict`, that is two locks against cross-site request forgery.
//!
//! A user's token that a rotation replaced still authenticates until its overlap ends. A device's
//! rotated credential authenticates from its first use, which makes it the current one: the old
//! one stops working then, not before, so a phone that never received its new credential keeps
//! syncing with the old one.

use std::future::Future;
use std::net::IpAddr;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use patrol_core::SiteId;
use patrol_core::incident::MAX_NAME_LEN;

use patrol_core::event::format_time_ms;

use super::error::AppError;
use super::state::AppState;
use crate::credentials::passwords::{self, NewPassword, PasswordHashString};
use crate::credentials::sessions::{SessionRefusal, check_session};
use crate::credentials::{
    DeviceCredentialState, TokenHash, TokenKind, TokenRefusal, User, UserToken, UserTokenState,
    check_user_token,
};
use crate::now_ms;
use crate::store::DeviceCredential;

/// The bearer token of a request, if it has an `Authorization` header. A header that is not a
/// bearer token is refused rather than ignored.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        unauthorized(
            "invalid_credential",
            "the Authorization header is not valid text",
        )
    })?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(|| {
        unauthorized(
            "invalid_credential",
            "the Authorization header must be `Bearer <token>`",
        )
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized(
            "invalid_credential",
            format!("the Authorization scheme must be Bearer, not {scheme:?}"),
        ));
    }
    Ok(Some(token.trim()))
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> AppError {
    AppError::Unauthorized {
        code,
        message: message.into(),
    }
}

/// The request's token, of the `expected` kind.
fn presented(headers: &HeaderMap, expected: TokenKind) -> Result<TokenHash, AppError> {
    let Some(token) = bearer(headers)? else {
        return Err(unauthorized(
            "missing_credential",
            format!(
                "this endpoint needs `Authorization: Bearer <token>` with {}",
                expected.describe()
            ),
        ));
    };
    match TokenKind::of(token) {
        Some(kind) if kind == expected => Ok(TokenHash::of(token)),
        Some(kind) => Err(unauthorized(
            "wrong_credential_kind",
            format!(
                "this endpoint needs {}, not {}",
                expected.describe(),
                kind.describe()
            ),
        )),
        None => Err(unauthorized(
            "invalid_credential",
            format!("the bearer token is not {}", expected.describe()),
        )),
    }
}

/// The name of the session cookie a browser holds after signing in.
pub const SESSION_COOKIE: &str = "patrol_session";

/// The header the console sends with every request it makes with the cookie.
pub const REQUEST_HEADER: &str = "x-patrol-request";

/// What authenticated a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A bearer token (`pu_…`).
    Token,
    /// The session cookie of a person signed in with a password (`ps_…`).
    Cookie,
}

/// A user authenticated by one of its tokens or by a sign-in session.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    /// The token's or session's hash: what a live stream checks again later.
    pub token: TokenHash,
    /// Whether it is the user's current token or one a rotation replaced (a session: current).
    pub state: UserTokenState,
    /// When the token stops working (a session: when it ends unless used again).
    pub expires_at_ms: i64,
    pub via: Via,
}

/// `session` checked again now, by the credential it was authenticated with (a live stream
/// does this over time).
pub async fn session_again(state: &AppState, session: &Session) -> Result<Session, AppError> {
    match session.via {
        Via::Token => user_session(state, session.token).await,
        Via::Cookie => cookie_session(state, session.token).await,
    }
}

/// The value of the session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// The sign-in session whose token hashes to `hash`, if it may be used now (its use is
/// recorded, at most once a minute): 401 unless it is a known session, of a user not revoked,
/// within its lifetime and idle limit.
pub async fn cookie_session(state: &AppState, hash: TokenHash) -> Result<Session, AppError> {
    let (user, mut stored) = state
        .store
        .session_by_token(hash)
        .await?
        .filter(|(_, s)| s.hash.matches(&hash))
        .ok_or_else(|| {
            unauthorized(
                "invalid_credential",
                "this session is not known to the server (it ended, or its user signed out or \
                 changed password): sign in again",
            )
        })?;
    let now = now_ms();
    let idle_ms = state.config.sessions.idle_ms;
    check_session(&user, &stored, now, idle_ms).map_err(|refusal| match refusal {
        SessionRefusal::Revoked => {
            unauthorized("revoked_credential", "this session's user has been revoked")
        }
        SessionRefusal::Expired { at_ms } => unauthorized(
            "expired_credential",
            format!(
                "this session ended at {}: sign in again",
                format_time_ms(at_ms)
            ),
        ),
    })?;
    if stored.touch_due(now) {
        state.store.touch_session(hash, now).await?;
        stored.last_used_at_ms = now;
    }
    Ok(Session {
        user,
        token: hash,
        state: UserTokenState::Current,
        expires_at_ms: stored.ends_at_ms(idle_ms),
        via: Via::Cookie,
    })
}

/// Refuses (403) a cookie-authenticated request that could change something unless it shows
/// it comes from the console: `X-Patrol-Request: 1`, and an `Origin`, if any, that is this
/// server (scheme, host and port, as the request's `Host` names it).
pub fn check_cookie_request(parts: &Parts, https: bool) -> Result<(), AppError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = &parts.headers;
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
        let same = origin
            .to_str()
            .ok()
            .zip(host.as_deref())
            .is_some_and(|(origin, host)| same_origin(origin, host, https));
        if !same {
            return Err(AppError::Forbidden(format!(
                "a request from another origin ({}) may not use the session cookie",
                origin.to_str().unwrap_or("not text")
            )));
        }
    }
    if headers.get(REQUEST_HEADER).map(|v| v.as_bytes()) != Some(b"1") {
        return Err(AppError::Forbidden(
            "a request made with the session cookie that changes something needs the header \
             `X-Patrol-Request: 1` (the console sends it; a program uses a bearer token instead)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) is this server, reached at `host` (`host[:port]`)
/// over https or http; default ports count as given.
fn same_origin(origin: &str, host: &str, https: bool) -> bool {
    let (scheme, default_port) = if https {
        ("https://", ":443")
    } else {
        ("http://", ":80")
    };
    let Some(authority) = origin.strip_prefix(scheme) else {
        return false;
    };
    let normal = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    normal(authority) == normal(host)
}

/// Counts and logs a wrong password given for user `name` from `client` (per address and per
/// name, [`super::throttle`]); returns how long to hold the answer back.
pub fn wrong_password(state: &AppState, client: Option<IpAddr>, name: &str) -> std::time::Duration {
    state.metrics.auth_failed();
    state.metrics.sign_in_failed();
    let by_address = state.throttle.failed(client, "password", "wrong_password");
    by_address.max(state.throttle.failed_name(name))
}

/// 429 if sign-ins from `client` or as `name` are locked out now.
pub fn sign_in_allowed(
    state: &AppState,
    client: Option<IpAddr>,
    name: &str,
) -> Result<(), AppError> {
    state
        .throttle
        .check(client)
        .and_then(|()| state.throttle.check_name(name))
        .inspect_err(|_| state.metrics.auth_refused())
}

/// The hash of a new password, computed off the async threads, a few at a time.
pub async fn hash_password(
    state: &AppState,
    password: NewPassword,
) -> Result<PasswordHashString, AppError> {
    let _permit = state.hashing.acquire().await.map_err(AppError::internal)?;
    tokio::task::spawn_blocking(move || password.hash())
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)
}

/// Whether `presented` is the password whose hash is `stored` (`None`: no password, checked
/// against a dummy hash for the same time), computed off the async threads, a few at a time.
pub async fn verify_password(
    state: &AppState,
    stored: Option<PasswordHashString>,
    presented: String,
) -> Result<bool, AppError> {
    let _permit = state.hashing.acquire().await.map_err(AppError::internal)?;
    tokio::task::spawn_blocking(move || {
        passwords::verify(stored.as_ref().map(|s| s.0.as_str()), &presented)
    })
    .await
    .map_err(AppError::internal)
}

/// The user whose token hashes to `hash`, if the token may be used now: 401 unless it is a known
/// user token, not revoked, not expired (nor past its overlap, if a rotation replaced it).
pub async fn user_session(state: &AppState, hash: TokenHash) -> Result<Session, AppError> {
    let unknown = || {
        unauthorized(
            "invalid_credential",
            "this user token is not known to the server",
        )
    };
    let (user, stored) = state.store.user_by_token(hash).await?.ok_or_else(unknown)?;
    let (token_state, until) = stored.identify(&hash).ok_or_else(unknown)?;
    let token = UserToken {
        expires_at_ms: until.unwrap_or(user.token_expires_at_ms),
        state: token_state,
        user,
    };
    check_user_token(&token, now_ms()).map_err(refused_user_token)?;
    Ok(Session {
        token: hash,
        state: token.state,
        expires_at_ms: token.expires_at_ms,
        user: token.user,
        via: Via::Token,
    })
}

/// The 401 for a known user token that may not be used.
pub fn refused_user_token(refusal: TokenRefusal) -> AppError {
    match refusal {
        TokenRefusal::Revoked { .. } => {
            unauthorized("revoked_credential", "this user token has been revoked")
        }
        TokenRefusal::Expired { at_ms } => unauthorized(
            "expired_credential",
            format!(
                "this user token expired at {}; ask an administrator for a new one \
                 (`patrol-server user rotate <name>`, or `POST /api/v1/users/{{id}}/token`), and \
                 rotate it before it expires next time (`patrol control token rotate`)",
                format_time_ms(at_ms)
            ),
        ),
        TokenRefusal::Superseded { at_ms } => unauthorized(
            "expired_credential",
            format!(
                "this user token was replaced by a rotation and stopped working at {}; use the \
                 token the rotation gave",
                format_time_ms(at_ms)
            ),
        ),
    }
}

/// Runs `check`, an authentication of `client` with a `credential`, unless that address is
/// locked out (429); a refusal is counted, logged and held back ([`super::throttle`]). A
/// request that presents nothing is not an attempt: it is neither counted nor logged above
/// debug.
pub async fn throttled<T>(
    state: &AppState,
    client: Option<IpAddr>,
    credential: &'static str,
    check: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    if let Err(refused) = state.throttle.check(client) {
        state.metrics.auth_refused();
        return Err(refused);
    }
    let result = check.await;
    if let Err(e @ (AppError::Unauthorized { .. } | AppError::Gone { .. })) = &result {
        if e.code() == "missing_credential" {
            tracing::debug!(?client, "request without a credential");
        } else {
            state.metrics.auth_failed();
            let delay = state.throttle.failed(client, credential, e.code());
            tokio::time::sleep(delay).await;
        }
    }
    result
}

/// The user whose token the request carries (or, without an `Authorization` header, whose
/// session cookie it carries, for a request [`check_cookie_request`] lets through): 401 unless
/// it is a known user token or session that may be used now. Throttled per `client` address.
pub async fn authenticate_user(
    state: &AppState,
    parts: &Parts,
    client: Option<IpAddr>,
) -> Result<Session, AppError> {
    let headers = &parts.headers;
    if !headers.contains_key(AUTHORIZATION)
        && let Some(cookie) = session_cookie(headers)
    {
        check_cookie_request(parts, state.config.https)?;
        // A locked-out address is refused, but a refused cookie is not counted as a failure:
        // every browser holds one once its session ended (the console's open tabs keep asking
        // until they show the sign-in page), which must not lock a control room's address out,
        // and 256 random bits are not guessed.
        if let Err(refused) = state.throttle.check(client) {
            state.metrics.auth_refused();
            return Err(refused);
        }
        let result = match TokenKind::of(cookie) {
            Some(TokenKind::Session) => cookie_session(state, TokenHash::of(cookie)).await,
            _ => Err(unauthorized(
                "invalid_credential",
                "the session cookie is not a session of this server: sign in again",
            )),
        };
        if let Err(e) = &result {
            tracing::debug!(?client, code = e.code(), "a session cookie was refused");
        }
        return result;
    }
    throttled(state, client, "user token", async {
        let hash = presented(headers, TokenKind::User)?;
        user_session(state, hash).await
    })
    .await
}

/// The device whose credential the request carries: 401 unless it is a known device
/// credential, not revoked. A rotated credential used for the first time becomes the device's
/// current one here. Throttled per `client` address.
pub async fn authenticate_device(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<DeviceCredential, AppError> {
    throttled(
        state,
        client,
        "device credential",
        check_device(state, headers),
    )
    .await
}

async fn check_device(state: &AppState, headers: &HeaderMap) -> Result<DeviceCredential, AppError> {
    let hash = presented(headers, TokenKind::Device)?;
    let unknown = || {
        unauthorized(
            "invalid_credential",
            "this device credential is not known to the server; enroll the phone",
        )
    };
    let (device, stored) = state
        .store
        .device_by_credential(hash)
        .await?
        .ok_or_else(unknown)?;
    let which = stored.identify(&hash).ok_or_else(unknown)?;
    if device.revoked_at_ms.is_some() {
        return Err(unauthorized(
            "revoked_credential",
            "this device's credential has been revoked; enroll the phone again",
        ));
    }
    match which {
        DeviceCredentialState::Current => Ok(device),
        DeviceCredentialState::Next => {
            let promoted = state
                .store
                .promote_device_credential(device.site.clone(), device.device, hash)
                .await?;
            if let Some(promoted) = promoted {
                tracing::info!(
                    site = %promoted.site, device = %promoted.device,
                    "a device switched to its rotated credential; the old one no longer works"
                );
                return Ok(promoted);
            }
            // Since it was read, either a request made with the same credential promoted it
            // (it is the current one now) or another rotation replaced it (unknown now).
            match state.store.device_by_credential(hash).await? {
                Some((device, stored))
                    if stored.identify(&hash) == Some(DeviceCredentialState::Current)
                        && device.revoked_at_ms.is_none() =>
                {
                    Ok(device)
                }
                _ => Err(unknown()),
            }
        }
    }
}

/// An authenticated user, as a handler argument. Put it first, so that a request without a
/// valid token is refused before anything else about it is looked at.
#[derive(Clone, Debug)]
pub struct AuthUser(pub User);

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AuthSession(session) = AuthSession::from_request_parts(parts, state).await?;
        Ok(AuthUser(session.user))
    }
}

/// An authenticated device, as a handler argument (for the device's own routes besides sync,
/// which authenticates after its admission).
#[derive(Clone, Debug)]
pub struct AuthDevice(pub DeviceCredential);

impl<S> FromRequestParts<S> for AuthDevice
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let client = state.throttle.client(&parts.extensions, &parts.headers);
        authenticate_device(&state, &parts.headers, client)
            .await
            .map(AuthDevice)
    }
}

/// An authenticated user with the token it presented, as a handler argument, for the handlers
/// that need the token (a live stream checks it again; a rotation replaces it).
#[derive(Clone, Debug)]
pub struct AuthSession(pub Session);

impl<S> FromRequestParts<S> for AuthSession
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let client = state.throttle.client(&parts.extensions, &parts.headers);
        authenticate_user(&state, parts, client)
            .await
            .map(AuthSession)
    }
}

impl AuthSession {
    /// The user, for the checks [`AuthUser`] makes.
    pub fn user(&self) -> AuthUser {
        AuthUser(self.0.user.clone())
    }
}

impl AuthUser {
    /// 403 unless the user may read `site`.
    pub fn can_read(&self, site: &SiteId) -> Result<(), AppError> {
        if self.0.can_read(site) {
            return Ok(());
        }
        Err(AppError::Forbidden(format!(
            "user {} may not read site {site}",
            self.0.name
        )))
    }

    /// 403 unless the user administers `site`.
    pub fn administers(&self, site: &SiteId) -> Result<(), AppError> {
        if self.0.administers(site) {
            return Ok(());
        }
        Err(AppError::Forbidden(format!(
            "user {} is not an administrator of site {site}",
            self.0.name
        )))
    }

    /// 403 unless the user is an administrator (of some scope).
    pub fn is_admin(&self) -> Result<(), AppError> {
        if self.0.is_admin() {
            return Ok(());
        }
        Err(AppError::Forbidden(format!(
            "user {} is not an administrator",
            self.0.name
        )))
    }

    /// 403 unless the user is an administrator over all sites.
    pub fn is_global_admin(&self) -> Result<(), AppError> {
        if self.0.is_global_admin() {
            return Ok(());
        }
        Err(AppError::Forbidden(format!(
            "user {} is not an administrator over all sites",
            self.0.name
        )))
    }
}

/// The operator acting on a request: the authenticated user, by name. A body may still name
/// them (`by`, as before authentication), but only as themselves.
pub(super) fn acting_operator(user: &AuthUser, by: Option<String>) -> Result<String, AppError> {
    let name = &user.0.name;
    if name.len() > MAX_NAME_LEN {
        return Err(AppError::bad_request(
            "invalid_operator",
            format!("user names over {MAX_NAME_LEN} bytes cannot act on incidents"),
        ));
    }
    match by {
        Some(by) if &by != name => Err(AppError::Forbidden(format!(
            "user {name} may not act as {by:?}"
        ))),
        _ => Ok(name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_header_must_be_a_bearer_token() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Ok(None)));
        for (value, ok) in [
            ("Bearer pd_x", true),
            ("bearer  pd_x ", true),
            ("Basic dXNlcjpwYXNz", false),
            ("Bearer", false),
        ] {
            h.insert(AUTHORIZATION, axum::http::HeaderValue::from_static(value));
            assert_eq!(bearer(&h).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_guarded_against_other_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            axum::http::HeaderValue::from_static("theme=dark; patrol_session=ps_abc ; x=y"),
        );
        assert_eq!(session_cookie(&h), Some("ps_abc"));
        assert!(same_origin(
            "http://127.0.0.1:8080",
            "127.0.0.1:8080",
            false
        ));
        assert!(same_origin(
            "https://Console.example",
            "console.example:443",
            true
        ));
        assert!(!same_origin(
            "http://console.example",
            "console.example",
            true
        ));
        assert!(!same_origin(
            "http://evil.example:8080",
            "127.0.0.1:8080",
            false
        ));
        assert!(!same_origin("null", "127.0.0.1:8080", false));

        let request = |method: &str, origin: Option<&'static str>, marked: bool| {
            let mut b = axum::http::Request::builder()
                .method(method)
                .uri("/api/v1/x")
                .header(HOST, "127.0.0.1:8080");
            if let Some(o) = origin {
                b = b.header(ORIGIN, o);
            }
            if marked {
                b = b.header(REQUEST_HEADER, "1");
            }
            b.body(()).map(|r| r.into_parts().0)
        };
        for (method, origin, marked, ok) in [
            ("GET", Some("http://evil.example"), false, true),
            ("POST", None, true, true),
            ("POST", Some("http://127.0.0.1:8080"), true, true),
            ("POST", Some("http://evil.example"), true, false),
            ("POST", Some("http://127.0.0.1:8080"), false, false),
            ("DELETE", None, false, false),
        ] {
            let Ok(parts) = request(method, origin, marked) else {
                panic!("request");
            };
            assert_eq!(
                check_cookie_request(&parts, false).is_ok(),
                ok,
                "{method} {origin:?} {marked}"
            );
        }
    }

    #[test]
    fn the_operator_acting_is_the_authenticated_user() {
        let user = AuthUser(crate::credentials::User {
            id: "u".into(),
            name: "anna".into(),
            role: crate::credentials::Role::Operator,
            scope: crate::credentials::Scope::AllSites,
            created_at_ms: 0,
            created_by: None,
            revoked_at_ms: None,
            token_expires_at_ms: i64::MAX,
        });
        for by in [None, Some("anna".to_owned())] {
            assert_eq!(acting_operator(&user, by).ok().as_deref(), Some("anna"));
        }
        assert!(matches!(
            acting_operator(&user, Some("bob".into())),
            Err(AppError::Forbidden(_))
        ));
    }
}
