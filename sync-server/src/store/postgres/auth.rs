//! Sites, users, enrollment codes and device credentials on PostgreSQL (migration 0003 for the
//! auth tables). Only token hashes are stored; lookups are by hash, and the caller compares
//! again in constant time. A sync request's credential check and replay counter
//! ([`sync_refusal`], [`accept_request`]) run inside its write transaction.

use deadpool_postgres::GenericClient;
use patrol_core::{DeviceId, SiteId};
use tokio_postgres::Row;

use super::{execute, query, query_opt, to_i64};
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

fn read_site(row: &Row) -> Result<Site, StoreError> {
    let id: String = row.try_get(0)?;
    Ok(Site {
        id: read_site_id(&id)?,
        name: row.try_get(1)?,
        created_at_ms: row.try_get(2)?,
    })
}

pub(super) async fn get_site<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<Option<Site>, StoreError> {
    match query_opt(
        c,
        "SELECT site_id, name, created_at FROM sites WHERE site_id = $1",
        &[&site.as_str()],
    )
    .await?
    {
        Some(row) => Ok(Some(read_site(&row)?)),
        None => Ok(None),
    }
}

pub(super) async fn create_site<C: GenericClient>(c: &C, site: Site) -> Result<Site, StoreError> {
    let rows = execute(
        c,
        "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ($1, $2, 1, $3)
         ON CONFLICT (site_id) DO NOTHING",
        &[&site.id.as_str(), &site.name, &site.created_at_ms],
    )
    .await?;
    if rows == 0 {
        return Err(StoreError::SiteExists(site.id));
    }
    Ok(site)
}

pub(super) async fn list_sites<C: GenericClient>(c: &C) -> Result<Vec<Site>, StoreError> {
    query(
        c,
        "SELECT site_id, name, created_at FROM sites ORDER BY site_id",
        &[],
    )
    .await?
    .iter()
    .map(read_site)
    .collect()
}

/// A `users` row read with [`USER_COLUMNS`], its sites read from `user_sites`.
async fn read_user<C: GenericClient>(
    c: &C,
    row: &Row,
) -> Result<(User, StoredUserTokens), StoreError> {
    let id: String = row.try_get(0)?;
    let role: String = row.try_get(2)?;
    let all_sites: bool = row.try_get(3)?;
    let tokens = read_user_tokens(row.try_get(7)?, row.try_get(9)?, row.try_get(10)?)?;
    let scope = if all_sites {
        Scope::AllSites
    } else {
        let rows = query(
            c,
            "SELECT site_id FROM user_sites WHERE user_id = $1 ORDER BY site_id",
            &[&id],
        )
        .await?;
        let mut sites = Vec::with_capacity(rows.len());
        for r in rows {
            sites.push(read_site_id(r.try_get(0)?)?);
        }
        Scope::Sites(sites)
    };
    let user = User {
        role: role.parse().map_err(corrupt)?,
        name: row.try_get(1)?,
        scope,
        created_at_ms: row.try_get(4)?,
        created_by: row.try_get(5)?,
        revoked_at_ms: row.try_get(6)?,
        token_expires_at_ms: row.try_get(8)?,
        id,
    };
    Ok((user, tokens))
}

async fn user_by_id<C: GenericClient>(c: &C, id: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
    match query_opt(c, &sql, &[&id]).await? {
        Some(row) => Ok(Some(read_user(c, &row).await?.0)),
        None => Ok(None),
    }
}

/// Creates a user and its sites inside `tx`.
pub(super) async fn create_user<C: GenericClient>(
    tx: &C,
    new: NewUser,
) -> Result<User, StoreError> {
    let NewUser {
        user,
        token_hash,
        password,
    } = new;
    let sites = access::scope_sites(&user.scope);
    for site in sites {
        access::require_site(site, get_site(tx, site).await?)?;
    }
    let password = password.map(|p| p.0);
    let inserted = execute(
        tx,
        "INSERT INTO users (user_id, name, role, all_sites, token_hash, created_at, created_by,
             token_expires_at, password_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (name) DO NOTHING",
        &[
            &user.id,
            &user.name,
            &user.role.as_str(),
            &(user.scope == Scope::AllSites),
            &token_hash.0.as_slice(),
            &user.created_at_ms,
            &user.created_by,
            &user.token_expires_at_ms,
            &password,
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::UserExists(user.name));
    }
    for site in sites {
        execute(
            tx,
            "INSERT INTO user_sites (site_id, user_id) VALUES ($1, $2)",
            &[&site.as_str(), &user.id],
        )
        .await?;
    }
    Ok(user)
}

