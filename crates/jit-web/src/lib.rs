//! jit-web: the engineer's pages. OpenID Connect login (or, in the `--dev`
//! sandbox, a labelled picker of seeded users), a signed and encrypted session
//! cookie with idle and absolute timeouts, a CSRF token on every form, strict
//! security headers, and pages that call the same `jit-app` use cases as the
//! JSON API: request, my access (drop, extend), approvals, grant detail, SOC.

mod error;
mod oidc;
mod pages;
mod session;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_session::SessionMiddleware;
use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::CookieSessionStore;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::{HttpServiceFactory, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::web;
use jit_app::App;
use jit_domain::UserName;
use secrecy::SecretString;

pub use error::WebError;
pub use oidc::{Oidc, OidcConfig, OidcError};
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
    /// Members of this OIDC group see the SOC view.
    pub soc_group: String,
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

    /// A random session key, for `--dev`: sessions end when the process does.
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
    let session = SessionMiddleware::builder(
        CookieSessionStore::default(),
        Key::from(&settings.session_key),
    )
    .cookie_name(SESSION_COOKIE.to_owned())
    .cookie_secure(settings.secure_cookies)
    .cookie_http_only(true)
    .cookie_same_site(SameSite::Lax)
    .cookie_content_security(CookieContentSecurity::Private)
    .session_lifecycle(PersistentSession::default().session_ttl(
        actix_web::cookie::time::Duration::seconds(
            i64::try_from(settings.absolute_timeout.as_secs()).unwrap_or(36_000),
        ),
    ))
    .build();
    web::scope("")
        .app_data(web)
        .wrap(from_fn(pages::no_store_for_pages))
        .wrap(security_headers())
        .wrap(session)
        .configure(pages::routes)
}

/// Headers on every page: no framing, no inline script, no referrer leaks.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'",
            ),
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
