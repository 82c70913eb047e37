//! Webhooks (issue 19, point 3): the rules both backends apply, written once; each backend keeps
//! its SQL (`webhooks.rs` in [`super::sqlite`] and [`super::postgres`]).
//!
//! - An administrator registers an endpoint for a site and chosen event types
//!   ([`EVENT_TYPES`]). It is stored with its secret, which signs every delivery.
//! - The deliveries are an outbox: a row per (endpoint, event), written in the transaction of
//!   what caused it (a sync that stored a panic, an escalation) for every endpoint of the site
//!   subscribed to the type ([`subscription_pattern`]), so a delivery exists exactly when its
//!   cause committed. Its idempotency key ([`Outgoing::key`]) is unique per endpoint: the same
//!   cause enqueued twice (two instances noticing one silence) stays one delivery.
//! - Each instance's sender ([`crate::http::webhooks`]) claims due deliveries with a lease
//!   ([`Store::claim_webhook_deliveries`](super::Store::claim_webhook_deliveries)): a claimed
//!   delivery is not due again until the lease ends, so instances never send one at once, and
//!   one whose sender died is sent again after it. Each attempt is recorded with its outcome
//!   ([`next_step`]): delivered, tried again later with exponential backoff and jitter, or
//!   parked after [`RetryPolicy::max_attempts`] or [`RetryPolicy::max_age_ms`]. Nothing lives
//!   only in memory: a restart resumes from the table.

use patrol_core::event::format_time_ms;
use patrol_core::{DeviceId, EventId, IncidentId, SiteId};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::compliance::{Change, ChangeKind};
use super::incident::IncidentRow;
use super::{PanicAlarm, StoreError};

/// A panic raised on a phone reached the server.
pub const PANIC_RAISED: &str = "panic.raised";
/// Nobody acknowledged a panic within the site's `alarm_escalation_after_secs`.
pub const PANIC_UNACKNOWLEDGED: &str = "panic.unacknowledged";
/// An incident reached the server for the first time (a phone's push).
pub const INCIDENT_CREATED: &str = "incident.created";
/// A stored incident changed: a phone's push or an operator's action.
pub const INCIDENT_CHANGED: &str = "incident.changed";
/// A tour window turned final with checkpoints nobody scanned in time.
pub const WINDOW_MISSED: &str = "window.missed";
/// A device on shift has not synced for longer than its site's `no_contact_after_min`.
pub const DEVICE_SILENT: &str = "device.silent";
/// A lone worker's check-in is overdue: none reached the server by the timer's deadline and
/// its grace ([`super::check_ins`]).
pub const CHECK_IN_OVERDUE: &str = "checkin.overdue";

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    PANIC_RAISED,
    PANIC_UNACKNOWLEDGED,
    INCIDENT_CREATED,
    INCIDENT_CHANGED,
    WINDOW_MISSED,
    DEVICE_SILENT,
    CHECK_IN_OVERDUE,
];

/// Longest endpoint URL, in characters (as JSON Schema's `maxLength` counts).
pub const MAX_URL_LEN: usize = 2_000;

/// Most endpoints a site may have (each one multiplies every delivery).
pub const MAX_ENDPOINTS_PER_SITE: usize = 20;

/// How long a delivered delivery and its attempts are kept: a month of history to look at,
/// without an outbox that grows forever. Parked ones are kept until re-queued or removed.
pub const DELIVERED_KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// Most deliveries one listing returns (the latest).
pub const MAX_LISTED_DELIVERIES: u32 = 500;

/// An endpoint to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    pub site: SiteId,
    pub url: String,
    /// Some of [`EVENT_TYPES`], each once.
    pub events: Vec<String>,
    /// Signs every delivery; stored as given (see docs/operations.md).
    pub secret: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// An endpoint as stored (without its secret, which is shown once, when it is registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub site: SiteId,
    pub url: String,
    pub events: Vec<String>,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// Checks an endpoint's URL and event types: an absolute `http` or `https` URL with a host, at
