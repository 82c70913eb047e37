//! Admission of sync requests: a bounded number at once, a bounded queue behind them, and a
//! bounded wait, so that a flood of phones is answered `503 server_busy` in time rather than
//! piling up (`SyncAdmission`). The defaults are the command line's
//! ([`crate::config::DEFAULT_CONCURRENT_SYNCS_PER_CPU`] and its neighbours).
//!
//! A sync that carries a panic alarm (the phone says so:
//! [`patrol_core::protocol::PRIORITY_HEADER`]) takes the panic lane instead: permits of its own,
//! never the ordinary queue, so however many phones are waiting it is admitted at once, and it
//! is never refused for their load. The lane is small and so are its bodies
//! ([`patrol_core::protocol::MAX_PANIC_SYNC_BODY_BYTES`]): a phone that claims a panic falsely
//! gets no further than other panics' lane.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::AppError;
use crate::config::DEFAULT_MAX_SYNC_WAIT_MS;
use crate::metrics::{BusyReason, Metrics};

/// How long a sync request may wait for a permit before it is refused, unless set otherwise
/// ([`AppState::with_max_sync_wait`](super::AppState::with_max_sync_wait)): well inside a phone's 30 s request timeout.
pub const DEFAULT_MAX_SYNC_WAIT: Duration = Duration::from_millis(DEFAULT_MAX_SYNC_WAIT_MS);

/// Panic syncs handled at once. A panic sync is one small request; more than this many at
/// once on one server means a site-wide emergency, and the next waits for one of them only.
pub const PANIC_LANE_PERMITS: usize = 16;

/// The limits of [`SyncAdmission`].
#[derive(Clone, Copy, Debug)]
pub(super) struct AdmissionLimits {
    pub(super) permits: usize,
    pub(super) max_waiting: usize,
    pub(super) max_wait: Duration,
    pub(super) retry_after_secs: u64,
}

/// Admits sync requests: a request's body is read only once it holds a permit, so that however
/// many devices sync at once, the server holds the bodies of a bounded number of them (the
/// others wait in their sockets). Bodies are small; the store bounds the larger merge results
/// separately. Enough permits that the server always has bodies at hand while slow clients
/// finish sending theirs.
///
/// The wait is bounded too, in length and in time: a request that finds `max_waiting` others
/// already waiting, or that waited `max_wait`, is answered `503 server_busy` with a
/// `Retry-After`, its body unread and nothing changed. Without the bound, a flood of phones
/// would pile up waiting requests (each a socket and a task) until they time out at the phones
/// and are sent again on top of the queue, and the server would answer no one in time.
#[derive(Debug)]
pub(super) struct SyncAdmission {
    permits: Arc<Semaphore>,
    /// The panic lane's own permits.
    panic_permits: Arc<Semaphore>,
    /// Requests waiting for a permit now.
    waiting: AtomicUsize,
    pub(super) limits: AdmissionLimits,
}

/// Takes a request off the waiting count however its wait ends (a permit, the time bound, or
/// the client going away, which drops the handler's future).
struct Waiting<'a> {
    admission: &'a SyncAdmission,
    metrics: &'a Metrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
        self.metrics.leave_sync_queue();
    }
}

impl SyncAdmission {
    pub(super) fn new(limits: AdmissionLimits) -> Self {
        SyncAdmission {
            permits: Arc::new(Semaphore::new(limits.permits)),
            panic_permits: Arc::new(Semaphore::new(PANIC_LANE_PERMITS)),
            waiting: AtomicUsize::new(0),
            limits,
        }
    }

