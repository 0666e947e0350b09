//! How fast each caller may ask for grants, through any door: one caller's
//! storm of requests is refused at the door (429 with when to come back)
//! before it reaches the store or the directory. People are limited by who
//! they are, API keys by name, each key at its own pace if configured.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use jit_domain::Caller;

/// Requests a minute: `None` is unlimited.
#[derive(Debug, Clone, Default)]
pub struct RequestLimits {
    pub per_person: Option<NonZeroU32>,
    pub per_key: Option<NonZeroU32>,
    /// A key's own pace, by key name (`None`: unlimited for that key).
    pub keys: HashMap<String, Option<NonZeroU32>>,
}

/// The limiter built from [`RequestLimits`], shared by every door.
pub struct RequestLimiter {
    people: Option<DefaultKeyedRateLimiter<String>>,
    keys: HashMap<String, Option<DefaultDirectRateLimiter>>,
    other_keys: Option<DefaultKeyedRateLimiter<String>>,
}

impl Default for RequestLimiter {
    /// Unlimited: in-process callers (tests, benches) that build an `App`
    /// themselves.
    fn default() -> Self {
        Self::new(&RequestLimits::default())
    }
}

/// A whole minute's worth may come at once, then the pace.
fn per_minute(n: NonZeroU32) -> Quota {
    Quota::per_minute(n).allow_burst(n)
}

impl RequestLimiter {
    pub fn new(limits: &RequestLimits) -> Self {
        Self {
            people: limits.per_person.map(|n| RateLimiter::keyed(per_minute(n))),
            keys: limits
                .keys
                .iter()
                .map(|(name, n)| (name.clone(), n.map(|n| RateLimiter::direct(per_minute(n)))))
                .collect(),
            other_keys: limits.per_key.map(|n| RateLimiter::keyed(per_minute(n))),
        }
    }

    /// `Err(wait)`: this caller asked too often; ask again after `wait`.
    /// Signed webhooks are not limited here (ServiceNow's deliveries are one
    /// per change event, replay-guarded).
    pub fn check(&self, caller: &Caller) -> Result<(), Duration> {
        let refused = |not_until: governor::NotUntil<_>| {
            not_until.wait_time_from(DefaultClock::default().now())
        };
        match caller {
            Caller::Person { user, .. } => match &self.people {
                Some(l) => l.check_key(&user.to_string()).map_err(refused),
                None => Ok(()),
            },
            Caller::Key { name, .. } => match self.keys.get(name) {
                Some(Some(l)) => l.check().map_err(refused),
                Some(None) => Ok(()),
                None => match &self.other_keys {
                    Some(l) => l.check_key(name).map_err(refused),
                    None => Ok(()),
                },
            },
            Caller::Webhook { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(name: &str) -> Caller {
        Caller::Person {
            user: jit_domain::UserName::parse(name).unwrap(),
            groups: Default::default(),
        }
    }

    fn key(name: &str) -> Caller {
        Caller::Key {
            name: name.into(),
            admin: false,
        }
    }

    #[test]
    fn each_caller_has_its_own_pace() {
        let limiter = RequestLimiter::new(&RequestLimits {
            per_person: NonZeroU32::new(2),
            per_key: NonZeroU32::new(3),
            keys: HashMap::from([
                ("terraform".to_owned(), NonZeroU32::new(1)),
                ("pipeline".to_owned(), None),
            ]),
        });
        for _ in 0..2 {
            assert!(limiter.check(&person("alice@example.com")).is_ok());
        }
        let wait = limiter.check(&person("ALICE@example.com")).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            limiter.check(&person("bob@example.com")).is_ok(),
            "bob is not alice"
        );
        assert!(limiter.check(&key("terraform")).is_ok());
        assert!(
            limiter.check(&key("terraform")).is_err(),
            "its own pace: 1 a minute"
        );
        for _ in 0..100 {
            assert!(limiter.check(&key("pipeline")).is_ok(), "unlimited by name");
        }
        for _ in 0..3 {
            assert!(limiter.check(&key("other")).is_ok());
        }
        assert!(limiter.check(&key("other")).is_err());
        assert!(
            limiter
                .check(&Caller::Webhook { name: "sn".into() })
                .is_ok()
        );
        assert!(
            RequestLimiter::default()
                .check(&person("x@example.com"))
                .is_ok()
        );
    }
}
