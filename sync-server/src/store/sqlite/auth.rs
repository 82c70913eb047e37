//! Sites, users, enrollment codes and device credentials on SQLite (migration 0004 for the
//! auth tables). Only token hashes are stored; lookups are by hash, and the caller compares
//! again in constant time. Writes run on the writer thread, each in its own IMMEDIATE
//! transaction; a sync request's credential check and replay counter ([`sync_refusal`],
//! [`accept_request`]) run inside its write transaction.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::to_i64;
use crate::credentials::passwords::PasswordHashString;
use crate::credentials::sessions::StoredSession;
use crate::credentials::{
    NewUser, Scope, StoredDeviceCredentials, StoredUserTokens, TokenHash, User, UserTokenRotation,
};
use crate::store::access::{self, StoredCode};
use crate::store::rows::{
    DEVICE_CREDENTIAL_COLUMNS, USER_COLUMNS, corrupt, read_device_credentials, read_device_id,
    read_hash, read_public_key, read_site_id, read_user_tokens,
};
use crate::store::{
    DeviceCredential, EnrollRefusal, Enrollment, NewEnrollmentCode, Site, StoreError, SyncBatch,
    SyncRefusal, UserKey, UserWithPassword,
};
use patrol_core::{DeviceId, SiteId};

fn read_site(row: &rusqlite::Row<'_>) -> Result<Site, StoreError> {
    let id: String = row.get(0)?;
    Ok(Site {
        id: read_site_id(&id)?,
        name: row.get(1)?,
        created_at_ms: row.get(2)?,
    })
}

pub(super) fn get_site(conn: &Connection, site: &SiteId) -> Result<Option<Site>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT site_id, name, created_at FROM sites WHERE site_id = ?1")?;
    let mut rows = stmt.query([site.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_site(row)?)),
        None => Ok(None),
    }
}

pub(super) fn create_site(conn: &mut Connection, site: Site) -> Result<Site, StoreError> {
    let rows = conn.execute(
        "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (site_id) DO NOTHING",
        params![site.id.as_str(), site.name, site.created_at_ms],
    )?;
    if rows == 0 {
        return Err(StoreError::SiteExists(site.id));
    }
    Ok(site)
}

pub(super) fn list_sites(conn: &mut Connection) -> Result<Vec<Site>, StoreError> {
    let mut stmt = conn.prepare("SELECT site_id, name, created_at FROM sites ORDER BY site_id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read_site(row)?);
    }
    Ok(out)
}

/// A `users` row read with [`USER_COLUMNS`], its sites read from `user_sites`.
fn read_user(
    conn: &Connection,
    row: &rusqlite::Row<'_>,
) -> Result<(User, StoredUserTokens), StoreError> {
    let id: String = row.get(0)?;
    let role: String = row.get(2)?;
    let all_sites: bool = row.get(3)?;
    let tokens = read_user_tokens(
        row.get_ref(7)?.as_blob().map_err(corrupt)?,
        row.get_ref(9)?.as_blob_or_null().map_err(corrupt)?,
        row.get(10)?,
    )?;
    let scope = if all_sites {
        Scope::AllSites
    } else {
        let mut stmt = conn
            .prepare_cached("SELECT site_id FROM user_sites WHERE user_id = ?1 ORDER BY site_id")?;
        let mut rows = stmt.query([&id])?;
        let mut sites = Vec::new();
        while let Some(r) = rows.next()? {
            sites.push(read_site_id(r.get_ref(0)?.as_str().map_err(corrupt)?)?);
        }
        Scope::Sites(sites)
    };
    let user = User {
        role: role.parse().map_err(corrupt)?,
        name: row.get(1)?,
        scope,
        created_at_ms: row.get(4)?,
        created_by: row.get(5)?,
        revoked_at_ms: row.get(6)?,
        token_expires_at_ms: row.get(8)?,
        id,
    };
    Ok((user, tokens))
}

fn user_by_id(conn: &Connection, id: &str) -> Result<Option<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"
    ))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_user(conn, row)?.0)),
        None => Ok(None),
    }
}

