//! The directory port: who holds which role, and the one-role change.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_domain::{ActivityEvent, Holding, RoleChange, RoleName, UserName};
use serde::Serialize;

/// A user as the directory holds them, with the roles it lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectoryUser {
    pub id: String,
    pub user_name: String,
    /// Roles the user holds by a grant of their own (any division).
    pub roles: Vec<String>,
    /// `meta.version` (an ETag), used as `If-Match` on the next write.
    pub version: Option<String>,
    /// Genesys Cloud's Authorization API: the user's own grants, each a role
    /// in a division. Empty where the target names roles only (SCIM).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<DivisionGrant>,
    /// Roles held, but not in every division a grant of the role covers:
    /// converge adds the missing ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial: Vec<String>,
}

/// One grant of a role in a division (Genesys Cloud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DivisionGrant {
    pub role: String,
    pub role_id: String,
    /// The division's id; `*` is every division.
    pub division_id: String,
}

impl DirectoryUser {
    /// Held at all: by a grant of the user's own, in some division.
    pub fn holds(&self, role: &RoleName) -> bool {
        self.roles.iter().any(|r| r == role.as_str())
    }

    /// What this read shows of `role`.
    pub fn holding(&self, role: &RoleName) -> Holding {
        let any = self.holds(role);
        Holding {
            any,
            fully: any && !self.partial.iter().any(|r| r == role.as_str()),
        }
    }
}

/// How a directory call failed, sorted by what the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("user `{0}` not found in the directory")]
    UserNotFound(String),
    /// The user changed since it was read (`If-Match` refused): read again.
    #[error("the user changed since it was read: {0}")]
    VersionConflict(String),
    /// Worth trying again, no sooner than `retry_after` when the target said so.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again will not help.
    #[error("{0}")]
    Permanent(String),
}

impl DirectoryError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::UserNotFound(_) | Self::Permanent(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The target could not be reached or failed without saying when to
    /// come back (connection refused, timeout, 5xx): it is probably down.
    pub fn target_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Transient {
                retry_after: None,
                ..
            }
        )
    }
}

/// An OAuth client of the org and the roles it holds (by name where known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthClientRoles {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
}

/// One page of the directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPage {
    pub users: Vec<DirectoryUser>,
    /// The directory's count of all users (the listing ends past it).
    pub total_results: u64,
}

/// The users holding one role, as the directory answered in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleHolders {
    /// Their `userName`s: those holding it by a grant of their own.
    pub users: Vec<String>,
    /// Groups holding it (Genesys Cloud): their members hold it too.
    pub groups: Vec<GroupHolder>,
    /// Requests the answer took (pages, and the role's id when resolved).
    pub requests: u64,
}

/// One feature's permission, as a harmless read found it (`doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionProbe {
    pub feature: &'static str,
    pub permission: &'static str,
    pub outcome: ProbeOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    Allowed,
    /// 403: the client's roles lack the permission; the feature would fail.
    Missing,
    /// A write: not called (it would change something).
    NotProbed,
    /// Could not tell (the target down, the token refused...).
    Failed(String),
}

/// A group holding a role, with whom the grant reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHolder {
    pub id: String,
    pub name: String,
    /// The members' `userName`s.
    pub members: Vec<String>,
    /// The division ids of the group's grants of the role (`*`: every one).
    pub divisions: Vec<String>,
}

