//! Incidents, for the control room: `GET /api/v1/sites/{site}/incidents?status=<s>&limit=<n>`,
//! `GET .../incidents/{id}` and `POST .../incidents/{id}/actions`; a user covering the site. The
//! operator acting on an incident is the authenticated user (`auth::acting_operator`). Shapes are
//! documented in `docs/protocol.md`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use patrol_core::event::MAX_TEXT_LEN;
use patrol_core::incident::{IncidentAction, IncidentStatus};
use patrol_core::{GuardId, IncidentId, Severity};
use serde::{Deserialize, Deserializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::auth::{AuthUser, acting_operator};
use super::error::{AppError, ErrorBody};
use super::extract::{
    JSON, MAX_CONTROL_JSON_BODY_BYTES, SlugId, json_body, not_blank_schema, query_limit,
    query_params, site_and, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::{IncidentQuery, OperatorAction};

pub(super) fn routes() -> Vec<Endpoint> {
    use Verb::{Get, Post};
    let json = MAX_CONTROL_JSON_BODY_BYTES;
    vec![
        endpoint(Get, "/api/v1/sites/{site}/incidents", list_incidents, json),
        endpoint(
            Get,
            "/api/v1/sites/{site}/incidents/{incident}",
            get_incident,
            json,
        ),
        endpoint(
            Post,
            "/api/v1/sites/{site}/incidents/{incident}/actions",
            act_on_incident,
            json,
        ),
    ]
}

/// Incidents per list when `limit` is not given.
pub const DEFAULT_INCIDENT_LIMIT: u32 = 100;
/// Largest incident list.
pub const MAX_INCIDENT_LIMIT: u32 = 1_000;

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, JSON)], body).into_response()
}

/// Kept as text so that a bad value gets our message, not the extractor's. Any other parameter
/// is refused ([`query_params`]).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentParams {
    /// Only incidents in this status: open, acknowledged, dispatched, resolved or closed.
    #[param(value_type = Option<IncidentStatusDoc>, inline)]
    status: Option<String>,
    /// Incidents per list, 1 to 1000; 100 when absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// An incident's status.
// Documentation only: `IncidentStatus` parses it.
#[derive(Debug, ToSchema)]
#[schema(as = IncidentStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum IncidentStatusDoc {
    Open,
    Acknowledged,
    Dispatched,
    Resolved,
    Closed,
}

fn parse_status(s: &str) -> Result<IncidentStatus, AppError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        AppError::bad_request(
            "invalid_query",
            format!(
                "status must be one of open, acknowledged, dispatched, resolved, closed; got {s:?}"
            ),
        )
    })
}

fn parse_incident_params(params: IncidentParams) -> Result<IncidentQuery, AppError> {
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_status(s)?),
    };
    let limit = query_limit(&params.limit, DEFAULT_INCIDENT_LIMIT, MAX_INCIDENT_LIMIT)?;
    Ok(IncidentQuery {
        status,
        updated_since: None,
        limit,
    })
}

/// A list of incidents (documentation only: the handler writes it from the stored JSON text).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentList {
    site_id: String,
    incidents: Vec<IncidentState>,
    /// Whether more incidents match than were listed.
    more: bool,
}

// The incident JSON below is documentation only: `patrol_core::incident_view` writes it, and
// the OpenAPI test holds the two to the same fields.

/// An incident's state, folded from all its entries (docs/protocol.md, "Incidents").
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentState {
    #[schema(format = Uuid)]
    id: String,
    site: Option<String>,
    /// An incident category, as in the feed (`theft`, `fire`, ...).
    category: Option<String>,
    description: Option<String>,
    /// `{"lat", "lon", "accuracy_m"}` as in the feed, or `null`.
    #[schema(value_type = Option<Object>)]
    location: Option<serde_json::Value>,
    reported_by: Option<IncidentParty>,
    /// The reporting device's wall time (RFC 3339).
    reported_at: Option<String>,
    /// Reopenings so far (0 before the first).
    round: u32,
    status: IncidentStatusDoc,
    /// `low`, `medium`, `high` or `critical`.
    severity: Option<String>,
    assignee: Option<String>,
    /// The notes, in hybrid-clock order, then entry id.
    notes: Vec<IncidentNote>,
    /// By SHA-256; the bytes travel separately.
    attachments: Vec<IncidentAttachment>,
    /// Every entry of the incident (report, status changes, severity changes, assignments,
    /// notes, attachments) with who wrote it and when, in hybrid-clock order, then entry id:
    /// the same order on every phone and in the control room.
    history: Vec<IncidentHistoryEntry>,
    /// Server time of the last change the server stored (RFC 3339).
    updated_at: String,
}

