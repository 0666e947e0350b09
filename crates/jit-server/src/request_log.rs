//! One line per refused or failed request, at the level it deserves: a 4xx
//! is the caller's mistake (info, with the request id and the rule names),
//! a 5xx is the broker's (error). tracing-actix-web's own event wrote every
//! refusal with its whole error, a flood of bad requests a flood of lines.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, ResponseError};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

use crate::api::ApiError;

pub struct RequestLog;

impl RootSpanBuilder for RequestLog {
    fn on_request_start(request: &ServiceRequest) -> Span {
        DefaultRootSpanBuilder::on_request_start(request)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span.clone(), outcome);
        let error = match outcome {
            Ok(response) => response.response().error(),
            Err(error) => Some(error),
        };
        let Some(error) = error else {
            return;
        };
        let status = error.as_response_error().status_code();
        span.in_scope(|| {
            let api = error.as_error::<ApiError>();
            if status.is_client_error() {
                tracing::info!(
                    status = status.as_u16(),
                    rules = %api.map(ApiError::rule_names).unwrap_or_default(),
                    "request refused"
                );
            } else if !api.is_some_and(ApiError::logged)
                && !error
                    .as_error::<jit_web::WebError>()
                    .is_some_and(jit_web::WebError::logged)
            {
                tracing::error!(status = status.as_u16(), error = %error, "request failed");
            }
        });
    }
}

impl ApiError {
    /// `field/rule` of every broken rule, for the log line of a refusal.
    pub fn rule_names(&self) -> String {
        let rules: Vec<String> = match self {
            Self::Invalid(fields) => fields
                .iter()
                .map(|f| format!("{}/{}", f.field, f.rule))
                .collect(),
            Self::Denied(decision) => decision
                .denials()
                .iter()
                .map(|f| format!("{}/{}", f.field, f.rule))
                .collect(),
            Self::Refused { rule, .. } | Self::Access { rule, .. } => vec![(*rule).to_owned()],
            Self::Webhook(e) => vec![format!("{}/{}", e.field(), e.rule())],
            other => vec![
                ResponseError::status_code(other)
                    .canonical_reason()
                    .unwrap_or("refused")
                    .to_lowercase()
                    .replace(' ', "_"),
            ],
        };
        rules.join(",")
    }

    /// Already written to the log, with the detail callers do not see.
    fn logged(&self) -> bool {
        matches!(self, Self::Internal(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jit_domain::FieldError;

    #[test]
    fn a_refusal_is_logged_by_its_rule_names_not_its_whole_error() {
        let invalid = ApiError::Invalid(vec![
            FieldError::new("justification", "min_length", "at least 10 characters"),
            FieldError::new("duration", "max_duration", "9h exceeds 4h"),
        ]);
        assert_eq!(
            invalid.rule_names(),
            "justification/min_length,duration/max_duration"
        );
        let refused = ApiError::Refused {
            rule: "self_approval",
            message: "nobody approves their own request".into(),
            forbidden: true,
        };
        assert_eq!(refused.rule_names(), "self_approval");
        assert_eq!(ApiError::Unauthorized.rule_names(), "unauthorized");
        assert!(ApiError::Internal("db down".into()).logged());
        assert!(!ApiError::Unauthorized.logged());
    }
}
