//! The stored scans a new scan's flags read ([`crate::store::flagging`]), kept in the writer
//! thread's memory by the embedded store instead of in two indexes on `events` (a guard's scans
//! by time, a checkpoint's scans by time; migration 14, dropped by 18). Those indexes took an
//! entry at a random place per scan, twice, and were a quarter of W1's write time
//! (`docs/benchmarks.md`); the writer is the only one that writes events, so it can keep them.
//!
//! For each site the window holds every stored scan whose corrected time is at or after its
//! `from_ms`: loaded when the site's first log is flagged (the [`KEEP_MS`] up to the site's
//! newest scan, read through `event_hours` and the table's primary key; a site without events
//! holds all of them from the start), kept as logs are written, and trimmed to the [`KEEP_MS`]
//! up to the newest scan and at most [`MAX_SCANS_PER_SITE`] scans. The window follows the
//! site's newest scans rather than the clock, so a site whose record is replayed or imported is
//! served the same. A read that reaches before `from_ms` (a log delivered more than a day after
//! the newest scans) reads the table instead, through `event_hours`: slower, the same answer.
//!
//! The window changes inside the write transaction, so that a request sees the scans of the
//! requests before it in the same group commit. A transaction that does not commit (an error,
//! a panic) leaves the window open, and the next one starts from an empty window, loaded again
//! from what the table holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use patrol_core::flags::{EventFlag, SeenScan};
use patrol_core::{DeviceId, Event};
use rusqlite::{Connection, params};

use super::feed::{EVENT_HOURS_SQL, corrected_ms};
use crate::store::StoreError;
use crate::store::event_hours;
use crate::store::flagging::{GuardScans, MAX_TAG_SCANS, StoredScan, TagScans};

/// How far back from the site's newest scan the window keeps its scans: beyond the longest span
/// a log's flags read (a tour window's length, [`crate::store::flagging::PREVIOUS_SCAN_WITHIN_MS`]).
pub(super) const KEEP_MS: i64 = 24 * 3_600_000;

/// Most scans the window keeps of one site (about 30 MB); the oldest go first.
pub(super) const MAX_SCANS_PER_SITE: usize = 100_000;

/// A scan's place in time: (corrected ms, seq).
type Key = (i64, i64);

/// A scan the window holds, under its key.
#[derive(Debug)]
struct Held {
    guard: Arc<str>,
    scan: SeenScan,
    flags: Vec<EventFlag>,
}

/// One site's scans from `from_ms` on: in order of time, and their keys by guard and by
/// checkpoint. (B-trees rather than hash maps of scans: no table twice the size as it grows.)
#[derive(Debug)]
struct SiteScans {
    from_ms: i64,
    /// The latest corrected time of a scan the window took.
    newest_ms: i64,
    by_time: BTreeMap<Key, Held>,
    by_guard: HashMap<Arc<str>, BTreeSet<Key>>,
    by_checkpoint: HashMap<String, BTreeSet<Key>>,
}

impl SiteScans {
    fn new(from_ms: i64) -> Self {
        SiteScans {
            from_ms,
            newest_ms: from_ms,
            by_time: BTreeMap::new(),
            by_guard: HashMap::new(),
            by_checkpoint: HashMap::new(),
        }
    }

