//! The notification ports: SOC email and the SIEM feed, and which audit
//! events are told.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_domain::Grant;
use serde::Serialize;

use super::{AuditEvent, FindingRecord};

/// Whether an audit event is mailed: jit-domain's one rule (`soc_notice`).
pub use jit_domain::notifies;

// ------------------------------------------------------------------- notify

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Try again later (SMTP server down, 4xx reply, timeout).
    #[error("{0}")]
    Transient(String),
    /// Trying again will not help (5xx reply, bad address, template error).
    #[error("{0}")]
    Permanent(String),
    /// The receiver asked to be left alone this long (a 429's `Retry-After`).
    #[error("{0} (retry after {1:?})")]
    Throttled(String, std::time::Duration),
}

/// What the SOC is told about one audit event, with what it refers to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub event: AuditEvent,
    /// The grant the event is about, as it is now.
    pub grant: Option<Grant>,
    /// For a sweep (`reconcile_run`): its findings.
    pub findings: Vec<FindingRecord>,
}

/// The SOC's mail (jit-notify over SMTP).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn deliver(&self, notice: &Notice) -> Result<(), NotifyError>;
}

/// A receiver fed audit events in order (jit-notify's SIEM feed over
/// HTTPS; jit-chat's Slack and Teams).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// The endpoint's configured name: its cursor's key.
    fn name(&self) -> &str;
    /// Which events it is fed (default: the SIEM's, every SOC event and
    /// the chain's checkpoints).
    fn wants(&self, kind: &str, data: &serde_json::Value) -> bool {
        crate::feed::feeds(kind, data)
    }
    /// Delivers one event, stamped `sent_at`; the receiver de-duplicates on
    /// its stable id.
    async fn send(&self, event: &AuditEvent, sent_at: DateTime<Utc>) -> Result<(), NotifyError>;
}
