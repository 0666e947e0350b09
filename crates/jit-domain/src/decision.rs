//! The policy decision for a grant: who may hold the role, and whether the
//! cited change ticket allows it now. Every clause that was evaluated is kept
//! as a reason, allowed or denied, stored on the grant and shown in refusals.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::GrantState;
use crate::names::{RoleName, TicketId, UserName};
use crate::policy::{Policy, RequesterMatch, RolePolicy, format_duration};
use crate::request::{FieldError, ValidGrantRequest};
use crate::ticket::ChangeTicket;

/// One evaluated clause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The policy key (or ticket field) that decided.
    pub clause: String,
    /// The request field the clause is about.
    pub field: String,
    pub rule: String,
    pub allowed: bool,
    pub message: String,
}

impl Reason {
    pub(crate) fn new(
        allowed: bool,
        field: &str,
        rule: &str,
        clause: String,
        message: String,
    ) -> Self {
        Self {
            clause,
            field: field.to_owned(),
            rule: rule.to_owned(),
            allowed,
            message,
        }
    }
}

/// What is known about the cited ticket when deciding.
#[derive(Debug, Clone, Copy)]
pub enum TicketEvidence<'a> {
    /// The request cites no ticket.
    NotCited,
    /// ServiceNow has no change with that number.
    NotFound,
    Found {
        ticket: &'a ChangeTicket,
        /// Whether the grant's user is in the change's assignment group;
        /// `None` when it was not looked up.
        group_member: Option<bool>,
    },
}

/// The outcome, as stored on the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// `approved`, or `pending_approval` when the role needs approvals.
    pub state: GrantState,
    pub approvals_required: u8,
    /// Granted under the role's emergency-change rule (SOC is alerted).
    pub emergency: bool,
    /// The expiry after clipping to the change window.
    pub expires_at: DateTime<Utc>,
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// The denied clauses as field errors for a 4xx body.
    pub fn denials(&self) -> Vec<FieldError> {
        self.reasons
            .iter()
            .filter(|r| !r.allowed)
            .map(|r| FieldError {
                field: r.field.clone(),
                rule: r.rule.clone(),
                message: r.message.clone(),
                policy: Some(r.clause.clone()),
            })
            .collect()
    }

    /// Adds a clause decided outside [`decide`] (one that needs the store):
    /// a refusal makes the whole decision a refusal.
    pub fn with(mut self, reason: Reason) -> Self {
        if !reason.allowed {
            self.allowed = false;
            self.state = GrantState::Denied;
            self.emergency = false;
        }
        self.reasons.push(reason);
        self
    }
}

pub(crate) fn role_key(rp: &RolePolicy) -> String {
    format!("roles.\"{}\"", rp.name)
}

