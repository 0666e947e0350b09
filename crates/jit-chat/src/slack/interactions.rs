//! Slack's interaction callbacks: the signature checked (slack-morphism's
//! verifier: `v0=` HMAC-SHA256 over `v0:<timestamp>:<body>`, compared in
//! constant time, within 5 minutes) and the payload read into what the
//! broker acts on.

use chrono::{DateTime, Utc};
use jit_domain::GrantId;
use secrecy::ExposeSecret;
use serde_json::Value;
use slack_morphism::prelude::*;
use slack_morphism::signature_verifier::{
    SlackEventSignatureVerifier, SlackEventSignatureVerifierError,
};

use super::blocks::{APPROVE, DENY, DENY_REASON, DROP, EXTEND, REASON};

/// The longest a callback may take to arrive (Slack's own bound).
pub const MAX_AGE_SECS: i64 = 5 * 60;

/// Why a callback is refused before anything is read from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no X-Slack-Signature or X-Slack-Request-Timestamp header")]
    Unsigned,
    #[error("the request timestamp is more than 5 minutes from now")]
    Stale,
    #[error("the signature does not match")]
    Forged,
    #[error("not an interaction payload: {0}")]
    Malformed(String),
}

/// What can be refused before the body is read: no signature, or a
/// timestamp that is not within 5 minutes of `now`.
pub fn precheck(
    timestamp: Option<&str>,
    signature: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    let (Some(timestamp), Some(_)) = (timestamp, signature) else {
        return Err(Refused::Unsigned);
    };
    let at: i64 = timestamp.parse().map_err(|_| Refused::Stale)?;
    if (now.timestamp() - at).abs() > MAX_AGE_SECS {
        return Err(Refused::Stale);
    }
    Ok(())
}

/// Checks a callback's signature and age (against `now`, the broker's
/// clock, as well as slack-morphism's verifier, which reads the system's).
pub fn verify(
    signing_secret: &secrecy::SecretString,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    precheck(timestamp, signature, now)?;
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(Refused::Unsigned);
    };
    let secret = SlackSigningSecret::new(signing_secret.expose_secret().to_owned());
    SlackEventSignatureVerifier::new(&secret)
        .verify(signature, body, timestamp)
        .map_err(|e| match e {
            SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_) => Refused::Stale,
            _ => Refused::Forged,
        })
}

/// What the person did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// A button: approve, deny (opens the reason modal), extend or drop.
    Click {
        user: String,
        action: Action,
        grant: GrantId,
        channel: Option<String>,
        trigger_id: String,
    },
    /// The deny modal submitted with its reason.
    DenyReason {
        user: String,
        grant: GrantId,
        reason: String,
    },
    /// Something the broker does not act on (a link button, another modal).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Deny,
    Extend,
    Drop,
}

/// Reads the form body Slack posts (`payload=<JSON>`).
pub fn parse(body: &str) -> Result<Interaction, Refused> {
    let payload = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| Refused::Malformed("no `payload` field".into()))?;
    let p: Value =
        serde_json::from_str(&payload).map_err(|e| Refused::Malformed(format!("payload: {e}")))?;
    let user = p["user"]["id"]
        .as_str()
        .ok_or_else(|| Refused::Malformed("no user.id".into()))?
        .to_owned();
    let grant = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<GrantId>().ok())
            .ok_or_else(|| Refused::Malformed("the value is not a grant id".into()))
    };
    match p["type"].as_str() {
        Some("block_actions") => {
            let a = &p["actions"][0];
            let action = match a["action_id"].as_str() {
                Some(APPROVE) => Action::Approve,
                Some(DENY) => Action::Deny,
                Some(EXTEND) => Action::Extend,
                Some(DROP) => Action::Drop,
                _ => return Ok(Interaction::Ignored),
            };
            Ok(Interaction::Click {
                user,
                action,
                grant: grant(&a["value"])?,
                channel: p["channel"]["id"]
                    .as_str()
                    .or_else(|| p["container"]["channel_id"].as_str())
                    .map(str::to_owned),
                trigger_id: p["trigger_id"].as_str().unwrap_or_default().to_owned(),
            })
        }
        Some("view_submission") if p["view"]["callback_id"] == DENY_REASON => {
            let reason = p["view"]["state"]["values"][REASON][REASON]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(Interaction::DenyReason {
                user,
                grant: grant(&p["view"]["private_metadata"])?,
                reason,
            })
        }
        Some(_) => Ok(Interaction::Ignored),
        None => Err(Refused::Malformed("no type".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test
    use super::*;
    use jit_slack_standin::{SlackUser, block_actions, interaction_body, sign, view_submission};

    const SECRET: &str = "unit-signing-secret";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn bob() -> SlackUser {
        SlackUser {
            id: "U1".into(),
            name: "bob".into(),
            email: "bob@example.com".into(),
        }
    }

    #[test]
    fn only_a_fresh_signature_of_this_body_under_this_secret_passes() {
        let secret = secrecy::SecretString::from(SECRET);
        let body = "payload=%7B%7D";
        // slack-morphism's verifier checks the age against the system clock
        // too, so the test signs at the real now.
        #[allow(clippy::disallowed_methods)]
        let t = chrono::Utc::now().timestamp();
        let good = sign(SECRET, t, body);
        let ts = t.to_string();
        let now = at(t + 10);
        assert_eq!(verify(&secret, Some(&ts), Some(&good), body, now), Ok(()));
        assert_eq!(
            verify(&secret, Some(&ts), Some(&sign("other", t, body)), body, now),
            Err(Refused::Forged)
        );
        assert_eq!(
            verify(&secret, Some(&ts), Some(&good), "payload=%7B%7Dx", now),
            Err(Refused::Forged)
        );
        assert_eq!(
            verify(&secret, Some(&ts), Some(&good), body, at(t + 301)),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(&secret, None, Some(&good), body, now),
            Err(Refused::Unsigned)
        );
    }

    #[test]
    fn clicks_and_the_deny_reason_are_read_and_anything_else_ignored() {
        let grant = "01a233ca-030d-7050-928d-ac3ac87012b9";
        let body = interaction_body(&block_actions(&bob(), "approve", grant, "C1", "1.1"));
        match parse(&body).unwrap() {
            Interaction::Click {
                user,
                action,
                channel,
                ..
            } => assert_eq!(
                (user.as_str(), action, channel.as_deref()),
                ("U1", Action::Approve, Some("C1"))
            ),
            other => panic!("{other:?}"),
        }
        let body = interaction_body(&view_submission(&bob(), DENY_REASON, grant, "no CAB"));
        assert_eq!(
            parse(&body).unwrap(),
            Interaction::DenyReason {
                user: "U1".into(),
                grant: grant.parse().unwrap(),
                reason: "no CAB".into()
            }
        );
        let open = interaction_body(&block_actions(&bob(), "open", grant, "C1", "1.1"));
        assert_eq!(parse(&open).unwrap(), Interaction::Ignored);
        let not_a_grant = interaction_body(&block_actions(&bob(), "approve", "x", "C1", "1.1"));
        assert!(matches!(parse(&not_a_grant), Err(Refused::Malformed(_))));
        assert!(matches!(parse("payload=nope"), Err(Refused::Malformed(_))));
    }
}
