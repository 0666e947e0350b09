//! The SIEM feed: every SOC event as one JSON POST to a configured HTTPS
//! endpoint, signed so the receiver can tell it came from this broker:
//!
//! ```text
//! X-JIT-Timestamp: <unix seconds>
//! X-JIT-Event-Id:  <stable id: jit-<seq>-<first 16 hex of the event hash>>
//! X-JIT-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! Authorization:   Bearer <token>            (when configured)
//! ```
//!
//! The body carries the same id, the severity, and the audit event itself
//! (with its hash and the previous one, so the SIEM can check the chain).

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use jit_app::{AuditEvent, EventSink, NotifyError};
use jit_domain::severity;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Sha256;

use crate::NotifyConfigError;

pub const TIMESTAMP_HEADER: &str = "X-JIT-Timestamp";
pub const EVENT_ID_HEADER: &str = "X-JIT-Event-Id";
pub const SIGNATURE_HEADER: &str = "X-JIT-Signature";

pub struct WebhookConfig {
    /// The endpoint's name (its progress is kept under it).
    pub name: String,
    pub url: url::Url,
    pub secret: SecretString,
    pub bearer_token: Option<SecretString>,
    pub timeout: Duration,
}

pub struct WebhookSink {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Result<Self, NotifyConfigError> {
        let local = matches!(
            config.url.host_str(),
            Some("localhost" | "127.0.0.1" | "::1")
        );
        if config.url.scheme() != "https" && !local {
            return Err(NotifyConfigError::Webhook(format!(
                "`{}`: SOC events leave the broker only over HTTPS",
                config.name
            )));
        }
        if config.secret.expose_secret().len() < 16 {
            return Err(NotifyConfigError::Webhook(format!(
                "`{}`: the signing secret must be at least 16 characters",
                config.name
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("jit-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyConfigError::Webhook(e.to_string()))?;
        Ok(Self { config, http })
    }
}

/// The id a receiver de-duplicates on: the same for every attempt.
pub fn event_id(event: &AuditEvent) -> String {
    format!(
        "jit-{}-{}",
        event.seq,
        &event.hash[..16.min(event.hash.len())]
    )
}

/// `v1=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn signature(secret: &SecretString, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
        // HMAC takes a key of any length; this arm is never taken.
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl EventSink for WebhookSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn send(
        &self,
        event: &AuditEvent,
        sent_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), NotifyError> {
        let id = event_id(event);
        let body = json!({
            "id": id,
            "severity": severity(&event.kind, &event.data),
            "seq": event.seq,
            "at": event.at,
            "kind": event.kind,
            "actor": event.actor,
            "grant": event.grant,
            "ticket": event.ticket,
            "data": event.data,
            "hash": event.hash,
            "prev_hash": event.prev_hash,
        })
        .to_string();
        let timestamp = sent_at.timestamp().to_string();
        let mut request = self
            .http
            .post(self.config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(EVENT_ID_HEADER, &id)
            .header(
                SIGNATURE_HEADER,
                signature(&self.config.secret, &timestamp, body.as_bytes()),
            );
        if let Some(token) = &self.config.bearer_token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Transient(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let what = format!("the SIEM endpoint answered {status}");
        match status {
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                Err(NotifyError::Transient(what))
            }
            s if s.is_client_error() => Err(NotifyError::Permanent(what)),
            _ => Err(NotifyError::Transient(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let secret = SecretString::from("0123456789abcdef-siem");
        let a = signature(&secret, "1700000000", b"{\"id\":1}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64, "{a}");
        assert_ne!(a, signature(&secret, "1700000001", b"{\"id\":1}"));
        assert_ne!(a, signature(&secret, "1700000000", b"{\"id\":2}"));
        assert_eq!(a, signature(&secret, "1700000000", b"{\"id\":1}"));
    }

    #[test]
    fn plain_http_only_to_this_host_and_a_real_secret() {
        let config = |url: &str, secret: &str| WebhookConfig {
            name: "siem".into(),
            url: url::Url::parse(url).unwrap(),
            secret: SecretString::from(secret),
            bearer_token: None,
            timeout: Duration::from_secs(5),
        };
        assert!(
            WebhookSink::new(config("https://siem.bank.example/in", "0123456789abcdef")).is_ok()
        );
        assert!(WebhookSink::new(config("http://127.0.0.1:9/in", "0123456789abcdef")).is_ok());
        assert!(
            WebhookSink::new(config("http://siem.bank.example/in", "0123456789abcdef")).is_err()
        );
        assert!(WebhookSink::new(config("https://siem.bank.example/in", "short")).is_err());
    }
}
