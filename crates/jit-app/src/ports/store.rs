//! The store port: one trait per aggregate, and the records they keep.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_domain::{
    ExtensionRequest, ExtensionState, FindingOutcome, Grant, GrantId, GrantState, PairHistory,
    Review, RoleName, SweepKind, TicketId, Transition, UserName,
};
use serde::Serialize;
use serde_json::Value;

use super::soc_store::{BreakGlassStore, FeedStore, HealthStore, IncidentStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A uniqueness rule refused the write (e.g. a second live webhook grant
    /// for one change, user and role); nothing was written.
    #[error("already recorded: {0}")]
    Duplicate(String),
}

/// One reconciler sweep as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileRun {
    pub id: String,
    /// How the sweep found the roles held: holders of each role, or everyone.
    pub kind: SweepKind,
    /// `cron`, `cli` or `api`.
    pub trigger: String,
    pub dry_run: bool,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub users_scanned: u64,
    pub pages: u64,
    pub findings: u64,
    /// Roles removed and verified by read-back.
    pub actions: u64,
    pub errors: u64,
    pub error: Option<String>,
}

/// One finding of a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingRecord {
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub user: String,
    pub role: String,
    pub kind: String,
    pub action: FindingOutcome,
    pub detail: String,
}

/// An audit event the SOC must hear about, claimed for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub event: AuditEvent,
    pub attempts: u32,
}

/// A webhook delivery already handled, with the answer it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenDelivery {
    pub received_at: DateTime<Utc>,
    pub answer: Value,
}

/// A side effect to attempt later (docs/architecture.md, "Durable jobs and the outbox").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub user: UserName,
    pub role: RoleName,
    /// The grant whose change asked for it (for the record: the job is the
    /// pair's, whatever grant asked).
    pub grant: Option<GrantId>,
    pub due_at: DateTime<Utc>,
    /// Whether the change due may take the role away: such jobs go first.
    pub removal: bool,
}

/// A claimed job: bring one (user, role) up to date (every grant of the
/// pair advanced in time, then one converge). A pair has at most one
/// pending job; work asked of it meanwhile joins that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub user: UserName,
    pub role: RoleName,
    pub grant: Option<GrantId>,
    pub due_at: DateTime<Utc>,
    pub attempts: u32,
    /// How many times work joined the job before it was claimed: if more
    /// joins while it runs, the job stays pending for another round.
    pub wants: i64,
}

/// What the broker last proved of one pair in the directory, by its own
/// read-back (`None`: unknown, or a write may be under way, which every
/// write sets first).
pub use jit_domain::Settled;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairState {
    pub settled: Option<Settled>,
    /// The directory's id of the user, as last read.
    pub directory_id: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: &'static str,
    pub grant: Option<GrantId>,
    pub ticket: Option<TicketId>,
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub grant: Option<GrantId>,
    pub ticket: Option<String>,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub user: Option<UserName>,
    pub role: Option<RoleName>,
    pub state: Option<GrantState>,
    pub ticket: Option<TicketId>,
    /// Only grants created before this one (ids sort by creation).
    pub before: Option<GrantId>,
    /// Only grants that are not over (pending, approved, active).
    pub live: bool,
    /// Only grants made through this door (`api`, `web`, `servicenow`).
    pub origin: Option<String>,
    pub limit: u32,
}

/// What converge saw and did, written to the grants it concerns.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantMark {
    /// The role is present for this (active) grant.
    RoleAdded(GrantId),
    /// The role is gone: every ended grant of the pair that lacks a removal
    /// time gets `at`, and, with `activity`, the passes over its window.
    RoleRemoved {
        user: UserName,
        role: RoleName,
        activity: Option<ActivitySchedule>,
    },
    /// A permanent failure applying this grant.
    Failed(GrantId, String),
}

/// When to read what a grant's user did while the role was held, scheduled
/// with the removal that closes the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivitySchedule {
    /// The target's id of the user (the audit trail names users by id).
    pub directory_id: String,
    /// (pass number, due time); pass 0 is preliminary.
    pub passes: Vec<(u32, DateTime<Utc>)>,
}

/// A pass over the audit trail to run: whose actions, over which window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityPass {
    /// A grant id, or `login:<user>:<ms>` for a break-glass login.
    pub subject: String,
    pub pass: u32,
    pub grant: Option<GrantId>,
    pub user: String,
    pub directory_id: String,
    pub from: DateTime<Utc>,
    /// `None`: up to when the pass runs.
    pub to: Option<DateTime<Utc>>,
    pub due: DateTime<Utc>,
}

/// A claimed pass: its row id and how often it was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPass {
    pub id: i64,
    pub attempts: u32,
    pub pass: ActivityPass,
}

