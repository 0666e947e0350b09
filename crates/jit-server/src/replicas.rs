//! Replicas sharing one OAuth client split its budget: each keeps a lease of
//! its own and paces at the pace over the live leases.

use std::sync::Arc;
use std::time::Duration;

use jit_app::Clock;

/// How often a replica renews its presence, and how long it counts for.
pub(crate) const REPLICA_BEAT: Duration = Duration::from_secs(2);
pub(crate) const REPLICA_LEASE: Duration = Duration::from_secs(15);

/// Keeps this replica counted among the live ones and its budget at
/// `pace` over their number, until `stop`; then leaves the count at once.
pub(crate) async fn share_budget(
    store: Arc<dyn jit_app::Store>,
    clock: Arc<dyn Clock>,
    owner: String,
    budget: Arc<jit_app::Budget>,
    pace: u32,
    stop: impl std::future::Future<Output = ()>,
) {
    const PREFIX: &str = "replica:";
    let name = format!("{PREFIX}{owner}");
    let lease =
        chrono::TimeDelta::from_std(REPLICA_LEASE).unwrap_or(chrono::TimeDelta::seconds(15));
    tokio::pin!(stop);
    loop {
        let now = clock.now();
        let live = match store.try_lease(&name, &owner, now, now + lease).await {
            Ok(_) => store.live_leases(PREFIX, now).await,
            Err(e) => Err(e),
        };
        match live {
            Ok(n) => {
                let share = (pace / n.max(1)).max(1);
                if budget.pace_per_minute() != Some(share) {
                    tracing::info!(
                        replicas = n,
                        requests_per_minute = share,
                        "directory budget shared"
                    );
                    budget.set_per_minute(share);
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting live replicas failed; the pace stays"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REPLICA_BEAT) => {}
            _ = &mut stop => break,
        }
    }
    if let Err(e) = store.release_lease(&name, &owner).await {
        tracing::warn!(error = %e, "leaving the replica count failed; it lapses by itself");
    }
}
