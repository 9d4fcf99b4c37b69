//! Discovery (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes[/{id}]`, `/Schemas[/{id}]` — public, located,
//! truthful (every advertised writable attribute is stored and returned), `filter` refused with 403, unknown ids
//! 404, other methods 405; and Entra's schema discovery request from the fixtures.

use actix_web::test::TestRequest;
use serde_json::{Map, Value, json};

use crate::harness::{Backend, ISSUER, SCIM, TestApp, both_backends};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A GET with no `Authorization` header.
async fn public_get(app: &TestApp, path: &str) -> crate::harness::Resp {
    app.send(TestRequest::get().uri(&format!("{SCIM}{path}"))).await
}

async fn service_provider_config_advertises_what_the_server_does(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.limits.max_results = 250).await;
    let res = public_get(&app, "/ServiceProviderConfig").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/scim+json"));
    let spc = &res.body;
    assert_eq!(
        spc["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"])
    );
    assert_eq!(spc["patch"], json!({"supported": true}));
    assert_eq!(
        spc["filter"],
        json!({"supported": true, "maxResults": 250}),
        "maxResults is the configured limits.max_results"
    );
    assert_eq!(spc["etag"], json!({"supported": true}));
    assert_eq!(spc["sort"], json!({"supported": true}));
    assert_eq!(spc["changePassword"], json!({"supported": false}));
    assert_eq!(spc["bulk"]["supported"], false);
    let schemes: Vec<&str> = spc["authenticationSchemes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(schemes, ["oauthbearertoken", "httpbasic"]);
    assert_eq!(spc["authenticationSchemes"][0]["primary"], true);
    assert_eq!(spc["meta"]["resourceType"], "ServiceProviderConfig");
    assert_eq!(
        spc["meta"]["location"],
        format!("{ISSUER}{SCIM}/ServiceProviderConfig")
    );
    assert!(spc.get("id").is_none(), "RFC 7643 §5: no id");

    let default = TestApp::start(backend).await;
    let res = public_get(&default, "/ServiceProviderConfig").await;
    assert_eq!(res.body["filter"]["maxResults"], 1000);
}

async fn resource_types_are_listed_and_found_by_id(backend: Backend) {
    let app = TestApp::start(backend).await;
    let res = public_get(&app, "/ResourceTypes").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["schemas"], json!([LIST]));
    assert_eq!(res.body["totalResults"], 2);
    assert_eq!(res.body["itemsPerPage"], 2);
    assert_eq!(res.body["startIndex"], 1);
    let listed = res.body["Resources"].as_array().unwrap().clone();
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["User", "Group"]);
    for rt in &listed {
        let id = rt["id"].as_str().unwrap();
        assert_eq!(rt["meta"]["resourceType"], "ResourceType");
        assert_eq!(
            rt["meta"]["location"],
            format!("{ISSUER}{SCIM}/ResourceTypes/{id}")
        );
        let one = public_get(&app, &format!("/ResourceTypes/{id}")).await;
        assert_eq!(one.status, 200);
        assert_eq!(&one.body, rt, "the single document equals the listed one");
    }
    let user = &listed[0];
    assert_eq!(user["endpoint"], "/Users");
    assert_eq!(user["schema"], USER);
    assert_eq!(
        user["schemaExtensions"],
        json!([{"schema": ENTERPRISE, "required": false}])
    );
    let group = &listed[1];
    assert_eq!(group["endpoint"], "/Groups");
    assert_eq!(group["schema"], GROUP);
    assert!(
        group.get("schemaExtensions").is_none(),
        "Entra's ADSCIM Group URN is accepted in bodies, not advertised: nothing is stored under it"
    );
    assert_eq!(public_get(&app, "/ResourceTypes/user").await.body["id"], "User");

    let missing = public_get(&app, "/ResourceTypes/Device").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["schemas"], json!([ERROR]));
    assert_eq!(missing.body["status"], "404");
}

async fn schemas_are_listed_and_found_by_urn(backend: Backend) {
    let app = TestApp::start(backend).await;
    let res = public_get(&app, "/Schemas").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["schemas"], json!([LIST]));
    let listed = res.body["Resources"].as_array().unwrap().clone();
    assert_eq!(res.body["totalResults"], listed.len());
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            USER,
            ENTERPRISE,
            GROUP,
            "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig",
            "urn:ietf:params:scim:schemas:core:2.0:ResourceType",
            "urn:ietf:params:scim:schemas:core:2.0:Schema",
        ]
    );
    for schema in &listed {
        let id = schema["id"].as_str().unwrap();
        assert_eq!(
            schema["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:Schema"])
        );
        assert_eq!(schema["meta"]["resourceType"], "Schema");
        assert_eq!(schema["meta"]["location"], format!("{ISSUER}{SCIM}/Schemas/{id}"));
        let one = public_get(&app, &format!("/Schemas/{id}")).await;
        assert_eq!(one.status, 200, "{id}");
        assert_eq!(&one.body, schema, "the single document equals the listed one");
        for attr in schema["attributes"].as_array().unwrap() {
            check_attribute_definition(attr, id);
        }
    }
    let folded = public_get(&app, &format!("/Schemas/{}", USER.to_uppercase())).await;
    assert_eq!(folded.status, 200);
    assert_eq!(folded.body["id"], USER);

    let missing = public_get(&app, "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Device").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["schemas"], json!([ERROR]));
}