/// A pass as the grant page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassRecord {
    pub pass: u32,
    /// `pending`, `done` or `failed`.
    pub status: String,
    pub due_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The store, one trait per aggregate (each has its own file in jit-store).
/// A `dyn Store` answers every aggregate's methods.
pub trait Store:
    GrantStore
    + JobStore
    + SweepStore
    + OutboxStore
    + DeliveryStore
    + AuditStore
    + IncidentStore
    + BreakGlassStore
    + FeedStore
    + HealthStore
    + SessionStore
    + ExtensionStore
    + ActivityStore
    + ChatStore
{
}

impl<T> Store for T where
    T: GrantStore
        + JobStore
        + SweepStore
        + OutboxStore
        + DeliveryStore
        + AuditStore
        + IncidentStore
        + BreakGlassStore
        + FeedStore
        + HealthStore
        + SessionStore
        + ExtensionStore
        + ActivityStore
        + ChatStore
        + ?Sized
{
}

/// Grants with their jobs and audit events, written together.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// A new grant, its jobs and its audit event: all or nothing.
    async fn insert_grant(
        &self,
        grant: &Grant,
        jobs: &[NewJob],
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError>;
    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError>;
    /// The pair's grants that can still matter: not terminal, or ended with the role not yet seen removed.
    async fn grants_for(&self, user: &UserName, role: &RoleName) -> Result<Vec<Grant>, StoreError>;
    /// The pair's ended grants whose role was seen added and not yet seen
    /// removed (newest first, at most 100): what an overdue or failed
    /// removal concerns.
    async fn awaiting_removal(
        &self,
        user: &UserName,
        role: &RoleName,
    ) -> Result<Vec<Grant>, StoreError>;
    /// Applies `t` if the grant is still in `t.from`, with its jobs and audit
    /// event, atomically. `false`: someone else moved it first; nothing written.
    async fn transition(
        &self,
        id: GrantId,
        t: &Transition,
        note: Option<&str>,
        jobs: &[NewJob],
        audit: NewAudit,
    ) -> Result<bool, StoreError>;
    /// An approver's answer with the transition it causes (if any), the jobs
    /// that follow and its audit event, atomically. `false`: the grant moved
    /// first; nothing written. A second answer by the same approver is
    /// `Duplicate`.
    async fn record_review(
        &self,
        id: GrantId,
        review: &Review,
        t: Option<&Transition>,
        jobs: &[NewJob],
        audit: NewAudit,
    ) -> Result<bool, StoreError>;
    /// Every answer recorded on a grant, oldest first.
    async fn reviews(&self, id: GrantId) -> Result<Vec<Review>, StoreError>;
    /// Moves a live grant's end from `from` to `until` with its new expiry
    /// job and audit event. `false`: the grant changed first.
    async fn extend_grant(
        &self,
        id: GrantId,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        jobs: &[NewJob],
        audit: NewAudit,
    ) -> Result<bool, StoreError>;
    /// Records converge's outcome on grants, with its audit event when there is one.
    async fn mark(
        &self,
        mark: &GrantMark,
        at: DateTime<Utc>,
        audit: Option<NewAudit>,
    ) -> Result<(), StoreError>;
    /// Records, once per grant, that its role outlived the revocation SLO,
    /// with the audit event (and so the email). `false`: already recorded.
    async fn mark_overdue(&self, id: GrantId, audit: NewAudit) -> Result<bool, StoreError>;
    /// Records the warning before a grant ends, once: `false` if it was.
    async fn mark_nudged(&self, id: GrantId, audit: NewAudit) -> Result<bool, StoreError>;

    /// Distinct tickets cited by grants that are not terminal.
    async fn tickets_of_live_grants(&self) -> Result<Vec<TicketId>, StoreError>;
}

/// Durable converge jobs, claimed under a lease.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Leases up to `limit` due jobs to `owner` until `lease_until`.
    async fn claim_jobs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    /// The job ran: done, unless work joined it while it ran (then it is due
    /// again at once, behind the pairs already waiting). `next`, the pair's
    /// next wake, is scheduled in the same transaction.
    async fn complete_job(
        &self,
        job: &Job,
        owner: &str,
        at: DateTime<Utc>,
        next: Option<&NewJob>,
    ) -> Result<(), StoreError>;
    async fn retry_job(
        &self,
        id: i64,
        owner: &str,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;
    async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        at: DateTime<Utc>,
        error: &str,
        next: Option<&NewJob>,
    ) -> Result<(), StoreError>;
    /// What the broker last proved of the pair.
    async fn pair_state(
        &self,
        user: &UserName,
        role: &RoleName,
    ) -> Result<Option<PairState>, StoreError>;
    /// Records what was proved (`settled`), or `None` before a write.
    async fn set_pair_state(
        &self,
        user: &UserName,
        role: &RoleName,
        settled: Option<Settled>,
        directory_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Makes every pending job that is waiting out a retry back-off due at
    /// `now` (the target is back); answers how many.
    async fn release_retries(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// When the next job becomes claimable (leases included), if any is pending.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// On shutdown, after its work stopped: gives back everything `owner`
    /// still holds (pending jobs, outbox rows, named leases such as a
    /// sweep's), in one transaction, so another replica takes it at once
    /// instead of when the leases lapse.
    async fn release_owner(&self, owner: &str) -> Result<Released, StoreError>;
}

/// What [`JobStore::release_owner`] gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// The jobs, by id: a job still leased at a stop is worth naming.
    pub job_ids: Vec<i64>,
    pub outbox: u64,
    pub leases: u64,
    pub activity: u64,
}

