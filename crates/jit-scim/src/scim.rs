//! SCIM 2.0 Users: look-up by userName (then by id), paging, the holders of a
//! role by filter, and the role PATCH whose answer is the read-back.

use crate::{ScimClient, ScimError};
use jit_app::{DirectoryPage, DirectoryUser, RoleHolders};
use jit_domain::RoleChange;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

/// Holders a page, when asking the target who holds a role (a few, usually).
const HOLDERS_PAGE: u32 = 100;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Only what converge needs: Genesys answers large pages with 429 unless the
/// expensive secondary lookups are left out (docs/genesys-cloud.md, "Listing users").
const USER_ATTRIBUTES: &str = "userName,roles,active,meta.version";

#[derive(Deserialize)]
struct ServiceProviderConfig {
    #[serde(default)]
    filter: Option<Supported>,
}

#[derive(Deserialize)]
struct Supported {
    #[serde(default)]
    supported: bool,
}

#[derive(Deserialize)]
struct ScimUser {
    id: String,
    #[serde(rename = "userName", default)]
    user_name: String,
    #[serde(default)]
    roles: Vec<ScimRole>,
    #[serde(default)]
    meta: Option<ScimMeta>,
}

#[derive(Deserialize)]
struct ScimRole {
    value: String,
}

#[derive(Deserialize)]
struct ScimMeta {
    version: Option<String>,
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(rename = "totalResults", default)]
    total_results: u64,
    #[serde(rename = "Resources", default)]
    resources: Vec<ScimUser>,
}

impl ScimUser {
    fn into_directory_user(self, etag: Option<String>) -> DirectoryUser {
        DirectoryUser {
            id: self.id,
            user_name: self.user_name,
            roles: self.roles.into_iter().map(|r| r.value).collect(),
            version: self.meta.and_then(|m| m.version).or(etag),
            ..DirectoryUser::default()
        }
    }
}

