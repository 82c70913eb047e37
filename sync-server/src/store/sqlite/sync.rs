//! The sync write path on SQLite: the merge threads, the writer thread and its group commit,
//! and the shift-log documents they keep (and [`shift_log_evidence`], which reads one back).
//!
//! A sync request runs the two phases of [`crate::store::merge`]: the merge phase on a merge
//! thread (one per core, each with its own read-only connection), the write phase on the writer
//! thread, which commits the requests queued by then in one transaction ([`commit_jobs`]). The
//! writer numbers a site's events from `sites.next_seq`, deduplicates event ids through the
//! two-level index of [`EventIds`], and wakes the sites' subscribers after each commit.

use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use patrol_core::flags::tag_of;
use patrol_core::protocol::DocOutcome;
use patrol_core::{EventBody, ShiftId, SiteId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::event_ids::{Claims, Committed, EventIds};
use super::feed::corrected_ms;
use super::schema::open_reader;
use super::{
    SqliteStore, WRITER_CHECKPOINT_INTERVAL, abandoned, auth, checkpoint, run_caught, to_i64,
};
use crate::store::event_hours;
use crate::store::flagging::{
    GuardScans, IngestFlags, LogStamps, MAX_GUARD_SCANS, MAX_TAG_SCANS, ScanRow, StoredScan,
    TagScans, read_scan_row,
};
use crate::store::merge::{
    ChunkWrite, MergedLog, Phases, Prepared, SHIFT_LOG_KIND, StoredDoc, WritePhase, Written,
    apply_in_rounds, heads_to_blob, merge_push, not_merged, shift_log_doc_id,
};
use crate::store::notify::Notifier;
use crate::store::rows::{read_device_id, read_public_key, read_signature, signed_heads_blob};
use crate::store::webhooks;
use crate::store::{DeviceSync, ShiftLogEvidence, StoreError, SyncBatch, SyncRefusal};

/// Most sync requests one group commit takes along.
const MAX_GROUP: usize = 64;

/// Events whose ids the recent level of the event-id index holds (in the writer's memory, about
/// 40 bytes an id) before the writer folds them into a new run of `event_ids` (see
/// [`EventIds`]). Larger: fewer runs, but more memory.
const FOLD_EVENT_IDS_AT: u64 = 1 << 17;

impl SqliteStore {
    /// Applies a sync request: merges its documents outside the write lock (on a merge thread),
    /// then writes them all and the device row in one transaction, shared with the other
    /// requests that wait for the writer by then (on the writer thread), redoing the merge of a
    /// document that a concurrent request changed meanwhile (see [`crate::store::merge`]).
    pub(super) async fn sync_batch(&self, batch: SyncBatch) -> Result<Vec<DocOutcome>, StoreError> {
        let _merging = self
            .inner
            .merging
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let batch = Arc::new(batch);
        let mut phases = Threads {
            store: self,
            batch: Arc::clone(&batch),
        };
        apply_in_rounds(&batch, &mut phases).await
    }
}

/// A sync request's two phases on the store's threads: the merge on a merge thread, the write
/// on the writer thread.
struct Threads<'a> {
    store: &'a SqliteStore,
    batch: Arc<SyncBatch>,
}

impl Phases for Threads<'_> {
    async fn merge(
        &mut self,
        todo: Vec<usize>,
        merged: Vec<Option<Prepared>>,
    ) -> Result<Vec<Option<Prepared>>, StoreError> {
        let (done, result) = oneshot::channel();
        self.store
            .inner
            .merges
            .send(MergeJob {
                batch: Arc::clone(&self.batch),
                todo,
                merged,
                done,
            })
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| abandoned("a merge"))?
    }

    async fn write(
        &mut self,
        merged: Vec<Option<Prepared>>,
        final_round: bool,
    ) -> Result<Written, StoreError> {
        let (done, result) = oneshot::channel();
        self.store
            .inner
            .writer
            .send(WriterJob::Sync(WriteJob {
                batch: Arc::clone(&self.batch),
                merged,
                final_round,
                done,
            }))
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| abandoned("a group commit"))?
    }
}

/// What the writer thread runs.
pub(super) enum WriterJob {
    /// A sync request's write phase, committed together with the others queued by then.
    Sync(WriteJob),
    /// Anything else, alone.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

impl std::fmt::Debug for WriterJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterJob::Sync(job) => f.debug_tuple("Sync").field(job).finish(),
            WriterJob::Run(_) => f.write_str("Run(..)"),
        }
    }
}

/// The writer thread: owns the writing connection and runs the jobs in order. Sync requests
/// queued together are committed together ([`commit_jobs`]): one transaction, one fsync, and
/// the index pages they all touch written once. Ends when the store is dropped, after the
/// queued jobs.
pub(super) fn writer_thread(
    mut conn: Connection,
    jobs: mpsc::Receiver<WriterJob>,
    checkpointer: SyncSender<()>,
    mut event_ids: EventIds,
    notifier: &Notifier,
) {
    let mut next = None;
    let mut last_checkpoint = Instant::now();
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            WriterJob::Run(f) => run_caught("a write", || f(&mut conn)),
            WriterJob::Sync(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(WriterJob::Sync(job)) => group.push(job),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_caught("a group commit", || {
                    commit_jobs(&mut conn, &mut event_ids, group, notifier);
                });
                if event_ids.recent_len() >= FOLD_EVENT_IDS_AT {
                    run_caught("a fold of event ids", || {
                        if let Err(e) = event_ids.fold(&mut conn) {
                            tracing::warn!(error = %e, "could not fold event ids; will retry");
                        }
                    });
                }
                // The checkpoint thread copies the WAL beside the writer; now and then the
                // writer finishes the job itself (see [`checkpoint`]).
                if last_checkpoint.elapsed() >= WRITER_CHECKPOINT_INTERVAL {
                    checkpoint(&conn);
                    last_checkpoint = Instant::now();
                } else {
                    // A wake is already pending if the channel is full.
                    let _ = checkpointer.try_send(());
                }
            }
        }
    }
}

/// Documents of one request to read and merge, on a merge thread.
#[derive(Debug)]
pub(super) struct MergeJob {
    batch: Arc<SyncBatch>,
    /// Indexes of the pushes to (re)merge; the others keep their entry in `merged`.
    todo: Vec<usize>,
    merged: Vec<Option<Prepared>>,
    done: oneshot::Sender<Result<Vec<Option<Prepared>>, StoreError>>,
}