/// RFC 7643 §7 attribute definitions as Entra's validator wants them: characteristics in camelCase, no nulls.
fn check_attribute_definition(attr: &Value, schema: &str) {
    let name = attr["name"].as_str().unwrap();
    let one_of = |key: &str, allowed: &[&str]| {
        if let Some(v) = attr.get(key) {
            let v = v.as_str().unwrap();
            assert!(allowed.contains(&v), "{schema} {name}: {key} = {v}");
        }
    };
    one_of(
        "type",
        &[
            "string",
            "boolean",
            "decimal",
            "integer",
            "dateTime",
            "reference",
            "complex",
            "binary",
        ],
    );
    one_of("mutability", &["readOnly", "readWrite", "immutable", "writeOnly"]);
    one_of("returned", &["always", "never", "default", "request"]);
    one_of("uniqueness", &["none", "server", "global"]);
    for (key, value) in attr.as_object().unwrap() {
        assert!(!value.is_null(), "{schema} {name}: {key} is null");
    }
    assert!(attr["multiValued"].is_boolean(), "{schema} {name}");
    for sub in attr["subAttributes"].as_array().into_iter().flatten() {
        check_attribute_definition(sub, schema);
    }
}

async fn discovery_is_public_and_ignores_credentials(backend: Backend) {
    let app = TestApp::start(backend).await;
    for path in [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/ResourceTypes/User",
        "/Schemas",
        &format!("/Schemas/{USER}"),
    ] {
        for auth in [
            None,
            Some("Bearer ofb_wrong".to_owned()),
            Some(format!("Bearer {}", app.token)),
        ] {
            let mut req = TestRequest::get().uri(&format!("{SCIM}{path}"));
            if let Some(a) = &auth {
                req = req.insert_header(("Authorization", a.as_str()));
            }
            let res = app.send(req).await;
            assert_eq!(res.status, 200, "{path} with {auth:?}: {}", res.text);
        }
    }
}

async fn list_parameters_are_ignored_and_filter_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let all = public_get(&app, "/Schemas").await.body;
    let paged = public_get(
        &app,
        "/Schemas?startIndex=3&count=1&sortBy=name&sortOrder=descending&attributes=id",
    )
    .await;
    assert_eq!(paged.status, 200);
    assert_eq!(paged.body, all, "RFC 7644 §4: list parameters SHALL be ignored");
    for path in [
        "/Schemas?filter=id%20eq%20%22x%22",
        "/ResourceTypes?FILTER=name%20eq%20%22User%22",
        "/ResourceTypes/User?filter=x",
        "/ServiceProviderConfig?filter=x",
    ] {
        let res = public_get(&app, path).await;
        assert_eq!(res.status, 403, "{path}: {}", res.text);
        assert_eq!(res.body["schemas"], json!([ERROR]));
        assert_eq!(res.body["status"], "403");
    }
}

async fn other_methods_get_405(backend: Backend) {
    let app = TestApp::start(backend).await;
    for path in [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/ResourceTypes/User",
        "/Schemas",
        &format!("/Schemas/{USER}"),
    ] {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let res = app.scim(method, path, Some(&json!({}))).await;
            assert_eq!(res.status, 405, "{method} {path}: {}", res.text);
            assert_eq!(res.header("allow"), Some("GET"));
            assert_eq!(res.header("content-type"), Some("application/scim+json"));
            assert_eq!(res.body["schemas"], json!([ERROR]));
            assert_eq!(res.body["status"], "405");
        }
    }
}

