//! The stand-in's HTTP face: Genesys Cloud's paths, status codes and bodies.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::GenesysStandIn;
use crate::org::{Org, Refusal, SubjectKind, User};

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
        .route("/api/v2/oauth/clients", web::get().to(oauth_clients));
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

// --------------------------------------------------------------------- SCIM

fn scim_user(org: &Org, user: &User, standin: &GenesysStandIn) -> Value {
    let roles: Vec<Value> = org
        .scim_roles(&user.id, &standin.switches())
        .into_iter()
        .map(|r| json!({"value": r}))
        .collect();
    json!({
        "schemas": [SCIM_USER],
        "id": user.id,
        "userName": user.user_name,
        "active": user.active,
        "roles": roles,
        "meta": {
            "resourceType": "User",
            "version": etag(user),
            "location": format!("/api/v2/scim/v2/users/{}", user.id),
        },
    })
}

fn etag(user: &User) -> String {
    format!("W/\"{}\"", user.version)
}

#[derive(Deserialize)]
struct ScimQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<u64>,
    count: Option<u64>,
}

async fn scim_list(req: HttpRequest, standin: Standin, q: web::Query<ScimQuery>) -> HttpResponse {
    admit!(req, standin, scim_reads, SCIM_VIEW);
    let org = standin.org();
    let users: Vec<&User> = match q.filter.as_deref() {
        None => org.users.values().collect(),
        Some(f) => match f.strip_prefix("userName eq ") {
            Some(quoted) => {
                let name: String = serde_json::from_str(quoted.trim()).unwrap_or_default();
                org.user_by_name(&name).into_iter().collect()
            }
            None => {
                return scim_error(
                    400,
                    Some("invalidFilter"),
                    "only `userName eq` is supported",
                );
            }
        },
    };
    let start = q.start_index.unwrap_or(1).max(1);
    let count = q.count.unwrap_or(25).min(100);
    let resources: Vec<Value> = users
        .iter()
        .skip(usize::try_from(start - 1).unwrap_or(usize::MAX))
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .map(|u| scim_user(&org, u, &standin))
        .collect();
    HttpResponse::Ok()
        .content_type("application/scim+json")
        .json(json!({
            "schemas": [SCIM_LIST],
            "totalResults": users.len(),
            "startIndex": start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }))
}

async fn scim_get(req: HttpRequest, standin: Standin, id: web::Path<String>) -> HttpResponse {
    admit!(req, standin, scim_reads, SCIM_VIEW);
    let org = standin.org();
    match org.users.get(id.as_str()) {
        Some(u) => HttpResponse::Ok()
            .insert_header((header::ETAG, etag(u)))
            .content_type("application/scim+json")
            .json(scim_user(&org, u, &standin)),
        None => scim_error(404, None, "user not found"),
    }
}

async fn scim_config(req: HttpRequest, standin: Standin) -> HttpResponse {
    admit!(req, standin, scim_reads, NONE);
    HttpResponse::Ok().json(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "filter": {"supported": true, "maxResults": 100},
        "etag": {"supported": true},
    }))
}

/// The role changes a PATCH asks for: `add` on `roles`, `remove` on
/// `roles[value eq "…"]`; anything else is refused.
fn role_operations(body: &Value) -> Result<Vec<(String, bool)>, Refusal> {
    let bad = |why: &str| Refusal::BadPatch(why.to_owned());
    let ops = body["Operations"]
        .as_array()
        .ok_or_else(|| bad("Operations is required"))?;
    let mut changes = Vec::new();
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        match op["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("add") if path == "roles" => {
                for v in op["value"]
                    .as_array()
                    .ok_or_else(|| bad("add needs a value list"))?
                {
                    let name = v["value"]
                        .as_str()
                        .ok_or_else(|| bad("a role needs a value"))?;
                    changes.push((name.to_owned(), true));
                }
            }
            Some("remove") => {
                let name = path
                    .strip_prefix("roles[value eq ")
                    .and_then(|p| p.strip_suffix(']'))
                    .and_then(|q| serde_json::from_str::<String>(q).ok())
                    .ok_or_else(|| bad("remove needs the path roles[value eq \"…\"]"))?;
                changes.push((name, false));
            }
            _ => {
                return Err(bad(
                    "only add on roles and remove on roles[value eq …] are modelled",
                ));
            }
        }
    }
    Ok(changes)
}

