//! The store's SOC and operations side: incidents that persist between
//! sweeps, break-glass logins, the SIEM feed's cursor, and what readiness
//! and metrics read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_domain::{FindingKind, UserName};
use serde::Serialize;

use super::{NewAudit, StoreError};

// ---------------------------------------------------------------------- soc

/// A reported finding that persists from sweep to sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub id: i64,
    pub kind: FindingKind,
    /// The user, or `oauth-client name (id)`.
    pub subject: String,
    pub role: String,
    pub detail: String,
    pub opened_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The sweep run that saw it last.
    pub last_seen_by: String,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A sweep saw a finding that is an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting<'a> {
    pub kind: FindingKind,
    pub subject: &'a str,
    pub role: &'a str,
    pub detail: &'a str,
    pub at: DateTime<Utc>,
    /// The sweep run that saw it.
    pub run: &'a str,
}

/// Incidents: opened once, seen again, resolved once.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Marks the open incident `(kind, subject, role)` seen, or opens one
    /// and writes `opened` with it in one transaction. Answers whether it
    /// opened one.
    async fn see_incident(&self, seen: &Sighting<'_>, opened: NewAudit)
    -> Result<bool, StoreError>;
    /// Resolves incident `id` if it is still open, with `audit` in one
    /// transaction; answers whether it did.
    async fn resolve_incident(
        &self,
        id: i64,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<bool, StoreError>;
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError>;
}

/// The newest login seen for each break-glass account.
#[async_trait]
pub trait BreakGlassStore: Send + Sync {
    /// `None`: never checked; `Some(None)`: checked, never logged in.
    async fn last_login_seen(
        &self,
        user: &UserName,
    ) -> Result<Option<Option<DateTime<Utc>>>, StoreError>;
    /// Records a check (and, when it found a newer login, its alert) in one
    /// transaction.
    async fn record_login_check(
        &self,
        user: &UserName,
        last_login: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        alert: Option<NewAudit>,
    ) -> Result<(), StoreError>;
}

/// Where a SIEM endpoint's feed stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor {
    /// The last audit event delivered (or given up on).
    pub last_seq: i64,
    /// Failed attempts at the next one.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
}

/// The SIEM feeds' progress through the audit log.
#[async_trait]
pub trait FeedStore: Send + Sync {
    /// The endpoint's cursor (a new endpoint starts before the first event).
    async fn feed_cursor(&self, endpoint: &str) -> Result<FeedCursor, StoreError>;
    /// Event `seq` is delivered (or skipped): the next one is due now.
    async fn advance_feed(
        &self,
        endpoint: &str,
        seq: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The next event failed: try again at `next_at`.
    async fn defer_feed(
        &self,
        endpoint: &str,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;
}

// ------------------------------------------------------------------ health

/// Counts read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    pub grants_by_state: Vec<(String, u64)>,
    /// Grants that ended before the revocation SLO with their role never
    /// verified gone.
    pub overdue_revocations: u64,
    pub outbox_pending: u64,
    pub outbox_oldest: Option<DateTime<Utc>>,
}

/// What readiness and metrics read.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// The newest migration applied; `None` before any.
    async fn schema_version(&self) -> Result<Option<i64>, StoreError>;
    /// The gauges; grants ended before `overdue_before` count as overdue.
    async fn gauges(&self, overdue_before: DateTime<Utc>) -> Result<StoreGauges, StoreError>;
}
