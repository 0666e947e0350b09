//! One line per refused or failed request, at the level it deserves: a 4xx
//! is the caller's mistake (info, with the request id and the rule names),
//! a 5xx is the broker's (error). tracing-actix-web's own event wrote every
//! refusal with its whole error, a flood of bad requests a flood of lines.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, ResponseError};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

use crate::api::ApiError;

pub struct RequestLog;

impl RootSpanBuilder for RequestLog {
    /// tracing-actix-web's span, but with the query's sensitive values
    /// redacted: a key sent as `?access_token=` must not be kept in the log.
    fn on_request_start(request: &ServiceRequest) -> Span {
        let user_agent = request
            .headers()
            .get("User-Agent")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let connection = request.connection_info();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.host = %connection.host(),
            http.client_ip = %connection.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %logged_target(request.path(), request.query_string()),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
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

/// Query names whose values are never logged: credentials, tokens, codes.
const SENSITIVE: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "code",
    "state",
    "nonce",
    "session",
    "signature",
    "sig",
    "auth",
    "credential",
    "assertion",
];

/// The path, and the query with the value of every sensitive-looking name
/// replaced by `REDACTED` (names compared without case, as parts).
pub(crate) fn logged_target(path: &str, query: &str) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let lower = name.to_ascii_lowercase();
            if !value.is_empty() && SENSITIVE.iter().any(|s| lower.contains(s)) {
                format!("{name}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
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
    fn secrets_in_a_query_are_not_logged() {
        assert_eq!(logged_target("/api/v1/grants", ""), "/api/v1/grants");
        assert_eq!(
            logged_target(
                "/api/v1/grants",
                "access_token=sk-123&user=alice%40example.com&API_KEY=x&limit=5"
            ),
            "/api/v1/grants?access_token=REDACTED&user=alice%40example.com&API_KEY=REDACTED&limit=5"
        );
        assert_eq!(
            logged_target("/auth/callback", "code=abc&state=def&error=x"),
            "/auth/callback?code=REDACTED&state=REDACTED&error=x"
        );
    }

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
