//! Webhooks through the real server: a local receiver that, for each delivery, first answers
//! 500, then is slower than the server's timeout, then accepts; the server is killed (SIGKILL)
//! while the first delivery is being retried and started again over the same data directory.
//! Every delivery arrives with a valid signature and each idempotency key is accepted exactly
//! once; a second endpoint that never recovers gets its delivery parked, listed with its
//! attempts through the API and `patrol control webhook deliveries --parked`, re-queued with
//! `webhook retry`, and removed with `webhook remove`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use hmac::{Hmac, KeyInit, Mac};
use patrol_core::{EventBody, GuardId};
use patrol_e2e::enrolled_phone;
use patrol_mobile::{DeviceStore, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::{Server, run_ok};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SITE: &str = "site-1";

/// Longer than the server's `--webhook-timeout-ms`.
const SLOW: Duration = Duration::from_secs(3);

const SERVER_ARGS: &[&str] = &[
    "--webhook-check-ms",
    "100",
    "--webhook-retry-base-ms",
    "200",
    "--webhook-max-attempts",
    "5",
    "--webhook-timeout-ms",
    "1000",
    "--alarm-escalation-after-secs",
    "1",
    "--alarm-check-secs",
    "1",
];

/// One request as the receiver read it.
#[derive(Clone, Debug)]
struct Received {
    key: String,
    event: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// What a receiver saw: every request, and the keys it accepted (answered 2xx in time), with
/// how often.
#[derive(Debug, Default)]
struct Log {
    requests: Vec<Received>,
    accepted: HashMap<String, u32>,
}

/// How a receiver answers the `n`th request (from 1) for one key.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// 500, then slower than the timeout, then 204.
    FailsSlowRecovers,
    /// 503 always.
    NeverRecovers,
    /// 204 at once.
    Accepts,
}

async fn receiver(behaviour: Behaviour) -> Result<(SocketAddr, Arc<Mutex<Log>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = shared.clone();
            tokio::spawn(async move {
                let _ = answer(socket, behaviour, log).await;
            });
        }
    });
    Ok((addr, log))
}

