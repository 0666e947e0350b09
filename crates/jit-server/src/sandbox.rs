//! `serve --dev`: a SANDBOX Genesys Cloud (the stand-in the tests use,
//! crates/jit-genesys-standin) held in memory and served by the broker
//! itself under `/sandbox/genesys`, seeded with a few users, a division and
//! a group that holds Master Admin, so that a newcomer can watch a grant
//! appear and disappear per division, and the holders sweep find and strip
//! the group's grant, with no external system. The broker reaches it through
//! its real genesys-profile client (OAuth, budget and all). The org as it
//! stands is at `GET /sandbox/genesys/org`.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use jit_domain::Policy;
use jit_genesys_standin::{ALL_DIVISIONS, GenesysStandIn, Settings};
use secrecy::SecretString;
use serde_json::json;

pub const BASE_PATH: &str = "/sandbox/genesys";
pub const CLIENT_ID: &str = "jit-broker-sandbox";
/// Public on purpose: the sandbox's own OAuth client, on localhost.
const CLIENT_SECRET: &str = "sandbox-client-secret";
/// The group the sandbox seeds with Master Admin in every division.
pub const SEEDED_GROUP: &str = "Contact centre admins";

/// Seeded users: (userName, baseline roles, in the home division).
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

/// The sandbox org: the policy's roles, the seeded users with their
/// baseline roles, a second division, and a group holding Master Admin in
/// every division (standing privilege for the first holders sweep to find).
pub fn genesys_seeded(policy: &Policy, addr: std::net::SocketAddr) -> GenesysStandIn {
    let standin = GenesysStandIn::new(Settings::default(), GenesysStandIn::system_clock());
    // Its events come back to the broker, as EventBridge would bring them.
    standin.relay_to(jit_genesys_standin::relay::Relay {
        url: format!("http://{addr}/webhooks/genesys/events"),
        header: crate::config::EventsSettings::default().header,
        secret: crate::DEV_EVENTS_SECRET.into(),
    });
    standin.add_client_with_permissions(
        CLIENT_ID,
        CLIENT_SECRET,
        "jit-broker (sandbox)",
        &jit_scim::doctor::needed_permissions(true),
    );
    let mut roles = BTreeMap::new();
    for role in policy.roles() {
        roles.insert(
            role.name.to_string(),
            standin.add_role(role.name.as_str(), &["*"]),
        );
    }
    standin.add_division("EMEA");
    let home = standin.home_division();
    let mut ids = BTreeMap::new();
    for (name, baseline) in SEED {
        let id = standin.add_user(name);
        for role in *baseline {
            if let Some(role_id) = roles.get(*role) {
                standin.grant(&id, role_id, &home);
            }
        }
        ids.insert(*name, id);
    }
    if let (Some(carol), Some(admin)) = (ids.get("carol@example.com"), roles.get("Master Admin")) {
        let group = standin.add_group(SEEDED_GROUP, &[carol]);
        standin.grant(&group, admin, ALL_DIVISIONS);
    }
    standin
}

/// The `[scim]` settings that point the genesys profile at the sandbox org
/// (the broker builds its client from them as from any configuration).
pub fn genesys_settings(addr: std::net::SocketAddr) -> crate::config::ScimSettings {
    let base = format!("http://{addr}{BASE_PATH}");
    crate::config::ScimSettings {
        profile: crate::config::ScimProfile::Genesys,
        base_url: Some(format!("{base}/api/v2/scim/v2")),
        token_url: Some(format!("{base}/oauth/token")),
        platform_url: Some(format!("{base}/")),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
        ..crate::config::ScimSettings::default()
    }
}

/// The stand-in's Genesys paths under [`BASE_PATH`], and the org view.
pub fn genesys_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(&format!("{BASE_PATH}/org"), web::get().to(org_view))
        .route(&format!("{BASE_PATH}/actions"), web::post().to(act))
        .service(web::scope(BASE_PATH).configure(jit_genesys_standin::routes));
}

/// What a sandbox user does in Genesys Cloud (not a Genesys API: the
/// sandbox's way to put an action in the audit trail, for "What was done").
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxAction {
    user: String,
    service: String,
    entity_type: String,
    entity: String,
    action: String,
}

async fn act(standin: web::Data<GenesysStandIn>, body: web::Json<SandboxAction>) -> HttpResponse {
    let Some(user) = standin.org().user_by_name(&body.user).map(|u| u.id.clone()) else {
        return HttpResponse::NotFound()
            .json(json!({"error": format!("no sandbox user {}", body.user)}));
    };
    let id = standin.record(jit_genesys_standin::audit::Action::by(
        &user,
        &body.service,
        &body.entity_type,
        &body.entity,
        &body.action,
    ));
    HttpResponse::Created()
        .insert_header(("X-Sandbox", "true"))
        .json(json!({"id": id}))
}

/// Who holds what, by grant and division: users and groups.
async fn org_view(standin: web::Data<GenesysStandIn>) -> HttpResponse {
    let org = standin.org();
    let grants_of = |subject: &str| {
        org.grants_of(subject, false)
            .into_iter()
            .map(|g| {
                let role = org.roles.get(&g.role).map_or(g.role.clone(), |r| r.name.clone());
                json!({"role": role, "division": org.division_name(&g.division), "made_at": g.made_at})
            })
            .collect::<Vec<_>>()
    };
    let users: Vec<_> = org
        .users
        .values()
        .map(|u| json!({"id": u.id, "userName": u.user_name, "grants": grants_of(&u.id)}))
        .collect();
    let groups: Vec<_> = org
        .groups
        .values()
        .map(|g| {
            let members: Vec<_> = g
                .members
                .iter()
                .filter_map(|m| org.users.get(m).map(|u| u.user_name.clone()))
                .collect();
            json!({"id": g.id, "name": g.name, "members": members, "grants": grants_of(&g.id)})
        })
        .collect();
    HttpResponse::Ok()
        .insert_header(("X-Sandbox", "true"))
        .json(json!({"users": users, "groups": groups}))
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
