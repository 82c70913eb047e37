//! The live control-room feed: wake-ups when a site gets new events, and the server-sent-events
//! stream built on them. A stream resumes from a cursor (`after`, or the `Last-Event-ID` its
//! client sends on reconnect): every event has the site's sequence number as its SSE id, so a
//! reconnecting client misses nothing and sees nothing twice. A stream wakes both for this
//! instance's syncs and for commits the store reports ([`Store::subscribe`]), which on
//! PostgreSQL include those made through other instances.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use patrol_core::SiteId;
use tokio::sync::{broadcast, watch};

use crate::store::{FeedFilter, Store};

/// Events sent per store read while a stream catches up.
const STREAM_PAGE: u32 = 1_000;

/// Per-site wake-ups for live streams, and the signal that the server is closing (streams
/// never end on their own, so a graceful shutdown must end them).
#[derive(Debug)]
pub struct FeedNotifier {
    sites: Mutex<HashMap<SiteId, watch::Sender<u64>>>,
    closing: watch::Sender<bool>,
}

impl Default for FeedNotifier {
    fn default() -> Self {
        FeedNotifier {
            sites: Mutex::new(HashMap::new()),
            closing: watch::Sender::new(false),
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

    fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
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
}

/// The live stream of `site`'s events after `after` that match `filter`: first what is stored,
/// then each new event as it is committed. Ends on shutdown or a storage error (the client
/// reconnects with its `Last-Event-ID`).
pub fn stream(
    store: Arc<dyn Store>,
    notifier: Arc<FeedNotifier>,
    site: SiteId,
    filter: FeedFilter,
    after: u64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    let state = StreamState {
        wake: notifier.subscribe(&site),
        // Subscribed before the first read, so a commit after that read still wakes the stream.
        committed: store.subscribe(site.clone()),
        closing: notifier.closing(),
        store,
        notifier,
        site,
        filter,
        after,
        ready: VecDeque::new(),
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if *s.closing.borrow() {
                return None;
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
            tokio::select! {
                changed = s.wake.changed() => if changed.is_err() { return None; },
                committed = s.committed.recv() => {
                    // Lagging only means several commits are read at once.
                    if let Err(broadcast::error::RecvError::Closed) = committed {
                        return None;
                    }
                }
                _ = s.closing.changed() => return None,
            }
        }
    })
}
