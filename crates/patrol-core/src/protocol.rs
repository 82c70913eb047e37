//! The sync protocol's messages: a heads exchange over request/response HTTP.
//!
//! The device sends, for each document it holds, the heads the server last acknowledged and the
//! changes since then (an automerge bundle); the server answers, per document, with its heads or
//! a rejection. Every message is `MAGIC`, a version byte, then postcard. Sending the same request
//! twice changes nothing: changes are content-addressed and events are keyed by id.
//!
//! The same exchange carries what flows the other way: the site configuration when the server
//! has a newer version than the device, the incidents the device's guard takes part in (both
//! directions: the device pushes its incident changes like a shift log's, the server answers
//! with the changes the device lacks), the control room's acknowledgements of the device's
//! panic alarms, and, to a device on shift, the scans the server's tour compliance counted
//! (every device's), so that its tour view shows what other guards did.

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::evidence::SignedHeads;
use crate::hlc::Hlc;
use crate::ids::{CheckpointId, DeviceId, EventId, GuardId, IncidentId, ShiftId, SiteId};

/// First bytes of every sync message.
pub const MAGIC: &[u8; 4] = b"PTRL";
/// Current protocol version; the server answers 400 `unsupported_version` to others.
/// Version 2 added incidents, site configuration and alarm acknowledgements.
/// Version 3 added the device's signature over its shift log's heads.
/// Version 4 added the tour status in the answer ([`SyncResponse::tours`]); its request is
/// version 3's.
pub const PROTOCOL_VERSION: u8 = 4;
/// The oldest version the server still answers, in that version's own shape: phones are
/// updated after the server, some of them long after.
pub const OLDEST_VERSION: u8 = 3;
/// Media type of sync messages.
pub const CONTENT_TYPE: &str = "application/x-patrol-sync";
/// Response header of a sync whose device credential is due for rotation (value `due`): the
/// phone asks for its next credential (`POST /api/v1/devices/me/credential`) after the sync.
pub const CREDENTIAL_ROTATION_HEADER: &str = "patrol-credential-rotation";

/// Request header of a sync that carries a panic alarm not yet delivered (value `panic`): the
/// server admits it in its panic lane, ahead of every ordinary sync waiting, and never refuses
/// it for load. Its body may be at most [`MAX_PANIC_SYNC_BODY_BYTES`].
pub const PRIORITY_HEADER: &str = "patrol-priority";
/// [`PRIORITY_HEADER`]'s value for a panic.
pub const PRIORITY_PANIC: &str = "panic";
/// The most a panic sync's body may hold: a panic and the few changes a phone has pending
/// beside it, not a night's backlog (the server answers 413 beyond; a phone sends a larger one
/// as an ordinary sync).
pub const MAX_PANIC_SYNC_BODY_BYTES: usize = 256 * 1024;

/// The largest file a guard may attach (25 MiB): a few phone photos, or a short clip. The phone
/// refuses to attach a larger one and the server refuses to take one.
pub const MAX_ATTACHMENT_BYTES: u64 = 25 * 1024 * 1024;
/// The most attachment bytes a phone holds not yet uploaded (200 MiB): beyond, it refuses to
/// attach more until uploads catch up. The server bounds a device's unfinished uploads by the
/// same amount.
pub const MAX_DEVICE_PENDING_ATTACHMENT_BYTES: u64 = 200 * 1024 * 1024;
/// The most bytes one upload request carries (1 MiB): a cut connection loses at most that, and
/// one request never holds the server's memory or an upload slot for long.
pub const ATTACHMENT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Media type of an attachment chunk's body.
pub const ATTACHMENT_CHUNK_TYPE: &str = "application/octet-stream";

/// A change hash on the wire.
pub type Hash = [u8; 32];

pub fn to_wire(hashes: &[ChangeHash]) -> Vec<Hash> {
    hashes.iter().map(|h| h.0).collect()
}

pub fn from_wire(hashes: &[Hash]) -> Vec<ChangeHash> {
    hashes.iter().map(|h| ChangeHash(*h)).collect()
}

/// Which document a push or result is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DocRef {
    ShiftLog(ShiftId),
    /// An incident document; its `have` is the server heads the device last merged.
    Incident(IncidentId),
}