/// Reads one HTTP/1.1 request and answers it as `behaviour` says, closing the connection.
async fn answer(mut socket: TcpStream, behaviour: Behaviour, log: Arc<Mutex<Log>>) -> Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        ensure!(n > 0, "closed before the request head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        ensure!(n > 0, "closed before the request body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let received = Received {
        key: header("patrol-webhook-id"),
        event: header("patrol-webhook-event"),
        timestamp: header("patrol-webhook-timestamp"),
        signature: header("patrol-webhook-signature"),
        body: String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned(),
    };
    let nth = {
        let mut log = log.lock().map_err(|_| anyhow!("poisoned"))?;
        log.requests.push(received.clone());
        log.requests
            .iter()
            .filter(|r| r.key == received.key)
            .count()
    };
    let status = match (behaviour, nth) {
        (Behaviour::NeverRecovers, _) => "503 Service Unavailable",
        (Behaviour::FailsSlowRecovers, 1) => "500 Internal Server Error",
        (Behaviour::FailsSlowRecovers, 2) => {
            // The server has given up by the time this answers: not accepted.
            tokio::time::sleep(SLOW).await;
            "200 OK"
        }
        (Behaviour::FailsSlowRecovers, _) | (Behaviour::Accepts, _) => {
            let mut log = log.lock().map_err(|_| anyhow!("poisoned"))?;
            *log.accepted.entry(received.key.clone()).or_default() += 1;
            "204 No Content"
        }
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await?;
    Ok(())
}

/// Checks a delivery's signature as docs/protocol.md tells a receiver to: the HMAC-SHA256 of
/// `{timestamp}.{body}` keyed with the secret, compared in constant time.
fn verify(secret: &str, r: &Received) -> Result<()> {
    let hex = r
        .signature
        .strip_prefix("v1=")
        .ok_or_else(|| anyhow!("no v1= signature: {r:?}"))?;
    ensure!(hex.len() % 2 == 0, "odd hex signature {hex}");
    let expected = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(r.timestamp.as_bytes());
    mac.update(b".");
    mac.update(r.body.as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| anyhow!("bad signature on {r:?}"))?;
    let at: i64 = r.timestamp.parse()?;
    let now = chrono::Utc::now().timestamp();
    ensure!((now - at).abs() < 300, "timestamp {at} is not recent");
    let body: Value = serde_json::from_str(&r.body)?;
    ensure!(
        body["id"] == r.key.as_str() && body["type"] == r.event.as_str(),
        "{body} under headers {r:?}"
    );
    Ok(())
}

async fn register(
    http: &reqwest::Client,
    server: &Server,
    url: String,
    events: &[&str],
) -> Result<(i64, String)> {
    let created: Value = http
        .post(format!("{}/api/v1/sites/{SITE}/webhooks", server.url))
        .bearer_auth(&server.admin_token)
        .json(&json!({"url": url, "events": events}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_i64().ok_or_else(|| anyhow!("{created}"))?;
    let secret = created["secret"]
        .as_str()
        .ok_or_else(|| anyhow!("{created}"))?
        .to_owned();
    Ok((id, secret))
}

async fn deliveries(http: &reqwest::Client, server: &Server, state: &str) -> Result<Vec<Value>> {
    let listed: Value = http
        .get(format!(
            "{}/api/v1/sites/{SITE}/webhooks/deliveries?state={state}",
            server.url
        ))
        .bearer_auth(&server.admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(listed["deliveries"].as_array().cloned().unwrap_or_default())
}

/// Waits up to `within` for `done` to hold of the receiver's log.
async fn wait_for(log: &Mutex<Log>, within: Duration, done: impl Fn(&Log) -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        {
            let log = log.lock().map_err(|_| anyhow!("poisoned"))?;
            if done(&log) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow!("timed out; the receiver saw {log:#?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_failures_slowness_and_a_restart_and_arrive_once_signed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("server");
    let server = Server::start_with_args(&data_dir, &[SITE], false, SERVER_ARGS)?;
    let admin = server.admin_token.clone();
    let http = reqwest::Client::new();
    let (good_addr, good) = receiver(Behaviour::FailsSlowRecovers).await?;
    let (bad_addr, bad) = receiver(Behaviour::NeverRecovers).await?;
    let (_, secret) = register(
        &http,
        &server,
        format!("http://{good_addr}/hooks"),
        &["panic.raised", "panic.unacknowledged"],
    )
    .await?;
    let (bad_id, _) = register(
        &http,
        &server,
        format!("http://{bad_addr}/hooks"),
        &["panic.raised"],
    )
    .await?;

    let (mut phone, client) = enrolled_phone(
        &server,
        SITE,
        &dir.path().join("phone.db"),
        StoreOptions::default(),
    )
    .await?;
    phone.start_shift(GuardId::new("anna")?)?;
    let first = phone
        .record(
            EventBody::Panic { location: None },
            RecordOptions::default(),
        )?
        .to_string();
    client.sync(&mut phone).await?;

    // The first attempt fails (500); the server dies while the delivery waits for its retry.
    let raised = format!("panic.raised:{first}");
    wait_for(&good, Duration::from_secs(20), |log| {
        log.requests.iter().any(|r| r.key == raised)
    })
    .await?;
    server.kill()?;
    let server = Server::restart_with_args(&data_dir, &admin, SERVER_ARGS)
        .context("restarting the server")?;
    let client = SyncClient::new(&server.url)?;
    let second = phone
        .record(
            EventBody::Panic { location: None },
            RecordOptions::default(),
        )?
        .to_string();
    client.sync(&mut phone).await?;

    let expected: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|p| {
            [
                format!("panic.raised:{p}"),
                format!("panic.unacknowledged:{p}"),
            ]
        })
        .collect();
    wait_for(&good, Duration::from_secs(60), |log| {
        expected.iter().all(|k| log.accepted.contains_key(k))
    })
    .await?;
    // Time for any stray resend to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let log = good.lock().map_err(|_| anyhow!("poisoned"))?;
        for r in &log.requests {
            verify(&secret, r)?;
        }
        ensure!(
            log.accepted.len() == expected.len() && log.accepted.values().all(|n| *n == 1),
            "each key accepted once: {:?}",
            log.accepted
        );
        for key in &expected {
            let tries = log.requests.iter().filter(|r| &r.key == key).count();
            ensure!(
                tries == 3,
                "{key}: {tries} requests, expected 500, slow, 204"
            );
        }
    }
    let delivered = deliveries(&http, &server, "delivered").await?;
    ensure!(delivered.len() == expected.len(), "{delivered:#?}");
    for d in &delivered {
        let log = d["attempt_log"].as_array().cloned().unwrap_or_default();
        ensure!(
            d["attempts"].as_u64() == Some(log.len() as u64)
                && log.first().is_some_and(|a| a["status"] == 500)
                && log.last().is_some_and(|a| a["status"] == 204),
            "{d:#}"
        );
        // The second panic's, untouched by the restart: 500, a timeout, 204.
        if d["idempotency_key"]
            .as_str()
            .is_some_and(|k| k.ends_with(second.as_str()))
        {
            ensure!(
                log.len() == 3 && log[1]["status"].is_null() && log[1]["error"] == "timed out",
                "{d:#}"
            );
        }
    }

    // The endpoint that never recovers: its deliveries are parked after 5 attempts, listed.
    let mut parked = Vec::new();
    for _ in 0..300 {
        parked = deliveries(&http, &server, "parked").await?;
        if parked.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(parked.len() == 2, "{parked:#?}");
    for d in &parked {
        ensure!(
            d["webhook_id"] == bad_id
                && d["event_type"] == "panic.raised"
                && d["attempts"] == 5
                && d["attempt_log"].as_array().map(Vec::len) == Some(5)
                && d["attempt_log"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|t| t["status"] == 503)),
            "{d:#}"
        );
    }
    // The same through the CLI; a parked one re-queued is tried at once (and fails again).
    let control = |args: &[&str]| -> Result<String> {
        run_ok(&mut server.control(&server.admin_token, args)?)
    };
    let listed: Value = serde_json::from_str(&control(&[
        "webhook",
        "deliveries",
        "--site",
        SITE,
        "--parked",
        "--json",
    ])?)?;
    ensure!(
        listed["deliveries"].as_array().map(Vec::len) == Some(2),
        "{listed}"
    );
    let table = control(&["webhook", "list", "--site", SITE])?;
    ensure!(
        table.contains(&bad_addr.to_string()) && table.contains("panic.raised"),
        "{table}"
    );
    let id = parked[0]["id"].to_string();
    control(&["webhook", "retry", "--site", SITE, &id])?;
    let mut retried = false;
    for _ in 0..300 {
        let now = deliveries(&http, &server, "parked").await?;
        if now.iter().any(|d| {
            d["id"] == parked[0]["id"]
                && d["attempts"] == 5
                && d["attempt_log"].as_array().map(Vec::len) == Some(10)
        }) {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        retried,
        "the re-queued delivery was not tried again and parked"
    );
    control(&["webhook", "remove", "--site", SITE, &bad_id.to_string()])?;
    ensure!(deliveries(&http, &server, "parked").await?.is_empty());

    // At least those attempts (one cut by the kill is sent again, and not recorded).
    let bad_requests = bad.lock().map_err(|_| anyhow!("poisoned"))?.requests.len();
    ensure!(
        bad_requests >= 10,
        "{bad_requests} requests to the endpoint that never recovers"
    );
    Ok(())
}

/// A device on shift that stops syncing is delivered as `device.silent`, signed, once, however
/// many checks see the silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_is_delivered_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("server"),
        &[SITE],
        false,
        &[
            "--webhook-check-ms",
            "100",
            "--no-contact-after-secs",
            "1",
            "--gap-check-secs",
            "1",
        ],
    )?;
    let http = reqwest::Client::new();
    let (addr, log) = receiver(Behaviour::Accepts).await?;
    let (_, secret) = register(
        &http,
        &server,
        format!("http://{addr}/silent"),
        &["device.silent"],
    )
    .await?;
    let code = server.enrollment_code(SITE)?;
    let client = SyncClient::new(&server.url)?;
    let enrollment = client.enroll(&code).await?;
    let device = enrollment.device.to_string();
    let mut phone = DeviceStore::create_enrolled(
        dir.path().join("phone.db"),
        enrollment,
        StoreOptions::default(),
    )?;
    phone.start_shift(GuardId::new("anna")?)?;
    client.sync(&mut phone).await?;

    wait_for(&log, Duration::from_secs(30), |log| {
        !log.accepted.is_empty()
    })
    .await?;
    // More checks see the same silence: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = log.lock().map_err(|_| anyhow!("poisoned"))?;
    ensure!(log.requests.len() == 1, "{:#?}", log.requests);
    let r = &log.requests[0];
    verify(&secret, r)?;
    let body: Value = serde_json::from_str(&r.body)?;
    ensure!(
        r.event == "device.silent"
            && r.key.starts_with(&format!("device.silent:{device}:"))
            && body["data"]["device_id"] == device.as_str()
            && body["data"]["guard"] == "anna"
            && body["data"]["no_contact_after_secs"] == 1,
        "{body}"
    );
    Ok(())
}