/// Who wrote an entry: `{"kind": "guard", "guard", "device"}` or
/// `{"kind": "operator", "user"}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentParty {
    /// `guard` or `operator`.
    kind: String,
    /// A guard's id (`kind` `guard`).
    guard: Option<String>,
    /// The guard's device (`kind` `guard`).
    #[schema(format = Uuid)]
    device: Option<String>,
    /// The operator's user name (`kind` `operator`).
    user: Option<String>,
}

#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentNote {
    by: IncidentParty,
    /// The writer's wall time (RFC 3339).
    at: String,
    text: String,
}

#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentAttachment {
    /// SHA-256 of the file, lower-case hex.
    sha256: String,
    media_type: String,
    size: u64,
    name: Option<String>,
}

/// What a history entry did.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum IncidentHistoryAction {
    Reported,
    Status,
    Severity,
    Assigned,
    Note,
    Attachment,
}

/// One entry of an incident's history: who did what, when, and whether it took effect. The
/// fields beyond the first six are those of its `action`: `reported`: `category`, `severity`;
/// `status`: `round`, `status` (a reopen is `open` in a new round); `severity`: `severity`;
/// `assigned`: `to` (`null`: unassigned); `note`: `text`; `attachment`: `sha256`,
/// `media_type`, `size`, `name`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentHistoryEntry {
    /// The entry's id in the incident's document.
    id: String,
    by: IncidentParty,
    /// The writer's wall time (RFC 3339).
    at: String,
    action: IncidentHistoryAction,
    /// Whether it changed the incident when taken in history order: a status change that lost
    /// to a further one (an old round's close after a reopen, a second acknowledge) or an
    /// attachment already attached did not; it still happened, and is listed.
    took_effect: bool,
    /// The same in words, e.g. `acknowledged`, `reopened (round 1)`, `assigned to guard-4`,
    /// `note: ...`, with ` (no effect)` after an entry that did not take effect.
    what: String,
    category: Option<String>,
    severity: Option<String>,
    round: Option<u32>,
    status: Option<IncidentStatusDoc>,
    /// The assignee (`assigned`; `null` when unassigned).
    to: Option<String>,
    text: Option<String>,
    sha256: Option<String>,
    media_type: Option<String>,
    size: Option<u64>,
    name: Option<String>,
}

/// `GET /api/v1/sites/{site}/incidents?status=<status>&limit=<n>`:
/// `{"site_id":..,"incidents":[<state>..],"more":bool}`, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/incidents",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        IncidentParams,
    ),
    responses(
        (status = 200, description = "The site's incidents, newest first", body = IncidentList),
        (status = 400, description = "`invalid_query` (a bad, unknown or repeated query parameter), `invalid_site_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn list_incidents(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<IncidentParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    let query = parse_incident_params(params)?;
    let list = state.store.incidents(site.clone(), query).await?;
    // Assembled from the stored JSON text, as the feed is.
    let site_json = serde_json::to_string(site.as_str()).map_err(AppError::internal)?;
    let size: usize = list.incidents.iter().map(|s| s.len() + 1).sum();
    let mut body = String::with_capacity(size + site_json.len() + 48);
    body.push_str("{\"site_id\":");
    body.push_str(&site_json);
    body.push_str(",\"incidents\":[");
    for (i, incident) in list.incidents.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(incident);
    }
    // Writing to a String cannot fail.
    let _ = write!(body, "],\"more\":{}}}", list.more);
    Ok(json_text(body))
}

