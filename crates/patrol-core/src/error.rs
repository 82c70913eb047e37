//! Typed errors of the core. Each says what was wrong with the input, in words a person can act on.

use thiserror::Error;

/// Input that breaks a domain rule.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ValidationError {
    #[error("bad {what}: {reason}")]
    BadId { what: &'static str, reason: String },
    #[error("{field} is too long: {len} bytes, at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("location out of range: lat {lat}, lon {lon} (lat -90..90, lon -180..180)")]
    BadLocation { lat: f64, lon: f64 },
    #[error("location accuracy must be a finite, non-negative number of metres, got {0}")]
    BadAccuracy(f32),
    #[error("{field} must be {min} to {max}, not {value}")]
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
}

/// A record or message that could not be decoded.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    #[error("not a patrol sync message (bad magic)")]
    BadMagic,
    #[error("empty input")]
    Empty,
    #[error("malformed: {0}")]
    Malformed(String),
}

impl From<postcard::Error> for DecodeError {
    fn from(e: postcard::Error) -> Self {
        DecodeError::Malformed(e.to_string())
    }
}

/// A value that could not be encoded (only possible for values no validated input produces).
#[derive(Debug, Error, Clone, PartialEq)]
#[error("could not encode: {0}")]
pub struct EncodeError(String);

impl From<postcard::Error> for EncodeError {
    fn from(e: postcard::Error) -> Self {
        EncodeError(e.to_string())
    }
}

/// Errors of the shift-log document.
#[derive(Debug, Error)]
pub enum LogError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("shift log has no metadata")]
    MissingMeta,
    #[error("shift has ended; no more events can be recorded in it")]
    Frozen,
    #[error("event {0} is already in the log with different content")]
    ConflictingEvent(crate::EventId),
}
