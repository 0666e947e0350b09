//! What was done with a privilege: passes over the target's audit trail for
//! each grant's window (scheduled with the verified removal), for a
//! break-glass account since its login, and on demand for a live grant.
//! Each pass keeps the events it has not seen and records its outcome with
//! the digest of the whole set in the audit chain.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jit_domain::activity::{
    self, Merged, PassOutcome, digest, merge, pass_kind, pass_name, summary,
};
use jit_domain::{ActivityEvent, GrantId, UserName};
use serde::Serialize;
use serde_json::json;

use crate::app::{App, SYSTEM_ACTOR};
use crate::budget::{Lane, in_lane};
use crate::error::AppError;
use crate::ports::{
    ActivityPass, ActivitySchedule, ClaimedPass, DirectoryError, NewAudit, PassRecord, StoreError,
};

/// Passes claimed at once (each one audit query, in the report lane).
const CLAIM: u32 = 8;
/// How long a claimed pass stays this replica's.
const LEASE: TimeDelta = TimeDelta::minutes(2);
/// Attempts before a pass is given up (and the giving up audited).
const MAX_ATTEMPTS: u32 = 8;
const RETRY_BASE: Duration = Duration::from_secs(30);
const RETRY_CAP: Duration = Duration::from_secs(3600);
/// The longest the collector sleeps without looking for due passes.
const MAX_IDLE: Duration = Duration::from_secs(2);
/// The follow-up passes after a break-glass login: its actions since then.
const BREAK_GLASS_PASSES: [TimeDelta; 2] = [TimeDelta::minutes(15), TimeDelta::hours(24)];

/// A grant's (or a login's) activity as the page and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub events: Vec<ActivityEvent>,
    pub passes: Vec<PassRecord>,
    /// SHA-256 of the set (as the audit chain records it).
    pub digest: String,
    /// The target keeps no audit trail: nothing will be collected.
    pub unsupported: bool,
}

impl Activity {
    pub fn grouped(&self) -> activity::Grouped {
        activity::grouped(&self.events)
    }
}

/// The subject a break-glass login's passes are kept under.
pub fn login_subject(account: &UserName, at: DateTime<Utc>) -> String {
    format!("login:{account}:{}", at.timestamp_millis())
}

impl App {
    /// The passes to schedule with the verified removal of a grant's role,
    /// where the target keeps an audit trail.
    pub(crate) fn activity_schedule(
        &self,
        directory_id: &str,
        removed_at: DateTime<Utc>,
    ) -> Option<ActivitySchedule> {
        self.directory.has_audit_trail().then(|| ActivitySchedule {
            directory_id: directory_id.to_owned(),
            passes: self.activity_plan.schedule(removed_at),
        })
    }

    /// The follow-up passes of a break-glass login (see [`BREAK_GLASS_PASSES`]).
    pub(crate) async fn schedule_login_activity(
        &self,
        account: &UserName,
        directory_id: &str,
        logged_in_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !self.directory.has_audit_trail() {
            return Ok(());
        }
        let passes: Vec<ActivityPass> = BREAK_GLASS_PASSES
            .iter()
            .zip(0u32..)
            .map(|(delay, pass)| ActivityPass {
                subject: login_subject(account, logged_in_at),
                pass,
                grant: None,
                user: account.to_string(),
                directory_id: directory_id.to_owned(),
                from: logged_in_at,
                to: None,
                due: logged_in_at + *delay,
            })
            .collect();
        self.store.schedule_activity(&passes, self.now()).await?;
        self.activity_wake.notify_one();
        Ok(())
    }

    /// Runs the passes due now; how many ran.
    pub async fn run_due_activity(&self, owner: &str) -> Result<usize, StoreError> {
        let now = self.now();
        let claimed = self
            .store
            .claim_activity(owner, now, now + LEASE, CLAIM)
            .await?;
        let n = claimed.len();
        for pass in claimed {
            self.run_pass(owner, pass).await?;
        }
        Ok(n)
    }

