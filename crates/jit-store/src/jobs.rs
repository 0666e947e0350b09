//! Durable converge jobs: claimed under a lease (PostgreSQL skips rows another
//! replica is claiming), released with their outcome by the lease's owner only.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{Job, JobStore, NewJob, PairState, Released, Settled, StoreError};
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
    wants: i64,
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
            wants: r.wants,
        })
    }
}

/// A job joins its pair's pending one: the earliest due, the removal lane
/// and one more `wants` (so a run that began before it knows to run again).
const UPSERT_JOB_SQL: &str = "INSERT INTO jobs (kind, user_name, role, grant_id, due_at, next_attempt_at, created_at, lane) \
     VALUES ('converge', $1, $2, $3, $4, $4, $5, $6) \
     ON CONFLICT (user_name, role) WHERE status = 'pending' DO UPDATE SET \
     due_at = CASE WHEN excluded.due_at < jobs.due_at THEN excluded.due_at ELSE jobs.due_at END, \
     next_attempt_at = CASE WHEN excluded.next_attempt_at < jobs.next_attempt_at THEN excluded.next_attempt_at ELSE jobs.next_attempt_at END, \
     lane = CASE WHEN excluded.lane < jobs.lane THEN excluded.lane ELSE jobs.lane END, \
     wants = jobs.wants + 1";

fn lane(job: &NewJob) -> i64 {
    if job.removal { 0 } else { 1 }
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

            /// Each job joins its pair's pending one if there is one (the
            /// earliest due and the removal lane win), else starts it.
            pub(crate) async fn insert_jobs_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &[NewJob],
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                for job in jobs {
                    sqlx::query(UPSERT_JOB_SQL)
                        .bind(job.user.as_str())
                        .bind(job.role.as_str())
                        .bind(job.grant.map(|g| g.to_string()))
                        .bind(ms(job.due_at))
                        .bind(ms(now))
                        .bind(lane(job))
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
                let rows: Vec<JobRow> = sqlx::query_as(concat!(
                    "UPDATE jobs SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND next_attempt_at <= $3 \
                     AND (lease_until IS NULL OR lease_until <= $3) ORDER BY lane, next_attempt_at LIMIT $4 ",
                    $claim_lock,
                    ") RETURNING id, user_name, role, grant_id, due_at, attempts, wants"
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

            async fn complete_job(
                &self,
                job: &Job,
                owner: &str,
                at: DateTime<Utc>,
                next: Option<&NewJob>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                // Work that joined while it ran: due again now, behind the
                // pairs already waiting (so one busy pair takes its turn).
                let done = sqlx::query(
                    "UPDATE jobs SET \
                     status = CASE WHEN wants = $1 THEN 'done' ELSE 'pending' END, \
                     finished_at = CASE WHEN wants = $1 THEN $2 ELSE NULL END, \
                     next_attempt_at = CASE WHEN wants = $1 THEN next_attempt_at ELSE $2 END, \
                     attempts = CASE WHEN wants = $1 THEN attempts ELSE 0 END, \
                     last_error = NULL, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $3 AND lease_owner = $4",
                )
                .bind(job.wants)
                .bind(ms(at))
                .bind(job.id)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                // A late answer from a worker whose lease ran out changes nothing.
                if let (1, Some(next)) = (done.rows_affected(), next) {
                    Self::insert_jobs_in(&mut tx, std::slice::from_ref(next), at).await?;
                }
                tx.commit().await.map_err(db)
            }

            async fn retry_job(&self, id: i64, owner: &str, next_at: DateTime<Utc>, error: &str) -> Result<(), StoreError> {
                self.release_job(id, owner, "pending", None, Some(next_at), Some(error)).await
            }

            async fn fail_job(
                &self,
                id: i64,
                owner: &str,
                at: DateTime<Utc>,
                error: &str,
                next: Option<&NewJob>,
            ) -> Result<(), StoreError> {
                self.release_job(id, owner, "failed", Some(at), None, Some(error)).await?;
                // The pair's later changes (an expiry after a failed add) still come.
                if let Some(next) = next {
                    let mut tx = self.pool.begin().await.map_err(db)?;
                    Self::insert_jobs_in(&mut tx, std::slice::from_ref(next), at).await?;
                    tx.commit().await.map_err(db)?;
                }
                Ok(())
            }

            async fn pair_state(&self, user: &UserName, role: &RoleName) -> Result<Option<PairState>, StoreError> {
                let row: Option<(Option<String>, Option<String>, i64)> = sqlx::query_as(
                    "SELECT settled, directory_id, at FROM pair_states WHERE user_name = $1 AND role = $2",
                )
                .bind(user.as_str())
                .bind(role.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(|(settled, directory_id, at)| {
                    Ok(PairState {
                        settled: settled
                            .map(|s| s.parse::<Settled>())
                            .transpose()
                            .map_err(|e| corrupt("pair state", e))?,
                        directory_id,
                        at: time(at)?,
                    })
                })
                .transpose()
            }

            async fn set_pair_state(
                &self,
                user: &UserName,
                role: &RoleName,
                settled: Option<Settled>,
                directory_id: Option<&str>,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO pair_states (user_name, role, settled, directory_id, at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_name, role) DO UPDATE SET settled = excluded.settled, \
                     directory_id = COALESCE(excluded.directory_id, pair_states.directory_id), at = excluded.at",
                )
                .bind(user.as_str())
                .bind(role.as_str())
                .bind(settled.map(Settled::as_str))
                .bind(directory_id)
                .bind(ms(at))
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
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
