//! SCIM Users over HTTP: create/get/replace/patch/delete, lists and filters, ETags, error shapes, and the
//! generation rules (only a real deactivation or a delete bumps it; reactivation never lowers it).

use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::harness::{Backend, SCIM, TestApp, assert_too_many, both_backends, new_user, patch_op};

async fn create_returns_201_with_location_etag_and_meta(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut body = new_user("alice@example.com");
    body["password"] = json!("1mz050nq");
    body["id"] = json!("client-chosen");
    body["groups"] = json!([]);
    body["meta"] = json!({"created": "2001-01-01T00:00:00Z"});
    let res = app.post("/Users", &body).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["id"].as_str().unwrap();
    assert_ne!(id, "client-chosen", "id is server-assigned");
    assert!(uuid::Uuid::try_parse(id).is_ok());
    assert_eq!(res.header("content-type"), Some("application/scim+json"));
    assert_eq!(
        res.header("location").unwrap(),
        format!("http://offboard.test/scim/v2/Users/{id}")
    );
    assert_eq!(res.header("etag"), Some("W/\"1\""));
    let meta = &res.body["meta"];
    assert_eq!(meta["resourceType"], "User");
    assert_eq!(
        meta["location"],
        format!("http://offboard.test/scim/v2/Users/{id}")
    );
    assert_eq!(meta["version"], "W/\"1\"");
    assert_ne!(meta["created"], "2001-01-01T00:00:00Z", "meta is read-only");
    assert_eq!(meta["created"], meta["lastModified"]);
    assert!(res.body.get("password").is_none(), "password is never returned");
    assert!(
        !app.user_row(id).resource.contains("1mz050nq"),
        "password is never stored"
    );
    assert_eq!(res.body["userName"], "alice@example.com");
    assert_eq!(res.body["active"], true);

    let got = app.get(&format!("/Users/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, res.body);
}

async fn unknown_ids_answer_404_scim_errors(backend: Backend) {
    let app = TestApp::start(backend).await;
    for path in [
        "/Users/010101001010101011001010101011",
        "/Users/0192e4a1-0000-7000-8000-000000000000",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.body["status"], "404");
        assert_eq!(
            res.body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
    }
    assert_eq!(
        app.delete("/Users/0192e4a1-0000-7000-8000-000000000000")
            .await
            .status,
        404
    );
    assert_eq!(app.get("/Nope").await.status, 404);
}

async fn deactivation_bumps_the_generation_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("bob@example.com").await;
    let path = format!("/Users/{id}");
    assert_eq!(app.user_row(&id).token_generation, 0);

    // Entra re-sends active:true and unchanged values: no bump.
    let res = app
        .patch(&path, &patch_op("Replace", Some("active"), &json!("True")))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(app.user_row(&id).token_generation, 0);

    // Okta deactivation.
    let res = app
        .patch(&path, &patch_op("replace", None, &json!({"active": false})))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["active"], false);
    assert_eq!(app.user_row(&id).token_generation, 1);

    // Deactivating again is not a transition.
    app.patch(&path, &patch_op("replace", Some("active"), &json!("False")))
        .await;
    assert_eq!(app.user_row(&id).token_generation, 1);

    // Inactive users stay visible by id and by filter.
    assert_eq!(app.get(&path).await.body["active"], false);
    let found = app
        .get("/Users?filter=userName%20eq%20%22bob%40example.com%22")
        .await;
    assert_eq!(found.body["totalResults"], 1);

    // Reactivation never lowers the generation.
    app.patch(&path, &patch_op("replace", None, &json!({"active": true})))
        .await;
    let row = app.user_row(&id);
    assert!(row.active);
    assert_eq!(row.token_generation, 1);

    // Deactivation by PUT (Okta AIW apps).
    let mut body = new_user("bob@example.com");
    body["active"] = json!(false);
    let res = app.put(&path, &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(app.user_row(&id).token_generation, 2);
}

async fn put_without_active_keeps_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("carol@example.com").await;
    let mut body = new_user("carol@example.com");
    body.as_object_mut().unwrap().remove("active");
    body["displayName"] = json!("Carol C");
    body["id"] = json!(id);
    body["meta"] = json!({"resourceType": "User"});
    body["groups"] = json!([{"value": "x"}]);
    let res = app.put(&format!("/Users/{id}"), &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["active"], true);
    assert_eq!(res.body["displayName"], "Carol C");
    assert_eq!(res.body["meta"]["version"], "W/\"2\"");
    let row = app.user_row(&id);
    assert!(row.active);
    assert_eq!(row.token_generation, 0);
}

