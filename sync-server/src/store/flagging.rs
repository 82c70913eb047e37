//! The flags of a sync's new events, worked out at ingest the same way by both backends, with
//! the core's one function ([`patrol_core::flags::Flagger`]) under the site's configuration as
//! the request carries it ([`SyncBatch::config`]).
//!
//! A backend's write phase does, for each shift log it writes, inside the request's
//! transaction and once the site's events are serialised (SQLite: its one writer; PostgreSQL:
//! the site row's lock), so that it sees every scan committed before:
//!
//! 1. [`IngestFlags::plan`]: the log's new events with their corrected times, and what to read
//!    of the stored record for them: the guard's scans around the log's scans (one query per
//!    log, [`GuardScans`]) and, for each scan of a tag, other devices' scans of its checkpoint
//!    near its time (one query per such scan, [`TagScans`]);
//! 2. the backend runs those queries (its SQL: on SQLite, the guard's scans through
//!    `scan_hours` and the events' primary key, a tag's through the index of tag scans,
//!    migration 23; on PostgreSQL, the indexes of migration 10) and reads each row with
//!    [`read_scan_row`];
//! 3. [`LogFlags::finish`]: each event's stamp, and the stored scans its arrival flags too (a
//!    cloned tag is on both scans, whichever arrived first), which the backend updates in the
//!    same transaction.
//!
//! The flags that depend on the sync alone (clock skew) are worked out once per request; an
//! event other than a scan has only those, and their stored JSON is shared.

use std::collections::HashMap;
use std::sync::Arc;

use patrol_core::flags::{Context, Delivery, EventFlag, Flagger, SeenScan};
use patrol_core::siteconfig::SiteConfig;
use patrol_core::{CheckpointId, DeviceId, Event, EventBody, EventId, EventRecord, Location};
use patrol_core::{Scan, ScanMethod};
use serde::Deserialize;

use super::event_json::{Stamp, flags_json, with_flags};
use super::rows::corrupt;
use super::{StoreError, SyncBatch};

/// Most of a guard's stored scans one log's flags read (the latest ones of the span).
pub const MAX_GUARD_SCANS: i64 = 5_000;

/// Most of other devices' stored scans one scan's cloned-tag check reads.
pub const MAX_TAG_SCANS: i64 = 1_000;

/// The flags of one sync request's new events.
#[derive(Debug)]
pub struct IngestFlags {
    delivery: Delivery,
    config: Arc<SiteConfig>,
    /// What every event of the request is flagged with (clock skew), and its stored JSON.
    delivery_flags: Vec<EventFlag>,
    delivery_json: Option<String>,
}

impl IngestFlags {
    pub fn new(batch: &SyncBatch) -> Result<Self, StoreError> {
        let delivery = batch.delivery();
        let delivery_flags = Flagger::new(&batch.config, delivery.offset_ms)
            .delivery_flags()
            .to_vec();
        let delivery_json = flags_json(&delivery_flags)?;
        Ok(IngestFlags {
            delivery,
            config: Arc::clone(&batch.config),
            delivery_flags,
            delivery_json,
        })
    }

    fn flagger(&self) -> Flagger<'_> {
        Flagger::new(&self.config, self.delivery.offset_ms)
    }

    /// The corrected time of an event of this request.
    pub fn corrected_ms(&self, record: &EventRecord) -> i64 {
        self.delivery.corrected_ms(record)
    }

    /// What the flags of `events` (one shift log's new events, of one guard) need read from the
    /// store.
    pub fn plan<'a>(&'a self, events: &'a [Event]) -> LogFlags<'a> {
        let flagger = self.flagger();
        let corrected: Vec<i64> = events
            .iter()
            .map(|e| self.corrected_ms(&e.record))
            .collect();
        let mut guard: Option<GuardScans> = None;
        let mut tags = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let EventBody::CheckpointScanned(scan) = &event.record.body else {
                continue;
            };
            let at = corrected[i];
            let from = flagger.guard_scans_from(&event.guard, scan, at);
            match &mut guard {
                Some(g) => {
                    g.from_ms = g.from_ms.min(from);
                    g.to_ms = g.to_ms.max(at);
                }
                None => {
                    guard = Some(GuardScans {
                        guard: event.guard.to_string(),
                        from_ms: from,
                        to_ms: at,
                    })
                }
            }
            if patrol_core::flags::tag_of(scan).is_some() {
                let within = flagger.cloned_tag_within_ms();
                tags.push((
                    i,
                    TagScans {
                        checkpoint: scan.checkpoint.to_string(),
                        device: event.device.to_string(),
                        from_ms: at.saturating_sub(within),
                        to_ms: at.saturating_add(within),
                    },
                ));
            }
        }
        LogFlags {
            flags: self,
            events,
            corrected,
            guard,
            tags,
        }
    }
}

