//! The signed ServiceNow webhook.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use jit_domain::RelayedEvent;
use jit_itsm::webhook::{
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookHeaders, change_number,
};
use serde_json::json;

use super::body::{collect_body, declared_length};
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::{ErrorBody, SlackInteractionDoc};
use super::{ApiError, ApiState};

/// `POST /webhooks/servicenow`: a change-request record from a Business Rule
/// or Flow. Authenticated by signature before anything else is looked at;
/// nothing is written for a refused delivery; a replayed delivery id gets the
/// first answer again (with `X-JIT-Replayed: true`) and changes nothing.
#[utoipa::path(post, path = "/webhooks/servicenow", tag = "webhooks", security(()),
    request_body(content = Object, description = "a change_request record; only `number` is read"),
    responses((status = 200, description = "handled (X-JIT-Replayed: true for a repeat)"), (status = 400, description = "not a change record", body = ErrorBody),
              (status = 401, description = "signature, timestamp or delivery id refused", body = ErrorBody), (status = 503, description = "no webhook secret configured, or ServiceNow unreachable", body = ErrorBody)))]
pub(crate) async fn servicenow_webhook(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let answer = handle_servicenow_webhook(state, req, payload).await;
    let result = match &answer {
        Ok(r) if r.headers().contains_key("x-jit-replayed") => "replayed".to_owned(),
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => e.status_code().as_u16().to_string(),
    };
    metrics::counter!("jit_servicenow_webhook_deliveries_total", "result" => result).increment(1);
    answer
}

async fn handle_servicenow_webhook(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let verifier = state.webhook.as_ref().ok_or(ApiError::WebhookDisabled)?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = WebhookHeaders {
        timestamp: header(TIMESTAMP_HEADER),
        delivery: header(DELIVERY_HEADER),
        signature: header(SIGNATURE_HEADER),
    };
    // Refused on its headers before a byte of the body is read.
    verifier
        .precheck(headers, state.app.now())
        .map_err(ApiError::Webhook)?;
    let body = collect_body(declared_length(&req), payload, state.webhook_max_body_bytes).await?;
    let delivery = verifier
        .verify(headers, &body, state.app.now())
        .map_err(|e| {
            jit_app::warn_throttled!("servicenow_webhook_refused", error = %e, "servicenow webhook refused");
            ApiError::Webhook(e)
        })?;
    let number = change_number(&body).map_err(ApiError::Webhook)?;
    let answer = state
        .app
        .handle_change_webhook(&delivery.delivery_id, &number)
        .await?;
    state.worker_wake.notify_one();
    let mut response = HttpResponse::Ok();
    if answer.replayed {
        response.insert_header(("X-JIT-Replayed", "true"));
    }
    Ok(response.json(answer.body))
}

/// `POST /webhooks/genesys/events`: a Genesys Cloud event relayed by Amazon
/// EventBridge (an API destination whose connection sends the header
/// secret). A hint, never evidence: an event about a user has that user's
/// grants read and judged now; a group or role event asks for a holders
/// sweep; a token event for a break-glass login check. Refused deliveries
/// write nothing; a redelivered event id is answered without a second look.
#[utoipa::path(post, path = "/webhooks/genesys/events", tag = "webhooks", security(()),
    request_body(content = Object, description = "an EventBridge event from Genesys Cloud: `id`, `source`, `detail.topicName`, `detail.eventBody`"),
    responses((status = 202, description = "accepted: looked at now"), (status = 200, description = "a redelivery, or a topic the broker does not act on"),
              (status = 400, description = "not an EventBridge event from Genesys Cloud", body = ErrorBody), (status = 401, description = "header secret missing or wrong", body = ErrorBody),
              (status = 403, description = "a source not in events.sources", body = ErrorBody), (status = 503, description = "no events secret configured, or too many events waiting (EventBridge retries)", body = ErrorBody)))]
pub(crate) async fn genesys_events(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let answer = handle_genesys_event(&state, &req, payload).await;
    let result = match &answer {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => e.status_code().as_u16().to_string(),
    };
    metrics::counter!("jit_genesys_events_total", "result" => result).increment(1);
    answer
}

