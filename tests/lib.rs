//! # patrol-e2e
//!
//! Helpers for the end-to-end tests: build and locate the real binaries, start `patrol-server`
//! on a loopback port with a fresh data directory or over a scratch PostgreSQL database (which
//! several servers can share) and a first administrator, enroll phones and run `patrol` as a
//! guard's phone or the control room, and a TCP proxy that kills a client process at the worst
//! moment of a sync.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// The built `patrol-server` and `patrol` binaries.
#[derive(Debug)]
pub struct Bins {
    pub server: PathBuf,
    pub patrol: PathBuf,
}

/// Builds both binaries once per test process (a no-op when they are fresh) and returns their
/// paths, next to this test executable's profile directory.
pub fn bins() -> Result<&'static Bins> {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    BINS.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("building binaries: {e}"))
}

fn build() -> Result<Bins> {
    // target/<profile>/deps/<test-exe> or target/<profile>/<bin> -> target/<profile>
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| anyhow!("cannot locate the target directory from {}", exe.display()))?;
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let profile_dir = profile_dir.to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The workspace this crate was built in, so the build works from any directory.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "patrol-server",
        "-p",
        "patrol-cli",
        "--manifest-path",
    ])
    .arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    let bins = Bins {
        server: profile_dir.join("patrol-server"),
        patrol: profile_dir.join("patrol"),
    };
    for b in [&bins.server, &bins.patrol] {
        if !b.exists() {
            bail!("{} was not built", b.display());
        }
    }
    Ok(bins)
}

/// Runs a command to completion; fails with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}):\nstdout: {}\nstderr: {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

/// A running `patrol-server` on 127.0.0.1 with its own data directory; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
    /// The side port serving `/metrics`, whose own traffic the server does not count.
    pub metrics_url: Option<String>,
    pub data_dir: PathBuf,
    /// The token of the first administrator (over all sites), made with
    /// `patrol-server admin create` before the server started.
    pub admin_token: String,
}

impl Server {
    /// Creates `sites` and a first administrator in a fresh store under `data_dir`, then starts
    /// the server on a free port.
    pub fn start(data_dir: &Path, sites: &[&str]) -> Result<Server> {
        Self::start_with(data_dir, sites, false)
    }

    /// As [`Server::start`], with a metrics side port when `metrics` is set.
    pub fn start_with(data_dir: &Path, sites: &[&str], metrics: bool) -> Result<Server> {
        Self::start_with_args(data_dir, sites, metrics, &[])
    }

    /// As [`Server::start_with`], passing `args` to `serve` as well.
    pub fn start_with_args(
        data_dir: &Path,
        sites: &[&str],
        metrics: bool,
        args: &[&str],
    ) -> Result<Server> {
        let bins = bins()?;
        for site in sites {
            run_ok(
                Command::new(&bins.server)
                    .args(["site", "create", site, "--data-dir"])
                    .arg(data_dir),
            )?;
        }
        let admin_token = run_ok(
            Command::new(&bins.server)
                .args(["admin", "create", "e2e-admin", "--data-dir"])
                .arg(data_dir),
        )?
        .trim()
        .to_owned();
        Self::serve(data_dir, metrics, args, admin_token)
    }

    /// Starts the server again on an existing data directory, creating nothing (a restart
    /// after a crash); `admin_token` is the administrator's from the first start.
    pub fn restart(data_dir: &Path, admin_token: &str) -> Result<Server> {
        Self::serve(data_dir, false, &[], admin_token.to_owned())
    }

    fn serve(data_dir: &Path, metrics: bool, args: &[&str], admin_token: String) -> Result<Server> {
        let bins = bins()?;
        let mut cmd = Command::new(&bins.server);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        Self::spawn(cmd, data_dir, metrics, args, admin_token)
    }

    /// Creates `sites` and a first administrator in the PostgreSQL database `database_url`
    /// (see [`ScratchDatabase`]); returns the administrator's token.
    pub fn prepare_database(database_url: &str, sites: &[&str]) -> Result<String> {
        let bins = bins()?;
        for site in sites {
            run_ok(
                Command::new(&bins.server)
                    .args(["site", "create", site])
                    // The environment rather than an argument: a URL may hold a password.
                    .env("PATROL_DATABASE_URL", database_url),
            )?;
        }
        Ok(run_ok(
            Command::new(&bins.server)
                .args(["admin", "create", "e2e-admin"])
                .env("PATROL_DATABASE_URL", database_url),
        )?
        .trim()
        .to_owned())
    }

