//! The policy file (`policies/*.toml`): the role catalogue and break-glass accounts.
//!
//! Parsed from text (no IO here); every error names the file, the line and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::names::{RoleName, UserName};
use crate::ticket::ChangeState;

/// No grant may last longer than this, whatever a policy file says: a longer
/// one is standing privilege by another name.
pub const HARD_MAX_DURATION: TimeDelta = TimeDelta::hours(24);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePolicy {
    pub name: RoleName,
    /// Privileged roles are held only under an active grant (or by break-glass
    /// accounts). Non-privileged entries document baseline roles the broker
    /// must never touch.
    pub privileged: bool,
    pub default_duration: TimeDelta,
    pub max_duration: TimeDelta,
    pub eligible: Eligibility,
    /// Whether a request must cite a ServiceNow change (default: yes).
    pub require_ticket: bool,
    /// Change states in which a grant may be made or kept (default: Implement).
    pub change_states: BTreeSet<ChangeState>,
    /// Who, on the change, the grant's user must be (default: its assignee).
    pub requester: RequesterMatch,
    /// Approvals needed before the grant may start; more than 0 leaves the
    /// grant `pending_approval`.
    pub approvals: u8,
    /// Who may approve (never the requester): users and OIDC groups.
    pub approvers: Eligibility,
    /// An extension past the approved end needs the same approvals as the
    /// request (default: yes exactly when `approvals` > 0; `false` is the
    /// explicit opt-out). Roles without approvals extend in place.
    pub extension_needs_approval: bool,
    /// Off unless named: changes of this type may be granted before their
    /// approval arrives, for a short time, with the SOC alerted.
    pub emergency: Option<EmergencyRule>,
    /// The reconciler reports this role held without cause but does not
    /// strip it (default: it strips).
    pub report_only: bool,
    /// Genesys Cloud: the divisions a grant of this role covers, by name;
    /// `*` is every division (the default), `home` the org's home division.
    pub divisions: Vec<String>,
    /// The Slack channel its approval requests go to (default:
    /// `slack.default_channel`).
    pub slack_channel: Option<String>,
    /// How long before a grant's end its holder is offered Extend and Drop
    /// in Slack (default [`DEFAULT_EXPIRY_NUDGE`]; zero: never).
    pub expiry_nudge: TimeDelta,
    /// How many grants of this role one user may have live (waiting for
    /// approval, approved, active) at once (default
    /// [`DEFAULT_MAX_LIVE_GRANTS`]): more is a storm, not a need; extend
    /// instead.
    pub max_live_grants: u16,
}

/// The default cap on one user's live grants of one role.
pub const DEFAULT_MAX_LIVE_GRANTS: u16 = 3;

/// The default warning before a grant ends.
pub const DEFAULT_EXPIRY_NUDGE: TimeDelta = TimeDelta::minutes(10);

/// Who may hold a role (or approve one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Eligibility {
    /// `eligible_users = ["*"]`: anyone the API or the login vouches for.
    pub anyone: bool,
    pub users: BTreeSet<UserName>,
    /// OIDC group names (known for web-form requests).
    pub groups: BTreeSet<String>,
}

impl Eligibility {
    pub fn admits(&self, user: &UserName, groups: &BTreeSet<String>) -> bool {
        self.anyone
            || self.users.contains(user)
            || groups.intersection(&self.groups).next().is_some()
    }

