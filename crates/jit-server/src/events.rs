//! Genesys Cloud events relayed by Amazon EventBridge: the gate that checks
//! a delivery (header secret in constant time, allowed source, not seen
//! before) and the one task that follows the hints, so that an event about
//! a user is looked at within seconds. A full queue answers 503 and
//! EventBridge retries; nothing an event says is believed without a read.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jit_app::{App, AppError, ReconcileConfig};
use jit_domain::{Hint, SubjectHint, SweepKind};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

/// The shortest header secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// Hints waiting to be followed; beyond, a delivery is answered 503.
const QUEUE: usize = 1024;
/// Event ids remembered, so a redelivery is answered without a second look.
const REMEMBERED: usize = 10_000;
/// Sweeps an event asks for are at least this far apart (a burst of group
/// or role events costs one sweep, not one each).
const SWEEP_SPACING: Duration = Duration::from_secs(5);

pub struct EventsGate {
    secret: SecretString,
    pub header: String,
    sources: Vec<String>,
    /// The broker's own OAuth client: its writes come back as events too.
    own_client: Option<String>,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    queue: mpsc::Sender<Hint>,
}

/// Why a delivery is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Secret,
    Source(String),
    Busy,
}

impl EventsGate {
    pub fn new(
        secret: SecretString,
        header: String,
        sources: Vec<String>,
        own_client: Option<String>,
    ) -> anyhow::Result<(Self, mpsc::Receiver<Hint>)> {
        anyhow::ensure!(
            secret.expose_secret().len() >= MIN_SECRET_BYTES,
            "`events.secret` must be at least {MIN_SECRET_BYTES} bytes"
        );
        let (queue, hints) = mpsc::channel(QUEUE);
        Ok((
            Self {
                secret,
                header,
                sources,
                own_client,
                seen: Mutex::default(),
                queue,
            },
            hints,
        ))
    }

    pub fn check_secret(&self, given: Option<&[u8]>) -> Result<(), Refused> {
        let expected = self.secret.expose_secret().as_bytes();
        match given {
            Some(given) if bool::from(given.ct_eq(expected)) => Ok(()),
            _ => Err(Refused::Secret),
        }
    }

    pub fn check_source(&self, source: &str) -> Result<(), Refused> {
        if self.sources.is_empty() || self.sources.iter().any(|s| s == source) {
            Ok(())
        } else {
            Err(Refused::Source(source.to_owned()))
        }
    }

    /// Whether `id` was accepted before.
    pub fn seen_before(&self, id: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.0.contains(id)
    }

    /// Remembers an accepted delivery (only once it is queued: a delivery
    /// answered 503 comes back with the same id and must be taken then).
    pub fn remember(&self, id: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *seen;
        if !set.insert(id.to_owned()) {
            return;
        }
        order.push_back(id.to_owned());
        if order.len() > REMEMBERED
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
    }

    pub fn own_client(&self) -> Option<&str> {
        self.own_client.as_deref()
    }

    pub fn enqueue(&self, hint: Hint) -> Result<(), Refused> {
        self.queue.try_send(hint).map_err(|_| Refused::Busy)
    }
}

/// Follows hints until stopped: the users named are examined at once (each
/// once, however many events named them); group and role events ask for a
/// holders sweep, token events for a break-glass login check, each at most
/// every few seconds.
pub async fn follow(
    app: Arc<App>,
    mut hints: mpsc::Receiver<Hint>,
    owner: String,
    config: ReconcileConfig,
    mut stop: oneshot::Receiver<()>,
) {
    let mut last_sweep: Option<Instant> = None;
    loop {
        let first = tokio::select! {
            _ = &mut stop => return,
            hint = hints.recv() => match hint { Some(h) => h, None => return },
        };
        let (mut users, mut sweep, mut logins) = (BTreeSet::new(), false, false);
        let mut take = |hint: Hint| match hint {
            Hint::Subject {
                kind: SubjectHint::User,
                id,
            } => {
                users.insert(id);
            }
            Hint::Subject { .. } => sweep = true,
            Hint::Login { .. } => logins = true,
        };
        take(first);
        while let Ok(more) = hints.try_recv() {
            take(more);
        }
        for user in users {
            if let Err(e) = app.examine_user_now(&user, "event", &config).await {
                tracing::warn!(user_id = %user, error = %e, "an event's user could not be examined");
            }
        }
        if sweep {
            if let Some(at) = last_sweep {
                tokio::time::sleep(SWEEP_SPACING.saturating_sub(at.elapsed())).await;
            }
            last_sweep = Some(Instant::now());
            match app
                .reconcile(SweepKind::Holders, "event", false, &owner, &config)
                .await
            {
                // A sweep is running: it reads the holders after the event.
                Ok(_) | Err(AppError::Busy(_)) => {}
                Err(e) => tracing::warn!(error = %e, "an event's sweep failed"),
            }
        }
        if logins && let Err(e) = app.check_break_glass_logins(&owner).await {
            tracing::warn!(error = %e, "an event's login check failed");
        }
    }
}