/// The guard's stored scans one log's flags need: those with a corrected time from `from_ms`
/// to `to_ms` (both included; at most [`MAX_GUARD_SCANS`], the latest), and the last one
/// before `from_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardScans {
    pub guard: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Other devices' stored scans of `checkpoint` with a corrected time from `from_ms` to `to_ms`
/// (both included; at most [`MAX_TAG_SCANS`]): scans by any device but `device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagScans {
    pub checkpoint: String,
    pub device: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The flags of one log's new events, waiting for the stored scans they need.
#[derive(Debug)]
pub struct LogFlags<'a> {
    flags: &'a IngestFlags,
    events: &'a [Event],
    corrected: Vec<i64>,
    guard: Option<GuardScans>,
    tags: Vec<(usize, TagScans)>,
}

impl LogFlags<'_> {
    /// The guard's stored scans to read, if the log has scans.
    pub fn guard_scans(&self) -> Option<&GuardScans> {
        self.guard.as_ref()
    }

    /// The other devices' stored scans to read, one query per scan of a tag, in order.
    pub fn tag_scans(&self) -> impl Iterator<Item = &TagScans> {
        self.tags.iter().map(|(_, q)| q)
    }

    /// Every new event's stamp, given what the queries read: `guard` for
    /// [`LogFlags::guard_scans`] (none if it is `None`), `tags` one list per
    /// [`LogFlags::tag_scans`] query, in order.
    pub fn finish(
        self,
        guard: Vec<StoredScan>,
        tags: Vec<Vec<StoredScan>>,
    ) -> Result<LogStamps, StoreError> {
        let flagger = self.flags.flagger();
        // The guard's scans: the log's own and the stored ones, each once, in order.
        let mut guard_scans: Vec<SeenScan> = self
            .events
            .iter()
            .zip(&self.corrected)
            .filter_map(|(e, at)| SeenScan::of(e, *at))
            .collect();
        let mut own: Vec<EventId> = guard_scans.iter().map(|s| s.event).collect();
        own.sort_unstable();
        guard_scans.extend(
            guard
                .into_iter()
                .filter(|s| own.binary_search(&s.scan.event).is_err())
                .map(|s| s.scan),
        );
        guard_scans.sort_by_key(|s| (s.corrected_ms, s.event));

        let mut others: HashMap<usize, Vec<StoredScan>> = HashMap::new();
        for ((i, _), rows) in self.tags.iter().zip(tags) {
            others.insert(*i, rows);
        }
        let mut stamps = Vec::with_capacity(self.events.len());
        let mut stored_json = Vec::with_capacity(self.events.len());
        // The stored scans this log's scans flag too, by seq: their flags as they become.
        let mut touched: HashMap<i64, (usize, &StoredScan, Vec<EventFlag>)> = HashMap::new();
        let no_rows = Vec::new();
        for (i, event) in self.events.iter().enumerate() {
            let corrected_ms = self.corrected[i];
            if !matches!(event.record.body, EventBody::CheckpointScanned(_)) {
                stamps.push(Stamp {
                    corrected_ms,
                    flags: self.flags.delivery_flags.clone(),
                });
                stored_json.push(self.flags.delivery_json.clone());
                continue;
            }
            let rows = others.get(&i).unwrap_or(&no_rows);
            let other_devices: Vec<SeenScan> = rows.iter().map(|s| s.scan.clone()).collect();
            let context = Context {
                guard_scans: &guard_scans,
                other_devices: &other_devices,
            };
            let flags = flagger.flags(event, corrected_ms, &context);
            for flag in &flags {
                let EventFlag::ClonedTag {
                    other_event,
                    apart_ms,
                    ..
                } = flag
                else {
                    continue;
                };
                let Some(stored) = rows.iter().find(|s| s.scan.event == *other_event) else {
                    continue;
                };
                let entry = touched
                    .entry(stored.seq)
                    .or_insert_with(|| (i, stored, stored.flags.clone()));
                EventFlag::add_to(
                    &mut entry.2,
                    EventFlag::ClonedTag {
                        other_device: event.device,
                        other_event: event.id,
                        apart_ms: *apart_ms,
                    },
                );
            }
            stored_json.push(flags_json(&flags)?);
            stamps.push(Stamp {
                corrected_ms,
                flags,
            });
        }
        let mut updates = Vec::with_capacity(touched.len());
        for (seq, (by, stored, flags)) in touched {
            if flags == stored.flags {
                continue;
            }
            let json = match &stored.stamped_json {
                Some(json) => Some(with_flags(json, &flags).map_err(|e| {
                    corrupt(format!("stored JSON of event {}: {e}", stored.scan.event))
                })?),
                None => None,
            };
            updates.push(NeighbourUpdate {
                by,
                seq,
                flags_json: flags_json(&flags)?.unwrap_or_else(|| "[]".to_owned()),
                json,
            });
        }
        updates.sort_by_key(|u| u.seq);
        Ok(LogStamps {
            stamps,
            flags_json: stored_json,
            updates,
        })
    }
}

