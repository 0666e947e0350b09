//! jit-scim: the `Directory` port over SCIM 2.0 (RFC 7643/7644) with the
//! Genesys Cloud profile (docs/genesys-cloud.md): OAuth client-credentials
//! token cache, one-role PATCH guarded by `If-Match`, read-back, and errors
//! sorted into transient and permanent.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use jit_app::budget::current_turn;
use jit_app::{
    Budget, Directory, DirectoryError, DirectoryPage, DirectoryUser, OAuthClientRoles, RoleHolders,
};
use jit_domain::{RoleChange, RoleName, UserName};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Only what converge needs: Genesys answers large pages with 429 unless the
/// expensive secondary lookups are left out (docs/genesys-cloud.md, "Listing users").
const USER_ATTRIBUTES: &str = "userName,roles,active,meta.version";
/// Holders a page, when asking the target who holds a role (a few, usually).
const HOLDERS_PAGE: u32 = 100;

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

struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}

pub struct ScimClient {
    http: reqwest::Client,
    config: ScimConfig,
    token: Mutex<Option<CachedToken>>,
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
}

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

/// A user as Genesys Cloud's Platform API lists a role's holders.
#[derive(Deserialize)]
struct PlatformUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
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

#[derive(Deserialize)]
struct PlatformPage<T> {
    #[serde(default = "Vec::new")]
    entities: Vec<T>,
    #[serde(rename = "pageCount")]
    page_count: Option<u64>,
}

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

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl ScimUser {
    fn into_directory_user(self, etag: Option<String>) -> DirectoryUser {
        DirectoryUser {
            id: self.id,
            user_name: self.user_name,
            roles: self.roles.into_iter().map(|r| r.value).collect(),
            version: self.meta.and_then(|m| m.version).or(etag),
        }
    }
}

