//! The webhook sender: every `--webhook-check-ms`, each instance claims the deliveries due
//! ([`crate::store::Store::claim_webhook_deliveries`], under a lease so no other instance sends
//! them meanwhile), POSTs them, signed, and records each attempt with its next step
//! ([`crate::store::webhooks::next_step`]: delivered, tried again later, or parked). Everything
//! it knows is in the outbox, so a restart resumes where the last run stopped; a delivery whose
//! sender died mid-way is sent again once its lease ends (receivers drop what they have seen by
//! its idempotency key, docs/protocol.md "Webhooks").
//!
//! Delivered deliveries are dropped, with their attempts, a month after their delivery
//! ([`webhooks::DELIVERED_KEPT_MS`]); parked ones stay until re-queued or removed.
//!
//! It also queues `device.silent` for the sites that have an endpoint for it, at each
//! `--gap-check-secs`: the silence has no transaction of its own, so the delivery is keyed by
//! the device and the start of the silence, and queued once whichever instance sees it first.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use patrol_core::SiteId;
use sha2_hmac::Sha256;

use super::gaps;
use super::state::AppState;
use crate::now_ms;
use crate::store::StoreError;
use crate::store::webhooks::{self, Attempt, DueDelivery, NextStep};

/// How often each instance drops the deliveries delivered longer ago than
/// [`webhooks::DELIVERED_KEPT_MS`].
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// Deliveries claimed (and sent at once) per look.
const CLAIM_BATCH: u32 = 32;

/// What a claim's lease adds to twice the request timeout: time to record the attempt after
/// the answer. A delivery whose sender died is sent again once its lease ends.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The headers of a delivery (docs/protocol.md, "Webhooks").
pub const ID_HEADER: &str = "Patrol-Webhook-Id";
pub const EVENT_HEADER: &str = "Patrol-Webhook-Event";
pub const TIMESTAMP_HEADER: &str = "Patrol-Webhook-Timestamp";
pub const SIGNATURE_HEADER: &str = "Patrol-Webhook-Signature";

/// `v1=` and the hex HMAC-SHA256, keyed with the endpoint's secret, of `{timestamp}.{body}`
/// (the timestamp in Unix seconds, as the timestamp header gives it).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs this instance's sender (see the module docs) until the server closes its live streams.
/// A failed look is logged and tried again at the next tick.
pub async fn run(state: AppState) {
    let timeout = state.config.webhook_timeout;
    let client = match reqwest::Client::builder()
        // A receiver that redirects is answering something else: the attempt fails.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("patrol-server/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; no webhook is sent");
            return;
        }
    };
    let mut ticks = state.feed.ticks(state.config.webhook_check);
    let mut silences_checked: Option<Instant> = None;
    let mut pruned: Option<Instant> = None;
    while ticks.next().await {
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            let before = now_ms().saturating_sub(webhooks::DELIVERED_KEPT_MS);
            match state.store.prune_webhook_deliveries(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "dropped old delivered webhook deliveries"),
                Err(e) => tracing::warn!(error = %e, "cannot drop old webhook deliveries"),
            }
        }
        if silences_checked.is_none_or(|at| at.elapsed() >= state.config.gap_check) {
            silences_checked = Some(Instant::now());
            queue_silences(&state).await;
        }
        if let Err(e) = send_due(&state, &client).await {
            tracing::warn!(error = %e, "cannot send the webhook deliveries due");
        }
    }
}

