//! Web sessions: end every session of a person.

use actix_web::{HttpResponse, web};
use jit_domain::{FieldError, UserName};
use serde_json::{Value, json};

#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::{ErrorBody, RevokeSessionsRequest, RevokedDoc};
use super::{ApiError, ApiState, Caller, JsonBody};

/// `POST /api/v1/sessions/revoke {"user": …}`: ends every web session of a
/// person at once, on every replica (admin keys; the SOC and the person
/// themselves through an ID token). Audited.
#[utoipa::path(post, path = "/api/v1/sessions/revoke", tag = "sessions", request_body = RevokeSessionsRequest,
    responses((status = 200, description = "how many sessions ended", body = RevokedDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "a body not sent as application/json", body = ErrorBody), (status = 422, description = "a field breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn revoke_sessions(
    state: web::Data<ApiState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let obj = body.0.as_object().ok_or_else(|| {
        ApiError::Invalid(vec![FieldError::new(
            "",
            "type",
            "the body must be a JSON object",
        )])
    })?;
    if let Some(extra) = obj.keys().find(|k| k.as_str() != "user") {
        return Err(ApiError::Invalid(vec![FieldError::new(
            extra,
            "unknown_field",
            "only `user` is accepted",
        )]));
    }
    let user = obj
        .get("user")
        .and_then(Value::as_str)
        .ok_or_else(|| FieldError::new("user", "required", "name the person (their user name)"))
        .and_then(|u| UserName::parse(u).map_err(|e| FieldError::new("user", e.rule, e.message)))
        .map_err(|e| ApiError::Invalid(vec![e]))?;
    let ended = state.app.end_sessions(&caller.as_caller(), &user).await?;
    Ok(HttpResponse::Ok().json(json!({"user": user, "sessions_ended": ended})))
}
