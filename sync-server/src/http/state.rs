//! [`AppState`]: what every handler shares (the store, the API settings, the counters, the sync
//! admission queue, the live feed's wake-ups), and the settings of its admission limits, made
//! at start-up.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use super::admission::{AdmissionLimits, DEFAULT_MAX_SYNC_WAIT, SyncAdmission};
use super::live::FeedNotifier;
use super::throttle::AuthThrottle;
use crate::config::{
    ApiConfig, DEFAULT_CONCURRENT_SYNCS_PER_CPU, DEFAULT_QUEUED_SYNCS_PER_CPU,
    DEFAULT_SYNC_RETRY_AFTER_SECS,
};
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler shares: the store, the API settings and the counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    /// Admits sync requests ([`SyncAdmission`]).
    pub(super) syncs: Arc<SyncAdmission>,
    /// Attachment uploads handled at once ([`super::attachments`]): a pool of its own, small
    /// and never queued, so that uploads never take what syncs need.
    pub(super) uploads: Arc<tokio::sync::Semaphore>,
    /// Wakes live feed streams when a site gets new events.
    pub feed: Arc<FeedNotifier>,
    /// Failed authentications per client address ([`AuthThrottle`]).
    pub throttle: Arc<AuthThrottle>,
    /// Password hashes computed at once (argon2id: 19 MiB and tens of milliseconds each), so
    /// that a burst of sign-ins queues instead of taking the memory and every core.
    pub(super) hashing: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, ApiConfig::default())
    }

    pub fn with_config(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        AppState {
            store,
            throttle: Arc::new(AuthThrottle::new(config.auth_throttle.clone())),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            syncs: Arc::new(SyncAdmission::new(AdmissionLimits {
                permits: DEFAULT_CONCURRENT_SYNCS_PER_CPU * cpus,
                max_waiting: DEFAULT_QUEUED_SYNCS_PER_CPU * cpus,
                max_wait: DEFAULT_MAX_SYNC_WAIT,
                retry_after_secs: DEFAULT_SYNC_RETRY_AFTER_SECS,
            })),
            uploads: Arc::new(tokio::sync::Semaphore::new(cpus.max(2))),
            hashing: Arc::new(tokio::sync::Semaphore::new(cpus.max(2))),
            feed: Arc::new(FeedNotifier::default()),
        }
    }

    /// Sets the admission limits; meant for start-up, before any request (requests already
    /// waiting keep the old limits).
    fn with_limits(mut self, change: impl FnOnce(&mut AdmissionLimits)) -> Self {
        let mut limits = self.syncs.limits;
        change(&mut limits);
        self.syncs = Arc::new(SyncAdmission::new(limits));
        self
    }

    /// Handles at most `n` (at least 1) sync requests at once.
    pub fn with_max_concurrent_syncs(self, n: usize) -> Self {
        self.with_limits(|l| l.permits = n.max(1))
    }

    /// Lets at most `n` sync requests wait for a permit; more are refused at once with `503
    /// server_busy`. 0 refuses every request that finds no permit free.
    pub fn with_max_queued_syncs(self, n: usize) -> Self {
        self.with_limits(|l| l.max_waiting = n)
    }

    /// Refuses, with `503 server_busy`, a sync request that waited `wait` for a permit.
    pub fn with_max_sync_wait(self, wait: Duration) -> Self {
        self.with_limits(|l| l.max_wait = wait)
    }

    /// Handles at most `n` attachment chunks at once (0: refuses every upload, for tests);
    /// meant for start-up.
    pub fn with_max_concurrent_uploads(mut self, n: usize) -> Self {
        self.uploads = Arc::new(tokio::sync::Semaphore::new(n));
        self
    }

    /// The `Retry-After` a refused sync is given, in seconds (at least 1).
    pub fn with_sync_retry_after(self, secs: u64) -> Self {
        self.with_limits(|l| l.retry_after_secs = secs.max(1))
    }
}

/// Lets handlers of the API router take `State<Arc<Metrics>>`, as the side listener's do.
impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
