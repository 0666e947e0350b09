//! A grant and its lifecycle (docs/architecture.md, "Grant lifecycle").

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decision::{Decision, ticket_ends_grant};
use crate::lifecycle::{EndReason, GrantState};
use crate::names::{Justification, RoleName, TicketId, UserName};
use crate::policy::Policy;
use crate::request::ValidGrantRequest;
use crate::ticket::ChangeTicket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrantId(pub Uuid);

impl GrantId {
    /// Time-ordered (UUIDv7) and strictly increasing within this process, so
    /// ids sort by creation and page cleanly even when many are made in one
    /// millisecond, or when the clock a caller passes steps back: the shared
    /// context then keeps its last timestamp and bumps its counter
    /// (RFC 9562, section 6.2, method 1).
    pub fn new_at(now: DateTime<Utc>) -> Self {
        static CONTEXT: Mutex<uuid::ContextV7> = Mutex::new(uuid::ContextV7::new());
        let context = CONTEXT.lock().unwrap_or_else(PoisonError::into_inner);
        let ts = uuid::Timestamp::from_unix(
            &*context,
            now.timestamp().max(0) as u64,
            now.timestamp_subsec_nanos(),
        );
        Self(Uuid::new_v7(ts))
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for GrantId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub id: GrantId,
    pub user: UserName,
    pub role: RoleName,
    pub ticket: Option<TicketId>,
    pub justification: Justification,
    pub requested_by: String,
    /// Where the request came from: `api`, `servicenow` (webhook), `web`.
    pub origin: String,
    pub state: GrantState,
    pub starts_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<EndReason>,
    pub end_note: Option<String>,
    /// When converge saw the role present in the directory for this grant.
    pub role_added_at: Option<DateTime<Utc>>,
    /// When converge saw the role really gone after this grant ended.
    pub role_removed_at: Option<DateTime<Utc>>,
    /// The last permanent error applying this grant to the directory.
    pub last_error: Option<String>,
    /// The policy decision with every clause evaluated.
    pub decision: Option<Decision>,
    /// The change ticket as read from ServiceNow for the decision.
    pub ticket_snapshot: Option<ChangeTicket>,
}

/// A change of state, decided here and written by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: GrantState,
    pub to: GrantState,
    pub end_reason: Option<EndReason>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a grant that is {state} cannot be {action}")]
pub struct TransitionError {
    pub state: GrantState,
    pub action: &'static str,
}

impl Grant {
    /// Why this grant must end now that its change reads as `ticket`
    /// (`None` for a grant cut without a ticket, or while the change permits it).
    pub fn ended_by_change(
        &self,
        policy: &Policy,
        ticket: Option<&ChangeTicket>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let number = self.ticket.as_ref()?;
        ticket_ends_grant(policy, (number, &self.user, &self.role), ticket, now)
    }

    /// A new grant for a request that passed policy. It starts `approved`;
    /// time (`advance`) activates it.
    pub fn from_request(
        request: ValidGrantRequest,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: GrantId::new_at(now),
            user: request.user,
            role: request.role,
            ticket: request.ticket,
            justification: request.justification,
            requested_by: requested_by.to_owned(),
            origin: "api".to_owned(),
            state: GrantState::Approved,
            starts_at: request.starts_at,
            expires_at: request.expires_at,
            created_at: now,
            updated_at: now,
            ended_at: None,
            end_reason: None,
            end_note: None,
            role_added_at: None,
            role_removed_at: None,
            last_error: None,
            decision: None,
            ticket_snapshot: None,
        }
    }

    /// A new grant as the policy decided it: its state (approved or pending
    /// approval), its clipped expiry, and the evidence it was decided on.
    pub fn decided(
        request: ValidGrantRequest,
        requested_by: &str,
        origin: &str,
        decision: Decision,
        ticket: Option<ChangeTicket>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut grant = Self::from_request(request, requested_by, now);
        grant.origin = origin.to_owned();
        grant.state = decision.state;
        grant.expires_at = decision.expires_at;
        grant.decision = Some(decision);
        grant.ticket_snapshot = ticket;
        grant
    }

