//! OpenID Connect: the authorization code flow with PKCE, `state` and
//! `nonce` (openidconnect crate), and the verification of ID tokens that API
//! callers present as bearer tokens. The provider is found by discovery.

use std::collections::BTreeSet;

use base64::Engine;
use jit_app::Person;
use jit_domain::UserName;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreIdToken};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, SubjectIdentifier, TokenResponse,
    UserInfoClaims,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `[web.oidc]` in the config.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Where the provider sends the browser back: `<public url>/auth/callback`.
    pub redirect_url: String,
    /// Where the provider sends the browser after signing out there:
    /// `<public url>/signed-out`.
    pub post_logout_url: String,
    /// The ID-token claim that names the directory user (default `email`).
    pub user_claim: String,
    /// The ID-token claim that lists the person's groups (default `groups`).
    pub groups_claim: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("OpenID provider discovery at {0} failed: {1}")]
    Discovery(String, String),
    #[error("OpenID configuration: {0}")]
    Config(String),
    #[error("the sign-in could not be completed: {0}")]
    Exchange(String),
    #[error("the ID token is not acceptable: {0}")]
    Token(String),
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered provider and this broker's client at it.
pub struct Oidc {
    /// Rebuilt from discovery when a token names a signing key it does not
    /// know (the provider rotated its keys), at most every
    /// [`KEY_REFRESH_EVERY`].
    client: std::sync::RwLock<Client>,
    /// When the keys were last fetched again (`None`: not since discovery).
    keys_refreshed: std::sync::Mutex<Option<std::time::Instant>>,
    http: openidconnect::reqwest::Client,
    config: OidcConfig,
    /// RP-initiated logout, where the provider advertises it.
    end_session: Option<EndSessionUrl>,
}

/// A completed sign-in: the person, and the ID token (kept in the
/// server-side session as the `id_token_hint` of the provider's sign-out).
pub struct SignedInPerson {
    pub person: Person,
    pub id_token: String,
}

/// Every claim a UserInfo answer carries beyond the standard ones, so that
/// any configured claim name can be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

/// What the browser's session holds between the redirect and the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    nonce: String,
    pkce_verifier: String,
}

