//! One grant: the decision clause by clause, the ticket, the answers, what
//! was done with the privilege, and the audit trail.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{GrantView, Nav, html, parse_id, see_other, when, when_opt};
use crate::session::SignedIn;
use crate::{Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/grants/{id}", web::get().to(grant_page))
        .route("/grants/{id}/activity", web::post().to(look_now));
}

/// Actions of one kind on one kind of entity in one service.
pub struct ActionGroup {
    pub service: String,
    pub entity_type: String,
    pub action: String,
    /// (entity name, time), oldest first.
    pub items: Vec<(String, String)>,
}

/// What was done with the privilege, as the page shows it.
pub struct ActivityView {
    /// The target keeps an audit trail (else nothing is collected).
    pub supported: bool,
    pub total: usize,
    pub groups: Vec<ActionGroup>,
    /// One line per pass: "preliminary: done at …", "final 1: due at …".
    pub passes: Vec<String>,
    pub digest: String,
    /// The role is held now: the trail can be read on demand.
    pub can_look: bool,
}

impl ActivityView {
    fn of(a: &jit_app::Activity, can_look: bool) -> Self {
        let groups = a
            .grouped()
            .into_iter()
            .flat_map(|(service, by_type)| {
                by_type
                    .into_iter()
                    .flat_map(move |(entity_type, by_action)| {
                        let service = service.clone();
                        by_action
                            .into_iter()
                            .map(move |(action, events)| ActionGroup {
                                service: service.clone(),
                                entity_type: entity_type.clone(),
                                action,
                                items: events
                                    .iter()
                                    .map(|e| {
                                        let name = if e.entity_name.is_empty() {
                                            e.entity_id.clone()
                                        } else {
                                            e.entity_name.clone()
                                        };
                                        (name, when(e.at))
                                    })
                                    .collect(),
                            })
                    })
            })
            .collect();
        let passes = a
            .passes
            .iter()
            .map(|p| {
                let name = jit_domain::activity::pass_name(p.pass);
                match (&p.done_at, &p.last_error) {
                    (Some(done), None) => format!("{name}: read at {}", when(*done)),
                    (Some(done), Some(e)) => format!("{name}: gave up at {} ({e})", when(*done)),
                    (None, Some(e)) => format!("{name}: retrying ({e})"),
                    (None, None) => format!("{name}: due at {}", when(p.due_at)),
                }
            })
            .collect();
        Self {
            supported: !a.unsupported,
            total: a.events.len(),
            groups,
            passes,
            digest: a.digest.clone(),
            can_look: can_look && !a.unsupported,
        }
    }
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
    activity: ActivityView,
}

#[derive(Deserialize)]
struct LookForm {
    #[serde(default)]
    csrf: String,
}

/// Reads a live grant's activity from the audit trail now.
async fn look_now(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<LookForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    web.app.look_at_activity_as(&who.caller(), id).await?;
    Ok(see_other(&format!("/grants/{id}#activity")))
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
    let held = grant.held_since().is_some();
    let activity = ActivityView::of(&web.app.view_activity(&who.caller(), id).await?, held);
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
            activity,
        },
    )
}
