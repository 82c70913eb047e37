//! # patrol-e2e
//!
//! Helpers for the end-to-end tests, on top of `patrol-testkit` (the real binaries, the
//! `patrol-server` child process, scratch PostgreSQL databases): phones played by the `patrol`
//! command, the control room's pull, a TCP proxy that kills a client process at the worst
//! moment of a sync, a relay that kills the server at the worst moment of an answer, and the
//! seeded generator of the crash tests; [`browser`], headless Chromium and Firefox for the web
//! console's tests.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use patrol_testkit::{Server, bins, run_ok};

pub mod browser;

/// A guard's phone played by the `patrol` command on its own store file.
#[derive(Debug, Clone)]
pub struct Phone {
    pub store: PathBuf,
}

impl Phone {
    /// Enrolls a new phone on `site` of `server` with a fresh enrollment code, creating its
    /// store at `store`.
    pub fn enroll(store: PathBuf, server: &Server, site: &str) -> Result<Phone> {
        let code = server.enrollment_code(site)?;
        let phone = Phone { store };
        phone.run(&["enroll", "--server", &server.url, "--code", &code])?;
        Ok(phone)
    }

    /// The device id, as `patrol device status` shows it.
    pub fn device_id(&self) -> Result<String> {
        let status = self.run(&["status"])?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("device").map(|id| id.trim().to_owned()))
            .ok_or_else(|| anyhow!("no device line in {status}"))
    }

    /// The command `patrol device --store <store> <args>`, not yet run.
    pub fn command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(&bins()?.patrol);
        cmd.arg("device").arg("--store").arg(&self.store).args(args);
        Ok(cmd)
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        run_ok(&mut self.command(args)?)
    }

    /// The local log as JSON objects (`patrol device log --json`).
    pub fn log(&self) -> Result<Vec<serde_json::Value>> {
        let doc: serde_json::Value =
            serde_json::from_str(&self.run(&["log", "--json"])?).context("parsing the log")?;
        events_of(doc)
    }
}

/// The control room's pull of the whole merged site log, through the `patrol` command, as the
/// first administrator.
pub fn control_pull(server: &Server, site: &str, page: u32) -> Result<Vec<serde_json::Value>> {
    let out = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "pull",
            "--site",
            site,
            "--json",
            "--limit",
            &page.to_string(),
        ],
    )?)?;
    events_of(serde_json::from_str(&out).context("parsing the pulled page")?)
}

/// The `events` of a `--json` document.
fn events_of(mut doc: serde_json::Value) -> Result<Vec<serde_json::Value>> {
    match doc["events"].take() {
        serde_json::Value::Array(events) => Ok(events),
        other => bail!("no events array in {other}"),
    }
}

/// The live stream of `site` on `server` (`GET /api/v1/sites/{site}/stream`), as its first
/// administrator, once it answered 200.
pub async fn open_stream(server: &Server, site: &str) -> Result<reqwest::Response> {
    let live = reqwest::Client::new()
        .get(format!("{}/api/v1/sites/{site}/stream", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await?;
    if live.status() != 200 {
        bail!("stream: {}", live.status());
    }
    Ok(live)
}

/// The next message of a live stream (server-sent events) named `name` (its `event:` line;
/// `None`: any message) whose JSON data `pick` accepts, skipping the others, waiting at most a
/// minute. `buf` keeps what was read past it, for the next call.
pub async fn next_sse(
    resp: &mut reqwest::Response,
    buf: &mut String,
    name: Option<&str>,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let event = frame.lines().find_map(|l| l.strip_prefix("event:"));
                let data = frame.lines().find_map(|l| l.strip_prefix("data:"));
                if let Some(data) = data
                    && name.is_none_or(|name| event.is_some_and(|e| e.trim() == name))
                {
                    let data: serde_json::Value =
                        serde_json::from_str(data.trim()).context("parsing a stream message")?;
                    if pick(&data) {
                        return Ok(data);
                    }
                }
            }
            let chunk = resp
                .chunk()
                .await?
                .ok_or_else(|| anyhow!("the stream ended"))?;
            buf.push_str(std::str::from_utf8(&chunk)?);
        }
    })
    .await
    .with_context(|| format!("no {} on the live stream", name.unwrap_or("message")))?
}

