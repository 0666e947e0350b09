//! The Platform API: the Authorization API (roles, subjects, grants,
//! divisions), group members, users, OAuth clients.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::GenesysStandIn;
use crate::org::{Org, SubjectKind};

fn division_json(org: &Org, id: &str) -> Value {
    json!({"id": id, "name": org.division_name(id), "homeDivision": id == org.home_division})
}

pub(super) async fn roles(
    req: HttpRequest,
    standin: Standin,
    q: web::Query<Paging>,
) -> HttpResponse {
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

pub(super) async fn role_users(
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

pub(super) async fn subject_grants(
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
pub(super) struct SubjectQuery {
    #[serde(rename = "includeDuplicates", default)]
    include_duplicates: bool,
}

pub(super) async fn subject(
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
pub(super) struct BulkGrants {
    grants: Vec<BulkGrant>,
}

#[derive(Deserialize)]
pub(super) struct BulkGrant {
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

pub(super) async fn bulk_add(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    body: web::Json<BulkGrants>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_ADD);
    let now = standin.now();
    let before = standin.org().grant_names(&id);
    // The org is unlocked before the event goes out.
    let written = standin.org().bulk_add(&id, &pairs(&body), now);
    match written {
        Ok(()) => changed(&req, &standin, &id, before),
        Err(r) => refusal(&r),
    }
}

pub(super) async fn bulk_remove(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
    body: web::Json<BulkGrants>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_DELETE);
    let before = standin.org().grant_names(&id);
    // The org is unlocked before the event goes out.
    let written = standin.org().bulk_remove(&id, &pairs(&body));
    match written {
        Ok(()) => changed(&req, &standin, &id, before),
        Err(r) => refusal(&r),
    }
}

pub(super) async fn grant_one(
    req: HttpRequest,
    standin: Standin,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_ADD);
    let (subject, division, role) = path.into_inner();
    let now = standin.now();
    let before = standin.org().grant_names(&subject);
    // The org is unlocked before the event goes out.
    let written = standin.org().bulk_add(&subject, &[(role, division)], now);
    match written {
        Ok(()) => changed(&req, &standin, &subject, before),
        Err(r) => refusal(&r),
    }
}

pub(super) async fn revoke_one(
    req: HttpRequest,
    standin: Standin,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    admit!(req, standin, grant_writes, GRANT_DELETE);
    let (subject, division, role) = path.into_inner();
    let before = standin.org().grant_names(&subject);
    // The org is unlocked before the event goes out.
    let written = standin.org().bulk_remove(&subject, &[(role, division)]);
    match written {
        Ok(()) => changed(&req, &standin, &subject, before),
        Err(r) => refusal(&r),
    }
}

pub(super) async fn home_division(req: HttpRequest, standin: Standin) -> HttpResponse {
    admit!(req, standin, other, NONE);
    let org = standin.org();
    HttpResponse::Ok().json(division_json(&org, &org.home_division))
}

#[derive(Deserialize)]
pub(super) struct DivisionQuery {
    name: Option<String>,
    id: Option<String>,
}

pub(super) async fn divisions(
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

pub(super) async fn group_members(
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

pub(super) async fn platform_user(
    req: HttpRequest,
    standin: Standin,
    id: web::Path<String>,
) -> HttpResponse {
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

pub(super) async fn oauth_clients(req: HttpRequest, standin: Standin) -> HttpResponse {
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

/// A write went through: it is audited (and relayed, if events are).
fn changed(
    req: &HttpRequest,
    standin: &GenesysStandIn,
    subject: &str,
    before: std::collections::BTreeSet<String>,
) -> HttpResponse {
    let client = caller(req, standin).unwrap_or_default();
    standin.grants_changed(subject, &client, None, before);
    HttpResponse::NoContent().finish()
}
