//! The change drives the grant: a ServiceNow webhook (and the poll behind it)
//! starts the assignee's grant when a change enters an allowed state and ends
//! every grant tied to it when the change closes, is cancelled, loses its
//! approval or is reassigned. The body of a webhook is never trusted: the
//! change is read again from ServiceNow and the decision made on that read.

use chrono::{DateTime, Utc};
use jit_domain::{
    ChangeTicket, EndReason, Grant, GrantId, Justification, RoleName, TicketId, ValidGrantRequest,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::{App, Requester};
use crate::error::AppError;
use crate::ports::{GrantFilter, NewAudit, StoreError};

/// The actor webhook- and poll-driven actions are audited under.
pub const SERVICENOW_ACTOR: &str = "servicenow";

/// What one look at a change did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChangeOutcome {
    pub ticket: String,
    pub found: bool,
    pub state: Option<String>,
    pub approval: Option<String>,
    pub granted: Vec<GrantId>,
    /// Grants the change already had (a repeated delivery creates nothing).
    pub unchanged: Vec<GrantId>,
    pub ended: Vec<EndedGrant>,
    /// Roles the change names that the policy refused, with the reasons.
    pub refused: Vec<RefusedRole>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndedGrant {
    pub grant: GrantId,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedRole {
    pub role: String,
    pub reasons: Vec<jit_domain::FieldError>,
}

/// What the poll found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PollReport {
    pub tickets_checked: usize,
    pub grants_ended: usize,
    /// Tickets ServiceNow could not be asked about; their grants run on to
    /// their (change-clipped) expiry and are checked again next poll.
    pub unavailable: Vec<String>,
}

/// The answer to one webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAnswer {
    pub body: Value,
    /// The delivery id was seen before: nothing was done again.
    pub replayed: bool,
}

impl App {
    /// A verified webhook delivery about change `number`. A delivery id seen
    /// before is answered with the first answer and changes nothing.
    pub async fn handle_change_webhook(
        &self,
        delivery_id: &str,
        number: &TicketId,
    ) -> Result<WebhookAnswer, AppError> {
        if let Some(seen) = self.store.seen_delivery(delivery_id).await? {
            return Ok(WebhookAnswer {
                body: seen.answer,
                replayed: true,
            });
        }
        let outcome = self.on_change(number).await?;
        let body = json!({"delivery": delivery_id, "outcome": outcome});
        let now = self.now();
        if !self
            .store
            .record_delivery(delivery_id, now, Some(number), &body)
            .await?
        {
            // A concurrent copy of the same delivery finished first; the work
            // itself is idempotent, the first answer stands.
            if let Some(seen) = self.store.seen_delivery(delivery_id).await? {
                return Ok(WebhookAnswer {
                    body: seen.answer,
                    replayed: true,
                });
            }
        }
        self.store
            .append_audit(NewAudit {
                at: now,
                actor: SERVICENOW_ACTOR.into(),
                kind: "change_webhook",
                grant: None,
                ticket: Some(number.clone()),
                data: body.clone(),
            })
            .await?;
        Ok(WebhookAnswer {
            body,
            replayed: false,
        })
    }

