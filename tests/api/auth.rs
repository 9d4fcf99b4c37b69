//! API credentials on SCIM endpoints: 401 with a Bearer challenge and a SCIM body when missing or wrong, 403
//! without the scope, revocation effective at once, Bearer scheme case-insensitive, HTTP Basic accepted.

use actix_web::test::TestRequest;
use base64::Engine;
use offboard::credentials::{self, Scope};

use crate::harness::{Backend, SCIM, TestApp, both_backends};

fn get_users(auth: Option<&str>) -> TestRequest {
    let req = TestRequest::get().uri(&format!("{SCIM}/Users"));
    match auth {
        Some(a) => req.insert_header(("Authorization", a.to_owned())),
        None => req,
    }
}

async fn missing_or_wrong_credentials_get_401(backend: Backend) {
    let app = TestApp::start(backend).await;
    for auth in [
        None,
        Some("Bearer ofb_wrong"),
        Some("Bearer"),
        Some("Token abc"),
        Some("Basic !!"),
    ] {
        let res = app.send(get_users(auth)).await;
        assert_eq!(res.status, 401, "{auth:?}");
        assert!(
            res.header("www-authenticate").unwrap().starts_with("Bearer"),
            "{auth:?}"
        );
        assert_eq!(res.header("content-type"), Some("application/scim+json"));
        assert_eq!(res.body["status"], "401");
        assert_eq!(
            res.body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
    }
}

async fn scheme_is_case_insensitive_and_basic_works(backend: Backend) {
    let app = TestApp::start(backend).await;
    let lower = app.send(get_users(Some(&format!("bearer {}", app.token)))).await;
    assert_eq!(lower.status, 200, "{}", lower.text);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("idp:{}", app.token));
    assert_eq!(
        app.send(get_users(Some(&format!("Basic {basic}")))).await.status,
        200
    );
    let wrong_name = base64::engine::general_purpose::STANDARD.encode(format!("other:{}", app.token));
    assert_eq!(
        app.send(get_users(Some(&format!("Basic {wrong_name}"))))
            .await
            .status,
        401
    );
}

async fn wrong_scope_gets_403(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("auditor", &[Scope::AuditRead]);
    let res = app.send(get_users(Some(&format!("Bearer {secret}")))).await;
    assert_eq!(res.status, 403, "{}", res.text);
    assert_eq!(res.body["status"], "403");
}

async fn revocation_takes_effect_on_the_next_request(backend: Backend) {
    let app = TestApp::start(backend).await;
    let auth = format!("Bearer {}", app.token);
    assert_eq!(app.send(get_users(Some(&auth))).await.status, 200);
    credentials::revoke(app.db(), "idp").unwrap();
    assert_eq!(app.send(get_users(Some(&auth))).await.status, 401);
    assert!(matches!(
        credentials::revoke(app.db(), "idp"),
        Err(credentials::CredentialError::NotFound(_))
    ));
}

async fn secrets_are_stored_only_as_hashes_and_last_use_is_batched(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rows = credentials::list(app.db()).unwrap();
    let row = rows.iter().find(|c| c.name == "idp").unwrap();
    assert_ne!(row.secret_hash, app.token);
    assert!(!row.secret_hash.contains(&app.token[4..]));
    assert_eq!(row.secret_hash, credentials::hash_secret(&app.token));
    assert!(row.last_used_at.is_none());
    assert_eq!(
        app.send(get_users(Some(&format!("Bearer {}", app.token))))
            .await
            .status,
        200
    );
    assert!(
        credentials::list(app.db()).unwrap()[0].last_used_at.is_none(),
        "authentication does not write"
    );
    assert_eq!(app.state.usage.flush(app.db()).unwrap(), 1);
    let row = credentials::list(app.db())
        .unwrap()
        .into_iter()
        .find(|c| c.name == "idp")
        .unwrap();
    assert!(row.last_used_at.is_some());
}

async fn duplicate_credential_names_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    assert!(matches!(
        credentials::create(app.db(), "idp", &[Scope::Scim]),
        Err(credentials::CredentialError::Exists(_))
    ));
}

