use jit_domain::{FieldError, GrantId, TransitionError};

use crate::ports::StoreError;

/// What a use case can answer instead of a result; the server maps each
/// variant to an HTTP status in one place.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the request breaks {} rule(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("grant {0} not found")]
    GrantNotFound(GrantId),
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
