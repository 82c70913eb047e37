//! The sync write path on PostgreSQL: the two phases of [`crate::store::merge`] for a request
//! (the merge on the blocking pool, the write in one READ COMMITTED transaction that locks what
//! it writes, see the backend's docs), the shift-log documents they keep, and
//! [`shift_log_evidence`], which reads one back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use patrol_core::protocol::DocOutcome;
use patrol_core::{ShiftId, SiteId};

use super::{
    EVENTS_CHANNEL, PostgresStore, TRANSACTION_ATTEMPTS, auth, execute, query, query_one,
    query_opt, retryable, snapshot, to_i64,
};
use crate::store::event_hours;
use crate::store::event_json::FeedRenderer;
use crate::store::flagging::{
    GuardScans, IngestFlags, LogStamps, MAX_GUARD_SCANS, MAX_TAG_SCANS, ScanRow, StoredScan,
    TagScans, read_scan_row,
};
use crate::store::merge::{
    ChunkWrite, Merge, MergedLog, Phases, Prepared, SHIFT_LOG_KIND, StoredDoc, WritePhase, Written,
    apply_in_rounds, heads_to_blob, merge_push, not_merged, shift_log_doc_id,
};
use crate::store::rows::{read_device_id, read_public_key, read_signature, signed_heads_blob};
use crate::store::webhooks;
use crate::store::{ShiftLogEvidence, StoreError, SyncBatch, SyncRefusal};

impl PostgresStore {
    /// Merges push `index` of `batch` into `stored` on the blocking pool.
    async fn merge(
        &self,
        batch: &Arc<SyncBatch>,
        index: usize,
        stored: StoredDoc,
    ) -> Result<Prepared, StoreError> {
        let _permit = self
            .inner
            .merges
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let batch = Arc::clone(batch);
        tokio::task::spawn_blocking(move || merge_push(&batch, index, stored)).await?
    }

    /// Applies a sync request (see the module docs).
    pub(super) async fn sync_batch(&self, batch: SyncBatch) -> Result<Vec<DocOutcome>, StoreError> {
        let batch = Arc::new(batch);
        let mut phases = Transactions {
            store: self,
            batch: Arc::clone(&batch),
            aborted: 0,
        };
        apply_in_rounds(&batch, &mut phases).await
    }

