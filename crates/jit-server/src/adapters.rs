//! The adapters the configuration describes: the directory (SCIM, with the
//! Genesys Cloud profile), ServiceNow, SMTP, the SIEM endpoints, and the
//! policy file; and the use cases over the store alone for offline commands.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jit_app::{App, Clock, Directory, TicketSystem};
use jit_domain::Policy;
use jit_itsm::webhook::WebhookVerifier;
use jit_itsm::{NoTicketSystem, ServiceNowAuth, ServiceNowClient, ServiceNowConfig};
use jit_scim::{ScimAuth, ScimClient, ScimConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{self, Config, ScimProfile, secret};

pub fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    Ok(Policy::from_toml(&path.display().to_string(), &text)?)
}

/// The shipped policy, built in: `serve --dev` runs from any directory.
const SANDBOX_POLICY: &str = include_str!("../../../policies/policy.toml");

/// The policy to run under. The sandbox falls back to the built-in copy of
/// the shipped policy when the configured file is not there (started outside
/// the repository); everything else needs its file.
pub fn policy_for(config: &crate::config::Config, dev: bool) -> anyhow::Result<Policy> {
    if dev && !config.policy.exists() {
        tracing::info!(
            missing = %config.policy.display(),
            "sandbox: the policy file is not here; using the built-in copy of policies/policy.toml"
        );
        return Ok(Policy::from_toml(
            "policies/policy.toml (built in)",
            SANDBOX_POLICY,
        )?);
    }
    load_policy(&config.policy)
}

/// Role name → the divisions a grant of it covers, for every privileged role.
pub fn grant_divisions(policy: &Policy) -> jit_scim::GrantDivisions {
    policy
        .roles()
        .filter(|r| r.privileged)
        .map(|r| (r.name.to_string(), r.divisions.clone()))
        .collect()
}

/// The directory client the config describes. With the genesys profile,
/// roles are proven and changed through the Authorization API (grants per
/// division, as the policy names them for each role).
pub fn directory_from_config(config: &Config, policy: &Policy) -> anyhow::Result<ScimClient> {
    let s = &config.scim;
    let timeout = Duration::from_secs(s.timeout_secs.max(1));
    let parse = |key: &str, v: &str| {
        url::Url::parse(v).with_context(|| format!("`scim.{key}` is not a URL"))
    };
    let mut scim = match s.profile {
        ScimProfile::Generic => {
            let Some(base) = &s.base_url else {
                bail!("`scim.base_url` is required for the generic SCIM profile")
            };
            let token = secret("scim.bearer_token", &s.bearer_token, &s.bearer_token_file)?
                .context("`scim.bearer_token` (or `scim.bearer_token_file`) is required for the generic SCIM profile")?;
            ScimConfig {
                base_url: parse("base_url", base)?,
                users_path: "Users".into(),
                auth: ScimAuth::Bearer(token),
                timeout,
                platform_api: None,
            }
        }
        ScimProfile::Genesys => {
            let client_id = s
                .client_id
                .clone()
                .context("`scim.client_id` is required for the genesys profile")?;
            let client_secret = secret("scim.client_secret", &s.client_secret, &s.client_secret_file)?
                .context("`scim.client_secret` (or `scim.client_secret_file`) is required for the genesys profile")?;
            let region = s.region.as_deref().unwrap_or("mypurecloud.com");
            let mut c = ScimConfig::genesys(region, client_id, client_secret)?;
            if let Some(base) = &s.base_url {
                c.base_url = parse("base_url", base)?;
            }
            if let Some(platform) = &s.platform_url {
                // A base without a trailing slash would lose its last segment in `join`.
                let with_slash = format!("{}/", platform.trim_end_matches('/'));
                c.platform_api = Some(parse("platform_url", &with_slash)?);
            }
            if let (Some(token_url), ScimAuth::ClientCredentials { token_url: t, .. }) =
                (&s.token_url, &mut c.auth)
            {
                *t = parse("token_url", token_url)?;
            }
            c
        }
    };
    if let Some(p) = &s.users_path {
        scim.users_path = p.clone();
    }
    scim.timeout = timeout;
    // One second of the pace as burst, rounded down: with the pace's 5 %
    // headroom this leaves the target's own one-second burst a token of
    // slack for requests that arrive closer together than they were sent.
    let budget = match s.pace_per_minute() {
        Some(pace) => jit_app::Budget::per_minute(pace, pace / 60),
        None => jit_app::Budget::unlimited(),
    };
    let client = ScimClient::new(scim)?.with_budget(Arc::new(budget));
    Ok(match s.profile {
        ScimProfile::Genesys => client.with_grant_divisions(grant_divisions(policy)),
        ScimProfile::Generic => client,
    })
}

