//! One TOML file, every value overridable from the environment (`JIT_` prefix,
//! `__` for nesting: `JIT_SCIM__CLIENT_SECRET`). Secrets may come from files
//! (`*_file`); none is ever printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

mod chat;
mod directory;
mod events;
mod limits;
mod notify;

pub use chat::{SlackSettings, TeamsSettings};
pub use directory::{ScimProfile, ScimSettings};
pub use events::EventsSettings;
pub use limits::LimitsSettings;
pub use notify::{NotifySettings, SmtpTls, WebhookSettings};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    /// The policy file (role catalogue).
    pub policy: PathBuf,
    pub scim: ScimSettings,
    pub servicenow: ServiceNowSettings,
    pub reconciler: ReconcilerSettings,
    pub notify: NotifySettings,
    pub worker: WorkerSettings,
    pub audit: AuditSettings,
    /// API callers: a name (audited as the actor) and the SHA-256 of its key.
    pub api_keys: Vec<ApiKeyConfig>,
    pub log: LogSettings,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub web: WebConfig,
    /// Genesys Cloud events relayed by EventBridge: hints to look now.
    pub events: EventsSettings,
    /// What was done with a privilege: when the audit trail is read again.
    pub activity: ActivitySettings,
    /// Approvals in Slack.
    pub slack: SlackSettings,
    /// Notices in Microsoft Teams.
    pub teams: TeamsSettings,
    /// What any one caller, and all together, may ask of the broker.
    pub limits: LimitsSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseConfig::default(),
            policy: PathBuf::from("policies/policy.toml"),
            scim: ScimSettings::default(),
            servicenow: ServiceNowSettings::default(),
            reconciler: ReconcilerSettings::default(),
            notify: NotifySettings::default(),
            worker: WorkerSettings::default(),
            audit: AuditSettings::default(),
            api_keys: Vec::new(),
            log: LogSettings::default(),
            max_body_bytes: 16 * 1024,
            web: WebConfig::default(),
            events: EventsSettings::default(),
            activity: ActivitySettings::default(),
            slack: SlackSettings::default(),
            teams: TeamsSettings::default(),
            limits: LimitsSettings::default(),
        }
    }
}

/// A grant's activity is read from the audit trail when its role is
/// removed (preliminary), and again after each of `final_passes` (Genesys
/// does not say how soon an action becomes queryable).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivitySettings {
    /// Delays after the removal, e.g. `["15m", "24h"]`.
    pub final_passes: Vec<String>,
}

impl Default for ActivitySettings {
    fn default() -> Self {
        Self {
            final_passes: vec!["15m".into(), "24h".into()],
        }
    }
}

impl ActivitySettings {
    /// The passes; a delay that is not a duration, or out of order, is refused.
    pub fn plan(&self) -> Result<jit_domain::PassPlan, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "activity.final_passes",
            message,
        };
        let mut finals = Vec::new();
        for text in &self.final_passes {
            let delay = humantime::parse_duration(text)
                .map_err(|e| invalid(format!("`{text}`: {e}")))
                .and_then(|d| {
                    chrono::TimeDelta::from_std(d).map_err(|e| invalid(format!("`{text}`: {e}")))
                })?;
            if delay.is_zero() || finals.last().is_some_and(|last| *last >= delay) {
                return Err(invalid(format!(
                    "`{text}`: each pass must come after the one before it (and after the removal)"
                )));
            }
            finals.push(delay);
        }
        Ok(jit_domain::PassPlan { finals })
    }
}

/// `[web]`: the engineer's pages.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the pages (they need `[web.oidc]`, or `--dev`).
    pub enabled: bool,
    /// The URL people reach the broker at (for the OIDC redirect), e.g.
    /// `https://jit.bank.example`. Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// Signs and encrypts the session cookie: at least 64 bytes, the same on
    /// every replica. `--dev` makes a random one.
    pub session_secret: Option<SecretString>,
    pub session_secret_file: Option<PathBuf>,
    /// `Secure` cookies; only `--dev` on localhost may turn this off.
    pub secure_cookies: bool,
    pub idle_timeout_secs: u64,
    pub absolute_timeout_secs: u64,
    /// Members of this group see the SOC view.
    pub soc_group: String,
    pub oidc: OidcSettings,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: None,
            session_secret: None,
            session_secret_file: None,
            secure_cookies: true,
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 10 * 3600,
            soc_group: "soc".into(),
            oidc: OidcSettings::default(),
        }
    }
}

