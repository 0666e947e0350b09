//! The JSON API (`/api/v1`). Errors become HTTP here and nowhere else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use jit_app::{
    App, AppError, Extended, GrantFilter, Person, ReconcileConfig, StoreError, TicketError,
};
use jit_domain::{
    AccessRefusal, Decision, FieldError, Grant, GrantId, GrantState, SweepKind, TicketId, UserName,
    Verdict,
};
use jit_itsm::webhook::{
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookError, WebhookHeaders,
    WebhookVerifier, change_number,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::config::ApiKeyConfig;
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use crate::openapi::{
    AuditPageDoc, ErrorBody, ExtendRequest, ExtensionRequestedDoc, GrantDoc, GrantRequest, Page,
    ReviewRequest, RevokeSessionsRequest, RevokedDoc, RunDoc,
};

/// Everything the handlers share.
pub struct ApiState {
    pub app: Arc<App>,
    pub keys: Vec<ApiKeyConfig>,
    pub worker_wake: Arc<Notify>,
    pub max_body_bytes: usize,
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
}

/// How long readiness reuses ServiceNow's last answer.
const SERVICENOW_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl ApiState {
    /// Whether ServiceNow answers a Table API read (one lookup of a change
    /// that does not exist, at most every 30 s, 3 s at most).
    async fn servicenow_state(&self) -> String {
        if !self.ticket_system_configured {
            return "not configured".into();
        }
        let mut seen = self.servicenow_seen.lock().await;
        if let Some((at, state)) = seen.as_ref()
            && at.elapsed() < SERVICENOW_PROBE_EVERY
        {
            return state.clone();
        }
        let probe = TicketId::parse("CHG0000000")
            .map(|id| async move { self.app.tickets.change(&id).await });
        let state = match probe {
            Ok(lookup) => {
                match tokio::time::timeout(std::time::Duration::from_secs(3), lookup).await {
                    Ok(Ok(_)) => "reachable".to_owned(),
                    Ok(Err(e)) => format!("unreachable: {e}"),
                    Err(_) => "unreachable: no answer within 3 s".to_owned(),
                }
            }
            Err(e) => format!("unknown: {}", e.message),
        };
        *seen = Some((std::time::Instant::now(), state.clone()));
        state
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request breaks {} rule(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is not valid JSON: the body is empty")]
    EmptyBody,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// An ID token from the provider that cannot vouch for a person (its
    /// claims, signature, audience or expiry); the reason names the rule.
    #[error("{0}")]
    BadIdToken(String),
    #[error("this API key may not do that (admin = true is required)")]
    Forbidden,
    #[error(
        "only a person may do that: send an ID token from the identity provider as the bearer token, not an API key"
    )]
    PersonRequired,
    /// A rule refused an approver's answer or an extension by whom it came from.
    #[error("{message}")]
    Refused {
        rule: &'static str,
        message: String,
        forbidden: bool,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The policy refused: the denied clauses, and every clause evaluated.
    #[error("the policy refuses this grant")]
    Denied(Box<Decision>),
    #[error("{0}; nothing was granted")]
    TicketSystemUnavailable(String),
    #[error("the webhook delivery is refused: {0}")]
    Webhook(WebhookError),
    #[error("the webhook is not configured (servicenow.webhook_secret)")]
    WebhookDisabled,
    #[error("internal error")]
    Internal(String),
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(fields) => Self::Invalid(fields),
            AppError::GrantNotFound(_) => Self::NotFound(e.to_string()),
            AppError::Conflict(_) => Self::Conflict(e.to_string()),
            AppError::Refused(r) => Self::Refused {
                forbidden: r.is_forbidden(),
                rule: r.rule,
                message: r.message,
            },
            AppError::Denied(decision) => Self::Denied(decision),
            AppError::TicketSystem(TicketError::Unavailable(why)) => {
                Self::TicketSystemUnavailable(format!("cannot check the change ticket: {why}"))
            }
            AppError::Store(StoreError::Duplicate(what)) => Self::Conflict(what),
            AppError::Busy(what) => Self::Conflict(what),
            AppError::NotFound(what) => Self::NotFound(what),
            AppError::Access(AccessRefusal::NotFound) => Self::NotFound("grant not found".into()),
            AppError::Access(AccessRefusal::Forbidden { rule, message }) => Self::Refused {
                rule,
                message,
                forbidden: true,
            },
            AppError::Directory(e) => Self::Internal(e.to_string()),
            AppError::Store(inner) => Self::Internal(inner.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedJson(_) | Self::EmptyBody => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized | Self::BadIdToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::PersonRequired => StatusCode::FORBIDDEN,
            Self::Refused {
                forbidden: true, ..
            } => StatusCode::FORBIDDEN,
            Self::Refused { .. } => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::TicketSystemUnavailable(_) | Self::WebhookDisabled => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Webhook(WebhookError::BadBody(_)) => StatusCode::BAD_REQUEST,
            Self::Webhook(_) => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (code, fields) = match self {
            Self::Invalid(fields) => ("invalid_request", fields.clone()),
            Self::MalformedJson(_) | Self::EmptyBody => (
                "malformed_json",
                vec![FieldError::new("", "json", self.to_string())],
            ),
            Self::TooLarge(n) => (
                "body_too_large",
                vec![FieldError::new(
                    "",
                    "max_body_bytes",
                    format!("must be at most {n} bytes"),
                )],
            ),
            Self::Unauthorized => ("unauthorized", vec![]),
            Self::BadIdToken(why) => (
                "unauthorized",
                vec![FieldError::new("Authorization", "id_token", why.clone())],
            ),
            Self::Forbidden | Self::PersonRequired => ("forbidden", vec![]),
            Self::Refused { rule, message, .. } => (
                "refused",
                vec![FieldError::new("approver", rule, message.clone())],
            ),
            Self::NotFound(_) => ("not_found", vec![]),
            Self::Conflict(_) => ("conflict", vec![]),
            Self::Denied(decision) => {
                let body = json!({"error": {
                    "code": "denied", "message": self.to_string(), "fields": decision.denials(),
                    "reasons": decision.reasons,
                }});
                return HttpResponse::Forbidden().json(body);
            }
            Self::TicketSystemUnavailable(_) => ("ticket_system_unavailable", vec![]),
            Self::WebhookDisabled => ("webhook_disabled", vec![]),
            Self::Webhook(e) => (
                "webhook_refused",
                vec![FieldError::new(e.field(), e.rule(), e.to_string())],
            ),
            Self::Internal(detail) => {
                // The detail is for operators, not callers.
                tracing::error!(error = %detail, "request failed");
                ("internal", vec![])
            }
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized | Self::BadIdToken(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response
            .json(json!({"error": {"code": code, "message": self.to_string(), "fields": fields}}))
    }
}

/// The authenticated API caller: an API key (its name is the audited actor)
/// or a person vouched for by an ID token from the identity provider.
pub struct Caller {
    pub name: String,
    admin: bool,
    pub person: Option<Person>,
}

impl Caller {
    fn admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// The caller as every use case takes it: who may do what is decided
    /// there, the same for the web form.
    pub fn as_caller(&self) -> jit_domain::Caller {
        match &self.person {
            Some(p) => jit_domain::Caller::Person {
                user: p.user.clone(),
                groups: p.groups.clone(),
            },
            None => jit_domain::Caller::Key {
                name: self.name.clone(),
                admin: self.admin,
            },
        }
    }
}

fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256` hex of a key, as the config wants it.
pub fn hash_key(key: &str) -> String {
    hex::encode(key_digest(key))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let found = (|| {
            let state = req
                .app_data::<web::Data<ApiState>>()
                .ok_or(ApiError::Unauthorized)?;
            let key = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(ApiError::Unauthorized)?;
            let digest = key_digest(key);
            // Compare against every key, in constant time, so timing says nothing.
            let mut matched: Option<&ApiKeyConfig> = None;
            for k in &state.keys {
                let mut expected = [0u8; 32];
                if hex::decode_to_slice(&k.sha256, &mut expected).is_ok()
                    && bool::from(expected.ct_eq(&digest))
                {
                    matched = Some(k);
                }
            }
            if let Some(k) = matched {
                return Ok(Caller {
                    name: k.name.clone(),
                    admin: k.admin,
                    person: None,
                });
            }
            // Not a key: an ID token from the web form's provider, if any.
            let oidc = state.bearer.as_ref().ok_or(ApiError::Unauthorized)?;
            if key.split('.').count() != 3 {
                return Err(ApiError::Unauthorized);
            }
            let person = oidc
                .verify_bearer(key)
                .map_err(|e| ApiError::BadIdToken(e.to_string()))?;
            Ok(Caller {
                name: person.user.to_string(),
                admin: false,
                person: Some(person),
            })
        })();
        std::future::ready(found)
    }
}

/// A JSON body, read up to the configured limit; errors name what was wrong.
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<ApiState>>()
            .map_or(16 * 1024, |s| s.max_body_bytes);
        let declared = declared_length(req);
        let payload = payload.take();
        Box::pin(async move {
            let body = collect_body(declared, payload, limit).await?;
            if body.is_empty() {
                return Err(ApiError::EmptyBody);
            }
            serde_json::from_slice(&body)
                .map(JsonBody)
                .map_err(|e| ApiError::MalformedJson(e.to_string()))
        })
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .service(
                resource("/grants")
                    .route(web::post().to(create_grant))
                    .route(web::get().to(list_grants)),
            )
            .service(resource("/grants/{id}").route(web::get().to(get_grant)))
            .service(resource("/grants/{id}/drop").route(web::post().to(drop_grant)))
            .service(resource("/grants/{id}/approve").route(web::post().to(approve_grant)))
            .service(resource("/grants/{id}/deny").route(web::post().to(deny_grant)))
            .service(resource("/grants/{id}/extend").route(web::post().to(extend_grant)))
            .service(resource("/approvals").route(web::get().to(my_approvals)))
            .service(resource("/reconcile").route(web::post().to(start_reconcile)))
            .service(resource("/reconcile/runs").route(web::get().to(list_runs)))
            .service(resource("/reconcile/runs/{id}").route(web::get().to(get_run)))
            .service(resource("/audit").route(web::get().to(audit_events)))
            .service(resource("/sessions/revoke").route(web::post().to(revoke_sessions)))
            .service(resource("/openapi.json").route(web::get().to(openapi_json))),
    )
    .service(resource("/webhooks/servicenow").route(web::post().to(servicenow_webhook)))
    .service(resource("/healthz").route(web::get().to(healthz)))
    .service(resource("/readyz").route(web::get().to(readyz)))
    .service(resource("/metrics").route(web::get().to(metrics_page)));
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
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "the document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> HttpResponse {
    use utoipa::OpenApi;
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "the process answers")))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the database answers and is migrated, and the worker's loop
/// is going round. How the directory and ServiceNow are doing is reported
/// without gating it (the broker queues work for them either way).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "ready"), (status = 503, description = "not ready: the body says which check failed")))]
pub(crate) async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let expected = jit_store::migration_versions().0.last().copied();
    let (database, schema_ok, applied) = match state.app.store.schema_version().await {
        Ok(applied) => ("ok".to_owned(), applied >= expected, applied),
        Err(e) => (format!("unreachable: {e}"), false, None),
    };
    let worker = state.pulse.alive();
    let ready = database == "ok" && schema_ok && worker;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "database": database,
            "schema": {"applied": applied, "expected": expected, "ok": schema_ok},
            "worker": if worker { "running" } else { "stalled or not started" },
        },
        "info": {
            "directory": if state.pulse.target_down() {
                "unreachable: the last job could not reach it; a probe asks every 500 ms"
            } else {
                "reachable as far as the last job knows"
            },
            "servicenow": state.servicenow_state().await,
        },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `/metrics` in Prometheus text format: the counters and histograms the
/// broker keeps, and gauges read from the store now.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics_page(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let now = state.app.now();
    let gauges = state
        .app
        .store
        .gauges(now - state.app.revocation_slo)
        .await
        .map_err(AppError::from)?;
    for (grant_state, n) in &gauges.grants_by_state {
        metrics::gauge!("jit_grants", "state" => grant_state.clone()).set(*n as f64);
    }
    metrics::gauge!("jit_revocations_overdue").set(gauges.overdue_revocations as f64);
    metrics::gauge!("jit_outbox_pending").set(gauges.outbox_pending as f64);
    let oldest = gauges
        .outbox_oldest
        .map_or(0.0, |t| (now - t).num_milliseconds() as f64 / 1000.0);
    metrics::gauge!("jit_outbox_oldest_age_seconds").set(oldest.max(0.0));
    state.metrics.run_upkeep();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}

fn parse_id(raw: &str) -> Result<GrantId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::Invalid(vec![FieldError::new(
            "id",
            "format",
            "must be a grant id (UUID)",
        )])
    })
}

#[utoipa::path(post, path = "/api/v1/grants", tag = "grants", request_body = GrantRequest,
    responses((status = 201, description = "granted, or waiting for approval", body = GrantDoc),
              (status = 400, description = "not JSON", body = ErrorBody),
              (status = 403, description = "denied by the policy: every clause in `reasons`", body = ErrorBody),
              (status = 401, description = "no or bad credentials", body = ErrorBody),
              (status = 409, description = "a conflicting grant", body = ErrorBody),
              (status = 413, description = "body too large", body = ErrorBody),
              (status = 422, description = "a field breaks a rule", body = ErrorBody),
              (status = 503, description = "ServiceNow could not be asked", body = ErrorBody)))]
pub(crate) async fn create_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = state
        .app
        .request_grant_by(&caller.as_caller(), "api", &body.0)
        .await?;
    if grant.starts_at <= state.app.now() {
        state.worker_wake.notify_one();
    }
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/grants/{}", grant.id)))
        .json(&grant))
}

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
    if caller.person.is_none() {
        return Err(ApiError::PersonRequired);
    }
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
    responses((status = 200, description = "the grant after the answer", body = GrantDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "answered twice, not pending or lapsed", body = ErrorBody), (status = 422, description = "a field breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn approve_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    review(state, caller, id, body, Verdict::Approve).await
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/deny", tag = "approvals", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ReviewRequest,
    responses((status = 200, description = "denied", body = GrantDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "answered twice, not pending or lapsed", body = ErrorBody), (status = 422, description = "a comment is required", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn deny_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: Result<JsonBody, ApiError>,
) -> Result<HttpResponse, ApiError> {
    review(state, caller, id, body, Verdict::Deny).await
}

/// `{"until": RFC 3339}` or `{"by": "30m"}`. A person extends only their own
/// grant; an API key (automation) any.
#[utoipa::path(post, path = "/api/v1/grants/{id}/extend", tag = "grants", params(("id" = String, Path, description = "grant id (UUID)", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")), request_body = ExtendRequest,
    responses((status = 200, description = "extended", body = GrantDoc), (status = 202, description = "the role needs approval to extend: a request waits for its approvers; the end is unchanged", body = ExtensionRequestedDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "not active", body = ErrorBody), (status = 422, description = "past max_duration or the change window", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn extend_grant(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match state
        .app
        .extend_grant(&caller.as_caller(), id, &body.0)
        .await?
    {
        Extended::Moved { grant } => Ok(HttpResponse::Ok().json(&grant)),
        // The end stays until the role's approvers agree.
        Extended::Requested { grant, extension } => {
            Ok(HttpResponse::Accepted().json(json!({"grant": grant, "extension": extension})))
        }
    }
}

/// Requests waiting for the calling person's answer.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    responses((status = 200, description = "requests waiting for the caller's answer", body = Page), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn my_approvals(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    if caller.person.is_none() {
        return Err(ApiError::PersonRequired);
    }
    let items = state.app.awaiting_answer_by(&caller.as_caller()).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
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

const MAX_PAGE: u32 = 200;

/// A page size from the query: 1 to [`MAX_PAGE`], else a 422 naming `limit`.
fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::Invalid(vec![FieldError::new(
            "limit",
            "range",
            format!("must be between 1 and {MAX_PAGE}"),
        )]))
    }
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
    responses((status = 200, description = "ended; the role is removed", body = GrantDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 404, description = "no such grant", body = ErrorBody), (status = 409, description = "already ended", body = ErrorBody), (status = 422, description = "not a grant id", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
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

/// `POST /api/v1/sessions/revoke {"user": …}`: ends every web session of a
/// person at once, on every replica (admin keys; the SOC and the person
/// themselves through an ID token). Audited.
#[utoipa::path(post, path = "/api/v1/sessions/revoke", tag = "sessions", request_body = RevokeSessionsRequest,
    responses((status = 200, description = "how many sessions ended", body = RevokedDoc), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 422, description = "a field breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
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

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
}

/// Reads a raw body up to `limit` bytes, refusing early on a declared length.
async fn collect_body<S, E>(
    declared: Option<usize>,
    mut payload: S,
    limit: usize,
) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `POST /webhooks/servicenow`: a change-request record from a Business Rule
/// or Flow. Authenticated by signature before anything else is looked at;
/// nothing is written for a refused delivery; a replayed delivery id gets the
/// first answer again (with `X-JIT-Replayed: true`) and changes nothing.
#[utoipa::path(post, path = "/webhooks/servicenow", tag = "webhooks", security(()),
    request_body(content = Object, description = "a change_request record; only `number` is read"),
    responses((status = 200, description = "handled (X-JIT-Replayed: true for a repeat)"), (status = 400, description = "not a change record", body = ErrorBody),
              (status = 401, description = "signature, timestamp or delivery id refused", body = ErrorBody), (status = 503, description = "no webhook secret configured, or ServiceNow unreachable", body = ErrorBody)))]
pub(crate) async fn servicenow_webhook(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let answer = handle_servicenow_webhook(state, req, payload).await;
    let result = match &answer {
        Ok(r) if r.headers().contains_key("x-jit-replayed") => "replayed".to_owned(),
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => e.status_code().as_u16().to_string(),
    };
    metrics::counter!("jit_servicenow_webhook_deliveries_total", "result" => result).increment(1);
    answer
}

async fn handle_servicenow_webhook(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let verifier = state.webhook.as_ref().ok_or(ApiError::WebhookDisabled)?;
    let body = collect_body(declared_length(&req), payload, state.max_body_bytes).await?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = WebhookHeaders {
        timestamp: header(TIMESTAMP_HEADER),
        delivery: header(DELIVERY_HEADER),
        signature: header(SIGNATURE_HEADER),
    };
    let delivery = verifier
        .verify(headers, &body, state.app.now())
        .map_err(|e| {
            jit_app::warn_throttled!("servicenow_webhook_refused", error = %e, "servicenow webhook refused");
            ApiError::Webhook(e)
        })?;
    let number = change_number(&body).map_err(ApiError::Webhook)?;
    let answer = state
        .app
        .handle_change_webhook(&delivery.delivery_id, &number)
        .await?;
    state.worker_wake.notify_one();
    let mut response = HttpResponse::Ok();
    if answer.replayed {
        response.insert_header(("X-JIT-Replayed", "true"));
    }
    Ok(response.json(answer.body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileQuery {
    #[serde(default)]
    dry_run: bool,
    /// Answer when the sweep has finished (200 with its findings) instead of
    /// at once (202 with the running run).
    #[serde(default)]
    wait: bool,
    /// `deep` (every user; the default) or `holders` (who holds each
    /// privileged role).
    #[serde(default = "deep")]
    kind: SweepKind,
}

fn deep() -> SweepKind {
    SweepKind::Deep
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::Invalid(vec![FieldError::new("query", "format", e.to_string())]))
}

/// `POST /api/v1/reconcile?kind=&dry_run=&wait=`: an on-demand sweep (admin keys).
#[utoipa::path(post, path = "/api/v1/reconcile", tag = "reconciler",
    params(("kind" = Option<String>, Query, description = "deep (default) or holders"), ("dry_run" = Option<bool>, Query), ("wait" = Option<bool>, Query, description = "answer when finished")),
    responses((status = 200, description = "finished, with findings", body = RunDoc), (status = 202, description = "started", body = RunDoc), (status = 409, description = "a sweep of that kind is running", body = ErrorBody), (status = 400, description = "a body that is not JSON", body = ErrorBody), (status = 422, description = "a parameter breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn start_reconcile(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.admin()?;
    let q: ReconcileQuery = query(&req)?;
    let app = state.app.clone();
    let run = app
        .begin_reconcile(
            q.kind,
            &format!("api:{}", caller.name),
            q.dry_run,
            &state.owner,
            &state.reconcile,
        )
        .await?;
    if q.wait {
        let run = app
            .run_reconcile(run, &state.owner, &state.reconcile)
            .await?;
        let (run, findings) = app.reconcile_run(&run.id).await?;
        return Ok(HttpResponse::Ok().json(json!({"run": run, "findings": findings})));
    }
    let (owner, config, started) = (state.owner.clone(), state.reconcile.clone(), run.clone());
    tokio::spawn(async move {
        if let Err(e) = app.run_reconcile(started, &owner, &config).await {
            tracing::error!(error = %e, "reconcile sweep failed");
        }
    });
    Ok(HttpResponse::Accepted()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/reconcile/runs/{}", run.id),
        ))
        .json(json!({"run": run})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// RFC 3339: events at or after it.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339: events before it.
    until: Option<chrono::DateTime<chrono::Utc>>,
    grant: Option<String>,
    user: Option<String>,
    /// The `next_cursor` of the page before (a `seq`).
    cursor: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/v1/audit?since=&until=&grant=&user=&cursor=&limit=`: the audit
/// log page by page, as `jit-broker audit export` writes it (admin keys).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("since" = Option<String>, Query, description = "RFC 3339", format = DateTime), ("until" = Option<String>, Query, description = "RFC 3339", format = DateTime), ("grant" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), ("user" = Option<String>, Query),
           ("cursor" = Option<i64>, Query, description = "next_cursor of the page before", minimum = 0), ("limit" = Option<u32>, Query, minimum = 1, maximum = 200)),
    responses((status = 200, description = "events with seq, prev_hash, hash", body = AuditPageDoc), (status = 422, description = "a parameter breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn audit_events(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.admin()?;
    let q: AuditQuery = query(&req)?;
    let grant = q.grant.as_deref().map(parse_id).transpose()?;
    if q.cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "cursor",
            "range",
            "must be a next_cursor from an earlier page (0 or more)",
        )]));
    }
    let filter = jit_app::AuditFilter {
        since: q.since,
        until: q.until,
        grant,
        user: q.user,
    };
    let page = state
        .app
        .audit_page(&filter, q.cursor.unwrap_or(0), page_limit(q.limit, 100)?)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"items": page.events, "next_cursor": page.next_cursor})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/reconcile/runs", tag = "reconciler", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 200)),
    responses((status = 200, description = "sweeps, newest first", body = Page), (status = 422, description = "a parameter breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn list_runs(
    state: web::Data<ApiState>,
    _caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: RunsQuery = query(&req)?;
    let runs = state.app.reconcile_runs(page_limit(q.limit, 20)?).await?;
    Ok(HttpResponse::Ok().json(json!({"items": runs})))
}

#[utoipa::path(get, path = "/api/v1/reconcile/runs/{id}", tag = "reconciler", params(("id" = String, Path)),
    responses((status = 200, description = "the run and its findings", body = RunDoc), (status = 404, description = "no such run", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn get_run(
    state: web::Data<ApiState>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, findings) = state.app.reconcile_run(&id).await?;
    Ok(HttpResponse::Ok().json(json!({"run": run, "findings": findings})))
}

#[cfg(test)]
mod tests {
    use super::ROUTES;
    use utoipa::OpenApi;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = crate::openapi::ApiDoc::openapi();
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
}
