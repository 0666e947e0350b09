//! Who may do what: one caller type for every door (API key, a person
//! through the web form or an ID token, a signed webhook) and the rules that
//! say which grants each may see and change. The API and the web form ask
//! these same questions through the same `jit-app` use cases.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::grant::Grant;
use crate::names::UserName;
use crate::policy::Policy;
use crate::request::FieldError;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An API key: trusted automation, acting on any grant. `admin` keys may
    /// also sweep, read the audit log and end sessions.
    Key { name: String, admin: bool },
    /// A person vouched for by a login (the web form's session, or an ID
    /// token on the API), with the groups the identity provider named.
    Person {
        user: UserName,
        groups: BTreeSet<String>,
    },
    /// A signed ServiceNow webhook delivery.
    Webhook { name: String },
}

/// Why a caller may not do what it asked. `NotFound` where the caller may
/// not even see the grant (so its existence is not revealed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum AccessRefusal {
    #[error("grant not found")]
    NotFound,
    #[error("{message}")]
    Forbidden { rule: &'static str, message: String },
}

impl AccessRefusal {
    fn forbidden(rule: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            rule,
            message: message.into(),
        }
    }
}

impl Caller {
    /// The name audited for this caller's actions.
    pub fn actor(&self) -> String {
        match self {
            Self::Key { name, .. } | Self::Webhook { name } => name.clone(),
            Self::Person { user, .. } => user.to_string(),
        }
    }

    /// The person behind this caller, if a login vouches for one.
    pub fn person(&self) -> Option<(&UserName, &BTreeSet<String>)> {
        match self {
            Self::Person { user, groups } => Some((user, groups)),
            _ => None,
        }
    }

    /// Groups a login vouches for (none for keys and webhooks).
    pub fn groups(&self) -> BTreeSet<String> {
        self.person().map(|(_, g)| g.clone()).unwrap_or_default()
    }

    /// A member of the SOC group (`web.soc_group`).
    pub fn is_soc(&self, soc_group: &str) -> bool {
        !soc_group.is_empty() && self.person().is_some_and(|(_, g)| g.contains(soc_group))
    }

    fn is_admin_key(&self) -> bool {
        matches!(self, Self::Key { admin: true, .. })
    }

    /// Who sees a grant: keys; its own user; the role's approvers; the SOC.
    pub fn may_view(
        &self,
        grant: &Grant,
        policy: &Policy,
        soc_group: &str,
    ) -> Result<(), AccessRefusal> {
        match self {
            Self::Key { .. } | Self::Webhook { .. } => Ok(()),
            Self::Person { user, groups } => {
                let approver = policy
                    .role(&grant.role)
                    .is_some_and(|r| r.approvers.admits(user, groups));
                if &grant.user == user || approver || self.is_soc(soc_group) {
                    Ok(())
                } else {
                    Err(AccessRefusal::NotFound)
                }
            }
        }
    }

    /// Who may end, extend or otherwise change a grant they see: keys, and
    /// the grant's own user.
    pub fn may_change(
        &self,
        grant: &Grant,
        policy: &Policy,
        soc_group: &str,
        what: &str,
    ) -> Result<(), AccessRefusal> {
        self.may_view(grant, policy, soc_group)?;
        match self {
            Self::Person { user, .. } if &grant.user != user => Err(AccessRefusal::forbidden(
                "own_grant",
                format!("only the grant's own user may {what} it"),
            )),
            _ => Ok(()),
        }
    }

    /// A person lists only their own grants, unless they are in the SOC.
    pub fn lists_only(&self, soc_group: &str) -> Option<&UserName> {
        match self {
            Self::Person { user, .. } if !self.is_soc(soc_group) => Some(user),
            _ => None,
        }
    }

    /// Answering a request is a person's act: a key has no one to vouch for.
    pub fn reviewer(&self) -> Result<(&UserName, &BTreeSet<String>), AccessRefusal> {
        self.person().ok_or_else(|| {
            AccessRefusal::forbidden(
                "person_required",
                "only a person may do that: send an ID token from the identity provider, not an API key",
            )
        })
    }