/// most [`MAX_URL_LEN`] characters, no credentials nor fragment, no whitespace or control
/// characters; one to all of [`EVENT_TYPES`], each once. The message says what is wrong.
pub fn validate(url: &str, events: &[String]) -> Result<(), String> {
    if url.chars().count() > MAX_URL_LEN {
        return Err(format!("a webhook url is at most {MAX_URL_LEN} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a webhook url has no spaces or control characters".into());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("a webhook url is absolute and starts with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err("a webhook url names a host".into());
    }
    if authority.contains('@') {
        return Err("a webhook url carries no user name or password".into());
    }
    if url.contains('#') {
        return Err("a webhook url has no fragment (#...)".into());
    }
    if events.is_empty() {
        return Err(format!(
            "a webhook subscribes to at least one event type of {}",
            EVENT_TYPES.join(", ")
        ));
    }
    for (i, event) in events.iter().enumerate() {
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(format!(
                "unknown event type {event:?}: one of {}",
                EVENT_TYPES.join(", ")
            ));
        }
        if events[..i].contains(event) {
            return Err(format!("event type {event:?} is listed twice"));
        }
    }
    Ok(())
}

/// The stored form of an endpoint's event types: `,a,b,`, so that a backend finds the endpoints
/// subscribed to a type by looking for [`subscription_pattern`] in it.
pub fn events_column(events: &[String]) -> String {
    format!(",{},", events.join(","))
}

/// What the stored `events` column holds for a subscription to `event_type`.
pub fn subscription_pattern(event_type: &str) -> String {
    format!(",{event_type},")
}

/// The event types of a stored `events` column.
pub fn parse_events(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One event to deliver to the site's endpoints subscribed to its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub site: SiteId,
    pub event_type: &'static str,
    /// The idempotency key: the same for every endpoint and every attempt, and unique per
    /// endpoint (`{type}:{what it is about}`), so a receiver drops what it has seen.
    pub key: String,
    /// The JSON body sent, as stored (docs/protocol.md, "Webhooks").
    pub body: String,
    pub at_ms: i64,
}

fn outgoing(
    site: &SiteId,
    event_type: &'static str,
    about: String,
    at_ms: i64,
    data: serde_json::Value,
) -> Outgoing {
    let key = format!("{event_type}:{about}");
    let body = json!({
        "id": key,
        "type": event_type,
        "site_id": site.as_str(),
        "created_at": format_time_ms(at_ms),
        "data": data,
    })
    .to_string();
    Outgoing {
        site: site.clone(),
        event_type,
        key,
        body,
        at_ms,
    }
}

/// A panic the sync just stored.
#[derive(Debug)]
pub struct RaisedPanic<'a> {
    pub event: &'a EventId,
    pub device: &'a str,
    pub guard: &'a str,
    pub shift: &'a str,
    pub raised_at_ms: i64,
    pub corrected_ms: i64,
    pub received_at_ms: i64,
}

/// `panic.raised`, keyed by the panic's event id.
pub fn panic_raised(site: &SiteId, panic: &RaisedPanic<'_>) -> Outgoing {
    outgoing(
        site,
        PANIC_RAISED,
        panic.event.to_string(),
        panic.received_at_ms,
        json!({
            "event_id": panic.event.to_string(),
            "device_id": panic.device,
            "guard": panic.guard,
            "shift_id": panic.shift,
            "raised_at": format_time_ms(panic.raised_at_ms),
            "raised_at_corrected": format_time_ms(panic.corrected_ms),
            "received_at": format_time_ms(panic.received_at_ms),
        }),
    )
}

