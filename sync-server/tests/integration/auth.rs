//! Users, sites, enrollment and revocation through the real router: who may do what, and a
//! clear 4xx for everything else.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, SITE, TestResult, TestServer};

fn code(body: &Value) -> &str {
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    body["error"].as_str().unwrap_or("")
}

/// Creates a user as `token`; returns its token.
async fn user(server: &TestServer, token: &str, body: Value) -> Result<String, String> {
    let (status, answer) = server
        .post_json(token, "/api/v1/users", body)
        .await
        .map_err(|e| e.to_string())?;
    if status != StatusCode::CREATED {
        return Err(format!("{status} {answer}"));
    }
    let token = answer["token"].as_str().ok_or("no token")?;
    assert!(token.starts_with("pu_"), "{answer}");
    Ok(token.to_owned())
}

async fn administrators_manage_sites_and_users_within_their_scope(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let root = server.admin.clone();

    // Sites: only an administrator over all sites creates them.
    let (status, site) = server
        .post_json(
            &root,
            "/api/v1/sites",
            json!({"site_id": "mall-2", "name": "Mall"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{site}");
    assert_eq!(site["site_id"], "mall-2");
    let (status, again) = server
        .post_json(&root, "/api/v1/sites", json!({"site_id": "mall-2"}))
        .await?;
    assert_eq!(
        (status, code(&again)),
        (StatusCode::CONFLICT, "site_exists")
    );
    let (status, bad) = server
        .post_json(&root, "/api/v1/sites", json!({"site_id": "bad id"}))
        .await?;
    assert_eq!(
        (status, code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_site_id")
    );

    // A site administrator, and its operator.
    let admin_1 = user(
        &server,
        &root,
        json!({"name": "admin-1", "role": "admin", "sites": [SITE]}),
    )
    .await?;
    let op_1 = user(
        &server,
        &admin_1,
        json!({"name": "op-1", "role": "operator", "sites": [SITE]}),
    )
    .await?;
    let (status, denied) = server
        .post_json(&admin_1, "/api/v1/sites", json!({"site_id": "mall-3"}))
        .await?;
    assert_eq!(
        (status, code(&denied)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    for (token, body, status, error) in [
        (
            &admin_1,
            json!({"name": "x", "role": "operator", "sites": ["mall-2"]}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            &admin_1,
            json!({"name": "x", "role": "admin", "all_sites": true}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            &op_1,
            json!({"name": "x", "role": "operator", "sites": [SITE]}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            &root,
            json!({"name": "x", "role": "boss", "sites": [SITE]}),
            StatusCode::BAD_REQUEST,
            "invalid_role",
        ),
        (
            &root,
            json!({"name": "x", "role": "operator", "all_sites": true}),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            &root,
            json!({"name": "x", "role": "operator"}),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            &root,
            json!({"name": "x", "role": "operator", "sites": ["nowhere"]}),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
        (
            &root,
            json!({"name": "op-1", "role": "operator", "sites": [SITE]}),
            StatusCode::CONFLICT,
            "user_exists",
        ),
        (
            &root,
            json!({"name": "x", "role": "operator", "sites": [SITE], "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        let (got, answer) = server
            .post_json(token, "/api/v1/users", body.clone())
            .await?;
        assert_eq!((got, code(&answer)), (status, error), "{body}");
    }

    // Listings follow the scope: the site administrator sees the users of its site only.
    let names = |v: &Value, key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u[field].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, all) = server.get_json("/api/v1/users").await?;
    assert_eq!(names(&all, "users", "name"), ["admin", "admin-1", "op-1"]);
    let (_, mine) = server.get_json_as(&admin_1, "/api/v1/users").await?;
    assert_eq!(names(&mine, "users", "name"), ["admin-1", "op-1"]);
    let (status, _) = server.get_json_as(&op_1, "/api/v1/users").await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, sites) = server.get_json_as(&op_1, "/api/v1/sites").await?;
    assert_eq!(names(&sites, "sites", "site_id"), [SITE]);
    let (_, sites) = server.get_json("/api/v1/sites").await?;
    assert_eq!(names(&sites, "sites", "site_id"), ["mall-2", SITE]);

    // Revocation: within scope only; the token is refused from then on.
    let root_id = all["users"][0]["id"].as_str().ok_or("no id")?.to_owned();
    let op_id = all["users"][2]["id"].as_str().ok_or("no id")?.to_owned();
    let (status, _) = server
        .post_json(
            &admin_1,
            &format!("/api/v1/users/{root_id}/revoke"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, unknown) = server
        .post_json(&admin_1, "/api/v1/users/nobody/revoke", json!({}))
        .await?;
    assert_eq!(
        (status, code(&unknown)),
        (StatusCode::NOT_FOUND, "unknown_user")
    );
    let (status, revoked) = server
        .post_json(
            &admin_1,
            &format!("/api/v1/users/{op_id}/revoke"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, refused) = server
        .get_json_as(&op_1, &format!("/api/v1/sites/{SITE}/events"))
        .await?;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::UNAUTHORIZED, "revoked_credential")
    );
    Ok(())
}

async fn enrollment_codes_and_device_revocation(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let uri = format!("/api/v1/sites/{SITE}/enrollment-codes");
    for ttl in [0, 31 * 24 * 3600] {
        let (status, bad) = server
            .post_json(&server.admin, &uri, json!({"ttl_secs": ttl}))
            .await?;
        assert_eq!(
            (status, code(&bad)),
            (StatusCode::BAD_REQUEST, "invalid_ttl")
        );
    }
    let (status, unknown) = server
        .post_json(
            &server.admin,
            "/api/v1/sites/nowhere/enrollment-codes",
            json!({}),
        )
        .await?;
    assert_eq!(
        (status, code(&unknown)),
        (StatusCode::NOT_FOUND, "unknown_site")
    );
    let (status, issued) = server
        .post_json(&server.admin, &uri, json!({"ttl_secs": 600}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(issued["site"], SITE);
    assert!(
        issued["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("pe_"))
    );
    assert!(
        issued["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let (status, enrolled) = server
        .post_json("", "/api/v1/enroll", json!({"code": issued["code"]}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    let device = enrolled["device_id"]
        .as_str()
        .ok_or("no device")?
        .to_owned();
    let parsed: patrol_core::DeviceId = device.parse()?;
    assert_eq!(enrolled["actor_id"], parsed.actor_id().to_hex_string());
    assert!(
        enrolled["credential"]
            .as_str()
            .is_some_and(|c| c.starts_with("pd_"))
    );
    let (status, not_a_code) = server
        .post_json("", "/api/v1/enroll", json!({"code": server.admin}))
        .await?;
    assert_eq!(
        (status, code(&not_a_code)),
        (StatusCode::UNAUTHORIZED, "invalid_enrollment_code")
    );

    // Enrolled, not yet synced: listed with its enrollment and no sync.
    let (_, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    let listed = &devices["devices"][0];
    assert_eq!(listed["device_id"], device.as_str());
    assert!(listed["enrolled_at"].is_string() && listed["revoked_at"].is_null());
    assert!(listed["last_sync_at"].is_null(), "{devices}");

    let revoke = |d: &str| format!("/api/v1/sites/{SITE}/devices/{d}/revoke");
    let (status, bad) = server
        .post_json(&server.admin, &revoke("not-a-uuid"), json!({}))
        .await?;
    assert_eq!(
        (status, code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_device_id")
    );
    let other = patrol_core::DeviceId::generate().to_string();
    let (status, missing) = server
        .post_json(&server.admin, &revoke(&other), json!({}))
        .await?;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "unknown_device")
    );
    let (status, revoked) = server
        .post_json(&server.admin, &revoke(&device), json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let (_, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    assert_eq!(devices["devices"][0]["revoked_at"], revoked["revoked_at"]);
    Ok(())
}

/// Revokes `id` as `token`: the status and the body.
async fn revoke(
    server: &TestServer,
    token: &str,
    id: &str,
) -> Result<(StatusCode, Value), Box<dyn std::error::Error>> {
    server
        .post_json(token, &format!("/api/v1/users/{id}/revoke"), json!({}))
        .await
}

/// The id of the user named `name`.
async fn user_id(server: &TestServer, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let (_, all) = server.get_json("/api/v1/users").await?;
    let found = all["users"]
        .as_array()
        .and_then(|users| users.iter().find(|u| u["name"] == name))
        .and_then(|u| u["id"].as_str())
        .ok_or_else(|| format!("no user {name} in {all}"))?;
    Ok(found.to_owned())
}

async fn the_last_administrator_over_all_sites_is_never_revoked(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let root = server.admin.clone();
    let root_id = user_id(&server, "admin").await?;
    // A site's administrator does not count: it cannot manage sites.
    user(
        &server,
        &root,
        json!({"name": "admin-1", "role": "admin", "sites": [SITE]}),
    )
    .await?;

    let (status, refused) = revoke(&server, &root, &root_id).await?;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::CONFLICT, "last_administrator"),
        "{refused}"
    );
    let (status, _) = server.get_json_as(&root, "/api/v1/users").await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "the refused revocation changed nothing"
    );

    // With a second one, either may go, but not both.
    let second = user(
        &server,
        &root,
        json!({"name": "admin-2", "role": "admin", "all_sites": true}),
    )
    .await?;
    let second_id = user_id(&server, "admin-2").await?;
    let (status, body) = revoke(&server, &second, &root_id).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, refused) = revoke(&server, &second, &second_id).await?;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::CONFLICT, "last_administrator"),
        "{refused}"
    );

    // Two revoking each other at once: one of them stays.
    let third = user(
        &server,
        &second,
        json!({"name": "admin-3", "role": "admin", "all_sites": true}),
    )
    .await?;
    let (_, all) = server.get_json_as(&second, "/api/v1/users").await?;
    let third_id = all["users"]
        .as_array()
        .and_then(|users| users.iter().find(|u| u["name"] == "admin-3"))
        .and_then(|u| u["id"].as_str())
        .ok_or("no admin-3")?
        .to_owned();
    let (a, b) = tokio::join!(
        revoke(&server, &second, &third_id),
        revoke(&server, &third, &second_id)
    );
    let (a, b) = (a?, b?);
    let ok = [&a, &b]
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{a:?} {b:?}");
    let survivor = if a.0 == StatusCode::OK {
        &second
    } else {
        &third
    };
    let (_, all) = server.get_json_as(survivor, "/api/v1/users").await?;
    let active = all["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter(|u| u["all_sites"] == true && u["revoked_at"].is_null())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(active, 1, "{all}");
    Ok(())
}

crate::on_every_backend!(
    administrators_manage_sites_and_users_within_their_scope,
    enrollment_codes_and_device_revocation,
    the_last_administrator_over_all_sites_is_never_revoked,
);
