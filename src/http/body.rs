//! Request input for SCIM endpoints: the JSON body (`application/scim+json` or `application/json`; IdPs are not
//! always exact about the media type, so any is read as JSON) read under the configured size limit, and the list
//! query parameters. Every failure is a SCIM error: too large → 413, malformed → 400 `invalidSyntax`, a NUL
//! character in the body → 400 `invalidValue` (docs/decisions/0011-nul-and-foreign-ids.md; one in the path or query
//! string is refused for every route by `http::refuse_nul` before any extractor runs).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use super::AppState;
use crate::error::AppError;
use crate::scim::ScimError;

/// A parsed JSON request body.
#[derive(Debug)]
pub struct ScimJson(pub Value);

fn too_large(limit: usize) -> AppError {
    ScimError::new(
        413,
        None,
        format!("request body exceeds the limit of {limit} bytes"),
    )
    .into()
}

/// Reads the whole body under the configured size limit (413 beyond it).
fn read_limited(
    req: &HttpRequest,
    payload: &mut actix_web::dev::Payload,
) -> Pin<Box<dyn Future<Output = Result<web::BytesMut, AppError>>>> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(2 * 1024 * 1024, |s| s.config.limits.max_body_bytes);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut payload = payload.take();
    Box::pin(async move {
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| ScimError::invalid_syntax("the request body could not be read"))?;
            if buf.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    })
}

impl FromRequest for ScimJson {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let body = read_limited(req, payload);
        Box::pin(async move { Ok(Self(parse_json(&body.await?)?)) })
    }
}

/// A body read under the size limit but not parsed yet: for handlers that parse it only after the credential is
/// checked, inside `Authenticated::run` (a `.search` body is read, not acted on, before authentication).
#[derive(Debug)]
pub struct ScimBody(pub web::Bytes);

impl ScimBody {
    /// The body as JSON, with the errors of [`parse_json`].
    pub fn json(&self) -> Result<Value, ScimError> {
        parse_json(&self.0)
    }
}

impl FromRequest for ScimBody {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let body = read_limited(req, payload);
        Box::pin(async move { Ok(Self(body.await?.freeze())) })
    }
}

/// Parses a body as JSON; rejects NUL characters in any string.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ScimError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty"));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))?;
    if contains_nul(&value) {
        return Err(ScimError::invalid_value(
            "strings must not contain the NUL character",
        ));
    }
    Ok(value)
}

/// Depth is bounded by `serde_json`'s recursion limit (128), so plain recursion is safe here.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Query parameters with names matched case-insensitively (IdPs differ in case).
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

impl FromRequest for Params {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let parsed = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| {
                Params(
                    q.into_inner()
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v))
                        .collect(),
                )
            })
            .map_err(|_| ScimError::invalid_value("the query string is malformed").into());
        // A NUL (`%00`) in the query string never gets here: `http::refuse_nul` answers it for every route.
        std::future::ready(parsed)
    }
}

/// Makes actix's own `web::Query` failures SCIM errors too.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|_, _| {
        AppError::from(ScimError::invalid_value("the query string is malformed")).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_scim_errors() {
        assert_eq!(
            parse_json(b"{").unwrap_err().scim_type,
            Some(crate::scim::ScimType::InvalidSyntax)
        );
        assert_eq!(
            parse_json(b"  ").unwrap_err().scim_type,
            Some(crate::scim::ScimType::InvalidSyntax)
        );
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().scim_type,
            Some(crate::scim::ScimType::InvalidSyntax)
        );
        assert_eq!(
            parse_json(br#"{"userName":"a\u0000b"}"#).unwrap_err().scim_type,
            Some(crate::scim::ScimType::InvalidValue)
        );
        assert!(parse_json(br#"{"userName":"ok"}"#).is_ok());
    }
}