    fn add(&mut self, guard: &str, scan: StoredScan) {
        let StoredScan {
            seq, scan, flags, ..
        } = scan;
        if scan.corrected_ms < self.from_ms {
            return;
        }
        let key = (scan.corrected_ms, seq);
        self.newest_ms = self.newest_ms.max(key.0);
        let guard = match self.by_guard.get_key_value(guard) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(guard),
        };
        self.by_guard
            .entry(Arc::clone(&guard))
            .or_default()
            .insert(key);
        match self.by_checkpoint.get_mut(scan.checkpoint.as_str()) {
            Some(keys) => {
                keys.insert(key);
            }
            None => {
                self.by_checkpoint
                    .insert(scan.checkpoint.to_string(), BTreeSet::from([key]));
            }
        }
        self.by_time.insert(key, Held { guard, scan, flags });
    }

    /// Forgets the scans before `from_ms`, and the oldest beyond `max_scans`.
    fn trim(&mut self, mut from_ms: i64, max_scans: usize) {
        if self.by_time.len() > max_scans {
            // A quarter below the cap, so that trimming is not done on every write; every scan
            // of the last millisecond dropped goes too, so that the window stays whole from
            // `from_ms` on.
            let drop = self.by_time.len() - max_scans * 3 / 4;
            if let Some(((at, _), _)) = self.by_time.iter().nth(drop - 1) {
                from_ms = from_ms.max(at.saturating_add(1));
            }
        }
        if from_ms <= self.from_ms {
            return;
        }
        self.from_ms = from_ms;
        let kept = self.by_time.split_off(&(from_ms, i64::MIN));
        for (key, held) in std::mem::replace(&mut self.by_time, kept) {
            remove_key(&mut self.by_guard, &held.guard, key);
            remove_key(&mut self.by_checkpoint, held.scan.checkpoint.as_str(), key);
        }
    }

    /// The scans under `keys` from `from_ms` to `to_ms`, those `keep` keeps, as the flags read
    /// them.
    fn scans_of<'a>(
        &'a self,
        keys: Option<&'a BTreeSet<Key>>,
        from_ms: i64,
        to_ms: i64,
        keep: impl Fn(&SeenScan) -> bool + 'a,
    ) -> impl Iterator<Item = StoredScan> + 'a {
        keys.into_iter()
            .flat_map(move |keys| keys.range((from_ms, i64::MIN)..=(to_ms, i64::MAX)))
            .filter_map(|key| Some((key, self.by_time.get(key)?)))
            .filter(move |(_, held)| keep(&held.scan))
            .map(|(key, held)| stored(*key, held))
    }
}

/// A held scan as the flags read it.
fn stored((_, seq): Key, held: &Held) -> StoredScan {
    StoredScan {
        seq,
        scan: held.scan.clone(),
        flags: held.flags.clone(),
        stamped_json: None,
    }
}

fn remove_key<K: std::borrow::Borrow<str> + std::hash::Hash + Eq>(
    index: &mut HashMap<K, BTreeSet<Key>>,
    name: &str,
    key: Key,
) {
    if let Some(keys) = index.get_mut(name) {
        keys.remove(&key);
        if keys.is_empty() {
            index.remove(name);
        }
    }
}

/// Every site's window; owned by the writer thread.
#[derive(Debug, Default)]
pub(super) struct ScanWindow {
    sites: HashMap<String, SiteScans>,
    /// Set while a write transaction may have changed the window.
    open: bool,
}

impl ScanWindow {
    /// Before a write transaction: a window left open by one that did not commit is dropped.
    pub(super) fn begin(&mut self) {
        if self.open {
            self.sites.clear();
        }
        self.open = true;
    }

    /// After the transaction committed: the window keeps what it wrote, trimmed.
    pub(super) fn committed(&mut self) {
        self.open = false;
        for site in self.sites.values_mut() {
            site.trim(site.newest_ms.saturating_sub(KEEP_MS), MAX_SCANS_PER_SITE);
        }
    }

    /// After the transaction failed: what it changed is gone with it.
    pub(super) fn rolled_back(&mut self) {
        self.sites.clear();
        self.open = false;
    }

    /// How many scans the window holds of `site`, if it holds the site.
    #[cfg(test)]
    pub(super) fn len(&self, site: &str) -> Option<usize> {
        self.sites.get(site).map(|s| s.by_time.len())
    }

    /// The site's window, loaded from the table if it is not held yet.
    fn site(&mut self, tx: &Connection, site: &str) -> Result<&mut SiteScans, StoreError> {
        if !self.sites.contains_key(site) {
            // The end of the newest hour any event is in; no event, no start.
            let newest: Option<i64> = tx
                .prepare_cached("SELECT MAX(hour_ms) FROM event_hours WHERE site_id = ?1")?
                .query_row([site], |r| r.get(0))?;
            let from_ms = match newest {
                Some(hour) => hour.saturating_add(event_hours::HOUR_MS - KEEP_MS),
                None => i64::MIN,
            };
            let mut scans = SiteScans::new(from_ms);
            if newest.is_some() {
                for (guard, scan) in read_scans(tx, site, (from_ms, i64::MAX), Only::All)? {
                    scans.add(&guard, scan);
                }
            }
            self.sites.insert(site.to_owned(), scans);
        }
        self.sites
            .get_mut(site)
            .ok_or_else(|| StoreError::CorruptData(format!("scan window of {site}")))
    }

