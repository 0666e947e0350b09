//! The policy file (`policies/*.toml`): the role catalogue and break-glass accounts.
//!
//! Parsed from text (no IO here); every error names the file, the line and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::TimeDelta;
use serde::Deserialize;
use toml::Spanned;

use crate::names::{RoleName, UserName};

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    roles: BTreeMap<RoleName, RolePolicy>,
    break_glass: BTreeSet<UserName>,
    /// How far ahead a grant may be scheduled to start.
    pub max_schedule_ahead: TimeDelta,
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
    roles: Spanned<BTreeMap<String, Spanned<RawRole>>>,
    #[serde(default)]
    break_glass: Option<RawBreakGlass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default = "yes")]
    privileged: bool,
    default_duration: Spanned<String>,
    max_duration: Spanned<String>,
}

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

impl Policy {
    pub fn from_toml(file: &str, text: &str) -> Result<Self, PolicyError> {
        let err = |span: Option<std::ops::Range<usize>>, key: &str, message: String| PolicyError {
            file: file.to_owned(),
            line: span.map_or(1, |s| line_of(text, s.start)),
            key: key.to_owned(),
            message,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let key = e.message().split('`').nth(1).unwrap_or_default().to_owned();
            err(e.span(), &key, e.message().to_owned())
        })?;
        if *raw.version.get_ref() != 1 {
            return Err(err(
                Some(raw.version.span()),
                "version",
                "only policy format version 1 is understood".into(),
            ));
        }
        let max_schedule_ahead = match &raw.max_schedule_ahead {
            None => TimeDelta::days(7),
            Some(v) => parse_duration(v.get_ref())
                .map_err(|m| err(Some(v.span()), "max_schedule_ahead", m))?,
        };
        let mut roles = BTreeMap::new();
        for (name, role) in raw.roles.get_ref() {
            let key = format!("roles.\"{name}\"");
            let span = Some(role.span());
            let name = RoleName::parse(name)
                .map_err(|e| err(span.clone(), &key, format!("role name {}", e.message)))?;
            let role = role.get_ref();
            let duration = |v: &Spanned<String>, field: &str| {
                parse_duration(v.get_ref())
                    .map_err(|m| err(Some(v.span()), &format!("{key}.{field}"), m))
            };
            let default_duration = duration(&role.default_duration, "default_duration")?;
            let max_duration = duration(&role.max_duration, "max_duration")?;
            if max_duration <= TimeDelta::zero() || max_duration > HARD_MAX_DURATION {
                return Err(err(
                    Some(role.max_duration.span()),
                    &format!("{key}.max_duration"),
                    format!(
                        "must be more than 0 and at most {}",
                        format_duration(HARD_MAX_DURATION)
                    ),
                ));
            }
            if default_duration <= TimeDelta::zero() || default_duration > max_duration {
                return Err(err(
                    Some(role.default_duration.span()),
                    &format!("{key}.default_duration"),
                    "must be more than 0 and at most max_duration".into(),
                ));
            }
            let policy = RolePolicy {
                name: name.clone(),
                privileged: role.privileged,
                default_duration,
                max_duration,
            };
            roles.insert(name, policy);
        }
        if !roles.values().any(|r| r.privileged) {
            return Err(err(
                Some(raw.roles.span()),
                "roles",
                "the catalogue must name at least one privileged role".into(),
            ));
        }
        let mut break_glass = BTreeSet::new();
        for user in raw.break_glass.iter().flat_map(|b| &b.users) {
            let parsed = UserName::parse(user.get_ref()).map_err(|e| {
                err(
                    Some(user.span()),
                    "break_glass.users",
                    format!("user name {}", e.message),
                )
            })?;
            break_glass.insert(parsed);
        }
        Ok(Self {
            roles,
            break_glass,
            max_schedule_ahead,
        })
    }

    pub fn role(&self, name: &RoleName) -> Option<&RolePolicy> {
        self.roles.get(name)
    }

    pub fn roles(&self) -> impl Iterator<Item = &RolePolicy> {
        self.roles.values()
    }

    pub fn is_privileged(&self, role: &RoleName) -> bool {
        self.role(role).is_some_and(|r| r.privileged)
    }

    pub fn is_break_glass(&self, user: &UserName) -> bool {
        self.break_glass.contains(user)
    }
}

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
            "version = 1\n[roles.\"A\"]\ndefault_duration = \"1h\"\nmax_duration = \"4h\"\n[break_glass]\nusers = [\"\"]\n",
        );
        assert_eq!((e.line, e.key.as_str()), (6, "break_glass.users"));
    }
}
