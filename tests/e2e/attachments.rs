//! Attachments through the real server and phones: a photo attached offline is uploaded after
//! its incident, in chunks, through connections cut at random points (seeded: replay with
//! `PATROL_ATTACH_SEED`), and resumes each time from what the server holds until the server
//! has it byte for byte; the same photo from a second phone is stored once; the control room
//! lists and downloads it with `patrol control`, and a user of another site gets nothing.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use patrol_core::{GuardId, IncidentCategory, IncidentId, IncidentReport, Severity};
use patrol_e2e::{Phone, Rng, enrolled_phone, seed_from_env};
use patrol_mobile::{DeviceStore, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::{Server, run_ok};

const SITE: &str = "site-1";
const OTHER_SITE: &str = "site-2";

/// A TCP proxy to `upstream` that forwards at most `budget` bytes from its clients (over all
/// their connections), then cuts every connection: an upload (or sync) cut at that byte.
struct CuttingProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: SocketAddr, budget: i64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let left = Arc::new(AtomicI64::new(budget));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let left = left.clone();
                let (Ok(mut from_client), Ok(mut to_server)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from_client.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let allowed = left
                            .fetch_sub(n as i64, Ordering::SeqCst)
                            .clamp(0, n as i64);
                        if to_server.write_all(&buf[..allowed as usize]).is_err()
                            || allowed < n as i64
                        {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(Shutdown::Both);
                    let _ = from_client.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(Shutdown::Both);
                });
            }
        });
        Ok(CuttingProxy { addr, stop })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A phone enrolled on the site, on shift.
async fn phone_on_shift(server: &Server, path: std::path::PathBuf) -> Result<DeviceStore> {
    let (mut phone, _) = enrolled_phone(server, SITE, &path, StoreOptions::default()).await?;
    phone.start_shift(GuardId::new("anna")?)?;
    Ok(phone)
}

fn report(phone: &mut DeviceStore) -> Result<IncidentId> {
    let incident = IncidentId::generate();
    phone.report_incident(
        IncidentReport {
            incident,
            category: IncidentCategory::Theft,
            severity: Severity::High,
            description: "window smashed, bay 14".into(),
            location: None,
        },
        vec![],
        RecordOptions::default(),
    )?;
    Ok(incident)
}

