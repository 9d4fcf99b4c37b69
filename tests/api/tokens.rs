//! The token authority over HTTP: metadata and JWKS, minting, introspection and every refusal case, refresh
//! rotation with reuse detection, client credentials, RFC 7009 revocation, token exchange from a trusted issuer,
//! Global Token Revocation, key rotation, and the race between minting and deactivation.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use offboard::config::MappedAttribute;
use offboard::credentials::Scope;
use offboard::tokens::AccessClaims;
use serde_json::{Value, json};

use crate::harness::{Backend, ISSUER, TEST_KEK, TestApp, both_backends, new_user, patch_op};
use crate::idp::{Idp, unix_now};

/// A resource server's introspection credential on `app`.
fn introspector(app: &TestApp) -> String {
    app.credential("rs", &[Scope::Introspect])
}

async fn introspect(app: &TestApp, secret: &str, token: &str) -> Value {
    let res = app
        .form("/oauth2/introspect", Some(("rs", secret)), &[("token", token)])
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    res.body
}

async fn refresh(app: &TestApp, token: &str) -> crate::harness::Resp {
    app.form(
        "/oauth2/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "offboard-cli"),
            ("refresh_token", token),
        ],
    )
    .await
}

fn claims_of(token: &str) -> AccessClaims {
    jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap()
}

fn header_of(token: &str) -> Header {
    jsonwebtoken::decode_header(token).unwrap()
}

fn sign(app: &TestApp, typ: &str, claims: &impl serde::Serialize) -> String {
    app.state
        .tokens
        .keys
        .access_signer()
        .unwrap()
        .sign(typ, claims)
        .unwrap()
}

const INACTIVE: &str = r#"{"active":false}"#;

async fn metadata_and_jwks_are_published(backend: Backend) {
    let app = TestApp::start(backend).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let res = app.send(actix_web::test::TestRequest::get().uri(path)).await;
        assert_eq!(res.status, 200, "{path}");
        let m = &res.body;
        assert_eq!(m["issuer"], ISSUER);
        assert_eq!(m["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
        assert_eq!(m["token_endpoint"], format!("{ISSUER}/oauth2/token"));
        assert_eq!(m["introspection_endpoint"], format!("{ISSUER}/oauth2/introspect"));
        assert_eq!(m["revocation_endpoint"], format!("{ISSUER}/oauth2/revoke"));
        assert_eq!(
            m["global_token_revocation_endpoint"],
            format!("{ISSUER}/oauth2/global-token-revocation")
        );
        let grants: Vec<&str> = m["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        assert!(grants.contains(&"refresh_token") && grants.contains(&"client_credentials"));
        assert!(grants.contains(&"urn:ietf:params:oauth:grant-type:token-exchange"));
        assert!(m["claims_supported"].as_array().unwrap().contains(&json!("tgen")));
        assert!(
            m["offboard_claims"]["tgen"]
                .as_str()
                .unwrap()
                .contains("generation")
        );
    }
    let res = app
        .send(actix_web::test::TestRequest::get().uri("/.well-known/jwks.json"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), Some("public, max-age=300"));
    let keys = res.body["keys"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        2,
        "the active key and the pre-published next one: {}",
        res.text
    );
    for k in keys {
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["alg"], "RS256");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kid"].as_str().unwrap().len(), 43);
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none(), "JWKS leaks `{private}`");
        }
    }
}

/// The brief's new-user flow: create over SCIM, mint, introspect (active), deactivate over SCIM, introspect
/// (inactive), refresh (`invalid_grant`).
async fn deactivation_kills_tokens_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    let id = app.create_user("jane@example.com").await;
    let tokens = app.login("JANE@example.com");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 300);
    let header = header_of(&tokens.access_token);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, Algorithm::RS256);
    let claims = claims_of(&tokens.access_token);
    assert_eq!(claims.sub, id);
    assert_eq!(claims.tgen, Some(0));
    assert_eq!(claims.preferred_username.as_deref(), Some("jane@example.com"));
    assert_eq!(claims.exp - claims.iat, 300);

    let answer = introspect(&app, &rs, &tokens.access_token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["sub"], id.as_str());
    assert_eq!(answer["username"], "jane@example.com");
    assert_eq!(answer["tgen"], 0);
    assert_eq!(answer["client_id"], "offboard-cli");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["groups"], json!([]));

    let res = app
        .patch(
            &format!("/Users/{id}"),
            &patch_op("replace", None, &json!({"active": false})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        introspect(&app, &rs, &tokens.access_token).await.to_string(),
        INACTIVE
    );
    let res = refresh(&app, tokens.refresh_token.as_deref().unwrap()).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"], "invalid_grant");
    // Reactivation keeps the generation: the old token stays dead, and an inactive user got no token meanwhile.
    let minted = app.state.tokens.login(
        &offboard::tokens::UserKey::UserName("jane@example.com".into()),
        "offboard-cli",
        &offboard::tokens::TokenRequest::default(),
    );
    assert!(matches!(
        minted,
        Err(offboard::tokens::OAuthError::InvalidGrant(_))
    ));
    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", None, &json!({"active": true})),
    )
    .await;
    assert_eq!(app.user_row(&id).token_generation, 1);
    assert_eq!(
        introspect(&app, &rs, &tokens.access_token).await.to_string(),
        INACTIVE
    );
    let fresh = app.login("jane@example.com");
    assert_eq!(introspect(&app, &rs, &fresh.access_token).await["tgen"], 1);
}

