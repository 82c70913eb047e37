//! Who may do what, against the real server binary: every refusal is a clear 4xx with a JSON
//! error and changes nothing (the site feeds and device lists read the same before and after).
//!
//! Phones are enrolled through the real `patrol` command; requests a phone would never send
//! (another site, another device's changes, a replay, a damaged body) are built from a real
//! enrolled store's prepared request and sent over HTTP.

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_core::protocol::{CONTENT_TYPE, DocOutcome, RejectCode, SyncRequest, SyncResponse};
use patrol_e2e::{Phone, control_pull};
use patrol_mobile::DeviceStore;
use patrol_testkit::{Server, run_ok};
use serde_json::Value;

const A: &str = "site-a";
const B: &str = "site-b";

/// Plain HTTP calls, answered with (status, body).
struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Self> {
        Ok(Http {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: reqwest::Client::new(),
        })
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>)> {
        self.runtime.block_on(async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok((status, response.bytes().await?.to_vec()))
        })
    }

    fn get(&self, url: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let mut request = self.client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = self.send(request)?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    fn post_json(&self, url: &str, token: Option<&str>, body: Value) -> Result<(u16, Value)> {
        let mut request = self.client.post(url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = self.send(request)?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    /// A sync POST; `content_type` and `credential` are left out when `None`.
    fn sync(
        &self,
        server: &Server,
        credential: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut request = self
            .client
            .post(format!("{}/api/v1/sync", server.url))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        self.send(request)
    }
}

/// The JSON error code of a refusal; it must come with a message.
fn error_code(body: &[u8]) -> Result<String> {
    let v: Value = serde_json::from_slice(body)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(body)))?;
    ensure!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {v}"
    );
    v["error"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no error code in {v}"))
}

/// Everything a refusal must leave alone: both sites' feeds and device lists.
fn record(server: &Server, http: &Http) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for site in [A, B] {
        out.push(Value::Array(control_pull(server, site, 1000)?));
        let (status, devices) = http.get(
            &format!("{}/api/v1/sites/{site}/devices", server.url),
            Some(&server.admin_token),
        )?;
        ensure!(status == 200, "{devices}");
        // The time of the answer, not the site's state.
        let mut devices = devices;
        if let Some(view) = devices.as_object_mut() {
            view.remove("as_of");
        }
        out.push(devices);
    }
    Ok(out)
}

/// A phone enrolled on `site` with a shift of a few events recorded offline.
fn phone_with_events(server: &Server, dir: &Path, name: &str, site: &str) -> Result<Phone> {
    let phone = Phone::enroll(dir.join(format!("{name}.db")), server, site)?;
    phone.run(&["shift", "start", "--guard", name])?;
    phone.run(&["scan", "cp-1", "--nfc", "04:AA"])?;
    phone.run(&["note", "door 4 locked"])?;
    Ok(phone)
}

/// The next request the phone's store would send, and its credential.
fn prepared(phone: &Phone) -> Result<(SyncRequest, String)> {
    let mut store = DeviceStore::open(&phone.store)?;
    let credential = store
        .credential()
        .ok_or_else(|| anyhow!("not enrolled"))?
        .to_owned();
    Ok((store.prepare_sync()?.request, credential))
}

fn start(dir: &Path, args: &[&str]) -> Result<Server> {
    Server::start_with_args(&dir.join("server"), &[A, B], false, args)
}

