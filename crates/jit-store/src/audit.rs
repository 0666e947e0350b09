//! The audit log: every event is appended under one lock (PostgreSQL: a
//! transaction-scoped advisory lock; SQLite has one writer) so the hash chain
//! stays linear, and the SOC's email for it is queued in the same transaction.
use async_trait::async_trait;
use jit_app::{AuditCheckpoint, AuditEvent, AuditStore, NewAudit, Store, StoreError, notifies};
use jit_domain::GrantId;

use crate::chain::{
    BrokenLink, ChainVerifier, GENESIS, Hashed, canonical_json, checkpoint_valid, event_hash,
    event_intact,
};
use crate::{PgStore, SqliteStore, built, corrupt, db, ms, time};

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

            async fn audit_head(&self) -> Result<Option<AuditEvent>, StoreError> {
                let row: Option<AuditRow> = sqlx::query_as(
                    "SELECT seq, at, actor, kind, grant_id, ticket, data, prev_hash, hash FROM audit \
                     ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                row.map(AuditEvent::try_from).transpose()
            }

            async fn report_user_name_collisions(
                &self,
                at: chrono::DateTime<chrono::Utc>,
                actor: &str,
                kind: &'static str,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
                    "SELECT id, table_name, shared, names FROM user_name_collisions \
                     WHERE reported_at IS NULL ORDER BY id",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                if rows.is_empty() {
                    return Ok(false);
                }
                let collisions: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(_, table, shared, names)| {
                        serde_json::json!({"table": table, "shared": shared, "names": names})
                    })
                    .collect();
                let audit = NewAudit {
                    at,
                    actor: actor.to_owned(),
                    kind,
                    grant: None,
                    ticket: None,
                    data: serde_json::json!({"collisions": collisions}),
                };
                Self::append_audit_in(&mut tx, &audit).await?;
                for (id, ..) in &rows {
                    sqlx::query("UPDATE user_name_collisions SET reported_at = $1 WHERE id = $2")
                        .bind(ms(at))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn insert_checkpoint(
                &self,
                cp: &AuditCheckpoint,
                audit: NewAudit,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(cp.seq)
                .bind(&cp.hash)
                .bind(ms(cp.at))
                .bind(&cp.key_id)
                .bind(&cp.signature)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
                self.checkpoints_where("ORDER BY seq").await
            }

            async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
                Ok(self.checkpoints_where("ORDER BY seq DESC LIMIT 1").await?.pop())
            }
        }

        impl $store {
            /// Checkpoints in the order (and number) `tail` says; only
            /// static text is ever passed.
            async fn checkpoints_where(&self, tail: &'static str) -> Result<Vec<AuditCheckpoint>, StoreError> {
                let rows: Vec<(i64, String, i64, String, String)> = sqlx::query_as(built(format!(
                    "SELECT seq, hash, at, key_id, signature FROM audit_checkpoints {tail}"
                )))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|(seq, hash, at, key_id, signature)| {
                        Ok(AuditCheckpoint { seq, hash, at: time(at)?, key_id, signature })
                    })
                    .collect()
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

/// What a verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub events: u64,
    pub checkpoints: u64,
    /// Checkpoints were checked against a trusted public key (not only
    /// against the key they name).
    pub trusted_key: bool,
}

