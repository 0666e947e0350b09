//! Signing in (OpenID Connect, or the sandbox's picker), signing out
//! (here and at the provider), and ending a person's sessions.

use actix_session::Session;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use jit_domain::UserName;
use serde::Deserialize;

use super::{html, see_other};
use crate::session::{SignedIn, anonymous_csrf, check_csrf, sign_in};
use crate::{Login, Web, WebError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login/sandbox", web::post().to(sandbox_login))
        .route("/auth/callback", web::get().to(callback))
        .route("/logout", web::post().to(logout))
        .route("/signed-out", web::get().to(signed_out))
        .route("/sessions/end", web::post().to(end_sessions));
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    users: Vec<(String, String)>,
    csrf: String,
}

/// The sign-in in progress (state, nonce, PKCE verifier), kept in an
/// encrypted cookie of its own until the provider sends the browser back:
/// an anonymous `GET /login` writes nothing on the server.
const LOGIN_COOKIE: &str = "jit_login";

/// How long a sign-in may take at the provider.
const LOGIN_MAX_AGE: actix_web::cookie::time::Duration =
    actix_web::cookie::time::Duration::minutes(10);

fn login_cookie(
    web: &Web,
    value: String,
    max_age: actix_web::cookie::time::Duration,
) -> Cookie<'static> {
    Cookie::build(LOGIN_COOKIE, value)
        .path("/auth/callback")
        .http_only(true)
        .secure(web.settings.secure_cookies)
        .same_site(SameSite::Lax)
        .max_age(max_age)
        .finish()
}

/// The encrypted cookie that starts a sign-in.
fn pending_cookie(
    web: &Web,
    pending: &crate::oidc::PendingLogin,
) -> Result<Cookie<'static>, WebError> {
    let value = serde_json::to_string(pending).map_err(|e| WebError::Internal(e.to_string()))?;
    let mut jar = CookieJar::new();
    jar.private_mut(&Key::from(&web.settings.session_key))
        .add(login_cookie(web, value, LOGIN_MAX_AGE));
    jar.get(LOGIN_COOKIE)
        .cloned()
        .ok_or_else(|| WebError::Internal("the sign-in cookie was not made".into()))
}

/// The sign-in this browser started, if its cookie is there and intact.
fn pending_login(web: &Web, req: &HttpRequest) -> Option<crate::oidc::PendingLogin> {
    let mut jar = CookieJar::new();
    jar.add_original(req.cookie(LOGIN_COOKIE)?);
    let cookie = jar
        .private(&Key::from(&web.settings.session_key))
        .get(LOGIN_COOKIE)?;
    serde_json::from_str(cookie.value()).ok()
}

async fn login_page(web: web::Data<Web>, session: Session) -> Result<HttpResponse, WebError> {
    match &web.login {
        Login::Oidc(oidc) => {
            let (url, pending) = oidc.start();
            Ok(HttpResponse::SeeOther()
                .cookie(pending_cookie(&web, &pending)?)
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
    remember(&web, &chosen.user, &chosen.groups).await?;
    Ok(see_other("/"))
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The provider's answer. Whatever it says, the sign-in it ends is used up:
/// every answer removes its cookie.
async fn callback(
    req: HttpRequest,
    web: web::Data<Web>,
    session: Session,
    query: web::Query<Callback>,
) -> Result<HttpResponse, actix_web::Error> {
    let used_up = login_cookie(&web, String::new(), actix_web::cookie::time::Duration::ZERO);
    match finish_sign_in(&req, &web, &session, &query).await {
        Ok(mut done) => {
            done.add_cookie(&used_up)?;
            Ok(done)
        }
        Err(e) => {
            let mut refused = actix_web::ResponseError::error_response(&e);
            refused.add_cookie(&used_up)?;
            Err(actix_web::error::InternalError::from_response(e, refused).into())
        }
    }
}

async fn finish_sign_in(
    req: &HttpRequest,
    web: &Web,
    session: &Session,
    query: &Callback,
) -> Result<HttpResponse, WebError> {
    let Login::Oidc(oidc) = &web.login else {
        return Err(WebError::NotFound("no OpenID login here".into()));
    };
    if let Some(error) = &query.error {
        return Err(WebError::Login(format!(
            "the identity provider refused: {error}"
        )));
    }
    // One use: the cookie is removed by this answer, and the provider
    // takes each code once.
    let pending = pending_login(web, req).ok_or_else(|| {
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
    remember(web, &person.user, &person.groups).await?;
    sign_in(
        session,
        &person.user,
        person.groups,
        "oidc",
        Some(&signed_in.id_token),
        web.app.now(),
    )?;
    Ok(see_other("/"))
}

/// The groups this sign-in vouched for, kept for chat (Slack does not know
/// the identity provider's groups) until the sign-in's absolute timeout.
async fn remember(
    web: &Web,
    user: &jit_domain::UserName,
    groups: &std::collections::BTreeSet<String>,
) -> Result<(), WebError> {
    let absolute = chrono::TimeDelta::from_std(web.settings.absolute_timeout)
        .unwrap_or(chrono::TimeDelta::hours(10));
    web.app.remember_sign_in(user, groups, absolute).await?;
    Ok(())
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
