//! The audit log: every event is appended under one lock (PostgreSQL: a
//! transaction-scoped advisory lock; SQLite has one writer) so the hash chain
//! stays linear, and the SOC's email for it is queued in the same transaction.
use async_trait::async_trait;
use jit_app::{AuditEvent, AuditStore, NewAudit, Store, StoreError, notifies};
use jit_domain::GrantId;

use crate::chain::{BrokenLink, ChainVerifier, GENESIS, Hashed, canonical_json, event_hash};
use crate::{PgStore, SqliteStore, corrupt, db, ms, time};

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at: i64,
    actor: String,
    kind: String,
    grant_id: Option<String>,
    ticket: Option<String>,
    data: String,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self, StoreError> {
        Ok(AuditEvent {
            seq: r.seq,
            at: time(r.at)?,
            actor: r.actor,
            kind: r.kind,
            grant: r
                .grant_id
                .map(|g| g.parse())
                .transpose()
                .map_err(|e| corrupt("audit grant", e))?,
            ticket: r.ticket,
            data: serde_json::from_str(&r.data).map_err(|e| corrupt("audit data", e))?,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

macro_rules! audit_store {
    ($store:ty, $db:ty, lock = $audit_lock:expr) => {
        impl $store {
            pub(crate) async fn append_audit_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                audit: &NewAudit,
            ) -> Result<(), StoreError> {
                let lock: Option<&str> = $audit_lock;
                if let Some(lock) = lock {
                    sqlx::query(lock).execute(&mut **tx).await.map_err(db)?;
                }
                let last: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db)?;
                let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_owned()));
                let data = canonical_json(&audit.data);
                let grant = audit.grant.map(|g| g.to_string());
                let ticket = audit.ticket.as_ref().map(|t| t.as_str());
                let seq = prev_seq + 1;
                let hash = event_hash(
                    &prev_hash,
                    &Hashed { seq, at: audit.at, actor: &audit.actor, kind: audit.kind, grant: grant.clone(), ticket, data: &data },
                );
                sqlx::query(
                    "INSERT INTO audit (seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(seq)
                .bind(ms(audit.at))
                .bind(&audit.actor)
                .bind(audit.kind)
                .bind(grant)
                .bind(ticket)
                .bind(data)
                .bind(prev_hash)
                .bind(hash)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                // The SOC's email is recorded with the event, or not at all.
                if notifies(audit.kind, &audit.data) {
                    sqlx::query(
                        "INSERT INTO outbox (audit_seq, kind, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)",
                    )
                    .bind(seq)
                    .bind(audit.kind)
                    .bind(ms(audit.at))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                }
                Ok(())
            }

            pub(crate) async fn audit_event_in(&self, seq: i64) -> Result<Option<AuditEvent>, StoreError> {
                let row: Option<AuditRow> = sqlx::query_as(
                    "SELECT seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash FROM audit WHERE seq = $1",
                )
                .bind(seq)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(AuditEvent::try_from).transpose()
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn append_audit(&self, audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn audit_of_grant(&self, id: GrantId) -> Result<Vec<AuditEvent>, StoreError> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash FROM audit \
                     WHERE grant_id = $1 ORDER BY seq LIMIT 1000",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(AuditEvent::try_from).collect()
            }

            async fn audit_events(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash FROM audit \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(AuditEvent::try_from).collect()
            }
        }
    };
}

audit_store!(SqliteStore, sqlx::Sqlite, lock = None);
audit_store!(
    PgStore,
    sqlx::Postgres,
    // Any constant key: every appender takes the same transaction-scoped lock.
    lock = Some("SELECT pg_advisory_xact_lock(7243501)")
);

/// Walks the whole audit chain; `Ok(n)`: n events verified.
pub async fn verify_audit(store: &dyn Store) -> Result<Result<u64, BrokenLink>, StoreError> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_events(after, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(Ok(verifier.verified));
        };
        after = last.seq;
        for e in &page {
            if let Err(broken) = verifier.check(e) {
                return Ok(Err(broken));
            }
        }
    }
}
