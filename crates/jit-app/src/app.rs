//! The application: its ports and settings, and the grant use cases that
//! every door shares (request, read, end). Converging the directory is in
//! [`crate::converge`].

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use std::collections::BTreeSet;

use jit_domain::{
    ChangeTicket, EndReason, Grant, GrantId, GrantRequestForm, GrantState, Policy, RequesterMatch,
    TicketEvidence, Transition, ValidGrantRequest, decide, validate_grant_request,
};
use serde_json::json;

use crate::converge::PairLocks;
use crate::error::AppError;
use crate::ports::{
    Clock, Directory, GrantFilter, NewAudit, NewJob, Store, StoreError, TicketSystem,
};

/// The actor name the broker's own actions are audited under.
pub const SYSTEM_ACTOR: &str = "jit-broker";

pub struct App {
    pub store: Arc<dyn Store>,
    pub directory: Arc<dyn Directory>,
    pub tickets: Arc<dyn TicketSystem>,
    pub clock: Arc<dyn Clock>,
    pub policy: Arc<Policy>,
    /// A role still present this long after its grant ended is raised to the SOC.
    pub revocation_slo: chrono::TimeDelta,
    /// Members of this identity-provider group are the SOC: they see every
    /// grant and may end anyone's sessions (`web.soc_group`; empty: nobody).
    pub soc_group: String,
    pub(crate) pair_locks: PairLocks,
    /// The policy as sweeps and converge apply it: the catalogue, plus the
    /// org's roles found carrying a privileged permission (and when found).
    pub(crate) effective: std::sync::RwLock<(Arc<Policy>, Option<DateTime<Utc>>)>,
    /// When a grant's activity is read after its role is removed.
    pub activity_plan: jit_domain::PassPlan,
    /// Wakes the activity collector when a removal schedules a pass.
    pub activity_wake: Arc<tokio::sync::Notify>,
    /// How fast each caller may ask for grants (unlimited unless set).
    pub request_limiter: crate::limits::RequestLimiter,
    /// On-demand reads of a grant's trail, coalesced per grant.
    pub(crate) on_demand: crate::activity::OnDemandReads,
}

/// Who asks for a grant, and through which door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The audited actor: an API key's name, a logged-in user, `servicenow`.
    pub actor: String,
    /// OIDC groups of the grant's user, where a login vouches for them.
    pub groups: BTreeSet<String>,
    /// `api`, `web`, `servicenow`.
    pub origin: &'static str,
}