async fn every_forged_or_stale_token_is_inactive(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    app.create_user("mallory@example.com").await;
    let good = app.login("mallory@example.com").access_token;
    assert_eq!(introspect(&app, &rs, &good).await["active"], true);
    let base = claims_of(&good);
    let kid = header_of(&good).kid.unwrap();
    let now = unix_now();
    let mut cases: Vec<(&str, String)> = Vec::new();

    let mut bad_sig = good.clone();
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    cases.push(("bad signature", bad_sig));

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = serde_json::to_value(&base).unwrap();
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
            b64(&payload)
        ),
    ));

    let jwks = app.state.tokens.keys.jwks();
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    let hs_token =
        jsonwebtoken::encode(&hs, &base, &EncodingKey::from_secret(jwks.as_bytes()).unwrap()).unwrap();
    cases.push(("HS256 with the public key", hs_token));

    let other = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new())
        .unwrap();
    let mut ed = Header::new(Algorithm::EdDSA);
    ed.typ = Some("at+jwt".into());
    ed.kid = Some("no-such-kid".into());
    cases.push((
        "unknown kid",
        jsonwebtoken::encode(&ed, &base, &EncodingKey::from_ed_der(other.as_ref())).unwrap(),
    ));
    ed.kid = Some(kid.clone());
    cases.push((
        "another key under our kid",
        jsonwebtoken::encode(&ed, &base, &EncodingKey::from_ed_der(other.as_ref())).unwrap(),
    ));

    let with = |f: &dyn Fn(&mut AccessClaims)| {
        let mut c = base.clone();
        c.jti = uuid::Uuid::new_v4().to_string();
        f(&mut c);
        c
    };
    cases.push(("typ JWT", sign(&app, "JWT", &with(&|_| {}))));
    cases.push((
        "expired",
        sign(
            &app,
            "at+jwt",
            &with(&|c| {
                c.iat = now - 400;
                c.nbf = now - 400;
                c.exp = now - 100;
            }),
        ),
    ));
    cases.push((
        "not yet valid",
        sign(&app, "at+jwt", &with(&|c| c.nbf = now + 100)),
    ));
    cases.push((
        "wrong iss",
        sign(&app, "at+jwt", &with(&|c| c.iss = "http://evil.test".into())),
    ));
    cases.push((
        "wrong aud",
        sign(&app, "at+jwt", &with(&|c| c.aud = "http://elsewhere.test".into())),
    ));
    cases.push(("newer tgen", sign(&app, "at+jwt", &with(&|c| c.tgen = Some(1)))));
    cases.push(("no sid", sign(&app, "at+jwt", &with(&|c| c.sid = None))));
    cases.push(("garbage", "not-a-token".into()));
    for (what, token) in &cases {
        assert_eq!(introspect(&app, &rs, token).await.to_string(), INACTIVE, "{what}");
    }
    // Within the leeway of five seconds, a token is still good.
    let edge = sign(&app, "at+jwt", &with(&|c| c.exp = now - 2));
    assert_eq!(introspect(&app, &rs, &edge).await["active"], true);
}

async fn state_changes_make_tokens_inactive(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    let id = app.create_user("mallory@example.com").await;
    let good = app.login("mallory@example.com").access_token;
    assert_eq!(introspect(&app, &rs, &good).await["active"], true);
    // An older tgen: the user's sessions were ended.
    offboard::lifecycle::users::revoke_tokens(app.db(), &id, "test").unwrap();
    assert_eq!(
        introspect(&app, &rs, &good).await.to_string(),
        INACTIVE,
        "older tgen"
    );
    let current = app.login("mallory@example.com").access_token;
    assert_eq!(introspect(&app, &rs, &current).await["tgen"], 1);
    // Revoked by jti.
    let res = app
        .form(
            "/oauth2/revoke",
            None,
            &[("token", current.as_str()), ("client_id", "offboard-cli")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        introspect(&app, &rs, &current).await.to_string(),
        INACTIVE,
        "revoked jti"
    );
    // Deleted user.
    let after = app.login("mallory@example.com").access_token;
    assert_eq!(introspect(&app, &rs, &after).await["active"], true);
    assert_eq!(app.delete(&format!("/Users/{id}")).await.status, 204);
    assert_eq!(
        introspect(&app, &rs, &after).await.to_string(),
        INACTIVE,
        "deleted user"
    );
}

async fn refresh_rotates_and_reuse_ends_the_family(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    app.create_user("dev@example.com").await;
    let first = app.login("dev@example.com");
    let other_login = app.login("dev@example.com");
    let rt1 = first.refresh_token.clone().unwrap();

    let res = refresh(&app, &rt1).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let rt2 = res.body["refresh_token"].as_str().unwrap().to_owned();
    let at2 = res.body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "refresh tokens rotate");
    assert_eq!(
        claims_of(&at2).sid,
        claims_of(&first.access_token).sid,
        "same login"
    );
    let rt_answer = introspect(&app, &rs, &rt2).await;
    assert_eq!(rt_answer["active"], true, "{rt_answer}");
    assert_eq!(rt_answer["sid"], claims_of(&at2).sid.unwrap().as_str());
    assert!(rt_answer.get("token_type").is_none());
    assert_eq!(
        introspect(&app, &rs, &rt1).await.to_string(),
        INACTIVE,
        "a used refresh token"
    );

    // rt1 again: reuse. The whole family ends, the other login does not.
    let res = refresh(&app, &rt1).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"], "invalid_grant");
    assert_eq!(refresh(&app, &rt2).await.body["error"], "invalid_grant");
    assert_eq!(
        introspect(&app, &rs, &at2).await.to_string(),
        INACTIVE,
        "access tokens of the family die"
    );
    assert_eq!(
        introspect(&app, &rs, &first.access_token).await.to_string(),
        INACTIVE
    );
    assert_eq!(
        introspect(&app, &rs, &other_login.access_token).await["active"],
        true
    );
    assert_eq!(
        refresh(&app, other_login.refresh_token.as_deref().unwrap())
            .await
            .status,
        200
    );

    // Another client cannot use this client's refresh token.
    let svc = app.credential("svc", &[Scope::Introspect]);
    let third = app.login("dev@example.com");
    let res = app
        .form(
            "/oauth2/token",
            Some(("svc", &svc)),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", third.refresh_token.as_deref().unwrap()),
            ],
        )
        .await;
    assert_eq!(res.body["error"], "invalid_grant");
    assert_eq!(
        refresh(&app, third.refresh_token.as_deref().unwrap())
            .await
            .status,
        200,
        "untouched"
    );
}

async fn refresh_cannot_widen_the_scope(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens.user_scopes = vec!["repo:read".into(), "repo:write".into()];
    })
    .await;
    app.create_user("dev@example.com").await;
    // Asking for more scope than the login has is refused and spends nothing.
    let scoped = app
        .state
        .tokens
        .login(
            &offboard::tokens::UserKey::UserName("dev@example.com".into()),
            "offboard-cli",
            &offboard::tokens::TokenRequest {
                scope: Some("repo:read".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let srt = scoped.refresh_token.unwrap();
    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "offboard-cli"),
                ("refresh_token", &srt),
                ("scope", "repo:read repo:write"),
            ],
        )
        .await;
    assert_eq!(res.body["error"], "invalid_scope", "{}", res.text);
    let res = refresh(&app, &srt).await;
    assert_eq!(res.status, 200, "still usable: {}", res.text);
    assert_eq!(res.body["scope"], "repo:read");
}

