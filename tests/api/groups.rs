//! SCIM Groups and the RBAC rules of docs/decisions/0003-group-changes-and-sessions.md: adding a member or
//! renaming ends nobody's sessions; a member who leaves (PATCH, PUT, group delete) gets a new token generation in
//! the same transaction; nobody else does. Entra's `Remove` with a `value` list removes only the listed members.

use offboard::credentials::Scope;
use offboard::db::{DbError, repo};
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, both_backends, patch_op};

/// A user id offboard was never sent (Okta and Entra assign people before, or without, provisioning them).
const UNKNOWN: &str = "0192e4a1-0000-7000-8000-000000000000";

/// The details of the last audit entry with this action.
fn last_details(app: &TestApp, action: &str) -> Value {
    let all = app
        .db()
        .read(|c| repo::audit::after(c, 0, 1_000_000).map_err(DbError::from))
        .unwrap();
    let entry = all.iter().rev().find(|e| e.action == action).unwrap();
    serde_json::from_str(&entry.details).unwrap()
}

/// Introspects `token` with a fresh `introspect` credential named `name`.
async fn introspect(app: &TestApp, name: &str, token: &str) -> Value {
    let secret = app.credential(name, &[Scope::Introspect]);
    let res = app
        .form("/oauth2/introspect", Some((name, &secret)), &[("token", token)])
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

async fn users(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app.create_user(&format!("member{i}@example.com")).await);
    }
    ids
}

fn members(ids: &[&String]) -> Value {
    Value::Array(ids.iter().map(|id| json!({"value": id})).collect())
}

async fn create_group(app: &TestApp, name: &str, member_ids: &[&String]) -> String {
    let res = app
        .post("/Groups", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name, "members": members(member_ids)}))
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["id"].as_str().unwrap().to_owned()
}

fn generations(app: &TestApp, ids: &[String]) -> Vec<i64> {
    ids.iter().map(|id| app.user_row(id).token_generation).collect()
}

fn member_values(body: &Value) -> Vec<String> {
    let mut v: Vec<String> = body["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| x["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn entra_remove_with_value_removes_only_the_listed_members(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 3).await;
    let gid = create_group(&app, "eng", &[&u[0], &u[1], &u[2]]).await;
    assert_eq!(
        generations(&app, &u),
        vec![0, 0, 0],
        "joining ends nobody's sessions"
    );
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": u[1]}]}]});
    let res = app.patch(&format!("/Groups/{gid}"), &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let mut want = vec![u[0].clone(), u[2].clone()];
    want.sort();
    assert_eq!(member_values(&res.body), want);
    assert_eq!(
        generations(&app, &u),
        vec![0, 1, 0],
        "only the removed member's tokens die"
    );
}

async fn adding_and_renaming_end_no_sessions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 2).await;
    let gid = create_group(&app, "eng", &[&u[0]]).await;
    let path = format!("/Groups/{gid}");
    let res = app
        .patch(
            &path,
            &patch_op("add", Some("members"), &members(&[&u[1], &u[0]])),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        member_values(&res.body).len(),
        2,
        "adding an existing member is not an error nor a duplicate"
    );
    // Okta re-sends the id and the name with membership changes.
    let res = app
        .patch(
            &path,
            &patch_op("replace", None, &json!({"id": gid, "displayName": "engineering"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["displayName"], "engineering");
    assert_eq!(generations(&app, &u), vec![0, 0]);
    let user = app.get(&format!("/Users/{}", u[1])).await.body;
    assert_eq!(user["groups"][0]["value"], gid.as_str());
    assert_eq!(user["groups"][0]["display"], "engineering");
}

async fn removal_by_filter_replace_and_delete_end_sessions_of_leavers_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 4).await;
    let gid = create_group(&app, "ops", &[&u[0], &u[1], &u[2]]).await;
    let path = format!("/Groups/{gid}");
    // Okta: remove by filter, then add in the same PATCH.
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{}\"]", u[0])},
        {"op": "add", "path": "members", "value": [{"value": u[3]}]}]});
    assert_eq!(app.patch(&path, &body).await.status, 200);
    assert_eq!(generations(&app, &u), vec![1, 0, 0, 0]);
    // Removing a member and adding them back in one PATCH is no change for them.
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{}\"]", u[1])},
        {"op": "add", "path": "members", "value": [{"value": u[1]}]}]});
    assert_eq!(app.patch(&path, &body).await.status, 200);
    assert_eq!(generations(&app, &u), vec![1, 0, 0, 0]);
    // Okta's "replace members": whoever is not in the new list leaves.
    let res = app
        .patch(
            &path,
            &patch_op("replace", Some("members"), &members(&[&u[1], &u[0]])),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        generations(&app, &u),
        vec![1, 0, 1, 1],
        "u2 and u3 left; u0 joined again"
    );
    // Deleting the group ends the sessions of everyone still in it.
    assert_eq!(app.delete(&path).await.status, 204);
    assert_eq!(app.get(&path).await.status, 404);
    assert_eq!(generations(&app, &u), vec![2, 1, 1, 1]);
    assert!(
        app.get(&format!("/Users/{}", u[0]))
            .await
            .body
            .get("groups")
            .is_none()
    );
}

