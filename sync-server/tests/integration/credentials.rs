//! Credentials that age, through the real router (and, for live streams, a real listener): user
//! tokens expire and rotate without downtime, a device's credential is rotated at sync without
//! ever locking the phone out, and a live stream ends once its user may no longer read it.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use patrol_core::protocol::{self, SyncRequest};
use patrol_server::config::ApiConfig;
use patrol_server::credentials::{Role, Scope, new_user};
use patrol_server::{AppState, router, serve};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::{Backend, SITE, TestResult, TestServer, crate_now_ms, site};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The error code of a refusal, which must come with a message.
fn code(body: &Value) -> String {
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    body["error"].as_str().unwrap_or("").to_owned()
}

/// The status and error code of a feed read with `token`.
async fn read_feed(server: &TestServer, token: &str) -> AnyResult<(StatusCode, String)> {
    let (status, body) = server
        .get_json_as(token, &format!("/api/v1/sites/{SITE}/events"))
        .await?;
    if status == StatusCode::OK {
        return Ok((status, String::new()));
    }
    Ok((status, code(&body)))
}

/// Creates a user through the API as the administrator: its id and token.
async fn create_user(server: &TestServer, body: Value) -> AnyResult<(String, String)> {
    let (status, created) = server
        .post_json(&server.admin, "/api/v1/users", body)
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["user"]["id"].as_str().ok_or("no id")?.to_owned();
    let token = created["token"].as_str().ok_or("no token")?.to_owned();
    Ok((id, token))
}

async fn user_tokens_expire_and_rotate_with_an_overlap(backend: Backend) -> TestResult {
    let config = ApiConfig {
        user_token_rotation_overlap_ms: 1_500,
        ..ApiConfig::default()
    };
    let server = TestServer::with_config(backend, config).await?;

    // A token past its expiry is refused with its own code, and says what to do.
    let (late, late_token) = new_user(
        "late".into(),
        Role::Operator,
        Scope::Sites(vec![site()]),
        None,
        crate_now_ms() - 10_000,
        1_000,
    )?;
    let late = server.store().create_user(late).await?;
    let (status, body) = server
        .get_json_as(late_token.expose(), &format!("/api/v1/sites/{SITE}/events"))
        .await?;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "expired_credential".into())
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("ask an administrator")),
        "{body}"
    );
    // It cannot rotate itself; an administrator gives it a new one, and the old stays dead.
    let (status, body) = server
        .post_json(late_token.expose(), "/api/v1/users/me/token", json!({}))
        .await?;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "expired_credential".into())
    );
    let (status, reissued) = server
        .post_json(
            &server.admin,
            &format!("/api/v1/users/{}/token", late.id),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{reissued}");
    let fresh = reissued["token"].as_str().ok_or("no token")?;
    assert_eq!(read_feed(&server, fresh).await?.0, StatusCode::OK);
    // The replaced token is forgotten, not merely expired.
    assert_eq!(
        read_feed(&server, late_token.expose()).await?,
        (StatusCode::UNAUTHORIZED, "invalid_credential".into())
    );

    // Tokens the API issues expire after the server's lifetime (30 days by default), and the
    // users list shows when.
    let (ann, ann_token) = create_user(
        &server,
        json!({"name": "ann", "role": "operator", "sites": [SITE]}),
    )
    .await?;
    let (_, users) = server.get_json("/api/v1/users").await?;
    let listed = users["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["id"] == ann.as_str()))
        .ok_or("ann not listed")?;
    let expires = chrono::DateTime::parse_from_rfc3339(
        listed["token_expires_at"]
            .as_str()
            .ok_or("no token_expires_at")?,
    )?
    .timestamp_millis();
    let month = 30 * 24 * 3_600_000;
    assert!(
        (expires - (crate_now_ms() + month)).abs() < 60_000,
        "{listed}"
    );
    // The holder sees its own token's expiry, to rotate in time.
    let (status, me) = server.get_json_as(&ann_token, "/api/v1/users/me").await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (
            &me["user"]["name"],
            &me["token_expires_at"],
            &me["token_superseded"]
        ),
        (&json!("ann"), &listed["token_expires_at"], &json!(false))
    );

    // Rotation: a new token at once, the old one still working for the overlap, then not.
    let (status, rotated) = server
        .post_json(&ann_token, "/api/v1/users/me/token", json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_token = rotated["token"].as_str().ok_or("no token")?.to_owned();
    assert_ne!(new_token, ann_token);
    assert!(
        rotated["previous_token_valid_until"].is_string(),
        "{rotated}"
    );
    assert_eq!(read_feed(&server, &new_token).await?.0, StatusCode::OK);
    let (_, me) = server.get_json_as(&ann_token, "/api/v1/users/me").await?;
    assert!(
        me["token_superseded"] == true || code(&me) == "expired_credential",
        "{me}"
    );
    // A token already replaced cannot rotate again (that would drop the newer one).
    let (status, body) = server
        .post_json(&ann_token, "/api/v1/users/me/token", json!({}))
        .await?;
    match status {
        StatusCode::CONFLICT => assert_eq!(code(&body), "token_superseded"),
        // The overlap may just have ended on a slow machine.
        other => assert_eq!(
            (other, code(&body)),
            (StatusCode::UNAUTHORIZED, "expired_credential".into())
        ),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match read_feed(&server, &ann_token).await? {
            (StatusCode::OK, _) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            refused => {
                assert_eq!(
                    refused,
                    (StatusCode::UNAUTHORIZED, "expired_credential".into()),
                    "the old token stops once the overlap ends"
                );
                break;
            }
        }
    }
    assert_eq!(read_feed(&server, &new_token).await?.0, StatusCode::OK);

    // Revocation ends every token of the user.
    let (status, _) = server
        .post_json(
            &server.admin,
            &format!("/api/v1/users/{ann}/revoke"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        read_feed(&server, &new_token).await?,
        (StatusCode::UNAUTHORIZED, "revoked_credential".into())
    );
    let (status, body) = server
        .post_json(
            &server.admin,
            &format!("/api/v1/users/{ann}/token"),
            json!({}),
        )
        .await?;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "user_revoked".into())
    );
    Ok(())
}

