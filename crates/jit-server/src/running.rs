//! A started broker and its stop order: schedules, then accepting, then the
//! jobs and the mailer, then the hand-back of leases, then the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use jit_app::App;
use tokio::sync::{Notify, oneshot};

use crate::sandbox_servicenow;

/// A started broker: HTTP server and worker.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub worker_wake: Arc<Notify>,
    pub(crate) server: actix_web::dev::ServerHandle,
    /// `None` once [`Running::stopped`] saw it end.
    pub(crate) server_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub(crate) worker_stop: oneshot::Sender<()>,
    pub(crate) worker_task: tokio::task::JoinHandle<()>,
    /// Who this replica is in every lease it takes.
    pub(crate) owner: String,
    pub(crate) scheduler: Option<tokio_cron_scheduler::JobScheduler>,
    /// The directory budget, when its pace is shared among live replicas.
    pub shared_budget: Option<Arc<jit_app::Budget>>,
    /// Held while serving a SQLite file.
    pub(crate) _serve_lock: Option<jit_store::ServeLock>,
    /// The mailer and the SIEM feeds: stopped with the broker.
    pub(crate) background: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    /// `serve --dev`: the sandbox ServiceNow's changes (tests edit them).
    pub sandbox_changes: Option<sandbox_servicenow::ChangeBook>,
}

impl Running {
    /// Waits until the HTTP server stops by itself (it does not handle signals).
    pub async fn stopped(&mut self) {
        if let Some(task) = &mut self.server_task {
            let _ = task.await;
            self.server_task = None;
        }
    }

    /// Stops gracefully, as on SIGTERM: no new schedule fires, no connection
    /// or job is taken; jobs and the email in flight finish within their
    /// bounds (`worker.shutdown_grace_secs` for jobs); everything still
    /// leased to this replica is handed back so another one takes it at
    /// once; then requests in flight get 5 s more.
    pub async fn stop(mut self) {
        tracing::info!("stopping");
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.shutdown().await;
        }
        // No new connection is accepted, but the HTTP server stops last.
        // Each of its workers runs its own runtime, and a PostgreSQL or HTTP
        // connection a request opened lives on it: whoever uses that
        // connection while the runtime ends loses the call. So the jobs, the
        // mailer and the hand-back all finish while those runtimes are up.
        self.server.pause().await;
        let _ = self.worker_stop.send(());
        let background = self.background.drain(..).map(|(stop, task)| {
            let _ = stop.send(());
            task
        });
        let background = futures_util::future::join_all(background);
        let _ = tokio::join!(&mut self.worker_task, background);
        hand_back(&self.app, &self.owner).await;
        self.server.stop(true).await;
        if let Some(task) = self.server_task.take() {
            let _ = task.await;
        }
        tracing::info!("stopped");
    }
}

/// Everything still leased to this replica goes back in one
/// transaction. A request still in flight cannot claim a job (the
/// worker has stopped); a sweep one started loses its lease and may
/// overlap another replica's for at most the 5 s the requests have
/// left, which the re-decision before every write keeps harmless.
pub(crate) async fn hand_back(app: &App, owner: &str) {
    match app.store.release_owner(owner).await {
        Ok(released) => tracing::info!(
            jobs = released.job_ids.len(),
            job_ids = ?released.job_ids,
            outbox = released.outbox,
            leases = released.leases,
            activity = released.activity,
            "leases handed back"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "handing back leases failed; they lapse by themselves")
        }
    }
}
