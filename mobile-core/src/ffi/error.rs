//! [`PatrolError`], the one error the apps see, and the one place the internal [`Error`] becomes
//! it (which also logs, and keeps personal data out of messages and logs).

use patrol_core::{LogError, ValidationError};

use crate::error::Error;

/// What went wrong in a call. Each variant carries a message for logs and support, free of
/// personal data; apps branch on the variant, not the text. In Kotlin this is
/// `PatrolException.InvalidInput` etc. (the message is the exception's `message`), in Swift
/// `PatrolError.InvalidInput(message:)`, in Python `PatrolError.InvalidInput` (`str(e)`).
#[derive(Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
// Flat: each variant crosses as its name plus the message below. (A field called `message` in a
// non-flat error clashes with `Throwable.message` in the generated Kotlin.)
#[uniffi(flat_error)]
pub enum PatrolError {
    /// An argument breaks a rule: a malformed id, an empty or too long text, a location out of
    /// range, an event id reused for different content. Fix the input; retrying will not help.
    #[error("{message}")]
    InvalidInput { message: String },
    /// The call needs a shift in progress; start one first.
    #[error("no shift is open; start one first")]
    NoOpenShift,
    /// A shift is already in progress; end it first.
    #[error("{message}")]
    ShiftAlreadyOpen { message: String },
    /// The store could not be read or written (disk full, file not set up, written by a newer
    /// version of the app, unusable after an internal failure).
    #[error("{message}")]
    Storage { message: String },
    /// The server could not be reached, failed or answered badly. Retryable: nothing was lost,
    /// sync again later (the events stay pending until the server acknowledges them).
    #[error("{message}")]
    Network { message: String },
    /// The server refused the request as such (unknown site, bad request). Retrying unchanged
    /// will not help; the events stay pending and the status says which logs were refused.
    #[error("{message}")]
    ServerRejected { message: String },
    /// The store cannot sync: it was not made by enrolling, or the server no longer accepts its
    /// credential (revoked). Enroll the phone (into a new store) with a code from an
    /// administrator; the events recorded here stay in this store.
    #[error("{message}")]
    NotEnrolled { message: String },
    /// Stored data is damaged.
    #[error("{message}")]
    Corrupt { message: String },
}

impl PatrolError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PatrolError::Network { .. })
    }

    fn kind(&self) -> &'static str {
        match self {
            PatrolError::InvalidInput { .. } => "invalid_input",
            PatrolError::NoOpenShift => "no_open_shift",
            PatrolError::ShiftAlreadyOpen { .. } => "shift_already_open",
            PatrolError::Storage { .. } => "storage",
            PatrolError::Network { .. } => "network",
            PatrolError::ServerRejected { .. } => "server_rejected",
            PatrolError::NotEnrolled { .. } => "not_enrolled",
            PatrolError::Corrupt { .. } => "corrupt",
        }
    }
}

/// A validation failure in words, without the values that failed: coordinates are where a guard
/// was, so they stay out of messages and logs.
fn describe_invalid(e: &ValidationError) -> String {
    match e {
        ValidationError::BadLocation { .. } => {
            "location out of range (lat -90..90, lon -180..180)".into()
        }
        ValidationError::BadAccuracy(_) => {
            "location accuracy must be a finite, non-negative number of metres".into()
        }
        // Field names, lengths and the rule broken; never the text itself.
        ValidationError::BadId { .. }
        | ValidationError::TooLong { .. }
        | ValidationError::Empty { .. }
        | ValidationError::OutOfRange { .. } => e.to_string(),
    }
}

fn invalid(message: impl Into<String>) -> PatrolError {
    PatrolError::InvalidInput {
        message: message.into(),
    }
}

