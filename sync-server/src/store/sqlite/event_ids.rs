//! The site-wide event-id index, which keeps one row per event id in the feed: in two levels
//! (migrations 0002, 0006 and 0007).
//!
//! - **Folded**: `event_ids`, every id up to a site's `event_id_folds.through_seq`, with a Bloom
//!   filter in front ([`FoldedFilter`]) so that the table is read only for ids that may be there.
//!   Each fold wrote its ids as a new *run* (key `(site_id, run, event_id)`): written in order at
//!   the end of the site's key range, a fold costs its own size, however large the table. Once a
//!   site has more than [`MAX_RUNS`] runs they are merged into run 0, which rewrites most of it;
//!   so that happens once per [`MAX_RUNS`] folds, and a look-up seeks at most `MAX_RUNS + 1` runs.
//! - **Recent**: the ids of the site's events after that, in the writer thread's memory only.
//!   They are already on disk as the events' own `event_id`, so the level is rebuilt from the
//!   `events` rows past the watermark when the store opens. Kept as a table, every commit
//!   rewrote most of it (new ids land on random pages): at a million events that doubled what
//!   the server wrote to disk.
//!
//! The writer moves the recent level into a new run once it has grown past a threshold (a
//! *fold*), in one transaction that also moves the watermark. Ids claimed in a write
//! transaction join the recent level only once it commits ([`Claims`]), so a rolled-back or
//! panicked transaction never leaves an id claimed that no event row holds.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::folded::FoldedFilter;
use crate::store::StoreError;
use crate::store::rows::corrupt;

/// Event ids of each site, with their events' seq.
type Level = HashMap<String, HashMap<[u8; 16], i64>>;

/// Runs a site's folded ids may be in (besides run 0) before they are merged into run 0.
pub(super) const MAX_RUNS: i64 = 8;

/// Runs `f` on the ids of `site` in `level`, adding the site if it has none yet (without
/// allocating its name when it has).
fn with_site(level: &mut Level, site: &str, f: impl FnOnce(&mut HashMap<[u8; 16], i64>)) {
    match level.get_mut(site) {
        Some(ids) => f(ids),
        None => {
            let mut ids = HashMap::new();
            f(&mut ids);
            level.insert(site.to_owned(), ids);
        }
    }
}

/// Both levels of the index; owned by the writer thread.
#[derive(Debug)]
pub(super) struct EventIds {
    folded: FoldedFilter,
    /// Each site's newest run in `event_ids` (none: 0, the merged run, at most).
    runs: HashMap<String, i64>,
    recent: Level,
}

