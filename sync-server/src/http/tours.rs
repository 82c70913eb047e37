//! A site's tour compliance: `GET /api/v1/sites/{site}/tours/windows` (every tour) and
//! `GET /api/v1/sites/{site}/tours/{tour}/windows` (one), for a span (`from`, `to`) or a local
//! date in the site's zone (`date`); a user covering the site. Each window with its start, end
//! and grace, each checkpoint's state (on time, late, missed, not yet due) and the scan that
//! counted (event, device, guard, corrected time), the share done, provisional or final (and
//! when, and why), and its amendments. Read from what the server keeps as logs arrive
//! (`store::compliance`), never by re-reading the night's events.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::NaiveDate;
use patrol_core::CheckpointId;
use patrol_core::compliance::{closes_at, grace_ms};
use patrol_core::event::format_time_ms;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{
    MAX_JSON_BODY_BYTES, SlugId, query_params, query_time, query_value, site_and, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::compliance::{
    AmendmentJson, MAX_VIEW_SPAN_MS, Span, WindowQuery, WindowView, WindowsAnswer,
};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/tours/windows",
            site_windows,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/tours/{tour}/windows",
            tour_windows,
            MAX_JSON_BODY_BYTES,
        ),
    ]
}

/// Without `date`, `from` or `to`: the windows overlapping the 12 hours either side of now.
const AROUND_NOW_MS: i64 = 12 * 3_600_000;

/// Kept as text so that a bad value gets our message. Any other parameter is refused. Without
/// any of them, the windows overlapping the 12 hours either side of now.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WindowParams {
    /// A local date in the site's time zone (YYYY-MM-DD): the windows of the nights that start
    /// on it (a round from 22:00 to 06:00 is the date it starts on) and the one-off windows
    /// starting on it. Instead of `from` and `to`.
    #[param(format = Date)]
    date: Option<String>,
    /// With `to`: the windows overlapping `[from, to)` (RFC 3339), at most 31 days.
    #[param(format = DateTime)]
    from: Option<String>,
    #[param(format = DateTime)]
    to: Option<String>,
}

fn invalid(message: String) -> AppError {
    AppError::bad_request("invalid_query", message)
}

/// The span asked for: a date, or `from` and `to`.
fn parse_span(params: &WindowParams) -> Result<Span, AppError> {
    let from = query_time("from", &params.from)?;
    let to = query_time("to", &params.to)?;
    match (query_value(&params.date), from, to) {
        (Some(date), None, None) => NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map(Span::Date)
            .map_err(|_| {
                invalid(format!(
                    "date must be a date written YYYY-MM-DD, got {date:?}"
                ))
            }),
        (Some(_), _, _) => Err(invalid(
            "give either date, or from and to, not both".to_owned(),
        )),
        (None, Some(from_ms), Some(to_ms)) => {
            if to_ms <= from_ms {
                return Err(invalid("to must be later than from".to_owned()));
            }
            if to_ms - from_ms > MAX_VIEW_SPAN_MS {
                return Err(invalid(format!(
                    "from and to may be at most {} days apart",
                    MAX_VIEW_SPAN_MS / 86_400_000
                )));
            }
            Ok(Span::Between { from_ms, to_ms })
        }
        (None, _, _) => Err(invalid(
            "give a date (YYYY-MM-DD, in the site's time zone), or from and to (RFC 3339)"
                .to_owned(),
        )),
    }
}

/// One checkpoint of a window.
#[derive(Debug, Serialize, ToSchema)]
struct CheckpointJson {
    #[schema(value_type = SlugId, inline)]
    checkpoint_id: String,
    /// Its name in the site's configuration.
    name: String,
    /// `done` (scanned in the window), `done_late` (in the grace after it), `missed` (not by
    /// the end of the grace), or, while it may still come: `upcoming` (the window has not
    /// opened), `due` (open) or `late` (in the grace).
    #[schema(example = "done")]
    state: String,
    /// The scan that counted: its event id, device, guard and corrected time; null without one.
    #[schema(format = Uuid)]
    event_id: Option<String>,
    #[schema(format = Uuid)]
    device_id: Option<String>,
    guard: Option<String>,
    corrected_time: Option<String>,
}

