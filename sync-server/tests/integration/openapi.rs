//! `/openapi.json`: it is an OpenAPI 3.x document, and it matches the routes: it documents
//! exactly the router's table (`patrol_server::http::routes`), and each path and method it
//! documents is served by a handler rather than the router's 404/405 fallback. It also states
//! what the server accepts, as `scripts/api-fuzz.sh` holds it to by fuzzing: each path
//! parameter's format or pattern (the site id's agreeing with `SiteId`'s rule), the live
//! stream's media type and event, real event kinds, the range of every integer input, and the
//! answers the fuzzer found the server gives.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use patrol_core::{EventBody, SiteId};
use regex::Regex;
use serde_json::{Value, json};

use crate::common::{self, Backend, SITE, TestResult, TestServer};

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
        "flag",
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

/// The open routes whose credential is in their body: an enrollment code, a name and password.
const CREDENTIAL_IN_BODY: [(&str, &str); 2] =
    [("POST", "/api/v1/enroll"), ("POST", "/api/v1/session")];

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
        } else if CREDENTIAL_IN_BODY.contains(&(method.as_str(), path.as_str())) {
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{here}");
        } else {
            // Signing out without a session only clears the cookie.
            assert!(status.is_success(), "{here}: {status}");
        }
        assert!(
            op["responses"][status.as_str()].is_object(),
            "{here}: answered {status}, which the document does not list"
        );
    }
    Ok(())
}

/// `schema` with a `$ref` to one of the document's components replaced by that component.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => r
            .strip_prefix("#/components/schemas/")
            .map_or(&Value::Null, |name| &doc["components"]["schemas"][name]),
        None => schema,
    }
}

/// Every operation of the document, as (`METHOD path`, operation).
fn each_operation(doc: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if item[method].is_object() {
                    out.push((format!("{} {path}", method.to_uppercase()), &item[method]));
                }
            }
        }
    }
    out
}

