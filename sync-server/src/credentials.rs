//! Credentials and who may do what: the layer below both the store and the HTTP API (it knows
//! neither; both use it).
//!
//! Three kinds of secret, each 256 random bits from the operating system, shown once to its
//! holder as a short prefix and the bits in unpadded base64url (46 characters in all):
//!
//! | prefix | what | held by | issued by |
//! |---|---|---|---|
//! | `pd_` | device credential | one enrolled phone | `POST /api/v1/enroll`, then `POST /api/v1/devices/me/credential` at each rotation |
//! | `pu_` | user token | one administrator or operator | `patrol-server admin create`, `patrol-server user create` / `rotate`, `POST /api/v1/users`, `POST /api/v1/users/me/token`, `POST /api/v1/users/{id}/token` |
//! | `pe_` | enrollment code, one-time, expiring | whoever sets up a phone | `POST /api/v1/sites/{site}/enrollment-codes` |
//! | `ps_` | sign-in session, in a cookie ([`sessions`]) | a person's browser | `POST /api/v1/session` (name and password, [`passwords`]) |
//!
//! The server stores only the SHA-256 of each token ([`TokenHash`]) and finds the row by it. A
//! digest found that way is compared again with the presented one in constant time
//! ([`TokenHash::matches`]), so that no backend's lookup (a collation, a prefix index) can
//! stand in for an exact match.
//!
//! Users ([`User`]) are administrators or operators ([`Role`]) over all sites or a list of them
//! ([`Scope`]): an operator reads the sites of its list; an administrator also issues
//! enrollment codes, revokes devices and manages users within its scope. Only an administrator
//! over all sites creates sites or other such administrators.
//!
//! Credentials age. A user token expires ([`User::token_expires_at_ms`], set from the server's
//! `--user-token-ttl-days` when it is issued) and is replaced by a rotation ([`user_rotation`]):
//! the old token keeps working for a short overlap so that a program can switch, then stops. A
//! device credential does not expire (a phone may be out of signal for a long time, and must
//! never be locked out with a guard's record on it); the phone rotates it at sync instead once
//! it is older than the server's `--device-credential-max-age-days` ([`rotation_due`]).
//!
//! How a request presents its token, and the 401 and 403 answers, are the HTTP layer's
//! (`http/auth.rs`).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use patrol_core::SiteId;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use thiserror::Error;

pub mod passwords;
pub mod sessions;

/// Random bytes in every token.
pub const SECRET_BYTES: usize = 32;

/// Length of a token's encoded random part: 32 bytes in unpadded base64url.
const ENCODED_LEN: usize = 43;

/// What a token is for; its prefix says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Device,
    User,
    Enrollment,
    Session,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Device => "pd_",
            TokenKind::User => "pu_",
            TokenKind::Enrollment => "pe_",
            TokenKind::Session => "ps_",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TokenKind::Device => "a device credential (pd_…)",
            TokenKind::User => "a user token (pu_…)",
            TokenKind::Enrollment => "an enrollment code (pe_…)",
            TokenKind::Session => "a sign-in session (ps_…)",
        }
    }

    /// The kind a presented token claims by its form: prefix and length and alphabet of the
    /// random part. `None` for anything else.
    pub fn of(token: &str) -> Option<TokenKind> {
        [
            TokenKind::Device,
            TokenKind::User,
            TokenKind::Enrollment,
            TokenKind::Session,
        ]
        .into_iter()
        .find(|kind| {
            token.strip_prefix(kind.prefix()).is_some_and(|rest| {
                rest.len() == ENCODED_LEN
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
    }
}

/// A token as shown once to its holder. Its `Debug` form hides the secret, so it never reaches
/// a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A new token of `kind`, from the operating system's random source.
    pub fn generate(kind: TokenKind) -> Result<Secret, AuthError> {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(Secret(format!(
            "{}{}",
            kind.prefix(),
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// The token itself, to hand to its holder once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the server stores of it.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.0.get(..3).unwrap_or("");
        write!(f, "Secret({prefix}…)")
    }
}

/// The SHA-256 of a whole token (prefix included, so a token of one kind never matches a
/// stored token of another).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// From a stored 32-byte value.
    pub fn from_slice(bytes: &[u8]) -> Option<TokenHash> {
        <[u8; 32]>::try_from(bytes).ok().map(TokenHash)
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads its sites, issues their enrollment codes, revokes their devices, manages users
    /// within its scope.
    Admin,
    /// Reads its sites.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "role must be \"admin\" or \"operator\", not {other:?}"
            )),
        }
    }
}

/// The sites a user covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every site, present and future (administrators only).
    AllSites,
    /// These sites, sorted, without repeats, at least one.
    Sites(Vec<SiteId>),
}

impl Scope {
    pub fn covers(&self, site: &SiteId) -> bool {
        match self {
            Scope::AllSites => true,
            Scope::Sites(sites) => sites.contains(site),
        }
    }
}

