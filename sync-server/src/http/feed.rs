//! The control room's event feed: `GET /api/v1/sites/{site}/events` (pages, in server sequence
//! order) and `GET /api/v1/sites/{site}/stream` (the same events live, as server-sent events, on
//! [`super::live`]); the same filters apply to both. A user covering the site.

use std::fmt::Write as _;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use patrol_core::flags::EventFlag;
use patrol_core::{CheckpointId, DeviceId, EventBody, GuardId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::{AuthSession, AuthUser};
use super::config::MethodDoc;
use super::error::{AppError, ErrorBody};
use super::extract::{
    EventKind, FlagName, MAX_JSON_BODY_BYTES, SlugId, query_limit, query_params, query_time,
    query_value, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::store::FeedFilter;

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/events",
            events,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/stream",
            stream,
            MAX_JSON_BODY_BYTES,
        ),
    ]
}

/// Events per feed page when `limit` is not given.
pub const DEFAULT_FEED_LIMIT: u32 = 1_000;
/// Largest feed page.
pub const MAX_FEED_LIMIT: u32 = 10_000;

/// A feed page (documentation only: the handler writes it from the stored JSON text).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct EventsPage {
    site_id: String,
    /// The events, oldest first; each event's JSON is described in docs/protocol.md.
    events: Vec<FeedEventDoc>,
    /// The cursor for the next page: the last event's sequence number, or `after`.
    next: u64,
    /// Whether more events follow.
    more: bool,
}

/// An event of the feed: what the server adds to the device's record, beside the event's own
/// fields (docs/protocol.md, "The control-room feed"; not all listed here).
// Documentation only: the store writes it (`store::event_json`).
#[derive(Debug, ToSchema)]
#[schema(as = FeedEvent)]
#[allow(dead_code)]
struct FeedEventDoc {
    /// The event's sequence number on its site (the feed's order).
    seq: u64,
    #[schema(format = Uuid)]
    id: String,
    #[schema(value_type = EventKind, inline)]
    kind: String,
    /// The device's time, as it recorded it.
    #[schema(format = DateTime)]
    device_time: String,
    /// When the server received it.
    #[schema(format = DateTime)]
    received_at: String,
    /// The device time corrected by the clock offset measured at the sync that delivered it,
    /// never later than `received_at`.
    #[schema(format = DateTime)]
    corrected_time: String,
    /// What about the event deserves a second look; empty when nothing does.
    flags: Vec<EventFlagDoc>,
}

/// What about an event deserves a second look (`patrol_core::flags::EventFlag`, docs/flags.md):
/// an object naming its `flag`, with that flag's own fields. Times between two scans are in
/// milliseconds of their corrected times.
// Documentation only: the core's `EventFlag`, checked against it by the OpenAPI test.
#[derive(Debug, ToSchema)]
#[schema(as = EventFlag)]
#[serde(tag = "flag", rename_all = "snake_case")]
#[allow(dead_code)]
enum EventFlagDoc {
    /// The scan names a checkpoint the site configuration does not have.
    UnknownCheckpoint,
    /// No checkpoint has the scanned NFC tag or QR payload.
    UnknownTag,
    /// The scanned tag belongs to another checkpoint.
    TagOfAnotherCheckpoint {
        #[schema(value_type = SlugId)]
        checkpoint: String,
    },
    /// Entered by hand instead of scanned.
    Manual,
    /// The GPS fix is this far from the checkpoint, beyond its radius, the fix's accuracy and
    /// the indoor slack.
    FarFromCheckpoint {
        distance_m: u32,
        /// The fix's accuracy, when the phone gave one.
        accuracy_m: Option<u32>,
    },
    /// Proven a way the checkpoint does not accept.
    MethodNotAccepted {
        #[schema(value_type = MethodDoc)]
        method: String,
    },
    /// The same guard scanned the same checkpoint `after_ms` before (`earlier_event`), within
    /// the site's `padding_within_min`.
    Padding {
        #[schema(format = Uuid)]
        earlier_event: String,
        after_ms: i64,
    },
    /// From the guard's previous scan: `distance_m` in `after_ms`, faster than the site's
    /// `max_speed_kmh`.
    ImpossibleSpeed {
        speed_kmh: u32,
        distance_m: u32,
        after_ms: i64,
    },
    /// The same tag scanned by another device `apart_ms` apart, within the site's
    /// `cloned_tag_within_secs`; both scans carry it.
    ClonedTag {
        #[schema(format = Uuid)]
        other_device: String,
        #[schema(format = Uuid)]
        other_event: String,
        apart_ms: i64,
    },
    /// Outside every window (plus grace) of every tour holding the checkpoint.
    OutsideWindow,
    /// Ahead of its turn on an ordered tour: its checkpoint `missing`, earlier on the tour, is
    /// not yet scanned by the guard in the window.
    OutOfOrder {
        tour: String,
        #[schema(value_type = SlugId)]
        missing: String,
    },
    /// The device's clock was off by `offset_ms` (server minus device; positive: slow) at the
    /// sync that delivered the event, beyond the site's `clock_skew_threshold_secs`.
    ClockSkew { offset_ms: i64 },
}

