//! What a page answers instead of itself. Errors become HTTP here and
//! nowhere else in this crate; details for operators go to the log only.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use jit_app::{AppError, StoreError, TicketError};
use jit_domain::AccessRefusal;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No session, or it timed out: sign in again.
    #[error("please sign in")]
    NotSignedIn,
    /// A form without the session's CSRF token, or from another origin.
    #[error("this form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    /// The login callback does not belong to a login this browser started.
    #[error("{0}")]
    Login(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A field breaks a rule (the API answers the same with 422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    /// Asked too often; again after the wait (`Retry-After`).
    #[error("too many requests: try again in {} s", .0.as_secs().max(1))]
    TooMany(std::time::Duration),
    #[error("something went wrong; the error was logged")]
    Internal(String),
    #[error("{0}")]
    Config(String),
}

impl WebError {
    /// Already written to the log (with the detail the page does not show).
    pub fn logged(&self) -> bool {
        matches!(self, Self::Internal(_) | Self::Config(_))
    }
}

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::GrantNotFound(_) | AppError::NotFound(_) => Self::NotFound(e.to_string()),
            AppError::Conflict(_) | AppError::Busy(_) | AppError::NotNow(_) => {
                Self::Conflict(e.to_string())
            }
            AppError::Store(StoreError::Duplicate(what)) => Self::Conflict(what),
            AppError::Refused(r) if r.is_forbidden() => Self::Forbidden(r.message),
            AppError::Refused(r) => Self::Conflict(r.message),
            AppError::TicketSystem(TicketError::Unavailable(why)) => Self::Unavailable(format!(
                "ServiceNow cannot be asked right now ({why}); nothing was changed"
            )),
            AppError::Access(AccessRefusal::NotFound) => Self::NotFound("no such grant".into()),
            AppError::Access(AccessRefusal::Forbidden { message, .. }) => Self::Forbidden(message),
            // The request form shows these next to their fields; other
            // forms (extend, review, drop) show them in one line.
            AppError::Invalid(fields) => Self::Invalid(
                fields
                    .into_iter()
                    .map(|f| f.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            AppError::Denied(decision) => Self::Forbidden(
                decision
                    .denials()
                    .into_iter()
                    .map(|f| f.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            AppError::Throttled(wait) => Self::TooMany(wait),
            AppError::Directory(e) => Self::Internal(e.to_string()),
            AppError::Store(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<actix_session::SessionGetError> for WebError {
    fn from(_: actix_session::SessionGetError) -> Self {
        Self::NotSignedIn
    }
}

impl From<actix_session::SessionInsertError> for WebError {
    fn from(e: actix_session::SessionInsertError) -> Self {
        Self::Internal(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotSignedIn => StatusCode::SEE_OTHER,
            Self::Csrf | Self::Login(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) | Self::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, Self::NotSignedIn) {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish();
        }
        if let Self::Internal(detail) | Self::Config(detail) = self {
            tracing::error!(error = %detail, "page failed");
        }
        let title = match self.status_code() {
            StatusCode::BAD_REQUEST => "Request refused",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Cannot do that now",
            StatusCode::UNPROCESSABLE_ENTITY => "Please correct the form",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "Try again shortly",
            _ => "Error",
        };
        let page = ErrorPage {
            title,
            message: self.to_string(),
        };
        let body = page
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".into());
        let mut response = HttpResponse::build(self.status_code());
        if let Self::TooMany(wait) = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs(*wait).to_string()));
        }
        response.content_type("text/html; charset=utf-8").body(body)
    }
}

/// `Retry-After` in whole seconds, rounded up (never 0).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero())
}
