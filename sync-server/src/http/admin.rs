//! Sites and users, for administrators: `GET /api/v1/sites` (the sites the user covers; any
//! user), `POST /api/v1/sites` (an administrator over all sites), and `GET`/`POST
//! /api/v1/users`, `POST /api/v1/users/{id}/revoke`, `POST /api/v1/users/{id}/token` (an
//! administrator, for users within its scope). And a user's own token (any user):
//! `GET /api/v1/users/me` says when it expires, `POST /api/v1/users/me/token` rotates it without
//! downtime.

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use patrol_core::SiteId;
use patrol_core::event::format_time_ms;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::auth::{
    AuthSession, AuthUser, Via, hash_password, sign_in_allowed, verify_password, wrong_password,
};
use super::error::{AppError, ErrorBody};
use super::extract::{
    CONTROL, JsonFalse, JsonTrue, MAX_JSON_BODY_BYTES, SlugId, UserName, WHITE_SPACE, read_json,
};
use super::state::AppState;
use super::user_view::UserView;
use super::{Endpoint, Verb, endpoint};
use crate::credentials::passwords::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, NewPassword};
use crate::credentials::{Role, UserTokenState, new_user, user_rotation, user_scope};
use crate::now_ms;
use crate::store::Site;
use crate::store::UserKey;

pub(super) fn routes() -> Vec<Endpoint> {
    use Verb::{Get, Post, Put};
    let json = MAX_JSON_BODY_BYTES;
    vec![
        endpoint(Get, "/api/v1/sites", list_sites, json),
        endpoint(Post, "/api/v1/sites", create_site, json),
        endpoint(Get, "/api/v1/users", list_users, json),
        endpoint(Post, "/api/v1/users", create_user, json),
        endpoint(Post, "/api/v1/users/{id}/revoke", revoke_user, json),
        endpoint(Get, "/api/v1/users/me", whoami, json),
        endpoint(Post, "/api/v1/users/me/token", rotate_own_token, json),
        endpoint(Post, "/api/v1/users/{id}/token", reissue_token, json),
        endpoint(Put, "/api/v1/users/me/password", change_own_password, json),
        endpoint(Put, "/api/v1/users/{id}/password", set_password, json),
    ]
}

/// A site as `GET /api/v1/sites` and `patrol-server site list --json` show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteView {
    site_id: String,
    name: String,
    created_at: String,
}

impl From<Site> for SiteView {
    fn from(s: Site) -> Self {
        SiteView {
            site_id: s.id.to_string(),
            name: s.name,
            created_at: format_time_ms(s.created_at_ms),
        }
    }
}

/// The sites the user covers (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct SitesList {
    sites: Vec<SiteView>,
}

/// The sites the user covers.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "administration",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The sites the user covers", body = SitesList),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn list_sites(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    let sites: Vec<SiteView> = state
        .store
        .list_sites()
        .await?
        .into_iter()
        .filter(|s| user.0.can_read(&s.id))
        .map(SiteView::from)
        .collect();
    Ok(Json(serde_json::json!({ "sites": sites })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSiteBody {
    #[schema(value_type = SlugId)]
    site_id: String,
    /// The site id when absent.
    #[schema(value_type = Option<SiteName>)]
    name: Option<String>,
}

// A site's name as `Site::new` accepts it. Documentation only.
#[derive(Debug)]
struct SiteName;

impl PartialSchema for SiteName {
    fn schema() -> RefOr<Schema> {
        // Only characters that are not control characters, one of them not white space either
        // (the control characters include the white space of other lines).
        let pattern = format!("^[^{CONTROL}]*[^{CONTROL}{WHITE_SPACE}][^{CONTROL}]*$");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "A site name: 1 to {} bytes, not blank, without control characters",
                Site::MAX_NAME_LEN
            )))
            .pattern(Some(pattern))
            .min_length(Some(1))
            .max_length(Some(Site::MAX_NAME_LEN))
            .into()
    }
}

