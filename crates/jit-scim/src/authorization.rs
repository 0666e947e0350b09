//! Genesys Cloud's Authorization API: where privilege really lives. A role
//! is held as grants (subject, role, division), the subject a user or a
//! group (docs/genesys-cloud.md, "Where privilege lives"). Reads, and writes
//! that change only the pairs they name (`bulkadd`, `bulkremove`; never
//! `bulkreplace`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jit_domain::RoleChange;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::{ScimClient, ScimError};

/// The division id that means every division.
pub const ALL_DIVISIONS: &str = "*";

/// One grant as `GET /api/v2/authorization/subjects/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectGrant {
    /// The user, or the group the grant reaches the user through.
    pub subject_id: String,
    pub role_id: String,
    pub role: String,
    pub division_id: String,
    pub division: String,
    pub made_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    User,
    Group,
}

/// A subject holding a role, with the divisions of its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSubject {
    pub id: String,
    pub name: String,
    pub kind: SubjectKind,
    pub division_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct GrantJson {
    #[serde(rename = "subjectId", default)]
    subject_id: Option<String>,
    role: Named,
    division: Named,
    #[serde(rename = "grantMadeAt", default)]
    made_at: Option<String>,
}

#[derive(Deserialize)]
struct SubjectJson {
    id: String,
    #[serde(default)]
    grants: Vec<GrantJson>,
}

#[derive(Deserialize)]
struct SubjectGrantsJson {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    divisions: Vec<Named>,
}

#[derive(Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub(crate) entities: Vec<T>,
    #[serde(rename = "pageCount")]
    pub(crate) page_count: Option<u64>,
}

#[derive(Deserialize)]
struct Member {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// Subjects a page (holders of one role, members of one group).
const PAGE: u64 = 100;

impl ScimClient {
    /// The subject's grants; with `through_groups`, also those reaching it
    /// through a group (`includeDuplicates=true`).
    pub async fn subject_grants(
        &self,
        subject_id: &str,
        through_groups: bool,
    ) -> Result<Vec<SubjectGrant>, ScimError> {
        let mut url = self.platform_url(&format!("api/v2/authorization/subjects/{subject_id}"))?;
        if through_groups {
            url.query_pairs_mut()
                .append_pair("includeDuplicates", "true");
        }
        let subject: SubjectJson = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
        Ok(subject
            .grants
            .into_iter()
            .map(|g| SubjectGrant {
                subject_id: g.subject_id.unwrap_or_else(|| subject.id.clone()),
                role_id: g.role.id,
                role: g.role.name,
                division_id: g.division.id,
                division: g.division.name,
                made_at: g
                    .made_at
                    .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.with_timezone(&Utc)),
            })
            .collect())
    }

    /// Adds or removes exactly the (role id, division id) pairs named, on a
    /// user; every other grant of the user stays as it is.
    pub async fn change_grants(
        &self,
        user_id: &str,
        change: RoleChange,
        pairs: &[(String, String)],
    ) -> Result<(), ScimError> {
        self.change_subject_grants(user_id, "PC_USER", change, pairs)
            .await
    }