/// Sends `request` with `credential` through the router over `state`: the status, whether the
/// answer says the credential is due for rotation, and the error code (if refused).
async fn sync_as(
    state: &AppState,
    credential: &str,
    request: &SyncRequest,
) -> AnyResult<(StatusCode, bool, String)> {
    let req = Request::post("/api/v1/sync")
        .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .body(Body::from(request.encode()?))?;
    let resp = router(state.clone()).oneshot(req).await?;
    let status = resp.status();
    let due = resp
        .headers()
        .get(protocol::CREDENTIAL_ROTATION_HEADER)
        .is_some_and(|v| v == "due");
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
    let error = if status == StatusCode::OK {
        String::new()
    } else {
        code(&serde_json::from_slice(&body)?)
    };
    Ok((status, due, error))
}

async fn a_device_credential_is_rotated_without_ever_locking_the_phone_out(
    backend: Backend,
) -> TestResult {
    // Every credential is due at once on this server.
    let config = ApiConfig {
        device_credential_max_age_ms: 0,
        ..ApiConfig::default()
    };
    let server = TestServer::with_config(backend, config).await?;
    let mut phone = server.phone("guard-1").await?;
    let old = phone.credential.clone();

    // On a server whose credentials last a month, a new one is not due.
    let patient = AppState::new(server.store());
    phone.scan("cp-1")?;
    let request = phone.push_request()?;
    assert_eq!(
        sync_as(&patient, &old, &request).await?,
        (StatusCode::OK, false, String::new())
    );
    // Here it is: the sync says so, and so does the device's own view.
    phone.scan("cp-2")?;
    let request = phone.push_request()?;
    assert_eq!(
        sync_as(&server.state, &old, &request).await?,
        (StatusCode::OK, true, String::new())
    );
    let (status, me) = server.get_json_as(&old, "/api/v1/devices/me").await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["device_id"], phone.device.to_string());
    assert_eq!(me["credential_rotation_due"], true);

    // An answer lost on the way: the phone never got `lost`, and goes on with the old one.
    let (status, body) = server
        .post_json(&old, "/api/v1/devices/me/credential", json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lost = body["credential"]
        .as_str()
        .ok_or("no credential")?
        .to_owned();
    assert!(lost.starts_with("pd_"));
    phone.scan("cp-3")?;
    let request = phone.push_request()?;
    assert_eq!(
        sync_as(&server.state, &old, &request).await?.0,
        StatusCode::OK
    );

    // It asks again; the unused credential is replaced.
    let (status, body) = server
        .post_json(&old, "/api/v1/devices/me/credential", json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["credential"]
        .as_str()
        .ok_or("no credential")?
        .to_owned();
    let (status, body) = server.get_json_as(&lost, "/api/v1/devices/me").await?;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_credential".into())
    );
    // The old one works until the new one is used, once; then only the new one does.
    phone.scan("cp-4")?;
    let request = phone.push_request()?;
    assert_eq!(
        sync_as(&server.state, &old, &request).await?.0,
        StatusCode::OK
    );
    // Two first uses at once: both are served, whichever of them made the switch.
    let (a, b) = tokio::join!(
        server.get_json_as(&new, "/api/v1/devices/me"),
        server.get_json_as(&new, "/api/v1/devices/me")
    );
    assert_eq!((a?.0, b?.0), (StatusCode::OK, StatusCode::OK));
    phone.scan("cp-5")?;
    let request = phone.push_request()?;
    assert_eq!(
        sync_as(&server.state, &new, &request).await?.0,
        StatusCode::OK
    );
    phone.scan("cp-6")?;
    let request = phone.push_request()?;
    assert_eq!(
        sync_as(&server.state, &old, &request).await?,
        (
            StatusCode::UNAUTHORIZED,
            false,
            "invalid_credential".to_owned()
        )
    );
    assert_eq!(
        sync_as(&server.state, &new, &request).await?.0,
        StatusCode::OK
    );
    // Every event reached the feed once: the shift's start and six scans.
    let feed = server.whole_feed(100).await?;
    assert_eq!(feed.len(), 7);

    // Revoking the device ends its rotated credential too.
    let (status, _) = server
        .post_json(
            &server.admin,
            &format!("/api/v1/sites/{SITE}/devices/{}/revoke", phone.device),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .post_json(&new, "/api/v1/devices/me/credential", json!({}))
        .await?;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "revoked_credential".into())
    );
    Ok(())
}

