//! The live control-room feed: wake-ups when a site gets new events, and the server-sent-events
//! stream built on them. A stream resumes from a cursor (`after`, or the `Last-Event-ID` its
//! client sends on reconnect): every event has the site's sequence number as its SSE id, so a
//! reconnecting client misses nothing and sees nothing twice. A stream wakes both for this
//! instance's syncs and for commits the store reports ([`Store::subscribe`]), which on
//! PostgreSQL include those made through other instances.
//!
//! A stream is as good as the token (or sign-in session) that opened it, for as long as it is
//! open: it checks its user again every `--stream-recheck-secs`, when its token's or session's
//! time runs out (each check is a use of a session, so an open console stays signed in), and at once when a
//! user's token is revoked or rotated through this instance ([`FeedNotifier::credentials_changed`];
//! other instances sharing a PostgreSQL database learn at their next periodic check). A stream
//! whose user may no longer read its site sends a last `closed` event saying why, and ends. A
//! user has at most `--max-streams-per-user` streams open on an instance ([`StreamSlot`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use patrol_core::SiteId;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::auth::{Session, session_again};
use super::error::AppError;
use super::gaps::{self, GapAlert};
use super::state::AppState;
use crate::now_ms;
use crate::store::{FeedFilter, Store};

/// Events sent per store read while a stream catches up.
const STREAM_PAGE: u32 = 1_000;

/// Per-site wake-ups for live streams, and the signal that the server is closing (streams
/// never end on their own, so a graceful shutdown must end them).
#[derive(Debug)]
pub struct FeedNotifier {
    sites: Mutex<HashMap<SiteId, watch::Sender<u64>>>,
    closing: watch::Sender<bool>,
    /// Bumped when a credential is revoked or rotated through this instance.
    credentials: watch::Sender<u64>,
    /// Open streams per user id.
    open: Arc<Mutex<HashMap<String, usize>>>,
    /// Announcements ([`Announcement`]) for every site; each stream keeps its own site's.
    alerts: broadcast::Sender<Arc<Announcement>>,
    /// Alarm changes this instance announced as it made them, which its alarm watcher then
    /// passes over ([`super::alarm_watch`]).
    own_alarm_changes: Mutex<BTreeSet<u64>>,
}

/// Announcements a stream may hold unread before it lags (and loses the oldest).
const ALERT_CAPACITY: usize = 1_024;

/// What live streams carry beside the feed's events, each a server-sent event named after its
/// kind, without an id (the stream's ids are feed sequence numbers, and a reconnecting client
/// resumes from the last of those): devices gone silent or back and shifts overdue
/// ([`super::gaps`]), tour windows that changed, turned final or were amended
/// ([`super::finaliser`]), and panic alarms acknowledged or escalated
/// ([`super::alarm_watch`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Announcement {
    Gap(GapAlert),
    Window(WindowAlert),
    Alarm(AlarmAlert),
}

/// A panic alarm's change on a site, or a lone worker's check-in overdue: its SSE event name
/// (`alarm_acknowledged`, `alarm_escalated`, `check_in_overdue`) and its JSON (docs/protocol.md,
/// "Alarms on the live stream").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmAlert {
    pub site: SiteId,
    pub kind: &'static str,
    /// The kind of feed event it is about (`panic`, `checkin_missed`), for the kind filter.
    pub about: &'static str,
    pub device: String,
    pub guard: String,
    pub data: String,
}

/// A tour window's change on a site: its SSE event name (`window_changed`, `window_final`,
/// `window_amended`) and its JSON (docs/protocol.md, "Tour windows on the live stream").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowAlert {
    pub site: SiteId,
    pub kind: String,
    pub data: String,
}

impl Announcement {
    fn site(&self) -> &SiteId {
        match self {
            Announcement::Gap(gap) => &gap.site,
            Announcement::Window(window) => &window.site,
            Announcement::Alarm(alarm) => &alarm.site,
        }
    }