/// A value for every attribute a client may write (not readOnly), by its advertised type.
fn sample(attr: &Value, tag: &str) -> Option<Value> {
    if attr["mutability"] == "readOnly" {
        return None;
    }
    let name = attr["name"].as_str().unwrap();
    let tag = format!("{tag}-{name}");
    let one = match attr["type"].as_str().unwrap() {
        "complex" => {
            let subs: Map<String, Value> = attr["subAttributes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| Some((s["name"].as_str().unwrap().to_owned(), sample(s, &tag)?)))
                .collect();
            Value::Object(subs)
        }
        "boolean" => json!(true),
        "reference" => json!(format!("https://example.com/{tag}")),
        "binary" => json!("AQIDBA=="),
        "integer" => json!(7),
        "decimal" => json!(1.5),
        "dateTime" => json!("2020-01-02T03:04:05Z"),
        _ => attr["canonicalValues"]
            .get(0)
            .cloned()
            .unwrap_or_else(|| json!(format!("{tag}@example.com"))),
    };
    Some(if attr["multiValued"] == true {
        json!([one])
    } else {
        one
    })
}

async fn every_advertised_user_attribute_is_stored_and_returned(backend: Backend) {
    let app = TestApp::start(backend).await;
    let core = public_get(&app, &format!("/Schemas/{USER}")).await.body;
    let enterprise = public_get(&app, &format!("/Schemas/{ENTERPRISE}")).await.body;
    let mut body = json!({"schemas": [USER, ENTERPRISE]});
    let mut written = Vec::new();
    for (urn, schema) in [(None, &core), (Some(ENTERPRISE), &enterprise)] {
        for attr in schema["attributes"].as_array().unwrap() {
            let Some(value) = sample(attr, "u") else { continue };
            let name = attr["name"].as_str().unwrap().to_owned();
            let target = match urn {
                None => &mut body,
                Some(urn) => body
                    .as_object_mut()
                    .unwrap()
                    .entry(urn)
                    .or_insert_with(|| json!({})),
            };
            target[&name] = value.clone();
            written.push((urn, name, value, attr["returned"] == "never"));
        }
    }
    assert!(written.len() >= 25, "{written:?}");
    let created = app.post("/Users", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    let got = app.get(&format!("/Users/{id}")).await;
    assert_eq!(got.status, 200);
    for (urn, name, value, never) in &written {
        let returned = match urn {
            None => got.body.get(name),
            Some(urn) => got.body[urn].get(name),
        };
        if *never {
            assert!(returned.is_none(), "{name} is advertised returned=never");
        } else {
            assert_eq!(
                returned,
                Some(value),
                "{name} is advertised, so it must be stored and returned"
            );
        }
    }
}

async fn every_advertised_group_attribute_is_stored_and_returned(backend: Backend) {
    let app = TestApp::start(backend).await;
    let user_id = app.create_user("member@example.com").await;
    let schema = public_get(&app, &format!("/Schemas/{GROUP}")).await.body;
    let names: Vec<&str> = schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["displayName", "members"]);
    let res = app
        .post(
            "/Groups",
            &json!({"schemas": [GROUP], "displayName": "Engineers", "externalId": "g-ext",
                    "members": [{"value": user_id}]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let got = app
        .get(&format!("/Groups/{}", res.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.body["displayName"], "Engineers");
    assert_eq!(got.body["externalId"], "g-ext");
    let member = &got.body["members"][0];
    let subs: Vec<&str> = schema["attributes"][1]["subAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for sub in subs {
        assert!(member.get(sub).is_some(), "members.{sub} is advertised: {member}");
    }
    assert_eq!(member["value"], user_id.as_str());
    assert_eq!(member["type"], "User");
    assert_eq!(member["$ref"], format!("{ISSUER}{SCIM}/Users/{user_id}"));
}

/// `tests/fixtures/idp/entra-get-schemas.json`: Entra's schema discovery, with its bearer token; a `ListResponse`
/// with `Resources` that includes the Group schema (the gallery validator fails group tests without it).
async fn entra_schema_discovery_fixture(backend: Backend) {
    let app = TestApp::start(backend).await;
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/idp/entra-get-schemas.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut req = TestRequest::default()
        .method(actix_web::http::Method::from_bytes(fixture["method"].as_str().unwrap().as_bytes()).unwrap())
        .uri(&format!("{SCIM}{}", fixture["path"].as_str().unwrap()));
    for (k, v) in fixture["headers"].as_object().unwrap() {
        req = req.insert_header((k.as_str(), v.as_str().unwrap().replace("{{token}}", &app.token)));
    }
    let res = app.send(req).await;
    assert_eq!(res.status, fixture["expected_status"], "{}", res.text);
    assert_eq!(res.body["schemas"], fixture["expected_body_subset"]["schemas"]);
    let resources = res.body["Resources"].as_array().unwrap();
    for urn in [USER, ENTERPRISE, GROUP] {
        assert!(resources.iter().any(|s| s["id"] == urn), "{urn} missing");
    }
    assert!(no_nulls(&res.body), "Entra: no null values");
}

fn no_nulls(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => a.iter().all(no_nulls),
        Value::Object(m) => m.values().all(no_nulls),
        _ => true,
    }
}

both_backends!(
    service_provider_config_advertises_what_the_server_does,
    resource_types_are_listed_and_found_by_id,
    schemas_are_listed_and_found_by_urn,
    discovery_is_public_and_ignores_credentials,
    list_parameters_are_ignored_and_filter_is_refused,
    other_methods_get_405,
    every_advertised_user_attribute_is_stored_and_returned,
    every_advertised_group_attribute_is_stored_and_returned,
    entra_schema_discovery_fixture,
);
