//! The stand-in's HTTP face: Genesys Cloud's paths, status codes and bodies.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::GenesysStandIn;
use crate::org::Refusal;

type Standin = web::Data<GenesysStandIn>;

const SCIM_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const SCIM_LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCIM_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Mounts the stand-in (the caller picks the prefix; the state is
/// `web::Data<GenesysStandIn>`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/token", web::post().to(token))
        .route("/api/v2/scim/v2/users", web::get().to(scim_list))
        .route("/api/v2/scim/v2/users/{id}", web::get().to(scim_get))
        .route("/api/v2/scim/v2/users/{id}", web::patch().to(scim_patch))
        .route(
            "/api/v2/scim/v2/serviceproviderconfig",
            web::get().to(scim_config),
        )
        .route("/api/v2/authorization/roles", web::get().to(roles))
        .route(
            "/api/v2/authorization/roles/{id}/users",
            web::get().to(role_users),
        )
        .route(
            "/api/v2/authorization/roles/{id}/subjectgrants",
            web::get().to(subject_grants),
        )
        .route(
            "/api/v2/authorization/subjects/{id}",
            web::get().to(subject),
        )
        .route(
            "/api/v2/authorization/subjects/{id}/bulkadd",
            web::post().to(bulk_add),
        )
        .route(
            "/api/v2/authorization/subjects/{id}/bulkremove",
            web::post().to(bulk_remove),
        )
        .route(
            "/api/v2/authorization/subjects/{id}/divisions/{division}/roles/{role}",
            web::post().to(grant_one),
        )
        .route(
            "/api/v2/authorization/subjects/{id}/divisions/{division}/roles/{role}",
            web::delete().to(revoke_one),
        )
        .route(
            "/api/v2/authorization/divisions/home",
            web::get().to(home_division),
        )
        .route("/api/v2/authorization/divisions", web::get().to(divisions))
        .route("/api/v2/groups/{id}/members", web::get().to(group_members))
        .route("/api/v2/users/{id}", web::get().to(platform_user))
        .route("/api/v2/oauth/clients", web::get().to(oauth_clients))
        .route(
            "/api/v2/audits/query/realtime",
            web::post().to(audits::realtime),
        )
        .route("/api/v2/audits/query", web::post().to(audits::create))
        .route("/api/v2/audits/query/{id}", web::get().to(audits::poll))
        .route(
            "/api/v2/audits/query/{id}/results",
            web::get().to(audits::results),
        );
}

// ------------------------------------------------------------------ answers

fn platform_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({"message": message, "code": code, "status": status}))
}

fn scim_error(status: u16, scim_type: Option<&str>, detail: &str) -> HttpResponse {
    let mut body = json!({"schemas": [SCIM_ERROR], "status": status.to_string(), "detail": detail});
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .content_type("application/scim+json")
    .json(body)
}

fn refusal(r: &Refusal) -> HttpResponse {
    match r {
        Refusal::NoSuchSubject(s) => {
            platform_error(404, "not.found", &format!("subject {s} not found"))
        }
        Refusal::NoSuchRole(id) => {
            platform_error(400, "bad.request", &format!("role {id} not found"))
        }
        Refusal::NoSuchDivision(id) => {
            platform_error(400, "bad.request", &format!("division {id} not found"))
        }
        Refusal::StaleVersion { expected, current } => scim_error(
            400,
            Some("invalidVers"),
            &format!("If-Match {expected} does not match the current version {current}"),
        ),
        Refusal::BadPatch(why) => scim_error(400, Some("invalidSyntax"), why),
    }
}

