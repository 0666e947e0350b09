//! Operations: the OpenAPI document, liveness, readiness, metrics.

use actix_web::{HttpResponse, web};
use jit_app::AppError;
use jit_domain::TicketId;
use serde_json::json;

use super::{ApiError, ApiState};

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "the document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> HttpResponse {
    use utoipa::OpenApi;
    HttpResponse::Ok().json(super::openapi::ApiDoc::openapi())
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
    // Revocations overdue: the revocation path is starved or the target
    // refuses them, which `/healthz` cannot see.
    let now = state.app.now();
    let overdue = match state.app.store.gauges(now - state.app.revocation_slo).await {
        Ok(g) => Some(g.overdue_revocations),
        Err(_) => None,
    };
    let revocations_ok = overdue == Some(0);
    let ready = database == "ok" && schema_ok && worker && revocations_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "database": database,
            "schema": {"applied": applied, "expected": expected, "ok": schema_ok},
            "worker": if worker { "running" } else { "stalled or not started" },
            "revocations": match overdue {
                Some(0) => "none overdue".to_owned(),
                Some(n) => format!("{n} overdue (a role still held past the SLO after its grant ended)"),
                None => "unknown: the database did not answer".to_owned(),
            },
        },
        "info": {
            "directory": if state.pulse.target_down() {
                "unreachable: the last job could not reach it; a probe asks every 500 ms"
            } else {
                "reachable as far as the last job knows"
            },
            "servicenow": state.servicenow_state().await,
            "directory_permissions": state.permissions_state(),
            "files": state.files,
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

/// How long readiness reuses ServiceNow's last answer.
const SERVICENOW_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl ApiState {
    /// The start-up permission probe: each feature and what it found.
    fn permissions_state(&self) -> serde_json::Value {
        match &*self.permissions.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(probes) => json!(probes),
            None => json!(
                "not checked (the generic SCIM profile has none to check, or the probe has not finished)"
            ),
        }
    }

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
