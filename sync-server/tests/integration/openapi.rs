//! `/openapi.json`: it is an OpenAPI 3.x document, and it matches the routes: it documents
//! exactly the router's table (`patrol_server::http::routes`), and each path and method it
//! documents is served by a handler rather than the router's 404/405 fallback.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;

use crate::common::{self, SITE, TestResult, TestServer};

type Error = Box<dyn std::error::Error>;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(server: &TestServer) -> Result<Value, Error> {
    let req = Request::get("/openapi.json").body(Body::empty())?;
    let (status, content_type, body) = server.call(req).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    Ok(serde_json::from_slice(&body)?)
}

/// Every (method, path) the document describes, methods upper case.
fn operations(doc: &Value) -> Result<BTreeSet<(String, String)>, Error> {
    let paths = doc["paths"].as_object().ok_or("no paths object")?;
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().ok_or("a path item is not an object")?;
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_document() -> TestResult {
    let server = TestServer::new(common::Backend::sqlite()?).await?;
    let doc = document(&server).await?;
    let version = doc["openapi"].as_str().ok_or("no openapi version")?;
    assert!(version.starts_with("3."), "{version}");
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .ok_or("no security schemes")?;
    for name in ["device_credential", "user_token"] {
        assert_eq!(schemes[name]["type"], "http", "{name}");
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    let paths = doc["paths"].as_object().ok_or("no paths")?;
    for (path, item) in paths {
        for (method, op) in item.as_object().ok_or("bad path item")? {
            let here = format!("{method} {path}");
            // Every `{param}` of the path is declared as a path parameter.
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{here}");
            // A route behind a token says which scheme, and documents the 401.
            let security = op["security"].as_array();
            if let Some(reqs) = security {
                for req in reqs {
                    for name in req.as_object().ok_or("bad security")?.keys() {
                        assert!(schemes.contains_key(name), "{here}: unknown scheme {name}");
                    }
                }
                assert!(op["responses"]["401"].is_object(), "{here}: no 401");
            }
            // Every error status answers the error body.
            for (status, response) in op["responses"].as_object().ok_or("no responses")? {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{here} {status}");
                }
            }
        }
    }

    // The feed's query parameters and cursor headers.
    let events = &doc["paths"]["/api/v1/sites/{site}/events"]["get"];
    let query: BTreeSet<&str> = events["parameters"]
        .as_array()
        .ok_or("no feed parameters")?
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    let expected = [
        "after",
        "limit",
        "from",
        "to",
        "guard",
        "device",
        "kind",
        "checkpoint",
    ];
    assert_eq!(query, expected.into_iter().collect());
    let headers = events["responses"]["200"]["headers"]
        .as_object()
        .ok_or("no feed headers")?;
    for h in ["patrol-next-cursor", "patrol-more", "Link"] {
        assert!(headers.contains_key(h), "{h}");
    }
    let stream = &doc["paths"]["/api/v1/sites/{site}/stream"]["get"]["responses"]["200"];
    assert!(stream["content"]["text/event-stream"].is_object());
    let sync = &doc["paths"]["/api/v1/sync"]["post"];
    assert!(sync["requestBody"]["content"]["application/x-patrol-sync"].is_object());
    assert!(sync["responses"]["200"]["content"]["application/x-patrol-sync"].is_object());
    assert_eq!(
        sync["security"][0]["device_credential"],
        serde_json::json!([])
    );
    Ok(())
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes() -> TestResult {
    let server = TestServer::new(common::Backend::sqlite()?).await?;
    let documented = operations(&document(&server).await?)?;
    let routed: BTreeSet<(String, String)> = patrol_server::http::routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
    Ok(())
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() -> TestResult {
    let server = TestServer::new(common::Backend::sqlite()?).await?;
    let doc = document(&server).await?;
    for (method, path) in operations(&doc)? {
        let op = &doc["paths"][path.as_str()][method.to_lowercase()];
        let uri = path
            .replace("{site}", SITE)
            .replace("{device}", "0190a5b4-0000-7000-8000-000000000000")
            .replace("{incident}", "x")
            .replace("{event}", "x")
            .replace("{id}", "x");
        // No credential: a guarded route must refuse with 401, an open one answer by itself.
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes())?)
            .uri(&uri)
            .body(Body::empty())?;
        let (status, _, body) = server.call(req).await?;
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        let here = format!("{method} {uri}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{here}");
        assert_ne!(code.as_deref(), Some("not_found"), "{here}");
        assert_ne!(code.as_deref(), Some("method_not_allowed"), "{here}");
        if op["security"].is_array() {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{here}");
        } else if path == "/api/v1/enroll" {
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{here}");
        } else {
            assert_eq!(status, StatusCode::OK, "{here}");
        }
        assert!(
            op["responses"][status.as_str()].is_object(),
            "{here}: answered {status}, which the document does not list"
        );
    }
    Ok(())
}