impl From<Error> for PatrolError {
    /// The one place internal errors become the public error. The message chosen here is also
    /// what is logged, so neither carries personal data.
    fn from(e: Error) -> Self {
        let out = match e {
            Error::Invalid(v) => invalid(describe_invalid(&v)),
            Error::Log(LogError::Invalid(v)) => invalid(describe_invalid(&v)),
            Error::Log(LogError::ConflictingEvent(id)) => invalid(format!(
                "event {id} is already recorded with different content; use a new event id"
            )),
            Error::Log(LogError::Frozen) => PatrolError::NoOpenShift,
            Error::Log(LogError::Encode(_)) | Error::Encode(_) => {
                invalid("the event could not be encoded")
            }
            Error::Log(
                e @ (LogError::Decode(_) | LogError::Automerge(_) | LogError::MissingMeta),
            ) => PatrolError::Corrupt {
                message: format!("a shift log is damaged: {e}"),
            },
            // SQLite's messages name the failure (disk full, I/O error, locked), never values.
            Error::Sqlite(e) => PatrolError::Storage {
                message: format!("storage error: {e}"),
            },
            Error::InUse { .. } => PatrolError::Storage {
                message: "the store is already open in another store object; close that one \
                          first"
                    .into(),
            },
            Error::Unreadable { reason, .. } => PatrolError::Corrupt {
                message: format!("the file is not a readable phone store: {reason}"),
            },
            Error::Thread(e) => PatrolError::Storage {
                message: format!("cannot start the store's worker thread: {e}"),
            },
            Error::Permissions { what, source, .. } => PatrolError::Storage {
                message: format!(
                    "the store file cannot be kept private to the app: {what}: {source}"
                ),
            },
            Error::NoStore { .. } => PatrolError::Storage {
                message: "there is no phone store at this path: enroll the phone first, or \
                          check the path"
                    .into(),
            },
            Error::NotInitialised { .. } => PatrolError::Storage {
                message: "the file at this path is not a phone store: enroll the phone into a \
                          new store, or check the path"
                    .into(),
            },
            Error::SchemaTooNew { found, known, .. } => PatrolError::Storage {
                message: format!(
                    "the store was written by a newer version of the app (schema {found}, this \
                     version knows {known})"
                ),
            },
            Error::WrongSite {
                existing,
                requested,
            } => invalid(format!(
                "the store is set up for site {existing}, not {requested}"
            )),
            Error::NoOpenShift => PatrolError::NoOpenShift,
            Error::NoCheckInTimer => invalid("no check-in timer is running; start one first"),
            Error::UnknownIncident(id) => invalid(format!("this phone holds no incident {id}")),
            Error::IncidentRule(rule) => invalid(rule),
            Error::NoSiteConfig => invalid("no site configuration yet; sync once with the server"),
            e @ (Error::AttachmentTooLarge { .. } | Error::AttachmentQuota { .. }) => {
                invalid(e.to_string())
            }
            Error::UnknownTour(tour) => {
                invalid(format!("the site configuration has no tour {tour:?}"))
            }
            Error::ShiftAlreadyOpen(shift) => PatrolError::ShiftAlreadyOpen {
                message: format!("shift {shift} is already open; end it first"),
            },
            Error::Quarantined { moved_to, .. } => PatrolError::Corrupt {
                message: format!(
                    "the store was damaged and has been moved aside, untouched, to {moved_to}; \
                     create a new store"
                ),
            },
            Error::Corrupt(what) => PatrolError::Corrupt {
                message: format!("stored data is corrupt: {what}"),
            },
            Error::Network(what) => PatrolError::Network {
                message: format!("network: {what}"),
            },
            // The server's address and why it is refused: no personal data.
            e @ (Error::BadServerUrl { .. }
            | Error::PlainHttp { .. }
            | Error::BadCertificate(_)) => invalid(e.to_string()),
            Error::KeyGeneration(what) => PatrolError::Storage {
                message: format!("the phone has no random source for its signing key: {what}"),
            },
            Error::ServerTransient {
                status, message, ..
            } => PatrolError::Network {
                message: format!("server error (HTTP {status}), will retry: {message}"),
            },
            Error::BadResponse(what) => PatrolError::Network {
                message: format!("bad response from the server: {what}"),
            },
            Error::ServerRejected { status, message } => PatrolError::ServerRejected {
                message: format!("the server refused the sync (HTTP {status}): {message}"),
            },
            Error::Replayed { last_seq } => PatrolError::ServerRejected {
                message: format!(
                    "the server refused a stale sync request (its last accepted is {last_seq}); \
                     sync again"
                ),
            },
            Error::AlreadySetUp { .. } => {
                invalid("a store is already set up at this path; enroll into a new store")
            }
            e @ Error::EnrollmentRefused { .. } => PatrolError::NotEnrolled {
                message: e.to_string(),
            },
            Error::NotEnrolled => PatrolError::NotEnrolled {
                message: "this store is not enrolled with a server, so it cannot sync; enroll \
                          the phone with a code from an administrator"
                    .into(),
            },
            Error::Unauthorized { status, message } => PatrolError::NotEnrolled {
                message: format!(
                    "the server refused this device's credential (HTTP {status}): {message}"
                ),
            },
        };
        match &out {
            PatrolError::InvalidInput { .. }
            | PatrolError::NoOpenShift
            | PatrolError::ShiftAlreadyOpen { .. } => {
                tracing::debug!(kind = out.kind(), error = %out, "call refused")
            }
            PatrolError::Network { .. } => {
                tracing::info!(kind = out.kind(), error = %out, "sync failed, will retry")
            }
            PatrolError::ServerRejected { .. } | PatrolError::NotEnrolled { .. } => {
                tracing::warn!(kind = out.kind(), error = %out, "sync refused by the server")
            }
            PatrolError::Storage { .. } | PatrolError::Corrupt { .. } => {
                tracing::error!(kind = out.kind(), error = %out, "store failure")
            }
        }
        out
    }
}

