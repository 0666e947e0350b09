//! Events are hints: what an event Genesys Cloud pushed (relayed by Amazon
//! EventBridge) makes the broker look at now. The event is never evidence:
//! whatever it says, the broker reads Genesys afresh and decides on that
//! read, so a forged or stale event costs one read and changes nothing.

use serde::Deserialize;
use serde_json::Value;

/// The part of an EventBridge event from Genesys Cloud the broker reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RelayedEvent {
    /// EventBridge's event id: the same delivery retried keeps it.
    pub id: String,
    /// `aws.partner/genesys.com/…`: which integration relayed it.
    pub source: String,
    pub detail: EventDetail,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventDetail {
    #[serde(rename = "topicName")]
    pub topic_name: String,
    #[serde(rename = "eventBody", default)]
    pub event_body: Value,
}

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// A subject's grants may have changed: read them now (a user: its
    /// privileged roles are converged; anything else: the holders sweep).
    Subject { kind: SubjectHint, id: String },
    /// A user was issued a token (logged in): check break-glass logins now.
    Login { user_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectHint {
    User,
    /// A group, a role, or an entity the broker cannot place: the holders
    /// sweep looks at every privileged role.
    Other,
}

impl RelayedEvent {
    /// What the event hints at; `None` for a topic the broker ignores, or
    /// one caused by `own_client` (the broker's own writes come back as
    /// audit events too).
    pub fn hint(&self, own_client: Option<&str>) -> Option<Hint> {
        let topic = self.detail.topic_name.as_str();
        let body = &self.detail.event_body;
        if let Some(rest) = topic.strip_prefix("v2.users.")
            && let Some(user_id) = rest.strip_suffix(".tokens")
            && !user_id.is_empty()
        {
            return Some(Hint::Login {
                user_id: user_id.to_owned(),
            });
        }
        let rest = topic.strip_prefix("v2.audits.entitytype.")?;
        let (entity_type, id) = rest.split_once(".entityid.")?;
        if id.is_empty() {
            return None;
        }
        let caused_by = body["client"]["id"].as_str();
        if own_client.is_some() && caused_by == own_client {
            return None;
        }
        let kind = if entity_type.eq_ignore_ascii_case("user") {
            SubjectHint::User
        } else {
            SubjectHint::Other
        };
        Some(Hint::Subject {
            kind,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(topic: &str, body: Value) -> RelayedEvent {
        serde_json::from_value(json!({
            "version": "0", "id": "e-1", "detail-type": topic,
            "source": "aws.partner/genesys.com/cloud/org/jit", "account": "1",
            "time": "2026-12-01T10:00:00Z", "region": "eu-west-1", "resources": [],
            "detail": {"topicName": topic, "version": "2", "eventBody": body},
        }))
        .unwrap()
    }

    #[test]
    fn a_user_audit_is_a_subject_and_a_token_a_login() {
        let audit = event(
            "v2.audits.entitytype.user.entityid.u-1",
            json!({"client": {"id": "admin-ui"}, "action": "Update"}),
        );
        assert_eq!(
            audit.hint(Some("broker")),
            Some(Hint::Subject {
                kind: SubjectHint::User,
                id: "u-1".into()
            })
        );
        let login = event("v2.users.u-2.tokens", json!({}));
        assert_eq!(
            login.hint(None),
            Some(Hint::Login {
                user_id: "u-2".into()
            })
        );
    }

    #[test]
    fn a_group_or_role_event_asks_for_a_sweep_and_the_broker_s_own_writes_are_ignored() {
        let group = event("v2.audits.entitytype.group.entityid.g-1", json!({}));
        assert!(matches!(
            group.hint(None),
            Some(Hint::Subject {
                kind: SubjectHint::Other,
                ..
            })
        ));
        let own = event(
            "v2.audits.entitytype.user.entityid.u-1",
            json!({"client": {"id": "broker"}}),
        );
        assert_eq!(own.hint(Some("broker")), None);
        assert_eq!(
            event("v2.routing.queues.q.members", json!({})).hint(None),
            None
        );
        assert_eq!(
            event("v2.audits.entitytype.user.entityid.", json!({})).hint(None),
            None
        );
    }
}
