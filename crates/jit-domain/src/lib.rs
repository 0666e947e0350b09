//! jit-domain: the pure rules of jit-broker. No IO, no async, no clock: time
//! comes in as a value.

pub mod access;
pub mod approval;
pub mod decision;
pub mod desired;
pub mod grant;
pub mod lifecycle;
pub mod names;
pub mod policy;
pub mod reconcile;
pub mod request;
pub mod retry;
pub mod soc;
pub mod ticket;

pub use access::{AccessRefusal, Caller, MAX_DROP_REASON_CHARS, validate_drop_reason};
pub use approval::{
    ExtensionOutcome, ExtensionRequest, ExtensionState, Review, ReviewOutcome, ReviewRefusal,
    Verdict, longest_extension, validate_extension, validate_review_comment,
};
pub use decision::{Decision, Reason, TicketEvidence, decide, eligibility, ticket_ends_grant};
pub use desired::{Desired, RoleChange, desired};
pub use grant::{Grant, GrantId, Transition, TransitionError};
pub use lifecycle::{EndReason, GrantState};
pub use names::{Invalid, Justification, RoleName, TicketId, UnknownName, UserName};
pub use policy::{EmergencyRule, Policy, PolicyError, RequesterMatch, RolePolicy};
pub use reconcile::{
    ConflictAlert, ConflictRule, FindingAction, FindingKind, FindingOutcome, Judgement,
    PairHistory, SweepKind, SweepRules, judge,
};
pub use request::{FieldError, ValidGrantRequest, validate_grant_request};
pub use soc::{
    Severity, incident_over, is_incident, login_is_news, looked_for_by, notifies, severity,
    soc_notice,
};
pub use ticket::{ChangeState, ChangeTicket, Person, Team};
