//! Repeated identical warnings, throttled: a flood of forged webhooks or
//! failed sign-ins must not fill the disk or drown the real errors. At most
//! one line per key per window; the next one says how many were held back.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

pub struct Throttle {
    window: Duration,
    /// Per key: when it was last written, and how many were held back since.
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

/// The warnings' throttle: one line per key every 10 s at most.
pub static WARNINGS: LazyLock<Throttle> = LazyLock::new(|| Throttle::new(Duration::from_secs(10)));

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back)` when a line for `key` may be written now (the keys
    /// are a fixed set of call sites, so the map stays small).
    pub fn allow(&self, key: &'static str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.window => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let was = *held;
                (*last, *held) = (now, 0);
                Some(was)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// `tracing::warn!` at most once per 10 s for this call site's `key`, with
/// `held_back` = how many identical warnings were not written since.
#[macro_export]
macro_rules! warn_throttled {
    ($key:expr, $($rest:tt)+) => {
        if let Some(held_back) = $crate::throttle::WARNINGS.allow($key) {
            tracing::warn!(held_back, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count_held_back() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow_at("k", t0), Some(0));
        for s in 1..=5 {
            assert_eq!(t.allow_at("k", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.allow_at("other", t0), Some(0), "keys are apart");
        assert_eq!(t.allow_at("k", t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(t.allow_at("k", t0 + Duration::from_secs(11)), None);
    }
}