pub(super) fn create_user(conn: &mut Connection, new: NewUser) -> Result<User, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let NewUser {
        user,
        token_hash,
        password,
    } = new;
    let sites = access::scope_sites(&user.scope);
    for site in sites {
        access::require_site(site, get_site(&tx, site)?)?;
    }
    let inserted = tx.execute(
        "INSERT INTO users (user_id, name, role, all_sites, token_hash, created_at, created_by,
             token_expires_at, password_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (name) DO NOTHING",
        params![
            user.id,
            user.name,
            user.role.as_str(),
            user.scope == Scope::AllSites,
            token_hash.0.as_slice(),
            user.created_at_ms,
            user.created_by,
            user.token_expires_at_ms,
            password.map(|p| p.0),
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::UserExists(user.name));
    }
    for site in sites {
        tx.execute(
            "INSERT INTO user_sites (site_id, user_id) VALUES (?1, ?2)",
            params![site.as_str(), user.id],
        )?;
    }
    tx.commit()?;
    Ok(user)
}

pub(super) fn users(conn: &mut Connection) -> Result<Vec<User>, StoreError> {
    let tx = conn.transaction()?;
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            out.push(read_user(&tx, row)?.0);
        }
    }
    Ok(out)
}

pub(super) fn user_by_token(
    conn: &mut Connection,
    hash: &TokenHash,
) -> Result<Option<(User, StoredUserTokens)>, StoreError> {
    let tx = conn.transaction()?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?1 OR previous_token_hash = ?1"
    ))?;
    let mut rows = stmt.query([hash.0.as_slice()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_user(&tx, row)?)),
        None => Ok(None),
    }
}

/// Revokes a user (the first revocation time stands).
pub(super) fn revoke_user(
    conn: &mut Connection,
    id: &str,
    at_ms: i64,
) -> Result<Option<User>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(target) = user_by_id(&tx, id)? else {
        return Ok(None);
    };
    let others: i64 = tx.query_row(
        "SELECT count(*) FROM users
         WHERE role = 'admin' AND all_sites = 1 AND revoked_at IS NULL AND user_id <> ?1",
        [id],
        |r| r.get(0),
    )?;
    access::check_revocation(&target, others)?;
    tx.execute(
        "UPDATE users SET revoked_at = COALESCE(revoked_at, ?2) WHERE user_id = ?1",
        params![id, at_ms],
    )?;
    tx.execute("DELETE FROM user_sessions WHERE user_id = ?1", [id])?;
    let user = user_by_id(&tx, id)?;
    tx.commit()?;
    Ok(user)
}

pub(super) fn rotate_user_token(
    conn: &mut Connection,
    id: &str,
    rotation: UserTokenRotation,
) -> Result<Option<User>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let keep = rotation.previous_valid_until_ms;
    tx.execute(
        "UPDATE users SET
             previous_token_hash = CASE WHEN ?4 IS NULL THEN NULL ELSE token_hash END,
             previous_token_expires_at = ?4,
             token_hash = ?2,
             token_expires_at = ?3
         WHERE user_id = ?1",
        params![
            id,
            rotation.token_hash.0.as_slice(),
            rotation.expires_at_ms,
            keep
        ],
    )?;
    let user = user_by_id(&tx, id)?;
    tx.commit()?;
    Ok(user)
}

pub(super) fn user_with_password(
    conn: &mut Connection,
    key: &UserKey,
) -> Result<Option<UserWithPassword>, StoreError> {
    let tx = conn.transaction()?;
    let (column, value) = match key {
        UserKey::Id(id) => ("user_id", id),
        UserKey::Name(name) => ("name", name),
    };
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE {column} = ?1"
    ))?;
    let mut rows = stmt.query([value])?;
    match rows.next()? {
        Some(row) => {
            let (user, _) = read_user(&tx, row)?;
            let password: Option<String> = row.get(11)?;
            Ok(Some((user, password.map(PasswordHashString))))
        }
        None => Ok(None),
    }
}

