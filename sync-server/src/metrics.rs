//! The server's counters and their Prometheus text exposition, served on `GET /metrics` by the
//! HTTP layer (`http/health.rs`). Nothing here knows HTTP routes or state: the HTTP layer feeds
//! and serves the counters, never the other way round.
//!
//! Counters are plain atomics in one shared [`Metrics`]: a handful of numbers does not need a
//! metrics registry, and an increment on the request path is one relaxed `fetch_add`. Relaxed
//! ordering is enough because every counter is independent and only ever read as a total.
//!
//! What feeds them:
//! - the wire counters: `http::counting::CountingListener`, which wraps every socket
//!   `serve` accepts on the main listener;
//! - the HTTP counters: `http::counting::count_traffic`, the outermost layer of the router;
//! - the domain counters: the sync handler, from each document's outcome;
//! - the admission counters and the waiting gauge: the sync handler's admission
//!   (`http::admission`: its permits and bounded queue), refusals by [`BusyReason`];
//! - the panic latencies, a [`Histogram`] each: the acknowledgement handler, at a panic's
//!   first acknowledgement (`http::alarms`); escalations: the alarm watcher
//!   (`http::alarm_watch`).
//!
//! The same text is served on the main router and, with `--metrics-listen`, on a side listener
//! (`http::health::metrics_router`, `serve_metrics`) that goes through neither wrapper, so
//! reading the counters there does not change them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use patrol_core::protocol::RejectCode;

/// Content type of the Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status classes as exported; index = first digit of the status - 1.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a sync request was refused a permit (`http::admission`): the `reason` label of
/// `patrol_sync_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyReason {
    /// `max_waiting` requests were already waiting.
    QueueFull,
    /// It waited `max_wait` without a permit.
    WaitedTooLong,
}

impl BusyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BusyReason::QueueFull => "queue_full",
            BusyReason::WaitedTooLong => "wait_timeout",
        }
    }
}

/// The server's traffic and domain counters, shared by the listener, the middleware and the
/// handlers (hold it in an `Arc`). All are monotonic totals since the process started.
#[derive(Debug)]
pub struct Metrics {
    wire_connections: AtomicU64,
    /// Accepted connections closed at once for a connection cap, by cap.
    wire_refused_overall: AtomicU64,
    wire_refused_per_address: AtomicU64,
    wire_read_bytes: AtomicU64,
    wire_written_bytes: AtomicU64,
    http_requests: AtomicU64,
    http_responses: [AtomicU64; 5],
    http_request_body_bytes: AtomicU64,
    http_response_body_bytes: AtomicU64,
    sync_requests: AtomicU64,
    docs_accepted: AtomicU64,
    /// By reject code. Rejections are rare, so a lock costs nothing that matters, and a map
    /// keeps codes added to patrol-core later without a change here.
    docs_rejected: Mutex<BTreeMap<&'static str, u64>>,
    events_inserted: AtomicU64,
    /// Sync requests that waited for a permit, refused ones by reason, and those waiting now.
    sync_queued: AtomicU64,
    sync_refused_queue_full: AtomicU64,
    sync_refused_wait_timeout: AtomicU64,
    sync_waiting: AtomicU64,
    /// Sync requests admitted through the panic lane.
    panic_syncs: AtomicU64,
    /// Failed authentications, and requests refused because their address failed too often
    /// (`http::throttle`).
    auth_failures: AtomicU64,
    auth_refused: AtomicU64,
    /// Sign-ins with a wrong name or password (and wrong current passwords at a change).
    sign_in_failures: AtomicU64,
    /// Panic alarms: raised (corrected phone time) to received, and received to acknowledged,
    /// observed at their first acknowledgement; escalated for want of one.
    panic_delivery: Histogram,
    panic_acknowledgement: Histogram,
    alarm_escalations: AtomicU64,
    check_ins_overdue: AtomicU64,
    /// Webhook attempts by outcome: delivered, failed (to be retried), parked.
    webhooks_delivered: AtomicU64,
    webhooks_failed: AtomicU64,
    webhooks_parked: AtomicU64,
}

