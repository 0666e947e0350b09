//! jit-store: the `Store` port over SQLite and PostgreSQL (sqlx, run-time
//! queries). One binary picks the backend from the URL scheme at start.
//!
//! Both implementations are generated from one body (`sql_store!`): the query
//! texts are the same (`$N` placeholders work on both), only the job-claim
//! locking clause and the audit-chain lock differ.

pub mod audit;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{
    AuditEvent, FindingRecord, GrantFilter, GrantMark, Job, NewAudit, NewJob, OutboxItem,
    ReconcileRun, SeenDelivery, Store, StoreError, notifies,
};
use jit_domain::{
    EndReason, Grant, GrantId, Justification, RoleName, TicketId, Transition, UserName,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::audit::{GENESIS, Hashed, canonical_json, event_hash};

pub use audit::{BrokenLink, ChainVerifier};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Which backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Database(
                "database URL must start with sqlite: or postgres:// (the rest of it is not shown: it may hold a password)"
                    .into(),
            ))
        }
    }
}

/// Opens the store a URL names, applying migrations first when `migrate`.
pub async fn open(
    url: &str,
    migrate: bool,
    max_connections: u32,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match Backend::from_url(url)? {
        Backend::Sqlite => {
            let store = SqliteStore::connect(url).await?;
            if migrate {
                SQLITE_MIGRATIONS
                    .run(&store.pool)
                    .await
                    .map_err(migrate_err)?;
            }
            Arc::new(store)
        }
        Backend::Postgres => {
            let store = PgStore::connect(url, max_connections).await?;
            if migrate {
                POSTGRES_MIGRATIONS
                    .run(&store.pool)
                    .await
                    .map_err(migrate_err)?;
            }
            Arc::new(store)
        }
    })
}

/// Every migration version, per backend: a test keeps the two in step.
pub fn migration_versions() -> (Vec<i64>, Vec<i64>) {
    let versions = |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect();
    (versions(&SQLITE_MIGRATIONS), versions(&POSTGRES_MIGRATIONS))
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Database(format!("migration failed: {e}"))
}

/// A statement assembled at run time. Only static fragments (column lists,
/// state lists) and `$N` placeholder numbers are ever interpolated; every
/// value goes through `bind`.
fn built(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // SQLite has one writer; one connection makes every transaction's
        // read-then-write (the audit chain) serial without upgrade deadlocks.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self { pool })
    }
}

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self { pool })
    }
}

// ------------------------------------------------------------------ rows

const GRANT_COLUMNS: &str = "id, user_name, role, ticket, justification, requested_by, state, starts_at, \
     expires_at, created_at, updated_at, ended_at, end_reason, end_note, role_added_at, role_removed_at, last_error, \
     origin, decision, ticket_snapshot";

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    user_name: String,
    role: String,
    ticket: Option<String>,
    justification: String,
    requested_by: String,
    state: String,
    starts_at: i64,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
    end_note: Option<String>,
    role_added_at: Option<i64>,
    role_removed_at: Option<i64>,
    last_error: Option<String>,
    origin: String,
    decision: Option<String>,
    ticket_snapshot: Option<String>,
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    raw: Option<String>,
) -> Result<Option<T>, StoreError> {
    raw.map(|r| serde_json::from_str(&r).map_err(|e| corrupt(what, e)))
        .transpose()
}

fn to_json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>, StoreError> {
    value
        .as_ref()
        .map(|v| serde_json::to_string(v).map_err(|e| corrupt("json", e)))
        .transpose()
}

const RUN_COLUMNS: &str = "id, trigger_source, dry_run, status, started_at, finished_at, users_scanned, \
     pages, findings, actions, errors, error";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    trigger_source: String,
    dry_run: bool,
    status: String,
    started_at: i64,
    finished_at: Option<i64>,
    users_scanned: i64,
    pages: i64,
    findings: i64,
    actions: i64,
    errors: i64,
    error: Option<String>,
}