    pub fn is_empty(&self) -> bool {
        !self.anyone && self.users.is_empty() && self.groups.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequesterMatch {
    /// The grant's user is the change's `assigned_to`.
    Assignee,
    /// The grant's user is a member of the change's `assignment_group`.
    AssignmentGroup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyRule {
    /// The `change_request.type` value, e.g. `emergency`.
    pub change_type: String,
    pub max_duration: TimeDelta,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    roles: BTreeMap<RoleName, RolePolicy>,
    break_glass: BTreeSet<UserName>,
    /// Genesys Cloud groups allowed to hold privileged roles, with why
    /// (`[groups."name"] reason = "…"`): reported, never stripped.
    group_exceptions: BTreeMap<String, String>,
    /// Permissions that make any role carrying them privileged, whatever it
    /// is called (a renamed clone of Master Admin is as dangerous).
    pub privileged_permissions: Vec<String>,
    /// How far ahead a grant may be scheduled to start.
    pub max_schedule_ahead: TimeDelta,
    /// How long a request may wait for its approvals before it lapses.
    pub approval_timeout: TimeDelta,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    #[serde(default)]
    max_schedule_ahead: Option<Spanned<String>>,
    #[serde(default)]
    privileged_permissions: Vec<Spanned<String>>,
    #[serde(default)]
    approval_timeout: Option<Spanned<String>>,
    roles: Spanned<BTreeMap<String, Spanned<RawRole>>>,
    #[serde(default)]
    break_glass: Option<RawBreakGlass>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<RawGroupException>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupException {
    reason: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default = "yes")]
    privileged: bool,
    default_duration: Spanned<String>,
    max_duration: Spanned<String>,
    #[serde(default)]
    eligible_users: Vec<Spanned<String>>,
    #[serde(default)]
    eligible_groups: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    require_ticket: bool,
    #[serde(default)]
    change_states: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    requester: Option<Spanned<String>>,
    #[serde(default)]
    approvals: Option<Spanned<i64>>,
    #[serde(default)]
    approver_users: Vec<Spanned<String>>,
    #[serde(default)]
    approver_groups: Vec<Spanned<String>>,
    #[serde(default)]
    extension_needs_approval: Option<bool>,
    #[serde(default)]
    emergency: Option<Spanned<RawEmergency>>,
    #[serde(default)]
    report_only: bool,
    #[serde(default)]
    divisions: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    slack_channel: Option<Spanned<String>>,
    #[serde(default)]
    expiry_nudge: Option<Spanned<String>>,
    #[serde(default)]
    max_live_grants: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmergency {
    change_type: Spanned<String>,
    max_duration: Spanned<String>,
}

/// The default wait for approvals before a request lapses.
pub const DEFAULT_APPROVAL_TIMEOUT: TimeDelta = TimeDelta::hours(4);

/// The most approvals a policy may ask for; more is a typo.
pub const MAX_APPROVALS: i64 = 5;

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreakGlass {
    users: Vec<Spanned<String>>,
}

/// Parses a humantime duration ("90m", "4h", "1h 30m").
pub fn parse_duration(raw: &str) -> Result<TimeDelta, String> {
    let d = humantime::parse_duration(raw.trim())
        .map_err(|e| format!("`{raw}` is not a duration like \"30m\" or \"4h\": {e}"))?;
    TimeDelta::from_std(d).map_err(|_| format!("`{raw}` is too long"))
}

/// Formats a duration the way the policy file spells it.
pub fn format_duration(d: TimeDelta) -> String {
    d.to_std()
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_else(|_| format!("{}s", d.num_seconds()))
}

/// Reads one policy file, each error naming the file, line and key.
struct Reader<'a> {
    file: &'a str,
    text: &'a str,
}

impl Reader<'_> {
    fn err(&self, span: Option<std::ops::Range<usize>>, key: &str, message: String) -> PolicyError {
        PolicyError {
            file: self.file.to_owned(),
            line: span.map_or(1, |s| line_of(self.text, s.start)),
            key: key.to_owned(),
            message,
        }
    }

    fn user(&self, user: &Spanned<String>, key: &str) -> Result<UserName, PolicyError> {
        UserName::parse(user.get_ref())
            .map_err(|e| self.err(Some(user.span()), key, format!("user name {}", e.message)))
    }

    fn duration(&self, v: &Spanned<String>, key: &str) -> Result<TimeDelta, PolicyError> {
        parse_duration(v.get_ref()).map_err(|m| self.err(Some(v.span()), key, m))
    }

    fn role(&self, name: &str, role: &Spanned<RawRole>) -> Result<RolePolicy, PolicyError> {
        let key = format!("roles.\"{name}\"");
        let span = Some(role.span());
        let name = RoleName::parse(name)
            .map_err(|e| self.err(span.clone(), &key, format!("role name {}", e.message)))?;
        let role = role.get_ref();
        let default_duration =
            self.duration(&role.default_duration, &format!("{key}.default_duration"))?;
        let max_duration = self.duration(&role.max_duration, &format!("{key}.max_duration"))?;
        if max_duration <= TimeDelta::zero() || max_duration > HARD_MAX_DURATION {
            return Err(self.err(
                Some(role.max_duration.span()),
                &format!("{key}.max_duration"),
                format!(
                    "must be more than 0 and at most {}",
                    format_duration(HARD_MAX_DURATION)
                ),
            ));
        }
        if default_duration <= TimeDelta::zero() || default_duration > max_duration {
            return Err(self.err(
                Some(role.default_duration.span()),
                &format!("{key}.default_duration"),
                "must be more than 0 and at most max_duration".into(),
            ));
        }
        let eligible = self.eligible(&key, role)?;
        if role.privileged && eligible.is_empty() {
            return Err(self.err(
                span.clone(),
                &format!("{key}.eligible_users"),
                "a privileged role must say who may hold it: eligible_users and/or \
                 eligible_groups (eligible_users = [\"*\"] for anyone)"
                    .into(),
            ));
        }
        let change_states = self.change_states(&key, role)?;
        let requester = match role
            .requester
            .as_ref()
            .map(|r| (r.get_ref().as_str(), r.span()))
        {
            None | Some(("assignee", _)) => RequesterMatch::Assignee,
            Some(("assignment_group", _)) => RequesterMatch::AssignmentGroup,
            Some((other, span)) => {
                return Err(self.err(
                    Some(span),
                    &format!("{key}.requester"),
                    format!("`{other}` is not \"assignee\" or \"assignment_group\""),
                ));
            }
        };
        let approvals = match &role.approvals {
            None => 0,
            Some(a) => u8::try_from(*a.get_ref())
                .ok()
                .filter(|n| i64::from(*n) <= MAX_APPROVALS)
                .ok_or_else(|| {
                    self.err(
                        Some(a.span()),
                        &format!("{key}.approvals"),
                        format!("must be between 0 and {MAX_APPROVALS}"),
                    )
                })?,
        };
        let approvers = self.approvers(&key, role)?;
        if approvals > 0 && approvers.is_empty() {
            return Err(self.err(
                span.clone(),
                &format!("{key}.approvals"),
                "a role that needs approvals must say who approves: approver_users and/or approver_groups".into(),
            ));
        }
        Ok(RolePolicy {
            name,
            privileged: role.privileged,
            default_duration,
            max_duration,
            eligible,
            require_ticket: role.require_ticket,
            change_states,
            requester,
            approvals,
            approvers,
            // The approvers approved a window: privilege beyond it is
            // unapproved unless the policy explicitly says otherwise.
            extension_needs_approval: role.extension_needs_approval.unwrap_or(approvals > 0),
            emergency: self.emergency(&key, role, max_duration)?,
            report_only: role.report_only,
            divisions: self.divisions(&key, role)?,
            slack_channel: match &role.slack_channel {
                None => None,
                Some(c) if c.get_ref().trim().is_empty() => {
                    return Err(self.err(
                        Some(c.span()),
                        &format!("{key}.slack_channel"),
                        "must name a channel (its id or `#name`)".into(),
                    ));
                }
                Some(c) => Some(c.get_ref().trim().to_owned()),
            },
            expiry_nudge: match &role.expiry_nudge {
                None => DEFAULT_EXPIRY_NUDGE,
                Some(v) if v.get_ref().trim() == "0" => TimeDelta::zero(),
                Some(v) => self.duration(v, &format!("{key}.expiry_nudge"))?,
            },
            max_live_grants: match &role.max_live_grants {
                None => DEFAULT_MAX_LIVE_GRANTS,
                Some(n) => u16::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        self.err(
                            Some(n.span()),
                            &format!("{key}.max_live_grants"),
                            "must be a whole number from 1 to 10000".into(),
                        )
                    })?,
            },
        })
    }

    fn eligible(&self, key: &str, role: &RawRole) -> Result<Eligibility, PolicyError> {
        let mut eligible = Eligibility::default();
        for user in &role.eligible_users {
            if user.get_ref() == "*" {
                eligible.anyone = true;
            } else {
                eligible
                    .users
                    .insert(self.user(user, &format!("{key}.eligible_users"))?);
            }
        }
        for group in &role.eligible_groups {
            if group.get_ref().trim().is_empty() {
                return Err(self.err(
                    Some(group.span()),
                    &format!("{key}.eligible_groups"),
                    "group names must not be empty".into(),
                ));
            }
            eligible.groups.insert(group.get_ref().trim().to_owned());
        }
        Ok(eligible)
    }

    fn change_states(
        &self,
        key: &str,
        role: &RawRole,
    ) -> Result<BTreeSet<ChangeState>, PolicyError> {
        let Some(states) = &role.change_states else {
            return Ok(BTreeSet::from([ChangeState::Implement]));
        };
        let mut change_states = BTreeSet::new();
        for state in states.get_ref() {
            let parsed = state
                .get_ref()
                .parse::<ChangeState>()
                .ok()
                .filter(|s| matches!(s, ChangeState::Implement | ChangeState::Scheduled))
                .ok_or_else(|| {
                    self.err(
                        Some(state.span()),
                        &format!("{key}.change_states"),
                        format!(
                            "`{}` is not a state a grant may be made in: use \"implement\" and/or \"scheduled\"",
                            state.get_ref()
                        ),
                    )
                })?;
            change_states.insert(parsed);
        }
        if change_states.is_empty() {
            return Err(self.err(
                Some(states.span()),
                &format!("{key}.change_states"),
                "must name at least one state".into(),
            ));
        }
        Ok(change_states)
    }

    fn approvers(&self, key: &str, role: &RawRole) -> Result<Eligibility, PolicyError> {
        let mut approvers = Eligibility::default();
        for user in &role.approver_users {
            approvers
                .users
                .insert(self.user(user, &format!("{key}.approver_users"))?);
        }
        for group in &role.approver_groups {
            let g = group.get_ref().trim();
            if g.is_empty() || g == "*" {
                return Err(self.err(
                    Some(group.span()),
                    &format!("{key}.approver_groups"),
                    "must name a group (\"*\" is not allowed for approvers)".into(),
                ));
            }
            approvers.groups.insert(g.to_owned());
        }
        Ok(approvers)
    }

    /// `["*"]` unless named; each a division name, `home` or `*`.
    fn divisions(&self, key: &str, role: &RawRole) -> Result<Vec<String>, PolicyError> {
        let Some(named) = &role.divisions else {
            return Ok(vec![ALL_DIVISIONS.to_owned()]);
        };
        let mut divisions: Vec<String> = Vec::new();
        for d in named.get_ref() {
            let name = d.get_ref().trim();
            if name.is_empty() {
                return Err(self.err(
                    Some(d.span()),
                    &format!("{key}.divisions"),
                    "division names must not be empty".into(),
                ));
            }
            if !divisions.iter().any(|have| have == name) {
                divisions.push(name.to_owned());
            }
        }
        if divisions.is_empty() {
            return Err(self.err(
                Some(named.span()),
                &format!("{key}.divisions"),
                "must name at least one division (\"*\" for every division)".into(),
            ));
        }
        Ok(divisions)
    }

    fn emergency(
        &self,
        key: &str,
        role: &RawRole,
        max_duration: TimeDelta,
    ) -> Result<Option<EmergencyRule>, PolicyError> {
        let Some(e) = &role.emergency else {
            return Ok(None);
        };
        let inner = e.get_ref();
        let change_type = inner.change_type.get_ref().trim().to_owned();
        if change_type.is_empty() {
            return Err(self.err(
                Some(inner.change_type.span()),
                &format!("{key}.emergency.change_type"),
                "must name the change type, e.g. \"emergency\"".into(),
            ));
        }
        let max = self.duration(
            &inner.max_duration,
            &format!("{key}.emergency.max_duration"),
        )?;
        if max <= TimeDelta::zero() || max > max_duration {
            return Err(self.err(
                Some(inner.max_duration.span()),
                &format!("{key}.emergency.max_duration"),
                "must be more than 0 and at most the role's max_duration".into(),
            ));
        }
        Ok(Some(EmergencyRule {
            change_type,
            max_duration: max,
        }))
    }
}

