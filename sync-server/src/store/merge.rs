//! The backend-neutral part of applying a push: load the stored document from its chunks, run
//! the core's merge rules on it, and say exactly what a backend must write. A backend calls
//! [`merge_shift_log`] inside its transaction and persists the returned [`MergedLog`].

use automerge::{Automerge, ChangeHash};
use patrol_core::merge::{Owner, Rejection, ingest_shift_log};
use patrol_core::protocol::RejectCode;
use patrol_core::{Event, EventId, ShiftId, ShiftMeta};

/// Above this many chunks, a document's chunks are replaced by one compacted save in the same
/// transaction: a save is about 5 times smaller than the changes and loads faster.
pub const COMPACT_AFTER_CHUNKS: u32 = 16;

/// `docs.kind` of a shift log.
pub const SHIFT_LOG_KIND: &str = "shift_log";

/// How a shift log is named in the `docs` table of its site.
pub fn shift_log_doc_id(shift: &ShiftId) -> String {
    shift.to_string()
}

/// What a backend must do with the document's chunks.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkWrite {
    /// Nothing new was applied (a repeat, an empty push, or only changes with missing deps).
    Nothing,
    /// Append one chunk holding the newly applied changes.
    Append(Vec<u8>),
    /// Replace every chunk of the document by this one compacted save.
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
}

/// Either the accepted merge or the rules' rejection (nothing to write).
#[derive(Debug)]
pub enum Merge {
    Accepted(MergedLog),
    Rejected(Rejection),
}

/// Merges `changes` into the document stored as `stored` (the concatenation of its
/// `chunk_count` chunks; empty for a new document). `Err` means the stored bytes do not load,
/// a server-side problem, never the device's.
pub fn merge_shift_log(
    stored: &[u8],
    chunk_count: u32,
    owner: &Owner,
    changes: &[u8],
) -> Result<Merge, String> {
    let mut doc = Automerge::load(stored).map_err(|e| e.to_string())?;
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

    let (write, chunk_count) = if ingested.applied.is_empty() {
        (ChunkWrite::Nothing, chunk_count)
    } else if chunk_count + 1 > COMPACT_AFTER_CHUNKS {
        (ChunkWrite::Replace(doc.save()), 1)
    } else {
        let mut chunk =
            Vec::with_capacity(ingested.applied.iter().map(|c| c.raw_bytes().len()).sum());
        for change in &ingested.applied {
            chunk.extend_from_slice(change.raw_bytes());
        }
        (ChunkWrite::Append(chunk), chunk_count + 1)
    };

    let new_events = match &ingested.meta {
        Some(meta) => ingested
            .new_events
            .into_iter()
            .map(|(id, record): (EventId, _)| Event {
                id,
                site: meta.site.clone(),
                device: meta.device,
                shift: meta.shift,
                guard: meta.guard.clone(),
                record,
            })
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
    }))
}

/// Heads as stored: the 32-byte hashes concatenated.
pub fn heads_to_blob(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

pub fn heads_from_blob(blob: &[u8]) -> Result<Vec<ChangeHash>, String> {
    if blob.len() % 32 != 0 {
        return Err(format!(
            "heads blob of {} bytes is not a multiple of 32",
            blob.len()
        ));
    }
    Ok(blob
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChangeHash(h)
        })
        .collect())
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
        let (mut log, _) = ShiftLog::create(meta)?;
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut acked = Vec::new();
        let mut compacted = false;
        for seq in 1..=40u64 {
            log.record(EventId::generate(), &note(seq))?;
            let push = plan_push(&mut log, &acked)?;
            let stored = chunks.concat();
            let Merge::Accepted(merged) =
                merge_shift_log(&stored, chunks.len() as u32, &owner, &push.changes)?
            else {
                panic!("push {seq} rejected");
            };
            match merged.write {
                ChunkWrite::Append(c) => chunks.push(c),
                ChunkWrite::Replace(c) => {
                    compacted = true;
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
}
