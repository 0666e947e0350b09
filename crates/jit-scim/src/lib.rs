//! jit-scim: the `Directory` port over SCIM 2.0 (RFC 7643/7644) with the
//! Genesys Cloud profile (docs/genesys-cloud.md): OAuth client-credentials
//! token cache, one-role PATCH guarded by `If-Match`, read-back, and errors
//! sorted into transient and permanent.

mod audits;
pub mod authorization;
pub mod doctor;
mod grants;
mod platform;
mod scim;
mod transport;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_app::{
    Budget, Directory, DirectoryError, DirectoryPage, DirectoryUser, OAuthClientRoles, RoleHolders,
};
use jit_domain::{ActivityEvent, RoleChange, RoleName, UserName};

pub use grants::GrantDivisions;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use tokio::sync::Mutex;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    #[error("SCIM {method} {path} answered {status}: {detail}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        scim_type: Option<String>,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("SCIM {method} {path} failed: {source}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("OAuth token request failed: {0}")]
    Token(String),
    #[error("SCIM answer could not be read: {0}")]
    Decode(String),
    #[error("user `{0}` not found in the directory")]
    UserNotFound(String),
    #[error("userName `{0}` matches {1} directory users")]
    Ambiguous(String, u64),
    #[error("invalid SCIM configuration: {0}")]
    Config(String),
}

impl From<ScimError> for DirectoryError {
    fn from(e: ScimError) -> Self {
        let message = e.to_string();
        match e {
            ScimError::UserNotFound(u) => DirectoryError::UserNotFound(u),
            ScimError::Status {
                status,
                ref scim_type,
                retry_after,
                ..
            } => match status.as_u16() {
                // A version mismatch: RFC 7644 §3.14 (412), Genesys (400 invalidVers or 409).
                412 | 409 => DirectoryError::VersionConflict(message),
                400 if scim_type.as_deref() == Some("invalidVers") => {
                    DirectoryError::VersionConflict(message)
                }
                404 => DirectoryError::Permanent(message),
                // Rate limited, timed out, server trouble, or a token the target
                // no longer takes (after one refresh): all may pass.
                401 | 408 | 425 | 429 | 500 | 502 | 503 | 504 => DirectoryError::Transient {
                    message,
                    retry_after,
                },
                _ => DirectoryError::Permanent(message),
            },
            ScimError::Transport { .. } | ScimError::Token(_) => DirectoryError::Transient {
                message,
                retry_after: None,
            },
            ScimError::Decode(_) | ScimError::Ambiguous(..) | ScimError::Config(_) => {
                DirectoryError::Permanent(message)
            }
        }
    }
}

/// How the broker authenticates to the SCIM target.
pub enum ScimAuth {
    /// A static bearer token (generic SCIM servers).
    Bearer(SecretString),
    /// OAuth 2.0 client credentials (Genesys Cloud): `POST token_url` with
    /// HTTP Basic `client_id:client_secret`, `grant_type=client_credentials`.
    ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
    },
}