pub(super) async fn users<C: GenericClient>(c: &C) -> Result<Vec<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id");
    let rows = query(c, &sql, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(read_user(c, row).await?.0);
    }
    Ok(out)
}

pub(super) async fn user_by_token<C: GenericClient>(
    c: &C,
    hash: &TokenHash,
) -> Result<Option<(User, StoredUserTokens)>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE token_hash = $1 OR previous_token_hash = $1"
    );
    match query_opt(c, &sql, &[&hash.0.as_slice()]).await? {
        Some(row) => Ok(Some(read_user(c, &row).await?)),
        None => Ok(None),
    }
}

/// Revokes a user (the first revocation time stands).
pub(super) async fn revoke_user<C: GenericClient>(
    tx: &C,
    id: &str,
    at_ms: i64,
) -> Result<Option<User>, StoreError> {
    // Locks the active administrators over all sites (and the target): two revocations at once
    // wait for each other, and the second counts what the first left.
    let locked = query(
        tx,
        "SELECT user_id FROM users
         WHERE (role = 'admin' AND all_sites AND revoked_at IS NULL) OR user_id = $1
         ORDER BY user_id FOR UPDATE",
        &[&id],
    )
    .await?;
    let Some(target) = user_by_id(tx, id).await? else {
        return Ok(None);
    };
    let others = locked
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    let others = others.iter().filter(|u| u.as_str() != id).count();
    access::check_revocation(&target, i64::try_from(others).unwrap_or(i64::MAX))?;
    execute(
        tx,
        "UPDATE users SET revoked_at = COALESCE(revoked_at, $2) WHERE user_id = $1",
        &[&id, &at_ms],
    )
    .await?;
    execute(tx, "DELETE FROM user_sessions WHERE user_id = $1", &[&id]).await?;
    user_by_id(tx, id).await
}

pub(super) async fn rotate_user_token<C: GenericClient>(
    c: &C,
    id: &str,
    rotation: UserTokenRotation,
) -> Result<Option<User>, StoreError> {
    execute(
        c,
        "UPDATE users SET
             previous_token_hash = CASE WHEN $4::bigint IS NULL THEN NULL ELSE token_hash END,
             previous_token_expires_at = $4,
             token_hash = $2,
             token_expires_at = $3
         WHERE user_id = $1",
        &[
            &id,
            &rotation.token_hash.0.as_slice(),
            &rotation.expires_at_ms,
            &rotation.previous_valid_until_ms,
        ],
    )
    .await?;
    user_by_id(c, id).await
}

pub(super) async fn user_with_password<C: GenericClient>(
    c: &C,
    key: &UserKey,
) -> Result<Option<UserWithPassword>, StoreError> {
    let (column, value) = match key {
        UserKey::Id(id) => ("user_id", id),
        UserKey::Name(name) => ("name", name),
    };
    let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE {column} = $1");
    match query_opt(c, &sql, &[value]).await? {
        Some(row) => {
            let (user, _) = read_user(c, &row).await?;
            let password: Option<String> = row.try_get(11)?;
            Ok(Some((user, password.map(PasswordHashString))))
        }
        None => Ok(None),
    }
}

pub(super) async fn set_user_password<C: GenericClient>(
    tx: &C,
    id: &str,
    password: &PasswordHashString,
    keep: Option<TokenHash>,
) -> Result<Option<User>, StoreError> {
    let changed = execute(
        tx,
        "UPDATE users SET password_hash = $2 WHERE user_id = $1",
        &[&id, &password.0],
    )
    .await?;
    if changed == 0 {
        return Ok(None);
    }
    let keep = keep.map(|k| k.0.to_vec());
    execute(
        tx,
        "DELETE FROM user_sessions
         WHERE user_id = $1 AND ($2::bytea IS NULL OR session_hash <> $2)",
        &[&id, &keep],
    )
    .await?;
    user_by_id(tx, id).await
}