async fn put_keeps_members_unless_it_names_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 2).await;
    let gid = create_group(&app, "sre", &[&u[0], &u[1]]).await;
    let path = format!("/Groups/{gid}");
    let res = app
        .put(&path, &json!({"displayName": "sre-team", "id": gid}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        member_values(&res.body).len(),
        2,
        "members left out of a PUT are kept"
    );
    assert_eq!(generations(&app, &u), vec![0, 0]);
    let res = app
        .put(&path, &json!({"displayName": "sre-team", "members": []}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body.get("members").is_none());
    assert_eq!(generations(&app, &u), vec![1, 1]);
}

async fn a_failing_patch_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 2).await;
    let gid = create_group(&app, "db", &[&u[0], &u[1]]).await;
    let path = format!("/Groups/{gid}");
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": "displayName", "value": "renamed"},
        {"op": "remove", "path": format!("members[value eq \"{}\"]", u[0])},
        {"op": "add", "path": "members", "value": [{"value": u[1]}]},
        {"op": "replace", "path": "noSuchAttribute", "value": "x"}]});
    let res = app.patch(&path, &body).await;
    assert_eq!(
        (res.status, res.body["scimType"].as_str()),
        (400, Some("invalidPath")),
        "{}",
        res.text
    );
    let group = app.get(&path).await.body;
    assert_eq!(group["displayName"], "db");
    assert_eq!(member_values(&group).len(), 2);
    assert_eq!(group["meta"]["version"], "W/\"1\"");
    assert_eq!(
        generations(&app, &u),
        vec![0, 0],
        "a rolled-back removal ends no session"
    );
}

async fn deleting_a_user_removes_it_from_every_group(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 2).await;
    let g1 = create_group(&app, "a", &[&u[0], &u[1]]).await;
    let g2 = create_group(&app, "b", &[&u[0]]).await;
    assert_eq!(app.delete(&format!("/Users/{}", u[0])).await.status, 204);
    assert_eq!(
        member_values(&app.get(&format!("/Groups/{g1}")).await.body),
        vec![u[1].clone()]
    );
    assert!(
        app.get(&format!("/Groups/{g2}"))
            .await
            .body
            .get("members")
            .is_none()
    );
}

async fn excluded_members_and_filters(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 2).await;
    let gid = create_group(&app, "Platform Team", &[&u[0]]).await;
    create_group(&app, "other", &[&u[1]]).await;
    let res = app
        .get(&format!("/Groups/{gid}?excludedAttributes=members"))
        .await;
    assert_eq!(res.status, 200);
    assert!(res.body.get("members").is_none());
    assert_eq!(res.body["displayName"], "Platform Team");
    let res = app
        .get("/Groups?filter=displayName%20eq%20%22platform%20team%22&excludedAttributes=members")
        .await;
    assert_eq!(res.body["totalResults"], 1, "{}", res.text);
    assert!(res.body["Resources"][0].get("members").is_none());
    let res = app
        .get(&format!("/Groups?filter=members.value%20eq%20%22{}%22", u[1]))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["totalResults"], 1);
    assert_eq!(res.body["Resources"][0]["displayName"], "other");
    let res = app.post("/Groups", &json!({"members": []})).await;
    assert_eq!(res.status, 400, "displayName is required");
    assert_eq!(app.get("/Groups/not-a-uuid").await.status, 404);
}

