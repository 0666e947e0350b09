//! Runs durable jobs: claims due rows under a lease, runs them, and sleeps
//! until the next one is due (no fixed polling interval).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use jit_domain::retry::next_delay;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::app::App;
use crate::budget::{Lane, in_lane};
use crate::ports::{Job, StoreError};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once (directory calls in flight).
    pub concurrency: usize,
    /// How long a claimed job stays ours; after a crash it is claimed again then.
    pub lease: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Longest sleep without looking at the jobs table (other replicas may add jobs).
    pub max_idle: Duration,
    /// While the directory is down, how often one probe asks whether it is
    /// back (then every waiting job runs at once instead of waiting out its
    /// own back-off).
    pub probe_interval: Duration,
    /// On shutdown, how long jobs in flight may take to finish; their
    /// leases cover any cut short.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            lease: Duration::from_secs(30),
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(60),
            max_idle: Duration::from_secs(5),
            probe_interval: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl WorkerConfig {
    /// No more jobs in flight than a budget of `per_minute` directory
    /// requests serves well inside one attempt: a job queued behind the
    /// others for the budget must not run out of time and retry, spending
    /// the budget twice. Each job is counted at two requests (a read and a
    /// write), with half the attempt kept spare for sweeps and retries.
    pub fn within_budget(mut self, per_minute: Option<u32>) -> Self {
        self.concurrency = self.jobs_within(per_minute);
        self
    }

    /// How many jobs may be in flight at a pace of `per_minute` (see
    /// [`WorkerConfig::within_budget`]); at most `concurrency`, at least 1.
    pub fn jobs_within(&self, per_minute: Option<u32>) -> usize {
        let cap = match per_minute {
            Some(per_minute) => {
                let per_attempt = f64::from(per_minute) / 60.0 * self.attempt_time().as_secs_f64();
                (per_attempt / 2.0 / 2.0).floor() as usize
            }
            None => usize::MAX,
        };
        self.concurrency.min(cap).max(1)
    }

    /// An attempt must finish inside its lease, or another worker could
    /// claim the job too.
    fn attempt_time(&self) -> Duration {
        self.lease.mul_f64(0.8)
    }
}

pub struct Worker {
    app: Arc<App>,
    owner: String,
    config: WorkerConfig,
    wake: Arc<Notify>,
    /// Set when a job found the directory unreachable; cleared by a probe.
    target_down: Arc<AtomicBool>,
    pulse: WorkerPulse,
    /// A budget whose pace changes as replicas come and go: the jobs held at
    /// once follow this replica's share, not the whole client's.
    shared_budget: Option<Arc<crate::Budget>>,
}

/// How a running worker is doing, for readiness: when its loop last went
/// round, and whether it finds the directory down.
#[derive(Clone)]
pub struct WorkerPulse {
    since: std::time::Instant,
    /// Milliseconds after `since` of the loop's last round (0: not started).
    beat: Arc<std::sync::atomic::AtomicU64>,
    target_down: Arc<AtomicBool>,
    max_idle: Duration,
}

impl WorkerPulse {
    fn beat(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.store(ms.max(1), Ordering::SeqCst);
    }

    /// The loop went round within three of its longest sleeps.
    pub fn alive(&self) -> bool {
        let beat = self.beat.load(Ordering::SeqCst);
        beat > 0
            && self
                .since
                .elapsed()
                .saturating_sub(Duration::from_millis(beat))
                < self.max_idle.saturating_mul(3).max(Duration::from_secs(15))
    }

    /// The last job found the directory unreachable (a probe clears it).
    pub fn target_down(&self) -> bool {
        self.target_down.load(Ordering::SeqCst)
    }
}

impl Worker {
    pub fn new(app: Arc<App>, owner: String, config: WorkerConfig) -> Self {
        let target_down = Arc::new(AtomicBool::new(false));
        let pulse = WorkerPulse {
            since: std::time::Instant::now(),
            beat: Arc::default(),
            target_down: target_down.clone(),
            max_idle: config.max_idle,
        };
        Self {
            app,
            owner,
            config,
            wake: Arc::new(Notify::new()),
            target_down,
            pulse,
            shared_budget: None,
        }
    }