pub(super) async fn create_session<C: GenericClient>(
    tx: &C,
    user_id: &str,
    session: &StoredSession,
    idle_ms: i64,
) -> Result<(), StoreError> {
    let now = session.created_at_ms;
    execute(
        tx,
        "DELETE FROM user_sessions WHERE expires_at <= $1 OR last_used_at <= $2",
        &[&now, &now.saturating_sub(idle_ms)],
    )
    .await?;
    execute(
        tx,
        "INSERT INTO user_sessions (session_hash, user_id, created_at, expires_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &session.hash.0.as_slice(),
            &user_id,
            &session.created_at_ms,
            &session.expires_at_ms,
            &session.last_used_at_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn session_by_token<C: GenericClient>(
    c: &C,
    hash: &TokenHash,
) -> Result<Option<(User, StoredSession)>, StoreError> {
    let Some(row) = query_opt(
        c,
        "SELECT session_hash, user_id, created_at, expires_at, last_used_at
         FROM user_sessions WHERE session_hash = $1",
        &[&hash.0.as_slice()],
    )
    .await?
    else {
        return Ok(None);
    };
    let user_id: String = row.try_get(1)?;
    let Some(user) = user_by_id(c, &user_id).await? else {
        return Ok(None);
    };
    let session = StoredSession {
        hash: read_hash(row.try_get::<_, &[u8]>(0)?, "a session hash")?,
        created_at_ms: row.try_get(2)?,
        expires_at_ms: row.try_get(3)?,
        last_used_at_ms: row.try_get(4)?,
    };
    Ok(Some((user, session)))
}

pub(super) async fn create_enrollment_code<C: GenericClient>(
    c: &C,
    code: NewEnrollmentCode,
) -> Result<(), StoreError> {
    access::require_site(&code.site, get_site(c, &code.site).await?)?;
    execute(
        c,
        "INSERT INTO enrollment_codes (site_id, code_hash, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &code.site.as_str(),
            &code.code_hash.0.as_slice(),
            &code.created_by,
            &code.created_at_ms,
            &code.expires_at_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Uses an enrollment code and stores the device's credential inside `tx`. The code's row is
/// locked, so two devices racing with one code cannot both enroll.
pub(super) async fn enroll_device<C: GenericClient>(
    tx: &C,
    e: Enrollment,
) -> Result<DeviceCredential, StoreError> {
    let row = query_opt(
        tx,
        "SELECT site_id, code_hash, expires_at, used_at FROM enrollment_codes
         WHERE code_hash = $1 FOR NO KEY UPDATE",
        &[&e.code_hash.0.as_slice()],
    )
    .await?;
    let Some(row) = row else {
        return Err(StoreError::Enrollment(EnrollRefusal::Unknown));
    };
    let site: String = row.try_get(0)?;
    let code = StoredCode {
        code_hash: row.try_get(1)?,
        expires_at_ms: row.try_get(2)?,
        used_at_ms: row.try_get(3)?,
    };
    access::check_code(code, &e)?;
    let device = e.device.to_string();
    execute(
        tx,
        "UPDATE enrollment_codes SET used_at = $3, device_id = $4
         WHERE site_id = $1 AND code_hash = $2",
        &[&site, &e.code_hash.0.as_slice(), &e.now_ms, &device],
    )
    .await?;
    let public_key = e.public_key.map(|k| k.to_bytes().to_vec());
    execute(
        tx,
        "INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at,
             public_key, credential_issued_at)
         VALUES ($1, $2, $3, $4, $5, $4)",
        &[
            &site,
            &device,
            &e.credential_hash.0.as_slice(),
            &e.now_ms,
            &public_key,
        ],
    )
    .await?;
    access::enrolled(&site, &e)
}

fn read_device_credential(
    row: &Row,
) -> Result<(DeviceCredential, StoredDeviceCredentials), StoreError> {
    let last: i64 = row.try_get(4)?;
    let credential = DeviceCredential {
        site: read_site_id(row.try_get(0)?)?,
        device: read_device_id(row.try_get(1)?)?,
        enrolled_at_ms: row.try_get(2)?,
        revoked_at_ms: row.try_get(3)?,
        last_request_seq: u64::try_from(last).unwrap_or(0),
        public_key: read_public_key(row.try_get(6)?)?,
        credential_issued_at_ms: row.try_get(7)?,
    };
    let stored = read_device_credentials(row.try_get(5)?, row.try_get(8)?)?;
    Ok((credential, stored))
}

pub(super) async fn device_by_credential<C: GenericClient>(
    c: &C,
    hash: &TokenHash,
) -> Result<Option<(DeviceCredential, StoredDeviceCredentials)>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
         WHERE credential_hash = $1 OR next_credential_hash = $1"
    );
    match query_opt(c, &sql, &[&hash.0.as_slice()]).await? {
        Some(row) => Ok(Some(read_device_credential(&row)?)),
        None => Ok(None),
    }
}

async fn device_credential<C: GenericClient>(
    c: &C,
    site: &SiteId,
    device: &str,
) -> Result<Option<DeviceCredential>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
         WHERE site_id = $1 AND device_id = $2"
    );
    match query_opt(c, &sql, &[&site.as_str(), &device]).await? {
        Some(row) => Ok(Some(read_device_credential(&row)?.0)),
        None => Ok(None),
    }
}

