//! Who is asking. Requests carry `Authorization: Bearer <token>` (token kinds, their hashes and
//! users are [`crate::credentials`]). [`AuthUser`] authenticates a user for the control-room routes
//! ([`AuthSession`] also says which of its tokens); [`authenticate_device`] a device for sync. A
//! missing, malformed, unknown, revoked or expired token is 401; a valid one that does not cover
//! the request is 403. Every check from a request goes through [`throttled`]: an address that
//! fails too often is slowed, then refused with 429.
//!
//! A user's token that a rotation replaced still authenticates until its overlap ends. A device's
//! rotated credential authenticates from its first use, which makes it the current one: the old
//! one stops working then, not before, so a phone that never received its new credential keeps
//! syncing with the old one.

use std::future::Future;
use std::net::IpAddr;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use patrol_core::SiteId;
use patrol_core::incident::MAX_NAME_LEN;

use patrol_core::event::format_time_ms;

use super::error::AppError;
use super::state::AppState;
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

/// A user authenticated by one of its tokens.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    /// The token's hash: what a live stream checks again later.
    pub token: TokenHash,
    /// Whether it is the user's current token or one a rotation replaced.
    pub state: UserTokenState,
    /// When the token stops working.
    pub expires_at_ms: i64,
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

/// The user whose token the request carries: 401 unless it is a known user token that may be
/// used now. Throttled per `client` address.
pub async fn authenticate_user(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Session, AppError> {
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
        authenticate_user(&state, &parts.headers, client)
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
