//! Request elevation: the roles this person may hold, their live changes
//! as a pick-list, and every refusal next to its field.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use jit_app::AppError;
use jit_domain::policy::format_duration;
use jit_domain::{Given, GrantRequestForm, RolePolicy};
use serde::Deserialize;

use super::{Msg, Nav, html, see_other, when_opt};
use crate::session::SignedIn;
use crate::{Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(request_page))
        .route("/request", web::post().to(submit_request));
}

pub struct RoleOption {
    pub name: String,
    pub default: String,
    pub max: String,
    pub approvals: u8,
    pub selected: bool,
}

pub struct ChangeOption {
    pub number: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    nav: Nav,
    roles: Vec<RoleOption>,
    changes: Vec<ChangeOption>,
    changes_note: String,
    form: RequestForm,
    errors: Vec<Msg>,
}

impl RequestPage {
    /// A field's errors; who may hold a role (`user`) is shown at the role,
    /// the one choice the person can change.
    fn errors_for(&self, field: &str) -> Vec<&Msg> {
        self.errors
            .iter()
            .filter(|e| e.field == field || (field == "role" && e.field == "user"))
            .collect()
    }

    fn other_errors(&self) -> Vec<&Msg> {
        const SHOWN: [&str; 6] = [
            "user",
            "role",
            "ticket",
            "duration",
            "starts_at",
            "justification",
        ];
        self.errors
            .iter()
            .filter(|e| !SHOWN.contains(&e.field.as_str()))
            .collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub ticket: String,
    #[serde(default)]
    pub ticket_other: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub justification: String,
    #[serde(default)]
    pub csrf: String,
}

impl RequestForm {
    /// The grant-request command, as the API's JSON would give it. The
    /// user is left to the caller's identity (a person asks for themselves).
    fn command(&self) -> GrantRequestForm {
        let ticket = match self.ticket_other.trim() {
            "" => self.ticket.trim(),
            typed => typed,
        };
        let start = self.starts_at.trim();
        // `datetime-local` sends no zone: the form says the time is UTC.
        let start = match start.len() {
            0 => String::new(),
            16 => format!("{start}:00Z"),
            _ => format!("{start}Z"),
        };
        GrantRequestForm {
            role: Given::Text(self.role.clone()),
            justification: Given::Text(self.justification.clone()),
            ticket: Given::text_or_absent(ticket),
            duration: Given::text_or_absent(&self.duration),
            starts_at: Given::text_or_absent(&start),
            ..GrantRequestForm::default()
        }
    }
}

async fn render_request(
    web: &Web,
    who: &SignedIn,
    form: RequestForm,
    errors: Vec<Msg>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let roles: Vec<&RolePolicy> = web.app.eligible_roles(&who.person);
    let mut form = form;
    let chosen = if form.role.is_empty() {
        roles
            .first()
            .map(|r| r.name.to_string())
            .unwrap_or_default()
    } else {
        form.role.clone()
    };
    // The chosen role's default duration, filled in.
    if form.duration.trim().is_empty()
        && let Some(r) = roles.iter().find(|r| r.name.as_str() == chosen)
    {
        form.duration = format_duration(r.default_duration);
    }
    let (changes, changes_note) = match web.app.candidate_changes(&who.person).await {
        Ok(list) => {
            let note = if list.is_empty() {
                "No approved change assigned to you can be used right now; type a change number below."
                    .to_owned()
            } else {
                String::new()
            };
            let options = list
                .into_iter()
                .map(|c| ChangeOption {
                    selected: form.ticket == c.number.as_str(),
                    label: format!(
                        "{} · {} · until {}{}",
                        c.number,
                        c.state.map_or(c.state_code.as_str(), |s| s.as_str()),
                        when_opt(c.end_date),
                        if c.roles.is_empty() {
                            String::new()
                        } else {
                            format!(" · for {}", c.roles.join(", "))
                        }
                    ),
                    number: c.number.to_string(),
                })
                .collect();
            (options, note)
        }
        Err(e) => (
            Vec::new(),
            format!(
                "Your changes could not be read from ServiceNow ({e}); type a change number below."
            ),
        ),
    };
    let page = RequestPage {
        nav: Nav::new(who, "request"),
        roles: roles
            .iter()
            .map(|r| RoleOption {
                name: r.name.to_string(),
                default: format_duration(r.default_duration),
                max: format_duration(r.max_duration),
                approvals: r.approvals,
                selected: r.name.as_str() == chosen,
            })
            .collect(),
        changes,
        changes_note,
        form,
        errors,
    };
    html(status, &page)
}

async fn request_page(web: web::Data<Web>, who: SignedIn) -> Result<HttpResponse, WebError> {
    render_request(
        &web,
        &who,
        RequestForm::default(),
        Vec::new(),
        StatusCode::OK,
    )
    .await
}

async fn submit_request(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    form: web::Form<RequestForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let form = form.into_inner();
    match web
        .app
        .request_grant_by(&who.caller(), "web", &form.command())
        .await
    {
        Ok(grant) => {
            if grant.starts_at <= web.app.now() {
                web.wake_worker.notify_one();
            }
            Ok(see_other(&format!("/grants/{}", grant.id)))
        }
        Err(AppError::Invalid(fields)) => {
            let errors = fields.into_iter().map(Msg::from).collect();
            render_request(&web, &who, form, errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(AppError::Denied(decision)) => {
            let errors = decision.denials().into_iter().map(Msg::from).collect();
            render_request(&web, &who, form, errors, StatusCode::FORBIDDEN).await
        }
        Err(e) => Err(e.into()),
    }
}
