//! The directory's request budget: Genesys Cloud gives each OAuth client 300
//! requests a minute, and every call the broker makes spends it. One budget
//! per directory client, shared by the worker, the reconciler and the
//! reports, with priority lanes (a sweep never takes a request slot a waiting
//! revocation could have), and fed by the target's own 429 answers so that
//! one refusal slows every caller, not only the one that got it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Who is asking, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// Taking a privileged role away (expiry, drop, strip).
    Revocation = 0,
    /// Adding a role for a grant that starts.
    Activation = 1,
    /// Listing the directory.
    Sweep = 2,
    /// Reports (OAuth clients).
    Report = 3,
}

const LANES: usize = 4;

tokio::task_local! {
    /// The lane of the directory calls made by the current task.
    static LANE: Lane;
}

/// Runs `fut` with its directory calls in `lane`.
pub async fn in_lane<F: std::future::Future>(lane: Lane, fut: F) -> F::Output {
    LANE.scope(lane, fut).await
}

/// The lane of the current task's directory calls (activation by default).
pub fn current_lane() -> Lane {
    LANE.try_with(|l| *l).unwrap_or(Lane::Activation)
}

/// A token bucket with priority lanes; `unlimited` spends nothing.
pub struct Budget {
    limit: Option<Limit>,
}

struct Limit {
    per_second: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    tokens: f64,
    refilled_at: Instant,
    /// A 429 said to wait: nobody asks before this.
    paused_until: Option<Instant>,
    /// Callers waiting, per lane: a lane takes a token only when no more
    /// urgent lane is waiting.
    waiting: [u32; LANES],
    /// When each lane last took a token: a more urgent lane still at work
    /// (a converge between its read and its write) is not waiting, but a
    /// less urgent one yields to it for [`YIELD`] all the same.
    taken_at: [Option<Instant>; LANES],
}

/// Counts a caller as waiting in its lane until dropped (also when the
/// waiting future is cancelled).
struct Waiting<'a> {
    limit: &'a Limit,
    lane: usize,
    counted: bool,
}

impl Waiting<'_> {
    fn count(&mut self, state: &mut State) {
        if !self.counted {
            state.waiting[self.lane] += 1;
            self.counted = true;
        }
    }

    fn uncount(&mut self, state: &mut State) {
        if self.counted {
            state.waiting[self.lane] -= 1;
            self.counted = false;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut state = self.limit.lock();
            state.waiting[self.lane] -= 1;
        }
    }
}

impl Limit {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long a less urgent lane stays out of the way of a more urgent lane
/// that took a token: long enough to cover a converge's read, decision and
/// write.
const YIELD: Duration = Duration::from_millis(250);

/// The longest a waiter sleeps before looking again (a more urgent waiter
/// may have left, a pause may have been lifted).
const RECHECK: Duration = Duration::from_millis(50);

impl Budget {
    pub fn unlimited() -> Self {
        Self { limit: None }
    }

