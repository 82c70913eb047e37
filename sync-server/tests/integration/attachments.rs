//! Attachments: phones upload the bytes their incidents reference in resumable chunks, the
//! server checks the hash of the whole and stores each content once, and serves it only to
//! users of the site whose incidents reference it.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use patrol_core::incident::{Attachment, Entry, IncidentAction, IncidentDoc, Party, Stamped};
use patrol_core::merge::plan_incident_push;
use patrol_core::protocol::{ATTACHMENT_CHUNK_BYTES, DocOutcome, MAX_ATTACHMENT_BYTES};
use patrol_core::{EventBody, Hlc, IncidentCategory, IncidentId, Severity, SiteId};
use patrol_server::credentials::{Role, Scope, new_user};
use patrol_server::store::Site;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{Backend, Phone, SITE, TestResult, TestServer};

const OTHER_SITE: &str = "site-2";

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Reports an incident on `phone` with `attachment` and syncs it: the reference reaches the
/// server. Returns the incident id.
async fn report_with(
    server: &TestServer,
    phone: &Phone,
    site: &str,
    attachment: Attachment,
) -> Result<IncidentId, Box<dyn std::error::Error>> {
    let by = Party::Guard {
        device: phone.device,
        guard: phone.log.meta().guard.clone(),
    };
    let at = Hlc {
        wall_ms: 1_740_866_400_000,
        counter: 0,
    };
    let (mut doc, _) = IncidentDoc::create(
        IncidentId::generate(),
        phone.device.actor_id(),
        Stamped {
            by: by.clone(),
            at,
            wall_ms: 1_740_866_400_000,
            entry: Entry::Reported {
                site: SiteId::new(site)?,
                category: IncidentCategory::Theft,
                severity: Severity::Medium,
                description: "door forced".into(),
                location: None,
            },
        },
    )?;
    doc.act(
        IncidentAction::Attach(attachment),
        by,
        Hlc {
            wall_ms: at.wall_ms + 1,
            counter: 0,
        },
        1_740_866_400_001,
    )?;
    let push = plan_incident_push(&mut doc, &[])?;
    let answer = server.sync(&phone.request(vec![push])).await?;
    assert!(
        matches!(answer.docs[0].outcome, DocOutcome::Accepted { .. }),
        "{:?}",
        answer.docs[0].outcome
    );
    Ok(doc.id())
}

fn photo_ref(bytes: &[u8], name: &str) -> Attachment {
    Attachment {
        sha256: sha(bytes),
        media_type: "image/jpeg".into(),
        size: bytes.len() as u64,
        name: Some(name.into()),
    }
}

async fn put_chunk(
    server: &TestServer,
    credential: &str,
    sha256: &[u8; 32],
    offset: u64,
    bytes: &[u8],
) -> Result<(StatusCode, Value), Box<dyn std::error::Error>> {
    let req = Request::put(format!(
        "/api/v1/blobs/{}?offset={offset}",
        hex::encode(sha256)
    ))
    .header(header::AUTHORIZATION, format!("Bearer {credential}"))
    .header(header::CONTENT_TYPE, "application/octet-stream")
    .body(Body::from(bytes.to_vec()))?;
    let (status, _, body) = server.call(req).await?;
    Ok((status, serde_json::from_slice(&body)?))
}

async fn upload_status(
    server: &TestServer,
    credential: &str,
    sha256: &[u8; 32],
) -> Result<(StatusCode, Value), Box<dyn std::error::Error>> {
    server
        .get_json_as(
            credential,
            &format!("/api/v1/blobs/{}", hex::encode(sha256)),
        )
        .await
}

/// Stored blobs: files under the data directory's `blobs` (not the unfinished uploads), or
/// rows of `blobs`.
async fn stored_blob_count(server: &TestServer) -> Result<i64, Box<dyn std::error::Error>> {
    match &server.backend {
        Backend::Sqlite(dir) => {
            let mut n = 0;
            let root = dir.path().join("blobs");
            if root.is_dir() {
                for fan in std::fs::read_dir(&root)? {
                    let fan = fan?.path();
                    if fan.file_name().is_some_and(|n| n == "partial") {
                        continue;
                    }
                    n += std::fs::read_dir(fan)?.count() as i64;
                }
            }
            Ok(n)
        }
        Backend::Postgres(_) => server.count("SELECT COUNT(*) FROM blobs").await,
    }
}