async fn idle_and_absolute_expiry_end_refresh(backend: Backend) {
    use diesel::prelude::*;
    use offboard::db::schema::{refresh_families, refresh_tokens};
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    app.create_user("idle@example.com").await;
    let idle = app.login("idle@example.com");
    let absolute = app.login("idle@example.com");
    let past = offboard::db::now() - chrono::TimeDelta::seconds(1);
    let (idle_sid, abs_sid) = (
        claims_of(&idle.access_token).sid.unwrap(),
        claims_of(&absolute.access_token).sid.unwrap(),
    );
    app.db()
        .write(|c| {
            diesel::update(refresh_tokens::table.filter(refresh_tokens::sid.eq(&idle_sid)))
                .set(refresh_tokens::idle_expires_at.eq(past))
                .execute(c)?;
            diesel::update(refresh_families::table.filter(refresh_families::sid.eq(&abs_sid)))
                .set(refresh_families::expires_at.eq(past))
                .execute(c)?;
            Ok::<_, offboard::db::DbError>(())
        })
        .unwrap();
    for t in [&idle, &absolute] {
        let rt = t.refresh_token.as_deref().unwrap();
        assert_eq!(introspect(&app, &rs, rt).await.to_string(), INACTIVE);
        let res = refresh(&app, rt).await;
        assert_eq!(res.body["error"], "invalid_grant", "{}", res.text);
    }
}

async fn client_credentials_issue_service_tokens(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens
            .client_credentials
            .insert("deploy-bot".into(), vec!["repo:read".into(), "repo:write".into()]);
    })
    .await;
    let rs = introspector(&app);
    let svc = app.credential("deploy-bot", &[Scope::Introspect]);
    let res = app
        .form(
            "/oauth2/token",
            Some(("deploy-bot", &svc)),
            &[("grant_type", "client_credentials"), ("scope", "repo:read")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body.get("refresh_token").is_none());
    assert_eq!(res.body["scope"], "repo:read");
    let token = res.body["access_token"].as_str().unwrap().to_owned();
    let answer = introspect(&app, &rs, &token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["sub"], "deploy-bot");
    assert!(answer.get("tgen").is_none());

    // client_secret_post works too; a wrong secret is invalid_client with a challenge.
    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "deploy-bot"),
                ("client_secret", &svc),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let res = app
        .form(
            "/oauth2/token",
            Some(("deploy-bot", "ofb_wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.body["error"], "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "offboard-cli"),
            ],
        )
        .await;
    assert_eq!(res.body["error"], "unauthorized_client");
    let res = app
        .form(
            "/oauth2/token",
            Some(("deploy-bot", &svc)),
            &[
                ("grant_type", "client_credentials"),
                ("audience", "https://unknown.example"),
            ],
        )
        .await;
    assert_eq!(res.body["error"], "invalid_target");

    offboard::credentials::revoke(app.db(), "deploy-bot").unwrap();
    assert_eq!(
        introspect(&app, &rs, &token).await.to_string(),
        INACTIVE,
        "its credential was revoked"
    );
}

