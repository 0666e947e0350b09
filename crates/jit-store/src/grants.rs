//! Grants: a grant is written with its converge jobs and its audit event in
//! one transaction, and moves state only from the state it was read in.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{GrantFilter, GrantMark, GrantStore, NewAudit, NewJob, StoreError};
use jit_domain::{
    EndReason, Grant, GrantId, Justification, Review, RoleName, TicketId, Transition, UserName,
};

use crate::{PgStore, SqliteStore, built, corrupt, db, ms, opt_time, time};

const GRANT_COLUMNS: &str = "id, user_name, role, ticket, justification, requested_by, state, starts_at, \
     expires_at, created_at, updated_at, ended_at, end_reason, end_note, role_added_at, role_removed_at, last_error, \
     origin, decision, ticket_snapshot";

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    user_name: String,
    role: String,
    ticket: Option<String>,
    justification: String,
    requested_by: String,
    state: String,
    starts_at: i64,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
    end_note: Option<String>,
    role_added_at: Option<i64>,
    role_removed_at: Option<i64>,
    last_error: Option<String>,
    origin: String,
    decision: Option<String>,
    ticket_snapshot: Option<String>,
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    raw: Option<String>,
) -> Result<Option<T>, StoreError> {
    raw.map(|r| serde_json::from_str(&r).map_err(|e| corrupt(what, e)))
        .transpose()
}

fn to_json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>, StoreError> {
    value
        .as_ref()
        .map(|v| serde_json::to_string(v).map_err(|e| corrupt("json", e)))
        .transpose()
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> Result<Self, StoreError> {
        Ok(Grant {
            id: r.id.parse().map_err(|e| corrupt("grant id", e))?,
            user: UserName::parse(&r.user_name).map_err(|e| corrupt("user_name", e.message))?,
            role: RoleName::parse(&r.role).map_err(|e| corrupt("role", e.message))?,
            ticket: r
                .ticket
                .map(|t| TicketId::parse(&t))
                .transpose()
                .map_err(|e| corrupt("ticket", e.message))?,
            justification: Justification::parse(&r.justification)
                .map_err(|e| corrupt("justification", e.message))?,
            requested_by: r.requested_by,
            state: r.state.parse().map_err(|e| corrupt("state", e))?,
            starts_at: time(r.starts_at)?,
            expires_at: time(r.expires_at)?,
            created_at: time(r.created_at)?,
            updated_at: time(r.updated_at)?,
            ended_at: opt_time(r.ended_at)?,
            end_reason: r
                .end_reason
                .map(|s| s.parse::<EndReason>())
                .transpose()
                .map_err(|e| corrupt("end_reason", e))?,
            end_note: r.end_note,
            role_added_at: opt_time(r.role_added_at)?,
            role_removed_at: opt_time(r.role_removed_at)?,
            last_error: r.last_error,
            origin: r.origin,
            decision: from_json("decision", r.decision)?,
            ticket_snapshot: from_json("ticket_snapshot", r.ticket_snapshot)?,
        })
    }
}

const NON_TERMINAL: &str = "('pending_approval', 'approved', 'active')";

