//! Syncing: the status the app shows, the outbox's schedule, and the blocking `sync` with the
//! runtime and HTTP client it keeps between calls.

use super::device::{PatrolDevice, lock};
use super::error::FfiResult;
use super::observer::notify;
use crate::error::Error;
use crate::store::{RejectedLog, SyncReport, SyncStatus};
use crate::sync::{DEFAULT_TIMEOUT, SyncClient};
use crate::transport::Transport;

/// A shift log the server refused.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiRejectedLog {
    pub shift_id: String,
    /// The protocol's rejection code (see `docs/protocol.md`).
    pub code: String,
    pub message: String,
}

impl From<RejectedLog> for FfiRejectedLog {
    fn from(r: RejectedLog) -> Self {
        FfiRejectedLog {
            shift_id: r.shift.to_string(),
            code: r.code,
            message: r.message,
        }
    }
}

/// What the app shows about syncing.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiSyncStatus {
    /// Events the server has not acknowledged yet.
    pub pending_events: u64,
    /// Device wall time of the oldest undelivered event.
    pub oldest_pending_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the outbox's backoff says to try again (ms since the Unix epoch), after a failure.
    pub next_attempt_ms: Option<i64>,
    /// A panic alarm is still undelivered: sync as soon as possible.
    pub urgent: bool,
    pub rejected: Vec<FfiRejectedLog>,
    /// Attachments not uploaded yet, and their bytes (new ones are refused past 200 MiB).
    pub pending_attachments: u64,
    pub pending_attachment_bytes: u64,
}

impl From<SyncStatus> for FfiSyncStatus {
    fn from(s: SyncStatus) -> Self {
        FfiSyncStatus {
            pending_events: s.pending_events,
            oldest_pending_ms: s.oldest_pending_ms,
            last_attempt_ms: s.last_attempt_ms,
            last_success_ms: s.last_success_ms,
            last_error: s.last_error,
            consecutive_failures: s.consecutive_failures,
            next_attempt_ms: s.next_attempt_ms,
            urgent: s.urgent,
            rejected: s.rejected.into_iter().map(Into::into).collect(),
            pending_attachments: s.pending_attachments,
            pending_attachment_bytes: s.pending_attachment_bytes,
        }
    }
}

/// What one `sync` call achieved.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiSyncReport {
    /// Shift logs sent.
    pub docs_sent: u64,
    /// Events newly acknowledged by the server.
    pub events_delivered: u64,
    /// Events still pending afterwards.
    pub pending_events: u64,
    pub rejected: Vec<FfiRejectedLog>,
    /// The server still lacks some history; sync again.
    pub needs_another_round: bool,
    /// The device's credential was rotated in this sync, as the server asked.
    pub credential_rotated: bool,
    /// The server has a newer site configuration this app cannot read: what to do, in words.
    pub config_unreadable: Option<String>,
    /// Attachments whose upload finished in this sync.
    pub attachments_uploaded: u64,
    /// Attachments still to upload.
    pub attachments_pending: u64,
    /// Why the uploads stopped, if they failed (the sync itself did not).
    pub attachment_error: Option<String>,
}

impl From<SyncReport> for FfiSyncReport {
    fn from(r: SyncReport) -> Self {
        FfiSyncReport {
            docs_sent: u64::try_from(r.docs_sent).unwrap_or(u64::MAX),
            events_delivered: r.events_delivered,
            pending_events: r.pending_events,
            rejected: r.rejected.into_iter().map(Into::into).collect(),
            needs_another_round: r.needs_another_round,
            credential_rotated: r.credential_rotated,
            config_unreadable: r.config_unreadable,
            attachments_uploaded: r.attachments_uploaded,
            attachments_pending: r.attachments_pending,
            attachment_error: r.attachment_error,
        }
    }
}

/// The runtime that drives the HTTP client, and the client of the last server synced with
/// (kept for its connection pool). Both are made on the first `sync`.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    pub(super) runtime: Option<tokio::runtime::Runtime>,
    pub(super) client: Option<(String, SyncClient)>,
    pub(super) transport: Transport,
}

pub(super) fn new_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Network(format!("cannot start the network runtime: {e}")))
}

/// How the phone may reach its server. By default (`None` where one is asked for): `https://`
/// checked against the platform's certificate roots, and `http://` only to this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct FfiTransport {
    /// Accept plain `http://` to a server off this machine, for a lab without certificates:
    /// anyone on that network can read the device credential and the records.
    pub allow_plain_http: bool,
    /// PEM certificates to trust instead of the platform's roots: the site's own certificate
    /// authority, or its server's self-signed certificate.
    pub ca_certificates_pem: Option<String>,
}

impl From<FfiTransport> for Transport {
    fn from(t: FfiTransport) -> Self {
        Transport {
            allow_plain_http: t.allow_plain_http,
            ca_certificates_pem: t.ca_certificates_pem.map(String::into_bytes),
        }
    }
}