/// Walks the whole audit chain and its signed checkpoints, and names the
/// first thing wrong: an event altered, missing or out of order; a
/// checkpoint whose signature fails (or is not by `trusted`); an event
/// rewritten after a checkpoint signed it; a tail cut off after one.
pub async fn verify_audit(
    store: &dyn Store,
    trusted: Option<&str>,
) -> Result<Result<AuditReport, BrokenLink>, StoreError> {
    let checkpoints: std::collections::BTreeMap<i64, AuditCheckpoint> = store
        .checkpoints()
        .await?
        .into_iter()
        .map(|cp| (cp.seq, cp))
        .collect();
    for cp in checkpoints.values() {
        if !checkpoint_valid(cp, trusted) {
            return Ok(Err(BrokenLink {
                seq: cp.seq,
                reason: format!(
                    "the checkpoint of seq {} made at {} is not validly signed{} (forged or altered)",
                    cp.seq,
                    cp.at,
                    if trusted.is_some() {
                        " by the trusted key"
                    } else {
                        ""
                    }
                ),
            }));
        }
    }
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_events(after, 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for e in &page {
            if let Err(broken) = verifier.check(e) {
                return Ok(Err(broken));
            }
            if let Some(cp) = checkpoints.get(&e.seq)
                && cp.hash != e.hash
            {
                return Ok(Err(BrokenLink {
                    seq: e.seq,
                    reason: format!(
                        "rewritten after the checkpoint made at {}: the chain verifies, but this is not the event it signed",
                        cp.at
                    ),
                }));
            }
        }
    }
    if let Some(cp) = checkpoints.values().next_back()
        && cp.seq > after
    {
        return Ok(Err(BrokenLink {
            seq: after + 1,
            reason: format!(
                "the log ends at seq {after}, but the checkpoint made at {} vouches for events up to seq {}: the tail was cut off",
                cp.at, cp.seq
            ),
        }));
    }
    Ok(Ok(AuditReport {
        events: verifier.verified,
        checkpoints: checkpoints.len() as u64,
        trusted_key: trusted.is_some(),
    }))
}

/// What the verification of an exported slice covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceReport {
    pub events: u64,
    /// Places where the slice skips events (a filtered export).
    pub gaps: u64,
    /// Checkpoints in the file whose signed event is in the slice too.
    pub checkpoints_matched: u64,
    pub checkpoints: u64,
}

/// Verifies an exported slice on its own: each event's hash follows from
/// its content and `prev_hash`; consecutive events link; a slice from the
/// start begins at the genesis hash; each checkpoint is validly signed (by
/// `trusted` when given) and matches the event it names when present.
pub fn verify_slice(
    events: &[AuditEvent],
    checkpoints: &[AuditCheckpoint],
    trusted: Option<&str>,
) -> Result<SliceReport, BrokenLink> {
    let mut report = SliceReport {
        events: 0,
        gaps: 0,
        checkpoints_matched: 0,
        checkpoints: checkpoints.len() as u64,
    };
    let mut previous: Option<&AuditEvent> = None;
    for e in events {
        let broken = |reason: &str| BrokenLink {
            seq: e.seq,
            reason: reason.to_owned(),
        };
        if !event_intact(e) {
            return Err(broken(
                "the event's content does not match its hash (altered)",
            ));
        }
        match previous {
            None if e.seq == 1 && e.prev_hash != GENESIS => {
                return Err(broken(
                    "the first event does not start from the genesis hash",
                ));
            }
            Some(p) if e.seq <= p.seq => {
                return Err(broken("out of order: seq does not increase"));
            }
            Some(p) if e.seq == p.seq + 1 && e.prev_hash != p.hash => {
                return Err(broken("prev_hash does not match the previous event's hash"));
            }
            Some(p) if e.seq > p.seq + 1 => report.gaps += 1,
            _ => {}
        }
        previous = Some(e);
        report.events += 1;
    }
    for cp in checkpoints {
        if !checkpoint_valid(cp, trusted) {
            return Err(BrokenLink {
                seq: cp.seq,
                reason: "a checkpoint in the file is not validly signed (forged or altered)".into(),
            });
        }
        if let Some(e) = events.iter().find(|e| e.seq == cp.seq) {
            if e.hash != cp.hash {
                return Err(BrokenLink {
                    seq: cp.seq,
                    reason: "not the event the checkpoint signed (rewritten)".into(),
                });
            }
            report.checkpoints_matched += 1;
        }
    }
    Ok(report)
}
