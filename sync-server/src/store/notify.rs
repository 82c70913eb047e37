//! Wake-ups for readers of a site's feed ([`super::Store::subscribe`]): after a commit that
//! added events to a site, its subscribers receive the last sequence number committed.
//!
//! A value is a hint, not a delivery: the subscriber reads the feed from its own cursor
//! ([`super::Store::events_after`]). So values may repeat or arrive out of order, and a receiver
//! that lags behind ([`tokio::sync::broadcast::error::RecvError::Lagged`]) has lost nothing but
//! wake-ups it would have answered with the same read.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use patrol_core::SiteId;
use tokio::sync::broadcast;

/// Wake-ups a receiver may hold unread before it lags (and then reads the feed once).
const CAPACITY: usize = 64;

/// The subscribers of each site, in this process.
#[derive(Debug, Default)]
pub struct Notifier {
    /// By site id (as text, so that a notification's payload looks its site up directly).
    sites: Mutex<HashMap<String, broadcast::Sender<u64>>>,
}

impl Notifier {
    /// A receiver of the site's wake-ups from now on.
    pub fn subscribe(&self, site: SiteId) -> broadcast::Receiver<u64> {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        // Sites whose subscribers have all gone would otherwise accumulate forever.
        sites.retain(|_, tx| tx.receiver_count() > 0);
        sites
            .entry(site.as_str().to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Wakes the site's subscribers: its events up to `seq` are committed.
    pub fn notify(&self, site: &str, seq: u64) {
        let sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = sites.get(site) {
            // No receiver left is not an error: nobody is waiting.
            let _ = tx.send(seq);
        }
    }

    /// The sites that have subscribers now.
    pub fn subscribed(&self) -> Vec<String> {
        let sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        sites
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(site, _)| site.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_of_a_site_wake_and_others_do_not() -> Result<(), Box<dyn std::error::Error>>
    {
        let notifier = Notifier::default();
        let one = SiteId::new("site-1")?;
        let mut a = notifier.subscribe(one.clone());
        let mut b = notifier.subscribe(SiteId::new("site-2")?);
        notifier.notify("site-1", 7);
        assert_eq!(a.recv().await?, 7);
        assert!(b.try_recv().is_err());
        assert_eq!(notifier.subscribed().len(), 2);
        drop(b);
        assert_eq!(notifier.subscribed(), vec![one.to_string()]);
        // A site with nobody listening takes a wake-up without complaint.
        notifier.notify("site-3", 1);
        Ok(())
    }
}
