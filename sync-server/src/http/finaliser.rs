//! The finaliser: every `--compliance-check-secs`, each instance passes over every site's tour
//! windows ([`crate::store::Store::settle_windows`]): windows whose grace ended since the last
//! pass are closed (what nobody scanned is missed, even in a window nobody scanned at all), and
//! windows that are final by now, by delivery or by their deadline, are marked final with when
//! they turned final. Then it announces on its own live streams the window changes stored since
//! its last look ([`super::live::Announcement::Window`]): `window_changed`, `window_final`,
//! `window_amended`, whichever instance (or sync) made them.
//!
//! Several instances sharing a PostgreSQL database each run one: a pass takes the site's lock
//! and skips a site whose lock another holds (that one is doing the same work), and a pass that
//! finds nothing new to close or finalise writes nothing but its bookkeeping. Each instance
//! reads the stored announcements after its own cursor, so every stream hears each change once
//! (a stream opened while the server starts may miss the changes of that moment: a client
//! reads the windows' state from `GET .../tours/windows`).

use std::collections::HashMap;
use std::sync::Arc;

use patrol_core::SiteId;

use super::live::{Announcement, WindowAlert};
use super::state::AppState;
use crate::now_ms;

/// Announcements read per site per request.
const CHANGES_PAGE: u32 = 500;

/// Runs the finaliser of this instance (see the module docs) until the server closes its live
/// streams. A site whose pass or read fails is logged and tried again at the next pass.
pub async fn run(state: AppState) {
    let mut ticks = state.feed.ticks(state.config.compliance_check);
    // Per site, the last announcement this instance has seen.
    let mut seen: HashMap<SiteId, u64> = HashMap::new();
    while ticks.next().await {
        let sites = match state.store.list_sites().await {
            Ok(sites) => sites,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the sites to settle their tour windows");
                continue;
            }
        };
        let watched = state.feed.watched_sites();
        for site in sites.into_iter().map(|s| s.id) {
            match state.store.settle_windows(site.clone(), now_ms()).await {
                Ok(Some(report)) if report.closed > 0 || report.finalised > 0 => tracing::info!(
                    %site, closed = report.closed, finalised = report.finalised,
                    "settled tour windows"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%site, error = %e, "cannot settle the site's tour windows")
                }
            }
            announce(&state, &site, watched.contains(&site), &mut seen).await;
        }
    }
}

/// Announces the site's window changes since this instance's last look on its live streams (if
/// any is open on the site; otherwise only the cursor moves on).
async fn announce(state: &AppState, site: &SiteId, watched: bool, seen: &mut HashMap<SiteId, u64>) {
    loop {
        // A site seen for the first time starts from its latest announcement.
        let after = match (seen.get(site), watched) {
            (Some(&after), true) => after,
            _ => u64::MAX,
        };
        let (changes, last) = match state
            .store
            .window_changes(site.clone(), after, CHANGES_PAGE)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(%site, error = %e, "cannot read the site's window changes");
                return;
            }
        };
        let full = changes.len() == CHANGES_PAGE as usize;
        let mut cursor = last;
        for change in changes {
            cursor = change.seq;
            state
                .feed
                .announce(Arc::new(Announcement::Window(WindowAlert {
                    site: site.clone(),
                    kind: change.kind,
                    data: change.data,
                })));
        }
        seen.insert(site.clone(), if watched { cursor } else { last });
        if !(watched && full) {
            return;
        }
    }
}
