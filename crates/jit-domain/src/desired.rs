//! The core rule (docs/architecture.md, "converge, don't toggle"): the role a user should
//! hold is a function of policy, grants and time, never of the last action.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::grant::{Grant, GrantId};
use crate::names::{RoleName, UserName};
use crate::policy::Policy;

/// Why the user should, or should not, hold the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Desired {
    /// Not a privileged role: the broker never touches it.
    Unmanaged,
    /// An active grant covers the user now (the one that ends last).
    HeldByGrant { grant: GrantId },
    /// A break-glass account, exempt from stripping.
    HeldByBreakGlass,
    /// Privileged and nothing entitles the user to it.
    Absent,
}

/// What converge must do to the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleChange {
    Add,
    Remove,
}

impl Desired {
    pub fn should_hold(self) -> Option<bool> {
        match self {
            Self::Unmanaged => None,
            Self::HeldByGrant { .. } | Self::HeldByBreakGlass => Some(true),
            Self::Absent => Some(false),
        }
    }

    /// The difference between what the directory holds and what it should.
    pub fn change(self, holds: bool) -> Option<RoleChange> {
        self.change_for(Holding {
            any: holds,
            fully: holds,
        })
    }

    /// The same where a role is held per division (Genesys Cloud): a role
    /// that should be held counts as held only in every division its grant
    /// covers (so a partial holding is completed); one that should not, in
    /// none.
    pub fn change_for(self, held: Holding) -> Option<RoleChange> {
        match self.should_hold() {
            Some(true) if !held.fully => Some(RoleChange::Add),
            Some(false) if held.any => Some(RoleChange::Remove),
            _ => None,
        }
    }
}

/// What a read of the directory proved of one pair, as far as its desired
/// state goes: the role held in full, or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Held,
    Absent,
}

snake_names!(Settled {
    Held => "held",
    Absent => "absent",
});

/// How long a proof that a role is held stands for a job of its pair
/// without reading again: a storm of grants for one pair costs a read this
/// often, not one a grant. A proof of absence stands until the broker's
/// next write (another writer's add is the sweeps' to find).
pub const HELD_TRUSTED_FOR: TimeDelta = TimeDelta::seconds(30);

impl Settled {
    /// What a read showing `held` proves, when the pair should be as
    /// `decision` says and is: held in full, or absent; `None` otherwise.
    pub fn proved(decision: Desired, held: Holding) -> Option<Self> {
        match decision.should_hold() {
            Some(true) if held.fully => Some(Self::Held),
            Some(false) if !held.any => Some(Self::Absent),
            _ => None,
        }
    }
}

impl Desired {
    /// Whether the broker's last proof of the pair (`settled`, `age` ago)
    /// still answers this desired state, so that a job need not read.
    pub fn stands_on(self, settled: Option<Settled>, age: TimeDelta) -> bool {
        match (self.should_hold(), settled) {
            (Some(false), Some(Settled::Absent)) => true,
            (Some(true), Some(Settled::Held)) => age < HELD_TRUSTED_FOR,
            _ => false,
        }
    }
}

/// What the directory shows of one role on one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// By a grant of the user's own, in some division.
    pub any: bool,
    /// In every division the role's grant covers (where the target knows
    /// roles by name only, the same as `any`).
    pub fully: bool,
}

impl RoleChange {
    /// Whether a read-back shows the change made: an add in full, a
    /// removal in every division.
    pub fn done(self, after: Holding) -> bool {
        match self {
            Self::Add => after.fully,
            Self::Remove => !after.any,
        }
    }
}

