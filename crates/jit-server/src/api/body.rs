//! Reading what a caller sent: JSON bodies up to the limit, ids, query
//! strings and page sizes, each refusal naming field and rule.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use jit_domain::{FieldError, GrantId};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiError, ApiState};

/// A JSON body, read up to the configured limit; errors name what was wrong.
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<ApiState>>()
            .map_or(16 * 1024, |s| s.max_body_bytes);
        let declared = declared_length(req);
        let json = is_json(req);
        let payload = payload.take();
        Box::pin(async move {
            // A body in another type is refused unread.
            if json == Some(false) {
                return Err(ApiError::UnsupportedMediaType);
            }
            let body = collect_body(declared, payload, limit).await?;
            if body.is_empty() {
                return Err(ApiError::EmptyBody);
            }
            if json.is_none() {
                return Err(ApiError::UnsupportedMediaType);
            }
            serde_json::from_slice(&body)
                .map(JsonBody)
                .map_err(|e| ApiError::MalformedJson(e.to_string()))
        })
    }
}

impl JsonBody {
    /// The typed command a JSON object carries. Every field's shape is taken
    /// as given (the rules are jit-domain's); a body that is not an object
    /// is refused here, naming `rule`.
    pub(super) fn command<T: DeserializeOwned>(self, rule: &str) -> Result<T, ApiError> {
        let refused = |message: String| ApiError::Invalid(vec![FieldError::new("", rule, message)]);
        if !self.0.is_object() {
            return Err(refused("the body must be a JSON object".into()));
        }
        serde_json::from_value(self.0).map_err(|e| refused(e.to_string()))
    }
}

pub(super) fn parse_id(raw: &str) -> Result<GrantId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::Invalid(vec![FieldError::new(
            "id",
            "format",
            "must be a grant id (UUID)",
        )])
    })
}

pub(super) const MAX_PAGE: u32 = 200;

/// A page size from the query: 1 to [`MAX_PAGE`], else a 422 naming `limit`.
pub(super) fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::Invalid(vec![FieldError::new(
            "limit",
            "range",
            format!("must be between 1 and {MAX_PAGE}"),
        )]))
    }
}

/// Whether the declared Content-Type is JSON (`application/json`, with any
/// parameters such as a charset); `None` when none is declared.
fn is_json(req: &HttpRequest) -> Option<bool> {
    let declared = req.headers().get(header::CONTENT_TYPE)?;
    let essence = declared
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    Some(essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json")))
}

pub(super) fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
}

/// Reads a raw body up to `limit` bytes, refusing early on a declared length.
pub(super) async fn collect_body<S, E>(
    declared: Option<usize>,
    mut payload: S,
    limit: usize,
) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub(super) fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::Invalid(vec![FieldError::new("query", "format", e.to_string())]))
}
