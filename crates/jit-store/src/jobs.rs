//! Durable converge jobs: claimed under a lease (PostgreSQL skips rows another
//! replica is claiming), released with their outcome by the lease's owner only.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{Job, JobStore, NewJob, Released, StoreError};
use jit_domain::{RoleName, UserName};

use crate::{PgStore, SqliteStore, corrupt, db, ms, opt_time, time};

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

macro_rules! job_store {
    ($store:ty, $db:ty, claim_lock = $claim_lock:literal) => {
        impl $store {
            /// Ends `owner`'s lease on a job with its outcome. A late answer
            /// from a worker whose lease ran out (another owns it now) changes nothing.
            pub(crate) async fn release_job(
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

            pub(crate) async fn insert_jobs_in(
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
        impl JobStore for $store {
            async fn claim_jobs(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Job>, StoreError> {
                let rows: Vec<JobRow> = sqlx::query_as(crate::claim_leased_sql!(
                    "jobs",
                    lock = $claim_lock,
                    returning = "id, user_name, role, grant_id, due_at, attempts"
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

            async fn release_retries(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "UPDATE jobs SET next_attempt_at = $1 \
                     WHERE status = 'pending' AND attempts > 0 AND next_attempt_at > $1 AND lease_owner IS NULL",
                )
                .bind(ms(now))
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(done.rows_affected())
            }

            async fn release_owner(&self, owner: &str) -> Result<Released, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let mut released = Released::default();
                released.job_ids = sqlx::query_scalar(
                    "UPDATE jobs SET lease_owner = NULL, lease_until = NULL \
                     WHERE status = 'pending' AND lease_owner = $1 RETURNING id",
                )
                .bind(owner)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                released.job_ids.sort_unstable();
                for (count, sql) in [
                    (&mut released.outbox, "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
                      WHERE status = 'pending' AND lease_owner = $1"),
                    (&mut released.leases, "DELETE FROM leases WHERE owner = $1"),
                    (&mut released.activity, "UPDATE activity_passes SET lease_owner = NULL, lease_until = NULL \
                      WHERE status = 'pending' AND lease_owner = $1"),
                ] {
                    *count = sqlx::query(sql)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?
                        .rows_affected();
                }
                tx.commit().await.map_err(db)?;
                Ok(released)
            }

            async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                let next: Option<i64> = sqlx::query_scalar(crate::next_leased_due_sql!("jobs"))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                opt_time(next)
            }
        }
    };
}

job_store!(SqliteStore, sqlx::Sqlite, claim_lock = "");
job_store!(
    PgStore,
    sqlx::Postgres,
    claim_lock = "FOR UPDATE SKIP LOCKED"
);
