//! Reading stored values back, for every backend: the checks that turn a column into a typed
//! value (or a [`StoreError::CorruptData`] saying which), and the column lists both backends
//! select in the same order.

use std::str::FromStr;

use patrol_core::evidence::{PublicKey, SignedHeads};
use patrol_core::protocol::{from_wire, to_wire};
use patrol_core::{DeviceId, GuardId, IncidentId, ShiftId, SiteId};

use super::merge::{heads_from_blob, heads_to_blob};
use super::{LatestShift, ShiftSummary, StoreError};
use crate::credentials::{StoredDeviceCredentials, StoredUserTokens, TokenHash};

/// The `users` columns `read_user` expects, in order.
pub const USER_COLUMNS: &str = "user_id, name, role, all_sites, created_at, created_by, revoked_at, \
     token_hash, token_expires_at, previous_token_hash, previous_token_expires_at";

/// The `device_credentials` columns `read_device_credential` expects, in order.
pub const DEVICE_CREDENTIAL_COLUMNS: &str = "site_id, device_id, enrolled_at, revoked_at, \
     last_request_seq, credential_hash, public_key, credential_issued_at, next_credential_hash";

/// A count or sequence number as the databases keep it (signed 64 bits; saturating, which no
/// real count reaches).
pub fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptData(what.to_string())
}

pub fn read_hash(bytes: &[u8], what: &str) -> Result<TokenHash, StoreError> {
    TokenHash::from_slice(bytes).ok_or_else(|| corrupt(format!("{what} is not 32 bytes")))
}

/// A user's stored tokens from their columns: the current hash, and the previous one with the end
/// of its overlap (both or neither).
pub fn read_user_tokens(
    current: &[u8],
    previous: Option<&[u8]>,
    previous_until_ms: Option<i64>,
) -> Result<StoredUserTokens, StoreError> {
    let previous = match (previous, previous_until_ms) {
        (Some(hash), Some(until)) => Some((read_hash(hash, "a previous token hash")?, until)),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                "a previous token hash without its end, or the reverse",
            ));
        }
    };
    Ok(StoredUserTokens {
        current: read_hash(current, "a token hash")?,
        previous,
    })
}

/// A device's stored credentials from their columns.
pub fn read_device_credentials(
    current: &[u8],
    next: Option<&[u8]>,
) -> Result<StoredDeviceCredentials, StoreError> {
    Ok(StoredDeviceCredentials {
        current: read_hash(current, "a credential hash")?,
        next: next
            .map(|h| read_hash(h, "a rotated credential hash"))
            .transpose()?,
    })
}

pub fn read_site_id(s: &str) -> Result<SiteId, StoreError> {
    SiteId::new(s).map_err(|e| corrupt(format!("site id {s:?}: {e}")))
}

pub fn read_incident_id(s: &str) -> Result<IncidentId, StoreError> {
    IncidentId::from_str(s).map_err(|e| corrupt(format!("incident id {s:?}: {e}")))
}

pub fn read_device_id(s: &str) -> Result<DeviceId, StoreError> {
    DeviceId::from_str(s).map_err(|e| corrupt(format!("device id {s:?}: {e}")))
}

/// A stored event id (its 16 bytes).
pub fn read_event_id(bytes: &[u8]) -> Result<patrol_core::EventId, StoreError> {
    uuid::Uuid::from_slice(bytes)
        .map(patrol_core::EventId)
        .map_err(|e| corrupt(format!("event id: {e}")))
}

pub fn read_guard_id(s: &str) -> Result<GuardId, StoreError> {
    GuardId::new(s).map_err(|e| corrupt(format!("guard id {s:?}: {e}")))
}

/// A stored public key, checked.
pub fn read_public_key(bytes: Option<Vec<u8>>) -> Result<Option<PublicKey>, StoreError> {
    bytes
        .map(|b| {
            PublicKey::from_bytes(&b).map_err(|e| corrupt(format!("a device's public key: {e}")))
        })
        .transpose()
}

/// A stored signature row: heads as stored ([`signed_heads_blob`]), time, signature, receive
/// time.
pub fn read_signature(
    heads: &[u8],
    signed_at_ms: i64,
    signature: Vec<u8>,
    received_at_ms: i64,
) -> Result<(SignedHeads, i64), StoreError> {
    let heads = heads_from_blob(heads).map_err(|e| corrupt(format!("signed heads: {e}")))?;
    Ok((
        SignedHeads {
            heads: to_wire(&heads),
            signed_at_ms,
            signature,
        },
        received_at_ms,
    ))
}

/// The signed heads as stored (the key of a signature row).
pub fn signed_heads_blob(signed: &SignedHeads) -> Vec<u8> {
    heads_to_blob(&from_wire(&signed.heads))
}

pub fn read_shift_id(s: &str) -> Result<ShiftId, StoreError> {
    ShiftId::from_str(s).map_err(|e| corrupt(format!("shift id {s:?}: {e}")))
}

/// A device's most recent shift from the device list's columns (`None` without a shift log).
pub fn read_latest_shift(
    doc_id: Option<String>,
    started_at_ms: Option<i64>,
    ended_at_ms: Option<i64>,
) -> Result<Option<LatestShift>, StoreError> {
    doc_id
        .map(|id| {
            Ok(LatestShift {
                shift: read_shift_id(&id)?,
                started_at_ms,
                ended_at_ms,
            })
        })
        .transpose()
}

/// A shift listing's row ([`super::SHIFT_COLUMNS`]) as both backends read it.
#[derive(Debug)]
pub struct ShiftRow {
    pub doc_id: String,
    pub guard: String,
    pub device: String,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub events: i64,
    pub last_event_at_ms: Option<i64>,
    pub updated_at_ms: i64,
    pub signatures: i64,
    pub last_signed_at_ms: Option<i64>,
    pub signed: bool,
}

impl ShiftRow {
    pub fn summary(self) -> Result<ShiftSummary, StoreError> {
        Ok(ShiftSummary {
            shift: read_shift_id(&self.doc_id)?,
            guard: read_guard_id(&self.guard)?,
            device: read_device_id(&self.device)?,
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
            events: u64::try_from(self.events).unwrap_or(0),
            last_event_at_ms: self.last_event_at_ms,
            updated_at_ms: self.updated_at_ms,
            signatures: u64::try_from(self.signatures).unwrap_or(0),
            last_signed_at_ms: self.last_signed_at_ms,
            signed: self.signed,
        })
    }
}