    /// Whether a stream with `filter` carries it: a gap, if the stream's device and guard
    /// filters match it; a window change, if the stream is not filtered to some devices,
    /// guards, kinds of event, checkpoints or flags (a window is about none of these alone);
    /// an alarm's change, if the device and guard filters match its panic or check-in, the kind
    /// filter (if any) is `panic` or `checkin_missed` as it concerns, and the stream is not
    /// filtered to checkpoints or flags.
    pub fn matches(&self, filter: &FeedFilter) -> bool {
        match self {
            Announcement::Gap(gap) => gap.matches(filter),
            Announcement::Alarm(alarm) => {
                filter.device.as_ref().is_none_or(|d| *d == alarm.device)
                    && filter.guard.as_ref().is_none_or(|g| *g == alarm.guard)
                    && filter.kind.as_ref().is_none_or(|k| k == alarm.about)
                    && filter.checkpoint.is_none()
                    && filter.flag.is_none()
            }
            Announcement::Window(_) => {
                filter.device.is_none()
                    && filter.guard.is_none()
                    && filter.kind.is_none()
                    && filter.checkpoint.is_none()
                    && filter.flag.is_none()
            }
        }
    }

    pub fn sse(&self) -> SseEvent {
        match self {
            Announcement::Gap(gap) => gap.sse(),
            Announcement::Window(window) => SseEvent::default()
                .event(window.kind.as_str())
                .data(window.data.as_str()),
            Announcement::Alarm(alarm) => SseEvent::default()
                .event(alarm.kind)
                .data(alarm.data.as_str()),
        }
    }
}

impl Default for FeedNotifier {
    fn default() -> Self {
        FeedNotifier {
            sites: Mutex::new(HashMap::new()),
            closing: watch::Sender::new(false),
            credentials: watch::Sender::new(0),
            open: Arc::new(Mutex::new(HashMap::new())),
            alerts: broadcast::channel(ALERT_CAPACITY).0,
            own_alarm_changes: Mutex::new(BTreeSet::new()),
        }
    }
}

/// One of a user's places for an open stream; freed when dropped (with the stream).
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl FeedNotifier {
    fn sender(&self, site: &SiteId) -> watch::Sender<u64> {
        // A poisoned map only means a panic while inserting; the map itself is intact.
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites
            .entry(site.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .clone()
    }

    /// Wakes the streams of `site`: it has new events.
    pub fn bump(&self, site: &SiteId) {
        self.sender(site).send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self, site: &SiteId) -> watch::Receiver<u64> {
        self.sender(site).subscribe()
    }

    /// Ends every stream (graceful shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub(super) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ticks every `period` (the first at once) for a periodic task of this instance, until
    /// the server closes its live streams.
    pub(super) fn ticks(&self, period: Duration) -> Ticks {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks {
            closing: self.closing(),
            tick,
        }
    }

    /// The sites with a live stream open on this instance.
    pub fn watched_sites(&self) -> Vec<SiteId> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(site, _)| site.clone())
            .collect()
    }

    /// Sends an announcement to the open streams of its site.
    pub fn announce(&self, alert: Arc<Announcement>) {
        // No stream open is not an error: nobody is listening.
        let _ = self.alerts.send(alert);
    }

    /// Notes an alarm change this instance announced as it made it.
    pub(super) fn own_alarm_change(&self, id: u64) {
        let mut own = self
            .own_alarm_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        own.insert(id);
    }

    /// Whether this instance announced alarm change `id` already; forgets every id up to it
    /// (the alarm watcher reads changes in order).
    pub(super) fn passed_alarm_change(&self, id: u64) -> bool {
        let mut own = self
            .own_alarm_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let was = own.contains(&id);
        *own = own.split_off(&(id + 1));
        was
    }

    /// Makes every open stream check its user again now: a credential was revoked or rotated.
    pub fn credentials_changed(&self) {
        self.credentials.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A place for one more stream of `user` (by id), unless it has `max` open already.
    pub fn open_stream(&self, user: &str, max: usize) -> Result<StreamSlot, AppError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user.to_owned()).or_insert(0);
        if *n >= max {
            return Err(AppError::TooManyStreams { max });
        }
        *n += 1;
        Ok(StreamSlot {
            open: Arc::clone(&self.open),
            user: user.to_owned(),
        })
    }
}

