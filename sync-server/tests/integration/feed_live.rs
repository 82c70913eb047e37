//! The control room's feed: filters on the paged pull, and the live stream (server-sent events)
//! that delivers new events as they are committed and resumes from a cursor after a reconnect.

use std::time::Duration;

use patrol_core::EventBody;
use patrol_server::serve;

use crate::common::{Backend, Phone, SITE, TestResult, TestServer};

/// Reads SSE frames from `resp` until `want` events arrived; returns their ids and kinds.
async fn read_events(
    resp: &mut reqwest::Response,
    buf: &mut String,
    want: usize,
) -> Result<Vec<(u64, String)>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    while out.len() < want {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>()?);
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<serde_json::Value>(v.trim())?);
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                assert_eq!(data["seq"], id, "the SSE id is the event's sequence number");
                out.push((id, data["kind"].as_str().unwrap_or("").to_owned()));
            }
        }
        if out.len() >= want {
            break;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await??
            .ok_or("the stream ended")?;
        buf.push_str(std::str::from_utf8(&chunk)?);
    }
    Ok(out)
}

async fn the_live_stream_delivers_new_events_and_resumes_from_a_cursor(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    phone.record(EventBody::Note {
        text: "gate 2 locked".into(),
    })?;
    let push = phone.push()?;
    let resp = server.sync(&phone.request(vec![push])).await?;
    phone.on_accepted(&resp.docs[0].outcome);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, server.state.clone(), async {
        let _ = stopped.await;
    }));
    // The control room reads the stream with a user token.
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", server.admin))?,
    );
    let http = reqwest::Client::builder().default_headers(auth).build()?;
    let url = format!("http://{addr}/api/v1/sites/{SITE}/stream");
    let anonymous = reqwest::Client::new().get(&url).send().await?;
    assert_eq!(anonymous.status(), 401);

    // What is stored comes first, then what is committed while the client listens.
    let mut live = http.get(&url).send().await?;
    assert_eq!(live.status(), 200);
    assert_eq!(
        live.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    // A comment comes first, before any event: Firefox's EventSource reports a stream open only
    // at its first bytes, so a quiet site's stream must not wait for its first keep-alive.
    let opening = tokio::time::timeout(Duration::from_secs(30), live.chunk())
        .await??
        .ok_or("the stream ended")?;
    let mut buf = String::from_utf8(opening.to_vec())?;
    assert!(buf.starts_with(':'), "the stream opened with {buf:?}");
    let first = read_events(&mut live, &mut buf, 3).await?;
    assert_eq!(first.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
    phone.scan("cp-2")?;
    phone.scan("cp-3")?;
    let push = phone.push()?;
    server.sync(&phone.request(vec![push])).await?;
    let more = read_events(&mut live, &mut buf, 2).await?;
    assert_eq!(more.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [4, 5]);

    // A client that reconnects with the last id it saw gets only what follows.
    let resumed = http.get(&url).header("Last-Event-ID", "3").send().await?;
    let mut rbuf = String::new();
    let mut resumed = resumed;
    let after3 = read_events(&mut resumed, &mut rbuf, 2).await?;
    assert_eq!(after3.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [4, 5]);

    // Filters apply to the stream as to the paged feed.
    let mut notes = http.get(format!("{url}?kind=note")).send().await?;
    let mut nbuf = String::new();
    let only = read_events(&mut notes, &mut nbuf, 1).await?;
    assert_eq!(only, [(3, "note".to_owned())]);

    // Bad cursors and filters are refused clearly.
    let bad = http.get(&url).header("Last-Event-ID", "x").send().await?;
    assert_eq!(bad.status(), 400);
    let bad = http.get(format!("{url}?kind=dance")).send().await?;
    assert_eq!(bad.status(), 400);
    let unknown = http
        .get(format!("http://{addr}/api/v1/sites/nowhere/stream"))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);

    // A graceful shutdown ends the open streams instead of waiting on them forever.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), serving).await???;
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match live.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended with the server");
    Ok(())
}

async fn the_paged_feed_filters_by_kind_guard_checkpoint_device_and_time(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut a = server.phone("guard-1").await?;
    let mut b = server.phone("guard-2").await?;
    for phone in [&mut a, &mut b] {
        phone.scan("cp-1")?;
        phone.scan("cp-2")?;
        phone.record(EventBody::Note {
            text: "all quiet".into(),
        })?;
        let push = phone.push()?;
        server.sync(&phone.request(vec![push])).await?;
    }
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["seq"].as_u64()).collect())
            .unwrap_or_default()
    };
    let get = |q: String| {
        let server = &server;
        async move {
            server
                .get_json(&format!("/api/v1/sites/{SITE}/events?{q}"))
                .await
        }
    };
    let (status, page) = get("kind=note".into()).await?;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), [4, 8]);
    let (_, page) = get("guard=guard-2&checkpoint=cp-2".into()).await?;
    assert_eq!(ids(&page), [7]);
    let (_, page) = get(format!("device={}", a.device)).await?;
    assert_eq!(ids(&page), [1, 2, 3, 4]);
    // Device time: each phone's n-th event is at the same minute (see Phone::wall_ms).
    let from = chrono::DateTime::from_timestamp_millis(Phone::wall_ms(2))
        .ok_or("time")?
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(Phone::wall_ms(3))
        .ok_or("time")?
        .to_rfc3339();
    let (_, page) = get(format!(
        "from={}&to={}",
        from.replace('+', "%2B"),
        to.replace('+', "%2B")
    ))
    .await?;
    assert_eq!(ids(&page), [2, 6]);
    // A filtered page moves the cursor past what it examined, even with few matches.
    let (_, page) = get("kind=note&limit=1".into()).await?;
    assert_eq!(
        (ids(&page), page["next"].as_u64(), page["more"].as_bool()),
        (vec![4], Some(4), Some(true))
    );
    let (_, page) = get("kind=note&after=4".into()).await?;
    assert_eq!(
        (ids(&page), page["next"].as_u64(), page["more"].as_bool()),
        (vec![8], Some(8), Some(false))
    );
    for bad in ["kind=dance", "guard=a%20b", "from=yesterday", "device=nope"] {
        let (status, body) = get(bad.into()).await?;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_query", "{bad}: {body}");
    }
    Ok(())
}

crate::on_every_backend!(
    the_live_stream_delivers_new_events_and_resumes_from_a_cursor,
    the_paged_feed_filters_by_kind_guard_checkpoint_device_and_time,
);