/// The token of an operator of the other site only (which `server` must have).
async fn other_site_operator(server: &TestServer) -> Result<String, Box<dyn std::error::Error>> {
    let (new, token) = new_user(
        "other-operator".into(),
        Role::Operator,
        Scope::Sites(vec![SiteId::new(OTHER_SITE)?]),
        None,
        0,
        i64::MAX,
    )?;
    server.state.store.create_user(new).await?;
    Ok(token.expose().to_owned())
}

async fn get_bytes(
    server: &TestServer,
    token: &str,
    uri: &str,
) -> Result<(StatusCode, String, Vec<u8>), Box<dyn std::error::Error>> {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())?;
    let (status, ct, body) = server.call(req).await?;
    Ok((status, ct, body.to_vec()))
}

async fn an_upload_resumes_from_what_the_server_holds_and_is_stored_once(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let alice = server.phone("guard-1").await?;
    let bob = server.phone("guard-2").await?;
    // Three chunks and a bit.
    let photo: Vec<u8> = (0..(3 * ATTACHMENT_CHUNK_BYTES + 1234))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let a = photo_ref(&photo, "door.jpg");
    let incident = report_with(&server, &alice, SITE, a.clone()).await?;
    let alice_cred = server.credential(alice.device)?;

    let (status, held) = upload_status(&server, &alice_cred, &a.sha256).await?;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(
        (held["received"].as_u64(), held["stored"].as_bool()),
        (Some(0), Some(false))
    );
    let (status, list) = server
        .get_json(&format!("/api/v1/sites/{SITE}/attachments"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["attachments"][0]["uploaded"], false);
    assert_eq!(list["attachments"][0]["incident_id"], incident.to_string());

    // A first chunk, then one cut short: the server holds what arrived.
    let cut = ATTACHMENT_CHUNK_BYTES as usize + 500;
    let (status, body) = put_chunk(&server, &alice_cred, &a.sha256, 0, &photo[..1000]).await?;
    assert_eq!(
        (status, body["received"].as_u64()),
        (StatusCode::OK, Some(1000)),
        "{body}"
    );
    let (status, body) =
        put_chunk(&server, &alice_cred, &a.sha256, 1000, &photo[1000..cut]).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A chunk sent again (its answer lost) is refused with where to resume.
    let (status, body) =
        put_chunk(&server, &alice_cred, &a.sha256, 1000, &photo[1000..cut]).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "wrong_offset");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&cut.to_string()))
    );
    let (_, held) = upload_status(&server, &alice_cred, &a.sha256).await?;
    assert_eq!(held["received"].as_u64(), Some(cut as u64));
    // Bob's device has no part of Alice's upload: uploads are per device.
    let bob_cred = server.credential(bob.device)?;
    let bob_incident = report_with(&server, &bob, SITE, photo_ref(&photo, "same.jpg")).await?;
    let (_, bob_held) = upload_status(&server, &bob_cred, &a.sha256).await?;
    assert_eq!(bob_held["received"].as_u64(), Some(0));
    assert_ne!(bob_incident, incident);

    // A chunk over the chunk size is refused unread.
    let big = vec![0u8; ATTACHMENT_CHUNK_BYTES as usize + 1];
    let (status, body) = put_chunk(&server, &alice_cred, &a.sha256, cut as u64, &big).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let mut offset = cut;
    while offset < photo.len() {
        let end = (offset + ATTACHMENT_CHUNK_BYTES as usize).min(photo.len());
        let (status, body) = put_chunk(
            &server,
            &alice_cred,
            &a.sha256,
            offset as u64,
            &photo[offset..end],
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stored"].as_bool(), Some(end == photo.len()), "{body}");
        offset = end;
    }
    assert_eq!(stored_blob_count(&server).await?, 1);

    // The same photo from Bob's phone: already stored, nothing sent, nothing stored twice.
    let (_, bob_held) = upload_status(&server, &bob_cred, &a.sha256).await?;
    assert_eq!(
        (bob_held["stored"].as_bool(), bob_held["received"].as_u64()),
        (Some(true), Some(photo.len() as u64))
    );
    let (status, body) = put_chunk(&server, &bob_cred, &a.sha256, 0, &photo[..10]).await?;
    assert_eq!(
        (status, body["stored"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(stored_blob_count(&server).await?, 1);

    let admin = server.admin.clone();
    let (status, ct, bytes) = get_bytes(
        &server,
        &admin,
        &format!("/api/v1/sites/{SITE}/attachments/{}", hex::encode(a.sha256)),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "image/jpeg");
    assert!(bytes == photo, "the served bytes are the uploaded photo");
    let (_, list) = server
        .get_json(&format!(
            "/api/v1/sites/{SITE}/attachments?incident={incident}"
        ))
        .await?;
    let rows = list["attachments"].as_array().ok_or("no list")?;
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["uploaded"], true);
    assert_eq!(rows[0]["name"], "door.jpg");
    Ok(())
}

async fn a_whole_that_does_not_match_its_hash_is_refused_and_not_kept(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let photo = vec![42u8; 5000];
    let a = photo_ref(&photo, "x.jpg");
    report_with(&server, &phone, SITE, a.clone()).await?;
    let cred = server.credential(phone.device)?;
    let mut forged = photo.clone();
    forged[4999] = 43;
    let (status, _) = put_chunk(&server, &cred, &a.sha256, 0, &forged[..3000]).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put_chunk(&server, &cred, &a.sha256, 3000, &forged[3000..]).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "hash_mismatch");
    // Nothing kept: the upload starts again from 0, and nothing is served.
    let (_, held) = upload_status(&server, &cred, &a.sha256).await?;
    assert_eq!(
        (held["received"].as_u64(), held["stored"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(stored_blob_count(&server).await?, 0);
    let admin = server.admin.clone();
    let (status, _, body) = get_bytes(
        &server,
        &admin,
        &format!("/api/v1/sites/{SITE}/attachments/{}", hex::encode(a.sha256)),
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("not_uploaded"));
    // The right bytes then go through.
    let (status, body) = put_chunk(&server, &cred, &a.sha256, 0, &photo).await?;
    assert_eq!(
        (status, body["stored"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    Ok(())
}

async fn another_sites_users_and_devices_get_nothing(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    server
        .state
        .store
        .create_site(Site::new(SiteId::new(OTHER_SITE)?, None, 0)?)
        .await?;
    let phone = server.phone("guard-1").await?;
    let photo = vec![9u8; 100];
    let a = photo_ref(&photo, "p.jpg");
    report_with(&server, &phone, SITE, a.clone()).await?;
    let cred = server.credential(phone.device)?;
    put_chunk(&server, &cred, &a.sha256, 0, &photo).await?;
    let hash = hex::encode(a.sha256);

    // A user of the other site only: 403 on this site's attachments.
    let other = other_site_operator(&server).await?;
    let (status, _, _) = get_bytes(
        &server,
        &other,
        &format!("/api/v1/sites/{SITE}/attachments/{hash}"),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .get_json_as(&other, &format!("/api/v1/sites/{SITE}/attachments"))
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Through its own site, the hash reads nothing: no incident there references it.
    let (status, _, body) = get_bytes(
        &server,
        &other,
        &format!("/api/v1/sites/{OTHER_SITE}/attachments/{hash}"),
    )
    .await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, list) = server
        .get_json_as(&other, &format!("/api/v1/sites/{OTHER_SITE}/attachments"))
        .await?;
    assert_eq!(list["attachments"], serde_json::json!([]));

    // A device of the other site can neither see nor upload it.
    let stranger = server.enroll_on(OTHER_SITE).await?;
    let stranger_cred = server.credential(stranger.device)?;
    let (status, _) = upload_status(&server, &stranger_cred, &a.sha256).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = put_chunk(&server, &stranger_cred, &a.sha256, 0, &photo).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor can anyone without a credential.
    let (status, _, _) = get_bytes(&server, "", &format!("/api/v1/blobs/{hash}")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

async fn uploads_beyond_the_limits_are_refused_with_the_limit(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let cred = server.credential(phone.device)?;
    // A reference claiming more than the limit (a phone cannot make one; a forged one can).
    let huge = Attachment {
        sha256: [5; 32],
        media_type: "video/mp4".into(),
        size: MAX_ATTACHMENT_BYTES + 1,
        name: None,
    };
    report_with(&server, &phone, SITE, huge.clone()).await?;
    let (status, body) = put_chunk(&server, &cred, &huge.sha256, 0, &[1, 2, 3]).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "attachment_too_large");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&MAX_ATTACHMENT_BYTES.to_string())),
        "{body}"
    );
    // A blob no incident references.
    let (status, body) = put_chunk(&server, &cred, &[6; 32], 0, &[1]).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A chunk past the end of the blob.
    let small = photo_ref(&[1, 2, 3], "s.jpg");
    report_with(&server, &phone, SITE, small.clone()).await?;
    let (status, body) = put_chunk(&server, &cred, &small.sha256, 0, &[1, 2, 3, 4]).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_chunk");
    let (status, body) = put_chunk(&server, &cred, &small.sha256, 0, &[]).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A malformed hash.
    let req = Request::get("/api/v1/blobs/xyz")
        .header(header::AUTHORIZATION, format!("Bearer {cred}"))
        .body(Body::empty())?;
    let (status, _, _) = server.call(req).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}

async fn uploads_wait_for_no_one_and_syncs_never_wait_for_uploads(backend: Backend) -> TestResult {
    let mut server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    let photo = vec![1u8; 2000];
    let a = photo_ref(&photo, "p.jpg");
    report_with(&server, &phone, SITE, a.clone()).await?;
    let cred = server.credential(phone.device)?;
    // No upload slot free: refused at once, with when to come back.
    server.state = server.state.clone().with_max_concurrent_uploads(0);
    let req = Request::put(format!("/api/v1/blobs/{}?offset=0", hex::encode(a.sha256)))
        .header(header::AUTHORIZATION, format!("Bearer {cred}"))
        .body(Body::from(photo.clone()))?;
    let resp = tower::ServiceExt::oneshot(patrol_server::router(server.state.clone()), req).await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    // The sync still goes through: uploads have slots of their own.
    phone.scan("cp-1")?;
    let request = phone.push_request()?;
    let answer = server.sync(&request).await?;
    assert!(matches!(
        answer.docs[0].outcome,
        DocOutcome::Accepted { .. }
    ));
    let (_, held) = upload_status(&server, &cred, &a.sha256).await?;
    assert_eq!(held["received"].as_u64(), Some(0), "nothing was read");
    Ok(())
}

async fn an_upload_left_unfinished_for_a_week_is_dropped(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let photo = vec![2u8; 2000];
    let a = photo_ref(&photo, "p.jpg");
    report_with(&server, &phone, SITE, a.clone()).await?;
    let cred = server.credential(phone.device)?;
    put_chunk(&server, &cred, &a.sha256, 0, &photo[..500]).await?;
    let store = server.store();
    let now = crate::common::crate_now_ms();
    let held = store.blob_upload(phone.device, a.sha256, now).await?;
    assert_eq!((held.received, held.device_partial_bytes), (500, 500));
    let week_later = now + patrol_server::store::blobs::PARTIAL_UPLOAD_TTL_MS + 60_000;
    let held = store
        .blob_upload(phone.device, a.sha256, week_later)
        .await?;
    assert_eq!((held.received, held.device_partial_bytes), (0, 0));
    Ok(())
}

async fn two_phones_uploading_one_photo_at_once_store_it_once(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let alice = server.phone("guard-1").await?;
    let bob = server.phone("guard-2").await?;
    let photo: Vec<u8> = (0..(2 * ATTACHMENT_CHUNK_BYTES + 77))
        .map(|i| (i % 241) as u8)
        .collect();
    let a = photo_ref(&photo, "same.jpg");
    report_with(&server, &alice, SITE, a.clone()).await?;
    report_with(&server, &bob, SITE, a.clone()).await?;
    let upload = |credential: String| {
        let server = &server;
        let photo = &photo;
        async move {
            let mut offset = 0usize;
            loop {
                let end = (offset + ATTACHMENT_CHUNK_BYTES as usize).min(photo.len());
                let (status, body) = put_chunk(
                    server,
                    &credential,
                    &a.sha256,
                    offset as u64,
                    &photo[offset..end],
                )
                .await?;
                assert_eq!(status, StatusCode::OK, "{body}");
                if body["stored"] == true {
                    return Ok::<_, Box<dyn std::error::Error>>(());
                }
                offset = end;
            }
        }
    };
    let (x, y) = tokio::join!(
        upload(server.credential(alice.device)?),
        upload(server.credential(bob.device)?)
    );
    x?;
    y?;
    assert_eq!(stored_blob_count(&server).await?, 1);
    let admin = server.admin.clone();
    let (status, _, bytes) = get_bytes(
        &server,
        &admin,
        &format!("/api/v1/sites/{SITE}/attachments/{}", hex::encode(a.sha256)),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == photo);
    Ok(())
}

/// A note's files: refused before the note arrives, then uploaded, listed with the note and
/// served to the site's users only; the feed names them by hash.
async fn a_notes_files_are_taken_once_the_note_has_arrived(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    server
        .state
        .store
        .create_site(Site::new(SiteId::new(OTHER_SITE)?, None, 0)?)
        .await?;
    let mut phone = server.phone("guard-1").await?;
    let cred = server.credential(phone.device)?;
    let photo = vec![5u8; 3_000];
    let clip = vec![6u8; 700];
    let (a, b) = (photo_ref(&photo, "hall.jpg"), photo_ref(&clip, "hall.ogg"));
    // Before the note arrives, nothing references the photo.
    let (status, _) = put_chunk(&server, &cred, &a.sha256, 0, &photo).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let note = phone.record(EventBody::NoteWithAttachments {
        text: "window broken in the hall".into(),
        attachments: vec![a.clone(), b.clone()],
    })?;
    let push = phone.push()?;
    server.sync(&phone.request(vec![push])).await?;
    for (r, bytes) in [(&a, &photo), (&b, &clip)] {
        let (status, body) = put_chunk(&server, &cred, &r.sha256, 0, bytes).await?;
        assert_eq!(
            (status, body["stored"].clone()),
            (StatusCode::OK, true.into())
        );
    }

    let admin = server.admin.clone();
    let (status, list) = server
        .get_json_as(
            &admin,
            &format!("/api/v1/sites/{SITE}/attachments?note={note}"),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed: Vec<(Value, Value, Value, Value)> = list["attachments"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| {
                    (
                        x["note_event_id"].clone(),
                        x["incident_id"].clone(),
                        x["name"].clone(),
                        x["uploaded"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let row = |name: &str| {
        (
            note.to_string().into(),
            Value::Null,
            name.into(),
            true.into(),
        )
    };
    assert_eq!(listed, vec![row("hall.jpg"), row("hall.ogg")]);
    let (status, _, bytes) = get_bytes(
        &server,
        &admin,
        &format!("/api/v1/sites/{SITE}/attachments/{}", hex::encode(a.sha256)),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == photo);

    // The feed shows the note with its files by hash.
    let (_, feed) = server
        .get_json_as(&admin, &format!("/api/v1/sites/{SITE}/events?kind=note"))
        .await?;
    let shown = &feed["events"][0];
    assert_eq!(shown["id"], note.to_string());
    assert_eq!(shown["text"], "window broken in the hall");
    assert_eq!(shown["attachments"][0]["sha256"], hex::encode(a.sha256));
    assert_eq!(shown["attachments"][1]["name"], "hall.ogg");

    // Another site's user reads nothing of it through either site.
    let other = other_site_operator(&server).await?;
    for site in [SITE, OTHER_SITE] {
        let (status, _, _) = get_bytes(
            &server,
            &other,
            &format!("/api/v1/sites/{site}/attachments/{}", hex::encode(a.sha256)),
        )
        .await?;
        assert_ne!(status, StatusCode::OK, "through {site}");
    }
    Ok(())
}

crate::on_every_backend!(
    uploads_wait_for_no_one_and_syncs_never_wait_for_uploads,
    a_notes_files_are_taken_once_the_note_has_arrived,
    an_upload_left_unfinished_for_a_week_is_dropped,
    two_phones_uploading_one_photo_at_once_store_it_once,
    an_upload_resumes_from_what_the_server_holds_and_is_stored_once,
    a_whole_that_does_not_match_its_hash_is_refused_and_not_kept,
    another_sites_users_and_devices_get_nothing,
    uploads_beyond_the_limits_are_refused_with_the_limit,
);
