//! What readiness and metrics read from the store: the schema version, and
//! the gauges computed at scrape time (grants by state, overdue revocations,
//! the outbox's depth and oldest row).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{HealthStore, StoreError, StoreGauges};

use crate::{PgStore, SqliteStore, db, ms, opt_time};

macro_rules! health_store {
    ($store:ty) => {
        #[async_trait]
        impl HealthStore for $store {
            async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = $1")
                    .bind(true)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db)
            }

            async fn gauges(
                &self,
                overdue_before: DateTime<Utc>,
            ) -> Result<StoreGauges, StoreError> {
                let by_state: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM grants GROUP BY state")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db)?;
                let overdue: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM grants WHERE state = 'ended' AND role_added_at IS NOT NULL \
                     AND role_removed_at IS NULL AND ended_at < $1",
                )
                .bind(ms(overdue_before))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok(StoreGauges {
                    grants_by_state: by_state.into_iter().map(|(s, n)| (s, count(n))).collect(),
                    overdue_revocations: count(overdue),
                    outbox_pending: count(pending),
                    outbox_oldest: opt_time(oldest)?,
                })
            }
        }
    };
}

health_store!(SqliteStore);
health_store!(PgStore);