/// Stored blobs in the server's data directory (not unfinished uploads).
fn stored_blobs(server: &Server) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let root = server.data_dir.join("blobs");
    if !root.is_dir() {
        return Ok(out);
    }
    for fan in std::fs::read_dir(root)? {
        let fan = fan?.path();
        if fan.file_name().is_some_and(|n| n == "partial") {
            continue;
        }
        for f in std::fs::read_dir(fan)? {
            out.push(f?.path());
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_at_random_points_resumes_to_the_exact_bytes_stored_once() -> Result<()> {
    let seed = seed_from_env("PATROL_ATTACH_SEED");
    eprintln!("attachment seed {seed} (replay with PATROL_ATTACH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE, OTHER_SITE])?;
    let mut phone = phone_on_shift(&server, dir.path().join("phone.db")).await?;
    let incident = report(&mut phone)?;
    // 2.5 MiB and some: three chunks.
    let photo: Vec<u8> = (0..(5 * 512 * 1024 + 4321))
        .map(|_| rng.next_u64() as u8)
        .collect();
    let (attachment, _) =
        phone.attach_file(incident, &photo, "image/jpeg", Some("bay14.jpg".into()))?;
    let sha = attachment.sha256;
    ensure!(phone.pending_uploads()? == 1);

    // Rounds through a proxy that cuts the phone's traffic after a random number of bytes:
    // the metadata sync, the upload status or a chunk, wherever it falls.
    let mut rounds = 0;
    let mut cut_rounds = 0;
    // What the server held after each cut round: it only grows, and some round ends with a
    // part held, which the next resumes from.
    let mut held = Vec::new();
    let status_url = format!(
        "{}/api/v1/blobs/{}",
        server.url,
        sha.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let credential = phone
        .credential()
        .ok_or_else(|| anyhow!("not enrolled"))?
        .to_owned();
    let http = reqwest::Client::new();
    loop {
        rounds += 1;
        ensure!(rounds < 200, "the upload never finished (seed {seed})");
        // Up to one and a half chunks a round: several rounds, each cut somewhere.
        let budget = 2_000 + rng.below(1_536 * 1024) as i64;
        let proxy = CuttingProxy::start(server.addr, budget)?;
        let client = SyncClient::with_timeout(&proxy.url(), Duration::from_secs(10))?;
        match client.sync(&mut phone).await {
            Ok(report) if report.attachments_pending == 0 && report.attachment_error.is_none() => {
                break;
            }
            Ok(report) => {
                // Metadata through, the upload cut: reported, never the sync's failure.
                ensure!(report.attachment_error.is_some() || report.attachments_pending > 0);
                cut_rounds += 1;
            }
            Err(_) => cut_rounds += 1,
        }
        let status = http
            .get(&status_url)
            .bearer_auth(&credential)
            .send()
            .await?;
        if status.status().is_success() {
            let status: serde_json::Value = status.json().await?;
            held.push(status["received"].as_u64().unwrap_or(0));
        }
    }
    eprintln!("{rounds} rounds, {cut_rounds} cut, held after each: {held:?}");
    ensure!(
        cut_rounds >= 2,
        "too few cuts: the test tested little (seed {seed})"
    );
    ensure!(
        held.windows(2).all(|w| w[0] <= w[1]),
        "what the server held went back: {held:?} (seed {seed})"
    );
    ensure!(
        held.iter().any(|&h| h > 0 && h < photo.len() as u64),
        "no round left a part to resume from: {held:?} (seed {seed})"
    );
    ensure!(phone.pending_uploads()? == 0);
    let stored = stored_blobs(&server)?;
    ensure!(stored.len() == 1, "{stored:?}");
    ensure!(
        std::fs::read(&stored[0])? == photo,
        "the server's copy differs from the photo (seed {seed})"
    );

    // A second phone attaches the same photo to its own incident: stored once still.
    let mut second = phone_on_shift(&server, dir.path().join("second.db")).await?;
    let other_incident = report(&mut second)?;
    second.attach_file(other_incident, &photo, "image/jpeg", None)?;
    let report = SyncClient::new(&server.url)?.sync(&mut second).await?;
    ensure!(
        report.attachments_uploaded == 1 && report.attachments_pending == 0,
        "{report:?}"
    );
    ensure!(stored_blobs(&server)?.len() == 1);

    // The control room lists both references and downloads the bytes.
    let hex_sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let listed = run_ok(&mut server.control(
        &server.admin_token,
        &["attachments", "--site", SITE, "--json"],
    )?)?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    let rows = listed["attachments"]
        .as_array()
        .ok_or_else(|| anyhow!("no list: {listed}"))?;
    ensure!(rows.len() == 2, "{listed}");
    ensure!(
        rows.iter()
            .all(|r| r["sha256"] == hex_sha.as_str() && r["uploaded"] == true),
        "{listed}"
    );
    let table = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "attachments",
            "--site",
            SITE,
            "--incident",
            &incident.to_string(),
        ],
    )?)?;
    ensure!(
        table.contains("bay14.jpg") && table.contains("yes"),
        "{table}"
    );
    let out = dir.path().join("download.jpg");
    let out_arg = out.to_string_lossy().into_owned();
    run_ok(&mut server.control(
        &server.admin_token,
        &[
            "attachment",
            "get",
            "--site",
            SITE,
            &hex_sha,
            "--out",
            &out_arg,
        ],
    )?)?;
    ensure!(std::fs::read(&out)? == photo, "the download differs");

    // A user of the other site is refused, and its own site has no such attachment.
    let other_token = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "user",
            "create",
            "night-operator",
            "--role",
            "operator",
            "--site",
            OTHER_SITE,
        ],
    )?)?
    .trim()
    .to_owned();
    let refused = server
        .control(
            &other_token,
            &[
                "attachment",
                "get",
                "--site",
                SITE,
                &hex_sha,
                "--out",
                &out_arg,
            ],
        )?
        .output()?;
    ensure!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(said.contains("403") || said.contains("may not"), "{said}");
    let elsewhere = server
        .control(
            &other_token,
            &[
                "attachment",
                "get",
                "--site",
                OTHER_SITE,
                &hex_sha,
                "--out",
                &out_arg,
            ],
        )?
        .output()?;
    ensure!(!elsewhere.status.success());
    ensure!(
        String::from_utf8_lossy(&elsewhere.stderr).contains("no incident"),
        "{}",
        String::from_utf8_lossy(&elsewhere.stderr)
    );
    Ok(())
}