    /// Holds no more jobs than `budget`'s current pace serves (see
    /// [`WorkerConfig::within_budget`]); for a pace shared among replicas.
    pub fn following(mut self, budget: Arc<crate::Budget>) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// Jobs this worker may hold now.
    fn capacity(&self) -> usize {
        match &self.shared_budget {
            Some(budget) => self.config.jobs_within(budget.pace_per_minute()),
            None => self.config.concurrency.max(1),
        }
    }

    /// Readiness reads this while the worker runs.
    pub fn pulse(&self) -> WorkerPulse {
        self.pulse.clone()
    }

    /// Notify this after writing a job that is due now, so it runs at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn lease(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.lease).unwrap_or(TimeDelta::seconds(30))
    }

    /// Runs every job due now, one batch after another, until none is due.
    /// Tests drive time with a manual clock and call this.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let mut ran = 0;
        loop {
            let now = self.app.now();
            let limit = self.config.concurrency.max(1) as u32;
            let jobs = self
                .app
                .store
                .claim_jobs(&self.owner, now, now + self.lease(), limit)
                .await?;
            if jobs.is_empty() {
                return Ok(ran);
            }
            ran += jobs.len();
            let mut set = JoinSet::new();
            for job in jobs {
                let app = self.app.clone();
                let (owner, config) = (self.owner.clone(), self.config.clone());
                let down = self.target_down.clone();
                set.spawn(async move { process(&app, &owner, &config, &down, job).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// The long-running loop, until `shutdown` resolves; jobs in flight are
    /// then given a short grace period, and their leases cover the rest.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(owner = %self.owner, concurrency = self.config.concurrency, "worker started");
        loop {
            self.pulse.beat();
            while tasks.try_join_next().is_some() {}
            if self.target_down.load(Ordering::SeqCst) && !self.probe().await {
                // Still down: nothing would get through; ask again shortly.
                tokio::select! {
                    _ = tokio::time::sleep(self.config.probe_interval) => {}
                    _ = &mut shutdown => break,
                }
                continue;
            }
            let in_flight = self.config.concurrency.max(1) - permits.available_permits();
            let free = self.capacity().saturating_sub(in_flight);
            let mut wait = self.config.max_idle;
            if free > 0 {
                let now = self.app.now();
                match self
                    .app
                    .store
                    .claim_jobs(&self.owner, now, now + self.lease(), free as u32)
                    .await
                {
                    Ok(jobs) => {
                        let full = jobs.len() == free;
                        for job in jobs {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                break;
                            };
                            let app = self.app.clone();
                            let (owner, config, wake) =
                                (self.owner.clone(), self.config.clone(), self.wake.clone());
                            let down = self.target_down.clone();
                            tasks.spawn(async move {
                                process(&app, &owner, &config, &down, job).await;
                                drop(permit);
                                wake.notify_one();
                            });
                        }
                        if full {
                            continue;
                        }
                        wait = self.until_next_due().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "claiming jobs failed");
                        wait = Duration::from_secs(1);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = &mut shutdown => break,
            }
        }
        // Claim nothing more; let what is in flight finish within the grace.
        let in_flight = tasks.len();
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    tracing::warn!(left = tasks.len(), "jobs still running after the shutdown grace: stopped");
                    tasks.abort_all();
                    // Only once every task is gone may their jobs be handed
                    // to another replica (the caller releases the leases).
                    while tasks.join_next().await.is_some() {}
                    break
                }
            }
        }
        tracing::info!(owner = %self.owner, in_flight, "worker stopped");
    }

    /// One request to the directory, first in line: is it back? If so,
    /// every job waiting out a back-off is due now.
    async fn probe(&self) -> bool {
        let answer = in_lane(Lane::Revocation, self.app.directory.list_users(1, 1)).await;
        match answer {
            Err(e) if e.target_unavailable() => false,
            _ => {
                self.target_down.store(false, Ordering::SeqCst);
                match self.app.store.release_retries(self.app.now()).await {
                    Ok(n) => tracing::info!(
                        released = n,
                        "the directory answers again: waiting jobs run now"
                    ),
                    Err(e) => tracing::error!(error = %e, "releasing waiting jobs failed"),
                }
                true
            }
        }
    }

    async fn until_next_due(&self) -> Duration {
        match self.app.store.next_due().await {
            Ok(Some(due)) => (due - self.app.now())
                .to_std()
                // Round up so we never wake a hair early and spin.
                .map(|d| d + Duration::from_millis(1))
                .unwrap_or(Duration::ZERO)
                .min(self.config.max_idle),
            Ok(None) => self.config.max_idle,
            Err(e) => {
                tracing::error!(error = %e, "reading the next due job failed");
                Duration::from_secs(1)
            }
        }
    }
}

