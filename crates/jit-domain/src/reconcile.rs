//! The reconciler's judgement of one privileged role found in the directory:
//! is it held with cause, and if not, what kind of finding is it and may the
//! broker strip it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::desired::{Desired, desired};
use crate::grant::Grant;
use crate::lifecycle::GrantState;
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
    /// It keeps coming back after verified removals (`ConflictRule`): another
    /// writer (e.g. the IdP's own SCIM app mapping `roles`) re-adds it.
    /// Still stripped, with a growing delay, and raised to the SOC once.
    ConflictingWriter,
    /// An OAuth client (an integration, not a person) holds it: reported only,
    /// since stripping a client's role can break an integration.
    OauthClientPrivileged,
    /// A Genesys Cloud group holds it: every member holds it without a
    /// grant. Stripped from the group unless the policy names the group as
    /// an exception (then reported, with the policy's reason).
    GroupGrant,
    /// SCIM's `roles` and the Authorization API disagree about whether a
    /// user holds a privileged role: reported (the grants decide a strip).
    DirectoryDisagreement,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandingPrivilege => "standing_privilege",
            Self::RoleAccumulation => "role_accumulation",
            Self::BreakGlassHeld => "break_glass_held",
            Self::ConflictingWriter => "conflicting_writer",
            Self::OauthClientPrivileged => "oauth_client_privileged",
            Self::GroupGrant => "group_grant",
            Self::DirectoryDisagreement => "directory_disagreement",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::StandingPrivilege,
            Self::RoleAccumulation,
            Self::BreakGlassHeld,
            Self::ConflictingWriter,
            Self::OauthClientPrivileged,
            Self::GroupGrant,
            Self::DirectoryDisagreement,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How a sweep finds the privileged roles held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    /// Asks the directory for the holders of each privileged role: a few
    /// requests whatever the size of the org, so it can run every minute.
    Holders,
    /// Lists every user, page by page: defence in depth against a holders
    /// answer that leaves someone out.
    Deep,
}

impl SweepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holders => "holders",
            Self::Deep => "deep",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "holders" => Some(Self::Holders),
            "deep" => Some(Self::Deep),
            _ => None,
        }
    }
}

/// What the reconciler does about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingAction {
    /// Converge removes the role (and verifies by reading the user back).
    Strip,
    /// Strip, but not before `until`: the pair keeps coming back, and the
    /// delay between strips grows so the broker does not hammer the directory.
    StripAfter(DateTime<Utc>),
    /// Only reported: a break-glass account, or a role the policy marks
    /// `report_only` (another system owns it, by the operator's choice).
    Report,
}

/// What a sweep did about a finding, as its record and the SOC see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingOutcome {
    /// Stripped, and the removal verified.
    Removed,
    /// A dry run: it would have been stripped.
    WouldRemove,
    /// Left in place and reported (break-glass, `report_only`).
    Reported,
    /// Stripped before; the next strip waits (a conflicting writer).
    Deferred,
    /// The strip failed; the next sweep tries again.
    Failed,
}

impl FindingOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::WouldRemove => "would_remove",
            Self::Reported => "reported",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for FindingOutcome {
    type Err = crate::names::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Removed,
            Self::WouldRemove,
            Self::Reported,
            Self::Deferred,
            Self::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| crate::names::UnknownName(s.to_owned()))
    }
}

