//! Tamper evidence on the server: a device that enrolled with a key must sign every push of
//! shift-log changes; the server verifies the signature before it stores anything, keeps it
//! with the log, and exports both for `patrol verify`.

use axum::http::StatusCode;
use patrol_core::evidence::{DeviceKey, ShiftLogExport, verify_export};
use patrol_core::protocol::{DocOutcome, RejectCode};
use patrol_testkit::WEAK_ED25519_KEYS;

use crate::common::{Backend, Phone, SITE, TestResult, TestServer};

/// A phone enrolled with `key` and signing its pushes with it.
async fn signing_phone(
    server: &TestServer,
    key: &DeviceKey,
) -> Result<Phone, Box<dyn std::error::Error>> {
    let enrolled = server.enroll_with_key(SITE, Some(key)).await?;
    Ok(Phone::new(enrolled, "guard-1")?.signing(key.clone()))
}

fn rejection(outcome: &DocOutcome) -> Option<RejectCode> {
    match outcome {
        DocOutcome::Rejected { code, .. } => Some(*code),
        DocOutcome::Accepted { .. } => None,
    }
}

async fn feed_len(server: &TestServer) -> Result<usize, Box<dyn std::error::Error>> {
    let (status, page) = server
        .get_json(&format!("/api/v1/sites/{SITE}/events?limit=1000"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    Ok(page["events"].as_array().map_or(0, Vec::len))
}

async fn export(
    server: &TestServer,
    phone: &Phone,
) -> Result<ShiftLogExport, Box<dyn std::error::Error>> {
    let (status, body) = server
        .get_json(&format!(
            "/api/v1/sites/{SITE}/shift-logs/{}/export",
            phone.shift()
        ))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(serde_json::from_value(body)?)
}

async fn signed_pushes_are_verified_kept_and_exported(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let key = DeviceKey::generate()?;
    let mut phone = signing_phone(&server, &key).await?;
    for round in 0..2 {
        phone.scan(&format!("cp-{round}"))?;
        let resp = server.sync(&phone.push_request()?).await?;
        assert_eq!(rejection(&resp.docs[0].outcome), None, "{resp:?}");
        phone.on_accepted(&resp.docs[0].outcome);
    }
    let exported = export(&server, &phone).await?;
    assert_eq!(exported.public_key, Some(key.public_key().to_string()));
    assert_eq!(exported.signatures.len(), 2);
    let verified = verify_export(&exported, &key.public_key())?;
    assert_eq!(verified.events, 3);

    // The device list shows the key the device registered.
    let (_, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    assert_eq!(
        devices["devices"][0]["public_key"],
        key.public_key().to_string()
    );
    Ok(())
}

async fn unsigned_or_badly_signed_changes_are_refused_and_change_nothing(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let key = DeviceKey::generate()?;
    let mut phone = signing_phone(&server, &key).await?;
    phone.scan("cp-1")?;

    let mut unsigned = phone.push()?;
    unsigned.signature = None;
    let mut forged = phone.push()?;
    let other = DeviceKey::generate()?;
    other.sign_push(&mut forged, &mut phone.log, 1);
    let mut stale = phone.push()?;
    // A valid signature over heads short of those the pushed changes reach (the log's first
    // change), and over none.
    let meta = phone.log.meta().clone();
    let first = phone.log.changes()[0].hash();
    stale.signature = Some(key.sign_heads(&meta, &[first], 1));
    let mut empty = phone.push()?;
    empty.signature = Some(key.sign_heads(&meta, &[], 1));

    for (what, push) in [
        ("unsigned", unsigned),
        ("other key", forged),
        ("stale heads", stale),
    ] {
        let resp = server.sync(&phone.request(vec![push])).await?;
        assert_eq!(
            rejection(&resp.docs[0].outcome),
            Some(RejectCode::BadSignature),
            "{what}: {resp:?}"
        );
        assert_eq!(feed_len(&server).await?, 0, "{what}: nothing stored");
    }
    let (status, _) = server
        .get_json(&format!(
            "/api/v1/sites/{SITE}/shift-logs/{}/export",
            phone.shift()
        ))
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The phone's next, properly signed sync delivers everything.
    let resp = server.sync(&phone.push_request()?).await?;
    assert_eq!(rejection(&resp.docs[0].outcome), None, "{resp:?}");
    assert_eq!(feed_len(&server).await?, 2);
    Ok(())
}

async fn a_device_enrolled_without_a_key_syncs_unsigned(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    let resp = server.sync(&phone.push_request()?).await?;
    assert_eq!(rejection(&resp.docs[0].outcome), None, "{resp:?}");
    let exported = export(&server, &phone).await?;
    assert!(exported.signatures.is_empty());
    assert_eq!(exported.public_key, None);
    Ok(())
}

async fn enrollment_refuses_weak_public_keys(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let code = enrollment_code(&server).await?;
    for weak in WEAK_ED25519_KEYS {
        let (status, body) = enroll(&server, &code, weak).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{weak}: {body}");
        assert_eq!(body["error"], "invalid_public_key", "{weak}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("weak"), "{weak}: {body}");
    }
    // Nothing was enrolled, and the code was not spent by the refused attempts.
    let (status, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{devices}");
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(0),
        "{devices}"
    );
    let key = DeviceKey::generate()?.public_key().to_string();
    let (status, body) = enroll(&server, &code, &key).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

/// A store that enrolled a weak key before such keys were refused: at the next start the device
/// is revoked and its key cleared, so its logs neither sync nor verify, and the site's device
/// list still reads (a key that no longer parses made it fail).
async fn a_weak_key_enrolled_before_is_revoked_at_start(backend: Backend) -> TestResult {
    let mut server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    let weak = hex::decode(WEAK_ED25519_KEYS[0])?;
    let device = phone.device.to_string();
    match &server.backend {
        Backend::Sqlite(_) => {
            let conn = rusqlite::Connection::open(server.db_path()?)?;
            conn.execute(
                "UPDATE device_credentials SET public_key = ?1 WHERE device_id = ?2",
                rusqlite::params![weak, device],
            )?;
        }
        Backend::Postgres(db) => {
            let (client, connection) =
                tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            client
                .execute(
                    "UPDATE device_credentials SET public_key = $1 WHERE device_id = $2",
                    &[&weak, &device],
                )
                .await?;
            drop(client);
            driver.await??;
        }
    }
    server.reopen().await?;

    let (status, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let listed = &devices["devices"][0];
    assert_eq!(listed["device_id"], device.as_str(), "{devices}");
    assert!(listed["revoked_at"].is_string(), "{devices}");
    assert!(listed["public_key"].is_null(), "{devices}");
    let (status, _, body) = server.try_sync(&phone.push_request()?).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

crate::on_every_backend!(
    a_weak_key_enrolled_before_is_revoked_at_start,
    signed_pushes_are_verified_kept_and_exported,
    unsigned_or_badly_signed_changes_are_refused_and_change_nothing,
    a_device_enrolled_without_a_key_syncs_unsigned,
    enrollment_refuses_weak_public_keys,
);

#[tokio::test]
async fn enrollment_refuses_a_malformed_public_key() -> TestResult {
    let server = TestServer::sqlite().await?;
    let code = enrollment_code(&server).await?;
    for bad in ["zz", "00", &"ab".repeat(33)] {
        let (status, body) = enroll(&server, &code, bad).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_public_key");
    }
    // The code was not spent by the refused attempts.
    let key = DeviceKey::generate()?.public_key().to_string();
    let (status, body) = enroll(&server, &code, &key).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

/// A new enrollment code for the site, as its administrator asks for one.
async fn enrollment_code(
    server: &TestServer,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let (status, code) = server
        .send_json(
            "POST",
            &format!("/api/v1/sites/{SITE}/enrollment-codes"),
            &serde_json::json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{code}");
    Ok(code)
}

/// Enrolls with `code` (as returned by [`enrollment_code`]) and the hex `public_key`.
async fn enroll(
    server: &TestServer,
    code: &serde_json::Value,
    public_key: &str,
) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
    server
        .send_json_as(
            "",
            "POST",
            "/api/v1/enroll",
            &serde_json::json!({"code": code["code"], "public_key": public_key}),
        )
        .await
}
