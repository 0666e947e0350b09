//! Approving, denying and extending a grant, and letting an unanswered
//! request lapse: who may, and what it changes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::grant::{Grant, Transition};
use crate::lifecycle::GrantState;
use crate::names::UserName;
use crate::policy::{Policy, format_duration};
use crate::request::{FieldError, Given};
use crate::ticket::ChangeTicket;

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

snake_names!(Verdict {
    Approve => "approve",
    Deny => "deny",
});

/// One approver's recorded answer on one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    pub approver: UserName,
    pub verdict: Verdict,
    pub comment: String,
    pub at: DateTime<Utc>,
}

/// Why a review is refused; `rule` is the stable name an API caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReviewRefusal {
    pub rule: &'static str,
    pub message: String,
}

impl ReviewRefusal {
    fn new(rule: &'static str, message: String) -> Self {
        Self { rule, message }
    }

    /// Refusals about who asks (403) rather than about the grant's state (409).
    pub fn is_forbidden(&self) -> bool {
        matches!(self.rule, "self_approval" | "not_an_approver")
    }
}

/// What a review does to the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewOutcome {
    /// Approvals so far, this one included.
    pub approvals: usize,
    pub needed: usize,
    /// `approved` when the last approval needed arrived, `denied` on a
    /// denial; `None` while more approvals are needed.
    pub transition: Option<Transition>,
}

impl Grant {
    /// When a request nobody answered lapses: `approval_timeout` after it was
    /// made, and never after the window it asked for.
    pub fn lapses_at(&self, policy: &Policy) -> DateTime<Utc> {
        (self.created_at + policy.approval_timeout).min(self.expires_at)
    }

