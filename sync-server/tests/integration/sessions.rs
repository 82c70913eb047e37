//! Passwords and sign-in sessions in the store, on both backends: a user's password is found by
//! name or id; a session is found by its token's hash, its use recorded, and it ends on
//! sign-out, on a password change (all but the session the change came from), on its user's
//! revocation, and is dropped once past its lifetime. Then the same through the real router:
//! the cookie reads what the user's token reads, and a password change ends other sessions.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use patrol_server::credentials::passwords::NewPassword;
use patrol_server::credentials::sessions::{SessionPolicy, new_session};
use patrol_server::credentials::{Role, Scope, new_user};
use patrol_server::store::UserKey;
use serde_json::{Value, json};

use crate::common::{Backend, SITE, TestResult, TestServer, site};

const HOUR: i64 = 3_600_000;
const POLICY: SessionPolicy = SessionPolicy {
    ttl_ms: 12 * HOUR,
    idle_ms: HOUR,
};

async fn sessions_are_stored_by_hash_and_end_with_the_password_or_the_user(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let (mut new, _) = new_user(
        "ann".into(),
        Role::Operator,
        Scope::Sites(vec![site()]),
        None,
        0,
        i64::MAX,
    )?;
    let hash = NewPassword::new("correct horse battery".into())?.hash()?;
    new.password = Some(hash.clone());
    let ann = store.create_user(new).await?;

    // Found by name and by id, with the password; a user without one has none.
    let (found, stored) = store
        .user_with_password(UserKey::Name("ann".into()))
        .await?
        .ok_or("ann not found by name")?;
    assert_eq!(
        (found.id.as_str(), stored.as_ref()),
        (ann.id.as_str(), Some(&hash))
    );
    assert!(
        store
            .user_with_password(UserKey::Id(ann.id.clone()))
            .await?
            .is_some()
    );
    assert_eq!(
        store
            .user_with_password(UserKey::Name("Ann".into()))
            .await?,
        None
    );
    let (_, admin_password) = store
        .user_with_password(UserKey::Name("admin".into()))
        .await?
        .ok_or("no admin")?;
    assert_eq!(admin_password, None);

    // Two sessions; one is found by its hash, and its use recorded.
    let now = 10 * HOUR;
    let (laptop, laptop_token) = new_session(now, POLICY)?;
    let (tablet, _) = new_session(now, POLICY)?;
    store
        .create_session(ann.id.clone(), laptop, POLICY.idle_ms)
        .await?;
    store
        .create_session(ann.id.clone(), tablet, POLICY.idle_ms)
        .await?;
    let (user, session) = store
        .session_by_token(laptop_token.hash())
        .await?
        .ok_or("the laptop's session is not found")?;
    assert_eq!((user.id.as_str(), session), (ann.id.as_str(), laptop));
    store.touch_session(laptop.hash, now + 90_000).await?;
    store.touch_session(laptop.hash, now + 30_000).await?;
    let (_, touched) = store.session_by_token(laptop.hash).await?.ok_or("gone")?;
    assert_eq!(
        touched.last_used_at_ms,
        now + 90_000,
        "a use never goes back"
    );

    // A password change from the laptop ends the tablet's session, not the laptop's.
    let other = NewPassword::new("another long passphrase".into())?.hash()?;
    store
        .set_user_password(ann.id.clone(), other.clone(), Some(laptop.hash))
        .await?
        .ok_or("ann disappeared")?;
    assert!(store.session_by_token(laptop.hash).await?.is_some());
    assert_eq!(store.session_by_token(tablet.hash).await?, None);
    let (_, stored) = store
        .user_with_password(UserKey::Id(ann.id.clone()))
        .await?
        .ok_or("ann")?;
    assert_eq!(stored, Some(other.clone()));
    assert_eq!(
        store
            .set_user_password("nobody".into(), other, None)
            .await?,
        None
    );

    // Sign-out deletes it, once.
    assert!(store.delete_session(laptop.hash).await?);
    assert!(!store.delete_session(laptop.hash).await?);

    // A revocation ends every session of the user.
    let (phone, _) = new_session(now, POLICY)?;
    store
        .create_session(ann.id.clone(), phone, POLICY.idle_ms)
        .await?;
    store.revoke_user(ann.id.clone(), now).await?;
    assert_eq!(store.session_by_token(phone.hash).await?, None);
    Ok(())
}

async fn ended_sessions_are_dropped_at_the_next_sign_in(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let (admin, _) = store
        .user_with_password(UserKey::Name("admin".into()))
        .await?
        .ok_or("no admin")?;
    let (idle, _) = new_session(0, POLICY)?;
    let (busy, _) = new_session(0, POLICY)?;
    store
        .create_session(admin.id.clone(), idle, POLICY.idle_ms)
        .await?;
    store
        .create_session(admin.id.clone(), busy, POLICY.idle_ms)
        .await?;
    store.touch_session(busy.hash, 2 * HOUR).await?;
    let (later, _) = new_session(2 * HOUR + 1, POLICY)?;
    store
        .create_session(admin.id.clone(), later, POLICY.idle_ms)
        .await?;
    assert_eq!(
        store.session_by_token(idle.hash).await?,
        None,
        "idle for two hours"
    );
    assert!(store.session_by_token(busy.hash).await?.is_some());
    let (last, _) = new_session(13 * HOUR, POLICY)?;
    store.touch_session(busy.hash, 13 * HOUR - 1).await?;
    store
        .create_session(admin.id.clone(), last, POLICY.idle_ms)
        .await?;
    assert_eq!(
        store.session_by_token(busy.hash).await?,
        None,
        "past its lifetime"
    );
    Ok(())
}