/// The server's counters as `/metrics` shows them now: each series (name and labels, e.g.
/// `patrol_wire_refused_connections_total{cap="overall"}`) with its value (whole numbers only:
/// a histogram's sum is left out).
pub async fn metrics(
    http: &reqwest::Client,
    server: &Server,
) -> Result<std::collections::HashMap<String, u64>> {
    counters_at(http, &server.url).await
}

/// [`metrics`] read from the server's side port, which counts nothing: reading it does not
/// change the traffic counters.
pub async fn side_metrics(
    http: &reqwest::Client,
    server: &Server,
) -> Result<std::collections::HashMap<String, u64>> {
    let url = server
        .metrics_url
        .clone()
        .ok_or_else(|| anyhow!("no metrics port"))?;
    counters_at(http, &url).await
}

async fn counters_at(
    http: &reqwest::Client,
    base: &str,
) -> Result<std::collections::HashMap<String, u64>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// A phone enrolled on `site` of `server` with a fresh code, its store at `path`, and the
/// client it syncs with.
pub async fn enrolled_phone(
    server: &Server,
    site: &str,
    path: &std::path::Path,
    options: patrol_mobile::StoreOptions,
) -> Result<(patrol_mobile::DeviceStore, patrol_mobile::SyncClient)> {
    let code = server.enrollment_code(site)?;
    let client = patrol_mobile::SyncClient::new(&server.url)?;
    let enrollment = client.enroll(&code).await?;
    if enrollment.site.as_str() != site {
        bail!("enrolled on {}, not {site}", enrollment.site);
    }
    let store = patrol_mobile::DeviceStore::create_enrolled(path, enrollment, options)?;
    Ok((store, client))
}

/// The ids of the events in `site`'s feed, in canonical order (as they reached the server), as
/// the first administrator reads them; the feed must fit one page of 10,000.
pub async fn feed_ids(http: &reqwest::Client, server: &Server, site: &str) -> Result<Vec<String>> {
    let page: serde_json::Value = http
        .get(format!(
            "{}/api/v1/sites/{site}/events?limit=10000",
            server.url
        ))
        .bearer_auth(&server.admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if page["more"] != false {
        bail!("the feed has more than one page");
    }
    page["events"]
        .as_array()
        .ok_or_else(|| anyhow!("no events"))?
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("an event without an id: {e}"))
        })
        .collect()
}

/// A one-connection TCP proxy to `upstream` that, as soon as the server starts answering,
/// SIGKILLs the client process in `victim` and drops the answer: the server has applied and
/// committed the sync, the client never learns it.
#[derive(Debug)]
pub struct KillingProxy {
    pub addr: SocketAddr,
    handle: Option<JoinHandle<Result<()>>>,
}

