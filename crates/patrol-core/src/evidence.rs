//! Tamper evidence for shift logs: each device holds an ed25519 key made at enrollment and, at
//! every sync that pushes changes of a shift log, signs the log's heads; the server verifies the
//! signature before it stores anything and keeps it; anyone holding the device's public key can
//! check an exported log offline with [`verify_export`].
//!
//! Signing the heads is enough: an automerge change's hash covers its bytes and the hashes of the
//! changes it depends on, so a log's heads commit to its whole history. An exported log verifies
//! only if every change it holds is reachable from signed heads (nothing inserted, nothing
//! altered: an altered change has another hash) and every change the signed heads reach is there
//! (nothing removed). What a signature cannot show is a tail cut off together with the
//! signatures that covered it; the report says how far the signatures reach (time, events, and
//! whether the shift's end is among them) so a reader can tell a finished log from a cut one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use automerge::{Change, ChangeHash};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{DeviceId, ShiftId, SiteId};
use crate::protocol::{DocPush, Hash};
use crate::shiftlog::{ShiftLog, ShiftMeta};

/// Domain separation: a signature over a log's heads can never be taken for anything else.
const HEADS_CONTEXT: &[u8] = b"patrol/shift-log-heads/v1\0";

/// `format` of a [`ShiftLogExport`].
pub const EXPORT_FORMAT: &str = "patrol-shift-log-export/1";

/// Why a signature, a key or an exported log does not hold up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EvidenceError {
    #[error("not an ed25519 public key: {0}")]
    BadPublicKey(String),
    #[error(
        "a weak ed25519 public key (a point of small order): a constant signature would verify against it"
    )]
    WeakPublicKey,
    #[error("the signature over heads signed at {signed_at_ms} does not verify against the key")]
    BadSignature { signed_at_ms: i64 },
    #[error("not a shift-log export: {0}")]
    BadExport(String),
    #[error("change {index} of the export does not decode (altered?): {reason}")]
    UndecodableChange { index: usize, reason: String },
    #[error("change {hash} was not made by the log's device (inserted)")]
    ForeignChange { hash: String },
    #[error(
        "change {hash}, which the device signed, is missing: removed or altered ({count} signed changes missing in all)"
    )]
    MissingChange { hash: String, count: usize },
    #[error(
        "change {hash} (seq {seq}) is covered by no signature of the device: inserted or altered ({count} such changes in all)"
    )]
    UnsignedChange {
        hash: String,
        seq: u64,
        count: usize,
    },
    #[error("the export holds no signature of the device")]
    NoSignature,
    #[error("the signed changes do not load as a shift log of this site, device and shift: {0}")]
    BadLog(String),
}

/// A device's signing key. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DeviceKey")
            .field(&self.public_key())
            .finish()
    }
}

impl DeviceKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Self::from_seed(seed))
    }

    /// The key whose secret is `seed` (as [`DeviceKey::seed`] gave it, to persist).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        DeviceKey(SigningKey::from_bytes(&seed))
    }

    /// The secret, to store on the device. Never send it anywhere.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `heads` of the shift log `meta` names, at device time `signed_at_ms`.
    pub fn sign_heads(
        &self,
        meta: &ShiftMeta,
        heads: &[ChangeHash],
        signed_at_ms: i64,
    ) -> SignedHeads {
        let heads = sorted_wire(heads);
        let message = heads_message(&meta.site, meta.device, meta.shift, &heads, signed_at_ms);
        SignedHeads {
            heads,
            signed_at_ms,
            signature: self.0.sign(&message).to_bytes().to_vec(),
        }
    }

    /// Signs the heads a push of `log` brings the server to, if it carries changes (a push of no
    /// changes adds nothing to sign).
    pub fn sign_push(&self, push: &mut DocPush, log: &mut ShiftLog, signed_at_ms: i64) {
        if !push.changes.is_empty() {
            let heads = log.heads();
            push.signature = Some(self.sign_heads(log.meta(), &heads, signed_at_ms));
        }
    }
}

