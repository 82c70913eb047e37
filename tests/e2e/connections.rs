//! The real `patrol-server` against slow, idle and too many connections: a flood of idle
//! sockets from one address takes only that address's places and others are still served; a
//! client that sends half a request head is closed after the header timeout; a graceful
//! shutdown ends within its bound although a client holds a half-sent request body; a stalled
//! body is answered 408; a live stream outlives the idle timeout.
//!
//! The caps and timeouts are set small by flag so that each test is cheap. Sockets are bound
//! to other loopback addresses (127.0.0.2 and up: Linux routes all of 127/8 to `lo`) so that
//! the per-address cap is told apart from the overall one. Nothing asserts a time but that
//! something happens within a generous bound.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use patrol_testkit::{Server, bins};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The bound for anything that must happen "soon": far above what it takes.
const SOON: Duration = Duration::from_secs(30);

/// A connection to `server` from the loopback address `127.0.0.<host>`.
async fn connect_from(host: u8, server: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
        0,
    ))?;
    Ok(socket.connect(server).await?)
}

/// Whether the server has closed `stream`: end of stream (or a reset) within `wait`, after
/// whatever bytes the server sent first.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn healthz(http: &reqwest::Client, server: &Server) -> Result<()> {
    let status = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await?
        .status();
    ensure!(status.is_success(), "/healthz answered {status}");
    Ok(())
}

/// A client that opens a new connection for each request: each check is another client, and
/// none reuses a kept-alive connection the server is closing for its idleness.
fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(SOON)
        .pool_max_idle_per_host(0)
        .build()?)
}

#[tokio::test]
async fn an_idle_socket_flood_takes_only_its_own_address_places() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A long header timeout, so that only the caps close sockets during the test.
    let server = Server::start_with_args(
        dir.path(),
        &[],
        false,
        &[
            "--max-connections",
            "64",
            "--max-connections-per-address",
            "16",
            "--header-read-timeout-secs",
            "600",
        ],
    )?;
    let http = client()?;

    // 40 idle sockets from one address: 16 are kept, the others closed at once.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(connect_from(2, server.addr).await?);
    }
    // Accepted after the whole flood (the listener accepts in order), so once it is answered
    // the server has dealt with every flood socket.
    healthz(&http, &server).await?;
    let mut closed = 0;
    for stream in &mut flood {
        if closed_within(stream, Duration::from_millis(500)).await {
            closed += 1;
        }
    }
    ensure!(
        closed == 24,
        "{closed} of 40 sockets from one address were closed, expected the 24 over the cap of 16"
    );
    drop(flood);

    // The overall cap: 4 addresses × 16 fill the 64 places; one more from a fifth address is
    // closed, and once the flood leaves the server answers again.
    let mut flood = Vec::new();
    for host in 3..7 {
        for _ in 0..16 {
            flood.push(connect_from(host, server.addr).await?);
        }
    }
    let mut extra = connect_from(7, server.addr).await?;
    ensure!(
        closed_within(&mut extra, SOON).await,
        "a connection over the overall cap stayed open"
    );
    drop(flood);
    let deadline = Instant::now() + SOON;
    while healthz(&http, &server).await.is_err() {
        ensure!(Instant::now() < deadline, "not served after the flood left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refusals are counted by cap (the retries above may add to the overall one).
    let metrics = patrol_e2e::metrics(&http, &server).await?;
    let refused = |cap: &str| {
        metrics.get(&format!(
            "patrol_wire_refused_connections_total{{cap=\"{cap}\"}}"
        ))
    };
    ensure!(refused("per_address") == Some(&24), "{metrics:?}");
    ensure!(refused("overall").is_some_and(|n| *n >= 1), "{metrics:?}");
    Ok(())
}

#[tokio::test]
async fn a_slow_header_is_closed_and_others_are_served() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server =
        Server::start_with_args(dir.path(), &[], false, &["--header-read-timeout-secs", "1"])?;
    let http = client()?;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream.write_all(b"GET /healthz HT").await?;
        slow.push(stream);
    }
    healthz(&http, &server).await?;
    for stream in &mut slow {
        ensure!(
            closed_within(stream, SOON).await,
            "a connection that sent half a request line stayed open"
        );
    }
    healthz(&http, &server).await?;
    Ok(())
}