/// `[web.oidc]`: the OpenID provider (Entra ID, Okta, any certified one).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    /// Discovered at start from `<issuer_url>/.well-known/openid-configuration`.
    pub issuer_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// The ID-token claim matched to the directory user name.
    pub user_claim: String,
    /// The ID-token claim holding the person's groups.
    pub groups_claim: String,
    pub scopes: Vec<String>,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            issuer_url: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            user_claim: "email".into(),
            groups_claim: "groups".into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` or `postgres://…`. Secret: it may carry a password.
    pub url: SecretString,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://jit-broker.db"),
            max_connections: 10,
        }
    }
}

/// ServiceNow: the Table API the broker reads changes from, and the webhook
/// it accepts. Basic auth (`user` + `password`) or OAuth client credentials
/// (`client_id` + `client_secret`).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceNowSettings {
    /// `https://<instance>.service-now.com`; unset: no ticket can be checked.
    pub instance_url: Option<String>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// Default: `<instance_url>/oauth_token.do`.
    pub token_url: Option<String>,
    pub timeout_secs: u64,
    /// The change-request field naming the role(s) a change needs.
    pub role_field: String,
    /// A grant citing a change must be for a role the change names in
    /// `role_field` (decision clause `ticket_role`); `false` accepts any
    /// role the policy allows under any approved change.
    pub bind_roles: bool,
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_max_skew_secs: u64,
    /// When to re-read the changes of live grants (cron with seconds).
    pub poll_cron: String,
}

impl Default for ServiceNowSettings {
    fn default() -> Self {
        Self {
            instance_url: None,
            user: None,
            password: None,
            password_file: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            token_url: None,
            timeout_secs: 10,
            role_field: "u_jit_role".into(),
            bind_roles: true,
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_max_skew_secs: 300,
            poll_cron: "0 */2 * * * *".into(),
        }
    }
}

/// Signed checkpoints of the audit chain.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// The ed25519 secret key (hex, one line; `jit-broker audit keygen`
    /// writes one). Without it, no checkpoints are made.
    pub checkpoint_key_file: Option<PathBuf>,
    /// How often the chain's head is signed: sec min hour day month weekday.
    pub checkpoint_cron: String,
    /// The public key `jit-broker audit verify` trusts (hex); defaults to
    /// the checkpoint key's own.
    pub public_key: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_key_file: None,
            checkpoint_cron: "0 */10 * * * *".into(),
            public_key: None,
        }
    }
}

impl AuditSettings {
    /// The checkpoint key, read from its file.
    pub fn checkpoint_key(&self) -> Result<Option<jit_store::CheckpointKey>, ConfigError> {
        let Some(path) = &self.checkpoint_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
            key: "audit.checkpoint_key_file",
            path: path.clone(),
            source,
        })?;
        jit_store::CheckpointKey::parse(&text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: "audit.checkpoint_key_file",
                message: e.to_string(),
            })
    }
}

/// The sweep that strips privileged roles held without cause.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerSettings {
    /// Sweep on the two schedules; `jit-broker reconcile` and the API work
    /// either way.
    pub enabled: bool,
    /// The holders sweep (who holds each privileged role): sec min hour day
    /// month weekday, default every minute.
    pub holders_cron: String,
    /// The deep sweep (every user, page by page; and the OAuth-client
    /// report): default daily at 02:30 UTC. `cron` is its former name.
    #[serde(alias = "cron")]
    pub deep_cron: String,
    /// Users per SCIM page (Genesys Cloud: 25 or fewer when roles are read).
    pub page_size: u32,
    /// Directory requests per second the sweep may make.
    pub requests_per_second: u32,
    /// A grant that ended less than this ago is left to its expiry job.
    pub grace_secs: u64,
    /// How long a silent sweep holds its lease before another replica may sweep.
    pub lease_secs: u64,
    /// Also report OAuth clients holding privileged roles (Genesys profile only).
    pub oauth_clients: bool,
    /// A pair that comes back `conflict_threshold` times within
    /// `conflict_window_secs` after verified removals is raised once to the
    /// SOC as a conflicting writer, and stripped with a growing delay
    /// (`conflict_base_delay_secs` doubling up to `conflict_max_delay_secs`).
    pub conflict_window_secs: u64,
    pub conflict_threshold: u32,
    pub conflict_base_delay_secs: u64,
    pub conflict_max_delay_secs: u64,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        let d = jit_app::ReconcileConfig::default();
        Self {
            enabled: true,
            holders_cron: "0 * * * * *".into(),
            deep_cron: "0 30 2 * * *".into(),
            page_size: d.page_size,
            requests_per_second: d.requests_per_second,
            grace_secs: d.rules.grace.num_seconds().unsigned_abs(),
            lease_secs: d.lease.as_secs(),
            oauth_clients: false,
            conflict_window_secs: secs(d.rules.conflict.window),
            conflict_threshold: d.rules.conflict.threshold,
            conflict_base_delay_secs: secs(d.rules.conflict.base_delay),
            conflict_max_delay_secs: secs(d.rules.conflict.max_delay),
        }
    }
}