    /// `approver` (with the groups the login vouches for) answers this grant,
    /// given the `reviews` already recorded on it.
    pub fn review(
        &self,
        policy: &Policy,
        reviews: &[Review],
        approver: &UserName,
        groups: &BTreeSet<String>,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> Result<ReviewOutcome, ReviewRefusal> {
        if self.state != GrantState::PendingApproval {
            return Err(ReviewRefusal::new(
                "not_pending",
                format!("the grant is {}, not waiting for approval", self.state),
            ));
        }
        let quorum = judge_answer(
            policy,
            Asked {
                grant: self,
                requested_by: &self.requested_by,
                lapses_at: self.lapses_at(policy),
            },
            reviews,
            approver,
            groups,
            verdict,
            now,
        )?;
        Ok(ReviewOutcome {
            approvals: quorum.approvals,
            needed: quorum.needed,
            transition: quorum.decided.map(|verdict| Transition {
                from: self.state,
                to: match verdict {
                    Verdict::Approve => GrantState::Approved,
                    Verdict::Deny => GrantState::Denied,
                },
                end_reason: None,
                at: now,
            }),
        })
    }

    /// The transition that ends a request nobody answered in time.
    pub fn lapse(&self, policy: &Policy, now: DateTime<Utc>) -> Option<Transition> {
        (self.state == GrantState::PendingApproval && now >= self.lapses_at(policy)).then_some(
            Transition {
                from: self.state,
                to: GrantState::Cancelled,
                end_reason: None,
                at: now,
            },
        )
    }

    /// Checks a new end for this grant: later than the current one, within
    /// the role's maximum from the start, inside the change's window, and only
    /// while the change still permits the grant. `ticket` is a fresh read.
    /// Whether the end then moves at once or waits for approvals is
    /// [`RolePolicy::extension_needs_approval`](crate::RolePolicy).
    pub fn extension(
        &self,
        policy: &Policy,
        ticket: Option<&ChangeTicket>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !self.is_live(now) {
            errors.push(FieldError::new(
                "state",
                "extendable",
                format!("a grant that is {} cannot be extended", self.state),
            ));
            return Err(errors);
        }
        if until <= self.expires_at {
            errors.push(FieldError::new(
                "until",
                "later",
                format!("must be later than the current end, {}", self.expires_at),
            ));
        }
        if let Some(rp) = policy.role(&self.role)
            && until - self.starts_at > rp.max_duration
        {
            let mut e = FieldError::new(
                "until",
                "max_duration",
                format!(
                    "the grant would last {}, more than the maximum of {} for `{}`",
                    format_duration(until - self.starts_at),
                    format_duration(rp.max_duration),
                    self.role
                ),
            );
            e.policy = Some(format!("roles.\"{}\".max_duration", self.role));
            errors.push(e);
        }
        if let Some((cap, most)) = self.emergency_cap(policy, ticket)
            && until > cap
        {
            let mut e = FieldError::new(
                "until",
                "emergency_max_duration",
                format!(
                    "an emergency grant lasts at most {} in all while its change is not approved (until {cap})",
                    format_duration(most)
                ),
            );
            e.policy = Some(format!("roles.\"{}\".emergency.max_duration", self.role));
            errors.push(e);
        }
        if self.ticket.is_some() {
            if let Some(why) = self.ended_by_change(policy, ticket, now) {
                errors.push(FieldError::new("ticket", "change_permits", why));
            } else if let Some(end) = ticket.and_then(|t| t.end_date)
                && until > end
            {
                errors.push(FieldError::new(
                    "until",
                    "change_window",
                    format!("the change's window closes at {end}"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(until)
        } else {
            Err(errors)
        }
    }
}

impl Grant {
    /// Whether this grant was made under its role's emergency rule.
    pub fn is_emergency(&self) -> bool {
        self.decision.as_ref().is_some_and(|d| d.emergency)
    }

    /// The latest end an emergency grant may have while its change (`ticket`,
    /// a fresh read) is still not approved: its start plus the emergency
    /// cap, first grant and extensions together. `None` once the change is
    /// approved (the role's normal rules apply) or for any other grant.
    pub fn emergency_cap(
        &self,
        policy: &Policy,
        ticket: Option<&ChangeTicket>,
    ) -> Option<(DateTime<Utc>, TimeDelta)> {
        if !self.is_emergency() || ticket.is_some_and(ChangeTicket::is_approved) {
            return None;
        }
        // A role whose emergency rule was removed since has no cap to give:
        // the grant may then not outlast the end it has.
        let cap = match policy.role(&self.role).and_then(|r| r.emergency.as_ref()) {
            Some(rule) => rule.max_duration,
            None => self.expires_at - self.starts_at,
        };
        Some((self.starts_at + cap, cap))
    }
}

/// When a pair's grants next change by time alone (a start, an end, a
/// request lapsing), and whether that change can take the role away: the
/// pair's one job is due then, removals first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    pub at: DateTime<Utc>,
    pub removal: bool,
}

/// The next [`Wake`] of one pair, from its grants that are not over.
pub fn next_wake(policy: &Policy, grants: &[Grant]) -> Option<Wake> {
    grants
        .iter()
        .flat_map(|g| {
            let (start, end) = match g.state {
                GrantState::PendingApproval => (None, Some(g.lapses_at(policy))),
                GrantState::Approved => (Some(g.starts_at), Some(g.expires_at)),
                GrantState::Active => (None, Some(g.expires_at)),
                _ => (None, None),
            };
            [
                start.map(|at| Wake { at, removal: false }),
                end.map(|at| Wake { at, removal: true }),
            ]
        })
        .flatten()
        .min_by_key(|w| (w.at, !w.removal))
}

/// What an approver is asked to answer: a grant's request, or a request
/// to extend it.
struct Asked<'a> {
    grant: &'a Grant,
    /// Who asked (never the one who answers).
    requested_by: &'a str,
    /// No answer counts from then on.
    lapses_at: DateTime<Utc>,
}

/// Approvals counted so far and whether this answer decides.
struct Quorum {
    approvals: usize,
    needed: usize,
    /// `Approve` when the last approval needed arrived, `Deny` on a denial.
    decided: Option<Verdict>,
}

/// The one rule for every answer, to a request or to an extension: not
/// lapsed, never the grant's user or whoever asked, only an approver of the
/// role, each approver once; N distinct approvals approve, one denial ends.
#[allow(clippy::too_many_arguments)]
fn judge_answer(
    policy: &Policy,
    asked: Asked<'_>,
    reviews: &[Review],
    approver: &UserName,
    groups: &BTreeSet<String>,
    verdict: Verdict,
    now: DateTime<Utc>,
) -> Result<Quorum, ReviewRefusal> {
    let grant = asked.grant;
    if now >= asked.lapses_at {
        return Err(ReviewRefusal::new(
            "lapsed",
            "the request waited too long for approval and has lapsed".into(),
        ));
    }
    if approver == &grant.user || approver.is(asked.requested_by) {
        return Err(ReviewRefusal::new(
            "self_approval",
            "nobody approves their own request".into(),
        ));
    }
    let rp = policy.role(&grant.role);
    if !rp.is_some_and(|rp| rp.approvers.admits(approver, groups)) {
        return Err(ReviewRefusal::new(
            "not_an_approver",
            format!(
                "`{approver}` is not an approver of `{}` (policy roles.\"{}\".approver_users / approver_groups)",
                grant.role, grant.role
            ),
        ));
    }
    if reviews.iter().any(|r| &r.approver == approver) {
        return Err(ReviewRefusal::new(
            "already_reviewed",
            format!("`{approver}` has already answered this request"),
        ));
    }
    let needed = rp.map_or(1, |rp| usize::from(rp.approvals.max(1)));
    let approvals = reviews
        .iter()
        .filter(|r| r.verdict == Verdict::Approve)
        .count()
        + usize::from(verdict == Verdict::Approve);
    let decided = match verdict {
        Verdict::Deny => Some(Verdict::Deny),
        Verdict::Approve if approvals >= needed => Some(Verdict::Approve),
        Verdict::Approve => None,
    };
    Ok(Quorum {
        approvals,
        needed,
        decided,
    })
}

/// Where a request to extend a grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionState {
    Pending,
    Approved,
    Denied,
}

snake_names!(ExtensionState {
    Pending => "pending",
    Approved => "approved",
    Denied => "denied",
});

/// A request to move a live grant's end past what its approvers approved.
/// The grant keeps its end until the request is approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionRequest {
    pub id: uuid::Uuid,
    pub grant: crate::grant::GrantId,
    pub requested_by: String,
    /// The grant's end when it was asked (the end that moves on approval).
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub state: ExtensionState,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// What an answer does to an extension request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOutcome {
    pub approvals: usize,
    pub needed: usize,
    /// `Approved` or `Denied` when this answer decides; `None` while more
    /// approvals are needed.
    pub decided: Option<ExtensionState>,
}

impl ExtensionRequest {
    /// A new pending request to move `grant`'s end to `until`.
    pub fn new(
        grant: &Grant,
        requested_by: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            grant: grant.id,
            requested_by: requested_by.to_owned(),
            from: grant.expires_at,
            until,
            state: ExtensionState::Pending,
            created_at: now,
            decided_at: None,
        }
    }

