//! Genesys Cloud's event forwarding to Amazon EventBridge, and EventBridge's
//! API destination delivering them to an HTTPS endpoint with a header
//! secret: what the broker's `POST /webhooks/genesys/events` receives. The
//! stand-in sends an audit event for every change of a subject's grants and
//! a token event for every login, as EventBridge would (in the background,
//! retried a few times if the far end is down).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Where events go: the endpoint, the header and its secret.
#[derive(Debug, Clone)]
pub struct Relay {
    pub url: String,
    pub header: String,
    pub secret: String,
}

/// The EventBridge source name events carry.
pub const SOURCE: &str = "aws.partner/genesys.com/cloud/standin-org/jit-broker-relay";

/// An EventBridge event from Genesys Cloud on `topic`.
pub fn envelope(topic: &str, body: Value, at: DateTime<Utc>) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": topic,
        "source": SOURCE,
        "account": "000000000000",
        "time": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "topicName": topic,
            "version": "2",
            "eventBody": body,
            "metadata": {"CorrelationId": uuid::Uuid::new_v4().to_string()},
        },
    })
}

/// The audit event for a change of `subject`'s grants (a user or a group),
/// as the audit trail recorded it, on its audit topic.
pub fn audited(subject: &str, is_group: bool, event: Value, at: DateTime<Utc>) -> Value {
    let entity_type = if is_group { "group" } else { "user" };
    envelope(
        &format!("v2.audits.entitytype.{entity_type}.entityid.{subject}"),
        event,
        at,
    )
}

/// The token event of a user's login.
pub fn token_issued(user: &str, at: DateTime<Utc>) -> Value {
    envelope(
        &format!("v2.users.{user}.tokens"),
        json!({"tokenIssuedAt": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
        at,
    )
}

/// Sends one event in the background, retrying a few times as EventBridge
/// does (it keeps trying for much longer).
pub fn send(relay: &Relay, event: Value) {
    let relay = relay.clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let http = reqwest::Client::new();
        for attempt in 0..5u32 {
            let sent = http
                .post(&relay.url)
                .header(relay.header.as_str(), relay.secret.as_str())
                .json(&event)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                // 4xx but 429: the far end refused it; EventBridge drops it.
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => return,
                _ => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
            }
        }
    });
}