/// A periodic task's ticks ([`FeedNotifier::ticks`]).
pub(super) struct Ticks {
    closing: watch::Receiver<bool>,
    tick: tokio::time::Interval,
}

impl Ticks {
    /// Waits for the next tick; `false` once the server is closing (the task ends then).
    pub(super) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => {}
            changed = self.closing.changed() => if changed.is_err() { return false; },
        }
        !*self.closing.borrow()
    }
}

/// What keeps a stream authorised: the token that opened it, checked again over time.
struct Authorization {
    state: AppState,
    session: Session,
    site: SiteId,
    /// Bumped by [`FeedNotifier::credentials_changed`].
    changed: watch::Receiver<u64>,
    next_check: Instant,
    /// A change was seen (awaiting `changed` marks it seen): check at the next turn.
    notified: bool,
    _slot: StreamSlot,
}

impl Authorization {
    /// When to check next: after the re-check interval, or when the token's time runs out if
    /// that is sooner.
    fn schedule(&mut self) {
        let left = u64::try_from(self.session.expires_at_ms.saturating_sub(now_ms())).unwrap_or(0);
        let wait = self
            .state
            .config
            .stream_recheck
            .min(Duration::from_millis(left));
        self.next_check = Instant::now() + wait;
    }

    fn due(&mut self) -> bool {
        self.notified
            || Instant::now() >= self.next_check
            || self.changed.has_changed().unwrap_or(false)
    }

    /// Checks the token and the user's scope again; the error that ends the stream, if any.
    async fn check(&mut self) -> Result<(), AppError> {
        self.changed.borrow_and_update();
        self.notified = false;
        let session = session_again(&self.state, &self.session).await?;
        if !session.user.can_read(&self.site) {
            return Err(AppError::Forbidden(format!(
                "user {} may no longer read site {}",
                session.user.name, self.site
            )));
        }
        self.session = session;
        self.schedule();
        Ok(())
    }
}

/// The last event of a stream its user may no longer read: the error, as the API gives it.
fn closed_event(e: &AppError) -> SseEvent {
    let body = serde_json::json!({ "error": e.code(), "message": e.client_message() });
    SseEvent::default().event("closed").data(body.to_string())
}

struct StreamState {
    store: Arc<dyn Store>,
    notifier: Arc<FeedNotifier>,
    wake: watch::Receiver<u64>,
    /// The store's wake-ups: commits through any instance sharing the database.
    committed: broadcast::Receiver<u64>,
    closing: watch::Receiver<bool>,
    site: SiteId,
    filter: FeedFilter,
    after: u64,
    ready: VecDeque<(u64, String)>,
    /// Announcements of the site ([`Announcement`]), and those ready to send.
    alerts: broadcast::Receiver<Arc<Announcement>>,
    ready_alerts: VecDeque<SseEvent>,
    /// The site's gaps as they are when the stream opens are still to be sent.
    gaps_due: bool,
    auth: Authorization,
    /// Set once the stream sent its `closed` event: it ends next.
    ended: bool,
}

