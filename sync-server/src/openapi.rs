//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`. It is generated from the
//! handlers' `#[utoipa::path]` attributes and the schemas they name, so it changes with the code;
//! `tests/openapi.rs` holds it to the route table ([`crate::api::routes`]).
//!
//! Two bearer schemes: `device_credential` (`pd_…`, the phone's, for sync) and `user_token`
//! (`pu_…`, an administrator's or operator's, for everything else). `/healthz`, `/metrics`,
//! `/openapi.json` and `/api/v1/enroll` (whose code is in the body) need neither.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::api;
use crate::control;
use crate::error::AppError;
use crate::metrics;

/// Security scheme name of a device credential.
pub const DEVICE_CREDENTIAL: &str = "device_credential";
/// Security scheme name of a user token.
pub const USER_TOKEN: &str = "user_token";

/// The document. Schemas named by the paths are collected from them.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "patrol-server",
        description = "The patrol sync server: devices sync their shift logs and incidents; the \
                       control room reads the feed and works incidents. Every error answers \
                       `{\"error\": code, \"message\": text}`."
    ),
    paths(
        api::healthz,
        metrics::metrics_handler,
        openapi_json,
        api::sync,
        api::enroll,
        api::list_sites,
        api::create_site,
        api::events,
        api::stream,
        api::devices,
        api::export_shift_log,
        api::revoke_device,
        api::create_enrollment_code,
        control::list_incidents,
        control::get_incident,
        control::act_on_incident,
        control::get_config,
        control::put_config,
        control::acknowledge_alarm,
        api::list_users,
        api::create_user,
        api::revoke_user,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerSchemes),
    tags(
        (name = "operations", description = "Liveness, metrics, this document"),
        (name = "sync", description = "Phones: enrollment and the sync exchange"),
        (name = "feed", description = "The control room's event feed and devices"),
        (name = "control room", description = "Incidents, site configuration, alarms"),
        (name = "administration", description = "Sites, users, enrollment codes, revocation"),
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
    }
}

/// The error body of every 4xx and 5xx answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documentation only: `crate::error` writes the body.
pub struct ErrorBody {
    /// A stable snake_case code, e.g. `unknown_site`, `forbidden`, `invalid_query`.
    error: String,
    /// What was wrong, in words (for a 5xx, only that the server failed).
    message: String,
    /// For `replayed_request` only: the last request seq accepted from the device.
    last_seq: Option<u64>,
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
