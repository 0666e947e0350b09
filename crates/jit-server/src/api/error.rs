//! The API's error type, mapped to HTTP here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use jit_app::{AppError, StoreError, TicketError};
use jit_domain::{AccessRefusal, Decision, FieldError};
use jit_itsm::webhook::WebhookError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request breaks {} rule(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is not valid JSON: the body is empty")]
    EmptyBody,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body must be sent as Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// An ID token from the provider that cannot vouch for a person (its
    /// claims, signature, audience or expiry); the reason names the rule.
    #[error("{0}")]
    BadIdToken(String),
    #[error("this API key may not do that (admin = true is required)")]
    Forbidden,
    /// The caller may see the grant but not do this to it (jit-domain's
    /// `access` rules: not their grant, a person's act, ...).
    #[error("{message}")]
    Access { rule: &'static str, message: String },
    /// A rule refused an approver's answer (self-approval, twice, lapsed).
    #[error("{message}")]
    Refused {
        rule: &'static str,
        message: String,
        forbidden: bool,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The policy refused: the denied clauses, and every clause evaluated.
    #[error("the policy refuses this grant")]
    Denied(Box<Decision>),
    #[error("{0}; nothing was granted")]
    TicketSystemUnavailable(String),
    #[error("the webhook delivery is refused: {0}")]
    Webhook(WebhookError),
    #[error("the webhook is not configured (servicenow.webhook_secret)")]
    WebhookDisabled,
    #[error("Genesys events are not configured (events.secret)")]
    EventsDisabled,
    #[error("Slack is not configured (slack.signing_secret)")]
    SlackDisabled,
    /// A relayed event refused: `field` and `rule` say which check.
    #[error("{message}")]
    EventRefused {
        status: StatusCode,
        field: &'static str,
        rule: &'static str,
        message: String,
    },
    #[error("too many requests from this caller: try again in {} s", jit_web::retry_after_secs(*.0))]
    TooMany(std::time::Duration),
    #[error("internal error")]
    Internal(String),
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(fields) => Self::Invalid(fields),
            AppError::GrantNotFound(_) => Self::NotFound(e.to_string()),
            AppError::Conflict(_) => Self::Conflict(e.to_string()),
            AppError::Refused(r) => Self::Refused {
                forbidden: r.is_forbidden(),
                rule: r.rule,
                message: r.message,
            },
            AppError::Denied(decision) => Self::Denied(decision),
            AppError::TicketSystem(TicketError::Unavailable(why)) => {
                Self::TicketSystemUnavailable(format!("cannot check the change ticket: {why}"))
            }
            AppError::Store(StoreError::Duplicate(what)) => Self::Conflict(what),
            AppError::Busy(what) | AppError::NotNow(what) => Self::Conflict(what),
            AppError::NotFound(what) => Self::NotFound(what),
            AppError::Access(AccessRefusal::NotFound) => Self::NotFound("grant not found".into()),
            AppError::Access(AccessRefusal::Forbidden { rule, message }) => {
                Self::Access { rule, message }
            }
            AppError::Throttled(wait) => Self::TooMany(wait),
            AppError::Directory(e) => Self::Internal(e.to_string()),
            AppError::Store(inner) => Self::Internal(inner.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedJson(_) | Self::EmptyBody => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized | Self::BadIdToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Access { .. } => StatusCode::FORBIDDEN,
            Self::Refused {
                forbidden: true, ..
            } => StatusCode::FORBIDDEN,
            Self::Refused { .. } => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::TicketSystemUnavailable(_)
            | Self::WebhookDisabled
            | Self::EventsDisabled
            | Self::SlackDisabled => StatusCode::SERVICE_UNAVAILABLE,
            Self::EventRefused { status, .. } => *status,
            Self::Webhook(WebhookError::BadBody(_)) => StatusCode::BAD_REQUEST,
            Self::Webhook(_) => StatusCode::UNAUTHORIZED,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (code, fields) = match self {
            Self::Invalid(fields) => ("invalid_request", fields.clone()),
            Self::MalformedJson(_) | Self::EmptyBody => (
                "malformed_json",
                vec![FieldError::new("", "json", self.to_string())],
            ),
            Self::TooLarge(n) => (
                "body_too_large",
                vec![FieldError::new(
                    "",
                    "max_body_bytes",
                    format!("must be at most {n} bytes"),
                )],
            ),
            Self::UnsupportedMediaType => (
                "unsupported_media_type",
                vec![FieldError::new(
                    "Content-Type",
                    "application_json",
                    self.to_string(),
                )],
            ),
            Self::Unauthorized => ("unauthorized", vec![]),
            Self::BadIdToken(why) => (
                "unauthorized",
                vec![FieldError::new("Authorization", "id_token", why.clone())],
            ),
            Self::Forbidden => ("forbidden", vec![]),
            Self::Access { rule, message } => (
                "forbidden",
                vec![FieldError::new("caller", rule, message.clone())],
            ),
            Self::Refused { rule, message, .. } => (
                "refused",
                vec![FieldError::new("approver", rule, message.clone())],
            ),
            Self::NotFound(_) => ("not_found", vec![]),
            Self::Conflict(_) => ("conflict", vec![]),
            Self::Denied(decision) => {
                let body = json!({"error": {
                    "code": "denied", "message": self.to_string(), "fields": decision.denials(),
                    "reasons": decision.reasons,
                }});
                return HttpResponse::Forbidden().json(body);
            }
            Self::TicketSystemUnavailable(_) => ("ticket_system_unavailable", vec![]),
            Self::WebhookDisabled => ("webhook_disabled", vec![]),
            Self::EventsDisabled => ("events_disabled", vec![]),
            Self::SlackDisabled => ("slack_disabled", vec![]),
            Self::EventRefused {
                field,
                rule,
                message,
                ..
            } => (
                "event_refused",
                vec![FieldError::new(field, rule, message.clone())],
            ),
            Self::Webhook(e) => (
                "webhook_refused",
                vec![FieldError::new(e.field(), e.rule(), e.to_string())],
            ),
            Self::TooMany(_) => (
                "rate_limited",
                vec![FieldError::new(
                    "caller",
                    "rate_limit",
                    "this caller's grant requests are limited (limits.grant_requests_per_minute_per_person / _per_key)",
                )],
            ),
            Self::Internal(detail) => {
                // The detail is for operators, not callers.
                tracing::error!(error = %detail, "request failed");
                ("internal", vec![])
            }
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized | Self::BadIdToken(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Self::TooMany(wait) = self {
            response.insert_header((
                header::RETRY_AFTER,
                jit_web::retry_after_secs(*wait).to_string(),
            ));
        }
        response
            .json(json!({"error": {"code": code, "message": self.to_string(), "fields": fields}}))
    }
}
