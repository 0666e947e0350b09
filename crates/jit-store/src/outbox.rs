//! SOC email waiting to be sent: rows are written with the audit event that
//! causes them (see `audit`), leased by the mailer, released with the outcome.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{OutboxItem, OutboxStore, StoreError};

use crate::{PgStore, SqliteStore, corrupt, db, ms};

macro_rules! outbox_store {
    ($store:ty, claim_lock = $claim_lock:literal) => {
        #[async_trait]
        impl OutboxStore for $store {
            async fn claim_outbox(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<OutboxItem>, StoreError> {
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(crate::claim_leased_sql!(
                    "outbox",
                    lock = $claim_lock,
                    returning = "id, audit_seq, attempts"
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
        }
    };
}

outbox_store!(SqliteStore, claim_lock = "");
outbox_store!(PgStore, claim_lock = "FOR UPDATE SKIP LOCKED");
