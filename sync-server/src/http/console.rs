//! The control room's web console: hand-written ES modules, a style sheet and a page under
//! `sync-server/console/`, compiled into the binary (`include_bytes!`), so `patrol-server serve`
//! serves it with nothing else installed and no network. `GET /` is the page, `GET
//! /console/{file}` its assets; `POST /console/qr` draws a QR code (SVG) of a short text for an
//! administrator (the enrollment codes the page shows). The page reads the API (`/api/v1/...`)
//! like any client; docs/console.md says what it shows.
//!
//! These are not API routes: they are not in [`super::routes`] nor in the OpenAPI document,
//! and [`super::router`] merges them beside the API's table. Every answer here carries a strict
//! Content-Security-Policy (scripts, styles and connections from this origin only, no inline
//! script) and is revalidated by its ETag (`Cache-Control: no-cache`): a server upgraded in
//! place never leaves a browser on an old page that calls a changed API.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::AuthUser;
use super::error::AppError;
use super::extract::read_json;
use super::state::AppState;

/// What the console's answers may load: only this origin's scripts, styles and connections;
/// images also from `data:` and `blob:` (attachments' previews); no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The longest text `POST /console/qr` draws: an enrollment code and the server's address fit
/// many times over, and the work stays trivial.
pub const MAX_QR_TEXT_BYTES: usize = 1_024;

/// One embedded file of the console.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. A new module is one line here.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("util.js", JS),
    asset!("alarms.js", JS),
    asset!("live.js", JS),
    asset!("incidents.js", JS),
    asset!("tours.js", JS),
    asset!("devices.js", JS),
    asset!("plan.js", JS),
    asset!("reports.js", JS),
    asset!("admin.js", JS),
    asset!("account.js", JS),
    asset!("files.js", JS),
];

/// The console's routes, merged into the API's router by [`super::router`].
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
        .route("/console/qr", post(qr))
}

/// Each asset's ETag: a hash of its bytes, worked out once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
            .collect()
    })
}

/// The headers every console answer carries.
fn page_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

async fn index(request_headers: HeaderMap) -> Response {
    serve("index.html", &request_headers)
}

async fn asset(Path(file): Path<String>, request_headers: HeaderMap) -> Response {
    // The page is `/`, not one of the assets by name.
    if file == "index.html" {
        return AppError::NotFound(format!("/console/{file}")).into_response();
    }
    serve(&file, &request_headers)
}

/// The asset `name`, or 304 when the browser's copy (`If-None-Match`) is this one, or 404.
fn serve(name: &str, request_headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return AppError::NotFound(format!("/console/{name}")).into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    page_headers(headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QrBody {
    text: String,
}

/// `{"text"}` drawn as a QR code, an SVG image; for administrators, who are the ones issuing
/// enrollment codes (the page shows a code as text and as this picture for a phone to scan).
async fn qr(user: AuthUser, State(state): State<AppState>, request: Request) -> Response {
    match qr_svg(user, &state, request).await {
        Ok(svg) => {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("image/svg+xml"),
                )],
                svg,
            )
                .into_response();
            page_headers(response.headers_mut());
            // It holds a secret (an enrollment code): no cache keeps it.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn qr_svg(user: AuthUser, state: &AppState, request: Request) -> Result<String, AppError> {
    user.is_admin()?;
    let body: QrBody = read_json(state, request, None).await?;
    if body.text.is_empty() || body.text.len() > MAX_QR_TEXT_BYTES {
        return Err(AppError::bad_request(
            "invalid_json",
            format!("text must be 1 to {MAX_QR_TEXT_BYTES} bytes"),
        ));
    }
    let code = qrcode::QrCode::with_error_correction_level(&body.text, qrcode::EcLevel::M)
        .map_err(|e| AppError::bad_request("invalid_json", format!("cannot encode text: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_the_page_loads_only_known_modules() {
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        // Each module an asset imports (`from "./x.js"`) is served.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = String::from_utf8_lossy(asset.body);
            for part in text.split("from \"./").skip(1) {
                let module = part.split('"').next().unwrap_or_default();
                assert!(
                    names.contains(&module),
                    "{} imports {module}, which is not served",
                    asset.name
                );
            }
        }
    }
}