impl Requester {
    pub fn api(actor: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            groups: BTreeSet::new(),
            origin: "api",
        }
    }
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn Directory>,
        tickets: Arc<dyn TicketSystem>,
        clock: Arc<dyn Clock>,
        policy: Arc<Policy>,
    ) -> Self {
        Self {
            store,
            directory,
            tickets,
            clock,
            revocation_slo: chrono::TimeDelta::seconds(60),
            soc_group: String::new(),
            pair_locks: PairLocks::default(),
            effective: std::sync::RwLock::new((policy.clone(), None)),
            activity_plan: jit_domain::PassPlan::default(),
            activity_wake: Arc::default(),
            request_limiter: crate::limits::RequestLimiter::default(),
            on_demand: Default::default(),
            policy,
        }
    }

    /// The policy as sweeps and converge apply it (see `effective`).
    pub fn rules(&self) -> Arc<Policy> {
        self.effective
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Millisecond precision: what the store keeps, so what a caller is
    /// answered equals what is read back later.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(3)
    }

    /// An API request (no OIDC groups known).
    pub async fn request_grant(
        &self,
        actor: &str,
        form: &GrantRequestForm,
    ) -> Result<Grant, AppError> {
        self.request_grant_as(&Requester::api(actor), form).await
    }

    /// Validates the fields, reads the cited change from ServiceNow, decides,
    /// and records the grant with its converge jobs (start, expiry) and its
    /// audit event in one transaction. Nothing is written for a refusal.
    pub async fn request_grant_as(
        &self,
        requester: &Requester,
        form: &GrantRequestForm,
    ) -> Result<Grant, AppError> {
        let now = self.now();
        let valid = validate_grant_request(form, &self.policy, now).map_err(AppError::Invalid)?;
        let ticket = match &valid.ticket {
            None => None,
            Some(number) => Some(self.tickets.change(number).await?),
        };
        self.decide_and_record(requester, valid, ticket, now).await
    }

    /// `ticket`: `None` when the request cites none, `Some(None)` when
    /// ServiceNow has no such change.
    pub(crate) async fn decide_and_record(
        &self,
        requester: &Requester,
        valid: ValidGrantRequest,
        ticket: Option<Option<ChangeTicket>>,
        now: DateTime<Utc>,
    ) -> Result<Grant, AppError> {
        let group_member = match (&ticket, self.policy.role(&valid.role)) {
            (Some(Some(t)), Some(rp)) if rp.requester == RequesterMatch::AssignmentGroup => {
                match &t.assignment_group {
                    Some(g) => Some(self.tickets.is_group_member(&g.sys_id, &valid.user).await?),
                    None => Some(false),
                }
            }
            _ => None,
        };
        let evidence = match &ticket {
            None => TicketEvidence::NotCited,
            Some(None) => TicketEvidence::NotFound,
            Some(Some(t)) => TicketEvidence::Found {
                ticket: t,
                group_member,
            },
        };
        let mut decision = decide(&self.policy, &valid, &requester.groups, evidence, now);
        if let Some(rp) = self.policy.role(&valid.role) {
            let live = self.store.grants_for(&valid.user, &valid.role).await?;
            decision = decision.with(jit_domain::live_grants_reason(rp, &live, now));
        }
        if !decision.allowed {
            // The caller's answer (403) says it all; not the broker's fault.
            tracing::info!(
                actor = %requester.actor, origin = requester.origin, user = %valid.user,
                role = %valid.role, ticket = ?valid.ticket.as_ref().map(|t| t.as_str()),
                denied = ?decision.denials().iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(),
                "grant refused by policy"
            );
            return Err(AppError::Denied(Box::new(decision)));
        }
        let grant = Grant::decided(
            valid,
            &requester.actor,
            requester.origin,
            decision,
            ticket.flatten(),
            now,
        );
        // A grant awaiting approval gets its start and expiry jobs when it is
        // approved; until then, one job lets it lapse if nobody answers.
        let jobs = if grant.state == GrantState::Approved {
            window_jobs(&grant)
        } else {
            vec![job_at(&grant, grant.lapses_at(&self.policy))]
        };
        let audit = NewAudit {
            at: now,
            actor: requester.actor.clone(),
            kind: "grant_requested",
            grant: Some(grant.id),
            ticket: grant.ticket.clone(),
            data: json!({
                "user": grant.user, "role": grant.role, "state": grant.state, "origin": grant.origin,
                "starts_at": grant.starts_at, "expires_at": grant.expires_at,
                "justification": grant.justification, "decision": grant.decision,
                "ticket_snapshot": grant.ticket_snapshot,
                // Who the approval request is mailed to (groups are told
                // through `[notify.recipients] approval_requested`).
                "approvers": (grant.state == GrantState::PendingApproval)
                    .then(|| self.policy.role(&grant.role).map(|r| &r.approvers.users))
                    .flatten(),
            }),
        };
        self.store.insert_grant(&grant, &jobs, audit).await?;
        Ok(grant)
    }

    pub async fn grant(&self, id: GrantId) -> Result<Grant, AppError> {
        self.store
            .grant(id)
            .await?
            .ok_or(AppError::GrantNotFound(id))
    }

    /// One grant's audit trail, oldest first.
    pub async fn grant_audit(
        &self,
        id: GrantId,
    ) -> Result<Vec<crate::ports::AuditEvent>, AppError> {
        Ok(self.store.audit_of_grant(id).await?)
    }

    pub async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, AppError> {
        Ok(self.store.grants(filter).await?)
    }

    /// Ends a grant before its time; converge then removes the role unless
    /// another grant still covers it.
    pub async fn end_grant(
        &self,
        actor: &str,
        id: GrantId,
        reason: EndReason,
        note: &str,
    ) -> Result<Grant, AppError> {
        // A concurrent transition (activation by the worker) can win the race;
        // read again and re-decide, a bounded number of times.
        for _ in 0..3 {
            let grant = self.grant(id).await?;
            let now = self.now();
            let t = grant.end_early(now, reason)?;
            let job = NewJob {
                user: grant.user.clone(),
                role: grant.role.clone(),
                grant: Some(grant.id),
                due_at: now,
                removal: true,
            };
            let audit = transition_audit(actor, &grant, &t, Some(note));
            if self
                .store
                .transition(id, &t, Some(note), &[job], audit)
                .await?
            {
                return self.grant(id).await;
            }
        }
        Err(AppError::Store(StoreError::Database(format!(
            "grant {id} kept changing while being ended"
        ))))
    }
}

/// The job of a grant's pair for a change due at `due_at` that may take the
/// role away (an end, a lapse).
pub(crate) fn job_at(grant: &Grant, due_at: DateTime<Utc>) -> NewJob {
    NewJob {
        user: grant.user.clone(),
        role: grant.role.clone(),
        grant: Some(grant.id),
        due_at,
        removal: true,
    }
}

/// The job of an approved grant: due at its start (the pair's job schedules
/// the end once it has run, from the grants as they are then).
pub(crate) fn window_jobs(grant: &Grant) -> Vec<NewJob> {
    vec![NewJob {
        removal: false,
        ..job_at(grant, grant.starts_at)
    }]
}

pub(crate) fn transition_audit(
    actor: &str,
    grant: &Grant,
    t: &Transition,
    note: Option<&str>,
) -> NewAudit {
    let kind = match (t.to, t.end_reason) {
        (GrantState::Active, _) => "grant_activated",
        (GrantState::Cancelled, _) => "grant_cancelled",
        (GrantState::Approved, _) => "grant_approved",
        (GrantState::Denied, _) => "grant_denied",
        (GrantState::Ended, _) => "grant_ended",
        _ => "grant_changed",
    };
    NewAudit {
        at: t.at,
        actor: actor.to_owned(),
        kind,
        grant: Some(grant.id),
        ticket: grant.ticket.clone(),
        data: json!({
            "user": grant.user, "role": grant.role, "from": t.from, "to": t.to,
            "reason": t.end_reason, "note": note,
        }),
    }
}