/// A device's public key: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Refuses what is not a point, a point's non-canonical encoding, and the points of small
    /// order (weak keys: a signature that verifies against one can be made without any secret).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            EvidenceError::BadPublicKey(format!("{} bytes, expected 32", bytes.len()))
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| EvidenceError::BadPublicKey(e.to_string()))?;
        if key.is_weak() {
            return Err(EvidenceError::WeakPublicKey);
        }
        // One key, one encoding: the signed message's hash covers the key's bytes as given.
        if key.to_edwards().compress().to_bytes() != bytes {
            return Err(EvidenceError::BadPublicKey(
                "a non-canonical encoding of a point".into(),
            ));
        }
        Ok(PublicKey(key))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks `signed` as this key's signature over the heads of `device`'s log of `shift`.
    pub fn verify_heads(
        &self,
        site: &SiteId,
        device: DeviceId,
        shift: ShiftId,
        signed: &SignedHeads,
    ) -> Result<(), EvidenceError> {
        let bad = || EvidenceError::BadSignature {
            signed_at_ms: signed.signed_at_ms,
        };
        let signature = Signature::from_slice(&signed.signature).map_err(|_| bad())?;
        let heads = sorted_unique(&signed.heads);
        // Strict: refuses small-order keys and R values and non-canonical signatures, which the
        // plain check lets through (and with them signatures made without the secret).
        self.0
            .verify_strict(
                &heads_message(site, device, shift, &heads, signed.signed_at_ms),
                &signature,
            )
            .map_err(|_| bad())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = EvidenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes =
            hex::decode(s.trim()).map_err(|e| EvidenceError::BadPublicKey(e.to_string()))?;
        Self::from_bytes(&bytes)
    }
}

/// A device's signature over its shift log's heads, sent with a push and kept by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeads {
    /// Sorted, without repeats.
    pub heads: Vec<Hash>,
    /// The device's clock when it signed (not trusted for ordering; shown to the reader).
    pub signed_at_ms: i64,
    /// 64 bytes.
    pub signature: Vec<u8>,
}

impl SignedHeads {
    /// The same signature with its heads sorted and without repeats, the form it is signed and
    /// kept in (a device may send them in any order).
    pub fn canonical(&self) -> SignedHeads {
        SignedHeads {
            heads: sorted_unique(&self.heads),
            ..self.clone()
        }
    }

    /// Whether it signs exactly `heads` (in any order).
    pub fn signs(&self, heads: &[ChangeHash]) -> bool {
        sorted_unique(&self.heads) == sorted_wire(heads)
    }
}

fn sorted_wire(heads: &[ChangeHash]) -> Vec<Hash> {
    sorted_unique(&heads.iter().map(|h| h.0).collect::<Vec<_>>())
}

fn sorted_unique(heads: &[Hash]) -> Vec<Hash> {
    let mut heads = heads.to_vec();
    heads.sort_unstable();
    heads.dedup();
    heads
}

/// What is signed: the context, the log's site, device and shift, the time, and the sorted heads.
fn heads_message(
    site: &SiteId,
    device: DeviceId,
    shift: ShiftId,
    sorted_heads: &[Hash],
    signed_at_ms: i64,
) -> Vec<u8> {
    let site = site.as_str().as_bytes();
    let mut m = Vec::with_capacity(HEADS_CONTEXT.len() + 64 + site.len() + 32 * sorted_heads.len());
    m.extend_from_slice(HEADS_CONTEXT);
    // Lengths first, so no two different inputs give the same bytes.
    m.extend_from_slice(&(site.len() as u64).to_be_bytes());
    m.extend_from_slice(site);
    m.extend_from_slice(device.as_uuid().as_bytes());
    m.extend_from_slice(shift.as_uuid().as_bytes());
    m.extend_from_slice(&signed_at_ms.to_be_bytes());
    m.extend_from_slice(&(sorted_heads.len() as u64).to_be_bytes());
    for h in sorted_heads {
        m.extend_from_slice(h);
    }
    m
}

/// One signature as an export carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedSignature {
    /// Hex change hashes.
    pub heads: Vec<String>,
    pub signed_at_ms: i64,
    /// Hex, 64 bytes.
    pub signature: String,
    /// When the server received it (not signed; for the reader).
    pub received_at_ms: i64,
}

