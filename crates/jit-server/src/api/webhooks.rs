//! The signed ServiceNow webhook.

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use jit_itsm::webhook::{
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookHeaders, change_number,
};

use super::body::{collect_body, declared_length};
#[allow(unused_imports)] // named by the `utoipa::path` annotations
use super::openapi::ErrorBody;
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
    let body = collect_body(declared_length(&req), payload, state.max_body_bytes).await?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = WebhookHeaders {
        timestamp: header(TIMESTAMP_HEADER),
        delivery: header(DELIVERY_HEADER),
        signature: header(SIGNATURE_HEADER),
    };
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
