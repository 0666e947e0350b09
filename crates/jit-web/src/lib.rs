//! jit-web: the engineer's pages. OpenID Connect login (or, in the `--dev`
//! sandbox, a labelled picker of seeded users), server-side sessions (the
//! signed and encrypted cookie holds only an id) with idle and absolute
//! timeouts, a CSRF token on every form, strict security headers, and pages
//! that call the same `jit-app` use cases as the JSON API: request, my access
//! (drop, extend), approvals, grant detail, SOC.

mod error;
mod oidc;
mod pages;
mod session;
mod session_store;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_session::SessionMiddleware;
use actix_session::config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::{HttpServiceFactory, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::web;
use jit_app::App;
use jit_domain::UserName;
use secrecy::SecretString;

pub use error::{WebError, retry_after_secs};
pub use oidc::{Oidc, OidcConfig, OidcError, SignedInPerson};
pub use session::SESSION_COOKIE;

/// A seeded user the `--dev` sandbox login offers.
#[derive(Debug, Clone)]
pub struct SandboxUser {
    pub user: UserName,
    pub groups: BTreeSet<String>,
}

/// How people sign in.
pub enum Login {
    /// A real OpenID provider.
    Oidc(Arc<Oidc>),
    /// `serve --dev` only: pick one of these users. Clearly labelled.
    Sandbox(Vec<SandboxUser>),
}

#[derive(Clone)]
pub struct WebSettings {
    /// Signs and encrypts the session cookie (at least 64 bytes).
    pub session_key: Vec<u8>,
    /// `Secure` on the cookie; off only for `--dev` on localhost.
    pub secure_cookies: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
}

/// Everything the pages share.
pub struct Web {
    pub app: Arc<App>,
    pub login: Login,
    pub settings: WebSettings,
    /// Woken when a grant may start now (the worker sleeps until the next due job).
    pub wake_worker: Arc<tokio::sync::Notify>,
}

impl Web {
    pub fn new(
        app: Arc<App>,
        login: Login,
        settings: WebSettings,
        wake_worker: Arc<tokio::sync::Notify>,
    ) -> Result<Self, WebError> {
        if settings.session_key.len() < 64 {
            return Err(WebError::Config(
                "web.session_secret must be at least 64 bytes".into(),
            ));
        }
        Ok(Self {
            app,
            login,
            settings,
            wake_worker,
        })
    }

    /// A random cookie key, for `--dev`: sessions end when the process does.
    pub fn random_session_key() -> Vec<u8> {
        Key::generate().master().to_vec()
    }

    pub fn session_key_from(secret: &SecretString) -> Vec<u8> {
        use secrecy::ExposeSecret;
        secret.expose_secret().as_bytes().to_vec()
    }
}

/// The pages as one service; mount it after every other route (it owns `/`).
pub fn service(web: web::Data<Web>) -> impl HttpServiceFactory {
    let settings = web.settings.clone();
    let provider = match &web.login {
        Login::Oidc(oidc) => oidc.logout_origin(),
        Login::Sandbox(_) => None,
    };
    let sessions = session_store::DatabaseSessions::new(
        web.app.clone(),
        settings.idle_timeout,
        settings.absolute_timeout,
    );
    let session = SessionMiddleware::builder(sessions, Key::from(&settings.session_key))
        .cookie_name(SESSION_COOKIE.to_owned())
        .cookie_secure(settings.secure_cookies)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(
            PersistentSession::default()
                .session_ttl(actix_web::cookie::time::Duration::seconds(
                    i64::try_from(settings.absolute_timeout.as_secs()).unwrap_or(36_000),
                ))
                .session_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
        )
        .build();
    web::scope("")
        .app_data(web)
        .wrap(from_fn(pages::no_store_for_pages))
        .wrap(security_headers(provider))
        .wrap(session)
        .configure(pages::routes)
}

/// Headers on every page: no framing, no inline script, no referrer leaks.
/// Forms post only to this site, and (sign-out) on to the provider's
/// sign-out endpoint, `provider`: browsers apply `form-action` to the
/// redirect a form's answer makes.
fn security_headers(provider: Option<String>) -> DefaultHeaders {
    let form_action = match provider {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
    );
    DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        ))
        .add((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .add((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .add((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

/// Marks a response as holding personal data: never stored by a cache.
fn no_store<B>(res: &mut ServiceResponse<B>) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