/// A merge thread: reads each document with its own read-only connection (a read transaction
/// that ends before the merge, so it pins no snapshot) and merges it. There is one per core:
/// merges are CPU-bound, and more at once would only hold more documents in memory. Ends when
/// the store is dropped.
pub(super) fn merge_thread(path: &Path, jobs: &Mutex<mpsc::Receiver<MergeJob>>) {
    let mut conn = None;
    loop {
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        run_caught("a merge", || {
            let MergeJob {
                batch,
                todo,
                mut merged,
                done,
            } = job;
            let result = (|| {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => conn.insert(open_reader(path)?),
                };
                let site = batch.site.as_str();
                for i in todo {
                    let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
                    let stored = read_stored(conn, site, &doc_id)?;
                    let mut prepared = merge_push(&batch, i, stored)?;
                    prepared.encode_records()?;
                    merged[i] = Some(prepared);
                }
                Ok(merged)
            })();
            let _ = done.send(result);
        });
    }
}

/// Reads a document's chunks and version in one read transaction (one snapshot).
fn read_stored(conn: &mut Connection, site: &str, doc_id: &str) -> Result<StoredDoc, StoreError> {
    let tx = conn.transaction()?;
    let stored = read_stored_in(&tx, site, doc_id)?;
    tx.finish()?;
    Ok(stored)
}

/// Reads a document's chunks and version inside an open transaction.
fn read_stored_in(conn: &Connection, site: &str, doc_id: &str) -> Result<StoredDoc, StoreError> {
    let row: Option<(Vec<u8>, i64)> = conn
        .prepare_cached("SELECT heads, chunk_count FROM docs WHERE site_id = ?1 AND doc_id = ?2")?
        .query_row(params![site, doc_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((heads, chunk_count)) = row else {
        return Ok(StoredDoc::default());
    };
    let chunk_count = u32::try_from(chunk_count)
        .map_err(|_| StoreError::CorruptData(format!("chunk count {chunk_count} of {doc_id}")))?;
    let mut bytes = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT bytes FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2 ORDER BY chunk_id",
    )?;
    let mut rows = stmt.query(params![site, doc_id])?;
    while let Some(row) = rows.next()? {
        let chunk = row
            .get_ref(0)?
            .as_blob()
            .map_err(|e| StoreError::CorruptData(format!("chunk of {doc_id}: {e}")))?;
        bytes.extend_from_slice(chunk);
    }
    Ok(StoredDoc {
        version: Some(heads),
        chunk_count,
        bytes,
    })
}

/// The version of a document as the write phase compares it ([`StoredDoc::version`]).
fn current_version(
    conn: &Connection,
    site: &str,
    doc_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT heads FROM docs WHERE site_id = ?1 AND doc_id = ?2")?
        .query_row(params![site, doc_id], |r| r.get(0))
        .optional()?)
}

/// What the write phase did with one request.
#[derive(Debug)]
enum Wrote {
    Committed(Vec<DocOutcome>),
    /// Nothing written: the device may not sync this request.
    Refused(SyncRefusal),
    /// Nothing written: these pushes' documents changed since they were read.
    Conflicts(Vec<usize>),
}

/// The write phase of one request, inside the writer's open transaction (shared with the other
/// requests of its group, see [`commit_jobs`]): checks that every document to write is still at
/// the version it was merged from, then persists every accepted document, the events with their
/// sequence numbers, the device row and the request's seq as the device's last accepted one.
///
/// First of all, the device must hold an unrevoked credential on the site and the request's seq
/// must be greater than the last accepted one, else nothing is written ([`Wrote::Refused`]):
/// checked here, in the transaction, so that a revocation or a concurrent request with the same
/// seq is never missed.
///
/// If a version moved, writes nothing and reports the conflicts, unless `final_round`: then the
/// conflicting documents are read and merged again here, under the write lock (replacing their
/// entry in `merged`). A document pushed twice in one request is merged again here on top of its
/// first push.
fn write_request(
    tx: &Connection,
    claims: &mut Claims<'_>,
    batch: &SyncBatch,
    merged: &mut [Option<Prepared>],
    final_round: bool,
) -> Result<Wrote, StoreError> {
    let site = batch.site.as_str();
    let next_seq: Option<i64> = tx
        .prepare_cached("SELECT next_seq FROM sites WHERE site_id = ?1")?
        .query_row([site], |r| r.get(0))
        .optional()?;
    let Some(mut next_seq) = next_seq else {
        return Err(StoreError::UnknownSite(batch.site.clone()));
    };
    if let Some(refusal) = auth::sync_refusal(tx, batch)? {
        return Ok(Wrote::Refused(refusal));
    }

    let mut conflicts = Vec::new();
    for (i, prepared) in merged.iter().enumerate() {
        let prepared = prepared.as_ref().ok_or_else(not_merged)?;
        if prepared.writes() && current_version(tx, site, &prepared.doc_id)? != prepared.version {
            conflicts.push(i);
        }
    }
    if !conflicts.is_empty() && !final_round {
        return Ok(Wrote::Conflicts(conflicts));
    }

    let first_seq = next_seq;
    // Each event's corrected time and flags, from what this request measured and the site's
    // configuration.
    let flags = IngestFlags::new(batch)?;
    let mut phase = WritePhase::new(conflicts, merged.len());
    for (i, slot) in merged.iter_mut().enumerate() {
        if phase.stale(i, slot)? {
            let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
            let stored = read_stored_in(tx, site, &doc_id)?;
            *slot = Some(merge_push(batch, i, stored)?);
        }
        let prepared = slot.as_ref().ok_or_else(not_merged)?;
        let Some(log) = phase.accepted(prepared) else {
            continue;
        };
        let new_events = write_doc(tx, claims, &flags, batch, prepared, log, &mut next_seq)?;
        phase.wrote(&prepared.doc_id, log, new_events);
    }
    super::compliance::ingest(tx, batch, merged)?;
    let outcomes = phase.outcomes();
    if next_seq != first_seq {
        tx.prepare_cached("UPDATE sites SET next_seq = ?1 WHERE site_id = ?2")?
            .execute(params![next_seq, site])?;
    }
    record_device_sync(tx, &batch.device_sync(&outcomes))?;
    auth::accept_request(tx, batch)?;
    Ok(Wrote::Committed(outcomes))
}

/// A request's merged documents, waiting for the writer.
#[derive(Debug)]
pub(super) struct WriteJob {
    batch: Arc<SyncBatch>,
    merged: Vec<Option<Prepared>>,
    final_round: bool,
    done: oneshot::Sender<Result<Written, StoreError>>,
}