    /// Collects due passes until `stop`: woken when a removal schedules
    /// one, else every [`MAX_IDLE`] at most.
    pub async fn collect_activity(
        self: Arc<Self>,
        owner: String,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            // Run everything due before sleeping again.
            loop {
                match self.run_due_activity(&owner).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "activity passes: store unavailable");
                        break;
                    }
                }
            }
            let idle = match self.store.next_activity_due().await {
                Ok(Some(due)) => (due - self.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_IDLE),
                _ => MAX_IDLE,
            };
            tokio::select! {
                () = tokio::time::sleep(idle) => {}
                () = self.activity_wake.notified() => {}
                () = &mut stop => return,
            }
        }
    }

    async fn run_pass(&self, owner: &str, claimed: ClaimedPass) -> Result<(), StoreError> {
        let now = self.now();
        let p = &claimed.pass;
        let to = p.to.unwrap_or(now).min(now);
        let read = in_lane(
            Lane::Report,
            self.directory.activity(&p.directory_id, p.from, to, now),
        )
        .await;
        let found = match read {
            Ok(Some(found)) => found,
            Ok(None) => {
                let e = DirectoryError::Permanent("the directory keeps no audit trail".into());
                return self.give_up(owner, &claimed, &e, now).await;
            }
            Err(e) if e.is_permanent() || claimed.attempts >= MAX_ATTEMPTS => {
                return self.give_up(owner, &claimed, &e, now).await;
            }
            Err(e) => {
                let delay = jit_domain::retry::next_delay(
                    claimed.attempts,
                    RETRY_BASE,
                    RETRY_CAP,
                    0.5,
                    e.retry_after(),
                );
                let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::minutes(1));
                return self
                    .store
                    .retry_activity(claimed.id, owner, next, &e.to_string())
                    .await;
            }
        };
        // Recorded as of when the answer came (the read may have waited for
        // the budget).
        let now = self.now();
        let merged = merge(self.store.activity(&p.subject).await?, found);
        let (role, ticket) = match p.grant {
            Some(id) => match self.store.grant(id).await? {
                Some(g) => (Some(g.role.to_string()), g.ticket),
                None => (None, None),
            },
            None => (None, None),
        };
        let mut data = read_record(&p.subject, &p.user, role, (p.from, to), &merged);
        data["pass"] = json!(p.pass);
        data["pass_name"] = json!(pass_name(p.pass));
        data["summary"] = json!(summary(&merged.all));
        let audit = NewAudit {
            at: now,
            actor: SYSTEM_ACTOR.into(),
            kind: pass_kind(p.pass, merged.fresh.len(), p.grant.is_none()),
            grant: p.grant,
            ticket,
            data,
        };
        self.store
            .record_activity(
                &p.subject,
                Some((claimed.id, p.pass, owner)),
                &merged.fresh,
                now,
                Some(audit),
            )
            .await
    }

    async fn give_up(
        &self,
        owner: &str,
        claimed: &ClaimedPass,
        error: &DirectoryError,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let p = &claimed.pass;
        tracing::warn!(subject = %p.subject, pass = p.pass, error = %error, "activity pass given up");
        let audit = NewAudit {
            at: now,
            actor: SYSTEM_ACTOR.into(),
            kind: "activity_unavailable",
            grant: p.grant,
            ticket: None,
            data: json!({
                "user": p.user, "subject": p.subject, "pass": p.pass,
                "attempts": claimed.attempts, "error": error.to_string(),
            }),
        };
        self.store
            .fail_activity(claimed.id, owner, now, &error.to_string(), audit)
            .await
    }

    /// A grant's activity as collected so far.
    pub async fn grant_activity(&self, id: GrantId) -> Result<Activity, AppError> {
        let subject = id.to_string();
        // The passes first: a pass shown done has its events committed with
        // it, so they are read after it (the other order could show a done
        // pass without the events it found).
        let passes = self.store.activity_passes(&subject).await?;
        let events = self.store.activity(&subject).await?;
        Ok(Activity {
            digest: digest(&events),
            passes,
            events,
            unsupported: !self.directory.has_audit_trail(),
        })
    }

    /// On demand, for a grant whose role is held now: reads its activity
    /// since the role was added, keeps what is new, and records the look.
    /// Reads of one grant coalesce: one at a time, at most one every
    /// [`ON_DEMAND_EVERY`]; an ask refused for that is counted and named in
    /// the next read's audit event (each read spends the shared directory
    /// budget and writes the chain).
    pub async fn look_at_activity(&self, actor: &str, id: GrantId) -> Result<Activity, AppError> {
        let grant = self.grant(id).await?;
        if !self.directory.has_audit_trail() {
            return self.grant_activity(id).await;
        }
        let Some(from) = grant.held_since() else {
            return Err(AppError::NotNow(
                "activity is read on demand only while the grant's role is held; \
                 an ended grant's passes run by themselves"
                    .into(),
            ));
        };
        let now = self.now();
        let asked_before = self.on_demand.begin(id, now)?;
        let read = self
            .read_on_demand(actor, &grant, from, now, asked_before)
            .await;
        self.on_demand.end(id);
        read
    }

    async fn read_on_demand(
        &self,
        actor: &str,
        grant: &jit_domain::Grant,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
        asked_before: Option<Coalesced>,
    ) -> Result<Activity, AppError> {
        let id = grant.id;
        let read = async {
            let user = self.directory.find_user(&grant.user).await?;
            self.directory.activity(&user.id, from, now, now).await
        };
        let found = in_lane(Lane::Report, read)
            .await
            .map_err(AppError::Directory)?
            .unwrap_or_default();
        let subject = id.to_string();
        let merged = merge(self.store.activity(&subject).await?, found);
        let mut data = read_record(
            &subject,
            grant.user.as_str(),
            Some(grant.role.to_string()),
            (from, now),
            &merged,
        );
        data["pass"] = json!(null);
        data["pass_name"] = json!("on demand");
        if let Some(c) = asked_before {
            data["asked_not_read"] = json!({"count": c.count, "first": c.first, "last": c.last});
        }
        let audit = NewAudit {
            at: now,
            actor: actor.to_owned(),
            kind: PassOutcome::Collected.audit_kind(),
            grant: Some(id),
            ticket: grant.ticket.clone(),
            data,
        };
        self.store
            .record_activity(&subject, None, &merged.fresh, now, Some(audit))
            .await?;
        self.grant_activity(id).await
    }
}