    /// The same for any subject type (`PC_USER`, `PC_GROUP`).
    pub async fn change_subject_grants(
        &self,
        subject_id: &str,
        subject_type: &str,
        change: RoleChange,
        pairs: &[(String, String)],
    ) -> Result<(), ScimError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let verb = match change {
            RoleChange::Add => "bulkadd",
            RoleChange::Remove => "bulkremove",
        };
        let mut url = self.platform_url(&format!(
            "api/v2/authorization/subjects/{subject_id}/{verb}"
        ))?;
        url.query_pairs_mut()
            .append_pair("subjectType", subject_type);
        let grants: Vec<_> = pairs
            .iter()
            .map(|(role, division)| json!({"roleId": role, "divisionId": division}))
            .collect();
        let body = json!({ "grants": grants });
        self.send(Method::POST, url, |r| r.json(&body)).await?;
        Ok(())
    }

    /// A division's id: `*` (every division) as it is, `home` for the org's
    /// home division, else by exact name. Resolved once, then cached.
    pub async fn division_id(&self, division: &str) -> Result<String, ScimError> {
        if division == ALL_DIVISIONS {
            return Ok(ALL_DIVISIONS.to_owned());
        }
        if let Some(id) = lock(&self.division_ids).get(division) {
            return Ok(id.clone());
        }
        let _one = self.lookups.lock().await;
        if let Some(id) = lock(&self.division_ids).get(division) {
            return Ok(id.clone());
        }
        let id = if division == "home" {
            let url = self.platform_url("api/v2/authorization/divisions/home")?;
            let home: Named = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            home.id
        } else {
            let mut url = self.platform_url("api/v2/authorization/divisions")?;
            url.query_pairs_mut().append_pair("name", division);
            let found: Page<Named> = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            found
                .entities
                .into_iter()
                .find(|d| d.name == division)
                .map(|d| d.id)
                .ok_or_else(|| {
                    ScimError::Config(format!("Genesys Cloud has no division named `{division}`"))
                })?
        };
        lock(&self.division_ids).insert(division.to_owned(), id.clone());
        Ok(id)
    }

    /// The role's id by exact name (cached); `None`: no such role in the org.
    pub async fn role_id(&self, role: &str) -> Result<Option<String>, ScimError> {
        if let Some(id) = self.known_role_id(role) {
            return Ok(Some(id));
        }
        // One look-up at a time: converges starting together ask once.
        let _one = self.lookups.lock().await;
        match self.known_role_id(role) {
            Some(id) => Ok(Some(id)),
            None => self.resolve_role_id(role).await,
        }
    }

    /// Every subject holding `role` (users and groups, with the divisions
    /// of their grants), page by page; `None`: no such role in the org.
    pub async fn role_subjects(&self, role: &str) -> Result<Option<Vec<RoleSubject>>, ScimError> {
        Ok(self.role_subjects_counted(role).await?.0)
    }

    /// [`Self::role_subjects`] with the number of requests it took.
    pub(crate) async fn role_subjects_counted(
        &self,
        role: &str,
    ) -> Result<(Option<Vec<RoleSubject>>, u64), ScimError> {
        let mut requests = u64::from(self.known_role_id(role).is_none());
        let Some(mut id) = self.role_id(role).await? else {
            return Ok((None, requests));
        };
        let mut resolved_again = false;
        let found = loop {
            let path = format!("api/v2/authorization/roles/{id}/subjectgrants");
            match self.all_pages::<SubjectGrantsJson>(&path, &[]).await {
                Ok((found, pages)) => {
                    requests += pages;
                    break found;
                }
                // The role was re-created under a new id: its name once more.
                Err(ScimError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) if !resolved_again => {
                    resolved_again = true;
                    self.forget_role_id(role);
                    requests += 2; // the 404, and the name again
                    match self.resolve_role_id(role).await? {
                        Some(again) => id = again,
                        None => return Ok((None, requests)),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let subjects = found
            .into_iter()
            .map(|s| RoleSubject {
                id: s.id,
                name: s.name,
                kind: if s.kind.eq_ignore_ascii_case("PC_GROUP") {
                    SubjectKind::Group
                } else {
                    SubjectKind::User
                },
                division_ids: s.divisions.into_iter().map(|d| d.id).collect(),
            })
            .collect();
        Ok((Some(subjects), requests))
    }

    /// The names of the roles that carry `permission`.
    pub async fn roles_with_permission(&self, permission: &str) -> Result<Vec<String>, ScimError> {
        let (roles, _) = self
            .all_pages::<Named>("api/v2/authorization/roles", &[("permission", permission)])
            .await?;
        Ok(roles.into_iter().map(|r| r.name).collect())
    }

    /// Every entity of a Platform API listing, page by page (`pageSize`,
    /// `pageNumber`, until `pageCount`), with the requests it took.
    pub(crate) async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(Vec<T>, u64), ScimError> {
        let (mut items, mut page) = (Vec::new(), 1u64);
        loop {
            let mut url = self.platform_url(path)?;
            url.query_pairs_mut()
                .extend_pairs(query)
                .append_pair("pageSize", &PAGE.to_string())
                .append_pair("pageNumber", &page.to_string());
            let found: Page<T> = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            let done = found.entities.is_empty() || found.page_count.is_none_or(|n| page >= n);
            items.extend(found.entities);
            if done {
                return Ok((items, page));
            }
            page += 1;
        }
    }

    /// The user names of a group's members (who a group grant reaches).
    pub async fn group_members(&self, group_id: &str) -> Result<Vec<String>, ScimError> {
        let path = format!("api/v2/groups/{group_id}/members");
        let (members, _) = self.all_pages::<Member>(&path, &[]).await?;
        Ok(members
            .into_iter()
            .map(|m| m.username.or(m.email).unwrap_or(m.id))
            .collect())
    }
}

fn lock(
    map: &std::sync::Mutex<HashMap<String, String>>,
) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
