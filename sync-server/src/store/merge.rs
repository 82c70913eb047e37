//! The backend-neutral part of applying a push: load the stored document from its chunks, run
//! the core's merge rules on it, and say exactly what a backend must write.
//!
//! Every backend applies a sync request in two phases:
//!
//! 1. **Merge**, outside any write lock and in parallel across documents: read the document's
//!    stored chunks and its [`StoredDoc::version`] (one consistent read), then run
//!    [`merge_shift_log`], the CPU-heavy part (automerge parsing, the core's checks, the save). A
//!    rejection is decided here and never reaches the write phase.
//! 2. **Write**, in one short transaction per request: for every document with something to
//!    write, check that its version is still the one the merge started from (SQLite: under the
//!    database write lock; PostgreSQL: `SELECT .. FOR NO KEY UPDATE` on the `docs` row), then persist
//!    the [`MergedLog`]: the chunk, the `docs` row, and each new event with the next per-site
//!    sequence number. If a version moved (a concurrent push of the same document committed
//!    first), the merge is redone from a fresh read.
//!
//! [`apply_in_rounds`] runs the two phases of a backend ([`Phases`]) in these rounds, at most
//! [`OPTIMISTIC_ROUNDS`]: in the last, a document whose version moved again is merged under the
//! lock instead.

use std::future::Future;

use automerge::{Automerge, ChangeHash};
use patrol_core::evidence::SignedHeads;
use patrol_core::merge::{Owner, Rejection, ingest_shift_log};
use patrol_core::protocol::{DocOutcome, RejectCode, to_wire};
use patrol_core::{Event, EventId, ShiftId, ShiftMeta};

use super::{StoreError, SyncBatch, SyncRefusal};

/// Optimistic rounds of a sync request (read, merge, check and write) before the documents whose
/// version keeps moving are merged under the write lock instead.
pub const OPTIMISTIC_ROUNDS: u32 = 3;

/// Above this many chunks, a document's chunks are replaced by one compacted save in the same
/// transaction: a save is smaller than the changes and loads faster.
pub const COMPACT_AFTER_CHUNKS: u32 = 16;

/// `docs.kind` of a shift log.
pub const SHIFT_LOG_KIND: &str = "shift_log";

/// How a shift log is named in the `docs` table of its site.
pub fn shift_log_doc_id(shift: &ShiftId) -> String {
    shift.to_string()
}

/// A document as the merge phase read it.
#[derive(Debug, Default)]
pub struct StoredDoc {
    /// What the write phase compares to tell whether the document changed since this read: its
    /// stored heads (every write applies new changes, so the heads move with every write and
    /// never return to an earlier value); `None` while the document has no row.
    pub version: Option<Vec<u8>>,
    pub chunk_count: u32,
    /// The concatenation of its chunks in order; empty for a new document.
    pub bytes: Vec<u8>,
}

/// What a backend must do with the document's chunks.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkWrite {
    /// Nothing new was applied (a repeat, an empty push, or only changes with missing deps).
    Nothing,
    /// Append one chunk holding the newly applied changes.
    Append(Vec<u8>),
    /// Replace every chunk of the document (if any) by this one compacted save.
    Replace(Vec<u8>),
}

/// The result of merging a push that the rules accepted.
#[derive(Debug)]
pub struct MergedLog {
    /// Known once the log's first change is on the server; always `Some` when `write` is not
    /// [`ChunkWrite::Nothing`].
    pub meta: Option<ShiftMeta>,
    pub heads: Vec<ChangeHash>,
    pub missing_deps: bool,
    pub write: ChunkWrite,
    /// Chunk count after the write.
    pub chunk_count: u32,
    /// Events new to this document, in the device's sequence order.
    pub new_events: Vec<Event>,
    /// The device's verified signature over `heads`, to keep with the document (absent for a
    /// device without a key, or when the push left the log short of what the device signed).
    pub signature: Option<SignedHeads>,
}

/// Either the accepted merge or the rules' rejection (nothing to write).
#[derive(Debug)]
pub enum Merge {
    Accepted(MergedLog),
    Rejected(Rejection),
}