pub(super) fn set_user_password(
    conn: &mut Connection,
    id: &str,
    password: &PasswordHashString,
    keep: Option<TokenHash>,
) -> Result<Option<User>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changed = tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
        params![id, password.0],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    let keep = keep.map(|k| k.0.to_vec());
    tx.execute(
        "DELETE FROM user_sessions WHERE user_id = ?1 AND (?2 IS NULL OR session_hash <> ?2)",
        params![id, keep],
    )?;
    let user = user_by_id(&tx, id)?;
    tx.commit()?;
    Ok(user)
}

pub(super) fn create_session(
    conn: &mut Connection,
    user_id: &str,
    session: &StoredSession,
    idle_ms: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = session.created_at_ms;
    tx.execute(
        "DELETE FROM user_sessions WHERE expires_at <= ?1 OR last_used_at <= ?2",
        params![now, now.saturating_sub(idle_ms)],
    )?;
    tx.execute(
        "INSERT INTO user_sessions (session_hash, user_id, created_at, expires_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            session.hash.0.as_slice(),
            user_id,
            session.created_at_ms,
            session.expires_at_ms,
            session.last_used_at_ms,
        ],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn session_by_token(
    conn: &mut Connection,
    hash: &TokenHash,
) -> Result<Option<(User, StoredSession)>, StoreError> {
    let tx = conn.transaction()?;
    let found = tx
        .query_row(
            "SELECT session_hash, user_id, created_at, expires_at, last_used_at
             FROM user_sessions WHERE session_hash = ?1",
            [hash.0.as_slice()],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((stored, user_id, created_at_ms, expires_at_ms, last_used_at_ms)) = found else {
        return Ok(None);
    };
    let Some(user) = user_by_id(&tx, &user_id)? else {
        return Ok(None);
    };
    let session = StoredSession {
        hash: read_hash(&stored, "a session hash")?,
        created_at_ms,
        expires_at_ms,
        last_used_at_ms,
    };
    Ok(Some((user, session)))
}

pub(super) fn touch_session(
    conn: &mut Connection,
    hash: &TokenHash,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE user_sessions SET last_used_at = MAX(last_used_at, ?2) WHERE session_hash = ?1",
        params![hash.0.as_slice(), now_ms],
    )?;
    Ok(())
}

pub(super) fn delete_session(conn: &mut Connection, hash: &TokenHash) -> Result<bool, StoreError> {
    let deleted = conn.execute(
        "DELETE FROM user_sessions WHERE session_hash = ?1",
        [hash.0.as_slice()],
    )?;
    Ok(deleted > 0)
}

pub(super) fn create_enrollment_code(
    conn: &mut Connection,
    code: NewEnrollmentCode,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    access::require_site(&code.site, get_site(&tx, &code.site)?)?;
    tx.execute(
        "INSERT INTO enrollment_codes (site_id, code_hash, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            code.site.as_str(),
            code.code_hash.0.as_slice(),
            code.created_by,
            code.created_at_ms,
            code.expires_at_ms,
        ],
    )?;
    tx.commit()?;
    Ok(())
}

fn read_device_credential(
    row: &rusqlite::Row<'_>,
) -> Result<(DeviceCredential, StoredDeviceCredentials), StoreError> {
    let last: i64 = row.get(4)?;
    let credential = DeviceCredential {
        site: read_site_id(row.get_ref(0)?.as_str().map_err(corrupt)?)?,
        device: read_device_id(row.get_ref(1)?.as_str().map_err(corrupt)?)?,
        enrolled_at_ms: row.get(2)?,
        revoked_at_ms: row.get(3)?,
        last_request_seq: u64::try_from(last).unwrap_or(0),
        public_key: read_public_key(row.get(6)?)?,
        credential_issued_at_ms: row.get(7)?,
    };
    let stored = read_device_credentials(
        row.get_ref(5)?.as_blob().map_err(corrupt)?,
        row.get_ref(8)?.as_blob_or_null().map_err(corrupt)?,
    )?;
    Ok((credential, stored))
}