/// `GET /api/v1/sites/{site}/incidents/{id}`: the incident's state.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/incidents/{incident}",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("incident" = String, Path, format = Uuid, description = "Incident id (UUID)"),
    ),
    responses(
        (status = 200, description = "The incident's state", body = IncidentState),
        (status = 400, description = "`invalid_site_id`, `invalid_incident_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_incident`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn get_incident(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AppError> {
    let (site, incident) = site_and::<IncidentId>(path, "invalid_incident_id", "incident id")?;
    user.can_read(&site)?;
    Ok(json_text(state.store.incident(site, incident).await?))
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The body of an incident action (documented as [`ActionDoc`]: each action with its field).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// acknowledge, dispatch, resolve, close, reopen, assign, set_severity or add_note.
    action: String,
    /// For `assign`: a guard id, or `null` to unassign.
    #[serde(default, deserialize_with = "present")]
    to: Option<Option<String>>,
    /// For `set_severity`.
    severity: Option<String>,
    /// For `add_note`.
    text: Option<String>,
    /// The acting operator; if given, must be the authenticated user's name.
    by: Option<String>,
}

// The body of an incident action as `parse_action` accepts it, for the document: each action
// with the one field it takes, if any; `severity` and `text` may still be `null` in an action
// that does not take them (they are then not given), `to` may not. Documentation only.
#[derive(Debug)]
pub struct ActionDoc;

/// Each action and the field it takes, as [`parse_action`] reads them.
const ACTION_FIELDS: [(&str, Option<&str>); 8] = [
    ("acknowledge", None),
    ("dispatch", None),
    ("resolve", None),
    ("close", None),
    ("reopen", None),
    ("assign", Some("to")),
    ("set_severity", Some("severity")),
    ("add_note", Some("text")),
];

impl PartialSchema for ActionDoc {
    fn schema() -> RefOr<Schema> {
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let field = |name: &str| -> RefOr<Schema> {
            match name {
                "to" => OneOfBuilder::new()
                    .item(null())
                    .item(SlugId::schema())
                    .description(Some("A guard id, or `null` to unassign"))
                    .into(),
                "severity" => SeverityDoc::schema(),
                _ => NoteText::schema(),
            }
        };
        let mut one_of = OneOfBuilder::new();
        for (action, takes) in ACTION_FIELDS {
            let mut object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "action",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([action])),
                )
                .required("action")
                .property(
                    "by",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                        .description(Some(
                            "The acting operator; if given, must be the authenticated user's name",
                        )),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if let Some(name) = takes {
                object = object.property(name, field(name)).required(name);
            }
            for name in ["severity", "text"] {
                if takes != Some(name) {
                    object = object.property(name, null());
                }
            }
            one_of = one_of.item(object);
        }
        one_of
            .description(Some(
                "An action on an incident, with the one field it takes, if any",
            ))
            .into()
    }
}

impl ToSchema for ActionDoc {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("IncidentAction")
    }
}

// A note's text, as the incident's rules accept it. Documentation only.
#[derive(Debug)]
pub struct NoteText;

impl PartialSchema for NoteText {
    fn schema() -> RefOr<Schema> {
        not_blank_schema(
            &format!("A note: 1 to {MAX_TEXT_LEN} bytes, not blank"),
            MAX_TEXT_LEN,
        )
    }
}

/// An incident's severity.
// Documentation only: `Severity` parses it.
#[derive(Debug, ToSchema)]
#[schema(as = Severity)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SeverityDoc {
    Low,
    Medium,
    High,
    Critical,
}

const ACTIONS: &str =
    "acknowledge, dispatch, resolve, close, reopen, assign, set_severity, add_note";

/// The core's action a body asks for. A field the action does not use is refused rather than
/// ignored: it is most likely a mistake.
fn parse_action(body: &ActionBody) -> Result<IncidentAction, AppError> {
    let bad = |message: String| AppError::bad_request("invalid_action", message);
    let name = body.action.as_str();
    let fields = [
        ("to", body.to.is_some()),
        ("severity", body.severity.is_some()),
        ("text", body.text.is_some()),
    ];
    let uses = match name {
        "acknowledge" | "dispatch" | "resolve" | "close" | "reopen" => "",
        "assign" => "to",
        "set_severity" => "severity",
        "add_note" => "text",
        other => {
            return Err(bad(format!("unknown action {other:?}; one of {ACTIONS}")));
        }
    };
    if let Some((field, _)) = fields.iter().find(|(f, given)| *given && *f != uses) {
        return Err(bad(format!("{name} does not take \"{field}\"")));
    }
    Ok(match name {
        "acknowledge" => IncidentAction::Acknowledge,
        "dispatch" => IncidentAction::Dispatch,
        "resolve" => IncidentAction::Resolve,
        "close" => IncidentAction::Close,
        "reopen" => IncidentAction::Reopen,
        "assign" => match &body.to {
            None => {
                return Err(bad(
                    "assign needs \"to\": a guard id, or null to unassign".into()
                ));
            }
            Some(None) => IncidentAction::Assign(None),
            // A guard id, so that the assignee's phone can be found at its sync.
            Some(Some(to)) => IncidentAction::Assign(Some(
                GuardId::new(to.as_str())
                    .map_err(|e| bad(format!("\"to\" must be a guard id: {e}")))?
                    .to_string(),
            )),
        },
        "set_severity" => {
            let severity = body
                .severity
                .as_deref()
                .ok_or_else(|| bad("set_severity needs \"severity\"".into()))?;
            IncidentAction::SetSeverity(Severity::from_str(severity).map_err(|_| {
                bad(format!(
                    "severity must be one of low, medium, high, critical; got {severity:?}"
                ))
            })?)
        }
        _ => IncidentAction::AddNote(
            body.text
                .clone()
                .ok_or_else(|| bad("add_note needs \"text\"".into()))?,
        ),
    })
}