/// A live stream is a request in flight however long it lasts: the idle timeout never closes
/// it, and an event committed long after it opened still reaches it.
#[tokio::test]
async fn a_live_stream_outlives_the_idle_timeout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &["site-1"],
        false,
        &[
            "--idle-timeout-secs",
            "1",
            "--header-read-timeout-secs",
            "1",
        ],
    )?;
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{}/api/v1/sites/site-1/stream", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await?;
    ensure!(stream.status().is_success(), "{}", stream.status());
    // Three idle timeouts with nothing to send after the opening keep-alive comment.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let phone = patrol_e2e::Phone::enroll(dir.path().join("phone.db"), &server, "site-1")?;
    phone.run(&["shift", "start", "--guard", "anna"])?;
    phone.run(&["sync"])?;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + SOON;
    while !seen.contains("shift_started") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .context("the event did not reach the open stream")??;
        let chunk = chunk.ok_or_else(|| anyhow!("the stream ended: {seen}"))?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(())
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_closed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server =
        Server::start_with_args(dir.path(), &[], false, &["--body-read-timeout-secs", "1"])?;
    let mut stalled = TcpStream::connect(server.addr).await?;
    stalled
        .write_all(
            b"POST /api/v1/enroll HTTP/1.1\r\nHost: patrol\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"cod",
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(SOON, stalled.read_to_end(&mut answer))
        .await
        .context("no answer to a stalled body")??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
        "{answer}"
    );
    healthz(&client()?, &server).await?;
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_ends_within_its_bound_despite_a_half_sent_body() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = spawn_server(dir.path(), &["--shutdown-timeout-secs", "1"])?;
    let result = async {
        let addr = read_address(&mut child)?;

        // An enrollment whose JSON body stops after 5 of its 100 bytes: the handler waits for
        // the rest, which never comes.
        let mut holder = TcpStream::connect(addr).await?;
        holder
            .write_all(
                b"POST /api/v1/enroll HTTP/1.1\r\nHost: patrol\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"cod",
            )
            .await?;
        // A request answered after the holder's was sent, so the holder's is under way.
        let status = client()?
            .get(format!("http://{addr}/healthz"))
            .send()
            .await?
            .status();
        ensure!(status.is_success(), "/healthz answered {status}");

        terminate_and_wait(&mut child).await?;
        drop(holder);
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// A SIGTERM sent the moment the server has printed its address is a graceful shutdown (exit
/// status 0), not the signal's default action: the handlers are installed before that line.
#[tokio::test]
async fn a_sigterm_right_after_the_address_line_shuts_down_gracefully() -> Result<()> {
    // A few times: the window this guards is short.
    for _ in 0..5 {
        let dir = tempfile::tempdir()?;
        let mut child = spawn_server(dir.path(), &[])?;
        let result = async {
            read_address(&mut child)?;
            terminate_and_wait(&mut child).await
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        result?;
    }
    Ok(())
}

/// `patrol-server serve` on a free loopback port over `data_dir`, with `args` added.
fn spawn_server(data_dir: &std::path::Path, args: &[&str]) -> Result<Child> {
    Command::new(&bins()?.server)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting patrol-server")
}

/// The address from the server's first line, `listening on http://<addr>`.
fn read_address(child: &mut Child) -> Result<SocketAddr> {
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(line
        .split("listening on http://")
        .nth(1)
        .ok_or_else(|| anyhow!("no address in {line:?}"))?
        .trim()
        .parse()?)
}

/// Sends SIGTERM and waits (up to [`SOON`]) for the server to exit with status 0.
async fn terminate_and_wait(child: &mut Child) -> Result<()> {
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(terminated.success(), "kill -TERM failed");
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "patrol-server exited with {status}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("patrol-server still running {SOON:?} after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
