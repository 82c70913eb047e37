//! Gaps the control room must see. A device on shift (its most recent shift not ended) that has
//! not synced for longer than its site's `no_contact_after_min` is *silent* since its last
//! sync; a shift still open longer than the site's `shift_overdue_after_hours` after its start
//! is *overdue* (the site's rules, in its configuration; the server's
//! `--no-contact-after-*` and `--shift-overdue-after-*` override them for drills and tests,
//! [`thresholds`]). The devices view marks both ([`device_gap`]); live streams announce them
//! as they happen.
//!
//! Each instance runs one watcher ([`watch`]): every `--gap-check-secs` it reads the device list
//! of each site that has a live stream open on this instance, compares it with what it saw at
//! its previous check, and announces the changes to this instance's streams
//! ([`super::live::FeedNotifier::announce`]): `device_silent` when a device crosses the
//! threshold, `device_back` when a silent device syncs again, `shift_overdue` when a shift
//! crosses its expected length. A stream also gets the silences and overdue shifts of the moment
//! when it opens, so a client that (re)connects knows the state without waiting for a change.
//!
//! Several instances sharing a PostgreSQL database each announce to their own streams only: a
//! stream is served by one instance. A client may still see one gap announced more than once
//! (a reconnect, a restarted instance, or the watcher's first check of a site racing a stream's
//! opening state): each announcement is keyed ([`GapAlert::key`]), so the same key twice is the
//! same fact, and clients drop repeats.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use patrol_core::event::format_time_ms;
use patrol_core::{DeviceId, ShiftId, SiteId};
use serde_json::json;

use super::live::Announcement;
use super::state::AppState;
use crate::config::GapThresholds;
use crate::now_ms;
use crate::store::{DeviceStatus, FeedFilter, StoreError};

/// What the devices view says of a device's gaps at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceGap {
    /// The device is on shift and has not synced since this time (its last sync), for longer
    /// than the threshold.
    pub silent_since_ms: Option<i64>,
    /// Its open shift started longer ago than the expected length.
    pub overdue: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A site's gap thresholds now: its configuration's rules, or the server's overrides.
pub async fn thresholds(state: &AppState, site: &SiteId) -> Result<GapThresholds, StoreError> {
    let config = state.store.site_config(site.clone()).await?.config;
    Ok(state.config.overrides.gaps(&config.rules))
}

/// The gaps of device `d` at `now_ms` under its site's thresholds. Only a device whose most
/// recent shift is open has any: off shift, a phone owes no contact. A shift's start is its
/// phone's clock (the `shift_started` event's device time).
pub fn device_gap(d: &DeviceStatus, config: &GapThresholds, now_ms: i64) -> DeviceGap {
    let Some(open) = d.open_shift() else {
        return DeviceGap::default();
    };
    let silent = now_ms.saturating_sub(d.last_sync_at_ms) > ms(config.no_contact_after);
    DeviceGap {
        silent_since_ms: silent.then_some(d.last_sync_at_ms),
        overdue: open
            .started_at_ms
            .is_some_and(|s| now_ms.saturating_sub(s) > ms(config.shift_overdue_after)),
    }
}

/// The kind of a gap announcement: its SSE event name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapKind {
    DeviceSilent,
    DeviceBack,
    ShiftOverdue,
}

impl GapKind {
    pub fn name(self) -> &'static str {
        match self {
            GapKind::DeviceSilent => "device_silent",
            GapKind::DeviceBack => "device_back",
            GapKind::ShiftOverdue => "shift_overdue",
        }
    }
}

/// One announcement for the live streams of its site.
#[derive(Clone, Debug, PartialEq)]
pub struct GapAlert {
    pub site: SiteId,
    pub device: DeviceId,
    /// The guard of the device's most recent shift.
    pub guard: Option<String>,
    pub kind: GapKind,
    /// The event's JSON (docs/protocol.md, "Gaps on the live stream").
    pub data: serde_json::Value,
}

impl GapAlert {
    /// What makes two announcements the same fact: `device_silent` and `device_back` by device
    /// and the last contact the silence started from; `shift_overdue` by shift.
    pub fn key(&self) -> String {
        match self.kind {
            GapKind::ShiftOverdue => format!("{}:{}", self.kind.name(), self.data["shift_id"]),
            _ => format!(
                "{}:{}:{}",
                self.kind.name(),
                self.device,
                self.data["silent_since"]
            ),
        }
    }

    /// Whether a stream with `filter` carries it: the device and guard filters apply; the
    /// others are about feed events.
    pub fn matches(&self, filter: &FeedFilter) -> bool {
        filter
            .device
            .as_ref()
            .is_none_or(|d| *d == self.device.to_string())
            && filter
                .guard
                .as_ref()
                .is_none_or(|g| self.guard.as_ref() == Some(g))
    }