/// A privileged role granted to a group: whoever is in the group holds it
/// with no grant of their own, so it is stripped from the group, unless the
/// policy lists the group as an exception (`[groups."name"]`) or marks the
/// role `report_only` (another system owns it). The detail
/// names every member, so the SOC sees who held it.
pub fn judge_group_grant(
    policy: &crate::policy::Policy,
    group: &str,
    role: &RoleName,
    members: &[String],
    divisions: &[String],
) -> Judgement {
    let who = match members {
        [] => "no members".to_owned(),
        _ => format!("members: {}", members.join(", ")),
    };
    let divisions = divisions.join(", ");
    if policy.role(role).is_some_and(|r| r.report_only) {
        return Judgement {
            kind: FindingKind::GroupGrant,
            action: FindingAction::Report,
            detail: format!(
                "group `{group}` holds `{role}` in divisions [{divisions}] ({who}); the policy marks the role report-only"
            ),
            conflict: None,
            granted_by: None,
        };
    }
    match policy.group_exception(group) {
        Some(reason) => Judgement {
            kind: FindingKind::GroupGrant,
            action: FindingAction::Report,
            detail: format!(
                "group `{group}` holds `{role}` in divisions [{divisions}] ({who}); the policy allows it: {reason}"
            ),
            conflict: None,
            granted_by: None,
        },
        None => Judgement {
            kind: FindingKind::GroupGrant,
            action: FindingAction::Strip,
            detail: format!(
                "group `{group}` holds `{role}` in divisions [{divisions}], so its {who} hold it without a grant"
            ),
            conflict: None,
            granted_by: None,
        },
    }
}

/// SCIM's `roles` and the grants (Genesys's Authorization API, read again
/// just now) about one user and role: `None` when they agree; a reported
/// finding when they do not (the grants, not SCIM, decide any strip).
pub fn judge_disagreement(
    user: &UserName,
    role: &RoleName,
    scim_lists: bool,
    grants_show: bool,
) -> Option<Judgement> {
    if scim_lists == grants_show {
        return None;
    }
    let detail = if scim_lists {
        format!(
            "SCIM's roles lists `{role}` for {user}, but the Authorization API shows no grant of it in their own name (a group's grant, or a SCIM view that lags)"
        )
    } else {
        format!(
            "the Authorization API shows {user} holding `{role}` by a grant of their own, but SCIM's roles does not list it (a grant in another division?)"
        )
    };
    Some(Judgement {
        kind: FindingKind::DirectoryDisagreement,
        action: FindingAction::Report,
        detail,
        conflict: None,
        granted_by: None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub kind: FindingKind,
    pub action: FindingAction,
    pub detail: String,
    /// Set on the sweep that first sees a conflicting-writer pattern: the SOC
    /// is told once per pattern, not on every sweep.
    pub conflict: Option<ConflictAlert>,
    /// Who granted the role, where the target's audit trail says (set by
    /// the caller after a read; never a reason to act).
    pub granted_by: Option<String>,
}

/// When a role coming back is a pattern rather than a one-off, and how long
/// the broker waits between strips of such a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictRule {
    /// Removals older than this are forgotten.
    pub window: TimeDelta,
    /// Re-appearances within the window that make a pattern (at least 1).
    pub threshold: u32,
    /// The wait before the first strip once the pattern holds; doubled for
    /// every further re-appearance, up to `max_delay`.
    pub base_delay: TimeDelta,
    pub max_delay: TimeDelta,
}

impl Default for ConflictRule {
    fn default() -> Self {
        Self {
            window: TimeDelta::hours(1),
            threshold: 2,
            base_delay: TimeDelta::minutes(1),
            max_delay: TimeDelta::minutes(15),
        }
    }
}

impl ConflictRule {
    /// The wait after the last removal before the next strip, given
    /// `reappearances` within the window: none below the threshold.
    pub fn delay(&self, reappearances: u32) -> TimeDelta {
        let threshold = self.threshold.max(1);
        if reappearances < threshold {
            return TimeDelta::zero();
        }
        let doublings = (reappearances - threshold).min(20);
        (self.base_delay * 2i32.pow(doublings)).min(self.max_delay)
    }
}

/// What the store remembers of one (user, role) pair beyond its grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairHistory {
    /// When sweeps removed the role from the pair, verified by read-back.
    pub sweep_removals: Vec<DateTime<Utc>>,
    /// When the SOC was last told that another writer re-adds this pair.
    pub last_conflict_alert: Option<DateTime<Utc>>,
}

