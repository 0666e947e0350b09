//! Web sessions on the server: rows keyed by the SHA-256 of the cookie's id.
//! An ended session is a deleted row, so no replica can bring it back.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{NewAudit, SessionStore, StoreError, StoredSession};

use crate::{PgStore, SqliteStore, db, ms, time};

#[derive(sqlx::FromRow)]
struct SessionRow {
    id_hash: String,
    user_name: Option<String>,
    state: String,
    created_at: i64,
    expires_at: i64,
    absolute_at: i64,
}

impl TryFrom<SessionRow> for StoredSession {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        Ok(Self {
            id_hash: r.id_hash,
            user: r.user_name,
            state: r.state,
            created_at: time(r.created_at)?,
            expires_at: time(r.expires_at)?,
            absolute_at: time(r.absolute_at)?,
        })
    }
}

macro_rules! session_store {
    ($store:ty) => {
        #[async_trait]
        impl SessionStore for $store {
            async fn insert_session(&self, s: &StoredSession) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                // Purged here, at the rate sessions start: no schedule of its own.
                sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
                    .bind(ms(s.created_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                sqlx::query(
                    "INSERT INTO web_sessions (id_hash, user_name, state, created_at, expires_at, absolute_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&s.id_hash)
                .bind(s.user.as_deref())
                .bind(&s.state)
                .bind(ms(s.created_at))
                .bind(ms(s.expires_at.min(s.absolute_at)))
                .bind(ms(s.absolute_at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }

            async fn load_session(
                &self,
                id_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<StoredSession>, StoreError> {
                let row: Option<SessionRow> = sqlx::query_as(
                    "SELECT id_hash, user_name, state, created_at, expires_at, absolute_at FROM web_sessions \
                     WHERE id_hash = $1 AND expires_at > $2 AND absolute_at > $2",
                )
                .bind(id_hash)
                .bind(ms(now))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(StoredSession::try_from).transpose()
            }

            async fn update_session(
                &self,
                id_hash: &str,
                user: Option<&str>,
                state: &str,
                expires_at: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let updated = sqlx::query(
                    "UPDATE web_sessions SET user_name = $1, state = $2, \
                     expires_at = CASE WHEN $3 < absolute_at THEN $3 ELSE absolute_at END \
                     WHERE id_hash = $4 AND expires_at > $5 AND absolute_at > $5",
                )
                .bind(user)
                .bind(state)
                .bind(ms(expires_at))
                .bind(id_hash)
                .bind(ms(now))
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(())
            }

            async fn delete_sessions_of(&self, user: &str, audit: NewAudit) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let ended = sqlx::query("DELETE FROM web_sessions WHERE user_name = $1")
                    .bind(user)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?
                    .rows_affected();
                // What a chat click could count as their groups ends too.
                sqlx::query("DELETE FROM sign_ins WHERE user_name = $1")
                    .bind(user)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                // ID tokens issued until now no longer vouch for them.
                sqlx::query(
                    "INSERT INTO sessions_ended (user_name, ended_at) VALUES ($1, $2) \
                     ON CONFLICT (user_name) DO UPDATE SET ended_at = excluded.ended_at",
                )
                .bind(user)
                .bind(crate::ms(audit.at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                let mut audit = audit;
                if let serde_json::Value::Object(data) = &mut audit.data {
                    data.insert("sessions_ended".into(), serde_json::json!(ended));
                }
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(ended)
            }

            async fn sessions_ended_at(&self, user: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
                let at: Option<i64> = sqlx::query_scalar("SELECT ended_at FROM sessions_ended WHERE user_name = $1")
                    .bind(user)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                at.map(crate::time).transpose()
            }

            async fn record_sign_in(
                &self,
                user: &str,
                groups: &std::collections::BTreeSet<String>,
                at: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let groups = serde_json::to_string(groups).map_err(|e| crate::corrupt("groups", e))?;
                sqlx::query(
                    "INSERT INTO sign_ins (user_name, groups, signed_in_at, valid_until) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_name) DO UPDATE SET groups = $2, signed_in_at = $3, valid_until = $4",
                )
                .bind(user)
                .bind(groups)
                .bind(ms(at))
                .bind(ms(until))
                .execute(&self.pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn signed_in_groups(
                &self,
                user: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<std::collections::BTreeSet<String>>, StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT groups FROM sign_ins WHERE user_name = $1 AND valid_until > $2",
                )
                .bind(user)
                .bind(ms(now))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(|(g,)| serde_json::from_str(&g).map_err(|e| crate::corrupt("groups", e)))
                    .transpose()
            }

            async fn count_sessions_of(&self, user: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM web_sessions WHERE user_name = $1 AND expires_at > $2 AND absolute_at > $2",
                )
                .bind(user)
                .bind(ms(now))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    };
}

session_store!(SqliteStore);
session_store!(PgStore);