/// Merges `changes` into the document `stored`. `Err` means the stored bytes do not load, a
/// server-side problem, never the device's.
///
/// What to store: the newly applied changes as one more chunk; past [`COMPACT_AFTER_CHUNKS`], or
/// when the document was empty, one compacted save instead (a first push of a whole shift is
/// about 1.6 times smaller saved than as raw changes).
///
/// Saves are not deflated: for a log of 1,000 scans deflating took 4.3-5.6 ms (16 times the
/// save itself, ~10% of the server's CPU in a shift sync) to shrink 142 KB to 55 KB, and the
/// deflated save loads slower (4.1 against 2.6 ms). Storage is the cheaper resource here.
///
/// `signed` is the device's verified signature: kept in the result if it signs exactly the
/// merged document's heads.
pub fn merge_shift_log(
    stored: &StoredDoc,
    owner: &Owner,
    changes: &[u8],
    signed: Option<&SignedHeads>,
) -> Result<Merge, String> {
    let mut doc = if stored.bytes.is_empty() {
        Automerge::new()
    } else {
        Automerge::load(&stored.bytes).map_err(|e| e.to_string())?
    };
    let ingested = match ingest_shift_log(&mut doc, owner, changes) {
        Ok(ingested) => ingested,
        Err(rejection) => return Ok(Merge::Rejected(rejection)),
    };
    // Stores keep sequence numbers as signed 64-bit integers, like most SQL databases.
    if let Some((id, r)) = ingested
        .new_events
        .iter()
        .find(|(_, r)| i64::try_from(r.seq).is_err())
    {
        return Ok(Merge::Rejected(Rejection {
            code: RejectCode::Malformed,
            message: format!(
                "event {id}: device sequence number {} is out of range",
                r.seq
            ),
        }));
    }

    let chunk_count = stored.chunk_count;
    let (write, chunk_count) = if ingested.applied.is_empty() {
        (ChunkWrite::Nothing, chunk_count)
    } else if chunk_count == 0 || chunk_count + 1 > COMPACT_AFTER_CHUNKS {
        (ChunkWrite::Replace(doc.save_nocompress()), 1)
    } else {
        let mut chunk =
            Vec::with_capacity(ingested.applied.iter().map(|c| c.raw_bytes().len()).sum());
        for change in &ingested.applied {
            chunk.extend_from_slice(change.raw_bytes());
        }
        (ChunkWrite::Append(chunk), chunk_count + 1)
    };
    let signature = signed.filter(|s| s.signs(&ingested.heads)).cloned();
    // The document and the pushed changes are not needed any more: free them before rendering.
    drop(doc);
    drop(ingested.applied);

    let new_events = match &ingested.meta {
        Some(meta) => ingested
            .new_events
            .into_iter()
            .map(|(id, record): (EventId, _)| meta.event(id, record))
            .collect(),
        None => Vec::new(),
    };
    Ok(Merge::Accepted(MergedLog {
        meta: ingested.meta,
        heads: ingested.heads,
        missing_deps: ingested.missing_deps,
        write,
        chunk_count,
        new_events,
        signature,
    }))
}

/// The merge phase of push `index` of `batch`, for every backend: checks the device's
/// signature over the heads its changes bring the log to (before anything is merged, so a push
/// without a valid one changes nothing), merges, and keeps the signature when the merged heads
/// are exactly the signed ones.
pub fn merge_signed_push(
    stored: &StoredDoc,
    batch: &SyncBatch,
    index: usize,
) -> Result<Merge, String> {
    let push = &batch.pushes[index];
    let owner = batch.owner(push);
    let signature = match (&batch.public_key, &push.signature) {
        (Some(key), Some(signed)) => {
            if let Err(e) = key.verify_heads(&owner.site, owner.device, owner.shift, signed) {
                return Ok(Merge::Rejected(bad_signature(e.to_string())));
            }
            Some(signed.canonical())
        }
        (Some(_), None) if !push.changes.is_empty() => {
            return Ok(Merge::Rejected(bad_signature(
                "this device enrolled with a signing key; its shift-log changes must come \
                 signed"
                    .into(),
            )));
        }
        // A device without a registered key: nothing to check a signature against.
        _ => None,
    };
    let merge = merge_shift_log(stored, &owner, &push.changes, signature.as_ref())?;
    match &merge {
        // New changes whose signature does not sign where they bring the log, though nothing
        // was missing: they would be stored unsigned.
        Merge::Accepted(merged)
            if signature.is_some()
                && merged.signature.is_none()
                && !merged.missing_deps
                && merged.write != ChunkWrite::Nothing =>
        {
            Ok(Merge::Rejected(bad_signature(
                "the signed heads are not those the pushed changes bring the log to".into(),
            )))
        }
        _ => Ok(merge),
    }
}

