//! Microsoft Teams, one way: every SOC notice posted to a channel through a
//! Teams Workflows webhook ("Post to a channel when a webhook request is
//! received") as an Adaptive Card, built with serde (no Teams SDK crate is
//! well kept). Approving from Teams is not offered: the card links to the
//! grant page.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{AuditEvent, EventSink, Notice, NotifyError, notifies};
use jit_domain::Severity;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::ChatError;

pub struct TeamsSink {
    url: SecretString,
    public_url: String,
    http: reqwest::Client,
    slo: Duration,
}

impl TeamsSink {
    /// Posts to the workflow at `url` (its URL carries its own signature:
    /// a secret); cards link to the pages at `public_url`.
    pub fn new(url: SecretString, public_url: &str, slo: Duration) -> Result<Self, ChatError> {
        let parsed = url::Url::parse(url.expose_secret())
            .map_err(|e| ChatError::Config(format!("teams.webhook_url: {e}")))?;
        let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "::1"));
        if parsed.scheme() != "https" && !local {
            return Err(ChatError::Config(
                "teams.webhook_url: notices leave the broker only over HTTPS".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ChatError::Config(e.to_string()))?;
        Ok(Self {
            url,
            public_url: public_url.trim_end_matches('/').to_owned(),
            http,
            slo,
        })
    }
}

/// The Adaptive Card of one notice, in the message shape Workflows takes.
pub fn card(event: &AuditEvent, public_url: &str, slo: Duration) -> Value {
    let notice = Notice {
        event: event.clone(),
        grant: None,
        findings: Vec::new(),
    };
    let words = jit_notify::compose(&notice, slo);
    let color = match words.severity {
        Severity::P1 => "Attention",
        Severity::P2 => "Warning",
        Severity::P3 => "Default",
    };
    let facts: Vec<Value> = words
        .facts
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    let mut actions = Vec::new();
    if let Some(grant) = event.grant {
        actions.push(
            json!({"type": "Action.OpenUrl", "title": "Open in jit-broker",
                            "url": format!("{public_url}/grants/{grant}")}),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": format!("[{}] {}", words.severity.as_str(), words.headline),
                     "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": words.summary, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                    {"type": "TextBlock", "text": words.action, "wrap": true, "isSubtle": true},
                ],
                "actions": actions,
            },
        }],
    })
}

#[async_trait]
impl EventSink for TeamsSink {
    fn name(&self) -> &str {
        "teams"
    }

    fn wants(&self, kind: &str, data: &Value) -> bool {
        notifies(kind, data)
    }

    async fn send(&self, event: &AuditEvent, _sent_at: DateTime<Utc>) -> Result<(), NotifyError> {
        let body = card(event, &self.public_url, self.slo);
        let answer = self
            .http
            .post(self.url.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                NotifyError::Transient(format!("Teams unreachable: {}", e.without_url()))
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match (status.as_u16(), retry_after) {
            (429, Some(secs)) => Err(NotifyError::Throttled(
                "Teams rate limit".into(),
                Duration::from_secs(secs),
            )),
            (429 | 408, None) | (500..=599, _) => {
                Err(NotifyError::Transient(format!("Teams answered {status}")))
            }
            _ => Err(NotifyError::Permanent(format!("Teams refused: {status}"))),
        }
    }
}
