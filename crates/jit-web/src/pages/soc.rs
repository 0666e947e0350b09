//! The SOC view: grants across the org, overdue revocations, incidents,
//! sweeps, and ending a person's sessions.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use jit_app::{GrantFilter, ReconcileRun};
use jit_domain::GrantState;
use serde::Deserialize;

use super::{GrantView, Nav, html};
use crate::session::SignedIn;
use crate::{Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/soc", web::get().to(soc_page));
}

#[derive(Template)]
#[template(path = "soc.html")]
struct SocPage {
    nav: Nav,
    /// After "end sessions": whose, and how many ended.
    ended: Option<(String, u64)>,
    active: Vec<GrantView>,
    overdue: Vec<GrantView>,
    incidents: Vec<jit_app::Incident>,
    runs: Vec<ReconcileRun>,
}

#[derive(Deserialize)]
struct SocQuery {
    sessions_ended: Option<u64>,
    user: Option<String>,
}

async fn soc_page(
    web: web::Data<Web>,
    who: SignedIn,
    query: web::Query<SocQuery>,
) -> Result<HttpResponse, WebError> {
    if !who.soc {
        return Err(WebError::Forbidden(format!(
            "the SOC view is for members of `{}`",
            web.app.soc_group
        )));
    }
    let now = web.app.now();
    let caller = who.caller();
    let list = |state| GrantFilter {
        state: Some(state),
        limit: 500,
        ..GrantFilter::default()
    };
    let active = web
        .app
        .list_grants(&caller, list(GrantState::Active))
        .await?;
    let ended = web
        .app
        .list_grants(&caller, list(GrantState::Ended))
        .await?;
    let slo = web.app.revocation_slo;
    let overdue = ended
        .iter()
        .filter(|g| g.revocation_overdue(now, slo).is_some())
        .map(|g| GrantView::of(g, &web, now))
        .collect();
    html(
        StatusCode::OK,
        &SocPage {
            nav: Nav::new(&who, "soc"),
            ended: query
                .sessions_ended
                .zip(query.user.clone())
                .map(|(n, u)| (u, n)),
            active: active.iter().map(|g| GrantView::of(g, &web, now)).collect(),
            overdue,
            incidents: web.app.open_incidents().await?,
            runs: web.app.view_reconcile_runs(&caller, 10).await?,
        },
    )
}