/// Group commit: writes every queued request in one IMMEDIATE transaction, one fsync for all,
/// and answers each once it committed. A request with conflicts writes nothing and does not
/// disturb the others. If the transaction fails, its requests are written again one by one, so
/// that a request that cannot be written fails alone.
fn commit_jobs(
    conn: &mut Connection,
    event_ids: &mut EventIds,
    mut jobs: Vec<WriteJob>,
    notifier: &Notifier,
) {
    match write_jobs(conn, event_ids, &mut jobs) {
        Ok((wrote, claims)) => {
            event_ids.committed(claims);
            let mut sites_added: Vec<SiteId> = Vec::new();
            for (job, wrote) in jobs.into_iter().zip(wrote) {
                let answer = match wrote {
                    Wrote::Committed(outcomes) => {
                        for outcome in &outcomes {
                            if let DocOutcome::Accepted { new_events, .. } = outcome
                                && *new_events > 0
                                && !sites_added.contains(&job.batch.site)
                            {
                                sites_added.push(job.batch.site.clone());
                            }
                        }
                        Written::Committed(outcomes)
                    }
                    Wrote::Conflicts(conflicts) => Written::Conflicts {
                        merged: job.merged,
                        conflicts,
                    },
                    Wrote::Refused(refusal) => Written::Refused(refusal),
                };
                // The request may have given up waiting (its connection closed).
                let _ = job.done.send(Ok(answer));
            }
            notify_sites(conn, notifier, &sites_added);
        }
        Err(e) if jobs.len() > 1 => {
            tracing::warn!(error = %e, requests = jobs.len(), "a group commit failed; writing its requests one by one");
            for job in jobs {
                commit_jobs(conn, event_ids, vec![job], notifier);
            }
        }
        Err(e) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.done.send(Err(e));
            }
        }
    }
}

/// Wakes the subscribers of `sites` after a commit that added events to them, with each site's
/// last sequence number (read after the commit, so it covers every event committed by then).
fn notify_sites(conn: &Connection, notifier: &Notifier, sites: &[SiteId]) {
    for site in sites {
        let last = conn
            .prepare_cached("SELECT next_seq - 1 FROM sites WHERE site_id = ?1")
            .and_then(|mut stmt| stmt.query_row([site.as_str()], |r| r.get::<_, i64>(0)));
        match last {
            Ok(last) => notifier.notify(site.as_str(), u64::try_from(last).unwrap_or(0)),
            // Subscribers then wake at the next commit; their cursors lose nothing.
            Err(e) => tracing::warn!(error = %e, %site, "cannot read the last seq to notify"),
        }
    }
}

/// Writes `jobs` in one transaction, and returns with what each wrote the event ids it claimed;
/// on `Err` nothing of them is written.
fn write_jobs(
    conn: &mut Connection,
    event_ids: &EventIds,
    jobs: &mut [WriteJob],
) -> Result<(Vec<Wrote>, Committed), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut claims = event_ids.claims();
    let mut wrote = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        wrote.push(write_request(
            &tx,
            &mut claims,
            &job.batch,
            &mut job.merged,
            job.final_round,
        )?);
    }
    tx.commit()?;
    Ok((wrote, claims.into_committed()))
}

