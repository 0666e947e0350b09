//! `[notify]`: the SOC's email and the SIEM webhooks.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    #[default]
    Starttls,
    /// Implicit TLS (SMTPS).
    Tls,
    /// Plain SMTP, for a relay on the same host or segment only.
    None,
}

/// The SOC's email. Without `smtp_host` nothing is sent (events still queue
/// in the outbox, and the start-up log says so).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub timeout_secs: u64,
    pub from: String,
    /// SOC addresses for every event kind not listed in `recipients`.
    pub to: Vec<String>,
    /// Per kind (grant_activated, grant_ended, converge_failed,
    /// revocation_overdue, reconcile_run, emergency_grant, conflicting_writer,
    /// incident_opened, incident_resolved, break_glass_login, soc_digest) or
    /// per severity (P1, P2, P3); a kind's own list wins.
    pub recipients: std::collections::BTreeMap<String, Vec<String>>,
    /// `subject.txt`, `body.txt`, `body.html` here replace the built-in templates.
    pub templates_dir: Option<PathBuf>,
    /// A PEM CA certificate to trust for the SMTP server besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// A role still present this long after its grant ended is raised as overdue.
    pub revocation_slo_secs: u64,
    /// How often each break-glass account's last login is read (Genesys
    /// profile): sec min hour day month weekday, default every minute at
    /// :30 (between holders sweeps); empty: never.
    pub break_glass_cron: String,
    /// The daily digest of what is open (UTC), default 07:00; empty: never.
    pub digest_cron: String,
    /// SIEM endpoints fed every SOC event as signed JSON.
    pub webhooks: Vec<WebhookSettings>,
}

/// One SIEM endpoint: `[[notify.webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Its progress through the audit log is kept under this name.
    pub name: String,
    /// HTTPS (plain HTTP only to this host).
    pub url: String,
    /// Signs `X-JIT-Signature: v1=hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`.
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    pub bearer_token: Option<SecretString>,
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default = "webhook_timeout")]
    pub timeout_secs: u64,
}

fn webhook_timeout() -> u64 {
    10
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            password_file: None,
            timeout_secs: 10,
            from: "jit-broker@localhost".into(),
            to: Vec::new(),
            recipients: Default::default(),
            templates_dir: None,
            ca_file: None,
            revocation_slo_secs: 60,
            break_glass_cron: "30 * * * * *".into(),
            digest_cron: "0 0 7 * * *".into(),
            webhooks: Vec::new(),
        }
    }
}
