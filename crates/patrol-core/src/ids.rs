//! Identifiers. Human-chosen ids (sites, guards, checkpoints) are short slugs; machine ids
//! (devices, shifts, events, incidents) are UUIDs generated where the record is born.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationError;

/// Longest slug accepted for a site, guard or checkpoint id.
pub const MAX_SLUG_LEN: usize = 64;

fn check_slug(what: &'static str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > MAX_SLUG_LEN {
        return Err(ValidationError::BadId {
            what,
            reason: format!("must be 1 to {MAX_SLUG_LEN} characters"),
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ValidationError::BadId {
            what,
            reason: "may hold only letters, digits, '-', '_', '.' and ':'".into(),
        });
    }
    Ok(())
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
                let s = s.into();
                check_slug($what, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id (UUIDv7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|e| ValidationError::BadId {
                    what: stringify!($name),
                    reason: e.to_string(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

slug_id!(
    /// A site: one hospital, mall or station.
    SiteId,
    "site id"
);
slug_id!(
    /// A guard (a person); the same guard may use several devices over time.
    GuardId,
    "guard id"
);
slug_id!(
    /// A checkpoint on a site, as the site configuration names it.
    CheckpointId,
    "checkpoint id"
);

uuid_id!(
    /// A phone, created once per device store; its automerge actor id is derived from it.
    DeviceId
);
uuid_id!(
    /// One shift of one guard on one device; names the shift-log document.
    ShiftId
);
uuid_id!(
    /// One event; generated on the phone, so a retried call or upload is recognisably the same.
    EventId
);
uuid_id!(
    /// One incident; names its collaborative document ([`crate::incident`]).
    IncidentId
);

impl DeviceId {
    /// The automerge actor id bound to this device: its 16 UUID bytes. The server rejects any
    /// change in a device's shift log whose actor is not this value.
    pub fn actor_id(&self) -> automerge::ActorId {
        automerge::ActorId::from(self.0.as_bytes().as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_reject_empty_long_and_odd_characters() {
        assert!(SiteId::new("site-1").is_ok());
        assert!(SiteId::new("").is_err());
        assert!(SiteId::new("a".repeat(65)).is_err());
        assert!(SiteId::new("site 1").is_err());
        assert!(GuardId::new("guard/1").is_err());
        assert!(serde_json::from_str::<SiteId>("\"bad id\"").is_err());
    }

    #[test]
    fn uuid_ids_parse_and_print() {
        let id = EventId::generate();
        assert_eq!(id.to_string().parse::<EventId>().ok(), Some(id));
        assert!("not-a-uuid".parse::<EventId>().is_err());
    }
}