/// Persists one accepted document inside the write transaction: its new events, numbered from
/// `next_seq` on, its `docs` row with the shift listing's summary of the log, and its chunk.
/// Returns how many events were new to the site.
///
/// The summary ([`crate::store::ShiftSummary`]) is kept in the same upsert as the rest of the
/// row, so the events go in first: a start or end already recorded stays (the first to arrive);
/// the events new to the feed are added to the count, and when there are any their receipt is
/// the last event's.
fn write_doc(
    tx: &Connection,
    claims: &mut Claims<'_>,
    flags: &IngestFlags,
    batch: &SyncBatch,
    prepared: &Prepared,
    log: &MergedLog,
    next_seq: &mut i64,
) -> Result<u32, StoreError> {
    let doc_id = prepared.doc_id.as_str();
    let records = &prepared.records;
    let site = batch.site.as_str();
    let received_at_ms = batch.received_at_ms;
    let chunk = match &log.write {
        ChunkWrite::Nothing => return Ok(0),
        ChunkWrite::Append(bytes) => bytes.as_slice(),
        ChunkWrite::Replace(bytes) => bytes.as_slice(),
    };
    let Some(meta) = &log.meta else {
        return Err(StoreError::CorruptData(format!(
            "changes applied to {doc_id} without shift metadata"
        )));
    };
    let device_id = meta.device.to_string();
    let shift_id = meta.shift.to_string();
    let stamps = stamp_events(tx, site, flags, &log.new_events)?;

    // The id is looked up in the site's event-id index and claimed before the event goes in.
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
             checkpoint_id, device_seq, device_time_ms, received_at_ms, record, corrected_ms,
             flags, tagged)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    let mut inserted: u32 = 0;
    // The device times of the log's start and end, if among its new events (the first of each).
    let mut started_at: Option<i64> = None;
    let mut ended_at: Option<i64> = None;
    let mut written = vec![false; log.new_events.len()];
    // Seq and corrected time of each event inserted, for `event_hours`; of each scan, by guard,
    // for `scan_hours`.
    let mut hours = Vec::with_capacity(log.new_events.len());
    let mut scan_hours: Vec<(&str, Vec<(i64, i64)>)> = Vec::new();
    for (i, event) in log.new_events.iter().enumerate() {
        match event.record.body.kind() {
            "shift_started" if started_at.is_none() => started_at = Some(event.record.time.wall_ms),
            "shift_ended" if ended_at.is_none() => ended_at = Some(event.record.time.wall_ms),
            _ => {}
        }
        let event_id = event.id.0.as_bytes();
        if let Some(known) = claims.existing(tx, site, event_id)? {
            // Already in the feed. From another shift log it is a device reusing an id: the
            // first row stands, but say so.
            warn_if_from_another_log(tx, site, event, &shift_id, known)?;
            continue;
        }
        claims.claim(site, *event_id, *next_seq);
        let encoded;
        let record = match records.get(i) {
            Some(record) => record,
            None => {
                encoded = event
                    .record
                    .encode()
                    .map_err(|e| StoreError::Encode(e.to_string()))?;
                &encoded
            }
        };
        // Whether a scan is of a tag (`events_tag_scans_by_checkpoint`); NULL for other events.
        let tagged = match &event.record.body {
            EventBody::CheckpointScanned(scan) => Some(i64::from(tag_of(scan).is_some())),
            _ => None,
        };
        insert.execute(params![
            site,
            *next_seq,
            &event_id[..],
            device_id,
            shift_id,
            event.guard.as_str(),
            event.record.body.kind(),
            event.record.body.checkpoint().map(|c| c.as_str()),
            to_i64(event.record.seq),
            event.record.time.wall_ms,
            received_at_ms,
            record,
            stamps.stamps[i].corrected_ms,
            stamps.flags_json[i],
            tagged,
        ])?;
        if event.record.body.kind() == "panic" {
            // Only a new panic looks for endpoints: the rest of the sync never does.
            let panic = webhooks::RaisedPanic {
                event: &event.id,
                device: &device_id,
                guard: event.guard.as_str(),
                shift: &shift_id,
                raised_at_ms: event.record.time.wall_ms,
                corrected_ms: stamps.stamps[i].corrected_ms,
                received_at_ms,
            };
            super::webhooks::enqueue(tx, &webhooks::panic_raised(&batch.site, &panic))?;
        }
        super::blobs::insert_note_refs(tx, site, *next_seq, event)?;
        written[i] = true;
        hours.push((*next_seq, stamps.stamps[i].corrected_ms));
        if tagged.is_some() {
            let guard = event.guard.as_str();
            let at = (*next_seq, stamps.stamps[i].corrected_ms);
            match scan_hours.iter_mut().find(|(g, _)| *g == guard) {
                Some((_, scans)) => scans.push(at),
                None => scan_hours.push((guard, vec![at])),
            }
        }
        inserted += 1;
        *next_seq += 1;
    }
    for span in event_hours::spans(hours) {
        tx.prepare_cached(
            "INSERT INTO event_hours (site_id, hour_ms, first_seq, last_seq)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![site, span.hour_ms, span.first_seq, span.last_seq])?;
    }
    for (guard, scans) in scan_hours {
        for span in event_hours::spans(scans) {
            tx.prepare_cached(
                "INSERT INTO scan_hours (site_id, guard_id, hour_ms, first_seq, last_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                site,
                guard,
                span.hour_ms,
                span.first_seq,
                span.last_seq
            ])?;
        }
    }
    // The stored scans the new ones flag too (a cloned tag).
    for update in stamps.updates.iter().filter(|u| written[u.by]) {
        tx.prepare_cached("UPDATE events SET flags = ?3 WHERE site_id = ?1 AND seq = ?2")?
            .execute(params![site, update.seq, update.flags_json])?;
    }
    let last_event_at = (inserted > 0).then_some(received_at_ms);

    tx.prepare_cached(
        "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count, updated_at,
             started_at, ended_at, event_count, last_event_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (site_id, doc_id) DO UPDATE SET
             heads = excluded.heads, chunk_count = excluded.chunk_count, updated_at = excluded.updated_at,
             started_at = COALESCE(docs.started_at, excluded.started_at),
             ended_at = COALESCE(docs.ended_at, excluded.ended_at),
             event_count = docs.event_count + excluded.event_count,
             last_event_at = COALESCE(excluded.last_event_at, docs.last_event_at)",
    )?
    .execute(params![
        site,
        doc_id,
        SHIFT_LOG_KIND,
        device_id,
        meta.guard.as_str(),
        heads_to_blob(&log.heads),
        log.chunk_count,
        received_at_ms,
        started_at,
        ended_at,
        inserted,
        last_event_at,
    ])?;
    if let ChunkWrite::Replace(_) = &log.write {
        tx.prepare_cached("DELETE FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2")?
            .execute(params![site, doc_id])?;
    }
    tx.prepare_cached(
        "INSERT INTO doc_chunks (site_id, doc_id, chunk_id, bytes)
         SELECT ?1, ?2, COALESCE(MAX(chunk_id), 0) + 1, ?3 FROM doc_chunks
         WHERE site_id = ?1 AND doc_id = ?2",
    )?
    .execute(params![site, doc_id, chunk])?;
    if let Some(signed) = &log.signature {
        tx.prepare_cached(
            "INSERT INTO shift_log_signatures (site_id, doc_id, heads, signed_at, signature,
                 received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            site,
            doc_id,
            signed_heads_blob(signed),
            signed.signed_at_ms,
            signed.signature,
            received_at_ms
        ])?;
    }
    Ok(inserted)
}

/// The columns [`scan_row`] reads, from the first: a scan's seq, id, device, corrected time
/// (as the feed reads it: the expression the index of migration 23 holds), record, JSON (rows
/// stored before migration 8) and flags.
fn scan_columns() -> String {
    format!(
        "seq, event_id, device_id, {}, record, json, flags",
        corrected_ms()
    )
}

fn scan_row(row: &rusqlite::Row<'_>) -> Result<StoredScan, StoreError> {
    let bad = |e: rusqlite::types::FromSqlError| StoreError::CorruptData(format!("a scan: {e}"));
    read_scan_row(ScanRow {
        seq: row.get(0)?,
        event_id: row.get_ref(1)?.as_blob().map_err(bad)?,
        device_id: row.get_ref(2)?.as_str().map_err(bad)?,
        corrected_ms: row.get(3)?,
        record: row.get_ref(4)?.as_blob_or_null().map_err(bad)?,
        json: row.get_ref(5)?.as_str_or_null().map_err(bad)?,
        flags: row.get_ref(6)?.as_str_or_null().map_err(bad)?,
        // The feed adds the stamp to a row stored as JSON when it serves it.
        json_stamped: false,
    })
}

/// The rows of `scan_hours` (migration 23) a guard's scans in a span are read through: ?1 site,
/// ?2 guard, ?3 and ?4 the hours (both included).
const GUARD_HOURS_SQL: &str = "SELECT first_seq, last_seq FROM scan_hours
     WHERE site_id = ?1 AND guard_id = ?2 AND hour_ms BETWEEN ?3 AND ?4";

/// The latest hour of a guard's scans up to ?3: ?1 site, ?2 guard.
const GUARD_LAST_HOUR_SQL: &str = "SELECT MAX(hour_ms) FROM scan_hours
     WHERE site_id = ?1 AND guard_id = ?2 AND hour_ms <= ?3";

/// A guard's scans in one seq range of [`GUARD_HOURS_SQL`]: ?1 site, ?2 and ?3 the range, ?4
/// guard, ?5 and ?6 the span of corrected time (both included). The primary key serves it.
fn guard_range_sql() -> String {
    format!(
        "SELECT {} FROM events
         WHERE site_id = ?1 AND seq BETWEEN ?2 AND ?3 AND guard_id = ?4
           AND kind = 'checkpoint_scanned' AND {} BETWEEN ?5 AND ?6",
        scan_columns(),
        corrected_ms()
    )
}