async fn scope_policy_limits_who_gets_which_scopes(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens
            .client_credentials
            .insert("deploy-bot".into(), vec!["repo:read".into(), "repo:write".into()]);
    })
    .await;
    let svc = app.credential("deploy-bot", &[Scope::Introspect]);
    let other = app.credential("unlisted", &[Scope::Introspect]);
    let res = app
        .form(
            "/oauth2/token",
            Some(("unlisted", &other)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.body["error"], "unauthorized_client", "{}", res.text);
    // The scope policy: only listed credentials, only their scopes; no scope asked for means all of them.
    let res = app
        .form(
            "/oauth2/token",
            Some(("deploy-bot", &svc)),
            &[("grant_type", "client_credentials"), ("scope", "repo:read admin")],
        )
        .await;
    assert_eq!(res.body["error"], "invalid_scope", "{}", res.text);
    let res = app
        .form(
            "/oauth2/token",
            Some(("deploy-bot", &svc)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.body["scope"], "repo:read repo:write");
    let scim = app.token.clone();
    let res = app
        .send(
            actix_web::test::TestRequest::post()
                .uri("/oauth2/token")
                .insert_header(("Authorization", format!("Bearer {scim}")))
                .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                .set_payload("grant_type=client_credentials"),
        )
        .await;
    assert_eq!(
        res.body["error"], "unauthorized_client",
        "the IdP's SCIM credential mints nothing"
    );
    let user_scope = app.state.tokens.login(
        &offboard::tokens::UserKey::UserName("nobody@example.com".into()),
        "offboard-cli",
        &offboard::tokens::TokenRequest {
            scope: Some("admin".into()),
            ..Default::default()
        },
    );
    assert!(
        matches!(user_scope, Err(offboard::tokens::OAuthError::InvalidScope(_))),
        "tokens.user_scopes is empty"
    );
}

async fn revocation_follows_rfc_7009(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens.client_credentials.insert("svc".into(), Vec::new());
    })
    .await;
    let rs = introspector(&app);
    app.create_user("rev@example.com").await;
    let t = app.login("rev@example.com");
    let cli = [("client_id", "offboard-cli")];
    let revoke = |token: String| {
        let app = &app;
        async move {
            let mut params = vec![("token", token.as_str())];
            params.extend(cli);
            app.form("/oauth2/revoke", None, &params).await
        }
    };
    let rt = t.refresh_token.clone().unwrap();
    assert_eq!(revoke(rt.clone()).await.status, 200);
    assert_eq!(refresh(&app, &rt).await.body["error"], "invalid_grant");
    assert_eq!(
        introspect(&app, &rs, &t.access_token).await.to_string(),
        INACTIVE,
        "revoking the refresh token ends its access tokens"
    );
    assert_eq!(
        revoke("ofr_unknown".into()).await.status,
        200,
        "unknown tokens answer 200"
    );
    assert_eq!(revoke("garbage".into()).await.status, 200);
    // The same access token revoked twice at once: both answer 200 (no unique-key race becomes a 500).
    let live = app.login("rev@example.com").access_token;
    let (a, b) = futures::join!(revoke(live.clone()), revoke(live.clone()));
    assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.text, b.text);
    assert_eq!(introspect(&app, &rs, &live).await.to_string(), INACTIVE);
    assert_eq!(
        revoke(t.access_token.clone()).await.status,
        200,
        "already dead: 200"
    );

    let svc = app.credential("svc", &[Scope::Introspect]);
    let res = app
        .form(
            "/oauth2/token",
            Some(("svc", &svc)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let svc_token = res.body["access_token"].as_str().unwrap().to_owned();
    let res = revoke(svc_token.clone()).await;
    assert_eq!(res.status, 400, "another client's token: {}", res.text);
    assert_eq!(introspect(&app, &rs, &svc_token).await["active"], true);
    let res = app
        .form(
            "/oauth2/revoke",
            Some(("svc", &svc)),
            &[("token", svc_token.as_str())],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(introspect(&app, &rs, &svc_token).await.to_string(), INACTIVE);
    let res = app
        .form(
            "/oauth2/revoke",
            None,
            &[
                ("token", "x"),
                ("client_id", "offboard-cli"),
                ("token_type_hint", "saml"),
            ],
        )
        .await;
    assert_eq!(
        res.status, 200,
        "an unknown hint is ignored (RFC 7009 §2.1): {}",
        res.text
    );
}

/// The `token.revoke` entries in the audit log.
fn audit_actions(app: &TestApp, action: &str) -> Vec<Value> {
    app.db()
        .read(|c| offboard::db::repo::audit::after(c, 0, 1_000_000).map_err(offboard::db::DbError::from))
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| serde_json::from_str(&e.details).unwrap())
        .collect()
}

/// Revoking a token already revoked answers 200 and records nothing: only the change of state is audited.
async fn a_repeated_revocation_records_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.create_user("again@example.com").await;
    let t = app.login("again@example.com");
    for token in [t.access_token.as_str(), t.refresh_token.as_deref().unwrap()] {
        for _ in 0..3 {
            let res = app
                .form(
                    "/oauth2/revoke",
                    None,
                    &[("token", token), ("client_id", "offboard-cli")],
                )
                .await;
            assert_eq!(res.status, 200, "{}", res.text);
        }
    }
    let kinds: Vec<Value> = audit_actions(&app, "token.revoke")
        .iter()
        .map(|d| d["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![json!("access_token"), json!("refresh_token")],
        "one entry per revocation that changed something"
    );
    // Another instance (no memory of the first revocation) does not record a repeat either.
    let second = offboard::AppState::open(app.db().clone(), (*app.state.config).clone()).unwrap();
    second
        .tokens
        .revoke(&offboard::tokens::Caller::Public, &t.access_token)
        .unwrap();
    assert_eq!(audit_actions(&app, "token.revoke").len(), 2);
}

async fn bad_requests_get_oauth_errors(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    let scim = app.token.clone();
    let res = app
        .send(actix_web::test::TestRequest::get().uri("/oauth2/token"))
        .await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("POST"));
    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(
        (res.status, res.body["error"].as_str()),
        (400, Some("invalid_request")),
        "duplicate parameter"
    );
    let res = app
        .form("/oauth2/token", None, &[("client_id", "offboard-cli")])
        .await;
    assert_eq!(res.body["error"], "invalid_request", "no grant_type");
    let res = app
        .form("/oauth2/token", None, &[("grant_type", "password")])
        .await;
    assert_eq!(res.body["error"], "unsupported_grant_type");
    let res = app
        .form(
            "/oauth2/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", "ofr_x\0")],
        )
        .await;
    assert_eq!(res.body["error"], "invalid_request", "NUL");
    let res = app
        .send(
            actix_web::test::TestRequest::post()
                .uri("/oauth2/token")
                .insert_header(("Content-Type", "application/json"))
                .set_payload(r#"{"grant_type":"refresh_token"}"#),
        )
        .await;
    assert_eq!(res.body["error"], "invalid_request", "JSON body");
    let res = app.form("/oauth2/introspect", None, &[("token", "x")]).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.body["error"], "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    let res = app
        .send(
            actix_web::test::TestRequest::post()
                .uri("/oauth2/introspect")
                .insert_header(("Authorization", format!("Bearer {scim}")))
                .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                .set_payload("token=x"),
        )
        .await;
    assert_eq!(res.status, 403, "the SCIM credential cannot introspect");
    assert_eq!(res.body["error"], "insufficient_scope");
    let res = app
        .form("/oauth2/introspect", Some(("rs", "ofb_wrong")), &[("token", "x")])
        .await;
    assert_eq!(res.status, 401);
    let res = app.form("/oauth2/introspect", Some(("rs", &rs)), &[]).await;
    assert_eq!(res.body["error"], "invalid_request", "no token");
    let res = refresh(&app, "ofr_nope").await;
    assert_eq!(res.body["error"], "invalid_grant");
    assert!(!res.text.contains("ofr_nope"), "errors never echo tokens");
}

async fn leaving_a_group_ends_its_members_tokens(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    let id = app.create_user("member@example.com").await;
    let res = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "prod-deployers",
                    "members": [{"value": id}]}),
        )
        .await;
    let gid = res.body["id"].as_str().unwrap().to_owned();
    let t = app.login("member@example.com");
    assert_eq!(
        claims_of(&t.access_token).groups,
        Some(vec!["prod-deployers".to_owned()])
    );
    assert_eq!(
        introspect(&app, &rs, &t.access_token).await["groups"],
        json!(["prod-deployers"])
    );
    let res = app
        .patch(
            &format!("/Groups/{gid}"),
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(introspect(&app, &rs, &t.access_token).await.to_string(), INACTIVE);
    assert_eq!(
        refresh(&app, t.refresh_token.as_deref().unwrap()).await.body["error"],
        "invalid_grant"
    );
    let again = app.login("member@example.com");
    assert_eq!(claims_of(&again.access_token).groups, Some(vec![]));
}

async fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    app.create_user("rot@example.com").await;
    let before = app.login("rot@example.com");
    let old_kid = header_of(&before.access_token).kid.unwrap();
    let config = (*app.state.config).clone();
    let kek = offboard::keys::Kek::from_base64(TEST_KEK).unwrap();
    let alg = offboard::keys::KeyAlg::RS256;
    let err = offboard::keys::rotate(app.db(), &kek, &config, alg, false).unwrap_err();
    assert!(
        err.to_string().contains("--force"),
        "the next key is too fresh: {err}"
    );
    let r = offboard::keys::rotate(app.db(), &kek, &config, alg, true).unwrap();
    assert_eq!(r.retired.as_deref(), Some(old_kid.as_str()));
    app.state.tokens.keys.reload().unwrap();

    let after = app.login("rot@example.com");
    assert_eq!(header_of(&after.access_token).kid.unwrap(), r.activated);
    assert_eq!(
        introspect(&app, &rs, &before.access_token).await["active"],
        true,
        "old key still published"
    );
    assert_eq!(introspect(&app, &rs, &after.access_token).await["active"], true);
    let jwks: Value = serde_json::from_str(&app.state.tokens.keys.jwks()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for kid in [&old_kid, &r.activated, &r.next] {
        assert!(kids.contains(&kid.as_str()), "{kid} published: {kids:?}");
    }
    // A second instance on the same database signs with the same key, and follows the next rotation.
    let second = offboard::AppState::open(app.db().clone(), config.clone()).unwrap();
    assert_eq!(second.tokens.keys.access_signer().unwrap().kid, r.activated);
    let again = offboard::keys::rotate(app.db(), &kek, &config, alg, true).unwrap();
    assert_eq!(
        second.tokens.keys.access_signer().unwrap().kid,
        r.activated,
        "until it reloads"
    );
    second.tokens.keys.reload().unwrap();
    assert_eq!(second.tokens.keys.access_signer().unwrap().kid, again.activated);
    let listed = offboard::keys::list(app.db()).unwrap();
    let old = listed.iter().find(|k| k.kid == old_kid).unwrap();
    assert_eq!(old.state, "retired");
    let window = offboard::keys::retirement_window(&config);
    assert!(old.publish_until.unwrap() >= offboard::db::now() + window - chrono::TimeDelta::seconds(5));
}

/// `keys compromise` stops trusting a key at once, in a server that was not told (the CLI is another process):
/// tokens it signed introspect inactive (also when their signature was cached), it leaves the JWKS, the token
/// endpoint signs with the next key, exchange refuses anything it signed, and it is audited as `key.compromised`.
async fn a_compromised_key_is_trusted_for_nothing_at_once(backend: Backend) {
    let idp = idp(MappedAttribute::ExternalId, "sub");
    let trusted = idp.issuer.clone();
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted]).await;
    let rs = introspector(&app);
    app.create_user("leak@example.com").await;
    let t = app.login("leak@example.com");
    let leaked = header_of(&t.access_token).kid.unwrap();
    assert_eq!(
        introspect(&app, &rs, &t.access_token).await["active"],
        true,
        "cached now"
    );
    // What a thief with the key can sign: an ID token naming the trusted IdP as its issuer.
    let now = unix_now();
    let forged = sign(
        &app,
        "JWT",
        &json!({"iss": IDP, "sub": "ext-leak@example.com", "aud": "offboard-at-idp", "exp": now + 300}),
    );
    let config = (*app.state.config).clone();
    let kek = offboard::keys::Kek::from_base64(TEST_KEK).unwrap();
    let c = offboard::lifecycle::compromise_key(app.db(), &kek, &config, &leaked, "key file leaked").unwrap();
    assert_eq!(c.was, "active");
    let activated = c.activated.clone().unwrap();
    let next = c.next.clone().unwrap();

    assert_eq!(
        introspect(&app, &rs, &t.access_token).await.to_string(),
        INACTIVE,
        "a token of the compromised key, at the very next introspection"
    );
    let jwks = app
        .send(actix_web::test::TestRequest::get().uri("/.well-known/jwks.json"))
        .await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(!kids.contains(&leaked.as_str()), "out of the JWKS: {kids:?}");
    assert!(kids.contains(&activated.as_str()) && kids.contains(&next.as_str()));
    let res = refresh(&app, t.refresh_token.as_deref().unwrap()).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let renewed = res.body["access_token"].as_str().unwrap();
    assert_eq!(
        header_of(renewed).kid.unwrap(),
        activated,
        "signed by the next key"
    );
    assert_eq!(introspect(&app, &rs, renewed).await["active"], true);
    let res = exchange(&app, &forged).await;
    assert_eq!(res.status, 400, "{}", res.text);
    assert!(
        res.body["error_description"]
            .as_str()
            .unwrap()
            .contains("compromised"),
        "{}",
        res.text
    );
    let entries: Vec<_> = app
        .db()
        .read(|c| offboard::db::repo::audit::after(c, 0, 1000).map_err(offboard::db::DbError::from))
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "key.compromised")
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].target_id.as_deref(), Some(leaked.as_str()));
    assert!(offboard::lifecycle::compromise_key(app.db(), &kek, &config, &leaked, "again").is_err());

    // The case of the issue: `rotate --force` keeps the old key trusted; compromising the retired key ends that.
    let before = app.login("leak@example.com");
    let r = offboard::keys::rotate(app.db(), &kek, &config, offboard::keys::KeyAlg::RS256, true).unwrap();
    app.state.tokens.keys.reload().unwrap();
    assert_eq!(
        introspect(&app, &rs, &before.access_token).await["active"],
        true,
        "retired: trusted"
    );
    let c = offboard::lifecycle::compromise_key(app.db(), &kek, &config, r.retired.as_deref().unwrap(), "x")
        .unwrap();
    assert_eq!(c.was, "retired");
    assert_eq!(
        introspect(&app, &rs, &before.access_token).await.to_string(),
        INACTIVE
    );
}

const IDP: &str = "https://idp.test";

/// A trusted IdP for token exchange and Global Token Revocation (off).
fn idp(attribute: MappedAttribute, claim: &str) -> Idp {
    Idp::new(IDP, "offboard-at-idp", attribute, claim)
}

impl Idp {
    fn id_token(&self, sub: &str, aud: &str, exp_in: i64) -> String {
        let now = unix_now();
        self.sign(&json!({"iss": IDP, "sub": sub, "aud": aud, "iat": now, "exp": now + exp_in, "email": "x@example.com"}))
    }
}