    /// What [`GuardScans`] asks of the site's stored scans.
    pub(super) fn guard_scans(
        &mut self,
        tx: &Connection,
        site: &str,
        query: &GuardScans,
    ) -> Result<Vec<StoredScan>, StoreError> {
        let guard = Only::Guard(&query.guard);
        let held = self.site(tx, site)?;
        if query.from_ms < held.from_ms {
            let scans = read_scans(tx, site, (query.previous_from_ms, query.to_ms), guard)?;
            return Ok(query.pick(scans.into_iter().map(|(_, scan)| scan).collect()));
        }
        let keys = held.by_guard.get(query.guard.as_str());
        let mut scans: Vec<StoredScan> = Vec::new();
        // The guard's last scan before the span: the window's, if it holds one (then no scan
        // between it and the span is missing), else from the table if the window does not
        // reach back far enough to say there is none.
        let previous = keys
            .and_then(|keys| keys.range(..(query.from_ms, i64::MIN)).next_back())
            .filter(|(at, _)| *at >= query.previous_from_ms)
            .and_then(|key| Some(stored(*key, held.by_time.get(key)?)));
        match previous {
            Some(previous) => scans.push(previous),
            None if query.previous_from_ms < held.from_ms => {
                let before = (query.previous_from_ms, held.from_ms.saturating_sub(1));
                let earlier = read_scans(tx, site, before, guard)?;
                scans.extend(earlier.into_iter().next_back().map(|(_, scan)| scan));
            }
            None => {}
        }
        scans.extend(held.scans_of(keys, query.from_ms, query.to_ms, |_| true));
        Ok(query.pick(scans))
    }

    /// What [`TagScans`] asks of the site's stored scans.
    pub(super) fn tag_scans(
        &mut self,
        tx: &Connection,
        site: &str,
        query: &TagScans,
    ) -> Result<Vec<StoredScan>, StoreError> {
        let held = self.site(tx, site)?;
        let device: Option<DeviceId> = query.device.parse().ok();
        let others = move |s: &SeenScan| Some(s.device) != device;
        let scans: Vec<StoredScan> = if query.from_ms >= held.from_ms {
            held.scans_of(
                held.by_checkpoint.get(&query.checkpoint),
                query.from_ms,
                query.to_ms,
                others,
            )
            .take(MAX_TAG_SCANS as usize)
            .collect()
        } else {
            read_scans(
                tx,
                site,
                (query.from_ms, query.to_ms),
                Only::Checkpoint(&query.checkpoint),
            )?
            .into_iter()
            .map(|(_, scan)| scan)
            .filter(|s| others(&s.scan))
            .take(MAX_TAG_SCANS as usize)
            .collect()
        };
        Ok(scans)
    }

    /// A scan just written, with its flags, if the site's window is held.
    pub(super) fn add(
        &mut self,
        site: &str,
        seq: i64,
        event: &Event,
        corrected_ms: i64,
        flags: &[EventFlag],
    ) {
        let (Some(held), Some(scan)) =
            (self.sites.get_mut(site), SeenScan::of(event, corrected_ms))
        else {
            return;
        };
        held.add(
            event.guard.as_str(),
            StoredScan {
                seq,
                scan,
                flags: flags.to_vec(),
                stamped_json: None,
            },
        );
    }

    /// A stored scan's flags (under its (corrected time, seq)), changed by a new scan's arrival.
    pub(super) fn set_flags(&mut self, site: &str, key: Key, flags: &[EventFlag]) {
        if let Some(held) = self
            .sites
            .get_mut(site)
            .and_then(|s| s.by_time.get_mut(&key))
        {
            held.flags = flags.to_vec();
        }
    }
}