async fn delete_tombstones_and_bumps(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("dave@example.com").await;
    let path = format!("/Users/{id}");
    let res = app.delete(&path).await;
    assert_eq!(res.status, 204);
    assert!(res.text.is_empty());
    assert_eq!(app.get(&path).await.status, 404);
    assert_eq!(app.delete(&path).await.status, 404);
    assert_eq!(
        app.patch(&path, &patch_op("replace", Some("active"), &json!(false)))
            .await
            .status,
        404
    );
    let list = app
        .get("/Users?filter=userName%20eq%20%22dave%40example.com%22")
        .await;
    assert_eq!(list.body["totalResults"], 0);
    let row = app.user_row(&id);
    assert!(row.deleted_at.is_some());
    assert!(!row.active);
    assert_eq!(row.token_generation, 1);
}

async fn if_match_guards_writes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("erin@example.com").await;
    let uri = format!("{SCIM}/Users/{id}");
    let patch = patch_op("replace", Some("displayName"), &json!("Erin"));
    let send = |etag: &str| {
        TestRequest::patch()
            .uri(&uri)
            .insert_header(("Authorization", format!("Bearer {}", app.token)))
            .insert_header(("If-Match", etag.to_owned()))
            .set_payload(patch.to_string())
    };
    let stale = app.send(send("W/\"7\"")).await;
    assert_eq!(stale.status, 412, "{}", stale.text);
    assert_eq!(stale.body["status"], "412");
    let ok = app.send(send("W/\"1\"")).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.header("etag"), Some("W/\"2\""));
    let del = TestRequest::delete()
        .uri(&uri)
        .insert_header(("Authorization", format!("Bearer {}", app.token)))
        .insert_header(("If-Match", "W/\"1\""));
    assert_eq!(app.send(del).await.status, 412);
    assert_eq!(app.get(&format!("/Users/{id}")).await.status, 200);
}

async fn bad_input_gets_scim_errors_and_writes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let raw = |body: &str| {
        TestRequest::post()
            .uri(&format!("{SCIM}/Users"))
            .insert_header(("Authorization", format!("Bearer {}", app.token)))
            .insert_header(("Content-Type", "application/scim+json"))
            .set_payload(body.to_owned())
    };
    let res = app.send(raw("{\"userName\": ")).await;
    assert_eq!(
        (res.status, res.body["scimType"].as_str()),
        (400, Some("invalidSyntax")),
        "{}",
        res.text
    );
    let res = app.send(raw("")).await;
    assert_eq!(res.status, 400);
    let res = app.send(raw(r#"{"userName":"nul\u0000x"}"#)).await;
    assert_eq!(
        (res.status, res.body["scimType"].as_str()),
        (400, Some("invalidValue"))
    );
    let res = app
        .send(raw(
            r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}"#,
        ))
        .await;
    assert_eq!(res.status, 400, "userName is required: {}", res.text);
    let res = app.send(raw(r#"{"userName": 42}"#)).await;
    assert_eq!(res.status, 400, "{}", res.text);
    let huge = format!("{{\"userName\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let res = app.send(raw(&huge)).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.body["status"], "413");
    let list = app.get("/Users").await;
    assert_eq!(list.body["totalResults"], 0, "nothing was written");

    // A PATCH whose second operation fails applies nothing.
    let id = app.create_user("frank@example.com").await;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "replace", "path": "emails[type eq \"home\"", "value": "x"}
        ]
    });
    let res = app.patch(&format!("/Users/{id}"), &body).await;
    assert_eq!(res.status, 400, "{}", res.text);
    assert_eq!(
        app.get(&format!("/Users/{id}")).await.body["displayName"],
        "Test User"
    );
    let res = app
        .patch(&format!("/Users/{id}"), &json!({"Operations": "nope"}))
        .await;
    assert_eq!(res.status, 400);
}

