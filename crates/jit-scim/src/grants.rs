//! The `Directory` port over Genesys Cloud's Authorization API (the genesys
//! profile): a user's roles are the grants they hold in their own name,
//! read from `subjects/{id}`; a grant is added in every division the policy
//! names for the role, and taken away in every division it is held in.
//! SCIM only finds the user's id (once, then cached).

use std::collections::{BTreeSet, HashMap};

use jit_app::{DirectoryError, DirectoryUser, DivisionGrant, GroupHolder, RoleHolders};
use jit_domain::RoleChange;
use reqwest::StatusCode;

use crate::authorization::SubjectKind;
use crate::{ScimClient, ScimError};

/// Role name → the division names a grant of it covers (`*`, `home`, names).
pub type GrantDivisions = HashMap<String, Vec<String>>;

impl ScimClient {
    /// The user by name, their grants read from the Authorization API.
    pub(crate) async fn grants_user_by_name(
        &self,
        user_name: &str,
    ) -> Result<DirectoryUser, ScimError> {
        if let Some(id) = self.known_id(user_name) {
            match self.grants_user(&id, user_name).await {
                Err(ScimError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) => self.forget_id(user_name),
                other => return other,
            }
        }
        let found = self.find_user_by_filter(user_name).await?;
        self.remember_id(&found);
        self.grants_user(&found.id, user_name).await
    }

    /// The user by id: their own grants (not those through a group: a
    /// group's grant is the sweep's business, not this user's converge).
    pub(crate) async fn grants_user(
        &self,
        id: &str,
        user_name: &str,
    ) -> Result<DirectoryUser, ScimError> {
        let read = self.subject_grants(id, false).await?;
        let grants: Vec<DivisionGrant> = read
            .into_iter()
            .filter(|g| g.subject_id == id)
            .map(|g| DivisionGrant {
                role: g.role,
                role_id: g.role_id,
                division_id: g.division_id,
            })
            .collect();
        let roles: BTreeSet<&str> = grants.iter().map(|g| g.role.as_str()).collect();
        let mut partial = Vec::new();
        for role in &roles {
            let held: BTreeSet<&str> = grants
                .iter()
                .filter(|g| g.role == *role)
                .map(|g| g.division_id.as_str())
                .collect();
            let Some(divisions) = self.grant_divisions.as_ref().and_then(|d| d.get(*role)) else {
                continue;
            };
            for division in divisions {
                if !held.contains(self.division_id(division).await?.as_str()) {
                    partial.push((*role).to_owned());
                    break;
                }
            }
        }
        Ok(DirectoryUser {
            id: id.to_owned(),
            user_name: user_name.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            version: None,
            grants,
            partial,
        })
    }

    /// Adds the role in every division its grant covers, or takes away every
    /// grant of it the user holds in their own name. Answers nothing: the
    /// write has no body, so the caller reads the user back.
    pub(crate) async fn change_grants_of(
        &self,
        user: &DirectoryUser,
        role: &str,
        change: RoleChange,
    ) -> Result<(), ScimError> {
        let pairs: Vec<(String, String)> = match change {
            RoleChange::Add => {
                let Some(role_id) = self.role_id(role).await? else {
                    return Err(ScimError::Config(format!(
                        "Genesys Cloud has no role named `{role}`"
                    )));
                };
                let mut pairs = Vec::new();
                for division in self.divisions_of(role) {
                    pairs.push((role_id.clone(), self.division_id(&division).await?));
                }
                pairs
            }
            RoleChange::Remove => user
                .grants
                .iter()
                .filter(|g| g.role == role)
                .map(|g| (g.role_id.clone(), g.division_id.clone()))
                .collect(),
        };
        self.change_grants(&user.id, change, &pairs).await
    }

    /// Who holds `role`, from the role's subject grants: users by a grant
    /// of their own (in any division), and groups with their members.
    pub(crate) async fn grant_holders(&self, role: &str) -> Result<RoleHolders, ScimError> {
        let (subjects, mut requests) = self.role_subjects_counted(role).await?;
        let Some(subjects) = subjects else {
            // No such role in the org: nobody holds it.
            return Ok(RoleHolders {
                requests,
                ..RoleHolders::default()
            });
        };
        let mut holders = RoleHolders::default();
        for subject in subjects {
            match subject.kind {
                SubjectKind::User => {
                    let (name, asked) = self.user_name_of(&subject.id).await?;
                    requests += asked;
                    holders.users.push(name);
                }
                SubjectKind::Group => {
                    requests += 1;
                    holders.groups.push(GroupHolder {
                        members: self.group_members(&subject.id).await?,
                        id: subject.id,
                        name: subject.name,
                        divisions: subject.division_ids,
                    });
                }
            }
        }
        holders.requests = requests;
        Ok(holders)
    }

    /// A user's `userName` by id: known from an earlier look-up, else asked
    /// of the Platform API (and remembered). With the requests it took.
    pub(crate) async fn user_name_of(&self, id: &str) -> Result<(String, u64), ScimError> {
        if let Some(name) = self.name_of(id) {
            return Ok((name, 0));
        }
        let url = self.platform_url(&format!("api/v2/users/{id}"))?;
        let user: serde_json::Value =
            Self::json(self.send(reqwest::Method::GET, url, |r| r).await?).await?;
        let name = user["username"]
            .as_str()
            .or(user["email"].as_str())
            .ok_or_else(|| ScimError::Decode(format!("user {id} has no username")))?
            .to_owned();
        self.remember_id(&DirectoryUser {
            id: id.to_owned(),
            user_name: name.clone(),
            ..DirectoryUser::default()
        });
        Ok((name, 1))
    }

    /// Takes every grant of `role` from the group, then reads the group
    /// back: any grant of the role left is an error (tried again next sweep).
    pub(crate) async fn strip_group(
        &self,
        group: &GroupHolder,
        role: &str,
    ) -> Result<(), DirectoryError> {
        let pairs: Vec<(String, String)> = self
            .subject_grants(&group.id, false)
            .await?
            .into_iter()
            .filter(|g| g.role == role && g.subject_id == group.id)
            .map(|g| (g.role_id, g.division_id))
            .collect();
        self.change_subject_grants(&group.id, "PC_GROUP", RoleChange::Remove, &pairs)
            .await?;
        let left = self
            .subject_grants(&group.id, false)
            .await?
            .into_iter()
            .filter(|g| g.role == role)
            .count();
        if left > 0 {
            return Err(DirectoryError::Transient {
                message: format!(
                    "group `{}` still holds `{role}` in {left} division(s) after the removal",
                    group.name
                ),
                retry_after: None,
            });
        }
        Ok(())
    }

    /// The divisions a grant of `role` covers: as the policy says, else all.
    fn divisions_of(&self, role: &str) -> Vec<String> {
        self.grant_divisions
            .as_ref()
            .and_then(|d| d.get(role))
            .cloned()
            .unwrap_or_else(|| vec![crate::authorization::ALL_DIVISIONS.to_owned()])
    }

    /// The user name a cached id belongs to (for a read by id).
    pub(crate) fn name_of(&self, id: &str) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(_, known)| known.as_str() == id)
            .map(|(name, _)| name.clone())
    }
}