    /// `per_minute` requests a minute, at most `burst` at once (at least 1).
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            limit: Some(Limit {
                per_second: f64::from(per_minute.max(1)) / 60.0,
                burst,
                state: Mutex::new(State {
                    tokens: burst,
                    refilled_at: Instant::now(),
                    paused_until: None,
                    waiting: [0; LANES],
                    taken_at: [None; LANES],
                }),
            }),
        }
    }

    /// Waits until `lane` may make one request, and spends it.
    pub async fn acquire(&self, lane: Lane) {
        let Some(limit) = &self.limit else {
            return;
        };
        let mut me = Waiting {
            limit,
            lane: lane as usize,
            counted: false,
        };
        loop {
            let wait = {
                let mut s = limit.lock();
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(s.refilled_at).as_secs_f64();
                s.tokens = (s.tokens + elapsed * limit.per_second).min(limit.burst);
                s.refilled_at = now;
                // Sweeps and reports spend only the steady rate: the burst
                // stays for revocations and activations that arrive mid-sweep.
                let needed = if lane >= Lane::Sweep {
                    limit.burst
                } else {
                    1.0
                };
                let more_urgent = s.waiting[..lane as usize].iter().any(|n| *n > 0)
                    || s.taken_at[..lane as usize]
                        .iter()
                        .flatten()
                        .any(|at| now.saturating_duration_since(*at) < YIELD);
                match s.paused_until {
                    Some(until) if until > now => {
                        me.count(&mut s);
                        until - now
                    }
                    _ if s.tokens >= needed && !more_urgent => {
                        s.tokens -= 1.0;
                        s.taken_at[lane as usize] = Some(now);
                        me.uncount(&mut s);
                        return;
                    }
                    _ => {
                        me.count(&mut s);
                        let missing = (needed - s.tokens).max(0.0);
                        Duration::from_secs_f64(missing / limit.per_second)
                    }
                }
            };
            tokio::time::sleep(wait.clamp(Duration::from_millis(1), RECHECK)).await;
        }
    }

    /// The target refused for its rate (429): every lane waits `for_` from
    /// now, and the bucket starts again empty.
    pub fn back_off(&self, for_: Duration) {
        let Some(limit) = &self.limit else {
            return;
        };
        let mut s = limit.lock();
        let until = Instant::now() + for_;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
        s.tokens = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn the_budget_spaces_requests_after_its_burst() {
        let budget = Budget::per_minute(60, 2);
        let t0 = Instant::now();
        for _ in 0..4 {
            budget.acquire(Lane::Activation).await;
        }
        // Two at once, then one a second.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_revocation_goes_before_a_waiting_sweep() {
        let budget = Arc::new(Budget::per_minute(60, 1));
        budget.acquire(Lane::Sweep).await; // the burst is spent
        let order = Arc::new(Mutex::new(Vec::new()));
        let sweep = {
            let (b, o) = (budget.clone(), order.clone());
            tokio::spawn(async move {
                b.acquire(Lane::Sweep).await;
                o.lock().unwrap().push("sweep");
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await; // the sweep waits first
        let revoke = {
            let (b, o) = (budget.clone(), order.clone());
            tokio::spawn(async move {
                b.acquire(Lane::Revocation).await;
                o.lock().unwrap().push("revocation");
            })
        };
        revoke.await.unwrap();
        sweep.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["revocation", "sweep"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_yields_to_a_revocation_still_at_work() {
        let budget = Budget::per_minute(6000, 100);
        budget.acquire(Lane::Revocation).await; // a converge read; its write follows
        let t0 = Instant::now();
        budget.acquire(Lane::Sweep).await;
        assert!(t0.elapsed() >= YIELD, "{:?}", t0.elapsed());
        let t1 = Instant::now();
        budget.acquire(Lane::Revocation).await;
        assert_eq!(
            t1.elapsed(),
            Duration::ZERO,
            "the revocation never waits for the sweep"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_leaves_the_burst_to_revocations() {
        let budget = Budget::per_minute(60, 3);
        // A sweep at full speed never takes the last of the burst...
        let t0 = Instant::now();
        for _ in 0..3 {
            budget.acquire(Lane::Sweep).await;
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(1990),
            "{:?}",
            t0.elapsed()
        );
        // ...so revocations arriving now find it (after the yield window).
        tokio::time::sleep(YIELD).await;
        let t1 = Instant::now();
        for _ in 0..2 {
            budget.acquire(Lane::Revocation).await;
        }
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_lane() {
        let budget = Budget::per_minute(6000, 100);
        budget.back_off(Duration::from_secs(2));
        let t0 = Instant::now();
        budget.acquire(Lane::Revocation).await;
        assert!(t0.elapsed() >= Duration::from_secs(2));
        let unlimited = Budget::unlimited();
        unlimited.back_off(Duration::from_secs(60));
        let t1 = Instant::now();
        unlimited.acquire(Lane::Report).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
