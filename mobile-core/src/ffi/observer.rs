//! [`EventObserver`], implemented by the app to hear about recordings and sync attempts, and how
//! it is called: after the store is released, a failure contained.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::device::PatrolDevice;
use super::records::FfiEvent;
use super::sync::FfiSyncStatus;

/// Implemented by the app to hear what the device records and how syncing goes (to refresh a
/// list, a pending badge, a "last synced" line).
///
/// Called on the thread that made the call, after the call's work is done and after the store
/// is released, so an observer may call back into the device. Keep it short (hand the value to
/// the UI thread); the call it follows returns only when the observer has. An observer that
/// throws is logged and otherwise ignored: the recording it reports has already succeeded.
#[uniffi::export(foreign)]
pub trait EventObserver: Send + Sync {
    /// An event was recorded (durably) by this device.
    fn on_event_recorded(&self, event: FfiEvent);
    /// A sync attempt finished, successfully or not; `status` is the state after it.
    fn on_sync_status(&self, status: FfiSyncStatus);
}

/// Calls an observer, containing a failure: a foreign exception surfaces in Rust as a panic,
/// which must not turn the successful call it reports into a failed one.
pub(super) fn notify(what: &str, call: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(call)).is_err() {
        tracing::warn!(callback = what, "the observer failed; ignored");
    }
}

impl PatrolDevice {
    pub(super) fn observer(&self) -> Option<Arc<dyn EventObserver>> {
        // A poisoned observer slot only means an earlier caller panicked while swapping it;
        // the value itself is a plain Option and stays usable.
        match self.observer.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Sets (or with `None` removes) the observer told about new events and sync attempts.
    pub fn set_observer(&self, observer: Option<Arc<dyn EventObserver>>) {
        match self.observer.lock() {
            Ok(mut slot) => *slot = observer,
            Err(poisoned) => *poisoned.into_inner() = observer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::FfiResult;
    use crate::ffi::testing::{Recorder, TestResult, device, nfc, temp, within_seconds};

    #[test]
    fn the_observer_hears_every_recording_without_the_store_locked() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        let recorder = Arc::new(Recorder::default());
        if let Ok(mut slot) = recorder.reenter.lock() {
            *slot = Some(Arc::downgrade(&device));
        }
        device.set_observer(Some(recorder.clone()));

        let ids = within_seconds({
            let device = device.clone();
            move || -> FfiResult<Vec<String>> {
                let shift = device.start_shift("guard-1".into())?;
                let scan = device.scan_checkpoint(nfc("cp-1"))?;
                let note = device.add_note("lift 3 out of service".into())?;
                // A refused call is not reported.
                assert!(device.add_note("  ".into()).is_err());
                let panic = device.raise_panic(None)?;
                let end = device.end_shift(None)?;
                Ok(vec![shift, scan, note, panic, end])
            }
        })?;

        let heard = recorder.events();
        let events = device.events(None)?;
        assert_eq!(heard, events);
        assert_eq!(heard.len(), 5);
        assert_eq!(heard[0].shift_id, ids[0]);
        assert_eq!(heard[0].kind, "shift_started");
        let heard_ids: Vec<&str> = heard[1..].iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            heard_ids,
            ids[1..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(recorder.reentered.lock().map(|n| *n).unwrap_or(0), 5);

        // Removed, it hears nothing more.
        device.set_observer(None);
        device.start_shift("guard-2".into())?;
        assert_eq!(recorder.events().len(), 5);
        Ok(())
    }

    /// An observer that fails (a foreign exception arrives in Rust as a panic).
    struct Failing;

    impl EventObserver for Failing {
        fn on_event_recorded(&self, _: FfiEvent) {
            panic!("observer failed");
        }
        fn on_sync_status(&self, _: FfiSyncStatus) {
            panic!("observer failed");
        }
    }

    #[test]
    fn a_failing_observer_does_not_fail_the_call() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        device.set_observer(Some(Arc::new(Failing)));
        device.start_shift("guard-1".into())?;
        let id = device.add_note("fire door B2 propped open".into())?;
        assert_eq!(device.events(None)?.last().map(|e| e.id.clone()), Some(id));
        // The store was not poisoned by the observer's failure.
        device.add_note("and again".into())?;
        assert_eq!(device.status()?.pending_events, 3);
        Ok(())
    }
}
