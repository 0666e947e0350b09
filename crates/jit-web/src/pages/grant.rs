//! One grant: the decision clause by clause, the ticket, the answers and
//! the audit trail.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::{GrantView, Nav, html, parse_id, when, when_opt};
use crate::session::SignedIn;
use crate::{Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/grants/{id}", web::get().to(grant_page));
}

pub struct ReasonView {
    pub allowed: bool,
    pub clause: String,
    pub message: String,
}

pub struct EventView {
    pub at: String,
    pub actor: String,
    pub kind: String,
    pub seq: i64,
}

pub struct ReviewView {
    pub approver: String,
    pub verdict: String,
    pub comment: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "grant.html")]
struct GrantPage {
    nav: Nav,
    g: GrantView,
    own: bool,
    reasons: Vec<ReasonView>,
    ticket: Vec<(String, String)>,
    reviews: Vec<ReviewView>,
    events: Vec<EventView>,
}

async fn grant_page(
    web: web::Data<Web>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let grant = web.app.view_grant(&who.caller(), id).await?;
    let own = grant.user == who.person.user;
    let now = web.app.now();
    let extension = web.app.waiting_extension(&grant).await?;
    let reasons = grant
        .decision
        .as_ref()
        .map(|d| {
            d.reasons
                .iter()
                .map(|r| ReasonView {
                    allowed: r.allowed,
                    clause: r.clause.clone(),
                    message: r.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let ticket = grant
        .ticket_snapshot
        .as_ref()
        .map(|t| {
            vec![
                ("Change".to_owned(), t.number.to_string()),
                (
                    "State".to_owned(),
                    t.state.map_or(t.state_code.clone(), |s| s.to_string()),
                ),
                ("Approval".to_owned(), t.approval.clone()),
                (
                    "Window".to_owned(),
                    format!("{} – {}", when_opt(t.start_date), when_opt(t.end_date)),
                ),
                (
                    "Assigned to".to_owned(),
                    t.assigned_to
                        .as_ref()
                        .and_then(|p| p.email.clone().or_else(|| p.user_name.clone()))
                        .unwrap_or_else(|| "—".into()),
                ),
                ("Type".to_owned(), t.change_type.clone()),
                ("Read at".to_owned(), when(t.read_at)),
            ]
        })
        .unwrap_or_default();
    let reviews = web
        .app
        .reviews(id)
        .await?
        .into_iter()
        .map(|r| ReviewView {
            approver: r.approver.to_string(),
            verdict: r.verdict.to_string(),
            comment: r.comment,
            at: when(r.at),
        })
        .collect();
    let events = web
        .app
        .grant_audit(id)
        .await?
        .into_iter()
        .map(|e| EventView {
            at: when(e.at),
            actor: e.actor,
            kind: e.kind,
            seq: e.seq,
        })
        .collect();
    html(
        StatusCode::OK,
        &GrantPage {
            nav: Nav::new(&who, "access"),
            g: GrantView::of(&grant, &web, now).with_extension(extension.as_ref()),
            own,
            reasons,
            ticket,
            reviews,
            events,
        },
    )
}