/// Upper bounds of the panic latency buckets, in seconds: from the panic lane's second or
/// two to an alarm left an hour.
const PANIC_BUCKETS_SECS: [u64; 11] = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1_800, 3_600];

/// A Prometheus histogram of durations over [`PANIC_BUCKETS_SECS`], kept in milliseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (the last: above every bound), not cumulative.
    buckets: [AtomicU64; PANIC_BUCKETS_SECS.len() + 1],
    sum_ms: AtomicU64,
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative, as exposed: observations at or below each bound, then all of them.
    pub cumulative: Vec<u64>,
    pub sum_ms: u64,
}

impl Histogram {
    /// Records one duration; a negative one (clocks disagree) counts as zero.
    pub fn observe_ms(&self, ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        let bucket = PANIC_BUCKETS_SECS
            .iter()
            .position(|&bound| ms <= bound * 1000)
            .unwrap_or(PANIC_BUCKETS_SECS.len());
        add(&self.buckets[bucket], 1);
        add(&self.sum_ms, ms);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        HistogramSnapshot {
            cumulative: self
                .buckets
                .iter()
                .map(|b| {
                    total += load(b);
                    total
                })
                .collect(),
            sum_ms: load(&self.sum_ms),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let bounds = PANIC_BUCKETS_SECS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_owned()]);
        for (bound, n) in bounds.zip(&self.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_sum {}.{:03}\n{name}_count {}",
            self.sum_ms / 1000,
            self.sum_ms % 1000,
            self.count()
        );
    }
}

