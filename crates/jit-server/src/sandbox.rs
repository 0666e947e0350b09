//! `serve --dev`: a SANDBOX SCIM 2.0 directory held in memory and served by
//! the broker itself under `/sandbox/scim/v2`, seeded with a few users, so
//! that a newcomer can watch a role appear and disappear with no external
//! system. The broker reaches it through its real SCIM client.
//!
//! It implements only what the broker uses: `userName eq` and `roles.value
//! eq` filters (announced at `/ServiceProviderConfig`), `GET` by id, and
//! `PATCH` add/remove on `roles` under `If-Match`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

pub const BASE_PATH: &str = "/sandbox/scim/v2";

/// Seeded users: (userName, baseline roles).
pub const SEED: &[(&str, &[&str])] = &[
    ("alice@example.com", &["Employee"]),
    ("bob@example.com", &["Employee", "Supervisor"]),
    ("carol@example.com", &["Employee"]),
];

/// The sandbox login's people and the identity-provider groups it vouches
/// for (the shipped policy: alice and bob may hold Master Admin; bob approves
/// Recording Admin; carol is in the SOC).
pub const LOGIN_GROUPS: &[(&str, &[&str])] = &[
    ("alice@example.com", &["cx-platform-admins"]),
    (
        "bob@example.com",
        &["cx-platform-admins", "cx-quality-managers"],
    ),
    ("carol@example.com", &["cx-quality-leads", "soc"]),
];

/// The sandbox login's users.
pub fn login_users() -> Vec<jit_web::SandboxUser> {
    LOGIN_GROUPS
        .iter()
        .filter_map(|(user, groups)| {
            Some(jit_web::SandboxUser {
                user: jit_domain::UserName::parse(user).ok()?,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            })
        })
        .collect()
}

struct User {
    user_name: String,
    roles: Vec<String>,
    version: u64,
}

pub struct SandboxDirectory {
    users: Mutex<BTreeMap<String, User>>,
}

impl SandboxDirectory {
    pub fn seeded() -> Self {
        let users = SEED
            .iter()
            .enumerate()
            .map(|(i, (name, roles))| {
                let user = User {
                    user_name: (*name).to_owned(),
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    version: 1,
                };
                (format!("sandbox-{}", i + 1), user)
            })
            .collect();
        Self {
            users: Mutex::new(users),
        }
    }
}

fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

fn resource(id: &str, u: &User) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "userName": u.user_name,
        "active": true,
        "roles": u.roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
        "meta": {"resourceType": "User", "version": etag(u.version)},
    })
}

fn scim_error(status: u16, detail: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .insert_header(("X-Sandbox", "true"))
        .content_type("application/scim+json")
        .json(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": status.to_string(), "detail": detail}))
}

fn ok(value: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("X-Sandbox", "true"))
        .content_type("application/scim+json")
        .json(value)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        &format!("{BASE_PATH}/ServiceProviderConfig"),
        web::get().to(service_provider_config),
    );
    for users in ["Users", "users"] {
        cfg.route(&format!("{BASE_PATH}/{users}"), web::get().to(list))
            .route(&format!("{BASE_PATH}/{users}/{{id}}"), web::get().to(get))
            .route(
                &format!("{BASE_PATH}/{users}/{{id}}"),
                web::patch().to(patch),
            );
    }
}

fn lock(dir: &SandboxDirectory) -> std::sync::MutexGuard<'_, BTreeMap<String, User>> {
    dir.users.lock().unwrap_or_else(|p| p.into_inner())
}

async fn service_provider_config() -> HttpResponse {
    ok(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 1000},
        "etag": {"supported": true}, "bulk": {"supported": false},
        "changePassword": {"supported": false}, "sort": {"supported": false},
    }))
}

/// The two filters the broker sends.
#[derive(Debug, PartialEq, Eq)]
enum Filter {
    UserName(String),
    Role(String),
}

fn parse_filter(filter: &str) -> Option<Filter> {
    let eq = |attribute: &str| {
        let rest = filter
            .trim()
            .strip_prefix(attribute)?
            .trim_start()
            .strip_prefix("eq")?
            .trim();
        serde_json::from_str::<String>(rest).ok()
    };
    eq("userName")
        .map(Filter::UserName)
        .or_else(|| eq("roles.value").map(Filter::Role))
}

