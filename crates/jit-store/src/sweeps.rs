//! Reconciler sweeps: the lease that makes them exclusive across replicas,
//! each run's counters, and its findings (each with its audit event).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{FindingRecord, NewAudit, ReconcileRun, StoreError, SweepStore};
use jit_domain::{PairHistory, RoleName, SweepKind, UserName};

use crate::{PgStore, SqliteStore, built, corrupt, db, ms, opt_time, time};

const RUN_COLUMNS: &str = "id, kind, trigger_source, dry_run, status, started_at, finished_at, \
     users_scanned, pages, findings, actions, errors, error";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    kind: String,
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
            kind: SweepKind::parse(&r.kind)
                .ok_or_else(|| corrupt("sweep kind", format!("`{}`", r.kind)))?,
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

macro_rules! sweep_store {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl SweepStore for $store {
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

            async fn live_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<u32, StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM leases WHERE name LIKE $1 AND until_at >= $2",
                )
                .bind(format!("{prefix}%"))
                .bind(ms(now))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
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
                    "INSERT INTO reconcile_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                )))
                .bind(&r.id)
                .bind(r.kind.as_str())
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
                .bind(f.action.as_str())
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
                            action: r.action.parse().map_err(|e| corrupt("finding action", e))?,
                            detail: r.detail,
                        })
                    })
                    .collect()
            }

            async fn pair_history(
                &self,
                user: &UserName,
                role: &RoleName,
                since: DateTime<Utc>,
            ) -> Result<PairHistory, StoreError> {
                let removed: Vec<(i64,)> = sqlx::query_as(
                    "SELECT at FROM reconcile_findings \
                     WHERE user_name = $1 AND role = $2 AND action = 'removed' AND at >= $3 ORDER BY at",
                )
                .bind(user.as_str())
                .bind(role.as_str())
                .bind(ms(since))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                // A dry run raises no alert, so its findings do not count as one.
                let alerted: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(f.at) FROM reconcile_findings f JOIN reconcile_runs r ON r.id = f.run_id \
                     WHERE f.user_name = $1 AND f.role = $2 AND f.kind = 'conflicting_writer' AND r.dry_run = $3",
                )
                .bind(user.as_str())
                .bind(role.as_str())
                .bind(false)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                Ok(PairHistory {
                    sweep_removals: removed.into_iter().map(|(at,)| time(at)).collect::<Result<_, _>>()?,
                    last_conflict_alert: opt_time(alerted)?,
                })
            }
        }
    };
}

sweep_store!(SqliteStore, sqlx::Sqlite);
sweep_store!(PgStore, sqlx::Postgres);