/// `panic.unacknowledged`, keyed by the panic's event id (a panic is escalated once).
pub fn panic_unacknowledged(site: &SiteId, alarm: &PanicAlarm, escalated_at_ms: i64) -> Outgoing {
    outgoing(
        site,
        PANIC_UNACKNOWLEDGED,
        alarm.event.to_string(),
        escalated_at_ms,
        json!({
            "event_id": alarm.event.to_string(),
            "device_id": alarm.device.to_string(),
            "guard": alarm.guard,
            "raised_at": format_time_ms(alarm.raised_at_ms),
            "raised_at_corrected": format_time_ms(alarm.corrected_ms),
            "received_at": format_time_ms(alarm.received_at_ms),
            "escalated_at": format_time_ms(escalated_at_ms),
        }),
    )
}

/// `incident.created` (keyed by the incident) when the write `created` its row, else
/// `incident.changed` (keyed by the incident and its new heads: each state once); the data is
/// the incident's state as the control-room API serves it.
pub fn incident(
    site: &SiteId,
    incident: IncidentId,
    created: bool,
    row: &IncidentRow,
    at_ms: i64,
) -> Outgoing {
    let (event_type, about) = if created {
        (INCIDENT_CREATED, incident.to_string())
    } else {
        let digest = Sha256::digest(&row.heads);
        let heads = hex::encode(&digest[..12]);
        (INCIDENT_CHANGED, format!("{incident}:{heads}"))
    };
    let state: serde_json::Value =
        serde_json::from_str(&row.state).unwrap_or(serde_json::Value::Null);
    outgoing(site, event_type, about, at_ms, json!({ "incident": state }))
}

/// `window.missed` for a compliance announcement that a window turned final with missed
/// checkpoints (`window_final` with `missed` above 0; nothing for any other), keyed by the tour
/// and the window's start (a window turns final once); the data is the announcement's
/// (docs/compliance.md). Queued wherever the window turns final: the finaliser's pass or the
/// sync that delivered the last of it.
pub fn window_missed(site: &SiteId, change: &Change, at_ms: i64) -> Option<Outgoing> {
    if change.kind != ChangeKind::WindowFinal || change.data["missed"].as_u64().unwrap_or(0) == 0 {
        return None;
    }
    let tour = change.data["tour_id"].as_str().unwrap_or_default();
    let start = change.data["start"].as_str().unwrap_or_default();
    Some(outgoing(
        site,
        WINDOW_MISSED,
        format!("{tour}:{start}"),
        at_ms,
        change.data.clone(),
    ))
}

/// `device.silent`, keyed by the device and the last contact the silence started from: one
/// silence is one delivery, whichever instance saw it and however often.
pub fn device_silent(
    site: &SiteId,
    device: &DeviceId,
    guard: Option<&str>,
    shift: Option<&str>,
    silent_since_ms: i64,
    no_contact_after_secs: u64,
    now_ms: i64,
) -> Outgoing {
    outgoing(
        site,
        DEVICE_SILENT,
        format!("{device}:{silent_since_ms}"),
        now_ms,
        json!({
            "device_id": device.to_string(),
            "guard": guard,
            "shift_id": shift,
            "silent_since": format_time_ms(silent_since_ms),
            "no_contact_after_secs": no_contact_after_secs,
        }),
    )
}

/// `checkin.overdue`, keyed by the shift and the deadline (each missed deadline once).
pub fn check_in_overdue(
    site: &SiteId,
    timer: &super::check_ins::CheckInTimerView,
    now_ms: i64,
) -> Outgoing {
    outgoing(
        site,
        CHECK_IN_OVERDUE,
        format!("{}:{}", timer.shift, timer.due_ms),
        now_ms,
        json!({
            "shift_id": timer.shift.to_string(),
            "device_id": timer.device.to_string(),
            "guard": timer.guard,
            "every_min": timer.every_min,
            "since": format_time_ms(timer.since_ms),
            "due_at": format_time_ms(timer.due_ms),
        }),
    )
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// To be sent (again) at its `next_attempt_at`.
    Pending,
    /// A 2xx answer came back.
    Delivered,
    /// Given up after the retry limit; an administrator may re-queue it.
    Parked,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Parked => "parked",
        }
    }

    pub fn parse(stored: &str) -> Result<Self, StoreError> {
        match stored {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "parked" => Ok(DeliveryState::Parked),
            other => Err(StoreError::CorruptData(format!(
                "unknown webhook delivery state {other:?}"
            ))),
        }
    }
}