/// One tour window.
#[derive(Debug, Serialize, ToSchema)]
struct WindowJson {
    #[schema(value_type = SlugId, inline)]
    tour_id: String,
    tour_name: String,
    /// When the window opens (RFC 3339); it runs until just before `end`.
    start: String,
    end: String,
    /// Minutes after `end` during which a scan still counts, as late; until `closes_at`.
    grace_min: u32,
    closes_at: String,
    /// Where the window is at `as_of`: `upcoming`, `open`, `grace` or `closed`.
    phase: String,
    /// `provisional` until final: every device on shift during it delivered its log past its
    /// grace, or its deadline (the site's `finalise_after_hours` after its end) passed.
    status: String,
    /// When it turned final; null while provisional.
    finalised_at: Option<String>,
    /// Why it turned final: `delivery` or `deadline`; null while provisional.
    final_by: Option<String>,
    /// The share of its checkpoints done, on time or late, in whole percent (rounded down).
    percent: u32,
    done: u32,
    done_late: u32,
    missed: u32,
    /// Checkpoints not scanned that may still be (upcoming, due or late).
    open: u32,
    /// In the tour's order.
    checkpoints: Vec<CheckpointJson>,
    /// Changes made to the window after it turned final, oldest first.
    amendments: Vec<AmendmentJson>,
}

/// A site's windows.
#[derive(Debug, Serialize, ToSchema)]
struct WindowsPage {
    site_id: String,
    /// The site's IANA time zone, in which schedules and `date` are read.
    time_zone: String,
    /// The date asked for; null with `from` and `to`.
    #[schema(format = Date)]
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// The server's time the answer holds at.
    as_of: String,
    /// Windows starting before this are not kept (the site existed before the server kept
    /// compliance); null: all are.
    tracked_since: Option<String>,
    /// In order of start, then tour.
    windows: Vec<WindowJson>,
}

fn window_json(w: WindowView, now: i64) -> WindowJson {
    let close = closes_at(&w.window, w.grace_ms);
    let phase = if now < w.window.start_ms {
        "upcoming"
    } else if now < w.window.end_ms {
        "open"
    } else if now < close {
        "grace"
    } else {
        "closed"
    };
    WindowJson {
        tour_id: w.tour,
        tour_name: w.tour_name,
        start: format_time_ms(w.window.start_ms),
        end: format_time_ms(w.window.end_ms),
        grace_min: u32::try_from(w.grace_ms / grace_ms(1)).unwrap_or(u32::MAX),
        closes_at: format_time_ms(close),
        phase: phase.to_owned(),
        status: if w.final_.is_some() {
            "final"
        } else {
            "provisional"
        }
        .to_owned(),
        finalised_at: w.final_.map(|f| format_time_ms(f.at_ms)),
        final_by: w.final_.map(|f| f.by.as_str().to_owned()),
        percent: w.tally.percent(),
        done: w.tally.done,
        done_late: w.tally.done_late,
        missed: w.tally.missed,
        open: w.tally.open,
        checkpoints: w
            .checkpoints
            .into_iter()
            .map(|c| CheckpointJson {
                checkpoint_id: c.checkpoint.to_string(),
                name: c.name,
                state: c.state.code().to_owned(),
                event_id: c.scan.as_ref().map(|s| s.event_id.to_string()),
                device_id: c.scan.as_ref().map(|s| s.device_id.to_string()),
                guard: c.scan.as_ref().map(|s| s.guard.to_string()),
                corrected_time: c.scan.as_ref().map(|s| format_time_ms(s.at_ms)),
            })
            .collect(),
        amendments: w.amendments.iter().map(|a| a.json()).collect(),
    }
}