/// The SOC alert for a conflicting-writer pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictAlert {
    /// Every verified removal within the window, oldest first; each was
    /// followed by the role coming back.
    pub removals: Vec<DateTime<Utc>>,
    pub reappearances: u32,
    pub window_secs: i64,
    /// When the broker will strip it next.
    pub next_strip_at: DateTime<Utc>,
}

/// The reconciler's settings that `judge` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRules {
    /// A grant that ended less than this long ago is left to its own expiry
    /// job (the scheduler is on it), not reported.
    pub grace: TimeDelta,
    pub conflict: ConflictRule,
}

impl Default for SweepRules {
    fn default() -> Self {
        Self {
            grace: TimeDelta::seconds(60),
            conflict: ConflictRule::default(),
        }
    }
}

/// Judges `role` held by `user`. `grants`: every grant of the pair (any
/// state); `history`: the pair's verified removals by earlier sweeps and its
/// last conflicting-writer alert.
///
/// A privileged role held without cause is stripped whatever its history;
/// only the policy (`report_only`) or a break-glass listing keeps it.
pub fn judge(
    policy: &Policy,
    user: &UserName,
    role: &RoleName,
    grants: &[Grant],
    history: &PairHistory,
    rules: &SweepRules,
    now: DateTime<Utc>,
) -> Option<Judgement> {
    let rule = &rules.conflict;
    let report_only = policy.role(role).is_some_and(|r| r.report_only);
    let finding = |kind, action, detail| {
        Some(Judgement {
            kind,
            action: if report_only {
                FindingAction::Report
            } else {
                action
            },
            detail,
            conflict: None,
            granted_by: None,
        })
    };
    match desired(policy, user, role, grants, now) {
        Desired::Unmanaged | Desired::HeldByGrant { .. } => None,
        Desired::HeldByBreakGlass => Some(Judgement {
            kind: FindingKind::BreakGlassHeld,
            action: FindingAction::Report,
            detail: format!("break-glass account `{user}` holds `{role}`"),
            conflict: None,
            granted_by: None,
        }),
        Desired::Absent => {
            let last = grants
                .iter()
                .filter(|g| {
                    g.state == GrantState::Ended
                        || (g.state == GrantState::Active && g.expires_at <= now)
                })
                .max_by_key(|g| g.ended_at.unwrap_or(g.expires_at));
            if let Some(g) = last
                && g.role_removed_at.is_none()
            {
                let ended = g.ended_at.unwrap_or(g.expires_at);
                if now - ended < rules.grace {
                    return None;
                }
                return finding(
                    FindingKind::RoleAccumulation,
                    FindingAction::Strip,
                    format!(
                        "`{user}` still holds `{role}` after grant {} ended at {ended} (ticket {})",
                        g.id,
                        g.ticket.as_ref().map_or("none", |t| t.as_str())
                    ),
                );
            }
            // Every verified removal of the pair, by a grant's end or a sweep.
            let mut removals: Vec<DateTime<Utc>> = grants
                .iter()
                .filter_map(|g| g.role_removed_at)
                .chain(history.sweep_removals.iter().copied())
                .filter(|at| *at <= now)
                .collect();
            removals.sort();
            removals.dedup();
            let Some(&last_removal) = removals.last() else {
                return finding(
                    FindingKind::StandingPrivilege,
                    FindingAction::Strip,
                    format!("`{user}` holds `{role}` without any grant"),
                );
            };
            let recent: Vec<DateTime<Utc>> = removals
                .into_iter()
                .filter(|at| now - *at <= rule.window)
                .collect();
            // Each recent removal was followed by the role coming back: the
            // earlier ones were stripped again later, the last one is held now.
            let reappearances = u32::try_from(recent.len()).unwrap_or(u32::MAX);
            // A role the policy hands to another writer is never a conflict.
            if reappearances < rule.threshold.max(1) || report_only {
                return finding(
                    FindingKind::StandingPrivilege,
                    FindingAction::Strip,
                    format!(
                        "`{role}` is back on `{user}` after the broker verified its removal at {last_removal}: re-added outside the broker"
                    ),
                );
            }
            let next_strip_at = last_removal + rule.delay(reappearances);
            let action = if now >= next_strip_at {
                FindingAction::Strip
            } else {
                FindingAction::StripAfter(next_strip_at)
            };
            let pattern_start = recent.first().copied().unwrap_or(last_removal);
            let alerted = history
                .last_conflict_alert
                .is_some_and(|at| at >= pattern_start);
            let mut judgement = finding(
                FindingKind::ConflictingWriter,
                action,
                format!(
                    "`{role}` came back on `{user}` {reappearances} times within {} after verified removals (last at {last_removal}): another system writes `roles`",
                    crate::policy::format_duration(rule.window)
                ),
            )?;
            if !alerted {
                judgement.conflict = Some(ConflictAlert {
                    removals: recent,
                    reappearances,
                    window_secs: rule.window.num_seconds(),
                    next_strip_at,
                });
            }
            Some(judgement)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::tests::grant;
    use crate::policy::tests::sample;

    #[test]
    fn a_finding_outcome_reads_back_as_written() {
        for o in [
            FindingOutcome::Removed,
            FindingOutcome::WouldRemove,
            FindingOutcome::Reported,
            FindingOutcome::Deferred,
            FindingOutcome::Failed,
        ] {
            assert_eq!(o.as_str().parse::<FindingOutcome>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert!("stripped".parse::<FindingOutcome>().is_err());
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn sweeps(removed_at: &[i64]) -> PairHistory {
        PairHistory {
            sweep_removals: removed_at.iter().map(|s| t(*s)).collect(),
            last_conflict_alert: None,
        }
    }

    fn judged(grants: &[Grant], history: &PairHistory, now: i64) -> Option<Judgement> {
        let g = grant(GrantState::Active, 0, 10);
        judge(
            &sample(),
            &g.user,
            &g.role,
            grants,
            history,
            &SweepRules::default(),
            t(now),
        )
    }

    fn judge_at(
        grants: &[Grant],
        history: &PairHistory,
        now: i64,
    ) -> Option<(FindingKind, FindingAction)> {
        judged(grants, history, now).map(|j| (j.kind, j.action))
    }

    /// A grant that ended at 100 s and whose removal was verified at 101 s.
    fn ended_and_removed() -> Grant {
        let mut ended = grant(GrantState::Ended, 0, 100);
        ended.ended_at = Some(t(100));
        ended.role_removed_at = Some(t(101));
        ended
    }

    use FindingAction::{Report, Strip, StripAfter};
    use FindingKind::{ConflictingWriter, RoleAccumulation, StandingPrivilege};

    #[test]
    fn held_with_cause_is_no_finding() {
        let active = grant(GrantState::Active, 0, 100);
        assert_eq!(judge_at(&[active], &sweeps(&[]), 50), None);
    }

    #[test]
    fn held_without_any_grant_is_standing_privilege() {
        assert_eq!(
            judge_at(&[], &sweeps(&[]), 50),
            Some((StandingPrivilege, Strip))
        );
        // A grant not yet started does not entitle anyone.
        let later = grant(GrantState::Approved, 100, 200);
        assert_eq!(
            judge_at(&[later], &sweeps(&[]), 50),
            Some((StandingPrivilege, Strip))
        );
    }

    #[test]
    fn held_after_the_grant_ended_is_accumulation_after_the_grace() {
        let mut ended = grant(GrantState::Ended, 0, 100);
        ended.ended_at = Some(t(100));
        let none = sweeps(&[]);
        assert_eq!(
            judge_at(&[ended.clone()], &none, 130),
            None,
            "expiry job still due"
        );
        assert_eq!(
            judge_at(&[ended], &none, 200),
            Some((RoleAccumulation, Strip))
        );
        // Expired but never advanced (broker down): the same.
        let stale = grant(GrantState::Active, 0, 100);
        assert_eq!(
            judge_at(&[stale], &none, 200),
            Some((RoleAccumulation, Strip))
        );
    }

    /// A table row: its name, the pair's grants and sweep history, when the
    /// sweep looks, and what it decides.
    type Row = (
        &'static str,
        Vec<Grant>,
        PairHistory,
        i64,
        FindingKind,
        FindingAction,
    );

    #[test]
    fn a_role_back_after_a_verified_removal_is_stripped_whatever_its_history() {
        let hour = 3600;
        let rows: Vec<Row> = vec![
            (
                "re-added just after the grant ended",
                vec![ended_and_removed()],
                sweeps(&[]),
                130,
                StandingPrivilege,
                Strip,
            ),
            (
                "re-added long after the grant ended",
                vec![ended_and_removed()],
                sweeps(&[]),
                30 * 24 * hour,
                StandingPrivilege,
                Strip,
            ),
            (
                "re-added after an earlier strip, no grant ever",
                vec![],
                sweeps(&[50]),
                400,
                StandingPrivilege,
                Strip,
            ),
            (
                "an old strip and an old grant removal are out of the window",
                vec![ended_and_removed()],
                sweeps(&[hour]),
                5 * hour,
                StandingPrivilege,
                Strip,
            ),
            (
                "re-added twice within the window, the delay already past",
                vec![ended_and_removed()],
                sweeps(&[200]),
                200 + 61,
                ConflictingWriter,
                Strip,
            ),
            (
                "re-added twice within the window, inside the first delay",
                vec![ended_and_removed()],
                sweeps(&[200]),
                230,
                ConflictingWriter,
                StripAfter(t(260)),
            ),
            (
                "a third time: the delay doubles",
                vec![ended_and_removed()],
                sweeps(&[200, 400]),
                500,
                ConflictingWriter,
                StripAfter(t(520)),
            ),
            (
                "many times: the delay stops growing at its maximum",
                vec![],
                sweeps(&[100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]),
                1100,
                ConflictingWriter,
                StripAfter(t(1000 + 15 * 60)),
            ),
        ];
        for (name, grants, history, now, kind, action) in rows {
            assert_eq!(
                judge_at(&grants, &history, now),
                Some((kind, action)),
                "{name}"
            );
        }
    }

    #[test]
    fn a_conflicting_writer_is_raised_once_per_pattern() {
        let history = sweeps(&[200]);
        let first = judged(&[ended_and_removed()], &history, 230).unwrap();
        let alert = first.conflict.expect("the first sighting raises it");
        assert_eq!(alert.removals, [t(101), t(200)]);
        assert_eq!((alert.reappearances, alert.window_secs), (2, 3600));
        assert_eq!(alert.next_strip_at, t(260));

        // Told at 230 s: the same pattern is not raised again ...
        let told = PairHistory {
            last_conflict_alert: Some(t(230)),
            ..sweeps(&[200, 300])
        };
        let again = judged(&[ended_and_removed()], &told, 400).unwrap();
        assert_eq!(again.kind, ConflictingWriter);
        assert_eq!(again.conflict, None);
        // ... but a new pattern, after the old one left the window, is.
        let later = PairHistory {
            last_conflict_alert: Some(t(230)),
            ..sweeps(&[200, 300, 10_000, 10_100])
        };
        assert!(
            judged(&[ended_and_removed()], &later, 10_200)
                .unwrap()
                .conflict
                .is_some()
        );
    }

    #[test]
    fn break_glass_is_reported_and_baseline_roles_ignored() {
        let p = sample();
        let bg = UserName::parse("breakglass@example.com").unwrap();
        let admin = RoleName::parse("Master Admin").unwrap();
        let rules = SweepRules::default();
        let j = judge(&p, &bg, &admin, &[], &sweeps(&[]), &rules, t(0)).unwrap();
        assert_eq!((j.kind, j.action), (FindingKind::BreakGlassHeld, Report));
        let employee = RoleName::parse("Employee").unwrap();
        assert_eq!(
            judge(&p, &bg, &employee, &[], &sweeps(&[]), &rules, t(0)),
            None
        );
    }

    /// Only the policy hands a role to another writer: a report-only role is
    /// reported, never stripped, and never called a conflict.
    #[test]
    fn report_only_roles_are_not_stripped_nor_fought() {
        let p = sample();
        let user = UserName::parse("eng@example.com").unwrap();
        let rec = RoleName::parse("Recording Admin").unwrap();
        let rules = SweepRules::default();
        let j = judge(&p, &user, &rec, &[], &sweeps(&[]), &rules, t(0)).unwrap();
        assert_eq!((j.kind, j.action), (StandingPrivilege, Report));
        let j = judge(&p, &user, &rec, &[], &sweeps(&[10, 20, 30]), &rules, t(40)).unwrap();
        assert_eq!(
            (j.kind, j.action, j.conflict),
            (StandingPrivilege, Report, None)
        );
    }

    #[test]
    fn the_delay_grows_from_the_threshold_and_is_capped() {
        let rule = ConflictRule::default();
        let secs: Vec<i64> = (0..8).map(|n| rule.delay(n).num_seconds()).collect();
        assert_eq!(secs, [0, 0, 60, 120, 240, 480, 900, 900]);
        assert_eq!(rule.delay(u32::MAX).num_seconds(), 900);
    }

    #[test]
    fn a_group_grant_is_stripped_unless_the_policy_allows_the_group() {
        let role = RoleName::parse("Master Admin").unwrap();
        let members = ["alice@example.com".to_owned(), "bob@example.com".to_owned()];
        let stripped = judge_group_grant(&sample(), "Admins", &role, &members, &["*".into()]);
        assert_eq!(
            (stripped.kind, stripped.action),
            (FindingKind::GroupGrant, FindingAction::Strip)
        );
        assert!(
            stripped
                .detail
                .contains("alice@example.com, bob@example.com")
        );
        let text = format!(
            "{}\n[groups.Admins]\nreason = \"the vendor's team until go-live\"\n",
            crate::policy::tests::SAMPLE
        );
        let allowing = crate::policy::Policy::from_toml("p.toml", &text).unwrap();
        let reported = judge_group_grant(&allowing, "Admins", &role, &[], &["*".into()]);
        assert_eq!(reported.action, FindingAction::Report);
        let report_only = crate::policy::Policy::from_toml(
            "p.toml",
            &crate::policy::tests::SAMPLE.replace(
                "[roles.\"Master Admin\"]",
                "[roles.\"Master Admin\"]\nreport_only = true",
            ),
        )
        .unwrap();
        let kept = judge_group_grant(&report_only, "Admins", &role, &members, &["*".into()]);
        assert_eq!(kept.action, FindingAction::Report);
        assert!(kept.detail.contains("report-only"));
        assert!(
            reported.detail.contains("until go-live") && reported.detail.contains("no members")
        );
    }

    #[test]
    fn scim_and_the_grants_disagreeing_is_reported_either_way() {
        let (user, role) = (
            UserName::parse("bob@example.com").unwrap(),
            RoleName::parse("Master Admin").unwrap(),
        );
        assert_eq!(judge_disagreement(&user, &role, true, true), None);
        assert_eq!(judge_disagreement(&user, &role, false, false), None);
        for (scim, grants) in [(true, false), (false, true)] {
            let j = judge_disagreement(&user, &role, scim, grants).unwrap();
            assert_eq!(
                (j.kind, j.action),
                (FindingKind::DirectoryDisagreement, FindingAction::Report)
            );
        }
    }
}
