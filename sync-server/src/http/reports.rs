//! `GET /api/v1/sites/{site}/reports/dar?date=YYYY-MM-DD&format=csv|pdf[&shift=ID]`: the daily
//! activity report of a site's local day (or of one shift's part of it), as CSV or PDF
//! ([`crate::report`]); a user covering the site (its operators, and administrators).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use patrol_core::ShiftId;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_JSON_BODY_BYTES, SlugId, query_params, query_value, site_from_path};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::report::{self, DarRequest, ReportError};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![endpoint(
        Verb::Get,
        "/api/v1/sites/{site}/reports/dar",
        daily_activity_report,
        MAX_JSON_BODY_BYTES,
    )]
}

/// The media type of each format.
pub const CSV_TYPE: &str = "text/csv; charset=utf-8";
pub const PDF_TYPE: &str = "application/pdf";

/// Kept as text so that a bad value gets our message. Any other parameter is refused.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DarParams {
    /// The local date in the site's time zone, `YYYY-MM-DD`.
    #[param(value_type = String, format = Date, required = true)]
    date: Option<String>,
    /// `csv` or `pdf`.
    #[param(value_type = String, pattern = "^(csv|pdf)$", required = true)]
    format: Option<String>,
    /// Only this shift's part of the day (shift id, UUID).
    #[param(format = Uuid)]
    shift: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Pdf,
}

fn invalid(message: String) -> AppError {
    AppError::bad_request("invalid_query", message)
}

fn parse_params(params: &DarParams) -> Result<(NaiveDate, Format, Option<ShiftId>), AppError> {
    let date = match query_value(&params.date) {
        None => {
            return Err(invalid(
                "date is required: the local date, YYYY-MM-DD".into(),
            ));
        }
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| invalid(format!("date must be a date written YYYY-MM-DD, got {d:?}")))?,
    };
    let format = match query_value(&params.format) {
        Some("csv") => Format::Csv,
        Some("pdf") => Format::Pdf,
        Some(other) => return Err(invalid(format!("format must be csv or pdf, got {other:?}"))),
        None => return Err(invalid("format is required: csv or pdf".into())),
    };
    let shift = query_value(&params.shift)
        .map(|s| {
            s.parse::<ShiftId>()
                .map_err(|e| invalid(format!("shift must be a shift id (UUID): {e}")))
        })
        .transpose()?;
    Ok((date, format, shift))
}

impl From<ReportError> for AppError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::UnknownSite(site) => AppError::UnknownSite(site.to_string()),
            ReportError::UnknownShift { site, shift } => AppError::UnknownShift {
                site: site.to_string(),
                shift: shift.to_string(),
            },
            ReportError::DateOutOfRange(_) => invalid(e.to_string()),
            ReportError::Store(e) => e.into(),
            ReportError::Schedule(_) | ReportError::Corrupt(_) => AppError::internal(e),
        }
    }
}

/// The daily activity report: guards on duty, tour windows with their checkpoints' statuses,
/// incidents with their history, panic alarms with their acknowledgements, notes and flagged
/// events of the site's local day (`docs/reports.md`). A day that is over (with the grace of its
/// windows) gives the same bytes for the same record.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/reports/dar",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        DarParams,
    ),
    responses(
        (status = 200, description = "The report, as an attachment (`Content-Disposition`) named `dar-<site>-<date>[-<shift>].<format>`",
            content(
                (String = "text/csv; charset=utf-8"),
                (Vec<u8> = "application/pdf"),
            ),
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"dar-site-1-2025-03-01.pdf\"`"))),
        (status = 400, description = "A missing or bad date, format or shift, an unknown or repeated query parameter, or a bad site id (`invalid_query`, `invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`, or `unknown_shift`: no log of the shift has reached the server", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn daily_activity_report(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DarParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let (date, format, shift) = parse_params(&query_params(query)?)?;
    let dar = report::build(
        state.store.as_ref(),
        DarRequest {
            site: site.clone(),
            date,
            shift,
            now_ms: crate::now_ms(),
        },
    )
    .await?;
    // Laying out and compressing a large day is CPU work.
    let (bytes, media_type, ext) = tokio::task::spawn_blocking(move || match format {
        Format::Csv => report::csv::render(&dar)
            .map(|b| (b, CSV_TYPE, "csv"))
            .map_err(AppError::internal),
        Format::Pdf => report::pdf::render(&dar)
            .map(|b| (b, PDF_TYPE, "pdf"))
            .map_err(AppError::internal),
    })
    .await
    .map_err(AppError::internal)??;
    // Site ids are slugs and shift ids UUIDs: the name needs no quoting beyond its quotes.
    let name = match shift {
        Some(shift) => format!("dar-{site}-{date}-{shift}.{ext}"),
        None => format!("dar-{site}-{date}.{ext}"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, media_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(date: Option<&str>, format: Option<&str>, shift: Option<&str>) -> DarParams {
        DarParams {
            date: date.map(str::to_owned),
            format: format.map(str::to_owned),
            shift: shift.map(str::to_owned),
        }
    }

    #[test]
    fn the_date_and_format_are_checked() {
        assert!(matches!(
            parse_params(&params(Some("2025-03-01"), Some("pdf"), None)),
            Ok((_, Format::Pdf, None))
        ));
        for (date, format, shift) in [
            (None, Some("pdf"), None),
            (Some("2025-02-30"), Some("pdf"), None),
            (Some("01/03/2025"), Some("csv"), None),
            (Some("2025-03-01"), Some("xlsx"), None),
            (Some("2025-03-01"), None, None),
            (Some("2025-03-01"), Some("csv"), Some("night")),
        ] {
            let result = parse_params(&params(date, format, shift));
            assert!(
                matches!(
                    result,
                    Err(AppError::BadRequest {
                        code: "invalid_query",
                        ..
                    })
                ),
                "{date:?} {format:?} {shift:?}"
            );
        }
    }
}
