//! Feeds every SOC event to a SIEM endpoint, in audit order, at least once.
//!
//! The audit log is the feed's outbox: each event is written in its own
//! transaction, and an endpoint's cursor (the last event delivered) only
//! moves after the receiver accepted the next one. A receiver that is down
//! holds the feed back with growing delays and gets everything in order once
//! it returns; each event carries a stable id to de-duplicate the rare repeat
//! after a crash between acceptance and the cursor's move. One replica feeds
//! an endpoint at a time (a lease).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use jit_domain::retry::next_delay;

use crate::evidence::AUDIT_CHECKPOINT;
use crate::ports::{Clock, EventSink, NotifyError, Store, StoreError, notifies};

#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Events read from the audit log at a time.
    pub batch: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// A receiver that refuses one event this many times (4xx) has it
    /// skipped, so that one bad event never stops the feed.
    pub max_refusals: u32,
    pub idle: Duration,
    pub lease: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            max_refusals: 5,
            idle: Duration::from_secs(2),
            lease: Duration::from_secs(60),
        }
    }
}

/// What the SIEM gets: every SOC event, and the audit chain's signed
/// checkpoints (a copy off the broker's own database).
pub fn feeds(kind: &str, data: &serde_json::Value) -> bool {
    notifies(kind, data) || kind == AUDIT_CHECKPOINT
}

pub struct Feed {
    store: Arc<dyn Store>,
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    owner: String,
    config: FeedConfig,
}

impl Feed {
    pub fn new(
        store: Arc<dyn Store>,
        sink: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        owner: String,
        config: FeedConfig,
    ) -> Self {
        Self {
            store,
            sink,
            clock,
            owner,
            config,
        }
    }

    fn lease_name(&self) -> String {
        format!("feed:{}", self.sink.name())
    }

    /// Delivers what is due now, in order; answers how many events the
    /// receiver accepted. Stops at the first one it must try again later.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let name = self.sink.name().to_owned();
        let now = self.clock.now();
        let lease = TimeDelta::from_std(self.config.lease).unwrap_or(TimeDelta::minutes(1));
        if !self
            .store
            .try_lease(&self.lease_name(), &self.owner, now, now + lease)
            .await?
        {
            return Ok(0);
        }
        let mut delivered = 0;
        loop {
            let cursor = self.store.feed_cursor(&name).await?;
            if cursor.next_attempt_at > self.clock.now() {
                return Ok(delivered);
            }
            let events = self
                .store
                .audit_events(cursor.last_seq, self.config.batch)
                .await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(delivered);
            };
            let Some(event) = events.iter().find(|e| self.sink.wants(&e.kind, &e.data)) else {
                // Nothing here for the SOC: move past the whole batch.
                self.store
                    .advance_feed(&name, last, self.clock.now())
                    .await?;
                continue;
            };
            let result = self.sink.send(event, self.clock.now()).await;
            let outcome = match &result {
                Ok(()) => "delivered",
                Err(NotifyError::Transient(_) | NotifyError::Throttled(..)) => "deferred",
                Err(NotifyError::Permanent(_)) => "refused",
            };
            metrics::counter!("jit_siem_deliveries_total", "endpoint" => name.clone(), "result" => outcome)
                .increment(1);
            match result {
                Ok(()) => {
                    delivered += 1;
                    self.store
                        .advance_feed(&name, event.seq, self.clock.now())
                        .await?;
                }
                Err(NotifyError::Permanent(e))
                    if cursor.attempts + 1 >= self.config.max_refusals =>
                {
                    tracing::error!(endpoint = %name, seq = event.seq, error = %e, "SIEM feed: the receiver keeps refusing this event; skipped");
                    self.store
                        .advance_feed(&name, event.seq, self.clock.now())
                        .await?;
                }
                Err(error) => {
                    let (e, asked) = match error {
                        NotifyError::Throttled(e, after) => (e, Some(after)),
                        NotifyError::Transient(e) | NotifyError::Permanent(e) => (e, None),
                    };
                    let delay = next_delay(
                        cursor.attempts + 1,
                        self.config.retry_base,
                        self.config.retry_cap,
                        rand::random::<f64>(),
                        asked,
                    );
                    let next = self.clock.now()
                        + TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(30));
                    tracing::warn!(endpoint = %name, seq = event.seq, attempts = cursor.attempts + 1, error = %e, "SIEM feed deferred");
                    self.store.defer_feed(&name, next, &e).await?;
                    return Ok(delivered);
                }
            }
        }
    }

    /// Runs until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.run_due().await {
                tracing::error!(endpoint = %self.sink.name(), error = %e, "SIEM feed: store error");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.config.idle) => {}
            }
        }
    }
}
