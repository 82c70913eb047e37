//! Credentials and who may do what: the layer below both the store and the HTTP API (it knows
//! neither; both use it).
//!
//! Three kinds of secret, each 256 random bits from the operating system, shown once to its
//! holder as a short prefix and the bits in unpadded base64url (46 characters in all):
//!
//! | prefix | what | held by | issued by |
//! |---|---|---|---|
//! | `pd_` | device credential | one enrolled phone | `POST /api/v1/enroll` |
//! | `pu_` | user token | one administrator or operator | `patrol-server admin create`, `POST /api/v1/users` |
//! | `pe_` | enrollment code, one-time, expiring | whoever sets up a phone | `POST /api/v1/sites/{site}/enrollment-codes` |
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
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Device => "pd_",
            TokenKind::User => "pu_",
            TokenKind::Enrollment => "pe_",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TokenKind::Device => "a device credential (pd_…)",
            TokenKind::User => "a user token (pu_…)",
            TokenKind::Enrollment => "an enrollment code (pe_…)",
        }
    }

    /// The kind a presented token claims by its form: prefix and length and alphabet of the
    /// random part. `None` for anything else.
    pub fn of(token: &str) -> Option<TokenKind> {
        [TokenKind::Device, TokenKind::User, TokenKind::Enrollment]
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

/// A user to create, with the hash of its token.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub user: User,
    pub token_hash: TokenHash,
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

/// A new user with a fresh id and token: what to store, and the token to show once.
pub fn new_user(
    name: String,
    role: Role,
    scope: Scope,
    created_by: Option<String>,
    now_ms: i64,
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
    };
    Ok((
        NewUser {
            user,
            token_hash: token.hash(),
        },
        token,
    ))
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
}