/// `grants` are the user's grants for `role` (any state); only active ones
/// whose window contains `now` count.
pub fn desired(
    policy: &Policy,
    user: &UserName,
    role: &RoleName,
    grants: &[Grant],
    now: DateTime<Utc>,
) -> Desired {
    if !policy.is_privileged(role) {
        return Desired::Unmanaged;
    }
    let covering = grants
        .iter()
        .filter(|g| &g.user == user && &g.role == role && g.covers(now))
        .max_by_key(|g| g.expires_at);
    match covering {
        Some(g) => Desired::HeldByGrant { grant: g.id },
        None if policy.is_break_glass(user) => Desired::HeldByBreakGlass,
        None => Desired::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::tests::grant;
    use crate::lifecycle::GrantState;
    use crate::policy::tests::sample;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn baseline_roles_are_never_managed() {
        let p = sample();
        let g = grant(GrantState::Active, 0, 10);
        let employee = RoleName::parse("Employee").unwrap();
        assert_eq!(
            desired(&p, &g.user, &employee, &[], t0()),
            Desired::Unmanaged
        );
        assert_eq!(Desired::Unmanaged.change(true), None);
        assert_eq!(Desired::Unmanaged.change(false), None);
    }

    #[test]
    fn break_glass_holds_without_a_grant() {
        let p = sample();
        let bg = UserName::parse("breakglass@example.com").unwrap();
        let role = RoleName::parse("Master Admin").unwrap();
        assert_eq!(
            desired(&p, &bg, &role, &[], t0()),
            Desired::HeldByBreakGlass
        );
    }

    #[test]
    fn only_active_grants_in_their_window_count() {
        let p = sample();
        for (state, holds) in [
            (GrantState::Active, true),
            (GrantState::Approved, false),
            (GrantState::PendingApproval, false),
            (GrantState::Ended, false),
            (GrantState::Cancelled, false),
            (GrantState::Denied, false),
        ] {
            let g = grant(state, 0, 10);
            let d = desired(
                &p,
                &g.user,
                &g.role,
                std::slice::from_ref(&g),
                t0() + TimeDelta::seconds(5),
            );
            assert_eq!(d.should_hold(), Some(holds), "{state}");
        }
    }

    #[test]
    fn another_users_grant_does_not_count() {
        let p = sample();
        let g = grant(GrantState::Active, 0, 10);
        let other = UserName::parse("other@example.com").unwrap();
        assert_eq!(
            desired(&p, &other, &g.role, std::slice::from_ref(&g), t0()),
            Desired::Absent
        );
    }

    proptest! {
        /// Overlap safety (AWS TEAM #279): with any set of active windows, the
        /// role is held exactly when some window contains now, and the grant
        /// named is the one that ends last.
        #[test]
        fn overlapping_grants_never_cancel_each_other(
            windows in proptest::collection::vec((0i64..100, 1i64..100), 0..6),
            now in 0i64..200,
        ) {
            let p = sample();
            let grants: Vec<Grant> = windows.iter().map(|(s, len)| grant(GrantState::Active, *s, s + len)).collect();
            let now = t0() + TimeDelta::seconds(now);
            let user = UserName::parse("eng@example.com").unwrap();
            let role = RoleName::parse("Master Admin").unwrap();
            let d = desired(&p, &user, &role, &grants, now);
            let inside: Vec<&Grant> = grants.iter().filter(|g| g.starts_at <= now && now < g.expires_at).collect();
            prop_assert_eq!(d.should_hold(), Some(!inside.is_empty()));
            if let Desired::HeldByGrant { grant } = d {
                let chosen = grants.iter().find(|g| g.id == grant).unwrap();
                prop_assert!(inside.iter().all(|g| g.expires_at <= chosen.expires_at));
            }
        }

        /// Converge is idempotent: after applying the change, no further change is due.
        #[test]
        fn converge_reaches_a_fixed_point(holds in any::<bool>(), which in 0usize..4) {
            let d = [Desired::Unmanaged, Desired::HeldByBreakGlass, Desired::Absent,
                     Desired::HeldByGrant { grant: GrantId::new_at(t0()) }][which];
            let after = match d.change(holds) {
                Some(RoleChange::Add) => true,
                Some(RoleChange::Remove) => false,
                None => holds,
            };
            prop_assert_eq!(d.change(after), None);
        }
    }

    #[test]
    fn a_partial_holding_is_completed_and_removal_means_every_division() {
        let grant = Desired::HeldByGrant {
            grant: GrantId(uuid::Uuid::nil()),
        };
        let partial = Holding {
            any: true,
            fully: false,
        };
        assert_eq!(grant.change_for(partial), Some(RoleChange::Add));
        assert_eq!(
            Desired::Absent.change_for(partial),
            Some(RoleChange::Remove)
        );
        assert!(!RoleChange::Add.done(partial));
        assert!(!RoleChange::Remove.done(partial));
        let none = Holding {
            any: false,
            fully: false,
        };
        assert!(RoleChange::Remove.done(none));
        assert_eq!(Desired::Absent.change_for(none), None);
    }

    #[test]
    fn a_proof_stands_for_a_job_while_it_answers_the_desired_state() {
        let grant = Desired::HeldByGrant {
            grant: crate::grant::tests::grant(GrantState::Active, 0, 60).id,
        };
        let (full, none, partial) = (
            Holding {
                any: true,
                fully: true,
            },
            Holding {
                any: false,
                fully: false,
            },
            Holding {
                any: true,
                fully: false,
            },
        );
        assert_eq!(Settled::proved(grant, full), Some(Settled::Held));
        assert_eq!(
            Settled::proved(Desired::Absent, none),
            Some(Settled::Absent)
        );
        assert_eq!(
            Settled::proved(grant, partial),
            None,
            "held in part proves nothing"
        );
        assert_eq!(Settled::proved(Desired::Absent, partial), None);
        assert_eq!(Settled::proved(Desired::Unmanaged, full), None);
        let (fresh, stale) = (TimeDelta::seconds(1), HELD_TRUSTED_FOR);
        assert!(Desired::Absent.stands_on(Some(Settled::Absent), TimeDelta::days(30)));
        assert!(grant.stands_on(Some(Settled::Held), fresh));
        assert!(
            !grant.stands_on(Some(Settled::Held), stale),
            "a held role is read again"
        );
        assert!(
            !grant.stands_on(Some(Settled::Absent), fresh),
            "a change: read"
        );
        assert!(!Desired::Absent.stands_on(Some(Settled::Held), fresh));
        assert!(
            !Desired::Absent.stands_on(None, fresh),
            "unknown: a write may be under way"
        );
        assert!(!Desired::Unmanaged.stands_on(Some(Settled::Held), fresh));
    }
}