    /// Like a request, it lapses after `approval_timeout`, and never outlives
    /// the grant's current end (after it, there is nothing to extend).
    pub fn lapses_at(&self, policy: &Policy, grant: &Grant) -> DateTime<Utc> {
        (self.created_at + policy.approval_timeout).min(grant.expires_at)
    }

    /// Still waiting for answers at `now`.
    pub fn waiting(&self, policy: &Policy, grant: &Grant, now: DateTime<Utc>) -> bool {
        self.state == ExtensionState::Pending
            && grant.is_live(now)
            && grant.expires_at == self.from
            && now < self.lapses_at(policy, grant)
    }

    /// `approver` answers this request on `grant`, given the `reviews`
    /// already recorded on it: the same rule as a grant's request.
    #[allow(clippy::too_many_arguments)]
    pub fn review(
        &self,
        grant: &Grant,
        policy: &Policy,
        reviews: &[Review],
        approver: &UserName,
        groups: &BTreeSet<String>,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> Result<ExtensionOutcome, ReviewRefusal> {
        if self.state != ExtensionState::Pending
            || !grant.is_live(now)
            || grant.expires_at != self.from
        {
            return Err(ReviewRefusal::new(
                "not_pending",
                format!(
                    "the extension request is {}, not waiting for approval",
                    self.state
                ),
            ));
        }
        let quorum = judge_answer(
            policy,
            Asked {
                grant,
                requested_by: &self.requested_by,
                lapses_at: self.lapses_at(policy, grant),
            },
            reviews,
            approver,
            groups,
            verdict,
            now,
        )?;
        Ok(ExtensionOutcome {
            approvals: quorum.approvals,
            needed: quorum.needed,
            decided: quorum.decided.map(|v| match v {
                Verdict::Approve => ExtensionState::Approved,
                Verdict::Deny => ExtensionState::Denied,
            }),
        })
    }
}

/// The longest comment an approver may leave.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// An approver's comment: optional when approving, required when denying
/// (the requester is owed a reason).
pub fn validate_review_comment(verdict: Verdict, raw: &str) -> Result<String, FieldError> {
    let comment = raw.trim();
    if verdict == Verdict::Deny && comment.is_empty() {
        return Err(FieldError::new(
            "comment",
            "required",
            "a denial must say why",
        ));
    }
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(FieldError::new(
            "comment",
            "max_length",
            format!("must be at most {MAX_COMMENT_CHARS} characters"),
        ));
    }
    if comment
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldError::new(
            "comment",
            "charset",
            "must not contain control characters",
        ));
    }
    Ok(comment.to_owned())
}

