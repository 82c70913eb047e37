//! The site configuration, for the control room: `GET /api/v1/sites/{site}/config` (a user
//! covering the site) and `PUT` (an administrator of the site), versioned. Shapes are
//! documented in `docs/protocol.md`.

use std::borrow::Cow;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use patrol_core::event::MAX_TAG_LEN;
use patrol_core::event::format_time_ms;
use patrol_core::siteconfig::{Checkpoint, PostOrder, SiteConfig, SiteRules, SiteZone, Tour};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{
    MAX_CONTROL_JSON_BODY_BYTES, SlugId, json_body, not_blank_schema, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::StoredConfig;

pub(super) fn routes() -> Vec<Endpoint> {
    let json = MAX_CONTROL_JSON_BODY_BYTES;
    vec![
        endpoint(Verb::Get, "/api/v1/sites/{site}/config", get_config, json),
        endpoint(Verb::Put, "/api/v1/sites/{site}/config", put_config, json),
    ]
}

/// A site configuration as the API serves it: [`SiteConfig`]'s fields and when the version was
/// stored (`null` for the empty version 0).
#[derive(Debug, Serialize)]
pub struct ConfigView {
    #[serde(flatten)]
    config: SiteConfig,
    created_at: Option<String>,
}

impl From<StoredConfig> for ConfigView {
    fn from(stored: StoredConfig) -> Self {
        ConfigView {
            config: stored.config,
            created_at: stored.created_at_ms.map(format_time_ms),
        }
    }
}

/// A site configuration as served, with when its version was stored; the element shapes are in
/// docs/protocol.md. (Documentation only: `ConfigView` flattens the core's `SiteConfig`.)
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ConfigDoc {
    site: String,
    /// 0 (empty) until the first write.
    version: u64,
    /// The site's IANA time zone, in which tours' schedules are written (`UTC` unless set).
    #[schema(example = "Europe/London")]
    time_zone: String,
    #[schema(value_type = Vec<CheckpointDoc>)]
    checkpoints: Vec<serde_json::Value>,
    #[schema(value_type = Vec<TourDoc>)]
    tours: Vec<serde_json::Value>,
    #[schema(value_type = Vec<PostOrderDoc>)]
    post_orders: Vec<serde_json::Value>,
    #[schema(value_type = SiteRulesDoc)]
    rules: serde_json::Value,
    /// When this version was stored (RFC 3339); `null` for version 0.
    created_at: Option<String>,
}

/// A checkpoint. Its id is unique in the configuration and not `unknown` (kept for scans of
/// unknown tags), and each tag is on one checkpoint only.
// Documentation only: the core's `Checkpoint`; `SiteConfig::validate` checks what a JSON Schema
// cannot say.
#[derive(Debug, ToSchema)]
#[schema(as = Checkpoint)]
#[allow(dead_code)]
pub struct CheckpointDoc {
    #[schema(value_type = SlugId)]
    id: String,
    /// At most 4096 bytes.
    #[schema(max_length = 4096)]
    name: String,
    /// NFC tag ids and QR payloads that prove the checkpoint: each 1 to 512 bytes, not blank.
    #[schema(value_type = Vec<TagDoc>)]
    tags: Vec<String>,
    #[schema(value_type = Option<LocationDoc>)]
    location: Option<()>,
    /// Metres around `location` within which a GPS fix proves the checkpoint.
    #[schema(minimum = 0, maximum = 3.4028235e38)]
    radius_m: Option<f32>,
    /// The ways of proving the checkpoint that count without a second look; empty or absent:
    /// any. A scan made another way is flagged `method_not_accepted`.
    #[schema(value_type = Option<Vec<MethodDoc>>)]
    methods: Option<Vec<String>>,
}

/// A way of proving a checkpoint.
#[derive(Debug, ToSchema)]
#[schema(as = Method)]
#[allow(dead_code)]
pub enum MethodDoc {
    #[schema(rename = "nfc")]
    Nfc,
    #[schema(rename = "qr")]
    Qr,
    #[schema(rename = "gps")]
    Gps,
    #[schema(rename = "manual")]
    Manual,
}

/// A site's thresholds for flags, gaps and compliance (docs/compliance.md); each may be left
/// out for its default.
// Documentation only: the core's `SiteRules`, whose `validate` holds these ranges.
#[derive(Debug, ToSchema)]
#[schema(as = SiteRules)]
#[allow(dead_code)]
pub struct SiteRulesDoc {
    /// A device whose clock is off by more than this is flagged on its events. Default 120.
    #[schema(minimum = 1, maximum = 86400)]
    clock_skew_threshold_secs: Option<u32>,
    /// The same checkpoint scanned again by the same guard within this is padding. Default 10.
    #[schema(minimum = 1, maximum = 1440)]
    padding_within_min: Option<u32>,
    /// Faster than this between a guard's consecutive checkpoints is an impossible speed.
    /// Default 25.
    #[schema(minimum = 1, maximum = 1000)]
    max_speed_kmh: Option<u32>,
    /// One tag scanned by two devices within this of each other is a cloned tag. Default 60.
    #[schema(minimum = 1, maximum = 3600)]
    cloned_tag_within_secs: Option<u32>,
    /// A device on shift with no contact for longer than this is silent. Default 30.
    #[schema(minimum = 1, maximum = 10080)]
    no_contact_after_min: Option<u32>,
    /// A shift still open this long after it started is overdue. Default 12.
    #[schema(minimum = 1, maximum = 168)]
    shift_overdue_after_hours: Option<u32>,
    /// A tour window turns final this long after its end. Default 6.
    #[schema(minimum = 1, maximum = 168)]
    finalise_after_hours: Option<u32>,
    /// A panic alarm not acknowledged this long after the server received it is escalated.
    /// Default 120.
    #[schema(minimum = 10, maximum = 3600)]
    alarm_escalation_after_secs: Option<u32>,
}

// An NFC tag id or QR payload. Documentation only.
#[derive(Debug)]
pub struct TagDoc;

impl PartialSchema for TagDoc {
    fn schema() -> RefOr<Schema> {
        not_blank_schema(
            &format!("An NFC tag id or QR payload: 1 to {MAX_TAG_LEN} bytes, not blank"),
            MAX_TAG_LEN,
        )
    }
}

impl ToSchema for TagDoc {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Tag")
    }
}