/// The live stream of `site`'s events after `after` that match `filter`, for the user of
/// `session` (who may read the site, and holds `slot`): first what is stored, then each new
/// event as it is committed. Ends on shutdown or a storage error (the client reconnects with its
/// `Last-Event-ID`), and with a `closed` event once the user may no longer read the site.
pub fn stream(
    state: AppState,
    session: Session,
    slot: StreamSlot,
    site: SiteId,
    filter: FeedFilter,
    after: u64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    let store = Arc::clone(&state.store);
    let notifier = Arc::clone(&state.feed);
    let mut auth = Authorization {
        state,
        session,
        site: site.clone(),
        changed: notifier.credentials.subscribe(),
        next_check: Instant::now(),
        notified: false,
        _slot: slot,
    };
    auth.schedule();
    let state = StreamState {
        wake: notifier.subscribe(&site),
        // Subscribed before the first read, so a commit after that read still wakes the stream.
        committed: store.subscribe(site.clone()),
        // Subscribed before the opening state is read, so a change after that read is sent.
        alerts: notifier.alerts.subscribe(),
        ready_alerts: VecDeque::new(),
        gaps_due: true,
        closing: notifier.closing(),
        store,
        notifier,
        site,
        filter,
        after,
        ready: VecDeque::new(),
        auth,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if *s.closing.borrow() || s.ended {
                return None;
            }
            // Checked before every event, so a busy site's stream is no exception.
            if s.auth.due()
                && let Err(e) = s.auth.check().await
            {
                tracing::info!(
                    site = %s.site, user = %s.auth.session.user.name, code = e.code(),
                    "ended a live stream: its user may no longer read it"
                );
                s.ended = true;
                return Some((Ok(closed_event(&e)), s));
            }
            if s.gaps_due {
                s.gaps_due = false;
                let limits = gaps::thresholds(&s.auth.state, &s.site).await;
                match s
                    .store
                    .devices(s.site.clone())
                    .await
                    .and_then(|d| Ok((d, limits?)))
                {
                    Ok((Some(devices), limits)) => {
                        let now = now_ms();
                        let opening = gaps::current(&s.site, &devices, &limits, now);
                        s.ready_alerts.extend(
                            opening
                                .iter()
                                .filter(|a| a.matches(&s.filter))
                                .map(GapAlert::sse),
                        );
                    }
                    Ok((None, _)) => return None,
                    Err(e) => {
                        tracing::warn!(site = %s.site, error = %e, "live feed read failed; ending the stream");
                        return None;
                    }
                }
            }
            if let Some(alert) = s.ready_alerts.pop_front() {
                return Some((Ok(alert), s));
            }
            if let Some((seq, json)) = s.ready.pop_front() {
                let event = SseEvent::default()
                    .id(seq.to_string())
                    .event("event")
                    .data(json);
                return Some((Ok(event), s));
            }
            // Marked seen before reading, so an event committed after the read still wakes us.
            s.wake.borrow_and_update();
            let read = s
                .store
                .events_filtered(s.site.clone(), s.after, STREAM_PAGE, s.filter.clone())
                .await;
            match read {
                Ok(Some(page)) => {
                    s.after = page.next(s.after);
                    let more = page.more;
                    s.ready.extend(page.events);
                    if !s.ready.is_empty() || more {
                        continue;
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(site = %s.site, error = %e, "live feed read failed; ending the stream");
                    return None;
                }
            }
            let _keep = &s.notifier;
            let next_check = s.auth.next_check;
            tokio::select! {
                changed = s.wake.changed() => if changed.is_err() { return None; },
                // Both lead back to the check at the top of the loop.
                _ = tokio::time::sleep_until(next_check) => {}
                _ = s.auth.changed.changed() => s.auth.notified = true,
                committed = s.committed.recv() => {
                    // Lagging only means several commits are read at once.
                    if let Err(broadcast::error::RecvError::Closed) = committed {
                        return None;
                    }
                }
                alert = s.alerts.recv() => match alert {
                    Ok(alert) => {
                        if *alert.site() == s.site && alert.matches(&s.filter) {
                            s.ready_alerts.push_back(alert.sse());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        tracing::warn!(site = %s.site, lost, "a live stream fell behind on announcements");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = s.closing.changed() => return None,
            }
        }
    })
}