async fn exchange(app: &TestApp, subject: &str) -> crate::harness::Resp {
    app.form(
        "/oauth2/token",
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("client_id", "offboard-cli"),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ],
    )
    .await
}

async fn token_exchange_accepts_only_trusted_id_tokens(backend: Backend) {
    let idp = idp(MappedAttribute::ExternalId, "sub");
    let trusted = idp.issuer.clone();
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted]).await;
    let rs = introspector(&app);
    let id = app.create_user("okta-user@example.com").await;
    // new_user sets externalId `ext-<userName>`, as Okta sets it to its own user id.
    let subject = idp.id_token("ext-okta-user@example.com", "offboard-at-idp", 300);
    let res = exchange(&app, &subject).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(res.body["refresh_token"].as_str().unwrap().starts_with("ofr_"));
    let answer = introspect(&app, &rs, res.body["access_token"].as_str().unwrap()).await;
    assert_eq!(answer["sub"], id.as_str());

    let stranger = self::idp(MappedAttribute::ExternalId, "sub");
    let refusals = [
        (
            "wrong audience",
            idp.id_token("ext-okta-user@example.com", "someone-else", 300),
        ),
        (
            "expired",
            idp.id_token("ext-okta-user@example.com", "offboard-at-idp", -100),
        ),
        (
            "unknown subject",
            idp.id_token("ext-nobody", "offboard-at-idp", 300),
        ),
        (
            "untrusted key",
            stranger.id_token("ext-okta-user@example.com", "offboard-at-idp", 300),
        ),
        (
            "untrusted issuer",
            idp.sign(
                &json!({"iss": "https://evil.test", "sub": "ext-okta-user@example.com",
            "aud": "offboard-at-idp", "exp": unix_now() + 300}),
            ),
        ),
        (
            "our own access token",
            res.body["access_token"].as_str().unwrap().to_owned(),
        ),
    ];
    for (what, token) in refusals {
        let res = exchange(&app, &token).await;
        assert_eq!(res.status, 400, "{what}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request", "{what}");
    }
    app.deactivate(&id).await;
    let res = exchange(&app, &subject).await;
    assert_eq!(
        res.body["error"], "invalid_request",
        "inactive user: {}",
        res.text
    );
}

/// An ID token must be typed `JWT` or not at all: `application/at+jwt` and `application/secevent+jwt` (any
/// case, with or without `application/`) are refused, as is any other explicit type.
async fn token_exchange_allows_only_id_token_types(backend: Backend) {
    let idp = idp(MappedAttribute::ExternalId, "sub");
    let trusted = idp.issuer.clone();
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted]).await;
    app.create_user("typed@example.com").await;
    let claims = json!({"iss": IDP, "sub": "ext-typed@example.com", "aud": "offboard-at-idp",
                        "exp": unix_now() + 300});
    for typ in [None, Some("JWT"), Some("application/jwt")] {
        let res = exchange(&app, &idp.sign_typed(typ, &claims)).await;
        assert_eq!(res.status, 200, "{typ:?}: {}", res.text);
    }
    for typ in [
        "application/at+jwt",
        "application/secevent+jwt",
        "Application/AT+JWT",
        "at+JWT",
        "logout+jwt",
        "dpop+jwt",
    ] {
        let res = exchange(&app, &idp.sign_typed(Some(typ), &claims)).await;
        assert_eq!(res.status, 400, "{typ}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request", "{typ}");
    }
}

/// Email mapping: only a verified email, exact after ASCII lower-casing (no Unicode folding: the Kelvin sign is
/// not `k`), and only the user's emails the issuer's `match_emails` names (default: the primary one).
async fn token_exchange_email_mapping_is_exact_and_verified(backend: Backend) {
    let idp = idp(MappedAttribute::Email, "email");
    let trusted = idp.issuer.clone();
    let mut work = self::idp(MappedAttribute::Email, "email");
    work.issuer.issuer = "https://work-emails.test".into();
    work.issuer.match_emails = vec!["work".into()];
    let work_issuer = work.issuer.clone();
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted, work_issuer]).await;
    let mut user = new_user("kate@example.com");
    user["emails"] = json!([
        {"value": "kate@example.com", "type": "work", "primary": true},
        {"value": "kate.home@example.com", "type": "home"}
    ]);
    let res = app.post("/Users", &user).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["id"].as_str().unwrap().to_owned();
    let token = |iss: &str, email: &str, verified: Option<Value>| {
        let mut c = json!({"iss": iss, "sub": "s", "aud": "offboard-at-idp", "exp": unix_now() + 300,
                           "email": email});
        if let Some(v) = verified {
            c["email_verified"] = v;
        }
        c
    };
    let res = exchange(
        &app,
        &idp.sign(&token(IDP, "Kate@Example.COM", Some(json!(true)))),
    )
    .await;
    assert_eq!(res.status, 200, "ASCII case is ignored: {}", res.text);
    assert_eq!(claims_of(res.body["access_token"].as_str().unwrap()).sub, id);
    let refusals = [
        (
            "Kelvin sign",
            token(IDP, "\u{212A}ate@example.com", Some(json!(true))),
        ),
        ("unverified", token(IDP, "kate@example.com", Some(json!(false)))),
        ("no email_verified", token(IDP, "kate@example.com", None)),
        (
            "a secondary email",
            token(IDP, "kate.home@example.com", Some(json!(true))),
        ),
    ];
    for (what, claims) in refusals {
        let res = exchange(&app, &idp.sign(&claims)).await;
        assert_eq!(res.status, 400, "{what}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request", "{what}");
    }
    // An issuer configured with `match_emails = ["work"]` matches the work email, not the home one.
    let ok = token(
        "https://work-emails.test",
        "kate@example.com",
        Some(json!("true")),
    );
    assert_eq!(exchange(&app, &work.sign(&ok)).await.status, 200);
    let home = token(
        "https://work-emails.test",
        "kate.home@example.com",
        Some(json!(true)),
    );
    assert_eq!(exchange(&app, &work.sign(&home)).await.status, 400);
}

/// A real HTTP server on loopback that answers every request with `body` and counts the requests.
struct JwksServer {
    url: String,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

fn serve_jwks(body: String) -> JwksServer {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let res = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(res.as_bytes());
        }
    });
    JwksServer { url, hits }
}

