//! What `patrol-server site list` and `user list` print: a table for people (a header row,
//! columns that keep their order, times in local time with their offset) or, with `--json`, one
//! JSON document with the very fields the API's `GET /api/v1/sites` and `GET /api/v1/users`
//! answer with ([`SiteView`], [`UserView`]), so a script reads both the same way.

use chrono::TimeZone;
use comfy_table::Table;

use crate::credentials::{Scope, User};
use crate::http::admin::SiteView;
use crate::http::user_view::UserView;
use crate::store::Site;

pub use patrol_term::ms_in as local_time;
use patrol_term::{NONE, table};

/// The table as lines, with a final line break.
fn render(mut table: Table) -> String {
    let mut text = patrol_term::render(&mut table);
    text.push('\n');
    text
}

/// The sites as a table: ID, NAME, CREATED.
pub fn sites_table<Tz: TimeZone>(sites: &[Site], tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut t = table(&["ID", "NAME", "CREATED"]);
    for site in sites {
        t.add_row(vec![
            site.id.to_string(),
            patrol_term::shown(&site.name),
            local_time(site.created_at_ms, tz),
        ]);
    }
    render(t)
}

/// The sites as `{"sites": [...]}`, as `GET /api/v1/sites` answers.
pub fn sites_json(sites: Vec<Site>) -> serde_json::Result<String> {
    let sites: Vec<SiteView> = sites.into_iter().map(SiteView::from).collect();
    serde_json::to_string_pretty(&serde_json::json!({ "sites": sites }))
}

/// The sites a user covers, in words: `all` or the site ids, comma-separated.
pub fn describe_scope(scope: &Scope) -> String {
    match scope {
        Scope::AllSites => "all".into(),
        Scope::Sites(sites) => sites
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Whether the user's requests are taken: `revoked`, `expired` (its token, at `now_ms`), or
/// `active`.
fn status(user: &User, now_ms: i64) -> &'static str {
    if user.revoked_at_ms.is_some() {
        "revoked"
    } else if user.token_expires_at_ms <= now_ms {
        "expired"
    } else {
        "active"
    }
}

/// The users as a table: ID, NAME, ROLE, SITES, STATUS, CREATED, EXPIRES (the token),
/// REVOKED.
pub fn users_table<Tz: TimeZone>(users: &[User], now_ms: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut t = table(&[
        "ID", "NAME", "ROLE", "SITES", "STATUS", "CREATED", "EXPIRES", "REVOKED",
    ]);
    for user in users {
        t.add_row(vec![
            user.id.clone(),
            patrol_term::shown(&user.name),
            user.role.as_str().to_owned(),
            describe_scope(&user.scope),
            status(user, now_ms).to_owned(),
            local_time(user.created_at_ms, tz),
            local_time(user.token_expires_at_ms, tz),
            user.revoked_at_ms
                .map_or_else(|| NONE.to_owned(), |t| local_time(t, tz)),
        ]);
    }
    render(t)
}

/// The users as `{"users": [...]}`, as `GET /api/v1/users` answers.
pub fn users_json(users: Vec<User>) -> serde_json::Result<String> {
    let users: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    serde_json::to_string_pretty(&serde_json::json!({ "users": users }))
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;
    use patrol_core::SiteId;

    use super::*;
    use crate::credentials::Role;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// 2026-12-06T17:03:12.345Z.
    const AT: i64 = 1_796_576_592_345;

    fn plus_one() -> Result<FixedOffset, String> {
        FixedOffset::east_opt(3600).ok_or_else(|| "offset".to_string())
    }

    #[test]
    fn times_are_local_with_their_offset() -> TestResult {
        assert_eq!(local_time(AT, &plus_one()?), "2026-12-06 18:03:12 +01:00");
        assert_eq!(local_time(AT, &chrono::Utc), "2026-12-06 17:03:12 +00:00");
        assert_eq!(local_time(i64::MAX, &chrono::Utc), i64::MAX.to_string());
        Ok(())
    }

    #[test]
    fn the_site_table_has_a_header_and_aligned_columns() -> TestResult {
        let sites = [
            Site::new(SiteId::new("mall-1")?, Some("City Mall".into()), AT)?,
            Site::new(SiteId::new("depot")?, None, AT)?,
        ];
        let text = sites_table(&sites, &plus_one()?);
        assert_eq!(
            text,
            "ID      NAME       CREATED\n\
             mall-1  City Mall  2026-12-06 18:03:12 +01:00\n\
             depot   depot      2026-12-06 18:03:12 +01:00\n"
        );
        assert_eq!(sites_table(&[], &plus_one()?), "ID  NAME  CREATED\n");
        let json: serde_json::Value = serde_json::from_str(&sites_json(sites.to_vec())?)?;
        assert_eq!(json["sites"][0]["site_id"], "mall-1");
        assert_eq!(json["sites"][0]["name"], "City Mall");
        assert_eq!(json["sites"][1]["created_at"], "2026-12-06T17:03:12.345Z");
        Ok(())
    }

    #[test]
    fn the_user_table_says_who_may_still_sign_in() -> TestResult {
        let user = |name: &str, scope: Scope, expires: i64, revoked: Option<i64>| User {
            id: format!("id-{name}"),
            name: name.into(),
            role: Role::Operator,
            scope,
            created_at_ms: AT,
            created_by: None,
            revoked_at_ms: revoked,
            token_expires_at_ms: expires,
        };
        let users = [
            user("ann", Scope::AllSites, AT + 1, None),
            user(
                "bob",
                Scope::Sites(vec![SiteId::new("a")?, SiteId::new("b")?]),
                AT,
                None,
            ),
            user("cy", Scope::AllSites, AT + 1, Some(AT)),
        ];
        let text = users_table(&users, AT, &plus_one()?);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "ID", "NAME", "ROLE", "SITES", "STATUS", "CREATED", "EXPIRES", "REVOKED"
            ]
        );
        // Each column starts where its header does.
        let status_at = lines[0].find("STATUS").ok_or("no STATUS")?;
        let revoked_at = lines[0].find("REVOKED").ok_or("no REVOKED")?;
        let cells: Vec<(&str, &str)> = lines[1..]
            .iter()
            .map(|l| (&l[status_at..status_at + 7], &l[revoked_at..]))
            .collect();
        assert_eq!(
            cells,
            [
                ("active ", "-"),
                ("expired", "-"),
                ("revoked", "2026-12-06 18:03:12 +01:00")
            ]
        );
        assert!(lines[2].contains(" a,b "), "{text}");
        assert!(lines[1].contains(" all "), "{text}");
        let json: serde_json::Value = serde_json::from_str(&users_json(users.to_vec())?)?;
        assert_eq!(json["users"][1]["sites"], serde_json::json!(["a", "b"]));
        assert_eq!(json["users"][0]["all_sites"], true);
        assert_eq!(json["users"][2]["revoked_at"], "2026-12-06T17:03:12.345Z");
        Ok(())
    }
}
