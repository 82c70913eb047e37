//! The alarm watcher: every `--alarm-check-secs`, each instance escalates the panic alarms that
//! nobody acknowledged within their site's `alarm_escalation_after_secs` of their receipt
//! ([`crate::store::Store::escalate_alarms`]: each once, whichever instance gets there first),
//! and announces on its own live streams the alarm changes made since its last look by other
//! instances ([`crate::store::Store::alarm_changes`]). What this instance changes itself (an
//! acknowledgement through its API, its own escalations) it announces at once
//! ([`announce_own`]), so an operator sees an acknowledgement on the stream as it is made.
//!
//! It also watches lone workers' check-in timers ([`crate::store::check_ins`]): a check-in
//! overdue is recorded once ([`crate::store::Store::record_overdue_check_ins`]) and announced
//! as `check_in_overdue` by every instance, each to its own streams, once while it stays
//! overdue.
//!
//! A client may still see a change twice (a reconnect, or the watcher reading a change between
//! its commit and its own announcement): each is keyed by its kind and alarm, so the same pair
//! twice is the same fact.

use std::collections::HashSet;
use std::sync::Arc;

use patrol_core::event::format_time_ms;
use patrol_core::{ShiftId, SiteId};

use super::alarms::{AlarmView, CheckInView};
use super::live::{AlarmAlert, Announcement};
use super::state::AppState;
use crate::now_ms;
use crate::store::check_ins::CheckInTimerView;
use crate::store::{AlarmChange, AlarmChangeKind, StoreError};

/// An overdue check-in this instance announced: its site, shift and deadline.
type Overdue = (SiteId, ShiftId, i64);

/// Changes read per request.
const CHANGES_PAGE: u32 = 500;

/// Runs the watcher of this instance (see the module docs) until the server closes its live
/// streams. A failed check is logged and tried again at the next tick.
pub async fn run(state: AppState) {
    let mut ticks = state.feed.ticks(state.config.alarm_check);
    // The last change this instance has seen; at start, the latest stored (history is not
    // announced again).
    let mut cursor = None;
    let mut overdue: HashSet<Overdue> = HashSet::new();
    while ticks.next().await {
        escalate(&state, &mut overdue).await;
        match announce_others(&state, cursor).await {
            Ok(seen) => cursor = Some(seen),
            Err(e) => tracing::warn!(error = %e, "cannot read the alarm changes"),
        }
    }
}

/// Escalates every site's overdue alarms, each site by its own rule, and its overdue
/// check-ins.
async fn escalate(state: &AppState, overdue: &mut HashSet<Overdue>) {
    let sites = match state.store.list_sites().await {
        Ok(sites) => sites,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the sites to escalate their alarms");
            return;
        }
    };
    let mut still = HashSet::new();
    for site in sites.into_iter().map(|s| s.id) {
        if let Err(e) = escalate_site(state, &site).await {
            tracing::warn!(%site, error = %e, "cannot escalate the site's alarms");
        }
        match check_ins(state, &site, overdue).await {
            Ok(now) => still.extend(now),
            // Kept as announced: a failed read is not a check-in.
            Err(e) => {
                tracing::warn!(%site, error = %e, "cannot check the site's check-in timers");
                still.extend(overdue.iter().filter(|o| o.0 == site).cloned());
            }
        }
    }
    *overdue = still;
}

/// Records and announces the site's check-ins overdue now that this instance has not
/// announced yet; returns those overdue now.
async fn check_ins(
    state: &AppState,
    site: &SiteId,
    announced: &HashSet<Overdue>,
) -> Result<Vec<Overdue>, StoreError> {
    let now = now_ms();
    for timer in state
        .store
        .record_overdue_check_ins(site.clone(), now)
        .await?
    {
        state.metrics.add_check_in_overdue();
        tracing::warn!(
            %site,
            shift = %timer.shift,
            guard = %timer.guard,
            "lone worker's check-in overdue: none reached the server by its deadline"
        );
    }
    let timers = state
        .store
        .check_in_timers(site.clone(), now)
        .await?
        .unwrap_or_default();
    let mut out = Vec::new();
    for timer in timers.into_iter().filter(|t| t.overdue) {
        let key = (site.clone(), timer.shift, timer.due_ms);
        if !announced.contains(&key) {
            state
                .feed
                .announce(Arc::new(check_in_announcement(site, &timer, now)));
        }
        out.push(key);
    }
    Ok(out)
}

fn check_in_announcement(site: &SiteId, timer: &CheckInTimerView, now: i64) -> Announcement {
    let mut data = serde_json::to_value(CheckInView::of(site, timer)).unwrap_or_default();
    data["as_of"] = format_time_ms(now).into();
    Announcement::Alarm(AlarmAlert {
        site: site.clone(),
        kind: "check_in_overdue",
        about: "checkin_missed",
        device: timer.device.to_string(),
        guard: timer.guard.clone(),
        data: data.to_string(),
    })
}

async fn escalate_site(state: &AppState, site: &SiteId) -> Result<(), StoreError> {
    let mut config = state.store.site_config(site.clone()).await?.config;
    state.config.overrides.apply(&mut config);
    let after_ms = i64::from(config.rules.alarm_escalation_after_secs) * 1000;
    for change in state
        .store
        .escalate_alarms(site.clone(), after_ms, now_ms())
        .await?
    {
        state.metrics.add_alarm_escalation();
        tracing::warn!(
            %site,
            event = %change.alarm.event,
            guard = %change.alarm.guard,
            "panic alarm escalated: nobody acknowledged it in time"
        );
        announce_own(state, change);
    }
    Ok(())
}

/// Announces the changes after `cursor` that this instance did not announce itself; returns
/// the last change seen.
async fn announce_others(state: &AppState, cursor: Option<u64>) -> Result<u64, StoreError> {
    let Some(mut cursor) = cursor else {
        return Ok(state.store.alarm_changes(None, 0).await?.1);
    };
    loop {
        let (changes, _) = state
            .store
            .alarm_changes(Some(cursor), CHANGES_PAGE)
            .await?;
        let full = changes.len() == CHANGES_PAGE as usize;
        for change in changes {
            cursor = change.id;
            if !state.feed.passed_alarm_change(change.id) {
                state.feed.announce(Arc::new(announcement(change)));
            }
        }
        if !full {
            return Ok(cursor);
        }
    }
}

/// Announces a change this instance made, on its live streams, now.
pub fn announce_own(state: &AppState, change: AlarmChange) {
    state.feed.own_alarm_change(change.id);
    state.feed.announce(Arc::new(announcement(change)));
}

fn announcement(change: AlarmChange) -> Announcement {
    let kind = match change.kind {
        AlarmChangeKind::Acknowledged => "alarm_acknowledged",
        AlarmChangeKind::Escalated => "alarm_escalated",
    };
    let device = change.alarm.device.to_string();
    let guard = change.alarm.guard.clone();
    let mut data =
        serde_json::to_value(AlarmView::from(change.alarm)).unwrap_or(serde_json::Value::Null);
    if let Some(fields) = data.as_object_mut() {
        fields.insert("site_id".into(), change.site.as_str().into());
    }
    Announcement::Alarm(AlarmAlert {
        site: change.site,
        kind,
        about: "panic",
        device,
        guard,
        data: data.to_string(),
    })
}