    /// As a server-sent event: named after its kind, without an id (the stream's ids are feed
    /// sequence numbers, and a reconnecting client resumes from the last of those).
    pub fn sse(&self) -> SseEvent {
        SseEvent::default()
            .event(self.kind.name())
            .data(self.data.to_string())
    }
}

/// What the watcher saw of a device at a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub silent_since_ms: Option<i64>,
    pub overdue_shift: Option<ShiftId>,
}

impl Seen {
    pub fn of(d: &DeviceStatus, config: &GapThresholds, now_ms: i64) -> Seen {
        let gap = device_gap(d, config, now_ms);
        Seen {
            silent_since_ms: gap.silent_since_ms,
            overdue_shift: gap
                .overdue
                .then(|| d.open_shift().map(|s| s.shift))
                .flatten(),
        }
    }
}

/// The announcements for device `d` of `site` going from `before` to `now` (what it is at
/// `now_ms`): `device_back` for a silence that ended, `device_silent` for one that began (both
/// when the device synced and went silent again between two checks), `shift_overdue` for a
/// shift that became overdue.
pub fn changes(
    site: &SiteId,
    d: &DeviceStatus,
    before: &Seen,
    now: &Seen,
    config: &GapThresholds,
    now_ms: i64,
) -> Vec<GapAlert> {
    let guard = d.guard.as_ref().map(|g| g.to_string());
    let shift = d.latest_shift.as_ref().map(|s| s.shift.to_string());
    // Every announcement names the site, device, guard and shift; `fields` adds its own.
    let alert = |kind: GapKind, shift_id: Option<String>, fields: serde_json::Value| {
        let mut data = json!({
            "site_id": site.as_str(),
            "device_id": d.device.to_string(),
            "guard": guard,
            "shift_id": shift_id,
        });
        if let (Some(data), serde_json::Value::Object(fields)) = (data.as_object_mut(), fields) {
            data.extend(fields);
        }
        GapAlert {
            site: site.clone(),
            device: d.device,
            guard: guard.clone(),
            kind,
            data,
        }
    };
    let mut out = Vec::new();
    if let Some(since) = before.silent_since_ms
        && now.silent_since_ms != Some(since)
    {
        out.push(alert(
            GapKind::DeviceBack,
            shift.clone(),
            json!({
                "silent_since": format_time_ms(since),
                "back_at": format_time_ms(d.last_sync_at_ms),
            }),
        ));
    }
    if let Some(since) = now.silent_since_ms
        && before.silent_since_ms != Some(since)
    {
        out.push(alert(
            GapKind::DeviceSilent,
            shift.clone(),
            json!({
                "silent_since": format_time_ms(since),
                "no_contact_after_secs": config.no_contact_after.as_secs(),
                "as_of": format_time_ms(now_ms),
            }),
        ));
    }
    if let Some(overdue) = &now.overdue_shift
        && before.overdue_shift.as_ref() != Some(overdue)
    {
        let started = d.open_shift().and_then(|s| s.started_at_ms);
        out.push(alert(
            GapKind::ShiftOverdue,
            Some(overdue.to_string()),
            json!({
                "started_at": started.map(format_time_ms),
                "shift_overdue_after_secs": config.shift_overdue_after.as_secs(),
                "as_of": format_time_ms(now_ms),
            }),
        ));
    }
    out
}

/// The gaps of `devices` of `site` as they are at `now_ms`, as announcements: what a stream
/// sends when it opens.
pub fn current(
    site: &SiteId,
    devices: &[DeviceStatus],
    config: &GapThresholds,
    now_ms: i64,
) -> Vec<GapAlert> {
    devices
        .iter()
        .flat_map(|d| {
            let now = Seen::of(d, config, now_ms);
            changes(site, d, &Seen::default(), &now, config, now_ms)
        })
        .collect()
}