/// `POST /api/v1/sites/{site}/incidents/{id}/actions`: applies the action and answers the new
/// state; 409 `action_not_allowed` if the status rules refuse it.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/incidents/{incident}/actions",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("incident" = String, Path, format = Uuid, description = "Incident id (UUID)"),
    ),
    request_body(content = ActionDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The incident's new state", body = IncidentState),
        (status = 400, description = "`invalid_json`, `invalid_action`, `invalid_operator`, `invalid_site_id`, `invalid_incident_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover the site, or `by` names someone else", body = ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_incident`", body = ErrorBody),
        (status = 409, description = "`action_not_allowed`: the status rules refuse the action", body = ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn act_on_incident(
    operator: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (site, incident) = site_and::<IncidentId>(path, "invalid_incident_id", "incident id")?;
    operator.can_read(&site)?;
    let body: ActionBody = json_body(&headers, body)?;
    let action = parse_action(&body)?;
    let user = acting_operator(&operator, body.by)?;
    let new_state = state
        .store
        .act_on_incident(OperatorAction {
            site,
            incident,
            user,
            action,
            at_ms: now_ms(),
        })
        .await?;
    Ok(json_text(new_state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> ActionBody {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn actions_parse_and_refuse_what_they_do_not_use() {
        use serde_json::json;
        assert_eq!(
            parse_action(&body(json!({"action": "acknowledge", "by": "a"}))).ok(),
            Some(IncidentAction::Acknowledge)
        );
        assert_eq!(
            parse_action(&body(json!({"action": "assign", "to": "guard-2"}))).ok(),
            Some(IncidentAction::Assign(Some("guard-2".into())))
        );
        assert_eq!(
            parse_action(&body(json!({"action": "assign", "to": null}))).ok(),
            Some(IncidentAction::Assign(None))
        );
        assert_eq!(
            parse_action(&body(
                json!({"action": "set_severity", "severity": "critical"})
            ))
            .ok(),
            Some(IncidentAction::SetSeverity(Severity::Critical))
        );
        for bad in [
            json!({"action": "fly"}),
            json!({"action": "assign"}),
            json!({"action": "assign", "to": "guard 2"}),
            json!({"action": "acknowledge", "text": "x"}),
            json!({"action": "set_severity", "severity": "huge"}),
            json!({"action": "add_note"}),
            json!({"action": "add_note", "text": "x", "to": null}),
        ] {
            assert!(
                matches!(
                    parse_action(&body(bad.clone())),
                    Err(AppError::BadRequest {
                        code: "invalid_action",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(
            serde_json::from_value::<ActionBody>(json!({"action": "close", "note": 1})).is_err()
        );
    }

    /// The document's table of actions is the parser's: each action with its field parses, with
    /// any other field it is refused, and a `null` `severity` or `text` is not a field given.
    #[test]
    fn the_documented_actions_are_those_parsed() {
        use serde_json::{Value, json};
        let sample = |field: &str| match field {
            "to" => json!("guard-2"),
            "severity" => json!("high"),
            _ => json!("a note"),
        };
        for (action, takes) in ACTION_FIELDS {
            let mut ok = json!({"action": action, "by": "op"});
            if let Some(field) = takes {
                ok[field] = sample(field);
            }
            assert!(parse_action(&body(ok.clone())).is_ok(), "{ok}");
            for field in ["to", "severity", "text"] {
                if takes == Some(field) {
                    continue;
                }
                let mut extra = ok.clone();
                extra[field] = sample(field);
                assert!(parse_action(&body(extra.clone())).is_err(), "{extra}");
                extra[field] = Value::Null;
                assert_eq!(
                    parse_action(&body(extra.clone())).is_ok(),
                    field != "to",
                    "{extra}"
                );
            }
        }
        let parsed: Vec<&str> = ACTIONS.split(", ").collect();
        let documented: Vec<&str> = ACTION_FIELDS.iter().map(|(a, _)| *a).collect();
        assert_eq!(parsed, documented);
    }

    #[test]
    fn incident_params_default_and_reject_bad_values() {
        let p = |status: Option<&str>, limit: Option<&str>| IncidentParams {
            status: status.map(Into::into),
            limit: limit.map(Into::into),
        };
        let q = parse_incident_params(p(Some("closed"), None)).ok();
        assert_eq!(
            q.map(|q| (q.status, q.limit)),
            Some((Some(IncidentStatus::Closed), DEFAULT_INCIDENT_LIMIT))
        );
        for (s, l) in [
            (Some("gone"), None),
            (None, Some("0")),
            (None, Some("1001")),
        ] {
            assert!(parse_incident_params(p(s, l)).is_err(), "{s:?} {l:?}");
        }
    }
}