impl std::fmt::Debug for ScimAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer([redacted])"),
            Self::ClientCredentials {
                token_url,
                client_id,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("token_url", &token_url.as_str())
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

#[derive(Debug)]
pub struct ScimConfig {
    /// The SCIM base, e.g. `https://api.mypurecloud.ie/api/v2/scim/v2`.
    pub base_url: Url,
    /// `users` on Genesys Cloud; RFC 7644 spells it `Users`.
    pub users_path: String,
    pub auth: ScimAuth,
    /// Per request, connect included.
    pub timeout: Duration,
    /// Genesys Cloud's Platform API base (`https://api.<region>`), for the
    /// OAuth-client report; `None` on generic SCIM targets.
    pub platform_api: Option<Url>,
}

impl ScimConfig {
    /// Genesys Cloud's profile served from one base URL (a proxy or a
    /// stand-in): SCIM at `<base>/api/v2/scim/v2`, the token at
    /// `<base>/oauth/token`, the Platform API at `<base>/`.
    pub fn genesys_at(
        base: &str,
        client_id: String,
        client_secret: SecretString,
    ) -> Result<Self, ScimError> {
        let base = base.trim_end_matches('/');
        let parse = |s: String| Url::parse(&s).map_err(|e| ScimError::Config(format!("{s}: {e}")));
        Ok(Self {
            base_url: parse(format!("{base}/api/v2/scim/v2"))?,
            users_path: "users".into(),
            auth: ScimAuth::ClientCredentials {
                token_url: parse(format!("{base}/oauth/token"))?,
                client_id,
                client_secret,
            },
            timeout: Duration::from_secs(10),
            platform_api: Some(parse(format!("{base}/"))?),
        })
    }

    /// Genesys Cloud's profile for a region domain such as `mypurecloud.ie`:
    /// both URLs derive from it (docs/genesys-cloud.md, "Endpoints and authentication").
    pub fn genesys(
        region_domain: &str,
        client_id: String,
        client_secret: SecretString,
    ) -> Result<Self, ScimError> {
        let domain = region_domain.trim().trim_matches('.');
        if domain.is_empty() || domain.contains(['/', ':', '@', ' ']) {
            return Err(ScimError::Config(format!(
                "`{region_domain}` is not a region domain like mypurecloud.ie"
            )));
        }
        let parse = |s: String| Url::parse(&s).map_err(|e| ScimError::Config(format!("{s}: {e}")));
        Ok(Self {
            base_url: parse(format!("https://api.{domain}/api/v2/scim/v2"))?,
            users_path: "users".into(),
            auth: ScimAuth::ClientCredentials {
                token_url: parse(format!("https://login.{domain}/oauth/token"))?,
                client_id,
                client_secret,
            },
            timeout: Duration::from_secs(10),
            platform_api: Some(parse(format!("https://api.{domain}/"))?),
        })
    }
}

pub struct ScimClient {
    http: reqwest::Client,
    config: ScimConfig,
    token: Mutex<Option<transport::CachedToken>>,
    /// userName → directory id of users seen: a later look-up is one `GET`
    /// by id instead of a filter query (re-resolved when the id is gone).
    ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The directory's request budget, shared by every caller of this client.
    budget: std::sync::Arc<Budget>,
    /// Whether the target announces SCIM filtering (`/ServiceProviderConfig`),
    /// asked once.
    filters: tokio::sync::OnceCell<bool>,
    /// Genesys Cloud role name → role id, resolved once (again on a 404).
    role_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Genesys Cloud division name (or `home`) → division id, resolved once.
    division_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Genesys Cloud: roles are grants, read and written through the
    /// Authorization API, each covering these divisions. `None`: SCIM's `roles`.
    grant_divisions: Option<GrantDivisions>,
    /// Serialises first look-ups of role and division ids.
    lookups: Mutex<()>,
}

impl ScimClient {
    pub fn new(config: ScimConfig) -> Result<Self, ScimError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("jit-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ScimError::Config(e.to_string()))?;
        Ok(Self {
            http,
            config,
            token: Mutex::new(None),
            ids: std::sync::Mutex::default(),
            budget: std::sync::Arc::new(Budget::unlimited()),
            filters: tokio::sync::OnceCell::new(),
            role_ids: std::sync::Mutex::default(),
            division_ids: std::sync::Mutex::default(),
            grant_divisions: None,
            lookups: Mutex::new(()),
        })
    }

    /// Spends `budget` for every request (in the calling task's lane) and
    /// feeds it the target's 429 answers.
    pub fn with_budget(mut self, budget: std::sync::Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// Genesys Cloud: proves and changes roles through the Authorization API
    /// (grants per division) instead of SCIM's `roles` (names only).
    pub fn with_grant_divisions(mut self, divisions: GrantDivisions) -> Self {
        self.grant_divisions = Some(divisions);
        self
    }

    /// The budget this client spends (replicas adjust its pace).
    pub fn budget(&self) -> std::sync::Arc<Budget> {
        self.budget.clone()
    }
}

#[async_trait]
impl Directory for ScimClient {
    async fn find_user(&self, user: &UserName) -> Result<DirectoryUser, DirectoryError> {
        if self.grant_divisions.is_some() {
            return Ok(self.grants_user_by_name(user.as_str()).await?);
        }
        Ok(ScimClient::find_user(self, user.as_str()).await?)
    }

    async fn list_users(
        &self,
        start_index: u64,
        count: u32,
    ) -> Result<DirectoryPage, DirectoryError> {
        Ok(ScimClient::list_users(self, start_index, count).await?)
    }

    async fn oauth_clients(&self) -> Result<Option<Vec<OAuthClientRoles>>, DirectoryError> {
        Ok(ScimClient::oauth_clients(self).await?)
    }

    async fn role_holders(&self, role: &RoleName) -> Result<Option<RoleHolders>, DirectoryError> {
        if self.grant_divisions.is_some() {
            return Ok(Some(self.grant_holders(role.as_str()).await?));
        }
        Ok(ScimClient::role_holders(self, role.as_str()).await?)
    }

    async fn user_by_id(&self, id: &str) -> Result<DirectoryUser, DirectoryError> {
        if self.grant_divisions.is_none() {
            return Directory::get_user(self, id).await;
        }
        let (name, _) = match self.user_name_of(id).await {
            Err(ScimError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => return Err(DirectoryError::UserNotFound(id.to_owned())),
            other => other?,
        };
        Ok(self.grants_user(id, &name).await?)
    }

    async fn roles_with_permission(
        &self,
        permission: &str,
    ) -> Result<Option<Vec<String>>, DirectoryError> {
        if self.config.platform_api.is_none() {
            return Ok(None);
        }
        Ok(Some(
            ScimClient::roles_with_permission(self, permission).await?,
        ))
    }

    fn holders_are_grants(&self) -> bool {
        self.grant_divisions.is_some()
    }

    fn has_audit_trail(&self) -> bool {
        self.config.platform_api.is_some() && self.own_client_id().is_some()
    }

    async fn activity(
        &self,
        user_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<ActivityEvent>>, DirectoryError> {
        if !Directory::has_audit_trail(self) {
            return Ok(None);
        }
        let events = self
            .audit_events(&[("UserId", user_id)], from, to, now)
            .await?;
        Ok(Some(jit_domain::activity::not_by_client(
            events,
            self.own_client_id(),
        )))
    }

    async fn grant_changes(
        &self,
        user_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<ActivityEvent>>, DirectoryError> {
        if !Directory::has_audit_trail(self) {
            return Ok(None);
        }
        let filters = [("EntityType", "User"), ("EntityId", user_id)];
        Ok(Some(self.audit_events(&filters, from, to, now).await?))
    }

    async fn probe_permissions(
        &self,
        oauth_clients: bool,
    ) -> Option<Vec<jit_app::PermissionProbe>> {
        match self.grant_divisions {
            Some(_) => Some(self.doctor(oauth_clients).await),
            None => None,
        }
    }

    async fn strip_group_role(
        &self,
        group: &jit_app::GroupHolder,
        role: &RoleName,
    ) -> Result<(), DirectoryError> {
        if self.grant_divisions.is_none() {
            return Err(DirectoryError::Permanent(format!(
                "group `{}`: groups' roles are changed through the genesys profile only",
                group.name
            )));
        }
        self.strip_group(group, role.as_str()).await
    }

    async fn last_login(
        &self,
        user: &UserName,
    ) -> Result<Option<Option<chrono::DateTime<chrono::Utc>>>, DirectoryError> {
        Ok(ScimClient::last_login(self, user.as_str()).await?)
    }

    async fn get_user(&self, id: &str) -> Result<DirectoryUser, DirectoryError> {
        let read = match self.grant_divisions {
            Some(_) => {
                let name = self.name_of(id).unwrap_or_else(|| id.to_owned());
                self.grants_user(id, &name).await
            }
            None => ScimClient::get_user(self, id).await,
        };
        match read {
            Err(ScimError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Err(DirectoryError::UserNotFound(id.to_owned())),
            other => Ok(other?),
        }
    }

    async fn change_role(
        &self,
        user: &DirectoryUser,
        role: &RoleName,
        change: RoleChange,
    ) -> Result<Option<DirectoryUser>, DirectoryError> {
        let changed = match self.grant_divisions {
            Some(_) => self
                .change_grants_of(user, role.as_str(), change)
                .await
                .map(|()| None),
            None => ScimClient::change_role(self, user, role.as_str(), change).await,
        };
        match changed {
            Err(ScimError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Err(DirectoryError::UserNotFound(user.user_name.clone())),
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter_literal;
    use crate::transport::retry_after;
    use reqwest::header;

    #[test]
    fn retry_after_from_header_or_genesys_body() {
        let mut h = header::HeaderMap::new();
        assert_eq!(
            retry_after(
                &h,
                "Rate limit exceeded the maximum. Retry the request in [17] seconds"
            ),
            Some(Duration::from_secs(17))
        );
        assert_eq!(retry_after(&h, "nothing"), None);
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            retry_after(&h, "Retry the request in [17] seconds"),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn genesys_profile_derives_both_urls() {
        let c = ScimConfig::genesys("mypurecloud.ie", "id".into(), SecretString::from("s3cret"))
            .unwrap();
        assert_eq!(
            c.base_url.as_str(),
            "https://api.mypurecloud.ie/api/v2/scim/v2"
        );
        let ScimAuth::ClientCredentials { token_url, .. } = &c.auth else {
            panic!()
        };
        assert_eq!(
            token_url.as_str(),
            "https://login.mypurecloud.ie/oauth/token"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(ScimConfig::genesys("evil.com/x", "id".into(), SecretString::from("s")).is_err());
    }

    #[test]
    fn filter_literals_are_escaped() {
        assert_eq!(filter_literal(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn errors_are_sorted() {
        let status = |code: u16, scim_type: Option<&str>| ScimError::Status {
            method: Method::PATCH,
            path: "/users/1".into(),
            status: StatusCode::from_u16(code).unwrap(),
            scim_type: scim_type.map(str::to_owned),
            detail: "x".into(),
            retry_after: None,
        };
        let kind = |e: ScimError| match DirectoryError::from(e) {
            DirectoryError::VersionConflict(_) => "conflict",
            DirectoryError::Transient { .. } => "transient",
            DirectoryError::Permanent(_) => "permanent",
            DirectoryError::UserNotFound(_) => "not_found",
        };
        assert_eq!(kind(status(412, None)), "conflict");
        assert_eq!(kind(status(400, Some("invalidVers"))), "conflict");
        assert_eq!(kind(status(400, Some("invalidValue"))), "permanent");
        for code in [408, 429, 500, 503, 504] {
            assert_eq!(kind(status(code, None)), "transient", "{code}");
        }
        for code in [403, 413, 415] {
            assert_eq!(kind(status(code, None)), "permanent", "{code}");
        }
    }
}