/// A shift log as the server holds it, with the device's signatures: what `patrol verify` checks.
/// JSON, so that a person can read what it claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftLogExport {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    pub site: SiteId,
    pub device: DeviceId,
    pub shift: ShiftId,
    /// The key the server registered for the device at enrollment (hex), if any. Verification
    /// uses the key the verifier is given, never this one.
    pub public_key: Option<String>,
    /// The log's raw automerge changes (hex), each dependency before its dependents.
    pub changes: Vec<String>,
    pub signatures: Vec<ExportedSignature>,
}

impl ShiftLogExport {
    /// Builds an export from a stored log's changes and the signatures kept for it.
    pub fn new(
        meta: &ShiftMeta,
        public_key: Option<PublicKey>,
        changes: &[Change],
        signatures: &[(SignedHeads, i64)],
    ) -> Self {
        ShiftLogExport {
            format: EXPORT_FORMAT.to_owned(),
            site: meta.site.clone(),
            device: meta.device,
            shift: meta.shift,
            public_key: public_key.map(|k| k.to_string()),
            changes: changes.iter().map(|c| hex::encode(c.raw_bytes())).collect(),
            signatures: signatures
                .iter()
                .map(|(s, received_at_ms)| ExportedSignature {
                    heads: s.heads.iter().map(hex::encode).collect(),
                    signed_at_ms: s.signed_at_ms,
                    signature: hex::encode(&s.signature),
                    received_at_ms: *received_at_ms,
                })
                .collect(),
        }
    }
}

/// What a verified export shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub meta: ShiftMeta,
    pub changes: usize,
    pub events: usize,
    pub signatures: usize,
    /// The device time of the latest signature.
    pub last_signed_at_ms: i64,
    /// Whether the log's end (a `ShiftEnded` event) is among the signed events: if not, the
    /// shift was still open at the last sync, or its tail was cut off with its signatures.
    pub ended: bool,
}

