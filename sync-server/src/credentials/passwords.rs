//! Users' passwords, for people signing in to the console (programs keep bearer tokens).
//!
//! Stored as an argon2id PHC string (`$argon2id$v=19$m=...`): a memory-hard hash with a random
//! 16-byte salt from the operating system, at the `argon2` crate's default cost (19 MiB, two
//! passes, one lane: OWASP's recommended minimum for argon2id). The parameters travel in the
//! string, so a stronger cost later still verifies the hashes stored before it. Hashing takes
//! tens of milliseconds of CPU and 19 MiB: the HTTP layer runs it off the async threads, a few
//! at a time.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use rand::TryRngCore as _;
use thiserror::Error;

/// Shortest password accepted, in characters: long enough that a passphrase beats guessing
/// without rules about digits and symbols (NIST SP 800-63B asks for at least 8; a control room
/// account reads a whole site's record).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Longest password accepted, in characters (so at most 1 KiB): far beyond any passphrase, and
/// it bounds the work a request can ask of the hash. Characters, as JSON Schema counts them,
/// so that the API's document states the limit exactly.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Why a password is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PasswordError {
    #[error(
        "a password needs at least {MIN_PASSWORD_CHARS} characters (this one has {0}); a few unrelated words make a good one"
    )]
    TooShort(usize),
    #[error("a password may have at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("a password may not contain control characters (line breaks, tabs)")]
    ControlCharacter,
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// A new password as its owner chose it, checked for length. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl NewPassword {
    pub fn new(password: String) -> Result<NewPassword, PasswordError> {
        let chars = password.chars().count();
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordError::TooLong);
        }
        if password.chars().any(char::is_control) {
            return Err(PasswordError::ControlCharacter);
        }
        if chars < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort(chars));
        }
        Ok(NewPassword(password))
    }

    /// The argon2id PHC string to store, with a fresh salt. CPU-heavy: not on an async thread.
    pub fn hash(&self) -> Result<PasswordHashString, PasswordError> {
        hash(self.0.as_bytes())
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(…)")
    }
}

/// A stored argon2id PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(pub String);

impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashString(…)")
    }
}

fn hash(password: &[u8]) -> Result<PasswordHashString, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let phc = Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(PasswordHashString(phc.to_string()))
}

/// A hash of no one's password, verified against when the name given is unknown (or has no
/// password), so that a wrong name costs the same time as a wrong password and the answer's
/// timing does not tell which names exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        // A fixed salt is fine here: nothing ever matches this hash on purpose.
        let Ok(salt) = SaltString::encode_b64(b"patrol-dummy-salt") else {
            return String::new();
        };
        Argon2::default()
            .hash_password(b"no one's password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Whether `presented` is the password of `stored` (`None`: a user without one, or no user:
/// a dummy hash is verified instead, and the answer is no). Constant-time comparison inside
/// argon2. CPU-heavy: not on an async thread. A stored string that does not parse is a no, not
/// an error: the user can still be given a new password.
pub fn verify(stored: Option<&str>, presented: &str) -> bool {
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (dummy_hash(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        tracing::warn!("a stored password hash does not parse; give the user a new password");
        return false;
    };
    let ok = Argon2::default()
        .verify_password(presented.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_hashed_with_salt_and_verified() -> Result<(), PasswordError> {
        assert_eq!(
            NewPassword::new("short one".into()),
            Err(PasswordError::TooShort(9))
        );
        // Counted in characters, not bytes.
        assert!(NewPassword::new("ééééééééééé".into()).is_err());
        assert!(NewPassword::new("éééééééééééé".into()).is_ok());
        assert_eq!(
            NewPassword::new("é".repeat(MAX_PASSWORD_CHARS + 1)),
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            NewPassword::new("twelve chars\nmore".into()),
            Err(PasswordError::ControlCharacter)
        );
        let p = NewPassword::new("correct horse battery".into())?;
        assert!(!format!("{p:?}").contains("horse"));
        let a = p.hash()?;
        let b = p.hash()?;
        assert!(
            a.0.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            a.0
        );
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify(Some(&a.0), "correct horse battery"));
        assert!(!verify(Some(&a.0), "correct horse battery "));
        assert!(!verify(None, "no one's password"));
        assert!(!verify(Some("not a phc string"), "correct horse battery"));
        Ok(())
    }
}
