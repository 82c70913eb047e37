//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`. It is generated from the
//! handlers' `#[utoipa::path]` attributes and the schemas they name, so it changes with the code;
//! `tests/integration/openapi.rs` holds it to the route table ([`super::routes`]). This module
//! only lists the resources' handlers; no resource imports it.
//!
//! Two bearer schemes: `device_credential` (`pd_…`, the phone's, for sync) and `user_token`
//! (`pu_…`, an administrator's or operator's, for everything else); every route that takes a
//! user token also takes the console's `session_cookie` (`patrol_session`, from
//! `POST /api/v1/session`). `/healthz`, `/metrics`,
//! `/openapi.json` and `/api/v1/enroll` (whose code is in the body) need neither.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::{AppError, ErrorBody};
use super::extract::MAX_JSON_BODY_BYTES;
use super::{
    Endpoint, Verb, admin, alarms, config, devices, endpoint, enroll, export, feed, health,
};
use super::{attachments, incidents, reports, session, shifts, sync, tours, webhooks};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![endpoint(
        Verb::Get,
        "/openapi.json",
        openapi_json,
        MAX_JSON_BODY_BYTES,
    )]
}

/// Security scheme name of a device credential.
pub const DEVICE_CREDENTIAL: &str = "device_credential";
/// Security scheme name of a user token.
pub const USER_TOKEN: &str = "user_token";
/// Security scheme name of the console's session cookie.
pub const SESSION_COOKIE: &str = "session_cookie";

/// The document. Schemas named by the paths are collected from them.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "patrol-server",
        description = "The patrol sync server: devices sync their shift logs and incidents; the \
                       control room reads the feed and works incidents. Every error answers \
                       `{\"error\": code, \"message\": text}`. A query parameter given \
                       empty (`?kind=`) is as if it were absent."
    ),
    paths(
        health::healthz,
        health::metrics_handler,
        openapi_json,
        sync::sync,
        enroll::enroll,
        admin::list_sites,
        admin::create_site,
        feed::events,
        feed::stream,
        devices::devices,
        shifts::shifts,
        shifts::shift,
        export::export_shift_log,
        tours::site_windows,
        tours::tour_windows,
        devices::revoke_device,
        enroll::create_enrollment_code,
        incidents::list_incidents,
        incidents::get_incident,
        incidents::act_on_incident,
        config::get_config,
        config::put_config,
        alarms::list_alarms,
        alarms::list_check_ins,
        alarms::acknowledge_alarm,
        webhooks::create_webhook,
        webhooks::list_webhooks,
        webhooks::delete_webhook,
        webhooks::list_deliveries,
        webhooks::retry_delivery,
        reports::daily_activity_report,
        attachments::upload_status,
        attachments::put_chunk,
        attachments::list_attachments,
        attachments::get_attachment,
        admin::list_users,
        admin::create_user,
        admin::revoke_user,
        admin::whoami,
        admin::rotate_own_token,
        admin::reissue_token,
        admin::change_own_password,
        admin::set_password,
        session::sign_in,
        session::current,
        session::sign_out,
        devices::this_device,
        devices::rotate_credential,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerSchemes, &OptionalBodies, &EmptyQueryValues, &GuardAnswers),
    tags(
        (name = "operations", description = "Liveness, metrics, this document"),
        (name = "sync", description = "Phones: enrollment and the sync exchange"),
        (name = "feed", description = "The control room's event feed and devices"),
        (name = "control room", description = "Incidents, site configuration, alarms"),
        (name = "administration", description = "Sites, users, enrollment codes, revocation"),
        (name = "webhooks", description = "Webhook endpoints of a site and their deliveries"),
    )
)]
pub struct ApiDoc;

/// Adds the two bearer schemes the routes refer to.
#[derive(Debug)]
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            DEVICE_CREDENTIAL,
            bearer(
                "A device credential (`pd_…`), issued once by `POST /api/v1/enroll`; it names \
                 one device of one site.",
            ),
        );
        components.add_security_scheme(
            USER_TOKEN,
            bearer(
                "A user token (`pu_…`) of an administrator or operator, scoped to sites; from \
                 `patrol-server admin create` or `POST /api/v1/users`.",
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::SESSION_COOKIE,
                "The console's session (`ps_…`), set by `POST /api/v1/session`. Accepted \
                 wherever a user token is, when there is no `Authorization` header; a request \
                 with it other than GET needs `X-Patrol-Request: 1` and no foreign `Origin`.",
            ))),
        );
    }
}

