//! Discovery (RFC 7644 §4; RFC 7643 §5–7): `GET /ServiceProviderConfig`, `/ResourceTypes`, `/ResourceTypes/{id}`,
//! `/Schemas` and `/Schemas/{id}`, served from the documents of the schema registry (`scim-schemas/`), the same
//! ones the server enforces. Each document gets its `meta.location` from the SCIM base URL; the
//! `ServiceProviderConfig` gets `filter.maxResults` from the `limits.max_results` config value.
//!
//! No credential required, on purpose: RFC 7644 §4 does not ask for one, RFC 7643 §5 says the
//! `authenticationSchemes` SHOULD be readable "without prior authentication", and these documents hold nothing
//! but the server's static capabilities (no tenant data, no database read). A credential sent anyway (Entra sends
//! its bearer token to `/Schemas`) is ignored.
//!
//! Per RFC 7644 §4 the list parameters of §3.4.2 are ignored, except `filter`, which is refused with 403 so that
//! a client never believes a filter was applied. Unknown ids answer 404 and methods other than GET answer 405
//! (with `Allow: GET`), both as SCIM errors.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::error::SCIM_JSON;
use crate::error::AppError;
use crate::scim::schema::registry;
use crate::scim::{LIST_RESPONSE_SCHEMA, ScimError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get_only("/ServiceProviderConfig").route(web::get().to(get_service_provider_config)))
        .service(get_only("/ResourceTypes").route(web::get().to(list_resource_types)))
        .service(get_only("/ResourceTypes/{id}").route(web::get().to(get_resource_type)))
        .service(get_only("/Schemas").route(web::get().to(list_schemas)))
        .service(get_only("/Schemas/{id}").route(web::get().to(get_schema)));
}

/// A resource that answers every method but the GET route added to it with 405.
fn get_only(path: &str) -> actix_web::Resource {
    super::scim_resource(path, "GET")
}

fn scim_json(body: &Value) -> HttpResponse {
    HttpResponse::Ok().content_type(SCIM_JSON).json(body)
}

/// `GET /ServiceProviderConfig` (no credential).
async fn get_service_provider_config(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    refuse_filter(&req)?;
    Ok(scim_json(&service_provider_config(
        &state.scim_base,
        state.config.limits.max_results,
    )))
}

/// `GET /ResourceTypes` (no credential).
async fn list_resource_types(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    refuse_filter(&req)?;
    Ok(scim_json(&list(&resource_types(&state.scim_base))))
}

/// `GET /ResourceTypes/{id}` (no credential).
async fn get_resource_type(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    refuse_filter(&req)?;
    let doc = find(resource_types(&state.scim_base), &id)
        .ok_or_else(|| ScimError::not_found(format!("no resource type {id}")))?;
    Ok(scim_json(&doc))
}

/// `GET /Schemas` (no credential).
async fn list_schemas(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    refuse_filter(&req)?;
    Ok(scim_json(&list(&schemas(&state.scim_base))))
}

/// `GET /Schemas/{id}` (no credential).
async fn get_schema(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    refuse_filter(&req)?;
    let doc = find(schemas(&state.scim_base), &id)
        .ok_or_else(|| ScimError::not_found(format!("no schema {id}")))?;
    Ok(scim_json(&doc))
}

/// RFC 7644 §4: "If a `filter` is provided, the service provider SHOULD respond with HTTP status code 403".
/// Every other query parameter is ignored, a malformed query string included.
fn refuse_filter(req: &HttpRequest) -> Result<(), AppError> {
    let filtered = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .is_ok_and(|q| q.iter().any(|(k, _)| k.eq_ignore_ascii_case("filter")));
    if filtered {
        return Err(ScimError::new(403, None, "discovery endpoints do not support filtering").into());
    }
    Ok(())
}

/// A copy of `doc` with `meta.location` set (and `meta` created if the document has none).
fn located(doc: &Value, location: String) -> Value {
    let mut doc = doc.clone();
    if let Some(obj) = doc.as_object_mut() {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("location".into(), Value::String(location));
        }
    }
    doc
}

/// The `ServiceProviderConfig` document with this server's `maxResults` and location.
fn service_provider_config(base: &str, max_results: usize) -> Value {
    let mut doc = located(
        registry().service_provider_config(),
        format!("{base}/ServiceProviderConfig"),
    );
    if let Some(filter) = doc.get_mut("filter").and_then(Value::as_object_mut) {
        filter.insert("maxResults".into(), json!(max_results));
    }
    doc
}

/// Every resource type document (User, Group), located.
fn resource_types(base: &str) -> Vec<Value> {
    registry()
        .resource_types()
        .iter()
        .map(|rt| located(&rt.document, format!("{base}/ResourceTypes/{}", rt.name)))
        .collect()
}

/// Every schema document: the resource schemas (User, enterprise User, Group), then the schemas of the discovery
/// resources themselves (`ServiceProviderConfig`, `ResourceType`, `Schema`), located.
fn schemas(base: &str) -> Vec<Value> {
    let r = registry();
    r.schemas()
        .iter()
        .map(|s| &s.document)
        .chain(r.discovery_schemas())
        .map(|doc| {
            let id = doc.get("id").and_then(Value::as_str).unwrap_or_default();
            located(doc, format!("{base}/Schemas/{id}"))
        })
        .collect()
}

/// The document whose `id` is `id`, compared case-insensitively (schema URNs and resource type names are).
fn find(docs: Vec<Value>, id: &str) -> Option<Value> {
    docs.into_iter().find(|d| {
        d.get("id")
            .and_then(Value::as_str)
            .is_some_and(|d| crate::scim::schema::eq_fold(d, id))
    })
}

/// A `ListResponse` of every document (RFC 7644 §4: paging parameters are ignored, so this is one page).
fn list(resources: &[Value]) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA};

    #[test]
    fn service_provider_config_is_filled_in_at_request_time() {
        let doc = service_provider_config("https://x.example/scim/v2", 37);
        assert_eq!(doc["filter"], json!({"supported": true, "maxResults": 37}));
        assert_eq!(
            doc["meta"]["location"],
            "https://x.example/scim/v2/ServiceProviderConfig"
        );
        assert_eq!(doc["meta"]["resourceType"], "ServiceProviderConfig");
        assert_eq!(
            registry().service_provider_config()["filter"]["maxResults"],
            1000,
            "the embedded document is not changed"
        );
    }

    #[test]
    fn every_schema_and_resource_type_is_located_and_findable() {
        let base = "http://h/scim/v2";
        let all = schemas(base);
        assert_eq!(all.len(), 6);
        for doc in &all {
            assert_eq!(doc["schemas"], json!([SCHEMA_SCHEMA]));
            assert_eq!(doc["meta"]["resourceType"], "Schema");
            let id = doc["id"].as_str().unwrap();
            assert_eq!(doc["meta"]["location"], format!("{base}/Schemas/{id}"));
            assert_eq!(find(schemas(base), &id.to_uppercase()).as_ref(), Some(doc));
        }
        for doc in resource_types(base) {
            assert_eq!(doc["schemas"], json!([RESOURCE_TYPE_SCHEMA]));
            let id = doc["id"].as_str().unwrap();
            assert_eq!(doc["meta"]["location"], format!("{base}/ResourceTypes/{id}"));
            let schema = doc["schema"].as_str().unwrap();
            assert!(find(schemas(base), schema).is_some(), "{schema}");
        }
        assert!(find(schemas(base), "urn:nope").is_none());
    }
}
