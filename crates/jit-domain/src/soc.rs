//! What the SOC hears, and how loudly: the severity of each audit event it is
//! told about, and which findings are incidents (told once when they open and
//! once when they resolve) rather than events (told each time).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::reconcile::{FindingAction, FindingKind, SweepKind};

/// P1 wakes someone up; P3 is for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// A break-glass account was used; a revocation is overdue or failed.
    P1,
    /// A role was stripped; another writer keeps re-adding one; an emergency
    /// grant before approval.
    P2,
    /// Information: grants starting and ending, incidents of expected
    /// states, the daily digest.
    P3,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P1 => "P1",
            Self::P2 => "P2",
            Self::P3 => "P3",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "P1" => Some(Self::P1),
            "P2" => Some(Self::P2),
            "P3" => Some(Self::P3),
            _ => None,
        }
    }
}

/// Which audit events are told (to the SOC, or to the people a request
/// concerns) and how loud: the one rule behind [`notifies`] and
/// [`severity`]. `None`: the event stays in the audit log only.
pub fn soc_notice(kind: &str, data: &Value) -> Option<Severity> {
    // A sweep that stripped a role, or failed to, is a new event each time;
    // what a sweep only sees again is an incident, told when it opens and
    // when it resolves.
    let acted =
        || data["actions"].as_u64().unwrap_or(0) > 0 || data["errors"].as_u64().unwrap_or(0) > 0;
    let emergency = data["decision"]["emergency"].as_bool() == Some(true);
    match kind {
        "break_glass_login" | "revocation_overdue" | "converge_failed" => Some(Severity::P1),
        "conflicting_writer_detected" => Some(Severity::P2),
        // Rows for one person under two spellings were made one (a request
        // answered twice by one approver, say): the SOC looks at each.
        "user_names_collided" => Some(Severity::P2),
        "grant_requested" if emergency => Some(Severity::P2),
        // An emergency grant made longer is more unapproved privilege.
        "grant_extended" | "extension_approved" if data["emergency"] == true => Some(Severity::P2),
        "reconcile_run" if acted() => Some(Severity::P2),
        "grant_activated" | "grant_ended" | "incident_opened" | "incident_resolved"
        | "soc_digest" => Some(Severity::P3),
        // Approvers hear of a request that waits for them, and of an
        // extension past the approved end; the requester of the outcome.
        "grant_requested" if data["state"] == "pending_approval" => Some(Severity::P3),
        "grant_approved" | "grant_denied" => Some(Severity::P3),
        "grant_cancelled" if data["from"] == "pending_approval" => Some(Severity::P3),
        "extension_requested" | "extension_approved" | "extension_denied" => Some(Severity::P3),
        // What was done with a grant: the preliminary record when the role
        // is removed, and a final pass only when it found more. A
        // break-glass account's actions follow its P1 login.
        "activity_collected" if data["pass"] == 0 => Some(Severity::P3),
        "activity_amended" => Some(Severity::P3),
        "break_glass_activity" => Some(Severity::P2),
        _ => None,
    }
}

/// Whether an audit event is mailed. The store calls this inside the
/// event's own transaction, so the email is recorded with the event.
pub fn notifies(kind: &str, data: &Value) -> bool {
    soc_notice(kind, data).is_some()
}

/// The severity of an audit event of `kind` with `data`.
pub fn severity(kind: &str, data: &Value) -> Severity {
    soc_notice(kind, data).unwrap_or(Severity::P3)
}

/// Whether a finding is an incident: a state that persists from sweep to
/// sweep (reported and left in place, or a writer that keeps coming back),
/// told when it opens and when it resolves. A strip is an event instead,
/// told each time.
pub fn is_incident(kind: FindingKind, action: FindingAction) -> bool {
    action == FindingAction::Report || kind == FindingKind::ConflictingWriter
}

/// The kinds of incident a sweep of `kind` looks for, and so may resolve
/// when it no longer sees them: OAuth clients are read by the deep sweep only.
pub fn looked_for_by(kind: SweepKind) -> &'static [FindingKind] {
    match kind {
        // Group grants are seen through the Authorization API's holders.
        SweepKind::Holders => &[
            FindingKind::BreakGlassHeld,
            FindingKind::StandingPrivilege,
            FindingKind::RoleAccumulation,
            FindingKind::ConflictingWriter,
            FindingKind::GroupGrant,
        ],
        SweepKind::Deep => &[
            FindingKind::BreakGlassHeld,
            FindingKind::StandingPrivilege,
            FindingKind::RoleAccumulation,
            FindingKind::ConflictingWriter,
            FindingKind::OauthClientPrivileged,
            FindingKind::DirectoryDisagreement,
        ],
    }
}

/// Whether an open incident is over after a completed sweep that looks for
/// it. Most are over as soon as such a sweep did not see them. A conflicting
/// writer is a pattern: its pair is stripped each time, so it is over only
/// once it stayed away for the whole `conflict_window`.
pub fn incident_over(
    kind: FindingKind,
    seen_by_this_sweep: bool,
    last_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    conflict_window: TimeDelta,
) -> bool {
    match kind {
        FindingKind::ConflictingWriter => last_seen < now - conflict_window,
        _ => !seen_by_this_sweep,
    }
}

