//! What was done with a privilege: audit-trail passes are leased rows like
//! jobs; the events they find are kept once each by the target's event id,
//! in the same transaction as the pass's end and its audit event.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{ActivityPass, ActivityStore, ClaimedPass, NewAudit, PassRecord, StoreError};
use jit_domain::{ActivityEvent, GrantId};

use crate::{PgStore, SqliteStore, corrupt, db, ms, opt_time, time};

#[derive(sqlx::FromRow)]
struct PassRow {
    id: i64,
    attempts: i64,
    subject: String,
    pass: i64,
    grant_id: Option<String>,
    user_name: String,
    directory_id: String,
    window_from: i64,
    window_to: Option<i64>,
    next_attempt_at: i64,
}

impl TryFrom<PassRow> for ClaimedPass {
    type Error = StoreError;
    fn try_from(r: PassRow) -> Result<Self, StoreError> {
        let grant = r
            .grant_id
            .map(|g| {
                g.parse::<GrantId>()
                    .map_err(|e| corrupt("activity grant id", e))
            })
            .transpose()?;
        Ok(Self {
            id: r.id,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            pass: ActivityPass {
                subject: r.subject,
                pass: u32::try_from(r.pass).map_err(|e| corrupt("activity pass", e))?,
                grant,
                user: r.user_name,
                directory_id: r.directory_id,
                from: time(r.window_from)?,
                to: opt_time(r.window_to)?,
                due: time(r.next_attempt_at)?,
            },
        })
    }
}

/// Schedules a grant's passes in the transaction that marks its role
/// removed: for the ended grants of the pair just given `removed_at`, that
/// held the role at some point (a window to read).
pub(crate) const SCHEDULE_FOR_REMOVED_SQL: &str = "INSERT INTO activity_passes \
     (subject, pass, grant_id, user_name, directory_id, window_from, window_to, created_at, next_attempt_at) \
     SELECT id, $1, id, user_name, $2, role_added_at, role_removed_at, $3, $4 FROM grants \
     WHERE user_name = $5 AND role = $6 AND role_removed_at = $3 AND role_added_at IS NOT NULL \
     ON CONFLICT (subject, pass) DO NOTHING";

macro_rules! activity_store {
    ($store:ty, claim_lock = $claim_lock:literal) => {
        #[async_trait]
        impl ActivityStore for $store {
            async fn schedule_activity(&self, passes: &[ActivityPass], now: DateTime<Utc>) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                for p in passes {
                    sqlx::query(
                        "INSERT INTO activity_passes (subject, pass, grant_id, user_name, directory_id, \
                         window_from, window_to, created_at, next_attempt_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (subject, pass) DO NOTHING",
                    )
                    .bind(&p.subject)
                    .bind(i64::from(p.pass))
                    .bind(p.grant.map(|g| g.to_string()))
                    .bind(&p.user)
                    .bind(&p.directory_id)
                    .bind(ms(p.from))
                    .bind(p.to.map(ms))
                    .bind(ms(now))
                    .bind(ms(p.due))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                tx.commit().await.map_err(db)
            }

            async fn claim_activity(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<ClaimedPass>, StoreError> {
                let rows: Vec<PassRow> = sqlx::query_as(crate::claim_leased_sql!(
                    "activity_passes",
                    lock = $claim_lock,
                    returning = "id, attempts, subject, pass, grant_id, user_name, directory_id, \
                                 window_from, window_to, next_attempt_at"
                ))
                .bind(owner)
                .bind(ms(lease_until))
                .bind(ms(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                let mut passes = rows
                    .into_iter()
                    .map(ClaimedPass::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                passes.sort_by_key(|p| (p.pass.due, p.id));
                Ok(passes)
            }

            async fn activity(&self, subject: &str) -> Result<Vec<ActivityEvent>, StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT event FROM activity_events WHERE subject = $1 ORDER BY at, event_id",
                )
                .bind(subject)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|(e,)| serde_json::from_str(&e).map_err(|e| corrupt("activity event", e)))
                    .collect()
            }

            async fn activity_passes(&self, subject: &str) -> Result<Vec<PassRecord>, StoreError> {
                let rows: Vec<(i64, String, i64, Option<i64>, Option<String>)> = sqlx::query_as(
                    "SELECT pass, status, next_attempt_at, done_at, last_error FROM activity_passes \
                     WHERE subject = $1 ORDER BY pass",
                )
                .bind(subject)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|(pass, status, due, done, last_error)| {
                        Ok(PassRecord {
                            pass: u32::try_from(pass).map_err(|e| corrupt("activity pass", e))?,
                            status,
                            due_at: time(due)?,
                            done_at: opt_time(done)?,
                            last_error,
                        })
                    })
                    .collect()
            }

            async fn record_activity(
                &self,
                subject: &str,
                done: Option<(i64, u32, &str)>,
                events: &[ActivityEvent],
                at: DateTime<Utc>,
                audit: Option<NewAudit>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                for e in events {
                    let json = serde_json::to_string(e).map_err(|e| corrupt("activity event", e))?;
                    sqlx::query(
                        "INSERT INTO activity_events (subject, event_id, pass, at, event) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, event_id) DO NOTHING",
                    )
                    .bind(subject)
                    .bind(&e.id)
                    .bind(done.map(|(_, pass, _)| i64::from(pass)))
                    .bind(ms(e.at))
                    .bind(json)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                if let Some((id, _, owner)) = done {
                    sqlx::query(
                        "UPDATE activity_passes SET status = 'done', done_at = $1, last_error = NULL, \
                         lease_owner = NULL, lease_until = NULL WHERE id = $2 AND lease_owner = $3",
                    )
                    .bind(ms(at))
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                if let Some(audit) = audit {
                    Self::append_audit_in(&mut tx, &audit).await?;
                }
                tx.commit().await.map_err(db)
            }

            async fn retry_activity(
                &self,
                id: i64,
                owner: &str,
                next_at: DateTime<Utc>,
                error: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE activity_passes SET next_attempt_at = $1, last_error = $2, lease_owner = NULL, \
                     lease_until = NULL WHERE id = $3 AND lease_owner = $4",
                )
                .bind(ms(next_at))
                .bind(error)
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn fail_activity(
                &self,
                id: i64,
                owner: &str,
                at: DateTime<Utc>,
                error: &str,
                audit: NewAudit,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "UPDATE activity_passes SET status = 'failed', done_at = $1, last_error = $2, \
                     lease_owner = NULL, lease_until = NULL WHERE id = $3 AND lease_owner = $4",
                )
                .bind(ms(at))
                .bind(error)
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn next_activity_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                let next: Option<i64> = sqlx::query_scalar(crate::next_leased_due_sql!("activity_passes"))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                opt_time(next)
            }
        }
    };
}

activity_store!(SqliteStore, claim_lock = "");
activity_store!(PgStore, claim_lock = "FOR UPDATE SKIP LOCKED");
