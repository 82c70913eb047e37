//! A site's shifts: `GET /api/v1/sites/{site}/shifts` (filtered, paged in shift-id order) and
//! `GET /api/v1/sites/{site}/shifts/{shift}`; a user covering the site. What a supervisor needs
//! to find a shift's log and export it (`GET .../shift-logs/{shift}/export`) without digging its
//! id out of the feed: guard, device, start, end, events received, whether the end was
//! delivered and the log signed. Each shift is read from its log's own row, kept up to date as
//! the log arrives (by each backend's `write_doc`, in the sync), never from its events.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use patrol_core::event::format_time_ms;
use patrol_core::{DeviceId, GuardId, ShiftId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{
    MAX_JSON_BODY_BYTES, SlugId, query_bool, query_limit, query_params, query_time, query_value,
    site_and, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::store::{ShiftQuery, ShiftSummary};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/shifts",
            shifts,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/shifts/{shift}",
            shift,
            MAX_JSON_BODY_BYTES,
        ),
    ]
}

/// Shifts per page when `limit` is not given.
pub const DEFAULT_SHIFT_LIMIT: u32 = 100;
/// Largest page of shifts.
pub const MAX_SHIFT_LIMIT: u32 = 1_000;

/// A shift, as the listing shows it.
#[derive(Debug, Serialize, ToSchema)]
struct ShiftView {
    /// The shift id (UUID): the log's id, the `shift_id` of its events.
    #[schema(format = Uuid)]
    shift_id: String,
    #[schema(value_type = SlugId, inline)]
    guard: String,
    #[schema(format = Uuid)]
    device_id: String,
    /// The device's time of its `shift_started` event; null until that event arrives.
    started_at: Option<String>,
    /// The device's time of its `shift_ended` event; null while the shift is open, or until its
    /// end is delivered.
    ended_at: Option<String>,
    /// Whether the shift's end (its `shift_ended` event) has reached the server.
    end_delivered: bool,
    /// The log's events in the site's feed.
    events: u64,
    /// When the last of them was received (server time); null before the first.
    last_event_at: Option<String>,
    /// When the log was last written (server time).
    updated_at: String,
    /// Whether a signature of the device covers the log as stored: its export verifies as
    /// signed to its last event.
    signed: bool,
    /// Signatures kept for the log (one per signed push that moved it).
    signatures: u64,
    /// The device's clock at its latest signature; null without one.
    last_signed_at: Option<String>,
}

