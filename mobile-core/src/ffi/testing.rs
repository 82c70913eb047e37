//! Helpers the exported API's unit tests share: stores in a temporary directory, a scan input,
//! and an observer that records what it hears.

use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use patrol_core::SiteId;

use super::error::FfiResult;
use super::sync::SyncState;
use super::{
    EventObserver, FfiEvent, FfiLocation, FfiScanInput, FfiScanMethod, FfiSyncStatus, PatrolDevice,
    PatrolError,
};
use crate::store::{DeviceStore, StoreOptions};

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(super) fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

pub(super) fn device(dir: &tempfile::TempDir) -> Arc<PatrolDevice> {
    PatrolDevice::create(path(dir, "phone.db"), "site-1".into(), None)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A store as enrollment makes it, with what a server would have given the phone (no
/// server is needed to record; these tests' syncs fail before any server answers).
pub(super) fn enrolled(dir: &tempfile::TempDir) -> Arc<PatrolDevice> {
    let enrollment = crate::store::Enrollment {
        site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
        device: patrol_core::DeviceId::generate(),
        credential: format!("pd_{}", "A".repeat(43)),
        server_url: "http://127.0.0.1:9".into(),
        signing_key: None,
    };
    let store =
        DeviceStore::create_enrolled(path(dir, "phone.db"), enrollment, StoreOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(PatrolDevice::from_store(store, SyncState::default()))
}

pub(super) fn nfc(checkpoint: &str) -> FfiScanInput {
    FfiScanInput {
        checkpoint_id: checkpoint.into(),
        method: FfiScanMethod::Nfc {
            tag: "04:A2:2B".into(),
        },
        location: Some(FfiLocation {
            lat: 51.5074,
            lon: -0.1278,
            accuracy_m: Some(20.0),
        }),
        note: None,
        event_id: None,
        wall_time_ms: None,
    }
}

pub(super) fn is_invalid<T: fmt::Debug>(r: FfiResult<T>) -> bool {
    matches!(r, Err(PatrolError::InvalidInput { .. }))
}

/// Keeps what it hears; optionally reads the device back from inside the callback, which
/// deadlocks if the store is still locked.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) events: Mutex<Vec<FfiEvent>>,
    pub(super) statuses: Mutex<Vec<FfiSyncStatus>>,
    pub(super) reenter: Mutex<Option<Weak<PatrolDevice>>>,
    pub(super) reentered: Mutex<usize>,
}

impl Recorder {
    pub(super) fn events(&self) -> Vec<FfiEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
    pub(super) fn statuses(&self) -> Vec<FfiSyncStatus> {
        self.statuses.lock().map(|s| s.clone()).unwrap_or_default()
    }
    fn reenter(&self) {
        let device = self
            .reenter
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(Weak::upgrade));
        if let Some(device) = device {
            assert!(device.events(None).is_ok());
            assert!(device.status().is_ok());
            if let Ok(mut n) = self.reentered.lock() {
                *n += 1;
            }
        }
    }
}

impl EventObserver for Recorder {
    fn on_event_recorded(&self, event: FfiEvent) {
        self.reenter();
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
    fn on_sync_status(&self, status: FfiSyncStatus) {
        self.reenter();
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.push(status);
        }
    }
}

/// Runs `f` on another thread and fails if it does not finish: a re-entrant observer
/// deadlocks if the store is still locked when it is called.
pub(super) fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("deadlock: the observer was called with the store locked"))
}