/// Whether `user` (with the OIDC `groups` the caller vouches for) may hold
/// the role at all.
pub fn eligibility(rp: &RolePolicy, user: &UserName, groups: &BTreeSet<String>) -> Reason {
    let key = role_key(rp);
    let e = &rp.eligible;
    if e.anyone {
        return Reason::new(
            true,
            "user",
            "eligible",
            format!("{key}.eligible_users"),
            "anyone may request this role (\"*\")".into(),
        );
    }
    if e.users.contains(user) {
        return Reason::new(
            true,
            "user",
            "eligible",
            format!("{key}.eligible_users"),
            format!("`{user}` is listed"),
        );
    }
    if let Some(g) = groups.intersection(&e.groups).next() {
        return Reason::new(
            true,
            "user",
            "eligible",
            format!("{key}.eligible_groups"),
            format!("`{user}` is a member of `{g}`"),
        );
    }
    let groups_note = if e.groups.is_empty() {
        String::new()
    } else {
        format!(
            " nor shown to be in any of the groups {}",
            e.groups.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    Reason::new(
        false,
        "user",
        "eligible",
        format!("{key}.eligible_users"),
        format!(
            "`{user}` is not listed as eligible for `{}`{groups_note}",
            rp.name
        ),
    )
}

/// Decides a request that passed field validation.
pub fn decide(
    policy: &Policy,
    request: &ValidGrantRequest,
    groups: &BTreeSet<String>,
    evidence: TicketEvidence<'_>,
    now: DateTime<Utc>,
) -> Decision {
    let mut reasons = Vec::new();
    let mut expires_at = request.expires_at;
    let mut emergency = false;
    let Some(rp) = policy.role(&request.role) else {
        // Field validation refuses unknown roles first; this keeps decide total.
        reasons.push(Reason::new(
            false,
            "role",
            "known_role",
            "roles".into(),
            format!("`{}` is not in the policy's role catalogue", request.role),
        ));
        return Decision {
            allowed: false,
            state: GrantState::Denied,
            approvals_required: 0,
            emergency,
            expires_at,
            reasons,
        };
    };
    let key = role_key(rp);
    reasons.push(eligibility(rp, &request.user, groups));

    match evidence {
        TicketEvidence::NotCited if rp.require_ticket => reasons.push(Reason::new(
            false,
            "ticket",
            "required",
            format!("{key}.require_ticket"),
            format!("`{}` needs an approved change ticket", rp.name),
        )),
        TicketEvidence::NotCited => reasons.push(Reason::new(
            true,
            "ticket",
            "required",
            format!("{key}.require_ticket"),
            "no change ticket is required for this role".into(),
        )),
        TicketEvidence::NotFound => reasons.push(Reason::new(
            false,
            "ticket",
            "ticket_exists",
            "ticket".into(),
            format!(
                "ServiceNow has no change request {}",
                request.ticket.as_ref().map_or("", |t| t.as_str())
            ),
        )),
        TicketEvidence::Found {
            ticket,
            group_member,
        } => {
            let approval = approval_reason(rp, ticket);
            emergency = approval.allowed && !ticket.is_approved();
            reasons.push(approval);
            reasons.push(state_reason(rp, ticket));
            reasons.push(requester_reason(rp, ticket, &request.user, group_member));
            if let Some(reason) = role_reason(rp, ticket) {
                reasons.push(reason);
            }
            expires_at = window_reasons(request, ticket, now, expires_at, &mut reasons);
            if emergency && let Some(rule) = &rp.emergency {
                let cap = request.starts_at + rule.max_duration;
                if expires_at > cap {
                    reasons.push(Reason::new(
                        true,
                        "expires_at",
                        "emergency_max_duration",
                        format!("{key}.emergency.max_duration"),
                        format!(
                            "an emergency grant lasts at most {}",
                            format_duration(rule.max_duration)
                        ),
                    ));
                    expires_at = cap;
                }
            }
        }
    }

    let allowed = reasons.iter().all(|r| r.allowed);
    let state = match (allowed, rp.approvals) {
        (false, _) => GrantState::Denied,
        (true, 0) => GrantState::Approved,
        (true, n) => {
            reasons.push(Reason::new(
                true,
                "role",
                "approvals",
                format!("{key}.approvals"),
                format!("{n} approval(s) needed before the grant may start"),
            ));
            GrantState::PendingApproval
        }
    };
    Decision {
        allowed,
        state,
        approvals_required: rp.approvals,
        emergency: allowed && emergency,
        expires_at,
        reasons,
    }
}

/// Whether now, and the grant's start, are inside the change's planned
/// window; the expiry is clipped to the window's end. Returns the expiry.
fn window_reasons(
    request: &ValidGrantRequest,
    ticket: &ChangeTicket,
    now: DateTime<Utc>,
    mut expires_at: DateTime<Utc>,
    reasons: &mut Vec<Reason>,
) -> DateTime<Utc> {
    match (ticket.start_date, ticket.end_date) {
        (Some(start), Some(end)) if start <= now && now < end && request.starts_at < end => {
            reasons.push(Reason::new(
                true,
                "ticket",
                "ticket_window",
                "ticket.start_date".into(),
                format!("now is inside the change window {start} – {end}"),
            ));
            if expires_at > end {
                reasons.push(Reason::new(
                    true,
                    "expires_at",
                    "clipped_to_change",
                    "ticket.end_date".into(),
                    format!("expiry clipped from {expires_at} to the change's planned end {end}"),
                ));
                expires_at = end;
            }
        }
        (Some(start), Some(end)) => reasons.push(Reason::new(
            false,
            "ticket",
            "ticket_window",
            "ticket.start_date".into(),
            if now < start {
                format!("the change window opens at {start}")
            } else if now >= end {
                format!("the change window closed at {end}")
            } else {
                format!("the grant would start after the change window closes at {end}")
            },
        )),
        _ => reasons.push(Reason::new(
            false,
            "ticket",
            "ticket_window",
            "ticket.start_date".into(),
            format!("{} has no planned start and end date", ticket.number),
        )),
    }
    expires_at
}

/// Whether the change names the role asked for, when the configuration
/// binds changes to the roles they name; `None` when it does not.
fn role_reason(rp: &RolePolicy, ticket: &ChangeTicket) -> Option<Reason> {
    let field = ticket.roles_field.as_deref()?;
    let allowed = ticket.allows_role(rp.name.as_str());
    let message = match (allowed, ticket.roles.is_empty()) {
        (true, _) => format!("{} is a change for `{}` ({field})", ticket.number, rp.name),
        (false, true) => format!("{} names no role in `{field}`", ticket.number),
        (false, false) => format!(
            "{} is a change for {} ({field}), not for `{}`",
            ticket.number,
            ticket
                .roles
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", "),
            rp.name
        ),
    };
    Some(Reason::new(
        allowed,
        "ticket",
        "ticket_role",
        format!("ticket.{field}"),
        message,
    ))
}

fn approval_reason(rp: &RolePolicy, ticket: &ChangeTicket) -> Reason {
    let key = role_key(rp);
    if ticket.is_approved() {
        return Reason::new(
            true,
            "ticket",
            "ticket_approved",
            "ticket.approval".into(),
            format!("{} is approved", ticket.number),
        );
    }
    match &rp.emergency {
        Some(rule)
            if rule.change_type.eq_ignore_ascii_case(&ticket.change_type)
                && !ticket.is_rejected() =>
        {
            Reason::new(
                true,
                "ticket",
                "ticket_approved",
                format!("{key}.emergency"),
                format!(
                    "{} is an `{}` change awaiting approval (`{}`): emergency grant, the SOC is alerted",
                    ticket.number, ticket.change_type, ticket.approval
                ),
            )
        }
        _ => Reason::new(
            false,
            "ticket",
            "ticket_approved",
            "ticket.approval".into(),
            format!(
                "{} is not approved (approval is `{}`)",
                ticket.number, ticket.approval
            ),
        ),
    }
}

fn state_reason(rp: &RolePolicy, ticket: &ChangeTicket) -> Reason {
    let allowed_states = rp
        .change_states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let state_name = ticket.state.map_or_else(
        || format!("unknown ({})", ticket.state_code),
        |s| s.to_string(),
    );
    let ok = ticket.state.is_some_and(|s| rp.change_states.contains(&s));
    Reason::new(
        ok,
        "ticket",
        "ticket_state",
        format!("{}.change_states", role_key(rp)),
        if ok {
            format!("{} is in state {state_name}", ticket.number)
        } else {
            format!(
                "{} is in state {state_name}; `{}` may be granted only in: {allowed_states}",
                ticket.number, rp.name
            )
        },
    )
}

fn requester_reason(
    rp: &RolePolicy,
    ticket: &ChangeTicket,
    user: &UserName,
    group_member: Option<bool>,
) -> Reason {
    let clause = format!("{}.requester", role_key(rp));
    match rp.requester {
        RequesterMatch::Assignee => {
            let ok = ticket.assigned_to.as_ref().is_some_and(|p| p.is(user));
            let assignee = ticket
                .assigned_to
                .as_ref()
                .and_then(|p| p.email.clone().or_else(|| p.user_name.clone()))
                .unwrap_or_else(|| "nobody".into());
            Reason::new(
                ok,
                "user",
                "ticket_assignee",
                clause,
                if ok {
                    format!("`{user}` is the change's assignee")
                } else {
                    format!("{} is assigned to {assignee}, not `{user}`", ticket.number)
                },
            )
        }
        RequesterMatch::AssignmentGroup => {
            let group = ticket
                .assignment_group
                .as_ref()
                .and_then(|g| g.name.clone())
                .unwrap_or_else(|| "no group".into());
            let ok = group_member == Some(true);
            Reason::new(
                ok,
                "user",
                "ticket_assignment_group",
                clause,
                if ok {
                    format!("`{user}` is a member of the change's assignment group `{group}`")
                } else {
                    format!(
                        "`{user}` is not a member of {}'s assignment group `{group}`",
                        ticket.number
                    )
                },
            )
        }
    }
}

/// Why a live grant tied to a change must end now, judged on a fresh read of
/// that change; `None` while the change still permits it.
/// `number`, `user` and `role` are the grant's own.
pub fn ticket_ends_grant(
    policy: &Policy,
    (number, user, role): (&TicketId, &UserName, &RoleName),
    ticket: Option<&ChangeTicket>,
    now: DateTime<Utc>,
) -> Option<String> {
    let Some(ticket) = ticket else {
        return Some(format!("{number} no longer exists in ServiceNow"));
    };
    if ticket.is_finished() {
        return Some(format!(
            "{number} moved to {}",
            ticket.state.map_or("an end state", |s| s.as_str())
        ));
    }
    let rp = policy.role(role)?;
    if !approval_reason(rp, ticket).allowed {
        return Some(format!(
            "{number} lost its approval (now `{}`)",
            ticket.approval
        ));
    }
    if !state_reason(rp, ticket).allowed {
        return Some(format!(
            "{number} left the states that allow `{}` (now {})",
            rp.name,
            ticket
                .state
                .map_or(ticket.state_code.as_str(), |s| s.as_str())
        ));
    }
    if rp.requester == RequesterMatch::Assignee
        && !ticket.assigned_to.as_ref().is_some_and(|p| p.is(user))
    {
        return Some(format!("{number} was reassigned away from `{user}`"));
    }
    if ticket.end_date.is_some_and(|end| now >= end) {
        return Some(format!("{number}'s change window closed"));
    }
    if !ticket.allows_role(role.as_str()) {
        return Some(format!("{number} no longer names `{role}`"));
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::names::{Justification, RoleName, TicketId};
    use crate::policy::tests::sample;
    use crate::ticket::{ChangeState, Person, Team};
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_428_000, 0).unwrap()
    }

    fn request(user: &str, role: &str, hours: i64) -> ValidGrantRequest {
        ValidGrantRequest {
            user: UserName::parse(user).unwrap(),
            role: RoleName::parse(role).unwrap(),
            ticket: Some(TicketId::parse("CHG0012345").unwrap()),
            justification: Justification::parse("rotate the trunk certificate").unwrap(),
            starts_at: now(),
            expires_at: now() + TimeDelta::hours(hours),
        }
    }

    fn ticket() -> ChangeTicket {
        ticket_at(now())
    }

    /// An approved change of `eng@example.com`'s, from an hour before `now`
    /// to three hours after.
    pub(crate) fn ticket_at(now: DateTime<Utc>) -> ChangeTicket {
        ChangeTicket {
            number: TicketId::parse("CHG0012345").unwrap(),
            sys_id: "c1".into(),
            state: Some(ChangeState::Implement),
            state_code: "-1".into(),
            approval: "approved".into(),
            start_date: Some(now - TimeDelta::hours(1)),
            end_date: Some(now + TimeDelta::hours(3)),
            assigned_to: Some(Person {
                sys_id: "u1".into(),
                user_name: Some("eng".into()),
                email: Some("eng@example.com".into()),
            }),
            assignment_group: Some(Team {
                sys_id: "g1".into(),
                name: Some("Telephony".into()),
            }),
            change_type: "normal".into(),
            roles: vec![],
            roles_field: None,
            read_at: now,
        }
    }

    fn found(t: &ChangeTicket) -> TicketEvidence<'_> {
        TicketEvidence::Found {
            ticket: t,
            group_member: None,
        }
    }

    fn denied_rules(d: &Decision) -> Vec<(String, String)> {
        d.denials().into_iter().map(|e| (e.field, e.rule)).collect()
    }

    #[test]
    fn an_assignee_with_an_approved_change_in_implement_is_allowed() {
        let t = ticket();
        let d = decide(
            &sample(),
            &request("eng@example.com", "Master Admin", 2),
            &BTreeSet::new(),
            found(&t),
            now(),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.state, GrantState::Approved);
        assert_eq!(d.expires_at, now() + TimeDelta::hours(2));
        assert!(!d.emergency);
        assert!(d.reasons.iter().all(|r| r.allowed));
        assert_eq!(
            d.reasons.len(),
            5,
            "eligibility, approval, state, assignee, window"
        );
    }

    /// With changes bound to the roles they name, a change approved for
    /// Telephony Admin is no reason for Master Admin; ending one that
    /// stopped naming the role ends the grant.
    #[test]
    fn a_change_is_a_reason_only_for_the_roles_it_names() {
        let decide_for = |t: &ChangeTicket| {
            decide(
                &sample(),
                &request("eng@example.com", "Master Admin", 2),
                &BTreeSet::new(),
                found(t),
                now(),
            )
        };
        let mut t = ticket();
        t.roles_field = Some("u_jit_role".into());
        t.roles = vec!["Telephony Admin".into()];
        let d = decide_for(&t);
        assert!(!d.allowed);
        assert_eq!(
            denied_rules(&d),
            [("ticket".to_owned(), "ticket_role".to_owned())]
        );
        let clause = d.reasons.iter().find(|r| r.rule == "ticket_role").unwrap();
        assert_eq!(clause.clause, "ticket.u_jit_role");
        assert!(
            clause.message.contains("`Telephony Admin`"),
            "{}",
            clause.message
        );
        t.roles = vec![];
        assert!(!decide_for(&t).allowed, "a change naming no role");
        t.roles = vec!["Telephony Admin".into(), "master admin".into()];
        let d = decide_for(&t);
        assert!(d.allowed, "{d:?}");
        assert!(
            d.reasons
                .iter()
                .any(|r| r.rule == "ticket_role" && r.allowed)
        );
        // Not bound: any role the policy allows, and no clause.
        t.roles_field = None;
        t.roles = vec![];
        let d = decide_for(&t);
        assert!(d.allowed && !d.reasons.iter().any(|r| r.rule == "ticket_role"));
        // A live grant ends when its change stops naming its role.
        t.roles_field = Some("u_jit_role".into());
        t.roles = vec!["Telephony Admin".into()];
        let number = t.number.clone();
        let (user, role) = (
            UserName::parse("eng@example.com").unwrap(),
            RoleName::parse("Master Admin").unwrap(),
        );
        assert!(ticket_ends_grant(&sample(), (&number, &user, &role), Some(&t), now()).is_some());
    }

    #[test]
    fn each_refusal_names_its_clause() {
        type Edit = fn(&mut ChangeTicket);
        let table: Vec<(&str, Edit, (&str, &str), &str)> = vec![
            (
                "not approved",
                |t| t.approval = "requested".into(),
                ("ticket", "ticket_approved"),
                "ticket.approval",
            ),
            (
                "rejected",
                |t| t.approval = "rejected".into(),
                ("ticket", "ticket_approved"),
                "ticket.approval",
            ),
            (
                "in assess",
                |t| {
                    t.state = Some(ChangeState::Assess);
                    t.state_code = "-4".into()
                },
                ("ticket", "ticket_state"),
                "roles.\"Master Admin\".change_states",
            ),
            (
                "scheduled, not allowed for this role",
                |t| t.state = Some(ChangeState::Scheduled),
                ("ticket", "ticket_state"),
                "roles.\"Master Admin\".change_states",
            ),
            (
                "unknown state code",
                |t| {
                    t.state = None;
                    t.state_code = "9".into()
                },
                ("ticket", "ticket_state"),
                "roles.\"Master Admin\".change_states",
            ),
            (
                "window not open yet",
                |t| t.start_date = Some(now() + TimeDelta::minutes(5)),
                ("ticket", "ticket_window"),
                "ticket.start_date",
            ),
            (
                "window closed",
                |t| t.end_date = Some(now()),
                ("ticket", "ticket_window"),
                "ticket.start_date",
            ),
            (
                "no window",
                |t| t.end_date = None,
                ("ticket", "ticket_window"),
                "ticket.start_date",
            ),
            (
                "someone else's change",
                |t| {
                    t.assigned_to = Some(Person {
                        sys_id: "u2".into(),
                        user_name: None,
                        email: Some("bob@example.com".into()),
                    })
                },
                ("user", "ticket_assignee"),
                "roles.\"Master Admin\".requester",
            ),
            (
                "unassigned",
                |t| t.assigned_to = None,
                ("user", "ticket_assignee"),
                "roles.\"Master Admin\".requester",
            ),
        ];
        for (name, edit, rules, clause) in table {
            let mut t = ticket();
            edit(&mut t);
            let d = decide(
                &sample(),
                &request("eng@example.com", "Master Admin", 2),
                &BTreeSet::new(),
                found(&t),
                now(),
            );
            assert!(!d.allowed, "{name}");
            assert_eq!(d.state, GrantState::Denied, "{name}");
            let want = vec![(rules.0.to_string(), rules.1.to_string())];
            assert_eq!(denied_rules(&d), want, "{name}");
            assert_eq!(d.denials()[0].policy.as_deref(), Some(clause), "{name}");
        }
    }

    #[test]
    fn eligibility_by_user_group_or_anyone() {
        let t = ticket();
        let p = sample();
        let outsider = request("mallory@example.com", "Master Admin", 1);
        let mut t2 = t.clone();
        t2.assigned_to.as_mut().unwrap().email = Some("mallory@example.com".into());
        let d = decide(&p, &outsider, &BTreeSet::new(), found(&t2), now());
        assert_eq!(denied_rules(&d), vec![("user".into(), "eligible".into())]);
        assert!(d.denials()[0].message.contains("sre"), "{:?}", d.denials());
        let d = decide(
            &p,
            &outsider,
            &BTreeSet::from(["sre".to_owned()]),
            found(&t2),
            now(),
        );
        assert!(d.allowed);
        assert_eq!(
            d.reasons[0].clause,
            "roles.\"Master Admin\".eligible_groups"
        );
        // Recording Admin: anyone, and no ticket needed.
        let mut rec = request("mallory@example.com", "Recording Admin", 1);
        rec.ticket = None;
        let d = decide(&p, &rec, &BTreeSet::new(), TicketEvidence::NotCited, now());
        assert!(d.allowed, "{d:?}");
    }

    #[test]
    fn a_missing_or_unknown_ticket_is_refused() {
        let p = sample();
        let d = decide(
            &p,
            &request("eng@example.com", "Master Admin", 1),
            &BTreeSet::new(),
            TicketEvidence::NotFound,
            now(),
        );
        assert_eq!(
            denied_rules(&d),
            vec![("ticket".into(), "ticket_exists".into())]
        );
        let d = decide(
            &p,
            &request("eng@example.com", "Master Admin", 1),
            &BTreeSet::new(),
            TicketEvidence::NotCited,
            now(),
        );
        assert_eq!(denied_rules(&d), vec![("ticket".into(), "required".into())]);
    }

    #[test]
    fn expiry_is_clipped_to_the_change_end() {
        let mut t = ticket();
        t.end_date = Some(now() + TimeDelta::minutes(90));
        let d = decide(
            &sample(),
            &request("eng@example.com", "Master Admin", 4),
            &BTreeSet::new(),
            found(&t),
            now(),
        );
        assert!(d.allowed);
        assert_eq!(d.expires_at, now() + TimeDelta::minutes(90));
        assert!(d.reasons.iter().any(|r| r.rule == "clipped_to_change"));
    }

    #[test]
    fn assignment_group_approvals_and_emergency() {
        let p = sample();
        let mut t = ticket();
        t.state = Some(ChangeState::Scheduled);
        let req = request("tel@example.com", "Telephony Admin", 2);
        let groups = BTreeSet::from(["telephony".to_owned()]);
        let d = decide(
            &p,
            &req,
            &groups,
            TicketEvidence::Found {
                ticket: &t,
                group_member: Some(false),
            },
            now(),
        );
        assert_eq!(
            denied_rules(&d),
            vec![("user".into(), "ticket_assignment_group".into())]
        );
        let d = decide(
            &p,
            &req,
            &groups,
            TicketEvidence::Found {
                ticket: &t,
                group_member: Some(true),
            },
            now(),
        );
        assert!(d.allowed);
        assert_eq!(
            (d.state, d.approvals_required),
            (GrantState::PendingApproval, 1)
        );

        t.approval = "requested".into();
        t.change_type = "Emergency".into();
        let d = decide(
            &p,
            &req,
            &groups,
            TicketEvidence::Found {
                ticket: &t,
                group_member: Some(true),
            },
            now(),
        );
        assert!(d.allowed && d.emergency, "{d:?}");
        assert_eq!(d.expires_at, now() + TimeDelta::minutes(30));
        t.approval = "rejected".into();
        let d = decide(
            &p,
            &req,
            &groups,
            TicketEvidence::Found {
                ticket: &t,
                group_member: Some(true),
            },
            now(),
        );
        assert!(!d.allowed);
        // Master Admin has no emergency rule: an unapproved emergency change is refused.
        let mut t = ticket();
        t.approval = "requested".into();
        t.change_type = "emergency".into();
        let d = decide(
            &p,
            &request("eng@example.com", "Master Admin", 1),
            &BTreeSet::new(),
            found(&t),
            now(),
        );
        assert!(!d.allowed);
    }

    #[test]
    fn a_changed_ticket_ends_the_grants_tied_to_it() {
        let p = sample();
        let number = TicketId::parse("CHG0012345").unwrap();
        let user = UserName::parse("eng@example.com").unwrap();
        let role = RoleName::parse("Master Admin").unwrap();
        let grant = (&number, &user, &role);
        let t = ticket();
        assert_eq!(ticket_ends_grant(&p, grant, Some(&t), now()), None);
        type Edit = fn(&mut ChangeTicket);
        let table: Vec<(Edit, &str)> = vec![
            (|t| t.state = Some(ChangeState::Review), "moved to review"),
            (|t| t.state = Some(ChangeState::Closed), "moved to closed"),
            (
                |t| t.state = Some(ChangeState::Canceled),
                "moved to canceled",
            ),
            (|t| t.approval = "rejected".into(), "lost its approval"),
            (|t| t.state = Some(ChangeState::Assess), "left the states"),
            (|t| t.assigned_to = None, "reassigned"),
            (|t| t.end_date = Some(now()), "window closed"),
        ];
        for (edit, says) in table {
            let mut t = ticket();
            edit(&mut t);
            let why = ticket_ends_grant(&p, grant, Some(&t), now()).unwrap_or_default();
            assert!(why.contains(says), "{why} should say {says}");
        }
        assert!(
            ticket_ends_grant(&p, grant, None, now())
                .unwrap()
                .contains("no longer exists")
        );
    }
}
