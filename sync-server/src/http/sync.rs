//! `POST /api/v1/sync`: a device's sync exchange (binary, [`protocol::CONTENT_TYPE`]). The
//! device's credential must name the request's site and device; the request waits its turn in
//! the admission queue ([`super::admission`]) before its body is read.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use patrol_core::SiteId;
use patrol_core::protocol::{
    self, DocOutcome, DocRef, DocResult, SyncRequest, SyncResponse, TourStatus,
};
use patrol_core::siteconfig::TONIGHT_MS;
use utoipa::ToSchema;

use super::auth;
use super::error::{AppError, ErrorBody};
use super::extract::{body_error, check_media_type};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::credentials::rotation_due;
use crate::now_ms;
use crate::store::compliance::{self, Span, WindowQuery};
use crate::store::{CollabSync, DeviceCredential, IncidentPush, ShiftLogPush, SyncBatch};

/// The sync route; its body limit is the server's (`--max-body-bytes`).
pub(super) fn routes(body_limit: usize) -> Vec<Endpoint> {
    vec![endpoint(Verb::Post, "/api/v1/sync", sync, body_limit)]
}

/// Accepts `application/x-patrol-sync`, with or without parameters, in any letter case.
fn check_content_type(headers: &HeaderMap) -> Result<(), AppError> {
    check_media_type(headers, protocol::CONTENT_TYPE)
}

/// Whether the phone says the request carries a panic alarm ([`protocol::PRIORITY_HEADER`]).
fn carries_panic(headers: &HeaderMap) -> bool {
    headers.get(protocol::PRIORITY_HEADER).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(protocol::PRIORITY_PANIC.as_bytes())
    })
}