/// What the layers in front of the handlers may answer is declared on every route they guard:
/// a locked-out address (429) wherever a credential is checked, an expired user token (401)
/// wherever one is, a stalled body (408) wherever a body is read.
#[tokio::test]
async fn the_throttle_and_the_body_timeout_are_declared_where_they_answer() -> TestResult {
    let server = TestServer::sqlite().await?;
    let doc = document(&server).await?;
    for (here, op) in each_operation(&doc) {
        let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty())
            || CREDENTIAL_IN_BODY
                .iter()
                .any(|(method, path)| here == format!("{method} {path}"));
        let describes = |status: &str, code: &str| {
            op["responses"][status]["description"]
                .as_str()
                .is_some_and(|d| d.contains(code))
        };
        assert_eq!(
            describes("429", "too_many_failed_attempts"),
            authenticated,
            "{here}"
        );
        assert_eq!(
            describes("408", "request_timeout"),
            op["requestBody"].is_object(),
            "{here}"
        );
        let user_token = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("user_token").is_some()));
        if user_token {
            assert!(describes("401", "expired_credential"), "{here}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_path_parameter_states_its_format_or_pattern() -> TestResult {
    let server = TestServer::sqlite().await?;
    let doc = document(&server).await?;
    let mut site_patterns = BTreeSet::new();
    for (here, op) in each_operation(&doc) {
        let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
        for p in parameters.iter().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap_or("?");
            let schema = resolve(&doc, &p["schema"]);
            assert!(
                schema["format"].is_string() || schema["pattern"].is_string(),
                "{here}: path parameter {name} has neither a format nor a pattern: {schema}"
            );
            match name {
                // A tour id follows the site id's rule (both are slugs, `CheckpointId`'s too).
                "site" | "tour" => {
                    site_patterns.insert(schema["pattern"].as_str().unwrap_or("").to_owned());
                }
                // Webhooks and their deliveries are numbered by the database.
                "id" if here.contains("/webhooks/") => {
                    assert_eq!(schema["format"], "int64", "{here}: {name}")
                }
                // A content address: a SHA-256 in hex.
                "sha256" => assert_eq!(schema["pattern"], "^[0-9a-fA-F]{64}$", "{here}"),
                // Ids the server parses as UUIDs (the user id is one it looks up).
                _ => assert_eq!(schema["format"], "uuid", "{here}: {name}"),
            }
        }
    }
    // One pattern for every site, and it accepts exactly what `SiteId` does.
    assert_eq!(site_patterns.len(), 1, "{site_patterns:?}");
    let pattern = site_patterns.pop_first().unwrap_or_default();
    let re = Regex::new(&pattern)?;
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    for id in [
        "site-1", "A.b:c_d", &long, "", &too_long, "a b", "a/b", "é", "site-1\n", "日本",
    ] {
        assert_eq!(
            re.is_match(id),
            SiteId::new(id).is_ok(),
            "{pattern} on {id:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_live_stream_is_an_event_stream_of_real_kinds() -> TestResult {
    let server = TestServer::sqlite().await?;
    let doc = document(&server).await?;
    let stream = &doc["paths"]["/api/v1/sites/{site}/stream"]["get"];
    let content = stream["responses"]["200"]["content"]
        .as_object()
        .ok_or("no stream content")?;
    let types: Vec<&String> = content.keys().collect();
    assert_eq!(types, ["text/event-stream"]);
    // Its schema is one event's: the sequence number (absent on the last, `closed` event), the
    // name, the event's JSON (or the error that closed the stream).
    let event = resolve(&doc, &content["text/event-stream"]["schema"]);
    assert_eq!(event["required"], json!(["event", "data"]), "{event}");
    assert_eq!(
        event["properties"]["event"]["enum"],
        json!(["event", "closed"])
    );

    // The `kind` filter, on the feed and the stream: exactly the real kinds, and the kinds its
    // description names as examples are real ones.
    for path in ["/api/v1/sites/{site}/events", "/api/v1/sites/{site}/stream"] {
        let parameters = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .ok_or("no parameters")?;
        let kind = parameters
            .iter()
            .find(|p| p["name"] == "kind")
            .ok_or("no kind parameter")?;
        let kinds = kind["schema"]["anyOf"][0]["enum"]
            .as_array()
            .ok_or("the kind parameter lists no kinds")?;
        assert_eq!(kinds, &EventBody::KINDS.map(Value::from).to_vec(), "{path}");
        let description = kind["description"].as_str().unwrap_or("");
        let named: Vec<&str> = description.split('`').skip(1).step_by(2).collect();
        assert!(!named.is_empty(), "{path}: {description}");
        for example in named {
            assert!(
                EventBody::KINDS.contains(&example),
                "{path}: the example kind {example:?} is not a kind"
            );
        }
    }
    Ok(())
}

/// Every schema reachable from `schema` (through references, properties, items and the
/// combinators), with where it is.
fn walk<'a>(doc: &'a Value, schema: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    if out.len() > 10_000 {
        return;
    }
    let schema = resolve(doc, schema);
    out.push((at.clone(), schema));
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            walk(doc, property, format!("{at}.{name}"), out);
        }
    }
    if schema["items"].is_object() {
        walk(doc, &schema["items"], format!("{at}[]"), out);
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for (i, part) in schema[combinator]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(doc, part, format!("{at}/{combinator}{i}"), out);
        }
    }
}

