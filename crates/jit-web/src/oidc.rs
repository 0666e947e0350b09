//! OpenID Connect: the authorization code flow with PKCE, `state` and
//! `nonce` (openidconnect crate), and the verification of ID tokens that API
//! callers present as bearer tokens. The provider is found by discovery.

use std::collections::BTreeSet;

use base64::Engine;
use jit_app::Person;
use jit_domain::UserName;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
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
    client: Client,
    http: openidconnect::reqwest::Client,
    config: OidcConfig,
}

/// What the browser's session holds between the redirect and the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    nonce: String,
    pkce_verifier: String,
}

impl Oidc {
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open the client to SSRF.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let issuer = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| OidcError::Config(format!("web.oidc.issuer_url: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| OidcError::Discovery(config.issuer_url.clone(), e.to_string()))?;
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
        Ok(Self {
            client,
            http,
            config,
        })
    }

    /// Where to send the browser, and what to remember until it returns.
    pub fn start(&self) -> (url::Url, PendingLogin) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
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
    /// (signature, issuer, audience, expiry, nonce) and reads the person.
    pub async fn finish(&self, pending: PendingLogin, code: &str) -> Result<Person, OidcError> {
        let response = self
            .client
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
        token
            .claims(&self.client.id_token_verifier(), &nonce)
            .map_err(|e| OidcError::Token(e.to_string()))?;
        self.person(&token.to_string())
    }

    /// A bearer token on the API: an ID token this provider issued for this
    /// client (signature, issuer, audience and expiry checked; no nonce, as
    /// no browser flow stands behind it).
    pub fn verify_bearer(&self, raw: &str) -> Result<Person, OidcError> {
        let token: CoreIdToken = raw
            .parse()
            .map_err(|e: serde_json::Error| OidcError::Token(e.to_string()))?;
        token
            .claims(&self.client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .map_err(|e| OidcError::Token(e.to_string()))?;
        self.person(raw)
    }

    /// The person a verified token names: the configured claims, read from
    /// the token's payload only after the library verified its signature.
    fn person(&self, verified: &str) -> Result<Person, OidcError> {
        let payload = verified
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .ok_or_else(|| OidcError::Token("unreadable claims".into()))?;
        let user = payload[&self.config.user_claim]
            .as_str()
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
        let groups: BTreeSet<String> = payload[&self.config.groups_claim]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect();
        Ok(Person { user, groups })
    }
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
