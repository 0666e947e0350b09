//! The ServiceNow webhook's replay guard: a delivery id is handled once, and a
//! repeat gets the first answer back.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{DeliveryStore, SeenDelivery, StoreError};
use jit_domain::TicketId;

use crate::{PgStore, SqliteStore, corrupt, db, ms, time};

macro_rules! delivery_store {
    ($store:ty) => {
        #[async_trait]
        impl DeliveryStore for $store {
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

            async fn purge_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
                    .bind(ms(before))
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(done.rows_affected())
            }
        }
    };
}

delivery_store!(SqliteStore);
delivery_store!(PgStore);
