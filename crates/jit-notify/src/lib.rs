//! jit-notify: the SOC's email. [`compose`] decides what one audit event says
//! (who, which role, which ticket, when, what the broker did); templates
//! (minijinja, overridable from a directory) lay it out as plain text and
//! HTML; [`SmtpNotifier`] sends it with lettre over STARTTLS, implicit TLS or
//! (for a local relay) plain SMTP. [`webhook`] feeds the same events to a
//! SIEM as signed JSON.

mod compose;
pub mod sandbox;
pub mod webhook;

pub use compose::{Composed, PERSONAL_KINDS, compose};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use jit_app::{Notice, Notifier, NotifyError};
use jit_domain::Severity;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::Environment;
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("`{0}` is not an e-mail address: {1}")]
    Address(String, String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("template {0}: {1}")]
    Template(String, String),
    #[error("notify.webhooks {0}")]
    Webhook(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP: only for a relay on the same host or network segment.
    None,
    StartTls,
    /// Implicit TLS (SMTPS, usually port 465).
    Tls,
}

pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub timeout: Duration,
    pub from: String,
    /// Where each event kind goes; kinds not listed go to `default`.
    pub recipients: Recipients,
    /// Operator-edited `subject.txt`, `body.txt`, `body.html` override the built-in ones.
    pub templates_dir: Option<std::path::PathBuf>,
    /// A PEM CA certificate to trust besides the public roots (an internal
    /// relay signed by the bank's own CA).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Who gets which kind of email; addresses as configured (`String`) or as
/// parsed once at start (`Mailbox`).
#[derive(Debug, Clone)]
pub struct Recipients<A = String> {
    pub default: Vec<A>,
    /// Keyed by notice kind: `grant_activated`, `grant_ended`,
    /// `converge_failed`, `revocation_overdue`, `reconcile_run`, `emergency_grant`,
    /// `conflicting_writer`, `incident_opened`, `incident_resolved`,
    /// `break_glass_login`, `soc_digest`; or by severity, `P1`, `P2`, `P3`
    /// (a kind's own list wins). For people rather than the SOC (never sent
    /// to `default`): `approval_requested` and `request_outcome`.
    pub by_kind: BTreeMap<String, Vec<A>>,
}

impl<A> Default for Recipients<A> {
    fn default() -> Self {
        Self {
            default: Vec::new(),
            by_kind: BTreeMap::new(),
        }
    }
}

impl<A> Recipients<A> {
    /// The kind's own list, else its severity's, else the default.
    pub fn for_notice(&self, kind: &str, severity: Severity) -> &[A] {
        let listed = |key: &str| self.by_kind.get(key).filter(|r| !r.is_empty());
        listed(kind)
            .or_else(|| listed(severity.as_str()))
            .unwrap_or(&self.default)
    }
}

impl Recipients {
    /// Every address checked and parsed, so sending never parses again.
    fn parse(&self) -> Result<Recipients<Mailbox>, NotifyConfigError> {
        let all = |list: &[String]| {
            list.iter()
                .map(|r| mailbox(r))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Recipients {
            default: all(&self.default)?,
            by_kind: self
                .by_kind
                .iter()
                .map(|(kind, list)| Ok((kind.clone(), all(list)?)))
                .collect::<Result<_, NotifyConfigError>>()?,
        })
    }
}

const SUBJECT: &str = include_str!("../templates/subject.txt");
const BODY_TXT: &str = include_str!("../templates/body.txt");
const BODY_HTML: &str = include_str!("../templates/body.html");