/// A copy of every counter at one moment (each read on its own, so not one atomic snapshot of
/// all of them; in a quiet server they agree).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub wire_connections: u64,
    pub wire_refused_overall: u64,
    pub wire_refused_per_address: u64,
    pub wire_read_bytes: u64,
    pub wire_written_bytes: u64,
    pub http_requests: u64,
    /// Responses by status class, `1xx` to `5xx`.
    pub http_responses: [u64; 5],
    pub http_request_body_bytes: u64,
    pub http_response_body_bytes: u64,
    pub sync_requests: u64,
    pub docs_accepted: u64,
    pub docs_rejected: BTreeMap<&'static str, u64>,
    pub events_inserted: u64,
    pub sync_queued: u64,
    pub sync_refused_queue_full: u64,
    pub sync_refused_wait_timeout: u64,
    /// A gauge: sync requests waiting for a permit at the moment of the snapshot.
    pub sync_waiting: u64,
    pub panic_syncs: u64,
    pub auth_failures: u64,
    pub auth_refused: u64,
    pub sign_in_failures: u64,
    pub panic_delivery: HistogramSnapshot,
    pub panic_acknowledgement: HistogramSnapshot,
    pub alarm_escalations: u64,
    pub check_ins_overdue: u64,
    pub webhooks_delivered: u64,
    pub webhooks_failed: u64,
    pub webhooks_parked: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            wire_connections: AtomicU64::new(0),
            wire_refused_overall: AtomicU64::new(0),
            wire_refused_per_address: AtomicU64::new(0),
            wire_read_bytes: AtomicU64::new(0),
            wire_written_bytes: AtomicU64::new(0),
            http_requests: AtomicU64::new(0),
            http_responses: Default::default(),
            http_request_body_bytes: AtomicU64::new(0),
            http_response_body_bytes: AtomicU64::new(0),
            sync_requests: AtomicU64::new(0),
            docs_accepted: AtomicU64::new(0),
            docs_rejected: Mutex::new(
                RejectCode::ALL
                    .iter()
                    .map(|code| (code.as_str(), 0))
                    .collect(),
            ),
            events_inserted: AtomicU64::new(0),
            sync_queued: AtomicU64::new(0),
            sync_refused_queue_full: AtomicU64::new(0),
            sync_refused_wait_timeout: AtomicU64::new(0),
            sync_waiting: AtomicU64::new(0),
            panic_syncs: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_refused: AtomicU64::new(0),
            sign_in_failures: AtomicU64::new(0),
            panic_delivery: Histogram::default(),
            panic_acknowledgement: Histogram::default(),
            alarm_escalations: AtomicU64::new(0),
            check_ins_overdue: AtomicU64::new(0),
            webhooks_delivered: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            webhooks_parked: AtomicU64::new(0),
        }
    }

    /// A lone worker's check-in found overdue (and recorded) by this instance.
    pub fn add_check_in_overdue(&self) {
        add(&self.check_ins_overdue, 1);
    }

    /// A panic alarm's first acknowledgement: `delivery_ms` from its raise (the phone's time,
    /// corrected) to its receipt, `acknowledgement_ms` from its receipt to now.
    pub fn observe_panic_acknowledged(&self, delivery_ms: i64, acknowledgement_ms: i64) {
        self.panic_delivery.observe_ms(delivery_ms);
        self.panic_acknowledgement.observe_ms(acknowledgement_ms);
    }

    /// An attempt at a webhook delivery, by its outcome.
    pub fn add_webhook_attempt(&self, next: crate::store::webhooks::NextStep) {
        use crate::store::webhooks::NextStep;
        add(
            match next {
                NextStep::Delivered => &self.webhooks_delivered,
                NextStep::Retry { .. } => &self.webhooks_failed,
                NextStep::Parked => &self.webhooks_parked,
            },
            1,
        );
    }

    /// A panic alarm escalated: nobody acknowledged it in its site's time.
    pub fn add_alarm_escalation(&self) {
        add(&self.alarm_escalations, 1);
    }

    /// A credential or enrollment code presented and refused.
    pub fn auth_failed(&self) {
        add(&self.auth_failures, 1);
    }

    /// A sign-in refused for a wrong name or password.
    pub fn sign_in_failed(&self) {
        add(&self.sign_in_failures, 1);
    }

    /// A request refused with `429 too_many_failed_attempts`.
    pub fn auth_refused(&self) {
        add(&self.auth_refused, 1);
    }

    pub fn add_wire_connection(&self) {
        add(&self.wire_connections, 1);
    }

    /// An accepted connection closed at once: the overall cap (`per_address` false) or its
    /// address's cap was reached.
    pub fn add_wire_refused(&self, per_address: bool) {
        add(
            if per_address {
                &self.wire_refused_per_address
            } else {
                &self.wire_refused_overall
            },
            1,
        );
    }

    pub fn add_wire_read(&self, bytes: usize) {
        add(&self.wire_read_bytes, bytes as u64);
    }

    pub fn add_wire_written(&self, bytes: usize) {
        add(&self.wire_written_bytes, bytes as u64);
    }

    pub fn add_http_request(&self) {
        add(&self.http_requests, 1);
    }

    /// Counts a response under its status class; a status outside 100-599 (which `http` does
    /// not construct) is not counted.
    pub fn add_http_response(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100);
        if let Some(counter) = class
            .checked_sub(1)
            .and_then(|i| self.http_responses.get(i))
        {
            add(counter, 1);
        }
    }

    pub fn add_http_request_body(&self, bytes: usize) {
        add(&self.http_request_body_bytes, bytes as u64);
    }

    pub fn add_http_response_body(&self, bytes: usize) {
        add(&self.http_response_body_bytes, bytes as u64);
    }

    pub fn add_sync_request(&self) {
        add(&self.sync_requests, 1);
    }

    /// A sync request that took the panic lane.
    pub fn add_panic_sync(&self) {
        add(&self.panic_syncs, 1);
    }

    /// An accepted document push and the events it inserted into the projection.
    pub fn add_doc_accepted(&self, new_events: u32) {
        add(&self.docs_accepted, 1);
        add(&self.events_inserted, u64::from(new_events));
    }

    pub fn add_doc_rejected(&self, code: RejectCode) {
        // A panic while holding this lock cannot leave the map inconsistent (one `+= 1`), so a
        // poisoned lock is still good to use.
        let mut map = self
            .docs_rejected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *map.entry(code.as_str()).or_insert(0) += 1;
    }

    /// A sync request starts waiting for a permit.
    pub fn enter_sync_queue(&self) {
        add(&self.sync_queued, 1);
        add(&self.sync_waiting, 1);
    }

    /// A sync request stops waiting (admitted, refused or gone); paired with
    /// [`Metrics::enter_sync_queue`].
    pub fn leave_sync_queue(&self) {
        self.sync_waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// A sync request refused admission with `503 server_busy`.
    pub fn add_sync_refused(&self, reason: BusyReason) {
        add(
            match reason {
                BusyReason::QueueFull => &self.sync_refused_queue_full,
                BusyReason::WaitedTooLong => &self.sync_refused_wait_timeout,
            },
            1,
        );
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            wire_connections: load(&self.wire_connections),
            wire_refused_overall: load(&self.wire_refused_overall),
            wire_refused_per_address: load(&self.wire_refused_per_address),
            wire_read_bytes: load(&self.wire_read_bytes),
            wire_written_bytes: load(&self.wire_written_bytes),
            http_requests: load(&self.http_requests),
            http_responses: std::array::from_fn(|i| load(&self.http_responses[i])),
            http_request_body_bytes: load(&self.http_request_body_bytes),
            http_response_body_bytes: load(&self.http_response_body_bytes),
            sync_requests: load(&self.sync_requests),
            docs_accepted: load(&self.docs_accepted),
            docs_rejected: self
                .docs_rejected
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            events_inserted: load(&self.events_inserted),
            sync_queued: load(&self.sync_queued),
            sync_refused_queue_full: load(&self.sync_refused_queue_full),
            sync_refused_wait_timeout: load(&self.sync_refused_wait_timeout),
            sync_waiting: load(&self.sync_waiting),
            panic_syncs: load(&self.panic_syncs),
            auth_failures: load(&self.auth_failures),
            auth_refused: load(&self.auth_refused),
            sign_in_failures: load(&self.sign_in_failures),
            panic_delivery: self.panic_delivery.snapshot(),
            panic_acknowledgement: self.panic_acknowledgement.snapshot(),
            alarm_escalations: load(&self.alarm_escalations),
            check_ins_overdue: load(&self.check_ins_overdue),
            webhooks_delivered: load(&self.webhooks_delivered),
            webhooks_failed: load(&self.webhooks_failed),
            webhooks_parked: load(&self.webhooks_parked),
        }
    }

    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.snapshot().render()
    }
}

