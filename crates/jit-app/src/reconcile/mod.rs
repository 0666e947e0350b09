//! The reconciler: finds the privileged roles held, judges each (jit-domain
//! `judge`), strips what is held without cause through the same `converge`
//! the scheduler uses, and records the run. Two kinds of sweep find them:
//! `holders` asks the directory who holds each privileged role (a few
//! requests whatever the org's size, so it runs every minute); `deep` reads
//! the whole directory page by page (daily, in case a holders answer leaves
//! someone out).
//!
//! Memory does not grow with the directory: one page is held at a time and
//! only counters are kept; every finding is written as it is found.
//!
//! Race-free against activations: the sweep's listing only nominates a pair.
//! The decision to remove is taken inside `converge`, under the pair's lock,
//! from a store read made after the listing, and the write is conditional on
//! the directory version converge itself read (`If-Match`). A grant that
//! activated before that store read keeps its role; one whose activation
//! commits during converge's write is caught by the re-decision that follows
//! every write, which restores the role at once (the activation's own
//! converge, waiting on the same pair lock, then finds it in place).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::TimeDelta;
use governor::{Quota, RateLimiter};
use jit_domain::{
    FindingAction, FindingOutcome, GrantId, Judgement, RoleChange, RoleName, SweepKind, SweepRules,
    UserName, incident_over, is_incident, judge, looked_for_by,
};
use serde_json::json;

mod deep;
mod hinted;
mod holders;
mod permissions;

use crate::app::{App, SYSTEM_ACTOR};
use crate::budget::{Lane, in_lane};
use crate::error::AppError;
use crate::ports::{DirectoryError, FindingRecord, GrantFilter, NewAudit, ReconcileRun, Sighting};

/// A run record as it starts.
pub(super) fn new_run(
    kind: SweepKind,
    trigger: &str,
    dry_run: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> ReconcileRun {
    ReconcileRun {
        id: GrantId::new_at(now).to_string(),
        kind,
        trigger: trigger.to_owned(),
        dry_run,
        status: "running".into(),
        started_at: now,
        finished_at: None,
        users_scanned: 0,
        pages: 0,
        findings: 0,
        actions: 0,
        errors: 0,
        error: None,
    }
}

/// Privileged role → who holds it, as one source says.
pub(super) type HoldersByRole = BTreeMap<RoleName, BTreeSet<UserName>>;

/// The lease that makes sweeps of one kind exclusive across replicas (a deep
/// sweep never holds up the holders sweep of the minute).
fn lease_name(kind: SweepKind) -> String {
    format!("reconciler-{}", kind.as_str())
}

/// The audit event (and SOC alert) of a pair that keeps coming back.
pub const CONFLICTING_WRITER_EVENT: &str = "conflicting_writer_detected";
/// A reported finding seen for the first time (the SOC hears it once).
pub const INCIDENT_OPENED: &str = "incident_opened";
/// A reported finding no longer seen by a sweep that looks for it.
pub const INCIDENT_RESOLVED: &str = "incident_resolved";

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Users per page; Genesys Cloud wants 25 or fewer when `roles` is asked for.
    pub page_size: u32,
    /// Directory requests per second the sweep may make (pages and fixes),
    /// so that it never starves the org's other integrations.
    pub requests_per_second: u32,
    /// The grace for expiry jobs and the conflicting-writer rule `judge` applies.
    pub rules: SweepRules,
    /// How long one page may take before another replica may take over.
    pub lease: Duration,
    /// Attempts per page on transient errors (429/5xx) before the run fails.
    pub page_attempts: u32,
    /// Also report OAuth clients holding privileged roles (Genesys only).
    pub oauth_clients: bool,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            page_size: 25,
            requests_per_second: 10,
            rules: SweepRules::default(),
            lease: Duration::from_secs(120),
            page_attempts: 5,
            oauth_clients: false,
        }
    }
}

impl App {
    /// Takes the sweep lease and records a new run, or answers `Busy`.
    pub async fn begin_reconcile(
        &self,
        kind: SweepKind,
        trigger: &str,
        dry_run: bool,
        owner: &str,
        config: &ReconcileConfig,
    ) -> Result<ReconcileRun, AppError> {
        let now = self.now();
        let until = now + TimeDelta::from_std(config.lease).unwrap_or(TimeDelta::minutes(2));
        if !self
            .store
            .try_lease(&lease_name(kind), owner, now, until)
            .await?
        {
            return Err(AppError::Busy(format!(
                "a {} sweep is already running",
                kind.as_str()
            )));
        }
        let run = new_run(kind, trigger, dry_run, now);
        self.store.insert_run(&run).await?;
        Ok(run)
    }

