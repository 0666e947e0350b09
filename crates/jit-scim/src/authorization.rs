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
struct Page<T> {
    #[serde(default = "Vec::new")]
    entities: Vec<T>,
    #[serde(rename = "pageCount")]
    page_count: Option<u64>,
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
        let mut subjects = Vec::new();
        let mut page = 1;
        loop {
            let mut url =
                self.platform_url(&format!("api/v2/authorization/roles/{id}/subjectgrants"))?;
            url.query_pairs_mut()
                .append_pair("pageSize", &PAGE.to_string())
                .append_pair("pageNumber", &page.to_string());
            requests += 1;
            let answer = match self.send(Method::GET, url, |r| r).await {
                // The role was re-created under a new id: its name once more.
                Err(ScimError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) if !resolved_again => {
                    resolved_again = true;
                    self.forget_role_id(role);
                    requests += 1;
                    match self.resolve_role_id(role).await? {
                        Some(again) => id = again,
                        None => return Ok((None, requests)),
                    }
                    (subjects, page) = (Vec::new(), 1);
                    continue;
                }
                other => other?,
            };
            let found: Page<SubjectGrantsJson> = Self::json(answer).await?;
            let done = found.entities.is_empty() || found.page_count.is_none_or(|n| page >= n);
            subjects.extend(found.entities.into_iter().map(|s| RoleSubject {
                id: s.id,
                name: s.name,
                kind: if s.kind.eq_ignore_ascii_case("PC_GROUP") {
                    SubjectKind::Group
                } else {
                    SubjectKind::User
                },
                division_ids: s.divisions.into_iter().map(|d| d.id).collect(),
            }));
            if done {
                return Ok((Some(subjects), requests));
            }
            page += 1;
        }
    }

    /// The names of the roles that carry `permission`, page by page.
    pub async fn roles_with_permission(&self, permission: &str) -> Result<Vec<String>, ScimError> {
        let mut names = Vec::new();
        let mut page = 1;
        loop {
            let mut url = self.platform_url("api/v2/authorization/roles")?;
            url.query_pairs_mut()
                .append_pair("permission", permission)
                .append_pair("pageSize", &PAGE.to_string())
                .append_pair("pageNumber", &page.to_string());
            let found: Page<Named> = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            let done = found.entities.is_empty() || found.page_count.is_none_or(|n| page >= n);
            names.extend(found.entities.into_iter().map(|r| r.name));
            if done {
                return Ok(names);
            }
            page += 1;
        }
    }

    /// The user names of a group's members (who a group grant reaches).
    pub async fn group_members(&self, group_id: &str) -> Result<Vec<String>, ScimError> {
        let mut members = Vec::new();
        let mut page = 1;
        loop {
            let mut url = self.platform_url(&format!("api/v2/groups/{group_id}/members"))?;
            url.query_pairs_mut()
                .append_pair("pageSize", &PAGE.to_string())
                .append_pair("pageNumber", &page.to_string());
            let found: Page<Member> = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            let done = found.entities.is_empty() || found.page_count.is_none_or(|n| page >= n);
            members.extend(
                found
                    .entities
                    .into_iter()
                    .map(|m| m.username.or(m.email).unwrap_or(m.id)),
            );
            if done {
                return Ok(members);
            }
            page += 1;
        }
    }
}

fn lock(
    map: &std::sync::Mutex<HashMap<String, String>>,
) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