impl MetricsSnapshot {
    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |kind: &str, name: &str, help: &str, series: &[(&str, u64)]| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let mut counter =
            |name: &str, help: &str, series: &[(&str, u64)]| metric("counter", name, help, series);
        counter(
            "patrol_wire_connections_total",
            "TCP connections accepted on the main listener.",
            &[("", self.wire_connections)],
        );
        counter(
            "patrol_wire_refused_connections_total",
            "Accepted connections closed at once because a connection cap was reached, by cap.",
            &[
                ("{cap=\"overall\"}", self.wire_refused_overall),
                ("{cap=\"per_address\"}", self.wire_refused_per_address),
            ],
        );
        counter(
            "patrol_wire_read_bytes_total",
            "TCP payload bytes read from sockets accepted on the main listener (HTTP headers, framing and bodies).",
            &[("", self.wire_read_bytes)],
        );
        counter(
            "patrol_wire_written_bytes_total",
            "TCP payload bytes written to sockets accepted on the main listener (HTTP headers, framing and bodies).",
            &[("", self.wire_written_bytes)],
        );
        counter(
            "patrol_http_requests_total",
            "HTTP requests received by the API.",
            &[("", self.http_requests)],
        );
        let classes: Vec<(String, u64)> = STATUS_CLASSES
            .iter()
            .zip(self.http_responses)
            .map(|(class, n)| (format!("{{class=\"{class}\"}}"), n))
            .collect();
        let classes: Vec<(&str, u64)> = classes.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        counter(
            "patrol_http_responses_total",
            "HTTP responses sent by the API, by status class.",
            &classes,
        );
        counter(
            "patrol_http_request_body_bytes_total",
            "HTTP request body bytes read by the API (as received, before any decoding).",
            &[("", self.http_request_body_bytes)],
        );
        counter(
            "patrol_http_response_body_bytes_total",
            "HTTP response body bytes sent by the API (after any Content-Encoding).",
            &[("", self.http_response_body_bytes)],
        );
        counter(
            "patrol_sync_requests_total",
            "Sync requests (POST /api/v1/sync) received.",
            &[("", self.sync_requests)],
        );
        counter(
            "patrol_sync_docs_accepted_total",
            "Document pushes (shift logs and incidents) accepted, including repeats that added nothing.",
            &[("", self.docs_accepted)],
        );
        // Reject codes are snake_case identifiers, so they need no escaping as label values.
        let codes: Vec<(String, u64)> = self
            .docs_rejected
            .iter()
            .map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n))
            .collect();
        let codes: Vec<(&str, u64)> = codes.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        counter(
            "patrol_sync_docs_rejected_total",
            "Document pushes (shift logs and incidents) rejected, by reject code.",
            &codes,
        );
        counter(
            "patrol_events_inserted_total",
            "Events inserted into the site feed (the projection); repeats are not counted.",
            &[("", self.events_inserted)],
        );
        counter(
            "patrol_sync_queued_total",
            "Sync requests that found no permit free and waited for one.",
            &[("", self.sync_queued)],
        );
        counter(
            "patrol_sync_refused_total",
            "Sync requests refused with 503 server_busy, body unread: the wait queue was full, or the request waited too long.",
            &[
                ("{reason=\"queue_full\"}", self.sync_refused_queue_full),
                ("{reason=\"wait_timeout\"}", self.sync_refused_wait_timeout),
            ],
        );
        counter(
            "patrol_sync_panic_total",
            "Sync requests that carried a panic alarm and were admitted through the panic lane, ahead of the queue.",
            &[("", self.panic_syncs)],
        );
        counter(
            "patrol_auth_failures_total",
            "Credentials and enrollment codes presented and refused (each is logged with the client address and the reason).",
            &[("", self.auth_failures)],
        );
        counter(
            "patrol_sign_in_failures_total",
            "Sign-ins with a wrong name or password, and password changes with a wrong current password (each also counts in patrol_auth_failures_total).",
            &[("", self.sign_in_failures)],
        );
        counter(
            "patrol_auth_throttled_total",
            "Requests refused with 429 too_many_failed_attempts: their address failed to authenticate too often.",
            &[("", self.auth_refused)],
        );
        metric(
            "gauge",
            "patrol_sync_waiting",
            "Sync requests waiting for a permit now.",
            &[("", self.sync_waiting)],
        );
        let _ = writeln!(
            out,
            "# HELP patrol_alarm_escalations_total Panic alarms escalated by this instance: nobody acknowledged them within their site's alarm_escalation_after_secs of their receipt.\n# TYPE patrol_alarm_escalations_total counter\npatrol_alarm_escalations_total {}",
            self.alarm_escalations
        );
        let _ = writeln!(
            out,
            "# HELP patrol_check_ins_overdue_total Lone workers' check-ins this instance found overdue: no check-in reached the server by the timer's deadline and its grace.\n# TYPE patrol_check_ins_overdue_total counter\npatrol_check_ins_overdue_total {}",
            self.check_ins_overdue
        );
        let _ = writeln!(
            out,
            "# HELP patrol_webhook_deliveries_total Webhook attempts made by this instance, by outcome: delivered (a 2xx answer), failed (to be retried), parked (failed at the retry limit).\n# TYPE patrol_webhook_deliveries_total counter\npatrol_webhook_deliveries_total{{outcome=\"delivered\"}} {}\npatrol_webhook_deliveries_total{{outcome=\"failed\"}} {}\npatrol_webhook_deliveries_total{{outcome=\"parked\"}} {}",
            self.webhooks_delivered, self.webhooks_failed, self.webhooks_parked
        );
        self.panic_delivery.render(
            &mut out,
            "patrol_panic_delivery_seconds",
            "From a panic alarm's raise (the phone's time, corrected by its clock offset) to its receipt by the server, observed at its first acknowledgement (through this instance).",
        );
        self.panic_acknowledgement.render(
            &mut out,
            "patrol_panic_acknowledgement_seconds",
            "From a panic alarm's receipt by the server to its first acknowledgement (through this instance).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let m = Metrics::new();
        m.add_wire_read(10);
        m.add_wire_written(20);
        m.add_http_request();
        m.add_http_response(StatusCode::OK);
        m.add_http_response(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        m.add_doc_accepted(7);
        m.add_doc_rejected(RejectCode::WrongOwner);
        m.add_doc_rejected(RejectCode::WrongOwner);
        m.enter_sync_queue();
        m.enter_sync_queue();
        m.leave_sync_queue();
        m.add_sync_refused(BusyReason::QueueFull);
        m.add_panic_sync();
        m.observe_panic_acknowledged(1_500, 45_000);
        m.observe_panic_acknowledged(-20, 4_000_000);
        m.add_alarm_escalation();
        let text = m.render();
        for line in [
            "patrol_wire_read_bytes_total 10",
            "patrol_wire_written_bytes_total 20",
            "patrol_http_requests_total 1",
            "patrol_http_responses_total{class=\"2xx\"} 1",
            "patrol_http_responses_total{class=\"4xx\"} 1",
            "patrol_http_responses_total{class=\"5xx\"} 0",
            "patrol_sync_docs_accepted_total 1",
            "patrol_sync_docs_rejected_total{code=\"wrong_owner\"} 2",
            "patrol_sync_docs_rejected_total{code=\"malformed\"} 0",
            "patrol_sync_docs_rejected_total{code=\"bad_signature\"} 0",
            "patrol_events_inserted_total 7",
            "# TYPE patrol_events_inserted_total counter",
            "patrol_sync_queued_total 2",
            "patrol_sync_refused_total{reason=\"queue_full\"} 1",
            "patrol_sync_refused_total{reason=\"wait_timeout\"} 0",
            "patrol_sync_waiting 1",
            "# TYPE patrol_sync_waiting gauge",
            "patrol_sync_panic_total 1",
            "patrol_alarm_escalations_total 1",
            "# TYPE patrol_panic_delivery_seconds histogram",
            "patrol_panic_delivery_seconds_bucket{le=\"1\"} 1",
            "patrol_panic_delivery_seconds_bucket{le=\"2\"} 2",
            "patrol_panic_delivery_seconds_bucket{le=\"+Inf\"} 2",
            "patrol_panic_delivery_seconds_sum 1.500",
            "patrol_panic_delivery_seconds_count 2",
            "patrol_panic_acknowledgement_seconds_bucket{le=\"30\"} 0",
            "patrol_panic_acknowledgement_seconds_bucket{le=\"60\"} 1",
            "patrol_panic_acknowledgement_seconds_bucket{le=\"3600\"} 1",
            "patrol_panic_acknowledgement_seconds_bucket{le=\"+Inf\"} 2",
            "patrol_panic_acknowledgement_seconds_sum 4045.000",
            "patrol_panic_acknowledgement_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with('\n'));
    }
}