async fn lists_page_in_a_stable_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(app.create_user(&format!("user{i}@example.com")).await);
    }
    let mut seen = Vec::new();
    for start in [1, 4, 7] {
        let res = app.get(&format!("/Users?startIndex={start}&count=3")).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body["totalResults"], 7);
        assert_eq!(res.body["startIndex"], start);
        assert_eq!(
            res.body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:ListResponse"
        );
        let page: Vec<String> = res.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(res.body["itemsPerPage"], page.len());
        seen.extend(page);
    }
    assert_eq!(seen, ids, "creation order, no gaps, no repeats");
    let zero = app.get("/Users?count=0").await;
    assert_eq!(
        (
            zero.body["totalResults"].as_u64(),
            zero.body["itemsPerPage"].as_u64()
        ),
        (Some(7), Some(0))
    );
    let neg = app.get("/Users?startIndex=-5&count=2").await;
    assert_eq!(neg.body["startIndex"], 1);
    let beyond = app.get("/Users?startIndex=100").await;
    assert_eq!(beyond.body["Resources"], json!([]));
    assert_eq!(app.get("/Users?count=abc").await.status, 400);
}

async fn filters_on_the_attributes_idps_use(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = app.create_user("Grace.Hopper@Example.com").await;
    let b = app.create_user("alan@example.com").await;
    app.patch(
        &format!("/Users/{b}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    let cases: Vec<(String, Vec<&String>)> = vec![
        ("userName eq \"grace.hopper@example.com\"".into(), vec![&a]),
        ("USERNAME EQ \"GRACE.HOPPER@EXAMPLE.COM\"".into(), vec![&a]),
        ("externalId eq \"ext-alan@example.com\"".into(), vec![&b]),
        ("externalId eq \"EXT-alan@example.com\"".into(), vec![]),
        (format!("id eq \"{a}\""), vec![&a]),
        ("emails.value eq \"ALAN@example.com\"".into(), vec![&b]),
        (
            "emails[type eq \"work\"].value eq \"alan@example.com\"".into(),
            vec![&b],
        ),
        ("active eq false".into(), vec![&b]),
        ("active eq true".into(), vec![&a]),
        ("userName eq \"nobody\"".into(), vec![]),
    ];
    for (filter, want) in cases {
        let res = app.get(&format!("/Users?filter={}", urlencode(&filter))).await;
        assert_eq!(res.status, 200, "{filter}: {}", res.text);
        let got: Vec<&str> = res.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = want.iter().map(|s| s.as_str()).collect();
        assert_eq!(got, want, "{filter}");
        assert_eq!(res.body["totalResults"], want.len(), "{filter}");
    }
    let bad = app
        .get(&format!("/Users?filter={}", urlencode("userName eq")))
        .await;
    assert_eq!(
        (bad.status, bad.body["scimType"].as_str()),
        (400, Some("invalidFilter")),
        "{}",
        bad.text
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn concurrent_creates_and_patches_lose_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let creates = (0..50).map(|i| {
        let app = &app;
        async move { app.post("/Users", &new_user(&format!("c{i}@example.com"))).await }
    });
    let results = futures::future::join_all(creates).await;
    for r in &results {
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(app.get("/Users?count=0").await.body["totalResults"], 50);

    let id = results[0].body["id"].as_str().unwrap().to_owned();
    let path = format!("/Users/{id}");
    let patches = (0..50).map(|i| {
        let (app, path) = (&app, &path);
        async move {
            let op = patch_op(
                "add",
                Some("emails"),
                &json!([{"value": format!("alias{i}@example.com"), "type": "other"}]),
            );
            app.patch(path, &op).await
        }
    });
    for r in futures::future::join_all(patches).await {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let user = app.get(&path).await.body;
    let emails = user["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 51, "every concurrent PATCH kept: {user}");
    assert_eq!(user["meta"]["version"], "W/\"51\"");
    let found: Value = app
        .get("/Users?filter=emails.value%20eq%20%22alias49%40example.com%22")
        .await
        .body;
    assert_eq!(found["totalResults"], 1);
}

async fn removing_active_ends_access(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("gina@example.com").await;
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": "active"}]});
    let res = app.patch(&format!("/Users/{id}"), &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body["active"], false,
        "an unassigned active flag grants no access"
    );
    let row = app.user_row(&id);
    assert!(!row.active);
    assert_eq!(row.token_generation, 1);
}

async fn wrong_methods_get_405_with_allow(backend: Backend) {
    let app = TestApp::start(backend).await;
    for (method, path, allow) in [
        ("PUT", "/Users", "GET, POST"),
        ("DELETE", "/Groups", "GET, POST"),
        (
            "POST",
            "/Users/0192e4a1-0000-7000-8000-000000000000",
            "GET, PUT, PATCH, DELETE",
        ),
        ("GET", "/Users/.search", "POST"),
        ("GET", "/.search", "POST"),
    ] {
        let res = app.scim(method, path, None).await;
        assert_eq!(res.status, 405, "{method} {path}");
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(res.body["status"], "405", "{method} {path}: {}", res.text);
    }
}

/// A PATCH of more than `limits.max_patch_operations` operations is refused before the write begins (400
/// `tooMany`, nothing written, the user's version unchanged); one at the limit applies. Groups too.
async fn patches_over_the_operation_limit_are_too_many(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("many@example.com").await;
    let path = format!("/Users/{id}");
    let ops = |n: usize| -> Value {
        let ops: Vec<Value> = (0..n)
            .map(|i| json!({"op": "add", "path": "emails", "value": [{"value": format!("e{i}@example.com"), "type": "other"}]}))
            .collect();
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
    };
    let res = app.patch(&path, &ops(1001)).await;
    assert_too_many(&res, "");
    assert!(
        res.body["detail"].as_str().unwrap().contains("1000"),
        "{}",
        res.text
    );
    let user = app.get(&path).await.body;
    assert_eq!(user["meta"]["version"], "W/\"1\"", "nothing written");
    assert_eq!(user["emails"].as_array().unwrap().len(), 1);
    let res = app.patch(&path, &ops(1000)).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["emails"].as_array().unwrap().len(), 1001);
    assert_eq!(
        res.body["emails"][0]["primary"], true,
        "the first email stays primary"
    );
    let res = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "g"}),
        )
        .await;
    let group = format!("/Groups/{}", res.body["id"].as_str().unwrap());
    let ops: Vec<Value> = (0..1001)
        .map(|_| json!({"op": "add", "path": "members", "value": [{"value": id}]}))
        .collect();
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let res = app.patch(&group, &body).await;
    assert_too_many(&res, "");
    let res = app.get(&group).await;
    assert_eq!(res.body["meta"]["version"], "W/\"1\"");
    assert!(res.body.get("members").is_none());
}

/// Users with tricky userNames (case, quotes, backslash, ß, final sigma, titlecase), one deactivated, Alice in two
/// groups, a tombstone, and a tombstone whose userName a live user took again: (ids, tombstone, the reuser).
async fn seed_tricky_names(app: &TestApp) -> (Vec<String>, String, String) {
    let names = [
        "Alice.Smith@example.com",
        "o\"brien@example.com",
        "back\\slash@example.com",
        "Straße@example.com",
        "ΣΊΣΥΦΟΣ",
        "ǅemal",
        "deactivated@example.com",
    ];
    let mut ids = Vec::new();
    for name in names {
        ids.push(app.create_user(name).await);
    }
    assert_eq!(app.deactivate(&ids[6]).await.status, 200);
    // Alice in two groups, created in the reverse of their displayName order.
    for g in ["zeta", "Alpha"] {
        let res = app
            .post(
                "/Groups",
                &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": g,
                        "members": [{"value": ids[0]}]}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    // A tombstone, and a tombstone whose userName a live user took again.
    let gone = app.create_user("gone@example.com").await;
    assert_eq!(app.delete(&format!("/Users/{gone}")).await.status, 204);
    let old = app.create_user("reused@example.com").await;
    assert_eq!(app.delete(&format!("/Users/{old}")).await.status, 204);
    let reused = app.create_user("REUSED@example.com").await;

    (ids, gone, reused)
}

/// `userName eq` takes a fast path (one statement); the answer must be the general list path's, byte for byte. The
/// general path is forced with a conjunct that changes nothing (`and userName pr`: every user has a userName).
async fn the_user_name_fast_path_answers_as_the_general_path(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (ids, gone, reused) = seed_tricky_names(&app).await;
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let values = [
        quoted("alice.smith@EXAMPLE.com"),
        quoted("Alice.Smith@example.com"),
        quoted("o\"brien@example.com"),
        quoted("back\\slash@example.com"),
        quoted("STRASSE@example.com"),
        quoted("straße@EXAMPLE.COM"),
        quoted("σίσυφος"),
        quoted("ǆemal"),
        quoted("deactivated@example.com"),
        quoted("gone@example.com"),
        quoted("reused@example.com"),
        quoted("nobody@example.com"),
        quoted(""),
    ];
    let extras = [
        "",
        "&startIndex=2",
        "&count=0",
        "&startIndex=0&count=1",
        "&sortBy=displayName&sortOrder=descending",
        "&attributes=userName,groups",
        "&excludedAttributes=emails",
        "&sortBy=nosuch",
    ];
    let mut matched = Vec::new();
    for value in &values {
        for attr in [
            "userName",
            "USERNAME",
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
        ] {
            for extra in extras {
                let fast = format!("{attr} eq {value}");
                let general = format!("{fast} and userName pr");
                let a = app
                    .get(&format!("/Users?filter={}{extra}", urlencode(&fast)))
                    .await;
                let b = app
                    .get(&format!("/Users?filter={}{extra}", urlencode(&general)))
                    .await;
                assert_eq!((a.status, &a.text), (b.status, &b.text), "{fast}{extra}");
                if a.body["totalResults"] == 1 && extra.is_empty() && attr == "userName" {
                    matched.push(value.clone());
                }
            }
        }
    }
    // Case folding found the live users; neither tombstones, nor an unknown or empty name matched. (`STRASSE` and
    // final-sigma spellings match or not as the fold decides; the point is both paths agree.)
    for must in [0, 1, 2, 3, 5, 7, 8, 10] {
        assert!(matched.contains(&values[must]), "{} not found", values[must]);
    }
    for never in [9, 11, 12] {
        assert!(!matched.contains(&values[never]), "{} found", values[never]);
    }
    // The live user that reuses a tombstone's userName is the one found.
    let res = app
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"reused@example.com\"")
        ))
        .await;
    assert_eq!(res.body["Resources"][0]["id"], reused.as_str());
    // GET answers what the list holds, with the groups in displayName order.
    let listed = app
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"alice.smith@example.com\" and userName pr")
        ))
        .await;
    let got = app.get(&format!("/Users/{}", ids[0])).await;
    assert_eq!(got.body, listed.body["Resources"][0]);
    let groups: Vec<&str> = got.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["display"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["Alpha", "zeta"]);
    assert_eq!(app.get(&format!("/Users/{gone}")).await.status, 404);
}