    /// Who may read the reconciler's runs and findings (who holds which
    /// privileged role, the break-glass accounts, privileged OAuth clients):
    /// admin keys and the SOC.
    pub fn may_read_sweeps(&self, soc_group: &str) -> Result<(), AccessRefusal> {
        if self.is_admin_key() || self.is_soc(soc_group) {
            Ok(())
        } else {
            Err(AccessRefusal::forbidden(
                "soc_only",
                "only an admin key or the SOC may read the reconciler's runs",
            ))
        }
    }

    /// Whose sessions this caller may end: admin keys and the SOC anyone's,
    /// a person their own.
    pub fn may_end_sessions_of(
        &self,
        user: &UserName,
        soc_group: &str,
    ) -> Result<(), AccessRefusal> {
        let own = self.person().is_some_and(|(me, _)| me == user);
        if self.is_admin_key() || self.is_soc(soc_group) || own {
            Ok(())
        } else {
            Err(AccessRefusal::forbidden(
                "sessions",
                "only an admin key, the SOC or the person themselves may end a person's sessions",
            ))
        }
    }

    /// The user a grant request is for. A person asks only for themselves:
    /// their groups must not vouch for anyone else. Others must name one.
    pub fn request_for(&self, named: Option<&str>) -> Result<Option<String>, FieldError> {
        match (self.person(), named.map(str::trim)) {
            (Some((me, _)), None) => Ok(Some(me.to_string())),
            (Some((me, _)), Some(n)) if me.is(n) => Ok(Some(me.to_string())),
            (Some(_), Some(_)) => Err(FieldError::new(
                "user",
                "self",
                "a person may request a grant only for themselves",
            )),
            (None, n) => Ok(n.map(str::to_owned)),
        }
    }
}

/// The longest reason a drop may give.
pub const MAX_DROP_REASON_CHARS: usize = 2000;