fn page(site: String, span: &Span, answer: WindowsAnswer, now: i64) -> WindowsPage {
    let (date, from, to) = match span {
        Span::Date(d) => (Some(d.format("%Y-%m-%d").to_string()), None, None),
        Span::Between { from_ms, to_ms } => (
            None,
            Some(format_time_ms(*from_ms)),
            Some(format_time_ms(*to_ms)),
        ),
    };
    WindowsPage {
        site_id: site,
        time_zone: answer.time_zone.name().to_owned(),
        date,
        from,
        to,
        as_of: format_time_ms(now),
        tracked_since: answer.tracked_since.map(format_time_ms),
        windows: answer
            .windows
            .into_iter()
            .map(|w| window_json(w, now))
            .collect(),
    }
}

async fn windows(
    state: &AppState,
    site: patrol_core::SiteId,
    tour: Option<String>,
    params: &WindowParams,
) -> Result<Json<WindowsPage>, AppError> {
    let now = now_ms();
    let span = if params.date.is_none() && params.from.is_none() && params.to.is_none() {
        // Nothing asked: the windows around now, what a supervisor opening the view wants.
        Span::Between {
            from_ms: now.saturating_sub(AROUND_NOW_MS),
            to_ms: now.saturating_add(AROUND_NOW_MS),
        }
    } else {
        parse_span(params)?
    };
    let query = WindowQuery {
        tour,
        span: span.clone(),
    };
    let answer = state.store.tour_windows(site.clone(), query, now).await?;
    Ok(Json(page(site.to_string(), &span, answer, now)))
}

/// Every tour's windows of a date or span, with compliance.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/tours/windows",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        WindowParams,
    ),
    responses(
        (status = 200, description = "The site's tour windows with each checkpoint's state, provisional or final, and amendments", body = WindowsPage),
        (status = 400, description = "A bad, missing, unknown or repeated query parameter, or a bad site id (`invalid_query`, `invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn site_windows(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Json<WindowsPage>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    windows(&state, site, None, &params).await
}

/// One tour's windows of a date or span, with compliance.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/tours/{tour}/windows",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("tour" = SlugId, Path, description = "Tour id, as the site's configuration names it", example = "night"),
        WindowParams,
    ),
    responses(
        (status = 200, description = "The tour's windows with each checkpoint's state, provisional or final, and amendments", body = WindowsPage),
        (status = 400, description = "A bad, missing, unknown or repeated query parameter, a bad site or tour id (`invalid_query`, `invalid_site_id`, `invalid_tour_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`, or `unknown_tour`: the site's configuration has no such tour", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn tour_windows(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Json<WindowsPage>, AppError> {
    // Tour ids follow the checkpoint ids' rule.
    let (site, tour): (_, CheckpointId) = site_and(path, "invalid_tour_id", "tour id")?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    windows(&state, site, Some(tour.to_string()), &params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(date: Option<&str>, from: Option<&str>, to: Option<&str>) -> WindowParams {
        WindowParams {
            date: date.map(str::to_owned),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn a_span_is_a_date_or_from_and_to() {
        assert!(matches!(
            parse_span(&params(Some("2026-03-28"), None, None)),
            Ok(Span::Date(_))
        ));
        assert!(matches!(
            parse_span(&params(
                None,
                Some("2026-03-28T00:00:00Z"),
                Some("2026-03-29T00:00:00Z")
            )),
            Ok(Span::Between { .. })
        ));
        for (date, from, to, says) in [
            (None, None, None, "give a date"),
            (Some("28/03/2026"), None, None, "YYYY-MM-DD"),
            (
                Some("2026-03-28"),
                Some("2026-03-28T00:00:00Z"),
                None,
                "not both",
            ),
            (None, Some("2026-03-28T00:00:00Z"), None, "give a date"),
            (
                None,
                Some("2026-03-28T00:00:00Z"),
                Some("2026-03-28T00:00:00Z"),
                "later than from",
            ),
            (
                None,
                Some("2026-01-01T00:00:00Z"),
                Some("2026-03-01T00:00:00Z"),
                "at most 31 days",
            ),
        ] {
            match parse_span(&params(date, from, to)) {
                Err(AppError::BadRequest {
                    code: "invalid_query",
                    message,
                }) => assert!(message.contains(says), "{message:?} does not say {says:?}"),
                other => panic!("{date:?} {from:?} {to:?}: {other:?}"),
            }
        }
    }
}