#[tokio::test]
async fn every_integer_input_states_the_range_the_server_reads() -> TestResult {
    let server = TestServer::sqlite().await?;
    let doc = document(&server).await?;
    let mut integers = 0;
    for (here, op) in each_operation(&doc) {
        let mut schemas = Vec::new();
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or("?");
            walk(&doc, &p["schema"], format!("{here} {name}"), &mut schemas);
        }
        for (media, content) in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            walk(
                &doc,
                &content["schema"],
                format!("{here} {media}"),
                &mut schemas,
            );
        }
        for (at, schema) in schemas {
            let is_integer = schema["type"] == "integer"
                || schema["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("integer")));
            if !is_integer {
                continue;
            }
            integers += 1;
            // A fuzzer reads `int32`/`int64` as the signed ranges: an input the server reads
            // as unsigned and wider says so, with its upper bound.
            let format = schema["format"].as_str().unwrap_or("");
            assert!(
                ["int32", "int64", "uint32", "uint64"].contains(&format),
                "{at}: integer format {format:?}"
            );
            assert!(
                !format.starts_with("uint") || schema["maximum"].is_number(),
                "{at}: {format} without a maximum: {schema}"
            );
            assert!(
                schema["minimum"].is_number() || format == "int64",
                "{at}: no minimum: {schema}"
            );
        }
    }
    assert!(integers >= 5, "only {integers} integer inputs found");
    let after = doc["paths"]["/api/v1/sites/{site}/events"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "after"))
        .ok_or("no after parameter")?;
    assert_eq!(after["schema"]["anyOf"][0]["format"], "uint64");
    assert_eq!(after["schema"]["anyOf"][0]["maximum"], json!(u64::MAX));

    // The bounds the attributes spell out are the server's constants.
    let schemas = &doc["components"]["schemas"];
    let query = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map_or(Value::Null, |p| p["schema"]["anyOf"][0].clone())
    };
    let bounds = [
        (
            schemas["NewCodeBody"]["properties"]["ttl_secs"]["maximum"].clone(),
            json!(patrol_server::config::MAX_ENROLLMENT_CODE_TTL_SECS),
        ),
        (
            query("/api/v1/sites/{site}/events", "limit")["maximum"].clone(),
            json!(patrol_server::http::feed::MAX_FEED_LIMIT),
        ),
        (
            query("/api/v1/sites/{site}/incidents", "limit")["maximum"].clone(),
            json!(patrol_server::http::incidents::MAX_INCIDENT_LIMIT),
        ),
        (
            schemas["Checkpoint"]["properties"]["name"]["maxLength"].clone(),
            json!(patrol_core::event::MAX_TEXT_LEN),
        ),
    ];
    for (documented, constant) in bounds {
        assert_eq!(documented, constant);
    }
    Ok(())
}

