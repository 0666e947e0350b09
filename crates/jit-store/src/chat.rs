//! Chat messages the broker posted (Slack), by what they are about, so that
//! an answer updates the request in place.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{ChatStore, StoreError};

use crate::{PgStore, SqliteStore, db, ms};

macro_rules! chat_store {
    ($store:ty) => {
        #[async_trait]
        impl ChatStore for $store {
            async fn save_chat_message(
                &self,
                key: &str,
                channel: &str,
                ts: &str,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO chat_messages (key, channel, ts, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(channel)
                .bind(ts)
                .bind(ms(at))
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn chat_message(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
                sqlx::query_as("SELECT channel, ts FROM chat_messages WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)
            }
        }
    };
}

chat_store!(SqliteStore);
chat_store!(PgStore);