/// Sends `method uri` with the session `cookie` (and `X-Patrol-Request: 1`), and `body` as
/// JSON if given: (status, Set-Cookie, JSON answer or null).
async fn with_cookie(
    server: &TestServer,
    method: &str,
    uri: &str,
    cookie: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Option<String>, Value), Box<dyn std::error::Error>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-patrol-request", "1");
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, format!("patrol_session={cookie}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let request = req.body(body)?;
    let response = patrol_server::router(server.state.clone());
    let response = tower::ServiceExt::oneshot(response, request).await?;
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, set_cookie, json))
}

/// Signs in as `name`: the session token from the cookie, or the refusal.
async fn sign_in(
    server: &TestServer,
    name: &str,
    password: &str,
) -> Result<Result<String, (StatusCode, Value)>, Box<dyn std::error::Error>> {
    let (status, cookie, body) = with_cookie(
        server,
        "POST",
        "/api/v1/session",
        "",
        Some(json!({ "name": name, "password": password })),
    )
    .await?;
    if status != StatusCode::OK {
        return Ok(Err((status, body)));
    }
    let cookie = cookie.ok_or("no Set-Cookie")?;
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let token = cookie
        .strip_prefix("patrol_session=")
        .and_then(|c| c.split(';').next())
        .ok_or("no session in the cookie")?;
    Ok(Ok(token.to_owned()))
}

async fn the_cookie_reads_what_the_token_reads_until_the_password_changes(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let admin = server.admin.clone();
    let (status, created) = server
        .post_json(
            &admin,
            "/api/v1/users",
            json!({"name": "op", "role": "operator", "sites": [SITE], "password": "night shift passphrase"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, short) = server
        .post_json(
            &admin,
            "/api/v1/users",
            json!({"name": "op2", "role": "operator", "sites": [SITE], "password": "too short"}),
        )
        .await?;
    assert_eq!(
        (status, &short["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_password"))
    );
    assert_eq!(
        server.get_json("/api/v1/users").await?.1["users"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let wrong = sign_in(&server, "op", "night shift passphrasE").await?;
    let unknown = sign_in(&server, "nobody", "night shift passphrase").await?;
    let Err((status, wrong)) = wrong else {
        return Err("a wrong password signed in".into());
    };
    let Err((_, unknown)) = unknown else {
        return Err("an unknown name signed in".into());
    };
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong, unknown,
        "the same answer for a wrong name and a wrong password"
    );

    let laptop = sign_in(&server, "op", "night shift passphrase")
        .await?
        .map_err(|e| format!("{e:?}"))?;
    let tablet = sign_in(&server, "op", "night shift passphrase")
        .await?
        .map_err(|e| format!("{e:?}"))?;
    let (status, _, me) = with_cookie(&server, "GET", "/api/v1/session", &laptop, None).await?;
    assert_eq!(
        (status, &me["user"]["name"]),
        (StatusCode::OK, &json!("op"))
    );
    let feed = format!("/api/v1/sites/{SITE}/events");
    assert_eq!(
        with_cookie(&server, "GET", &feed, &tablet, None).await?.0,
        StatusCode::OK
    );
    let (status, _, denied) = with_cookie(&server, "GET", "/api/v1/users", &tablet, None).await?;
    assert_eq!(
        (status, &denied["error"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );

    // A wrong current password changes nothing; the right one ends the tablet's session.
    let change = |current: &str| json!({"current": current, "new": "a brand new passphrase"});
    let (status, _, body) = with_cookie(
        &server,
        "PUT",
        "/api/v1/users/me/password",
        &laptop,
        Some(change("not the password")),
    )
    .await?;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::FORBIDDEN, &json!("wrong_password"))
    );
    let (status, _, body) = with_cookie(
        &server,
        "PUT",
        "/api/v1/users/me/password",
        &laptop,
        Some(change("night shift passphrase")),
    )
    .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        with_cookie(&server, "GET", &feed, &laptop, None).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        with_cookie(&server, "GET", &feed, &tablet, None).await?.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        sign_in(&server, "op", "night shift passphrase")
            .await?
            .is_err()
    );
    assert!(
        sign_in(&server, "op", "a brand new passphrase")
            .await?
            .is_ok()
    );

    // An administrator sets it: every session ends. Then sign-out clears the cookie.
    let id = created["user"]["id"].as_str().ok_or("no id")?;
    let req = Request::put(format!("/api/v1/users/{id}/password"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .body(Body::from(
            json!({"new": "set by the administrator"}).to_string(),
        ))?;
    let (status, _, body) = server.call(req).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
    assert_eq!(
        with_cookie(&server, "GET", &feed, &laptop, None).await?.0,
        StatusCode::UNAUTHORIZED
    );
    let fresh = sign_in(&server, "op", "set by the administrator")
        .await?
        .map_err(|e| format!("{e:?}"))?;
    let (status, cleared, _) =
        with_cookie(&server, "DELETE", "/api/v1/session", &fresh, None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(cleared.is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        with_cookie(&server, "GET", "/api/v1/session", &fresh, None)
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}

crate::on_every_backend!(
    sessions_are_stored_by_hash_and_end_with_the_password_or_the_user,
    ended_sessions_are_dropped_at_the_next_sign_in,
    the_cookie_reads_what_the_token_reads_until_the_password_changes,
);
