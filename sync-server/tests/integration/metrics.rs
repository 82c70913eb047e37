//! Traffic and domain counters: body counters through the router, wire counters over real TCP,
//! the `/metrics` text format, and the side listener that does not count itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use patrol_core::protocol;
use patrol_server::{Metrics, MetricsSnapshot, serve, serve_metrics};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{SITE, TestResult, TestServer};

type Error = Box<dyn std::error::Error>;

/// Parses the exposition text: every non-comment line must be `name{labels} value` (labels
/// optional) with a numeric value, and every name must have had `# HELP` and `# TYPE` lines
/// before it. Returns `name{labels}` -> value.
fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut described = (Vec::<&str>::new(), Vec::<&str>::new());
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            described.0.push(name);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or_default();
            let kind = parts.next().unwrap_or_default();
            if !["counter", "gauge", "untyped", "histogram", "summary"].contains(&kind) {
                return Err(format!("bad type in {line:?}"));
            }
            described.1.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|e| format!("bad value in {line:?}: {e}"))?;
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels in {line:?}"))?;
                for pair in labels.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("bad label {pair:?} in {line:?}"))?;
                    let ok_key =
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let ok_value = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
                    if !ok_key || !ok_value {
                        return Err(format!("bad label {pair:?} in {line:?}"));
                    }
                }
                name
            }
            None => series,
        };
        let ok_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !ok_name {
            return Err(format!("bad metric name in {line:?}"));
        }
        // A histogram's series are named after it with a suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| described.1.contains(base))
            })
            .unwrap_or(name);
        if !described.0.contains(&family) || !described.1.contains(&family) {
            return Err(format!("no HELP/TYPE before {line:?}"));
        }
        if out.insert(series.to_string(), value).is_some() {
            return Err(format!("duplicate series in {line:?}"));
        }
    }
    Ok(out)
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> u64 {
    let v = metrics
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {metrics:?}"));
    *v as u64
}

#[tokio::test]
async fn a_sync_counts_bodies_and_domain_events() -> TestResult {
    let server = TestServer::sqlite().await?;
    let metrics = server.state.metrics.clone();
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    phone.scan("cp-2")?;
    let request = phone.push_request()?.encode()?;
    let before = metrics.snapshot();

    let credential = phone.credential.clone();
    let credential = Some(credential.as_str());
    let (status, _, response) = server
        .post_sync(credential, Some(protocol::CONTENT_TYPE), request.clone())
        .await?;
    assert_eq!(status, StatusCode::OK);
    let after = metrics.snapshot();
    assert!(after.http_request_body_bytes - before.http_request_body_bytes >= request.len() as u64);
    assert!(
        after.http_response_body_bytes - before.http_response_body_bytes >= response.len() as u64
    );
    assert_eq!(after.http_requests - before.http_requests, 1);
    assert_eq!(after.http_responses[1] - before.http_responses[1], 1);
    assert_eq!(after.sync_requests - before.sync_requests, 1);
    assert_eq!(after.docs_accepted - before.docs_accepted, 1);
    assert_eq!(after.events_inserted - before.events_inserted, 3);
    // The router alone has no sockets: oneshot calls do not touch the wire counters.
    assert_eq!(after.wire_read_bytes, 0);

    // A repeat (a new request with the same push) inserts nothing; a replayed request and a
    // refused one count as 4xx and still as sync requests.
    let repeat = phone.push_request()?.encode()?;
    let (status, _, _) = server
        .post_sync(credential, Some(protocol::CONTENT_TYPE), repeat)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = server
        .post_sync(credential, Some(protocol::CONTENT_TYPE), request)
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = server
        .post_sync(credential, Some("text/plain"), b"x".to_vec())
        .await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let last = metrics.snapshot();
    assert_eq!(last.events_inserted, after.events_inserted);
    assert_eq!(last.docs_accepted - after.docs_accepted, 1);
    assert_eq!(last.sync_requests - after.sync_requests, 3);
    assert_eq!(last.http_responses[3] - after.http_responses[3], 2);

    // The same counters, through `/metrics` on the API router.
    let (status, ct, body) = server
        .call(Request::get("/metrics").body(Body::empty())?)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8(body.to_vec())?;
    let parsed = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(value(&parsed, "patrol_events_inserted_total"), 3);
    assert_eq!(value(&parsed, "patrol_sync_requests_total"), 4);
    assert_eq!(value(&parsed, "patrol_sync_docs_accepted_total"), 2);
    assert_eq!(
        value(
            &parsed,
            "patrol_sync_docs_rejected_total{code=\"wrong_owner\"}"
        ),
        0
    );
    assert_eq!(
        value(&parsed, "patrol_http_responses_total{class=\"4xx\"}"),
        2
    );
    // The `/metrics` request itself was counted before its response was rendered.
    assert_eq!(value(&parsed, "patrol_http_requests_total"), 5);
    assert!(
        value(&parsed, "patrol_http_request_body_bytes_total")
            >= last.http_request_body_bytes.max(1)
    );
    for name in [
        "patrol_wire_connections_total",
        "patrol_wire_read_bytes_total",
        "patrol_wire_written_bytes_total",
        "patrol_http_response_body_bytes_total",
    ] {
        assert!(parsed.contains_key(name), "no {name} in\n{text}");
    }
    Ok(())
}

