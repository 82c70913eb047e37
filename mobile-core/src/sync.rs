//! The sync client: a thin HTTP transport around [`DeviceStore::prepare_sync`] and
//! [`DeviceStore::complete_sync`]. It classes failures so the app knows whether to retry.

use std::borrow::BorrowMut;
use std::time::Duration;

use patrol_core::protocol::{CONTENT_TYPE, SyncRequest, SyncResponse};

use crate::backoff::RetryPolicy;
use crate::error::{Error, Result};
use crate::store::{DeviceStore, SyncReport};

/// Rounds in one `sync` call: one more than needed for a server that lost history to ask for
/// everything and receive it.
const MAX_ROUNDS: usize = 3;

/// Talks to one patrol server.
#[derive(Clone, Debug)]
pub struct SyncClient {
    http: reqwest::Client,
    endpoint: String,
    retry: RetryPolicy,
}

impl SyncClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Network(format!(
                "server URL must start with http:// or https://: {base_url}"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Network(e.to_string()))?;
        Ok(SyncClient {
            http,
            endpoint: format!("{base}/api/v1/sync"),
            retry: RetryPolicy::default(),
        })
    }

    /// Sends everything the server has not acknowledged and applies its answer. Events are marked
    /// delivered only from the server's heads, so an interrupted sync is simply done again.
    pub async fn sync(&self, store: &mut DeviceStore) -> Result<SyncReport> {
        self.sync_shared(&std::sync::Mutex::new(store)).await
    }

    /// As [`SyncClient::sync`], for a store shared between threads: the lock is held only to
    /// build a request and to apply its answer, never while the network is waited on, so the
    /// guard's recordings (a panic alarm above all) are not held up by a slow sync.
    pub async fn sync_shared<S: BorrowMut<DeviceStore>>(
        &self,
        store: &std::sync::Mutex<S>,
    ) -> Result<SyncReport> {
        let with = |f: &mut dyn FnMut(&mut DeviceStore) -> Result<()>| -> Result<()> {
            let mut guard = store
                .lock()
                .map_err(|_| Error::Corrupt("the store's lock is poisoned".into()))?;
            f((*guard).borrow_mut())
        };
        let mut total = SyncReport::default();
        for _ in 0..MAX_ROUNDS {
            let mut prepared = None;
            with(&mut |s| {
                prepared = Some(s.prepare_sync()?);
                Ok(())
            })?;
            let Some(prepared) = prepared else { break };
            let response = match self.exchange(&prepared.request).await {
                Ok(r) => r,
                Err(e) => {
                    with(&mut |s| s.sync_failed(&e, &self.retry))?;
                    return Err(e);
                }
            };
            let mut prepared = Some(prepared);
            let mut report = SyncReport::default();
            with(&mut |s| {
                if let Some(p) = prepared.take() {
                    report = s.complete_sync(p, &response)?;
                }
                Ok(())
            })?;
            total.docs_sent += report.docs_sent;
            total.events_delivered += report.events_delivered;
            total.pending_events = report.pending_events;
            total.rejected = report.rejected;
            total.needs_another_round = report.needs_another_round;
            if !report.needs_another_round {
                break;
            }
        }
        Ok(total)
    }

    /// Uses `policy` for the outbox's retry intervals.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry intervals in force.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// One request/response exchange.
    pub async fn exchange(&self, request: &SyncRequest) -> Result<SyncResponse> {
        let body = request.encode()?;
        let response = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Network(error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Network(error_chain(&e)))?;
        if status.is_success() {
            return SyncResponse::decode(&bytes).map_err(|e| Error::BadResponse(e.to_string()));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        let status = status.as_u16();
        if status >= 500 || status == 429 || status == 408 {
            Err(Error::ServerTransient { status, message })
        } else {
            Err(Error::ServerRejected { status, message })
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
