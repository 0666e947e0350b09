//! jit-notify: the SOC's email. [`compose`] decides what one audit event says
//! (who, which role, which ticket, when, what the broker did); templates
//! (minijinja, overridable from a directory) lay it out as plain text and
//! HTML; [`SmtpNotifier`] sends it with lettre over STARTTLS, implicit TLS or
//! (for a local relay) plain SMTP. [`webhook`] feeds the same events to a
//! SIEM as signed JSON.

pub mod sandbox;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use jit_app::{Notice, Notifier, NotifyError};
use jit_domain::{FindingOutcome, Severity, severity};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::Environment;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

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

/// What one email says, before layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Composed {
    /// The recipients' key: the event kind, or `emergency_grant`.
    pub kind: String,
    pub severity: Severity,
    pub alert: bool,
    pub headline: String,
    pub summary: String,
    pub facts: Vec<(String, String)>,
    pub action: String,
    pub findings: Vec<jit_app::FindingRecord>,
    pub seq: i64,
    pub at: String,
    /// People the notice is for besides the configured lists: a role's
    /// approvers (a request waits for them), a requester (the outcome).
    pub people: Vec<String>,
}

/// Notices for people rather than the SOC: sent to them (and to the kind's
/// own list, if configured), never to the SOC's default list.
pub const PERSONAL_KINDS: [&str; 2] = ["approval_requested", "request_outcome"];

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// " Comment: …" when an approver left one.
fn comment_suffix(d: &Value) -> String {
    d["comment"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(|c| format!(" Comment: {c}"))
        .unwrap_or_default()
}

/// The approvers a request names (users; groups hear through
/// `[notify.recipients] approval_requested`).
fn approvers(d: &Value) -> Vec<String> {
    d["approvers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// The words for one notice. Pure: the tests read them without SMTP.
pub fn compose(notice: &Notice, slo: Duration) -> Composed {
    let e = &notice.event;
    let d = &e.data;
    let grant = notice.grant.as_ref();
    let user = grant.map_or_else(|| text(&d["user"]), |g| g.user.to_string());
    let role = grant.map_or_else(|| text(&d["role"]), |g| g.role.to_string());
    let ticket = e.ticket.clone().unwrap_or_else(|| "none".into());
    let mut facts = vec![
        ("User".to_owned(), user.clone()),
        ("Role".to_owned(), role.clone()),
        ("Ticket".to_owned(), ticket.clone()),
    ];
    if let Some(g) = grant {
        facts.push((
            "Window".into(),
            format!(
                "{} – {} (UTC)",
                g.starts_at.format("%Y-%m-%d %H:%M:%S"),
                g.expires_at.format("%Y-%m-%d %H:%M:%S")
            ),
        ));
        facts.push((
            "Requested by".into(),
            format!("{} (via {})", g.requested_by, g.origin),
        ));
        facts.push(("Justification".into(), g.justification.to_string()));
        facts.push(("Grant".into(), g.id.to_string()));
    }
    let at = e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let mut people = Vec::new();
    let (kind, alert, headline, summary, action) = match e.kind.as_str() {
        "grant_requested" if d["state"] == "pending_approval" => {
            people = approvers(d);
            (
                "approval_requested",
                false,
                format!("Approval needed: {role} for {user} ({ticket})"),
                format!(
                    "{user} asks for {role} under {ticket}, from {} to {}, and the policy needs your approval.",
                    text(&d["starts_at"]),
                    text(&d["expires_at"])
                ),
                "Nothing happens until enough approvers agree: approve or deny it on the broker's Approvals page. Unanswered, it lapses.".to_owned(),
            )
        }
        "extension_requested" => {
            people = approvers(d);
            (
                "approval_requested",
                false,
                format!("Approval needed: extend {role} for {user} ({ticket})"),
                format!(
                    "{} asks to extend {user}'s {role} under {ticket} from {} to {}; the approved window ends at {}.",
                    e.actor,
                    text(&d["from"]),
                    text(&d["until"]),
                    text(&d["from"])
                ),
                "The grant keeps its approved end until enough approvers agree: approve or deny it on the broker's Approvals page. Unanswered, it lapses.".to_owned(),
            )
        }
        "extension_approved" | "extension_denied" => {
            people.push(text(&d["requested_by"]));
            let outcome = if e.kind == "extension_approved" { "approved" } else { "denied" };
            let comment = comment_suffix(d);
            (
                "request_outcome",
                false,
                format!("Your extension of {role} was {outcome}"),
                format!(
                    "The extension of {user}'s {role} ({ticket}) to {} was {outcome} by {} at {at}.{comment}",
                    text(&d["until"]),
                    e.actor
                ),
                if outcome == "approved" {
                    "The grant now ends at the new time; the role is removed then.".to_owned()
                } else {
                    "The grant keeps its approved end.".to_owned()
                },
            )
        }
        "grant_approved" | "grant_denied" | "grant_cancelled" => {
            people.push(user.clone());
            let outcome = match e.kind.as_str() {
                "grant_approved" => "approved",
                "grant_denied" => "denied",
                _ => "lapsed without approval",
            };
            let by = match e.kind.as_str() {
                "grant_cancelled" => String::new(),
                _ => format!(" by {}", e.actor),
            };
            let comment = comment_suffix(d);
            (
                "request_outcome",
                false,
                format!("Your request for {role} was {outcome}"),
                format!("Your request for {role} ({ticket}) was {outcome}{by} at {at}.{comment}"),
                if outcome == "approved" {
                    "Adds the role when the grant's window starts and removes it when it ends; see My access.".to_owned()
                } else {
                    "Nothing was granted.".to_owned()
                },
            )
        }
        "grant_activated" => (
            "grant_activated",
            false,
            format!("{role} granted to {user} ({ticket})"),
            format!("{user}'s grant of {role} became active at {at}."),
            "Adds the role through SCIM, verifies it by reading the user back, and removes it at expiry; a failure is reported in a separate alert.".to_owned(),
        ),
        "grant_ended" => {
            let reason = text(&d["reason"]);
            let note = d["note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
            (
                "grant_ended",
                false,
                format!("{role} ended for {user}: {reason}"),
                format!("{user}'s grant of {role} ended at {at}: {reason}{note}."),
                format!(
                    "Removes the role through SCIM and verifies the removal by reading the user back; if it is still present {} s after the end, an OVERDUE alert follows.",
                    slo.as_secs()
                ),
            )
        }
        "converge_failed" => (
            "converge_failed",
            true,
            format!("FAILED to apply {role} for {user}"),
            format!("The directory refused a change for {user} / {role} at {at}: {}.", text(&d["error"])),
            "Stopped retrying (the error is permanent) and recorded it on the grant. Check the user in Genesys Cloud now: if the grant has ended, the role may still be present.".to_owned(),
        ),
        "revocation_overdue" => (
            "revocation_overdue",
            true,
            format!("OVERDUE: {user} still holds {role}"),
            format!(
                "The grant ended at {} ({}), but {} s later the role has not been removed (SLO {} s). Last error: {}.",
                text(&d["ended_at"]),
                text(&d["end_reason"]),
                text(&d["overdue_secs"]),
                text(&d["slo_secs"]),
                text(&d["error"])
            ),
            "Keeps retrying the removal with backoff. Remove the role by hand in Genesys Cloud if the target stays down.".to_owned(),
        ),
        "grant_requested" => (
            "emergency_grant",
            true,
            format!("EMERGENCY grant: {role} for {user} on {ticket}, before approval"),
            format!(
                "{user} was granted {role} at {at} under the policy's emergency-change rule: {ticket} is not approved yet.",
            ),
            "Applies the grant for at most the emergency duration and ends it when the change closes, is cancelled or is rejected.".to_owned(),
        ),
        "conflicting_writer_detected" => {
            let c = &d["conflict"];
            let removals: Vec<String> = c["removals"]
                .as_array()
                .map(|r| r.iter().map(text).collect())
                .unwrap_or_default();
            let window = c["window_secs"].as_u64().unwrap_or(0);
            facts.push(("Removals verified".into(), removals.join(", ")));
            facts.push(("Came back".into(), format!("{} times within {window} s", text(&c["reappearances"]))));
            facts.push(("Next strip".into(), text(&c["next_strip_at"])));
            facts.push(("Run".into(), text(&d["run"])));
            (
                "conflicting_writer",
                true,
                format!("HIGH: another writer keeps re-adding {role} to {user}"),
                format!(
                    "{role} came back on {user} {} times within {window} s, each time after the broker had removed it and verified the removal by reading the user back. Something else writes `roles`: the IdP's own Genesys Cloud SCIM app mapping roles, a script, or an admin account.",
                    text(&c["reappearances"])
                ),
                "Keeps stripping the role, waiting longer between strips of this pair (doubling up to the configured maximum). Find the writer and stop it; if that system should own the role, mark it `report_only` in the policy. This alert is sent once per pattern, not on every sweep.".to_owned(),
            )
        }
        "reconcile_run" => {
            let acted: Vec<&jit_app::FindingRecord> =
                notice.findings.iter().filter(|f| f.action != FindingOutcome::Reported).collect();
            let n = acted.len();
            let stripped = acted.iter().filter(|f| f.action == FindingOutcome::Removed).count();
            let headline = match acted.as_slice() {
                [one] => format!(
                    "{}: {} held {} ({})",
                    one.kind.replace('_', " "),
                    one.user,
                    one.role,
                    one.action.as_str().replace('_', " ")
                ),
                _ => format!("Reconciler: {n} findings, {stripped} roles stripped"),
            };
            facts = vec![
                ("Run".into(), text(&d["run"])),
                ("Trigger".into(), text(&d["trigger"])),
                ("Dry run".into(), text(&d["dry_run"])),
                ("Users scanned".into(), text(&d["users_scanned"])),
                ("Errors".into(), text(&d["errors"])),
            ];
            (
                "reconcile_run",
                true,
                headline,
                format!("The directory sweep that ended at {at} found privileged roles held without an active grant."),
                if d["dry_run"] == Value::Bool(true) {
                    "Nothing: this was a dry run.".to_owned()
                } else {
                    "Removed each role marked `removed` through SCIM and verified it by reading the user back; a `deferred` one (a pair that keeps coming back) is stripped by the first sweep after its delay; `reported` ones (break-glass accounts, roles the policy marks report-only) were left in place.".to_owned()
                },
            )
        }
        "incident_opened" | "incident_resolved" => {
            let finding = d["kind"].as_str().unwrap_or_default();
            let opened = e.kind == "incident_opened";
            facts = vec![
                ("Who".into(), user.clone()),
                ("Role".into(), role.clone()),
                ("Finding".into(), finding.to_owned()),
                ("Detail".into(), text(&d["detail"])),
                ("Sweep".into(), format!("{} ({})", text(&d["run"]), text(&d["sweep"]))),
            ];
            if !opened {
                facts.push(("Open since".into(), text(&d["opened_at"])));
            }
            let what = match finding {
                "break_glass_held" => format!("break-glass account {user} holds {role}"),
                "oauth_client_privileged" => format!("{user} holds {role}"),
                "conflicting_writer" => format!("another writer keeps re-adding {role} to {user}"),
                _ => format!("{user} holds {role} (a report-only role)"),
            };
            if opened {
                (
                    "incident_opened",
                    false,
                    format!("Open: {what}"),
                    format!("A sweep at {at} found that {what}. This is reported, not stripped, and you hear of it once: now, and when a sweep no longer sees it."),
                    "Left it in place (break-glass accounts and report-only roles are the policy's exceptions; OAuth clients are integrations). Check it is expected; the daily digest lists it while it lasts.".to_owned(),
                )
            } else {
                (
                    "incident_resolved",
                    false,
                    format!("Resolved: {what}"),
                    format!("The sweep that ended at {at} no longer sees that {what}."),
                    "Nothing more: the incident is closed; it opens again if a sweep sees it again.".to_owned(),
                )
            }
        }
        "break_glass_login" => {
            let roles = match &d["roles"] {
                Value::Array(r) => r.iter().map(text).collect::<Vec<_>>().join(", "),
                other => text(other),
            };
            facts = vec![
                ("Account".into(), user.clone()),
                ("Logged in".into(), text(&d["logged_in_at"])),
                ("Previous login".into(), text(&d["previous_login_at"])),
                ("Holds now".into(), roles.clone()),
            ];
            (
                "break_glass_login",
                true,
                format!("BREAK-GLASS USED: {user} logged in at {}", text(&d["logged_in_at"])),
                format!("The break-glass account {user} logged in at {} and holds {roles}. Break-glass accounts hold privileged roles by design; using one is an emergency or an attack.", text(&d["logged_in_at"])),
                "Recorded the login so it is raised once. Reach the account's custodian now and confirm an authorised emergency (an incident or change number). If nobody can, treat it as a compromise: disable the account in Genesys Cloud and rotate its credentials.".to_owned(),
            )
        }
        "soc_digest" => {
            let count = |key: &str| d[key].as_array().map_or(0, Vec::len);
            let lines = |key: &str, f: &dyn Fn(&Value) -> String| {
                d[key].as_array().map(|a| a.iter().map(f).collect::<Vec<_>>().join("; ")).filter(|s| !s.is_empty()).unwrap_or_else(|| "none".into())
            };
            facts = vec![
                ("Break-glass accounts".into(), lines("break_glass", &|b| format!("{} holds [{}], last login {}", text(&b["user"]), b["holds"].as_array().map(|h| h.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default(), text(&b["last_login_at"])))),
                ("Privileged OAuth clients".into(), lines("oauth_clients", &|c| format!("{} holds {} since {}", text(&c["subject"]), text(&c["role"]), text(&c["since"])))),
                ("Conflicting writers".into(), lines("conflicting_writers", &|c| format!("{} / {} since {}", text(&c["subject"]), text(&c["role"]), text(&c["since"])))),
                ("Report-only roles held".into(), lines("report_only", &|c| format!("{} / {} since {}", text(&c["subject"]), text(&c["role"]), text(&c["since"])))),
                ("Overdue revocations".into(), lines("overdue_revocations", &|o| format!("{} still holds {} ({} s past the end)", text(&o["user"]), text(&o["role"]), text(&o["overdue_secs"])))),
                ("Grants since yesterday".into(), lines("grants", &|g| format!("{} under {}: {}", text(&g["role"]), text(&g["ticket"]), g["grants"].as_array().map(|u| u.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default()))),
            ];
            (
                "soc_digest",
                false,
                format!(
                    "Daily digest: {} open incidents, {} overdue revocations, {} grant groups",
                    count("oauth_clients") + count("conflicting_writers") + count("report_only") + d["break_glass"].as_array().map_or(0, |b| b.iter().filter(|x| x["holds"].as_array().is_some_and(|h| !h.is_empty())).count()),
                    count("overdue_revocations"),
                    count("grants"),
                ),
                format!("What is open at {at}, and the last day's grants."),
                "Nothing: this is a summary. Each item was raised once when it opened.".to_owned(),
            )
        }
        other => (
            other,
            false,
            format!("{other}: {user} / {role}"),
            format!("Audit event {other} at {at}."),
            "Recorded it in the audit log.".to_owned(),
        ),
    };
    Composed {
        kind: kind.to_owned(),
        severity: severity(&e.kind, d),
        alert,
        headline,
        summary,
        facts,
        action,
        // The run's strips and failures; what it only reported is an incident.
        findings: notice
            .findings
            .iter()
            .filter(|f| f.action != FindingOutcome::Reported)
            .cloned()
            .collect(),
        seq: e.seq,
        at,
        people,
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