async fn large_groups_are_patched_by_rows(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(app.create_user(&format!("bulk{i}@example.com")).await);
    }
    let id_refs: Vec<&String> = ids.iter().collect();
    let gid = create_group(&app, "everyone", &id_refs[..299]).await;
    let path = format!("/Groups/{gid}?excludedAttributes=members");
    let res = app
        .patch(&path, &patch_op("add", Some("members"), &members(&[&ids[299]])))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body.get("members").is_none());
    let full = app.get(&format!("/Groups/{gid}")).await.body;
    assert_eq!(full["members"].as_array().unwrap().len(), 300);
    let concurrent = (0..20).map(|i| {
        let (app, path, id) = (&app, &path, &ids[i]);
        async move {
            app.patch(
                path,
                &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]}),
            )
            .await
        }
    });
    for r in futures::future::join_all(concurrent).await {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let full = app.get(&format!("/Groups/{gid}")).await.body;
    assert_eq!(
        full["members"].as_array().unwrap().len(),
        280,
        "no concurrent removal lost"
    );
}

async fn groups_sort_search_and_answer_304(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 1).await;
    for name in ["beta", "Alpha", "gamma"] {
        create_group(&app, name, &[&u[0]]).await;
    }
    let names = |body: &Value| -> Vec<String> {
        body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["displayName"].as_str().unwrap().to_owned())
            .collect()
    };
    let res = app
        .get("/Groups?sortBy=displayName&sortOrder=descending&excludedAttributes=members")
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(names(&res.body), vec!["gamma", "beta", "Alpha"]);
    assert!(res.body["Resources"][0].get("members").is_none());
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "displayName sw \"a\"", "sortBy": "displayName", "excludedAttributes": ["members"]});
    let res = app.post("/Groups/.search", &search).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(names(&res.body), vec!["Alpha"]);
    let root = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "displayName sw \"g\" or displayName sw \"test\"", "sortBy": "meta.created"});
    let res = app.post("/.search", &root).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body["totalResults"], 2,
        "one group and one user: {}",
        res.text
    );
    let gid = res.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["meta"]["resourceType"] == "Group")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = actix_web::test::TestRequest::get()
        .uri(&format!("{}/Groups/{gid}", crate::harness::SCIM))
        .insert_header(("Authorization", format!("Bearer {}", app.token)))
        .insert_header(("If-None-Match", "W/\"1\""));
    let res = app.send(req).await;
    assert_eq!(res.status, 304);
    assert!(res.text.is_empty());
}

/// Okta's PATCH that removes u2 and adds someone offboard does not know: the removal applies (u2's tokens die),
/// the unknown member is skipped and recorded, and the answer is 200 without it. A retry changes nothing more.
async fn an_unknown_member_never_blocks_a_removal(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 3).await;
    let gid = create_group(&app, "prod", &[&u[0], &u[1]]).await;
    let token = app.login("member1@example.com").access_token;
    assert_eq!(introspect(&app, "rs1", &token).await["active"], true);
    let path = format!("/Groups/{gid}");
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{}\"]", u[1])},
        {"op": "add", "path": "members", "value": [{"value": UNKNOWN, "display": "not provisioned"}, {"value": u[2]}]}]});
    let res = app.patch(&path, &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let mut want = vec![u[0].clone(), u[2].clone()];
    want.sort();
    assert_eq!(
        member_values(&res.body),
        want,
        "u1 left, u2 joined, the unknown id is absent"
    );
    assert_eq!(
        generations(&app, &u),
        vec![0, 1, 0],
        "only the removed member's sessions end"
    );
    assert_eq!(introspect(&app, "rs2", &token).await, json!({"active": false}));
    let details = last_details(&app, "scim.group.patch");
    assert_eq!(details["members_skipped"], json!([UNKNOWN]), "{details}");
    assert_eq!(details["members_removed"], json!([u[1]]));
    assert_eq!(details["members_added"], json!([u[2]]));
    // The IdP retries: nothing left to change, still 200.
    let res = app.patch(&path, &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(member_values(&res.body), want);
    assert_eq!(generations(&app, &u), vec![0, 1, 0]);
    // Entra's shape: remove with a value list and add, in one request.
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": UNKNOWN}]},
        {"op": "Remove", "path": "members", "value": [{"value": u[0]}]}]});
    let res = app.patch(&path, &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(member_values(&res.body), vec![u[2].clone()]);
    assert_eq!(generations(&app, &u), vec![1, 1, 0]);
    assert_eq!(
        last_details(&app, "scim.group.patch")["members_skipped"],
        json!([UNKNOWN])
    );
}