#[test]
fn requests_without_a_valid_credential_get_401_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[])?;
    let http = Http::new()?;
    let phone = phone_with_events(&server, dir.path(), "guard-1", A)?;
    let (request, credential) = prepared(&phone)?;
    let body = request.encode()?;
    let before = record(&server, &http)?;

    // No token, a malformed one, an unknown one, a user token where a device's is needed.
    let unknown = format!("pd_{}", "Q".repeat(43));
    for (name, token, code) in [
        ("missing", None, "missing_credential"),
        ("malformed", Some("pd_short"), "invalid_credential"),
        ("unknown", Some(unknown.as_str()), "invalid_credential"),
        (
            "user token",
            Some(server.admin_token.as_str()),
            "wrong_credential_kind",
        ),
    ] {
        let (status, answer) = http.sync(&server, token, Some(CONTENT_TYPE), body.clone())?;
        ensure!(status == 401, "{name}: {status}");
        ensure!(error_code(&answer)? == code, "{name}");
    }
    // The control room's reads need a user token, and a device credential is not one.
    for token in [None, Some(credential.as_str())] {
        let (status, answer) =
            http.get(&format!("{}/api/v1/sites/{A}/events", server.url), token)?;
        ensure!(status == 401, "{answer}");
    }
    ensure!(
        record(&server, &http)? == before,
        "a refused request changed something"
    );

    // The same request with its credential lands.
    let (status, answer) = http.sync(&server, Some(&credential), Some(CONTENT_TYPE), body)?;
    ensure!(status == 200, "{}", String::from_utf8_lossy(&answer));
    ensure!(control_pull(&server, A, 100)?.len() == 3);
    Ok(())
}

#[test]
fn cross_site_access_is_forbidden_and_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[])?;
    let http = Http::new()?;
    let on_a = phone_with_events(&server, dir.path(), "guard-a", A)?;
    let other_on_a = Phone::enroll(dir.path().join("other.db"), &server, A)?;
    on_a.run(&["sync"])?;
    let operator_a = run_ok(&mut server.control(
        &server.admin_token,
        &["user", "create", "op-a", "--role", "operator", "--site", A],
    )?)?
    .trim()
    .to_owned();
    let admin_b = run_ok(&mut server.control(
        &server.admin_token,
        &["user", "create", "admin-b", "--role", "admin", "--site", B],
    )?)?
    .trim()
    .to_owned();
    on_a.run(&["note", "after the first sync"])?;
    let before = record(&server, &http)?;

    // An operator of site A reads A, not B; nor may it administer A.
    let (status, _) = http.get(
        &format!("{}/api/v1/sites/{A}/events", server.url),
        Some(&operator_a),
    )?;
    ensure!(status == 200);
    for path in [
        format!("/api/v1/sites/{B}/events"),
        format!("/api/v1/sites/{B}/devices"),
        "/api/v1/users".to_owned(),
    ] {
        let (status, answer) = http.get(&format!("{}{path}", server.url), Some(&operator_a))?;
        ensure!(status == 403, "{path}: {status} {answer}");
        ensure!(error_code(answer.to_string().as_bytes())? == "forbidden");
    }
    let (status, _) = http.post_json(
        &format!("{}/api/v1/sites/{A}/enrollment-codes", server.url),
        Some(&operator_a),
        serde_json::json!({}),
    )?;
    ensure!(status == 403);
    // An administrator of site B issues no code for A, revokes no device of A, and creates no
    // user over A or over all sites.
    let (status, _) = http.post_json(
        &format!("{}/api/v1/sites/{A}/enrollment-codes", server.url),
        Some(&admin_b),
        serde_json::json!({}),
    )?;
    ensure!(status == 403);
    let device_a = on_a.device_id()?;
    let (status, _) = http.post_json(
        &format!("{}/api/v1/sites/{A}/devices/{device_a}/revoke", server.url),
        Some(&admin_b),
        serde_json::json!({}),
    )?;
    ensure!(status == 403);
    for body in [
        serde_json::json!({"name": "x", "role": "operator", "sites": [A]}),
        serde_json::json!({"name": "y", "role": "admin", "all_sites": true}),
    ] {
        let (status, _) = http.post_json(
            &format!("{}/api/v1/users", server.url),
            Some(&admin_b),
            body,
        )?;
        ensure!(status == 403);
    }

    // A device of site A sends its request as if to site B, or as another device of A.
    let (request, credential) = prepared(&on_a)?;
    let mut to_b = request.clone();
    to_b.site = patrol_core::SiteId::new(B)?;
    let mut as_other = request.clone();
    as_other.device = DeviceStore::open(&other_on_a.store)?.device_id();
    for (name, forged) in [("site B", to_b), ("another device", as_other)] {
        let (status, answer) = http.sync(
            &server,
            Some(&credential),
            Some(CONTENT_TYPE),
            forged.encode()?,
        )?;
        ensure!(status == 403, "{name}: {status}");
        ensure!(error_code(&answer)? == "forbidden", "{name}");
    }
    ensure!(
        record(&server, &http)? == before,
        "a forbidden request changed something"
    );
    Ok(())
}