/// Checks an exported shift log against the device's public key: every signature verifies, and
/// the changes are exactly those the signed heads reach (none missing, none extra, none altered).
pub fn verify_export(export: &ShiftLogExport, key: &PublicKey) -> Result<Verified, EvidenceError> {
    if export.format != EXPORT_FORMAT {
        return Err(EvidenceError::BadExport(format!(
            "format is {:?}, expected {EXPORT_FORMAT:?}",
            export.format
        )));
    }
    if export.signatures.is_empty() {
        return Err(EvidenceError::NoSignature);
    }
    let mut signed_heads = HashSet::new();
    let mut last_signed_at_ms = i64::MIN;
    for s in &export.signatures {
        let signed = SignedHeads {
            heads: s
                .heads
                .iter()
                .map(|h| decode_hash(h))
                .collect::<Result<_, _>>()?,
            signed_at_ms: s.signed_at_ms,
            signature: hex::decode(&s.signature)
                .map_err(|e| EvidenceError::BadExport(format!("signature: {e}")))?,
        };
        key.verify_heads(&export.site, export.device, export.shift, &signed)?;
        signed_heads.extend(signed.heads.iter().map(|h| ChangeHash(*h)));
        last_signed_at_ms = last_signed_at_ms.max(s.signed_at_ms);
    }

    let actor = export.device.actor_id();
    // Each change once, in the export's order, and where to find it by hash.
    let mut order: Vec<Change> = Vec::with_capacity(export.changes.len());
    let mut by_hash: HashMap<ChangeHash, usize> = HashMap::with_capacity(export.changes.len());
    for (index, text) in export.changes.iter().enumerate() {
        let undecodable = |reason: String| EvidenceError::UndecodableChange { index, reason };
        let bytes = hex::decode(text).map_err(|e| undecodable(e.to_string()))?;
        let change = Change::from_bytes(bytes).map_err(|e| undecodable(e.to_string()))?;
        if change.actor_id() != &actor {
            return Err(EvidenceError::ForeignChange {
                hash: change.hash().to_string(),
            });
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = by_hash.entry(change.hash()) {
            slot.insert(order.len());
            order.push(change);
        }
    }

    // Everything the signed heads reach must be present.
    let mut reached = HashSet::new();
    let mut missing = Vec::new();
    let mut stack: Vec<ChangeHash> = signed_heads.into_iter().collect();
    while let Some(hash) = stack.pop() {
        if !reached.insert(hash) {
            continue;
        }
        match by_hash.get(&hash) {
            Some(&i) => stack.extend(order[i].deps().iter().copied()),
            None => missing.push(hash),
        }
    }
    if let Some(first) = missing.iter().min() {
        return Err(EvidenceError::MissingChange {
            hash: first.to_string(),
            count: missing.len(),
        });
    }
    // And nothing the signed heads do not reach may be there.
    let mut unsigned: Vec<&Change> = order
        .iter()
        .filter(|c| !reached.contains(&c.hash()))
        .collect();
    unsigned.sort_by_key(|c| c.seq());
    if let Some(first) = unsigned.first() {
        return Err(EvidenceError::UnsignedChange {
            hash: first.hash().to_string(),
            seq: first.seq(),
            count: unsigned.len(),
        });
    }

    // The signed changes are the device's own; they must still be a log of this shift.
    let mut bytes = Vec::new();
    for change in &order {
        bytes.extend_from_slice(change.raw_bytes());
    }
    let loaded = catch_unwind(AssertUnwindSafe(|| ShiftLog::load(&bytes, export.device)))
        .map_err(|_| EvidenceError::BadLog("automerge could not load the changes".into()))?;
    let log = loaded.map_err(|e| EvidenceError::BadLog(e.to_string()))?;
    let log_meta = log.meta().clone();
    if log_meta.site != export.site
        || log_meta.device != export.device
        || log_meta.shift != export.shift
    {
        return Err(EvidenceError::BadLog(format!(
            "the log says site {}, device {}, shift {}",
            log_meta.site, log_meta.device, log_meta.shift
        )));
    }
    Ok(Verified {
        ended: log.is_ended(),
        events: log.event_count(),
        meta: log_meta,
        changes: order.len(),
        signatures: export.signatures.len(),
        last_signed_at_ms,
    })
}

fn decode_hash(text: &str) -> Result<Hash, EvidenceError> {
    hex::decode(text)
        .ok()
        .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
        .ok_or_else(|| EvidenceError::BadExport(format!("{text:?} is not a change hash")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EventId;
    use crate::shiftlog::tests::{meta, scan};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A log of five events the device signed twice (after events 2 and 5), exported.
    fn signed_log() -> Result<(DeviceKey, ShiftLogExport, Vec<Change>), Box<dyn std::error::Error>>
    {
        let key = DeviceKey::generate()?;
        let device = DeviceId::generate();
        let (mut log, _) = ShiftLog::create(meta(device))?;
        let mut signatures = Vec::new();
        for seq in 1..=5 {
            log.record(EventId::generate(), &scan(seq))?;
            if seq == 2 || seq == 5 {
                let heads = log.heads();
                let signed_at = 1_740_866_400_000 + seq as i64;
                signatures.push((key.sign_heads(log.meta(), &heads, signed_at), signed_at + 9));
            }
        }
        let changes = log.changes();
        let export = ShiftLogExport::new(log.meta(), Some(key.public_key()), &changes, &signatures);
        Ok((key, export, changes))
    }

    /// A change the device never made: a log holding `prefix`, extended with another event by
    /// someone holding the stored data (and so the device's actor id) but not its key.
    fn forged_after(
        export: &ShiftLogExport,
        prefix: &[Change],
        seq: u64,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let bytes: Vec<u8> = prefix.iter().flat_map(|c| c.raw_bytes().to_vec()).collect();
        let mut log = ShiftLog::load(&bytes, export.device)?;
        let change = log
            .record(EventId::generate(), &scan(seq + 100))?
            .ok_or("no change")?;
        Ok(hex::encode(change.bytes))
    }

    #[test]
    fn an_untouched_export_verifies() -> TestResult {
        let (key, export, _) = signed_log()?;
        let verified = verify_export(&export, &key.public_key())?;
        assert_eq!(
            (verified.events, verified.changes, verified.signatures),
            (5, 6, 2)
        );
        assert_eq!(verified.last_signed_at_ms, 1_740_866_400_005);
        assert!(!verified.ended);
        // The export survives JSON, as `patrol verify` reads it.
        let back: ShiftLogExport = serde_json::from_str(&serde_json::to_string(&export)?)?;
        verify_export(&back, &key.public_key())?;
        Ok(())
    }

    #[test]
    fn a_changed_change_is_detected() -> TestResult {
        let (key, mut export, changes) = signed_log()?;
        // Event 3 replaced by another with the same actor, sequence number and dependencies.
        export.changes[3] = forged_after(&export, &changes[..3], 3)?;
        let err = verify_export(&export, &key.public_key());
        assert!(
            matches!(err, Err(EvidenceError::MissingChange { .. })),
            "{err:?}"
        );

        // A byte changed in place no longer decodes, or decodes as another change.
        let (key, mut export, _) = signed_log()?;
        let mut bytes = hex::decode(&export.changes[2])?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        export.changes[2] = hex::encode(bytes);
        let err = verify_export(&export, &key.public_key());
        assert!(
            matches!(
                err,
                Err(EvidenceError::UndecodableChange { index: 2, .. }
                    | EvidenceError::MissingChange { .. })
            ),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn a_removed_change_is_detected() -> TestResult {
        for index in [0, 3, 5] {
            let (key, mut export, _) = signed_log()?;
            export.changes.remove(index);
            let err = verify_export(&export, &key.public_key());
            assert!(
                matches!(err, Err(EvidenceError::MissingChange { .. })),
                "{index}: {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_inserted_change_is_detected() -> TestResult {
        // After the last signed change, with the device's actor id.
        let (key, mut export, changes) = signed_log()?;
        let forged = forged_after(&export, &changes, 6)?;
        export.changes.push(forged);
        let err = verify_export(&export, &key.public_key());
        assert!(
            matches!(
                err,
                Err(EvidenceError::UnsignedChange {
                    seq: 7,
                    count: 1,
                    ..
                })
            ),
            "{err:?}"
        );

        // Alongside the signed ones, as a concurrent branch.
        let (key, mut export, changes) = signed_log()?;
        export
            .changes
            .insert(3, forged_after(&export, &changes[..3], 3)?);
        let err = verify_export(&export, &key.public_key());
        assert!(
            matches!(err, Err(EvidenceError::UnsignedChange { .. })),
            "{err:?}"
        );

        // By another actor.
        let (key, mut export, _) = signed_log()?;
        let (mut other, _) = ShiftLog::create(meta(DeviceId::generate()))?;
        let change = other
            .record(EventId::generate(), &scan(1))?
            .ok_or("no change")?;
        export.changes.push(hex::encode(change.bytes));
        let err = verify_export(&export, &key.public_key());
        assert!(
            matches!(err, Err(EvidenceError::ForeignChange { .. })),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn signatures_hold_only_for_their_key_and_content() -> TestResult {
        let (key, export, _) = signed_log()?;
        let other = DeviceKey::generate()?;
        let err = verify_export(&export, &other.public_key());
        assert!(
            matches!(err, Err(EvidenceError::BadSignature { .. })),
            "{err:?}"
        );

        let mut moved = export.clone();
        moved.signatures[1].signed_at_ms += 1;
        let err = verify_export(&moved, &key.public_key());
        assert!(
            matches!(err, Err(EvidenceError::BadSignature { .. })),
            "{err:?}"
        );

        // The same log claimed for another shift.
        let mut renamed = export.clone();
        renamed.shift = ShiftId::generate();
        let err = verify_export(&renamed, &key.public_key());
        assert!(
            matches!(err, Err(EvidenceError::BadSignature { .. })),
            "{err:?}"
        );

        // Dropping every signature leaves nothing signed.
        let mut unsigned = export;
        unsigned.signatures.clear();
        assert_eq!(
            verify_export(&unsigned, &key.public_key()),
            Err(EvidenceError::NoSignature)
        );
        Ok(())
    }

    #[test]
    fn keys_round_trip_and_bad_ones_are_refused() -> TestResult {
        let key = DeviceKey::generate()?;
        assert_eq!(
            DeviceKey::from_seed(key.seed()).public_key(),
            key.public_key()
        );
        let text = key.public_key().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>()?, key.public_key());
        assert!("zz".parse::<PublicKey>().is_err());
        assert!(PublicKey::from_bytes(&[1; 31]).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed())));
        // A point's non-canonical encoding: y + p, for the first small y (above 1, whose
        // points are of small order) that is a point's.
        let y = (2u8..19)
            .find(|&y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                VerifyingKey::from_bytes(&bytes).is_ok_and(|k| !k.is_weak())
            })
            .ok_or("no point with a small y")?;
        let mut y_plus_p = [0xff; 32];
        y_plus_p[0] = 0xed + y;
        y_plus_p[31] = 0x7f;
        assert!(VerifyingKey::from_bytes(&y_plus_p).is_ok());
        assert!(matches!(
            PublicKey::from_bytes(&y_plus_p),
            Err(EvidenceError::BadPublicKey(_))
        ));
        Ok(())
    }

    /// The eight points of small order in their canonical encodings (the identity, the point of
    /// order 2, two of order 4, four of order 8)...
    const SMALL_ORDER: [&str; 8] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ];
    /// ...and the non-canonical encodings that decode to them: x = 0 with the sign bit set, and
    /// y + p for y = 0 and y = 1 (with either sign bit).
    const SMALL_ORDER_NON_CANONICAL: [&str; 6] = [
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];

    fn weak_keys() -> Result<Vec<[u8; 32]>, Box<dyn std::error::Error>> {
        let mut keys = Vec::new();
        for text in SMALL_ORDER.iter().chain(&SMALL_ORDER_NON_CANONICAL) {
            let bytes: [u8; 32] = hex::decode(text)?.try_into().map_err(|_| "not 32 bytes")?;
            // The list agrees with the library: each decodes, to a point of small order.
            assert!(VerifyingKey::from_bytes(&bytes)?.is_weak(), "{text}");
            keys.push(bytes);
        }
        Ok(keys)
    }

    #[test]
    fn weak_keys_are_refused() -> TestResult {
        for bytes in weak_keys()? {
            let text = hex::encode(bytes);
            assert_eq!(
                PublicKey::from_bytes(&bytes),
                Err(EvidenceError::WeakPublicKey),
                "{text}"
            );
            assert_eq!(
                text.parse::<PublicKey>(),
                Err(EvidenceError::WeakPublicKey),
                "{text}"
            );
        }
        Ok(())
    }

    /// What an attacker without any secret makes against a weak key: the real log's changes,
    /// one signature over its heads, and the constant signature R = identity, s = 0. It passes
    /// the plain (non-strict) check whenever the message's hash is a multiple of the key's order,
    /// so the attacker tries signing times until one does.
    fn forged_export(
        weak: &[u8; 32],
    ) -> Result<(ShiftLogExport, PublicKey), Box<dyn std::error::Error>> {
        use ed25519_dalek::Verifier;

        let (_, mut export, changes) = signed_log()?;
        // Built around from_bytes, which now refuses it.
        let key = VerifyingKey::from_bytes(weak)?;
        let mut constant = [0u8; 64];
        constant[0] = 1;
        let signature = Signature::from_bytes(&constant);
        let bytes: Vec<u8> = changes
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        let mut log = ShiftLog::load(&bytes, export.device)?;
        let heads = sorted_wire(&log.heads());
        for signed_at_ms in 0..10_000 {
            let message = heads_message(
                &export.site,
                export.device,
                export.shift,
                &heads,
                signed_at_ms,
            );
            if key.verify(&message, &signature).is_ok() {
                export.signatures = vec![ExportedSignature {
                    heads: heads.iter().map(hex::encode).collect(),
                    signed_at_ms,
                    signature: hex::encode(constant),
                    received_at_ms: signed_at_ms,
                }];
                return Ok((export, PublicKey(key)));
            }
        }
        Err(format!("no forgery against {}", hex::encode(weak)).into())
    }

    #[test]
    fn a_constant_signature_against_a_weak_key_does_not_verify() -> TestResult {
        for weak in weak_keys()? {
            let (forged, key) = forged_export(&weak)?;
            let err = verify_export(&forged, &key);
            assert!(
                matches!(err, Err(EvidenceError::BadSignature { .. })),
                "{}: {err:?}",
                hex::encode(weak)
            );
        }
        Ok(())
    }
}
