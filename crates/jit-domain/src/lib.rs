//! jit-domain: the pure rules of jit-broker. No IO, no async, no clock: time
//! comes in as a value.

/// The one place an enum's names meet their stored spelling: `as_str`,
/// `ALL`, `FromStr` and `Display` from one table.
macro_rules! snake_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),+ }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($name => Ok(<$ty>::$variant),)+ _ => Err($crate::names::UnknownName(s.to_owned())) }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

pub mod access;
pub mod activity;
pub mod approval;
pub mod decision;
pub mod desired;
pub mod grant;
pub mod hint;
pub mod lifecycle;
pub mod names;
pub mod policy;
pub mod reconcile;
pub mod request;
pub mod retry;
pub mod soc;
pub mod ticket;

pub use access::{AccessRefusal, Caller, MAX_DROP_REASON_CHARS, validate_drop_reason};
pub use activity::{ActivityEvent, PassOutcome, PassPlan};
pub use approval::{
    ExtensionForm, ExtensionOutcome, ExtensionRequest, ExtensionState, Review, ReviewOutcome,
    ReviewRefusal, Verdict, Wake, longest_extension, next_wake, validate_extension,
    validate_review_comment,
};
pub use decision::{Decision, Reason, TicketEvidence, decide, eligibility, ticket_ends_grant};
pub use desired::{Desired, HELD_TRUSTED_FOR, Holding, RoleChange, Settled, desired};
pub use grant::{Grant, GrantId, Transition, TransitionError, live_grants_reason};
pub use hint::{Hint, RelayedEvent, SubjectHint};
pub use lifecycle::{EndReason, GrantState};
pub use names::{Invalid, Justification, RoleName, TicketId, UnknownName, UserName};
pub use policy::{EmergencyRule, Policy, PolicyError, RequesterMatch, RolePolicy};
pub use reconcile::{
    ConflictAlert, ConflictRule, FindingAction, FindingKind, FindingOutcome, Judgement,
    PairHistory, SweepKind, SweepRules, judge, judge_disagreement, judge_group_grant,
};
pub use request::{
    FieldError, Given, GrantRequestForm, ValidGrantRequest, privileged_role, validate_grant_request,
};
pub use soc::{
    Severity, incident_over, is_incident, login_is_news, looked_for_by, notifies, severity,
    soc_notice,
};
pub use ticket::{ChangeState, ChangeTicket, Person, Team};