/// A position in degrees.
// Documentation only: the core's `Location`.
#[derive(Debug, ToSchema)]
#[schema(as = Location)]
#[allow(dead_code)]
pub struct LocationDoc {
    #[schema(minimum = -90, maximum = 90)]
    lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    lon: f64,
    /// The fix's accuracy in metres.
    #[schema(minimum = 0, maximum = 3.4028235e38)]
    accuracy_m: Option<f32>,
}

/// A tour. Its id is unique in the configuration.
// Documentation only: the core's `Tour`.
#[derive(Debug, ToSchema)]
#[schema(as = Tour)]
#[allow(dead_code)]
pub struct TourDoc {
    #[schema(value_type = SlugId)]
    id: String,
    name: String,
    /// The tour's checkpoints in walking order: ids of this configuration's checkpoints.
    #[schema(min_items = 1, value_type = Vec<SlugId>)]
    checkpoints: Vec<String>,
    /// One-off windows at absolute times; each ends after it starts. Default none.
    windows: Option<Vec<WindowDoc>>,
    /// Rules for windows that repeat, in the site's time zone. Default none.
    schedule: Option<Vec<ScheduleRuleDoc>>,
    /// Minutes after a window's end during which a scan still counts, as late.
    #[schema(format = "uint32", maximum = 4294967295usize)]
    grace_min: u32,
    /// The checkpoints must be scanned in the order listed. Default false.
    ordered: Option<bool>,
    /// The guards who walk this tour; empty or absent: any guard on duty.
    #[schema(value_type = Option<Vec<SlugId>>)]
    assigned_guards: Option<Vec<String>>,
}

