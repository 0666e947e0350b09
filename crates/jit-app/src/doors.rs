//! The use cases every door calls (the JSON API, the web form, later chat),
//! each taking the one [`Caller`] type: "may this caller do this" is decided
//! here, by jit-domain's rules, before anything is read for them or written.
//! Handlers and pages only translate input and answers.

use jit_domain::{
    Caller, EndReason, ExtensionForm, ExtensionRequest, ExtensionState, Given, Grant, GrantId,
    GrantRequestForm, GrantState, Review, Verdict, validate_drop_reason, validate_extension,
    validate_review_comment,
};
use serde::Serialize;
use serde_json::json;

use crate::app::{App, Requester, job_at};
use crate::error::AppError;
use crate::ports::{GrantFilter, NewAudit};

/// What an extension did: the end moved, or a request now waits for the
/// role's approvers (the end stays until they approve).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Extended {
    Moved {
        grant: Grant,
    },
    Requested {
        grant: Grant,
        extension: ExtensionRequest,
    },
}

impl Extended {
    pub fn grant(&self) -> &Grant {
        match self {
            Self::Moved { grant } | Self::Requested { grant, .. } => grant,
        }
    }
}

/// A request waiting for an approver: a grant's own request, or a request to
/// extend it (`extension` set).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waiting {
    #[serde(flatten)]
    pub grant: Grant,
    pub extension: Option<ExtensionRequest>,
}

impl App {
    /// A grant request through any door. A person asks only for themselves;
    /// `origin` names the door (`api`, `web`).
    pub async fn request_grant_by(
        &self,
        caller: &Caller,
        origin: &'static str,
        form: &GrantRequestForm,
    ) -> Result<Grant, AppError> {
        self.request_limiter
            .check(caller)
            .map_err(AppError::Throttled)?;
        let named = match &form.user {
            Given::Text(user) => Some(user.as_str()),
            _ => None,
        };
        let mut form = form.clone();
        if let Some(user) = caller
            .request_for(named)
            .map_err(|e| AppError::Invalid(vec![e]))?
        {
            form.user = Given::Text(user);
        }
        let requester = Requester {
            actor: caller.actor(),
            groups: caller.groups(),
            origin,
        };
        self.request_grant_as(&requester, &form).await
    }

    /// One grant, if the caller may see it (else not found).
    pub async fn view_grant(&self, caller: &Caller, id: GrantId) -> Result<Grant, AppError> {
        let grant = self.grant(id).await?;
        caller.may_view(&grant, &self.policy, &self.soc_group)?;
        Ok(grant)
    }

    /// What was done with a grant's privilege, as collected so far; for
    /// whoever may see the grant.
    pub async fn view_activity(
        &self,
        caller: &Caller,
        id: GrantId,
    ) -> Result<crate::Activity, AppError> {
        self.view_grant(caller, id).await?;
        self.grant_activity(id).await
    }

    /// Reads a live grant's activity now (one audit query in the report
    /// lane); for whoever may see the grant.
    pub async fn look_at_activity_as(
        &self,
        caller: &Caller,
        id: GrantId,
    ) -> Result<crate::Activity, AppError> {
        self.view_grant(caller, id).await?;
        self.look_at_activity(&caller.actor(), id).await
    }