async fn handle_genesys_event(
    state: &ApiState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use crate::events::Refused;
    let refused = |status, field, rule, message: String| ApiError::EventRefused {
        status,
        field,
        rule,
        message,
    };
    let gate = state.events.as_ref().ok_or(ApiError::EventsDisabled)?;
    let given = req
        .headers()
        .get(gate.header.as_str())
        .map(|v| v.as_bytes());
    gate.check_secret(given).map_err(|_| {
        jit_app::warn_throttled!(
            "genesys_events_refused",
            "a Genesys event with a missing or wrong secret"
        );
        refused(
            StatusCode::UNAUTHORIZED,
            "header",
            "secret",
            format!("`{}` is missing or wrong", gate.header),
        )
    })?;
    let body = collect_body(declared_length(req), payload, state.webhook_max_body_bytes).await?;
    let event: RelayedEvent =
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    gate.check_source(&event.source).map_err(|_| {
        refused(
            StatusCode::FORBIDDEN,
            "source",
            "allowed_source",
            format!("`{}` is not in events.sources", event.source),
        )
    })?;
    if gate.seen_before(&event.id) {
        return Ok(HttpResponse::Ok().json(json!({"replayed": true})));
    }
    let Some(hint) = event.hint(gate.own_client()) else {
        return Ok(HttpResponse::Ok().json(json!({"ignored": event.detail.topic_name})));
    };
    match gate.enqueue(hint) {
        Ok(()) => {
            gate.remember(&event.id);
            Ok(HttpResponse::Accepted().json(json!({"accepted": event.id})))
        }
        Err(Refused::Busy | Refused::Secret | Refused::Source(_)) => Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "queue",
            "too many events are waiting; retry".into(),
        )),
    }
}

#[utoipa::path(post, path = "/webhooks/slack/interactions", tag = "webhooks", security(()),
    request_body(content = SlackInteractionDoc, content_type = "application/x-www-form-urlencoded", description = "Slack's interaction callback, signed with `X-Slack-Signature` over `v0:<X-Slack-Request-Timestamp>:<body>`"),
    responses((status = 200, description = "read and acted on (a refusal is told to the clicker in Slack); for the deny reason, `response_action: errors` keeps the form open with the reason"),
              (status = 400, description = "not an interaction payload", body = ErrorBody), (status = 401, description = "signature missing, wrong, or older than 5 minutes", body = ErrorBody),
              (status = 503, description = "Slack is not configured", body = ErrorBody)))]
pub(crate) async fn slack_interactions(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use jit_chat::slack::Refused;
    let door = state.slack.as_ref().ok_or(ApiError::SlackDisabled)?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    // Refused on its headers before a byte of the body is read.
    let prechecked = jit_chat::slack::precheck(
        header("X-Slack-Request-Timestamp"),
        header("X-Slack-Signature"),
        state.app.now(),
    );
    let answer = match prechecked {
        Err(e) => Err(e),
        Ok(()) => {
            let body =
                collect_body(declared_length(&req), payload, state.webhook_max_body_bytes).await?;
            let text = String::from_utf8_lossy(&body).into_owned();
            door.handle(
                &state.app,
                &state.worker_wake,
                header("X-Slack-Request-Timestamp"),
                header("X-Slack-Signature"),
                &text,
            )
            .await
        }
    };
    let refused = |status, field, rule, message: String| ApiError::EventRefused {
        status,
        field,
        rule,
        message,
    };
    let result = match &answer {
        Ok(_) => "accepted",
        Err(Refused::Malformed(_)) => "malformed",
        Err(_) => "refused",
    };
    metrics::counter!("jit_slack_interactions_total", "result" => result).increment(1);
    match answer {
        Ok(crate::slack::Answer::Done) => Ok(HttpResponse::Ok().finish()),
        Ok(crate::slack::Answer::ModalError(why)) => {
            Ok(HttpResponse::Ok().json(crate::slack::modal_error(&why)))
        }
        Err(Refused::Malformed(why)) => Err(refused(
            StatusCode::BAD_REQUEST,
            "payload",
            "interaction",
            why,
        )),
        Err(e) => {
            jit_app::warn_throttled!(
                "slack_interactions_refused",
                "a Slack callback with a missing, wrong or stale signature"
            );
            let rule = if matches!(e, Refused::Stale) {
                "timestamp"
            } else {
                "signature"
            };
            Err(refused(
                StatusCode::UNAUTHORIZED,
                "header",
                rule,
                e.to_string(),
            ))
        }
    }
}