/// The three templates, built in or from an operator's directory.
pub struct Templates(Environment<'static>);

impl Templates {
    pub fn load(dir: Option<&Path>) -> Result<Self, NotifyConfigError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        for (name, built_in) in [
            ("subject.txt", SUBJECT),
            ("body.txt", BODY_TXT),
            ("body.html", BODY_HTML),
        ] {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(path) => std::fs::read_to_string(&path).map_err(|e| {
                    NotifyConfigError::Template(path.display().to_string(), e.to_string())
                })?,
                None => built_in.to_owned(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| NotifyConfigError::Template(name.into(), e.to_string()))?;
        }
        Ok(Self(env))
    }

    /// Subject, plain text and HTML.
    pub fn render(&self, c: &Composed) -> Result<(String, String, String), minijinja::Error> {
        let get = |name| self.0.get_template(name).and_then(|t| t.render(c));
        let subject = get("subject.txt")?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok((subject, get("body.txt")?, get("body.html")?))
    }
}

pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    recipients: Recipients<Mailbox>,
    templates: Templates,
    slo: Duration,
    send_timeout: Duration,
}

fn mailbox(raw: &str) -> Result<Mailbox, NotifyConfigError> {
    raw.parse().map_err(|e: lettre::address::AddressError| {
        NotifyConfigError::Address(raw.to_owned(), e.to_string())
    })
}

impl SmtpNotifier {
    pub fn new(config: SmtpConfig, slo: Duration) -> Result<Self, NotifyConfigError> {
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let smtp = |e: lettre::transport::smtp::Error| NotifyConfigError::Smtp(e.to_string());
        let tls_parameters = || -> Result<TlsParameters, NotifyConfigError> {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    NotifyConfigError::Smtp(format!("notify.ca_file {}: {e}", path.display()))
                })?;
                params = params.add_root_certificate(Certificate::from_pem(&pem).map_err(smtp)?);
            }
            params.build_rustls().map_err(smtp)
        };
        // Certificates are always verified; with TLS on, a connection that
        // cannot be secured fails rather than fall back to plain text.
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            TlsMode::StartTls => Tls::Required(tls_parameters()?),
            TlsMode::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .tls(tls)
            .port(config.port)
            .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let recipients = config.recipients.parse()?;
        if recipients.default.is_empty() {
            return Err(NotifyConfigError::Address(
                String::new(),
                "notify.to must name at least one SOC address".into(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from: mailbox(&config.from)?,
            recipients,
            templates: Templates::load(config.templates_dir.as_deref())?,
            slo,
            send_timeout: config.timeout.saturating_mul(3),
        })
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn deliver(&self, notice: &Notice) -> Result<(), NotifyError> {
        let composed = compose(notice, self.slo);
        let (subject, body_text, body_html) = self
            .templates
            .render(&composed)
            .map_err(|e| NotifyError::Permanent(format!("template: {e}")))?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            // Stable per event: a copy sent again after a crash is recognisable.
            .message_id(Some(format!(
                "<audit-{}-{}@jit-broker>",
                notice.event.seq,
                &notice.event.hash[..16.min(notice.event.hash.len())]
            )));
        let listed = if PERSONAL_KINDS.contains(&composed.kind.as_str()) {
            self.recipients
                .by_kind
                .get(&composed.kind)
                .map_or(&[][..], Vec::as_slice)
        } else {
            self.recipients
                .for_notice(&composed.kind, composed.severity)
        };
        let people: Vec<Mailbox> = composed
            .people
            .iter()
            .filter_map(|p| p.parse::<Mailbox>().ok())
            .collect();
        if listed.is_empty() && people.is_empty() {
            tracing::warn!(kind = %composed.kind, seq = notice.event.seq, "nobody to tell: no address for this notice");
            return Ok(());
        }
        for to in listed.iter().chain(&people) {
            message = message.to(to.clone());
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(body_text, body_html))
            .map_err(|e| NotifyError::Permanent(format!("message: {e}")))?;
        // A server that stops answering mid-session must not hold the mailer:
        // the whole exchange gets a bound, not only the connect.
        match tokio::time::timeout(self.send_timeout, self.transport.send(message)).await {
            Err(_) => Err(NotifyError::Transient(format!(
                "the SMTP exchange took longer than {} s",
                self.send_timeout.as_secs()
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(NotifyError::Permanent(e.to_string())),
            Ok(Err(e)) => Err(NotifyError::Transient(e.to_string())),
        }
    }
}