/// A SCIM filter string literal: quotes and backslashes escaped (RFC 7644 §3.4.2.2 uses JSON strings).
pub(crate) fn filter_literal(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

impl ScimClient {
    pub(crate) fn users_url(&self, id: Option<&str>) -> Result<Url, ScimError> {
        let mut url = self.config.base_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| ScimError::Config("the SCIM base URL cannot have a path".into()))?;
            segments.pop_if_empty().push(&self.config.users_path);
            if let Some(id) = id {
                segments.push(id);
            }
        }
        Ok(url)
    }

    /// The user by name: one `GET` by id when the id is known, else a filter
    /// query (whose answer teaches the id).
    pub async fn find_user(&self, user_name: &str) -> Result<DirectoryUser, ScimError> {
        let known = self.known_id(user_name);
        if let Some(id) = known {
            match self.get_user(&id).await {
                Ok(user) if user.user_name == user_name => return Ok(user),
                // Gone or renamed: forget the id and ask by name.
                Ok(_)
                | Err(ScimError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) => self.forget_id(user_name),
                Err(e) => return Err(e),
            }
        }
        let user = self.find_user_by_filter(user_name).await?;
        self.remember_id(&user);
        Ok(user)
    }

    pub(crate) fn known_id(&self, user_name: &str) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user_name)
            .cloned()
    }

    pub(crate) fn remember_id(&self, user: &DirectoryUser) {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user.user_name.clone(), user.id.clone());
    }

    pub(crate) fn forget_id(&self, user_name: &str) {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(user_name);
    }

    pub(crate) async fn find_user_by_filter(
        &self,
        user_name: &str,
    ) -> Result<DirectoryUser, ScimError> {
        let mut url = self.users_url(None)?;
        url.query_pairs_mut()
            .append_pair(
                "filter",
                &format!("userName eq {}", filter_literal(user_name)),
            )
            .append_pair("attributes", USER_ATTRIBUTES);
        let list: ListResponse = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
        match (list.total_results, list.resources.len()) {
            (_, 0) => Err(ScimError::UserNotFound(user_name.to_owned())),
            (0 | 1, 1) => {
                let mut found = list.resources;
                Ok(found.remove(0).into_directory_user(None))
            }
            (n, m) => Err(ScimError::Ambiguous(user_name.to_owned(), n.max(m as u64))),
        }
    }

    /// One page of `/Users` (`startIndex` is 1-based), asking only for the
    /// attributes the sweep needs: Genesys answers 429 to large pages that
    /// include expensive attributes (docs/genesys-cloud.md, "Listing users").
    pub async fn list_users(
        &self,
        start_index: u64,
        count: u32,
    ) -> Result<DirectoryPage, ScimError> {
        let mut url = self.users_url(None)?;
        url.query_pairs_mut()
            .append_pair("startIndex", &start_index.to_string())
            .append_pair("count", &count.to_string())
            .append_pair("attributes", USER_ATTRIBUTES);
        let list: ListResponse = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
        Ok(DirectoryPage {
            total_results: list.total_results,
            users: list
                .resources
                .into_iter()
                .map(|u| u.into_directory_user(None))
                .collect(),
        })
    }

    /// Who holds `role`, without listing everyone: Genesys Cloud's role users
    /// (Platform API) where configured, else a `roles.value` filter where the
    /// target announces filtering; `None` where neither is on offer.
    pub async fn role_holders(&self, role: &str) -> Result<Option<RoleHolders>, ScimError> {
        let mut requests = 0;
        let filters = self
            .filters
            .get_or_try_init(|| async {
                requests += 1;
                self.announces_filtering().await
            })
            .await?;
        if !filters {
            return Ok(None);
        }
        let mut holders = Vec::new();
        let mut start_index: u64 = 1;
        loop {
            let mut url = self.users_url(None)?;
            url.query_pairs_mut()
                .append_pair(
                    "filter",
                    &format!("roles.value eq {}", filter_literal(role)),
                )
                .append_pair("startIndex", &start_index.to_string())
                .append_pair("count", &HOLDERS_PAGE.to_string())
                .append_pair("attributes", USER_ATTRIBUTES);
            let list: ListResponse = Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            requests += 1;
            let listed = list.resources.len() as u64;
            for user in list.resources {
                let user = user.into_directory_user(None);
                // A target that ignored the filter answers everyone: keep
                // only the holders, and the result is still right.
                if user.roles.iter().any(|r| r == role) {
                    self.remember_id(&user);
                    holders.push(user.user_name);
                }
            }
            start_index += listed;
            if listed == 0 || start_index > list.total_results {
                break;
            }
        }
        Ok(Some(RoleHolders {
            users: holders,
            requests,
            ..RoleHolders::default()
        }))
    }

    /// `GET /ServiceProviderConfig`: does the target filter? A target
    /// without the endpoint does not say so, and is listed in full.
    pub(crate) async fn announces_filtering(&self) -> Result<bool, ScimError> {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| ScimError::Config("SCIM base URL cannot have paths".into()))?
            .pop_if_empty()
            .push("ServiceProviderConfig");
        match self.send(Method::GET, url, |r| r).await {
            Ok(response) => Ok(Self::json::<ServiceProviderConfig>(response)
                .await?
                .filter
                .is_some_and(|f| f.supported)),
            Err(ScimError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn get_user(&self, id: &str) -> Result<DirectoryUser, ScimError> {
        let mut url = self.users_url(Some(id))?;
        url.query_pairs_mut()
            .append_pair("attributes", USER_ATTRIBUTES);
        let response = self.send(Method::GET, url, |r| r).await?;
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self::json::<ScimUser>(response)
            .await?
            .into_directory_user(etag))
    }

    /// Adds or removes exactly one role. Never `replace` on `roles`: that races
    /// with the IdP's own writes and with baseline roles (docs/genesys-cloud.md).
    /// Answers the user as the PATCH left it when the target returns it (200,
    /// RFC 7644 §3.5.2, asked for with `attributes`; Genesys always does): that
    /// answer is the read-back. `None` on a 204: the caller reads back itself.
    pub async fn change_role(
        &self,
        user: &DirectoryUser,
        role: &str,
        change: RoleChange,
    ) -> Result<Option<DirectoryUser>, ScimError> {
        let operation = match change {
            RoleChange::Add => json!({"op": "add", "path": "roles", "value": [{"value": role}]}),
            RoleChange::Remove => {
                json!({"op": "remove", "path": format!("roles[value eq {}]", filter_literal(role))})
            }
        };
        let body = json!({"schemas": [PATCH_OP], "Operations": [operation]});
        let mut url = self.users_url(Some(&user.id))?;
        url.query_pairs_mut()
            .append_pair("attributes", USER_ATTRIBUTES);
        let response = self
            .send(Method::PATCH, url, |r| {
                let r = r
                    .header(header::CONTENT_TYPE, "application/scim+json")
                    .body(body.to_string());
                match &user.version {
                    Some(v) => r.header(header::IF_MATCH, v),
                    None => r,
                }
            })
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ScimError::Decode(e.without_url().to_string()))?;
        // A 200 with no user in it (some targets) is as good as a 204.
        Ok(serde_json::from_slice::<ScimUser>(&bytes)
            .ok()
            .map(|u| u.into_directory_user(etag)))
    }
}
