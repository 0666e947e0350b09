//! My access: live grants with their countdown, drop and extend.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use jit_app::{Extended, GrantFilter};
use jit_domain::{ExtensionForm, Given, GrantState};
use serde::Deserialize;

use super::{GrantView, Nav, html, parse_id, see_other};
use crate::session::SignedIn;
use crate::{Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/access", web::get().to(my_access))
        .route("/grants/{id}/drop", web::post().to(drop_grant))
        .route("/grants/{id}/extend", web::post().to(extend_grant));
}

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    nav: Nav,
    pending: Vec<GrantView>,
    active: Vec<GrantView>,
    recent: Vec<GrantView>,
}

async fn my_access(web: web::Data<Web>, who: SignedIn) -> Result<HttpResponse, WebError> {
    let grants = web
        .app
        .list_grants(
            &who.caller(),
            GrantFilter {
                user: Some(who.person.user.clone()),
                limit: 50,
                ..GrantFilter::default()
            },
        )
        .await?;
    let now = web.app.now();
    let (mut pending, mut active, mut recent) = (Vec::new(), Vec::new(), Vec::new());
    for g in &grants {
        let view = GrantView::of(g, &web, now);
        if g.state == GrantState::PendingApproval {
            pending.push(view);
        } else if g.is_live(now) {
            let extension = web.app.waiting_extension(g).await?;
            active.push(view.with_extension(extension.as_ref()));
        } else {
            recent.push(view);
        }
    }
    recent.truncate(20);
    html(
        StatusCode::OK,
        &AccessPage {
            nav: Nav::new(&who, "access"),
            pending,
            active,
            recent,
        },
    )
}

#[derive(Deserialize)]
struct DropForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn drop_grant(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<DropForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    web.app.drop_grant(&who.caller(), id, &form.reason).await?;
    web.wake_worker.notify_one();
    Ok(see_other("/access"))
}

#[derive(Deserialize)]
struct ExtendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    by: String,
}

async fn extend_grant(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<ExtendForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    let extended = web
        .app
        .extend_grant(
            &who.caller(),
            id,
            &ExtensionForm {
                by: Given::text_or_absent(&form.by),
                ..ExtensionForm::default()
            },
        )
        .await?;
    if let Extended::Requested { extension, .. } = &extended {
        tracing::info!(grant = %id, extension = %extension.id, "extension waits for approval");
    }
    Ok(see_other(&format!("/grants/{id}")))
}