impl From<ShiftSummary> for ShiftView {
    fn from(s: ShiftSummary) -> Self {
        ShiftView {
            shift_id: s.shift.to_string(),
            guard: s.guard.to_string(),
            device_id: s.device.to_string(),
            started_at: s.started_at_ms.map(format_time_ms),
            ended_at: s.ended_at_ms.map(format_time_ms),
            end_delivered: s.ended_at_ms.is_some(),
            events: s.events,
            last_event_at: s.last_event_at_ms.map(format_time_ms),
            updated_at: format_time_ms(s.updated_at_ms),
            signed: s.signed,
            signatures: s.signatures,
            last_signed_at: s.last_signed_at_ms.map(format_time_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct ShiftsPage {
    site_id: String,
    /// The shifts, in shift-id order (UUIDv7: the order their phones started them).
    shifts: Vec<ShiftView>,
    /// The cursor for the next page: the last shift's id, or `after`; null when neither.
    #[schema(format = Uuid)]
    next: Option<String>,
    /// Whether more shifts follow.
    more: bool,
}

/// Kept as text so that a bad value gets our message; the documented types are what the values
/// must parse as. Any other parameter is refused ([`query_params`]).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ShiftParams {
    /// Shifts after this shift id (the previous page's `next`).
    #[param(format = Uuid)]
    after: Option<String>,
    /// Shifts per page, 1 to 1000; 100 when absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Only shifts that started (device time) at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only shifts that started before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this guard's shifts (guard id).
    #[param(value_type = Option<SlugId>, inline)]
    guard: Option<String>,
    /// Only this device's shifts (device id, UUID).
    #[param(format = Uuid)]
    device: Option<String>,
    /// `true`: only shifts whose end has not arrived; `false`: only ended ones.
    #[param(value_type = Option<bool>)]
    open: Option<String>,
}

fn invalid(message: String) -> AppError {
    AppError::bad_request("invalid_query", message)
}

/// The listing's query, checked: times as RFC 3339, ids by their rules.
fn parse_shift_query(params: &ShiftParams) -> Result<ShiftQuery, AppError> {
    let guard = query_value(&params.guard)
        .map(|g| GuardId::new(g).map_err(|e| invalid(format!("guard: {e}"))))
        .transpose()?;
    let device = query_value(&params.device)
        .map(|d| {
            d.parse::<DeviceId>()
                .map_err(|e| invalid(format!("device: {e}")))
        })
        .transpose()?;
    let after = query_value(&params.after)
        .map(|a| {
            a.parse::<ShiftId>().map_err(|e| {
                invalid(format!(
                    "after must be a shift id (the previous page's next): {e}"
                ))
            })
        })
        .transpose()?;
    let open = query_bool("open", &params.open)?;
    let limit = query_limit(&params.limit, DEFAULT_SHIFT_LIMIT, MAX_SHIFT_LIMIT)?;
    Ok(ShiftQuery {
        guard,
        device,
        from_ms: query_time("from", &params.from)?,
        to_ms: query_time("to", &params.to)?,
        open,
        after,
        limit,
    })
}

/// The site's shifts, filtered, one page at a time: ask the next page with `after` set to
/// this page's `next` while `more` is true.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/shifts",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ShiftParams,
    ),
    responses(
        (status = 200, description = "One page of the site's shifts, in shift-id order", body = ShiftsPage),
        (status = 400, description = "A bad, unknown or repeated query parameter, or a bad site id (`invalid_query`, `invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn shifts(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ShiftParams>, QueryRejection>,
) -> Result<Json<ShiftsPage>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    let query = parse_shift_query(&params)?;
    let after = query.after;
    let Some(page) = state.store.shifts(site.clone(), query).await? else {
        return Err(AppError::UnknownSite(site.to_string()));
    };
    let next = page.shifts.last().map(|s| s.shift).or(after);
    Ok(Json(ShiftsPage {
        site_id: site.to_string(),
        shifts: page.shifts.into_iter().map(ShiftView::from).collect(),
        next: next.map(|s| s.to_string()),
        more: page.more,
    }))
}

/// One shift of the site.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/shifts/{shift}",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("shift" = String, Path, format = Uuid, description = "Shift id (UUID): the `shift_id` of its events"),
    ),
    responses(
        (status = 200, description = "The shift", body = ShiftView),
        (status = 400, description = "`invalid_site_id`, `invalid_shift_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`, or `unknown_shift`: no log of the shift has reached the server", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn shift(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ShiftView>, AppError> {
    let (site, shift): (_, ShiftId) = site_and(path, "invalid_shift_id", "shift id")?;
    user.can_read(&site)?;
    match state.store.shift(site.clone(), shift).await? {
        Some(summary) => Ok(Json(summary.into())),
        None => Err(AppError::UnknownShift {
            site: site.to_string(),
            shift: shift.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ShiftParams {
        ShiftParams {
            after: None,
            limit: None,
            from: None,
            to: None,
            guard: None,
            device: None,
            open: None,
        }
    }

    #[test]
    fn the_query_defaults_and_refuses_bad_values() {
        assert!(matches!(
            parse_shift_query(&params()),
            Ok(ShiftQuery {
                limit: DEFAULT_SHIFT_LIMIT,
                open: None,
                ..
            })
        ));
        let bad: [fn(&mut ShiftParams); 6] = [
            |p| p.limit = Some("0".into()),
            |p| p.limit = Some("1001".into()),
            |p| p.open = Some("yes".into()),
            |p| p.after = Some("17".into()),
            |p| p.from = Some("yesterday".into()),
            |p| p.device = Some("phone".into()),
        ];
        for (i, set) in bad.iter().enumerate() {
            let mut p = params();
            set(&mut p);
            assert!(
                matches!(
                    parse_shift_query(&p),
                    Err(AppError::BadRequest {
                        code: "invalid_query",
                        ..
                    })
                ),
                "case {i}"
            );
        }
    }
}