/// One document of a request, merged: the version it was merged from and the result.
#[derive(Debug)]
pub struct Prepared {
    pub doc_id: String,
    pub version: Option<Vec<u8>>,
    pub merge: Merge,
    /// Each new event's record as the embedded store keeps it
    /// ([`patrol_core::EventRecord::encode`]), when [`Prepared::encode_records`] made them in a
    /// merge thread, beside the single writer that W1 waits on; empty otherwise, and the
    /// writer encodes them itself.
    pub records: Vec<Vec<u8>>,
}

impl Prepared {
    /// Encodes each new event's record ([`MergedLog::records`]), for a backend that stores
    /// them, in the merge phase.
    pub fn encode_records(&mut self) -> Result<(), StoreError> {
        if let Merge::Accepted(log) = &self.merge {
            self.records = log
                .new_events
                .iter()
                .map(|e| e.record.encode())
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Encode(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether the write phase has something to persist for it (and so checks its version).
    pub fn writes(&self) -> bool {
        matches!(&self.merge, Merge::Accepted(m) if m.write != ChunkWrite::Nothing)
    }
}

/// The merge phase of push `index` of `batch`, for every backend: `stored` is the document as
/// read.
pub fn merge_push(
    batch: &SyncBatch,
    index: usize,
    stored: StoredDoc,
) -> Result<Prepared, StoreError> {
    let doc_id = shift_log_doc_id(&batch.pushes[index].shift);
    let merge =
        merge_signed_push(&stored, batch, index).map_err(|reason| StoreError::CorruptDocument {
            site: batch.site.clone(),
            doc: doc_id.clone(),
            reason,
        })?;
    Ok(Prepared {
        doc_id,
        version: stored.version,
        merge,
        records: Vec::new(),
    })
}

/// A slot of a request's merged documents that the write phase found empty: a backend's bug.
pub fn not_merged() -> StoreError {
    StoreError::CorruptData("a push reached the write phase without a merge".into())
}

/// The write phase's account of one request once its versions are checked, the same in every
/// backend: which pushes to merge again under the lock, which documents this transaction has
/// written, and one outcome per push, in order.
#[derive(Debug)]
pub struct WritePhase {
    /// Pushes whose document moved since their merge (written only in the final round).
    conflicts: Vec<usize>,
    /// Documents this transaction has written already.
    written: Vec<String>,
    outcomes: Vec<DocOutcome>,
}

impl WritePhase {
    pub fn new(conflicts: Vec<usize>, pushes: usize) -> Self {
        WritePhase {
            conflicts,
            written: Vec::new(),
            outcomes: Vec::with_capacity(pushes),
        }
    }

    /// Whether push `index` (merged into `slot`) must be merged again, under the lock, before it
    /// is written: its document was written earlier in this transaction (the same log twice in
    /// one request) or moved under a concurrent request.
    pub fn stale(&self, index: usize, slot: &Option<Prepared>) -> Result<bool, StoreError> {
        let prepared = slot.as_ref().ok_or_else(not_merged)?;
        Ok(
            (prepared.writes() && self.written.contains(&prepared.doc_id))
                || self.conflicts.contains(&index),
        )
    }

    /// The accepted merge of `prepared`, to persist; a rejection is recorded as the push's
    /// outcome instead (`None`).
    pub fn accepted<'p>(&mut self, prepared: &'p Prepared) -> Option<&'p MergedLog> {
        match &prepared.merge {
            Merge::Rejected(Rejection { code, message }) => {
                self.outcomes.push(DocOutcome::Rejected {
                    code: *code,
                    message: message.clone(),
                });
                None
            }
            Merge::Accepted(log) => Some(log),
        }
    }

    /// Records that `log` of `doc_id` was persisted, with `new_events` new to the site.
    pub fn wrote(&mut self, doc_id: &str, log: &MergedLog, new_events: u32) {
        if log.write != ChunkWrite::Nothing && !self.written.iter().any(|d| d == doc_id) {
            self.written.push(doc_id.to_owned());
        }
        self.outcomes.push(DocOutcome::Accepted {
            heads: to_wire(&log.heads),
            new_events,
            missing_deps: log.missing_deps,
        });
    }

    /// One outcome per push, in order.
    pub fn outcomes(self) -> Vec<DocOutcome> {
        self.outcomes
    }
}

/// What a backend's write phase did with a request in one round.
#[derive(Debug)]
pub enum Written {
    /// Committed; one outcome per push.
    Committed(Vec<DocOutcome>),
    /// Nothing written: the device may not sync this request.
    Refused(SyncRefusal),
    /// Nothing written: these pushes' documents changed since they were read. The merged
    /// documents come back for the next round.
    Conflicts {
        merged: Vec<Option<Prepared>>,
        conflicts: Vec<usize>,
    },
}

/// A backend's two phases of one sync request, run by [`apply_in_rounds`].
pub trait Phases {
    /// The merge phase of the pushes `todo`, outside any write lock: each is read (one
    /// consistent read) and merged into its entry of `merged`; the other entries stay.
    fn merge(
        &mut self,
        todo: Vec<usize>,
        merged: Vec<Option<Prepared>>,
    ) -> impl Future<Output = Result<Vec<Option<Prepared>>, StoreError>> + Send;

