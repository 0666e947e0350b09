//! Sweeps on demand and their runs.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use jit_domain::SweepKind;
use serde::Deserialize;
use serde_json::json;

use super::body::{page_limit, query};
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::{ErrorBody, Page, RunDoc};
use super::{ApiError, ApiState, Caller};

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
struct RunsQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/reconcile/runs", tag = "reconciler", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 200)),
    responses((status = 200, description = "sweeps, newest first", body = Page), (status = 422, description = "a parameter breaks a rule", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn list_runs(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: RunsQuery = query(&req)?;
    let runs = state
        .app
        .view_reconcile_runs(&caller.as_caller(), page_limit(q.limit, 20)?)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"items": runs})))
}

#[utoipa::path(get, path = "/api/v1/reconcile/runs/{id}", tag = "reconciler", params(("id" = String, Path)),
    responses((status = 200, description = "the run and its findings", body = RunDoc), (status = 404, description = "no such run", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody)))]
pub(crate) async fn get_run(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, findings) = state
        .app
        .view_reconcile_run(&caller.as_caller(), &id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"run": run, "findings": findings})))
}
