//! The audit log, page by page.

use actix_web::{HttpRequest, HttpResponse, web};
use jit_domain::FieldError;
use serde::Deserialize;
use serde_json::json;

use super::body::{page_limit, parse_id, query};
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::{AuditPageDoc, ErrorBody};
use super::{ApiError, ApiState, Caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// RFC 3339: events at or after it.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339: events before it.
    until: Option<chrono::DateTime<chrono::Utc>>,
    grant: Option<String>,
    user: Option<String>,
    /// The `next_cursor` of the page before (a `seq`).
    cursor: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/v1/audit?since=&until=&grant=&user=&cursor=&limit=`: the audit
/// log page by page, as `jit-broker audit export` writes it (admin keys).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("since" = Option<String>, Query, description = "RFC 3339", format = DateTime), ("until" = Option<String>, Query, description = "RFC 3339", format = DateTime), ("grant" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), ("user" = Option<String>, Query),
           ("cursor" = Option<i64>, Query, description = "next_cursor of the page before", minimum = 0), ("limit" = Option<u32>, Query, minimum = 1, maximum = 200)),
    responses((status = 200, description = "events with seq, prev_hash, hash", body = AuditPageDoc), (status = 422, description = "a parameter breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn audit_events(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.admin()?;
    let q: AuditQuery = query(&req)?;
    let grant = q.grant.as_deref().map(parse_id).transpose()?;
    if q.cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "cursor",
            "range",
            "must be a next_cursor from an earlier page (0 or more)",
        )]));
    }
    let filter = jit_app::AuditFilter {
        since: q.since,
        until: q.until,
        grant,
        user: q.user,
    };
    let page = state
        .app
        .audit_page(&filter, q.cursor.unwrap_or(0), page_limit(q.limit, 100)?)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"items": page.events, "next_cursor": page.next_cursor})))
}
