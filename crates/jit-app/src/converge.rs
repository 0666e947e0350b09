//! Converge: make the directory match what the grants say for one (user,
//! role), verified by reading it back; and the job that ties it to time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jit_domain::{Desired, GrantId, GrantState, RoleChange, RoleName, UserName, desired};
use serde::Serialize;
use serde_json::json;

use crate::app::{App, SYSTEM_ACTOR, transition_audit};
use crate::budget::{Lane, Turn, on_turn};
use crate::ports::{DirectoryError, GrantMark, Job, NewAudit, Settled, StoreError};

/// Whether a converge may go by what the broker last proved of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Always read the directory first (sweeps, hints, strips: they act on
    /// what others may have written).
    Read,
    /// A job's converge: the broker's own proof stands (see
    /// [`App::converge_as`]).
    Record,
}

/// A read–write of the directory can lose to a concurrent writer; this many
/// fresh reads are tried before the job is retried later.
const VERSION_CONFLICT_ATTEMPTS: usize = 3;

/// Writes one converge may make before it gives the job back to the backoff:
/// an answer that keeps flipping means something else is writing the role.
const MAX_WRITES_PER_CONVERGE: usize = 3;

/// What one converge saw and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvergeReport {
    pub user: UserName,
    pub role: RoleName,
    pub desired: Desired,
    /// Whether the directory held the role before converge acted.
    pub held: Option<bool>,
    pub change: Option<RoleChange>,
    pub directory_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("read-back after {change:?} shows the role {}", if *.still_held { "still present" } else { "still absent" })]
    NotVerified {
        change: RoleChange,
        still_held: bool,
    },
    #[error("the role kept changing under converge ({0} writes); trying again later")]
    Unsettled(usize),
}

impl ConvergeError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Directory(e) if e.is_permanent())
    }

    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Directory(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The directory seems down (see [`DirectoryError::target_unavailable`]).
    pub fn target_unavailable(&self) -> bool {
        matches!(self, Self::Directory(e) if e.target_unavailable())
    }
}

impl App {
    /// The pair's job: every grant of the pair advanced to where time has
    /// brought it, then one converge, trusting what the broker last proved
    /// of the pair (see [`App::converge_as`]). However many grants asked for
    /// it, one run settles them all. Safe to run any number of times.
    pub async fn run_job(&self, job: &Job) -> Result<ConvergeReport, ConvergeError> {
        self.advance_pair(&job.user, &job.role).await?;
        let result = self.converge_as(&job.user, &job.role, Trust::Record).await;
        let Err(e) = &result else {
            return result;
        };
        // The grants a failure concerns: the one that should hold the role,
        // or those whose removal it was.
        let grants = self.store.grants_for(&job.user, &job.role).await?;
        let concerned: Vec<GrantId> =
            match desired(&self.rules(), &job.user, &job.role, &grants, self.now()) {
                Desired::HeldByGrant { grant } => vec![grant],
                _ => self
                    .store
                    .awaiting_removal(&job.user, &job.role)
                    .await?
                    .into_iter()
                    .map(|g| g.id)
                    .collect(),
            };
        for id in concerned {
            self.raise_if_overdue(id, e).await?;
            if e.is_permanent() {
                let audit = NewAudit {
                    at: self.now(),
                    actor: SYSTEM_ACTOR.into(),
                    kind: "converge_failed",
                    grant: Some(id),
                    ticket: None,
                    data: json!({"user": job.user, "role": job.role, "error": e.to_string(), "permanent": true}),
                };
                self.store
                    .mark(
                        &GrantMark::Failed(id, e.to_string()),
                        self.now(),
                        Some(audit),
                    )
                    .await?;
            }
        }
        result
    }

    /// When the pair's job is next due, from its grants as they are now.
    pub async fn next_job(
        &self,
        user: &UserName,
        role: &RoleName,
    ) -> Result<Option<crate::ports::NewJob>, StoreError> {
        let grants = self.store.grants_for(user, role).await?;
        Ok(
            jit_domain::next_wake(&self.policy, &grants).map(|wake| crate::ports::NewJob {
                user: user.clone(),
                role: role.clone(),
                grant: None,
                due_at: wake.at,
                removal: wake.removal,
            }),
        )
    }

    /// Applies whatever lifecycle transition time has made due to each grant
    /// of the pair (start, end, a request lapsing).
    async fn advance_pair(&self, user: &UserName, role: &RoleName) -> Result<(), StoreError> {
        for grant in self.store.grants_for(user, role).await? {
            let now = self.now();
            if let Some(t) = grant
                .advance(now)
                .or_else(|| grant.lapse(&self.policy, now))
            {
                let note = (t.from == GrantState::PendingApproval).then_some("approval lapsed");
                let audit = transition_audit(SYSTEM_ACTOR, &grant, &t, note);
                // `false` means another worker applied it first: nothing to do.
                self.store
                    .transition(grant.id, &t, note, &[], audit)
                    .await?;
            }
        }
        Ok(())
    }