/// The POST operations whose body may be left out (an empty body takes the defaults; see
/// `extract::read_json`). utoipa can only say so by also allowing a `null` body, which the
/// handlers refuse.
const OPTIONAL_BODIES: [&str; 1] = ["/api/v1/sites/{site}/enrollment-codes"];

/// Marks the bodies of [`OPTIONAL_BODIES`] as not required.
#[derive(Debug)]
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for path in OPTIONAL_BODIES {
            let body = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut());
            if let Some(body) = body {
                body.required = Some(Required::False);
            }
        }
    }
}

/// Every query parameter's schema also admits the empty string: the handlers read an empty
/// value as an absent one (as an HTML form sends an unfilled field).
#[derive(Debug)]
struct EmptyQueryValues;

impl Modify for EmptyQueryValues {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let operations = openapi.paths.paths.values_mut().flat_map(|item| {
            [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
        });
        let query_parameters = operations
            .filter_map(|op| op.parameters.as_mut())
            .flatten()
            .filter(|p| p.parameter_in == ParameterIn::Query);
        for parameter in query_parameters {
            if let Some(schema) = parameter.schema.take() {
                let empty = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(0));
                parameter.schema = Some(AnyOfBuilder::new().item(schema).item(empty).into());
            }
        }
    }
}

/// The answers every route may give from the layers in front of its handler, added to each
/// operation once here rather than in every attribute: `401 expired_credential` where a user
/// token is checked, `429 too_many_failed_attempts` where a
/// credential (or an enrollment code) is checked, since the client's address may be locked
/// out (`http::throttle`), and `408 request_timeout` where a body is read, since it may stop
/// arriving (`listener`'s body read timeout).
#[derive(Debug)]
struct GuardAnswers;

const LOCKED_OUT: &str = "`too_many_failed_attempts`: this address presented too many wrong \
                          credentials lately and is refused for a while, before its credential \
                          is looked at; `Retry-After` (seconds) says when it is heard again";
const EXPIRED: &str = "`expired_credential`: a user token past its expiry, or replaced by a \
                       rotation and past its overlap";
const CSRF: &str = "`forbidden`: made with the session cookie without `X-Patrol-Request: 1`, or \
                    from another origin";
const STALLED: &str = "`request_timeout`: the body stopped arriving for the server's body read \
                       timeout; nothing was changed";

impl Modify for GuardAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
            ]
            .into_iter()
            .filter_map(|(m, op)| Some((m, op.as_mut()?)))
            {
                let authenticated =
                    op.security.as_ref().is_some_and(|s| !s.is_empty()) || path == "/api/v1/enroll";
                let user_token = op.security.iter().flatten().any(|requirement| {
                    serde_json::to_value(requirement).is_ok_and(|v| v.get(USER_TOKEN).is_some())
                });
                let by_cookie = op.security.iter().flatten().any(|requirement| {
                    serde_json::to_value(requirement).is_ok_and(|v| v.get(SESSION_COOKIE).is_some())
                });
                if user_token && !by_cookie {
                    // The session cookie goes wherever a user token does (`auth::AuthUser`).
                    op.security
                        .get_or_insert_with(Vec::new)
                        .push(SecurityRequirement::new::<_, _, &str>(SESSION_COOKIE, []));
                }
                let answers = &mut op.responses.responses;
                if user_token && !matches!(method, "get") && !answers.contains_key("403") {
                    answers.insert("403".into(), RefOr::T(error(CSRF)));
                }
                if user_token
                    && let Some(RefOr::T(unauthorized)) = answers.get_mut("401")
                    && !unauthorized.description.contains("expired_credential")
                {
                    unauthorized.description = format!("{}; {EXPIRED}", unauthorized.description);
                }
                if authenticated {
                    match answers.get_mut("429") {
                        Some(RefOr::T(other)) => {
                            other.description = format!("{}; or {LOCKED_OUT}", other.description);
                        }
                        _ => {
                            answers.insert("429".into(), RefOr::T(error(LOCKED_OUT)));
                        }
                    }
                }
                if op.request_body.is_some() {
                    answers
                        .entry("408".into())
                        .or_insert_with(|| RefOr::T(error(STALLED)));
                }
            }
        }
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
        (status = 500, description = "The document could not be written", body = ErrorBody),
    )
)]
pub async fn openapi_json() -> Result<Response, AppError> {
    let json = ApiDoc::openapi().to_json().map_err(AppError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