/// A user as stored (its token only as a hash, never returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// A UUID, assigned at creation.
    pub id: String,
    /// Unique among users.
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub created_at_ms: i64,
    /// The user who created it; `None` when made with the `patrol-server` command.
    pub created_by: Option<String>,
    pub revoked_at_ms: Option<i64>,
    /// When its current token stops working, unless rotated before.
    pub token_expires_at_ms: i64,
}

impl User {
    /// Whether this user may read `site` (its feed, its devices).
    pub fn can_read(&self, site: &SiteId) -> bool {
        self.scope.covers(site)
    }

    /// Whether this user administers `site`: issues its enrollment codes, revokes its devices.
    pub fn administers(&self, site: &SiteId) -> bool {
        self.role == Role::Admin && self.scope.covers(site)
    }

    pub fn is_global_admin(&self) -> bool {
        self.role == Role::Admin && self.scope == Scope::AllSites
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this user may create, see and revoke a user with `scope`: an administrator over
    /// all sites, any; an administrator over some sites, users whose sites are all among its
    /// own (never one over all sites).
    pub fn manages(&self, scope: &Scope) -> bool {
        if self.role != Role::Admin {
            return false;
        }
        match (&self.scope, scope) {
            (Scope::AllSites, _) => true,
            (Scope::Sites(_), Scope::AllSites) => false,
            (Scope::Sites(mine), Scope::Sites(theirs)) => {
                theirs.iter().all(|site| mine.contains(site))
            }
        }
    }
}

/// A user to create, with the hash of its token and, if it has one, of its password.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub user: User,
    pub token_hash: TokenHash,
    pub password: Option<passwords::PasswordHashString>,
}

/// Longest user name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a new user's name and role and the sites it is to cover; returns the name and scope.
/// `all_sites` is for administrators only; otherwise at least one site is needed.
pub fn user_scope(
    name: &str,
    role: Role,
    sites: Vec<SiteId>,
    all_sites: bool,
) -> Result<Scope, String> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "a user name is 1 to {MAX_NAME_LEN} letters, digits, '-', '_', '.' or '@'"
        ));
    }
    match (all_sites, role) {
        (true, Role::Operator) => Err("an operator covers a list of sites, not all sites".into()),
        (true, Role::Admin) if !sites.is_empty() => {
            Err("give either a list of sites or all sites, not both".into())
        }
        (true, Role::Admin) => Ok(Scope::AllSites),
        (false, _) if sites.is_empty() => {
            Err("give at least one site (or, for an administrator, all sites)".into())
        }
        (false, _) => {
            let mut sites = sites;
            sites.sort();
            sites.dedup();
            Ok(Scope::Sites(sites))
        }
    }
}

/// A new user with a fresh id and a token that expires `token_ttl_ms` after `now_ms`: what to
/// store, and the token to show once.
pub fn new_user(
    name: String,
    role: Role,
    scope: Scope,
    created_by: Option<String>,
    now_ms: i64,
    token_ttl_ms: i64,
) -> Result<(NewUser, Secret), AuthError> {
    let token = Secret::generate(TokenKind::User)?;
    let user = User {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        role,
        scope,
        created_at_ms: now_ms,
        created_by,
        revoked_at_ms: None,
        token_expires_at_ms: now_ms.saturating_add(token_ttl_ms),
    };
    Ok((
        NewUser {
            user,
            token_hash: token.hash(),
            password: None,
        },
        token,
    ))
}

/// Which of a user's tokens a presented token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserTokenState {
    /// Its current token.
    Current,
    /// The token a rotation replaced, still accepted until its overlap ends.
    Superseded,
}

/// A user found by a presented token: which of its tokens it is, and when that one stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserToken {
    pub user: User,
    pub state: UserTokenState,
    pub expires_at_ms: i64,
}

/// A user's tokens as stored: the current one, and the one a rotation replaced with the end of
/// its overlap (if any).
#[derive(Clone, Copy, Debug)]
pub struct StoredUserTokens {
    pub current: TokenHash,
    pub previous: Option<(TokenHash, i64)>,
}

impl StoredUserTokens {
    /// Which of these tokens `presented` is, compared in constant time; `None` for neither.
    pub fn identify(&self, presented: &TokenHash) -> Option<(UserTokenState, Option<i64>)> {
        if self.current.matches(presented) {
            return Some((UserTokenState::Current, None));
        }
        match self.previous {
            Some((hash, until)) if hash.matches(presented) => {
                Some((UserTokenState::Superseded, Some(until)))
            }
            _ => None,
        }
    }
}

