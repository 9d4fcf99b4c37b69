//! `POST /oauth2/global-token-revocation`: a JSON body `{"sub_id": {…}}` and a private-key JWT as the bearer;
//! the work is `tokens::gtr`. 204 when revocation has begun (here: done).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::AppState;
use crate::tokens::gtr::GtrError;

pub async fn global_token_revocation(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GtrError> {
    let assertion = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if assertion.is_none() {
        return Err(GtrError::Unauthorized(
            "a private-key JWT bearer is required".into(),
        ));
    }
    if !json {
        return Err(GtrError::BadRequest("the body must be application/json".into()));
    }
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| GtrError::BadRequest("the body is not valid JSON".into()))?;
    let auth = state.tokens.clone();
    super::blocking_as(move || auth.global_token_revocation(assertion.as_deref(), &body)).await?;
    Ok(HttpResponse::NoContent().finish())
}
