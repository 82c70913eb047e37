//! The backend-neutral part of the collaboration documents beyond an incident's own rules
//! ([`super::incident`]): what a sync answers for each incident push, site configurations
//! (their versions and how they are stored and read back) and which alarm acknowledgements a
//! device is owed. A backend keeps only its SQL and its transaction.

use std::collections::HashSet;

use automerge::ChangeHash;
use patrol_core::merge::Rejection;
use patrol_core::protocol::{DocOutcome, IncidentUpdate, to_wire};
use patrol_core::siteconfig::SiteConfig;
use patrol_core::{EventId, IncidentId, SiteId};

use super::{CollabAnswer, CollabSync, StoreError, StoredConfig};

/// What one incident push answers: its outcome, and the update the device receives (none for a
/// rejected push).
#[derive(Debug)]
pub struct Answered {
    pub outcome: DocOutcome,
    pub update: Option<IncidentUpdate>,
}

impl Answered {
    /// A push of nothing new from a device that has exactly the server's heads
    /// ([`super::incident::up_to_date`]): answered without loading the document.
    pub fn up_to_date(incident: IncidentId, server_heads: &[ChangeHash]) -> Self {
        let heads = to_wire(server_heads);
        Answered {
            outcome: DocOutcome::Accepted {
                heads: heads.clone(),
                new_events: 0,
                missing_deps: false,
            },
            update: Some(IncidentUpdate {
                incident,
                heads,
                changes: Vec::new(),
            }),
        }
    }

    /// A push the core's rules refused; the document is untouched.
    pub fn rejected(rejection: Rejection) -> Self {
        Answered {
            outcome: DocOutcome::Rejected {
                code: rejection.code,
                message: rejection.message,
            },
            update: None,
        }
    }

    /// A merged push: the document's heads after it, and the changes the device lacks.
    pub fn accepted(
        incident: IncidentId,
        heads: &[ChangeHash],
        missing_deps: bool,
        update: Vec<u8>,
    ) -> Self {
        let heads = to_wire(heads);
        Answered {
            outcome: DocOutcome::Accepted {
                heads: heads.clone(),
                new_events: 0,
                missing_deps,
            },
            update: Some(IncidentUpdate {
                incident,
                heads,
                changes: update,
            }),
        }
    }

    /// Adds it to `answer`, after the pushes answered before it.
    pub fn add_to(self, answer: &mut CollabAnswer) {
        answer.outcomes.push(self.outcome);
        answer.incidents.extend(self.update);
    }
}

/// Which of the site's incidents a sync sends the device whole, besides those it pushed
/// (docs/protocol.md, "Incidents the phone did not push"). Closed incidents never come down
/// this way: a phone that holds one pushes it, and gets what it lacks in answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwedIncidents {
    /// The request names a guard on duty (a phone names its guard only while a shift is open):
    /// every incident of the site that is not closed, so that any guard on shift can respond.
    EveryOpen,
    /// No shift open on the phone: the open incidents the device took part in (reported, or
    /// wrote to from this device).
    TakenPart { device: String },
}

/// The rule both backends apply to a sync ([`OwedIncidents`]).
pub fn owed_incidents(sync: &CollabSync) -> OwedIncidents {
    match sync.guard {
        Some(_) => OwedIncidents::EveryOpen,
        None => OwedIncidents::TakenPart {
            device: sync.device.to_string(),
        },
    }
}

/// The panic alarms whose acknowledgement the device awaits, each once, in its order.
pub fn awaited_alarms(sync: &CollabSync) -> Vec<EventId> {
    let mut seen = HashSet::new();
    sync.awaiting_ack
        .iter()
        .filter(|event| seen.insert(**event))
        .copied()
        .collect()
}

/// A stored configuration, decoded.
fn decode_config(site: &SiteId, version: i64, bytes: &[u8]) -> Result<SiteConfig, StoreError> {
    SiteConfig::decode(bytes).map_err(|e| {
        StoreError::CorruptData(format!("configuration {version} of site {site}: {e}"))
    })
}

/// The site's configuration from its latest stored version (version, bytes, creation time), or
/// the empty version 0 when it has none.
pub fn stored_config(
    site: &SiteId,
    latest: Option<(i64, &[u8], i64)>,
) -> Result<StoredConfig, StoreError> {
    Ok(match latest {
        Some((version, bytes, created_at_ms)) => StoredConfig {
            config: decode_config(site, version, bytes)?,
            created_at_ms: Some(created_at_ms),
        },
        None => StoredConfig {
            config: SiteConfig::empty(site.clone()),
            created_at_ms: None,
        },
    })
}

/// The configuration to store after version `latest`, as stored: its columns.
#[derive(Debug)]
pub struct NewConfig {
    /// With its site's next version set.
    pub config: SiteConfig,
    /// The encoding devices receive.
    pub bytes: Vec<u8>,
    pub json: String,
}

/// `config` as the next version of its site, if `base_version` is the latest stored
/// ([`StoreError::StaleConfig`] otherwise).
pub fn next_config(
    mut config: SiteConfig,
    base_version: u64,
    latest: u64,
) -> Result<NewConfig, StoreError> {
    if latest != base_version {
        return Err(StoreError::StaleConfig {
            site: config.site,
            base: base_version,
            latest,
        });
    }
    config.version = latest + 1;
    let bytes = config
        .encode()
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let json = serde_json::to_string(&config).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(NewConfig {
        config,
        bytes,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_awaited_alarm_is_looked_up_once_in_order() -> Result<(), Box<dyn std::error::Error>> {
        let (a, b) = (EventId::generate(), EventId::generate());
        let sync = CollabSync {
            site: SiteId::new("site-1")?,
            device: patrol_core::DeviceId::generate(),
            guard: None,
            received_at_ms: 0,
            incidents: Vec::new(),
            config_version: 0,
            awaiting_ack: vec![a, b, a, b, a],
        };
        assert_eq!(awaited_alarms(&sync), vec![a, b]);
        Ok(())
    }
}
