//! How every request reaches the target: the OAuth client-credentials token
//! (cached, refreshed before it expires, once again on a 401), the budget's
//! turn, and the answer sorted into retryable and permanent errors
//! (`Retry-After`, Genesys's "Retry the request in [N] seconds").

use std::time::{Duration, Instant};

use crate::{ScimAuth, ScimClient, ScimError};
use jit_app::budget::current_turn;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

pub(crate) struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// `Retry-After` as seconds or an HTTP date; else Genesys's "Retry the request in [N] seconds".
pub(crate) fn retry_after(headers: &header::HeaderMap, body: &str) -> Option<Duration> {
    if let Some(v) = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(secs) = v.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    let rest = &body[body.find("Retry the request in")? + "Retry the request in".len()..];
    let digits: String = rest
        .trim_start_matches([' ', '['])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_secs)
}

impl ScimClient {
    pub(crate) async fn bearer(&self, refresh: bool) -> Result<SecretString, ScimError> {
        let (token_url, client_id, client_secret) = match &self.config.auth {
            ScimAuth::Bearer(token) => return Ok(token.clone()),
            ScimAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
            } => (token_url, client_id, client_secret),
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached
            .as_ref()
            .filter(|t| !refresh && Instant::now() < t.refresh_at)
        {
            return Ok(t.value.clone());
        }
        let response = self
            .http
            .post(token_url.clone())
            .basic_auth(client_id, Some(client_secret.expose_secret()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| ScimError::Token(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            // The body may echo credentials on some servers: only the status is kept.
            return Err(ScimError::Token(format!(
                "token endpoint answered {status}"
            )));
        }
        let token: TokenResponse = response.json().await.map_err(|e| {
            ScimError::Token(format!("unreadable token answer: {}", e.without_url()))
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        // Refresh a little before expiry so no request carries a dying token.
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        let value = SecretString::from(token.access_token);
        *cached = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(value)
    }

    /// Sends with authentication; a 401 under OAuth refreshes the token once.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ScimError> {
        let oauth = matches!(self.config.auth, ScimAuth::ClientCredentials { .. });
        let mut refreshed = false;
        loop {
            let token = self.bearer(refreshed).await?;
            self.budget.acquire(current_turn()).await;
            let request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(header::ACCEPT, "application/scim+json, application/json");
            let response = build(request).send().await.map_err(|source| {
                metrics::counter!("jit_directory_requests_total", "method" => method.to_string(), "status" => "error")
                    .increment(1);
                ScimError::Transport {
                    method: method.clone(),
                    path: url.path().to_owned(),
                    source: source.without_url(),
                }
            })?;
            metrics::counter!(
                "jit_directory_requests_total",
                "method" => method.to_string(),
                "status" => response.status().as_u16().to_string()
            )
            .increment(1);
            if response.status() == StatusCode::UNAUTHORIZED && oauth && !refreshed {
                refreshed = true;
                continue;
            }
            if response.status().is_success() {
                return Ok(response);
            }
            let error = self.status_error(method, &url, response).await;
            // One refusal for the rate slows every caller, not only this one.
            if let ScimError::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                ..
            } = &error
            {
                self.budget
                    .back_off(retry_after.unwrap_or(Duration::from_secs(1)));
            }
            return Err(error);
        }
    }

    pub(crate) async fn status_error(
        &self,
        method: Method,
        url: &Url,
        response: Response,
    ) -> ScimError {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let detail = parsed["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.chars().take(200).collect());
        ScimError::Status {
            method,
            path: url.path().to_owned(),
            status,
            scim_type: parsed["scimType"].as_str().map(str::to_owned),
            retry_after: retry_after(&headers, &body),
            detail,
        }
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        response: Response,
    ) -> Result<T, ScimError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ScimError::Decode(e.without_url().to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ScimError::Decode(e.to_string()))
    }
}