/// Why a grant ends early: required (it is the audit record's only
/// explanation), 1 to 2000 characters, no control characters.
pub fn validate_drop_reason(raw: &str) -> Result<String, FieldError> {
    let reason = raw.trim();
    if reason.is_empty() || reason.chars().count() > MAX_DROP_REASON_CHARS {
        return Err(FieldError::new(
            "reason",
            "required",
            format!("say why the grant ends early (1 to {MAX_DROP_REASON_CHARS} characters)"),
        ));
    }
    if reason
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldError::new(
            "reason",
            "charset",
            "must not contain control characters",
        ));
    }
    Ok(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::tests::grant;
    use crate::lifecycle::GrantState;
    use crate::names::RoleName;

    const POLICY: &str = r#"
version = 1
[roles."Master Admin"]
default_duration = "1h"
max_duration = "4h"
eligible_groups = ["admins"]
approvals = 1
approver_groups = ["leads"]
"#;

    fn person(name: &str, groups: &[&str]) -> Caller {
        Caller::Person {
            user: UserName::parse(name).unwrap(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn alices() -> Grant {
        let mut g = grant(GrantState::Active, 0, 3600);
        g.user = UserName::parse("alice@example.com").unwrap();
        g.role = RoleName::parse("Master Admin").unwrap();
        g
    }

    #[test]
    fn who_sees_and_who_changes_a_grant() {
        let p = Policy::from_toml("p.toml", POLICY).unwrap();
        let g = alices();
        let key = Caller::Key {
            name: "ci".into(),
            admin: false,
        };
        let alice = person("alice@example.com", &[]);
        let lead = person("bob@example.com", &["leads"]);
        let soc = person("carol@example.com", &["soc"]);
        let stranger = person("mallory@example.com", &[]);
        for (who, view, change) in [
            (&key, true, true),
            (&alice, true, true),
            (&lead, true, false),
            (&soc, true, false),
        ] {
            assert_eq!(who.may_view(&g, &p, "soc").is_ok(), view, "{who:?}");
            assert_eq!(
                who.may_change(&g, &p, "soc", "drop").is_ok(),
                change,
                "{who:?}"
            );
        }
        assert_eq!(
            stranger.may_view(&g, &p, "soc"),
            Err(AccessRefusal::NotFound)
        );
        assert_eq!(
            stranger.may_change(&g, &p, "soc", "drop"),
            Err(AccessRefusal::NotFound),
            "what a caller cannot see is not found, not forbidden"
        );
        assert_eq!(soc.lists_only("soc"), None);
        assert_eq!(
            stranger.lists_only("soc").map(UserName::as_str),
            Some("mallory@example.com")
        );
        assert!(!soc.is_soc(""), "no SOC group configured: nobody is SOC");
    }

    #[test]
    fn a_person_requests_only_for_themselves() {
        let alice = person("alice@example.com", &[]);
        assert_eq!(
            alice.request_for(None).unwrap().as_deref(),
            Some("alice@example.com")
        );
        assert!(alice.request_for(Some(" alice@example.com ")).is_ok());
        assert_eq!(
            alice.request_for(Some("bob@example.com")).unwrap_err().rule,
            "self"
        );
        let key = Caller::Key {
            name: "ci".into(),
            admin: true,
        };
        assert_eq!(
            key.request_for(Some("bob@example.com")).unwrap().as_deref(),
            Some("bob@example.com")
        );
    }

    #[test]
    fn sessions_are_ended_by_admins_the_soc_and_oneself() {
        let bob = UserName::parse("bob@example.com").unwrap();
        let admin = Caller::Key {
            name: "ops".into(),
            admin: true,
        };
        let plain = Caller::Key {
            name: "ci".into(),
            admin: false,
        };
        assert!(admin.may_end_sessions_of(&bob, "soc").is_ok());
        assert!(plain.may_end_sessions_of(&bob, "soc").is_err());
        assert!(
            person("bob@example.com", &[])
                .may_end_sessions_of(&bob, "soc")
                .is_ok()
        );
        assert!(
            person("carol@example.com", &["soc"])
                .may_end_sessions_of(&bob, "soc")
                .is_ok()
        );
        assert!(
            person("mallory@example.com", &[])
                .may_end_sessions_of(&bob, "soc")
                .is_err()
        );
    }

    #[test]
    fn a_drop_says_why() {
        assert_eq!(validate_drop_reason("  ").unwrap_err().rule, "required");
        assert_eq!(
            validate_drop_reason(&"x".repeat(2001)).unwrap_err().rule,
            "required"
        );
        assert_eq!(validate_drop_reason("a\u{7}b").unwrap_err().rule, "charset");
        assert_eq!(validate_drop_reason(" done early ").unwrap(), "done early");
    }

    #[test]
    fn only_admin_keys_and_the_soc_read_the_reconcilers_runs() {
        let key = |admin| Caller::Key {
            name: "k".into(),
            admin,
        };
        assert!(key(true).may_read_sweeps("soc").is_ok());
        assert!(
            person("carol@example.com", &["soc"])
                .may_read_sweeps("soc")
                .is_ok()
        );
        for refused in [
            key(false),
            person("mallory@example.com", &[]),
            person("bob@example.com", &["leads"]),
            Caller::Webhook { name: "sn".into() },
        ] {
            assert!(refused.may_read_sweeps("soc").is_err(), "{refused:?}");
        }
        assert!(
            person("carol@example.com", &[""])
                .may_read_sweeps("")
                .is_err(),
            "no SOC group configured: nobody by group"
        );
    }

    #[test]
    fn ownership_and_who_a_person_asks_for_hold_under_case_variants() {
        let p = Policy::from_toml("p.toml", POLICY).unwrap();
        let shouting = person("ALICE@Example.com", &[]);
        assert!(shouting.may_change(&alices(), &p, "soc", "drop").is_ok());
        assert_eq!(
            shouting.request_for(Some("alice@example.com")),
            Ok(Some("alice@example.com".into()))
        );
        assert_eq!(
            person("alice@example.com", &[]).request_for(Some(" ALICE@example.COM ")),
            Ok(Some("alice@example.com".into()))
        );
        assert_eq!(
            shouting.lists_only("soc").map(UserName::as_str),
            Some("alice@example.com")
        );
    }
}