#[async_trait]
pub trait Directory: Send + Sync {
    /// Users `start_index ..` (1-based, SCIM) with their roles, at most `count`.
    async fn list_users(
        &self,
        start_index: u64,
        count: u32,
    ) -> Result<DirectoryPage, DirectoryError>;
    /// Who holds `role`, where the target can say without listing everyone
    /// (a SCIM filter on `roles.value` it announces, or Genesys Cloud's role
    /// users); `None` where it cannot: the caller lists everyone instead.
    async fn role_holders(&self, role: &RoleName) -> Result<Option<RoleHolders>, DirectoryError> {
        let _ = role;
        Ok(None)
    }
    /// The names of the org's roles that carry `permission` (Genesys Cloud:
    /// `GET /api/v2/authorization/roles?permission=`); `None` where the
    /// target cannot say.
    async fn roles_with_permission(
        &self,
        permission: &str,
    ) -> Result<Option<Vec<String>>, DirectoryError> {
        let _ = permission;
        Ok(None)
    }
    /// Whether `role_holders` and the user reads come from where privilege
    /// is kept (Genesys Cloud's Authorization API), rather than from the
    /// same SCIM view the listing shows: then the deep sweep cross-checks.
    fn holders_are_grants(&self) -> bool {
        false
    }
    /// One harmless read per feature in use, each naming the permission it
    /// needs (`oauth_clients`: the OAuth-client report is on); `None` where
    /// the target has no permissions to check.
    async fn probe_permissions(&self, oauth_clients: bool) -> Option<Vec<PermissionProbe>> {
        let _ = oauth_clients;
        None
    }
    /// When `user` last logged in (Genesys Cloud: the last token issued to
    /// them), where the target can tell; `None` where it cannot, `Some(None)`
    /// for a user who never did.
    async fn last_login(
        &self,
        user: &UserName,
    ) -> Result<Option<Option<DateTime<Utc>>>, DirectoryError> {
        let _ = user;
        Ok(None)
    }
    /// Whether the target keeps an audit trail the broker can read (Genesys
    /// Cloud's audit API): then a grant's activity is collected.
    fn has_audit_trail(&self) -> bool {
        false
    }
    /// What the user with directory id `user_id` did from `from` to `to`,
    /// as the target's audit trail has it by `now`, without the broker's own
    /// client's writes; `None` where the target keeps no trail.
    async fn activity(
        &self,
        user_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<ActivityEvent>>, DirectoryError> {
        let _ = (user_id, from, to, now);
        Ok(None)
    }
    /// The changes to the grants of the user with directory id `user_id`
    /// from `from` to `to`, whoever made them (the broker's included): who
    /// granted what, through which client. `None` where the target keeps no
    /// trail.
    async fn grant_changes(
        &self,
        user_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<ActivityEvent>>, DirectoryError> {
        let _ = (user_id, from, to, now);
        Ok(None)
    }
    /// The user whose `userName` is `user`.
    async fn find_user(&self, user: &UserName) -> Result<DirectoryUser, DirectoryError>;
    /// The user by directory id, with their real `userName` (an event names
    /// users by id): by default the same read as [`Self::get_user`].
    async fn user_by_id(&self, id: &str) -> Result<DirectoryUser, DirectoryError> {
        self.get_user(id).await
    }
    /// The user by directory id (the read-back after a write).
    async fn get_user(&self, id: &str) -> Result<DirectoryUser, DirectoryError>;
    /// The org's OAuth clients with their roles, where the target offers it
    /// (Genesys Platform API); `None` on targets without it.
    async fn oauth_clients(&self) -> Result<Option<Vec<OAuthClientRoles>>, DirectoryError> {
        Ok(None)
    }
    /// Takes every grant of `role` away from a group and verifies it by
    /// reading the group back (Genesys Cloud); refused on targets without groups.
    async fn strip_group_role(
        &self,
        group: &GroupHolder,
        role: &RoleName,
    ) -> Result<(), DirectoryError> {
        let _ = role;
        Err(DirectoryError::Permanent(format!(
            "this directory cannot change group `{}`'s roles",
            group.name
        )))
    }
    /// Adds or removes one role, touching no other, guarded by `user.version`.
    /// Answers the user as the write left it when the target says (the
    /// read-back, for free); `None` when the caller must read it back.
    async fn change_role(
        &self,
        user: &DirectoryUser,
        role: &RoleName,
        change: RoleChange,
    ) -> Result<Option<DirectoryUser>, DirectoryError>;
}