fn device_credential(
    conn: &Connection,
    site: &SiteId,
    device: &DeviceId,
) -> Result<Option<DeviceCredential>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
         WHERE site_id = ?1 AND device_id = ?2"
    ))?;
    let mut rows = stmt.query(params![site.as_str(), device.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_device_credential(row)?.0)),
        None => Ok(None),
    }
}

/// Uses an enrollment code and stores the device's credential, in one transaction.
pub(super) fn enroll_device(
    conn: &mut Connection,
    e: Enrollment,
) -> Result<DeviceCredential, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(String, Vec<u8>, i64, Option<i64>)> = tx
        .query_row(
            "SELECT site_id, code_hash, expires_at, used_at FROM enrollment_codes
             WHERE code_hash = ?1",
            [e.code_hash.0.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((site, stored, expires_at_ms, used_at_ms)) = row else {
        return Err(StoreError::Enrollment(EnrollRefusal::Unknown));
    };
    let code = StoredCode {
        code_hash: &stored,
        expires_at_ms,
        used_at_ms,
    };
    access::check_code(code, &e)?;
    let device = e.device.to_string();
    tx.execute(
        "UPDATE enrollment_codes SET used_at = ?3, device_id = ?4
         WHERE site_id = ?1 AND code_hash = ?2",
        params![site, e.code_hash.0.as_slice(), e.now_ms, device],
    )?;
    tx.execute(
        "INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at,
             public_key, credential_issued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
        params![
            site,
            device,
            e.credential_hash.0.as_slice(),
            e.now_ms,
            e.public_key.map(|k| k.to_bytes().to_vec())
        ],
    )?;
    tx.commit()?;
    access::enrolled(&site, &e)
}

pub(super) fn device_by_credential(
    conn: &mut Connection,
    hash: &TokenHash,
) -> Result<Option<(DeviceCredential, StoredDeviceCredentials)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
         WHERE credential_hash = ?1 OR next_credential_hash = ?1"
    ))?;
    let mut rows = stmt.query([hash.0.as_slice()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_device_credential(row)?)),
        None => Ok(None),
    }
}

pub(super) fn device_credentials(
    conn: &mut Connection,
    site: &SiteId,
) -> Result<Option<Vec<DeviceCredential>>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
             WHERE site_id = ?1 ORDER BY device_id"
        ))?;
        let mut rows = stmt.query([site.as_str()])?;
        while let Some(row) = rows.next()? {
            out.push(read_device_credential(row)?.0);
        }
    }
    Ok(Some(out))
}

/// Stores the device's next credential (replacing an unused one).
pub(super) fn stage_device_credential(
    conn: &mut Connection,
    site: &SiteId,
    device: &DeviceId,
    next: &TokenHash,
    at_ms: i64,
) -> Result<Option<DeviceCredential>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE device_credentials SET next_credential_hash = ?3, next_issued_at = ?4
         WHERE site_id = ?1 AND device_id = ?2",
        params![site.as_str(), device.to_string(), next.0.as_slice(), at_ms],
    )?;
    let credential = device_credential(&tx, site, device)?;
    tx.commit()?;
    Ok(credential)
}

/// Makes the device's next credential, if it is `next`, its current one.
pub(super) fn promote_device_credential(
    conn: &mut Connection,
    site: &SiteId,
    device: &DeviceId,
    next: &TokenHash,
) -> Result<Option<DeviceCredential>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let promoted = tx.execute(
        "UPDATE device_credentials SET credential_hash = next_credential_hash,
             credential_issued_at = next_issued_at, next_credential_hash = NULL,
             next_issued_at = NULL
         WHERE site_id = ?1 AND device_id = ?2 AND next_credential_hash = ?3",
        params![site.as_str(), device.to_string(), next.0.as_slice()],
    )?;
    let credential = if promoted == 1 {
        device_credential(&tx, site, device)?
    } else {
        None
    };
    tx.commit()?;
    Ok(credential)
}