    /// Grants newest first; a person (not in the SOC) sees only their own.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        mut filter: GrantFilter,
    ) -> Result<Vec<Grant>, AppError> {
        if let Some(me) = caller.lists_only(&self.soc_group) {
            filter.user = Some(me.clone());
        }
        self.grants(&filter).await
    }

    /// Ends a grant early (or cancels one not yet started), saying why.
    pub async fn drop_grant(
        &self,
        caller: &Caller,
        id: GrantId,
        reason: &str,
    ) -> Result<Grant, AppError> {
        let grant = self.grant(id).await?;
        caller.may_change(&grant, &self.policy, &self.soc_group, "drop")?;
        let reason = validate_drop_reason(reason).map_err(|e| AppError::Invalid(vec![e]))?;
        self.end_grant(&caller.actor(), id, EndReason::Dropped, &reason)
            .await
    }

    /// Moves a live grant's end later: `{"until": RFC 3339}` or `{"by":
    /// "30m"}`, within the role's maximum and the change's window (read again
    /// from ServiceNow). For a role whose extensions need approval, a request
    /// is recorded instead and the end stays until the approvers agree.
    pub async fn extend_grant(
        &self,
        caller: &Caller,
        id: GrantId,
        form: &ExtensionForm,
    ) -> Result<Extended, AppError> {
        for _ in 0..3 {
            let grant = self.grant(id).await?;
            caller.may_change(&grant, &self.policy, &self.soc_group, "extend")?;
            let until = validate_extension(form, grant.expires_at).map_err(AppError::Invalid)?;
            let ticket = match &grant.ticket {
                Some(number) => self.tickets.change(number).await?,
                None => None,
            };
            let now = self.now();
            let until = grant
                .extension(&self.policy, ticket.as_ref(), until, now)
                .map_err(AppError::Invalid)?;
            let needs_approval = self
                .policy
                .role(&grant.role)
                .is_some_and(|r| r.extension_needs_approval);
            if needs_approval {
                let request = ExtensionRequest::new(&grant, &caller.actor(), until, now);
                let audit = NewAudit {
                    at: now,
                    actor: caller.actor(),
                    kind: "extension_requested",
                    grant: Some(grant.id),
                    ticket: grant.ticket.clone(),
                    data: json!({
                        "user": grant.user, "role": grant.role, "extension": request.id,
                        "from": grant.expires_at, "until": until, "ticket_snapshot": ticket,
                        "approvers": self.policy.role(&grant.role).map(|r| &r.approvers.users),
                    }),
                };
                self.store.insert_extension(&request, audit).await?;
                return Ok(Extended::Requested {
                    grant,
                    extension: request,
                });
            }
            let audit = NewAudit {
                at: now,
                actor: caller.actor(),
                kind: "grant_extended",
                grant: Some(grant.id),
                ticket: grant.ticket.clone(),
                data: json!({
                    "user": grant.user, "role": grant.role, "from": grant.expires_at,
                    "until": until, "ticket_snapshot": ticket,
                    "emergency": grant.is_emergency(),
                }),
            };
            let jobs = [job_at(&grant, until)];
            if self
                .store
                .extend_grant(id, grant.expires_at, until, &jobs, audit)
                .await?
            {
                return Ok(Extended::Moved {
                    grant: self.grant(id).await?,
                });
            }
        }
        Err(kept_changing(id, "extended"))
    }

    /// The caller answers what waits for approval on grant `id`: its own
    /// request while it is `pending_approval`, else its pending extension.
    /// The same rule either way: never one's own, each approver once, the
    /// role's quorum, nothing after it lapsed.
    pub async fn answer(
        &self,
        caller: &Caller,
        id: GrantId,
        verdict: Verdict,
        comment: &str,
    ) -> Result<Grant, AppError> {
        let (user, groups) = caller.reviewer()?;
        let comment =
            validate_review_comment(verdict, comment).map_err(|e| AppError::Invalid(vec![e]))?;
        let person = crate::Person {
            user: user.clone(),
            groups: groups.clone(),
        };
        let grant = self.grant(id).await?;
        // Whoever may not see the grant learns nothing of it, not even its
        // role or state: the same 404 as reading it.
        caller.may_view(&grant, &self.policy, &self.soc_group)?;
        if grant.state == GrantState::PendingApproval {
            return self.review_grant(&person, id, verdict, &comment).await;
        }
        let Some(request) = self.store.pending_extension(id).await? else {
            // Not pending and nothing to extend: the grant rule says why.
            return self.review_grant(&person, id, verdict, &comment).await;
        };
        self.review_extension(&person, &grant, &request, verdict, &comment)
            .await
    }

    async fn review_extension(
        &self,
        person: &crate::Person,
        grant: &Grant,
        request: &ExtensionRequest,
        verdict: Verdict,
        comment: &str,
    ) -> Result<Grant, AppError> {
        let reviews = self.store.extension_reviews(request.id).await?;
        let now = self.now();
        let outcome = request
            .review(
                grant,
                &self.policy,
                &reviews,
                &person.user,
                &person.groups,
                verdict,
                now,
            )
            .map_err(AppError::Refused)?;
        // The change may have closed or moved since the request: an approval
        // is checked again against a fresh read, as an in-place extension is.
        if outcome.decided == Some(ExtensionState::Approved) {
            let ticket = match &grant.ticket {
                Some(number) => self.tickets.change(number).await?,
                None => None,
            };
            grant
                .extension(&self.policy, ticket.as_ref(), request.until, now)
                .map_err(AppError::Invalid)?;
        }
        let review = Review {
            approver: person.user.clone(),
            verdict,
            comment: comment.to_owned(),
            at: now,
        };
        let kind = match outcome.decided {
            Some(ExtensionState::Approved) => "extension_approved",
            Some(ExtensionState::Denied) => "extension_denied",
            _ => "extension_reviewed",
        };
        let audit = NewAudit {
            at: now,
            actor: person.user.to_string(),
            kind,
            grant: Some(grant.id),
            ticket: grant.ticket.clone(),
            data: json!({
                "user": grant.user, "role": grant.role, "extension": request.id,
                "requested_by": request.requested_by, "from": request.from, "until": request.until,
                "verdict": verdict, "comment": comment, "approvals": outcome.approvals,
                "needed": outcome.needed, "groups": person.groups,
                "emergency": grant.is_emergency(),
            }),
        };
        let jobs = match outcome.decided {
            Some(ExtensionState::Approved) => vec![job_at(grant, request.until)],
            _ => Vec::new(),
        };
        if self
            .store
            .record_extension_review(request, &review, outcome.decided, &jobs, audit)
            .await?
        {
            return self.grant(grant.id).await;
        }
        Err(kept_changing(grant.id, "answered"))
    }

    /// What waits for the caller's answer: requests and extension requests
    /// they may approve (never their own, not answered by them yet).
    pub async fn awaiting_answer_by(&self, caller: &Caller) -> Result<Vec<Waiting>, AppError> {
        let (user, groups) = caller.reviewer()?;
        let person = crate::Person {
            user: user.clone(),
            groups: groups.clone(),
        };
        let mut waiting: Vec<Waiting> = self
            .awaiting_review_by(&person)
            .await?
            .into_iter()
            .map(|grant| Waiting {
                grant,
                extension: None,
            })
            .collect();
        let now = self.now();
        for request in self.store.pending_extensions().await? {
            let Some(grant) = self.store.grant(request.grant).await? else {
                continue;
            };
            let reviews = self.store.extension_reviews(request.id).await?;
            if request
                .review(
                    &grant,
                    &self.policy,
                    &reviews,
                    user,
                    groups,
                    Verdict::Approve,
                    now,
                )
                .is_ok()
            {
                waiting.push(Waiting {
                    grant,
                    extension: Some(request),
                });
            }
        }
        Ok(waiting)
    }

    /// The grant's extension request still waiting for answers, if any.
    pub async fn waiting_extension(
        &self,
        grant: &Grant,
    ) -> Result<Option<ExtensionRequest>, AppError> {
        let now = self.now();
        Ok(self
            .store
            .pending_extension(grant.id)
            .await?
            .filter(|r| r.waiting(&self.policy, grant, now)))
    }

    /// Ends every web session of `user` at once (a stolen laptop): on every
    /// replica, since sessions live in the database. Audited.
    pub async fn end_sessions(
        &self,
        caller: &Caller,
        user: &jit_domain::UserName,
    ) -> Result<u64, AppError> {
        caller.may_end_sessions_of(user, &self.soc_group)?;
        let audit = NewAudit {
            at: self.now(),
            actor: caller.actor(),
            kind: "sessions_ended",
            grant: None,
            ticket: None,
            data: json!({"user": user}),
        };
        let ended = self.store.delete_sessions_of(user.as_str(), audit).await?;
        tracing::info!(actor = %caller.actor(), %user, ended, "sessions ended");
        Ok(ended)
    }
}

/// Others changed the grant each time this caller tried: a race the
/// caller lost, answered 409 (try again), never a server error.
fn kept_changing(id: GrantId, what: &str) -> AppError {
    AppError::Busy(format!(
        "grant {id} was changed by another request while being {what}: read it again and retry"
    ))
}