async fn list(
    dir: web::Data<SandboxDirectory>,
    query: web::Query<BTreeMap<String, String>>,
) -> HttpResponse {
    let wanted = match query.get("filter") {
        None => None,
        Some(f) => match parse_filter(f) {
            Some(filter) => Some(filter),
            None => {
                return scim_error(
                    400,
                    "the sandbox understands only `userName eq \"…\"` and `roles.value eq \"…\"` filters",
                );
            }
        },
    };
    let users = lock(&dir);
    let found: Vec<Value> = users
        .iter()
        .filter(|(_, u)| match &wanted {
            None => true,
            Some(Filter::UserName(name)) => name.eq_ignore_ascii_case(&u.user_name),
            Some(Filter::Role(role)) => u.roles.iter().any(|r| r == role),
        })
        .map(|(id, u)| resource(id, u))
        .collect();
    ok(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": found.len(), "startIndex": 1, "itemsPerPage": found.len(), "Resources": found,
    }))
}

async fn get(dir: web::Data<SandboxDirectory>, id: web::Path<String>) -> HttpResponse {
    let users = lock(&dir);
    match users.get(id.as_str()) {
        Some(u) => {
            let mut response = ok(resource(&id, u));
            if let Ok(v) = header::HeaderValue::from_str(&etag(u.version)) {
                response.headers_mut().insert(header::ETAG, v);
            }
            response
        }
        None => scim_error(404, "user not found"),
    }
}

/// The role a `roles[value eq "…"]` path names.
fn role_path_value(path: &str) -> Option<String> {
    let inner = path.trim().strip_prefix("roles[")?.strip_suffix(']')?;
    let value = inner
        .trim()
        .strip_prefix("value")?
        .trim_start()
        .strip_prefix("eq")?
        .trim();
    serde_json::from_str::<String>(value).ok()
}

async fn patch(
    dir: web::Data<SandboxDirectory>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    let mut users = lock(&dir);
    let Some(user) = users.get_mut(id.as_str()) else {
        return scim_error(404, "user not found");
    };
    if let Some(wanted) = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        && wanted != etag(user.version)
    {
        return scim_error(412, "Failed to update. Resource has changed on the server");
    }
    let Some(ops) = body["Operations"].as_array() else {
        return scim_error(400, "PatchOp needs Operations");
    };
    let mut roles = user.roles.clone();
    for op in ops {
        match (
            op["op"].as_str().map(str::to_ascii_lowercase).as_deref(),
            op["path"].as_str(),
        ) {
            (Some("add"), Some("roles")) => {
                for value in op["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["value"].as_str())
                {
                    if !roles.iter().any(|r| r == value) {
                        roles.push(value.to_owned());
                    }
                }
            }
            (Some("remove"), Some(path)) => match role_path_value(path) {
                Some(value) => roles.retain(|r| *r != value),
                None => return scim_error(400, "the sandbox removes only `roles[value eq \"…\"]`"),
            },
            _ => {
                return scim_error(
                    400,
                    "the sandbox supports add on `roles` and filtered remove",
                );
            }
        }
    }
    if roles != user.roles {
        user.roles = roles;
        user.version += 1;
    }
    HttpResponse::NoContent()
        .insert_header(("X-Sandbox", "true"))
        .insert_header((header::ETAG, etag(user.version)))
        .finish()
}

/// `/sandbox/mail` (JSON) and `/sandbox/mailbox` (a page): what the broker
/// would have emailed, newest first.
pub fn mailbox_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sandbox/mail", web::get().to(mail_json))
        .route("/sandbox/mailbox", web::get().to(mail_page));
}

async fn mail_json(box_: web::Data<jit_notify::sandbox::SandboxMailbox>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"items": box_.messages()}))
}

async fn mail_page(box_: web::Data<jit_notify::sandbox::SandboxMailbox>) -> HttpResponse {
    match box_.page() {
        Ok(page) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(page),
        Err(e) => {
            tracing::error!(error = %e, "sandbox mailbox page");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_filters_the_broker_sends() {
        assert_eq!(
            parse_filter(r#"userName eq "a@b.c""#),
            Some(Filter::UserName("a@b.c".into()))
        );
        assert_eq!(
            parse_filter(r#"roles.value eq "Master Admin""#),
            Some(Filter::Role("Master Admin".into()))
        );
        assert_eq!(parse_filter(r#"displayName eq "x""#), None);
        assert_eq!(
            role_path_value(r#"roles[value eq "Master Admin"]"#).as_deref(),
            Some("Master Admin")
        );
        assert_eq!(role_path_value("roles"), None);
    }
}
