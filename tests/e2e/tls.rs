//! HTTPS end to end: the real server with `--tls-cert`/`--tls-key` (a certificate made here,
//! signed by a certificate authority made here), a phone played by the real `patrol` command
//! enrolling, syncing and the control room pulling over it; a client that does not trust the
//! authority is refused; a renewed certificate is taken on SIGHUP; and `patrol` refuses plain
//! `http://` to a server off loopback before sending anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use patrol_e2e::{Phone, control_pull};
use patrol_testkit::{Server, bins, run, run_ok};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const SITE: &str = "site-tls";

/// A certificate authority and a server certificate it signed for `127.0.0.1` and
/// `localhost`, written as PEM files in `dir`: `ca.pem`, `server.pem`, `server.key` (0600).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test authority"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&server_key, &ca)?;
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca.pem())?;
    std::fs::write(&pki.cert, server.pem())?;
    write_private(&pki.key, &server_key.serialize_pem())?;
    Ok(pki)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn start_tls(data_dir: &Path, pki: &Pki) -> Result<Server> {
    let cert = pki.cert.to_string_lossy().into_owned();
    let key = pki.key.to_string_lossy().into_owned();
    let mut server = Server::start_with_args(
        data_dir,
        &[SITE],
        false,
        &["--tls-cert", &cert, "--tls-key", &key],
    )?;
    server.ca_cert = Some(pki.ca.clone());
    Ok(server)
}

/// `patrol device --store <store> --ca-cert <ca> <args>`.
fn phone_command(phone: &Phone, ca: &Path, args: &[&str]) -> Result<Command> {
    let mut cmd = phone.command(args)?;
    cmd.arg("--ca-cert").arg(ca);
    Ok(cmd)
}

#[test]
fn a_phone_enrolls_syncs_and_the_control_room_pulls_over_https() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = make_pki(&tmp.path().join("pki"), "site")?;
    let server = start_tls(&tmp.path().join("data"), &pki)?;
    ensure!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    let phone = Phone {
        store: tmp.path().join("phone.db"),
    };
    let code = server.enrollment_code(SITE)?;
    run_ok(&mut phone_command(
        &phone,
        &pki.ca,
        &["enroll", "--server", &server.url, "--code", &code],
    )?)?;
    phone.run(&["shift", "start", "--guard", "anna"])?;
    phone.run(&["scan", "cp-1", "--nfc", "04:AA"])?;
    let synced = run_ok(&mut phone_command(&phone, &pki.ca, &["sync"])?)?;
    ensure!(
        phone.log()?.iter().all(|e| e["delivered"] == true),
        "not every event was delivered over HTTPS: {synced}"
    );

    // A browser that reached the server over HTTPS keeps to it.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca)?)?;
    let https = reqwest::Client::builder().tls_certs_only([ca]).build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hsts = runtime.block_on(async {
        let response = https.get(format!("{}/healthz", server.url)).send().await?;
        Ok::<_, reqwest::Error>(
            response
                .headers()
                .get(reqwest::header::STRICT_TRANSPORT_SECURITY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )
    })?;
    ensure!(
        hsts.as_deref() == Some("max-age=31536000"),
        "Strict-Transport-Security: {hsts:?}"
    );

    let pulled = control_pull(&server, SITE, 100)?;
    let kinds: Vec<&str> = pulled.iter().filter_map(|e| e["kind"].as_str()).collect();
    ensure!(
        kinds.contains(&"shift_started") && kinds.contains(&"checkpoint_scanned"),
        "the control room pulled {kinds:?}"
    );
    Ok(())
}

#[test]
fn a_client_that_does_not_trust_the_certificate_is_refused_and_plain_http_gets_no_answer()
-> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = make_pki(&tmp.path().join("pki"), "site")?;
    let other = make_pki(&tmp.path().join("other"), "other")?;
    let server = start_tls(&tmp.path().join("data"), &pki)?;

    // Trusting another authority: the handshake fails, the code is not spent.
    let code = server.enrollment_code(SITE)?;
    let phone = Phone {
        store: tmp.path().join("phone.db"),
    };
    let refused = run(&mut phone_command(
        &phone,
        &other.ca,
        &["enroll", "--server", &server.url, "--code", &code],
    )?)?;
    ensure!(
        !refused.status.success(),
        "enrolled trusting the wrong authority"
    );
    run_ok(&mut phone_command(
        &phone,
        &pki.ca,
        &["enroll", "--server", &server.url, "--code", &code],
    )?)?;

    // The system's roots do not include a site's own authority either.
    ensure!(
        !list_devices(&server.url, &server.admin_token, None)?
            .status
            .success(),
        "the control room trusted an unknown authority"
    );
    // Plain HTTP to the TLS port is not served.
    let plain = format!("http://{}", server.addr);
    ensure!(
        !list_devices(&plain, &server.admin_token, None)?
            .status
            .success(),
        "plain HTTP to the HTTPS port was answered"
    );
    Ok(())
}