/// What every read of the trail records in the chain: whose, over which
/// window, what was new, and the digest of the whole set.
fn read_record(
    subject: &str,
    user: &str,
    role: Option<String>,
    window: (DateTime<Utc>, DateTime<Utc>),
    merged: &Merged,
) -> serde_json::Value {
    json!({
        "user": user, "role": role, "subject": subject,
        "window": {"from": window.0, "to": window.1},
        "new": merged.fresh.len(), "total": merged.all.len(), "digest": digest(&merged.all),
        "new_ids": merged.fresh.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
    })
}

/// The least time between two on-demand reads of one grant's trail.
pub const ON_DEMAND_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Asks for a read that were refused (one in flight, or too soon), told in
/// the next read's audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesced {
    pub count: u32,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
struct OnDemand {
    started: DateTime<Utc>,
    in_flight: bool,
    refused: Option<Coalesced>,
}

/// This process's on-demand reads, per grant.
#[derive(Default)]
pub(crate) struct OnDemandReads(std::sync::Mutex<std::collections::HashMap<GrantId, OnDemand>>);

impl OnDemandReads {
    /// A read may start now, answering the asks refused since the last; or
    /// it may not (409 saying when it may).
    fn begin(&self, id: GrantId, now: DateTime<Utc>) -> Result<Option<Coalesced>, AppError> {
        let mut reads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Kept while they matter: a read in flight or recent, or asks not
        // yet told (for a day at most).
        reads.retain(|_, r| {
            r.in_flight
                || now - r.started < ON_DEMAND_EVERY
                || (r.refused.is_some() && now - r.started < chrono::TimeDelta::days(1))
        });
        match reads.get_mut(&id) {
            Some(r) if r.in_flight || now - r.started < ON_DEMAND_EVERY => {
                let c = r.refused.get_or_insert(Coalesced {
                    count: 0,
                    first: now,
                    last: now,
                });
                c.count += 1;
                c.last = now;
                let why = if r.in_flight {
                    "a read of this grant's trail is under way".to_owned()
                } else {
                    format!(
                        "this grant's trail was read at {}; the next read may start at {}",
                        r.started,
                        r.started + ON_DEMAND_EVERY
                    )
                };
                Err(AppError::NotNow(why))
            }
            _ => {
                let refused = reads.get(&id).and_then(|r| r.refused);
                reads.insert(
                    id,
                    OnDemand {
                        started: now,
                        in_flight: true,
                        refused: None,
                    },
                );
                Ok(refused)
            }
        }
    }

    fn end(&self, id: GrantId) {
        let mut reads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = reads.get_mut(&id) {
            r.in_flight = false;
        }
    }
}