#[test]
fn a_change_made_by_another_devices_actor_is_rejected_and_not_stored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[])?;
    let http = Http::new()?;
    let victim = phone_with_events(&server, dir.path(), "guard-a", A)?;
    let intruder = Phone::enroll(dir.path().join("intruder.db"), &server, A)?;
    let before_feed = control_pull(&server, A, 1000)?;

    // The intruder's own credential and a fresh request of its own, carrying the victim's log
    // (every change in it made by the victim's actor, signed with the victim's key). The
    // signature, checked first, does not verify for the intruder's device; a device without a
    // key would meet `foreign_actor` (sync-server/tests/integration/api.rs).
    let (victims, _) = prepared(&victim)?;
    let (mut spoofed, credential) = prepared(&intruder)?;
    spoofed.docs = victims.docs;
    ensure!(!spoofed.docs.is_empty());
    let (status, answer) = http.sync(
        &server,
        Some(&credential),
        Some(CONTENT_TYPE),
        spoofed.encode()?,
    )?;
    ensure!(status == 200, "{}", String::from_utf8_lossy(&answer));
    let response = SyncResponse::decode(&answer)?;
    for doc in &response.docs {
        ensure!(
            matches!(
                doc.outcome,
                DocOutcome::Rejected {
                    code: RejectCode::BadSignature,
                    ..
                }
            ),
            "{:?}",
            doc.outcome
        );
    }
    ensure!(
        control_pull(&server, A, 1000)? == before_feed,
        "a spoofed change was stored"
    );

    // The victim's own sync still delivers its log.
    victim.run(&["sync"])?;
    ensure!(control_pull(&server, A, 1000)?.len() == 3);
    Ok(())
}

#[test]
fn revoked_devices_and_users_are_refused_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[])?;
    let http = Http::new()?;
    let phone = phone_with_events(&server, dir.path(), "guard-1", A)?;
    phone.run(&["sync"])?;
    phone.run(&["note", "recorded after the last sync"])?;
    let device = phone.device_id()?;
    run_ok(&mut server.control(
        &server.admin_token,
        &["revoke-device", "--site", A, &device],
    )?)?;
    let before = record(&server, &http)?;

    let out = phone.command(&["sync"])?.output()?;
    ensure!(!out.status.success(), "a revoked device synced");
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("401") && stderr.contains("revoked"),
        "{stderr}"
    );
    let (request, credential) = prepared(&phone)?;
    let (status, answer) = http.sync(
        &server,
        Some(&credential),
        Some(CONTENT_TYPE),
        request.encode()?,
    )?;
    ensure!(status == 401 && error_code(&answer)? == "revoked_credential");
    ensure!(
        record(&server, &http)? == before,
        "a revoked device changed something"
    );
    // The phone keeps what it could not deliver, and the device list says it is revoked.
    ensure!(
        phone
            .log()?
            .iter()
            .filter(|e| e["delivered"] == false)
            .count()
            == 1
    );
    let (_, devices) = http.get(
        &format!("{}/api/v1/sites/{A}/devices", server.url),
        Some(&server.admin_token),
    )?;
    ensure!(devices["devices"][0]["revoked_at"].is_string(), "{devices}");

    // A user, then revoked: its token is refused from then on.
    let token = run_ok(&mut server.control(
        &server.admin_token,
        &["user", "create", "op-1", "--role", "operator", "--site", A],
    )?)?
    .trim()
    .to_owned();
    let feed = format!("{}/api/v1/sites/{A}/events", server.url);
    ensure!(http.get(&feed, Some(&token))?.0 == 200);
    let (_, users) = http.get(
        &format!("{}/api/v1/users", server.url),
        Some(&server.admin_token),
    )?;
    let id = users["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "op-1"))
        .and_then(|u| u["id"].as_str())
        .ok_or_else(|| anyhow!("op-1 not listed: {users}"))?
        .to_owned();
    run_ok(&mut server.control(&server.admin_token, &["user", "revoke", &id])?)?;
    let (status, answer) = http.get(&feed, Some(&token))?;
    ensure!(status == 401, "{answer}");
    ensure!(error_code(answer.to_string().as_bytes())? == "revoked_credential");
    ensure!(record(&server, &http)? == before);
    Ok(())
}