impl Policy {
    pub fn from_toml(file: &str, text: &str) -> Result<Self, PolicyError> {
        let r = Reader { file, text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let key = e.message().split('`').nth(1).unwrap_or_default().to_owned();
            r.err(e.span(), &key, e.message().to_owned())
        })?;
        if *raw.version.get_ref() != 1 {
            return Err(r.err(
                Some(raw.version.span()),
                "version",
                "only policy format version 1 is understood".into(),
            ));
        }
        let max_schedule_ahead = match &raw.max_schedule_ahead {
            None => TimeDelta::days(7),
            Some(v) => parse_duration(v.get_ref())
                .map_err(|m| r.err(Some(v.span()), "max_schedule_ahead", m))?,
        };
        let approval_timeout = match &raw.approval_timeout {
            None => DEFAULT_APPROVAL_TIMEOUT,
            Some(v) => parse_duration(v.get_ref())
                .ok()
                .filter(|d| *d > TimeDelta::zero() && *d <= TimeDelta::days(7))
                .ok_or_else(|| {
                    r.err(
                        Some(v.span()),
                        "approval_timeout",
                        "must be a duration between 1s and 7d, like \"4h\"".into(),
                    )
                })?,
        };
        let mut roles = BTreeMap::new();
        for (name, role) in raw.roles.get_ref() {
            let policy = r.role(name, role)?;
            roles.insert(policy.name.clone(), policy);
        }
        if !roles.values().any(|r| r.privileged) {
            return Err(r.err(
                Some(raw.roles.span()),
                "roles",
                "the catalogue must name at least one privileged role".into(),
            ));
        }
        let mut break_glass = BTreeSet::new();
        for user in raw.break_glass.iter().flat_map(|b| &b.users) {
            break_glass.insert(r.user(user, "break_glass.users")?);
        }
        let mut group_exceptions = BTreeMap::new();
        for (group, exception) in &raw.groups {
            let reason = exception.get_ref().reason.get_ref().trim();
            if group.trim().is_empty() || reason.is_empty() {
                return Err(r.err(
                    Some(exception.span()),
                    &format!("groups.\"{group}\""),
                    "a group exception names the group and says why (reason = \"…\")".into(),
                ));
            }
            group_exceptions.insert(group.trim().to_owned(), reason.to_owned());
        }
        let mut privileged_permissions = Vec::new();
        for p in &raw.privileged_permissions {
            let permission = p.get_ref().trim();
            // Genesys permissions are domain:entity:action.
            if permission.split(':').count() != 3 || permission.split(':').any(str::is_empty) {
                return Err(r.err(
                    Some(p.span()),
                    "privileged_permissions",
                    format!("`{permission}` is not a permission like \"authorization:grant:add\""),
                ));
            }
            privileged_permissions.push(permission.to_owned());
        }
        Ok(Self {
            roles,
            break_glass,
            group_exceptions,
            privileged_permissions,
            max_schedule_ahead,
            approval_timeout,
        })
    }

    pub fn role(&self, name: &RoleName) -> Option<&RolePolicy> {
        self.roles.get(name)
    }

    pub fn roles(&self) -> impl Iterator<Item = &RolePolicy> {
        self.roles.values()
    }

    /// The roles the reconciler looks for.
    pub fn privileged_roles(&self) -> impl Iterator<Item = &RoleName> {
        self.roles
            .iter()
            .filter(|(_, r)| r.privileged)
            .map(|(n, _)| n)
    }

    pub fn is_privileged(&self, role: &RoleName) -> bool {
        self.role(role).is_some_and(|r| r.privileged)
    }

    /// The accounts allowed to hold privileged roles without a grant.
    pub fn break_glass_users(&self) -> impl Iterator<Item = &UserName> {
        self.break_glass.iter()
    }

    pub fn is_break_glass(&self, user: &UserName) -> bool {
        self.break_glass.contains(user)
    }

    /// This policy with `found` (roles the org has that carry one of
    /// `privileged_permissions`) privileged too, unless the catalogue names
    /// them already (the catalogue's word wins). Nobody may request them:
    /// whoever holds one holds it without a grant.
    pub fn with_privileged(&self, found: &BTreeSet<RoleName>) -> Policy {
        let mut policy = self.clone();
        for name in found {
            policy
                .roles
                .entry(name.clone())
                .or_insert_with(|| RolePolicy {
                    name: name.clone(),
                    privileged: true,
                    default_duration: TimeDelta::hours(1),
                    max_duration: TimeDelta::hours(1),
                    eligible: Eligibility::default(),
                    require_ticket: true,
                    change_states: BTreeSet::from([ChangeState::Implement]),
                    requester: RequesterMatch::Assignee,
                    approvals: 0,
                    approvers: Eligibility::default(),
                    extension_needs_approval: false,
                    emergency: None,
                    report_only: false,
                    divisions: vec![ALL_DIVISIONS.to_owned()],
                    slack_channel: None,
                    expiry_nudge: DEFAULT_EXPIRY_NUDGE,
                    max_live_grants: DEFAULT_MAX_LIVE_GRANTS,
                });
        }
        policy
    }

    /// Why a group may hold privileged roles, if the policy says it may.
    pub fn group_exception(&self, group: &str) -> Option<&str> {
        self.group_exceptions.get(group).map(String::as_str)
    }
}