/// A PUT (and a POST, and a `replace` of members) naming an unknown member applies the rest of the member list:
/// members not named leave, the unknown id is skipped and recorded.
async fn put_and_replace_skip_unknown_members(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 3).await;
    let res = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "ops",
                "members": [{"value": u[0]}, {"value": u[1]}, {"value": UNKNOWN}]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let mut want = vec![u[0].clone(), u[1].clone()];
    want.sort();
    assert_eq!(member_values(&res.body), want);
    assert_eq!(
        last_details(&app, "scim.group.create")["members_skipped"],
        json!([UNKNOWN])
    );
    let gid = res.body["id"].as_str().unwrap().to_owned();
    let path = format!("/Groups/{gid}");
    let res = app
        .put(
            &path,
            &json!({"displayName": "ops", "members": [{"value": u[0]}, {"value": UNKNOWN}]}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(member_values(&res.body), vec![u[0].clone()]);
    assert_eq!(
        generations(&app, &u),
        vec![0, 1, 0],
        "u1, not named by the PUT, left"
    );
    let details = last_details(&app, "scim.group.replace");
    assert_eq!(details["members_skipped"], json!([UNKNOWN]), "{details}");
    assert_eq!(details["members_removed"], json!([u[1]]));
    let res = app
        .patch(
            &path,
            &patch_op(
                "replace",
                Some("members"),
                &members(&[&u[2], &UNKNOWN.to_owned()]),
            ),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(member_values(&res.body), vec![u[2].clone()]);
    assert_eq!(generations(&app, &u), vec![1, 1, 0]);
    // A deleted user is no user either.
    assert_eq!(app.delete(&format!("/Users/{}", u[1])).await.status, 204);
    let res = app
        .patch(&path, &patch_op("add", Some("members"), &members(&[&u[1]])))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(member_values(&res.body), vec![u[2].clone()]);
    assert_eq!(
        last_details(&app, "scim.group.patch")["members_skipped"],
        json!([u[1]])
    );
}

/// `remove` by a filter that is not a plain `value eq` list (it names `display`) is evaluated over the members as
/// they are at that point of the PATCH, members added earlier in the same request included.
async fn removal_by_a_filter_on_display(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = users(&app, 3).await;
    let gid = create_group(&app, "web", &[&u[0], &u[1]]).await;
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": u[2]}, {"value": UNKNOWN}]},
        {"op": "remove", "path": format!("members[display eq \"test user\" and (value eq \"{}\" or value eq \"{}\")]", u[0], u[2])}]});
    let res = app.patch(&format!("/Groups/{gid}"), &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(member_values(&res.body), vec![u[1].clone()]);
    assert_eq!(
        generations(&app, &u),
        vec![1, 0, 0],
        "u2 joined and left within the request: no change for it"
    );
    let details = last_details(&app, "scim.group.patch");
    assert_eq!(details["members_removed"], json!([u[0]]));
    assert_eq!(details["members_added"], json!([]));
    assert_eq!(details["members_skipped"], json!([UNKNOWN]));
}

both_backends!(
    removal_by_a_filter_on_display,
    an_unknown_member_never_blocks_a_removal,
    put_and_replace_skip_unknown_members,
    groups_sort_search_and_answer_304,
    entra_remove_with_value_removes_only_the_listed_members,
    adding_and_renaming_end_no_sessions,
    removal_by_filter_replace_and_delete_end_sessions_of_leavers_only,
    put_keeps_members_unless_it_names_them,
    a_failing_patch_changes_nothing,
    deleting_a_user_removes_it_from_every_group,
    excluded_members_and_filters,
    large_groups_are_patched_by_rows,
);