/// The guard's last scan in one seq range before ?5: ?1 site, ?2 and ?3 the range, ?4 guard;
/// its seq and corrected time.
fn guard_range_last_sql() -> String {
    let corrected = corrected_ms();
    format!(
        "SELECT seq, {corrected} FROM events
         WHERE site_id = ?1 AND seq BETWEEN ?2 AND ?3 AND guard_id = ?4
           AND kind = 'checkpoint_scanned' AND {corrected} < ?5
         ORDER BY {corrected} DESC, seq DESC LIMIT 1"
    )
}

/// The seq ranges of a guard's scans in the hours `from_hour` to `to_ms` (both included).
fn guard_ranges(
    tx: &Connection,
    site: &str,
    guard: &str,
    from_hour: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut stmt = tx.prepare_cached(GUARD_HOURS_SQL)?;
    let rows = stmt.query_map(params![site, guard, from_hour, to_ms], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(event_hours::ranges(rows.collect::<Result<_, _>>()?, None))
}

/// The guard's stored scans of [`GuardScans`]: those with a corrected time from `from_ms` to
/// `to_ms` (at most [`MAX_GUARD_SCANS`], the latest) and the last one before `from_ms`, read
/// through `scan_hours` and the events' primary key.
fn read_guard_scans(
    tx: &Connection,
    site: &str,
    guard: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<StoredScan>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = tx.prepare_cached(&guard_range_sql())?;
    for (first, last) in guard_ranges(tx, site, guard, event_hours::hour_of(from_ms), to_ms)? {
        let mut rows = stmt.query(params![site, first, last, guard, from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            out.push(scan_row(row)?);
        }
    }
    let most = usize::try_from(MAX_GUARD_SCANS).unwrap_or(usize::MAX);
    if out.len() > most {
        out.sort_unstable_by_key(|s| std::cmp::Reverse((s.scan.corrected_ms, s.seq)));
        out.truncate(most);
    }
    // The last before `from_ms`: in the latest hour up to its own that holds one. A row of an
    // hour before `from_ms`'s holds only scans before it, so at most two hours are read.
    let mut up_to = from_ms;
    let before = loop {
        let hour: Option<i64> = tx
            .prepare_cached(GUARD_LAST_HOUR_SQL)?
            .query_row(params![site, guard, up_to], |r| r.get(0))?;
        let Some(hour) = hour else {
            break None;
        };
        let mut best: Option<(i64, i64)> = None;
        let mut last_stmt = tx.prepare_cached(&guard_range_last_sql())?;
        for (first, last) in guard_ranges(tx, site, guard, hour, hour)? {
            let found: Option<(i64, i64)> = last_stmt
                .query_row(params![site, first, last, guard, from_ms], |r| {
                    Ok((r.get(1)?, r.get(0)?))
                })
                .optional()?;
            best = best.max(found);
        }
        if best.is_some() {
            break best;
        }
        up_to = hour - 1;
    };
    if let Some((_, seq)) = before {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {} FROM events WHERE site_id = ?1 AND seq = ?2",
            scan_columns()
        ))?;
        let mut rows = stmt.query(params![site, seq])?;
        while let Some(row) = rows.next()? {
            out.push(scan_row(row)?);
        }
    }
    Ok(out)
}

/// The query of [`TagScans`]: ?1 site, ?2 checkpoint, ?3 and ?4 the span, ?5 the device left
/// out, ?6 the most rows. Only a scan of a tag can be another's cloned tag: the index of
/// migration 23 holds those (and scans stored before it).
fn tag_scans_sql() -> String {
    format!(
        "SELECT {} FROM events
         WHERE site_id = ?1 AND checkpoint_id = ?2 AND kind = 'checkpoint_scanned'
           AND tagged IS NOT 0
           AND {} BETWEEN ?3 AND ?4 AND device_id <> ?5
         LIMIT ?6",
        scan_columns(),
        corrected_ms()
    )
}

/// The stamps of a log's new events, reading the stored scans their flags need
/// ([`crate::store::flagging`]).
fn stamp_events(
    tx: &Connection,
    site: &str,
    flags: &IngestFlags,
    events: &[patrol_core::Event],
) -> Result<LogStamps, StoreError> {
    let plan = flags.plan(events);
    let guard = match plan.guard_scans() {
        Some(GuardScans {
            guard,
            from_ms,
            to_ms,
        }) => read_guard_scans(tx, site, guard, *from_ms, *to_ms)?,
        None => Vec::new(),
    };
    let mut tags = Vec::new();
    for TagScans {
        checkpoint,
        device,
        from_ms,
        to_ms,
    } in plan.tag_scans()
    {
        let mut stmt = tx.prepare_cached(&tag_scans_sql())?;
        let mut rows = stmt.query(params![
            site,
            checkpoint,
            from_ms,
            to_ms,
            device,
            MAX_TAG_SCANS
        ])?;
        let mut found = Vec::new();
        while let Some(row) = rows.next()? {
            found.push(scan_row(row)?);
        }
        tags.push(found);
    }
    plan.finish(guard, tags)
}

/// For an event whose id the site already has (as its event `seq`): warns unless the existing
/// row is from the same shift log.
fn warn_if_from_another_log(
    tx: &Connection,
    site: &str,
    event: &patrol_core::Event,
    shift_id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    let existing: Option<String> = tx
        .prepare_cached("SELECT shift_id FROM events WHERE site_id = ?1 AND seq = ?2")?
        .query_row(params![site, seq], |r| r.get(0))
        .optional()?;
    if existing.as_deref() != Some(shift_id) {
        tracing::warn!(
            site, event = %event.id, shift = %shift_id, existing_shift = ?existing,
            "event id already recorded from another shift log; keeping the first"
        );
    }
    Ok(())
}

/// Records that a device synced (creating its row on first contact).
fn record_device_sync(tx: &Connection, sync: &DeviceSync) -> Result<(), StoreError> {
    let rows = tx
        .prepare_cached(
            "INSERT INTO devices (site_id, device_id, first_seen, last_sync_at, last_pending, clock_skew_ms)
             SELECT ?1, ?2, ?3, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM sites WHERE site_id = ?1)
             ON CONFLICT (site_id, device_id) DO UPDATE SET
                 last_sync_at = MAX(last_sync_at, excluded.last_sync_at),
                 last_pending = excluded.last_pending,
                 clock_skew_ms = excluded.clock_skew_ms",
        )?
        .execute(params![
            sync.site.as_str(),
            sync.device.to_string(),
            sync.synced_at_ms,
            to_i64(sync.pending_events),
            sync.clock_skew_ms,
        ])?;
    if rows == 0 {
        return Err(StoreError::UnknownSite(sync.site.clone()));
    }
    Ok(())
}