async fn scim_patch(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    admit!(req, standin, scim_writes, NONE);
    let now = standin.now();
    let switches = standin.switches();
    let mut org = standin.org();
    let Some(user) = org.users.get(id.as_str()).cloned() else {
        return scim_error(404, None, "user not found");
    };
    if let Some(expected) = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        && expected != etag(&user)
    {
        return refusal(&Refusal::StaleVersion {
            expected: expected.to_owned(),
            current: etag(&user),
        });
    }
    let changes = match role_operations(&body) {
        Ok(c) => c,
        Err(r) => return refusal(&r),
    };
    for (role, add) in changes {
        if let Err(r) = org.scim_change_role(&user.id, &role, add, &switches, now) {
            return match r {
                Refusal::NoSuchRole(_) => {
                    scim_error(400, Some("invalidValue"), &format!("no role named {role}"))
                }
                other => refusal(&other),
            };
        }
    }
    // Genesys answers a PATCH with the full user.
    let user = org.users.get(id.as_str()).cloned().unwrap_or(user);
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag(&user)))
        .content_type("application/scim+json")
        .json(scim_user(&org, &user, &standin))
}

// ------------------------------------------------------- Authorization API

fn division_json(org: &Org, id: &str) -> Value {
    json!({"id": id, "name": org.division_name(id), "homeDivision": id == org.home_division})
}

async fn roles(req: HttpRequest, standin: Standin, q: web::Query<Paging>) -> HttpResponse {
    admit!(req, standin, other, ROLE_VIEW);
    let org = standin.org();
    let entities = org
        .roles
        .values()
        .filter(|r| q.name.as_ref().is_none_or(|n| &r.name == n))
        .filter(|r| {
            q.permission
                .as_ref()
                .is_none_or(|p| r.permissions.iter().any(|have| have == p || have == "*"))
        })
        .map(|r| json!({"id": r.id, "name": r.name, "permissions": r.permissions}))
        .collect();
    HttpResponse::Ok().json(page(entities, &q, standin.max_page_size()))
}

async fn role_users(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    q: web::Query<Paging>,
) -> HttpResponse {
    admit!(req, standin, grant_reads, NONE);
    let org = standin.org();
    if !org.roles.contains_key(id.as_str()) {
        return platform_error(404, "not.found", "role not found");
    }
    let entities = org
        .direct_holders(&id)
        .into_iter()
        .map(|u| json!({"id": u.id, "name": u.user_name, "username": u.user_name, "email": u.user_name}))
        .collect();
    HttpResponse::Ok().json(page(entities, &q, standin.max_page_size()))
}

async fn subject_grants(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    q: web::Query<Paging>,
) -> HttpResponse {
    admit!(req, standin, grant_reads, ROLE_VIEW);
    let org = standin.org();
    if !org.roles.contains_key(id.as_str()) {
        return platform_error(404, "not.found", "role not found");
    }
    let omitted = standin.omitted();
    let entities = org
        .subject_grants(&id)
        .into_iter()
        .filter(|(subject, _)| !omitted.contains(subject))
        .filter_map(|(subject, divisions)| {
            let (name, kind) = match org.subject_kind(&subject)? {
                SubjectKind::User => (org.users[&subject].user_name.clone(), "PC_USER"),
                SubjectKind::Group => (org.groups[&subject].name.clone(), "PC_GROUP"),
            };
            let divisions: Vec<Value> = divisions.iter().map(|d| division_json(&org, d)).collect();
            Some(json!({"id": subject, "name": name, "type": kind, "divisions": divisions}))
        })
        .collect();
    HttpResponse::Ok().json(page(entities, &q, standin.max_page_size()))
}

#[derive(Deserialize)]
struct SubjectQuery {
    #[serde(rename = "includeDuplicates", default)]
    include_duplicates: bool,
}

