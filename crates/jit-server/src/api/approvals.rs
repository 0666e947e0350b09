//! Approvals: a person's answer to what waits on a grant, and what waits
//! for them.

use actix_web::{HttpResponse, web};
use jit_domain::{FieldError, GrantState, Verdict};
use serde_json::{Value, json};

use super::body::parse_id;
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::{ErrorBody, GrantDoc, Page, ReviewRequest};
use super::{ApiError, ApiState, Caller, JsonBody};

/// `{"comment": "…"}`, or no body at all when approving.
fn review_comment(body: Option<&Value>) -> Result<String, ApiError> {
    let Some(body) = body else {
        return Ok(String::new());
    };
    let obj = body.as_object().ok_or_else(|| {
        ApiError::Invalid(vec![FieldError::new("", "object", "must be a JSON object")])
    })?;
    if let Some(extra) = obj.keys().find(|k| k.as_str() != "comment") {
        return Err(ApiError::Invalid(vec![FieldError::new(
            extra,
            "unknown_field",
            "only `comment` is accepted",
        )]));
    }
    match obj.get("comment") {
        None => Ok(String::new()),
        Some(Value::String(c)) => Ok(c.clone()),
        Some(_) => Err(ApiError::Invalid(vec![FieldError::new(
            "comment",
            "type",
            "must be a string",
        )])),
    }
}

async fn review(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: Result<JsonBody, ApiError>,
    verdict: Verdict,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    // No body is no comment; a body that is not JSON is refused.
    let body = match body {
        Ok(b) => Some(b.0),
        Err(ApiError::EmptyBody) => None,
        Err(e) => return Err(e),
    };
    let comment = review_comment(body.as_ref())?;
    let grant = state
        .app
        .answer(&caller.as_caller(), id, verdict, &comment)
        .await?;
    if grant.state == GrantState::Approved {
        state.worker_wake.notify_one();
    }
    Ok(HttpResponse::Ok().json(&grant))
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/approve", tag = "approvals", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body(content = ReviewRequest, description = "optional"),
    responses((status = 200, description = "the grant after the answer", body = GrantDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "a body not sent as application/json", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "answered twice, not pending or lapsed", body = ErrorBody), (status = 422, description = "a field breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn approve_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    review(state, caller, id, body, Verdict::Approve).await
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/deny", tag = "approvals", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ReviewRequest,
    responses((status = 200, description = "denied", body = GrantDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "a body not sent as application/json", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "answered twice, not pending or lapsed", body = ErrorBody), (status = 422, description = "a comment is required", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn deny_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    review(state, caller, id, body, Verdict::Deny).await
}

/// Requests waiting for the calling person's answer.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    responses((status = 200, description = "requests waiting for the caller's answer", body = Page), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn my_approvals(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    // Only a person has requests waiting for them: the use case says so.
    let items = state.app.awaiting_answer_by(&caller.as_caller()).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