/// At an account's very first check there is nothing to compare with: a
/// login this recent is raised all the same (it may be the one that
/// matters), an older one only recorded.
pub const FIRST_CHECK_LOOKBACK: TimeDelta = TimeDelta::hours(24);

/// Whether a break-glass account's newest login is news (a P1): newer than
/// the last one seen; at the first check (`previous` is `None`), recent.
/// `Some(None)`: checked before, never logged in.
pub fn login_is_news(
    previous: Option<Option<DateTime<Utc>>>,
    login: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match (previous, login) {
        (_, None) => false,
        (None, Some(at)) => at > now - FIRST_CHECK_LOOKBACK,
        (Some(before), Some(at)) => before.is_none_or(|b| at > b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_rule_says_what_is_told_and_how_loud() {
        use serde_json::json;
        let none = json!({});
        assert_eq!(soc_notice("revocation_overdue", &none), Some(Severity::P1));
        assert_eq!(soc_notice("grant_ended", &none), Some(Severity::P3));
        assert_eq!(soc_notice("grant_extended", &none), None, "audit only");
        assert_eq!(soc_notice("sessions_ended", &none), None, "audit only");
        assert_eq!(soc_notice("reconcile_run", &json!({"actions": 0})), None);
        assert_eq!(
            soc_notice("reconcile_run", &json!({"actions": 1})),
            Some(Severity::P2)
        );
        let emergency = json!({"decision": {"emergency": true}, "state": "approved"});
        assert_eq!(
            soc_notice("grant_requested", &emergency),
            Some(Severity::P2)
        );
        assert!(notifies("extension_requested", &none));
        assert!(!notifies("grant_requested", &json!({"state": "approved"})));
        assert_eq!(severity("grant_extended", &none), Severity::P3);
    }

    #[test]
    fn a_break_glass_login_is_news_once() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let hour = TimeDelta::hours(1);
        assert!(!login_is_news(None, None, now), "never logged in");
        assert!(
            login_is_news(None, Some(now - hour), now),
            "recent, first check"
        );
        assert!(
            !login_is_news(None, Some(now - TimeDelta::days(2)), now),
            "old, first check"
        );
        assert!(
            login_is_news(Some(None), Some(now - TimeDelta::days(2)), now),
            "first ever login"
        );
        assert!(
            login_is_news(Some(Some(now - hour)), Some(now), now),
            "newer"
        );
        assert!(
            !login_is_news(Some(Some(now)), Some(now), now),
            "the same one"
        );
        assert!(!login_is_news(Some(Some(now)), None, now));
    }

    #[test]
    fn severities() {
        let none = json!({});
        assert_eq!(severity("break_glass_login", &none), Severity::P1);
        assert_eq!(severity("revocation_overdue", &none), Severity::P1);
        assert_eq!(severity("converge_failed", &none), Severity::P1);
        assert_eq!(severity("conflicting_writer_detected", &none), Severity::P2);
        let emergency = json!({"decision": {"emergency": true}});
        assert_eq!(severity("grant_requested", &emergency), Severity::P2);
        let extended = json!({"emergency": true});
        assert_eq!(soc_notice("grant_extended", &extended), Some(Severity::P2));
        assert_eq!(
            soc_notice("extension_approved", &extended),
            Some(Severity::P2)
        );
        assert_eq!(
            soc_notice("grant_extended", &json!({"emergency": false})),
            None
        );
        assert_eq!(severity("grant_requested", &none), Severity::P3);
        assert_eq!(
            severity("reconcile_run", &json!({"actions": 1, "errors": 0})),
            Severity::P2
        );
        assert_eq!(
            severity("reconcile_run", &json!({"actions": 0, "errors": 0})),
            Severity::P3
        );
        assert_eq!(severity("incident_opened", &none), Severity::P3);
        assert_eq!(severity("grant_ended", &none), Severity::P3);
        assert!(Severity::P1 < Severity::P3);
        for s in [Severity::P1, Severity::P2, Severity::P3] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn strips_are_events_and_kept_states_are_incidents() {
        use FindingAction::*;
        use FindingKind::*;
        assert!(is_incident(BreakGlassHeld, Report));
        assert!(is_incident(OauthClientPrivileged, Report));
        assert!(is_incident(StandingPrivilege, Report), "a report-only role");
        assert!(is_incident(ConflictingWriter, Strip));
        let later = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(is_incident(ConflictingWriter, StripAfter(later)));
        assert!(!is_incident(StandingPrivilege, Strip));
        assert!(!is_incident(RoleAccumulation, Strip));
    }

    #[test]
    fn an_incident_is_over_when_a_sweep_looking_for_it_misses_it() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let window = TimeDelta::hours(1);
        let now = t0 + TimeDelta::minutes(10);
        use FindingKind::*;
        assert!(incident_over(BreakGlassHeld, false, t0, now, window));
        assert!(!incident_over(BreakGlassHeld, true, now, now, window));
        // A conflicting writer stays open for its window after the last sighting.
        assert!(!incident_over(ConflictingWriter, false, t0, now, window));
        let later = t0 + window + TimeDelta::seconds(1);
        assert!(incident_over(ConflictingWriter, false, t0, later, window));
        assert!(!looked_for_by(SweepKind::Holders).contains(&OauthClientPrivileged));
        assert!(looked_for_by(SweepKind::Deep).contains(&OauthClientPrivileged));
    }
}