/// The API on one port (counted) and the metrics side listener on another, both real TCP.
struct Running {
    api: SocketAddr,
    side: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    server: TestServer,
}

impl Running {
    async fn start() -> Result<Self, Error> {
        let server = TestServer::sqlite().await?;
        let metrics = server.state.metrics.clone();
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        let side_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (api, side) = (api_listener.local_addr()?, side_listener.local_addr()?);
        let (stop_api, api_stopped) = oneshot::channel::<()>();
        let (stop_side, side_stopped) = oneshot::channel::<()>();
        let tasks = vec![
            tokio::spawn(serve(api_listener, server.state.clone(), async move {
                let _ = api_stopped.await;
            })),
            tokio::spawn(serve_metrics(side_listener, metrics.clone(), async move {
                let _ = side_stopped.await;
            })),
        ];
        Ok(Running {
            api,
            side,
            metrics,
            stop: vec![stop_api, stop_side],
            tasks,
            server,
        })
    }

    async fn stop(self) -> TestResult {
        drop(self.stop);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task).await???;
        }
        Ok(())
    }
}

/// Sends `head` and `body` on a fresh connection (`Connection: close`) and reads the whole
/// answer. Returns (bytes sent, bytes received, the answer).
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Result<(usize, Vec<u8>), Error> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = head.as_bytes().to_vec();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    Ok((request.len(), answer))
}

async fn get(addr: SocketAddr, path: &str) -> Result<(usize, Vec<u8>), Error> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, &head, b"").await
}

fn http_body(answer: &[u8]) -> Result<String, Error> {
    let text = String::from_utf8(answer.to_vec())?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    Ok(body.to_string())
}

fn changed_wire(a: &MetricsSnapshot, b: &MetricsSnapshot) -> bool {
    (a.wire_connections, a.wire_read_bytes, a.wire_written_bytes)
        != (b.wire_connections, b.wire_read_bytes, b.wire_written_bytes)
}

#[tokio::test]
async fn wire_counters_see_every_byte_and_the_side_port_is_not_counted() -> TestResult {
    let running = Running::start().await?;
    let mut phone = running.server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    let request = phone.push_request()?.encode()?;
    let head = format!(
        "POST /api/v1/sync HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        running.api,
        phone.credential,
        protocol::CONTENT_TYPE,
        request.len()
    );
    let (sent, answer) = exchange(running.api, &head, &request).await?;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The server read the whole request (it needs all of it to answer) and we read until it
    // closed, so both directions match byte for byte.
    let after_sync = running.metrics.snapshot();
    assert_eq!(after_sync.wire_read_bytes, sent as u64);
    assert_eq!(after_sync.wire_written_bytes, answer.len() as u64);
    assert_eq!(after_sync.wire_connections, 1);
    assert!(after_sync.wire_read_bytes >= after_sync.http_request_body_bytes);
    assert!(after_sync.http_request_body_bytes >= request.len() as u64);
    assert!(after_sync.wire_written_bytes > after_sync.http_response_body_bytes);
    assert!(after_sync.http_response_body_bytes > 0);

    // Reading the side port, twice, changes nothing it reports.
    let (_, first) = get(running.side, "/metrics").await?;
    let (_, second) = get(running.side, "/metrics").await?;
    let (first, second) = (http_body(&first)?, http_body(&second)?);
    assert_eq!(first, second, "the side port counted itself");
    let parsed = parse_metrics(&first).unwrap_or_else(|e| panic!("{e}\n{first}"));
    assert_eq!(value(&parsed, "patrol_wire_read_bytes_total"), sent as u64);
    assert_eq!(
        value(&parsed, "patrol_wire_written_bytes_total"),
        answer.len() as u64
    );
    assert_eq!(value(&parsed, "patrol_http_requests_total"), 1);
    assert_eq!(value(&parsed, "patrol_events_inserted_total"), 2);
    let after_side = running.metrics.snapshot();
    assert_eq!(after_side, after_sync);

    // `/metrics` on the API port is API traffic and is counted like any other request.
    let (sent_get, answer_get) = get(running.api, "/metrics").await?;
    let text = http_body(&answer_get)?;
    parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let after_main = running.metrics.snapshot();
    assert!(changed_wire(&after_side, &after_main));
    assert_eq!(
        after_main.wire_read_bytes - after_side.wire_read_bytes,
        sent_get as u64
    );
    assert_eq!(
        after_main.wire_written_bytes - after_side.wire_written_bytes,
        answer_get.len() as u64
    );

    running.stop().await
}

#[tokio::test]
async fn feed_pages_count_as_response_body() -> TestResult {
    let server = TestServer::sqlite().await?;
    let before = server.state.metrics.snapshot();
    let (status, _, body) = server
        .call(
            Request::get(format!("/api/v1/sites/{SITE}/events"))
                .header(header::AUTHORIZATION, format!("Bearer {}", server.admin))
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let after = server.state.metrics.snapshot();
    assert_eq!(
        after.http_response_body_bytes - before.http_response_body_bytes,
        body.len() as u64
    );
    Ok(())
}
