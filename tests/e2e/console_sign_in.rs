//! Signing in like a person, against the real server binary: users given a password by the
//! `patrol` and `patrol-server` commands sign in with it over HTTP and get an HttpOnly,
//! SameSite=Strict session cookie that reads what their role and sites allow (their site's feed
//! and live stream, not another site's), is refused from another origin, and stops working at
//! sign-out, at a password change (the other sessions) and at revocation. Failed sign-ins are
//! slowed and refused per address and per user name. (The `Secure` cookie over HTTPS is in
//! `tls`.)

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, anyhow, bail, ensure};
use patrol_e2e::{next_sse, side_metrics};
use patrol_testkit::{Server, bins, run_ok};
use reqwest::header::{COOKIE, ORIGIN, RETRY_AFTER, SET_COOKIE};
use serde_json::{Value, json};

const SITE_A: &str = "site-a";
const SITE_B: &str = "site-b";
const PASSWORD: &str = "night shift passphrase";

/// Runs `cmd` with `input` on its standard input.
fn with_stdin(cmd: &mut Command, input: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// As [`with_stdin`], failing unless it succeeded; its stdout.
fn with_stdin_ok(cmd: &mut Command, input: &str) -> Result<String> {
    let out = with_stdin(cmd, input)?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `patrol-server <args> --data-dir <the server's>`.
fn server_command(server: &Server, args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(&bins()?.server);
    cmd.args(args).arg("--data-dir").arg(&server.data_dir);
    Ok(cmd)
}

/// A sign-in's answer: status, the session token of its `Set-Cookie` with the whole header,
/// and the body.
struct SignIn {
    status: u16,
    cookie: Option<(String, String)>,
    retry_after: Option<u64>,
    body: Value,
}

async fn sign_in(
    http: &reqwest::Client,
    server: &Server,
    name: &str,
    password: &str,
) -> Result<SignIn> {
    let response = http
        .post(format!("{}/api/v1/session", server.url))
        .json(&json!({ "name": name, "password": password }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|header| {
            let token = header
                .strip_prefix("patrol_session=")?
                .split(';')
                .next()?
                .to_owned();
            Some((token, header.to_owned()))
        });
    Ok(SignIn {
        status,
        cookie,
        retry_after,
        body: response.json().await?,
    })
}

/// Signs in, which must succeed; the session token.
async fn session(
    http: &reqwest::Client,
    server: &Server,
    name: &str,
    password: &str,
) -> Result<String> {
    let answer = sign_in(http, server, name, password).await?;
    match (answer.status, answer.cookie) {
        (200, Some((token, _))) => Ok(token),
        (status, _) => bail!("sign-in as {name}: {status} {}", answer.body),
    }
}

/// `method path` with the session cookie `token`, as the console sends it (with
/// `X-Patrol-Request: 1`), and `body` as JSON if given.
fn console(
    http: &reqwest::Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let request = http
        .request(method, format!("{}{path}", server.url))
        .header(COOKIE, format!("patrol_session={token}"))
        .header("x-patrol-request", "1");
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
}

/// The status of a GET of `path` with the session cookie `token`.
async fn get_status(
    http: &reqwest::Client,
    server: &Server,
    path: &str,
    token: &str,
) -> Result<u16> {
    Ok(
        console(http, server, reqwest::Method::GET, path, token, None)
            .send()
            .await?
            .status()
            .as_u16(),
    )
}

#[tokio::test]
async fn an_operator_signs_in_reads_only_its_site_and_its_sessions_end_when_they_should()
-> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start(&tmp.path().join("data"), &[SITE_A, SITE_B])?;
    let http = reqwest::Client::new();

    // The administrator gives an operator of site A a password through the API; a password
    // too short is refused with a clear message, on both commands, and creates nothing.
    let token = with_stdin_ok(
        &mut server.control(
            &server.admin_token,
            &[
                "user",
                "create",
                "op-a",
                "--role",
                "operator",
                "--site",
                SITE_A,
                "--password-stdin",
            ],
        )?,
        &format!("{PASSWORD}\n"),
    )?;
    ensure!(token.trim().starts_with("pu_"), "{token}");
    for mut cmd in [
        server.control(
            &server.admin_token,
            &[
                "user",
                "create",
                "op-x",
                "--role",
                "operator",
                "--site",
                SITE_A,
                "--password-stdin",
            ],
        )?,
        server_command(
            &server,
            &[
                "user",
                "create",
                "op-y",
                "--role",
                "operator",
                "--site",
                SITE_A,
                "--password-stdin",
            ],
        )?,
    ] {
        let out = with_stdin(&mut cmd, "too short\n")?;
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && said.contains("at least 12 characters"),
            "{said}"
        );
    }
    let users = run_ok(&mut server.control(&server.admin_token, &["user", "list", "--json"])?)?;
    ensure!(
        !users.contains("op-x") && !users.contains("op-y"),
        "{users}"
    );

    // A wrong password and an unknown name get the same 401, and no cookie.
    let wrong = sign_in(&http, &server, "op-a", "night shift passphrasE").await?;
    let unknown = sign_in(&http, &server, "op-z", PASSWORD).await?;
    ensure!(
        wrong.status == 401 && wrong.cookie.is_none() && wrong.body["error"] == "invalid_sign_in",
        "{} {}",
        wrong.status,
        wrong.body
    );
    ensure!(
        (unknown.status, &unknown.body) == (401, &wrong.body),
        "{}",
        unknown.body
    );
    // The administrator has no password: only its token.
    ensure!(sign_in(&http, &server, "e2e-admin", PASSWORD).await?.status == 401);

    // The right one: the cookie, HttpOnly, SameSite=Strict, for the whole site, for 12 hours;
    // not Secure over plain HTTP on loopback.
    let signed = sign_in(&http, &server, "op-a", PASSWORD).await?;
    let (laptop, header) = signed
        .cookie
        .ok_or_else(|| anyhow!("no cookie: {}", signed.body))?;
    ensure!(signed.status == 200, "{}", signed.body);
    ensure!(laptop.starts_with("ps_"), "{header}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        ensure!(
            header.split("; ").any(|p| p == part),
            "{part} missing: {header}"
        );
    }
    ensure!(!header.contains("Secure"), "{header}");
    ensure!(
        signed.body["user"]["name"] == "op-a" && signed.body["user"]["sites"] == json!([SITE_A]),
        "{}",
        signed.body
    );
    let me = console(
        &http,
        &server,
        reqwest::Method::GET,
        "/api/v1/session",
        &laptop,
        None,
    )
    .send()
    .await?;
    ensure!(me.status() == 200);
    ensure!(me.json::<Value>().await?["user"]["role"] == "operator");

    // It reads its site, not the other, and nothing an administrator reads.
    let feed = |site: &str| format!("/api/v1/sites/{site}/events");
    ensure!(get_status(&http, &server, &feed(SITE_A), &laptop).await? == 200);
    ensure!(get_status(&http, &server, &feed(SITE_B), &laptop).await? == 403);
    ensure!(get_status(&http, &server, "/api/v1/users", &laptop).await? == 403);

    // A change from another origin, or without the console's header, is refused before
    // anything is looked at.
    let change = json!({"current": PASSWORD, "new": "a new night passphrase"});
    let foreign = console(
        &http,
        &server,
        reqwest::Method::PUT,
        "/api/v1/users/me/password",
        &laptop,
        Some(change.clone()),
    )
    .header(ORIGIN, "http://evil.example")
    .send()
    .await?;
    ensure!(foreign.status() == 403, "{}", foreign.status());
    let bare = http
        .put(format!("{}/api/v1/users/me/password", server.url))
        .header(COOKIE, format!("patrol_session={laptop}"))
        .json(&change)
        .send()
        .await?;
    ensure!(bare.status() == 403, "{}", bare.status());
    ensure!(
        sign_in(&http, &server, "op-a", PASSWORD).await?.status == 200,
        "the password changed"
    );

    // The live stream runs on the cookie, and ends with `closed` when its session ends.
    let tablet = session(&http, &server, "op-a", PASSWORD).await?;
    let mut live = console(
        &http,
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/sites/{SITE_A}/stream"),
        &tablet,
        None,
    )
    .send()
    .await?;
    ensure!(live.status() == 200, "stream: {}", live.status());

    // A change from the laptop, from the console's own origin, ends the tablet's session (and
    // its stream), not the laptop's.
    let own = console(
        &http,
        &server,
        reqwest::Method::PUT,
        "/api/v1/users/me/password",
        &laptop,
        Some(change),
    )
    .header(ORIGIN, server.url.as_str())
    .send()
    .await?;
    ensure!(own.status() == 204, "{}", own.status());
    let mut buf = String::new();
    let closed = next_sse(&mut live, &mut buf, Some("closed"), |_| true).await?;
    ensure!(closed["error"] == "invalid_credential", "{closed}");
    ensure!(get_status(&http, &server, "/api/v1/session", &tablet).await? == 401);
    ensure!(get_status(&http, &server, &feed(SITE_A), &laptop).await? == 200);
    ensure!(sign_in(&http, &server, "op-a", PASSWORD).await?.status == 401);

    // The operator changes it again from a terminal, with its token; the administrator then
    // sets it with `patrol control`, and again on the data directory with `patrol-server`:
    // each time the user's sessions end, and only the latest password signs in.
    let said = with_stdin_ok(
        &mut server.control(token.trim(), &["user", "password", "--password-stdin"])?,
        "a new night passphrase\nthe operator's own choice\n",
    )?;
    ensure!(said.contains("set the password of user op-a"), "{said}");
    let by_admin = with_stdin_ok(
        &mut server.control(
            &server.admin_token,
            &["user", "password", "op-a", "--password-stdin", "--json"],
        )?,
        "set by the administrator\n",
    )?;
    let by_admin: Value = serde_json::from_str(&by_admin)?;
    ensure!(
        by_admin["password_set"] == true && by_admin["user"]["name"] == "op-a",
        "{by_admin}"
    );
    ensure!(get_status(&http, &server, &feed(SITE_A), &laptop).await? == 401);
    let desk = session(&http, &server, "op-a", "set by the administrator").await?;
    with_stdin_ok(
        &mut server_command(&server, &["user", "password", "op-a", "--password-stdin"])?,
        "set on the server itself\n",
    )?;
    ensure!(get_status(&http, &server, &feed(SITE_A), &desk).await? == 401);
    let desk = session(&http, &server, "op-a", "set on the server itself").await?;

    // Sign-out: the session ends on the server, and the cookie is cleared.
    let out = console(
        &http,
        &server,
        reqwest::Method::DELETE,
        "/api/v1/session",
        &desk,
        None,
    )
    .send()
    .await?;
    ensure!(out.status() == 204);
    let cleared = out
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ensure!(cleared.contains("Max-Age=0"), "{cleared}");
    ensure!(get_status(&http, &server, &feed(SITE_A), &desk).await? == 401);
    // A console left open keeps asking with its ended session: that is no guess, and does not
    // lock the control room's address out.
    for _ in 0..12 {
        ensure!(get_status(&http, &server, "/api/v1/session", &desk).await? == 401);
    }

    // Revoking the user ends its sessions.
    let last = session(&http, &server, "op-a", "set on the server itself").await?;
    run_ok(&mut server.control(&server.admin_token, &["user", "revoke", "op-a"])?)?;
    ensure!(get_status(&http, &server, &feed(SITE_A), &last).await? == 401);
    ensure!(
        sign_in(&http, &server, "op-a", "set on the server itself")
            .await?
            .status
            == 401
    );
    Ok(())
}