#[test]
fn a_replayed_request_gets_409_and_a_retry_after_a_lost_answer_succeeds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[])?;
    let http = Http::new()?;
    let phone = phone_with_events(&server, dir.path(), "guard-1", A)?;
    let (request, credential) = prepared(&phone)?;
    let captured = request.encode()?;
    // The request lands, but the phone never hears the answer.
    let (status, _) = http.sync(
        &server,
        Some(&credential),
        Some(CONTENT_TYPE),
        captured.clone(),
    )?;
    ensure!(status == 200);
    phone.run(&["note", "after the lost answer"])?;
    let before = record(&server, &http)?;

    // Someone who captured the request sends it again: refused, nothing changes.
    let (status, answer) = http.sync(&server, Some(&credential), Some(CONTENT_TYPE), captured)?;
    ensure!(status == 409, "{status}");
    ensure!(error_code(&answer)? == "replayed_request");
    ensure!(
        record(&server, &http)? == before,
        "a replay changed something"
    );

    // The phone retries with a freshly prepared request: everything is delivered once.
    phone.run(&["sync"])?;
    ensure!(phone.log()?.iter().all(|e| e["delivered"] == true));
    ensure!(control_pull(&server, A, 1000)?.len() == 4);
    Ok(())
}

#[test]
fn oversize_malformed_truncated_and_mistyped_bodies_get_4xx_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let limit = 64 * 1024;
    let server = start(dir.path(), &["--max-body-bytes", &limit.to_string()])?;
    let http = Http::new()?;
    let phone = phone_with_events(&server, dir.path(), "guard-1", A)?;
    let (request, credential) = prepared(&phone)?;
    let good = request.encode()?;
    let before = record(&server, &http)?;

    let mut wrong_version = good.clone();
    wrong_version[4] = 99;
    let mut trailing = good.clone();
    trailing.push(0);
    let ct = Some(CONTENT_TYPE);
    // (case, content type, body, status, error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("oversize", ct, vec![0; limit + 1], 413, "payload_too_large"),
        (
            "garbage",
            ct,
            b"{\"site\": \"site-a\"}".to_vec(),
            400,
            "malformed_request",
        ),
        ("empty", ct, Vec::new(), 400, "malformed_request"),
        (
            "truncated",
            ct,
            good[..good.len() - 3].to_vec(),
            400,
            "malformed_request",
        ),
        ("trailing bytes", ct, trailing, 400, "malformed_request"),
        ("version", ct, wrong_version, 400, "unsupported_version"),
        (
            "json",
            Some("application/json"),
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "text",
            Some("text/plain"),
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        ("no type", None, good.clone(), 415, "unsupported_media_type"),
    ];
    for (name, content_type, body, status, code) in cases {
        let (got, answer) = http.sync(&server, Some(&credential), content_type, body)?;
        ensure!(
            got == status,
            "{name}: {got} {}",
            String::from_utf8_lossy(&answer)
        );
        ensure!(error_code(&answer)? == code, "{name}");
    }
    // JSON endpoints: a malformed body, a wrong type.
    let enroll = format!("{}/api/v1/enroll", server.url);
    let (status, _) = http.send(
        http.client
            .post(&enroll)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{\"code\": "),
    )?;
    ensure!(status == 400);
    let (status, _) = http.send(http.client.post(&enroll).body("code=pe_x"))?;
    ensure!(status == 415);
    ensure!(
        record(&server, &http)? == before,
        "a refused body changed something"
    );

    // Nothing was spent on the refusals: the good request still lands.
    let (status, _) = http.sync(&server, Some(&credential), ct, good)?;
    ensure!(status == 200);
    Ok(())
}