/// `patrol device attach` on a phone played by the CLI: the file is kept, uploaded at the next
/// `patrol device sync`, and a file over the limit is refused with the limit.
#[test]
fn the_device_cli_attaches_a_file_and_uploads_it_at_the_next_sync() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let phone = Phone::enroll(dir.path().join("phone.db"), &server, SITE)?;
    phone.run(&["shift", "start", "--guard", "g1"])?;
    let incident = phone
        .run(&[
            "incident",
            "--category",
            "fire",
            "--severity",
            "high",
            "--description",
            "smoke in plant room",
        ])?
        .trim()
        .to_owned();
    let file = dir.path().join("smoke.jpg");
    std::fs::write(&file, vec![3u8; 300_000])?;
    let file_arg = file.to_string_lossy().into_owned();
    let sha = phone
        .run(&["attach", "--incident", &incident, &file_arg])?
        .trim()
        .to_owned();
    ensure!(sha.len() == 64, "{sha}");
    let status = phone.run(&["status"])?;
    ensure!(
        status.contains("files    1 attachment(s) to upload, 300000 of at most"),
        "{status}"
    );
    let synced = phone.run(&["sync"])?;
    ensure!(
        synced.contains("attachments: 1 uploaded, 0 pending"),
        "{synced}"
    );
    let listed = run_ok(&mut server.control(
        &server.admin_token,
        &["attachments", "--site", SITE, "--json"],
    )?)?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    ensure!(
        listed["attachments"][0]["media_type"] == "image/jpeg"
            && listed["attachments"][0]["uploaded"] == true
            && listed["attachments"][0]["sha256"] == sha.as_str(),
        "{listed}"
    );

    let big = dir.path().join("big.mp4");
    let f = std::fs::File::create(&big)?;
    f.set_len(patrol_core::protocol::MAX_ATTACHMENT_BYTES + 1)?;
    let refused = phone
        .command(&["attach", "--incident", &incident, &big.to_string_lossy()])?
        .output()?;
    ensure!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        said.contains(&patrol_core::protocol::MAX_ATTACHMENT_BYTES.to_string()),
        "{said}"
    );
    Ok(())
}

/// `patrol device note --attach` on a phone played by the CLI: the note reaches the feed with
/// its files named, the files follow it at the same sync, and the control room lists them
/// against the note and downloads them byte for byte.
#[test]
fn a_note_with_files_from_the_device_cli_reaches_the_control_room() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let phone = Phone::enroll(dir.path().join("phone.db"), &server, SITE)?;
    phone.run(&["shift", "start", "--guard", "g1"])?;
    let photo = dir.path().join("fence.jpg");
    let audio = dir.path().join("fence.m4a");
    let (photo_bytes, audio_bytes) = (vec![4u8; 1_500_000], vec![8u8; 40_000]);
    std::fs::write(&photo, &photo_bytes)?;
    std::fs::write(&audio, &audio_bytes)?;
    let note = phone
        .run(&[
            "note",
            "fence cut by the loading bay",
            "--attach",
            &photo.to_string_lossy(),
            "--attach",
            &audio.to_string_lossy(),
        ])?
        .trim()
        .to_owned();
    let synced = phone.run(&["sync"])?;
    ensure!(
        synced.contains("attachments: 2 uploaded, 0 pending"),
        "{synced}"
    );

    let table = run_ok(&mut server.control(
        &server.admin_token,
        &["attachments", "--site", SITE, "--note", &note],
    )?)?;
    ensure!(
        table.contains(&format!("note {note}"))
            && table.contains("fence.jpg")
            && table.contains("audio/mp4")
            && !table.contains("not yet"),
        "{table}"
    );
    let feed =
        run_ok(&mut server.control(&server.admin_token, &["pull", "--site", SITE, "--json"])?)?;
    let feed: serde_json::Value = serde_json::from_str(&feed)?;
    let shown = feed["events"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["id"] == note.as_str()))
        .ok_or_else(|| anyhow!("the note is not in the feed: {feed}"))?;
    ensure!(
        shown["kind"] == "note" && shown["attachments"][1]["name"] == "fence.m4a",
        "{shown}"
    );
    let sha = shown["attachments"][0]["sha256"]
        .as_str()
        .ok_or_else(|| anyhow!("no hash: {shown}"))?
        .to_owned();
    let out = dir.path().join("download.jpg");
    run_ok(&mut server.control(
        &server.admin_token,
        &[
            "attachment",
            "get",
            "--site",
            SITE,
            &sha,
            "--out",
            &out.to_string_lossy(),
        ],
    )?)?;
    ensure!(std::fs::read(&out)? == photo_bytes, "the download differs");
    Ok(())
}
