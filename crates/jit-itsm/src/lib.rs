//! jit-itsm: ServiceNow as the broker's [`TicketSystem`]. Change requests are
//! read through the Table API (`/api/now/table/change_request`), group
//! membership through `sys_user_grmember`; webhook deliveries are verified
//! by [`webhook`].

pub mod webhook;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use jit_app::{Clock, TicketError, TicketSystem};
use jit_domain::{ChangeState, ChangeTicket, Person, Team, TicketId, UserName};
use reqwest::{RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::Mutex;
use url::Url;

pub use webhook::{VerifiedDelivery, WebhookError, WebhookHeaders, WebhookVerifier};

#[derive(Clone)]
pub enum ServiceNowAuth {
    Basic {
        user: String,
        password: SecretString,
    },
    /// OAuth 2.0 client credentials against the instance's `oauth_token.do`.
    ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
    },
}

#[derive(Clone)]
pub struct ServiceNowConfig {
    /// `https://<instance>.service-now.com`
    pub instance_url: Url,
    pub auth: ServiceNowAuth,
    pub timeout: Duration,
    /// The change-request field naming the catalogue role(s) the change
    /// needs, comma-separated (a custom field, e.g. `u_jit_role`).
    pub role_field: String,
    /// A grant citing a change is only for a role the change names in
    /// `role_field` (a change approved for Telephony Admin is no reason for
    /// Master Admin).
    pub bind_roles: bool,
}

/// The fields read for every decision (dot-walked names are returned flat
/// with `sysparm_exclude_reference_link=true`).
pub fn change_fields(role_field: &str) -> String {
    [
        "number",
        "sys_id",
        "state",
        "approval",
        "start_date",
        "end_date",
        "assigned_to",
        "assigned_to.user_name",
        "assigned_to.email",
        "assignment_group",
        "assignment_group.name",
        "type",
        role_field,
    ]
    .join(",")
}

pub struct ServiceNowClient {
    http: reqwest::Client,
    config: ServiceNowConfig,
    clock: Arc<dyn Clock>,
    token: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Deserialize)]
struct TableAnswer {
    result: Vec<Map<String, Value>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

fn unavailable(what: impl std::fmt::Display) -> TicketError {
    TicketError::Unavailable(what.to_string())
}

impl ServiceNowClient {
    pub fn new(config: ServiceNowConfig, clock: Arc<dyn Clock>) -> Result<Self, TicketError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("jit-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            http,
            config,
            clock,
            token: Mutex::new(None),
        })
    }

    fn table_url(&self, table: &str) -> Result<Url, TicketError> {
        self.config
            .instance_url
            .join(&format!("api/now/table/{table}"))
            .map_err(|e| unavailable(format!("bad instance URL: {e}")))
    }

    async fn oauth_token(&self, refresh: bool) -> Result<Option<SecretString>, TicketError> {
        let ServiceNowAuth::ClientCredentials {
            token_url,
            client_id,
            client_secret,
        } = &self.config.auth
        else {
            return Ok(None);
        };
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && !refresh
            && Instant::now() < *until
        {
            return Ok(Some(token.clone()));
        }
        let response = self
            .http
            .post(token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(format!("token request failed: {}", e.without_url())))?;
        if !response.status().is_success() {
            // Only the status: a token endpoint's body may echo what it was sent.
            return Err(unavailable(format!(
                "the OAuth token endpoint answered {}",
                response.status()
            )));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| unavailable(format!("unreadable token answer: {}", e.without_url())))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(300));
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        let token = SecretString::from(answer.access_token);
        *cached = Some((
            token.clone(),
            Instant::now() + lifetime.saturating_sub(margin),
        ));
        Ok(Some(token))
    }

    fn authorise(&self, request: RequestBuilder, token: Option<&SecretString>) -> RequestBuilder {
        match (&self.config.auth, token) {
            (_, Some(token)) => request.bearer_auth(token.expose_secret()),
            (ServiceNowAuth::Basic { user, password }, None) => {
                request.basic_auth(user, Some(password.expose_secret()))
            }
            (ServiceNowAuth::ClientCredentials { .. }, None) => request,
        }
    }

    /// GET a table with a query; a 401 under OAuth refreshes the token once.
    async fn query(
        &self,
        table: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Map<String, Value>>, TicketError> {
        let url = self.table_url(table)?;
        let mut refreshed = false;
        loop {
            let token = self.oauth_token(refreshed).await?;
            let request = self
                .http
                .get(url.clone())
                .query(params)
                .header(reqwest::header::ACCEPT, "application/json");
            let response = self
                .authorise(request, token.as_ref())
                .send()
                .await
                .map_err(|e| unavailable(format!("GET {table}: {}", e.without_url())))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && token.is_some() && !refreshed {
                refreshed = true;
                continue;
            }
            if !status.is_success() {
                let what = match status {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        "refused the broker's credentials"
                    }
                    StatusCode::TOO_MANY_REQUESTS => "is rate limiting the broker",
                    s if s.is_server_error() => "is failing",
                    _ => "answered unexpectedly",
                };
                return Err(unavailable(format!(
                    "ServiceNow {what} ({status}) on GET {table}"
                )));
            }
            let answer: TableAnswer = response.json().await.map_err(|e| {
                unavailable(format!(
                    "unreadable answer from {table}: {}",
                    e.without_url()
                ))
            })?;
            return Ok(answer.result);
        }
    }

    fn parse_change(&self, record: &Map<String, Value>) -> Result<ChangeTicket, TicketError> {
        let text = |k: &str| {
            record
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let number = text("number")
            .and_then(|n| TicketId::parse(&n).ok())
            .ok_or_else(|| unavailable("ServiceNow answered a change without a valid number"))?;
        let state_code = text("state").unwrap_or_default();
        let state = state_code
            .parse::<i32>()
            .ok()
            .and_then(ChangeState::from_code);
        let date = |k: &str| -> Result<Option<DateTime<Utc>>, TicketError> {
            text(k)
                .map(|v| {
                    NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S")
                        .map(|d| d.and_utc())
                        .map_err(|_| unavailable(format!("unreadable {k} `{v}`")))
                })
                .transpose()
        };
        Ok(ChangeTicket {
            number,
            sys_id: text("sys_id").unwrap_or_default(),
            state,
            state_code,
            approval: text("approval").unwrap_or_default(),
            start_date: date("start_date")?,
            end_date: date("end_date")?,
            assigned_to: text("assigned_to").map(|sys_id| Person {
                sys_id,
                user_name: text("assigned_to.user_name"),
                email: text("assigned_to.email"),
            }),
            assignment_group: text("assignment_group").map(|sys_id| Team {
                sys_id,
                name: text("assignment_group.name"),
            }),
            change_type: text("type").unwrap_or_default(),
            roles: text(&self.config.role_field)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            roles_field: self
                .config
                .bind_roles
                .then(|| self.config.role_field.clone()),
            read_at: self.clock.now(),
        })
    }
}

