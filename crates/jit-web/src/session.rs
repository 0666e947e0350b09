//! The signed-in person, kept in the server-side session (the cookie holds
//! only its id), with idle and absolute timeouts, and the per-session CSRF
//! token every form carries.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine;
use chrono::{DateTime, Utc};
use jit_app::Person;
use jit_domain::{Caller, UserName};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{Web, WebError};

pub const SESSION_COOKIE: &str = "jit_session";
pub(crate) const WHO: &str = "who";
const CSRF: &str = "csrf";
/// The provider's ID token: the `id_token_hint` of its sign-out.
const ID_TOKEN: &str = "id_token";

/// What the session remembers of a login.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Who {
    user: String,
    groups: BTreeSet<String>,
    login_at: DateTime<Utc>,
    seen_at: DateTime<Utc>,
    /// `oidc` or `sandbox`.
    via: String,
}

/// A person with a live session.
pub struct SignedIn {
    pub person: Person,
    pub csrf: String,
    pub soc: bool,
    pub via: String,
    session: Session,
}

/// A fresh random token, URL-safe.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Starts a session for `person`: a new session id (no fixation), a new CSRF
/// token, and the login time the absolute timeout counts from.
pub fn sign_in(
    session: &Session,
    user: &UserName,
    groups: BTreeSet<String>,
    via: &str,
    id_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), WebError> {
    // Nothing from before the login survives, and the session id changes.
    session.clear();
    session.renew();
    session.insert(
        WHO,
        Who {
            user: user.to_string(),
            groups,
            login_at: now,
            seen_at: now,
            via: via.to_owned(),
        },
    )?;
    session.insert(CSRF, random_token())?;
    if let Some(token) = id_token {
        session.insert(ID_TOKEN, token)?;
    }
    Ok(())
}

/// The CSRF token of a session that has none signed in yet (the sandbox
/// login form), made on first use.
pub fn anonymous_csrf(session: &Session) -> Result<String, WebError> {
    if let Some(t) = session.get::<String>(CSRF)? {
        return Ok(t);
    }
    let t = random_token();
    session.insert(CSRF, t.clone())?;
    Ok(t)
}

/// Checks a form's token against the session's (in constant time) and that
/// the browser says the form came from this site.
pub fn check_csrf(req: &HttpRequest, session: &Session, presented: &str) -> Result<(), WebError> {
    let expected = session.get::<String>(CSRF)?.ok_or(WebError::Csrf)?;
    if presented.is_empty() || !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return Err(WebError::Csrf);
    }
    // Fetch metadata, where the browser sends it: only same-origin posts.
    if let Some(site) = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(WebError::Csrf);
    }
    // Origin, where sent, must be this host.
    if let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        && origin != "null"
    {
        let host = req.connection_info().host().to_owned();
        let same = url::Url::parse(origin)
            .ok()
            .and_then(|u| {
                let h = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
            })
            .is_some_and(|o| o == host);
        if !same {
            return Err(WebError::Csrf);
        }
    }
    Ok(())
}

impl SignedIn {
    pub fn check_csrf(&self, req: &HttpRequest, presented: &str) -> Result<(), WebError> {
        check_csrf(req, &self.session, presented)
    }

    /// The person as every use case takes a caller.
    pub fn caller(&self) -> Caller {
        Caller::Person {
            user: self.person.user.clone(),
            groups: self.person.groups.clone(),
        }
    }

    /// Ends the session on the server (its row is deleted, so a copy of the
    /// cookie opens nothing) and answers the provider's ID token, for its
    /// own sign-out.
    pub fn sign_out(&self) -> Option<String> {
        let id_token = self.session.get::<String>(ID_TOKEN).ok().flatten();
        self.session.purge();
        id_token
    }
}

impl FromRequest for SignedIn {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, WebError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let session = req.get_session();
        let web = req.app_data::<web::Data<Web>>().cloned();
        Box::pin(async move {
            let web = web.ok_or_else(|| WebError::Internal("web state missing".into()))?;
            let mut who: Who = session.get(WHO)?.ok_or(WebError::NotSignedIn)?;
            let now = web.app.now();
            let idle = chrono::TimeDelta::from_std(web.settings.idle_timeout)
                .unwrap_or(chrono::TimeDelta::minutes(30));
            let absolute = chrono::TimeDelta::from_std(web.settings.absolute_timeout)
                .unwrap_or(chrono::TimeDelta::hours(10));
            if now - who.seen_at >= idle || now - who.login_at >= absolute {
                session.purge();
                return Err(WebError::NotSignedIn);
            }
            let user = UserName::parse(&who.user).map_err(|_| WebError::NotSignedIn)?;
            let csrf: String = session.get(CSRF)?.ok_or(WebError::NotSignedIn)?;
            // Counted from the last page seen, to the minute (a new cookie
            // on every request would be noise).
            if now - who.seen_at >= chrono::TimeDelta::minutes(1) {
                who.seen_at = now;
                session.insert(WHO, who.clone())?;
            }
            let person = Person {
                user,
                groups: who.groups,
            };
            // Who is the SOC is jit-domain's rule, as for every door.
            let soc = Caller::Person {
                user: person.user.clone(),
                groups: person.groups.clone(),
            }
            .is_soc(&web.app.soc_group);
            Ok(SignedIn {
                person,
                csrf,
                soc,
                via: who.via,
                session,
            })
        })
    }
}
