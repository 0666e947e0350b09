//! The pages and their forms. Each handler reads the session, calls one
//! `jit-app` use case and renders; no rule is decided here.

use actix_session::Session;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, TimeDelta, Utc};
use jit_app::{AppError, Extended, GrantFilter, ReconcileRun};
use jit_domain::policy::format_duration;
use jit_domain::{
    ExtensionRequest, FieldError, Grant, GrantId, GrantState, RolePolicy, UserName, Verdict,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::session::{SignedIn, anonymous_csrf, check_csrf, sign_in};
use crate::{Login, Web, WebError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(request_page))
        .route("/request", web::post().to(submit_request))
        .route("/access", web::get().to(my_access))
        .route("/approvals", web::get().to(approvals_page))
        .route("/soc", web::get().to(soc_page))
        .route("/grants/{id}", web::get().to(grant_page))
        .route("/grants/{id}/drop", web::post().to(drop_grant))
        .route("/grants/{id}/extend", web::post().to(extend_grant))
        .route("/grants/{id}/review", web::post().to(review_grant))
        .route("/login", web::get().to(login_page))
        .route("/login/sandbox", web::post().to(sandbox_login))
        .route("/auth/callback", web::get().to(callback))
        .route("/logout", web::post().to(logout))
        .route("/signed-out", web::get().to(signed_out))
        .route("/sessions/end", web::post().to(end_sessions))
        .route("/static/app.css", web::get().to(stylesheet))
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

const CSS: &str = include_str!("../static/app.css");
const COUNTDOWN: &str = include_str!("../static/countdown.js");

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
    fn new(s: &SignedIn, here: &'static str) -> Self {
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

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn when_opt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".into(), when)
}

/// "52 min", "1 h 05 min", "ended".
fn remaining(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
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
    fn of(g: &Grant, web: &Web, now: DateTime<Utc>) -> Self {
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
    fn with_extension(mut self, request: Option<&ExtensionRequest>) -> Self {
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

// ------------------------------------------------------------------ login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    users: Vec<(String, String)>,
    csrf: String,
}

async fn login_page(web: web::Data<Web>, session: Session) -> Result<HttpResponse, WebError> {
    match &web.login {
        Login::Oidc(oidc) => {
            let (url, pending) = oidc.start();
            session.insert("login", pending)?;
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, url.to_string()))
                .finish())
        }
        Login::Sandbox(users) => {
            let page = LoginPage {
                users: users
                    .iter()
                    .map(|u| {
                        (
                            u.user.to_string(),
                            u.groups.iter().cloned().collect::<Vec<_>>().join(", "),
                        )
                    })
                    .collect(),
                csrf: anonymous_csrf(&session)?,
            };
            html(StatusCode::OK, &page)
        }
    }
}

#[derive(Deserialize)]
struct SandboxLogin {
    #[serde(default)]
    user: String,
    #[serde(default)]
    csrf: String,
}