/// Whether a token found as `token` may be used at `now_ms`: not revoked, not expired (a
/// superseded token: not past its overlap).
pub fn check_user_token(token: &UserToken, now_ms: i64) -> Result<(), TokenRefusal> {
    if let Some(at_ms) = token.user.revoked_at_ms {
        return Err(TokenRefusal::Revoked { at_ms });
    }
    if now_ms >= token.expires_at_ms {
        return Err(match token.state {
            UserTokenState::Current => TokenRefusal::Expired {
                at_ms: token.expires_at_ms,
            },
            UserTokenState::Superseded => TokenRefusal::Superseded {
                at_ms: token.expires_at_ms,
            },
        });
    }
    Ok(())
}

/// Why a known token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    Revoked {
        at_ms: i64,
    },
    /// Past its expiry.
    Expired {
        at_ms: i64,
    },
    /// Replaced by a rotation, and its overlap ended.
    Superseded {
        at_ms: i64,
    },
}

/// A user's token rotation to store: the new token's hash and expiry, and until when the token it
/// replaces still works (`None`: it stops at once).
#[derive(Clone, Copy, Debug)]
pub struct UserTokenRotation {
    pub token_hash: TokenHash,
    pub expires_at_ms: i64,
    pub previous_valid_until_ms: Option<i64>,
}

/// A rotation of `user`'s token at `now_ms`: a new token that expires `ttl_ms` later, and the old
/// one kept for `overlap_ms` (never past its own expiry; not at all for an overlap of 0, or when
/// an administrator replaces a lost token). Returns what to store and the token to show once.
pub fn user_rotation(
    user: &User,
    now_ms: i64,
    ttl_ms: i64,
    overlap_ms: Option<i64>,
) -> Result<(UserTokenRotation, Secret), AuthError> {
    let token = Secret::generate(TokenKind::User)?;
    let previous_valid_until_ms = overlap_ms
        .filter(|ms| *ms > 0)
        .map(|ms| now_ms.saturating_add(ms).min(user.token_expires_at_ms))
        .filter(|until| *until > now_ms);
    Ok((
        UserTokenRotation {
            token_hash: token.hash(),
            expires_at_ms: now_ms.saturating_add(ttl_ms),
            previous_valid_until_ms,
        },
        token,
    ))
}

/// A device's credentials as stored: the current one, and the one a rotation issued that the
/// phone has not used yet (if any).
#[derive(Clone, Copy, Debug)]
pub struct StoredDeviceCredentials {
    pub current: TokenHash,
    pub next: Option<TokenHash>,
}

/// Which of a device's credentials a presented one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceCredentialState {
    Current,
    /// Issued by a rotation and used now for the first time: from now on it is the current one,
    /// and the one it replaces stops working.
    Next,
}

impl StoredDeviceCredentials {
    /// Which of these `presented` is, compared in constant time; `None` for neither.
    pub fn identify(&self, presented: &TokenHash) -> Option<DeviceCredentialState> {
        if self.current.matches(presented) {
            return Some(DeviceCredentialState::Current);
        }
        match self.next {
            Some(next) if next.matches(presented) => Some(DeviceCredentialState::Next),
            _ => None,
        }
    }
}