/// One event of the live feed, as a server-sent event's fields.
// Documentation only: `live::stream` writes it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct StreamEvent {
    /// The event's sequence number: a reconnecting client sends it back as `Last-Event-ID`.
    /// Absent on the last, `closed` event.
    #[schema(pattern = "^[0-9]+$")]
    id: Option<String>,
    #[schema(inline)]
    event: StreamEventName,
    /// The event's JSON, as in the paged feed; for `closed`, an error body.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// The name of an event of the live feed: `event` for a feed event, `closed` for the last one
/// of a stream whose user may no longer read the site.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum StreamEventName {
    Event,
    Closed,
}

/// Kept as text so that a bad value gets our message, not the extractor's; the documented types
/// are what the values must parse as. Any other parameter is refused ([`query_params`]).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FeedParams {
    /// Events after this sequence number (the previous page's `next`); 0 when absent.
    #[param(value_type = Option<u64>, format = "uint64", maximum = 18446744073709551615usize)]
    after: Option<String>,
    /// Events per page, 1 to 10000; 1000 when absent. (The stream ignores it.)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// Only events whose corrected time is at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only events whose corrected time is before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this guard's events (guard id).
    #[param(value_type = Option<SlugId>, inline)]
    guard: Option<String>,
    /// Only this device's events (device id, UUID).
    #[param(format = Uuid)]
    device: Option<String>,
    /// Only events of this kind (e.g. `checkpoint_scanned`, `panic`).
    #[param(value_type = Option<EventKind>, inline)]
    kind: Option<String>,
    /// Only events at this checkpoint (checkpoint id).
    #[param(value_type = Option<SlugId>, inline)]
    checkpoint: Option<String>,
    /// Only events carrying this flag (`padding`, `cloned_tag`, `clock_skew`...).
    #[param(value_type = Option<FlagName>, inline)]
    flag: Option<String>,
}

/// The feed's filters, checked: times as RFC 3339, ids by their rules, kinds by name.
fn parse_feed_filter(params: &FeedParams) -> Result<FeedFilter, AppError> {
    let bad = |name: &str, e: &dyn std::fmt::Display| {
        AppError::bad_request("invalid_query", format!("{name}: {e}"))
    };
    let guard = query_value(&params.guard)
        .map(|g| GuardId::new(g).map_err(|e| bad("guard", &e)))
        .transpose()?;
    let checkpoint = query_value(&params.checkpoint)
        .map(|c| CheckpointId::new(c).map_err(|e| bad("checkpoint", &e)))
        .transpose()?;
    let device = query_value(&params.device)
        .map(|d| d.parse::<DeviceId>().map_err(|e| bad("device", &e)))
        .transpose()?;
    let kind = query_value(&params.kind)
        .map(|k| {
            if EventBody::KINDS.contains(&k) {
                Ok(k.to_owned())
            } else {
                Err(AppError::bad_request(
                    "invalid_query",
                    format!(
                        "kind must be one of {}, got {k:?}",
                        EventBody::KINDS.join(", ")
                    ),
                ))
            }
        })
        .transpose()?;
    let flag = query_value(&params.flag)
        .map(|f| {
            if EventFlag::NAMES.contains(&f) {
                Ok(f.to_owned())
            } else {
                Err(AppError::bad_request(
                    "invalid_query",
                    format!(
                        "flag must be one of {}, got {f:?}",
                        EventFlag::NAMES.join(", ")
                    ),
                ))
            }
        })
        .transpose()?;
    Ok(FeedFilter {
        from_ms: query_time("from", &params.from)?,
        to_ms: query_time("to", &params.to)?,
        guard: guard.map(|g| g.to_string()),
        device: device.map(|d| d.to_string()),
        kind,
        checkpoint: checkpoint.map(|c| c.to_string()),
        flag,
    })
}

fn parse_feed_params(params: &FeedParams) -> Result<(u64, u32), AppError> {
    let after = match params.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            AppError::bad_request(
                "invalid_query",
                format!("after must be a non-negative integer (a sequence number), got {s:?}"),
            )
        })?,
    };
    let limit = query_limit(&params.limit, DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT)?;
    Ok((after, limit))
}