/// One attempt at a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub at_ms: i64,
    /// The HTTP status answered, if an answer came.
    pub status: Option<u16>,
    /// Why it failed without an answer (timeout, connection refused), or `None`.
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A delivery as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: i64,
    pub site: SiteId,
    pub event_type: String,
    pub key: String,
    pub body: String,
    pub created_at_ms: i64,
    pub state: DeliveryState,
    /// Attempts since it was queued (or re-queued).
    pub attempts: u32,
    /// When it is due next (pending only).
    pub next_attempt_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    /// Every attempt, the first first.
    pub attempt_log: Vec<Attempt>,
}

/// A delivery claimed for sending, with what its endpoint needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: i64,
    pub url: String,
    pub secret: String,
    pub event_type: String,
    pub key: String,
    pub body: String,
    pub created_at_ms: i64,
    /// Attempts made before this one (the claim's check when its outcome is recorded).
    pub attempts: u32,
}

/// How failed deliveries are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles after each further one.
    pub base_ms: i64,
    /// The longest wait.
    pub cap_ms: i64,
    /// Parked at this many failed attempts.
    pub max_attempts: u32,
    /// Parked at a failure this long after the delivery was queued.
    pub max_age_ms: i64,
}

impl Default for RetryPolicy {
    /// 10 s doubling to 1 h, parked at the 24th failure or a day after it was queued: the waits
    /// add up to between 7.7 h and 15.4 h (with their jitter), so a receiver down for a night
    /// still gets everything.
    fn default() -> Self {
        RetryPolicy {
            base_ms: 10_000,
            cap_ms: 3_600_000,
            max_attempts: 24,
            max_age_ms: 24 * 3_600_000,
        }
    }
}

/// What to do with a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    /// Try again at this time.
    Retry {
        at_ms: i64,
    },
    Parked,
}

/// The step after `attempt`, the delivery's `attempts_before + 1`th: delivered on a 2xx; else
/// parked at the limits, or tried again after `min(cap, base * 2^(n-1))` with equal jitter
/// (`jitter` in `[0, 1)`: between half that wait and all of it), so that endpoints failing
/// together do not get their retries together.
pub fn next_step(
    policy: &RetryPolicy,
    created_at_ms: i64,
    attempts_before: u32,
    attempt: &Attempt,
    jitter: f64,
) -> NextStep {
    if attempt.succeeded() {
        return NextStep::Delivered;
    }
    let failures = attempts_before.saturating_add(1);
    if failures >= policy.max_attempts
        || attempt.at_ms.saturating_sub(created_at_ms) >= policy.max_age_ms
    {
        return NextStep::Parked;
    }
    let doublings = (failures - 1).min(40);
    let wait = policy
        .base_ms
        .saturating_mul(1_i64 << doublings)
        .min(policy.cap_ms)
        .max(1);
    let half = wait / 2;
    let jittered = half + ((wait - half) as f64 * jitter.clamp(0.0, 1.0)) as i64;
    NextStep::Retry {
        at_ms: attempt.at_ms.saturating_add(jittered.max(1)),
    }
}