pub(super) type FfiResult<T> = std::result::Result<T, PatrolError>;

#[cfg(test)]
mod tests {
    use patrol_core::{EventId, ShiftId};

    use super::*;
    use crate::ffi::testing::{TestResult, device, path, temp};
    use crate::ffi::{FfiLocation, PatrolDevice};

    #[test]
    fn internal_errors_map_to_the_public_kinds() {
        use patrol_core::DecodeError;
        let shift = ShiftId::generate();
        let cases: Vec<(Error, PatrolError)> = vec![
            (
                Error::Invalid(ValidationError::Empty { field: "note" }),
                invalid("note must not be empty"),
            ),
            (Error::NoOpenShift, PatrolError::NoOpenShift),
            (Error::Log(LogError::Frozen), PatrolError::NoOpenShift),
            (
                Error::ShiftAlreadyOpen(shift),
                PatrolError::ShiftAlreadyOpen {
                    message: format!("shift {shift} is already open; end it first"),
                },
            ),
            (
                Error::Network("connection refused".into()),
                PatrolError::Network {
                    message: "network: connection refused".into(),
                },
            ),
            (
                Error::ServerTransient {
                    status: 503,
                    message: "busy".into(),
                    retry_after_ms: Some(1_000),
                },
                PatrolError::Network {
                    message: "server error (HTTP 503), will retry: busy".into(),
                },
            ),
            (
                Error::ServerRejected {
                    status: 404,
                    message: "unknown site".into(),
                },
                PatrolError::ServerRejected {
                    message: "the server refused the sync (HTTP 404): unknown site".into(),
                },
            ),
        ];
        for (internal, public) in cases {
            assert_eq!(PatrolError::from(internal), public);
        }
        let kind = |e: Error| PatrolError::from(e).kind();
        assert_eq!(kind(Error::BadResponse("short".into())), "network");
        assert_eq!(
            kind(Error::Sqlite(rusqlite::Error::InvalidQuery)),
            "storage"
        );
        assert_eq!(
            kind(Error::SchemaTooNew {
                path: "p".into(),
                found: 9,
                known: 2
            }),
            "storage"
        );
        assert_eq!(kind(Error::Corrupt("heads".into())), "corrupt");
        assert_eq!(
            kind(Error::Log(LogError::Decode(DecodeError::Empty))),
            "corrupt"
        );
        assert_eq!(
            kind(Error::Quarantined {
                path: "p".into(),
                moved_to: "p.corrupt".into(),
                reason: "r".into()
            }),
            "corrupt"
        );
        assert_eq!(
            kind(Error::Log(LogError::ConflictingEvent(EventId::generate()))),
            "invalid_input"
        );
        assert_eq!(
            kind(Error::WrongSite {
                existing: "a".into(),
                requested: "b".into()
            }),
            "invalid_input"
        );
        assert!(PatrolError::from(Error::Network(String::new())).is_retryable());
        assert!(!PatrolError::from(Error::NoOpenShift).is_retryable());
    }

    #[test]
    fn messages_carry_no_personal_data() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        device.start_shift("guard-1".into())?;

        // A position out of range: where the guard was stays out of the message.
        let far = FfiLocation {
            lat: 91.123_456,
            lon: -0.987_654,
            accuracy_m: None,
        };
        let err = device.raise_panic(Some(far)).err().ok_or("accepted")?;
        assert!(matches!(err, PatrolError::InvalidInput { .. }));
        let text = err.to_string();
        assert!(!text.contains("91.12") && !text.contains("0.98"), "{text}");

        // A note too long: its length is named, not its text.
        let secret = format!(
            "patient in bed 4 {}",
            "x".repeat(patrol_core::event::MAX_TEXT_LEN)
        );
        let err = device.add_note(secret).err().ok_or("accepted")?;
        assert!(matches!(err, PatrolError::InvalidInput { .. }));
        assert!(!err.to_string().contains("patient"), "{err}");

        // The store at a path nobody set up: the path is not repeated.
        let err = PatrolDevice::open(path(&dir, "guard-jane-doe.db"), None)
            .err()
            .ok_or("opened")?;
        assert!(matches!(err, PatrolError::Storage { .. }), "{err:?}");
        assert!(!err.to_string().contains("jane"), "{err}");
        Ok(())
    }
}
