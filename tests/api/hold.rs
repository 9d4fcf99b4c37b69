//! The operator hold of `offboard users deactivate`: the identity provider's next sync (Entra sends `active`
//! as the string `"True"`, by PATCH or PUT) cannot reactivate a held user; its other writes apply; SCIM shows
//! `active: false` and no token is minted while held; `offboard users release` restores what the identity
//! provider last asked for, recorded as `user.hold` / `user.release`.

use offboard::db::models::AuditRow;
use offboard::db::{DbError, repo};
use offboard::lifecycle::users::{self, Held, Released};
use offboard::tokens::{CLI_CLIENT, TokenRequest, UserKey};
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, both_backends, new_user};

fn entries(app: &TestApp, action: &str) -> Vec<AuditRow> {
    app.db()
        .read(|c| repo::audit::after(c, 0, 1_000_000).map_err(DbError::from))
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

fn mint(
    app: &TestApp,
    user_name: &str,
) -> Result<offboard::tokens::TokenResponse, offboard::tokens::OAuthError> {
    app.state.tokens.login(
        &UserKey::UserName(user_name.to_owned()),
        CLI_CLIENT,
        &TokenRequest::default(),
    )
}

/// Entra's reactivation: `replace` of `active` with the string "True".
fn entra_reactivate() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "Replace", "path": "active", "value": "True"}]})
}

async fn a_held_user_stays_inactive_until_released(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("held@example.com").await;
    let before = app.login("held@example.com");
    let generation = app.user_row(&id).token_generation;

    let held = users::deactivate(app.db(), &id, "laptop stolen").unwrap();
    assert_eq!(held, Held::Deactivated(generation + 1));
    assert_eq!(
        users::deactivate(app.db(), &id, "again").unwrap(),
        Held::AlreadyHeld
    );

    // Entra's next sync: PATCH active "True", and a rename in the same request.
    let res = app
        .patch(
            &format!("/Users/{id}"),
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Replace", "path": "active", "value": "True"},
                                   {"op": "Replace", "path": "displayName", "value": "Renamed By IdP"}]}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["active"], false, "held: {}", res.text);
    assert_eq!(
        res.body["displayName"], "Renamed By IdP",
        "the IdP's other writes apply"
    );
    let res = app.get(&format!("/Users/{id}")).await;
    assert_eq!(res.body["active"], false);
    assert_eq!(res.body["displayName"], "Renamed By IdP");
    let listed = app.get("/Users?filter=active%20eq%20true").await;
    assert_eq!(listed.body["totalResults"], 0, "{}", listed.text);
    assert!(
        mint(&app, "held@example.com").is_err(),
        "no token for a held user"
    );
    let refreshed = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLI_CLIENT),
                ("refresh_token", before.refresh_token.as_deref().unwrap()),
            ],
        )
        .await;
    assert_eq!(refreshed.body["error"], "invalid_grant", "{}", refreshed.text);

    // A PUT with `active: "True"` (Okta's wizard apps, Entra's PUT) is held too.
    let mut put = new_user("held@example.com");
    put["active"] = json!("True");
    put["displayName"] = json!("Put By IdP");
    let res = app.put(&format!("/Users/{id}"), &put).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["active"], false);
    assert_eq!(res.body["displayName"], "Put By IdP");
    // The same sync again changes nothing (Entra re-sends every cycle).
    let version = app.user_row(&id).version;
    app.patch(&format!("/Users/{id}"), &entra_reactivate()).await;
    assert_eq!(app.user_row(&id).version, version, "a re-sent wish is no change");
    assert!(!app.user_row(&id).active);

    let shown = users::access_of(app.db(), &id).unwrap().hold.unwrap();
    assert_eq!(shown.reason, "laptop stolen");
    assert!(shown.idp_active, "the IdP's wish is remembered");

    assert_eq!(
        users::release(app.db(), &id, "laptop found").unwrap(),
        Released::Reactivated
    );
    let res = app.get(&format!("/Users/{id}")).await;
    assert_eq!(res.body["active"], true, "{}", res.text);
    assert_eq!(res.body["displayName"], "Put By IdP");
    let row = app.user_row(&id);
    assert_eq!(
        row.token_generation,
        generation + 1,
        "release never lowers the generation"
    );
    let after = mint(&app, "held@example.com").expect("active again");
    assert_ne!(after.access_token, before.access_token);
    assert_eq!(users::release(app.db(), &id, "twice").unwrap(), Released::NotHeld);

    let holds = entries(&app, "user.hold");
    assert_eq!(holds.len(), 1);
    let d: Value = serde_json::from_str(&holds[0].details).unwrap();
    assert_eq!(d["reason"], "laptop stolen");
    let release = entries(&app, "user.release");
    assert_eq!(release.len(), 1);
    let d: Value = serde_json::from_str(&release[0].details).unwrap();
    assert_eq!(d["reason"], "laptop found");
    assert_eq!(d["idp_active"], true);
    assert_eq!(
        entries(&app, "user.reactivate").len(),
        1,
        "account-enabled once, at the release"
    );
}

async fn release_keeps_what_the_idp_asked_last(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("gone@example.com").await;
    assert!(matches!(
        users::deactivate(app.db(), &id, "incident").unwrap(),
        Held::Deactivated(_)
    ));
    app.patch(&format!("/Users/{id}"), &entra_reactivate()).await;
    // Then the IdP deactivates the user itself (`remove active` too is a deactivation).
    let res = app.deactivate(&id).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        users::release(app.db(), &id, "done").unwrap(),
        Released::StaysInactive
    );
    assert_eq!(app.get(&format!("/Users/{id}")).await.body["active"], false);
    assert!(mint(&app, "gone@example.com").is_err());
    // A user the IdP deactivated first can be held as well, and the IdP's reactivation waits for the release.
    assert_eq!(
        users::deactivate(app.db(), &id, "hold").unwrap(),
        Held::HeldInactive
    );
    app.patch(&format!("/Users/{id}"), &entra_reactivate()).await;
    assert_eq!(app.get(&format!("/Users/{id}")).await.body["active"], false);
    assert_eq!(
        users::release(app.db(), &id, "ok").unwrap(),
        Released::Reactivated
    );
    assert_eq!(app.get(&format!("/Users/{id}")).await.body["active"], true);
}

both_backends!(
    a_held_user_stays_inactive_until_released,
    release_keeps_what_the_idp_asked_last,
);
