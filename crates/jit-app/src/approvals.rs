//! What a person does to a grant after asking: approve or deny someone
//! else's request (the rule is jit-domain's `Grant::review`). The doors call
//! these through `doors`, which decides who may.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use jit_domain::{
    ChangeTicket, Grant, GrantId, GrantState, Review, RolePolicy, UserName, Verdict,
    ticket_ends_grant, validate_review_comment,
};
use serde_json::{Value, json};

use crate::app::{App, transition_audit, window_jobs};
use crate::error::AppError;
use crate::ports::{GrantFilter, NewAudit, StoreError};

/// A person acting through a login (the web form, or the identity
/// provider's token on the API): the directory user name the login maps to,
/// and the groups the identity provider vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub user: UserName,
    pub groups: BTreeSet<String>,
}

impl App {
    /// The roles `person` may request, in the policy's order.
    pub fn eligible_roles(&self, person: &Person) -> Vec<&RolePolicy> {
        self.policy
            .roles()
            .filter(|r| r.privileged && r.eligible.admits(&person.user, &person.groups))
            .collect()
    }

    /// The person's approved changes that would pass for at least one role
    /// they may request, right now (the request form's pick-list): read live
    /// from ServiceNow, judged by the same rule that ends grants.
    pub async fn candidate_changes(&self, person: &Person) -> Result<Vec<ChangeTicket>, AppError> {
        let now = self.now();
        let roles = self.eligible_roles(person);
        let changes = self.tickets.changes_assigned_to(&person.user, 50).await?;
        Ok(changes
            .into_iter()
            .filter(|c| c.start_date.is_none_or(|start| start <= now))
            .filter(|c| {
                roles.iter().any(|r| {
                    ticket_ends_grant(
                        &self.policy,
                        (&c.number, &person.user, &r.name),
                        Some(c),
                        now,
                    )
                    .is_none()
                })
            })
            .collect())
    }

    /// Every answer recorded on a grant.
    pub async fn reviews(&self, id: GrantId) -> Result<Vec<Review>, AppError> {
        Ok(self.store.reviews(id).await?)
    }

    /// Requests waiting for `person`'s answer: pending, not their own, one
    /// they may approve, and not answered by them yet.
    pub async fn awaiting_review_by(&self, person: &Person) -> Result<Vec<Grant>, AppError> {
        let pending = self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::PendingApproval),
                limit: 1000,
                ..GrantFilter::default()
            })
            .await?;
        let now = self.now();
        let mut waiting = Vec::new();
        for grant in pending {
            let reviews = self.store.reviews(grant.id).await?;
            // A dry run of the rule: would this person's approval be taken?
            if grant
                .review(
                    &self.policy,
                    &reviews,
                    &person.user,
                    &person.groups,
                    Verdict::Approve,
                    now,
                )
                .is_ok()
            {
                waiting.push(grant);
            }
        }
        Ok(waiting)
    }

    /// `person` approves or denies grant `id`. The answer, the transition it
    /// causes (approved once enough distinct approvers agreed, denied at the
    /// first denial), the start and expiry jobs and the audit event are
    /// written together.
    pub async fn review_grant(
        &self,
        person: &Person,
        id: GrantId,
        verdict: Verdict,
        comment: &str,
    ) -> Result<Grant, AppError> {
        let comment =
            validate_review_comment(verdict, comment).map_err(|e| AppError::Invalid(vec![e]))?;
        for _ in 0..3 {
            let grant = self.grant(id).await?;
            let reviews = self.store.reviews(id).await?;
            let now = self.now();
            let outcome = grant
                .review(
                    &self.policy,
                    &reviews,
                    &person.user,
                    &person.groups,
                    verdict,
                    now,
                )
                .map_err(AppError::Refused)?;
            let review = Review {
                approver: person.user.clone(),
                verdict,
                comment: comment.clone(),
                at: now,
            };
            let jobs = match outcome.transition.as_ref().map(|t| t.to) {
                Some(GrantState::Approved) => window_jobs(&grant),
                _ => Vec::new(),
            };
            let mut audit = match &outcome.transition {
                Some(t) => transition_audit(person.user.as_str(), &grant, t, Some(&comment)),
                None => NewAudit {
                    at: now,
                    actor: person.user.to_string(),
                    kind: "grant_reviewed",
                    grant: Some(grant.id),
                    ticket: grant.ticket.clone(),
                    data: json!({"user": grant.user, "role": grant.role}),
                },
            };
            if let Value::Object(data) = &mut audit.data {
                data.insert("verdict".into(), json!(verdict));
                data.insert("comment".into(), json!(comment));
                data.insert("approvals".into(), json!(outcome.approvals));
                data.insert("needed".into(), json!(outcome.needed));
                data.insert("groups".into(), json!(person.groups));
            }
            if self
                .store
                .record_review(id, &review, outcome.transition.as_ref(), &jobs, audit)
                .await?
            {
                return self.grant(id).await;
            }
        }
        Err(AppError::Store(StoreError::Database(format!(
            "grant {id} kept changing while being reviewed"
        ))))
    }

    /// The longest end `grant` could be extended to now (for a form's hint).
    pub fn extension_limit(&self, grant: &Grant) -> DateTime<Utc> {
        jit_domain::longest_extension(grant, &self.policy, grant.ticket_snapshot.as_ref())
    }
}