/// A server for `state` on a loopback port: its address, and the sender that stops it.
async fn listen(
    state: AppState,
) -> AnyResult<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    Ok((addr, stop))
}

/// Opens the site's live stream with `token`.
async fn open_stream(addr: std::net::SocketAddr, token: &str) -> AnyResult<reqwest::Response> {
    Ok(reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/sites/{SITE}/stream"))
        .bearer_auth(token)
        .send()
        .await?)
}

/// What a stream sent until it ended: the ids of its events, and the data of its `closed` event
/// (if it sent one). Fails if it has not ended within the deadline.
async fn read_until_closed(resp: &mut reqwest::Response) -> AnyResult<(Vec<u64>, Option<Value>)> {
    let mut buf = String::new();
    let mut ids = Vec::new();
    let mut closed = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut kind, mut id, mut data) = (None, None, None);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>()?);
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim())?);
                }
            }
            match (kind.as_deref(), id) {
                (Some("closed"), _) => closed = data,
                (_, Some(id)) => ids.push(id),
                _ => {}
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| format!("the stream is still open after 30 s, having sent {ids:?}"))??;
        match chunk {
            Some(chunk) => buf.push_str(std::str::from_utf8(&chunk)?),
            None => return Ok((ids, closed)),
        }
    }
}

