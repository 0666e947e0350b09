//! Least privilege, checked: one harmless read per feature of the genesys
//! profile, each naming the permission it needs (docs/genesys-cloud.md,
//! "Permissions"). A 403 names the feature that would fail. Writes cannot
//! be probed without changing something, so they are listed, not called.

use jit_app::{PermissionProbe as Probe, ProbeOutcome as Outcome};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{ScimClient, ScimError};

/// The permissions the broker's OAuth client needs with the genesys profile
/// (and `oauth:client:view` for the OAuth-client report, when it is on).
pub const NEEDED: &[(&str, &str)] = &[
    ("find users by name (SCIM)", "directory:user:view"),
    (
        "read a user's grants (activation, expiry, their verification)",
        "authorization:grant:view",
    ),
    (
        "find a role's holders, users and groups (sweeps)",
        "authorization:role:view",
    ),
    ("add grants (activation)", "authorization:grant:add"),
    (
        "remove grants (expiry, strips)",
        "authorization:grant:delete",
    ),
    (
        "read the audit trail (what a grant was used for, who granted a stripped role)",
        "audits:audit:view",
    ),
];

pub const OAUTH_CLIENTS: (&str, &str) = ("report OAuth clients (deep sweep)", "oauth:client:view");

/// Every permission the client's role should carry, and no other.
pub fn needed_permissions(oauth_clients: bool) -> Vec<&'static str> {
    let mut all: Vec<&str> = NEEDED.iter().map(|(_, p)| *p).collect();
    if oauth_clients {
        all.push(OAUTH_CLIENTS.1);
    }
    all
}

impl ScimClient {
    /// Probes every feature in use; `oauth_clients`: the report is on.
    pub async fn doctor(&self, oauth_clients: bool) -> Vec<Probe> {
        let mut probes = Vec::new();
        let probe = |(feature, permission): (&'static str, &'static str), outcome| Probe {
            feature,
            permission,
            outcome,
        };
        let mut users = self.users_url(None).ok();
        if let Some(url) = users.as_mut() {
            url.query_pairs_mut()
                .append_pair("count", "1")
                .append_pair("attributes", "userName");
        }
        let (outcome, listing) = self.read(users).await;
        probes.push(probe(NEEDED[0], outcome));
        let some_user = listing
            .as_ref()
            .and_then(|v| v["Resources"][0]["id"].as_str());
        let outcome = match some_user {
            Some(id) => {
                let url = self
                    .platform_url(&format!("api/v2/authorization/subjects/{id}"))
                    .ok();
                self.read(url).await.0
            }
            None => Outcome::Failed("no user to read the grants of".into()),
        };
        probes.push(probe(NEEDED[1], outcome));
        let mut roles = self.platform_url("api/v2/authorization/roles").ok();
        if let Some(url) = roles.as_mut() {
            url.query_pairs_mut().append_pair("pageSize", "1");
        }
        probes.push(probe(NEEDED[2], self.read(roles).await.0));
        probes.push(probe(NEEDED[3], Outcome::NotProbed));
        probes.push(probe(NEEDED[4], Outcome::NotProbed));
        // An asynchronous query that does not exist: 404 once the
        // permission is checked, 403 without it; nothing is queried.
        let outcome = match self.platform_url("api/v2/audits/query/jit-broker-doctor-probe") {
            Ok(url) => match self.send(Method::GET, url, |r| r).await {
                Ok(_)
                | Err(ScimError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) => Outcome::Allowed,
                Err(ScimError::Status {
                    status: StatusCode::FORBIDDEN,
                    ..
                }) => Outcome::Missing,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        };
        probes.push(probe(NEEDED[5], outcome));
        if oauth_clients {
            let url = self.platform_url("api/v2/oauth/clients").ok();
            probes.push(probe(OAUTH_CLIENTS, self.read(url).await.0));
        }
        probes
    }

    async fn read(&self, url: Option<url::Url>) -> (Outcome, Option<Value>) {
        let Some(url) = url else {
            return (
                Outcome::Failed("no URL for it in the configuration".into()),
                None,
            );
        };
        match self.send(Method::GET, url, |r| r).await {
            Ok(response) => match Self::json::<Value>(response).await {
                Ok(v) => (Outcome::Allowed, Some(v)),
                Err(e) => (Outcome::Failed(e.to_string()), None),
            },
            Err(ScimError::Status {
                status: StatusCode::FORBIDDEN,
                ..
            }) => (Outcome::Missing, None),
            Err(e) => (Outcome::Failed(e.to_string()), None),
        }
    }
}
