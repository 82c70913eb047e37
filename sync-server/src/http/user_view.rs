//! A user as the API shows it, in the answers of both the administration routes and the
//! sign-in ones (shared, so that neither resource imports the other).

use patrol_core::event::format_time_ms;
use serde::Serialize;
use utoipa::ToSchema;

use crate::credentials::{Scope, User};

/// A user as `GET /api/v1/users` and `patrol-server user list --json` show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    id: String,
    name: String,
    role: &'static str,
    all_sites: bool,
    sites: Vec<String>,
    created_at: String,
    created_by: Option<String>,
    revoked_at: Option<String>,
    /// When the user's current token stops working unless rotated (RFC 3339).
    token_expires_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        let (all_sites, sites) = match u.scope {
            Scope::AllSites => (true, Vec::new()),
            Scope::Sites(sites) => (false, sites.iter().map(|s| s.to_string()).collect()),
        };
        UserView {
            id: u.id,
            name: u.name,
            role: u.role.as_str(),
            all_sites,
            sites,
            created_at: format_time_ms(u.created_at_ms),
            created_by: u.created_by,
            revoked_at: u.revoked_at_ms.map(format_time_ms),
            token_expires_at: format_time_ms(u.token_expires_at_ms),
        }
    }
}