/// A SCIM filter string literal: quotes and backslashes escaped (RFC 7644 §3.4.2.2 uses JSON strings).
fn filter_literal(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// `Retry-After` as seconds or an HTTP date; else Genesys's "Retry the request in [N] seconds".
fn retry_after(headers: &header::HeaderMap, body: &str) -> Option<Duration> {
    if let Some(v) = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(secs) = v.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    let rest = &body[body.find("Retry the request in")? + "Retry the request in".len()..];
    let digits: String = rest
        .trim_start_matches([' ', '['])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_secs)
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
        })
    }

    /// Spends `budget` for every request (in the calling task's lane) and
    /// feeds it the target's 429 answers.
    pub fn with_budget(mut self, budget: std::sync::Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// The budget this client spends (replicas adjust its pace).
    pub fn budget(&self) -> std::sync::Arc<Budget> {
        self.budget.clone()
    }

    fn users_url(&self, id: Option<&str>) -> Result<Url, ScimError> {
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

    async fn bearer(&self, refresh: bool) -> Result<SecretString, ScimError> {
        let (token_url, client_id, client_secret) = match &self.config.auth {
            ScimAuth::Bearer(token) => return Ok(token.clone()),
            ScimAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
            } => (token_url, client_id, client_secret),
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached
            .as_ref()
            .filter(|t| !refresh && Instant::now() < t.refresh_at)
        {
            return Ok(t.value.clone());
        }
        let response = self
            .http
            .post(token_url.clone())
            .basic_auth(client_id, Some(client_secret.expose_secret()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| ScimError::Token(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            // The body may echo credentials on some servers: only the status is kept.
            return Err(ScimError::Token(format!(
                "token endpoint answered {status}"
            )));
        }
        let token: TokenResponse = response.json().await.map_err(|e| {
            ScimError::Token(format!("unreadable token answer: {}", e.without_url()))
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        // Refresh a little before expiry so no request carries a dying token.
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        let value = SecretString::from(token.access_token);
        *cached = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(value)
    }

    /// Sends with authentication; a 401 under OAuth refreshes the token once.
    async fn send(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ScimError> {
        let oauth = matches!(self.config.auth, ScimAuth::ClientCredentials { .. });
        let mut refreshed = false;
        loop {
            let token = self.bearer(refreshed).await?;
            self.budget.acquire(current_turn()).await;
            let request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(header::ACCEPT, "application/scim+json, application/json");
            let response = build(request).send().await.map_err(|source| {
                metrics::counter!("jit_directory_requests_total", "method" => method.to_string(), "status" => "error")
                    .increment(1);
                ScimError::Transport {
                    method: method.clone(),
                    path: url.path().to_owned(),
                    source: source.without_url(),
                }
            })?;
            metrics::counter!(
                "jit_directory_requests_total",
                "method" => method.to_string(),
                "status" => response.status().as_u16().to_string()
            )
            .increment(1);
            if response.status() == StatusCode::UNAUTHORIZED && oauth && !refreshed {
                refreshed = true;
                continue;
            }
            if response.status().is_success() {
                return Ok(response);
            }
            let error = self.status_error(method, &url, response).await;
            // One refusal for the rate slows every caller, not only this one.
            if let ScimError::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                ..
            } = &error
            {
                self.budget
                    .back_off(retry_after.unwrap_or(Duration::from_secs(1)));
            }
            return Err(error);
        }
    }

    async fn status_error(&self, method: Method, url: &Url, response: Response) -> ScimError {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let detail = parsed["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.chars().take(200).collect());
        ScimError::Status {
            method,
            path: url.path().to_owned(),
            status,
            scim_type: parsed["scimType"].as_str().map(str::to_owned),
            retry_after: retry_after(&headers, &body),
            detail,
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, ScimError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ScimError::Decode(e.without_url().to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ScimError::Decode(e.to_string()))
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

    fn known_id(&self, user_name: &str) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user_name)
            .cloned()
    }

    fn remember_id(&self, user: &DirectoryUser) {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user.user_name.clone(), user.id.clone());
    }

    fn forget_id(&self, user_name: &str) {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(user_name);
    }

    async fn find_user_by_filter(&self, user_name: &str) -> Result<DirectoryUser, ScimError> {
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

    /// Every OAuth client of the org with the names of the roles it holds
    /// (Genesys Platform API: `/api/v2/oauth/clients`, role names from
    /// `/api/v2/authorization/roles`). `None` without a Platform API base.
    pub async fn oauth_clients(&self) -> Result<Option<Vec<OAuthClientRoles>>, ScimError> {
        if self.config.platform_api.is_none() {
            return Ok(None);
        }
        let join = |path: &str| self.platform_url(path);
        let mut role_names = std::collections::HashMap::new();
        let mut page = 1;
        loop {
            let mut url = join("api/v2/authorization/roles")?;
            url.query_pairs_mut()
                .append_pair("pageSize", "100")
                .append_pair("pageNumber", &page.to_string());
            let roles: PlatformPage<PlatformRole> =
                Self::json(self.send(Method::GET, url, |r| r).await?).await?;
            let done = roles.entities.is_empty() || roles.page_count.is_none_or(|n| page >= n);
            role_names.extend(roles.entities.into_iter().map(|r| (r.id, r.name)));
            if done {
                break;
            }
            page += 1;
        }
        let clients: PlatformPage<PlatformClient> = Self::json(
            self.send(Method::GET, join("api/v2/oauth/clients")?, |r| r)
                .await?,
        )
        .await?;
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

    /// Who holds `role`, without listing everyone: Genesys Cloud's role users
    /// (Platform API) where configured, else a `roles.value` filter where the
    /// target announces filtering; `None` where neither is on offer.
    pub async fn role_holders(&self, role: &str) -> Result<Option<RoleHolders>, ScimError> {
        if self.config.platform_api.is_some() {
            return self.platform_role_holders(role).await.map(Some);
        }
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
        }))
    }

    /// `GET /ServiceProviderConfig`: does the target filter? A target
    /// without the endpoint does not say so, and is listed in full.
    async fn announces_filtering(&self) -> Result<bool, ScimError> {
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

    /// Genesys Cloud: the role's id (cached), then its users page by page.
    /// A role id that is gone (the role was re-created) is resolved again once.
    async fn platform_role_holders(&self, role: &str) -> Result<RoleHolders, ScimError> {
        let mut requests = 0;
        let mut resolved_again = false;
        'resolve: loop {
            let id = match self.known_role_id(role) {
                Some(id) => id,
                None => {
                    requests += 1;
                    match self.resolve_role_id(role).await? {
                        Some(id) => id,
                        // No such role in the org: nobody holds it.
                        None => {
                            return Ok(RoleHolders {
                                users: Vec::new(),
                                requests,
                            });
                        }
                    }
                }
            };
            let mut holders = Vec::new();
            let mut page: u64 = 1;
            loop {
                let mut url =
                    self.platform_url(&format!("api/v2/authorization/roles/{id}/users"))?;
                url.query_pairs_mut()
                    .append_pair("pageSize", &HOLDERS_PAGE.to_string())
                    .append_pair("pageNumber", &page.to_string());
                requests += 1;
                let answer = match self.send(Method::GET, url, |r| r).await {
                    Err(ScimError::Status {
                        status: StatusCode::NOT_FOUND,
                        ..
                    }) if !resolved_again => {
                        resolved_again = true;
                        self.forget_role_id(role);
                        continue 'resolve;
                    }
                    other => other?,
                };
                let users: PlatformPage<PlatformUser> = Self::json(answer).await?;
                let done = users.entities.is_empty() || users.page_count.is_none_or(|n| page >= n);
                for user in users.entities {
                    if let Some(name) = user.username.or(user.email) {
                        self.remember_id(&DirectoryUser {
                            id: user.id,
                            user_name: name.clone(),
                            roles: Vec::new(),
                            version: None,
                        });
                        holders.push(name);
                    }
                }
                if done {
                    return Ok(RoleHolders {
                        users: holders,
                        requests,
                    });
                }
                page += 1;
            }
        }
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
    async fn resolve_role_id(&self, role: &str) -> Result<Option<String>, ScimError> {
        let mut url = self.platform_url("api/v2/authorization/roles")?;
        url.query_pairs_mut()
            .append_pair("name", role)
            .append_pair("pageSize", "25");
        let roles: PlatformPage<PlatformRole> =
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

    fn known_role_id(&self, role: &str) -> Option<String> {
        self.role_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(role)
            .cloned()
    }

    fn forget_role_id(&self, role: &str) {
        self.role_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(role);
    }

    fn platform_url(&self, path: &str) -> Result<Url, ScimError> {
        let api = self
            .config
            .platform_api
            .as_ref()
            .ok_or_else(|| ScimError::Config("no Platform API base URL".into()))?;
        api.join(path)
            .map_err(|e| ScimError::Config(format!("platform API URL: {e}")))
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

#[async_trait]
impl Directory for ScimClient {
    async fn find_user(&self, user: &UserName) -> Result<DirectoryUser, DirectoryError> {
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
        Ok(ScimClient::role_holders(self, role.as_str()).await?)
    }

    async fn last_login(
        &self,
        user: &UserName,
    ) -> Result<Option<Option<chrono::DateTime<chrono::Utc>>>, DirectoryError> {
        Ok(ScimClient::last_login(self, user.as_str()).await?)
    }

    async fn get_user(&self, id: &str) -> Result<DirectoryUser, DirectoryError> {
        match ScimClient::get_user(self, id).await {
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
        match ScimClient::change_role(self, user, role.as_str(), change).await {
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