impl EventIds {
    /// Reads both levels: the filter from `event_ids` (one that always says "maybe" if that
    /// table cannot be read: slower, never wrong) and the recent ids from `events`.
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut ids = EventIds {
            folded: FoldedFilter::load_or_everything(conn),
            runs: HashMap::new(),
            recent: Level::new(),
        };
        ids.runs = conn
            .prepare(
                // A seek per site (the table's key starts with site and run), not a scan.
                "SELECT site_id, run FROM (SELECT site_id, (SELECT MAX(run) FROM event_ids i
                                                   WHERE i.site_id = s.site_id) AS run
                                          FROM sites s)
                 WHERE run IS NOT NULL",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT e.site_id, e.event_id, e.seq FROM sites s
             JOIN events e ON e.site_id = s.site_id
              AND e.seq > COALESCE((SELECT through_seq FROM event_id_folds f
                                    WHERE f.site_id = s.site_id), 0)",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let bad_row = |e| corrupt(format!("events row: {e}"));
            let site = row.get_ref(0)?.as_str().map_err(bad_row)?;
            let id = event_id(row.get_ref(1)?.as_blob().map_err(bad_row)?)?;
            let seq: i64 = row.get(2)?;
            let mut twice = false;
            with_site(&mut ids.recent, site, |ids| {
                twice = ids.insert(id, seq).is_some();
            });
            if twice {
                return Err(corrupt(format!(
                    "event id {} twice in the events of site {site}",
                    uuid::Uuid::from_bytes(id)
                )));
            }
        }
        Ok(ids)
    }

    /// How many ids the recent level holds.
    pub(super) fn recent_len(&self) -> u64 {
        self.recent.values().map(|ids| ids.len() as u64).sum()
    }

    /// Starts the claims of one write transaction.
    pub(super) fn claims(&self) -> Claims<'_> {
        Claims {
            ids: self,
            new: Level::new(),
        }
    }

    /// Adds the claims of a committed transaction (see [`Claims::into_committed`]).
    pub(super) fn committed(&mut self, claims: Committed) {
        for (site, new) in claims.0 {
            with_site(&mut self.recent, &site, |ids| ids.extend(new));
        }
    }

    /// Moves every recent id into a new run of `event_ids` (one per site, in key order: written
    /// at the end of the site's key range, each page once), and every such site's watermark to
    /// its last event, in one transaction; then merges the runs of any site that has more than
    /// [`MAX_RUNS`]. Returns how many ids moved. On `Err` nothing moved (the filter may then hold
    /// a few ids it need not).
    pub(super) fn fold(&mut self, conn: &mut Connection) -> Result<usize, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut sites: Vec<&String> = self.recent.keys().collect();
        sites.sort();
        let mut moved = 0;
        let mut new_runs = Vec::with_capacity(sites.len());
        {
            // A plain INSERT: an id in both levels would be a bug, and fails the fold loudly.
            let mut insert = tx.prepare_cached(
                "INSERT INTO event_ids (site_id, run, event_id, seq) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut watermark = tx.prepare_cached(
                "INSERT INTO event_id_folds (site_id, through_seq)
                 SELECT site_id, next_seq - 1 FROM sites WHERE site_id = ?1
                 ON CONFLICT (site_id) DO UPDATE SET through_seq = excluded.through_seq",
            )?;
            for site in sites {
                let run = self.runs.get(site).copied().unwrap_or(0) + 1;
                let mut ids: Vec<(&[u8; 16], &i64)> = self.recent[site].iter().collect();
                ids.sort_unstable();
                for (id, seq) in ids {
                    // Into the filter first: it must never miss an id the table holds.
                    self.folded.insert(site, id);
                    insert.execute(params![site, run, &id[..], seq])?;
                    moved += 1;
                }
                watermark.execute([site])?;
                new_runs.push((site.clone(), run));
            }
        }
        tx.commit()?;
        self.recent.clear();
        for (site, run) in new_runs {
            self.runs.insert(site.clone(), run);
            if run > MAX_RUNS {
                // Still correct if it fails: the ids stay in their runs, and it is tried again
                // after the next fold.
                if let Err(e) = self.merge_runs(conn, &site) {
                    tracing::warn!(error = %e, %site, "could not merge event-id runs");
                }
            }
        }
        if self.folded.is_full() {
            self.folded = FoldedFilter::load_or_everything(conn);
        }
        Ok(moved)
    }

    /// Moves every id of the site's runs into run 0, in one transaction.
    fn merge_runs(&mut self, conn: &mut Connection, site: &str) -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO event_ids (site_id, run, event_id, seq)
             SELECT site_id, 0, event_id, seq FROM event_ids WHERE site_id = ?1 AND run > 0
             ORDER BY event_id",
            [site],
        )?;
        tx.execute(
            "DELETE FROM event_ids WHERE site_id = ?1 AND run > 0",
            [site],
        )?;
        tx.commit()?;
        self.runs.insert(site.to_owned(), 0);
        Ok(())
    }

    /// The seq of the site's folded event with id `id`, if any: a seek in each of its runs.
    fn folded_seq(
        &self,
        tx: &Connection,
        site: &str,
        id: &[u8; 16],
    ) -> Result<Option<i64>, StoreError> {
        let newest = self.runs.get(site).copied().unwrap_or(0);
        let mut stmt = tx.prepare_cached(
            "SELECT seq FROM event_ids WHERE site_id = ?1 AND run = ?2 AND event_id = ?3",
        )?;
        for run in (0..=newest).rev() {
            if let Some(seq) = stmt
                .query_row(params![site, run, &id[..]], |r| r.get(0))
                .optional()?
            {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }
}

/// The ids one write transaction claims, on top of the index as it was when it began.
#[derive(Debug)]
pub(super) struct Claims<'a> {
    ids: &'a EventIds,
    new: Level,
}

/// The claims of a transaction that committed, to add to the index.
#[derive(Debug, Default)]
pub(super) struct Committed(Level);

impl Claims<'_> {
    /// The seq of the site's event with id `id`, if the site has one (committed or claimed in
    /// this transaction). Reads `event_ids` in `tx` only if the filter says it may be there.
    pub(super) fn existing(
        &self,
        tx: &Connection,
        site: &str,
        id: &[u8; 16],
    ) -> Result<Option<i64>, StoreError> {
        let recent = |level: &Level| level.get(site).and_then(|ids| ids.get(id)).copied();
        if let Some(seq) = recent(&self.new).or_else(|| recent(&self.ids.recent)) {
            return Ok(Some(seq));
        }
        if !self.ids.folded.may_contain(site, id) {
            return Ok(None);
        }
        self.ids.folded_seq(tx, site, id)
    }

    /// Claims `id` for the site's event `seq`; the caller checked [`Claims::existing`] first.
    pub(super) fn claim(&mut self, site: &str, id: [u8; 16], seq: i64) {
        with_site(&mut self.new, site, |ids| {
            ids.insert(id, seq);
        });
    }

    /// For [`EventIds::committed`], once the transaction has committed.
    pub(super) fn into_committed(self) -> Committed {
        Committed(self.new)
    }
}

fn event_id(bytes: &[u8]) -> Result<[u8; 16], StoreError> {
    bytes
        .try_into()
        .map_err(|_| corrupt(format!("an event id of {} bytes", bytes.len())))
}