    /// Whether this grant entitles its user to its role at `now`.
    /// Approved or active and not yet at its end: what can be dropped or
    /// extended, and what "My access" lists as current.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        matches!(self.state, GrantState::Active | GrantState::Approved) && now < self.expires_at
    }

    pub fn covers(&self, now: DateTime<Utc>) -> bool {
        self.state == GrantState::Active && self.starts_at <= now && now < self.expires_at
    }

    /// The transition that time alone makes due at `now`, if any: activation at
    /// `starts_at`, expiry at `expires_at`. An approved grant whose whole window
    /// passed (broker down throughout) ends as expired without activating.
    pub fn advance(&self, now: DateTime<Utc>) -> Option<Transition> {
        let to = match self.state {
            GrantState::Approved | GrantState::Active if now >= self.expires_at => {
                (GrantState::Ended, Some(EndReason::Expired))
            }
            GrantState::Approved if now >= self.starts_at => (GrantState::Active, None),
            _ => return None,
        };
        Some(Transition {
            from: self.state,
            to: to.0,
            end_reason: to.1,
            at: now,
        })
    }

    /// Ending a grant before its time: an active grant ends with `reason`; one
    /// that has not started is cancelled.
    pub fn end_early(
        &self,
        now: DateTime<Utc>,
        reason: EndReason,
    ) -> Result<Transition, TransitionError> {
        let (to, end_reason) = match self.state {
            GrantState::Active => (GrantState::Ended, Some(reason)),
            GrantState::Approved | GrantState::PendingApproval => (GrantState::Cancelled, None),
            state => {
                return Err(TransitionError {
                    state,
                    action: "ended early",
                });
            }
        };
        Ok(Transition {
            from: self.state,
            to,
            end_reason,
            at: now,
        })
    }

    /// How long past its end this grant's role has outlived the revocation
    /// SLO: `Some` once the grant ended more than `slo` ago and the role was
    /// never seen removed.
    /// Since when its role is held now: active, and the role's add verified.
    pub fn held_since(&self) -> Option<DateTime<Utc>> {
        self.role_added_at
            .filter(|_| self.state == GrantState::Active)
    }

    /// Whether its holder is due the warning before it ends: the role held
    /// now, within `nudge` of the end (zero: never).
    pub fn nudge_due(&self, nudge: TimeDelta, now: DateTime<Utc>) -> bool {
        self.held_since().is_some()
            && nudge > TimeDelta::zero()
            && self.expires_at - nudge <= now
            && now < self.expires_at
    }

    pub fn revocation_overdue(&self, now: DateTime<Utc>, slo: TimeDelta) -> Option<TimeDelta> {
        let ended_at = self.ended_at?;
        (self.state == GrantState::Ended && self.role_removed_at.is_none() && now >= ended_at + slo)
            .then(|| now - ended_at)
    }

    /// The grant as it is after `t`.
    pub fn apply(&mut self, t: &Transition) {
        self.state = t.to;
        self.updated_at = t.at;
        if t.to.is_terminal() {
            self.ended_at = Some(t.at);
            self.end_reason = t.end_reason;
        }
    }
}

