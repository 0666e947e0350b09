//! Delivers the outbox: every audit event the SOC must hear about (see
//! `jit_domain::soc_notice`) was recorded with an outbox row in the event's own
//! transaction; the mailer leases due rows, renders and sends them through
//! the `Notifier`, and retries with backoff while the SMTP server is down.
//!
//! Exactly once, as far as SMTP allows: a row is marked sent only by the
//! lease holder after the server accepted the message. A crash between the
//! server's acceptance and that mark would send it again after the lease
//! runs out; the Message-ID is derived from the audit event, so mail systems
//! and readers can tell the copy.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use jit_domain::retry::next_delay;

use crate::ports::{Clock, Notice, Notifier, NotifyError, OutboxItem, Store, StoreError};

#[derive(Debug, Clone)]
pub struct MailerConfig {
    pub batch: u32,
    pub lease: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Sleep between looks for due rows (events are written by whichever
    /// transaction causes them, on any replica).
    pub idle: Duration,
    /// On stop, how long the message being sent may take; no new one starts.
    pub shutdown_grace: Duration,
}

impl Default for MailerConfig {
    fn default() -> Self {
        Self {
            batch: 20,
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(300),
            idle: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

pub struct Mailer {
    store: Arc<dyn Store>,
    notifier: Arc<dyn Notifier>,
    clock: Arc<dyn Clock>,
    owner: String,
    config: MailerConfig,
    /// Set on stop: the batch in hand sends no further message.
    stopping: AtomicBool,
}

impl Mailer {
    pub fn new(
        store: Arc<dyn Store>,
        notifier: Arc<dyn Notifier>,
        clock: Arc<dyn Clock>,
        owner: String,
        config: MailerConfig,
    ) -> Self {
        Self {
            store,
            notifier,
            clock,
            owner,
            config,
            stopping: AtomicBool::new(false),
        }
    }

    /// Delivers everything due now; answers how many rows were attempted.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let mut attempted = 0;
        loop {
            let now = self.clock.now();
            let lease = TimeDelta::from_std(self.config.lease).unwrap_or(TimeDelta::minutes(1));
            let items = self
                .store
                .claim_outbox(&self.owner, now, now + lease, self.config.batch)
                .await?;
            if items.is_empty() {
                return Ok(attempted);
            }
            for item in items {
                if self.stopping.load(Ordering::SeqCst) {
                    return Ok(attempted);
                }
                attempted += 1;
                self.deliver(item).await?;
            }
        }
    }

    async fn deliver(&self, item: OutboxItem) -> Result<(), StoreError> {
        let notice = self.notice(&item).await?;
        let result = self.notifier.deliver(&notice).await;
        let now = self.clock.now();
        let outcome = match &result {
            Ok(()) => "sent",
            Err(NotifyError::Transient(_) | NotifyError::Throttled(..)) => "deferred",
            Err(NotifyError::Permanent(_)) => "failed",
        };
        metrics::counter!("jit_emails_total", "result" => outcome).increment(1);
        match result {
            Ok(()) => {
                tracing::info!(seq = item.event.seq, kind = %item.event.kind, "SOC email sent");
                self.store
                    .release_outbox(item.id, &self.owner, "sent", now, None, None)
                    .await
            }
            Err(NotifyError::Transient(e)) | Err(NotifyError::Throttled(e, _)) => {
                let delay = next_delay(
                    item.attempts,
                    self.config.retry_base,
                    self.config.retry_cap,
                    rand::random::<f64>(),
                    None,
                );
                let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(30));
                tracing::warn!(seq = item.event.seq, attempts = item.attempts, error = %e, "SOC email deferred");
                self.store
                    .release_outbox(item.id, &self.owner, "pending", now, Some(next), Some(&e))
                    .await
            }
            Err(NotifyError::Permanent(e)) => {
                tracing::error!(seq = item.event.seq, error = %e, "SOC email failed permanently");
                self.store
                    .release_outbox(item.id, &self.owner, "failed", now, None, Some(&e))
                    .await
            }
        }
    }

    async fn notice(&self, item: &OutboxItem) -> Result<Notice, StoreError> {
        let grant = match item.event.grant {
            Some(id) => self.store.grant(id).await?,
            None => None,
        };
        let findings = match item.event.data["run"].as_str() {
            Some(run) if item.event.kind == "reconcile_run" => {
                self.store.findings(run, 10_000).await?
            }
            _ => Vec::new(),
        };
        Ok(Notice {
            event: item.event.clone(),
            grant,
            findings,
        })
    }

    /// Runs until `stop` resolves. The message being sent then gets
    /// [`MailerConfig::shutdown_grace`] to finish; rows of the batch it did
    /// not reach keep their lease until the caller releases this owner's.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let due = self.run_due();
            tokio::pin!(due);
            let result = tokio::select! {
                result = &mut due => result,
                _ = &mut stop => {
                    self.stopping.store(true, Ordering::SeqCst);
                    if tokio::time::timeout(self.config.shutdown_grace, due).await.is_err() {
                        tracing::warn!("mailer: the batch in hand outlasted the shutdown grace");
                    }
                    return;
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "mailer: store error");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.config.idle) => {}
            }
        }
    }
}
