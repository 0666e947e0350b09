//! The reconciler's judgement of one privileged role found in the directory:
//! is it held with cause, and if not, what kind of finding is it and may the
//! broker strip it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::desired::{Desired, desired};
use crate::grant::{Grant, GrantState};
use crate::names::{RoleName, UserName};
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Held, never granted: assigned by hand or by another system.
    StandingPrivilege,
    /// Held after the grant that justified it ended (its removal never landed).
    RoleAccumulation,
    /// A break-glass account holds it: exempt from stripping, reported.
    BreakGlassHeld,
    /// It came back after the broker verified its removal: another writer
    /// (e.g. the IdP's own SCIM app mapping `roles`) re-adds it. Reported,
    /// not fought.
    ConflictingWriter,
    /// An OAuth client (an integration, not a person) holds it: reported only,
    /// since stripping a client's role can break an integration.
    OauthClientPrivileged,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandingPrivilege => "standing_privilege",
            Self::RoleAccumulation => "role_accumulation",
            Self::BreakGlassHeld => "break_glass_held",
            Self::ConflictingWriter => "conflicting_writer",
            Self::OauthClientPrivileged => "oauth_client_privileged",
        }
    }
}

/// What the reconciler does about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingAction {
    /// Converge removes the role (and verifies by reading the user back).
    Strip,
    /// Only reported: break-glass, a conflicting writer, or a role the policy
    /// marks `report_only`.
    Report,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub kind: FindingKind,
    pub action: FindingAction,
    pub detail: String,
}

/// Judges `role` held by `user`. `grants`: every grant of the pair (any
/// state); `stripped_before`: an earlier sweep verified a removal of this pair.
/// `grace`: a grant that ended less than this long ago is left to its own
/// expiry job (the scheduler is on it), not reported.
pub fn judge(
    policy: &Policy,
    user: &UserName,
    role: &RoleName,
    grants: &[Grant],
    stripped_before: bool,
    grace: TimeDelta,
    now: DateTime<Utc>,
) -> Option<Judgement> {
    let report_only = policy.role(role).is_some_and(|r| r.report_only);
    let strip = if report_only {
        FindingAction::Report
    } else {
        FindingAction::Strip
    };
    match desired(policy, user, role, grants, now) {
        Desired::Unmanaged | Desired::HeldByGrant { .. } => None,
        Desired::HeldByBreakGlass => Some(Judgement {
            kind: FindingKind::BreakGlassHeld,
            action: FindingAction::Report,
            detail: format!("break-glass account `{user}` holds `{role}`"),
        }),
        Desired::Absent => {
            let last = grants
                .iter()
                .filter(|g| {
                    g.state == GrantState::Ended
                        || (g.state == GrantState::Active && g.expires_at <= now)
                })
                .max_by_key(|g| g.ended_at.unwrap_or(g.expires_at));
            if let Some(g) = last {
                let ended = g.ended_at.unwrap_or(g.expires_at);
                if now - ended < grace && g.role_removed_at.is_none() {
                    return None;
                }
                if let Some(removed) = g.role_removed_at {
                    return Some(Judgement {
                        kind: FindingKind::ConflictingWriter,
                        action: FindingAction::Report,
                        detail: format!(
                            "`{role}` is back on `{user}` after the broker verified its removal at {removed} (grant {}): another system writes `roles`",
                            g.id
                        ),
                    });
                }
                return Some(Judgement {
                    kind: FindingKind::RoleAccumulation,
                    action: strip,
                    detail: format!(
                        "`{user}` still holds `{role}` after grant {} ended at {ended} (ticket {})",
                        g.id,
                        g.ticket.as_ref().map_or("none", |t| t.as_str())
                    ),
                });
            }
            if stripped_before {
                return Some(Judgement {
                    kind: FindingKind::ConflictingWriter,
                    action: FindingAction::Report,
                    detail: format!(
                        "`{role}` is back on `{user}` after an earlier sweep removed it: another system writes `roles`"
                    ),
                });
            }
            Some(Judgement {
                kind: FindingKind::StandingPrivilege,
                action: strip,
                detail: format!("`{user}` holds `{role}` without any grant"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::tests::grant;
    use crate::policy::tests::sample;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn judge_at(
        grants: &[Grant],
        stripped: bool,
        now: i64,
    ) -> Option<(FindingKind, FindingAction)> {
        let g = grant(GrantState::Active, 0, 10);
        judge(
            &sample(),
            &g.user,
            &g.role,
            grants,
            stripped,
            TimeDelta::seconds(60),
            t(now),
        )
        .map(|j| (j.kind, j.action))
    }

    #[test]
    fn held_with_cause_is_no_finding() {
        assert_eq!(
            judge_at(&[grant(GrantState::Active, 0, 100)], false, 50),
            None
        );
    }

    #[test]
    fn held_without_any_grant_is_standing_privilege() {
        assert_eq!(
            judge_at(&[], false, 50),
            Some((FindingKind::StandingPrivilege, FindingAction::Strip))
        );
        // A grant not yet started does not entitle anyone.
        assert_eq!(
            judge_at(&[grant(GrantState::Approved, 100, 200)], false, 50),
            Some((FindingKind::StandingPrivilege, FindingAction::Strip))
        );
    }

    #[test]
    fn held_after_the_grant_ended_is_accumulation_after_the_grace() {
        let mut ended = grant(GrantState::Ended, 0, 100);
        ended.ended_at = Some(t(100));
        assert_eq!(
            judge_at(&[ended.clone()], false, 130),
            None,
            "expiry job still due"
        );
        assert_eq!(
            judge_at(&[ended.clone()], false, 200),
            Some((FindingKind::RoleAccumulation, FindingAction::Strip))
        );
        // Expired but never advanced (broker down): the same.
        assert_eq!(
            judge_at(&[grant(GrantState::Active, 0, 100)], false, 200),
            Some((FindingKind::RoleAccumulation, FindingAction::Strip))
        );
    }

    #[test]
    fn back_after_a_verified_removal_is_a_conflicting_writer_reported_not_fought() {
        let mut ended = grant(GrantState::Ended, 0, 100);
        ended.ended_at = Some(t(100));
        ended.role_removed_at = Some(t(101));
        assert_eq!(
            judge_at(&[ended], false, 130),
            Some((FindingKind::ConflictingWriter, FindingAction::Report))
        );
        assert_eq!(
            judge_at(&[], true, 50),
            Some((FindingKind::ConflictingWriter, FindingAction::Report))
        );
    }

    #[test]
    fn break_glass_is_reported_and_baseline_roles_ignored() {
        let p = sample();
        let bg = UserName::parse("breakglass@example.com").unwrap();
        let admin = RoleName::parse("Master Admin").unwrap();
        let j = judge(&p, &bg, &admin, &[], false, TimeDelta::seconds(60), t(0)).unwrap();
        assert_eq!(
            (j.kind, j.action),
            (FindingKind::BreakGlassHeld, FindingAction::Report)
        );
        let employee = RoleName::parse("Employee").unwrap();
        assert_eq!(
            judge(&p, &bg, &employee, &[], false, TimeDelta::seconds(60), t(0)),
            None
        );
    }

    #[test]
    fn report_only_roles_are_not_stripped() {
        let p = sample();
        let user = UserName::parse("eng@example.com").unwrap();
        let rec = RoleName::parse("Recording Admin").unwrap();
        let j = judge(&p, &user, &rec, &[], false, TimeDelta::seconds(60), t(0)).unwrap();
        assert_eq!(
            (j.kind, j.action),
            (FindingKind::StandingPrivilege, FindingAction::Report)
        );
    }
}
