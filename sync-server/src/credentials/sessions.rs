//! Sign-in sessions: what a person's browser holds after signing in with a name and password
//! (programs keep bearer tokens). A session is a random 256-bit token (`ps_…`, a [`Secret`] of
//! [`TokenKind::Session`]) in an HttpOnly cookie; the server stores only its SHA-256, as for
//! every token.
//!
//! A session ends at the first of: its lifetime from sign-in (`--session-ttl-hours`, 12 by
//! default: a night shift), its idle limit without use (`--session-idle-minutes`, 60 by
//! default), sign-out, a change of its user's password (which ends the user's *other* sessions
//! when the user changes it, all of them when an administrator does), and its user's
//! revocation. Use is recorded at most once a minute ([`TOUCH_EVERY_MS`]), so that a console's
//! many requests do not each cost a write.

use super::{AuthError, Secret, TokenHash, TokenKind, User};

/// The least time between two records of a session's use.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// How long sessions last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// From sign-in, whatever the use.
    pub ttl_ms: i64,
    /// Without use.
    pub idle_ms: i64,
}

/// A session as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredSession {
    pub hash: TokenHash,
    pub created_at_ms: i64,
    /// The end of its lifetime.
    pub expires_at_ms: i64,
    pub last_used_at_ms: i64,
}

impl StoredSession {
    /// When it ends unless used again: its lifetime's end, or its idle limit's if sooner.
    pub fn ends_at_ms(&self, idle_ms: i64) -> i64 {
        self.expires_at_ms
            .min(self.last_used_at_ms.saturating_add(idle_ms))
    }

    /// Whether a use at `now_ms` is to be recorded (the last record is a minute old).
    pub fn touch_due(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_used_at_ms) >= TOUCH_EVERY_MS
    }
}

/// A new session for a user signing in at `now_ms`: what to store, and the token for its
/// cookie.
pub fn new_session(
    now_ms: i64,
    policy: SessionPolicy,
) -> Result<(StoredSession, Secret), AuthError> {
    let token = Secret::generate(TokenKind::Session)?;
    Ok((
        StoredSession {
            hash: token.hash(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(policy.ttl_ms),
            last_used_at_ms: now_ms,
        },
        token,
    ))
}

/// Why a known session may not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Its user was revoked (a revocation deletes its sessions too; this covers a race).
    Revoked,
    /// Past its lifetime or its idle limit.
    Expired { at_ms: i64 },
}

/// Whether `session`, found with its `user` by the hash a request presented, may be used at
/// `now_ms`.
pub fn check_session(
    user: &User,
    session: &StoredSession,
    now_ms: i64,
    idle_ms: i64,
) -> Result<(), SessionRefusal> {
    if user.revoked_at_ms.is_some() {
        return Err(SessionRefusal::Revoked);
    }
    let ends = session.ends_at_ms(idle_ms);
    if now_ms >= ends {
        return Err(SessionRefusal::Expired { at_ms: ends });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Role, Scope};

    #[test]
    fn a_session_ends_at_its_lifetime_or_idle_limit_and_is_touched_once_a_minute()
    -> Result<(), AuthError> {
        let policy = SessionPolicy {
            ttl_ms: 12 * 3_600_000,
            idle_ms: 3_600_000,
        };
        let (mut s, token) = new_session(1_000, policy)?;
        assert!(token.expose().starts_with("ps_"));
        assert_eq!(TokenKind::of(token.expose()), Some(TokenKind::Session));
        assert!(s.hash.matches(&token.hash()));
        let mut user = User {
            id: "u".into(),
            name: "ann".into(),
            role: Role::Operator,
            scope: Scope::AllSites,
            created_at_ms: 0,
            created_by: None,
            revoked_at_ms: None,
            token_expires_at_ms: i64::MAX,
        };
        assert_eq!(
            check_session(&user, &s, 1_000 + 3_599_999, policy.idle_ms),
            Ok(())
        );
        assert_eq!(
            check_session(&user, &s, 1_000 + 3_600_000, policy.idle_ms),
            Err(SessionRefusal::Expired {
                at_ms: 1_000 + 3_600_000
            })
        );
        assert!(!s.touch_due(1_000 + 59_999));
        assert!(s.touch_due(1_000 + 60_000));
        // Used every half hour, it still ends at its lifetime.
        s.last_used_at_ms = 1_000 + 12 * 3_600_000 - 1_800_000;
        assert_eq!(s.ends_at_ms(policy.idle_ms), 1_000 + 12 * 3_600_000);
        user.revoked_at_ms = Some(5);
        assert_eq!(
            check_session(&user, &s, 2_000, policy.idle_ms),
            Err(SessionRefusal::Revoked)
        );
        Ok(())
    }
}
