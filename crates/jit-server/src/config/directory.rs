//! `[scim]`: the directory the broker writes roles to, and how it is paced.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScimProfile {
    /// Any RFC 7644 service provider, bearer token.
    #[default]
    Generic,
    /// Genesys Cloud: URLs from `region`, OAuth client credentials, `users`.
    Genesys,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScimSettings {
    pub profile: ScimProfile,
    /// Genesys region domain, e.g. `mypurecloud.ie`.
    pub region: Option<String>,
    /// Generic: the SCIM base URL. Genesys: overrides the derived one.
    pub base_url: Option<String>,
    /// Genesys: overrides the derived token URL.
    pub token_url: Option<String>,
    /// Genesys: overrides the derived Platform API base (`https://api.<region>/`):
    /// a proxy, a FedRAMP or regional domain, or a stand-in.
    pub platform_url: Option<String>,
    pub users_path: Option<String>,
    pub bearer_token: Option<SecretString>,
    pub bearer_token_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    pub timeout_secs: u64,
    /// The directory client's request budget, shared by every caller
    /// (revocations first, then activations, sweeps, reports). Default: 300
    /// with the genesys profile (its per-client limit), unlimited otherwise.
    pub requests_per_minute: Option<u32>,
    /// Broker replicas sharing that client (and so its budget): each paces
    /// at its share, so that together they stay inside the limit. 0 (the
    /// default): count the live replicas through the database.
    pub replicas: u32,
}

impl ScimSettings {
    /// The budget this profile runs under; `None`: unlimited.
    pub fn budget_per_minute(&self) -> Option<u32> {
        match (self.requests_per_minute, self.profile) {
            (Some(0), _) => None,
            (Some(n), _) => Some(n),
            (None, ScimProfile::Genesys) => Some(300),
            (None, ScimProfile::Generic) => None,
        }
    }

    /// The pace this replica keeps: its share of 5 % below the target's
    /// limit, so that arrival jitter never turns it into the target's 429.
    pub fn pace_per_minute(&self) -> Option<u32> {
        self.budget_per_minute()
            .map(|limit| (limit.saturating_mul(19) / 20 / self.replicas.max(1)).max(1))
    }
}

impl Default for ScimSettings {
    fn default() -> Self {
        Self {
            profile: ScimProfile::Generic,
            region: None,
            base_url: None,
            token_url: None,
            platform_url: None,
            users_path: None,
            bearer_token: None,
            bearer_token_file: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            timeout_secs: 10,
            requests_per_minute: None,
            replicas: 0,
        }
    }
}