    /// The write phase of one request inside `tx` (see the module docs). If a document's version
    /// moved, writes nothing and reports the conflicts, unless `final_round`: then the
    /// conflicting documents are merged again here, under their lock.
    async fn write_request(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        batch: &Arc<SyncBatch>,
        merged: &mut [Option<Prepared>],
        final_round: bool,
    ) -> Result<Wrote, StoreError> {
        let site = batch.site.as_str();
        if query_opt(tx, "SELECT 1 FROM sites WHERE site_id = $1", &[&site])
            .await?
            .is_none()
        {
            return Err(StoreError::UnknownSite(batch.site.clone()));
        }
        if let Some(refusal) = auth::sync_refusal(tx, batch).await? {
            return Ok(Wrote::Refused(refusal));
        }

        // 1. Lock the documents to write, in doc-id order, and compare their versions.
        let mut to_lock: Vec<(String, usize)> = Vec::new();
        for (i, prepared) in merged.iter().enumerate() {
            let prepared = prepared.as_ref().ok_or_else(not_merged)?;
            if prepared.writes() {
                to_lock.push((prepared.doc_id.clone(), i));
            }
        }
        to_lock.sort();
        let mut locked: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        let mut conflicts = Vec::new();
        for (doc_id, i) in to_lock {
            let prepared = merged[i].as_ref().ok_or_else(not_merged)?;
            let current = match locked.get(&doc_id) {
                Some(version) => version.clone(),
                None => {
                    let version = lock_doc(tx, batch, prepared).await?;
                    locked.insert(doc_id, version.clone());
                    version
                }
            };
            if current != prepared.version {
                conflicts.push(i);
            }
        }
        if !conflicts.is_empty() && !final_round {
            return Ok(Wrote::Conflicts(conflicts));
        }

        // 2 and 3. Write each accepted document and its new events, in the request's order.
        let mut phase = WritePhase::new(conflicts, merged.len());
        let mut seqs = SeqAllocator::default();
        // Each event's corrected time and flags, from what this request measured and the
        // site's configuration.
        let flags = IngestFlags::new(batch)?;
        for (i, slot) in merged.iter_mut().enumerate() {
            if phase.stale(i, slot)? {
                // Written earlier in this transaction (the same log twice in one request) or
                // moved under a concurrent request: merged again on top of what is stored now,
                // under the lock taken above.
                let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
                let stored = read_stored(tx, site, &doc_id).await?;
                *slot = Some(self.merge(batch, i, stored).await?);
            }
            let prepared = slot.as_ref().ok_or_else(not_merged)?;
            let Some(log) = phase.accepted(prepared) else {
                continue;
            };
            let new_events = write_doc(tx, &flags, batch, &prepared.doc_id, log, &mut seqs).await?;
            phase.wrote(&prepared.doc_id, log, new_events);
        }
        super::compliance::ingest(tx, batch, merged).await?;
        let outcomes = phase.outcomes();

        // 4. The site's next seq, the announcement, and the device's row.
        let mut last_seq = None;
        if let Some((first, next)) = seqs.range()
            && next != first
        {
            execute(
                tx,
                "UPDATE sites SET next_seq = $2 WHERE site_id = $1",
                &[&site, &next],
            )
            .await?;
            let last = u64::try_from(next - 1)
                .map_err(|_| StoreError::CorruptData(format!("next_seq {next} of {site}")))?;
            query_one(
                tx,
                "SELECT pg_notify($1, $2)",
                &[&EVENTS_CHANNEL, &format!("{site} {last}")],
            )
            .await?;
            last_seq = Some(last);
        }
        let device = batch.device_sync(&outcomes);
        execute(
            tx,
            "INSERT INTO devices (site_id, device_id, first_seen, last_sync_at, last_pending,
                 clock_skew_ms)
             VALUES ($1, $2, $3, $3, $4, $5)
             ON CONFLICT (site_id, device_id) DO UPDATE SET
                 last_sync_at = GREATEST(devices.last_sync_at, excluded.last_sync_at),
                 last_pending = excluded.last_pending,
                 clock_skew_ms = excluded.clock_skew_ms",
            &[
                &site,
                &device.device.to_string(),
                &device.synced_at_ms,
                &to_i64(device.pending_events),
                &device.clock_skew_ms,
            ],
        )
        .await?;
        auth::accept_request(tx, batch).await?;
        Ok(Wrote::Committed { outcomes, last_seq })
    }
}

/// A sync request's two phases on the pool: the merge on the blocking pool, between two reads
/// on a pooled connection, and the write in one transaction.
struct Transactions<'a> {
    store: &'a PostgresStore,
    batch: Arc<SyncBatch>,
    /// Transactions of this request that the database aborted so far, in every round.
    aborted: u32,
}