    /// The write phase, in one transaction: checks that every document to write is still at the
    /// version it was merged from, then writes the request, or nothing if a version moved
    /// ([`Written::Conflicts`]), unless `final_round`: then the conflicting documents are read
    /// and merged again under the lock and written.
    fn write(
        &mut self,
        merged: Vec<Option<Prepared>>,
        final_round: bool,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;
}

/// Applies a sync request in optimistic rounds: merges every push, writes, and merges again only
/// the documents that a concurrent request changed meanwhile, until the write commits; the
/// [`OPTIMISTIC_ROUNDS`]th round merges those under the lock, so it always ends.
pub async fn apply_in_rounds(
    batch: &SyncBatch,
    phases: &mut impl Phases,
) -> Result<Vec<DocOutcome>, StoreError> {
    let mut merged: Vec<Option<Prepared>> = batch.pushes.iter().map(|_| None).collect();
    let mut todo: Vec<usize> = (0..batch.pushes.len()).collect();
    let mut round = 1;
    loop {
        if !todo.is_empty() {
            merged = phases.merge(std::mem::take(&mut todo), merged).await?;
        }
        match phases.write(merged, round >= OPTIMISTIC_ROUNDS).await? {
            Written::Committed(outcomes) => return Ok(outcomes),
            Written::Refused(refusal) => return Err(StoreError::SyncRefused(refusal)),
            Written::Conflicts {
                merged: m,
                conflicts,
            } => {
                tracing::debug!(
                    site = %batch.site, device = %batch.device, round, conflicts = conflicts.len(),
                    "documents changed while merging; merging them again"
                );
                merged = m;
                todo = conflicts;
                round += 1;
            }
        }
    }
}

fn bad_signature(message: String) -> Rejection {
    Rejection {
        code: RejectCode::BadSignature,
        message,
    }
}

/// Heads as stored: the 32-byte hashes concatenated (the one form, in patrol-core).
pub use patrol_core::codec::heads_to_blob;

pub fn heads_from_blob(blob: &[u8]) -> Result<Vec<ChangeHash>, String> {
    patrol_core::codec::heads_from_blob(blob).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use patrol_core::merge::plan_push;
    use patrol_core::{
        DeviceId, DeviceTime, EventBody, EventRecord, GuardId, Hlc, ShiftLog, SiteId,
    };

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn note(seq: u64) -> EventRecord {
        EventRecord {
            seq,
            time: DeviceTime {
                wall_ms: 1_740_866_400_000 + seq as i64,
                boot_id: uuid::Uuid::nil(),
                mono_ms: seq,
                hlc: Hlc {
                    wall_ms: 1_740_866_400_000 + seq,
                    counter: 0,
                },
            },
            config_version: 1,
            body: EventBody::Note {
                text: format!("note {seq}"),
            },
        }
    }

    /// Pushes one event at a time and persists as a backend would: past the threshold the
    /// chunks collapse into one save, and the stored bytes always load back every event.
    #[test]
    fn compacts_past_the_threshold_and_stays_loadable() -> TestResult {
        let (owner, mut log) = owner_and_log()?;
        let device = owner.device;
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut acked = Vec::new();
        let mut compacted = false;
        for seq in 1..=40u64 {
            log.record(EventId::generate(), &note(seq))?;
            let push = plan_push(&mut log, &acked)?;
            let stored = StoredDoc {
                version: None,
                chunk_count: chunks.len() as u32,
                bytes: chunks.concat(),
            };
            let Merge::Accepted(merged) = merge_shift_log(&stored, &owner, &push.changes, None)?
            else {
                panic!("push {seq} rejected");
            };
            match merged.write {
                ChunkWrite::Append(c) => chunks.push(c),
                ChunkWrite::Replace(c) => {
                    // The first push is stored as a save; later ones only past the threshold.
                    compacted |= seq > 1;
                    chunks = vec![c];
                }
                ChunkWrite::Nothing => panic!("push {seq} applied nothing"),
            }
            assert_eq!(merged.chunk_count as usize, chunks.len());
            assert!(chunks.len() as u32 <= COMPACT_AFTER_CHUNKS);
            assert_eq!(merged.new_events.len(), 1);
            acked = merged.heads;
        }
        assert!(compacted);
        let reloaded = ShiftLog::load(&chunks.concat(), device)?;
        assert_eq!(reloaded.events()?.len(), 40);
        assert_eq!(heads_from_blob(&heads_to_blob(&acked))?, acked);
        Ok(())
    }

    fn owner_and_log() -> Result<(Owner, ShiftLog), Box<dyn std::error::Error>> {
        let device = DeviceId::generate();
        let meta = ShiftMeta {
            site: SiteId::new("site-1")?,
            device,
            shift: ShiftId::generate(),
            guard: GuardId::new("guard-1")?,
        };
        let owner = Owner {
            site: meta.site.clone(),
            device,
            shift: meta.shift,
        };
        let (log, _) = ShiftLog::create(meta)?;
        Ok((owner, log))
    }

    /// A new document is stored as one save, smaller than its raw changes, that loads back
    /// every event; a later push appends its raw changes.
    #[test]
    fn a_new_document_is_stored_as_a_save() -> TestResult {
        let (owner, mut log) = owner_and_log()?;
        for seq in 1..=200u64 {
            log.record(EventId::generate(), &note(seq))?;
        }
        let push = plan_push(&mut log, &[])?;
        let Merge::Accepted(merged) =
            merge_shift_log(&StoredDoc::default(), &owner, &push.changes, None)?
        else {
            panic!("rejected");
        };
        let ChunkWrite::Replace(saved) = &merged.write else {
            panic!("expected one save, got {:?}", merged.write);
        };
        let raw: usize = patrol_core::merge::parse_bundle(&push.changes)?
            .iter()
            .map(|c| c.raw_bytes().len())
            .sum();
        assert!(saved.len() * 2 < raw, "save {} B, raw {raw} B", saved.len());
        assert_eq!(merged.chunk_count, 1);
        assert_eq!(merged.new_events.len(), 200);
        let reloaded = ShiftLog::load(saved, owner.device)?;
        assert_eq!(reloaded.events()?.len(), 200);

        log.record(EventId::generate(), &note(201))?;
        let push = plan_push(&mut log, &merged.heads)?;
        let stored = StoredDoc {
            version: Some(heads_to_blob(&merged.heads)),
            chunk_count: 1,
            bytes: saved.clone(),
        };
        let Merge::Accepted(next) = merge_shift_log(&stored, &owner, &push.changes, None)? else {
            panic!("rejected");
        };
        assert!(
            matches!(next.write, ChunkWrite::Append(_)),
            "{:?}",
            next.write
        );
        assert_eq!((next.chunk_count, next.new_events.len()), (2, 1));
        Ok(())
    }
}
