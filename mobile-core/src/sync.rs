//! The sync client: a thin HTTP transport around [`DeviceStore::prepare_sync`] and
//! [`DeviceStore::complete_sync`], presenting the device's credential, and the enrollment that
//! gives a phone its device id and credential. It classes failures so the app knows whether to
//! retry.
//!
//! It also rotates the credential when the server says it is due (a sync answer with
//! [`CREDENTIAL_ROTATION_HEADER`]): after the sync, it asks for the next credential
//! (`POST /api/v1/devices/me/credential`), stores it durably beside the current one, and only
//! then uses it (`GET /api/v1/devices/me`), which makes the server drop the old one. Until the new
//! one has worked the phone keeps the old one, and the server takes it: a lost answer, a crash or
//! a failed request at any step leaves the phone with a credential that works, and a later sync
//! finishes or repeats the rotation. A guard's record is never stranded by it.

use std::borrow::BorrowMut;
use std::time::Duration;

use patrol_core::evidence::DeviceKey;
use patrol_core::protocol::{
    ATTACHMENT_CHUNK_BYTES, ATTACHMENT_CHUNK_TYPE, CONTENT_TYPE, CREDENTIAL_ROTATION_HEADER,
    MAX_PANIC_SYNC_BODY_BYTES, PRIORITY_HEADER, PRIORITY_PANIC, SyncRequest, SyncResponse,
};
use patrol_core::{DeviceId, SiteId};

use crate::backoff::RetryPolicy;
use crate::error::{Error, Result};
use crate::store::{DeviceStore, Enrollment, PendingUpload, SyncReport};
use crate::transport::Transport;

/// How long one request may take, whole.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Rounds in one `sync` call: one more than needed for a server that lost history to ask for
/// everything and receive it. A panic's request of its own, sent before them, is not one.
const MAX_ROUNDS: usize = 3;

/// Talks to one patrol server.
#[derive(Clone, Debug)]
pub struct SyncClient {
    http: reqwest::Client,
    base: String,
    endpoint: String,
    retry: RetryPolicy,
}