/// The stamps of one log's new events, and what their arrival changes of stored events.
#[derive(Debug)]
pub struct LogStamps {
    /// One per new event, in order.
    pub stamps: Vec<Stamp>,
    /// Each stamp's flags as stored ([`Stamp::flags_json`]).
    pub flags_json: Vec<Option<String>>,
    /// Stored scans to flag too, in order of seq: write them only if the event `by` (an index
    /// of the new events) went into the feed.
    pub updates: Vec<NeighbourUpdate>,
}

/// A stored event's flags, changed by a new event's arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourUpdate {
    /// The new event (its index in the log's new events) that changes it.
    pub by: usize,
    pub seq: i64,
    /// Its whole new list, as stored.
    pub flags_json: String,
    /// Its feed JSON with the new list, for a backend that stores it ([`StoredScan`]).
    pub json: Option<String>,
}

/// A stored scan, read back for the flags of new ones.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredScan {
    pub seq: i64,
    pub scan: SeenScan,
    /// Its flags as stored.
    pub flags: Vec<EventFlag>,
    /// Its stored feed JSON, when that holds its flags (PostgreSQL's rows stamped at ingest).
    pub stamped_json: Option<String>,
}

/// One row of a scan query, as a backend reads it.
#[derive(Debug)]
pub struct ScanRow<'r> {
    pub seq: i64,
    pub event_id: &'r [u8],
    pub device_id: &'r str,
    /// Its corrected time as the feed reads it (a stored one, or for an event stored before
    /// corrected times, its device time bounded by its receipt).
    pub corrected_ms: i64,
    /// Its binary record (SQLite), if stored so.
    pub record: Option<&'r [u8]>,
    /// Its feed JSON, when it has no record.
    pub json: Option<&'r str>,
    /// Its flags column.
    pub flags: Option<&'r str>,
    /// Whether `json` holds the event's stamp (PostgreSQL rows with a corrected time): then a
    /// change of its flags rewrites it.
    pub json_stamped: bool,
}

/// The fields of a scan its feed JSON holds, for rows kept as JSON.
#[derive(Deserialize)]
struct ScanJson {
    checkpoint: CheckpointId,
    method: ScanMethod,
    location: Option<Location>,
}

/// Reads a scan query's row.
pub fn read_scan_row(row: ScanRow<'_>) -> Result<StoredScan, StoreError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(format!("scan at seq {}: {what}: {e}", row.seq))
    };
    let id = EventId(uuid::Uuid::from_slice(row.event_id).map_err(|e| bad("event id", &e))?);
    let device: DeviceId = row.device_id.parse().map_err(|e| bad("device id", &e))?;
    let scan = match (row.record, row.json) {
        (Some(record), _) => {
            match EventRecord::decode(record)
                .map_err(|e| bad("record", &e))?
                .body
            {
                EventBody::CheckpointScanned(scan) => scan,
                _ => return Err(bad("record", &"not a scan")),
            }
        }
        (None, Some(json)) => {
            let s: ScanJson = serde_json::from_str(json).map_err(|e| bad("JSON", &e))?;
            Scan {
                checkpoint: s.checkpoint,
                method: s.method,
                location: s.location,
                note: None,
            }
        }
        (None, None) => return Err(bad("row", &"neither record nor JSON")),
    };
    let flags = match row.flags {
        Some(text) => serde_json::from_str(text).map_err(|e| bad("flags", &e))?,
        None => Vec::new(),
    };
    Ok(StoredScan {
        seq: row.seq,
        scan: SeenScan::new(id, device, &scan, row.corrected_ms),
        flags,
        stamped_json: row.json.filter(|_| row.json_stamped).map(str::to_owned),
    })
}
