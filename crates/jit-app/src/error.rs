use jit_domain::{Decision, FieldError, GrantId, TransitionError};

use crate::ports::{StoreError, TicketError};

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
    #[error("grant {0} not found")]
    GrantNotFound(GrantId),
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
