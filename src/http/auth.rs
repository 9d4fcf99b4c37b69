//! `Authenticated<S>`: the extractor that authenticates an API credential (`Authorization: Bearer SECRET`, or HTTP
//! Basic `name:secret`; scheme case-insensitive) and requires the scope `S`. Missing or invalid → 401 with a
//! `WWW-Authenticate: Bearer` challenge; valid without the scope → 403. One indexed read per request; last-used
//! times are recorded in memory and written in batches.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::{AppState, blocking};
use crate::credentials::{self, Client, Presented, Scope};
use crate::error::AppError;

/// A scope an endpoint requires, as a type.
pub trait RequiredScope {
    const SCOPE: Scope;
}

/// Scope `scim`: the IdP's provisioning client.
#[derive(Debug)]
pub struct ScimScope;

impl RequiredScope for ScimScope {
    const SCOPE: Scope = Scope::Scim;
}

/// An authenticated client holding scope `S`.
#[derive(Debug)]
pub struct Authenticated<S> {
    pub client: Client,
    scope: PhantomData<S>,
}

impl<S: RequiredScope + 'static> FromRequest for Authenticated<S> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().ok().and_then(Presented::parse));
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let state = state.ok_or_else(|| AppError::internal("AppState missing"))?;
            let presented = match presented {
                None => return Err(AppError::Unauthorized { presented: false }),
                Some(None) => return Err(AppError::Unauthorized { presented: true }),
                Some(Some(p)) => p,
            };
            let db = state.db.clone();
            let client = blocking(move || {
                db.read(|c| credentials::authenticate(c, &presented).map_err(AppError::from))
            })
            .await?;
            let Some(client) = client else {
                tracing::info!("rejected an unknown or revoked credential");
                return Err(AppError::Unauthorized { presented: true });
            };
            state.usage.record(&client.name);
            if !client.has(S::SCOPE) {
                tracing::info!(credential.name = %client.name, "credential {} lacks scope {}", client.name, S::SCOPE.as_str());
                return Err(AppError::Forbidden(S::SCOPE.as_str()));
            }
            Ok(Self {
                client,
                scope: PhantomData,
            })
        })
    }
}