/// The ServiceNow client the config describes; `None` without `instance_url`.
pub fn tickets_from_config(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<ServiceNowClient>> {
    let s = &config.servicenow;
    let Some(instance) = &s.instance_url else {
        return Ok(None);
    };
    let mut instance_url =
        url::Url::parse(instance).context("`servicenow.instance_url` is not a URL")?;
    if !instance_url.path().ends_with('/') {
        let path = format!("{}/", instance_url.path());
        instance_url.set_path(&path);
    }
    let password = secret("servicenow.password", &s.password, &s.password_file)?;
    let client_secret = secret(
        "servicenow.client_secret",
        &s.client_secret,
        &s.client_secret_file,
    )?;
    let auth = match (&s.user, password, &s.client_id, client_secret) {
        (_, _, Some(client_id), Some(client_secret)) => ServiceNowAuth::ClientCredentials {
            token_url: match &s.token_url {
                Some(t) => url::Url::parse(t).context("`servicenow.token_url` is not a URL")?,
                None => instance_url.join("oauth_token.do")?,
            },
            client_id: client_id.clone(),
            client_secret,
        },
        (Some(user), Some(password), None, None) => ServiceNowAuth::Basic {
            user: user.clone(),
            password,
        },
        _ => bail!(
            "`servicenow` needs `user` + `password` (basic auth) or `client_id` + `client_secret` (OAuth)"
        ),
    };
    let config = ServiceNowConfig {
        instance_url,
        auth,
        timeout: Duration::from_secs(s.timeout_secs.max(1)),
        role_field: s.role_field.clone(),
        bind_roles: s.bind_roles,
    };
    Ok(Some(ServiceNowClient::new(config, clock)?))
}

/// The SMTP notifier the config describes; `None` without `notify.smtp_host`.
pub fn notifier_from_config(config: &Config) -> anyhow::Result<Option<jit_notify::SmtpNotifier>> {
    let n = &config.notify;
    let Some(host) = &n.smtp_host else {
        return Ok(None);
    };
    let smtp = jit_notify::SmtpConfig {
        host: host.clone(),
        port: n.smtp_port,
        tls: match n.tls {
            config::SmtpTls::Starttls => jit_notify::TlsMode::StartTls,
            config::SmtpTls::Tls => jit_notify::TlsMode::Tls,
            config::SmtpTls::None => jit_notify::TlsMode::None,
        },
        username: n.username.clone(),
        password: secret("notify.password", &n.password, &n.password_file)?,
        timeout: Duration::from_secs(n.timeout_secs.max(1)),
        from: n.from.clone(),
        recipients: jit_notify::Recipients {
            default: n.to.clone(),
            by_kind: n.recipients.clone(),
        },
        templates_dir: n.templates_dir.clone(),
        ca_file: n.ca_file.clone(),
    };
    Ok(Some(jit_notify::SmtpNotifier::new(
        smtp,
        Duration::from_secs(n.revocation_slo_secs),
    )?))
}

/// The directory of commands that never reach it (audit export,
/// checkpoints): any call is a permanent error.
struct NoDirectory;

#[async_trait::async_trait]
impl Directory for NoDirectory {
    async fn list_users(
        &self,
        _start_index: u64,
        _count: u32,
    ) -> Result<jit_app::DirectoryPage, jit_app::DirectoryError> {
        Err(no_directory())
    }
    async fn find_user(
        &self,
        _user: &jit_domain::UserName,
    ) -> Result<jit_app::DirectoryUser, jit_app::DirectoryError> {
        Err(no_directory())
    }
    async fn get_user(&self, _id: &str) -> Result<jit_app::DirectoryUser, jit_app::DirectoryError> {
        Err(no_directory())
    }
    async fn change_role(
        &self,
        _user: &jit_app::DirectoryUser,
        _role: &jit_domain::RoleName,
        _change: jit_domain::RoleChange,
    ) -> Result<Option<jit_app::DirectoryUser>, jit_app::DirectoryError> {
        Err(no_directory())
    }
}

fn no_directory() -> jit_app::DirectoryError {
    jit_app::DirectoryError::Permanent("this command does not reach the directory".into())
}

/// The use cases over the store alone, for commands that read or sign the
/// audit log and never reach the directory or ServiceNow.
pub fn bare_app(config: &Config, store: Arc<dyn jit_app::Store>) -> anyhow::Result<App> {
    Ok(App::new(
        store,
        Arc::new(NoDirectory),
        Arc::new(jit_itsm::NoTicketSystem),
        Arc::new(jit_app::SystemClock),
        Arc::new(load_policy(&config.policy)?),
    ))
}

/// The SIEM endpoints the config describes (`[[notify.webhooks]]`).
pub fn sinks_from_config(config: &Config) -> anyhow::Result<Vec<jit_notify::webhook::WebhookSink>> {
    let mut names = std::collections::BTreeSet::new();
    let mut sinks = Vec::new();
    for w in &config.notify.webhooks {
        if !names.insert(w.name.as_str()) {
            bail!("notify.webhooks: the name `{}` is used twice", w.name);
        }
        let url = url::Url::parse(&w.url)
            .with_context(|| format!("notify.webhooks `{}`: url `{}`", w.name, w.url))?;
        let Some(signing) = secret("notify.webhooks.secret", &w.secret, &w.secret_file)? else {
            bail!(
                "notify.webhooks `{}`: a `secret` (or `secret_file`) signs every event",
                w.name
            );
        };
        sinks.push(jit_notify::webhook::WebhookSink::new(
            jit_notify::webhook::WebhookConfig {
                name: w.name.clone(),
                url,
                secret: signing,
                bearer_token: secret(
                    "notify.webhooks.bearer_token",
                    &w.bearer_token,
                    &w.bearer_token_file,
                )?,
                timeout: Duration::from_secs(w.timeout_secs.max(1)),
            },
        )?);
    }
    Ok(sinks)
}

/// A directory budget whose pace replicas split among the live ones.
pub(crate) type SharedBudget = Arc<jit_app::Budget>;

/// The directory: `--dev`'s in-memory Genesys Cloud (served by the broker
/// itself at `addr`), else the configured target. With it, the budget the
/// replicas share when the pace is split among the live ones.
pub(crate) fn directory_for(
    config: &Config,
    policy: &Policy,
    dev: bool,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(Arc<dyn Directory>, Option<SharedBudget>)> {
    if dev {
        let sandbox = Config {
            scim: crate::sandbox::genesys_settings(addr),
            ..Config::default()
        };
        return Ok((Arc::new(directory_from_config(&sandbox, policy)?), None));
    }
    let client = directory_from_config(config, policy)?;
    let shared = (config.scim.replicas == 0 && client.budget().pace_per_minute().is_some())
        .then(|| client.budget());
    Ok((Arc::new(client), shared))
}

/// ServiceNow: the configured instance; with `--dev` (`sandbox` set) the
/// broker's own stand-in; without either, none (refused at start if the
/// policy requires a ticket).
pub(crate) fn tickets_for(
    config: &Config,
    addr: std::net::SocketAddr,
    clock: Arc<dyn jit_app::Clock>,
    policy: &Policy,
    sandbox: Option<&crate::sandbox_servicenow::ChangeBook>,
) -> anyhow::Result<Arc<dyn TicketSystem>> {
    if let Some(client) = tickets_from_config(config, clock.clone())? {
        return Ok(Arc::new(client));
    }
    if let Some(book) = sandbox {
        book.require_basic_auth("sandbox", "sandbox");
        return Ok(Arc::new(ServiceNowClient::new(
            ServiceNowConfig {
                instance_url: url::Url::parse(&format!(
                    "http://{addr}{}/",
                    crate::sandbox_servicenow::BASE_PATH
                ))?,
                auth: ServiceNowAuth::Basic {
                    user: "sandbox".into(),
                    password: SecretString::from("sandbox"),
                },
                timeout: Duration::from_secs(5),
                role_field: config.servicenow.role_field.clone(),
                bind_roles: config.servicenow.bind_roles,
            },
            clock,
        )?));
    }
    if let Some(role) = policy.roles().find(|r| r.privileged && r.require_ticket) {
        anyhow::bail!(
            "the policy requires a change ticket for `{}` but no ServiceNow instance is configured \
             (set servicenow.instance_url, or require_ticket = false in the policy)",
            role.name
        );
    }
    Ok(Arc::new(NoTicketSystem))
}

/// The ServiceNow webhook's verifier; `None` (every delivery refused)
/// without a secret, except in `--dev`.
pub(crate) fn webhook_for(config: &Config, dev: bool) -> anyhow::Result<Option<WebhookVerifier>> {
    let secret = secret(
        "servicenow.webhook_secret",
        &config.servicenow.webhook_secret,
        &config.servicenow.webhook_secret_file,
    )?
    .or_else(|| dev.then(|| SecretString::from(crate::DEV_WEBHOOK_SECRET)));
    if let Some(secret) = &secret {
        let len = secret.expose_secret().len();
        // An HMAC under a short (or empty) key is a signature anyone can make.
        anyhow::ensure!(
            len >= crate::events::MIN_SECRET_BYTES,
            "`servicenow.webhook_secret` must be at least {} bytes (it has {len})",
            crate::events::MIN_SECRET_BYTES
        );
    }
    Ok(secret.map(|secret| {
        WebhookVerifier::new(
            secret,
            Duration::from_secs(config.servicenow.webhook_max_skew_secs),
        )
    }))
}

/// The gate for Genesys events relayed by EventBridge, and the queue of
/// hints it feeds; `--dev` without a secret uses the public sandbox one.
pub(crate) fn events_for(
    config: &Config,
    dev: bool,
) -> anyhow::Result<
    Option<(
        crate::events::EventsGate,
        tokio::sync::mpsc::Receiver<jit_domain::Hint>,
    )>,
> {
    let e = &config.events;
    let Some(secret) = secret("events.secret", &e.secret, &e.secret_file)?
        .or_else(|| dev.then(|| SecretString::from(crate::DEV_EVENTS_SECRET)))
    else {
        return Ok(None);
    };
    let own_client = match dev {
        true => Some(crate::sandbox::CLIENT_ID.to_owned()),
        false => config.scim.client_id.clone(),
    };
    Ok(Some(crate::events::EventsGate::new(
        secret,
        e.header.clone(),
        e.sources.clone(),
        own_client,
    )?))
}

/// The API keys; `--dev` without any accepts the public sandbox key.
pub(crate) fn api_keys_for(config: &Config, dev: bool) -> Vec<crate::config::ApiKeyConfig> {
    let mut keys = config.api_keys.clone();
    if dev && keys.is_empty() {
        keys.push(crate::config::ApiKeyConfig {
            name: "dev".into(),
            sha256: crate::api::hash_key(crate::DEV_API_KEY),
            admin: true,
            grant_requests_per_minute: None,
        });
    }
    if keys.is_empty() {
        tracing::warn!("no api_keys configured: every API call will be refused");
    }
    keys
}

/// The chat doors as configured: the Slack callback's door, the feeds that
/// post to Slack and Teams, and `--dev`'s sandbox Slack.
pub(crate) struct Chat {
    pub door: Option<Arc<crate::slack::SlackDoor>>,
    pub feeds: Vec<Arc<dyn jit_app::EventSink>>,
    pub sandbox: Option<Arc<crate::sandbox_slack::SandboxSlack>>,
}

pub(crate) fn chat_for(
    config: &Config,
    dev: bool,
    addr: std::net::SocketAddr,
    app: &Arc<jit_app::App>,
) -> anyhow::Result<Chat> {
    let public_url = config
        .web
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let mut chat = Chat {
        door: None,
        feeds: Vec::new(),
        sandbox: None,
    };
    let s = &config.slack;
    let token = secret("slack.bot_token", &s.bot_token, &s.bot_token_file)?;
    let slack = match (token, dev) {
        (Some(token), _) => {
            let signing = secret("slack.signing_secret", &s.signing_secret, &s.signing_secret_file)?
                .ok_or_else(|| anyhow::anyhow!("`slack.bot_token` is set: `slack.signing_secret` is needed to check its callbacks"))?;
            let channel = s.default_channel.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "`slack.bot_token` is set: `slack.default_channel` says where requests go"
                )
            })?;
            let url =
                url::Url::parse(&s.api_url).map_err(|e| anyhow::anyhow!("`slack.api_url`: {e}"))?;
            let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "::1"));
            if url.scheme() != "https" && !local {
                anyhow::bail!(
                    "`slack.api_url` must be HTTPS (the bot token travels with every call)"
                );
            }
            Some((s.api_url.clone(), token, signing, channel))
        }
        (None, true) => {
            let sandbox = Arc::new(crate::sandbox_slack::SandboxSlack::seeded(addr));
            let api = sandbox.api_url.clone();
            chat.sandbox = Some(sandbox);
            Some((
                api,
                SecretString::from(crate::DEV_SLACK_TOKEN),
                SecretString::from(crate::DEV_SLACK_SIGNING_SECRET),
                crate::sandbox_slack::CHANNEL.to_owned(),
            ))
        }
        (None, false) => None,
    };
    if let Some((api_url, token, signing_secret, channel)) = slack {
        let links = jit_chat::slack::Links {
            public_url: public_url.clone(),
            servicenow_url: config.servicenow.instance_url.clone(),
            confirm_in_browser: s.confirm_in_browser,
        };
        let client = Arc::new(jit_chat::slack::Slack::new(&api_url, &token)?);
        chat.feeds.push(Arc::new(jit_chat::slack::SlackFeed::new(
            client.clone(),
            app.store.clone(),
            app.policy.clone(),
            links.clone(),
            channel,
        )));
        chat.door = Some(Arc::new(crate::slack::SlackDoor {
            slack: client,
            signing_secret,
            links,
        }));
    }
    let t = &config.teams;
    if let Some(url) = secret("teams.webhook_url", &t.webhook_url, &t.webhook_url_file)? {
        chat.feeds.push(Arc::new(jit_chat::teams::TeamsSink::new(
            url,
            &public_url,
            Duration::from_secs(config.notify.revocation_slo_secs),
        )?));
    }
    Ok(chat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_or_empty_webhook_secret_is_refused_at_start() {
        for short in ["", "x", "0123456789012345678901234567890"] {
            let mut config = Config::default();
            config.servicenow.webhook_secret = Some(SecretString::from(short));
            let refused = webhook_for(&config, false).err().expect("refused");
            assert!(
                refused.to_string().contains("servicenow.webhook_secret")
                    && refused.to_string().contains("32"),
                "{refused}"
            );
        }
        let mut config = Config::default();
        config.servicenow.webhook_secret =
            Some(SecretString::from("01234567890123456789012345678901"));
        assert!(webhook_for(&config, false).unwrap().is_some());
        assert!(
            webhook_for(&Config::default(), true).unwrap().is_some(),
            "the sandbox's own"
        );
    }
}