/// Whether a device credential issued at `issued_at_ms` is due for rotation at `now_ms`, given the
/// server's longest age for one.
pub fn rotation_due(issued_at_ms: i64, now_ms: i64, max_age_ms: i64) -> bool {
    now_ms.saturating_sub(issued_at_ms) >= max_age_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn user(role: Role, scope: Scope) -> User {
        User {
            id: "u".into(),
            name: "n".into(),
            role,
            scope,
            created_at_ms: 0,
            created_by: None,
            revoked_at_ms: None,
            token_expires_at_ms: i64::MAX,
        }
    }

    #[test]
    fn tokens_are_random_prefixed_and_recognised_by_form() -> Result<(), AuthError> {
        let a = Secret::generate(TokenKind::Device)?;
        let b = Secret::generate(TokenKind::Device)?;
        assert_ne!(a, b);
        assert!(a.expose().starts_with("pd_"));
        assert_eq!(a.expose().len(), 3 + ENCODED_LEN);
        assert_eq!(TokenKind::of(a.expose()), Some(TokenKind::Device));
        let u = Secret::generate(TokenKind::User)?;
        assert_eq!(TokenKind::of(u.expose()), Some(TokenKind::User));
        let e = Secret::generate(TokenKind::Enrollment)?;
        assert_eq!(TokenKind::of(e.expose()), Some(TokenKind::Enrollment));
        // Cut, lengthened, another alphabet, another prefix.
        let t = a.expose();
        assert_eq!(TokenKind::of(&t[..t.len() - 1]), None);
        assert_eq!(TokenKind::of(&format!("{t}A")), None);
        assert_eq!(TokenKind::of(&t.replace("pd_", "px_")), None);
        assert_eq!(
            TokenKind::of(&format!("pd_{}", "+".repeat(ENCODED_LEN))),
            None
        );
        // The hash is of the whole token, and the secret stays out of Debug output.
        assert_ne!(a.hash(), b.hash());
        assert!(a.hash().matches(&TokenHash::of(a.expose())));
        assert!(!a.hash().matches(&b.hash()));
        assert!(!format!("{a:?}").contains(&t[3..]));
        Ok(())
    }

    #[test]
    fn roles_and_scopes_decide_access() {
        let (a, b, c) = (site("a"), site("b"), site("c"));
        let root = user(Role::Admin, Scope::AllSites);
        let admin_ab = user(Role::Admin, Scope::Sites(vec![a.clone(), b.clone()]));
        let op_a = user(Role::Operator, Scope::Sites(vec![a.clone()]));

        assert!(root.can_read(&c) && root.administers(&c) && root.is_global_admin());
        assert!(admin_ab.can_read(&a) && admin_ab.administers(&b));
        assert!(!admin_ab.can_read(&c) && !admin_ab.administers(&c));
        assert!(!admin_ab.is_global_admin());
        assert!(op_a.can_read(&a) && !op_a.administers(&a) && !op_a.can_read(&b));

        assert!(root.manages(&Scope::AllSites));
        assert!(admin_ab.manages(&Scope::Sites(vec![a.clone()])));
        assert!(admin_ab.manages(&Scope::Sites(vec![a.clone(), b.clone()])));
        assert!(!admin_ab.manages(&Scope::Sites(vec![a.clone(), c.clone()])));
        assert!(!admin_ab.manages(&Scope::AllSites));
        assert!(!op_a.manages(&Scope::Sites(vec![a])));
    }

    #[test]
    fn user_names_and_scopes_are_checked() {
        let (a, b) = (site("a"), site("b"));
        assert_eq!(
            user_scope(
                "ann",
                Role::Operator,
                vec![b.clone(), a.clone(), b.clone()],
                false
            ),
            Ok(Scope::Sites(vec![a.clone(), b.clone()]))
        );
        assert_eq!(
            user_scope("root@example.org", Role::Admin, vec![], true),
            Ok(Scope::AllSites)
        );
        for (name, role, sites, all) in [
            ("", Role::Admin, vec![], true),
            ("ann smith", Role::Operator, vec![a.clone()], false),
            (&*"x".repeat(65), Role::Operator, vec![a.clone()], false),
            ("op", Role::Operator, vec![], true),
            ("op", Role::Operator, vec![], false),
            ("adm", Role::Admin, vec![], false),
            ("adm", Role::Admin, vec![a.clone()], true),
        ] {
            assert!(
                user_scope(name, role, sites, all).is_err(),
                "{name} {role:?}"
            );
        }
    }

    #[test]
    fn tokens_expire_and_a_rotated_token_works_only_for_its_overlap() -> Result<(), AuthError> {
        let mut ann = user(Role::Operator, Scope::AllSites);
        ann.token_expires_at_ms = 1_000;
        let found = |state, expires_at_ms| UserToken {
            user: ann.clone(),
            state,
            expires_at_ms,
        };
        assert_eq!(
            check_user_token(&found(UserTokenState::Current, 1_000), 999),
            Ok(())
        );
        assert_eq!(
            check_user_token(&found(UserTokenState::Current, 1_000), 1_000),
            Err(TokenRefusal::Expired { at_ms: 1_000 })
        );
        assert_eq!(
            check_user_token(&found(UserTokenState::Superseded, 500), 500),
            Err(TokenRefusal::Superseded { at_ms: 500 })
        );

        // The old token's overlap ends at the earlier of now + overlap and its own expiry.
        let (r, token) = user_rotation(&ann, 100, 10_000, Some(300))?;
        assert_eq!(
            (r.expires_at_ms, r.previous_valid_until_ms),
            (10_100, Some(400))
        );
        assert!(r.token_hash.matches(&token.hash()));
        let (r, _) = user_rotation(&ann, 900, 10_000, Some(300))?;
        assert_eq!(r.previous_valid_until_ms, Some(1_000));
        for overlap in [None, Some(0)] {
            let (r, _) = user_rotation(&ann, 100, 10_000, overlap)?;
            assert_eq!(r.previous_valid_until_ms, None);
        }

        let stored = StoredUserTokens {
            current: TokenHash::of("a"),
            previous: Some((TokenHash::of("b"), 7)),
        };
        assert_eq!(
            stored.identify(&TokenHash::of("a")),
            Some((UserTokenState::Current, None))
        );
        assert_eq!(
            stored.identify(&TokenHash::of("b")),
            Some((UserTokenState::Superseded, Some(7)))
        );
        assert_eq!(stored.identify(&TokenHash::of("c")), None);

        assert!(!rotation_due(0, 99, 100));
        assert!(rotation_due(0, 100, 100));
        Ok(())
    }
}