/// The least time between two fetches of the provider's keys on an
/// unknown `kid`: a token with a made-up key id costs the provider one
/// fetch in this time at most.
pub const KEY_REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Oidc {
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open the client to SSRF.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let (client, end_session) = Self::client_from_discovery(&config, &http).await?;
        Ok(Self {
            client: std::sync::RwLock::new(client),
            keys_refreshed: std::sync::Mutex::new(None),
            http,
            config,
            end_session,
        })
    }

    /// The client as the provider's discovery document and keys say now.
    async fn client_from_discovery(
        config: &OidcConfig,
        http: &openidconnect::reqwest::Client,
    ) -> Result<(Client, Option<EndSessionUrl>), OidcError> {
        let issuer = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| OidcError::Config(format!("web.oidc.issuer_url: {e}")))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, http)
            .await
            .map_err(|e| OidcError::Discovery(config.issuer_url.clone(), e.to_string()))?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("web.public_url: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(
                config.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(redirect);
        Ok((client, end_session))
    }

    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches the provider's keys again, unless that was done less than
    /// [`KEY_REFRESH_EVERY`] ago; `true` when the keys were fetched.
    async fn refresh_keys(&self) -> bool {
        {
            let mut last = self
                .keys_refreshed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < KEY_REFRESH_EVERY) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        match Self::client_from_discovery(&self.config, &self.http).await {
            Ok((client, _)) => {
                *self
                    .client
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
                tracing::info!(
                    "a token named an unknown signing key: the provider's keys were fetched again"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the provider's keys could not be fetched again");
                false
            }
        }
    }

    /// The origin of the provider's sign-out endpoint: the sign-out form's
    /// redirect goes there, so the pages' `form-action` must allow it.
    pub fn logout_origin(&self) -> Option<String> {
        let url = self.end_session.as_ref()?.url();
        Some(url.origin().ascii_serialization()).filter(|o| o != "null")
    }

    /// The provider's sign-out for this person (RP-initiated logout), when
    /// it advertises `end_session_endpoint`: back to the signed-out page.
    pub fn logout_url(&self, id_token: Option<&str>) -> Option<url::Url> {
        let endpoint = self.end_session.clone()?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Ok(back) = PostLogoutRedirectUrl::new(self.config.post_logout_url.clone()) {
            request = request.set_post_logout_redirect_uri(back);
        }
        if let Some(token) = id_token.and_then(|t| t.parse::<CoreIdToken>().ok()) {
            request = request.set_id_token_hint(&token);
        }
        Some(request.http_get_url())
    }

    /// Where to send the browser, and what to remember until it returns.
    pub fn start(&self) -> (url::Url, PendingLogin) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        (
            url,
            PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        )
    }

    /// Exchanges the code (with the PKCE verifier), verifies the ID token
    /// (signature, issuer, audience, expiry, nonce) and reads the person:
    /// from the ID token, and from UserInfo (OIDC Core 5.4) for the
    /// configured claims the ID token does not carry.
    pub async fn finish(
        &self,
        pending: PendingLogin,
        code: &str,
    ) -> Result<SignedInPerson, OidcError> {
        let response = self
            .client()
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(describe(&e)))?;
        let token = response
            .id_token()
            .ok_or_else(|| OidcError::Exchange("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(pending.nonce);
        let verify = |client: &Client| {
            token
                .claims(&client.id_token_verifier(), &nonce)
                .map(|c| c.subject().clone())
        };
        let subject = match verify(&self.client()) {
            Err(e) if unknown_key(&e) && self.refresh_keys().await => verify(&self.client()),
            other => other,
        }
        .map_err(|e| OidcError::Token(e.to_string()))?;
        let raw = token.to_string();
        let mut claims = verified_payload(&raw)?;
        let wanted = [&self.config.user_claim, &self.config.groups_claim];
        if wanted.iter().any(|c| claims.get(c.as_str()).is_none()) {
            let extra = self
                .user_info(response.access_token().clone(), subject)
                .await?;
            for claim in wanted {
                if claims.get(claim.as_str()).is_none()
                    && let Some(v) = extra.get(claim.as_str())
                {
                    claims.insert(claim.clone(), v.clone());
                }
            }
        }
        Ok(SignedInPerson {
            person: self.person(&claims)?,
            id_token: raw,
        })
    }

    /// The provider's UserInfo answer for the access token. The library
    /// checks that its `sub` is the ID token's.
    async fn user_info(
        &self,
        access_token: openidconnect::AccessToken,
        subject: SubjectIdentifier,
    ) -> Result<serde_json::Map<String, Value>, OidcError> {
        let client = self.client();
        let request = client.user_info(access_token, Some(subject)).map_err(|_| {
            OidcError::Token(format!(
                "the ID token lacks `{}` or `{}` and the provider has no UserInfo endpoint",
                self.config.user_claim, self.config.groups_claim
            ))
        })?;
        let claims: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(format!("UserInfo: {}", describe(&e))))?;
        match serde_json::to_value(&claims) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(OidcError::Token("unreadable UserInfo claims".into())),
        }
    }

    /// A bearer token on the API: an ID token this provider issued for this
    /// client (signature, issuer, audience and expiry checked; no nonce, as
    /// no browser flow stands behind it).
    /// Answers the person and when the token was issued (a token issued
    /// before the person's sessions were all ended is refused by the caller).
    pub async fn verify_bearer(
        &self,
        raw: &str,
    ) -> Result<(Person, chrono::DateTime<chrono::Utc>), OidcError> {
        let token: CoreIdToken = raw
            .parse()
            .map_err(|e: serde_json::Error| OidcError::Token(e.to_string()))?;
        let verify = |client: &Client| {
            token
                .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
                .map(|c| c.issue_time())
        };
        let issued_at = match verify(&self.client()) {
            Err(e) if unknown_key(&e) && self.refresh_keys().await => verify(&self.client()),
            other => other,
        }
        .map_err(|e| OidcError::Token(e.to_string()))?;
        // No access token comes with a bearer ID token, so UserInfo cannot
        // be asked: the claims must be in the token itself.
        let person = self.person(&verified_payload(raw)?).map_err(|e| match e {
            OidcError::Token(why) => OidcError::Token(format!(
                "{why}; an ID token used as a bearer token must carry it itself (UserInfo needs an access token)"
            )),
            other => other,
        })?;
        Ok((person, issued_at))
    }

    /// The person the verified claims name: the configured claims.
    fn person(&self, claims: &serde_json::Map<String, Value>) -> Result<Person, OidcError> {
        let user = claims
            .get(&self.config.user_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OidcError::Token(format!(
                    "the `{}` claim (web.oidc.user_claim) is missing",
                    self.config.user_claim
                ))
            })
            .and_then(|u| {
                UserName::parse(u).map_err(|e| {
                    OidcError::Token(format!("`{}` claim: {}", self.config.user_claim, e.message))
                })
            })?;
        let groups: BTreeSet<String> = claims
            .get(&self.config.groups_claim)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect();
        Ok(Person { user, groups })
    }
}

/// A token's claims, read from its payload only after the library verified
/// its signature.
fn verified_payload(verified: &str) -> Result<serde_json::Map<String, Value>, OidcError> {
    verified
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|p| serde_json::from_slice::<serde_json::Map<String, Value>>(&p).ok())
        .ok_or_else(|| OidcError::Token("unreadable claims".into()))
}

/// An error with its causes, without the secrets a request might carry.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether a token failed only because it names a key the client has not
/// got: the provider may have rotated its keys since discovery.
fn unknown_key(e: &openidconnect::ClaimsVerificationError) -> bool {
    matches!(
        e,
        openidconnect::ClaimsVerificationError::SignatureVerification(
            openidconnect::SignatureVerificationError::NoMatchingKey
        )
    )
}
