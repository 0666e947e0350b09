//! The periodic triggers (tokio-cron-scheduler): ticket poll, sweeps, the
//! SOC digest, break-glass login checks, audit checkpoints.

use std::sync::Arc;

use anyhow::Context;
use jit_app::{App, ReconcileConfig};
use jit_domain::SweepKind;

use crate::config::{Config, ScimProfile};

/// The SOC's and the auditor's periodic work.
#[derive(Clone)]
pub(crate) enum SocJob {
    Digest,
    BreakGlassLogins,
    Checkpoint(Arc<jit_store::CheckpointKey>),
}

/// The periodic triggers: the ticket poll behind the webhook and the
/// reconciler sweep. Both are idempotent, so a missed or doubled tick (or
/// several replicas firing) does no harm; per-grant timing never depends on
/// them (expiry comes from the durable jobs table).
pub(crate) async fn start_schedules(
    app: Arc<App>,
    ticket_poll: Option<&str>,
    sweeps: &[(SweepKind, &str, &str)],
    soc: Vec<(SocJob, &str, &str)>,
    config: jit_app::ReconcileConfig,
    owner: String,
) -> anyhow::Result<Option<tokio_cron_scheduler::JobScheduler>> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    if ticket_poll.is_none() && sweeps.is_empty() && soc.is_empty() {
        return Ok(None);
    }
    let scheduler = JobScheduler::new().await?;
    if let Some(cron) = ticket_poll {
        let app = app.clone();
        let job = Job::new_async(cron, move |_, _| {
            let app = app.clone();
            Box::pin(async move {
                match app.recheck_tickets().await {
                    Ok(report) => tracing::info!(
                        checked = report.tickets_checked, ended = report.grants_ended,
                        unavailable = report.unavailable.len(), "ticket poll"
                    ),
                    Err(e) => tracing::error!(error = %e, "ticket poll failed"),
                }
            })
        })
        .with_context(|| format!("`servicenow.poll_cron` `{cron}` is not a cron schedule (sec min hour day month weekday)"))?;
        scheduler.add(job).await?;
    }
    for &(kind, setting, cron) in sweeps {
        let (app, config, owner) = (app.clone(), config.clone(), owner.clone());
        let job = Job::new_async(cron, move |_, _| {
            let (app, config, owner) = (app.clone(), config.clone(), owner.clone());
            Box::pin(async move {
                match app.reconcile(kind, "cron", false, &owner, &config).await {
                    Ok(_) => {}
                    Err(jit_app::AppError::Busy(why)) => tracing::debug!(%why, "reconcile skipped"),
                    Err(e) => {
                        tracing::error!(kind = kind.as_str(), error = %e, "reconcile sweep failed")
                    }
                }
            })
        })
        .with_context(|| {
            format!("`{setting}` `{cron}` is not a cron schedule (sec min hour day month weekday)")
        })?;
        scheduler.add(job).await?;
    }
    for (what, setting, cron) in soc {
        let (app, owner) = (app.clone(), owner.clone());
        let job = Job::new_async(cron, move |_, _| {
            let (app, owner, what) = (app.clone(), owner.clone(), what.clone());
            Box::pin(async move {
                match what {
                    SocJob::Checkpoint(key) => match app.checkpoint_audit(key.as_ref()).await {
                        Ok(Some(cp)) => tracing::info!(seq = cp.seq, "audit checkpoint signed"),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "signing an audit checkpoint failed"),
                    },
                    SocJob::Digest => {
                        if let Err(e) = app.soc_digest().await {
                            tracing::error!(error = %e, "the SOC digest failed");
                        }
                    }
                    SocJob::BreakGlassLogins => match app.check_break_glass_logins(&owner).await {
                        Ok(check) if check.unsupported => tracing::warn!(
                            "the directory cannot tell when a break-glass account last logged in"
                        ),
                        Ok(_) => {}
                        Err(jit_app::AppError::Busy(why)) => tracing::debug!(%why, "skipped"),
                        Err(e) => tracing::error!(error = %e, "checking break-glass logins failed"),
                    },
                }
            })
        })
        .with_context(|| {
            format!("`{setting}` `{cron}` is not a cron schedule (sec min hour day month weekday)")
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(Some(scheduler))
}

/// The schedules the configuration asks for, started: the ticket poll (where
/// a ServiceNow is configured), the two sweeps (when the reconciler is on),
/// the SOC digest, break-glass login checks (Genesys Cloud only says when a
/// user last logged in) and audit checkpoints (with a key).
pub(crate) async fn start_from_config(
    config: &Config,
    dev: bool,
    ticket_system_configured: bool,
    app: Arc<App>,
    reconcile: ReconcileConfig,
    owner: String,
) -> anyhow::Result<Option<tokio_cron_scheduler::JobScheduler>> {
    let ticket_poll = ticket_system_configured.then_some(config.servicenow.poll_cron.as_str());
    let sweeps = if config.reconciler.enabled {
        vec![
            (
                SweepKind::Holders,
                "reconciler.holders_cron",
                config.reconciler.holders_cron.as_str(),
            ),
            (
                SweepKind::Deep,
                "reconciler.deep_cron",
                config.reconciler.deep_cron.as_str(),
            ),
        ]
    } else {
        Vec::new()
    };
    let mut soc = Vec::new();
    if !config.notify.digest_cron.is_empty() {
        soc.push((
            SocJob::Digest,
            "notify.digest_cron",
            config.notify.digest_cron.as_str(),
        ));
    }
    let logins_readable = !dev && config.scim.profile == ScimProfile::Genesys;
    if logins_readable
        && !config.notify.break_glass_cron.is_empty()
        && app.policy.break_glass_users().next().is_some()
    {
        soc.push((
            SocJob::BreakGlassLogins,
            "notify.break_glass_cron",
            config.notify.break_glass_cron.as_str(),
        ));
    }
    if let Some(key) = config.audit.checkpoint_key()? {
        soc.push((
            SocJob::Checkpoint(Arc::new(key)),
            "audit.checkpoint_cron",
            config.audit.checkpoint_cron.as_str(),
        ));
    }
    start_schedules(app, ticket_poll, &sweeps, soc, reconcile, owner).await
}