impl PatrolDevice {
    fn notify_status(&self) {
        let Some(observer) = self.observer() else {
            return;
        };
        let status = match lock(&self.store, "store").and_then(|s| Ok(s.status()?)) {
            Ok(status) => FfiSyncStatus::from(status),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sync status for the observer");
                return;
            }
        };
        notify("on_sync_status", || observer.on_sync_status(status));
    }

    fn sync_inner(&self, server_url: &str) -> FfiResult<SyncReport> {
        let mut state = lock(&self.sync, "sync client")?;
        let SyncState {
            runtime,
            client,
            transport,
        } = &mut *state;
        let runtime = match runtime {
            Some(rt) => rt,
            None => runtime.insert(new_runtime()?),
        };
        let client = match client {
            Some((url, c)) if url == server_url => c,
            _ => {
                let made = SyncClient::with_transport(server_url, transport, DEFAULT_TIMEOUT)?;
                &client.insert((server_url.to_owned(), made)).1
            }
        };
        // The store is locked only around building the request and applying the answer.
        Ok(runtime.block_on(client.sync_shared(&self.store))?)
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Pending events, last attempt and success, last error, refused logs.
    pub fn status(&self) -> FfiResult<FfiSyncStatus> {
        Ok(lock(&self.store, "store")?.status()?.into())
    }

    /// Whether the outbox should sync now: something is pending and the backoff after the last
    /// failure has passed (raising a panic alarm makes it due at once; while the panic is
    /// undelivered, the backoff is a few seconds). For the app's scheduler; `sync` itself may be
    /// called at any time.
    pub fn sync_due(&self) -> FfiResult<bool> {
        Ok(lock(&self.store, "store")?.sync_due()?)
    }

    /// Sends everything the server has not acknowledged to `server_url` (e.g.
    /// `https://patrol.example.org`) and marks delivered what it acknowledges. An undelivered
    /// panic alarm goes first, in a request of its own when other work is pending.
    ///
    /// Blocking: it returns when the exchange is over (each request is bounded by a 30 s
    /// timeout), so call it from a background thread (a WorkManager worker, a background task).
    /// Safe to repeat and to interrupt: an event is marked delivered only once the server holds
    /// it. A `Network` error means try again later. Concurrent calls run one after another;
    /// recordings made meanwhile wait for the exchange. The observer hears the resulting status
    /// whether the sync succeeded or not.
    pub fn sync(&self, server_url: String) -> FfiResult<FfiSyncReport> {
        let result = self.sync_inner(&server_url);
        self.notify_status();
        result.map(Into::into)
    }

    /// How later syncs reach the server (plain HTTP for a lab, the site's own certificate
    /// authority). Fails with `InvalidInput` if the certificates cannot be read; the previous
    /// rules then stay.
    pub fn set_transport(&self, transport: FfiTransport) -> FfiResult<()> {
        let transport = Transport::from(transport);
        // Checked now rather than at the next sync, where it would look like a network error.
        transport.client(DEFAULT_TIMEOUT)?;
        let mut state = lock(&self.sync, "sync client")?;
        state.transport = transport;
        state.client = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    use crate::ffi::PatrolError;
    use crate::ffi::testing::{Recorder, TestResult, enrolled, temp, within_seconds};

    #[test]
    fn a_failed_sync_is_a_retryable_error_and_the_observer_hears_the_status() -> TestResult {
        let dir = temp();
        let device = enrolled(&dir);
        let recorder = Arc::new(Recorder::default());
        if let Ok(mut slot) = recorder.reenter.lock() {
            *slot = Some(Arc::downgrade(&device));
        }
        device.set_observer(Some(recorder.clone()));
        device.start_shift("guard-1".into())?;
        device.add_note("basement level 3".into())?;

        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = within_seconds({
            let device = device.clone();
            move || device.sync(url)
        })
        .err()
        .ok_or("synced")?;
        assert!(matches!(err, PatrolError::Network { .. }), "{err:?}");
        assert!(err.is_retryable());

        let statuses = recorder.statuses();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].pending_events, 2);
        assert_eq!(statuses[0].consecutive_failures, 1);
        assert!(statuses[0].last_error.is_some());
        assert!(statuses[0].next_attempt_ms.is_some());
        assert_eq!(device.status()?, statuses[0]);
        assert_eq!(
            device.events(None)?.iter().filter(|e| e.delivered).count(),
            0
        );
        Ok(())
    }

    #[test]
    fn a_panic_is_recorded_while_a_sync_waits_on_the_network() -> TestResult {
        let dir = temp();
        let device = enrolled(&dir);
        device.start_shift("guard-1".into())?;
        // A "server" that accepts the connection and answers only when told to.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let syncing = {
            let device = Arc::clone(&device);
            std::thread::spawn(move || device.sync(url))
        };
        let (connection, _) = listener.accept()?;
        // The sync is now waiting on the network; a panic alarm must not wait for it.
        let (tx, rx) = mpsc::channel();
        {
            let device = Arc::clone(&device);
            std::thread::spawn(move || {
                let _ = tx.send(device.raise_panic(None));
            });
        }
        let recorded = rx.recv_timeout(Duration::from_secs(60));
        assert!(!syncing.is_finished(), "the sync was still in flight");
        drop(connection);
        let synced = syncing.join().map_err(|_| "sync thread panicked")?;
        assert!(
            recorded.is_ok_and(|r| r.is_ok()),
            "the panic was recorded during the sync"
        );
        assert!(matches!(synced, Err(PatrolError::Network { .. })));
        assert!(device.status()?.urgent);
        Ok(())
    }
}
