//! [`PatrolDevice`] itself: the object the apps hold, how it is opened, created or enrolled, and
//! the phone's identity (device, site, signing key, server).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use patrol_core::SiteId;

use super::error::{FfiResult, PatrolError};
use super::observer::EventObserver;
use super::sync::{FfiTransport, SyncState, new_runtime};
use crate::error::Error;
use crate::store::{DeviceStore, Durability, StoreOptions};
use crate::sync::{DEFAULT_TIMEOUT, SyncClient};
use crate::transport::Transport;

/// A guard's phone: its store of shift logs and the means to sync them.
///
/// Thread-safe; all methods block and belong on a background thread. Recordings are serialised
/// on one store; a recording made while `sync` is exchanging with the server waits for that
/// sync to finish (each request is bounded by the client's timeout).
#[derive(uniffi::Object)]
pub struct PatrolDevice {
    pub(super) store: Mutex<DeviceStore>,
    /// Held for the whole of a `sync`, so syncs do not overlap. Taken before the store.
    pub(super) sync: Mutex<SyncState>,
    pub(super) observer: Mutex<Option<Arc<dyn EventObserver>>>,
}

impl fmt::Debug for PatrolDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatrolDevice")
            .field("store", &self.store)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex. A poisoned store mutex means a call panicked half-way: the store's memory may
/// no longer match its disk, so it is refused until the app opens the store again (which
/// rebuilds everything from the disk).
pub(super) fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> FfiResult<MutexGuard<'a, T>> {
    m.lock().map_err(|_| {
        let e = PatrolError::Storage {
            message: format!(
                "the {what} is unusable after an internal failure; open the store again"
            ),
        };
        tracing::error!(error = %e, "poisoned lock");
        e
    })
}

/// How hard each commit pushes to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, uniffi::Enum)]
pub enum FfiDurability {
    /// A returned call survives power loss (SQLite `synchronous=FULL`). The default.
    #[default]
    Full,
    /// A returned call survives the app being killed; the last commits may be lost on power
    /// loss (`synchronous=NORMAL`), in exchange for faster writes.
    Normal,
}

impl From<FfiDurability> for Durability {
    fn from(d: FfiDurability) -> Self {
        match d {
            FfiDurability::Full => Durability::Full,
            FfiDurability::Normal => Durability::Normal,
        }
    }
}

impl PatrolDevice {
    fn with_options(
        path: String,
        site: Option<SiteId>,
        durability: FfiDurability,
    ) -> FfiResult<Self> {
        let options = StoreOptions {
            durability: durability.into(),
            ..StoreOptions::default()
        };
        let store = DeviceStore::open_with(&path, site, options)?;
        Ok(Self::from_store(store, SyncState::default()))
    }

    pub(super) fn from_store(store: DeviceStore, sync: SyncState) -> Self {
        PatrolDevice {
            store: Mutex::new(store),
            sync: Mutex::new(sync),
            observer: Mutex::new(None),
        }
    }

