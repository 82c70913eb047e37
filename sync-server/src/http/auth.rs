//! Who is asking. Requests carry `Authorization: Bearer <token>` (token kinds, their hashes and
//! users are [`crate::credentials`]). [`AuthUser`] authenticates a user for the control-room routes;
//! [`authenticate_device`] a device for sync. A missing, malformed, unknown or revoked token is
//! 401; a valid one that does not cover the request is 403. Every check goes through
//! [`throttled`]: an address that fails too often is slowed, then refused with 429.

use std::future::Future;
use std::net::IpAddr;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use patrol_core::SiteId;
use patrol_core::incident::MAX_NAME_LEN;

use super::error::AppError;
use super::state::AppState;
use crate::credentials::{TokenHash, TokenKind, User};
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

/// The user whose token the request carries: 401 unless it is a known, unrevoked user token.
/// Throttled per `client` address.
pub async fn authenticate_user(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<User, AppError> {
    throttled(state, client, "user token", check_user(state, headers)).await
}

async fn check_user(state: &AppState, headers: &HeaderMap) -> Result<User, AppError> {
    let hash = presented(headers, TokenKind::User)?;
    match state.store.user_by_token(hash).await? {
        Some((user, stored)) if stored.matches(&hash) => match user.revoked_at_ms {
            None => Ok(user),
            Some(_) => Err(unauthorized(
                "revoked_credential",
                "this user token has been revoked",
            )),
        },
        _ => Err(unauthorized(
            "invalid_credential",
            "this user token is not known to the server",
        )),
    }
}

/// The device whose credential the request carries: 401 unless it is a known device
/// credential, not revoked. Throttled per `client` address.
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
    match state.store.device_by_credential(hash).await? {
        Some((device, stored)) if stored.matches(&hash) => match device.revoked_at_ms {
            None => Ok(device),
            Some(_) => Err(unauthorized(
                "revoked_credential",
                "this device's credential has been revoked; enroll the phone again",
            )),
        },
        _ => Err(unauthorized(
            "invalid_credential",
            "this device credential is not known to the server; enroll the phone",
        )),
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
        let state = AppState::from_ref(state);
        let client = state.throttle.client(&parts.extensions, &parts.headers);
        authenticate_user(&state, &parts.headers, client)
            .await
            .map(AuthUser)
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