/// One document's part of a sync request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPush {
    pub doc: DocRef,
    /// Heads the server acknowledged last time (what the device believes it has).
    pub have: Vec<Hash>,
    /// The changes since `have`: an automerge bundle, or empty to ask for heads only.
    pub changes: Vec<u8>,
    /// How many events `changes` holds, for the device-health view (not trusted for anything else).
    pub events: u32,
    /// A shift log's push with changes: the device's signature over the heads they bring the log
    /// to ([`crate::evidence`]). The server refuses a push of changes without a valid one from a
    /// device that enrolled with a key.
    pub signature: Option<SignedHeads>,
}

/// Device → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub site: SiteId,
    pub device: DeviceId,
    /// The device's number for this request, persisted and increased for every request it
    /// prepares: the server applies a request only if this is greater than the last one it
    /// accepted from the device, so a captured request cannot be played again. A retry is a
    /// freshly prepared request with a new number.
    pub request_seq: u64,
    /// The device's wall clock when it sent this, for the server's skew estimate.
    pub device_time_ms: i64,
    pub hlc: Hlc,
    /// Events recorded on the device and not yet acknowledged, including those in this request.
    /// The server subtracts the events of the pushes it accepts to show what is still pending.
    pub pending_events: u64,
    pub docs: Vec<DocPush>,
    /// The guard on duty (of the open shift), whose assigned incidents the device should get.
    pub guard: Option<GuardId>,
    /// The site configuration version the device holds (0: none).
    pub config_version: u64,
    /// The device's delivered panic alarms it has not yet seen acknowledged.
    pub awaiting_ack: Vec<EventId>,
}

/// A site configuration the device does not have yet: [`crate::siteconfig::SiteConfig`],
/// encoded with its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    pub version: u64,
    pub config: Vec<u8>,
}

/// Incident changes the device lacks, with the server's heads once it merges them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    pub incident: IncidentId,
    pub heads: Vec<Hash>,
    /// Raw automerge changes, concatenated (empty when the device has them all).
    pub changes: Vec<u8>,
}

/// The control room acknowledged one of the device's panic alarms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmAck {
    pub event: EventId,
    /// The operator who acknowledged it.
    pub by: String,
    pub at_ms: i64,
}

/// Why the server refused a document. The rest of the batch is unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The bundle or a change in it does not decode.
    Malformed,
    /// A change was made by an actor other than the sending device's.
    ForeignActor,
    /// The document belongs to another site, device or shift than the request says.
    WrongOwner,
    /// A change overwrites or deletes an event; events are immutable.
    ImmutableEvent,
    /// A change holds an operation a shift log never contains.
    UnexpectedOperation,
    /// The document's first change (its metadata) has not been received.
    MissingMeta,
    /// An incident change claims to be written by someone other than the sending device, or
    /// reports an incident for another site.
    WrongAuthor,
    /// A shift log's changes came without the device's signature over their heads, or with one
    /// that does not verify against the key the device enrolled with.
    BadSignature,
}

impl RejectCode {
    /// Every code, for those who report each one (the server's metrics export a series per
    /// code from the start). A new variant goes here too.
    pub const ALL: [RejectCode; 8] = [
        RejectCode::Malformed,
        RejectCode::ForeignActor,
        RejectCode::WrongOwner,
        RejectCode::ImmutableEvent,
        RejectCode::UnexpectedOperation,
        RejectCode::MissingMeta,
        RejectCode::WrongAuthor,
        RejectCode::BadSignature,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::ForeignActor => "foreign_actor",
            RejectCode::WrongOwner => "wrong_owner",
            RejectCode::ImmutableEvent => "immutable_event",
            RejectCode::UnexpectedOperation => "unexpected_operation",
            RejectCode::MissingMeta => "missing_meta",
            RejectCode::WrongAuthor => "wrong_author",
            RejectCode::BadSignature => "bad_signature",
        }
    }
}

/// What became of one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocOutcome {
    Accepted {
        /// The server's heads after applying the push. Every change they cover is durable there.
        heads: Vec<Hash>,
        /// Events new to the server in this push (0 for a repeat).
        new_events: u32,
        /// The server lacks changes the push depends on; the device should send all it has.
        missing_deps: bool,
    },
    Rejected {
        code: RejectCode,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocResult {
    pub doc: DocRef,
    pub outcome: DocOutcome,
}

/// The scans the server's compliance counted for one tour's windows (one scan per checkpoint
/// and window at most), in order of time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TourScans {
    pub tour: String,
    pub scans: Vec<CountedScan>,
}

/// A scan a window counted: its checkpoint, its corrected time on the server, and its event (so
/// that a phone knows its own among them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedScan {
    pub checkpoint: CheckpointId,
    pub at_ms: i64,
    pub event: EventId,
}