macro_rules! grant_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// One pair's grants matching `condition`, a static fragment.
            async fn pair_grants(&self, user: &UserName, role: &RoleName, condition: &str) -> Result<Vec<Grant>, StoreError> {
                let rows: Vec<GrantRow> = sqlx::query_as(built(format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE user_name = $1 AND role = $2 AND {condition}"
                )))
                .bind(user.as_str())
                .bind(role.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(Grant::try_from).collect()
            }
        }

        impl $store {
            /// Moves the grant from `t.from` to `t.to`; `false` if it had moved already.
            async fn apply_transition_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                id: GrantId,
                t: &Transition,
                note: Option<&str>,
            ) -> Result<bool, StoreError> {
                let ended_at = t.to.is_terminal().then(|| ms(t.at));
                let moved = sqlx::query(
                    "UPDATE grants SET state = $1, updated_at = $2, ended_at = COALESCE($3, ended_at), \
                     end_reason = COALESCE($4, end_reason), end_note = COALESCE($5, end_note) \
                     WHERE id = $6 AND state = $7",
                )
                .bind(t.to.as_str())
                .bind(ms(t.at))
                .bind(ended_at)
                .bind(t.end_reason.map(|r| r.as_str()))
                .bind(note)
                .bind(id.to_string())
                .bind(t.from.as_str())
                .execute(&mut **tx)
                .await
                .map_err(db)?
                .rows_affected();
                Ok(moved == 1)
            }
        }

        #[async_trait]
        impl GrantStore for $store {
            async fn insert_grant(&self, g: &Grant, jobs: &[NewJob], audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(built(format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
                )))
                .bind(g.id.to_string())
                .bind(g.user.as_str())
                .bind(g.role.as_str())
                .bind(g.ticket.as_ref().map(|t| t.as_str()))
                .bind(g.justification.as_str())
                .bind(&g.requested_by)
                .bind(g.state.as_str())
                .bind(ms(g.starts_at))
                .bind(ms(g.expires_at))
                .bind(ms(g.created_at))
                .bind(ms(g.updated_at))
                .bind(g.ended_at.map(ms))
                .bind(g.end_reason.map(|r| r.as_str()))
                .bind(g.end_note.as_deref())
                .bind(g.role_added_at.map(ms))
                .bind(g.role_removed_at.map(ms))
                .bind(g.last_error.as_deref())
                .bind(&g.origin)
                .bind(to_json(&g.decision)?)
                .bind(to_json(&g.ticket_snapshot)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!(
                        "a live {} grant of `{}` to `{}` for {}",
                        g.origin,
                        g.role,
                        g.user,
                        g.ticket.as_ref().map_or("no ticket", |t| t.as_str())
                    )),
                    _ => db(e),
                })?;
                Self::insert_jobs_in(&mut tx, jobs, g.created_at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)
            }

            async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
                let row: Option<GrantRow> =
                    sqlx::query_as(built(format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1")))
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                row.map(Grant::try_from).transpose()
            }

            async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
                let mut sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE 1 = 1");
                let mut args: Vec<String> = Vec::new();
                let mut push = |clause: &str, value: String, sql: &mut String| {
                    args.push(value);
                    sql.push_str(&format!(" AND {clause} ${}", args.len()));
                };
                if let Some(u) = &f.user { push("user_name =", u.to_string(), &mut sql); }
                if let Some(r) = &f.role { push("role =", r.to_string(), &mut sql); }
                if let Some(s) = f.state { push("state =", s.to_string(), &mut sql); }
                if let Some(t) = &f.ticket { push("ticket =", t.to_string(), &mut sql); }
                if let Some(b) = f.before { push("id <", b.to_string(), &mut sql); }
                if let Some(o) = &f.origin { push("origin =", o.clone(), &mut sql); }
                if f.live { sql.push_str(&format!(" AND state IN {NON_TERMINAL}")); }
                sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", f.limit.clamp(1, 1000)));
                let mut q = sqlx::query_as::<_, GrantRow>(built(sql));
                for a in args {
                    q = q.bind(a);
                }
                q.fetch_all(&self.pool).await.map_err(db)?.into_iter().map(Grant::try_from).collect()
            }

            async fn grants_for(&self, user: &UserName, role: &RoleName) -> Result<Vec<Grant>, StoreError> {
                self.pair_grants(user, role, &format!("state IN {NON_TERMINAL}")).await
            }

            async fn awaiting_removal(&self, user: &UserName, role: &RoleName) -> Result<Vec<Grant>, StoreError> {
                self.pair_grants(
                    user,
                    role,
                    "state = 'ended' AND role_removed_at IS NULL AND role_added_at IS NOT NULL \
                     ORDER BY id DESC LIMIT 100",
                )
                .await
            }

            async fn transition(
                &self,
                id: GrantId,
                t: &Transition,
                note: Option<&str>,
                jobs: &[NewJob],
                audit: NewAudit,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                if !Self::apply_transition_in(&mut tx, id, t, note).await? {
                    tx.rollback().await.map_err(db)?;
                    return Ok(false);
                }
                Self::insert_jobs_in(&mut tx, jobs, t.at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn record_review(
                &self,
                id: GrantId,
                review: &Review,
                t: Option<&Transition>,
                jobs: &[NewJob],
                audit: NewAudit,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                sqlx::query(
                    "INSERT INTO grant_reviews (grant_id, approver, verdict, comment, at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id.to_string())
                .bind(review.approver.as_str())
                .bind(review.verdict.as_str())
                .bind(&review.comment)
                .bind(ms(review.at))
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!(
                        "`{}` has already answered grant {id}",
                        review.approver
                    )),
                    _ => db(e),
                })?;
                if let Some(t) = t
                    && !Self::apply_transition_in(&mut tx, id, t, None).await?
                {
                    tx.rollback().await.map_err(db)?;
                    return Ok(false);
                }
                Self::insert_jobs_in(&mut tx, jobs, review.at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn reviews(&self, id: GrantId) -> Result<Vec<Review>, StoreError> {
                let rows: Vec<crate::ReviewRow> = sqlx::query_as(
                    "SELECT approver, verdict, comment, at FROM grant_reviews WHERE grant_id = $1 ORDER BY at, approver",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter().map(crate::review_from_row).collect()
            }

            async fn extend_grant(
                &self,
                id: GrantId,
                from: DateTime<Utc>,
                until: DateTime<Utc>,
                jobs: &[NewJob],
                audit: NewAudit,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let moved = sqlx::query(
                    "UPDATE grants SET expires_at = $1, updated_at = $2 \
                     WHERE id = $3 AND expires_at = $4 AND state IN ('approved', 'active')",
                )
                .bind(ms(until))
                .bind(ms(audit.at))
                .bind(id.to_string())
                .bind(ms(from))
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                if moved != 1 {
                    tx.rollback().await.map_err(db)?;
                    return Ok(false);
                }
                Self::insert_jobs_in(&mut tx, jobs, audit.at).await?;
                Self::append_audit_in(&mut tx, &audit).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn mark(&self, mark: &GrantMark, at: DateTime<Utc>, audit: Option<NewAudit>) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let q = match mark {
                    GrantMark::RoleAdded(id) => sqlx::query(
                        "UPDATE grants SET role_added_at = COALESCE(role_added_at, $1), last_error = NULL WHERE id = $2",
                    )
                    .bind(ms(at))
                    .bind(id.to_string()),
                    GrantMark::RoleRemoved { user, role, .. } => sqlx::query(
                        "UPDATE grants SET role_removed_at = $1 \
                         WHERE user_name = $2 AND role = $3 AND state = 'ended' AND role_removed_at IS NULL",
                    )
                    .bind(ms(at))
                    .bind(user.as_str())
                    .bind(role.as_str()),
                    GrantMark::Failed(id, error) => sqlx::query("UPDATE grants SET last_error = $1 WHERE id = $2")
                        .bind(error.as_str())
                        .bind(id.to_string()),
                };
                q.execute(&mut *tx).await.map_err(db)?;
                if let GrantMark::RoleRemoved { user, role, activity: Some(activity) } = mark {
                    for (pass, due) in &activity.passes {
                        sqlx::query(crate::activity::SCHEDULE_FOR_REMOVED_SQL)
                            .bind(i64::from(*pass))
                            .bind(&activity.directory_id)
                            .bind(ms(at))
                            .bind(ms(*due))
                            .bind(user.as_str())
                            .bind(role.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                    }
                }
                if let Some(audit) = audit {
                    Self::append_audit_in(&mut tx, &audit).await?;
                }
                tx.commit().await.map_err(db)
            }

            async fn mark_nudged(&self, id: GrantId, audit: NewAudit) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let done = sqlx::query(
                    "UPDATE grants SET nudged_at = $1 WHERE id = $2 AND nudged_at IS NULL AND state = 'active'",
                )
                .bind(ms(audit.at))
                .bind(id.to_string())
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

            async fn mark_overdue(&self, id: GrantId, audit: NewAudit) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let done = sqlx::query(
                    "UPDATE grants SET overdue_alerted_at = $1 WHERE id = $2 AND overdue_alerted_at IS NULL",
                )
                .bind(ms(audit.at))
                .bind(id.to_string())
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

            async fn tickets_of_live_grants(&self) -> Result<Vec<TicketId>, StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(built(format!(
                    "SELECT DISTINCT ticket FROM grants WHERE ticket IS NOT NULL AND state IN {NON_TERMINAL} ORDER BY ticket"
                )))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|(t,)| TicketId::parse(&t).map_err(|e| corrupt("ticket", e.message)))
                    .collect()
            }
        }
    };
}

grant_store!(SqliteStore, sqlx::Sqlite);
grant_store!(PgStore, sqlx::Postgres);