    /// Reads the change now and brings its grants in line with it.
    pub async fn on_change(&self, number: &TicketId) -> Result<ChangeOutcome, AppError> {
        let ticket = self.tickets.change(number).await?;
        let now = self.now();
        let mut outcome = ChangeOutcome {
            ticket: number.to_string(),
            found: ticket.is_some(),
            state: ticket.as_ref().map(|t| {
                t.state
                    .map_or_else(|| t.state_code.clone(), |s| s.to_string())
            }),
            approval: ticket.as_ref().map(|t| t.approval.clone()),
            ..ChangeOutcome::default()
        };
        let live = GrantFilter {
            live: true,
            ..GrantFilter::default()
        };
        for g in self.grants_citing(number, live).await? {
            if let Some(why) = g.ended_by_change(&self.policy, ticket.as_ref(), now)
                && let Some(ended) = self.end_for_ticket(&g, &why).await?
            {
                outcome.ended.push(ended);
            }
        }
        let Some(ticket) = ticket else {
            return Ok(outcome);
        };
        if ticket.is_finished() {
            return Ok(outcome);
        }
        let Some(user) = ticket.assigned_to.as_ref().and_then(|p| p.directory_user()) else {
            outcome
                .notes
                .push("the change has no assignee with an e-mail address; nothing to grant".into());
            return Ok(outcome);
        };
        if ticket.roles.is_empty() {
            outcome
                .notes
                .push("the change names no role to elevate to; nothing to grant".into());
        }
        // What the webhook made under this change before, live or not.
        let made_here = self
            .grants_citing(
                number,
                GrantFilter {
                    origin: Some("servicenow".into()),
                    ..GrantFilter::default()
                },
            )
            .await?;
        for raw_role in &ticket.roles {
            let Ok(role) = RoleName::parse(raw_role) else {
                outcome
                    .notes
                    .push(format!("`{raw_role}` is not a role name"));
                continue;
            };
            // The webhook grants once per change, user and role: a grant that
            // was dropped or has expired is not brought back by the next
            // update of the same change.
            if let Some(g) = made_here.iter().find(|g| g.user == user && g.role == role) {
                outcome.unchanged.push(g.id);
                continue;
            }
            match self.grant_for_change(&ticket, &user, &role, now).await {
                Ok(g) => outcome.granted.push(g.id),
                Err(AppError::Denied(d)) => outcome.refused.push(RefusedRole {
                    role: role.to_string(),
                    reasons: d.denials(),
                }),
                Err(AppError::Invalid(errors)) => outcome.refused.push(RefusedRole {
                    role: role.to_string(),
                    reasons: errors,
                }),
                Err(AppError::Store(StoreError::Duplicate(what))) => {
                    outcome.notes.push(format!("already granted: {what}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// The assignee's grant for the change window: the role's maximum,
    /// clipped to the change's planned end by the decision.
    async fn grant_for_change(
        &self,
        ticket: &ChangeTicket,
        user: &jit_domain::UserName,
        role: &RoleName,
        now: DateTime<Utc>,
    ) -> Result<Grant, AppError> {
        let rp = jit_domain::privileged_role(&self.policy, role)
            .map_err(|refusal| AppError::Invalid(vec![refusal]))?;
        let state = ticket.state.map_or("its current state", |s| s.as_str());
        let justification = Justification::parse(&format!(
            "ServiceNow change {} is {state} and approved ({})",
            ticket.number, ticket.approval
        ))
        .map_err(|e| {
            AppError::Invalid(vec![jit_domain::FieldError::new(
                "justification",
                e.rule,
                e.message,
            )])
        })?;
        let valid = ValidGrantRequest {
            user: user.clone(),
            role: role.clone(),
            ticket: Some(ticket.number.clone()),
            justification,
            starts_at: now,
            expires_at: now + rp.max_duration,
        };
        let requester = Requester {
            actor: SERVICENOW_ACTOR.into(),
            groups: Default::default(),
            origin: "servicenow",
        };
        self.decide_and_record(&requester, valid, Some(Some(ticket.clone())), now)
            .await
    }

    /// Ends (or cancels, if not started) one grant because of its change.
    async fn end_for_ticket(&self, g: &Grant, why: &str) -> Result<Option<EndedGrant>, AppError> {
        match self
            .end_grant(SERVICENOW_ACTOR, g.id, EndReason::TicketClosed, why)
            .await
        {
            Ok(_) => Ok(Some(EndedGrant {
                grant: g.id,
                reason: why.to_owned(),
            })),
            // Ended meanwhile (expired, dropped): nothing left to do.
            Err(AppError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The grants citing a change that `filter` keeps (its ticket and page
    /// set here). Never every grant ever made under it: a change cited by
    /// thousands of ended grants must not be read whole on each poll.
    async fn grants_citing(
        &self,
        number: &TicketId,
        filter: GrantFilter,
    ) -> Result<Vec<Grant>, AppError> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .store
                .grants(&GrantFilter {
                    ticket: Some(number.clone()),
                    before,
                    limit: 500,
                    ..filter.clone()
                })
                .await?;
            let done = page.len() < 500;
            before = page.last().map(|g| g.id);
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Re-reads the change of every live grant, so that a lost webhook still
    /// ends its grants within one poll interval.
    pub async fn recheck_tickets(&self) -> Result<PollReport, AppError> {
        let mut report = PollReport::default();
        for number in self.store.tickets_of_live_grants().await? {
            report.tickets_checked += 1;
            let ticket = match self.tickets.change(&number).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(ticket = %number, error = %e, "poll: cannot read change");
                    report.unavailable.push(number.to_string());
                    continue;
                }
            };
            let now = self.now();
            let live = GrantFilter {
                live: true,
                ..GrantFilter::default()
            };
            for g in self.grants_citing(&number, live).await? {
                if let Some(why) = g.ended_by_change(&self.policy, ticket.as_ref(), now)
                    && self
                        .end_for_ticket(&g, &format!("{why} (found by poll)"))
                        .await?
                        .is_some()
                {
                    report.grants_ended += 1;
                }
            }
        }
        Ok(report)
    }
}

impl App {
    /// Forgets webhook deliveries older than `keep`: the replay guard needs
    /// a delivery only while its signed timestamp is still accepted
    /// (ServiceNow's `webhook_max_skew_secs`, Slack's five minutes).
    pub async fn purge_deliveries(&self, keep: chrono::TimeDelta) -> Result<u64, AppError> {
        let purged = self.store.purge_deliveries(self.now() - keep).await?;
        if purged > 0 {
            tracing::debug!(
                purged,
                "webhook deliveries past the replay window forgotten"
            );
        }
        Ok(purged)
    }
}