/// Which scans [`read_scans`] keeps.
#[derive(Clone, Copy, Debug)]
enum Only<'a> {
    All,
    Guard(&'a str),
    Checkpoint(&'a str),
}

/// The site's stored scans with a corrected time in `[from_ms, to_ms]`, with their guard, in
/// order of (corrected time, seq): through `event_hours` and the primary key.
fn read_scans(
    tx: &Connection,
    site: &str,
    (from_ms, to_ms): (i64, i64),
    only: Only<'_>,
) -> Result<Vec<(String, StoredScan)>, StoreError> {
    let (first_hour, _) = event_hours::hours_of(from_ms, to_ms);
    let end = to_ms.saturating_add(1);
    let rows: Vec<(i64, i64)> = tx
        .prepare_cached(EVENT_HOURS_SQL)?
        .query_map(params![site, first_hour, end], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let (guard, checkpoint) = match only {
        Only::All => (None, None),
        Only::Guard(g) => (Some(g), None),
        Only::Checkpoint(c) => (None, Some(c)),
    };
    let mut stmt = tx.prepare_cached(&scans_sql())?;
    let mut out = Vec::new();
    for (first, last) in event_hours::ranges(rows, None) {
        let mut rows = stmt.query(params![
            site, first, last, from_ms, to_ms, guard, checkpoint
        ])?;
        while let Some(row) = rows.next()? {
            let guard: String = row.get(7)?;
            out.push((guard, super::sync::scan_row(row)?));
        }
    }
    out.sort_by_key(|(_, s)| (s.scan.corrected_ms, s.seq));
    Ok(out)
}

/// The scans of one seq range: ?1 site, ?2 and ?3 the range, ?4 and ?5 the span of corrected
/// time, ?6 a guard or NULL, ?7 a checkpoint or NULL.
fn scans_sql() -> String {
    format!(
        "SELECT {}, guard_id FROM events
         WHERE site_id = ?1 AND seq BETWEEN ?2 AND ?3 AND kind = 'checkpoint_scanned'
           AND {} BETWEEN ?4 AND ?5
           AND (?6 IS NULL OR guard_id = ?6) AND (?7 IS NULL OR checkpoint_id = ?7)",
        super::sync::scan_columns(),
        corrected_ms()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use patrol_core::{CheckpointId, EventId};

    fn scan(seq: i64, at: i64, checkpoint: &str) -> StoredScan {
        StoredScan {
            seq,
            scan: SeenScan {
                event: EventId(uuid::Uuid::from_u128(seq as u128)),
                device: DeviceId(uuid::Uuid::from_u128(7)),
                checkpoint: CheckpointId::new(checkpoint).unwrap_or_else(|e| panic!("{e}")),
                tag: None,
                fix: None,
                corrected_ms: at,
            },
            flags: Vec::new(),
            stamped_json: None,
        }
    }

    fn seqs(site: &SiteScans, keys: Option<&BTreeSet<Key>>) -> Vec<i64> {
        site.scans_of(keys, i64::MIN, i64::MAX, |_| true)
            .map(|s| s.seq)
            .collect()
    }

    /// Trimmed by time or by count, the window forgets whole milliseconds from the oldest on,
    /// from every index at once, and keeps what it holds whole from its new `from_ms`.
    #[test]
    fn trimming_keeps_the_window_whole_from_its_start() {
        let mut site = SiteScans::new(100);
        site.add("anna", scan(1, 99, "cp-1")); // before the window: not kept
        for (seq, at) in [(2, 100), (3, 110), (4, 110), (5, 120), (6, 130), (7, 140)] {
            let guard = if seq % 2 == 0 { "anna" } else { "bob" };
            site.add(guard, scan(seq, at, "cp-1"));
        }
        assert_eq!(
            seqs(&site, site.by_checkpoint.get("cp-1")),
            [2, 3, 4, 5, 6, 7]
        );

        site.trim(105, 100);
        assert_eq!(site.from_ms, 105);
        assert_eq!(seqs(&site, site.by_guard.get("anna")), [4, 6]);
        assert_eq!(seqs(&site, site.by_guard.get("bob")), [3, 5, 7]);

        // Five held, at most four: trimmed to a quarter below, oldest first.
        site.trim(0, 4);
        assert_eq!(site.from_ms, 111);
        assert_eq!(seqs(&site, site.by_checkpoint.get("cp-1")), [5, 6, 7]);
        assert_eq!(site.by_time.len(), 3);
        let guards: usize = site.by_guard.values().map(BTreeSet::len).sum();
        assert_eq!(guards, 3);

        // A trim to an earlier time changes nothing.
        site.trim(50, 100);
        assert_eq!(site.from_ms, 111);
    }

    /// A transaction that did not commit leaves nothing of what it added.
    #[test]
    fn a_transaction_that_did_not_commit_empties_the_window() {
        let mut window = ScanWindow::default();
        window.begin();
        window.sites.insert("s".into(), SiteScans::new(0));
        window.committed();
        assert_eq!(window.len("s"), Some(0));

        window.begin();
        // ... a panic here: the next transaction finds the window open.
        window.begin();
        assert_eq!(window.len("s"), None);

        window.sites.insert("s".into(), SiteScans::new(0));
        window.rolled_back();
        assert_eq!(window.len("s"), None);
    }
}
