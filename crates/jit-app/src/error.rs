use jit_domain::{AccessRefusal, Decision, FieldError, GrantId, ReviewRefusal, TransitionError};

use crate::ports::{DirectoryError, StoreError, TicketError};

/// What a use case can answer instead of a result; the server maps each
/// variant to an HTTP status in one place.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the request breaks {} rule(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The policy refused; every clause it evaluated is in the decision.
    #[error("the policy refuses the grant")]
    Denied(Box<Decision>),
    #[error(transparent)]
    TicketSystem(#[from] TicketError),
    /// Something that runs once at a time is already running.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    /// Not in this state (e.g. activity on demand for a grant not held now).
    #[error("{0}")]
    NotNow(String),
    #[error("the directory failed: {0}")]
    Directory(DirectoryError),
    #[error("grant {0} not found")]
    GrantNotFound(GrantId),
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    /// An approver's answer the rules refuse (self-approval, not an
    /// approver, answered twice, not pending, lapsed).
    #[error(transparent)]
    Refused(ReviewRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller may not see (`NotFound`) or do this (`Forbidden`).
    #[error(transparent)]
    Access(#[from] AccessRefusal),
    /// This caller asked too often; again after the wait.
    #[error("too many requests from this caller: try again in {} s", .0.as_secs().max(1))]
    Throttled(std::time::Duration),
}