/// A page of entities as the Platform API answers them.
fn page(entities: Vec<Value>, q: &Paging, cap: u64) -> Value {
    let size = q.page_size.unwrap_or(25).clamp(1, cap.max(1));
    let number = q.page_number.unwrap_or(1).max(1);
    let total = entities.len() as u64;
    let page_count = total.div_ceil(size).max(1);
    let start = usize::try_from((number - 1) * size).unwrap_or(usize::MAX);
    let items: Vec<Value> = entities
        .into_iter()
        .skip(start)
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .collect();
    json!({"entities": items, "pageSize": size, "pageNumber": number, "total": total, "pageCount": page_count})
}

#[derive(Deserialize)]
struct Paging {
    #[serde(rename = "pageSize")]
    page_size: Option<u64>,
    #[serde(rename = "pageNumber")]
    page_number: Option<u64>,
    name: Option<String>,
    permission: Option<String>,
}

// ------------------------------------------------------- token and budget

async fn token(req: HttpRequest, standin: Standin, form: web::Bytes) -> HttpResponse {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let grant_type_ok = String::from_utf8_lossy(&form)
        .split('&')
        .any(|kv| kv == "grant_type=client_credentials");
    let issued = basic.as_deref().and_then(|b| {
        let (id, secret) = b.split_once(':')?;
        standin.issue_token(id, secret)
    });
    match (grant_type_ok, issued) {
        (true, Some((token, lifetime))) => HttpResponse::Ok().json(json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime.num_seconds(),
        })),
        (false, _) => HttpResponse::BadRequest().json(json!({"error": "unsupported_grant_type"})),
        (true, None) => HttpResponse::Unauthorized().json(json!({"error": "invalid_client"})),
    }
}

/// Every API call: a live token, then the client's budget. `Some`: the
/// refusal to answer instead.
fn refused(
    req: &HttpRequest,
    standin: &GenesysStandIn,
    kind: &AtomicU64,
    needs: &[&str],
) -> Option<HttpResponse> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(client) = token.and_then(|t| standin.client_of(t)) else {
        standin.counts.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Some(platform_error(
            401,
            "bad.credentials",
            "Invalid login credentials.",
        ));
    };
    standin.counts.requests.fetch_add(1, Ordering::Relaxed);
    if let Err(seconds) = standin.spend(&client) {
        standin.counts.limited.fetch_add(1, Ordering::Relaxed);
        return Some(HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", seconds.to_string()))
            .json(json!({
                "message": format!("Rate limit exceeded the maximum. Retry the request in [{seconds}] seconds"),
                "code": "too.many.requests",
                "status": 429,
            })));
    }
    if !needs.is_empty() && !needs.iter().any(|p| standin.client_may(&client, p)) {
        standin.counts.forbidden.fetch_add(1, Ordering::Relaxed);
        return Some(platform_error(
            403,
            "missing.any.permissions",
            &format!(
                "Unable to perform the requested action. You must have at least one of the following permissions assigned: [{}]",
                needs.join(", ")
            ),
        ));
    }
    kind.fetch_add(1, Ordering::Relaxed);
    None
}

/// The OAuth client a request's token belongs to.
fn caller(req: &HttpRequest, standin: &GenesysStandIn) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| standin.client_of(t))
}

// The permissions Genesys Cloud's API definitions list for each endpoint
// (any one of a list will do); endpoints not listed need none.
const NONE: &[&str] = &[];
const SCIM_VIEW: &[&str] = &["directory:user:view", "directory:user:edit"];
const ROLE_VIEW: &[&str] = &["authorization:role:view"];
const GRANT_VIEW: &[&str] = &["authorization:grant:view"];
const GRANT_ADD: &[&str] = &["authorization:grant:add"];
const GRANT_DELETE: &[&str] = &["authorization:grant:delete"];
const CLIENT_VIEW: &[&str] = &["oauth:client:view"];

macro_rules! admit {
    ($req:expr, $standin:expr, $kind:ident, $needs:expr) => {
        if let Some(answer) = refused(&$req, &$standin, &$standin.counts.$kind, $needs) {
            return answer;
        }
    };
}

mod audits;
mod platform;
mod scim;

use platform::*;
use scim::*;
