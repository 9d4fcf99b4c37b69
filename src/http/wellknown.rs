//! Discovery documents, no authentication: `/.well-known/jwks.json` (RFC 7517; public keys only, cacheable for
//! `keys.jwks_max_age_secs`) and the RFC 8414 metadata at `/.well-known/oauth-authorization-server`, also served
//! at `/.well-known/openid-configuration`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use crate::tokens::gtr::GTR_PATH;
use crate::tokens::{ACCESS_TYP, CLI_CLIENT};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/jwks.json", web::get().to(jwks))
        .route("/.well-known/oauth-authorization-server", web::get().to(metadata))
        .route("/.well-known/openid-configuration", web::get().to(metadata));
}

/// GET /.well-known/jwks.json. A key declared compromised by any process is gone from the very next answer: the
/// list of compromised keys is re-read first (one small statement; on a database error the keys in memory are
/// served, as the periodic reload would).
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys = state.tokens.keys.clone();
    match web::block(move || keys.sync()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("could not re-read the signing keys: {e}"),
        Err(e) => tracing::error!("could not re-read the signing keys: {e}"),
    }
    let max_age = state.config.keys.jwks_max_age_secs;
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("public, max-age={max_age}"))
                .unwrap_or(HeaderValue::from_static("public, max-age=300")),
        ))
        .body(state.tokens.keys.jwks().to_string())
}

/// The RFC 8414 document for a configuration.
pub fn metadata_document(state: &AppState) -> Value {
    let iss = &state.config.issuer;
    let alg = state.config.tokens.algorithm.as_str();
    json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "global_token_revocation_endpoint": format!("{iss}{GTR_PATH}"),
        "response_types_supported": [],
        "grant_types_supported": [
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "global_token_revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "global_token_revocation_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
        "access_token_signing_alg_values_supported": [alg],
        "access_token_types_supported": [ACCESS_TYP],
        "subject_token_types_supported": [
            "urn:ietf:params:oauth:token-type:id_token",
            "urn:ietf:params:oauth:token-type:jwt"
        ],
        "public_client_id": CLI_CLIENT,
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope",
            "preferred_username", "groups", "sid", "tgen"
        ],
        "offboard_claims": {
            "tgen": "the user's token generation when the token was minted (private claim). offboard raises a user's \
                     generation whenever it ends their access (deactivation, deletion, removal from a group, global \
                     token revocation); a token is active only while its tgen equals the user's current generation",
            "sid": "the login (refresh-token family) the token belongs to; revoking the family ends its tokens"
        }
    })
}

/// GET /.well-known/oauth-authorization-server and /.well-known/openid-configuration
async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        ))
        .json(metadata_document(&state))
}