async fn subject(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    q: web::Query<SubjectQuery>,
) -> HttpResponse {
    admit!(req, standin, grant_reads, GRANT_VIEW);
    let org = standin.org();
    let name = match org.subject_kind(&id) {
        Some(SubjectKind::User) => org.users[id.as_str()].user_name.clone(),
        Some(SubjectKind::Group) => org.groups[id.as_str()].name.clone(),
        None => return platform_error(404, "not.found", "subject not found"),
    };
    let grants: Vec<Value> = org
        .grants_of(&id, q.include_duplicates)
        .into_iter()
        .map(|g| {
            let role = org.roles.get(&g.role).map_or("", |r| r.name.as_str());
            json!({
                "subjectId": g.subject,
                "division": division_json(&org, &g.division),
                "role": {"id": g.role, "name": role},
                "grantMadeAt": g.made_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"id": id.as_str(), "name": name, "grants": grants}))
}

#[derive(Deserialize)]
struct BulkGrants {
    grants: Vec<BulkGrant>,
}

#[derive(Deserialize)]
struct BulkGrant {
    #[serde(rename = "roleId")]
    role_id: String,
    #[serde(rename = "divisionId")]
    division_id: String,
}

fn pairs(body: &BulkGrants) -> Vec<(String, String)> {
    body.grants
        .iter()
        .map(|g| (g.role_id.clone(), g.division_id.clone()))
        .collect()
}

async fn bulk_add(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    body: web::Json<BulkGrants>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_ADD);
    let now = standin.now();
    match standin.org().bulk_add(&id, &pairs(&body), now) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(r) => refusal(&r),
    }
}

async fn bulk_remove(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    body: web::Json<BulkGrants>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_DELETE);
    match standin.org().bulk_remove(&id, &pairs(&body)) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(r) => refusal(&r),
    }
}

async fn grant_one(
    req: HttpRequest,
    standin: Standin,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_ADD);
    let (subject, division, role) = path.into_inner();
    let now = standin.now();
    match standin.org().bulk_add(&subject, &[(role, division)], now) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(r) => refusal(&r),
    }
}

async fn revoke_one(
    req: HttpRequest,
    standin: Standin,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_DELETE);
    let (subject, division, role) = path.into_inner();
    match standin.org().bulk_remove(&subject, &[(role, division)]) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(r) => refusal(&r),
    }
}

async fn home_division(req: HttpRequest, standin: Standin) -> HttpResponse {
    admit!(req, standin, other, NONE);
    let org = standin.org();
    HttpResponse::Ok().json(division_json(&org, &org.home_division))
}

#[derive(Deserialize)]
struct DivisionQuery {
    name: Option<String>,
    id: Option<String>,
}

async fn divisions(
    req: HttpRequest,
    standin: Standin,
    q: web::Query<DivisionQuery>,
) -> HttpResponse {
    admit!(req, standin, other, NONE);
    let org = standin.org();
    let entities: Vec<Value> = org
        .divisions
        .values()
        .filter(|d| q.name.as_ref().is_none_or(|n| &d.name == n))
        .filter(|d| q.id.as_ref().is_none_or(|i| &d.id == i))
        .map(|d| division_json(&org, &d.id))
        .collect();
    let total = entities.len();
    HttpResponse::Ok()
        .json(json!({"entities": entities, "total": total, "pageCount": 1, "pageNumber": 1}))
}

async fn group_members(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    q: web::Query<Paging>,
) -> HttpResponse {
    admit!(req, standin, other, NONE);
    let org = standin.org();
    let Some(group) = org.groups.get(id.as_str()) else {
        return platform_error(404, "not.found", "group not found");
    };
    let entities = group
        .members
        .iter()
        .filter_map(|m| org.users.get(m))
        .map(|u| json!({"id": u.id, "name": u.user_name, "username": u.user_name, "email": u.user_name}))
        .collect();
    HttpResponse::Ok().json(page(entities, &q, standin.max_page_size()))
}

async fn platform_user(req: HttpRequest, standin: Standin, id: web::Path<String>) -> HttpResponse {
    admit!(req, standin, other, NONE);
    let org = standin.org();
    let Some(u) = org.users.get(id.as_str()) else {
        return platform_error(404, "not.found", "user not found");
    };
    let mut body =
        json!({"id": u.id, "name": u.user_name, "username": u.user_name, "email": u.user_name});
    if req.query_string().contains("lasttokenissued")
        && let Some(at) = u.last_token_issued
    {
        body["lastTokenIssued"] =
            json!({"dateIssued": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
    }
    HttpResponse::Ok().json(body)
}

async fn oauth_clients(req: HttpRequest, standin: Standin) -> HttpResponse {
    admit!(req, standin, other, CLIENT_VIEW);
    let org = standin.org();
    let entities: Vec<Value> = org
        .clients
        .values()
        .map(|c| {
            let role_divisions: Vec<Value> = c
                .role_divisions
                .iter()
                .map(|(r, d)| json!({"roleId": r, "divisionId": d}))
                .collect();
            json!({"id": c.id, "name": c.name, "authorizedGrantType": "CLIENT-CREDENTIALS", "roleDivisions": role_divisions})
        })
        .collect();
    HttpResponse::Ok().json(json!({"entities": entities}))
}