impl KillingProxy {
    pub fn start(upstream: SocketAddr, victim: Arc<Mutex<Option<Child>>>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let handle = std::thread::spawn(move || -> Result<()> {
            let (mut client, _) = listener.accept()?;
            let mut server = TcpStream::connect(upstream)?;
            server.set_read_timeout(Some(Duration::from_secs(60)))?;
            let mut to_server = server.try_clone()?;
            let mut from_client = client.try_clone()?;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
            });
            let mut first = [0u8; 1];
            let n = server.read(&mut first)?;
            if n == 0 {
                bail!("server closed without answering");
            }
            if let Some(mut child) = victim.lock().map_err(|_| anyhow!("poisoned"))?.take() {
                child.kill()?;
                child.wait()?;
            }
            let _ = client.write_all(b"");
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            Ok(())
        });
        Ok(KillingProxy {
            addr,
            handle: Some(handle),
        })
    }

    /// Waits for the proxy to have done its work.
    pub fn finish(mut self) -> Result<()> {
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| anyhow!("proxy thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// A tiny deterministic generator (SplitMix64) for the seeded choices of the crash tests: the
/// same seed replays the same kill delays and kill points.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// The seed in the environment variable `var`, else one from the clock; printed by the caller
/// so that a failing run can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

/// What a [`Relay`] does when it next sees the server start an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnAnswer {
    /// Pass it on.
    Pass,
    /// SIGKILL the server and drop the answer: the server committed, the phone never learns it.
    KillAndDrop,
    /// Pass on what has arrived of the answer, then SIGKILL the server: the phone may mark
    /// events delivered that the killed server must still hold after its restart.
    ForwardThenKill,
}

#[derive(Debug)]
struct RelayState {
    server: Option<Server>,
    arm: OnAnswer,
    stopped: bool,
}

#[derive(Debug)]
struct RelayShared {
    state: Mutex<RelayState>,
    changed: Condvar,
}

impl RelayShared {
    fn lock(&self) -> Result<MutexGuard<'_, RelayState>> {
        self.state
            .lock()
            .map_err(|_| anyhow!("relay state poisoned"))
    }
}

/// A TCP relay on a fixed loopback address in front of a server that is killed and restarted
/// on new ports: phones keep one URL. It owns the running [`Server`], so that it can SIGKILL it
/// at the moment an answer starts (the server answers only after its commit), as armed by
/// [`Relay::arm`]. Without a server, connections are closed at once (a refused sync).
#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    pub url: String,
    shared: Arc<RelayShared>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start() -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(RelayShared {
            state: Mutex::new(RelayState {
                server: None,
                arm: OnAnswer::Pass,
                stopped: false,
            }),
            changed: Condvar::new(),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let upstream = match accept_shared.lock() {
                    Ok(state) if state.stopped => return,
                    Ok(state) => state.server.as_ref().map(|s| s.addr),
                    Err(_) => return,
                };
                let Some(upstream) = upstream else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let shared = accept_shared.clone();
                std::thread::spawn(move || relay_connection(client, upstream, &shared));
            }
        });
        Ok(Relay {
            addr,
            url: format!("http://{addr}"),
            shared,
            accept: Some(accept),
        })
    }

    /// Puts `server` behind the relay; new connections go to it.
    pub fn attach(&self, server: Server) -> Result<()> {
        let mut state = self.shared.lock()?;
        state.server = Some(server);
        state.arm = OnAnswer::Pass;
        Ok(())
    }

    /// What to do when the server next starts an answer.
    pub fn arm(&self, on_answer: OnAnswer) -> Result<()> {
        self.shared.lock()?.arm = on_answer;
        Ok(())
    }

    /// Waits up to `timeout` for an armed kill to happen; true if the relay killed the server.
    pub fn wait_for_kill(&self, timeout: Duration) -> Result<bool> {
        let state = self.shared.lock()?;
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.server.is_some())
            .map_err(|_| anyhow!("relay state poisoned"))?;
        Ok(state.server.is_none())
    }

    /// SIGKILLs the server now, if the relay has not already; disarms the relay.
    pub fn kill_server(&self) -> Result<()> {
        let server = {
            let mut state = self.shared.lock()?;
            state.arm = OnAnswer::Pass;
            state.server.take()
        };
        match server {
            Some(server) => server.kill(),
            None => Ok(()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.lock() {
            state.stopped = true;
            state.server = None;
        }
        // Wake the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn relay_connection(client: TcpStream, upstream: SocketAddr, shared: &RelayShared) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(mut to_server), Ok(mut from_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut server, mut client) = (server, client);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Ok(mut state) = shared.lock() else { break };
        let arm = std::mem::replace(&mut state.arm, OnAnswer::Pass);
        let forward = arm != OnAnswer::KillAndDrop;
        if forward && client.write_all(&buf[..n]).is_err() {
            state.arm = arm;
            break;
        }
        if arm != OnAnswer::Pass {
            if let Some(victim) = state.server.take() {
                let _ = victim.kill();
            }
            shared.changed.notify_all();
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
