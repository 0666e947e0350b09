//! Genesys Cloud's Platform API beside SCIM: a role's id by name, a user's
//! last login, and the OAuth clients with their roles. (A role's holders
//! come from its subject grants: see `authorization`.)

use crate::authorization::Page;
use crate::{ScimClient, ScimError};
use jit_app::OAuthClientRoles;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

#[derive(Deserialize)]
struct PlatformRole {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct PlatformClient {
    id: String,
    name: String,
    #[serde(rename = "roleIds", default)]
    role_ids: Vec<String>,
    #[serde(rename = "roleDivisions", default)]
    role_divisions: Vec<RoleDivision>,
}

#[derive(Deserialize)]
struct RoleDivision {
    #[serde(rename = "roleId")]
    role_id: String,
}

impl ScimClient {
    /// Every OAuth client of the org with the names of the roles it holds
    /// (Genesys Platform API: `/api/v2/oauth/clients`, role names from
    /// `/api/v2/authorization/roles`). `None` without a Platform API base.
    pub async fn oauth_clients(&self) -> Result<Option<Vec<OAuthClientRoles>>, ScimError> {
        if self.config.platform_api.is_none() {
            return Ok(None);
        }
        let (roles, _) = self
            .all_pages::<PlatformRole>("api/v2/authorization/roles", &[])
            .await?;
        let role_names: std::collections::HashMap<String, String> =
            roles.into_iter().map(|r| (r.id, r.name)).collect();
        let url = self.platform_url("api/v2/oauth/clients")?;
        let clients: Page<PlatformClient> =
            Self::json(self.send(Method::GET, url, |r| r).await?).await?;
        Ok(Some(
            clients
                .entities
                .into_iter()
                .map(|c| {
                    let ids = c
                        .role_ids
                        .into_iter()
                        .chain(c.role_divisions.into_iter().map(|rd| rd.role_id));
                    let mut roles: Vec<String> = ids
                        .map(|id| role_names.get(&id).cloned().unwrap_or(id))
                        .collect();
                    roles.sort();
                    roles.dedup();
                    OAuthClientRoles {
                        id: c.id,
                        name: c.name,
                        roles,
                    }
                })
                .collect(),
        ))
    }

    /// When `user_name` last logged in, from Genesys Cloud's Platform API
    /// (`GET /api/v2/users/{id}?expand=lasttokenissued`: the last token
    /// issued, or `dateLastLogin` where present; the newer of the two).
    /// `None` without a Platform API.
    pub async fn last_login(
        &self,
        user_name: &str,
    ) -> Result<Option<Option<chrono::DateTime<chrono::Utc>>>, ScimError> {
        if self.config.platform_api.is_none() {
            return Ok(None);
        }
        let id = match self.known_id(user_name) {
            Some(id) => id,
            None => self.find_user(user_name).await?.id,
        };
        let mut url = self.platform_url(&format!("api/v2/users/{id}"))?;
        url.query_pairs_mut()
            .append_pair("expand", "lasttokenissued")
            .append_pair("expand", "dateLastLogin");
        let user: Value = match self.send(Method::GET, url, |r| r).await {
            Ok(response) => Self::json(response).await?,
            Err(ScimError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => {
                // A stale id: ask again by name next time.
                self.forget_id(user_name);
                return Err(ScimError::UserNotFound(user_name.to_owned()));
            }
            Err(e) => return Err(e),
        };
        let date = |v: &Value| {
            v.as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
        };
        Ok(Some(
            date(&user["lastTokenIssued"]["dateIssued"]).max(date(&user["dateLastLogin"])),
        ))
    }

    /// `GET /api/v2/authorization/roles?name=…`: the id of the role named
    /// exactly `role` (the search may match more than one name).
    pub(crate) async fn resolve_role_id(&self, role: &str) -> Result<Option<String>, ScimError> {
        let mut url = self.platform_url("api/v2/authorization/roles")?;
        url.query_pairs_mut()
            .append_pair("name", role)
            .append_pair("pageSize", "25");
        let roles: Page<PlatformRole> =
            Self::json(self.send(Method::GET, url, |r| r).await?).await?;
        let id = roles
            .entities
            .into_iter()
            .find(|r| r.name == role)
            .map(|r| r.id);
        if let Some(id) = &id {
            self.role_ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(role.to_owned(), id.clone());
        }
        Ok(id)
    }

    pub(crate) fn known_role_id(&self, role: &str) -> Option<String> {
        self.role_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(role)
            .cloned()
    }

    pub(crate) fn forget_role_id(&self, role: &str) {
        self.role_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(role);
    }

    pub(crate) fn platform_url(&self, path: &str) -> Result<Url, ScimError> {
        let api = self
            .config
            .platform_api
            .as_ref()
            .ok_or_else(|| ScimError::Config("no Platform API base URL".into()))?;
        api.join(path)
            .map_err(|e| ScimError::Config(format!("platform API URL: {e}")))
    }
}