/// Reconciler runs, their findings, and the lease that makes sweeps exclusive.
#[async_trait]
pub trait SweepStore: Send + Sync {
    /// Takes or renews the named lease for `owner` until `until`, if it is
    /// free, expired at `now`, or already `owner`'s.
    async fn try_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;
    /// How many leases whose name starts with `prefix` are held at `now`
    /// (live replicas, each renewing its own).
    async fn live_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<u32, StoreError>;

    async fn insert_run(&self, run: &ReconcileRun) -> Result<(), StoreError>;
    /// The run's counters and status, with its audit event.
    async fn update_run(
        &self,
        run: &ReconcileRun,
        audit: Option<NewAudit>,
    ) -> Result<(), StoreError>;
    async fn runs(&self, limit: u32) -> Result<Vec<ReconcileRun>, StoreError>;
    async fn run(&self, id: &str) -> Result<Option<ReconcileRun>, StoreError>;
    async fn insert_finding(
        &self,
        finding: &FindingRecord,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    async fn findings(&self, run_id: &str, limit: u32) -> Result<Vec<FindingRecord>, StoreError>;
    /// What the sweeps since `since` did to this pair: the removals they
    /// verified, and the last time one named it a conflicting writer (the
    /// first of each pattern raised the SOC alert, in the same transaction).
    async fn pair_history(
        &self,
        user: &UserName,
        role: &RoleName,
        since: DateTime<Utc>,
    ) -> Result<PairHistory, StoreError>;
}

/// SOC email waiting to be sent, one row per audit event that notifies.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Leases up to `limit` due outbox rows with their audit events.
    async fn claim_outbox(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// `sent`, `failed` (permanent), or `pending` again at `next_at`.
    async fn release_outbox(
        &self,
        id: i64,
        owner: &str,
        status: &str,
        at: DateTime<Utc>,
        next_at: Option<DateTime<Utc>>,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
}

/// The ServiceNow webhook's replay guard.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// The replay guard: the earlier answer to this delivery id, if any.
    async fn seen_delivery(&self, delivery_id: &str) -> Result<Option<SeenDelivery>, StoreError>;
    /// Remembers a handled delivery; `false` if another copy got there first.
    async fn record_delivery(
        &self,
        delivery_id: &str,
        at: DateTime<Utc>,
        ticket: Option<&TicketId>,
        answer: &Value,
    ) -> Result<bool, StoreError>;
    /// Forgets deliveries received before `before` (older than any replay
    /// window a signature check still admits); answers how many.
    async fn purge_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, audit: NewAudit) -> Result<(), StoreError>;
    /// One grant's events, in order.
    async fn audit_of_grant(&self, id: GrantId) -> Result<Vec<AuditEvent>, StoreError>;
    /// Events in order, after `after_seq`.
    async fn audit_events(&self, after_seq: i64, limit: u32)
    -> Result<Vec<AuditEvent>, StoreError>;
    /// The newest event.
    async fn audit_head(&self) -> Result<Option<AuditEvent>, StoreError>;
    /// Stores a signed checkpoint with its audit event, in one transaction.
    async fn insert_checkpoint(
        &self,
        checkpoint: &AuditCheckpoint,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    /// Every checkpoint, oldest first.
    async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError>;
    /// The newest checkpoint.
    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError>;
    /// Rows that became one when user names took one canonical form (the
    /// migration records them), not yet reported: appended as one audit
    /// event of `kind` at `at` (`data.collisions`) and marked reported in
    /// the same transaction. `false` when there was nothing to report.
    async fn report_user_name_collisions(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        kind: &'static str,
    ) -> Result<bool, StoreError>;
}

/// A signed statement that the audit chain's head was `seq` with `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
    /// The signer's ed25519 public key, hex.
    pub key_id: String,
    /// Hex ed25519 signature (see `jit_store::checkpoint_message`).
    pub signature: String,
}

/// Signs the audit chain's head (the key stays with the implementation).
pub trait CheckpointSigner: Send + Sync {
    /// `(key_id, signature)` over the head `seq` with `hash`.
    fn sign_head(&self, seq: i64, hash: &str) -> (String, String);
}