    /// Runs a sweep begun by [`App::begin_reconcile`] to its end and releases
    /// the lease. The run is recorded `completed` or `failed` either way.
    pub async fn run_reconcile(
        &self,
        mut run: ReconcileRun,
        owner: &str,
        config: &ReconcileConfig,
    ) -> Result<ReconcileRun, AppError> {
        let mut result = self.sweep(&mut run, owner, config).await;
        if result.is_ok() && !run.dry_run {
            result = self.resolve_incidents(&run, config).await;
        }
        self.finish_run(&mut run, &result).await?;
        self.store
            .release_lease(&lease_name(run.kind), owner)
            .await?;
        Ok(run)
    }

    /// Records a run's end (completed or failed) with its audit event.
    pub(super) async fn finish_run(
        &self,
        run: &mut ReconcileRun,
        result: &Result<(), AppError>,
    ) -> Result<(), AppError> {
        run.finished_at = Some(self.now());
        match result {
            Ok(()) => run.status = "completed".into(),
            Err(e) => {
                run.status = "failed".into();
                run.error = Some(e.to_string());
            }
        }
        let audit = NewAudit {
            at: self.now(),
            actor: SYSTEM_ACTOR.into(),
            kind: "reconcile_run",
            grant: None,
            ticket: None,
            data: json!({
                "run": run.id, "kind": run.kind, "trigger": run.trigger, "dry_run": run.dry_run, "status": run.status,
                "started_at": run.started_at, "finished_at": run.finished_at,
                "users_scanned": run.users_scanned, "pages": run.pages, "findings": run.findings,
                "actions": run.actions, "errors": run.errors, "error": run.error,
            }),
        };
        self.store.update_run(run, Some(audit)).await?;
        let kind = run.kind.as_str();
        metrics::counter!("jit_reconcile_runs_total", "kind" => kind, "status" => run.status.clone())
            .increment(1);
        metrics::counter!("jit_reconcile_users_scanned_total", "kind" => kind)
            .increment(run.users_scanned);
        tracing::info!(
            run = %run.id, kind = run.kind.as_str(), status = %run.status, users = run.users_scanned,
            findings = run.findings, removed = run.actions, errors = run.errors, "reconcile sweep"
        );
        Ok(())
    }

    /// Begin and run in one call (CLI, cron).
    pub async fn reconcile(
        &self,
        kind: SweepKind,
        trigger: &str,
        dry_run: bool,
        owner: &str,
        config: &ReconcileConfig,
    ) -> Result<ReconcileRun, AppError> {
        let run = self
            .begin_reconcile(kind, trigger, dry_run, owner, config)
            .await?;
        self.run_reconcile(run, owner, config).await
    }

