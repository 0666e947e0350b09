//! The JSON API (`/api/v1`) and the webhooks: one file per feature, named as
//! the `jit-app` use cases are (grants, approvals, reconcile, audit, sessions,
//! webhooks, ops). Errors become HTTP in `error.rs` and nowhere else.

mod approvals;
mod audit;
mod auth;
mod body;
mod error;
mod grants;
pub mod openapi;
mod ops;
mod reconcile;
mod sessions;
mod webhooks;

pub use auth::{Caller, hash_key};
pub use body::JsonBody;
pub use error::ApiError;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use jit_app::{App, ReconcileConfig};
use jit_itsm::webhook::WebhookVerifier;
use serde_json::json;
use tokio::sync::Notify;

use crate::config::ApiKeyConfig;

/// Everything the handlers share.
pub struct ApiState {
    pub app: Arc<App>,
    pub keys: Vec<ApiKeyConfig>,
    pub worker_wake: Arc<Notify>,
    pub max_body_bytes: usize,
    /// The largest webhook body, read only after its headers passed.
    pub webhook_max_body_bytes: usize,
    /// The descriptor limit as raised at start, and the connection cap under it.
    pub files: crate::connections::Files,
    /// `None`: no webhook secret configured, the endpoint refuses everything.
    pub webhook: Option<WebhookVerifier>,
    pub reconcile: ReconcileConfig,
    /// This process's identity for leases.
    pub owner: String,
    /// Verifies ID tokens from the web form's OpenID provider, so that a CLI
    /// or bot can act as the engineer (`None`: API keys only).
    pub bearer: Option<Arc<jit_web::Oidc>>,
    /// The worker's pulse, for readiness.
    pub pulse: jit_app::WorkerPulse,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub ticket_system_configured: bool,
    /// ServiceNow's last answer to readiness, reused for a while so that a
    /// load balancer's probes do not become ServiceNow's load.
    pub servicenow_seen: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// The directory's permission probe at start (`None`: not run, or
    /// nothing to check), shown by readiness, never gating it.
    pub permissions: Arc<std::sync::Mutex<Option<Vec<jit_app::PermissionProbe>>>>,
    /// Genesys events relayed by EventBridge (`None`: not configured).
    pub events: Option<crate::events::EventsGate>,
    /// Slack's interaction callback (`None`: Slack not configured).
    pub slack: Option<Arc<crate::slack::SlackDoor>>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            // Answers name people, roles and tickets: never kept by a cache.
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((header::CACHE_CONTROL, "no-store")),
            )
            .service(
                resource("/grants")
                    .route(web::post().to(grants::create_grant))
                    .route(web::get().to(grants::list_grants)),
            )
            .service(resource("/grants/{id}").route(web::get().to(grants::get_grant)))
            .service(resource("/grants/{id}/drop").route(web::post().to(grants::drop_grant)))
            .service(
                resource("/grants/{id}/activity")
                    .route(web::get().to(grants::get_activity))
                    .route(web::post().to(grants::look_at_activity)),
            )
            .service(
                resource("/grants/{id}/approve").route(web::post().to(approvals::approve_grant)),
            )
            .service(resource("/grants/{id}/deny").route(web::post().to(approvals::deny_grant)))
            .service(resource("/grants/{id}/extend").route(web::post().to(grants::extend_grant)))
            .service(resource("/approvals").route(web::get().to(approvals::my_approvals)))
            .service(resource("/reconcile").route(web::post().to(reconcile::start_reconcile)))
            .service(resource("/reconcile/runs").route(web::get().to(reconcile::list_runs)))
            .service(resource("/reconcile/runs/{id}").route(web::get().to(reconcile::get_run)))
            .service(resource("/audit").route(web::get().to(audit::audit_events)))
            .service(resource("/sessions/revoke").route(web::post().to(sessions::revoke_sessions)))
            .service(resource("/openapi.json").route(web::get().to(ops::openapi_json))),
    )
    .service(resource("/webhooks/servicenow").route(web::post().to(webhooks::servicenow_webhook)))
    .service(resource("/webhooks/genesys/events").route(web::post().to(webhooks::genesys_events)))
    .service(
        resource("/webhooks/slack/interactions")
            .route(web::post().to(webhooks::slack_interactions)),
    )
    .service(resource("/healthz").route(web::get().to(ops::healthz)))
    .service(resource("/readyz").route(web::get().to(ops::readyz)))
    .service(resource("/metrics").route(web::get().to(ops::metrics_page)));
}

/// A resource whose other methods are answered 405 (with `Allow`), in the
/// API's error shape.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let pattern = req.match_pattern().unwrap_or_default();
    let allowed: Vec<String> = ROUTES
        .iter()
        .filter(|(_, path)| *path == pattern)
        .map(|(method, _)| method.to_uppercase())
        .collect();
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allowed.join(", ")))
        .json(json!({"error": {
            "code": "method_not_allowed",
            "message": format!("{} is not allowed here; use {}", req.method(), allowed.join(" or ")),
            "fields": [],
        }}))
}

/// Every route `routes` registers, as the OpenAPI document names it: a test
/// checks each is documented, and another that each answers.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/grants"),
    ("get", "/api/v1/grants"),
    ("get", "/api/v1/grants/{id}"),
    ("post", "/api/v1/grants/{id}/drop"),
    ("get", "/api/v1/grants/{id}/activity"),
    ("post", "/api/v1/grants/{id}/activity"),
    ("post", "/api/v1/grants/{id}/approve"),
    ("post", "/api/v1/grants/{id}/deny"),
    ("post", "/api/v1/grants/{id}/extend"),
    ("get", "/api/v1/approvals"),
    ("post", "/api/v1/reconcile"),
    ("get", "/api/v1/reconcile/runs"),
    ("get", "/api/v1/reconcile/runs/{id}"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/sessions/revoke"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/webhooks/servicenow"),
    ("post", "/webhooks/genesys/events"),
    ("post", "/webhooks/slack/interactions"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[cfg(test)]
mod tests {
    use super::ROUTES;
    use utoipa::OpenApi;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = super::openapi::ApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        for (method, path) in ROUTES {
            assert!(
                json["paths"][path][method].is_object(),
                "{method} {path} is not documented in the OpenAPI document"
            );
        }
        let documented: usize = json["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|ops| ops.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "a documented route is not registered"
        );
        assert_eq!(json["openapi"], "3.1.0");
    }

    /// utoipa takes literals only: the documented limits are checked
    /// against the domain's constants, so the two cannot drift apart.
    #[test]
    fn the_documented_limits_are_the_domains() {
        use jit_domain::{Justification, RoleName, UserName};
        let doc = serde_json::to_value(super::openapi::ApiDoc::openapi()).unwrap();
        let field = |name: &str| &doc["components"]["schemas"]["GrantRequest"]["properties"][name];
        assert_eq!(field("user")["maxLength"], UserName::MAX_LEN);
        assert_eq!(field("role")["maxLength"], RoleName::MAX_LEN);
        assert_eq!(field("justification")["minLength"], Justification::MIN_LEN);
        assert_eq!(field("justification")["maxLength"], Justification::MAX_LEN);
    }
}
