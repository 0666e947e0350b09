//! What the SOC has been told: open incidents (each edge written with its
//! audit event), the newest login seen per break-glass account, and how far
//! each SIEM endpoint has been fed through the audit log.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{
    BreakGlassStore, FeedCursor, FeedStore, Incident, IncidentStore, NewAudit, Sighting, StoreError,
};
use jit_domain::{FindingKind, UserName};

use crate::{PgStore, SqliteStore, corrupt, db, ms, opt_time, time};

#[derive(sqlx::FromRow)]
struct IncidentRow {
    id: i64,
    kind: String,
    subject: String,
    role: String,
    detail: String,
    opened_at: i64,
    last_seen_at: i64,
    last_seen_by: String,
    resolved_at: Option<i64>,
}

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;
    fn try_from(r: IncidentRow) -> Result<Self, StoreError> {
        Ok(Incident {
            id: r.id,
            kind: FindingKind::parse(&r.kind)
                .ok_or_else(|| corrupt("incident kind", format!("`{}`", r.kind)))?,
            subject: r.subject,
            role: r.role,
            detail: r.detail,
            opened_at: time(r.opened_at)?,
            last_seen_at: time(r.last_seen_at)?,
            last_seen_by: r.last_seen_by,
            resolved_at: opt_time(r.resolved_at)?,
        })
    }
}

macro_rules! soc_store {
    ($store:ty) => {
        #[async_trait]
        impl IncidentStore for $store {
            async fn see_incident(
                &self,
                seen: &Sighting<'_>,
                opened: NewAudit,
            ) -> Result<bool, StoreError> {
                let Sighting { kind, subject, role, detail, at, run: seen_by } = *seen;
                let mut tx = self.pool.begin().await.map_err(db)?;
                let seen = sqlx::query(
                    "UPDATE incidents SET last_seen_at = $1, detail = $2, last_seen_by = $6 \
                     WHERE kind = $3 AND subject = $4 AND role = $5 AND resolved_at IS NULL",
                )
                .bind(ms(at))
                .bind(detail)
                .bind(kind.as_str())
                .bind(subject)
                .bind(role)
                .bind(seen_by)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if seen.rows_affected() > 0 {
                    tx.commit().await.map_err(db)?;
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO incidents (kind, subject, role, detail, opened_at, last_seen_at, last_seen_by) \
                     VALUES ($1, $2, $3, $4, $5, $5, $6)",
                )
                .bind(kind.as_str())
                .bind(subject)
                .bind(role)
                .bind(detail)
                .bind(ms(at))
                .bind(seen_by)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Self::append_audit_in(&mut tx, &opened).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn resolve_incident(
                &self,
                id: i64,
                at: DateTime<Utc>,
                audit: NewAudit,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let done = sqlx::query(
                    "UPDATE incidents SET resolved_at = $1 WHERE id = $2 AND resolved_at IS NULL",
                )
                .bind(ms(at))
                .bind(id)
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

            async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
                let rows: Vec<IncidentRow> = sqlx::query_as(
                    "SELECT id, kind, subject, role, detail, opened_at, last_seen_at, last_seen_by, resolved_at \
                     FROM incidents WHERE resolved_at IS NULL ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(Incident::try_from).collect()
            }
        }

        #[async_trait]
        impl BreakGlassStore for $store {
            async fn last_login_seen(
                &self,
                user: &UserName,
            ) -> Result<Option<Option<DateTime<Utc>>>, StoreError> {
                let row: Option<(Option<i64>,)> = sqlx::query_as(
                    "SELECT last_login_at FROM break_glass_logins WHERE user_name = $1",
                )
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(|(at,)| opt_time(at)).transpose()
            }

            async fn record_login_check(
                &self,
                user: &UserName,
                last_login: Option<DateTime<Utc>>,
                at: DateTime<Utc>,
                alert: Option<NewAudit>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "INSERT INTO break_glass_logins (user_name, last_login_at, checked_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_name) DO UPDATE SET last_login_at = $2, checked_at = $3",
                )
                .bind(user.as_str())
                .bind(last_login.map(ms))
                .bind(ms(at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if let Some(alert) = alert {
                    Self::append_audit_in(&mut tx, &alert).await?;
                }
                tx.commit().await.map_err(db)
            }
        }

        #[async_trait]
        impl FeedStore for $store {
            async fn feed_cursor(&self, endpoint: &str) -> Result<FeedCursor, StoreError> {
                sqlx::query(
                    "INSERT INTO feed_cursors (endpoint, last_seq) VALUES ($1, 0) \
                     ON CONFLICT (endpoint) DO NOTHING",
                )
                .bind(endpoint)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                let (last_seq, attempts, next): (i64, i64, i64) = sqlx::query_as(
                    "SELECT last_seq, attempts, next_attempt_at FROM feed_cursors WHERE endpoint = $1",
                )
                .bind(endpoint)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                Ok(FeedCursor {
                    last_seq,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    next_attempt_at: time(next)?,
                })
            }

            async fn advance_feed(
                &self,
                endpoint: &str,
                seq: i64,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE feed_cursors SET last_seq = $1, attempts = 0, next_attempt_at = 0, \
                     last_error = NULL, delivered_at = $2 WHERE endpoint = $3 AND last_seq < $1",
                )
                .bind(seq)
                .bind(ms(at))
                .bind(endpoint)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn defer_feed(
                &self,
                endpoint: &str,
                next_at: DateTime<Utc>,
                error: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE feed_cursors SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 \
                     WHERE endpoint = $3",
                )
                .bind(ms(next_at))
                .bind(error)
                .bind(endpoint)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }
        }
    };
}

soc_store!(SqliteStore);
soc_store!(PgStore);