/// The request as a whole must come from the device its credential names: another site or
/// device is 403, an old `request_seq` 409, and nothing is applied. The batch's owner is the
/// credential's device, so every change must be made by that device's actor.
fn check_sync_request(
    request: &SyncRequest,
    credential: &DeviceCredential,
) -> Result<(), AppError> {
    if request.site != credential.site || request.device != credential.device {
        return Err(AppError::Forbidden(format!(
            "this credential belongs to device {} of site {}, not to device {} of site {}",
            credential.device, credential.site, request.device, request.site
        )));
    }
    // Stored as a signed 64-bit integer; no phone counts that far.
    if i64::try_from(request.request_seq).is_err() {
        return Err(AppError::MalformedRequest(format!(
            "request_seq {} is out of range",
            request.request_seq
        )));
    }
    // Checked again, authoritatively, in the request's transaction; this spares a replay the
    // merge.
    if request.request_seq <= credential.last_request_seq {
        return Err(AppError::Replayed {
            last_seq: credential.last_request_seq,
        });
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/sync",
    tag = "sync",
    security(("device_credential" = [])),
    params(
        ("Patrol-Priority" = Option<String>, Header, description = "`panic` when the request carries a panic alarm not yet delivered: admitted at once in the panic lane, ahead of every ordinary sync waiting, never refused for load; its body may be at most 256 KiB (413 beyond)"),
    ),
    request_body(
        content = SyncBody,
        content_type = "application/x-patrol-sync",
        description = "A `SyncRequest`, postcard-encoded after a version byte (docs/protocol.md)"
    ),
    responses(
        (status = 200, description = "A `SyncResponse`, postcard-encoded (docs/protocol.md): each document's outcome, the configuration, incidents and alarm acks due to the device", content_type = "application/x-patrol-sync", body = SyncBody,
            headers(("Patrol-Credential-Rotation" = String, description = "`due` when the device's credential is older than the server's `--device-credential-max-age-days`: the phone should rotate it (`POST /api/v1/devices/me/credential`)"))),
        (status = 400, description = "Malformed or truncated request, unsupported protocol version, or unreadable body", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked device credential", body = ErrorBody),
        (status = 403, description = "The credential belongs to another site or device", body = ErrorBody),
        (status = 409, description = "`replayed_request`: request_seq not above the last accepted one (`last_seq` given)", body = ErrorBody),
        (status = 413, description = "The body is over the server's sync body limit (a panic sync's: 256 KiB)", body = ErrorBody),
        (status = 415, description = "Content-Type is not `application/x-patrol-sync`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
        (status = 503, description = "`server_busy`: too many sync requests are already waiting, or this one waited too long; its body was not read and nothing changed. Send it again after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before sending the sync again"))),
    )
)]
async fn sync(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    state.metrics.add_sync_request();
    let client = state
        .throttle
        .client(request.extensions(), request.headers());
    let credential = auth::authenticate_device(&state, request.headers(), client).await?;
    let rotation_due = rotation_due(
        credential.credential_issued_at_ms,
        now_ms(),
        state.config.device_credential_max_age_ms,
    );
    check_content_type(request.headers())?;
    let panic = carries_panic(request.headers());
    let limit = if panic {
        protocol::MAX_PANIC_SYNC_BODY_BYTES.min(state.config.max_body_bytes)
    } else {
        state.config.max_body_bytes
    };
    // Held until the answer is ready. Refused (503) before a byte of the body is read; a panic
    // is admitted at once, in its own lane.
    let _admitted = if panic {
        state.syncs.admit_panic(&state.metrics).await?
    } else {
        state.syncs.admit(&state.metrics).await?
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|r| body_error(r, state.config.max_body_bytes))?;
    if body.len() > limit {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let (request, version) = SyncRequest::decode_any(&body)?;
    let received_at_ms = now_ms();
    check_sync_request(&request, &credential)?;

    // Shift logs take the batch path unchanged; incidents, the configuration and alarm acks
    // go to the store's collaborative path, at the same time.
    let refs: Vec<DocRef> = request.docs.iter().map(|push| push.doc).collect();
    let mut shift_logs = Vec::with_capacity(request.docs.len());
    let mut incidents = Vec::new();
    for push in request.docs {
        match push.doc {
            DocRef::ShiftLog(shift) => shift_logs.push(ShiftLogPush {
                shift,
                changes: push.changes,
                events: push.events,
                signature: push.signature,
            }),
            DocRef::Incident(incident) => incidents.push(IncidentPush {
                incident,
                have: protocol::from_wire(&push.have),
                changes: push.changes,
            }),
        }
    }
    // The site's configuration now: its rules flag the request's new events.
    let mut config = state
        .store
        .site_config(credential.site.clone())
        .await?
        .config;
    state.config.overrides.apply(&mut config);
    let config = std::sync::Arc::new(config);
    // A phone on shift, of a version that reads it, gets what the site's compliance counted.
    let wants_tours = version >= 4 && request.guard.is_some() && !config.tours.is_empty();
    let batch = SyncBatch {
        site: credential.site,
        device: credential.device,
        request_seq: request.request_seq,
        received_at_ms,
        device_time_ms: request.device_time_ms,
        pending_events: request.pending_events,
        pushes: shift_logs,
        public_key: credential.public_key,
        config,
    };
    let collab = CollabSync {
        site: batch.site.clone(),
        device: batch.device,
        guard: request.guard,
        received_at_ms,
        incidents,
        config_version: request.config_version,
        awaiting_ack: request.awaiting_ack,
    };
    let (site, device) = (batch.site.clone(), batch.device);
    // The shift-log transaction is where a replayed, stale or revoked request is refused. Without
    // incident pushes the collaborative part only reads, so it runs alongside; with them it
    // writes, and runs only once the request was accepted, so a refused one changes nothing.
    let (outcomes, collab) = if collab.incidents.is_empty() {
        let (outcomes, collab) =
            tokio::join!(state.store.sync(batch), state.store.sync_collab(collab));
        (outcomes?, collab?)
    } else {
        let outcomes = state.store.sync(batch).await?;
        (outcomes, state.store.sync_collab(collab).await?)
    };

    // Back into the request's order.
    let mut shift_outcomes = outcomes.into_iter();
    let mut incident_outcomes = collab.outcomes.into_iter();
    let mut docs = Vec::with_capacity(refs.len());
    for doc in refs {
        let outcome = match doc {
            DocRef::ShiftLog(_) => shift_outcomes.next(),
            DocRef::Incident(_) => incident_outcomes.next(),
        }
        .ok_or_else(|| AppError::internal("the store answered fewer documents than were pushed"))?;
        match (&doc, &outcome) {
            (_, DocOutcome::Rejected { code, message }) => {
                state.metrics.add_doc_rejected(*code);
                tracing::warn!(
                    %site, %device, ?doc, code = code.as_str(), %message,
                    "rejected a document push"
                )
            }
            (
                DocRef::ShiftLog(shift),
                DocOutcome::Accepted {
                    new_events,
                    missing_deps,
                    ..
                },
            ) => {
                state.metrics.add_doc_accepted(*new_events);
                tracing::debug!(
                    %site, %device, %shift, new_events, missing_deps,
                    "merged a shift log push"
                )
            }
            (DocRef::Incident(incident), DocOutcome::Accepted { missing_deps, .. }) => {
                state.metrics.add_doc_accepted(0);
                tracing::debug!(%site, %device, %incident, missing_deps, "merged an incident push")
            }
        }
        docs.push(DocResult { doc, outcome });
    }

    let new_events = docs
        .iter()
        .any(|d| matches!(d.outcome, DocOutcome::Accepted { new_events, .. } if new_events > 0));
    if new_events {
        state.feed.bump(&site);
    }
    let tours = if wants_tours {
        tour_status(&state, &site).await
    } else {
        None
    };
    let response = SyncResponse {
        server_time_ms: now_ms(),
        docs,
        config: collab.config,
        incidents: collab.incidents,
        alarm_acks: collab.alarm_acks,
        tours,
    }
    .encode_for(version)
    .map_err(AppError::internal)?;
    let mut response = ([(header::CONTENT_TYPE, protocol::CONTENT_TYPE)], response).into_response();
    if rotation_due {
        // A header rather than a field, so that phones of every protocol version read the
        // answer as before; a phone that knows it rotates its credential after the sync.
        response.headers_mut().insert(
            protocol::CREDENTIAL_ROTATION_HEADER,
            header::HeaderValue::from_static("due"),
        );
    }
    Ok(response)
}

/// The scans the site's compliance counted in the windows of the last day
/// ([`patrol_core::siteconfig::TONIGHT_MS`]) up to now, this sync's included. The sync is
/// committed by then: if they cannot be read the answer goes without them (the phone's tour view
/// then counts its own scans only) rather than failing a sync that took effect.
async fn tour_status(state: &AppState, site: &SiteId) -> Option<TourStatus> {
    let now = now_ms();
    let query = WindowQuery {
        tour: None,
        span: Span::Between {
            from_ms: now.saturating_sub(TONIGHT_MS),
            to_ms: now.saturating_add(1),
        },
    };
    match state.store.tour_windows(site.clone(), query, now).await {
        Ok(answer) => Some(compliance::counted_scans(&answer)),
        Err(e) => {
            tracing::warn!(%site, error = %e, "could not read the tour status for a sync's answer");
            None
        }
    }
}

/// A postcard-encoded sync message (documentation only: the handler decodes the bytes).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct SyncBody(Vec<u8>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_allows_parameters_and_case() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("Application/X-Patrol-Sync; v=1"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        assert!(check_content_type(&h).is_err());
    }
}