/// An extension as a door received it: exactly one of `until` (RFC 3339)
/// or `by` (a duration added to the current end, like "30m").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ExtensionForm {
    pub until: Given,
    pub by: Given,
    /// Keys that are not fields of an extension (refused by name).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

/// The new end an extension asks for.
pub fn validate_extension(
    form: &ExtensionForm,
    current_end: DateTime<Utc>,
) -> Result<DateTime<Utc>, Vec<FieldError>> {
    if let Some(extra) = form.unknown.keys().next() {
        return Err(vec![FieldError::new(
            extra,
            "unknown_field",
            "only `until` or `by` is accepted",
        )]);
    }
    match (&form.until, &form.by) {
        (until, Given::Absent) if !until.is_absent() => match until {
            Given::Text(u) => DateTime::parse_from_rfc3339(u).ok(),
            _ => None,
        }
        .map(|u| u.with_timezone(&Utc))
        .ok_or_else(|| {
            vec![FieldError::new(
                "until",
                "format",
                "must be an RFC 3339 time, e.g. 2026-11-26T14:30:00Z",
            )]
        }),
        (Given::Absent, by) if !by.is_absent() => match by {
            Given::Text(b) => Ok(b.as_str()),
            _ => Err("must be a string like \"30m\"".to_owned()),
        }
        .and_then(crate::policy::parse_duration)
        .and_then(|d| {
            if d > TimeDelta::zero() {
                Ok(current_end + d)
            } else {
                Err("must be more than 0".to_owned())
            }
        })
        .map_err(|m| vec![FieldError::new("by", "duration", m)]),
        _ => Err(vec![FieldError::new(
            "until",
            "one_of",
            "give exactly one of `until` (a time) or `by` (a duration like \"30m\")",
        )]),
    }
}

