//! Approvals: what waits for this person's answer.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use jit_domain::{GrantState, Verdict};
use serde::Deserialize;

use super::{GrantView, Nav, html, parse_id, see_other};
use crate::session::SignedIn;
use crate::{Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/approvals", web::get().to(approvals_page))
        .route("/grants/{id}/review", web::post().to(review_grant));
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    waiting: Vec<GrantView>,
}

async fn approvals_page(web: web::Data<Web>, who: SignedIn) -> Result<HttpResponse, WebError> {
    let now = web.app.now();
    let waiting = web
        .app
        .awaiting_answer_by(&who.caller())
        .await?
        .iter()
        .map(|w| GrantView::of(&w.grant, &web, now).with_extension(w.extension.as_ref()))
        .collect();
    html(
        StatusCode::OK,
        &ApprovalsPage {
            nav: Nav::new(&who, "approvals"),
            waiting,
        },
    )
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    comment: String,
}

async fn review_grant(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<ReviewForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    let verdict: Verdict = form
        .verdict
        .parse()
        .map_err(|_| WebError::Conflict("choose approve or deny".into()))?;
    let grant = web
        .app
        .answer(&who.caller(), id, verdict, &form.comment)
        .await?;
    if grant.state == GrantState::Approved {
        web.wake_worker.notify_one();
    }
    Ok(see_other("/approvals"))
}