/// What the fuzzer found, each now as the document says: the request, the status the server
/// answers, and that the document lists that status for the operation.
#[tokio::test]
async fn the_answers_the_fuzzer_found_are_documented() -> TestResult {
    let server = TestServer::sqlite().await?;
    let doc = document(&server).await?;
    let site = format!("/api/v1/sites/{SITE}");
    let cases: [(&str, String, &str, Option<Value>, StatusCode); 7] = [
        // A user over a site that does not exist.
        (
            "POST",
            "/api/v1/users".into(),
            "/api/v1/users",
            Some(json!({"name": "op-1", "role": "operator", "sites": ["nowhere"]})),
            StatusCode::NOT_FOUND,
        ),
        // JSON numbers are read by value: 600.0 is the integer 600, 600.5 is no integer.
        (
            "POST",
            format!("{site}/enrollment-codes"),
            "/api/v1/sites/{site}/enrollment-codes",
            Some(json!({"ttl_secs": 600.0})),
            StatusCode::CREATED,
        ),
        (
            "POST",
            format!("{site}/enrollment-codes"),
            "/api/v1/sites/{site}/enrollment-codes",
            Some(json!({"ttl_secs": 600.5})),
            StatusCode::BAD_REQUEST,
        ),
        // A query parameter given empty is as if absent.
        (
            "GET",
            format!("{site}/events?to=&kind=&limit="),
            "/api/v1/sites/{site}/events",
            None,
            StatusCode::OK,
        ),
        // A cursor past every sequence number is still a cursor.
        (
            "GET",
            format!("{site}/events?after={}", u64::MAX),
            "/api/v1/sites/{site}/events",
            None,
            StatusCode::OK,
        ),
        (
            "GET",
            format!("{site}/events?after=18446744073709551616"),
            "/api/v1/sites/{site}/events",
            None,
            StatusCode::BAD_REQUEST,
        ),
        // The body of an enrollment code may be left out, but is not `null`.
        (
            "POST",
            format!("{site}/enrollment-codes"),
            "/api/v1/sites/{site}/enrollment-codes",
            Some(Value::Null),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, uri, path, body, expected) in cases {
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", format!("Bearer {}", server.admin));
        let body = match body {
            Some(body) => {
                req = req.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let (status, _, answer) = server.call(req.body(body)?).await?;
        let here = format!("{method} {uri}");
        assert_eq!(
            status,
            expected,
            "{here}: {}",
            String::from_utf8_lossy(&answer)
        );
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(
            op["responses"][status.as_str()].is_object(),
            "{here}: answered {status}, which the document does not list"
        );
    }
    // The empty body it may be.
    let codes = &doc["paths"]["/api/v1/sites/{site}/enrollment-codes"]["post"];
    assert_eq!(codes["requestBody"]["required"], false);
    let schema = &codes["requestBody"]["content"]["application/json"]["schema"];
    assert!(
        schema["oneOf"].is_null(),
        "a null body is refused: {schema}"
    );
    // Every query parameter admits the empty string.
    for (here, op) in each_operation(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] == "query" {
                assert_eq!(
                    p["schema"]["anyOf"][1],
                    json!({"type": "string", "maxLength": 0}),
                    "{here} {}",
                    p["name"]
                );
            }
        }
    }
    Ok(())
}

/// A site name is one line of text: the server refuses a control character (PostgreSQL's text
/// cannot hold NUL: it was a 500 there), and the document's pattern says the same.
async fn a_site_name_is_one_line_of_text(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let doc = document(&server).await?;
    let pattern = doc["components"]["schemas"]["SiteName"]["pattern"]
        .as_str()
        .ok_or("no site name pattern")?;
    let re = Regex::new(pattern)?;
    let names = [
        ("Mall B2", true),
        (" Café ", true),
        ("", false),
        ("   ", false),
        ("\u{3000}", false),
        ("a\u{0}b", false),
        ("Mall\nB2", false),
        ("tab\there", false),
        ("a\u{85}", false),
        ("bell\u{7}", false),
    ];
    for (i, (name, valid)) in names.into_iter().enumerate() {
        let (status, answer) = server
            .post_json(
                &server.admin,
                "/api/v1/sites",
                json!({"site_id": format!("site-n{i}"), "name": name}),
            )
            .await?;
        let expected = if valid {
            StatusCode::CREATED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, expected, "{name:?}: {answer}");
        assert_eq!(re.is_match(name), valid, "{pattern} on {name:?}");
    }
    Ok(())
}

crate::on_every_backend!(a_site_name_is_one_line_of_text);

/// The names of a documented object schema's properties.
fn properties(doc: &Value, schema: &Value) -> Result<BTreeSet<String>, Error> {
    Ok(resolve(doc, schema)["properties"]
        .as_object()
        .ok_or_else(|| format!("no properties in {schema}"))?
        .keys()
        .cloned()
        .collect())
}

/// The incident JSON the server serves has exactly the fields the document gives it, and every
/// history entry's fields are documented.
#[tokio::test]
async fn the_incident_json_is_documented_field_by_field() -> TestResult {
    use patrol_core::incident::{Entry, IncidentDoc, Party, Stamped};
    use patrol_core::merge::plan_incident_push;
    use patrol_core::{Hlc, IncidentCategory, IncidentId, Severity};

    let server = TestServer::new(Backend::sqlite()?).await?;
    let phone = server.phone("guard-1").await?;
    let (mut doc, _) = IncidentDoc::create(
        IncidentId::generate(),
        phone.device.actor_id(),
        Stamped {
            by: Party::Guard {
                device: phone.device,
                guard: phone.log.meta().guard.clone(),
            },
            at: Hlc {
                wall_ms: 1_740_866_400_000,
                counter: 0,
            },
            wall_ms: 1_740_866_400_000,
            entry: Entry::Reported {
                site: common::site(),
                category: IncidentCategory::Fire,
                severity: Severity::High,
                description: "smoke in plant room 2".into(),
                location: None,
            },
        },
    )?;
    server
        .sync(&phone.request(vec![plan_incident_push(&mut doc, &[])?]))
        .await?;
    let uri = format!("/api/v1/sites/{SITE}/incidents/{}/actions", doc.id());
    for action in [
        json!({"action": "acknowledge"}),
        json!({"action": "assign", "to": "guard-2"}),
        json!({"action": "set_severity", "severity": "critical"}),
        json!({"action": "add_note", "text": "brigade called"}),
    ] {
        let (status, _) = server.send_json("POST", &uri, &action).await?;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, incident) = server
        .get_json(&format!("/api/v1/sites/{SITE}/incidents/{}", doc.id()))
        .await?;
    assert_eq!(status, StatusCode::OK);

    let api = document(&server).await?;
    let state = &api["components"]["schemas"]["IncidentState"];
    let served: BTreeSet<String> = incident
        .as_object()
        .ok_or("not an object")?
        .keys()
        .cloned()
        .collect();
    assert_eq!(properties(&api, state)?, served);
    let entry = &state["properties"]["history"]["items"];
    let documented = properties(&api, entry)?;
    let history = incident["history"].as_array().ok_or("no history")?;
    assert_eq!(history.len(), 5);
    for h in history {
        for field in h.as_object().ok_or("not an object")?.keys() {
            assert!(
                documented.contains(field),
                "{field} of {h} is not documented"
            );
        }
        assert!(
            api["components"]["schemas"]["IncidentHistoryAction"]["enum"]
                .as_array()
                .is_some_and(|names| names.contains(&h["action"])),
            "{h}"
        );
    }
    let by = &state["properties"]["notes"]["items"];
    assert_eq!(
        properties(&api, by)?,
        ["at", "by", "text"].map(String::from).into()
    );
    Ok(())
}

/// The document's `EventFlag` lists every kind of flag the core has, each with exactly the
/// fields the core writes for it, and a feed event's `flags` are a list of them.
#[tokio::test]
async fn every_flag_is_documented_with_its_fields() -> TestResult {
    use patrol_core::flags::EventFlag;

    let server = TestServer::sqlite().await?;
    let doc = document(&server).await?;
    let schemas = &doc["components"]["schemas"];
    let variants = schemas["EventFlag"]["oneOf"]
        .as_array()
        .ok_or("EventFlag is not a oneOf")?;
    let mut documented = std::collections::BTreeMap::new();
    for variant in variants {
        let name = variant["properties"]["flag"]["enum"][0]
            .as_str()
            .ok_or_else(|| format!("a variant without its name: {variant}"))?;
        documented.insert(name.to_owned(), properties(&doc, variant)?);
    }
    let examples = EventFlag::examples();
    assert_eq!(
        documented
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        EventFlag::NAMES.iter().copied().collect::<BTreeSet<_>>()
    );
    assert_eq!(examples.len(), EventFlag::NAMES.len());
    for flag in examples {
        let fields: BTreeSet<String> = serde_json::to_value(&flag)?
            .as_object()
            .ok_or("a flag is not an object")?
            .keys()
            .cloned()
            .collect();
        assert_eq!(documented[flag.name()], fields, "{}", flag.name());
    }
    assert_eq!(
        schemas["FeedEvent"]["properties"]["flags"]["items"]["$ref"],
        "#/components/schemas/EventFlag"
    );
    assert_eq!(
        schemas["EventsPage"]["properties"]["events"]["items"]["$ref"],
        "#/components/schemas/FeedEvent"
    );
    Ok(())
}
