//! The checks both backends make before they write, each written once here: that a site named
//! by a write exists, which sites a user's scope names, whether an enrollment code may still be
//! used, and whether a device may sync a request. A backend reads the rows (in the transaction
//! that then writes) and applies these.

use patrol_core::SiteId;

use super::rows::{read_hash, read_site_id};
use super::{
    DeviceCredential, EnrollRefusal, Enrollment, Site, StoreError, SyncBatch, SyncRefusal,
};
use crate::credentials::{Role, Scope, User};

/// The devices among `stored` (site, device, public key as stored) whose key this server no
/// longer accepts: a weak or non-canonical ed25519 key, enrolled before such keys were refused,
/// against which a constant signature verifies. Each is logged; the backend then revokes the
/// device and clears the key at start-up, so its logs neither sync nor verify (the phone must
/// be enrolled again), and reading the device does not fail on the key.
pub fn refused_keys(stored: Vec<(String, String, Vec<u8>)>) -> Vec<(String, String)> {
    stored
        .into_iter()
        .filter_map(|(site, device, key)| {
            let why = patrol_core::evidence::PublicKey::from_bytes(&key).err()?;
            tracing::warn!(
                %site, %device, reason = %why,
                "revoking a device enrolled with a public key this server refuses; enroll the phone again"
            );
            Some((site, device))
        })
        .collect()
}

/// The site a write names, which must exist ([`StoreError::UnknownSite`] otherwise).
pub fn require_site(site: &SiteId, found: Option<Site>) -> Result<Site, StoreError> {
    found.ok_or_else(|| StoreError::UnknownSite(site.clone()))
}

/// The sites a user's scope names, each of which must exist; none for a user of every site.
pub fn scope_sites(scope: &Scope) -> &[SiteId] {
    match scope {
        Scope::AllSites => &[],
        Scope::Sites(sites) => sites,
    }
}

/// Whether `target` (as stored before its revocation) may be revoked, given how many *other*
/// active administrators over all sites there are (counted in the transaction that revokes, with
/// their rows locked): not the last one ([`StoreError::LastAdministrator`]).
pub fn check_revocation(target: &User, other_global_admins: i64) -> Result<(), StoreError> {
    let active_global_admin = target.role == Role::Admin
        && matches!(target.scope, Scope::AllSites)
        && target.revoked_at_ms.is_none();
    if active_global_admin && other_global_admins == 0 {
        return Err(StoreError::LastAdministrator(target.name.clone()));
    }
    Ok(())
}

/// An enrollment code as stored, looked up by the hash an enrollment presents.
#[derive(Debug)]
pub struct StoredCode<'a> {
    pub code_hash: &'a [u8],
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

/// Whether `e` may use the code `stored` (found by the hash it presents; no code found is
/// [`EnrollRefusal::Unknown`]): the stored hash must match, and the code be unused and unexpired
/// at `e.now_ms`; [`StoreError::Enrollment`] says why not.
pub fn check_code(stored: StoredCode<'_>, e: &Enrollment) -> Result<(), StoreError> {
    if !read_hash(stored.code_hash, "a code hash")?.matches(&e.code_hash) {
        return Err(StoreError::Enrollment(EnrollRefusal::Unknown));
    }
    if let Some(used_at_ms) = stored.used_at_ms {
        return Err(StoreError::Enrollment(EnrollRefusal::Used { used_at_ms }));
    }
    if e.now_ms >= stored.expires_at_ms {
        return Err(StoreError::Enrollment(EnrollRefusal::Expired {
            expired_at_ms: stored.expires_at_ms,
        }));
    }
    Ok(())
}

/// The credential an enrollment stores, on the code's site.
pub fn enrolled(site: &str, e: &Enrollment) -> Result<DeviceCredential, StoreError> {
    Ok(DeviceCredential {
        site: read_site_id(site)?,
        device: e.device,
        enrolled_at_ms: e.now_ms,
        revoked_at_ms: None,
        last_request_seq: 0,
        public_key: e.public_key,
        credential_issued_at_ms: e.now_ms,
    })
}

/// Why the device may not sync `batch`, if it may not, from its credential's row (its last
/// accepted request seq and its revocation time; `None`: no credential on the site): no
/// credential, a revoked one, or a request seq not greater than the last accepted.
pub fn sync_refusal(
    credential: Option<(i64, Option<i64>)>,
    batch: &SyncBatch,
) -> Option<SyncRefusal> {
    match credential {
        None => Some(SyncRefusal::NotEnrolled),
        Some((_, Some(_))) => Some(SyncRefusal::Revoked),
        Some((last, None)) => {
            let last = u64::try_from(last).unwrap_or(0);
            (batch.request_seq <= last).then_some(SyncRefusal::Replayed { last_seq: last })
        }
    }
}