/// A shift log as stored, with its device's key and every signature kept for it, for export.
pub(super) fn shift_log_evidence(
    conn: &mut Connection,
    site: &SiteId,
    shift: &ShiftId,
) -> Result<Option<ShiftLogEvidence>, StoreError> {
    // One snapshot: the chunks and the signatures written with them.
    let tx = conn.transaction()?;
    let doc_id = shift_log_doc_id(shift);
    let device: Option<String> = tx
        .prepare_cached(
            "SELECT device_id FROM docs WHERE site_id = ?1 AND doc_id = ?2 AND kind = ?3",
        )?
        .query_row(params![site.as_str(), doc_id, SHIFT_LOG_KIND], |r| r.get(0))
        .optional()?;
    let Some(device) = device else {
        return Ok(None);
    };
    let stored = read_stored_in(&tx, site.as_str(), &doc_id)?;
    let public_key: Option<Vec<u8>> = tx
        .prepare_cached(
            "SELECT public_key FROM device_credentials WHERE site_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![site.as_str(), device], |r| r.get(0))
        .optional()?
        .flatten();
    let mut signatures = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT heads, signed_at, signature, received_at FROM shift_log_signatures
             WHERE site_id = ?1 AND doc_id = ?2 ORDER BY received_at, signed_at",
        )?;
        let mut rows = stmt.query(params![site.as_str(), doc_id])?;
        while let Some(row) = rows.next()? {
            let heads: Vec<u8> = row.get(0)?;
            signatures.push(read_signature(
                &heads,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
            )?);
        }
    }
    tx.finish()?;
    Ok(Some(ShiftLogEvidence {
        device: read_device_id(&device)?,
        bytes: stored.bytes,
        public_key: read_public_key(public_key)?,
        signatures,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::event_ids;
    use crate::store::sqlite::testing::{TestLog, enroll, test_site_db};
    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Merges the batch's one push against the stored document (enrolling its device first).
    fn merge_all(
        conn: &mut Connection,
        batch: &SyncBatch,
    ) -> Result<Vec<Option<Prepared>>, StoreError> {
        enroll(conn, batch)?;
        let doc_id = shift_log_doc_id(&batch.pushes[0].shift);
        let stored = read_stored(conn, batch.site.as_str(), &doc_id)?;
        Ok(vec![Some(merge_push(batch, 0, stored)?)])
    }

    /// Writes one request in a transaction of its own, as the writer thread does, keeping the
    /// event-id index in step.
    fn write_alone(
        conn: &mut Connection,
        ids: &mut EventIds,
        batch: &SyncBatch,
        merged: &mut [Option<Prepared>],
        final_round: bool,
    ) -> Result<Wrote, StoreError> {
        let tx = conn.transaction()?;
        let mut claims = ids.claims();
        let wrote = write_request(&tx, &mut claims, batch, merged, final_round)?;
        let claims = claims.into_committed();
        tx.commit()?;
        ids.committed(claims);
        Ok(wrote)
    }

    fn new_events(wrote: &Wrote) -> Vec<u32> {
        match wrote {
            Wrote::Committed(outcomes) => outcomes
                .iter()
                .map(|o| match o {
                    DocOutcome::Accepted { new_events, .. } => *new_events,
                    other => panic!("{other:?}"),
                })
                .collect(),
            Wrote::Conflicts(conflicts) => panic!("conflicts {conflicts:?}"),
            Wrote::Refused(refusal) => panic!("refused {refusal:?}"),
        }
    }

    /// Two pushes of one log merged from the same stored version: the first to write wins; the
    /// second finds the version moved and writes nothing, and in its final round is merged again
    /// under the write lock, on top of the first. No event is lost or projected twice.
    #[test]
    fn a_stale_merge_conflicts_and_is_merged_again_under_the_lock() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let mut log = TestLog::new()?;
        log.record(5)?;
        let first = log.batch()?;
        log.record(5)?;
        let second = log.batch()?;
        let mut merged_first = merge_all(&mut conn, &first)?;
        let mut merged_second = merge_all(&mut conn, &second)?;
        let mut index = EventIds::load(&conn)?;

        let wrote = write_alone(&mut conn, &mut index, &first, &mut merged_first, false)?;
        // The metadata change holds no event: the 5 notes.
        assert_eq!(new_events(&wrote), vec![5]);

        let Wrote::Conflicts(conflicts) =
            write_alone(&mut conn, &mut index, &second, &mut merged_second, false)?
        else {
            panic!("a stale merge was written");
        };
        assert_eq!(conflicts, vec![0]);

        let wrote = write_alone(&mut conn, &mut index, &second, &mut merged_second, true)?;
        assert_eq!(new_events(&wrote), vec![5]);

        let (rows, ids, seqs): (i64, i64, i64) = conn.query_row(
            "SELECT COUNT(*), COUNT(DISTINCT event_id), MAX(seq) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!((rows, ids, seqs), (10, 10, 10));
        let next_seq: i64 = conn.query_row("SELECT next_seq FROM sites", [], |r| r.get(0))?;
        assert_eq!(next_seq, 11);
        // A fresh merge of the whole log finds nothing new, from the stored chunks.
        let again = log.batch()?;
        let mut merged = merge_all(&mut conn, &again)?;
        assert_eq!(
            new_events(&write_alone(
                &mut conn,
                &mut index,
                &again,
                &mut merged,
                false
            )?),
            vec![0]
        );
        Ok(())
    }

    /// A new shift log holding `ids`, as one sync request.
    fn log_with_ids(
        ids: &[patrol_core::EventId],
    ) -> Result<Arc<SyncBatch>, Box<dyn std::error::Error>> {
        let mut log = TestLog::new()?;
        for id in ids {
            log.record_id(*id)?;
        }
        log.batch()
    }

    /// Merges and writes a new shift log holding `ids` alone; returns its new events' count.
    fn push_log_with_ids(
        conn: &mut Connection,
        index: &mut EventIds,
        ids: &[patrol_core::EventId],
    ) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        let batch = log_with_ids(ids)?;
        let mut merged = merge_all(conn, &batch)?;
        let wrote = write_alone(conn, index, &batch, &mut merged, false)?;
        Ok(new_events(&wrote))
    }

    /// Each fold writes its ids as a new run of `event_ids`; an id is found in whichever run
    /// holds it, by the index as it is and as read back from the database; and the fold that
    /// makes more than `MAX_RUNS` runs merges them into run 0, where they are found as well.
    #[test]
    fn folded_ids_are_found_in_every_run_and_runs_merge() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let runs = |conn: &Connection| -> rusqlite::Result<Vec<i64>> {
            conn.prepare("SELECT DISTINCT run FROM event_ids ORDER BY run")?
                .query_map([], |r| r.get(0))?
                .collect()
        };
        // A new event in a log of its own, folded at once.
        let fold_one = |conn: &mut Connection, index: &mut EventIds| {
            let id = patrol_core::EventId::generate();
            assert_eq!(push_log_with_ids(conn, index, &[id])?, vec![1]);
            assert_eq!(index.fold(conn)?, 1);
            Ok::<_, Box<dyn std::error::Error>>(id)
        };
        // Each id again, in a log of its own: known to `index` and to one read from the database.
        let known_to_both =
            |conn: &mut Connection, index: &mut EventIds, ids: &[patrol_core::EventId]| {
                let mut fresh = EventIds::load(conn)?;
                for id in ids {
                    assert_eq!(push_log_with_ids(conn, index, &[*id])?, vec![0]);
                    assert_eq!(push_log_with_ids(conn, &mut fresh, &[*id])?, vec![0]);
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            };
        let mut index = EventIds::load(&conn)?;
        let mut folded = Vec::new();
        for fold in 1..=event_ids::MAX_RUNS {
            folded.push(fold_one(&mut conn, &mut index)?);
            assert_eq!(runs(&conn)?, (1..=fold).collect::<Vec<_>>());
        }
        known_to_both(&mut conn, &mut index, &folded)?;
        folded.push(fold_one(&mut conn, &mut index)?);
        assert_eq!(runs(&conn)?, vec![0]);
        known_to_both(&mut conn, &mut index, &folded)?;
        // The next fold starts run 1 again, and the merged ids keep their seqs.
        fold_one(&mut conn, &mut index)?;
        assert_eq!(runs(&conn)?, vec![0, 1]);
        let matching: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events e JOIN event_ids i
               ON i.site_id = e.site_id AND i.event_id = e.event_id AND i.seq = e.seq",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(matching, event_ids::MAX_RUNS + 2);
        Ok(())
    }

    /// An event id already on the site from another log is not projected again, whether the
    /// first one's id is still in the recent level of the index (in memory), already folded into
    /// `event_ids`, or claimed earlier in the same transaction; and the recent level is rebuilt
    /// from the events past the fold when the store opens.
    #[test]
    fn an_event_id_from_another_log_stays_once_in_either_level() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let ids: Vec<patrol_core::EventId> =
            (0..6).map(|_| patrol_core::EventId::generate()).collect();
        let (batch, push) = (log_with_ids, push_log_with_ids);
        let mut index = EventIds::load(&conn)?;
        assert_eq!(push(&mut conn, &mut index, &ids[0..3])?, vec![3]);
        // ids[0] is in the recent level.
        assert_eq!(push(&mut conn, &mut index, &[ids[0], ids[3]])?, vec![1]);
        assert_eq!(index.recent_len(), 4);
        assert_eq!(index.fold(&mut conn)?, 4);
        assert_eq!(index.recent_len(), 0);
        // ids[1] is folded...
        assert_eq!(push(&mut conn, &mut index, &[ids[1], ids[4]])?, vec![1]);
        // ...and an index read from the database knows both levels: ids[2] folded, ids[4]
        // recent.
        let mut fresh = EventIds::load(&conn)?;
        assert_eq!(fresh.recent_len(), 1);
        assert_eq!(push(&mut conn, &mut fresh, &[ids[2], ids[4]])?, vec![0]);
        // Two logs in one transaction with the same new id: the first claims it.
        let (a, b) = (batch(&[ids[5]])?, batch(&[ids[5]])?);
        let (mut merged_a, mut merged_b) = (merge_all(&mut conn, &a)?, merge_all(&mut conn, &b)?);
        let tx = conn.transaction()?;
        let mut claims = fresh.claims();
        let first = write_request(&tx, &mut claims, &a, &mut merged_a, false)?;
        let second = write_request(&tx, &mut claims, &b, &mut merged_b, false)?;
        // Rolled back: the claim must not outlive the transaction.
        drop(claims);
        drop(tx);
        assert_eq!(
            (new_events(&first), new_events(&second)),
            (vec![1], vec![0])
        );
        assert_eq!(fresh.recent_len(), 1);
        assert_eq!(push(&mut conn, &mut fresh, &[ids[5]])?, vec![1]);

        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        assert_eq!(count("SELECT COUNT(*) FROM events")?, 6);
        assert_eq!(count("SELECT COUNT(DISTINCT event_id) FROM events")?, 6);
        assert_eq!(count("SELECT MAX(seq) FROM events")?, 6);
        assert_eq!(count("SELECT through_seq FROM event_id_folds")?, 4);
        // The folded level holds exactly the events up to the watermark, with their seq.
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM events e JOIN event_ids i
                   ON i.site_id = e.site_id AND i.event_id = e.event_id AND i.seq = e.seq
                 WHERE e.seq <= 4"
            )?,
            4
        );
        assert_eq!(count("SELECT COUNT(*) FROM event_ids")?, 4);
        Ok(())
    }

    /// The queries of a new scan's flags read the scans around it through `scan_hours`, the
    /// events' primary key and the index of tag scans (migration 23), not the whole site's
    /// events.
    #[test]
    fn the_queries_for_flags_use_their_indexes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, conn) = test_site_db(dir.path())?;
        let hours_params = params!["site-1", "x", 1, 2];
        let last_hour_params = params!["site-1", "x", 1];
        let range_params = params!["site-1", 1, 2, "x", 3, 4];
        let last_params = params!["site-1", 1, 2, "x", 3];
        let tag_params = params!["site-1", "x", 1, 2, "d", 4];
        for (sql, values, table, index) in [
            (
                GUARD_HOURS_SQL.to_owned(),
                hours_params,
                "scan_hours",
                "PRIMARY KEY",
            ),
            (
                GUARD_LAST_HOUR_SQL.to_owned(),
                last_hour_params,
                "scan_hours",
                "PRIMARY KEY",
            ),
            (guard_range_sql(), range_params, "events", "PRIMARY KEY"),
            (guard_range_last_sql(), last_params, "events", "PRIMARY KEY"),
            (
                tag_scans_sql(),
                tag_params,
                "events",
                "events_tag_scans_by_checkpoint",
            ),
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let plan: Vec<String> = stmt
                .query_map(values, |r| r.get(3))?
                .collect::<Result<_, _>>()?;
            let searches: Vec<&String> = plan.iter().filter(|p| p.contains(table)).collect();
            assert!(!searches.is_empty(), "{plan:?}");
            for step in searches {
                assert!(
                    step.starts_with("SEARCH") && step.contains(index),
                    "{index}: {plan:?}"
                );
            }
        }
        Ok(())
    }

    /// A guard's scans read through `scan_hours` are exactly those the flags ask for: in the
    /// span (the latest [`MAX_GUARD_SCANS`]), and the last one before it, however the guard's
    /// and other guards' scans fall in hours and seq ranges, and past events that are not scans.
    #[test]
    fn a_guards_scans_are_read_through_their_hours() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, conn) = test_site_db(dir.path())?;
        const H: i64 = 3_600_000;
        let t0 = 1_740_866_400_000 - 1_740_866_400_000 % H;
        // (guard, kind, corrected time) of each event in seq order; the writes are runs of 5.
        let mut events = Vec::new();
        for i in 0..60_i64 {
            let guard = if i % 3 == 0 { "guard-b" } else { "guard-a" };
            let kind = if i % 7 == 0 {
                "note"
            } else {
                "checkpoint_scanned"
            };
            // Back and forth across hours, as late and out-of-order deliveries are.
            let at = t0 + ((i * 37) % 11) * H / 2 + i * 1_000;
            events.push((guard, kind, at));
        }
        let scan = patrol_core::Scan {
            checkpoint: patrol_core::CheckpointId::new("cp-1")?,
            method: patrol_core::ScanMethod::Gps,
            location: None,
            note: None,
        };
        for (i, (guard, kind, at)) in events.iter().enumerate() {
            let seq = i64::try_from(i)? + 1;
            let record = patrol_core::EventRecord {
                seq: u64::try_from(seq)?,
                time: patrol_core::DeviceTime {
                    wall_ms: *at,
                    boot_id: uuid::Uuid::nil(),
                    mono_ms: 0,
                    hlc: patrol_core::Hlc::default(),
                },
                config_version: 1,
                body: EventBody::CheckpointScanned(scan.clone()),
            }
            .encode()?;
            conn.execute(
                "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
                     checkpoint_id, device_seq, device_time_ms, received_at_ms, record,
                     corrected_ms, tagged)
                 VALUES ('site-1', ?1, randomblob(16), ?2, 's', ?3, ?4, 'cp-1', ?1, ?5, ?5, ?6,
                     ?5, 0)",
                params![
                    seq,
                    patrol_core::DeviceId::generate().to_string(),
                    guard,
                    kind,
                    at,
                    record
                ],
            )?;
        }
        for (w, write) in events.chunks(5).enumerate() {
            for guard in ["guard-a", "guard-b"] {
                let scans = write.iter().enumerate().filter_map(|(j, (g, kind, at))| {
                    let seq = i64::try_from(w * 5 + j).ok()? + 1;
                    (*g == guard && *kind == "checkpoint_scanned").then_some((seq, *at))
                });
                for span in event_hours::spans(scans) {
                    conn.execute(
                        "INSERT INTO scan_hours VALUES ('site-1', ?1, ?2, ?3, ?4)",
                        params![guard, span.hour_ms, span.first_seq, span.last_seq],
                    )?;
                }
            }
        }
        for guard in ["guard-a", "guard-b", "guard-c"] {
            for (from, to) in [
                (t0, t0 + 6 * H),
                (t0 + 2 * H + 5, t0 + 3 * H + 7),
                (t0 + 4 * H, t0 + 4 * H),
                (t0 - H, t0 - 1),
                (t0 + 9 * H, t0 + 10 * H),
            ] {
                let mut got: Vec<i64> = read_guard_scans(&conn, "site-1", guard, from, to)?
                    .iter()
                    .map(|s| s.seq)
                    .collect();
                got.sort_unstable();
                let theirs = || {
                    events
                        .iter()
                        .enumerate()
                        .filter(|(_, (g, kind, _))| *g == guard && *kind == "checkpoint_scanned")
                };
                let mut want: Vec<i64> = theirs()
                    .filter(|(_, (_, _, at))| (from..=to).contains(at))
                    .map(|(i, _)| i64::try_from(i).unwrap_or(0) + 1)
                    .collect();
                if let Some((i, _)) = theirs()
                    .filter(|(_, (_, _, at))| *at < from)
                    .max_by_key(|(i, (_, _, at))| (*at, *i))
                {
                    want.push(i64::try_from(i)? + 1);
                }
                want.sort_unstable();
                assert_eq!(got, want, "{guard} {from} {to}");
            }
        }
        Ok(())
    }

    /// A sync request is written only for an enrolled, unrevoked device, with a request seq
    /// above the last accepted one: checked in the write transaction, and a refused request
    /// writes nothing at all (no document, event, device row or seq).
    #[test]
    fn a_sync_is_refused_in_its_transaction_unless_the_device_may_send_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let mut log = TestLog::new()?;
        log.record(3)?;
        let first = log.batch()?;
        let count = |conn: &Connection, sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        let write = |conn: &mut Connection, batch: &SyncBatch| -> Result<Wrote, StoreError> {
            let doc_id = shift_log_doc_id(&batch.pushes[0].shift);
            let stored = read_stored(conn, batch.site.as_str(), &doc_id)?;
            let mut merged = vec![Some(merge_push(batch, 0, stored)?)];
            let mut ids = EventIds::load(conn)?;
            write_alone(conn, &mut ids, batch, &mut merged, true)
        };
        let nothing_written = |conn: &Connection| -> Result<bool, StoreError> {
            Ok(count(conn, "SELECT COUNT(*) FROM events")? == 0
                && count(conn, "SELECT COUNT(*) FROM docs")? == 0
                && count(conn, "SELECT COUNT(*) FROM devices")? == 0)
        };

        assert!(matches!(
            write(&mut conn, &first)?,
            Wrote::Refused(SyncRefusal::NotEnrolled)
        ));
        assert!(nothing_written(&conn)?);

        enroll(&conn, &first)?;
        assert_eq!(new_events(&write(&mut conn, &first)?), vec![3]);
        assert_eq!(
            count(&conn, "SELECT last_request_seq FROM device_credentials")?,
            1
        );
        // The same request again, and one numbered below the last accepted.
        log.record(2)?;
        let mut replayed = (*log.batch()?).clone();
        for seq in [1, 0] {
            replayed.request_seq = seq;
            assert!(matches!(
                write(&mut conn, &replayed)?,
                Wrote::Refused(SyncRefusal::Replayed { last_seq: 1 })
            ));
        }
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM events")?, 3);

        conn.execute("UPDATE device_credentials SET revoked_at = 5", [])?;
        replayed.request_seq = 9;
        assert!(matches!(
            write(&mut conn, &replayed)?,
            Wrote::Refused(SyncRefusal::Revoked)
        ));
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM events")?, 3);
        assert_eq!(
            count(&conn, "SELECT last_request_seq FROM device_credentials")?,
            1
        );
        Ok(())
    }
}
