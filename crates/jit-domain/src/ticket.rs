//! A ServiceNow change request as the broker sees it: the snapshot a decision
//! is made on, stored with the grant and in the audit log.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::{TicketId, UnknownName, UserName};

/// `change_request.state`, with ServiceNow's numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    New,
    Assess,
    Authorize,
    Scheduled,
    Implement,
    Review,
    Closed,
    Canceled,
}

impl ChangeState {
    pub const ALL: [ChangeState; 8] = [
        Self::New,
        Self::Assess,
        Self::Authorize,
        Self::Scheduled,
        Self::Implement,
        Self::Review,
        Self::Closed,
        Self::Canceled,
    ];

    pub fn code(self) -> i32 {
        match self {
            Self::New => -5,
            Self::Assess => -4,
            Self::Authorize => -3,
            Self::Scheduled => -2,
            Self::Implement => -1,
            Self::Review => 0,
            Self::Closed => 3,
            Self::Canceled => 4,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Assess => "assess",
            Self::Authorize => "authorize",
            Self::Scheduled => "scheduled",
            Self::Implement => "implement",
            Self::Review => "review",
            Self::Closed => "closed",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for ChangeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// A reference to a `sys_user` (the change's `assigned_to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub sys_id: String,
    pub user_name: Option<String>,
    pub email: Option<String>,
}

impl Person {
    /// Whether this ServiceNow user is the directory user `user`. Directory
    /// user names are e-mail addresses (Genesys Cloud), matched without case
    /// against the ServiceNow e-mail or login.
    pub fn is(&self, user: &UserName) -> bool {
        [&self.email, &self.user_name]
            .into_iter()
            .flatten()
            .any(|v| !v.is_empty() && v.eq_ignore_ascii_case(user.as_str()))
    }

    /// The directory user this person is, if their e-mail (or login) is one.
    pub fn directory_user(&self) -> Option<UserName> {
        [&self.email, &self.user_name]
            .into_iter()
            .flatten()
            .find(|v| v.contains('@'))
            .and_then(|v| UserName::parse(v).ok())
    }
}

/// A reference to a `sys_user_group` (the change's `assignment_group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub sys_id: String,
    pub name: Option<String>,
}

/// The fields of a change request a decision depends on, as read from the
/// Table API at the moment of the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeTicket {
    pub number: TicketId,
    pub sys_id: String,
    /// `None` when ServiceNow answered a code this broker does not know.
    pub state: Option<ChangeState>,
    /// The raw `state` value, kept for the audit trail.
    pub state_code: String,
    /// `approved`, `requested`, `rejected`, `not requested`, …
    pub approval: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub assigned_to: Option<Person>,
    pub assignment_group: Option<Team>,
    /// `normal`, `standard`, `emergency`, …
    pub change_type: String,
    /// The catalogue roles the change asks for (a custom field, see config);
    /// what a webhook-driven grant elevates to.
    pub roles: Vec<String>,
    /// The field `roles` was read from, when the configuration binds a
    /// change to the roles it names (`servicenow.bind_roles`): then a grant
    /// citing the change is for one of them, or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_field: Option<String>,
    /// When this snapshot was read.
    pub read_at: DateTime<Utc>,
}

impl ChangeTicket {
    /// Whether the change allows `role`: always when it is not bound to
    /// the roles it names; else only one it names (as the catalogue spells
    /// it, without regard to case).
    pub fn allows_role(&self, role: &str) -> bool {
        self.roles_field.is_none()
            || self
                .roles
                .iter()
                .any(|r| r.trim().eq_ignore_ascii_case(role))
    }

    pub fn is_approved(&self) -> bool {
        self.approval.eq_ignore_ascii_case("approved")
    }

    pub fn is_rejected(&self) -> bool {
        self.approval.eq_ignore_ascii_case("rejected")
    }

    /// Review, Closed and Canceled end every grant tied to the change.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            Some(ChangeState::Review | ChangeState::Closed | ChangeState::Canceled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip() {
        for s in ChangeState::ALL {
            assert_eq!(ChangeState::from_code(s.code()), Some(s));
            assert_eq!(s.as_str().parse::<ChangeState>().unwrap(), s);
        }
        assert_eq!(ChangeState::from_code(-1), Some(ChangeState::Implement));
        assert_eq!(ChangeState::from_code(7), None);
        assert_eq!(
            "Implement".parse::<ChangeState>().unwrap(),
            ChangeState::Implement
        );
    }

    #[test]
    fn a_person_matches_by_email_or_login_without_case() {
        let p = Person {
            sys_id: "u1".into(),
            user_name: Some("alice".into()),
            email: Some("Alice@Example.com".into()),
        };
        assert!(p.is(&UserName::parse("alice@example.com").unwrap()));
        assert!(!p.is(&UserName::parse("bob@example.com").unwrap()));
        assert_eq!(p.directory_user().unwrap().as_str(), "alice@example.com");
        let nobody = Person {
            sys_id: "u2".into(),
            user_name: Some(String::new()),
            email: None,
        };
        assert!(!nobody.is(&UserName::parse("x@example.com").unwrap()));
    }
}