impl TryFrom<RunRow> for ReconcileRun {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        let count = |v: i64| u64::try_from(v).map_err(|e| corrupt("counter", e));
        Ok(ReconcileRun {
            id: r.id,
            trigger: r.trigger_source,
            dry_run: r.dry_run,
            status: r.status,
            started_at: time(r.started_at)?,
            finished_at: opt_time(r.finished_at)?,
            users_scanned: count(r.users_scanned)?,
            pages: count(r.pages)?,
            findings: count(r.findings)?,
            actions: count(r.actions)?,
            errors: count(r.errors)?,
            error: r.error,
        })
    }
}

#[derive(sqlx::FromRow)]
struct FindingRow {
    run_id: String,
    at: i64,
    user_name: String,
    role: String,
    kind: String,
    action: String,
    detail: String,
}

fn counter(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp", ms))
}

fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(time).transpose()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> Result<Self, StoreError> {
        Ok(Grant {
            id: r.id.parse().map_err(|e| corrupt("grant id", e))?,
            user: UserName::parse(&r.user_name).map_err(|e| corrupt("user_name", e.message))?,
            role: RoleName::parse(&r.role).map_err(|e| corrupt("role", e.message))?,
            ticket: r
                .ticket
                .map(|t| TicketId::parse(&t))
                .transpose()
                .map_err(|e| corrupt("ticket", e.message))?,
            justification: Justification::parse(&r.justification)
                .map_err(|e| corrupt("justification", e.message))?,
            requested_by: r.requested_by,
            state: r.state.parse().map_err(|e| corrupt("state", e))?,
            starts_at: time(r.starts_at)?,
            expires_at: time(r.expires_at)?,
            created_at: time(r.created_at)?,
            updated_at: time(r.updated_at)?,
            ended_at: opt_time(r.ended_at)?,
            end_reason: r
                .end_reason
                .map(|s| s.parse::<EndReason>())
                .transpose()
                .map_err(|e| corrupt("end_reason", e))?,
            end_note: r.end_note,
            role_added_at: opt_time(r.role_added_at)?,
            role_removed_at: opt_time(r.role_removed_at)?,
            last_error: r.last_error,
            origin: r.origin,
            decision: from_json("decision", r.decision)?,
            ticket_snapshot: from_json("ticket_snapshot", r.ticket_snapshot)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    user_name: String,
    role: String,
    grant_id: Option<String>,
    due_at: i64,
    attempts: i64,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        Ok(Job {
            id: r.id,
            user: UserName::parse(&r.user_name).map_err(|e| corrupt("job user", e.message))?,
            role: RoleName::parse(&r.role).map_err(|e| corrupt("job role", e.message))?,
            grant: r
                .grant_id
                .map(|g| g.parse())
                .transpose()
                .map_err(|e| corrupt("job grant", e))?,
            due_at: time(r.due_at)?,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at: i64,
    actor: String,
    kind: String,
    grant_id: Option<String>,
    ticket: Option<String>,
    data: String,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self, StoreError> {
        Ok(AuditEvent {
            seq: r.seq,
            at: time(r.at)?,
            actor: r.actor,
            kind: r.kind,
            grant: r
                .grant_id
                .map(|g| g.parse())
                .transpose()
                .map_err(|e| corrupt("audit grant", e))?,
            ticket: r.ticket,
            data: serde_json::from_str(&r.data).map_err(|e| corrupt("audit data", e))?,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

const NON_TERMINAL: &str = "('pending_approval', 'approved', 'active')";

/// One implementation body for both backends.
///
/// `$claim_lock`: appended to the job-claim subquery (PostgreSQL: skip rows
/// another replica is claiming). `$audit_lock`: run first in a transaction
/// that appends to the audit chain, so appends are serial (SQLite is already
/// serial: one connection, one writer).
macro_rules! sql_store {
    ($store:ident, $db:ty, claim_lock = $claim_lock:literal, audit_lock = $audit_lock:expr) => {
        impl $store {
            /// Ends `owner`'s lease on a job with its outcome. A late answer
            /// from a worker whose lease ran out (another owns it now) changes nothing.
            async fn release_job(
                &self,
                id: i64,
                owner: &str,
                status: &str,
                finished_at: Option<DateTime<Utc>>,
                next_attempt_at: Option<DateTime<Utc>>,
                error: Option<&str>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE jobs SET status = $1, finished_at = $2, next_attempt_at = COALESCE($3, next_attempt_at), \
                     last_error = $4, lease_owner = NULL, lease_until = NULL WHERE id = $5 AND lease_owner = $6",
                )
                .bind(status)
                .bind(finished_at.map(ms))
                .bind(next_attempt_at.map(ms))
                .bind(error)
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn append_audit_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                audit: &NewAudit,
            ) -> Result<(), StoreError> {
                let lock: Option<&str> = $audit_lock;
                if let Some(lock) = lock {
                    sqlx::query(lock).execute(&mut **tx).await.map_err(db)?;
                }
                let last: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db)?;
                let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_owned()));
                let data = canonical_json(&audit.data);
                let grant = audit.grant.map(|g| g.to_string());
                let ticket = audit.ticket.as_ref().map(|t| t.as_str());
                let seq = prev_seq + 1;
                let hash = event_hash(
                    &prev_hash,
                    &Hashed { seq, at: audit.at, actor: &audit.actor, kind: audit.kind, grant: grant.clone(), ticket, data: &data },
                );
                sqlx::query(
                    "INSERT INTO audit (seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(seq)
                .bind(ms(audit.at))
                .bind(&audit.actor)
                .bind(audit.kind)
                .bind(grant)
                .bind(ticket)
                .bind(data)
                .bind(prev_hash)
                .bind(hash)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                // The SOC's email is recorded with the event, or not at all.
                if notifies(audit.kind, &audit.data) {
                    sqlx::query(
                        "INSERT INTO outbox (audit_seq, kind, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)",
                    )
                    .bind(seq)
                    .bind(audit.kind)
                    .bind(ms(audit.at))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                }
                Ok(())
            }

            async fn audit_event_in(&self, seq: i64) -> Result<Option<AuditEvent>, StoreError> {
                let row: Option<AuditRow> = sqlx::query_as(
                    "SELECT seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash FROM audit WHERE seq = $1",
                )
                .bind(seq)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(AuditEvent::try_from).transpose()
            }

            async fn insert_jobs_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &[NewJob],
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                for job in jobs {
                    sqlx::query(
                        "INSERT INTO jobs (kind, user_name, role, grant_id, due_at, next_attempt_at, created_at) \
                         VALUES ('converge', $1, $2, $3, $4, $4, $5)",
                    )
                    .bind(job.user.as_str())
                    .bind(job.role.as_str())
                    .bind(job.grant.map(|g| g.to_string()))
                    .bind(ms(job.due_at))
                    .bind(ms(now))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn insert_grant(&self, g: &Grant, jobs: &[NewJob], audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(built(format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
                )))
                .bind(g.id.to_string())
                .bind(g.user.as_str())
                .bind(g.role.as_str())
                .bind(g.ticket.as_ref().map(|t| t.as_str()))
                .bind(g.justification.as_str())
                .bind(&g.requested_by)
                .bind(g.state.as_str())
                .bind(ms(g.starts_at))
                .bind(ms(g.expires_at))
                .bind(ms(g.created_at))
                .bind(ms(g.updated_at))
                .bind(g.ended_at.map(ms))
                .bind(g.end_reason.map(|r| r.as_str()))
                .bind(g.end_note.as_deref())
                .bind(g.role_added_at.map(ms))
                .bind(g.role_removed_at.map(ms))
                .bind(g.last_error.as_deref())
                .bind(&g.origin)
                .bind(to_json(&g.decision)?)
                .bind(to_json(&g.ticket_snapshot)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!(
                        "a live {} grant of `{}` to `{}` for {}",
                        g.origin,
                        g.role,
                        g.user,
                        g.ticket.as_ref().map_or("no ticket", |t| t.as_str())
                    )),
                    _ => db(e),
                })?;
                Self::insert_jobs_in(&mut tx, jobs, g.created_at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
                let row: Option<GrantRow> =
                    sqlx::query_as(built(format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1")))
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                row.map(Grant::try_from).transpose()
            }

            async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
                let mut sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE 1 = 1");
                let mut args: Vec<String> = Vec::new();
                let mut push = |clause: &str, value: String, sql: &mut String| {
                    args.push(value);
                    sql.push_str(&format!(" AND {clause} ${}", args.len()));
                };
                if let Some(u) = &f.user { push("user_name =", u.to_string(), &mut sql); }
                if let Some(r) = &f.role { push("role =", r.to_string(), &mut sql); }
                if let Some(s) = f.state { push("state =", s.to_string(), &mut sql); }
                if let Some(t) = &f.ticket { push("ticket =", t.to_string(), &mut sql); }
                if let Some(b) = f.before { push("id <", b.to_string(), &mut sql); }
                sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", f.limit.clamp(1, 1000)));
                let mut q = sqlx::query_as::<_, GrantRow>(built(sql));
                for a in args {
                    q = q.bind(a);
                }
                q.fetch_all(&self.pool).await.map_err(db)?.into_iter().map(Grant::try_from).collect()
            }

            async fn grants_for(&self, user: &UserName, role: &RoleName) -> Result<Vec<Grant>, StoreError> {
                let rows: Vec<GrantRow> = sqlx::query_as(built(format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE user_name = $1 AND role = $2 AND state IN {NON_TERMINAL}"
                )))
                .bind(user.as_str())
                .bind(role.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(Grant::try_from).collect()
            }

            async fn transition(
                &self,
                id: GrantId,
                t: &Transition,
                note: Option<&str>,
                jobs: &[NewJob],
                audit: NewAudit,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let ended_at = t.to.is_terminal().then(|| ms(t.at));
                let moved = sqlx::query(
                    "UPDATE grants SET state = $1, updated_at = $2, ended_at = COALESCE($3, ended_at), \
                     end_reason = COALESCE($4, end_reason), end_note = COALESCE($5, end_note) \
                     WHERE id = $6 AND state = $7",
                )
                .bind(t.to.as_str())
                .bind(ms(t.at))
                .bind(ended_at)
                .bind(t.end_reason.map(|r| r.as_str()))
                .bind(note)
                .bind(id.to_string())
                .bind(t.from.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                if moved != 1 {
                    tx.rollback().await.map_err(db)?;
                    return Ok(false);
                }
                Self::insert_jobs_in(&mut tx, jobs, t.at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn mark(&self, mark: &GrantMark, at: DateTime<Utc>, audit: Option<NewAudit>) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let q = match mark {
                    GrantMark::RoleAdded(id) => sqlx::query(
                        "UPDATE grants SET role_added_at = COALESCE(role_added_at, $1), last_error = NULL WHERE id = $2",
                    )
                    .bind(ms(at))
                    .bind(id.to_string()),
                    GrantMark::RoleRemoved { user, role } => sqlx::query(
                        "UPDATE grants SET role_removed_at = $1 \
                         WHERE user_name = $2 AND role = $3 AND state = 'ended' AND role_removed_at IS NULL",
                    )
                    .bind(ms(at))
                    .bind(user.as_str())
                    .bind(role.as_str()),
                    GrantMark::Failed(id, error) => sqlx::query("UPDATE grants SET last_error = $1 WHERE id = $2")
                        .bind(error.as_str())
                        .bind(id.to_string()),
                };
                q.execute(&mut *tx).await.map_err(db)?;
                if let Some(audit) = audit {
                    Self::append_audit_in(&mut tx, &audit).await?;
                }
                tx.commit().await.map_err(db)
            }

            async fn claim_jobs(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Job>, StoreError> {
                let rows: Vec<JobRow> = sqlx::query_as(concat!(
                    "UPDATE jobs SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND next_attempt_at <= $3 \
                     AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at LIMIT $4 ",
                    $claim_lock,
                    ") RETURNING id, user_name, role, grant_id, due_at, attempts"
                ))
                .bind(owner)
                .bind(ms(lease_until))
                .bind(ms(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                let mut jobs = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>, _>>()?;
                jobs.sort_by_key(|j| (j.due_at, j.id));
                Ok(jobs)
            }

            async fn complete_job(&self, id: i64, owner: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
                self.release_job(id, owner, "done", Some(at), None, None).await
            }

            async fn retry_job(&self, id: i64, owner: &str, next_at: DateTime<Utc>, error: &str) -> Result<(), StoreError> {
                self.release_job(id, owner, "pending", None, Some(next_at), Some(error)).await
            }

            async fn fail_job(&self, id: i64, owner: &str, at: DateTime<Utc>, error: &str) -> Result<(), StoreError> {
                self.release_job(id, owner, "failed", Some(at), None, Some(error)).await
            }

            async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at \
                     THEN lease_until ELSE next_attempt_at END) FROM jobs WHERE status = 'pending'",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                opt_time(next)
            }

            async fn try_lease(
                &self,
                name: &str,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO leases (name, owner, until_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_at = excluded.until_at \
                     WHERE leases.until_at < $4 OR leases.owner = excluded.owner",
                )
                .bind(name)
                .bind(owner)
                .bind(ms(until))
                .bind(ms(now))
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
                    .bind(name)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(())
            }

            async fn insert_run(&self, r: &ReconcileRun) -> Result<(), StoreError> {
                sqlx::query(built(format!(
                    "INSERT INTO reconcile_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                )))
                .bind(&r.id)
                .bind(&r.trigger)
                .bind(r.dry_run)
                .bind(&r.status)
                .bind(ms(r.started_at))
                .bind(r.finished_at.map(ms))
                .bind(counter(r.users_scanned))
                .bind(counter(r.pages))
                .bind(counter(r.findings))
                .bind(counter(r.actions))
                .bind(counter(r.errors))
                .bind(r.error.as_deref())
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn update_run(&self, r: &ReconcileRun, audit: Option<NewAudit>) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "UPDATE reconcile_runs SET status = $1, finished_at = $2, users_scanned = $3, pages = $4, \
                     findings = $5, actions = $6, errors = $7, error = $8 WHERE id = $9",
                )
                .bind(&r.status)
                .bind(r.finished_at.map(ms))
                .bind(counter(r.users_scanned))
                .bind(counter(r.pages))
                .bind(counter(r.findings))
                .bind(counter(r.actions))
                .bind(counter(r.errors))
                .bind(r.error.as_deref())
                .bind(&r.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if let Some(audit) = audit {
                    Self::append_audit_in(&mut tx, &audit).await?;
                }
                tx.commit().await.map_err(db)
            }

            async fn runs(&self, limit: u32) -> Result<Vec<ReconcileRun>, StoreError> {
                let rows: Vec<RunRow> = sqlx::query_as(built(format!(
                    "SELECT {RUN_COLUMNS} FROM reconcile_runs ORDER BY id DESC LIMIT $1"
                )))
                .bind(i64::from(limit.clamp(1, 1000)))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(ReconcileRun::try_from).collect()
            }

            async fn run(&self, id: &str) -> Result<Option<ReconcileRun>, StoreError> {
                let row: Option<RunRow> = sqlx::query_as(built(format!(
                    "SELECT {RUN_COLUMNS} FROM reconcile_runs WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(ReconcileRun::try_from).transpose()
            }

            async fn insert_finding(&self, f: &FindingRecord, audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "INSERT INTO reconcile_findings (run_id, at, user_name, role, kind, action, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&f.run_id)
                .bind(ms(f.at))
                .bind(&f.user)
                .bind(&f.role)
                .bind(&f.kind)
                .bind(&f.action)
                .bind(&f.detail)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn findings(&self, run_id: &str, limit: u32) -> Result<Vec<FindingRecord>, StoreError> {
                let rows: Vec<FindingRow> = sqlx::query_as(
                    "SELECT run_id, at, user_name, role, kind, action, detail FROM reconcile_findings \
                     WHERE run_id = $1 ORDER BY id LIMIT $2",
                )
                .bind(run_id)
                .bind(i64::from(limit.clamp(1, 10_000)))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|r| {
                        Ok(FindingRecord {
                            run_id: r.run_id,
                            at: time(r.at)?,
                            user: r.user_name,
                            role: r.role,
                            kind: r.kind,
                            action: r.action,
                            detail: r.detail,
                        })
                    })
                    .collect()
            }

            async fn stripped_before(&self, user: &UserName, role: &RoleName) -> Result<bool, StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM reconcile_findings WHERE user_name = $1 AND role = $2 AND action = 'removed' LIMIT 1",
                )
                .bind(user.as_str())
                .bind(role.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                Ok(row.is_some())
            }

            async fn claim_outbox(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<OutboxItem>, StoreError> {
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(concat!(
                    "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
                     AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at LIMIT $4 ",
                    $claim_lock,
                    ") RETURNING id, audit_seq, attempts"
                ))
                .bind(owner)
                .bind(ms(lease_until))
                .bind(ms(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                let mut items = Vec::with_capacity(rows.len());
                for (id, seq, attempts) in rows {
                    let event = self
                        .audit_event_in(seq)
                        .await?
                        .ok_or_else(|| corrupt("outbox", format!("audit event {seq} is missing")))?;
                    items.push(OutboxItem {
                        id,
                        event,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    });
                }
                items.sort_by_key(|i| i.event.seq);
                Ok(items)
            }

            async fn release_outbox(
                &self,
                id: i64,
                owner: &str,
                status: &str,
                at: DateTime<Utc>,
                next_at: Option<DateTime<Utc>>,
                error: Option<&str>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE outbox SET status = $1, sent_at = CASE WHEN $1 = 'sent' THEN $2 ELSE sent_at END, \
                     next_attempt_at = COALESCE($3, next_attempt_at), last_error = $4, lease_owner = NULL, \
                     lease_until = NULL WHERE id = $5 AND lease_owner = $6",
                )
                .bind(status)
                .bind(ms(at))
                .bind(next_at.map(ms))
                .bind(error)
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn mark_overdue(&self, id: GrantId, audit: NewAudit) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let done = sqlx::query(
                    "UPDATE grants SET overdue_alerted_at = $1 WHERE id = $2 AND overdue_alerted_at IS NULL",
                )
                .bind(ms(audit.at))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn tickets_of_live_grants(&self) -> Result<Vec<TicketId>, StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(built(format!(
                    "SELECT DISTINCT ticket FROM grants WHERE ticket IS NOT NULL AND state IN {NON_TERMINAL} ORDER BY ticket"
                )))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|(t,)| TicketId::parse(&t).map_err(|e| corrupt("ticket", e.message)))
                    .collect()
            }

            async fn seen_delivery(&self, delivery_id: &str) -> Result<Option<SeenDelivery>, StoreError> {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT received_at, answer FROM webhook_deliveries WHERE delivery_id = $1")
                        .bind(delivery_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                row.map(|(at, answer)| {
                    Ok(SeenDelivery {
                        received_at: time(at)?,
                        answer: serde_json::from_str(&answer).map_err(|e| corrupt("answer", e))?,
                    })
                })
                .transpose()
            }

            async fn record_delivery(
                &self,
                delivery_id: &str,
                at: DateTime<Utc>,
                ticket: Option<&TicketId>,
                answer: &serde_json::Value,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO webhook_deliveries (delivery_id, received_at, ticket, answer) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (delivery_id) DO NOTHING",
                )
                .bind(delivery_id)
                .bind(ms(at))
                .bind(ticket.map(|t| t.as_str()))
                .bind(answer.to_string())
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(done.rows_affected() == 1)
            }

            async fn append_audit(&self, audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn audit_events(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash FROM audit \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(AuditEvent::try_from).collect()
            }
        }
    };
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    claim_lock = "",
    audit_lock = None
);
sql_store!(
    PgStore,
    sqlx::Postgres,
    claim_lock = "FOR UPDATE SKIP LOCKED",
    // Any constant key: every appender takes the same transaction-scoped lock.
    audit_lock = Some("SELECT pg_advisory_xact_lock(7243501)")
);

/// Walks the whole audit chain; `Ok(n)`: n events verified.
pub async fn verify_audit(store: &dyn Store) -> Result<Result<u64, BrokenLink>, StoreError> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_events(after, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(Ok(verifier.verified));
        };
        after = last.seq;
        for e in &page {
            if let Err(broken) = verifier.check(e) {
                return Ok(Err(broken));
            }
        }
    }
}