/// The feed page, assembled from the stored JSON text without parsing it again:
/// `{"site_id":..,"events":[..],"next":<last seq or after>,"more":bool}`.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/events",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        FeedParams,
    ),
    responses(
        (status = 200, description = "One page of the feed, in server sequence order", body = EventsPage,
            headers(
                ("patrol-next-cursor" = u64, description = "The cursor to ask the next page from (`next` in the body)"),
                ("patrol-more" = bool, description = "`true` when more events follow (`more` in the body)"),
                ("Link" = String, description = "RFC 8288 `rel=\"next\"` link to the next page, with the same filters; only when more follow"),
            )
        ),
        (status = 400, description = "A bad, unknown or repeated query parameter, or a bad site id (`invalid_query`, `invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn events(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedParams>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    let (after, limit) = parse_feed_params(&params)?;
    let filter = parse_feed_filter(&params)?;
    let Some(page) = state
        .store
        .events_filtered(site.clone(), after, limit, filter)
        .await?
    else {
        return Err(AppError::UnknownSite(site.to_string()));
    };

    let next = page.next(after);
    let site_json = serde_json::to_string(site.as_str()).map_err(AppError::internal)?;
    let size: usize = page.events.iter().map(|(_, json)| json.len() + 1).sum();
    let mut body = String::with_capacity(size + site_json.len() + 64);
    body.push_str("{\"site_id\":");
    body.push_str(&site_json);
    body.push_str(",\"events\":[");
    for (i, (_, json)) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(json);
    }
    // Writing to a String cannot fail.
    let _ = write!(body, "],\"next\":{next},\"more\":{}}}", page.more);
    // The cursor also travels in headers, so a client can ask for the next page as soon as the
    // headers arrive and read this page's body meanwhile (RFC 8288 `Link` for generic clients).
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(NEXT_CURSOR_HEADER, HeaderValue::from(next));
    headers.insert(
        MORE_HEADER,
        HeaderValue::from_static(if page.more { "true" } else { "false" }),
    );
    if page.more {
        // The same filters, the next cursor (pairs kept as sent: already URL-encoded).
        let mut query = format!("after={next}&limit={limit}");
        for pair in raw_query.as_deref().unwrap_or("").split('&') {
            if !pair.is_empty() && !pair.starts_with("after=") && !pair.starts_with("limit=") {
                query.push('&');
                query.push_str(pair);
            }
        }
        let link = format!("</api/v1/sites/{site}/events?{query}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// Response header of a feed page: the cursor to ask the next page from (as `next` in the body).
pub const NEXT_CURSOR_HEADER: &str = "patrol-next-cursor";
/// Response header of a feed page: `true` when more events follow (as `more` in the body).
pub const MORE_HEADER: &str = "patrol-more";

/// The live feed as server-sent events: each event's SSE id is its sequence number, so a
/// client that reconnects with `Last-Event-ID` (or `after`) resumes exactly where it was. The
/// same filters as the paged feed apply. The stream checks its token again over time and ends,
/// with a `closed` event, once the user may no longer read the site (revoked, expired, its
/// sites changed).
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/stream",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        FeedParams,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, format = "uint64", maximum = 18446744073709551615usize, description = "Resume after this sequence number (a reconnecting EventSource sends it); overrides `after`"),
    ),
    responses(
        (status = 200, description = "Server-sent events, one per feed event (`event: event`): `id` is its sequence number, `data` the event's JSON as in the paged feed; a keep-alive comment is sent at once and then while idle. Ends when the server shuts down, or after a last `event: closed` (no `id`) whose `data` is an error body (`revoked_credential`, `expired_credential`, `forbidden`) once the user may no longer read the site. The schema is that of one event.", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "A bad, unknown or repeated query parameter, a bad site id or `Last-Event-ID` (`invalid_query`, `invalid_site_id`, `invalid_last_event_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 429, description = "`too_many_streams`: the user has the most live streams open that the server allows (`--max-streams-per-user`)", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn stream(
    session: AuthSession,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
    session.user().can_read(&site)?;
    let params = query_params(query)?;
    let (mut after, _) = parse_feed_params(&params)?;
    let filter = parse_feed_filter(&params)?;
    if let Some(last) = headers.get("last-event-id") {
        after = last
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                AppError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be an event sequence number",
                )
            })?;
    }
    if state.store.get_site(site.clone()).await?.is_none() {
        return Err(AppError::UnknownSite(site.to_string()));
    }
    let slot = state
        .feed
        .open_stream(&session.0.user.id, state.config.max_streams_per_user)?;
    let events = super::live::stream(state.clone(), session.0, slot, site, filter, after);
    // A first keep-alive comment at once: Firefox's EventSource reports a stream open only when
    // its first bytes come, not at the headers as Chromium does, so on a quiet site the console
    // said "Connecting…" until the first keep-alive, 15 s on.
    let opened = futures_util::stream::once(async { Ok(Event::default().comment("")) });
    Ok(Sse::new(opened.chain(events))
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(after: Option<&str>, limit: Option<&str>) -> FeedParams {
        FeedParams {
            after: after.map(Into::into),
            limit: limit.map(Into::into),
            from: None,
            to: None,
            guard: None,
            device: None,
            kind: None,
            checkpoint: None,
            flag: None,
        }
    }

    #[test]
    fn feed_params_default_and_reject_out_of_range() {
        assert!(matches!(
            parse_feed_params(&params(None, None)),
            Ok((0, DEFAULT_FEED_LIMIT))
        ));
        assert!(matches!(
            parse_feed_params(&params(Some("5"), Some("10000"))),
            Ok((5, 10_000))
        ));
        for (a, l) in [
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("0")),
            (None, Some("10001")),
        ] {
            let err = parse_feed_params(&params(a, l));
            assert!(
                matches!(
                    err,
                    Err(AppError::BadRequest {
                        code: "invalid_query",
                        ..
                    })
                ),
                "{a:?} {l:?}"
            );
        }
    }
}