    async fn sweep(
        &self,
        run: &mut ReconcileRun,
        owner: &str,
        config: &ReconcileConfig,
    ) -> Result<(), AppError> {
        let rate = NonZeroU32::new(config.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rate));
        match run.kind {
            SweepKind::Deep => self.list_everyone(run, owner, config, &limiter).await?,
            SweepKind::Holders => self.ask_holders(run, owner, config, &limiter).await?,
        }
        if config.oauth_clients && run.kind == SweepKind::Deep {
            limiter.until_ready().await;
            self.report_oauth_clients(run).await?;
        }
        Ok(())
    }

    /// Renews the sweep's lease: a replica that died mid-sweep frees it soon.
    async fn renew_lease(
        &self,
        run: &ReconcileRun,
        owner: &str,
        config: &ReconcileConfig,
    ) -> Result<(), AppError> {
        let lease = TimeDelta::from_std(config.lease).unwrap_or(TimeDelta::minutes(2));
        let now = self.now();
        if !self
            .store
            .try_lease(&lease_name(run.kind), owner, now, now + lease)
            .await?
        {
            return Err(AppError::Busy(
                "the sweep lease was lost to another replica".into(),
            ));
        }
        Ok(())
    }

    /// One of the sweep's directory calls, in the sweep's lane of the
    /// budget, retried on transient errors (honouring `Retry-After`).
    async fn sweep_call<T, F, Fut>(&self, config: &ReconcileConfig, call: F) -> Result<T, AppError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, DirectoryError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match in_lane(Lane::Sweep, call()).await {
                Ok(answer) => return Ok(answer),
                Err(e @ DirectoryError::Transient { .. }) if attempt < config.page_attempts => {
                    let wait = jit_domain::retry::next_delay(
                        attempt,
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                        rand::random::<f64>(),
                        e.retry_after(),
                    );
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %e, "reconcile: directory call retried");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(AppError::Directory(e)),
            }
        }
    }

    /// Judges one held pair and acts on it; `true` when a finding was
    /// recorded (a strip converge found the role held for, or a report).
    async fn examine(
        &self,
        run: &mut ReconcileRun,
        user: &UserName,
        role: &RoleName,
        config: &ReconcileConfig,
        limiter: &governor::DefaultDirectRateLimiter,
    ) -> Result<bool, AppError> {
        let grants = self
            .store
            .grants(&GrantFilter {
                user: Some(user.clone()),
                role: Some(role.clone()),
                limit: 100,
                ..GrantFilter::default()
            })
            .await?;
        let now = self.now();
        let history = self
            .store
            .pair_history(user, role, now - config.rules.conflict.window)
            .await?;
        let Some(mut judgement) = judge(
            &self.rules(),
            user,
            role,
            &grants,
            &history,
            &config.rules,
            now,
        ) else {
            return Ok(false);
        };
        let mut directory_id = None;
        let action = match (judgement.action, run.dry_run) {
            (FindingAction::Report, _) => FindingOutcome::Reported,
            (FindingAction::StripAfter(at), _) => {
                judgement
                    .detail
                    .push_str(&format!("; next strip not before {at}"));
                FindingOutcome::Deferred
            }
            (FindingAction::Strip, true) => FindingOutcome::WouldRemove,
            (FindingAction::Strip, false) => {
                // A converge costs the target two requests (read, PATCH
                // whose answer is the read-back).
                if let Some(two) = NonZeroU32::new(2) {
                    let _ = limiter.until_n_ready(two).await;
                }
                match self.converge(user, role).await {
                    Ok(report) if report.change == Some(RoleChange::Remove) => {
                        run.actions += 1;
                        directory_id = report.directory_id;
                        FindingOutcome::Removed
                    }
                    // A grant covers it now (activated during the sweep), or
                    // it was already gone: no finding.
                    Ok(_) => return Ok(false),
                    Err(e) => {
                        tracing::warn!(%user, %role, error = %e, "reconcile: could not strip");
                        run.errors += 1;
                        FindingOutcome::Failed
                    }
                }
            }
        };
        // Named once per strip or conflicting-writer alert, not on every
        // sweep that sees a finding left in place (one audit query each).
        let worth_naming = action == FindingOutcome::Removed || judgement.conflict.is_some();
        if worth_naming
            && !run.dry_run
            && let Some(writer) = self.name_writer(user, role, directory_id, now).await
        {
            judgement.detail.push_str(&format!("; granted by {writer}"));
            judgement.granted_by = Some(writer);
        }
        self.record_finding(run, user.as_str(), role, &judgement, action)
            .await?;
        Ok(true)
    }

    /// Who gave `user` the role, as the target's audit trail of their
    /// grants says (where it keeps one): "who through client C at T". A
    /// name, never a reason to act; `None` when the trail cannot say.
    async fn name_writer(
        &self,
        user: &UserName,
        role: &RoleName,
        directory_id: Option<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<String> {
        if !self.directory.has_audit_trail() {
            return None;
        }
        let read = async {
            let id = match directory_id {
                Some(id) => id,
                None => self.directory.find_user(user).await?.id,
            };
            // The realtime query's reach, less a margin.
            let since = now - chrono::TimeDelta::days(13);
            self.directory.grant_changes(&id, since, now, now).await
        };
        match crate::budget::in_lane(crate::budget::Lane::Report, read).await {
            Ok(Some(changes)) => {
                jit_domain::activity::who_granted(&changes, role.as_str()).map(|e| {
                    format!(
                        "{} at {} (Genesys audit trail)",
                        jit_domain::activity::writer_of(e),
                        e.at.format("%Y-%m-%d %H:%M:%S UTC")
                    )
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%user, %role, error = %e, "could not read who granted the role");
                None
            }
        }
    }

    /// One finding: its row and its audit event, in one transaction. A
    /// finding that is an incident (kept in place, or a writer that keeps
    /// coming back) also opens one the first time, and the SOC hears of
    /// that edge once; a conflicting writer's opening is its alert.
    async fn record_finding(
        &self,
        run: &mut ReconcileRun,
        who: &str,
        role: &RoleName,
        judgement: &Judgement,
        action: FindingOutcome,
    ) -> Result<(), AppError> {
        let (kind, detail) = (judgement.kind, &judgement.detail);
        run.findings += 1;
        metrics::counter!("jit_reconcile_findings_total", "kind" => kind.as_str(), "action" => action.as_str())
            .increment(1);
        let finding = FindingRecord {
            run_id: run.id.clone(),
            at: self.now(),
            user: who.to_owned(),
            role: role.to_string(),
            kind: kind.as_str().into(),
            action,
            detail: detail.to_owned(),
        };
        let data = json!({
            "run": run.id, "user": who, "role": role, "kind": finding.kind,
            "action": action, "detail": detail, "dry_run": run.dry_run,
            "granted_by": judgement.granted_by,
        });
        let audit = NewAudit {
            at: finding.at,
            actor: SYSTEM_ACTOR.into(),
            kind: "reconcile_finding",
            grant: None,
            ticket: None,
            data: data.clone(),
        };
        self.store.insert_finding(&finding, audit).await?;
        // A dry run tells the SOC nothing new.
        if run.dry_run || !is_incident(kind, judgement.action) {
            return Ok(());
        }
        let opened = match &judgement.conflict {
            Some(alert) => {
                let mut data = data;
                data["conflict"] = json!(alert);
                NewAudit {
                    at: finding.at,
                    actor: SYSTEM_ACTOR.into(),
                    kind: CONFLICTING_WRITER_EVENT,
                    grant: None,
                    ticket: None,
                    data,
                }
            }
            None => NewAudit {
                at: finding.at,
                actor: SYSTEM_ACTOR.into(),
                kind: INCIDENT_OPENED,
                grant: None,
                ticket: None,
                data: json!({
                    "kind": finding.kind, "user": who, "role": role, "detail": detail,
                    "run": run.id, "sweep": run.kind, "granted_by": judgement.granted_by,
                }),
            },
        };
        let seen = Sighting {
            kind,
            subject: who,
            role: role.as_str(),
            detail,
            at: finding.at,
            run: &run.id,
        };
        self.store.see_incident(&seen, opened).await?;
        Ok(())
    }

    /// After a completed sweep: the incidents it looks for and no longer
    /// sees are over, and the SOC hears so once.
    async fn resolve_incidents(
        &self,
        run: &ReconcileRun,
        config: &ReconcileConfig,
    ) -> Result<(), AppError> {
        let now = self.now();
        let looked_for = looked_for_by(run.kind);
        for incident in self.store.open_incidents().await? {
            let over = looked_for.contains(&incident.kind)
                && incident_over(
                    incident.kind,
                    incident.last_seen_by == run.id,
                    incident.last_seen_at,
                    now,
                    config.rules.conflict.window,
                );
            if !over {
                continue;
            }
            let audit = NewAudit {
                at: now,
                actor: SYSTEM_ACTOR.into(),
                kind: INCIDENT_RESOLVED,
                grant: None,
                ticket: None,
                data: json!({
                    "kind": incident.kind, "user": incident.subject, "role": incident.role,
                    "detail": incident.detail, "opened_at": incident.opened_at,
                    "last_seen_at": incident.last_seen_at, "run": run.id, "sweep": run.kind,
                }),
            };
            self.store.resolve_incident(incident.id, now, audit).await?;
        }
        Ok(())
    }

    /// The incidents open now (the SOC page and the daily digest).
    pub async fn open_incidents(&self) -> Result<Vec<crate::ports::Incident>, AppError> {
        Ok(self.store.open_incidents().await?)
    }

    /// The newest runs, for a caller who may read them (admin keys, the SOC).
    pub async fn view_reconcile_runs(
        &self,
        caller: &jit_domain::Caller,
        limit: u32,
    ) -> Result<Vec<ReconcileRun>, AppError> {
        caller.may_read_sweeps(&self.soc_group)?;
        self.reconcile_runs(limit).await
    }

    /// One run and its findings, for a caller who may read them.
    pub async fn view_reconcile_run(
        &self,
        caller: &jit_domain::Caller,
        id: &str,
    ) -> Result<(ReconcileRun, Vec<FindingRecord>), AppError> {
        caller.may_read_sweeps(&self.soc_group)?;
        self.reconcile_run(id).await
    }

    pub async fn reconcile_runs(&self, limit: u32) -> Result<Vec<ReconcileRun>, AppError> {
        Ok(self.store.runs(limit).await?)
    }

    pub async fn reconcile_run(
        &self,
        id: &str,
    ) -> Result<(ReconcileRun, Vec<FindingRecord>), AppError> {
        let run = self
            .store
            .run(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("reconcile run {id} not found")))?;
        let findings = self.store.findings(id, 10_000).await?;
        Ok((run, findings))
    }
}