    /// Starts a server on a free port over the PostgreSQL database `database_url` (prepared by
    /// [`Server::prepare_database`], whose administrator token is `admin_token`); other servers
    /// may share it. `data_dir` is unused by the server but is its working directory's place.
    pub fn start_on_database(
        database_url: &str,
        admin_token: &str,
        data_dir: &Path,
    ) -> Result<Server> {
        let mut cmd = Command::new(&bins()?.server);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("PATROL_DATABASE_URL", database_url);
        Self::spawn(cmd, data_dir, false, &[], admin_token.to_owned())
    }

    /// Runs `cmd` (a `serve` command, to which `args` are added) and waits until it prints the
    /// addresses it serves on.
    fn spawn(
        mut cmd: Command,
        data_dir: &Path,
        metrics: bool,
        args: &[&str],
        admin_token: String,
    ) -> Result<Server> {
        if metrics {
            cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting patrol-server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut metrics_url = None;
        while addr.is_none() || (metrics && metrics_url.is_none()) {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("patrol-server exited ({status}) before it was listening");
            };
            let line = line?;
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.trim().parse::<SocketAddr>()?);
            } else if let Some(rest) = line.split("metrics on http://").nth(1) {
                metrics_url = Some(format!("http://{}", rest.trim()));
            }
        }
        let addr = addr.ok_or_else(|| anyhow!("no listening address"))?;
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            addr,
            url: format!("http://{addr}"),
            metrics_url,
            data_dir: data_dir.to_path_buf(),
            admin_token,
        })
    }

    /// The command `patrol control --server <url> --token <token> <args>`, not yet run.
    pub fn control(&self, token: &str, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(&bins()?.patrol);
        cmd.args(["control", "--server", &self.url, "--token", token])
            .args(args);
        Ok(cmd)
    }

    /// A one-time code enrolling a phone on `site`, issued by the administrator through the
    /// `patrol` command.
    pub fn enrollment_code(&self, site: &str) -> Result<String> {
        Ok(
            run_ok(&mut self.control(&self.admin_token, &["enrollment-code", "--site", site])?)?
                .trim()
                .to_owned(),
        )
    }

    /// The server's SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("patrol.db")
    }

    /// SIGKILLs the server, as the kernel's OOM killer or a power cut of the process would:
    /// no shutdown, no flush, in-flight requests cut off wherever they are.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("killing patrol-server")?;
        self.child.wait()?;
        Ok(())
    }

    /// The server's process id, to read its memory and CPU from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    /// The local log as JSON objects.
    pub fn log(&self) -> Result<Vec<serde_json::Value>> {
        self.run(&["log", "--json"])?
            .lines()
            .map(|l| serde_json::from_str(l).context("parsing log line"))
            .collect()
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
    out.lines()
        .map(|l| serde_json::from_str(l).context("parsing pulled event"))
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

/// A throwaway database on the local PostgreSQL server (`PATROL_TEST_POSTGRES_URL` names
/// another administrative URL), dropped on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: String,
    name: String,
    url: String,
}

async fn admin_client(admin: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error then is of no interest.
        let _ = connection.await;
    });
    Ok(client)
}

impl ScratchDatabase {
    /// A fresh database, or `None` (with a notice on stderr) when no server is reachable,
    /// unless `PATROL_REQUIRE_POSTGRES=1`: then an error.
    pub async fn create() -> Result<Option<ScratchDatabase>> {
        let admin = std::env::var("PATROL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let client = match admin_client(&admin).await {
            Ok(client) => client,
            Err(e) if std::env::var("PATROL_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
                bail!("PostgreSQL is required (PATROL_REQUIRE_POSTGRES=1) but unreachable: {e:#}")
            }
            Err(e) => {
                // Straight to stderr, past the test harness's capture: a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTICE: skipping a PostgreSQL test, no server: {e:#}"
                );
                return Ok(None);
            }
        };
        let name = format!("patrol_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let config: tokio_postgres::Config = admin.parse()?;
        let mut url = format!("dbname={name}");
        if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
            url.push_str(&format!(" host={host}"));
        }
        if let Some(port) = config.get_ports().first() {
            url.push_str(&format!(" port={port}"));
        }
        if let Some(user) = config.get_user() {
            url.push_str(&format!(" user={user}"));
        }
        if let Some(password) = config.get_password() {
            url.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
        }
        Ok(Some(ScratchDatabase { admin, name, url }))
    }

    /// Its connection string, for `--database-url`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime, which cannot block on another: a thread of its own.
        let _ = std::thread::spawn(move || -> Result<()> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async { Ok(admin_client(&admin).await?.batch_execute(&sql).await?) })
        })
        .join();
    }
}
