//! Failed authentication against the real server binary: an address that keeps presenting
//! wrong credentials is slowed, then refused with `429` and a `Retry-After` even with a valid
//! token, while other addresses are served; each failure is logged with the client address
//! and the reason, never the credential. Clients on 127.0.0.2 and 127.0.0.3 play other
//! machines (all of 127/8 is loopback).

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use patrol_testkit::Server;
use serde_json::Value;

const SITE: &str = "site-t";
/// A well-formed user token the server never issued.
const WRONG_USER_TOKEN: &str = "pu_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const WRONG_CODE: &str = "pe_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

/// A client whose connections come from `from`.
fn client(from: [u8; 4]) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()?)
}

/// GET the site's devices with `token`: (status, Retry-After, body).
async fn devices(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
) -> Result<(u16, Option<u64>, Value)> {
    let response = http
        .get(format!("{}/api/v1/sites/{SITE}/devices", server.url))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((status, retry_after, response.json().await?))
}

async fn enroll(http: &reqwest::Client, server: &Server, code: &str) -> Result<(u16, Value)> {
    let response = http
        .post(format!("{}/api/v1/enroll", server.url))
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_refused_and_logged_without_the_secret() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("server.log");
    let server = Server::start_logging_to(
        &tmp.path().join("data"),
        &[SITE],
        &["--auth-max-failures", "4", "--auth-lockout-secs", "600"],
        &log,
    )?;
    let attacker = client([127, 0, 0, 2])?;
    let guard_desk = client([127, 0, 0, 1])?;

    for attempt in 1..=4 {
        let (status, _, body) = devices(&attacker, &server, WRONG_USER_TOKEN).await?;
        ensure!(
            status == 401 && body["error"] == "invalid_credential",
            "attempt {attempt}: {status} {body}"
        );
    }
    // Locked out: even the right token is not looked at.
    let (status, retry_after, body) = devices(&attacker, &server, &server.admin_token).await?;
    ensure!(
        status == 429 && body["error"] == "too_many_failed_attempts",
        "{status} {body}"
    );
    ensure!(
        retry_after.is_some_and(|s| s > 0 && s <= 600),
        "Retry-After {retry_after:?}"
    );
    // Another address is served as before.
    let (status, _, body) = devices(&guard_desk, &server, &server.admin_token).await?;
    ensure!(status == 200, "{status} {body}");

    // Enrollment codes are credentials too.
    let phone_thief = client([127, 0, 0, 3])?;
    for attempt in 1..=4 {
        let (status, body) = enroll(&phone_thief, &server, WRONG_CODE).await?;
        ensure!(
            status == 401,
            "enrollment attempt {attempt}: {status} {body}"
        );
    }
    let code = server.enrollment_code(SITE)?;
    let (status, body) = enroll(&phone_thief, &server, &code).await?;
    ensure!(
        status == 429 && body["error"] == "too_many_failed_attempts",
        "{status} {body}"
    );

    let logged = std::fs::read_to_string(&log).context("reading the server's log")?;
    let failures: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    ensure!(failures.len() == 8, "{logged}");
    ensure!(
        failures
            .iter()
            .all(|l| l.contains("invalid_") && (l.contains("127.0.0.2") || l.contains("127.0.0.3"))),
        "{logged}"
    );
    ensure!(
        logged.contains("refusing this address for a while"),
        "no lockout line: {logged}"
    );
    for secret in [WRONG_USER_TOKEN, WRONG_CODE, &server.admin_token, &code] {
        ensure!(
            !logged.contains(secret),
            "the log holds a credential: {logged}"
        );
    }
    // The counters say so too.
    let (status, _, _) = devices(&guard_desk, &server, &server.admin_token).await?;
    ensure!(status == 200);
    let metrics = patrol_e2e::metrics(&guard_desk, &server).await?;
    ensure!(
        metrics.get("patrol_auth_failures_total") == Some(&8)
            && metrics.get("patrol_auth_throttled_total") == Some(&2),
        "{metrics:?}"
    );
    Ok(())
}