fn secs(d: chrono::TimeDelta) -> u64 {
    d.num_seconds().unsigned_abs()
}

/// Seconds from the config as a time span (capped at a century).
fn delta(secs: u64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::try_from(secs.min(3_153_600_000)).unwrap_or(0))
}

impl ReconcilerSettings {
    pub fn to_reconcile_config(&self) -> jit_app::ReconcileConfig {
        jit_app::ReconcileConfig {
            page_size: self.page_size.clamp(1, 1000),
            requests_per_second: self.requests_per_second.max(1),
            rules: jit_domain::SweepRules {
                grace: delta(self.grace_secs),
                conflict: jit_domain::ConflictRule {
                    window: delta(self.conflict_window_secs.max(1)),
                    threshold: self.conflict_threshold.max(1),
                    base_delay: delta(self.conflict_base_delay_secs),
                    max_delay: delta(self.conflict_max_delay_secs),
                },
            },
            lease: Duration::from_secs(self.lease_secs.max(10)),
            oauth_clients: self.oauth_clients,
            ..jit_app::ReconcileConfig::default()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub lease_secs: u64,
    pub retry_base_ms: u64,
    pub retry_cap_secs: u64,
    pub max_idle_secs: u64,
    /// On SIGTERM, how long jobs in flight may take to finish.
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        let d = jit_app::WorkerConfig::default();
        Self {
            concurrency: d.concurrency,
            lease_secs: d.lease.as_secs(),
            retry_base_ms: d.retry_base.as_millis() as u64,
            retry_cap_secs: d.retry_cap.as_secs(),
            max_idle_secs: d.max_idle.as_secs(),
            shutdown_grace_secs: d.shutdown_grace.as_secs(),
        }
    }
}

impl WorkerSettings {
    pub fn to_worker_config(&self) -> jit_app::WorkerConfig {
        jit_app::WorkerConfig {
            concurrency: self.concurrency.max(1),
            lease: Duration::from_secs(self.lease_secs.max(2)),
            retry_base: Duration::from_millis(self.retry_base_ms.max(10)),
            retry_cap: Duration::from_secs(self.retry_cap_secs.max(1)),
            max_idle: Duration::from_secs(self.max_idle_secs.max(1)),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            ..jit_app::WorkerConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Lower-case hex SHA-256 of the key (`jit-broker hash-key` prints it).
    pub sha256: String,
    /// May start reconciler sweeps (`POST /api/v1/reconcile`).
    #[serde(default)]
    pub admin: bool,
    /// This key's own pace of grant requests a minute (0: unlimited);
    /// unset: `limits.grant_requests_per_minute_per_key`.
    #[serde(default)]
    pub grant_requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `jit_app=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("configuration: cannot read `{key}` file {path}: {source}")]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// Defaults, then the TOML file (if given), then `JIT_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("{} does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("JIT_").split("__"))
            .extract()
            .map_err(Box::new)?;
        for key in &config.api_keys {
            let ok = key.sha256.len() == 64
                && key
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "api_keys.sha256",
                    message: format!("key `{}`: must be 64 lower-case hex digits", key.name),
                });
            }
        }
        config.activity.plan()?;
        // A replica killed mid-removal leaves its job until the lease lapses;
        // that wait alone must not break the revocation SLO.
        if config.worker.lease_secs >= config.notify.revocation_slo_secs {
            return Err(ConfigError::Invalid {
                key: "worker.lease_secs",
                message: format!(
                    "must be shorter than notify.revocation_slo_secs ({} s): a crashed replica's removals wait out the lease",
                    config.notify.revocation_slo_secs
                ),
            });
        }
        Ok(config)
    }
}

