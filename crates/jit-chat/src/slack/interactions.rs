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

/// Checks a callback's signature and age (against `now`, the broker's
/// clock, as well as the verifier's own).
pub fn verify(
    signing_secret: &secrecy::SecretString,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(Refused::Unsigned);
    };
    let at: i64 = timestamp.parse().map_err(|_| Refused::Stale)?;
    if (now.timestamp() - at).abs() > MAX_AGE_SECS {
        return Err(Refused::Stale);
    }
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