async fn token_exchange_fetches_a_jwks_uri(backend: Backend) {
    let idp = idp(MappedAttribute::UserName, "email");
    let jwks = std::fs::read_to_string(idp.issuer.jwks_file.as_ref().unwrap()).unwrap();
    let server = serve_jwks(jwks);
    let mut trusted = idp.issuer.clone();
    trusted.jwks_file = None;
    trusted.jwks_uri = Some(server.url.clone());
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted]).await;
    app.create_user("x@example.com").await;
    let subject = idp.id_token("ignored", "offboard-at-idp", 300);
    let res = exchange(&app, &subject).await;
    assert_eq!(res.status, 200, "mapped by the email claim: {}", res.text);
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let res = exchange(&app, &subject).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the JWKS is cached"
    );
    // A token naming a kid the JWKS lacks does not refetch within 30 s.
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("rotated-in".into());
    let now = unix_now();
    let other = jsonwebtoken::encode(
        &h,
        &json!({"iss": IDP, "email": "x@example.com", "aud": "offboard-at-idp", "exp": now + 300}),
        &idp.key,
    )
    .unwrap();
    assert_eq!(exchange(&app, &other).await.body["error"], "invalid_request");
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "unknown kids are rate-limited"
    );
}

async fn gtr(app: &TestApp, bearer: Option<&str>, body: &Value) -> crate::harness::Resp {
    let mut req = actix_web::test::TestRequest::post()
        .uri("/oauth2/global-token-revocation")
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body.to_string());
    if let Some(b) = bearer {
        req = req.insert_header(("Authorization", format!("Bearer {b}")));
    }
    app.send(req).await
}

async fn global_token_revocation_ends_sessions_and_keeps_the_account(backend: Backend) {
    let idp = idp(MappedAttribute::ExternalId, "sub");
    let mut trusted = idp.issuer.clone();
    trusted.global_token_revocation = true;
    let mut exchange_only = self::idp(MappedAttribute::ExternalId, "sub");
    exchange_only.issuer.issuer = "https://exchange-only.test".into();
    let other = exchange_only.issuer.clone();
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted, other]).await;
    let rs = introspector(&app);
    let id = app.create_user("ul@example.com").await;
    let t = app.login("ul@example.com");
    let endpoint = format!("{ISSUER}/oauth2/global-token-revocation");
    let assertion = |aud: &str, jti: &str| {
        let now = unix_now();
        idp.sign(&json!({"iss": IDP, "sub": "0oa-app", "aud": aud, "jti": jti, "iat": now, "exp": now + 300}))
    };
    let subject = json!({"sub_id": {"format": "iss_sub", "iss": IDP, "sub": "ext-ul@example.com"}});

    assert_eq!(gtr(&app, None, &subject).await.status, 401);
    assert_eq!(
        gtr(&app, Some(&assertion("https://wrong/aud", "j0")), &subject)
            .await
            .status,
        401
    );
    let ok = assertion(&endpoint, "j1");
    let res = gtr(&app, Some(&ok), &subject).await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert_eq!(app.user_row(&id).token_generation, 1);
    assert!(app.user_row(&id).active, "the account stays active");
    assert_eq!(introspect(&app, &rs, &t.access_token).await.to_string(), INACTIVE);
    assert_eq!(
        refresh(&app, t.refresh_token.as_deref().unwrap()).await.body["error"],
        "invalid_grant"
    );
    assert_eq!(gtr(&app, Some(&ok), &subject).await.status, 401, "jti replay");

    let email = json!({"sub_id": {"format": "email", "email": "UL@example.com"}});
    assert_eq!(
        gtr(&app, Some(&assertion(&endpoint, "j2")), &email).await.status,
        204
    );
    assert_eq!(app.user_row(&id).token_generation, 2);
    let cases = [
        (
            json!({"sub_id": {"format": "email", "email": "nobody@example.com"}}),
            404,
        ),
        (
            json!({"sub_id": {"format": "phone_number", "phone_number": "+1"}}),
            400,
        ),
        (
            json!({"sub_id": {"format": "iss_sub", "iss": "https://other-idp.test", "sub": "x"}}),
            403,
        ),
        (json!({"nope": 1}), 400),
    ];
    for (i, (body, status)) in cases.into_iter().enumerate() {
        let res = gtr(&app, Some(&assertion(&endpoint, &format!("k{i}"))), &body).await;
        assert_eq!(res.status, status, "{body}: {}", res.text);
    }
    let ours = json!({"sub_id": {"format": "iss_sub", "iss": ISSUER, "sub": id}});
    assert_eq!(
        gtr(&app, Some(&assertion(&endpoint, "j3")), &ours).await.status,
        204
    );
}