#[test]
fn expired_reused_and_unknown_enrollment_codes_are_refused_and_enroll_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path(), &[])?;
    let http = Http::new()?;
    let code = server.enrollment_code(A)?;
    let short = run_ok(&mut server.control(
        &server.admin_token,
        &["enrollment-code", "--site", A, "--ttl-secs", "1"],
    )?)?
    .trim()
    .to_owned();
    let first = Phone {
        store: dir.path().join("first.db"),
    };
    first.run(&["enroll", "--server", &server.url, "--code", &code])?;
    let before = record(&server, &http)?;

    let enroll = format!("{}/api/v1/enroll", server.url);
    let (status, answer) = http.post_json(&enroll, None, serde_json::json!({"code": code}))?;
    ensure!(status == 410, "reused: {status}");
    ensure!(error_code(answer.to_string().as_bytes())? == "enrollment_code_used");
    let (status, answer) = http.post_json(
        &enroll,
        None,
        serde_json::json!({"code": format!("pe_{}", "Z".repeat(43))}),
    )?;
    ensure!(
        status == 401 && error_code(answer.to_string().as_bytes())? == "invalid_enrollment_code"
    );
    // Past its lifetime (a second), the short-lived code is refused.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let (status, answer) = http.post_json(&enroll, None, serde_json::json!({"code": short}))?;
    ensure!(status == 410, "expired: {status}");
    ensure!(error_code(answer.to_string().as_bytes())? == "enrollment_code_expired");

    // Through the phone's own command, a refused code leaves no store behind.
    let second = Phone {
        store: dir.path().join("second.db"),
    };
    let out = second
        .command(&["enroll", "--server", &server.url, "--code", &code])?
        .output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("already used"));
    ensure!(!DeviceStore::is_set_up(&second.store)?);
    ensure!(
        record(&server, &http)? == before,
        "a refused code enrolled something"
    );

    // The one enrolled phone is on the device list; its code cannot enroll it twice either.
    let (_, devices) = http.get(
        &format!("{}/api/v1/sites/{A}/devices", server.url),
        Some(&server.admin_token),
    )?;
    ensure!(
        devices["devices"].as_array().map(Vec::len) == Some(1),
        "{devices}"
    );
    ensure!(devices["devices"][0]["device_id"] == first.device_id()?.as_str());
    Ok(())
}

/// The credential the phone's store holds now, and the rotated one it has not yet used.
fn stored_credentials(phone: &Phone) -> Result<(String, Option<String>)> {
    let store = DeviceStore::open(&phone.store)?;
    let current = store
        .credential()
        .ok_or_else(|| anyhow!("not enrolled"))?
        .to_owned();
    Ok((current, store.next_credential().map(str::to_owned)))
}

/// Whether every event the phone recorded is delivered.
fn all_delivered(phone: &Phone) -> Result<bool> {
    Ok(phone.log()?.iter().all(|e| e["delivered"] == true))
}

