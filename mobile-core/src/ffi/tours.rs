//! The site configuration the phone holds, tag scans resolved through it, and tour progress.

use patrol_core::siteconfig::{SiteConfig, WindowProgress};
use patrol_core::{EventId, Scan, ScanMethod};

use super::device::{PatrolDevice, lock};
use super::error::FfiResult;
use super::records::{FfiLocation, parse_uuid_id};
use crate::store::RecordOptions;

/// A checkpoint scanned by its NFC tag or QR code, resolved through the site configuration.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct FfiTagScanInput {
    /// The NFC tag id or QR payload as read.
    pub tag: String,
    /// True for a QR code, false for an NFC tag.
    #[uniffi(default = false)]
    pub qr: bool,
    #[uniffi(default)]
    pub location: Option<FfiLocation>,
    #[uniffi(default)]
    pub note: Option<String>,
    #[uniffi(default)]
    pub event_id: Option<String>,
    #[uniffi(default)]
    pub wall_time_ms: Option<i64>,
}

/// A recorded tag scan: the checkpoint it proved (`unknown` if no checkpoint has the tag) and
/// what looks wrong about it, by name (`patrol_core::flags::EventFlag::NAMES`: `unknown_tag`,
/// `tag_of_another_checkpoint`, `padding`, `out_of_order`, `clock_skew`...), as the server
/// would flag it from what the phone knows. A scan is never refused.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiScanResult {
    pub event_id: String,
    pub checkpoint_id: String,
    pub flags: Vec<String>,
}

/// A tour of the site configuration.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiTour {
    pub id: String,
    pub name: String,
    pub checkpoint_ids: Vec<String>,
    /// When it is walked, in words, in the site's time zone: "every 90 min 22:00-06:00, every
    /// night, grace 15 min".
    pub schedule: String,
    /// Minutes after a window's end during which a scan still counts, as late.
    pub grace_min: u32,
}

/// The site configuration the phone holds.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiSiteConfig {
    pub version: u64,
    /// The site's IANA time zone ("Europe/London"): tours' windows are shown in it.
    pub time_zone: String,
    pub checkpoint_ids: Vec<String>,
    pub tours: Vec<FfiTour>,
    /// Post orders as (title, text).
    pub post_orders: Vec<FfiPostOrder>,
}

#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiPostOrder {
    pub title: String,
    pub text: String,
}

/// One checkpoint of a tour window: `upcoming`, `due`, `late`, `done`, `done_late` or
/// `missed`; `at_ms` is the scan's device time when done.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiCheckpointProgress {
    pub checkpoint_id: String,
    pub state: String,
    pub at_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiWindowProgress {
    pub tour_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub checkpoints: Vec<FfiCheckpointProgress>,
}

impl From<WindowProgress> for FfiWindowProgress {
    fn from(w: WindowProgress) -> Self {
        FfiWindowProgress {
            tour_id: w.tour,
            start_ms: w.window.start_ms,
            end_ms: w.window.end_ms,
            checkpoints: w
                .checkpoints
                .into_iter()
                .map(|(cp, state)| FfiCheckpointProgress {
                    checkpoint_id: cp.to_string(),
                    state: state.code().into(),
                    at_ms: state.scanned_at_ms(),
                })
                .collect(),
        }
    }
}

impl From<&SiteConfig> for FfiSiteConfig {
    fn from(c: &SiteConfig) -> Self {
        FfiSiteConfig {
            version: c.version,
            time_zone: c.time_zone.name().to_owned(),
            checkpoint_ids: c.checkpoints.iter().map(|cp| cp.id.to_string()).collect(),
            tours: c
                .tours
                .iter()
                .map(|t| FfiTour {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    checkpoint_ids: t.checkpoints.iter().map(ToString::to_string).collect(),
                    schedule: t.schedule_words(),
                    grace_min: t.grace_min,
                })
                .collect(),
            post_orders: c
                .post_orders
                .iter()
                .map(|p| FfiPostOrder {
                    title: p.title.clone(),
                    text: p.text.clone(),
                })
                .collect(),
        }
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Records a scan of an NFC tag or QR code: the checkpoint comes from the site
    /// configuration; a tag it does not know is recorded all the same, and flagged.
    pub fn scan_tag(&self, input: FfiTagScanInput) -> FfiResult<FfiScanResult> {
        let options = RecordOptions {
            event_id: input
                .event_id
                .as_deref()
                .map(parse_uuid_id::<EventId>)
                .transpose()?,
            wall_ms: input.wall_time_ms,
        };
        self.record(|store| {
            let checkpoint = store.checkpoint_for_tag(&input.tag)?;
            let method = if input.qr {
                ScanMethod::Qr { payload: input.tag }
            } else {
                ScanMethod::Nfc { tag: input.tag }
            };
            let scan = Scan {
                checkpoint: checkpoint.clone(),
                method,
                location: input.location.map(Into::into),
                note: input.note,
            };
            let id = store.scan(scan, options)?;
            let flags = store.event_flags(id)?.unwrap_or_default();
            Ok((
                Some(id),
                FfiScanResult {
                    event_id: id.to_string(),
                    checkpoint_id: checkpoint.to_string(),
                    flags: flags.iter().map(|f| f.name().to_owned()).collect(),
                },
            ))
        })
    }

    /// The site configuration the phone holds (after a sync), if any.
    pub fn site_config(&self) -> FfiResult<Option<FfiSiteConfig>> {
        let store = lock(&self.store, "store")?;
        Ok(store.site_config()?.as_ref().map(FfiSiteConfig::from))
    }

    /// Which checkpoints of a tour are done, due, late or missed at `now_ms` (this phone's
    /// clock, ms since the Unix epoch): the scans the server counted at the last sync (every
    /// guard's) with this phone's own since, under its site configuration, no network needed.
    /// Times are corrected by the clock offset measured at the last sync. The windows are
    /// tonight's: those overlapping the 24 hours before and after now, the tour's schedule
    /// expanded in the site's time zone, in order of start.
    pub fn tour_progress(&self, tour_id: String, now_ms: i64) -> FfiResult<Vec<FfiWindowProgress>> {
        let store = lock(&self.store, "store")?;
        Ok(store
            .tour_progress(&tour_id, now_ms)?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_gets_the_sites_zone_and_each_tours_schedule_in_words() {
        let config: SiteConfig = serde_json::from_value(serde_json::json!({
            "site": "site-1", "version": 4, "time_zone": "Europe/London",
            "checkpoints": [{"id": "cp-1", "name": "Gate", "tags": ["t1"], "location": null,
                             "radius_m": null}],
            "tours": [{"id": "night", "name": "Night round", "checkpoints": ["cp-1"],
                       "schedule": [{"every_min": 90, "from": "22:00", "to": "06:00"}],
                       "grace_min": 15}],
            "post_orders": []
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let ffi = FfiSiteConfig::from(&config);
        assert_eq!(ffi.time_zone, "Europe/London");
        assert_eq!(
            ffi.tours[0].schedule,
            "every 90 min 22:00-06:00, every night, grace 15 min"
        );
        assert_eq!(ffi.tours[0].grace_min, 15);
    }
}