async fn an_operators_open_stream_ends_soon_after_an_admin_revokes_them(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let (operator, token) = create_user(
        &server,
        json!({"name": "op", "role": "operator", "sites": [SITE]}),
    )
    .await?;
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    server.sync(&phone.push_request()?).await?;
    let (addr, _stop) = listen(server.state.clone()).await?;
    let mut live = open_stream(addr, &token).await?;
    assert_eq!(live.status(), 200);

    let (status, _) = server
        .post_json(
            &server.admin,
            &format!("/api/v1/users/{operator}/revoke"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    // Events keep coming; the revoked operator's stream must not keep receiving them.
    phone.scan("cp-2")?;
    server.sync(&phone.push_request()?).await?;
    let (ids, closed) = read_until_closed(&mut live).await?;
    let closed = closed.ok_or("the stream ended without saying why")?;
    assert_eq!(code(&closed), "revoked_credential");
    // Events 1 and 2 (the shift's start, cp-1) were committed before the revocation.
    assert!(
        ids.iter().all(|id| *id <= 2),
        "the revoked operator received {ids:?} after its revocation"
    );
    // And it cannot open another.
    assert_eq!(open_stream(addr, &token).await?.status(), 401);
    Ok(())
}

async fn a_stream_rechecks_its_user_periodically(backend: Backend) -> TestResult {
    // A revocation this instance does not hear of (another instance's, or a command's) is found
    // at the periodic check.
    let config = ApiConfig {
        stream_recheck: Duration::from_millis(500),
        ..ApiConfig::default()
    };
    let server = TestServer::with_config(backend, config).await?;
    let (operator, token) = create_user(
        &server,
        json!({"name": "op", "role": "operator", "sites": [SITE]}),
    )
    .await?;
    let (addr, _stop) = listen(server.state.clone()).await?;
    let mut live = open_stream(addr, &token).await?;
    assert_eq!(live.status(), 200);
    server.store().revoke_user(operator, crate_now_ms()).await?;
    let (_, closed) = read_until_closed(&mut live).await?;
    assert_eq!(
        code(&closed.ok_or("the stream ended without saying why")?),
        "revoked_credential"
    );
    Ok(())
}

async fn live_streams_are_capped_per_user(backend: Backend) -> TestResult {
    let config = ApiConfig {
        max_streams_per_user: 2,
        ..ApiConfig::default()
    };
    let server = TestServer::with_config(backend, config).await?;
    let (_, token) = create_user(
        &server,
        json!({"name": "op", "role": "operator", "sites": [SITE]}),
    )
    .await?;
    let (addr, _stop) = listen(server.state.clone()).await?;
    let first = open_stream(addr, &token).await?;
    let second = open_stream(addr, &token).await?;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = open_stream(addr, &token).await?;
    assert_eq!(refused.status(), 429);
    let body: Value = serde_json::from_slice(&refused.bytes().await?)?;
    assert_eq!(code(&body), "too_many_streams");
    // Another user is not held back by it.
    assert_eq!(open_stream(addr, &server.admin).await?.status(), 200);

    // Once one closes, one more is admitted.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let again = open_stream(addr, &token).await?;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            Instant::now() < deadline,
            "no stream admitted after one closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second);
    Ok(())
}

crate::on_every_backend!(
    user_tokens_expire_and_rotate_with_an_overlap,
    a_device_credential_is_rotated_without_ever_locking_the_phone_out,
    an_operators_open_stream_ends_soon_after_an_admin_revokes_them,
    a_stream_rechecks_its_user_periodically,
    live_streams_are_capped_per_user,
);