/// Revokes a device's credential (the first revocation time stands).
pub(super) fn revoke_device(
    conn: &mut Connection,
    site: &SiteId,
    device: &DeviceId,
    at_ms: i64,
) -> Result<Option<DeviceCredential>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE device_credentials SET revoked_at = COALESCE(revoked_at, ?3)
         WHERE site_id = ?1 AND device_id = ?2",
        params![site.as_str(), device.to_string(), at_ms],
    )?;
    let credential = device_credential(&tx, site, device)?;
    tx.commit()?;
    Ok(credential)
}

/// Revokes, at `now_ms`, every device whose stored key is refused ([`access::refused_keys`]),
/// and clears the key.
pub(super) fn revoke_refused_keys(conn: &mut Connection, now_ms: i64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored = tx
        .prepare(
            "SELECT site_id, device_id, public_key FROM device_credentials
             WHERE public_key IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    for (site, device) in access::refused_keys(stored) {
        tx.execute(
            "UPDATE device_credentials SET revoked_at = COALESCE(revoked_at, ?3), public_key = NULL
             WHERE site_id = ?1 AND device_id = ?2",
            params![site, device, now_ms],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Why the device may not sync `batch`, if it may not: no credential on the site, a revoked
/// one, or a request seq not greater than the last accepted.
pub(super) fn sync_refusal(
    tx: &Connection,
    batch: &SyncBatch,
) -> Result<Option<SyncRefusal>, StoreError> {
    let row: Option<(i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT last_request_seq, revoked_at FROM device_credentials
             WHERE site_id = ?1 AND device_id = ?2",
        )?
        .query_row(
            params![batch.site.as_str(), batch.device.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(access::sync_refusal(row, batch))
}

/// Records the request's seq as the device's last accepted, in the request's transaction.
pub(super) fn accept_request(tx: &Connection, batch: &SyncBatch) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE device_credentials SET last_request_seq = ?3 WHERE site_id = ?1 AND device_id = ?2",
    )?
    .execute(params![
        batch.site.as_str(),
        batch.device.to_string(),
        to_i64(batch.request_seq)
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;
    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Users, enrollment codes and device credentials through the store's interface.
    #[tokio::test]
    async fn users_codes_and_credentials_are_stored_by_hash() -> TestResult {
        use crate::credentials::{Secret, TokenKind};
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(dir.path().join("p.db"))?;
        let site = SiteId::new("site-1")?;
        store
            .create_site(Site {
                id: site.clone(),
                name: "s".into(),
                created_at_ms: 0,
            })
            .await?;

        // Users: created once per name, within existing sites, found by their token's hash.
        let (new, token) = crate::credentials::new_user(
            "ann".into(),
            crate::credentials::Role::Operator,
            Scope::Sites(vec![site.clone()]),
            None,
            1,
            1_000,
        )?;
        let ann = store.create_user(new.clone()).await?;
        assert!(matches!(
            store.create_user(new).await,
            Err(StoreError::UserExists(name)) if name == "ann"
        ));
        let (nowhere, _) = crate::credentials::new_user(
            "bob".into(),
            crate::credentials::Role::Operator,
            Scope::Sites(vec![SiteId::new("nowhere")?]),
            None,
            1,
            1_000,
        )?;
        assert!(matches!(
            store.create_user(nowhere).await,
            Err(StoreError::UnknownSite(_))
        ));
        let (found, stored) = store
            .user_by_token(token.hash())
            .await?
            .ok_or("ann not found by her token")?;
        assert_eq!(found, ann);
        assert_eq!(found.token_expires_at_ms, 1_001);
        assert!(stored.current.matches(&token.hash()));
        assert!(
            store
                .user_by_token(TokenHash::of("pu_other"))
                .await?
                .is_none()
        );
        let revoked = store.revoke_user(ann.id.clone(), 7).await?.ok_or("gone")?;
        assert_eq!(revoked.revoked_at_ms, Some(7));
        let again = store.revoke_user(ann.id.clone(), 9).await?.ok_or("gone")?;
        assert_eq!(
            again.revoked_at_ms,
            Some(7),
            "the first revocation time stays"
        );
        assert_eq!(store.users().await?, vec![again]);
        assert!(store.revoke_user("nobody".into(), 9).await?.is_none());

        // Enrollment: a code works once, before it expires; nothing else changes.
        let code = Secret::generate(TokenKind::Enrollment)?;
        let new_code = |code: &Secret, expires_at_ms| NewEnrollmentCode {
            site: site.clone(),
            code_hash: code.hash(),
            created_by: None,
            created_at_ms: 0,
            expires_at_ms,
        };
        store.create_enrollment_code(new_code(&code, 1_000)).await?;
        let credential = Secret::generate(TokenKind::Device)?;
        let enrollment = |code: &Secret, now_ms| Enrollment {
            code_hash: code.hash(),
            device: DeviceId::generate(),
            credential_hash: Secret::generate(TokenKind::Device)
                .map(|c| c.hash())
                .unwrap_or(TokenHash([0; 32])),
            public_key: None,
            now_ms,
        };
        let device = DeviceId::generate();
        let enrolled = store
            .enroll_device(Enrollment {
                code_hash: code.hash(),
                device,
                credential_hash: credential.hash(),
                public_key: None,
                now_ms: 500,
            })
            .await?;
        assert_eq!(
            (
                enrolled.site.clone(),
                enrolled.device,
                enrolled.last_request_seq
            ),
            (site.clone(), device, 0)
        );
        assert!(matches!(
            store.enroll_device(enrollment(&code, 600)).await,
            Err(StoreError::Enrollment(EnrollRefusal::Used {
                used_at_ms: 500
            }))
        ));
        let expired = Secret::generate(TokenKind::Enrollment)?;
        store
            .create_enrollment_code(new_code(&expired, 1_000))
            .await?;
        assert!(matches!(
            store.enroll_device(enrollment(&expired, 1_000)).await,
            Err(StoreError::Enrollment(EnrollRefusal::Expired {
                expired_at_ms: 1_000
            }))
        ));
        let unknown = Secret::generate(TokenKind::Enrollment)?;
        assert!(matches!(
            store.enroll_device(enrollment(&unknown, 1)).await,
            Err(StoreError::Enrollment(EnrollRefusal::Unknown))
        ));
        let elsewhere = NewEnrollmentCode {
            site: SiteId::new("nowhere")?,
            ..new_code(&unknown, 1_000)
        };
        assert!(matches!(
            store.create_enrollment_code(elsewhere).await,
            Err(StoreError::UnknownSite(_))
        ));
        assert_eq!(
            store.device_credentials(site.clone()).await?,
            Some(vec![enrolled.clone()])
        );

        // The credential finds its device; revoking keeps the first revocation time.
        let (by_credential, stored) = store
            .device_by_credential(credential.hash())
            .await?
            .ok_or("device not found by its credential")?;
        assert_eq!(by_credential, enrolled);
        assert!(stored.current.matches(&credential.hash()));
        let revoked = store
            .revoke_device(site.clone(), device, 800)
            .await?
            .ok_or("gone")?;
        assert_eq!(revoked.revoked_at_ms, Some(800));
        let again = store
            .revoke_device(site.clone(), device, 900)
            .await?
            .ok_or("gone")?;
        assert_eq!(again.revoked_at_ms, Some(800));
        assert!(
            store
                .revoke_device(site, DeviceId::generate(), 900)
                .await?
                .is_none()
        );
        // Only hashes are stored: no byte of the database or its log holds a token's text.
        let mut files = Vec::new();
        for suffix in ["", "-wal"] {
            let file = PathBuf::from(format!("{}{suffix}", store.path().display()));
            if file.exists() {
                files.push(std::fs::read(file)?);
            }
        }
        for secret in [token.expose(), code.expose(), credential.expose()] {
            let needle = secret.as_bytes();
            for bytes in &files {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
        Ok(())
    }
}