impl ToSchema for SiteName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SiteName")
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/sites",
    tag = "administration",
    security(("user_token" = [])),
    request_body(content = NewSiteBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new site", body = SiteView),
        (status = 400, description = "`invalid_json`, `invalid_site_id`, `invalid_site_name`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator over all sites", body = ErrorBody),
        (status = 409, description = "`site_exists`", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn create_site(
    user: AuthUser,
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<SiteView>), AppError> {
    user.is_global_admin()?;
    let body: NewSiteBody = read_json(&state, request, None).await?;
    let id = SiteId::new(body.site_id)
        .map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    let site = Site::new(id, body.name, now_ms())
        .map_err(|e| AppError::bad_request("invalid_site_name", e))?;
    let site = state.store.create_site(site).await?;
    tracing::info!(site = %site.id, by = %user.0.name, "created a site");
    Ok((StatusCode::CREATED, Json(site.into())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    name: String,
    role: String,
    #[serde(default)]
    sites: Vec<String>,
    #[serde(default)]
    all_sites: bool,
    #[serde(default)]
    password: Option<String>,
}

/// A new user: an administrator over all sites, or an administrator or operator over a list of
/// sites.
// Documentation only: the handler reads `NewUserBody`, and `user_scope` checks it as this says.
#[derive(Debug, ToSchema)]
#[schema(as = NewUser)]
#[serde(untagged)]
#[allow(dead_code)]
enum NewUserDoc {
    AllSites(NewAllSitesUser),
    Sites(NewSitesUser),
}

/// An administrator over all sites.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct NewAllSitesUser {
    #[schema(value_type = UserName)]
    name: String,
    #[schema(inline)]
    role: AdminRole,
    #[schema(value_type = JsonTrue)]
    all_sites: bool,
    /// Empty, when given.
    #[serde(default)]
    #[schema(max_items = 0, value_type = Vec<SlugId>)]
    sites: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<PasswordDoc>)]
    password: Option<String>,
}

/// An administrator or operator over the sites listed.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct NewSitesUser {
    #[schema(value_type = UserName)]
    name: String,
    #[schema(inline)]
    role: RoleDoc,
    /// At least one site; repeats are dropped.
    #[schema(min_items = 1, value_type = Vec<SlugId>)]
    sites: Vec<String>,
    /// `false`, when given.
    #[serde(default)]
    #[schema(value_type = JsonFalse)]
    all_sites: bool,
    #[serde(default)]
    #[schema(value_type = Option<PasswordDoc>)]
    password: Option<String>,
}

// A password as `NewPassword::new` accepts it. Documentation only.
#[derive(Debug)]
struct PasswordDoc;

impl PartialSchema for PasswordDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "A password to sign in to the console with (`POST /api/v1/session`): \
                 {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, no control \
                 characters. Stored only as its argon2id hash"
            )))
            .pattern(Some(format!("^[^{CONTROL}]*$")))
            .min_length(Some(MIN_PASSWORD_CHARS))
            .max_length(Some(MAX_PASSWORD_CHARS))
            .into()
    }
}

impl ToSchema for PasswordDoc {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Password")
    }
}

/// A user's role.
// Documentation only: `Role` parses it.
#[derive(Debug, ToSchema)]
#[schema(as = Role)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum RoleDoc {
    Admin,
    Operator,
}

/// Only an administrator may cover all sites.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum AdminRole {
    Admin,
}

/// A new user and its token (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct CreatedUserView {
    user: UserView,
    /// The user's token (`pu_…`), shown only here.
    token: String,
}