/// A client whose connections come from `from` (all of 127/8 is loopback).
fn client(from: [u8; 4]) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()?)
}

#[tokio::test]
async fn failed_sign_ins_are_refused_per_address_and_per_name_and_counted() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &tmp.path().join("data"),
        &[SITE_A],
        true,
        &[
            "--auth-max-failures",
            "3",
            "--auth-slow-after",
            "100",
            "--auth-lockout-secs",
            "600",
        ],
    )?;
    for name in ["op-1", "op-2", "op-3"] {
        with_stdin_ok(
            &mut server_command(
                &server,
                &[
                    "user",
                    "create",
                    name,
                    "--role",
                    "operator",
                    "--site",
                    SITE_A,
                    "--password-stdin",
                ],
            )?,
            &format!("{PASSWORD}\n"),
        )?;
    }

    // One address guessing: after three failures even the right password is refused.
    let guesser = client([127, 0, 0, 2])?;
    for guess in ["guess number one", "guess number two", "guess number three"] {
        ensure!(sign_in(&guesser, &server, "op-1", guess).await?.status == 401);
    }
    let refused = sign_in(&guesser, &server, "op-1", PASSWORD).await?;
    ensure!(
        refused.status == 429
            && refused.body["error"] == "too_many_failed_attempts"
            && refused.cookie.is_none()
            && refused.retry_after.is_some_and(|s| s > 0 && s <= 600),
        "{} {:?} {}",
        refused.status,
        refused.retry_after,
        refused.body
    );

    // Guesses at one name from three addresses: that name is refused from a fourth (as op-1
    // is now), while another name signs in from it.
    for (from, guess) in [
        (3, "guess number four"),
        (4, "guess number five"),
        (5, "guess number six"),
    ] {
        ensure!(
            sign_in(&client([127, 0, 0, from])?, &server, "op-2", guess)
                .await?
                .status
                == 401
        );
    }
    let desk = client([127, 0, 0, 6])?;
    ensure!(sign_in(&desk, &server, "op-2", PASSWORD).await?.status == 429);
    ensure!(sign_in(&desk, &server, "op-1", PASSWORD).await?.status == 429);
    ensure!(sign_in(&desk, &server, "op-3", PASSWORD).await?.status == 200);

    let counters = side_metrics(&reqwest::Client::new(), &server).await?;
    ensure!(
        counters.get("patrol_sign_in_failures_total") == Some(&6),
        "{:?}",
        counters.get("patrol_sign_in_failures_total")
    );
    ensure!(
        counters
            .get("patrol_auth_throttled_total")
            .is_some_and(|n| *n >= 2)
    );
    Ok(())
}
