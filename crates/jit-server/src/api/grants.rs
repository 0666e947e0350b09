//! Grants: request, read, list, drop, extend.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use jit_app::{Extended, GrantFilter};
use jit_domain::{FieldError, Grant, GrantId, GrantState, TicketId, UserName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{MAX_PAGE, parse_id};
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::{
    ActivityDoc, ErrorBody, ExtendRequest, ExtensionRequestedDoc, GrantDoc, GrantRequest, Page,
};
use super::{ApiError, ApiState, Caller, JsonBody};

#[utoipa::path(post, path = "/api/v1/grants", tag = "grants", request_body = GrantRequest,
    responses((status = 201, description = "granted, or waiting for approval", body = GrantDoc),
              (status = 400, description = "not JSON", body = ErrorBody),
              (status = 403, description = "denied by the policy: every clause in `reasons`", body = ErrorBody),
              (status = 401, description = "no or bad credentials", body = ErrorBody),
              (status = 409, description = "a conflicting grant", body = ErrorBody),
              (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "a body not sent as application/json", body = ErrorBody),
              (status = 429, description = "this caller asked too often: `Retry-After` says when to ask again", body = ErrorBody),
              (status = 422, description = "a field breaks a rule", body = ErrorBody),
              (status = 503, description = "ServiceNow could not be asked", body = ErrorBody)))]
pub(crate) async fn create_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = state
        .app
        .request_grant_by(&caller.as_caller(), "api", &body.command("type")?)
        .await?;
    if grant.starts_at <= state.app.now() {
        state.worker_wake.notify_one();
    }
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/grants/{}", grant.id)))
        .json(&grant))
}

/// `{"until": RFC 3339}` or `{"by": "30m"}`. A person extends only their own
/// grant; an API key (automation) any.
#[utoipa::path(post, path = "/api/v1/grants/{id}/extend", tag = "grants", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ExtendRequest,
    responses((status = 200, description = "extended", body = GrantDoc), (status = 202, description = "the role needs approval to extend: a request waits for its approvers; the end is unchanged", body = ExtensionRequestedDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "a body not sent as application/json", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "not active", body = ErrorBody), (status = 422, description = "past max_duration or the change window", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn extend_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match state
        .app
        .extend_grant(&caller.as_caller(), id, &body.command("object")?)
        .await?
    {
        Extended::Moved { grant } => Ok(HttpResponse::Ok().json(&grant)),
        // The end stays until the role's approvers agree.
        Extended::Requested { grant, extension } => {
            Ok(HttpResponse::Accepted().json(json!({"grant": grant, "extension": extension})))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/grants/{id}", tag = "grants", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, description = "the grant", body = GrantDoc), (status = 404, description = "no such grant", body = ErrorBody), (status = 422, description = "not a grant id", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn get_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = state
        .app
        .view_grant(&caller.as_caller(), parse_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(&grant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user: Option<String>,
    state: Option<String>,
    ticket: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/grants", tag = "grants",
    params(("user" = Option<String>, Query, description = "an engineer"), ("state" = Option<String>, Query, description = "pending_approval, approved, active, ended, denied or cancelled"),
           ("ticket" = Option<String>, Query, description = "CHG and 7 digits", pattern = "^CHG[0-9]{7,12}$"), ("limit" = Option<u32>, Query, description = "1 to 200, default 50", minimum = 1, maximum = 200),
           ("cursor" = Option<String>, Query, description = "next_cursor of the page before")),
    responses((status = 200, description = "newest first", body = Page), (status = 422, description = "a parameter breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn list_grants(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| {
            ApiError::Invalid(vec![FieldError::new(
                "query",
                "unknown_field",
                e.to_string(),
            )])
        })?
        .into_inner();
    let mut errors = Vec::new();
    let mut field = |name: &str, rule: &'static str, message: String| {
        errors.push(FieldError::new(name, rule, message))
    };
    let user = query.user.as_deref().and_then(|u| {
        UserName::parse(u)
            .map_err(|e| field("user", e.rule, e.message))
            .ok()
    });
    let ticket = query.ticket.as_deref().and_then(|t| {
        TicketId::parse(t)
            .map_err(|e| field("ticket", e.rule, e.message))
            .ok()
    });
    let grant_state = query.state.as_deref().and_then(|s| {
        s.parse::<GrantState>()
            .map_err(|_| {
                let names: Vec<&str> = GrantState::ALL.iter().map(|s| s.as_str()).collect();
                field(
                    "state",
                    "one_of",
                    format!("must be one of {}", names.join(", ")),
                )
            })
            .ok()
    });
    let before = query.cursor.as_deref().and_then(|c| {
        c.parse::<GrantId>()
            .map_err(|_| {
                field(
                    "cursor",
                    "format",
                    "must be a next_cursor from an earlier page".into(),
                )
            })
            .ok()
    });
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        field(
            "limit",
            "range",
            format!("must be between 1 and {MAX_PAGE}"),
        );
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let filter = GrantFilter {
        user,
        state: grant_state,
        ticket,
        before,
        limit,
        ..GrantFilter::default()
    };
    // A person (not in the SOC) lists their own grants only.
    let items: Vec<Grant> = state.app.list_grants(&caller.as_caller(), filter).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|g| g.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next_cursor})))
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/drop", tag = "grants", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, description = "ended; the role is removed", body = GrantDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 415, description = "a body not sent as application/json", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "already ended", body = ErrorBody), (status = 422, description = "not a grant id", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn drop_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let reason = match body.0.as_object() {
        Some(obj) => {
            if let Some(extra) = obj.keys().find(|k| k.as_str() != "reason") {
                return Err(ApiError::Invalid(vec![FieldError::new(
                    extra,
                    "unknown_field",
                    "only `reason` is accepted",
                )]));
            }
            obj.get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        }
        None => {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "",
                "type",
                "the body must be a JSON object",
            )]));
        }
    };
    let grant = state
        .app
        .drop_grant(&caller.as_caller(), id, &reason)
        .await?;
    state.worker_wake.notify_one();
    Ok(HttpResponse::Ok().json(&grant))
}

#[utoipa::path(get, path = "/api/v1/grants/{id}/activity", tag = "grants", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, description = "what was done with the grant's privilege, as collected so far: the Genesys Cloud audit events of the window the role was held (the broker's own writes left out), the passes that read them, the digest the audit chain records", body = ActivityDoc), (status = 404, description = "no such grant", body = ErrorBody), (status = 422, description = "not a grant id", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn get_activity(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let activity = state
        .app
        .view_activity(&caller.as_caller(), parse_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(&activity))
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/activity", tag = "grants", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, description = "read now from the audit trail (a grant whose role is held), then as `GET`", body = ActivityDoc), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "the grant's role is not held now (an ended grant's passes run by themselves), or its trail was read less than a minute ago", body = ErrorBody), (status = 422, description = "not a grant id", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "the audit trail could not be read", body = ErrorBody)))]
pub(crate) async fn look_at_activity(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let activity = state
        .app
        .look_at_activity_as(&caller.as_caller(), parse_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(&activity))
}