async fn sandbox_login(
    req: HttpRequest,
    web: web::Data<Web>,
    session: Session,
    form: web::Form<SandboxLogin>,
) -> Result<HttpResponse, WebError> {
    let Login::Sandbox(users) = &web.login else {
        return Err(WebError::NotFound("no sandbox login here".into()));
    };
    check_csrf(&req, &session, &form.csrf)?;
    let chosen = users
        .iter()
        .find(|u| u.user.as_str() == form.user)
        .ok_or_else(|| WebError::Forbidden("not a sandbox user".into()))?;
    sign_in(
        &session,
        &chosen.user,
        chosen.groups.clone(),
        "sandbox",
        None,
        web.app.now(),
    )?;
    Ok(see_other("/"))
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    web: web::Data<Web>,
    session: Session,
    query: web::Query<Callback>,
) -> Result<HttpResponse, WebError> {
    let Login::Oidc(oidc) = &web.login else {
        return Err(WebError::NotFound("no OpenID login here".into()));
    };
    if let Some(error) = &query.error {
        return Err(WebError::Login(format!(
            "the identity provider refused: {error}"
        )));
    }
    // One use only: a replayed callback finds no login in progress.
    let pending: crate::oidc::PendingLogin = session
        .remove_as("login")
        .and_then(Result::ok)
        .ok_or_else(|| {
            WebError::Login("no sign-in is in progress in this browser; start again".into())
        })?;
    let state = query.state.as_deref().unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        pending.state.as_bytes(),
        state.as_bytes(),
    )) {
        return Err(WebError::Login(
            "the sign-in's state does not match; start again".into(),
        ));
    }
    let code = query
        .code
        .as_deref()
        .ok_or_else(|| WebError::Login("the identity provider sent no code".into()))?;
    let signed_in = oidc.finish(pending, code).await.map_err(|e| {
        jit_app::warn_throttled!("oidc_sign_in_refused", error = %e, "OIDC sign-in refused");
        WebError::Login(e.to_string())
    })?;
    let person = signed_in.person;
    tracing::info!(user = %person.user, groups = ?person.groups, "signed in");
    sign_in(
        &session,
        &person.user,
        person.groups,
        "oidc",
        Some(&signed_in.id_token),
        web.app.now(),
    )?;
    Ok(see_other("/"))
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Ends the session on the server, then at the provider where it offers
/// RP-initiated logout (else its own session would sign the person straight
/// back in), landing on the signed-out page.
async fn logout(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let id_token = who.sign_out();
    tracing::info!(user = %who.person.user, "signed out");
    let at_provider = match &web.login {
        Login::Oidc(oidc) => oidc.logout_url(id_token.as_deref()),
        Login::Sandbox(_) => None,
    };
    Ok(match at_provider {
        Some(url) => see_other(url.as_str()),
        None => see_other("/signed-out"),
    })
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOutPage;

async fn signed_out() -> Result<HttpResponse, WebError> {
    html(StatusCode::OK, &SignedOutPage)
}

#[derive(Deserialize)]
struct EndSessionsForm {
    #[serde(default)]
    csrf: String,
    /// Whose sessions; empty: one's own.
    #[serde(default)]
    user: String,
}

/// "Sign out everywhere" (My access) and the SOC's "end sessions" for a
/// stolen laptop: every session of the person, on every replica.
async fn end_sessions(
    req: HttpRequest,
    web: web::Data<Web>,
    who: SignedIn,
    form: web::Form<EndSessionsForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&req, &form.csrf)?;
    let user = match form.user.trim() {
        "" => who.person.user.clone(),
        named => {
            UserName::parse(named).map_err(|e| WebError::Invalid(format!("user: {}", e.message)))?
        }
    };
    let ended = web.app.end_sessions(&who.caller(), &user).await?;
    if user == who.person.user {
        return Ok(see_other("/signed-out"));
    }
    Ok(see_other(&format!(
        "/soc?sessions_ended={ended}&user={}",
        url::form_urlencoded::byte_serialize(user.as_str().as_bytes()).collect::<String>()
    )))
}

// ---------------------------------------------------------------- request

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
    /// The JSON body the API would receive for the same request.
    fn body(&self, user: &UserName) -> Value {
        let mut body = json!({
            "user": user,
            "role": self.role,
            "justification": self.justification,
        });
        let ticket = match self.ticket_other.trim() {
            "" => self.ticket.trim(),
            typed => typed,
        };
        if !ticket.is_empty() {
            body["ticket"] = json!(ticket);
        }
        if !self.duration.trim().is_empty() {
            body["duration"] = json!(self.duration.trim());
        }
        let start = self.starts_at.trim();
        if !start.is_empty() {
            // `datetime-local` sends no zone: the form says the time is UTC.
            let with_seconds = if start.len() == 16 {
                format!("{start}:00Z")
            } else {
                format!("{start}Z")
            };
            body["starts_at"] = json!(with_seconds);
        }
        body
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
        .request_grant_by(&who.caller(), "web", &form.body(&who.person.user))
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

// ----------------------------------------------------------------- access

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

fn parse_id(raw: &str) -> Result<GrantId, WebError> {
    raw.parse()
        .map_err(|_| WebError::NotFound("no such grant".into()))
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
        .extend_grant(&who.caller(), id, &json!({"by": form.by.trim()}))
        .await?;
    if let Extended::Requested { extension, .. } = &extended {
        tracing::info!(grant = %id, extension = %extension.id, "extension waits for approval");
    }
    Ok(see_other(&format!("/grants/{id}")))
}

// -------------------------------------------------------------- approvals

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

// ----------------------------------------------------------------- detail

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

// -------------------------------------------------------------------- SOC

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
            runs: web.app.reconcile_runs(10).await?,
        },
    )
}

// ---------------------------------------------------------------- helpers

fn html(status: StatusCode, page: &impl Template) -> Result<HttpResponse, WebError> {
    let body = page
        .render()
        .map_err(|e| WebError::Internal(format!("template: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}