/// One rule of a tour's schedule, in the site's local time (docs/protocol.md, "Site
/// configuration"): `every_min` with `from` and `to` (a window every so many minutes of elapsed
/// time, none starting at or after `to`, which is on the next day when not later than `from`),
/// or `at` (a window at each time, written in the order the night runs); `days` are the
/// weekdays the nights start on (default every day); `window_min` is each window's length
/// (default `every_min`; needed with `at`).
// Documentation only: the core's `ScheduleRule`.
#[derive(Debug, ToSchema)]
#[schema(as = ScheduleRule)]
#[allow(dead_code)]
pub struct ScheduleRuleDoc {
    #[schema(format = "uint32", minimum = 5, maximum = 1440)]
    every_min: Option<u32>,
    /// `HH:MM`, 00:00 to 23:59.
    #[schema(example = "22:00")]
    from: Option<String>,
    /// `HH:MM`, 00:00 to 23:59.
    #[schema(example = "06:00")]
    to: Option<String>,
    /// `HH:MM` times, in the order the night runs.
    #[schema(max_items = 288)]
    at: Option<Vec<String>>,
    /// `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`.
    #[schema(min_items = 1)]
    days: Option<Vec<String>>,
    #[schema(format = "uint32", minimum = 1, maximum = 1440)]
    window_min: Option<u32>,
}

/// A time window, in milliseconds since the epoch (UTC).
// Documentation only: the core's `Window`.
#[derive(Debug, ToSchema)]
#[schema(as = Window)]
#[allow(dead_code)]
pub struct WindowDoc {
    start_ms: i64,
    end_ms: i64,
}

/// A post order.
// Documentation only: the core's `PostOrder`.
#[derive(Debug, ToSchema)]
#[schema(as = PostOrder)]
#[allow(dead_code)]
pub struct PostOrderDoc {
    id: String,
    title: String,
    /// At most 65536 bytes.
    #[schema(max_length = 65536)]
    text: String,
}

/// `GET /api/v1/sites/{site}/config`: the latest configuration (version 0, empty, if none).
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/config",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
    ),
    responses(
        (status = 200, description = "The configuration in force", body = ConfigDoc),
        (status = 400, description = "`invalid_site_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn get_config(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ConfigView>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    Ok(Json(state.store.site_config(site).await?.into()))
}

/// The body of a configuration write: the whole new configuration and the version it was made
/// from (0 for the first).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// The site's IANA time zone (`Europe/London`), in which tours' schedules are written;
    /// UTC if not given.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "Europe/London")]
    time_zone: SiteZone,
    /// Unique ids, and tags unique across checkpoints.
    #[schema(value_type = Vec<CheckpointDoc>)]
    checkpoints: Vec<Checkpoint>,
    /// Unique ids; each names only checkpoints of this configuration.
    #[schema(value_type = Vec<TourDoc>)]
    tours: Vec<Tour>,
    #[schema(value_type = Vec<PostOrderDoc>)]
    post_orders: Vec<PostOrder>,
    /// The site's thresholds; any left out (or all) take their defaults.
    #[serde(default)]
    #[schema(value_type = Option<SiteRulesDoc>)]
    rules: SiteRules,
    /// The version this one was made from; the new one is `base_version + 1`.
    #[schema(format = "uint64", maximum = 18446744073709551615usize)]
    base_version: u64,
}

/// `PUT /api/v1/sites/{site}/config`: stores the configuration as version `base_version + 1`;
/// 409 `stale_config` if `base_version` is not the latest (another write came first), 400
/// `invalid_config` if it is not coherent.
#[utoipa::path(
    put,
    path = "/api/v1/sites/{site}/config",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
    ),
    request_body(content = ConfigBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The stored configuration", body = ConfigDoc),
        (status = 400, description = "`invalid_json`, `invalid_config`, `invalid_site_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 409, description = "`stale_config`: `base_version` is not the latest", body = ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn put_config(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ConfigView>, AppError> {
    let site = site_from_path(path)?;
    user.administers(&site)?;
    let body: ConfigBody = json_body(&headers, body)?;
    let config = SiteConfig {
        site,
        version: body.base_version.saturating_add(1),
        time_zone: body.time_zone,
        checkpoints: body.checkpoints,
        tours: body.tours,
        post_orders: body.post_orders,
        rules: body.rules,
    };
    config
        .validate()
        .map_err(|e| AppError::bad_request("invalid_config", e.to_string()))?;
    let stored = state
        .store
        .put_site_config(config, body.base_version, now_ms())
        .await?;
    Ok(Json(stored.into()))
}