/// A web session as the server keeps it: the cookie holds a random id, the
/// store only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub id_hash: String,
    /// Who is signed in (`None` before sign-in).
    pub user: Option<String>,
    /// The session's values, JSON.
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// The idle end, never past `absolute_at`.
    pub expires_at: DateTime<Utc>,
    pub absolute_at: DateTime<Utc>,
}

/// Web sessions on the server, so that every replica agrees and sign-out
/// ends them.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// A new session; also purges every row past its end.
    async fn insert_session(&self, s: &StoredSession) -> Result<(), StoreError>;
    /// The session's values, if it exists and has not ended at `now`.
    async fn load_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredSession>, StoreError>;
    /// New values and idle end for a live session. `false`: it has ended
    /// (signed out, revoked, expired); nothing is written, nothing revived.
    async fn update_session(
        &self,
        id_hash: &str,
        user: Option<&str>,
        state: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Ends one session (sign-out, timeout).
    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;
    /// Ends every session of `user`, with the audit event, atomically;
    /// answers how many there were.
    async fn delete_sessions_of(&self, user: &str, audit: NewAudit) -> Result<u64, StoreError>;
    /// When all of `user`'s sessions were last ended, if ever.
    async fn sessions_ended_at(&self, user: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Remembers the groups the identity provider named at a sign-in, valid
    /// until `until` (the sign-in's absolute timeout).
    async fn record_sign_in(
        &self,
        user: &str,
        groups: &std::collections::BTreeSet<String>,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The groups of `user`'s last sign-in, if it is still within its
    /// absolute timeout at `now` (and their sessions were not ended since).
    async fn signed_in_groups(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<std::collections::BTreeSet<String>>, StoreError>;
    /// Live sessions of `user` at `now` (the SOC page shows the count).
    async fn count_sessions_of(&self, user: &str, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Requests to extend a grant past its approved end, and their answers.
#[async_trait]
pub trait ExtensionStore: Send + Sync {
    /// A new pending request with its audit event. `Duplicate` when the
    /// grant already has one pending.
    async fn insert_extension(
        &self,
        request: &ExtensionRequest,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    /// The grant's pending request, if any.
    async fn pending_extension(
        &self,
        grant: GrantId,
    ) -> Result<Option<ExtensionRequest>, StoreError>;
    /// Every pending request (the approvals lists).
    async fn pending_extensions(&self) -> Result<Vec<ExtensionRequest>, StoreError>;
    async fn extension_reviews(&self, id: uuid::Uuid) -> Result<Vec<Review>, StoreError>;
    /// An answer; when it decides, the request's new state and, if
    /// approved, the grant's end moved from `request.from` to
    /// `request.until` with `jobs`. All with the audit event, atomically.
    /// `false`: the request or the grant moved first; nothing written.
    async fn record_extension_review(
        &self,
        request: &ExtensionRequest,
        review: &Review,
        decided: Option<ExtensionState>,
        jobs: &[NewJob],
        audit: NewAudit,
    ) -> Result<bool, StoreError>;
}

/// What was done with a privilege: passes over the target's audit trail and
/// the events they found, kept once each by the target's id.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Adds passes (one already scheduled for the subject is kept as is).
    async fn schedule_activity(
        &self,
        passes: &[ActivityPass],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Due passes, leased to `owner` until `lease_until`.
    async fn claim_activity(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedPass>, StoreError>;
    /// The subject's events, oldest first.
    async fn activity(&self, subject: &str) -> Result<Vec<jit_domain::ActivityEvent>, StoreError>;
    async fn activity_passes(&self, subject: &str) -> Result<Vec<PassRecord>, StoreError>;
    /// Keeps the events not kept yet, ends the claimed pass `done` (if
    /// any: a look on demand has none) and appends `audit`, together.
    async fn record_activity(
        &self,
        subject: &str,
        done: Option<(i64, u32, &str)>,
        events: &[jit_domain::ActivityEvent],
        at: DateTime<Utc>,
        audit: Option<NewAudit>,
    ) -> Result<(), StoreError>;
    /// Gives the claimed pass back, to run again at `next_at`.
    async fn retry_activity(
        &self,
        id: i64,
        owner: &str,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Ends the claimed pass as failed, with `audit`.
    async fn fail_activity(
        &self,
        id: i64,
        owner: &str,
        at: DateTime<Utc>,
        error: &str,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    /// When the next pass is due (or its lease ends).
    async fn next_activity_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// The chat messages the broker posted and updates in place.
#[async_trait]
pub trait ChatStore: Send + Sync {
    /// Remembers where `key`'s message is (the first one posted wins).
    async fn save_chat_message(
        &self,
        key: &str,
        channel: &str,
        ts: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Where `key`'s message is: (channel, ts).
    async fn chat_message(&self, key: &str) -> Result<Option<(String, String)>, StoreError>;
}
