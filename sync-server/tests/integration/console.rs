//! The web console's routes through the real router: the page at `/` and its assets with their
//! content types, security policy and revalidation; unknown assets and the API untouched; the
//! QR code of an enrollment code for administrators only.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use crate::common::{SITE, TestResult, TestServer};
use patrol_core::SiteId;
use patrol_server::credentials::{Role, Scope, new_user};
use patrol_server::router;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy_and_revalidated() -> TestResult {
    let server = TestServer::sqlite().await?;
    for (path, content_type, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script type=\"module\" src=\"/console/app.js\">",
        ),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        ("/console/style.css", "text/css; charset=utf-8", "--alarm"),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let resp = router(server.state.clone())
            .oneshot(Request::get(path).body(Body::empty())?)
            .await?;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str()?;
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        assert!(
            String::from_utf8_lossy(&body).contains(needle),
            "{path} lacks {needle}"
        );
        // The browser's copy is still good: 304, no body.
        let etag = headers[header::ETAG].clone();
        let again = router(server.state.clone())
            .oneshot(
                Request::get(path)
                    .header(header::IF_NONE_MATCH, etag)
                    .body(Body::empty())?,
            )
            .await?;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    // No inline script in the page: the policy would refuse it.
    let (_, _, page) = server.call(Request::get("/").body(Body::empty())?).await?;
    let page = String::from_utf8(page.to_vec())?;
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    Ok(())
}

#[tokio::test]
async fn unknown_assets_and_api_paths_are_not_the_console() -> TestResult {
    let server = TestServer::sqlite().await?;
    for path in [
        "/console/nope.js",
        "/console/index.html",
        "/console/../Cargo.toml",
        "/api/v1/nope",
        "/index.html",
    ] {
        let (status, content_type, body) =
            server.call(Request::get(path).body(Body::empty())?).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(content_type.starts_with("application/json"), "{path}");
        assert!(
            String::from_utf8_lossy(&body).contains("not_found"),
            "{path}"
        );
    }
    let (status, _, _) = server
        .call(Request::get("/healthz").body(Body::empty())?)
        .await?;
    assert_eq!(status, StatusCode::OK);
    // The console is not part of the API's table, which the OpenAPI document is held to.
    assert!(
        patrol_server::http::routes()
            .iter()
            .all(|(_, path)| *path != "/" && !path.starts_with("/console"))
    );
    Ok(())
}

#[tokio::test]
async fn the_qr_code_of_an_enrollment_code_is_drawn_for_administrators_only() -> TestResult {
    let server = TestServer::sqlite().await?;
    let qr = |token: Option<String>, body: serde_json::Value| {
        let mut req = Request::post("/console/qr").header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(Body::from(body.to_string()))
    };
    let text =
        serde_json::json!({"text": "patrol://enroll?server=http%3A%2F%2F127.0.0.1&code=pe_x"});
    let (status, content_type, body) = server
        .call(qr(Some(server.admin.clone()), text.clone())?)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "image/svg+xml");
    assert!(String::from_utf8_lossy(&body).contains("<svg"));

    let (new, token) = new_user(
        "olga".into(),
        Role::Operator,
        Scope::Sites(vec![SiteId::new(SITE)?]),
        None,
        0,
        i64::MAX,
    )?;
    server.state.store.create_user(new).await?;
    let operator = token.expose().to_owned();
    let (status, _, _) = server.call(qr(Some(operator), text.clone())?).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = server.call(qr(None, text)?).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let long = serde_json::json!({"text": "x".repeat(2_000)});
    let (status, _, body) = server.call(qr(Some(server.admin.clone()), long)?).await?;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