async fn process(app: &App, owner: &str, config: &WorkerConfig, down: &AtomicBool, job: Job) {
    let outcome = tokio::time::timeout(config.attempt_time(), app.run_job(&job)).await;
    let now = app.now();
    // The pair's next wake, from its grants as they are now; a job that
    // cannot read them is tried again rather than lose that wake.
    let next = match app.next_job(&job.user, &job.role).await {
        Ok(next) => next,
        Err(e) => {
            let written = retry(app, owner, config, &job, &e.to_string(), None, None).await;
            if let Err(e) = written {
                tracing::error!(job = job.id, error = %e, "recording a job's outcome failed");
            }
            return;
        }
    };
    let written = match outcome {
        Ok(Ok(report)) => {
            if let Some(change) = report.change {
                tracing::info!(job = job.id, user = %job.user, role = %job.role, change = ?report.change, "converged");
                // Due → verified: what an engineer (or an auditor) waits for.
                let latency = (now - job.due_at).to_std().unwrap_or_default();
                let name = match change {
                    jit_domain::RoleChange::Add => "jit_activation_latency_seconds",
                    jit_domain::RoleChange::Remove => "jit_revocation_latency_seconds",
                };
                metrics::histogram!(name).record(latency.as_secs_f64());
            }
            app.store
                .complete_job(&job, owner, now, next.as_ref())
                .await
        }
        Ok(Err(e)) if e.is_permanent() => {
            metrics::counter!("jit_jobs_failed_total").increment(1);
            tracing::error!(job = job.id, user = %job.user, role = %job.role, error = %e, "job failed permanently");
            app.store
                .fail_job(job.id, owner, now, &e.to_string(), next.as_ref())
                .await
        }
        Ok(Err(e)) => {
            if e.target_unavailable() {
                down.store(true, Ordering::SeqCst);
            }
            let (error, after) = (e.to_string(), e.retry_after());
            retry(app, owner, config, &job, &error, after, next.as_ref()).await
        }
        Err(_) => {
            down.store(true, Ordering::SeqCst);
            retry(
                app,
                owner,
                config,
                &job,
                "attempt timed out",
                None,
                next.as_ref(),
            )
            .await
        }
    };
    if let Err(e) = written {
        // The lease runs out and the job is claimed again: nothing is lost.
        tracing::error!(job = job.id, error = %e, "recording a job's outcome failed");
    }
}

async fn retry(
    app: &App,
    owner: &str,
    config: &WorkerConfig,
    job: &Job,
    error: &str,
    retry_after: Option<Duration>,
    next: Option<&crate::ports::NewJob>,
) -> Result<(), StoreError> {
    metrics::counter!("jit_job_retries_total").increment(1);
    let delay = next_delay(
        job.attempts,
        config.retry_base,
        config.retry_cap,
        rand::random::<f64>(),
        retry_after,
    );
    tracing::warn!(job = job.id, user = %job.user, role = %job.role, attempts = job.attempts,
                   retry_in_ms = delay.as_millis() as u64, error, "job will be retried");
    let backed_off = app.now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(60));
    // A change of the pair due before the back-off ends is not held back by it.
    let at = jit_domain::retry::next_attempt(backed_off, next.map(|n| n.due_at), app.now());
    app.store.retry_job(job.id, owner, at, error).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_in_flight_fit_the_directory_budget() {
        let config = WorkerConfig::default(); // 32 at once, 30 s lease
        // 285 a minute (Genesys's 300 less the headroom): 4.75 a second for
        // 24 s is 114 requests, 57 jobs, half of them kept spare.
        assert_eq!(config.clone().within_budget(Some(285)).concurrency, 28);
        assert_eq!(config.clone().within_budget(Some(60)).concurrency, 6);
        assert_eq!(config.clone().within_budget(Some(1)).concurrency, 1);
        assert_eq!(config.clone().within_budget(Some(6000)).concurrency, 32);
        assert_eq!(config.clone().within_budget(None).concurrency, 32);
        // Three replicas sharing 285 a minute: each holds a third as many.
        assert_eq!(config.within_budget(Some(285)).jobs_within(Some(95)), 9);
    }
}