/// The site's tour compliance as the server had it when it answered: for each tour, the scans
/// its windows of the last [`crate::siteconfig::TONIGHT_MS`] counted, from every device,
/// including those this sync delivered. The phone's tour view combines them with its own scans
/// not delivered yet (the phone library's tour view).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TourStatus {
    pub tours: Vec<TourScans>,
}

impl TourStatus {
    /// The scans counted for `tour` (none if the server counted none).
    pub fn scans_of(&self, tour: &str) -> &[CountedScan] {
        self.tours
            .iter()
            .find(|t| t.tour == tour)
            .map_or(&[], |t| t.scans.as_slice())
    }
}

/// Server → device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub server_time_ms: i64,
    pub docs: Vec<DocResult>,
    pub config: Option<ConfigUpdate>,
    pub incidents: Vec<IncidentUpdate>,
    pub alarm_acks: Vec<AlarmAck>,
    /// Version 4: to a device on shift at a site with tours, what the server's compliance
    /// counted ([`TourStatus`]); `None` otherwise.
    pub tours: Option<TourStatus>,
}

/// A version 3 answer: version 4's without the tour status.
#[derive(Serialize)]
struct SyncResponseV3<'a> {
    server_time_ms: i64,
    docs: &'a [DocResult],
    config: &'a Option<ConfigUpdate>,
    incidents: &'a [IncidentUpdate],
    alarm_acks: &'a [AlarmAck],
}

fn encode<T: Serialize>(version: u8, msg: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(version);
    Ok(postcard::to_extend(msg, out)?)
}

/// The message and its version, if `versions` holds it.
fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    versions: std::ops::RangeInclusive<u8>,
) -> Result<(T, u8), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(DecodeError::BadMagic)?;
    match rest.split_first() {
        Some((&v, body)) if versions.contains(&v) => {
            let (msg, extra) = postcard::take_from_bytes::<T>(body)?;
            if !extra.is_empty() {
                return Err(DecodeError::Malformed(format!(
                    "{} trailing bytes after message",
                    extra.len()
                )));
            }
            Ok((msg, v))
        }
        Some((&v, _)) => Err(DecodeError::UnknownVersion(v)),
        None => Err(DecodeError::Malformed("truncated header".into())),
    }
}

impl SyncRequest {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        encode(PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_any(bytes).map(|(request, _)| request)
    }

    /// A request of any version the server answers ([`OLDEST_VERSION`] to
    /// [`PROTOCOL_VERSION`]: their requests have one shape), with its version, in which the
    /// answer goes ([`SyncResponse::encode_for`]).
    pub fn decode_any(bytes: &[u8]) -> Result<(Self, u8), DecodeError> {
        decode(bytes, OLDEST_VERSION..=PROTOCOL_VERSION)
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        encode(PROTOCOL_VERSION, self)
    }

    /// The answer to a request of `version` (as [`SyncRequest::decode_any`] gave it), in that
    /// version's shape: a version 3 answer has no tour status.
    pub fn encode_for(&self, version: u8) -> Result<Vec<u8>, EncodeError> {
        if version >= PROTOCOL_VERSION {
            return self.encode();
        }
        encode(
            version,
            &SyncResponseV3 {
                server_time_ms: self.server_time_ms,
                docs: &self.docs,
                config: &self.config,
                incidents: &self.incidents,
                alarm_acks: &self.alarm_acks,
            },
        )
    }