/// NUL characters and oversized values in every token-side input that reaches a query answer 400
/// `invalid_request` on both backends (PostgreSQL refused them with a 500), and change nothing.
async fn bad_input_to_token_endpoints_is_invalid_request(backend: Backend) {
    let idp = idp(MappedAttribute::ExternalId, "sub");
    let mut trusted = idp.issuer.clone();
    trusted.global_token_revocation = true;
    let app = TestApp::start_with(backend, |c| c.trusted_issuers = vec![trusted]).await;
    let id = app.create_user("nul@example.com").await;
    let long = "x".repeat(3000);
    let nul = "a\u{0}b";
    let invalid_request = |what: &str, res: &crate::harness::Resp| {
        assert_eq!(res.status, 400, "{what}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request", "{what}: {}", res.text);
    };
    // Form values and names, on every form endpoint.
    for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
        for params in [
            vec![("grant_type", "refresh_token"), ("client_id", long.as_str())],
            vec![("grant_type", "refresh_token"), ("client_id", nul)],
            vec![("grant_type", "refresh_token"), (nul, "x")],
            vec![("grant_type", "refresh_token"), ("token", "y"), ("scope", nul)],
        ] {
            let res = app.form(path, Some(("rs", "secret")), &params).await;
            invalid_request(&format!("{path} {params:?}"), &res);
        }
        // A NUL or an oversized name in HTTP Basic (no credential needed to send it) is refused before any
        // query, like any credential that cannot exist: 401 `invalid_client` (README "Security: what is bounded").
        for name in [nul, long.as_str()] {
            let res = app.form(path, Some((name, "secret")), &[("token", "t")]).await;
            assert_eq!(res.status, 401, "{path} Basic name: {}", res.text);
            assert_eq!(
                res.body["error"], "invalid_client",
                "{path} Basic name: {}",
                res.text
            );
        }
    }
    // Global Token Revocation: the subject and the assertion's jti.
    let endpoint = format!("{ISSUER}/oauth2/global-token-revocation");
    let assertion = |jti: &str| {
        let now = unix_now();
        idp.sign(
            &json!({"iss": IDP, "sub": "app", "aud": endpoint, "jti": jti, "iat": now, "exp": now + 300}),
        )
    };
    let subjects = [
        json!({"sub_id": {"format": "email", "email": nul}}),
        json!({"sub_id": {"format": "email", "email": long}}),
        json!({"sub_id": {"format": "iss_sub", "iss": IDP, "sub": nul}}),
        json!({"sub_id": {"format": "iss_sub", "iss": IDP, "sub": long}}),
        json!({"sub_id": {"format": "iss_sub", "iss": format!("{IDP}\u{0}"), "sub": "s"}}),
    ];
    for (i, subject) in subjects.iter().enumerate() {
        let res = gtr(&app, Some(&assertion(&format!("j{i}"))), subject).await;
        invalid_request(&format!("GTR {subject}"), &res);
    }
    let ok_subject = json!({"sub_id": {"format": "iss_sub", "iss": IDP, "sub": "ext-nul@example.com"}});
    for jti in [nul, long.as_str()] {
        let res = gtr(&app, Some(&assertion(jti)), &ok_subject).await;
        invalid_request("GTR jti", &res);
    }
    // Token exchange: the claim mapped to a user.
    for sub in [nul, long.as_str()] {
        let res = exchange(&app, &idp.id_token(sub, "offboard-at-idp", 300)).await;
        invalid_request("exchange sub", &res);
    }
    assert_eq!(app.user_row(&id).token_generation, 0, "nothing changed");
}

async fn eddsa_access_tokens_are_opt_in(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens.algorithm = offboard::config::TokenAlgorithm::EdDSA;
    })
    .await;
    let rs = introspector(&app);
    app.create_user("ed@example.com").await;
    let t = app.login("ed@example.com");
    assert_eq!(header_of(&t.access_token).alg, Algorithm::EdDSA);
    assert_eq!(introspect(&app, &rs, &t.access_token).await["active"], true);
    let jwks: Value = serde_json::from_str(&app.state.tokens.keys.jwks()).unwrap();
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert!(algs.contains(&"RS256") && algs.contains(&"EdDSA"), "{algs:?}");
}

async fn token_activity_is_recorded(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    let id = app.create_user("act@example.com").await;
    let t = app.login("act@example.com");
    introspect(&app, &rs, &t.access_token).await;
    refresh(&app, t.refresh_token.as_deref().unwrap()).await;
    assert!(app.state.tokens.activity.flush(app.db()).unwrap() >= 1);
    let access = offboard::lifecycle::users::access_of(app.db(), &id).unwrap();
    assert_eq!(access.live_logins.len(), 1);
    let [a] = access.activity.as_slice() else {
        panic!("one client: {:?}", access.activity)
    };
    assert_eq!(a.client_id, "offboard-cli");
    assert!(a.last_minted_at.is_some() && a.last_refreshed_at.is_some() && a.last_introspected_at.is_some());
}

/// Invariant 3 under contention: a login racing a deactivation either fails or yields tokens that are dead
/// once the deactivation has committed.
async fn a_token_minted_during_deactivation_is_never_active(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rs = introspector(&app);
    let mut minted = 0;
    for i in 0..12 {
        let name = format!("race{i}@example.com");
        let res = app.post("/Users", &new_user(&name)).await;
        let id = res.body["id"].as_str().unwrap().to_owned();
        let tokens = Arc::clone(&app.state.tokens);
        let db = app.db().clone();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier);
        let n = name.clone();
        let login = std::thread::spawn(move || {
            b1.wait();
            tokens.login(
                &offboard::tokens::UserKey::UserName(n),
                "offboard-cli",
                &offboard::tokens::TokenRequest::default(),
            )
        });
        let deactivate = std::thread::spawn(move || {
            b2.wait();
            offboard::lifecycle::users::deactivate(&db, &id, "race test").unwrap()
        });
        let got = login.join().unwrap();
        assert!(matches!(
            deactivate.join().unwrap(),
            offboard::lifecycle::users::Held::Deactivated(_)
        ));
        if let Ok(t) = got {
            minted += 1;
            assert_eq!(
                introspect(&app, &rs, &t.access_token).await.to_string(),
                INACTIVE,
                "{name}"
            );
            assert_eq!(
                refresh(&app, t.refresh_token.as_deref().unwrap()).await.body["error"],
                "invalid_grant"
            );
        }
    }
    eprintln!("race: {minted} of 12 logins won the race and were killed by the deactivation");
}

both_backends!(
    metadata_and_jwks_are_published,
    deactivation_kills_tokens_at_once,
    every_forged_or_stale_token_is_inactive,
    state_changes_make_tokens_inactive,
    refresh_rotates_and_reuse_ends_the_family,
    refresh_cannot_widen_the_scope,
    idle_and_absolute_expiry_end_refresh,
    client_credentials_issue_service_tokens,
    scope_policy_limits_who_gets_which_scopes,
    revocation_follows_rfc_7009,
    a_repeated_revocation_records_nothing,
    bad_requests_get_oauth_errors,
    leaving_a_group_ends_its_members_tokens,
    rotation_keeps_old_tokens_valid_and_signs_with_the_new_key,
    a_compromised_key_is_trusted_for_nothing_at_once,
    token_exchange_accepts_only_trusted_id_tokens,
    token_exchange_fetches_a_jwks_uri,
    token_exchange_allows_only_id_token_types,
    token_exchange_email_mapping_is_exact_and_verified,
    global_token_revocation_ends_sessions_and_keeps_the_account,
    bad_input_to_token_endpoints_is_invalid_request,
    eddsa_access_tokens_are_opt_in,
    token_activity_is_recorded,
    a_token_minted_during_deactivation_is_never_active,
);