    fn enroll_inner(
        path: String,
        server_url: String,
        code: String,
        durability: FfiDurability,
        transport: Transport,
    ) -> Result<Self, Error> {
        // Before the code is spent: a URL these rules refuse is refused without a request.
        let client = SyncClient::with_transport(&server_url, &transport, DEFAULT_TIMEOUT)?;
        // Before the code is spent: a store already set up here cannot take a new identity.
        if DeviceStore::is_set_up(&path)? {
            return Err(Error::AlreadySetUp { path });
        }
        let runtime = new_runtime()?;
        let enrollment = runtime.block_on(client.enroll(&code))?;
        let options = StoreOptions {
            durability: durability.into(),
            ..StoreOptions::default()
        };
        let store = DeviceStore::create_enrolled(&path, enrollment, options)?;
        Ok(Self::from_store(
            store,
            SyncState {
                runtime: Some(runtime),
                client: Some((server_url, client)),
                transport,
            },
        ))
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Opens an existing store at `path`. `durability` defaults to `Full`.
    #[uniffi::constructor(default(durability = None))]
    pub fn open(path: String, durability: Option<FfiDurability>) -> FfiResult<Arc<Self>> {
        Self::with_options(path, None, durability.unwrap_or_default()).map(Arc::new)
    }

    /// Enrolls this phone with the server at `server_url` (e.g. `https://patrol.example.org`)
    /// using a one-time `code` from an administrator, and creates its store at `path` with the
    /// device id, site and credential the server gives it. Needs the network once; from then on
    /// the phone records offline and syncs with `sync`. Fails with `InvalidInput` if a store is
    /// already set up at `path` (the code is then not used), `NotEnrolled` if the server refuses
    /// the code (unknown, expired or already used), `Network` if it cannot be reached.
    /// `durability` defaults to `Full`. `transport` says how the server may be reached (see
    /// `FfiTransport`; by default `https://`, and `http://` only to this machine); later syncs
    /// keep it. A URL it refuses fails with `InvalidInput` before the code is used.
    #[uniffi::constructor(default(durability = None, transport = None))]
    pub fn enroll(
        path: String,
        server_url: String,
        code: String,
        durability: Option<FfiDurability>,
        transport: Option<FfiTransport>,
    ) -> FfiResult<Arc<Self>> {
        Self::enroll_inner(
            path,
            server_url,
            code,
            durability.unwrap_or_default(),
            transport.unwrap_or_default().into(),
        )
        .map(Arc::new)
        // A refused code (`EnrollmentRefused`) is `NotEnrolled` in the public error.
        .map_err(PatrolError::from)
    }

    /// Opens the store at `path`, creating it for `site_id` if it does not exist yet. A store
    /// created here records offline but is not enrolled, so its `sync` fails with
    /// `NotEnrolled`: phones are set up with `enroll`. Opening an existing store set up for
    /// another site fails. `durability` defaults to `Full`.
    #[uniffi::constructor(default(durability = None))]
    pub fn create(
        path: String,
        site_id: String,
        durability: Option<FfiDurability>,
    ) -> FfiResult<Arc<Self>> {
        let site = SiteId::new(site_id).map_err(Error::from)?;
        Self::with_options(path, Some(site), durability.unwrap_or_default()).map(Arc::new)
    }

    /// This phone's id (UUID), made when the store was created.
    pub fn device_id(&self) -> FfiResult<String> {
        Ok(lock(&self.store, "store")?.device_id().to_string())
    }

    /// The site this phone's store is set up for.
    pub fn site_id(&self) -> FfiResult<String> {
        Ok(lock(&self.store, "store")?.site().to_string())
    }

    /// Whether the store was made by enrolling (only then can it sync).
    pub fn is_enrolled(&self) -> FfiResult<bool> {
        Ok(lock(&self.store, "store")?.credential().is_some())
    }

    /// The public key (64 hex digits) this phone signs its shift logs with, made when it
    /// enrolled; `None` for a store enrolled before keys existed or never enrolled. Show it to
    /// whoever records the phone's enrollment: `patrol verify` checks an exported log against it.
    pub fn public_key(&self) -> FfiResult<Option<String>> {
        Ok(lock(&self.store, "store")?
            .public_key()
            .map(|k| k.to_string()))
    }

    /// The server the phone enrolled with, if it did.
    pub fn server_url(&self) -> FfiResult<Option<String>> {
        Ok(lock(&self.store, "store")?.server_url().map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::testing::{TestResult, device, enrolled, path, temp};

    #[test]
    fn a_store_not_made_by_enrolling_records_but_cannot_sync() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        assert!(!device.is_enrolled()?);
        assert_eq!(device.server_url()?, None);
        device.start_shift("guard-1".into())?;
        device.add_note("recorded offline".into())?;
        // A port nobody listens on: the sync fails before it would try the network.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let err = device
            .sync(format!("http://127.0.0.1:{port}"))
            .err()
            .ok_or("synced")?;
        assert!(matches!(err, PatrolError::NotEnrolled { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let status = device.status()?;
        assert_eq!(status.pending_events, 2);
        assert!(
            status
                .last_error
                .is_some_and(|e| e.contains("not enrolled"))
        );

        // Enrolling into a path that holds a store is refused before the code is sent.
        let err = PatrolDevice::enroll(
            path(&dir, "phone.db"),
            format!("http://127.0.0.1:{port}"),
            format!("pe_{}", "A".repeat(43)),
            None,
            None,
        )
        .err()
        .ok_or("enrolled")?;
        assert!(matches!(err, PatrolError::InvalidInput { .. }), "{err:?}");
        assert_eq!(device.events(None)?.len(), 2);

        // Plain HTTP off this machine is refused before anything is sent or created.
        let lab = temp();
        let err = PatrolDevice::enroll(
            path(&lab, "phone.db"),
            "http://192.0.2.1:8080".into(),
            format!("pe_{}", "A".repeat(43)),
            None,
            None,
        )
        .err()
        .ok_or("enrolled over plain HTTP")?;
        assert!(
            matches!(&err, PatrolError::InvalidInput { message } if message.contains("plain http://")),
            "{err:?}"
        );
        assert!(!std::path::Path::new(&path(&lab, "phone.db")).exists());

        let other = temp();
        let enrolled = enrolled(&other);
        assert!(enrolled.is_enrolled()?);
        assert_eq!(
            enrolled.server_url()?.as_deref(),
            Some("http://127.0.0.1:9")
        );
        Ok(())
    }
}
