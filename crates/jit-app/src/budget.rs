//! The directory's request budget: Genesys Cloud gives each OAuth client 300
//! requests a minute, and every call the broker makes spends it. One budget
//! per directory client, shared by the worker, the reconciler and the
//! reports, with priority lanes (a sweep never takes a request slot a waiting
//! revocation could have), and fed by the target's own 429 answers so that
//! one refusal slows every caller, not only the one that got it.
//!
//! Within a lane, callers are served in the order their [`Turn`] began: a
//! converge keeps one turn for its read and its write, so a write already
//! under way goes before the reads of converges that started after it, and no
//! caller waits longer than the callers ahead of it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
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

/// A place in the budget's queue: the lane, then when the work began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Turn {
    pub lane: Lane,
    order: u64,
}

static NEXT_ORDER: AtomicU64 = AtomicU64::new(0);

impl Turn {
    /// A turn behind every turn begun before it in the same lane.
    pub fn begin(lane: Lane) -> Self {
        Self {
            lane,
            order: NEXT_ORDER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same place in the queue, in another lane (a converge whose
    /// decision changed between two of its writes).
    pub fn in_lane(self, lane: Lane) -> Self {
        Self { lane, ..self }
    }
}

tokio::task_local! {
    /// The turn of the directory calls made by the current task.
    static TURN: Turn;
}

/// Runs `fut` with its directory calls on `turn`.
pub async fn on_turn<F: std::future::Future>(turn: Turn, fut: F) -> F::Output {
    TURN.scope(turn, fut).await
}

/// Runs `fut` with its directory calls in `lane`, on a turn begun now.
pub async fn in_lane<F: std::future::Future>(lane: Lane, fut: F) -> F::Output {
    on_turn(Turn::begin(lane), fut).await
}

/// The current task's turn (an activation begun now by default).
pub fn current_turn() -> Turn {
    TURN.try_with(|t| *t)
        .unwrap_or_else(|_| Turn::begin(Lane::Activation))
}

/// A token bucket with priority lanes; `unlimited` spends nothing.
pub struct Budget {
    limit: Option<Limit>,
}

struct Limit {
    /// The pace and burst of the whole client, as built; a share of both is
    /// what one replica among several may spend.
    full_per_minute: f64,
    full_burst: f64,
    state: Mutex<State>,
    /// Told whenever the head of the queue may have changed.
    moved: Notify,
}

/// A waiter's key: its turn, then a tie-breaker unique to the call.
type Key = (Turn, u64);

struct State {
    /// The pace; replicas sharing one client change it as they come and go.
    per_second: f64,
    /// The most taken at once: this replica's share of the client's burst,
    /// so that the replicas' bursts together stay within the target's.
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
    /// A 429 said to wait: nobody asks before this.
    paused_until: Option<Instant>,
    /// Callers waiting, most urgent first; only the first may take a token.
    queue: BTreeSet<Key>,
    next_call: u64,
    /// When each lane last took a token: a more urgent lane still at work
    /// (a converge between its read and its write) is not waiting, but a
    /// less urgent one yields to it for [`YIELD`] all the same.
    taken_at: [Option<Instant>; LANES],
}

/// Keeps a caller in the queue until dropped (also when the waiting future
/// is cancelled), and tells the others when it leaves.
struct Queued<'a> {
    limit: &'a Limit,
    key: Key,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.limit.lock().queue.remove(&self.key);
        self.limit.moved.notify_waiters();
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

/// The longest a waiter sleeps without looking again (a pause may have been
/// lifted); the queue's changes wake it sooner.
const RECHECK: Duration = Duration::from_millis(500);

impl Budget {
    pub fn unlimited() -> Self {
        Self { limit: None }
    }

    /// `per_minute` requests a minute, at most `burst` at once (at least 1).
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let per_minute = f64::from(per_minute.max(1));
        Self {
            limit: Some(Limit {
                full_per_minute: per_minute,
                full_burst: burst,
                state: Mutex::new(State {
                    per_second: per_minute / 60.0,
                    burst,
                    tokens: burst,
                    refilled_at: Instant::now(),
                    paused_until: None,
                    queue: BTreeSet::new(),
                    next_call: 0,
                    taken_at: [None; LANES],
                }),
                moved: Notify::new(),
            }),
        }
    }

    /// Waits until `turn` may make one request, and spends it.
    pub async fn acquire(&self, turn: Turn) {
        let Some(limit) = &self.limit else {
            return;
        };
        let lane = turn.lane;
        let queued = {
            let mut s = limit.lock();
            let key = (turn, s.next_call);
            s.next_call += 1;
            s.queue.insert(key);
            Queued { limit, key }
        };
        loop {
            // Listen before looking, so a change between the two is not lost.
            let moved = limit.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let wait = {
                let mut s = limit.lock();
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(s.refilled_at).as_secs_f64();
                s.tokens = (s.tokens + elapsed * s.per_second).min(s.burst);
                s.refilled_at = now;
                // Sweeps and reports spend only the steady rate: the burst
                // stays for revocations and activations that arrive mid-sweep.
                let needed = if lane >= Lane::Sweep { s.burst } else { 1.0 };
                let yield_for = s.taken_at[..lane as usize]
                    .iter()
                    .flatten()
                    .map(|at| YIELD.saturating_sub(now.saturating_duration_since(*at)))
                    .max()
                    .unwrap_or(Duration::ZERO);
                let first = s.queue.first() == Some(&queued.key);
                match s.paused_until {
                    _ if !first => RECHECK,
                    Some(until) if until > now => until - now,
                    _ if yield_for > Duration::ZERO => yield_for,
                    _ if s.tokens >= needed => {
                        s.tokens -= 1.0;
                        metrics::gauge!("jit_directory_budget_tokens").set(s.tokens);
                        s.taken_at[lane as usize] = Some(now);
                        drop(s);
                        drop(queued); // the next in line looks now
                        return;
                    }
                    _ => {
                        let missing = needed - s.tokens;
                        Duration::from_secs_f64(missing / s.per_second)
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.clamp(Duration::from_millis(1), RECHECK)) => {}
                _ = moved => {}
            }
        }
    }

    /// Requests a minute now; `None`: unlimited.
    pub fn pace_per_minute(&self) -> Option<u32> {
        let limit = self.limit.as_ref()?;
        let per_second = limit.lock().per_second;
        Some((per_second * 60.0).round() as u32)
    }

    /// A new pace (this replica's share changed), with the same share of
    /// the burst (rounded down, at least 1); unlimited stays unlimited.
    pub fn set_per_minute(&self, per_minute: u32) {
        if let Some(limit) = &self.limit {
            let per_minute = f64::from(per_minute.max(1));
            let share = (per_minute / limit.full_per_minute).min(1.0);
            let mut s = limit.lock();
            s.per_second = per_minute / 60.0;
            s.burst = (limit.full_burst * share).floor().max(1.0);
            s.tokens = s.tokens.min(s.burst);
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
            budget.acquire(Turn::begin(Lane::Activation)).await;
        }
        // Two at once, then one a second.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_s_share_of_the_pace_takes_the_same_share_of_the_burst() {
        let budget = Budget::per_minute(240, 4);
        budget.set_per_minute(120); // two replicas
        let t0 = Instant::now();
        for _ in 0..3 {
            budget.acquire(Turn::begin(Lane::Revocation)).await;
        }
        // Two at once (half the burst), then one every half second.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(490) && took < Duration::from_millis(600),
            "{took:?}"
        );
        budget.set_per_minute(80); // three: 4 × ⅓ rounds down to 1
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t1 = Instant::now();
        budget.acquire(Turn::begin(Lane::Revocation)).await;
        budget.acquire(Turn::begin(Lane::Revocation)).await;
        let took = t1.elapsed();
        assert!(took >= Duration::from_millis(740), "{took:?}");
        budget.set_per_minute(240); // alone again: the whole burst
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t2 = Instant::now();
        for _ in 0..4 {
            budget.acquire(Turn::begin(Lane::Revocation)).await;
        }
        assert!(t2.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_revocation_goes_before_a_waiting_sweep() {
        let budget = Arc::new(Budget::per_minute(60, 1));
        budget.acquire(Turn::begin(Lane::Sweep)).await; // the burst is spent
        let order = Arc::new(Mutex::new(Vec::new()));
        let sweep = {
            let (b, o) = (budget.clone(), order.clone());
            tokio::spawn(async move {
                b.acquire(Turn::begin(Lane::Sweep)).await;
                o.lock().unwrap().push("sweep");
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await; // the sweep waits first
        let revoke = {
            let (b, o) = (budget.clone(), order.clone());
            tokio::spawn(async move {
                b.acquire(Turn::begin(Lane::Revocation)).await;
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
        budget.acquire(Turn::begin(Lane::Revocation)).await; // a converge read; its write follows
        let t0 = Instant::now();
        budget.acquire(Turn::begin(Lane::Sweep)).await;
        assert!(t0.elapsed() >= YIELD, "{:?}", t0.elapsed());
        let t1 = Instant::now();
        budget.acquire(Turn::begin(Lane::Revocation)).await;
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
            budget.acquire(Turn::begin(Lane::Sweep)).await;
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
            budget.acquire(Turn::begin(Lane::Revocation)).await;
        }
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_in_one_lane_are_served_in_the_order_their_turns_began() {
        let budget = Arc::new(Budget::per_minute(60, 1));
        budget.acquire(Turn::begin(Lane::Revocation)).await; // the burst is spent
        let order = Arc::new(Mutex::new(Vec::new()));
        // Three converges begin in order; the first has made its read and
        // comes back for its write after the others are already waiting.
        let turns: Vec<Turn> = (0..3).map(|_| Turn::begin(Lane::Revocation)).collect();
        let mut tasks = Vec::new();
        for (i, turn) in turns.iter().enumerate().skip(1).rev() {
            let (b, o, turn) = (budget.clone(), order.clone(), *turn);
            tasks.push(tokio::spawn(async move {
                b.acquire(turn).await;
                o.lock().unwrap().push(i);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        budget.acquire(turns[0]).await;
        order.lock().unwrap().push(0);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_does_not_hold_up_the_queue() {
        let budget = Arc::new(Budget::per_minute(60, 1));
        budget.acquire(Turn::begin(Lane::Activation)).await;
        let first = {
            let b = budget.clone();
            tokio::spawn(async move { b.acquire(Turn::begin(Lane::Activation)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t0 = Instant::now();
        let second = {
            let b = budget.clone();
            tokio::spawn(async move { b.acquire(Turn::begin(Lane::Activation)).await })
        };
        first.abort();
        second.await.unwrap();
        assert!(t0.elapsed() <= Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_lane() {
        let budget = Budget::per_minute(6000, 100);
        budget.back_off(Duration::from_secs(2));
        let t0 = Instant::now();
        budget.acquire(Turn::begin(Lane::Revocation)).await;
        assert!(t0.elapsed() >= Duration::from_secs(2));
        let unlimited = Budget::unlimited();
        unlimited.back_off(Duration::from_secs(60));
        let t1 = Instant::now();
        unlimited.acquire(Turn::begin(Lane::Report)).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