/// Creates a user within the caller's scope; its token is in the answer, once.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "administration",
    security(("user_token" = [])),
    request_body(content = NewUserDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "The new user and its token, shown once", body = CreatedUserView),
        (status = 400, description = "`invalid_json`, `invalid_role`, `invalid_site_id`, `invalid_user`, `invalid_password`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator, or the scope is beyond the caller's", body = ErrorBody),
        (status = 404, description = "`unknown_site`: a site of `sites` does not exist", body = ErrorBody),
        (status = 409, description = "`user_exists`", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn create_user(
    user: AuthUser,
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    user.is_admin()?;
    let body: NewUserBody = read_json(&state, request, None).await?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| AppError::bad_request("invalid_role", e))?;
    let sites = body
        .sites
        .into_iter()
        .map(SiteId::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    let scope = user_scope(&body.name, role, sites, body.all_sites)
        .map_err(|e| AppError::bad_request("invalid_user", e))?;
    if !user.0.manages(&scope) {
        return Err(AppError::Forbidden(format!(
            "user {} may not create a user over sites it does not administer",
            user.0.name
        )));
    }
    let password = body.password.map(new_password).transpose()?;
    let (mut new, token) = new_user(
        body.name,
        role,
        scope,
        Some(user.0.id.clone()),
        now_ms(),
        state.config.user_token_ttl_ms,
    )
    .map_err(AppError::internal)?;
    if let Some(password) = password {
        new.password = Some(hash_password(&state, password).await?);
    }
    let created = state.store.create_user(new).await?;
    tracing::info!(user = %created.name, role = created.role.as_str(), by = %user.0.name, "created a user");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "user": UserView::from(created),
            "token": token.expose(),
        })),
    ))
}

/// The users the caller manages (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct UsersList {
    users: Vec<UserView>,
}

