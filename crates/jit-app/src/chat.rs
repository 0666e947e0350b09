//! Chat (Slack) as one more door: a chat account is a person by its
//! verified email, with the groups their last sign-in through the identity
//! provider vouched for (chat does not know the IdP's groups), and every
//! click goes through the same use cases as the web form and the API. The
//! warning before a grant ends is recorded here, once per grant, for the
//! chat feed to deliver.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use jit_domain::{Caller, ExtensionForm, Given, GrantId, GrantState, UserName, Verdict};
use serde_json::json;

use crate::app::{App, SYSTEM_ACTOR};
use crate::doors::Extended;
use crate::error::AppError;
use crate::ports::{GrantFilter, NewAudit};

/// The audit event of the warning before a grant ends.
pub const EXPIRY_NUDGE: &str = "expiry_nudge";

/// How far a chat "Extend" moves a grant's end (within the role's limits).
pub const CHAT_EXTENSION: &str = "30m";

impl App {
    /// Remembers the groups the identity provider named when `user` signed
    /// in, for as long as that sign-in's absolute timeout lasts.
    pub async fn remember_sign_in(
        &self,
        user: &UserName,
        groups: &BTreeSet<String>,
        absolute_timeout: TimeDelta,
    ) -> Result<(), AppError> {
        let now = self.now();
        self.store
            .record_sign_in(user.as_str(), groups, now, now + absolute_timeout)
            .await?;
        Ok(())
    }

    /// The person behind a chat account whose verified email is `email`:
    /// their groups are those of their last sign-in if it is within its
    /// absolute timeout, none otherwise (then only `approver_users` count).
    pub async fn chat_person(&self, email: &str) -> Result<Caller, AppError> {
        let user = UserName::parse(email).map_err(|e| {
            AppError::NotFound(format!(
                "the chat account's email `{email}` is not a user name here: {}",
                e.message
            ))
        })?;
        let groups = self
            .store
            .signed_in_groups(user.as_str(), self.now())
            .await?
            .unwrap_or_default();
        Ok(Caller::Person { user, groups })
    }

    /// Approve or deny from chat: [`App::answer`] as that person.
    pub async fn answer_from_chat(
        &self,
        email: &str,
        id: GrantId,
        verdict: Verdict,
        comment: &str,
    ) -> Result<jit_domain::Grant, AppError> {
        let caller = self.chat_person(email).await?;
        self.answer(&caller, id, verdict, comment).await
    }

    /// "Extend" from chat: [`App::extend_grant`] by [`CHAT_EXTENSION`]; a
    /// role whose extensions need approval gets an extension request.
    pub async fn extend_from_chat(&self, email: &str, id: GrantId) -> Result<Extended, AppError> {
        let caller = self.chat_person(email).await?;
        let form = ExtensionForm {
            by: Given::text_or_absent(CHAT_EXTENSION),
            ..ExtensionForm::default()
        };
        self.extend_grant(&caller, id, &form).await
    }

    /// "Drop now" from chat: [`App::drop_grant`] as that person.
    pub async fn drop_from_chat(
        &self,
        email: &str,
        id: GrantId,
    ) -> Result<jit_domain::Grant, AppError> {
        let caller = self.chat_person(email).await?;
        self.drop_grant(&caller, id, "dropped from Slack").await
    }

    /// Records the warning before each active grant ends (once per grant,
    /// within its role's `expiry_nudge`); how many were recorded.
    pub async fn nudge_expiring(&self) -> Result<u32, AppError> {
        let now = self.now();
        let active = self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::Active),
                limit: 1000,
                ..GrantFilter::default()
            })
            .await?;
        let mut nudged = 0;
        for grant in active {
            let Some(role) = self.policy.role(&grant.role) else {
                continue;
            };
            if !grant.nudge_due(role.expiry_nudge, now) {
                continue;
            }
            let audit = NewAudit {
                at: now,
                actor: SYSTEM_ACTOR.into(),
                kind: EXPIRY_NUDGE,
                grant: Some(grant.id),
                ticket: grant.ticket.clone(),
                data: json!({
                    "user": grant.user, "role": grant.role, "expires_at": grant.expires_at,
                    "minutes_left": (grant.expires_at - now).num_minutes(),
                }),
            };
            if self.store.mark_nudged(grant.id, audit).await? {
                nudged += 1;
            }
        }
        Ok(nudged)
    }
}