/// The `body` of an IdP fixture (tests/fixtures/idp/).
fn fixture_body(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/idp/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fixture["body"].clone()
}

/// With the default projection a user is written from its stored text (docs/decisions/0043-serving-the-stored-text.md);
/// the answer must be the general path's, byte for byte. The general path is forced with an `excludedAttributes`
/// naming nothing that exists (a projection that changes nothing, but not the default one). Covers GET, the
/// list, the `userName eq` lookup, `.search`, and the answers of POST and PATCH, on IdP-shaped users: Okta's and
/// Entra's creates, the enterprise extension, unicode and escapes, a user in groups, a patched user, an inactive
/// one.
async fn default_answers_are_the_general_paths_bytes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut bodies = vec![
        fixture_body("okta-create-user"),
        fixture_body("entra-create-user"),
        fixture_body("entra-create-manager-user"),
    ];
    let mut tricky = new_user("zoë.σίσυφος@example.com");
    tricky["displayName"] = json!("tab\there \"quoted\" back\\slash \u{1} 🎉");
    tricky["schemas"] = json!([
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    ]);
    tricky["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
        json!({"employeeNumber": "701984", "manager": {"value": "m-1"}, "department": ""});
    tricky["phoneNumbers"] = json!([{"value": "+49 221 0100", "type": "work"}]);
    tricky["addresses"] = json!([{"streetAddress": "Hohe Str. 1\nHof", "locality": "Köln"}]);
    tricky["nickName"] = json!("");
    tricky["title"] = Value::Null;
    bodies.push(tricky);
    let mut ids = Vec::new();
    for body in &bodies {
        let created = app.post("/Users", body).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let id = created.body["id"].as_str().unwrap().to_owned();
        let general = app.get(&format!("/Users/{id}?excludedAttributes=nosuch")).await;
        assert_eq!(created.text, general.text, "POST answers as GET does");
        ids.push(id);
    }
    let group = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Ops \"core\" Ω",
                    "members": [{"value": ids[0]}, {"value": ids[3]}]}),
        )
        .await;
    assert_eq!(group.status, 201, "{}", group.text);
    let patched = app
        .patch(
            &format!("/Users/{}", ids[1]),
            &fixture_body("entra-update-user-multivalued"),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let general = app
        .get(&format!("/Users/{}?excludedAttributes=nosuch", ids[1]))
        .await;
    assert_eq!(patched.text, general.text, "PATCH answers as GET does");
    assert_eq!(app.deactivate(&ids[2]).await.status, 200);
    for id in &ids {
        let fast = app.get(&format!("/Users/{id}")).await;
        let general = app.get(&format!("/Users/{id}?excludedAttributes=nosuch")).await;
        assert_eq!((fast.status, &fast.text), (200, &general.text), "{id}");
    }
    let in_group = app.get(&format!("/Users/{}", ids[3])).await;
    assert_eq!(in_group.body["groups"][0]["display"], "Ops \"core\" Ω");
    for query in [
        "count=100",
        "startIndex=2&count=2",
        "startIndex=9",
        "sortBy=name.familyName",
        &format!("filter={}", urlencode("userName eq \"ZOË.σίσυφος@example.com\"")),
        &format!(
            "filter={}",
            urlencode("userName eq \"test.user@okta.local\" and userName pr")
        ),
        &format!("filter={}", urlencode("displayName co \"quoted\"")),
    ] {
        let fast = app.get(&format!("/Users?{query}")).await;
        let general = app
            .get(&format!("/Users?{query}&excludedAttributes=nosuch"))
            .await;
        assert_eq!((fast.status, &fast.text), (200, &general.text), "{query}");
    }
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 10});
    let mut excluded = search.clone();
    excluded["excludedAttributes"] = json!(["nosuch"]);
    let fast = app.post("/Users/.search", &search).await;
    let general = app.post("/Users/.search", &excluded).await;
    assert_eq!((fast.status, &fast.text), (200, &general.text));
    assert_eq!(fast.body["totalResults"], 4);
}

both_backends!(
    patches_over_the_operation_limit_are_too_many,
    removing_active_ends_access,
    wrong_methods_get_405_with_allow,
    create_returns_201_with_location_etag_and_meta,
    unknown_ids_answer_404_scim_errors,
    deactivation_bumps_the_generation_once,
    put_without_active_keeps_it,
    delete_tombstones_and_bumps,
    if_match_guards_writes,
    bad_input_gets_scim_errors_and_writes_nothing,
    lists_page_in_a_stable_order,
    filters_on_the_attributes_idps_use,
    concurrent_creates_and_patches_lose_nothing,
    the_user_name_fast_path_answers_as_the_general_path,
    default_answers_are_the_general_paths_bytes,
);