/// `patrol control --server <url> --token <token> [--ca-cert <ca>] devices --site SITE`, run.
fn list_devices(url: &str, token: &str, ca: Option<&Path>) -> Result<std::process::Output> {
    let mut cmd = Command::new(&bins()?.patrol);
    cmd.args(["control", "--server", url, "--token", token]);
    if let Some(ca) = ca {
        cmd.arg("--ca-cert").arg(ca);
    }
    run(cmd.args(["devices", "--site", SITE]))
}

#[test]
fn a_renewed_certificate_is_taken_on_sighup_without_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let first = make_pki(&tmp.path().join("first"), "first")?;
    let server = start_tls(&tmp.path().join("data"), &first)?;
    let devices = |ca: &Path| -> Result<bool> {
        Ok(list_devices(&server.url, &server.admin_token, Some(ca))?
            .status
            .success())
    };
    ensure!(devices(&first.ca)?, "the first certificate is not served");

    // Renewed in place (another authority, so the switch is visible), then SIGHUP.
    let renewed = make_pki(&tmp.path().join("renewed"), "renewed")?;
    std::fs::copy(&renewed.cert, &first.cert)?;
    std::fs::copy(&renewed.key, &first.key)?;
    ensure!(!devices(&renewed.ca)?, "renewed before the SIGHUP");
    run_ok(Command::new("kill").args(["-HUP", &server.pid().to_string()]))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !devices(&renewed.ca)? {
        if Instant::now() > deadline {
            bail!("the renewed certificate was not served after SIGHUP");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(!devices(&first.ca)?, "the old certificate is still served");
    Ok(())
}

#[test]
fn the_server_refuses_a_key_others_can_read_or_a_key_of_another_certificate() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir()?;
    let pki = make_pki(&tmp.path().join("pki"), "site")?;
    let other = make_pki(&tmp.path().join("other"), "other")?;
    let data = tmp.path().join("data");
    run_ok(
        Command::new(&bins()?.server)
            .args(["site", "create", SITE, "--data-dir"])
            .arg(&data),
    )?;
    let serve = |cert: &Path, key: &Path| -> Result<String> {
        let out = run(Command::new(&bins()?.server)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key))?;
        ensure!(!out.status.success(), "the server started");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };

    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o644))?;
    let said = serve(&pki.cert, &pki.key)?;
    ensure!(said.contains("chmod 600"), "{said}");

    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o600))?;
    let said = serve(&pki.cert, &other.key)?;
    ensure!(
        said.contains("cannot be used with the certificate"),
        "{said}"
    );
    Ok(())
}

#[test]
fn patrol_refuses_plain_http_off_loopback_before_sending_anything() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let phone = Phone {
        store: tmp.path().join("phone.db"),
    };
    // TEST-NET-1: nothing answers there, and nothing is sent there either.
    let out = run(&mut phone.command(&[
        "enroll",
        "--server",
        "http://192.0.2.1:8080",
        "--code",
        "pe_0000000000000000000000000000000000000000000",
    ])?)?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("refusing plain http://"),
        "{said}"
    );
    ensure!(!phone.store.exists(), "a store was created");

    let out = list_devices("http://192.0.2.1:8080", "pu_x", None)?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("refusing plain http://"),
        "{said}"
    );
    Ok(())
}

#[test]
fn over_https_the_session_cookie_is_secure() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = make_pki(&tmp.path().join("pki"), "site")?;
    let server = start_tls(&tmp.path().join("data"), &pki)?;
    let mut create = Command::new(&bins()?.server);
    create
        .args(["user", "create", "op", "--role", "operator", "--site", SITE])
        .args(["--password-stdin", "--data-dir"])
        .arg(&server.data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = create.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, b"a passphrase over https\n")?;
    }
    ensure!(child.wait_with_output()?.status.success(), "user create");

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca)?)?;
    let https = reqwest::Client::builder().tls_certs_only([ca]).build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, cookie) = runtime.block_on(async {
        let response = https
            .post(format!("{}/api/v1/session", server.url))
            .json(&serde_json::json!({"name": "op", "password": "a passphrase over https"}))
            .send()
            .await?;
        Ok::<_, reqwest::Error>((
            response.status().as_u16(),
            response
                .headers()
                .get(reqwest::header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    })?;
    let cookie = cookie.unwrap_or_default();
    ensure!(status == 200, "sign-in over https: {status}");
    for part in ["HttpOnly", "SameSite=Strict", "Secure"] {
        ensure!(
            cookie.split("; ").any(|p| p == part),
            "{part} missing: {cookie}"
        );
    }
    Ok(())
}