impl Phases for Transactions<'_> {
    async fn merge(
        &mut self,
        todo: Vec<usize>,
        mut merged: Vec<Option<Prepared>>,
    ) -> Result<Vec<Option<Prepared>>, StoreError> {
        let batch = &self.batch;
        for &i in &todo {
            let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
            // The connection goes back to the pool before the (long) merge.
            let stored = {
                let client = self.store.client().await?;
                read_stored(&client, batch.site.as_str(), &doc_id).await?
            };
            merged[i] = Some(self.store.merge(batch, i, stored).await?);
        }
        Ok(merged)
    }

    async fn write(
        &mut self,
        mut merged: Vec<Option<Prepared>>,
        final_round: bool,
    ) -> Result<Written, StoreError> {
        let batch = &self.batch;
        loop {
            let mut client = self.store.client().await?;
            let tx = client.transaction().await?;
            match self
                .store
                .write_request(&tx, batch, &mut merged, final_round)
                .await
            {
                Ok(Wrote::Committed { outcomes, last_seq }) => {
                    tx.commit().await?;
                    if let Some(seq) = last_seq {
                        // The listener hears the NOTIFY too; waking here spares local readers
                        // the round trip.
                        self.store.inner.notifier.notify(batch.site.as_str(), seq);
                    }
                    return Ok(Written::Committed(outcomes));
                }
                Ok(Wrote::Refused(refusal)) => {
                    tx.rollback().await?;
                    return Ok(Written::Refused(refusal));
                }
                Ok(Wrote::Conflicts(conflicts)) => {
                    tx.rollback().await?;
                    return Ok(Written::Conflicts { merged, conflicts });
                }
                Err(e) if self.aborted + 1 < TRANSACTION_ATTEMPTS && retryable(&e) => {
                    // Every merged entry is still checked against its version on the next try.
                    drop(tx);
                    tracing::debug!(error = %e, "sync transaction aborted by the database; retrying");
                    self.aborted += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads a document's chunks and version in one statement (one snapshot).
async fn read_stored<C: GenericClient>(
    c: &C,
    site: &str,
    doc_id: &str,
) -> Result<StoredDoc, StoreError> {
    let rows = query(
        c,
        "SELECT d.heads, d.chunk_count, c.bytes FROM docs d
         LEFT JOIN doc_chunks c ON c.site_id = d.site_id AND c.doc_id = d.doc_id
         WHERE d.site_id = $1 AND d.doc_id = $2 ORDER BY c.chunk_id",
        &[&site, &doc_id],
    )
    .await?;
    let Some(first) = rows.first() else {
        return Ok(StoredDoc::default());
    };
    let heads: Vec<u8> = first.try_get(0)?;
    let chunk_count: i64 = first.try_get(1)?;
    let chunk_count = u32::try_from(chunk_count)
        .map_err(|_| StoreError::CorruptData(format!("chunk count {chunk_count} of {doc_id}")))?;
    let mut bytes = Vec::new();
    for row in &rows {
        if let Some(chunk) = row.try_get::<_, Option<&[u8]>>(2)? {
            bytes.extend_from_slice(chunk);
        }
    }
    Ok(StoredDoc {
        version: Some(heads),
        chunk_count,
        bytes,
    })
}

/// Locks the document `prepared` writes and returns its version under the lock. A document that
/// has no row yet is claimed by inserting one (overwritten by [`write_doc`] in this
/// transaction); if another transaction inserted it first, this waits for it and locks its row.
async fn lock_doc(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &SyncBatch,
    prepared: &Prepared,
) -> Result<Option<Vec<u8>>, StoreError> {
    let site = batch.site.as_str();
    if prepared.version.is_none() {
        let Merge::Accepted(MergedLog {
            meta: Some(meta), ..
        }) = &prepared.merge
        else {
            return Err(StoreError::CorruptData(format!(
                "changes applied to {} without shift metadata",
                prepared.doc_id
            )));
        };
        let claimed = execute(
            tx,
            "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count,
                 updated_at)
             VALUES ($1, $2, $3, $4, $5, '\\x', 0, $6)
             ON CONFLICT (site_id, doc_id) DO NOTHING",
            &[
                &site,
                &prepared.doc_id,
                &SHIFT_LOG_KIND,
                &meta.device.to_string(),
                &meta.guard.as_str(),
                &batch.received_at_ms,
            ],
        )
        .await?;
        if claimed == 1 {
            return Ok(None);
        }
    }
    let row = query_opt(
        tx,
        "SELECT heads FROM docs WHERE site_id = $1 AND doc_id = $2 FOR NO KEY UPDATE",
        &[&site, &prepared.doc_id],
    )
    .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// The site's sequence numbers, once its row is locked.
#[derive(Debug, Default)]
struct SeqAllocator {
    /// The first seq this transaction gave out and the next one.
    range: Option<(i64, i64)>,
}

impl SeqAllocator {
    /// The next seq, locking the site's row (until commit) the first time.
    async fn next(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        site: &SiteId,
    ) -> Result<i64, StoreError> {
        if let Some((_, next)) = self.range {
            return Ok(next);
        }
        let row = query_opt(
            tx,
            "SELECT next_seq FROM sites WHERE site_id = $1 FOR NO KEY UPDATE",
            &[&site.as_str()],
        )
        .await?
        .ok_or_else(|| StoreError::UnknownSite(site.clone()))?;
        let next: i64 = row.try_get(0)?;
        self.range = Some((next, next));
        Ok(next)
    }

    fn advance(&mut self, to: i64) {
        if let Some((_, next)) = &mut self.range {
            *next = to;
        }
    }

    fn range(&self) -> Option<(i64, i64)> {
        self.range
    }
}

/// Persists one accepted document inside the write transaction: its new events, its `docs` row
/// with the shift listing's summary of the log, and its chunk. Returns how many events were new
/// to the site.
///
/// The summary ([`crate::store::ShiftSummary`]) is kept in the same upsert as the rest of the
/// row, so the events go in first: a start or end already recorded stays (the first to arrive);
/// the events new to the feed are added to the count, and when there are any their receipt is
/// the last event's.
async fn write_doc(
    tx: &deadpool_postgres::Transaction<'_>,
    flags: &IngestFlags,
    batch: &SyncBatch,
    doc_id: &str,
    log: &MergedLog,
    seqs: &mut SeqAllocator,
) -> Result<u32, StoreError> {
    let site = batch.site.as_str();
    let received_at_ms = batch.received_at_ms;
    let chunk = match &log.write {
        ChunkWrite::Nothing => return Ok(0),
        ChunkWrite::Append(bytes) | ChunkWrite::Replace(bytes) => bytes.as_slice(),
    };
    let Some(meta) = &log.meta else {
        return Err(StoreError::CorruptData(format!(
            "changes applied to {doc_id} without shift metadata"
        )));
    };
    let device_id = meta.device.to_string();
    let shift_id = meta.shift.to_string();
    let progress = if log.new_events.is_empty() {
        LogProgress::default()
    } else {
        write_events(tx, flags, batch, log, &device_id, &shift_id, seqs).await?
    };
    let last_event_at = (progress.inserted > 0).then_some(received_at_ms);

    execute(
        tx,
        "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count,
             updated_at, started_at, ended_at, event_count, last_event_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (site_id, doc_id) DO UPDATE SET
             heads = excluded.heads, chunk_count = excluded.chunk_count,
             updated_at = excluded.updated_at,
             started_at = COALESCE(docs.started_at, excluded.started_at),
             ended_at = COALESCE(docs.ended_at, excluded.ended_at),
             event_count = docs.event_count + excluded.event_count,
             last_event_at = COALESCE(excluded.last_event_at, docs.last_event_at)",
        &[
            &site,
            &doc_id,
            &SHIFT_LOG_KIND,
            &device_id,
            &meta.guard.as_str(),
            &heads_to_blob(&log.heads),
            &i64::from(log.chunk_count),
            &received_at_ms,
            &progress.started_at,
            &progress.ended_at,
            &i64::from(progress.inserted),
            &last_event_at,
        ],
    )
    .await?;
    if let ChunkWrite::Replace(_) = &log.write {
        execute(
            tx,
            "DELETE FROM doc_chunks WHERE site_id = $1 AND doc_id = $2",
            &[&site, &doc_id],
        )
        .await?;
    }
    execute(
        tx,
        "INSERT INTO doc_chunks (site_id, doc_id, chunk_id, bytes)
         SELECT $1::text, $2::text, COALESCE(MAX(chunk_id), 0) + 1, $3::bytea FROM doc_chunks
         WHERE site_id = $1 AND doc_id = $2",
        &[&site, &doc_id, &chunk],
    )
    .await?;
    if let Some(signed) = &log.signature {
        execute(
            tx,
            "INSERT INTO shift_log_signatures (site_id, doc_id, heads, signed_at, signature,
                 received_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &site,
                &doc_id,
                &signed_heads_blob(signed),
                &signed.signed_at_ms,
                &signed.signature,
                &received_at_ms,
            ],
        )
        .await?;
    }
    Ok(progress.inserted)
}

/// What a log's new events add to its summary: the device times of its start and end if among
/// them (the first of each), and how many of them went into the feed.
#[derive(Debug, Default)]
struct LogProgress {
    started_at: Option<i64>,
    ended_at: Option<i64>,
    inserted: u32,
}

/// Inserts the log's new events (there are some) that are new to the site, numbered from
/// `seqs` on. Under the site's lock: ids already in the feed (from this log's earlier pushes, or another
/// log reusing an id) are left out, and the rest numbered.
async fn write_events(
    tx: &deadpool_postgres::Transaction<'_>,
    flags: &IngestFlags,
    batch: &SyncBatch,
    log: &MergedLog,
    device_id: &str,
    shift_id: &str,
    seqs: &mut SeqAllocator,
) -> Result<LogProgress, StoreError> {
    let site = batch.site.as_str();
    let received_at_ms = batch.received_at_ms;
    let mut progress = LogProgress::default();
    // Under the site's lock: every scan committed before is there to flag these by.
    let mut next_seq = seqs.next(tx, &batch.site).await?;
    let stamps = stamp_events(tx, site, flags, &log.new_events).await?;
    let ids: Vec<&[u8]> = log
        .new_events
        .iter()
        .map(|e| e.id.0.as_bytes().as_slice())
        .collect();
    let known: HashMap<Vec<u8>, String> = query(
        tx,
        "SELECT event_id, shift_id FROM events WHERE site_id = $1 AND event_id = ANY($2)",
        &[&site, &ids],
    )
    .await?
    .into_iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
    .collect::<Result<_, StoreError>>()?;

    let mut seq_col: Vec<i64> = Vec::new();
    let mut id_col: Vec<&[u8]> = Vec::new();
    let mut guard_col: Vec<&str> = Vec::new();
    let mut kind_col: Vec<&str> = Vec::new();
    let mut checkpoint_col: Vec<Option<&str>> = Vec::new();
    let mut device_seq_col: Vec<i64> = Vec::new();
    let mut device_time_col: Vec<i64> = Vec::new();
    let mut json_col: Vec<String> = Vec::new();
    let mut corrected_col: Vec<i64> = Vec::new();
    let mut flags_col: Vec<Option<&str>> = Vec::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut written = vec![false; log.new_events.len()];
    let mut renderer = FeedRenderer::default();
    let mut panics = Vec::new();
    let mut notes = Vec::new();
    for (i, event) in log.new_events.iter().enumerate() {
        let wall_ms = event.record.time.wall_ms;
        match event.record.body.kind() {
            "shift_started" if progress.started_at.is_none() => progress.started_at = Some(wall_ms),
            "shift_ended" if progress.ended_at.is_none() => progress.ended_at = Some(wall_ms),
            _ => {}
        }
        let event_id: &[u8] = event.id.0.as_bytes();
        if let Some(existing) = known.get(event_id) {
            if existing != shift_id {
                tracing::warn!(
                    site, event = %event.id, shift = %shift_id, existing_shift = %existing,
                    "event id already recorded from another shift log; keeping the first"
                );
            }
            continue;
        }
        if !seen.insert(event_id) {
            continue;
        }
        let seq = u64::try_from(next_seq)
            .map_err(|_| StoreError::CorruptData(format!("next_seq {next_seq} of site {site}")))?;
        // PostgreSQL keeps the JSON the feed serves (it has no binary-record projection yet),
        // with its stamp.
        let stamp = &stamps.stamps[i];
        let json = renderer
            .render(event, seq, received_at_ms, stamp)
            .map_err(|e| StoreError::Encode(format!("event {}: {e}", event.id)))?;
        seq_col.push(next_seq);
        id_col.push(event_id);
        guard_col.push(event.guard.as_str());
        kind_col.push(event.record.body.kind());
        checkpoint_col.push(event.record.body.checkpoint().map(|c| c.as_str()));
        device_seq_col.push(to_i64(event.record.seq));
        device_time_col.push(event.record.time.wall_ms);
        json_col.push(json);
        corrected_col.push(stamp.corrected_ms);
        flags_col.push(stamps.flags_json[i].as_deref());
        // Only a note with files has references to keep (most events have none).
        if !crate::store::blobs::note_attachment_rows(event).is_empty() {
            notes.push((next_seq, event));
        }
        if event.record.body.kind() == "panic" {
            // Only a new panic looks for endpoints: the rest of the sync never does.
            panics.push(webhooks::panic_raised(
                &batch.site,
                &webhooks::RaisedPanic {
                    event: &event.id,
                    device: device_id,
                    guard: event.guard.as_str(),
                    shift: shift_id,
                    raised_at_ms: event.record.time.wall_ms,
                    corrected_ms: stamp.corrected_ms,
                    received_at_ms,
                },
            ));
        }
        written[i] = true;
        next_seq += 1;
    }
    if seq_col.is_empty() {
        return Ok(progress);
    }
    let inserted = execute(
        tx,
        "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
             checkpoint_id, device_seq, device_time_ms, received_at_ms, json, corrected_ms, flags)
         SELECT $1, u.seq, u.event_id, $2, $3, u.guard_id, u.kind, u.checkpoint_id, u.device_seq,
                u.device_time_ms, $4, u.json, u.corrected_ms, u.flags::jsonb
         FROM unnest($5::bigint[], $6::bytea[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                     $11::bigint[], $12::text[], $13::bigint[], $14::text[])
              AS u (seq, event_id, guard_id, kind, checkpoint_id, device_seq, device_time_ms, json,
                    corrected_ms, flags)",
        &[
            &site,
            &device_id,
            &shift_id,
            &received_at_ms,
            &seq_col,
            &id_col,
            &guard_col,
            &kind_col,
            &checkpoint_col,
            &device_seq_col,
            &device_time_col,
            &json_col,
            &corrected_col,
            &flags_col,
        ],
    )
    .await?;
    let spans = event_hours::spans(seq_col.iter().copied().zip(corrected_col.iter().copied()));
    let hour_col: Vec<i64> = spans.iter().map(|s| s.hour_ms).collect();
    let first_col: Vec<i64> = spans.iter().map(|s| s.first_seq).collect();
    let last_col: Vec<i64> = spans.iter().map(|s| s.last_seq).collect();
    execute(
        tx,
        "INSERT INTO event_hours (site_id, hour_ms, first_seq, last_seq)
         SELECT $1, u.hour_ms, u.first_seq, u.last_seq
         FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS u (hour_ms, first_seq, last_seq)",
        &[&site, &hour_col, &first_col, &last_col],
    )
    .await?;
    for (seq, event) in notes {
        super::blobs::insert_note_refs(tx, site, seq, event).await?;
    }
    seqs.advance(next_seq);
    for outgoing in &panics {
        super::webhooks::enqueue(tx, outgoing).await?;
    }
    // The stored scans the new ones flag too (a cloned tag).
    for update in stamps.updates.iter().filter(|u| written[u.by]) {
        execute(
            tx,
            "UPDATE events SET flags = $3::text::jsonb, json = COALESCE($4::text, json)
             WHERE site_id = $1 AND seq = $2",
            &[&site, &update.seq, &update.flags_json, &update.json],
        )
        .await?;
    }
    progress.inserted =
        u32::try_from(inserted).map_err(|_| StoreError::CorruptData("too many events".into()))?;
    Ok(progress)
}

/// The columns [`scan_row`] reads, from the first: a scan's seq, id, device, corrected time
/// (as the feed reads it: the expression the indexes of migration 10 hold), JSON, flags, and
/// whether its JSON holds its stamp.
const SCAN_COLUMNS: &str = "seq, event_id, device_id,
     COALESCE(corrected_ms, LEAST(device_time_ms, received_at_ms)), json, flags::text,
     corrected_ms IS NOT NULL";

/// A scan's corrected time as [`SCAN_COLUMNS`] and the indexes of migration 10 read it.
const SCAN_TIME: &str = "COALESCE(corrected_ms, LEAST(device_time_ms, received_at_ms))";

fn scan_row(row: &tokio_postgres::Row) -> Result<StoredScan, StoreError> {
    read_scan_row(ScanRow {
        seq: row.try_get(0)?,
        event_id: row.try_get(1)?,
        device_id: row.try_get(2)?,
        corrected_ms: row.try_get(3)?,
        record: None,
        json: Some(row.try_get(4)?),
        flags: row.try_get(5)?,
        json_stamped: row.try_get(6)?,
    })
}

/// The stamps of a log's new events, reading the stored scans their flags need
/// ([`crate::store::flagging`]).
async fn stamp_events(
    tx: &deadpool_postgres::Transaction<'_>,
    site: &str,
    flags: &IngestFlags,
    events: &[patrol_core::Event],
) -> Result<LogStamps, StoreError> {
    let plan = flags.plan(events);
    let mut guard = Vec::new();
    if let Some(GuardScans {
        guard: guard_id,
        from_ms,
        to_ms,
    }) = plan.guard_scans()
    {
        let rows = query(
            tx,
            &format!(
                "(SELECT {SCAN_COLUMNS} FROM events
                  WHERE site_id = $1 AND guard_id = $2 AND kind = 'checkpoint_scanned'
                    AND {SCAN_TIME} BETWEEN $3 AND $4
                  ORDER BY {SCAN_TIME} DESC LIMIT $5)
                 UNION ALL
                 (SELECT {SCAN_COLUMNS} FROM events
                  WHERE site_id = $1 AND guard_id = $2 AND kind = 'checkpoint_scanned'
                    AND {SCAN_TIME} < $3
                  ORDER BY {SCAN_TIME} DESC LIMIT 1)"
            ),
            &[&site, guard_id, from_ms, to_ms, &MAX_GUARD_SCANS],
        )
        .await?;
        for row in &rows {
            guard.push(scan_row(row)?);
        }
    }
    let mut tags = Vec::new();
    for TagScans {
        checkpoint,
        device,
        from_ms,
        to_ms,
    } in plan.tag_scans()
    {
        let rows = query(
            tx,
            &format!(
                "SELECT {SCAN_COLUMNS} FROM events
                 WHERE site_id = $1 AND checkpoint_id = $2 AND kind = 'checkpoint_scanned'
                   AND {SCAN_TIME} BETWEEN $3 AND $4 AND device_id <> $5
                 LIMIT $6"
            ),
            &[&site, checkpoint, from_ms, to_ms, device, &MAX_TAG_SCANS],
        )
        .await?;
        tags.push(rows.iter().map(scan_row).collect::<Result<_, _>>()?);
    }
    plan.finish(guard, tags)
}

/// What the write phase did with one request.
#[derive(Debug)]
enum Wrote {
    /// Ready to commit; one outcome per push, and the last seq given out if any.
    Committed {
        outcomes: Vec<DocOutcome>,
        last_seq: Option<u64>,
    },
    /// Nothing written: these pushes' documents changed since they were read.
    Conflicts(Vec<usize>),
    /// Nothing written: the device may not sync this request.
    Refused(SyncRefusal),
}

/// A shift log as stored, with its device's key and every signature kept for it, for export.
pub(super) async fn shift_log_evidence(
    client: &mut deadpool_postgres::Client,
    site: &SiteId,
    shift: &ShiftId,
) -> Result<Option<ShiftLogEvidence>, StoreError> {
    // One snapshot: the chunks and the signatures written with them.
    let tx = snapshot(client).await?;
    let doc_id = shift_log_doc_id(shift);
    let site_id = site.as_str();
    let Some(row) = query_opt(
        &tx,
        "SELECT d.device_id, k.public_key FROM docs d
         LEFT JOIN device_credentials k
             ON k.site_id = d.site_id AND k.device_id = d.device_id
         WHERE d.site_id = $1 AND d.doc_id = $2 AND d.kind = $3",
        &[&site_id, &doc_id, &SHIFT_LOG_KIND],
    )
    .await?
    else {
        return Ok(None);
    };
    let device: String = row.try_get(0)?;
    let public_key: Option<Vec<u8>> = row.try_get(1)?;
    let stored = read_stored(&tx, site_id, &doc_id).await?;
    let signatures = query(
        &tx,
        "SELECT heads, signed_at, signature, received_at FROM shift_log_signatures
         WHERE site_id = $1 AND doc_id = $2 ORDER BY received_at, signed_at",
        &[&site_id, &doc_id],
    )
    .await?
    .iter()
    .map(|row| {
        read_signature(
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        )
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    tx.commit().await?;
    Ok(Some(ShiftLogEvidence {
        device: read_device_id(&device)?,
        bytes: stored.bytes,
        public_key: read_public_key(public_key)?,
        signatures,
    }))
}