    /// Makes the directory match `desired` for one (user, role), always
    /// reading it first: what sweeps, hints and strips call.
    pub async fn converge(
        &self,
        user: &UserName,
        role: &RoleName,
    ) -> Result<ConvergeReport, ConvergeError> {
        self.converge_as(user, role, Trust::Read).await
    }

    /// Makes the directory match `desired` for one (user, role): read, compare,
    /// PATCH only the difference, read back to verify, record the outcome.
    /// With [`Trust::Record`], a pair whose desired state is what the broker
    /// last proved it to be costs the directory nothing (an absent role it
    /// removed and has not written since; a held role proved within
    /// [`jit_domain::HELD_TRUSTED_FOR`]): requests follow changes of the desired state,
    /// not grants.
    pub async fn converge_as(
        &self,
        user: &UserName,
        role: &RoleName,
        trust: Trust,
    ) -> Result<ConvergeReport, ConvergeError> {
        // One converge per pair at a time in this process; across replicas the
        // re-decision after each write below keeps the result right.
        let _guard = self.pair_locks.lock(user, role).await;
        if trust == Trust::Record
            && let Some(report) = self.as_last_proved(user, role).await?
        {
            return Ok(report);
        }
        let mut report = ConvergeReport {
            user: user.clone(),
            role: role.clone(),
            desired: Desired::Unmanaged,
            held: None,
            change: None,
            directory_id: None,
        };
        let mut conflicts = 0;
        let mut writes = 0;
        // One place in the directory budget's queue for every call below, so
        // that a converge which has read goes on to write before converges
        // begun after it read.
        let begun = Turn::begin(Lane::Activation);
        loop {
            if writes == MAX_WRITES_PER_CONVERGE {
                return Err(ConvergeError::Unsettled(writes));
            }
            let grants = self.store.grants_for(user, role).await?;
            let decision = desired(&self.rules(), user, role, &grants, self.now());
            report.desired = decision;
            if decision == Desired::Unmanaged {
                return Ok(report);
            }
            // Taking a role away goes first in the directory budget.
            let turn = begun.in_lane(if decision == Desired::Absent {
                Lane::Revocation
            } else {
                Lane::Activation
            });
            let current = on_turn(turn, self.directory.find_user(user)).await?;
            report.directory_id = Some(current.id.clone());
            let held = current.holding(role);
            let holds = held.any;
            report.held.get_or_insert(holds);
            let Some(change) = decision.change_for(held) else {
                self.record_in_sync(user, role, decision, holds, &current.id)
                    .await?;
                self.settle(user, role, decision, held, &current.id).await?;
                return Ok(report);
            };
            // Whatever was proved of the pair no longer holds once a write
            // may have happened: unknown until the read-back records it.
            self.store
                .set_pair_state(user, role, None, Some(&current.id), self.now())
                .await?;
            let answered =
                match on_turn(turn, self.directory.change_role(&current, role, change)).await {
                    Err(DirectoryError::VersionConflict(_))
                        if conflicts + 1 < VERSION_CONFLICT_ATTEMPTS =>
                    {
                        conflicts += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                    Ok(answered) => {
                        writes += 1;
                        answered
                    }
                };
            // The write's own answer is the read-back where the target gives
            // one; otherwise read the user again.
            let after = match answered {
                Some(user) => user,
                None => on_turn(turn, self.directory.get_user(&current.id)).await?,
            };
            let held_after = after.holding(role);
            if !change.done(held_after) {
                return Err(ConvergeError::NotVerified {
                    change,
                    still_held: change == RoleChange::Remove,
                });
            }
            report.change = Some(change);
            self.record_change(user, role, decision, change, &current, &after)
                .await?;
            self.settle(user, role, decision, held_after, &after.id)
                .await?;
            // Time or another replica may have changed the answer while we wrote.
            let grants = self.store.grants_for(user, role).await?;
            if desired(&self.rules(), user, role, &grants, self.now())
                .change_for(held_after)
                .is_none()
            {
                return Ok(report);
            }
        }
    }

    /// Records what a read proved of the pair, for [`Trust::Record`].
    async fn settle(
        &self,
        user: &UserName,
        role: &RoleName,
        decision: Desired,
        held: jit_domain::Holding,
        directory_id: &str,
    ) -> Result<(), StoreError> {
        let Some(settled) = Settled::proved(decision, held) else {
            return Ok(());
        };
        self.store
            .set_pair_state(user, role, Some(settled), Some(directory_id), self.now())
            .await
    }

    /// A job's converge of a pair whose desired state is what the broker
    /// last proved of it: the grants are recorded as that proof shows them,
    /// with no directory call. `None`: it must read.
    async fn as_last_proved(
        &self,
        user: &UserName,
        role: &RoleName,
    ) -> Result<Option<ConvergeReport>, ConvergeError> {
        let Some(state) = self.store.pair_state(user, role).await? else {
            return Ok(None);
        };
        let now = self.now();
        let grants = self.store.grants_for(user, role).await?;
        let decision = desired(&self.rules(), user, role, &grants, now);
        if !decision.stands_on(state.settled, now - state.at) {
            return Ok(None);
        }
        // Proved absent with nothing written since: an ended grant's role is
        // gone, and one that ended before it began never had it. Proved held
        // a moment ago: another grant of the pair takes over.
        let mark = match decision {
            Desired::HeldByGrant { grant } => Some(GrantMark::RoleAdded(grant)),
            Desired::Absent => Some(GrantMark::RoleRemoved {
                user: user.clone(),
                role: role.clone(),
                activity: state
                    .directory_id
                    .as_deref()
                    .and_then(|id| self.activity_schedule(id, now)),
            }),
            _ => None,
        };
        if let Some(mark) = mark {
            let removed = matches!(mark, GrantMark::RoleRemoved { .. });
            self.store.mark(&mark, now, None).await?;
            if removed {
                self.activity_wake.notify_one();
            }
        }
        Ok(Some(ConvergeReport {
            user: user.clone(),
            role: role.clone(),
            desired: decision,
            held: decision.should_hold(),
            change: None,
            directory_id: state.directory_id,
        }))
    }

    async fn record_in_sync(
        &self,
        user: &UserName,
        role: &RoleName,
        decision: Desired,
        holds: bool,
        directory_id: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        match decision {
            Desired::HeldByGrant { grant } => {
                self.store
                    .mark(&GrantMark::RoleAdded(grant), now, None)
                    .await
            }
            Desired::Absent if !holds => {
                let mark = GrantMark::RoleRemoved {
                    user: user.clone(),
                    role: role.clone(),
                    activity: self.activity_schedule(directory_id, now),
                };
                self.store.mark(&mark, now, None).await?;
                self.activity_wake.notify_one();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn record_change(
        &self,
        user: &UserName,
        role: &RoleName,
        decision: Desired,
        change: RoleChange,
        before: &crate::ports::DirectoryUser,
        after: &crate::ports::DirectoryUser,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let grant = match decision {
            Desired::HeldByGrant { grant } => Some(grant),
            _ => None,
        };
        let (kind, mark) = match (change, grant) {
            (RoleChange::Add, Some(grant)) => ("role_added", Some(GrantMark::RoleAdded(grant))),
            // Added for a break-glass account: no grant to mark.
            (RoleChange::Add, None) => ("role_added", None),
            (RoleChange::Remove, _) => (
                "role_removed",
                Some(GrantMark::RoleRemoved {
                    user: user.clone(),
                    role: role.clone(),
                    activity: self.activity_schedule(&before.id, now),
                }),
            ),
        };
        let audit = NewAudit {
            at: now,
            actor: SYSTEM_ACTOR.into(),
            kind,
            grant,
            ticket: None,
            data: json!({
                "user": user, "role": role, "cause": decision, "directory_id": before.id,
                "version_before": before.version, "version_after": after.version, "verified": true,
            }),
        };
        match mark {
            Some(mark) => {
                self.store.mark(&mark, now, Some(audit)).await?;
                self.activity_wake.notify_one();
                Ok(())
            }
            None => self.store.append_audit(audit).await,
        }
    }
}

impl App {
    /// A removal that keeps failing past the SLO is raised once per grant.
    async fn raise_if_overdue(&self, id: GrantId, error: &ConvergeError) -> Result<(), StoreError> {
        let Some(grant) = self.store.grant(id).await? else {
            return Ok(());
        };
        let now = self.now();
        let Some(overdue) = grant.revocation_overdue(now, self.revocation_slo) else {
            return Ok(());
        };
        let audit = NewAudit {
            at: now,
            actor: SYSTEM_ACTOR.into(),
            kind: "revocation_overdue",
            grant: Some(id),
            ticket: grant.ticket.clone(),
            data: json!({
                "user": grant.user, "role": grant.role, "ended_at": grant.ended_at,
                "end_reason": grant.end_reason, "overdue_secs": overdue.num_seconds(),
                "slo_secs": self.revocation_slo.num_seconds(), "error": error.to_string(),
            }),
        };
        if self.store.mark_overdue(id, audit).await? {
            tracing::error!(grant = %id, user = %grant.user, role = %grant.role, "revocation overdue");
        }
        Ok(())
    }
}

/// One async mutex per (user, role), dropped when nobody holds or waits for it.
#[derive(Default)]
pub(crate) struct PairLocks(Mutex<HashMap<Pair, Arc<tokio::sync::Mutex<()>>>>);

type Pair = (UserName, RoleName);

struct PairGuard<'a> {
    locks: &'a PairLocks,
    key: Pair,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PairLocks {
    async fn lock(&self, user: &UserName, role: &RoleName) -> PairGuard<'_> {
        let key = (user.clone(), role.clone());
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        PairGuard {
            locks: self,
            key,
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for PairGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}