/// The users the caller manages (all of them, for an administrator over all sites).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "administration",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The users the caller manages", body = UsersList),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn list_users(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    user.is_admin()?;
    let users: Vec<UserView> = state
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| user.0.manages(&u.scope))
        .map(UserView::from)
        .collect();
    Ok(Json(serde_json::json!({ "users": users })))
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/revoke",
    tag = "administration",
    security(("user_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "User id"),
    ),
    responses(
        (status = 200, description = "The revoked user", body = UserView),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator, or the user is beyond the caller's scope", body = ErrorBody),
        (status = 404, description = "`unknown_user`", body = ErrorBody),
        (status = 409, description = "`last_administrator`: the user is the last active administrator over all sites", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn revoke_user(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserView>, AppError> {
    user.is_admin()?;
    let Path(id) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let target = state
        .store
        .users()
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    if !user.0.manages(&target.scope) {
        return Err(AppError::Forbidden(format!(
            "user {} may not revoke a user over sites it does not administer",
            user.0.name
        )));
    }
    let revoked = state
        .store
        .revoke_user(target.id, now_ms())
        .await?
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    // Its open live streams end now rather than at their next periodic check.
    state.feed.credentials_changed();
    tracing::info!(user = %revoked.name, by = %user.0.name, "revoked a user");
    Ok(Json(revoked.into()))
}

/// The caller and the token it presented (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct WhoAmIView {
    user: UserView,
    /// When the presented token stops working (RFC 3339): its expiry, or the end of its overlap
    /// if a rotation replaced it. Rotate it before then.
    token_expires_at: String,
    /// Whether a rotation replaced the presented token (it works only until `token_expires_at`).
    token_superseded: bool,
}

/// The caller, and when the token it presented stops working: what a program checks to rotate
/// its token in time.
#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "administration",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The caller and its token's expiry", body = WhoAmIView),
        (status = 401, description = "Missing, unknown, revoked or expired token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn whoami(session: AuthSession) -> Json<serde_json::Value> {
    let session = session.0;
    Json(serde_json::json!({
        "user": UserView::from(session.user),
        "token_expires_at": format_time_ms(session.expires_at_ms),
        "token_superseded": session.state == UserTokenState::Superseded,
    }))
}

/// A user's new token (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct NewTokenView {
    user: UserView,
    /// The new token (`pu_…`), shown only here.
    token: String,
    /// When the new token expires (RFC 3339).
    expires_at: String,
    /// Until when the token it replaces still works (RFC 3339); absent when it stopped at once.
    previous_token_valid_until: Option<String>,
}

/// Gives the caller a new token with a fresh expiry. The token it presented keeps working for
/// the server's overlap (`--user-token-rotation-overlap-secs`, 10 minutes by default), so that
/// programs using it can switch, then stops; its open live streams end then.
#[utoipa::path(
    post,
    path = "/api/v1/users/me/token",
    tag = "administration",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The new token, shown once, and until when the old one works", body = NewTokenView),
        (status = 401, description = "Missing, unknown, revoked or expired token (`WWW-Authenticate: Bearer`): an expired token cannot rotate itself; an administrator issues a new one", body = ErrorBody),
        (status = 409, description = "`token_superseded`: the presented token was already replaced by a rotation; rotate with the newer one", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn rotate_own_token(
    session: AuthSession,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    let session = session.0;
    if session.state == UserTokenState::Superseded {
        return Err(AppError::Conflict {
            code: "token_superseded",
            message: "this token was already replaced by a rotation; rotate with the token it \
                      gave"
                .into(),
        });
    }
    let (rotation, token) = user_rotation(
        &session.user,
        now_ms(),
        state.config.user_token_ttl_ms,
        Some(state.config.user_token_rotation_overlap_ms),
    )
    .map_err(AppError::internal)?;
    let user = state
        .store
        .rotate_user_token(session.user.id.clone(), rotation)
        .await?
        .ok_or_else(|| AppError::UnknownUser(session.user.id.clone()))?;
    state.feed.credentials_changed();
    tracing::info!(user = %user.name, "a user rotated its token");
    Ok(Json(serde_json::json!({
        "user": UserView::from(user),
        "token": token.expose(),
        "expires_at": format_time_ms(rotation.expires_at_ms),
        "previous_token_valid_until": rotation.previous_valid_until_ms.map(format_time_ms),
    })))
}

/// Gives a user within the caller's scope a new token, for one who lost theirs or let it expire:
/// the old token stops working at once (and its open live streams end).
#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/token",
    tag = "administration",
    security(("user_token" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "User id"),
    ),
    responses(
        (status = 200, description = "The user's new token, shown once", body = NewTokenView),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator, or the user is beyond the caller's scope", body = ErrorBody),
        (status = 404, description = "`unknown_user`", body = ErrorBody),
        (status = 409, description = "`user_revoked`: a revoked user stays revoked; create a new user", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn reissue_token(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    user.is_admin()?;
    let Path(id) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let target = state
        .store
        .users()
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    may_manage(&user.0, &target, "issue tokens to")?;
    let (rotation, token) = user_rotation(&target, now_ms(), state.config.user_token_ttl_ms, None)
        .map_err(AppError::internal)?;
    let reissued = state
        .store
        .rotate_user_token(target.id.clone(), rotation)
        .await?
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    state.feed.credentials_changed();
    tracing::info!(user = %reissued.name, by = %user.0.name, "issued a user a new token");
    Ok(Json(serde_json::json!({
        "user": UserView::from(reissued),
        "token": token.expose(),
        "expires_at": format_time_ms(rotation.expires_at_ms),
        "previous_token_valid_until": null,
    })))
}

/// A new password from a request: 400 `invalid_password` unless long enough.
fn new_password(password: String) -> Result<NewPassword, AppError> {
    NewPassword::new(password).map_err(|e| AppError::bad_request("invalid_password", e.to_string()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OwnPasswordBody {
    /// The user's password now; ignored (may be empty) when the user has none yet, which only
    /// a bearer token can then ask.
    #[schema(max_length = 256)]
    current: String,
    #[schema(value_type = PasswordDoc)]
    new: String,
}

/// Changes the caller's own password (it must give its current one), and ends the caller's
/// other sign-in sessions; the one it asks from, if any, stays. A wrong current password counts
/// as a failed sign-in (`429` after too many).
#[utoipa::path(
    put,
    path = "/api/v1/users/me/password",
    tag = "administration",
    security(("user_token" = []), ("session_cookie" = [])),
    request_body(content = OwnPasswordBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed; the caller's other sessions ended"),
        (status = 400, description = "`invalid_json`, `invalid_password`", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired credential", body = ErrorBody),
        (status = 403, description = "`wrong_password`: the current password is not this; or a cookie request without `X-Patrol-Request: 1` or from another origin", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 429, description = "`too_many_failed_attempts`: too many wrong passwords", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn change_own_password(
    session: AuthSession,
    State(state): State<AppState>,
    request: Request,
) -> Result<StatusCode, AppError> {
    let session = session.0;
    let client = state
        .throttle
        .client(request.extensions(), request.headers());
    let body: OwnPasswordBody = read_json(&state, request, None).await?;
    if body.current.chars().count() > MAX_PASSWORD_CHARS {
        return Err(AppError::bad_request(
            "invalid_password",
            format!(
                "the current password has more than {MAX_PASSWORD_CHARS} characters, which no password has"
            ),
        ));
    }
    let new = new_password(body.new)?;
    sign_in_allowed(&state, client, &session.user.name)?;
    let (_, stored) = state
        .store
        .user_with_password(UserKey::Id(session.user.id.clone()))
        .await?
        .ok_or_else(|| AppError::UnknownUser(session.user.id.clone()))?;
    if let Some(stored) = stored
        && !verify_password(&state, Some(stored), body.current).await?
    {
        tokio::time::sleep(wrong_password(&state, client, &session.user.name)).await;
        return Err(AppError::ForbiddenCode {
            code: "wrong_password",
            message: "the current password is not this one; nothing was changed".into(),
        });
    }
    let hash = hash_password(&state, new).await?;
    let keep = (session.via == Via::Cookie).then_some(session.token);
    state
        .store
        .set_user_password(session.user.id.clone(), hash, keep)
        .await?
        .ok_or_else(|| AppError::UnknownUser(session.user.id.clone()))?;
    // Its other sessions' open live streams end now.
    state.feed.credentials_changed();
    tracing::info!(user = %session.user.name, "a user changed its password");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetPasswordBody {
    #[schema(value_type = PasswordDoc)]
    new: String,
}

/// Sets the password of a user within the caller's scope (one who forgot theirs, or a new
/// user), and ends all of that user's sign-in sessions.
#[utoipa::path(
    put,
    path = "/api/v1/users/{id}/password",
    tag = "administration",
    security(("user_token" = []), ("session_cookie" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "User id"),
    ),
    request_body(content = SetPasswordBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Set; the user's sessions ended"),
        (status = 400, description = "`invalid_path`, `invalid_json`, `invalid_password`", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired credential", body = ErrorBody),
        (status = 403, description = "Not an administrator, or the user is beyond the caller's scope", body = ErrorBody),
        (status = 404, description = "`unknown_user`", body = ErrorBody),
        (status = 409, description = "`user_revoked`: a revoked user stays revoked; create a new user", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn set_password(
    user: AuthSession,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<StatusCode, AppError> {
    let caller = user.user();
    caller.is_admin()?;
    let Path(id) = path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let body: SetPasswordBody = read_json(&state, request, None).await?;
    let new = new_password(body.new)?;
    let (target, _) = state
        .store
        .user_with_password(UserKey::Id(id.clone()))
        .await?
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    may_manage(&caller.0, &target, "set the password of")?;
    let hash = hash_password(&state, new).await?;
    // An administrator setting its own password this way keeps the session it asks from.
    let keep = (user.0.via == Via::Cookie && target.id == caller.0.id).then_some(user.0.token);
    state
        .store
        .set_user_password(target.id.clone(), hash, keep)
        .await?
        .ok_or_else(|| AppError::UnknownUser(id.clone()))?;
    state.feed.credentials_changed();
    tracing::info!(user = %target.name, by = %caller.0.name, "set a user's password");
    Ok(StatusCode::NO_CONTENT)
}

/// Whether `caller` may `act_on` ("issue tokens to", "set the password of") `target`: 403
/// unless it administers every site of the target's, 409 when the target is revoked.
fn may_manage(
    caller: &crate::credentials::User,
    target: &crate::credentials::User,
    act_on: &str,
) -> Result<(), AppError> {
    if !caller.manages(&target.scope) {
        return Err(AppError::Forbidden(format!(
            "user {} may not {act_on} a user over sites it does not administer",
            caller.name
        )));
    }
    if target.revoked_at_ms.is_some() {
        return Err(AppError::Conflict {
            code: "user_revoked",
            message: format!(
                "user {} is revoked, and stays so; create a new user instead",
                target.name
            ),
        });
    }
    Ok(())
}