    /// An answer of this version only: the phone speaks its own.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, PROTOCOL_VERSION..=PROTOCOL_VERSION).map(|(response, _)| response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reject_code_once() {
        // Exhaustive: a new variant does not compile until it has a place here, and then the
        // assertion fails until it is in `ALL`.
        let place = |c: &RejectCode| match c {
            RejectCode::Malformed => 0,
            RejectCode::ForeignActor => 1,
            RejectCode::WrongOwner => 2,
            RejectCode::ImmutableEvent => 3,
            RejectCode::UnexpectedOperation => 4,
            RejectCode::MissingMeta => 5,
            RejectCode::WrongAuthor => 6,
            RejectCode::BadSignature => 7,
        };
        let mut seen = [0; RejectCode::ALL.len()];
        for code in RejectCode::ALL {
            seen[place(&code)] += 1;
        }
        assert_eq!(seen, [1; RejectCode::ALL.len()]);
    }

    fn request() -> SyncRequest {
        SyncRequest {
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            device: DeviceId::generate(),
            request_seq: 7,
            device_time_ms: 1_700_000_000_000,
            hlc: Hlc {
                wall_ms: 1_700_000_000_000,
                counter: 2,
            },
            pending_events: 3,
            docs: vec![DocPush {
                doc: DocRef::ShiftLog(ShiftId::generate()),
                have: vec![[7; 32]],
                changes: vec![1, 2, 3],
                events: 1,
                signature: None,
            }],
            guard: Some(GuardId::new("guard-1").unwrap_or_else(|e| panic!("{e}"))),
            config_version: 4,
            awaiting_ack: vec![EventId::generate()],
        }
    }

    #[test]
    fn messages_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let req = request();
        assert_eq!(SyncRequest::decode(&req.encode()?)?, req);
        let resp = SyncResponse {
            server_time_ms: 5,
            docs: vec![DocResult {
                doc: req.docs[0].doc,
                outcome: DocOutcome::Rejected {
                    code: RejectCode::Malformed,
                    message: "x".into(),
                },
            }],
            config: Some(ConfigUpdate {
                version: 5,
                config: vec![1],
            }),
            incidents: vec![IncidentUpdate {
                incident: IncidentId::generate(),
                heads: vec![[3; 32]],
                changes: vec![9, 9],
            }],
            alarm_acks: vec![AlarmAck {
                event: EventId::generate(),
                by: "op".into(),
                at_ms: 7,
            }],
            tours: Some(TourStatus {
                tours: vec![TourScans {
                    tour: "night".into(),
                    scans: vec![CountedScan {
                        checkpoint: CheckpointId::new("cp-1").unwrap_or_else(|e| panic!("{e}")),
                        at_ms: 9,
                        event: EventId::generate(),
                    }],
                }],
            }),
        };
        assert_eq!(SyncResponse::decode(&resp.encode()?)?, resp);
        assert_eq!(resp.encode_for(PROTOCOL_VERSION)?, resp.encode()?);
        Ok(())
    }

    /// A phone of version 3 sends a request of version 3's shape and reads an answer of that
    /// shape: the server decodes the one and writes the other, without the tour status.
    #[test]
    fn a_version_3_phone_is_answered_in_version_3() -> Result<(), Box<dyn std::error::Error>> {
        /// Version 3's answer, as a phone of that version decodes it.
        #[derive(Debug, PartialEq, Deserialize)]
        struct ResponseV3 {
            server_time_ms: i64,
            docs: Vec<DocResult>,
            config: Option<ConfigUpdate>,
            incidents: Vec<IncidentUpdate>,
            alarm_acks: Vec<AlarmAck>,
        }
        let sent = request();
        let mut old = sent.encode()?;
        old[4] = 3;
        assert_eq!(SyncRequest::decode_any(&old)?, (sent, 3));
        let resp = SyncResponse {
            server_time_ms: 5,
            docs: Vec::new(),
            config: None,
            incidents: Vec::new(),
            alarm_acks: vec![AlarmAck {
                event: EventId::generate(),
                by: "op".into(),
                at_ms: 7,
            }],
            tours: Some(TourStatus::default()),
        };
        let bytes = resp.encode_for(3)?;
        assert_eq!(&bytes[..5], b"PTRL\x03");
        let (v3, _) = decode::<ResponseV3>(&bytes, 3..=3)?;
        assert_eq!(v3.alarm_acks, resp.alarm_acks);
        assert_eq!(v3.server_time_ms, 5);
        // This phone reads only its own version's answers.
        assert_eq!(
            SyncResponse::decode(&bytes),
            Err(DecodeError::UnknownVersion(3))
        );
        Ok(())
    }

    #[test]
    fn decoding_rejects_bad_magic_versions_truncation_and_trailing_bytes()
    -> Result<(), Box<dyn std::error::Error>> {
        let bytes = request().encode()?;
        assert_eq!(SyncRequest::decode(b""), Err(DecodeError::Empty));
        assert_eq!(
            SyncRequest::decode(b"GET / HTTP/1.1"),
            Err(DecodeError::BadMagic)
        );
        for version in [1, OLDEST_VERSION - 1, PROTOCOL_VERSION + 1] {
            let mut other = bytes.clone();
            other[4] = version;
            assert_eq!(
                SyncRequest::decode(&other),
                Err(DecodeError::UnknownVersion(version))
            );
        }
        for cut in 5..bytes.len() {
            assert!(
                SyncRequest::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(SyncRequest::decode(&long).is_err());
        Ok(())
    }
}