impl SyncClient {
    /// A client for the server at `base_url` (e.g. `https://patrol.example.org`) under the
    /// strict [`Transport`] rules: `http://` only on loopback.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_timeout(base_url, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self> {
        Self::with_transport(base_url, &Transport::default(), timeout)
    }

    /// A client that reaches the server under `transport`'s rules (plain HTTP for a lab, the
    /// site's own certificate authority).
    pub fn with_transport(
        base_url: &str,
        transport: &Transport,
        timeout: Duration,
    ) -> Result<Self> {
        let base = transport.checked_base_url(base_url)?;
        Ok(SyncClient {
            http: transport.client(timeout)?,
            base: base.to_owned(),
            endpoint: format!("{base}/api/v1/sync"),
            retry: RetryPolicy::default(),
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Enrolls this phone with a one-time code from an administrator
    /// (`POST /api/v1/enroll`): the phone makes its signing key and registers the public half;
    /// the server makes the device's id and credential. Store them at once with
    /// [`DeviceStore::create_enrolled`]; the code cannot be used again.
    pub async fn enroll(&self, code: &str) -> Result<Enrollment> {
        let key = DeviceKey::generate().map_err(|e| Error::KeyGeneration(e.to_string()))?;
        let body = serde_json::json!({
            "code": code.trim(),
            "public_key": key.public_key().to_string(),
        })
        .to_string();
        let (status, headers, bytes) = answer(
            self.http
                .post(format!("{}/api/v1/enroll", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(enrollment_error(status, &bytes, retry_after_ms(&headers)));
        }
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadResponse(format!("enrollment answer: {e}")))?;
        let field = |name: &str| {
            answer[name]
                .as_str()
                .ok_or_else(|| Error::BadResponse(format!("enrollment answer lacks {name}")))
        };
        let site: SiteId = field("site")?
            .parse()
            .map_err(|e| Error::BadResponse(format!("enrollment answer: {e}")))?;
        let device: DeviceId = field("device_id")?
            .parse()
            .map_err(|e| Error::BadResponse(format!("enrollment answer: {e}")))?;
        // The actor id the server will require of this device's changes must be the one the
        // store writes them with.
        if field("actor_id")? != device.actor_id().to_hex_string() {
            return Err(Error::BadResponse(
                "the enrollment answer's actor id is not the device id's bytes".into(),
            ));
        }
        Ok(Enrollment {
            site,
            device,
            credential: field("credential")?.to_owned(),
            server_url: self.base.clone(),
            signing_key: Some(key),
        })
    }

    /// Sends everything the server has not acknowledged and applies its answer. Events are marked
    /// delivered only from the server's heads, so an interrupted sync is simply done again.
    ///
    /// A panic alarm not yet delivered goes first: when other work is pending beside it, in a
    /// request of its own holding only the panic's shift log (with the events before the panic
    /// in that shift, which its changes build on), in the server's panic lane; then the rest,
    /// in the ordinary rounds ([`DeviceStore::prepare_urgent_sync`]).
    pub async fn sync(&self, store: &mut DeviceStore) -> Result<SyncReport> {
        self.sync_shared(&std::sync::Mutex::new(store)).await
    }

    /// As [`SyncClient::sync`], for a store shared between threads: the lock is held only to
    /// build a request and to apply its answer, never while the network is waited on, so the
    /// guard's recordings (a panic alarm above all) are not held up by a slow sync.
    pub async fn sync_shared<S: BorrowMut<DeviceStore>>(
        &self,
        store: &std::sync::Mutex<S>,
    ) -> Result<SyncReport> {
        let with = |f: &mut dyn FnMut(&mut DeviceStore) -> Result<()>| -> Result<()> {
            let mut guard = store
                .lock()
                .map_err(|_| Error::Corrupt("the store's lock is poisoned".into()))?;
            f((*guard).borrow_mut())
        };
        let mut credentials = (None, None);
        with(&mut |s| {
            credentials = (
                s.credential().map(str::to_owned),
                s.next_credential().map(str::to_owned),
            );
            Ok(())
        })?;
        let (Some(mut credential), next) = credentials else {
            let e = Error::NotEnrolled;
            with(&mut |s| s.sync_failed(&e, &self.retry))?;
            return Err(e);
        };
        // A rotation an earlier sync left unfinished: settle which credential works first.
        if let Some(next) = next {
            match self.try_credential(&next).await {
                Ok(true) => {
                    with(&mut |s| s.confirm_credential())?;
                    credential = next;
                }
                Ok(false) => with(&mut |s| s.drop_next_credential())?,
                Err(e) => {
                    with(&mut |s| s.sync_failed(&e, &self.retry))?;
                    return Err(e);
                }
            }
        }
        let mut rotation_due = false;
        let mut total = SyncReport::default();
        let mut stale_retried = false;
        // The panic's own request is still to be tried; it is not one of the rounds.
        let mut panic_first = true;
        let mut rounds = 0;
        while rounds < MAX_ROUNDS {
            // A fresh request, with a new request_seq, on every attempt.
            let mut prepared = None;
            with(&mut |s| {
                if panic_first {
                    prepared = s.prepare_urgent_sync()?;
                }
                if prepared.is_none() {
                    panic_first = false;
                    prepared = Some(s.prepare_sync()?);
                }
                Ok(())
            })?;
            let Some(prepared) = prepared else { break };
            let answer = match prepared.request.encode() {
                Ok(body) => self.send_sync(body, prepared.urgent, &credential).await,
                Err(e) => Err(e.into()),
            };
            let response = match answer {
                Ok((r, due)) => {
                    rotation_due |= due;
                    r
                }
                Err(Error::Replayed { last_seq }) if !stale_retried => {
                    // The store's counter is behind the server's (restored from an old copy):
                    // move past it and send a fresh request, once.
                    stale_retried = true;
                    with(&mut |s| s.advance_request_seq(last_seq))?;
                    continue;
                }
                Err(e) => {
                    with(&mut |s| s.sync_failed(&e, &self.retry))?;
                    return Err(e);
                }
            };
            let mut prepared = Some(prepared);
            let mut report = SyncReport::default();
            with(&mut |s| {
                if let Some(p) = prepared.take() {
                    report = s.complete_sync(p, &response)?;
                }
                Ok(())
            })?;
            total.docs_sent += report.docs_sent;
            total.events_delivered += report.events_delivered;
            total.pending_events = report.pending_events;
            total.rejected = report.rejected;
            total.needs_another_round = report.needs_another_round;
            if panic_first {
                // The panic is through (or refused: then its log goes again with the rest);
                // the rest of the pending work follows in the ordinary rounds.
                panic_first = false;
                continue;
            }
            rounds += 1;
            if !report.needs_another_round {
                break;
            }
        }
        // After the metadata, which never waits for them: an upload's failure is reported in
        // the report, not as the sync's.
        let uploads = self.upload_attachments(&with, &credential).await;
        total.attachments_uploaded = uploads.0;
        total.attachment_error = uploads.1;
        with(&mut |s| {
            total.attachments_pending = s.pending_uploads()?;
            Ok(())
        })?;
        if rotation_due {
            // The sync is done and its events delivered; a rotation that fails is tried again
            // at a later sync, and the current credential keeps working until then.
            let rotated = async {
                let next = self.next_credential(&credential).await?;
                // Stored durably before it is used: once used, the server refuses the old one.
                with(&mut |s| s.stage_credential(&next))?;
                if self.try_credential(&next).await? {
                    with(&mut |s| s.confirm_credential())?;
                    return Ok(true);
                }
                with(&mut |s| s.drop_next_credential())?;
                Ok::<_, Error>(false)
            };
            match rotated.await {
                Ok(rotated) => total.credential_rotated = rotated,
                Err(e) => tracing::warn!(error = %e, "could not rotate the device credential"),
            }
        }
        Ok(total)
    }

    /// Uploads every attachment due ([`DeviceStore::uploads_due`]): how many finished, and why
    /// the uploads stopped, if they did. A refusal of one attachment (a 4xx) moves on to the
    /// next; a network or server failure stops them until the next sync.
    async fn upload_attachments<W>(&self, with: &W, credential: &str) -> (u64, Option<String>)
    where
        W: Fn(&mut dyn FnMut(&mut DeviceStore) -> Result<()>) -> Result<()>,
    {
        let mut due = Vec::new();
        if let Err(e) = with(&mut |s| {
            due = s.uploads_due()?;
            Ok(())
        }) {
            return (0, Some(e.to_string()));
        }
        let mut uploaded = 0;
        let mut error = None;
        for item in due {
            let done = async {
                self.upload_one(with, &item, credential).await?;
                with(&mut |s| s.attachment_uploaded(&item.sha256))
            };
            match done.await {
                Ok(()) => uploaded += 1,
                Err(e) => {
                    tracing::warn!(error = %e, sha256 = %hex::encode(item.sha256), "attachment upload failed");
                    let stop = e.is_retryable();
                    error = Some(format!("attachment {}: {e}", hex::encode(item.sha256)));
                    if stop {
                        break;
                    }
                }
            }
        }
        (uploaded, error)
    }

    /// Uploads one attachment from where the server's copy ends, chunk by chunk
    /// ([`ATTACHMENT_CHUNK_BYTES`]); done when the server says it holds the whole (it checked
    /// the hash).
    async fn upload_one<W>(&self, with: &W, item: &PendingUpload, credential: &str) -> Result<()>
    where
        W: Fn(&mut dyn FnMut(&mut DeviceStore) -> Result<()>) -> Result<()>,
    {
        let url = format!("{}/api/v1/blobs/{}", self.base, hex::encode(item.sha256));
        let status = |bytes: &[u8]| -> Result<(u64, bool)> {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| Error::BadResponse(format!("upload status: {e}")))?;
            Ok((
                v["received"].as_u64().unwrap_or(0),
                v["stored"].as_bool().unwrap_or(false),
            ))
        };
        let (mut offset, stored) =
            status(&send(self.http.get(&url).bearer_auth(credential)).await?)?;
        if stored {
            return Ok(());
        }
        // Every chunk, and a few restarts from the server's offset: never a loop without end.
        let most = item.size / ATTACHMENT_CHUNK_BYTES + 8;
        for _ in 0..=most {
            let len = ATTACHMENT_CHUNK_BYTES.min(item.size.saturating_sub(offset));
            let mut chunk = Vec::new();
            with(&mut |s| {
                chunk = s.attachment_chunk(&item.sha256, offset, len)?;
                Ok(())
            })?;
            let (code, headers, bytes) = answer(
                self.http
                    .put(format!("{url}?offset={offset}"))
                    .header(reqwest::header::CONTENT_TYPE, ATTACHMENT_CHUNK_TYPE)
                    .bearer_auth(credential)
                    .body(chunk),
            )
            .await?;
            let (received, stored) = match code {
                200..=299 => status(&bytes)?,
                // The server holds another amount (a chunk it took whose answer was lost):
                // resume from what it says.
                409 => status(&send(self.http.get(&url).bearer_auth(credential)).await?)?,
                _ => return Err(http_error(code, &bytes, retry_after_ms(&headers))),
            };
            if stored {
                return Ok(());
            }
            offset = received;
        }
        Err(Error::BadResponse(
            "the server never said it held the whole attachment".into(),
        ))
    }

    /// Asks the server for the device's next credential, presenting `credential`
    /// (`POST /api/v1/devices/me/credential`).
    async fn next_credential(&self, credential: &str) -> Result<String> {
        let bytes = send(
            self.http
                .post(format!("{}/api/v1/devices/me/credential", self.base))
                .bearer_auth(credential),
        )
        .await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadResponse(format!("credential answer: {e}")))?;
        let next = answer["credential"]
            .as_str()
            .filter(|c| c.starts_with("pd_"))
            .ok_or_else(|| Error::BadResponse("the credential answer lacks a credential".into()))?
            .to_owned();
        Ok(next)
    }

    /// Uses a stored next credential once (`GET /api/v1/devices/me`), which makes it the
    /// device's credential at the server: `true` if the server took it (the store should then
    /// keep only it), `false` if it refused it (a later rotation replaced it: the store should
    /// drop it and keep its current one). Any other failure leaves both to the next sync.
    async fn try_credential(&self, next: &str) -> Result<bool> {
        let used = send(
            self.http
                .get(format!("{}/api/v1/devices/me", self.base))
                .bearer_auth(next),
        )
        .await;
        match used {
            Ok(_) => {
                tracing::info!("the device now uses its rotated credential");
                Ok(true)
            }
            Err(Error::Unauthorized { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uses `policy` for the outbox's retry intervals.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry intervals in force.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// One request/response exchange, presenting `credential`.
    pub async fn exchange(&self, request: &SyncRequest, credential: &str) -> Result<SyncResponse> {
        Ok(self
            .exchange_raw(request.encode()?, credential, Lane::Ordinary)
            .await?
            .0)
    }

    /// Sends an encoded sync request. One that carries an undelivered panic (`urgent`) takes
    /// the server's panic lane, ahead of every ordinary sync, unless it is too large for the
    /// lane (a long backlog before the panic) or the server says so (413, a smaller limit of
    /// its own): then it goes the ordinary way.
    async fn send_sync(
        &self,
        body: Vec<u8>,
        urgent: bool,
        credential: &str,
    ) -> Result<(SyncResponse, bool)> {
        if !urgent || body.len() > MAX_PANIC_SYNC_BODY_BYTES {
            return self.exchange_raw(body, credential, Lane::Ordinary).await;
        }
        match self
            .exchange_raw(body.clone(), credential, Lane::Panic)
            .await
        {
            Err(Error::ServerRejected { status: 413, .. }) => {
                tracing::warn!(
                    "the panic's sync is too large for the server's panic lane; sending it as an ordinary sync"
                );
                self.exchange_raw(body, credential, Lane::Ordinary).await
            }
            answer => answer,
        }
    }

    /// One exchange of an encoded request, and whether the server says the credential is due
    /// for rotation.
    async fn exchange_raw(
        &self,
        body: Vec<u8>,
        credential: &str,
        lane: Lane,
    ) -> Result<(SyncResponse, bool)> {
        let mut post = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .bearer_auth(credential);
        if lane == Lane::Panic {
            post = post.header(PRIORITY_HEADER, PRIORITY_PANIC);
        }
        let (bytes, headers) = send_with_headers(post.body(body)).await?;
        let due = headers
            .get(CREDENTIAL_ROTATION_HEADER)
            .is_some_and(|v| v == "due");
        let response =
            SyncResponse::decode(&bytes).map_err(|e| Error::BadResponse(e.to_string()))?;
        Ok((response, due))
    }
}

/// Which of the server's admission lanes a sync asks for ([`PRIORITY_HEADER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Ordinary,
    /// It carries a panic not yet delivered.
    Panic,
}

/// Sends `request` and reads its whole answer: the body of a success, or the error an HTTP
/// failure means (with the server's `Retry-After`, if any).
async fn send(request: reqwest::RequestBuilder) -> Result<Vec<u8>> {
    Ok(send_with_headers(request).await?.0)
}

/// As [`send`], with the answer's headers.
async fn send_with_headers(
    request: reqwest::RequestBuilder,
) -> Result<(Vec<u8>, reqwest::header::HeaderMap)> {
    let (status, headers, bytes) = answer(request).await?;
    if !(200..300).contains(&status) {
        return Err(http_error(status, &bytes, retry_after_ms(&headers)));
    }
    Ok((bytes, headers))
}

/// Sends `request` and reads its whole answer, whatever its status: status, headers, body.
/// Fails only when no answer came.
async fn answer(
    request: reqwest::RequestBuilder,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let response = request
        .send()
        .await
        .map_err(|e| Error::Network(error_chain(&e)))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::Network(error_chain(&e)))?;
    Ok((status, headers, Vec::from(bytes)))
}

/// A `Retry-After` in seconds (as a busy patrol server sends it), in milliseconds. The HTTP-date
/// form is not used by the server and is ignored: the backoff applies alone then.
fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(secs.saturating_mul(1_000))
}

/// A non-success answer's body, read once: its error code, message and (for a replayed
/// request) the last sequence number the server has, from its JSON (`{"error", "message"}`) if
/// it has one, else the start of the body as text.
struct ErrorBody {
    code: Option<String>,
    message: String,
    last_seq: Option<u64>,
}

impl ErrorBody {
    fn parse(bytes: &[u8]) -> ErrorBody {
        let body = serde_json::from_slice::<serde_json::Value>(bytes).ok();
        let text = |name: &str| {
            body.as_ref()
                .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
        };
        ErrorBody {
            code: text("error"),
            message: text("message")
                .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect()),
            last_seq: body.as_ref().and_then(|v| v.get("last_seq")?.as_u64()),
        }
    }
}

/// The error for a non-success answer to an enrollment: a code the server refuses (unknown,
/// used, expired: 401 or 410) or a request it refuses is [`Error::EnrollmentRefused`], saying
/// what to do even when the server's message does not; a busy or failing server stays
/// retryable.
fn enrollment_error(status: u16, bytes: &[u8], retry_after_ms: Option<u64>) -> Error {
    let body = ErrorBody::parse(bytes);
    let code = body.code.clone();
    let spent = matches!(
        code.as_deref(),
        Some("invalid_enrollment_code" | "enrollment_code_used" | "enrollment_code_expired")
    );
    match error_of(status, body, retry_after_ms) {
        Error::Unauthorized { message, .. } | Error::ServerRejected { message, .. } => {
            let mut message = message;
            if spent && !message.contains("administrator") {
                message.push_str("; ask an administrator for a new one");
            }
            Error::EnrollmentRefused {
                status,
                code,
                message,
            }
        }
        other => other,
    }
}

/// The error for a non-success answer, from its JSON body (`{"error", "message"}`) if it has one.
fn http_error(status: u16, bytes: &[u8], retry_after_ms: Option<u64>) -> Error {
    error_of(status, ErrorBody::parse(bytes), retry_after_ms)
}

fn error_of(status: u16, body: ErrorBody, retry_after_ms: Option<u64>) -> Error {
    if status == 409
        && body.code.as_deref() == Some("replayed_request")
        && let Some(last_seq) = body.last_seq
    {
        return Error::Replayed { last_seq };
    }
    let message = body.message;
    if status >= 500 || status == 429 || status == 408 {
        Error::ServerTransient {
            status,
            message,
            retry_after_ms,
        }
    } else if status == 401 {
        Error::Unauthorized { status, message }
    } else {
        Error::ServerRejected { status, message }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_answer_is_transient_and_carries_its_retry_after() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after_ms(&headers), None);
        headers.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after_ms(&headers), Some(2_000));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_ms(&headers), None);

        let body = br#"{"error":"server_busy","message":"busy"}"#;
        let e = http_error(503, body, Some(2_000));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after_ms(), Some(2_000));
        assert!(matches!(e, Error::ServerTransient { status: 503, .. }));
        assert_eq!(http_error(400, body, Some(2_000)).retry_after_ms(), None);
    }

    #[test]
    fn a_refused_enrollment_code_is_an_enrollment_failure_that_says_what_to_do() {
        let used = br#"{"error":"enrollment_code_used","message":"this enrollment code was already used"}"#;
        let e = enrollment_error(410, used, None);
        assert!(
            matches!(&e, Error::EnrollmentRefused { status: 410, code: Some(c), .. } if c == "enrollment_code_used"),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "enrollment failed (HTTP 410): this enrollment code was already used; ask an \
             administrator for a new one"
        );
        let unknown = br#"{"error":"invalid_enrollment_code","message":"not known; ask an administrator for a new one"}"#;
        assert_eq!(
            enrollment_error(401, unknown, None).to_string(),
            "enrollment failed (HTTP 401): not known; ask an administrator for a new one"
        );
        // A busy server is not a refusal: the same code may be tried again.
        let busy = enrollment_error(
            429,
            br#"{"error":"too_many_failed_attempts","message":"wait"}"#,
            Some(1_000),
        );
        assert!(busy.is_retryable(), "{busy:?}");
    }
}