/// The latest end an extension could reach (the role's maximum from the
/// start, the change's end), for a form's hint and whether to offer one.
pub fn longest_extension(
    grant: &Grant,
    policy: &Policy,
    ticket: Option<&ChangeTicket>,
) -> DateTime<Utc> {
    let by_role = policy
        .role(&grant.role)
        .map_or(grant.expires_at, |rp| grant.starts_at + rp.max_duration);
    let by_change = ticket.and_then(|t| t.end_date).unwrap_or(by_role);
    let by_emergency = grant
        .emergency_cap(policy, ticket)
        .map_or(by_role, |(cap, _)| cap);
    by_role
        .min(by_change)
        .min(by_emergency)
        .max(grant.expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::tests::grant;
    use crate::names::RoleName;

    const POLICY: &str = r#"
version = 1
approval_timeout = "2h"

[roles."Recording Admin"]
default_duration = "30m"
max_duration = "2h"
eligible_users = ["eng@example.com"]
approvals = 2
approver_groups = ["cx-quality-leads"]
approver_users = ["boss@example.com"]
"#;

    fn policy() -> Policy {
        Policy::from_toml("p.toml", POLICY).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn pending() -> Grant {
        let mut g = grant(GrantState::PendingApproval, 0, 3600);
        g.role = RoleName::parse("Recording Admin").unwrap();
        g.created_at = t(0);
        g.requested_by = "eng@example.com".into();
        g
    }

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn leads() -> BTreeSet<String> {
        BTreeSet::from(["cx-quality-leads".to_owned()])
    }

    fn approved_by(name: &str) -> Review {
        Review {
            approver: user(name),
            verdict: Verdict::Approve,
            comment: String::new(),
            at: t(10),
        }
    }

    /// A refusal table row: the rule, the grant, its reviews, who answers
    /// with which groups, and when.
    type Case<'a> = (
        &'a str,
        Grant,
        Vec<Review>,
        &'a str,
        &'a BTreeSet<String>,
        i64,
    );

    #[test]
    fn refusals_name_their_rule() {
        let p = policy();
        let g = pending();
        let none = BTreeSet::new();
        let leads = leads();
        let cases: Vec<Case> = vec![
            (
                "self_approval",
                g.clone(),
                vec![],
                "eng@example.com",
                &none,
                10,
            ),
            (
                "not_an_approver",
                g.clone(),
                vec![],
                "mallory@example.com",
                &none,
                10,
            ),
            (
                "already_reviewed",
                g.clone(),
                vec![approved_by("lead@example.com")],
                "lead@example.com",
                &leads,
                10,
            ),
            ("lapsed", g.clone(), vec![], "boss@example.com", &none, 3600),
            (
                "not_pending",
                grant(GrantState::Active, 0, 3600),
                vec![],
                "boss@example.com",
                &none,
                10,
            ),
        ];
        for (rule, g, reviews, who, groups, now) in cases {
            let refusal = g
                .review(&p, &reviews, &user(who), groups, Verdict::Approve, t(now))
                .unwrap_err();
            assert_eq!(refusal.rule, rule, "{}", refusal.message);
        }
        // An approver listed by name counts once, also when denying.
        let twice = g.review(
            &p,
            &[approved_by("boss@example.com")],
            &user("boss@example.com"),
            &none,
            Verdict::Deny,
            t(20),
        );
        assert_eq!(twice.unwrap_err().rule, "already_reviewed");
    }

    /// A name's case is no second person: a token for `ENG@…` does not
    /// approve eng's own request, nor `BOSS@…` count again after boss, nor
    /// a request made by `Eng@…` (as recorded) count as someone else's.
    #[test]
    fn every_answer_rule_holds_under_case_variants() {
        let p = policy();
        let g = pending();
        let none = BTreeSet::new();
        let answer = |reviews: &[Review], who: &str| {
            g.review(&p, reviews, &user(who), &none, Verdict::Approve, t(10))
                .map(|o| o.approvals)
                .map_err(|r| r.rule)
        };
        assert_eq!(answer(&[], "ENG@Example.com"), Err("self_approval"));
        assert_eq!(
            answer(&[approved_by("boss@example.com")], "BOSS@example.com"),
            Err("already_reviewed")
        );
        let mut asked_by_capitals = g.clone();
        asked_by_capitals.requested_by = "Boss@Example.com".into();
        assert_eq!(
            asked_by_capitals
                .review(
                    &p,
                    &[],
                    &user("boss@example.com"),
                    &none,
                    Verdict::Approve,
                    t(10)
                )
                .unwrap_err()
                .rule,
            "self_approval"
        );
        // The policy's lists are canonical too.
        let listed = Policy::from_toml(
            "p.toml",
            &POLICY.replace("boss@example.com", "BOSS@Example.com"),
        )
        .unwrap();
        assert_eq!(
            g.review(
                &listed,
                &[],
                &user("boss@example.com"),
                &none,
                Verdict::Approve,
                t(10)
            )
            .map(|o| o.approvals),
            Ok(1)
        );
    }

    #[test]
    fn n_distinct_approvals_approve_and_one_denial_ends_it() {
        let p = policy();
        let g = pending();
        let first = g
            .review(
                &p,
                &[],
                &user("lead@example.com"),
                &leads(),
                Verdict::Approve,
                t(10),
            )
            .unwrap();
        assert_eq!(
            (first.approvals, first.needed, first.transition),
            (1, 2, None)
        );
        let second = g
            .review(
                &p,
                &[approved_by("lead@example.com")],
                &user("boss@example.com"),
                &BTreeSet::new(),
                Verdict::Approve,
                t(20),
            )
            .unwrap();
        assert_eq!(second.transition.map(|t| t.to), Some(GrantState::Approved));
        let denied = g
            .review(
                &p,
                &[approved_by("lead@example.com")],
                &user("boss@example.com"),
                &BTreeSet::new(),
                Verdict::Deny,
                t(20),
            )
            .unwrap();
        assert_eq!(denied.transition.map(|t| t.to), Some(GrantState::Denied));
    }

    #[test]
    fn an_unanswered_request_lapses_at_the_timeout_or_its_end() {
        let p = policy();
        let g = pending();
        assert_eq!(g.lapses_at(&p), t(3600), "its own end comes first");
        assert_eq!(g.lapse(&p, t(3599)), None);
        assert_eq!(
            g.lapse(&p, t(3600)).map(|t| t.to),
            Some(GrantState::Cancelled)
        );
        let mut long = pending();
        long.expires_at = t(5 * 3600);
        assert_eq!(long.lapses_at(&p), t(2 * 3600), "the policy's timeout");
    }

    #[test]
    fn comments_and_extension_bodies_are_checked() {
        assert_eq!(
            validate_review_comment(Verdict::Deny, "  ")
                .unwrap_err()
                .rule,
            "required"
        );
        assert_eq!(
            validate_review_comment(Verdict::Approve, " ok "),
            Ok("ok".into())
        );
        let end = t(3600);
        let validate_extension = |body: &serde_json::Value, end| {
            let form: ExtensionForm = serde_json::from_value(body.clone()).unwrap();
            super::validate_extension(&form, end)
        };
        let by = serde_json::json!({"by": "30m"});
        assert_eq!(validate_extension(&by, end), Ok(t(5400)));
        let until = serde_json::json!({"until": "2027-01-15T08:00:00Z"});
        assert!(validate_extension(&until, end).is_ok());
        for (body, rule) in [
            (serde_json::json!({}), "one_of"),
            (serde_json::json!({"by": "30m", "until": "x"}), "one_of"),
            (serde_json::json!({"by": "soon"}), "duration"),
            (serde_json::json!({"until": "tomorrow"}), "format"),
            (serde_json::json!({"extra": 1}), "unknown_field"),
        ] {
            assert_eq!(
                validate_extension(&body, end).unwrap_err()[0].rule,
                rule,
                "{body}"
            );
        }
    }

    #[test]
    fn an_extension_stays_within_the_role_and_the_change() {
        let p = policy();
        let mut g = pending();
        g.state = GrantState::Active;
        g.ticket = None;
        assert_eq!(g.extension(&p, None, t(5400), t(100)), Ok(t(5400)));
        let rules = |r: Result<DateTime<Utc>, Vec<FieldError>>| {
            r.unwrap_err()
                .into_iter()
                .map(|e| e.rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(rules(g.extension(&p, None, t(3000), t(100))), ["later"]);
        assert_eq!(
            rules(g.extension(&p, None, t(3 * 3600), t(100))),
            ["max_duration"]
        );
        // A role with approvals waits for them to extend, unless the policy
        // opts out explicitly; the limits are the same either way.
        let role = RoleName::parse("Recording Admin").unwrap();
        assert!(p.role(&role).unwrap().extension_needs_approval);
        let opted_out = Policy::from_toml(
            "p.toml",
            &POLICY.replace(
                "approvals = 2",
                "approvals = 2\nextension_needs_approval = false",
            ),
        )
        .unwrap();
        assert!(!opted_out.role(&role).unwrap().extension_needs_approval);
        assert_eq!(
            longest_extension(&g, &p, None),
            g.starts_at + TimeDelta::hours(2)
        );
        let mut ended = g.clone();
        ended.state = GrantState::Ended;
        assert_eq!(
            rules(ended.extension(&p, None, t(5400), t(100))),
            ["extendable"]
        );
    }

    #[test]
    fn an_extension_request_needs_the_same_quorum_and_lapses() {
        let p = policy();
        let mut g = pending();
        g.state = GrantState::Active;
        let ext = ExtensionRequest::new(&g, "eng@example.com", t(5400), t(100));
        let answer = |reviews: &[Review], who: &str, groups: &BTreeSet<String>, v, at| {
            ext.review(&g, &p, reviews, &user(who), groups, v, t(at))
        };
        let none = BTreeSet::new();
        assert_eq!(
            answer(&[], "eng@example.com", &none, Verdict::Approve, 200)
                .unwrap_err()
                .rule,
            "self_approval"
        );
        assert_eq!(
            answer(&[], "mallory@example.com", &none, Verdict::Approve, 200)
                .unwrap_err()
                .rule,
            "not_an_approver"
        );
        let first = answer(&[], "lead@example.com", &leads(), Verdict::Approve, 200).unwrap();
        assert_eq!((first.approvals, first.needed, first.decided), (1, 2, None));
        let second = answer(
            &[approved_by("lead@example.com")],
            "boss@example.com",
            &none,
            Verdict::Approve,
            300,
        )
        .unwrap();
        assert_eq!(second.decided, Some(ExtensionState::Approved));
        let denied = answer(&[], "boss@example.com", &none, Verdict::Deny, 300).unwrap();
        assert_eq!(denied.decided, Some(ExtensionState::Denied));
        // It lapses with the grant's end (3600) before the 2 h timeout.
        assert_eq!(ext.lapses_at(&p, &g), t(3600));
        assert!(ext.waiting(&p, &g, t(3599)) && !ext.waiting(&p, &g, t(3600)));
        assert_eq!(
            answer(&[], "boss@example.com", &none, Verdict::Approve, 3600)
                .unwrap_err()
                .rule,
            "not_pending",
            "the grant has ended: nothing to extend"
        );
        // Once the end moved another way, the request no longer applies.
        let mut moved = g.clone();
        moved.expires_at = t(4000);
        assert!(!ext.waiting(&p, &moved, t(200)));
    }

    #[test]
    fn an_emergency_grant_stays_within_the_emergency_cap_until_its_change_is_approved() {
        let p = Policy::from_toml(
            "p.toml",
            r#"
version = 1
[roles."Telephony Admin"]
default_duration = "30m"
max_duration = "4h"
eligible_users = ["eng@example.com"]
emergency = { change_type = "emergency", max_duration = "30m" }
"#,
        )
        .unwrap();
        let mut g = grant(GrantState::Active, 0, 1800);
        g.role = RoleName::parse("Telephony Admin").unwrap();
        g.ticket = None;
        g.decision = Some(crate::decision::Decision {
            allowed: true,
            state: GrantState::Approved,
            approvals_required: 0,
            emergency: true,
            expires_at: t(1800),
            reasons: vec![],
        });
        let mut change = crate::decision::tests::ticket_at(t(0));
        change.approval = "requested".into();
        change.change_type = "emergency".into();
        let refused = g
            .extension(&p, Some(&change), t(3 * 3600), t(100))
            .unwrap_err();
        assert_eq!(refused[0].rule, "emergency_max_duration");
        assert_eq!(
            refused[0].policy.as_deref(),
            Some("roles.\"Telephony Admin\".emergency.max_duration")
        );
        // Piecemeal is no way round it: the cap counts from the first start.
        let mut extended = g.clone();
        extended.expires_at = t(1700);
        assert_eq!(
            extended
                .extension(&p, Some(&change), t(1801), t(100))
                .unwrap_err()[0]
                .rule,
            "emergency_max_duration"
        );
        assert_eq!(
            extended.extension(&p, Some(&change), t(1800), t(100)),
            Ok(t(1800))
        );
        assert_eq!(longest_extension(&g, &p, Some(&change)), t(1800));
        // Once the change is approved (read live), the role's rules apply.
        change.approval = "approved".into();
        assert_eq!(
            g.extension(&p, Some(&change), t(3 * 3600), t(100)),
            Ok(t(3 * 3600))
        );
        // A grant that was not an emergency is not capped by the rule.
        let mut normal = g.clone();
        normal.decision = None;
        change.approval = "requested".into();
        assert!(normal.emergency_cap(&p, Some(&change)).is_none());
    }

    #[test]
    fn a_pairs_next_wake_is_its_earliest_change_removals_first() {
        let p = policy();
        assert_eq!(next_wake(&p, &[]), None);
        let scheduled = grant(GrantState::Approved, 100, 3600);
        let active = grant(GrantState::Active, 0, 100);
        let waiting = pending(); // lapses at its own end, 3600
        assert_eq!(
            next_wake(&p, &[scheduled.clone(), waiting.clone()]),
            Some(Wake {
                at: t(100),
                removal: false
            })
        );
        assert_eq!(
            next_wake(&p, &[scheduled.clone(), active]),
            Some(Wake {
                at: t(100),
                removal: true
            }),
            "a start and an end at once: the end may take the role away"
        );
        assert_eq!(
            next_wake(&p, &[waiting]),
            Some(Wake {
                at: t(3600),
                removal: true
            })
        );
        let ended = grant(GrantState::Ended, 0, 10);
        assert_eq!(next_wake(&p, &[ended]), None);
    }
}
