//! When a failed job is tried again.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Exponential backoff with full jitter: `jitter` in [0, 1) picks a point in
/// the upper half of the window, so retries spread out but never collapse to
/// zero. A server's own `Retry-After` wins when it asks for longer.
pub fn next_delay(
    attempts: u32,
    base: Duration,
    cap: Duration,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(30)));
    let window = exp.min(cap);
    let jittered = window.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(asked) => jittered
            .max(asked)
            .min(cap.max(asked).min(Duration::from_secs(3600))),
        None => jittered,
    }
}

/// When a failed job is tried again: after its back-off, unless a change of
/// its pair falls due before then (`next`, the pair's next wake), which is
/// not held back by the back-off; a wake already past does not cut it short.
pub fn next_attempt(
    backed_off: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    next.filter(|at| *at > now)
        .map_or(backed_off, |at| at.min(backed_off))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn grows_then_caps() {
        assert_eq!(
            next_delay(1, BASE, CAP, 1.0, None),
            Duration::from_millis(200)
        );
        assert_eq!(
            next_delay(2, BASE, CAP, 1.0, None),
            Duration::from_millis(400)
        );
        assert_eq!(
            next_delay(3, BASE, CAP, 0.0, None),
            Duration::from_millis(400)
        );
        assert_eq!(next_delay(40, BASE, CAP, 1.0, None), CAP);
    }

    #[test]
    fn retry_after_is_honoured() {
        assert_eq!(
            next_delay(1, BASE, CAP, 0.0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        // Even beyond our own cap, up to an hour: the target knows its limits.
        assert_eq!(
            next_delay(1, BASE, CAP, 0.0, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            next_delay(1, BASE, CAP, 0.0, Some(Duration::from_secs(99_999))),
            Duration::from_secs(3600)
        );
    }

    proptest! {
        #[test]
        fn always_within_bounds(attempts in 0u32..100, jitter in 0.0f64..1.0) {
            let d = next_delay(attempts, BASE, CAP, jitter, None);
            prop_assert!(d >= BASE / 2 && d <= CAP);
        }
    }

    #[test]
    fn a_change_due_before_the_back_off_ends_is_not_held_back() {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap();
        assert_eq!(next_attempt(at(60), None, at(0)), at(60));
        assert_eq!(
            next_attempt(at(60), Some(at(10)), at(0)),
            at(10),
            "an end due first"
        );
        assert_eq!(next_attempt(at(60), Some(at(90)), at(0)), at(60));
        assert_eq!(
            next_attempt(at(60), Some(at(0)), at(0)),
            at(60),
            "due now: no storm of retries"
        );
    }
}