async fn every_scim_route_requires_a_credential(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("victim@example.com").await;
    let routes = [
        ("GET", "/Users".to_owned()),
        ("GET", "/Users?filter=bad%20filter&attributes=..".to_owned()),
        ("POST", "/Users?attributes=..".to_owned()),
        ("GET", format!("/Users/{id}")),
        ("GET", "/Users/not-an-id".to_owned()),
        ("PUT", format!("/Users/{id}")),
        ("PATCH", format!("/Users/{id}")),
        ("DELETE", format!("/Users/{id}")),
    ];
    for (method, path) in &routes {
        for auth in [None, Some("Bearer ofb_wrong")] {
            let mut req = TestRequest::default()
                .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&format!("{SCIM}{path}"))
                .set_payload(r#"{"userName":"x","Operations":[{"op":"remove","path":"userName"}]}"#);
            if let Some(a) = auth {
                req = req.insert_header(("Authorization", a));
            }
            let res = app.send(req).await;
            assert_eq!(res.status, 401, "{method} {path} with {auth:?}: {}", res.text);
        }
    }
    let user = app.get(&format!("/Users/{id}")).await;
    assert_eq!(user.status, 200, "nothing changed");
    assert_eq!(user.body["meta"]["version"], "W/\"1\"");
}

both_backends!(
    challenges_carry_an_error_code_only_for_a_wrong_credential,
    every_scim_route_requires_a_credential,
    missing_or_wrong_credentials_get_401,
    scheme_is_case_insensitive_and_basic_works,
    wrong_scope_gets_403,
    revocation_takes_effect_on_the_next_request,
    secrets_are_stored_only_as_hashes_and_last_use_is_batched,
    duplicate_credential_names_are_refused,
);

/// RFC 6750 §3.1: a request with no credential (no header, or a scheme offboard does not accept) gets a bare
/// challenge; a wrong Bearer or Basic credential gets `error="invalid_token"`. A Basic name or secret no
/// credential can have (NUL, over-long) is a wrong credential: 401, never a database error.
async fn challenges_carry_an_error_code_only_for_a_wrong_credential(backend: Backend) {
    let app = TestApp::start(backend).await;
    let basic = |name: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{secret}"))
        )
    };
    let long = "n".repeat(credentials::MAX_NAME + 1);
    let cases: Vec<(Option<String>, bool)> = vec![
        (None, false),
        (Some("Digest username=\"x\"".into()), false),
        (Some("Token abc".into()), false),
        (Some("Bearer ofb_wrong".into()), true),
        (Some("Bearer".into()), true),
        (Some(basic("idp", "wrong")), true),
        (Some(basic("i\0dp", "wrong")), true),
        (Some(basic(&long, "wrong")), true),
        (Some(basic("idp", &format!("{}\0", app.token))), true),
    ];
    for path in [
        format!("{SCIM}/Users"),
        "/ssf/streams".into(),
        "/audit/events".into(),
    ] {
        for (auth, wrong) in &cases {
            let mut req = TestRequest::get().uri(&path);
            if let Some(a) = auth {
                req = req.insert_header(("Authorization", a.clone()));
            }
            let res = app.send(req).await;
            assert_eq!(res.status, 401, "{path} {auth:?}: {}", res.text);
            let challenge = res.header("www-authenticate").unwrap();
            assert!(
                challenge.starts_with("Bearer realm="),
                "{path} {auth:?}: {challenge}"
            );
            assert_eq!(
                challenge.contains("error=\"invalid_token\""),
                *wrong,
                "{path} {auth:?}: {challenge}"
            );
            if !wrong {
                assert!(!challenge.contains("error="), "{path} {auth:?}: {challenge}");
            }
        }
    }
    // The OAuth endpoints answer `invalid_client` with a challenge and no error code in it either way.
    for (auth, _) in &cases {
        let mut req = TestRequest::post()
            .uri("/oauth2/introspect")
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload("token=x");
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a.clone()));
        }
        let res = app.send(req).await;
        assert_eq!(res.status, 401, "{auth:?}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_client", "{auth:?}");
        assert!(!res.header("www-authenticate").unwrap().contains("error="));
    }
}
