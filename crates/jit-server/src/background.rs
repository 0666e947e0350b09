//! What runs beside the worker until the broker stops: the mailer (SMTP, or
//! the `--dev` sandbox mailbox), the replica budget lease, the metrics
//! upkeep and the SIEM feeds. Each gets a stop signal; `Running::stop`
//! sends them and waits.

use std::sync::Arc;
use std::time::Duration;

use jit_app::App;
use jit_notify::sandbox::SandboxMailbox;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::replicas::share_budget;
use crate::{SANDBOX_MAILS_KEPT, sinks_from_config};

/// A stop signal and the task it stops.
pub(crate) type Task = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

pub(crate) struct Background {
    pub tasks: Vec<Task>,
    /// Genesys events relayed by EventBridge, when configured: the gate the
    /// API checks deliveries with (its follower is one of `tasks`).
    pub events: Option<crate::events::EventsGate>,
    /// `--dev` without SMTP: where the emails went.
    pub mailbox: Option<Arc<SandboxMailbox>>,
}

impl Background {
    fn spawn(&mut self, run: impl FnOnce(oneshot::Receiver<()>) -> tokio::task::JoinHandle<()>) {
        let (stop, stop_rx) = oneshot::channel::<()>();
        self.tasks.push((stop, run(stop_rx)));
    }
}

/// Where notices go besides the audit log: SOC email, and the chat feeds
/// (Slack, Teams).
pub(crate) struct Outlets {
    pub smtp: Option<jit_notify::SmtpNotifier>,
    pub chat_feeds: Vec<Arc<dyn jit_app::EventSink>>,
}

pub(crate) fn start(
    config: &Config,
    dev: bool,
    app: &Arc<App>,
    owner: &str,
    shared_budget: Option<Arc<jit_app::Budget>>,
    outlets: Outlets,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<Background> {
    let Outlets { smtp, chat_feeds } = outlets;
    let mut background = Background {
        tasks: Vec::new(),
        events: None,
        // `--dev` without SMTP: the emails go to the sandbox mailbox
        // instead, so the outbox drains and a newcomer can read them.
        mailbox: (dev && smtp.is_none())
            .then(|| {
                SandboxMailbox::new(
                    SANDBOX_MAILS_KEPT,
                    Duration::from_secs(config.notify.revocation_slo_secs),
                )
            })
            .transpose()?
            .map(Arc::new),
    };
    let mail_to: Option<Arc<dyn jit_app::Notifier>> = match (smtp, &background.mailbox) {
        (Some(smtp), _) => Some(Arc::new(smtp)),
        (None, Some(sandbox)) => Some(sandbox.clone()),
        (None, None) => None,
    };
    match mail_to {
        Some(notifier) => {
            let mailer = Arc::new(jit_app::Mailer::new(
                app.store.clone(),
                notifier,
                app.clock.clone(),
                owner.to_owned(),
                jit_app::MailerConfig::default(),
            ));
            background.spawn(move |stop| {
                tokio::spawn(mailer.run(async {
                    let _ = stop.await;
                }))
            });
        }
        None => {
            tracing::warn!(
                "notify.smtp_host is not set: SOC email is queued in the outbox but not sent"
            );
        }
    }
    // Replicas sharing one OAuth client split its budget: each renews a
    // lease of its own and paces at the pace over the live leases.
    if let Some(budget) = shared_budget {
        let (store, clock, me) = (app.store.clone(), app.clock.clone(), owner.to_owned());
        let pace = budget.pace_per_minute().unwrap_or(1);
        background.spawn(move |stop| {
            tokio::spawn(share_budget(store, clock, me, budget, pace, async {
                let _ = stop.await;
            }))
        });
    }
    // Histograms keep every sample until upkeep folds them into buckets; a
    // broker nobody scrapes would otherwise keep each grant's latencies.
    background.spawn(move |stop| {
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => metrics.run_upkeep(),
                    _ = &mut stop => break,
                }
            }
        })
    });
    for sink in sinks_from_config(config)? {
        let feed = Arc::new(jit_app::Feed::new(
            app.store.clone(),
            Arc::new(sink),
            app.clock.clone(),
            owner.to_owned(),
            jit_app::FeedConfig::default(),
        ));
        background.spawn(move |stop| {
            tokio::spawn(feed.run(async {
                let _ = stop.await;
            }))
        });
    }
    // Slack and Teams: fed the audit log in order, like the SIEM. With
    // Slack, the warning before a grant ends is recorded for it to deliver.
    let slack = chat_feeds.iter().any(|f| f.name() == "slack");
    for sink in chat_feeds {
        let feed = Arc::new(jit_app::Feed::new(
            app.store.clone(),
            sink,
            app.clock.clone(),
            owner.to_owned(),
            jit_app::FeedConfig {
                idle: Duration::from_millis(500),
                ..jit_app::FeedConfig::default()
            },
        ));
        background.spawn(move |stop| {
            tokio::spawn(feed.run(async {
                let _ = stop.await;
            }))
        });
    }
    if slack {
        let app = app.clone();
        background.spawn(move |stop| {
            tokio::spawn(async move {
                tokio::pin!(stop);
                loop {
                    if let Err(e) = app.nudge_expiring().await {
                        tracing::warn!(error = %e, "the warnings before grants end could not be recorded");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = &mut stop => break,
                    }
                }
            })
        });
    }
    // The replay guard's rows, once no signature check would admit them:
    // kept for twice the longest window (ServiceNow's skew, Slack's 5 min).
    let keep = chrono::TimeDelta::seconds(
        i64::try_from(config.servicenow.webhook_max_skew_secs.max(300) * 2).unwrap_or(600),
    );
    let purger = app.clone();
    background.spawn(move |stop| {
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                if let Err(e) = purger.purge_deliveries(keep).await {
                    tracing::warn!(error = %e, "old webhook deliveries could not be purged");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = &mut stop => break,
                }
            }
        })
    });
    // What each grant's privilege was used for, read from the target's
    // audit trail after the removal (only where it keeps one).
    if app.directory.has_audit_trail() {
        let (app, me) = (app.clone(), owner.to_owned());
        background.spawn(move |stop| {
            tokio::spawn(app.collect_activity(me, async {
                let _ = stop.await;
            }))
        });
    }
    if let Some((gate, hints)) = crate::adapters::events_for(config, dev)? {
        let (app, me, reconcile) = (
            app.clone(),
            owner.to_owned(),
            config.reconciler.to_reconcile_config(),
        );
        background.spawn(move |stop| {
            tokio::spawn(crate::events::follow(app, hints, me, reconcile, stop))
        });
        background.events = Some(gate);
    }
    Ok(background)
}