/// The watcher of this instance (see the module docs): runs until the server closes its live
/// streams. A failed read of a site is logged and tried again at the next check.
pub async fn watch(state: AppState) {
    let mut ticks = state.feed.ticks(state.config.gap_check);
    let mut seen: HashMap<SiteId, HashMap<DeviceId, Seen>> = HashMap::new();
    while ticks.next().await {
        let sites = state.feed.watched_sites();
        // A site nobody watches any more starts afresh when someone does.
        seen.retain(|site, _| sites.contains(site));
        for site in sites {
            let (devices, limits) = match (
                state.store.devices(site.clone()).await,
                thresholds(&state, &site).await,
            ) {
                (Ok(Some(devices)), Ok(limits)) => (devices, limits),
                (Ok(None), _) => continue,
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(%site, error = %e, "cannot read the devices to check for gaps");
                    continue;
                }
            };
            let now_ms = now_ms();
            let site_seen = seen.entry(site.clone()).or_default();
            for d in &devices {
                let now = Seen::of(d, &limits, now_ms);
                let before = site_seen.get(&d.device).cloned().unwrap_or_default();
                for alert in changes(&site, d, &before, &now, &limits, now_ms) {
                    tracing::info!(
                        %site, device = %d.device, event = alert.kind.name(),
                        "announcing a gap on the live streams"
                    );
                    state.feed.announce(Arc::new(Announcement::Gap(alert)));
                }
                site_seen.insert(d.device, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleOverrides;
    use crate::store::LatestShift;
    use patrol_core::siteconfig::SiteRules;

    /// The default rules' thresholds: 30 minutes, 12 hours.
    fn defaults() -> GapThresholds {
        RuleOverrides::default().gaps(&SiteRules::default())
    }

    const MIN: i64 = 60_000;

    fn device(last_sync: i64, started: Option<i64>, ended: Option<i64>) -> DeviceStatus {
        DeviceStatus {
            device: DeviceId::generate(),
            first_seen_ms: 0,
            last_sync_at_ms: last_sync,
            pending_events: 0,
            clock_skew_ms: 0,
            guard: patrol_core::GuardId::new("anna").ok(),
            latest_shift: Some(LatestShift {
                shift: ShiftId::generate(),
                started_at_ms: started,
                ended_at_ms: ended,
            }),
        }
    }

    /// 30 minutes and 12 hours by default: a device on shift 31 minutes without contact is
    /// silent since its last sync, 29 minutes is not; off shift it never is; a shift open 13
    /// hours is overdue, 11 hours is not.
    #[test]
    fn silence_and_overdue_need_an_open_shift_past_the_thresholds() {
        let config = defaults();
        let now = 1_000 * 60 * MIN;
        let on = device(now - 31 * MIN, Some(now - 60 * MIN), None);
        assert_eq!(
            device_gap(&on, &config, now),
            DeviceGap {
                silent_since_ms: Some(now - 31 * MIN),
                overdue: false
            }
        );
        let recent = device(now - 29 * MIN, Some(now - 13 * 60 * MIN), None);
        assert_eq!(
            device_gap(&recent, &config, now),
            DeviceGap {
                silent_since_ms: None,
                overdue: true
            }
        );
        let off = device(
            now - 300 * MIN,
            Some(now - 20 * 60 * MIN),
            Some(now - 300 * MIN),
        );
        assert_eq!(device_gap(&off, &config, now), DeviceGap::default());
        let mut never = device(now - 300 * MIN, None, None);
        never.latest_shift = None;
        assert_eq!(device_gap(&never, &config, now), DeviceGap::default());
    }

    /// A silence is announced once when it starts and once when it ends; a device that synced
    /// and went silent again between two checks gets both, under different keys.
    #[test]
    fn a_silence_is_announced_when_it_starts_and_ends() -> Result<(), Box<dyn std::error::Error>> {
        let config = defaults();
        let site = SiteId::new("site-1")?;
        let now = 1_000 * 60 * MIN;
        let mut d = device(now - 31 * MIN, Some(now - 60 * MIN), None);
        let silent = Seen::of(&d, &config, now);
        let kinds = |alerts: Vec<GapAlert>| alerts.iter().map(|a| a.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(changes(&site, &d, &Seen::default(), &silent, &config, now)),
            vec![GapKind::DeviceSilent]
        );
        assert!(changes(&site, &d, &silent, &silent, &config, now).is_empty());
        d.last_sync_at_ms = now;
        let back = Seen::of(&d, &config, now);
        let alerts = changes(&site, &d, &silent, &back, &config, now);
        assert_eq!(kinds(alerts.clone()), vec![GapKind::DeviceBack]);
        assert_eq!(alerts[0].data["back_at"], format_time_ms(now));
        d.last_sync_at_ms = now - 40 * MIN;
        let again = Seen::of(&d, &config, now);
        let alerts = changes(&site, &d, &silent, &again, &config, now);
        assert_eq!(
            kinds(alerts.clone()),
            vec![GapKind::DeviceBack, GapKind::DeviceSilent]
        );
        assert_ne!(alerts[0].key(), alerts[1].key());
        Ok(())
    }

    /// A stream filtered by device or guard carries only that device's or guard's gaps.
    #[test]
    fn the_device_and_guard_filters_apply_to_gaps() -> Result<(), Box<dyn std::error::Error>> {
        let config = defaults();
        let site = SiteId::new("site-1")?;
        let now = 1_000 * 60 * MIN;
        let d = device(now - 31 * MIN, Some(now - 60 * MIN), None);
        let alerts = current(&site, std::slice::from_ref(&d), &config, now);
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert!(alert.matches(&FeedFilter::default()));
        assert!(alert.matches(&FeedFilter {
            guard: Some("anna".into()),
            device: Some(d.device.to_string()),
            kind: Some("panic".into()),
            ..FeedFilter::default()
        }));
        assert!(!alert.matches(&FeedFilter {
            guard: Some("bob".into()),
            ..FeedFilter::default()
        }));
        assert!(!alert.matches(&FeedFilter {
            device: Some(DeviceId::generate().to_string()),
            ..FeedFilter::default()
        }));
        Ok(())
    }
}
