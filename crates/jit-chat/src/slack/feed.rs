//! The audit events Slack is told, in order and at least once (the feed's
//! cursor moves only after Slack accepted): a request waiting for approval
//! is posted to its role's channel, each answer updates it in place, the
//! requester gets the outcome directly, and a holder the warning before the
//! end. A message is remembered by what it is about, so a delivery repeated
//! after a crash updates the message it already posted.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{AuditEvent, EventSink, NotifyError, Store, StoreError};
use jit_domain::{Grant, GrantId, Policy};
use serde_json::Value;

use super::blocks::{self, Links};
use super::client::{MessageRef, Slack};

/// The kinds Slack hears of.
fn wanted(kind: &str, data: &Value) -> bool {
    match kind {
        "grant_requested" => data["state"] == "pending_approval",
        "grant_cancelled" => data["from"] == "pending_approval",
        "grant_reviewed" | "grant_approved" | "grant_denied" => true,
        "extension_requested"
        | "extension_reviewed"
        | "extension_approved"
        | "extension_denied" => true,
        k => k == jit_app::chat::EXPIRY_NUDGE,
    }
}

pub struct SlackFeed {
    slack: Arc<Slack>,
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    links: Links,
    default_channel: String,
}

impl SlackFeed {
    pub fn new(
        slack: Arc<Slack>,
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        links: Links,
        default_channel: String,
    ) -> Self {
        Self {
            slack,
            store,
            policy,
            links,
            default_channel,
        }
    }

    fn channel_of(&self, grant: &Grant) -> String {
        self.policy
            .role(&grant.role)
            .and_then(|r| r.slack_channel.clone())
            .unwrap_or_else(|| self.default_channel.clone())
    }

    fn needed(&self, grant: &Grant) -> u8 {
        self.policy.role(&grant.role).map_or(1, |r| r.approvals)
    }

    /// Posts under `key` the first time, updates the same message after.
    async fn post_or_update(
        &self,
        key: &str,
        channel: &str,
        (text, blocks): (String, Value),
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        match self.store.chat_message(key).await.map_err(store)? {
            Some((channel, ts)) => {
                self.slack
                    .update(&MessageRef { channel, ts }, &text, blocks)
                    .await
            }
            None => {
                let posted = self.slack.post(channel, &text, blocks).await?;
                self.store
                    .save_chat_message(key, &posted.channel, &posted.ts, now)
                    .await
                    .map_err(store)
            }
        }
    }

    async fn grant(&self, event: &AuditEvent) -> Result<Option<Grant>, NotifyError> {
        let Some(id) = event.grant else {
            return Ok(None);
        };
        self.store.grant(id).await.map_err(store)
    }

    async fn request(&self, grant: &Grant, now: DateTime<Utc>) -> Result<(), NotifyError> {
        let reviews = self.store.reviews(grant.id).await.map_err(store)?;
        let message = blocks::request(grant, &reviews, self.needed(grant), &self.links);
        self.post_or_update(
            &request_key(grant.id),
            &self.channel_of(grant),
            message,
            now,
        )
        .await
    }

    /// An extension request as it stands (`state`: pending, approved, denied).
    async fn extension(
        &self,
        grant: &Grant,
        data: &Value,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        let Some(id) = data["extension"].as_str() else {
            return Ok(());
        };
        let parsed = id.parse::<uuid::Uuid>().ok();
        let reviews = match parsed {
            Some(id) => self.store.extension_reviews(id).await.map_err(store)?,
            None => Vec::new(),
        };
        let time = |k: &str| {
            data[k]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let ext = blocks::Extension {
            requested_by: data["requested_by"].as_str().unwrap_or_default().to_owned(),
            from: time("from").unwrap_or(grant.expires_at),
            until: time("until").unwrap_or(grant.expires_at),
            state: state.to_owned(),
        };
        let message = blocks::extension(grant, &ext, &reviews, self.needed(grant), &self.links);
        self.post_or_update(
            &format!("extension:{id}"),
            &self.channel_of(grant),
            message,
            now,
        )
        .await
    }

    async fn tell_requester(
        &self,
        grant: &Grant,
        kind: &str,
        event: &AuditEvent,
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        let comment = event.data["comment"].as_str().unwrap_or_default();
        let message = blocks::outcome(grant, kind, &event.actor, comment, &self.links);
        let to = match kind {
            "extension_approved" | "extension_denied" => event.data["requested_by"]
                .as_str()
                .unwrap_or(grant.user.as_str())
                .to_owned(),
            _ => grant.user.to_string(),
        };
        // Once per event, even if the feed repeats it.
        self.direct_once(&format!("outcome:{}", event.seq), &to, message, now)
            .await
    }

    async fn nudge(&self, grant: &Grant, now: DateTime<Utc>) -> Result<(), NotifyError> {
        let message = blocks::nudge(grant, &self.links, None);
        self.direct_once(&nudge_key(grant.id), grant.user.as_str(), message, now)
            .await
    }

    /// A direct message remembered under `key`, sent only the first time.
    async fn direct_once(
        &self,
        key: &str,
        email: &str,
        (text, blocks): (String, Value),
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        if self.store.chat_message(key).await.map_err(store)?.is_some() {
            return Ok(());
        }
        if let Some(sent) = self.slack.direct(email, &text, blocks).await? {
            self.store
                .save_chat_message(key, &sent.channel, &sent.ts, now)
                .await
                .map_err(store)?;
        }
        Ok(())
    }
}

/// Where a grant's approval request is remembered.
pub fn request_key(grant: GrantId) -> String {
    format!("request:{grant}")
}

/// Where a grant's warning before its end is remembered.
pub fn nudge_key(grant: GrantId) -> String {
    format!("nudge:{grant}")
}

fn store(e: StoreError) -> NotifyError {
    NotifyError::Transient(format!("the store: {e}"))
}

#[async_trait]
impl EventSink for SlackFeed {
    fn name(&self) -> &str {
        "slack"
    }

    fn wants(&self, kind: &str, data: &Value) -> bool {
        wanted(kind, data)
    }

    async fn send(&self, event: &AuditEvent, sent_at: DateTime<Utc>) -> Result<(), NotifyError> {
        let Some(grant) = self.grant(event).await? else {
            return Ok(());
        };
        let kind = event.kind.as_str();
        match kind {
            "grant_requested" | "grant_reviewed" => self.request(&grant, sent_at).await,
            "grant_approved" | "grant_denied" | "grant_cancelled" => {
                self.request(&grant, sent_at).await?;
                self.tell_requester(&grant, kind, event, sent_at).await
            }
            "extension_requested" | "extension_reviewed" => {
                self.extension(&grant, &event.data, "pending", sent_at)
                    .await
            }
            "extension_approved" | "extension_denied" => {
                let state = kind.trim_start_matches("extension_");
                self.extension(&grant, &event.data, state, sent_at).await?;
                self.tell_requester(&grant, kind, event, sent_at).await
            }
            _ => self.nudge(&grant, sent_at).await,
        }
    }
}