/// Whether one more live grant of `rp`'s role fits under its cap, given the
/// user's grants of that role that are still live (`live`, any of waiting
/// for approval, approved, active). One caller's storm of grants for one
/// pair is refused here; a longer need is an extension.
pub fn live_grants_reason(
    rp: &crate::policy::RolePolicy,
    live: &[Grant],
    now: DateTime<Utc>,
) -> crate::decision::Reason {
    let key = crate::decision::role_key(rp);
    let live: Vec<&Grant> = live
        .iter()
        .filter(|g| g.state == GrantState::PendingApproval || g.is_live(now))
        .collect();
    let cap = usize::from(rp.max_live_grants);
    if live.len() < cap {
        return crate::decision::Reason::new(
            true,
            "user",
            "max_live_grants",
            format!("{key}.max_live_grants"),
            format!(
                "{} of at most {cap} live grant(s) of `{}`",
                live.len() + 1,
                rp.name
            ),
        );
    }
    let until = live.iter().map(|g| g.expires_at).max();
    crate::decision::Reason::new(
        false,
        "user",
        "max_live_grants",
        format!("{key}.max_live_grants"),
        match until {
            Some(until) => format!(
                "already holds {} live grant(s) of `{}` (at most {cap}), until {until}; extend one instead",
                live.len(),
                rp.name
            ),
            None => format!("at most {cap} live grant(s) of `{}`", rp.name),
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn ids_made_in_one_millisecond_or_on_a_clock_stepping_back_still_increase() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let mut last = GrantId::new_at(t0);
        for i in 0..5_000 {
            // Half on the same instant, then a clock that steps back 10 s.
            let at = if i < 2_500 {
                t0
            } else {
                t0 - TimeDelta::seconds(10)
            };
            let next = GrantId::new_at(at);
            assert!(next > last, "{next} after {last}");
            assert!(next.to_string() > last.to_string(), "text order too");
            last = next;
        }
    }

    pub fn grant(state: GrantState, starts: i64, expires: i64) -> Grant {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let request = ValidGrantRequest {
            user: UserName::parse("eng@example.com").unwrap(),
            role: RoleName::parse("Master Admin").unwrap(),
            ticket: Some(TicketId::parse("CHG0012345").unwrap()),
            justification: Justification::parse("rotate the trunk certificate").unwrap(),
            starts_at: t0 + TimeDelta::seconds(starts),
            expires_at: t0 + TimeDelta::seconds(expires),
        };
        Grant {
            state,
            ..Grant::from_request(request, "test", t0)
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_warning_before_the_end_is_due_once_held_and_inside_the_nudge() {
        let nudge = TimeDelta::seconds(600);
        let mut g = grant(GrantState::Active, 0, 3600);
        assert!(!g.nudge_due(nudge, at(3000)), "the role not added yet");
        g.role_added_at = Some(at(1));
        assert!(!g.nudge_due(nudge, at(2999)));
        assert!(g.nudge_due(nudge, at(3000)));
        assert!(g.nudge_due(nudge, at(3599)));
        assert!(!g.nudge_due(nudge, at(3600)), "over");
        assert!(!g.nudge_due(TimeDelta::zero(), at(3300)), "zero: never");
        g.state = GrantState::Ended;
        assert!(!g.nudge_due(nudge, at(3300)));
    }

    #[test]
    fn lifecycle_by_time() {
        let mut g = grant(GrantState::Approved, 10, 20);
        assert_eq!(g.advance(at(9)), None);
        let t = g.advance(at(10)).unwrap();
        assert_eq!((t.from, t.to), (GrantState::Approved, GrantState::Active));
        g.apply(&t);
        assert!(g.covers(at(10)) && g.covers(at(19)) && !g.covers(at(20)));
        assert_eq!(g.advance(at(19)), None);
        let t = g.advance(at(20)).unwrap();
        assert_eq!(
            (t.to, t.end_reason),
            (GrantState::Ended, Some(EndReason::Expired))
        );
        g.apply(&t);
        assert_eq!(g.ended_at, Some(at(20)));
        assert_eq!(g.advance(at(99)), None);
    }

    #[test]
    fn a_window_missed_entirely_expires_without_activating() {
        let g = grant(GrantState::Approved, 10, 20);
        let t = g.advance(at(25)).unwrap();
        assert_eq!(
            (t.to, t.end_reason),
            (GrantState::Ended, Some(EndReason::Expired))
        );
    }

    #[test]
    fn ending_early() {
        let active = grant(GrantState::Active, 0, 20);
        let t = active.end_early(at(5), EndReason::Dropped).unwrap();
        assert_eq!(
            (t.to, t.end_reason),
            (GrantState::Ended, Some(EndReason::Dropped))
        );
        let approved = grant(GrantState::Approved, 10, 20);
        assert_eq!(
            approved.end_early(at(5), EndReason::Dropped).unwrap().to,
            GrantState::Cancelled
        );
        for s in [GrantState::Ended, GrantState::Denied, GrantState::Cancelled] {
            assert!(
                grant(s, 0, 20)
                    .end_early(at(5), EndReason::Dropped)
                    .is_err()
            );
        }
    }

    #[test]
    fn a_removal_is_overdue_only_past_the_slo_and_only_until_seen() {
        let slo = TimeDelta::seconds(60);
        let mut g = grant(GrantState::Active, 0, 20);
        assert_eq!(g.revocation_overdue(at(200), slo), None, "not ended");
        g.apply(&g.advance(at(20)).unwrap());
        assert_eq!(g.revocation_overdue(at(79), slo), None, "within the SLO");
        assert_eq!(
            g.revocation_overdue(at(80), slo),
            Some(TimeDelta::seconds(60))
        );
        g.role_removed_at = Some(at(90));
        assert_eq!(g.revocation_overdue(at(120), slo), None, "removal seen");
        let cancelled = grant(GrantState::Approved, 10, 20);
        let mut c = cancelled.clone();
        c.apply(&cancelled.end_early(at(5), EndReason::Dropped).unwrap());
        assert_eq!(c.revocation_overdue(at(500), slo), None, "never held");
    }

    #[test]
    fn names_round_trip() {
        for s in GrantState::ALL {
            assert_eq!(s.as_str().parse::<GrantState>().unwrap(), *s);
        }
        for r in EndReason::ALL {
            assert_eq!(r.as_str().parse::<EndReason>().unwrap(), *r);
        }
        assert!("bogus".parse::<GrantState>().is_err());
    }

    #[test]
    fn one_user_has_at_most_the_cap_of_live_grants_of_a_role() {
        let policy = crate::policy::tests::sample();
        let rp = policy
            .role(&RoleName::parse("Master Admin").unwrap())
            .unwrap();
        assert_eq!(rp.max_live_grants, crate::policy::DEFAULT_MAX_LIVE_GRANTS);
        let live = vec![
            grant(GrantState::Active, 0, 3600),
            grant(GrantState::Approved, 100, 7200),
            grant(GrantState::PendingApproval, 0, 600),
        ];
        let refused = live_grants_reason(rp, &live, at(10));
        assert!(!refused.allowed);
        assert_eq!(refused.rule, "max_live_grants");
        assert!(
            refused.message.contains("extend one instead"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains(&at(7200).to_string()),
            "{}",
            refused.message
        );
        // What has ended, or is past its end, does not count.
        let mut over = live.clone();
        over[0].state = GrantState::Ended;
        assert!(live_grants_reason(rp, &over, at(10)).allowed);
        assert!(live_grants_reason(rp, &live[..2], at(10)).allowed);
        assert!(
            live_grants_reason(rp, &live[1..], at(7200)).allowed,
            "past its end"
        );
    }
}
