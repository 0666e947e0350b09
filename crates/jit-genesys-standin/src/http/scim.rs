//! SCIM Users as Genesys Cloud serves them: lower-case paths,
//! `meta.version` and `If-Match`, roles by name only.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::GenesysStandIn;
use crate::org::{Org, Refusal, User};

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
pub(super) struct ScimQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<u64>,
    count: Option<u64>,
}

pub(super) async fn scim_list(
    req: HttpRequest,
    standin: Standin,
    q: web::Query<ScimQuery>,
) -> HttpResponse {
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

pub(super) async fn scim_get(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
) -> HttpResponse {
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

pub(super) async fn scim_config(req: HttpRequest, standin: Standin) -> HttpResponse {
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

pub(super) async fn scim_patch(
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
    let before = org.grant_names(&user.id);
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
    let answer = HttpResponse::Ok()
        .insert_header((header::ETAG, etag(&user)))
        .content_type("application/scim+json")
        .json(scim_user(&org, &user, &standin));
    drop(org);
    let client = caller(&req, &standin).unwrap_or_default();
    standin.grants_changed(&user.id, &client, None, before);
    answer
}