/// The Genesys Cloud division id that means every division.
pub const ALL_DIVISIONS: &str = "*";

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const SAMPLE: &str = r#"
version = 1

[roles."Master Admin"]
default_duration = "1h"
max_duration = "4h"
eligible_users = ["eng@example.com"]
eligible_groups = ["sre"]

[roles."Recording Admin"]
default_duration = "30m"
max_duration = "2h"
eligible_users = ["*"]
require_ticket = false
report_only = true

[roles."Telephony Admin"]
default_duration = "1h"
max_duration = "8h"
eligible_groups = ["telephony"]
change_states = ["implement", "scheduled"]
requester = "assignment_group"
approvals = 1
approver_groups = ["telephony-leads"]
emergency = { change_type = "emergency", max_duration = "30m" }

[roles."Employee"]
privileged = false
default_duration = "1h"
max_duration = "1h"

[break_glass]
users = ["breakglass@example.com"]
"#;

    pub fn sample() -> Policy {
        Policy::from_toml("sample.toml", SAMPLE).unwrap()
    }

    #[test]
    fn parses_the_catalogue() {
        let p = sample();
        let admin = p.role(&RoleName::parse("Master Admin").unwrap()).unwrap();
        assert!(admin.privileged);
        assert_eq!(admin.max_duration, TimeDelta::hours(4));
        assert!(!p.is_privileged(&RoleName::parse("Employee").unwrap()));
        assert!(!p.is_privileged(&RoleName::parse("Unknown").unwrap()));
        assert!(p.is_break_glass(&UserName::parse("breakglass@example.com").unwrap()));
        assert_eq!(p.max_schedule_ahead, TimeDelta::days(7));
    }

    fn error_of(text: &str) -> PolicyError {
        Policy::from_toml("p.toml", text).unwrap_err()
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = error_of(
            "version = 1\n[roles.\"Master Admin\"]\ndefault_duration = \"1h\"\nmax_duration = \"forever\"\n",
        );
        assert_eq!(
            (e.file.as_str(), e.line, e.key.as_str()),
            ("p.toml", 4, "roles.\"Master Admin\".max_duration")
        );
        assert!(
            e.to_string()
                .starts_with("p.toml:4: `roles.\"Master Admin\".max_duration`: "),
            "{e}"
        );

        let e = error_of(
            "version = 1\n[roles.\"A\"]\ndefault_duration = \"5h\"\nmax_duration = \"4h\"\n",
        );
        assert_eq!(
            (e.line, e.key.as_str()),
            (3, "roles.\"A\".default_duration")
        );

        let e = error_of(
            "version = 1\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"48h\"\n",
        );
        assert_eq!((e.line, e.key.as_str()), (4, "roles.\"A\".max_duration"));

        let e = error_of(
            "version = 1\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\nmax_durration = \"4h\"\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert_eq!(e.key, "max_durration", "{e}");

        let e = error_of(
            "version = 2\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\n",
        );
        assert_eq!((e.line, e.key.as_str()), (1, "version"));

        let e = error_of(
            "version = 1\n[roles.\"A\"]\nprivileged = false\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\n",
        );
        assert_eq!(e.key, "roles");

        let e = error_of(
            "version = 1\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\neligible_users = [\"*\"]\n[break_glass]\nusers = [\"\"]\n",
        );
        assert_eq!((e.line, e.key.as_str()), (7, "break_glass.users"));
    }

    const ROLE: &str =
        "version = 1\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\n";

    #[test]
    fn eligibility_change_rules_and_approvals_are_checked() {
        let table = [
            ("", 2, "roles.\"A\".eligible_users"),
            (
                "eligible_users = [\"bad\\\"name\"]\n",
                5,
                "roles.\"A\".eligible_users",
            ),
            (
                "eligible_groups = [\" \"]\n",
                5,
                "roles.\"A\".eligible_groups",
            ),
            (
                "eligible_users = [\"*\"]\nchange_states = [\"closed\"]\n",
                6,
                "roles.\"A\".change_states",
            ),
            (
                "eligible_users = [\"*\"]\nchange_states = []\n",
                6,
                "roles.\"A\".change_states",
            ),
            (
                "eligible_users = [\"*\"]\nrequester = \"anyone\"\n",
                6,
                "roles.\"A\".requester",
            ),
            (
                "eligible_users = [\"*\"]\napprovals = 9\napprover_users = [\"a@b.c\"]\n",
                6,
                "roles.\"A\".approvals",
            ),
            (
                "eligible_users = [\"*\"]\napprovals = -1\napprover_users = [\"a@b.c\"]\n",
                6,
                "roles.\"A\".approvals",
            ),
            (
                "eligible_users = [\"*\"]\nemergency = { change_type = \"emergency\", max_duration = \"5h\" }\n",
                6,
                "roles.\"A\".emergency.max_duration",
            ),
            (
                "eligible_users = [\"*\"]\nemergency = { change_type = \"\", max_duration = \"5m\" }\n",
                6,
                "roles.\"A\".emergency.change_type",
            ),
            (
                "eligible_users = [\"*\"]\nmax_live_grants = 0\n",
                6,
                "roles.\"A\".max_live_grants",
            ),
        ];
        for (extra, line, key) in table {
            let e = error_of(&format!("{ROLE}{extra}"));
            assert_eq!((e.line, e.key.as_str()), (line, key), "{extra}: {e}");
        }
    }

    #[test]
    fn a_role_carrying_a_privileged_permission_is_privileged_unless_the_catalogue_says() {
        let text = format!(
            "privileged_permissions = [\"authorization:grant:add\"]\n{}",
            SAMPLE
        );
        let p = Policy::from_toml("p.toml", &text).unwrap();
        assert_eq!(
            p.privileged_permissions,
            vec!["authorization:grant:add".to_owned()]
        );
        let clone = RoleName::parse("CC Super Admin").unwrap();
        let employee = RoleName::parse("Employee").unwrap();
        let found = BTreeSet::from([clone.clone(), employee.clone()]);
        let effective = p.with_privileged(&found);
        assert!(effective.is_privileged(&clone));
        assert!(
            !effective.is_privileged(&employee),
            "the catalogue's word wins"
        );
        assert!(
            effective.role(&clone).unwrap().eligible.is_empty(),
            "nobody may request it"
        );
        let bad = format!("privileged_permissions = [\"grant\"]\n{}", SAMPLE);
        assert_eq!(error_of(&bad).key, "privileged_permissions");
    }

    #[test]
    fn divisions_default_to_all_and_group_exceptions_need_a_reason() {
        let p = sample();
        let admin = p.role(&RoleName::parse("Master Admin").unwrap()).unwrap();
        assert_eq!(admin.divisions, vec![ALL_DIVISIONS.to_owned()]);
        let role = "version = 1\n[roles.A]\ndefault_duration = \"1h\"\nmax_duration = \"2h\"\neligible_users = [\"*\"]\n";
        let named = Policy::from_toml(
            "p.toml",
            &format!("{role}divisions = [\"home\", \"EMEA\", \"home\"]\n[groups.\"CC admins\"]\nreason = \"Terraform owns it\"\n"),
        )
        .unwrap();
        let a = named.role(&RoleName::parse("A").unwrap()).unwrap();
        assert_eq!(a.divisions, vec!["home".to_owned(), "EMEA".to_owned()]);
        assert_eq!(
            named.group_exception("CC admins"),
            Some("Terraform owns it")
        );
        assert_eq!(named.group_exception("Other"), None);
        assert_eq!(
            error_of(&format!("{role}divisions = []\n")).key,
            "roles.\"A\".divisions"
        );
        assert_eq!(
            error_of(&format!("{role}[groups.\"CC admins\"]\nreason = \" \"\n")).key,
            "groups.\"CC admins\""
        );
    }

    #[test]
    fn role_defaults_and_options() {
        let p = sample();
        let admin = p.role(&RoleName::parse("Master Admin").unwrap()).unwrap();
        assert!(admin.require_ticket);
        assert_eq!(
            admin.change_states,
            BTreeSet::from([ChangeState::Implement])
        );
        assert_eq!(admin.requester, RequesterMatch::Assignee);
        assert_eq!(admin.approvals, 0);
        assert_eq!(admin.emergency, None);
        assert!(!admin.eligible.anyone);
        assert!(admin.eligible.groups.contains("sre"));
        let tel = p
            .role(&RoleName::parse("Telephony Admin").unwrap())
            .unwrap();
        assert_eq!(
            tel.change_states,
            BTreeSet::from([ChangeState::Scheduled, ChangeState::Implement])
        );
        assert_eq!(tel.requester, RequesterMatch::AssignmentGroup);
        assert_eq!(tel.approvals, 1);
        assert_eq!(
            tel.emergency,
            Some(EmergencyRule {
                change_type: "emergency".into(),
                max_duration: TimeDelta::minutes(30)
            })
        );
        let rec = p
            .role(&RoleName::parse("Recording Admin").unwrap())
            .unwrap();
        assert!(rec.eligible.anyone && !rec.require_ticket);
    }
}