/// A secret given inline or as a file (the file wins; one trailing newline is dropped).
pub fn secret(
    key: &'static str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| {
                Some(SecretString::from(
                    s.strip_suffix('\n').unwrap_or(&s).to_owned(),
                ))
            })
            .map_err(|source| ConfigError::SecretFile {
                key,
                path: path.clone(),
                source,
            }),
        None => Ok(inline.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn the_example_config_in_deploy_is_valid() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/jit-broker.example.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.create_file("example.toml", &text)?;
            let c = Config::load(Some(Path::new("example.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.servicenow.role_field, "u_jit_role");
            assert_eq!(
                c.servicenow.instance_url.as_deref(),
                Some("https://acme.service-now.com")
            );
            assert_eq!(c.web.oidc.groups_claim, "groups");
            assert_eq!(c.web.idle_timeout_secs, 1800);
            assert!(c.web.secure_cookies);
            assert_eq!(c.reconciler.holders_cron, "0 * * * * *");
            assert_eq!(c.reconciler.deep_cron, "0 30 2 * * *");
            Ok(())
        });
    }

    #[test]
    fn replicas_sharing_a_client_split_its_budget() {
        let mut scim = ScimSettings {
            profile: ScimProfile::Genesys,
            ..ScimSettings::default()
        };
        assert_eq!(scim.pace_per_minute(), Some(285));
        scim.replicas = 3;
        assert_eq!(scim.pace_per_minute(), Some(95));
        scim.requests_per_minute = Some(0);
        assert_eq!(scim.pace_per_minute(), None, "0 is unlimited");
        let generic = ScimSettings::default();
        assert_eq!(generic.pace_per_minute(), None);
    }

    #[test]
    fn the_former_sweep_schedule_names_the_deep_sweep() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("old.toml", "[reconciler]\ncron = \"0 */5 * * * *\"\n")?;
            let c = Config::load(Some(Path::new("old.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.reconciler.deep_cron, "0 */5 * * * *");
            assert_eq!(c.reconciler.holders_cron, "0 * * * * *", "the default");
            Ok(())
        });
    }

    #[test]
    fn env_overrides_the_file_and_secrets_stay_hidden() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "jit.toml",
                r#"
                listen = "127.0.0.1:9000"
                [scim]
                profile = "genesys"
                region = "mypurecloud.ie"
                client_id = "abc"
                client_secret = "from-file"
                "#,
            )?;
            jail.set_env("JIT_SCIM__CLIENT_SECRET", "from-env");
            jail.set_env("JIT_WORKER__CONCURRENCY", "4");
            let c = Config::load(Some(Path::new("jit.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.scim.profile, ScimProfile::Genesys);
            assert_eq!(c.worker.concurrency, 4);
            let secret = c
                .scim
                .client_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned());
            assert_eq!(secret.as_deref(), Some("from-env"));
            assert!(!format!("{c:?}").contains("from-env"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_hashes_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "lisen = \"127.0.0.1:1\"\n")?;
            let e = Config::load(Some(Path::new("a.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("lisen"), "{e}");
            jail.create_file("b.toml", "[[api_keys]]\nname = \"ci\"\nsha256 = \"ABC\"\n")?;
            let e = Config::load(Some(Path::new("b.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("api_keys.sha256"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_job_lease_as_long_as_the_revocation_slo_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[worker]\nlease_secs = 60\n")?;
            let e = Config::load(Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("worker.lease_secs") && e.contains("revocation_slo_secs (60 s)"),
                "{e}"
            );
            jail.create_file(
                "d.toml",
                "[worker]\nlease_secs = 60\n[notify]\nrevocation_slo_secs = 120\n",
            )?;
            assert!(Config::load(Some(Path::new("d.toml"))).is_ok());
            Ok(())
        });
    }
}