    /// A permit at once if one is free, else after a bounded wait in the queue, or the reason
    /// there is none.
    pub(super) async fn admit(&self, metrics: &Metrics) -> Result<OwnedSemaphorePermit, AppError> {
        let busy = |reason: BusyReason| {
            metrics.add_sync_refused(reason);
            AppError::ServerBusy {
                reason: reason.as_str(),
                retry_after_secs: self.limits.retry_after_secs,
            }
        };
        // The semaphore is never closed, so the only failure is "no permit free".
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let max = self.limits.max_waiting;
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(busy(BusyReason::QueueFull));
        }
        metrics.enter_sync_queue();
        let _waiting = Waiting {
            admission: self,
            metrics,
        };
        match tokio::time::timeout(self.limits.max_wait, self.permits.clone().acquire_owned()).await
        {
            Ok(permit) => permit.map_err(AppError::internal),
            Err(_) => Err(busy(BusyReason::WaitedTooLong)),
        }
    }

    /// A permit of the panic lane: at once, whatever waits in the ordinary queue; if the lane
    /// is full (a site-wide emergency), as soon as one of its panics is answered. Never
    /// refused: a panic that cannot be admitted is the one request that must not be dropped
    /// (the phone's own timeout bounds the wait).
    pub(super) async fn admit_panic(
        &self,
        metrics: &Metrics,
    ) -> Result<OwnedSemaphorePermit, AppError> {
        metrics.add_panic_sync();
        self.panic_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(AppError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;

    /// However full the ordinary queue, a panic is admitted at once, in its own lane; the
    /// ordinary requests behind are still refused.
    #[tokio::test]
    async fn a_panic_is_admitted_at_once_whatever_waits() -> Result<(), AppError> {
        use futures_util::FutureExt as _;
        let admission = SyncAdmission::new(AdmissionLimits {
            permits: 1,
            max_waiting: 1,
            max_wait: Duration::from_secs(60),
            retry_after_secs: 3,
        });
        let metrics = Metrics::new();
        let _held = admission.admit(&metrics).await?;
        let waiter = admission.admit(&metrics);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        assert!(
            admission.admit(&metrics).await.is_err(),
            "the queue is full"
        );
        let panic = admission.admit_panic(&metrics).now_or_never();
        assert!(matches!(panic, Some(Ok(_))), "the panic waited");
        assert_eq!(metrics.snapshot().panic_syncs, 1);
        assert!(
            waiter.as_mut().now_or_never().is_none(),
            "and jumped no one"
        );
        Ok(())
    }

    #[tokio::test]
    async fn admission_queues_up_to_its_bound_then_refuses() -> Result<(), AppError> {
        use futures_util::FutureExt as _;
        let admission = SyncAdmission::new(AdmissionLimits {
            permits: 1,
            max_waiting: 1,
            max_wait: Duration::from_millis(50),
            retry_after_secs: 3,
        });
        let metrics = Metrics::new();
        let held = admission.admit(&metrics).await?;
        // One may wait; while it does, the next is refused at once.
        let waiter = admission.admit(&metrics);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        assert_eq!(metrics.snapshot().sync_waiting, 1);
        match admission.admit(&metrics).await {
            Err(e @ AppError::ServerBusy { .. }) => {
                assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(e.code(), "server_busy");
                let response = e.into_response();
                assert_eq!(response.headers()[header::RETRY_AFTER], "3");
            }
            other => panic!("expected server_busy, got {other:?}"),
        }
        // The waiter waits out its bound.
        assert!(matches!(
            waiter.await,
            Err(AppError::ServerBusy {
                reason: "wait_timeout",
                ..
            })
        ));
        let m = metrics.snapshot();
        assert_eq!(
            (
                m.sync_waiting,
                m.sync_queued,
                m.sync_refused_queue_full,
                m.sync_refused_wait_timeout
            ),
            (0, 1, 1, 1)
        );
        // A freed permit goes to the next request.
        drop(held);
        let again = admission.admit(&metrics).await?;
        // And one freed while a request waits goes to it.
        let waiter = admission.admit(&metrics);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        drop(again);
        let _admitted = waiter.await?;
        assert_eq!(metrics.snapshot().sync_waiting, 0);
        Ok(())
    }
}