#[test]
fn a_phone_rotates_its_credential_at_sync_and_a_lost_rotation_answer_recovers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Every credential is due at every sync; a rotated user token stops at once.
    let server = start(
        dir.path(),
        &[
            "--device-credential-max-age-days",
            "0",
            "--user-token-rotation-overlap-secs",
            "0",
        ],
    )?;
    let http = Http::new()?;
    let me = format!("{}/api/v1/devices/me", server.url);
    let rotate = format!("{}/api/v1/devices/me/credential", server.url);
    let phone = phone_with_events(&server, dir.path(), "guard-1", A)?;
    let (enrolled, _) = stored_credentials(&phone)?;

    // The sync delivers, then rotates: the store holds only the new credential, which works,
    // and the old one is refused.
    let said = phone.run(&["sync"])?;
    ensure!(said.contains("credential was rotated"), "{said}");
    ensure!(all_delivered(&phone)?);
    let (first, pending) = stored_credentials(&phone)?;
    ensure!(first != enrolled && pending.is_none());
    let (status, answer) = http.get(&me, Some(&enrolled))?;
    ensure!(status == 401 && error_code(answer.to_string().as_bytes())? == "invalid_credential");
    ensure!(http.get(&me, Some(&first))?.0 == 200);

    // An answer lost on the way: the server issued `lost`, the phone never got it. The phone
    // syncs on with its credential, and rotates again.
    let (status, answer) = http.post_json(&rotate, Some(&first), Value::Null)?;
    ensure!(status == 200, "{answer}");
    let lost = answer["credential"].as_str().unwrap_or_default().to_owned();
    phone.run(&["note", "after the lost answer"])?;
    phone.run(&["sync"])?;
    ensure!(all_delivered(&phone)?);
    let (second, _) = stored_credentials(&phone)?;
    ensure!(second != first && second != lost);
    for gone in [&first, &lost] {
        ensure!(http.get(&me, Some(gone))?.0 == 401);
    }

    // The answer arrived and was stored, but the phone stopped before using it: the next sync
    // uses it first.
    let (status, answer) = http.post_json(&rotate, Some(&second), Value::Null)?;
    ensure!(status == 200, "{answer}");
    let staged = answer["credential"].as_str().unwrap_or_default().to_owned();
    DeviceStore::open(&phone.store)?.stage_credential(&staged)?;
    phone.run(&["note", "after a crash"])?;
    phone.run(&["sync"])?;
    ensure!(all_delivered(&phone)?);
    ensure!(http.get(&me, Some(&second))?.0 == 401);

    // A stored answer that a later rotation replaced: the phone drops it and goes on.
    let (current, _) = stored_credentials(&phone)?;
    let (status, answer) = http.post_json(&rotate, Some(&current), Value::Null)?;
    ensure!(status == 200, "{answer}");
    let replaced = answer["credential"].as_str().unwrap_or_default().to_owned();
    let (status, _) = http.post_json(&rotate, Some(&current), Value::Null)?;
    ensure!(status == 200);
    DeviceStore::open(&phone.store)?.stage_credential(&replaced)?;
    phone.run(&["note", "after a replaced answer"])?;
    phone.run(&["sync"])?;
    ensure!(all_delivered(&phone)?);
    let (last, pending) = stored_credentials(&phone)?;
    ensure!(pending.is_none() && http.get(&me, Some(&last))?.0 == 200);
    // The shift's start, a scan and four notes, each once.
    ensure!(control_pull(&server, A, 1000)?.len() == 6);

    // A user rotates its own token with the `patrol` command: the new one works, the old one
    // (with no overlap on this server) is forgotten at once.
    let events = format!("{}/api/v1/sites/{A}/events", server.url);
    let old = server.admin_token.clone();
    let shown = run_ok(&mut server.control(&old, &["token", "show"])?)?;
    ensure!(
        shown.contains("e2e-admin") && shown.contains("this token expires at"),
        "{shown}"
    );
    let new = run_ok(&mut server.control(&old, &["token", "rotate"])?)?
        .trim()
        .to_owned();
    ensure!(new.starts_with("pu_") && new != old, "{new:?}");
    ensure!(http.get(&events, Some(&new))?.0 == 200);
    let (status, answer) = http.get(&events, Some(&old))?;
    ensure!(status == 401 && error_code(answer.to_string().as_bytes())? == "invalid_credential");
    Ok(())
}