/// Stores the device's next credential (replacing an unused one).
pub(super) async fn stage_device_credential<C: GenericClient>(
    c: &C,
    site: &SiteId,
    device: &DeviceId,
    next: &TokenHash,
    at_ms: i64,
) -> Result<Option<DeviceCredential>, StoreError> {
    let device = device.to_string();
    execute(
        c,
        "UPDATE device_credentials SET next_credential_hash = $3, next_issued_at = $4
         WHERE site_id = $1 AND device_id = $2",
        &[&site.as_str(), &device, &next.0.as_slice(), &at_ms],
    )
    .await?;
    device_credential(c, site, &device).await
}

/// Makes the device's next credential, if it is `next`, its current one.
pub(super) async fn promote_device_credential<C: GenericClient>(
    c: &C,
    site: &SiteId,
    device: &DeviceId,
    next: &TokenHash,
) -> Result<Option<DeviceCredential>, StoreError> {
    let device = device.to_string();
    let promoted = execute(
        c,
        "UPDATE device_credentials SET credential_hash = next_credential_hash,
             credential_issued_at = next_issued_at, next_credential_hash = NULL,
             next_issued_at = NULL
         WHERE site_id = $1 AND device_id = $2 AND next_credential_hash = $3",
        &[&site.as_str(), &device, &next.0.as_slice()],
    )
    .await?;
    if promoted != 1 {
        return Ok(None);
    }
    device_credential(c, site, &device).await
}

pub(super) async fn device_credentials<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<Option<Vec<DeviceCredential>>, StoreError> {
    if get_site(c, site).await?.is_none() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
         WHERE site_id = $1 ORDER BY device_id"
    );
    let rows = query(c, &sql, &[&site.as_str()]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(read_device_credential(row)?.0);
    }
    Ok(Some(out))
}

/// Revokes a device's credential (the first revocation time stands).
pub(super) async fn revoke_device<C: GenericClient>(
    tx: &C,
    site: &SiteId,
    device: &DeviceId,
    at_ms: i64,
) -> Result<Option<DeviceCredential>, StoreError> {
    let device = device.to_string();
    execute(
        tx,
        "UPDATE device_credentials SET revoked_at = COALESCE(revoked_at, $3)
         WHERE site_id = $1 AND device_id = $2",
        &[&site.as_str(), &device, &at_ms],
    )
    .await?;
    device_credential(tx, site, &device).await
}

/// Revokes, at `now_ms`, every device whose stored key is refused ([`access::refused_keys`]),
/// and clears the key.
pub(super) async fn revoke_refused_keys<C: GenericClient>(
    tx: &C,
    now_ms: i64,
) -> Result<(), StoreError> {
    let rows = query(
        tx,
        "SELECT site_id, device_id, public_key FROM device_credentials
         WHERE public_key IS NOT NULL FOR UPDATE",
        &[],
    )
    .await?;
    let stored = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    for (site, device) in access::refused_keys(stored) {
        execute(
            tx,
            "UPDATE device_credentials SET revoked_at = COALESCE(revoked_at, $3), public_key = NULL
             WHERE site_id = $1 AND device_id = $2",
            &[&site, &device, &now_ms],
        )
        .await?;
    }
    Ok(())
}

/// Why the device may not sync `batch`, if it may not: no credential on the site, a revoked
/// one, or a request seq not greater than the last accepted. Locks the credential's row until
/// the transaction ends, so that one device's requests are checked and recorded one at a time
/// whichever instance they reach.
pub(super) async fn sync_refusal<C: GenericClient>(
    tx: &C,
    batch: &SyncBatch,
) -> Result<Option<SyncRefusal>, StoreError> {
    let row = query_opt(
        tx,
        "SELECT last_request_seq, revoked_at FROM device_credentials
         WHERE site_id = $1 AND device_id = $2 FOR NO KEY UPDATE",
        &[&batch.site.as_str(), &batch.device.to_string()],
    )
    .await?;
    let credential = match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    };
    Ok(access::sync_refusal(credential, batch))
}

/// Records the request's seq as the device's last accepted, in the request's transaction.
pub(super) async fn accept_request<C: GenericClient>(
    tx: &C,
    batch: &SyncBatch,
) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE device_credentials SET last_request_seq = $3
         WHERE site_id = $1 AND device_id = $2",
        &[
            &batch.site.as_str(),
            &batch.device.to_string(),
            &to_i64(batch.request_seq),
        ],
    )
    .await?;
    Ok(())
}
