//! `serve --dev` has no SMTP server: the emails the broker would send are
//! kept here instead (the last few hundred), for a newcomer to read at
//! `/sandbox/mailbox` or `GET /sandbox/mail`. The outbox drains as it would
//! with SMTP; production outbox behaviour is unchanged.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use jit_app::{Notice, Notifier, NotifyError};
use minijinja::Environment;
use serde::Serialize;

use crate::{PERSONAL_KINDS, Templates, compose};

/// The SOC's address in the sandbox.
pub const SANDBOX_SOC: &str = "soc@sandbox.invalid";

/// One email the sandbox would have sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxMail {
    /// The audit event it tells of.
    pub seq: i64,
    pub kind: String,
    pub at: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

pub struct SandboxMailbox {
    kept: Mutex<VecDeque<SandboxMail>>,
    capacity: usize,
    templates: Templates,
    slo: Duration,
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox mailbox · jit-broker</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><main>
<h1>Sandbox mailbox</h1>
<p class="sandbox-banner"><strong>serve --dev</strong> sends no email: these are the last {{ capacity }} the broker would have sent, newest first. JSON at <a href="/sandbox/mail">/sandbox/mail</a>.</p>
{% if mails|length == 0 %}<p class="muted">Nothing yet: request a grant and watch it arrive.</p>{% endif %}
{% for m in mails %}<section class="card" id="mail-{{ m.seq }}">
<h2>{{ m.subject }}</h2>
<p class="muted">{{ m.at }} · to {{ m.to|join(", ") }} · {{ m.kind }}</p>
<pre>{{ m.body }}</pre>
</section>{% endfor %}
</main></body></html>
"#;

impl SandboxMailbox {
    pub fn new(capacity: usize, slo: Duration) -> Result<Self, crate::NotifyConfigError> {
        Ok(Self {
            kept: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            templates: Templates::load(None)?,
            slo,
        })
    }

    /// Newest first.
    pub fn messages(&self) -> Vec<SandboxMail> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().rev().cloned().collect()
    }

    /// The mailbox as a page (escaped: bodies carry what users typed).
    pub fn page(&self) -> Result<String, minijinja::Error> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_template("mailbox.html", PAGE)?;
        env.get_template("mailbox.html")?
            .render(minijinja::context! {
                capacity => self.capacity,
                mails => self.messages(),
            })
    }
}

#[async_trait]
impl Notifier for SandboxMailbox {
    async fn deliver(&self, notice: &Notice) -> Result<(), NotifyError> {
        let composed = compose(notice, self.slo);
        let (subject, body, _html) = self
            .templates
            .render(&composed)
            .map_err(|e| NotifyError::Permanent(format!("template: {e}")))?;
        let mut to = composed.people.clone();
        if !PERSONAL_KINDS.contains(&composed.kind.as_str()) {
            to.push(SANDBOX_SOC.to_owned());
        }
        let mail = SandboxMail {
            seq: notice.event.seq,
            kind: composed.kind,
            at: composed.at,
            to,
            subject,
            body,
        };
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == self.capacity {
            kept.pop_front();
        }
        kept.push_back(mail);
        Ok(())
    }
}
