//! The pages and their forms, one file per page. Each handler reads the
//! session, calls one `jit-app` use case and renders; no rule is decided
//! here.

mod access;
mod approvals;
mod grant;
mod login;
mod request;
mod soc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, TimeDelta, Utc};
use jit_domain::{ExtensionRequest, FieldError, Grant, GrantId, GrantState};

use crate::session::SignedIn;
use crate::{Web, WebError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    request::routes(cfg);
    access::routes(cfg);
    approvals::routes(cfg);
    grant::routes(cfg);
    soc::routes(cfg);
    login::routes(cfg);
    cfg.route("/static/app.css", web::get().to(stylesheet))
        .route("/static/countdown.js", web::get().to(countdown_script));
}

/// Pages carry personal data: no cache keeps them.
pub async fn no_store_for_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let is_static = req.path().starts_with("/static/");
    let mut res = next.call(req).await?;
    if !is_static {
        crate::no_store(&mut res);
    }
    Ok(res)
}

const CSS: &str = include_str!("../../static/app.css");
const COUNTDOWN: &str = include_str!("../../static/countdown.js");

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(CSS)
}

async fn countdown_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(COUNTDOWN)
}

// ------------------------------------------------------------------ views

/// The header every signed-in page shows.
pub struct Nav {
    pub user: String,
    pub groups: String,
    pub soc: bool,
    pub csrf: String,
    pub sandbox: bool,
    pub here: &'static str,
}

impl Nav {
    pub(super) fn new(s: &SignedIn, here: &'static str) -> Self {
        Self {
            user: s.person.user.to_string(),
            groups: s
                .person
                .groups
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            soc: s.soc,
            csrf: s.csrf.clone(),
            sandbox: s.via == "sandbox",
            here,
        }
    }
}

pub(super) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(super) fn when_opt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".into(), when)
}

/// "52 min", "1 h 05 min", "ended".
pub(super) fn remaining(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = until - now;
    if left <= TimeDelta::zero() {
        return "ended".into();
    }
    let mins = (left.num_seconds() + 59) / 60;
    if mins >= 60 {
        format!("{} h {:02} min", mins / 60, mins % 60)
    } else {
        format!("{mins} min")
    }
}

/// One grant as the lists show it.
pub struct GrantView {
    pub id: String,
    pub user: String,
    pub role: String,
    pub state: String,
    pub ticket: String,
    pub justification: String,
    pub starts: String,
    pub expires: String,
    pub expires_iso: String,
    pub remaining: String,
    pub role_added: String,
    pub role_removed: String,
    pub ended: String,
    pub can_drop: bool,
    pub can_extend: bool,
    pub extend_limit: String,
    pub approvals: String,
    /// "30 min more, until …, waiting for approval" when an extension
    /// request is open.
    pub extension: String,
}

impl GrantView {
    pub(super) fn of(g: &Grant, web: &Web, now: DateTime<Utc>) -> Self {
        let live = g.is_live(now);
        let limit = web.app.extension_limit(g);
        Self {
            id: g.id.to_string(),
            user: g.user.to_string(),
            role: g.role.to_string(),
            state: g.state.to_string(),
            ticket: g
                .ticket
                .as_ref()
                .map_or_else(|| "none".into(), |t| t.to_string()),
            justification: g.justification.to_string(),
            starts: when(g.starts_at),
            expires: when(g.expires_at),
            expires_iso: g
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            remaining: remaining(g.expires_at, now),
            role_added: when_opt(g.role_added_at),
            role_removed: when_opt(g.role_removed_at),
            ended: match (g.end_reason, g.ended_at) {
                (Some(r), Some(at)) => format!("{r} at {}", when(at)),
                (None, Some(at)) => format!("{} at {}", g.state, when(at)),
                _ => String::new(),
            },
            can_drop: live || g.state == GrantState::PendingApproval,
            can_extend: live && limit > g.expires_at,
            extend_limit: when(limit),
            approvals: g
                .decision
                .as_ref()
                .map_or_else(String::new, |d| d.approvals_required.to_string()),
            extension: String::new(),
        }
    }

    /// The same, noting an extension request that waits for approval.
    pub(super) fn with_extension(mut self, request: Option<&ExtensionRequest>) -> Self {
        if let Some(r) = request {
            self.extension = format!(
                "extension to {} requested by {}, waiting for approval",
                when(r.until),
                r.requested_by
            );
            // One request at a time.
            self.can_extend = false;
        }
        self
    }
}

pub struct Msg {
    pub field: String,
    pub message: String,
    pub clause: String,
}

impl From<FieldError> for Msg {
    fn from(e: FieldError) -> Self {
        Self {
            field: e.field,
            message: e.message,
            clause: e.policy.unwrap_or_default(),
        }
    }
}

pub(super) fn parse_id(raw: &str) -> Result<GrantId, WebError> {
    raw.parse()
        .map_err(|_| WebError::NotFound("no such grant".into()))
}

// ---------------------------------------------------------------- helpers

pub(super) fn html(status: StatusCode, page: &impl Template) -> Result<HttpResponse, WebError> {
    let body = page
        .render()
        .map_err(|e| WebError::Internal(format!("template: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

pub(super) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}