/// A value is placed into an encoded query only if it cannot end its clause:
/// ServiceNow's encoded queries have no escaping for `^` (and `=` / `,` change
/// the operator), so such a value is refused rather than sent.
fn query_safe(value: &str) -> bool {
    !value.is_empty() && !value.contains(['^', '=', ',', '\n', '\r'])
}

#[async_trait]
impl TicketSystem for ServiceNowClient {
    async fn change(&self, number: &TicketId) -> Result<Option<ChangeTicket>, TicketError> {
        // TicketId is `CHG` + digits: always query-safe.
        let query = format!("number={number}");
        let fields = change_fields(&self.config.role_field);
        let rows = self
            .query(
                "change_request",
                &[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", "1"),
                    ("sysparm_exclude_reference_link", "true"),
                    ("sysparm_display_value", "false"),
                ],
            )
            .await?;
        rows.first().map(|r| self.parse_change(r)).transpose()
    }

    async fn is_group_member(
        &self,
        group_sys_id: &str,
        user: &UserName,
    ) -> Result<bool, TicketError> {
        if !query_safe(group_sys_id) || !query_safe(user.as_str()) {
            return Ok(false);
        }
        let query = format!(
            "group={group_sys_id}^user.email={user}^ORuser.user_name={user}",
            user = user.as_str()
        );
        let rows = self
            .query(
                "sys_user_grmember",
                &[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", "sys_id"),
                    ("sysparm_limit", "1"),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn changes_assigned_to(
        &self,
        user: &UserName,
        limit: u32,
    ) -> Result<Vec<ChangeTicket>, TicketError> {
        if !query_safe(user.as_str()) {
            return Ok(Vec::new());
        }
        let query = format!(
            "assigned_to.email={user}^ORassigned_to.user_name={user}^approval=approved^ORDERBYnumber",
            user = user.as_str()
        );
        let fields = change_fields(&self.config.role_field);
        let limit = limit.clamp(1, 100).to_string();
        let rows = self
            .query(
                "change_request",
                &[
                    ("sysparm_query", query.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", limit.as_str()),
                    ("sysparm_exclude_reference_link", "true"),
                    ("sysparm_display_value", "false"),
                ],
            )
            .await?;
        rows.iter().map(|r| self.parse_change(r)).collect()
    }
}

/// Where no ServiceNow instance is configured: every lookup is refused, so a
/// request citing a ticket gets a 503 rather than an unchecked grant.
pub struct NoTicketSystem;

#[async_trait]
impl TicketSystem for NoTicketSystem {
    async fn change(&self, _: &TicketId) -> Result<Option<ChangeTicket>, TicketError> {
        Err(TicketError::Unavailable(
            "no ServiceNow instance is configured ([servicenow] in the config)".into(),
        ))
    }

    async fn is_group_member(&self, _: &str, _: &UserName) -> Result<bool, TicketError> {
        Err(TicketError::Unavailable(
            "no ServiceNow instance is configured ([servicenow] in the config)".into(),
        ))
    }

    async fn changes_assigned_to(
        &self,
        _: &UserName,
        _: u32,
    ) -> Result<Vec<ChangeTicket>, TicketError> {
        Err(TicketError::Unavailable(
            "no ServiceNow instance is configured ([servicenow] in the config)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_could_extend_an_encoded_query_are_refused() {
        assert!(query_safe("alice@example.com"));
        assert!(query_safe("0a1b2c3d4e5f60718293a4b5c6d7e8f9"));
        for bad in ["", "a^ORactive=true", "a=b", "x,y", "a\nb"] {
            assert!(!query_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_fields_read_include_the_role_field() {
        assert!(change_fields("u_jit_role").ends_with(",type,u_jit_role"));
    }
}