/// The stored text of an attempt's error, bounded (a receiver's error page is not kept whole).
pub fn bounded_error(error: &str) -> String {
    const MAX: usize = 500;
    if error.len() <= MAX {
        return error.to_owned();
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(at_ms: i64) -> Attempt {
        Attempt {
            at_ms,
            status: Some(500),
            error: None,
            duration_ms: 3,
        }
    }

    /// 10 s, 20 s, 40 s ... capped at an hour, each between half and all of its wait; parked
    /// at the limit of attempts or of age; delivered on any 2xx.
    #[test]
    fn retries_back_off_with_jitter_and_park_at_the_limits() {
        let policy = RetryPolicy::default();
        let step = |before, jitter| next_step(&policy, 0, before, &failed(1_000), jitter);
        assert_eq!(step(0, 0.0), NextStep::Retry { at_ms: 6_000 });
        assert_eq!(step(0, 0.999_999), NextStep::Retry { at_ms: 10_999 });
        assert_eq!(step(2, 0.0), NextStep::Retry { at_ms: 21_000 });
        assert_eq!(step(20, 0.0), NextStep::Retry { at_ms: 1_801_000 });
        assert_eq!(step(23, 0.5), NextStep::Parked);
        let late = failed(policy.max_age_ms);
        assert_eq!(next_step(&policy, 0, 1, &late, 0.5), NextStep::Parked);
        let ok = Attempt {
            status: Some(204),
            ..failed(5)
        };
        assert_eq!(next_step(&policy, 0, 23, &ok, 0.5), NextStep::Delivered);
        let timeout = Attempt {
            status: None,
            error: Some("timed out".into()),
            ..failed(5)
        };
        assert!(matches!(
            next_step(&policy, 0, 0, &timeout, 0.5),
            NextStep::Retry { .. }
        ));
    }

    /// Only a window turning final with missed checkpoints is `window.missed`, keyed by its
    /// tour and start.
    #[test]
    fn a_window_final_with_missed_checkpoints_is_window_missed()
    -> Result<(), Box<dyn std::error::Error>> {
        let site = SiteId::new("site-1")?;
        let head = json!({"tour_id": "night", "start": "2025-03-01T22:00:00.000Z", "missed": 2});
        let final_ = Change {
            kind: ChangeKind::WindowFinal,
            data: head.clone(),
        };
        let out = window_missed(&site, &final_, 7).ok_or("not window.missed")?;
        assert_eq!(out.key, "window.missed:night:2025-03-01T22:00:00.000Z");
        let body: serde_json::Value = serde_json::from_str(&out.body)?;
        assert_eq!(
            (body["type"].clone(), body["data"]["missed"].clone()),
            (json!("window.missed"), json!(2))
        );
        let all_done = Change {
            kind: ChangeKind::WindowFinal,
            data: json!({"tour_id": "night", "start": "x", "missed": 0}),
        };
        assert_eq!(window_missed(&site, &all_done, 7), None);
        let changed = Change {
            kind: ChangeKind::WindowChanged,
            data: head,
        };
        assert_eq!(window_missed(&site, &changed, 7), None);
        Ok(())
    }

    #[test]
    fn urls_and_event_types_are_checked() {
        let events = vec![PANIC_RAISED.to_owned()];
        assert_eq!(validate("https://example.org/hook?a=1", &events), Ok(()));
        assert_eq!(validate("http://127.0.0.1:8080", &events), Ok(()));
        for bad in [
            "ftp://example.org",
            "example.org/hook",
            "https://",
            "https://:80/x",
            "https://user:pw@example.org",
            "https://example.org/a b",
            "https://example.org/#x",
        ] {
            assert!(validate(bad, &events).is_err(), "{bad}");
        }
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate(&long, &events).is_err());
        assert!(validate("https://example.org", &[]).is_err());
        assert!(validate("https://example.org", &["panic".into()]).is_err());
        let twice = vec![PANIC_RAISED.to_owned(), PANIC_RAISED.to_owned()];
        assert!(validate("https://example.org", &twice).is_err());
        assert_eq!(
            parse_events(&events_column(&[PANIC_RAISED.into(), DEVICE_SILENT.into()])),
            vec![PANIC_RAISED.to_owned(), DEVICE_SILENT.to_owned()]
        );
    }
}
