//! jit-store: the `Store` port over SQLite and PostgreSQL (sqlx, run-time
//! queries). One binary picks the backend from the URL scheme at start.
//!
//! One file per aggregate (grants, jobs, sweeps, outbox, webhook deliveries,
//! audit). In each, one macro body implements that aggregate's trait for both
//! backends: the query texts are the same (`$N` placeholders work on both);
//! only the claim locking clause (jobs, outbox) and the audit-chain lock differ.

mod activity;
mod audit;
mod chain;
mod chat;
mod deliveries;
mod extensions;
mod grants;
mod health;
mod jobs;
mod outbox;
mod serve_lock;
mod sessions;
mod soc;
mod sweeps;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_app::{Store, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use audit::{AuditReport, SliceReport, verify_audit, verify_slice};
pub use chain::{
    BrokenLink, ChainVerifier, CheckpointKey, KeyError, checkpoint_message, checkpoint_valid,
};
pub use serve_lock::{ServeLock, lock_for_serving};

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

/// The one claim of leased rows (`jobs`, `outbox`): the due rows nobody holds
/// (or whose lease ran out), oldest due first, leased to `$1` until `$2`
/// (`$3` now, `$4` at most). `$lock` is PostgreSQL's `FOR UPDATE SKIP
/// LOCKED` (SQLite has one writer and needs none).
macro_rules! claim_leased_sql {
    ($table:literal, lock = $lock:literal, returning = $returning:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM ",
            $table,
            " WHERE status = 'pending' AND next_attempt_at <= $3 \
             AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at LIMIT $4 ",
            $lock,
            ") RETURNING ",
            $returning
        )
    };
}
pub(crate) use claim_leased_sql;

/// When the next pending row of a leased table (`jobs`, `activity_passes`)
/// is due, or its lease ends if that is later.
macro_rules! next_leased_due_sql {
    ($table:literal) => {
        concat!(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at \
             THEN lease_until ELSE next_attempt_at END) FROM ",
            $table,
            " WHERE status = 'pending'"
        )
    };
}
pub(crate) use next_leased_due_sql;

/// A statement assembled at run time. Only static fragments (column lists,
/// state lists) and `$N` placeholder numbers are ever interpolated; every
/// value goes through `bind`.
pub(crate) fn built(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
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

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp", ms))
}

pub(crate) fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(time).transpose()
}

/// An approver's answer as `grant_reviews` and `extension_reviews` keep it:
/// approver, verdict, comment, at.
pub(crate) type ReviewRow = (String, String, String, i64);

pub(crate) fn review_from_row(
    (approver, verdict, comment, at): ReviewRow,
) -> Result<jit_domain::Review, StoreError> {
    Ok(jit_domain::Review {
        approver: jit_domain::UserName::parse(&approver)
            .map_err(|e| corrupt("approver", e.message))?,
        verdict: verdict.parse().map_err(|e| corrupt("verdict", e))?,
        comment,
        at: time(at)?,
    })
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
