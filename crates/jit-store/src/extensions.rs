//! Requests to extend a grant past its approved end. An approval moves the
//! grant's end in the same transaction as the answer, only from the end the
//! request was made against.
use async_trait::async_trait;
use jit_app::{ExtensionStore, NewAudit, NewJob, StoreError};
use jit_domain::{ExtensionRequest, ExtensionState, GrantId, Review};

use crate::{PgStore, SqliteStore, corrupt, db, ms, opt_time, time};

const EXTENSION_COLUMNS: &str =
    "id, grant_id, requested_by, from_end, to_end, state, created_at, decided_at";

#[derive(sqlx::FromRow)]
struct ExtensionRow {
    id: String,
    grant_id: String,
    requested_by: String,
    from_end: i64,
    to_end: i64,
    state: String,
    created_at: i64,
    decided_at: Option<i64>,
}

impl TryFrom<ExtensionRow> for ExtensionRequest {
    type Error = StoreError;
    fn try_from(r: ExtensionRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id.parse().map_err(|e| corrupt("extension id", e))?,
            grant: r.grant_id.parse().map_err(|e| corrupt("grant id", e))?,
            requested_by: r.requested_by,
            from: time(r.from_end)?,
            until: time(r.to_end)?,
            state: r.state.parse().map_err(|e| corrupt("extension state", e))?,
            created_at: time(r.created_at)?,
            decided_at: opt_time(r.decided_at)?,
        })
    }
}

macro_rules! extension_store {
    ($store:ty) => {
        #[async_trait]
        impl ExtensionStore for $store {
            async fn insert_extension(&self, e: &ExtensionRequest, audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(crate::built(format!(
                    "INSERT INTO extension_requests ({EXTENSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                )))
                .bind(e.id.to_string())
                .bind(e.grant.to_string())
                .bind(&e.requested_by)
                .bind(ms(e.from))
                .bind(ms(e.until))
                .bind(e.state.as_str())
                .bind(ms(e.created_at))
                .bind(e.decided_at.map(ms))
                .execute(&mut *tx)
                .await
                .map_err(|err| match &err {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!(
                        "grant {} already has an extension request waiting for approval",
                        e.grant
                    )),
                    _ => db(err),
                })?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn pending_extension(&self, grant: GrantId) -> Result<Option<ExtensionRequest>, StoreError> {
                let row: Option<ExtensionRow> = sqlx::query_as(crate::built(format!(
                    "SELECT {EXTENSION_COLUMNS} FROM extension_requests WHERE grant_id = $1 AND state = 'pending'"
                )))
                .bind(grant.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(ExtensionRequest::try_from).transpose()
            }

            async fn pending_extensions(&self) -> Result<Vec<ExtensionRequest>, StoreError> {
                let rows: Vec<ExtensionRow> = sqlx::query_as(crate::built(format!(
                    "SELECT {EXTENSION_COLUMNS} FROM extension_requests WHERE state = 'pending' ORDER BY id LIMIT 1000"
                )))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(ExtensionRequest::try_from).collect()
            }

            async fn extension_reviews(&self, id: uuid::Uuid) -> Result<Vec<Review>, StoreError> {
                let rows: Vec<crate::ReviewRow> = sqlx::query_as(
                    "SELECT approver, verdict, comment, at FROM extension_reviews WHERE extension_id = $1 ORDER BY at, approver",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(crate::review_from_row).collect()
            }

            async fn record_extension_review(
                &self,
                e: &ExtensionRequest,
                review: &Review,
                decided: Option<ExtensionState>,
                jobs: &[NewJob],
                audit: NewAudit,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "INSERT INTO extension_reviews (extension_id, approver, verdict, comment, at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(e.id.to_string())
                .bind(review.approver.as_str())
                .bind(review.verdict.as_str())
                .bind(&review.comment)
                .bind(ms(review.at))
                .execute(&mut *tx)
                .await
                .map_err(|err| match &err {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!(
                        "`{}` has already answered this extension request",
                        review.approver
                    )),
                    _ => db(err),
                })?;
                // Still pending, and the grant still ends where it did when asked.
                let still = sqlx::query(
                    "UPDATE extension_requests SET state = COALESCE($1, state), decided_at = $2 \
                     WHERE id = $3 AND state = 'pending'",
                )
                .bind(decided.map(|d| d.as_str()))
                .bind(decided.map(|_| ms(review.at)))
                .bind(e.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                let moved = if decided == Some(ExtensionState::Approved) {
                    sqlx::query(
                        "UPDATE grants SET expires_at = $1, updated_at = $2 \
                         WHERE id = $3 AND expires_at = $4 AND state IN ('approved', 'active') AND expires_at > $2",
                    )
                    .bind(ms(e.until))
                    .bind(ms(review.at))
                    .bind(e.grant.to_string())
                    .bind(ms(e.from))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?
                    .rows_affected()
                } else {
                    1
                };
                if still != 1 || moved != 1 {
                    tx.rollback().await.map_err(db)?;
                    return Ok(false);
                }
                Self::insert_jobs_in(&mut tx, jobs, review.at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }
        }
    };
}

extension_store!(SqliteStore);
extension_store!(PgStore);
