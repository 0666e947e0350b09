//! Evidence an auditor can take away: pages of the audit log filtered by
//! time, grant or user (the export and `GET /api/v1/audit` read the same),
//! and signed checkpoints of the chain's head.

use chrono::{DateTime, Utc};
use jit_domain::GrantId;
use serde_json::json;

use crate::app::{App, SYSTEM_ACTOR};
use crate::error::AppError;
use crate::ports::{AuditCheckpoint, AuditEvent, CheckpointSigner, NewAudit};

/// The audit event that records a checkpoint (and carries it to the SIEM).
pub const AUDIT_CHECKPOINT: &str = "audit_checkpoint";

/// Which events an export or a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub grant: Option<GrantId>,
    /// Events naming this user (`data.user`).
    pub user: Option<String>,
}

impl AuditFilter {
    fn keeps(&self, e: &AuditEvent) -> bool {
        self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
            && self.grant.is_none_or(|g| e.grant == Some(g))
            && self
                .user
                .as_deref()
                // Events from before user names had one form may spell one
                // with capitals.
                .is_none_or(|u| {
                    e.data["user"]
                        .as_str()
                        .is_some_and(|logged| logged.trim().eq_ignore_ascii_case(u.trim()))
                })
    }
}

/// One page: the events kept, and where the next page starts (`None`: the
/// end of the log).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<i64>,
}

/// Rows read per page at most, kept or not: a filter that matches little
/// still answers quickly, with a cursor to go on.
const SCAN: u32 = 5_000;

impl App {
    /// Up to `limit` events after `cursor` (a `seq`) that `filter` keeps.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        cursor: i64,
        limit: u32,
    ) -> Result<AuditPage, AppError> {
        let limit = limit.clamp(1, 1000) as usize;
        let mut events = Vec::new();
        let mut after = cursor.max(0);
        let mut scanned = 0;
        loop {
            let rows = self.store.audit_events(after, 1000).await?;
            let Some(last) = rows.last().map(|e| e.seq) else {
                return Ok(AuditPage {
                    events,
                    next_cursor: None,
                });
            };
            for e in rows {
                after = e.seq;
                if filter.keeps(&e) {
                    events.push(e);
                    if events.len() == limit {
                        return Ok(AuditPage {
                            events,
                            next_cursor: Some(after),
                        });
                    }
                }
            }
            after = last;
            scanned += 1000;
            if scanned >= SCAN {
                return Ok(AuditPage {
                    events,
                    next_cursor: Some(after),
                });
            }
        }
    }

    /// Signs the chain's head and stores the checkpoint, unless nothing but
    /// the last checkpoint's own event came since. Answers the new one.
    pub async fn checkpoint_audit(
        &self,
        signer: &dyn CheckpointSigner,
    ) -> Result<Option<AuditCheckpoint>, AppError> {
        let Some(head) = self.store.audit_head().await? else {
            return Ok(None);
        };
        let last = self.store.last_checkpoint().await?;
        let nothing_new = last.as_ref().is_some_and(|cp| {
            head.seq == cp.seq || (head.seq == cp.seq + 1 && head.kind == AUDIT_CHECKPOINT)
        });
        if nothing_new {
            return Ok(None);
        }
        let (key_id, signature) = signer.sign_head(head.seq, &head.hash);
        let checkpoint = AuditCheckpoint {
            seq: head.seq,
            hash: head.hash,
            at: self.now(),
            key_id,
            signature,
        };
        let audit = NewAudit {
            at: checkpoint.at,
            actor: SYSTEM_ACTOR.into(),
            kind: AUDIT_CHECKPOINT,
            grant: None,
            ticket: None,
            data: json!(checkpoint),
        };
        self.store.insert_checkpoint(&checkpoint, audit).await?;
        Ok(Some(checkpoint))
    }

    pub async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, AppError> {
        Ok(self.store.checkpoints().await?)
    }
}