/// Claims and sends what is due, batch after batch, until a batch comes back short.
async fn send_due(state: &AppState, client: &reqwest::Client) -> Result<(), StoreError> {
    let lease = state.config.webhook_timeout * 2 + LEASE_MARGIN;
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = now_ms();
        let due = state
            .store
            .claim_webhook_deliveries(now, now.saturating_add(lease_ms), CLAIM_BATCH)
            .await?;
        let full = due.len() == CLAIM_BATCH as usize;
        let sent = futures_util::future::join_all(due.into_iter().map(|d| async move {
            let attempt = send(client, &d).await;
            (d, attempt)
        }))
        .await;
        for (delivery, attempt) in sent {
            record(state, &delivery, attempt).await?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// One attempt at `d`: a 2xx answer delivers it; any other answer, a timeout or a failure to
/// connect is a failed attempt. The answer's body is not read.
async fn send(client: &reqwest::Client, d: &DueDelivery) -> Attempt {
    let at_ms = now_ms();
    let timestamp = at_ms.div_euclid(1000);
    let started = Instant::now();
    let result = client
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ID_HEADER, &d.key)
        .header(EVENT_HEADER, &d.event_type)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature(&d.secret, timestamp, &d.body))
        .body(d.body.clone())
        .send()
        .await;
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match result {
        Ok(response) => Attempt {
            at_ms,
            status: Some(response.status().as_u16()),
            error: None,
            duration_ms,
        },
        Err(e) => Attempt {
            at_ms,
            status: None,
            error: Some(webhooks::bounded_error(&describe(&e))),
            duration_ms,
        },
    }
}

/// What went wrong, with its causes (reqwest's own message says little).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn record(state: &AppState, d: &DueDelivery, attempt: Attempt) -> Result<(), StoreError> {
    let next = webhooks::next_step(
        &state.config.webhook_retry,
        d.created_at_ms,
        d.attempts,
        &attempt,
        rand::random::<f64>(),
    );
    match next {
        NextStep::Delivered => tracing::info!(
            delivery = d.id, key = %d.key, attempts = d.attempts + 1, "webhook delivered"
        ),
        NextStep::Retry { at_ms } => tracing::info!(
            delivery = d.id, key = %d.key, status = ?attempt.status, error = ?attempt.error,
            retry_in_ms = at_ms - attempt.at_ms, "webhook attempt failed; will retry"
        ),
        NextStep::Parked => tracing::warn!(
            delivery = d.id, key = %d.key, status = ?attempt.status, error = ?attempt.error,
            attempts = d.attempts + 1, "webhook attempt failed; delivery parked"
        ),
    }
    state.metrics.add_webhook_attempt(next);
    if !state
        .store
        .record_webhook_attempt(d.id, d.attempts, attempt, next)
        .await?
    {
        tracing::info!(
            delivery = d.id,
            "webhook attempt not recorded: another sender took the delivery after its lease"
        );
    }
    Ok(())
}

/// Queues `device.silent` for every silent device of the sites with an endpoint for it.
async fn queue_silences(state: &AppState) {
    let sites = match state.store.list_sites().await {
        Ok(sites) => sites,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the sites to check for silent devices");
            return;
        }
    };
    for site in sites.into_iter().map(|s| s.id) {
        if let Err(e) = queue_site_silences(state, &site).await {
            tracing::warn!(%site, error = %e, "cannot queue the site's device.silent webhooks");
        }
    }
}

async fn queue_site_silences(state: &AppState, site: &SiteId) -> Result<(), StoreError> {
    if !state
        .store
        .has_webhook_for(site.clone(), webhooks::DEVICE_SILENT)
        .await?
    {
        return Ok(());
    }
    let Some(devices) = state.store.devices(site.clone()).await? else {
        return Ok(());
    };
    let limits = gaps::thresholds(state, site).await?;
    let now = now_ms();
    for d in &devices {
        let Some(since) = gaps::device_gap(d, &limits, now).silent_since_ms else {
            continue;
        };
        let guard = d.guard.as_ref().map(|g| g.to_string());
        let shift = d.latest_shift.as_ref().map(|s| s.shift.to_string());
        let outgoing = webhooks::device_silent(
            site,
            &d.device,
            guard.as_deref(),
            shift.as_deref(),
            since,
            limits.no_contact_after.as_secs(),
            now,
        );
        state.store.enqueue_webhook(outgoing).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme docs/protocol.md gives, checked against a value computed independently
    /// (`printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test`).
    #[test]
    fn the_signature_is_the_documented_hmac() {
        assert_eq!(
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
