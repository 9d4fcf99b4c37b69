//! Lists and searches over HTTP: `sortBy`/`sortOrder` (in SQL on columns, in Rust on the stored JSON, the same
//! order either way), paging with a sort, `startIndex`/`count` edge cases, `POST /Users/.search` and `POST /.search`
//! with filters and projection, `If-None-Match` → 304, bad `sortBy`, and the `tooMany` bound (`limits.max_scan`).

use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::harness::{Backend, SCIM, TestApp, assert_too_many, both_backends, new_user, patch_op};

const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The ids of a list response, in order.
fn ids(res: &Value) -> Vec<String> {
    res["Resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no Resources in {res}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn field(res: &Value, key: &str) -> Vec<Value> {
    res["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].clone())
        .collect()
}

/// Creates a user from a full body and returns its id.
async fn create(app: &TestApp, body: &Value) -> String {
    let res = app.post("/Users", body).await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["id"].as_str().unwrap().to_owned()
}

/// GET /Users with these query parameters (values URL-encoded here), asserting 200.
async fn list(app: &TestApp, query: &[(&str, &str)]) -> Value {
    let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    let res = app.get(&format!("/Users?{}", qs.join("&"))).await;
    assert_eq!(res.status, 200, "{query:?}: {}", res.text);
    res.body
}

/// Every id of a sorted list, read page by page with `count`.
async fn paged(app: &TestApp, query: &[(&str, &str)], count: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut start = 1;
    loop {
        let (s, c) = (start.to_string(), count.to_string());
        let mut q = query.to_vec();
        q.push(("startIndex", &s));
        q.push(("count", &c));
        let page = list(app, &q).await;
        let got = ids(&page);
        assert_eq!(page["startIndex"], start);
        assert_eq!(page["itemsPerPage"], got.len());
        if got.is_empty() {
            break;
        }
        all.extend(got);
        start += count;
    }
    all
}

async fn user_name_order_is_case_insensitive_by_code_point(backend: Backend) {
    let app = TestApp::start(backend).await;
    // Created out of order; folded: "über", "öffi", "alice", "zed", "ösel", "émile", "bob".
    let mut by_name = std::collections::HashMap::new();
    for name in ["über", "Öffi", "alice", "ZED", "ösel", "Émile", "Bob"] {
        by_name.insert(name, app.create_user(name).await);
    }
    // Code point order of the folded names (no locale): ASCII first, then é (U+E9), ö (U+F6), ü (U+FC). Folding
    // matters: unfolded, "Bob" < "ZED" < "alice" and "Öffi" < "über" < "ösel".
    let expected: Vec<String> = ["alice", "Bob", "ZED", "Émile", "Öffi", "ösel", "über"]
        .iter()
        .map(|n| by_name[n].clone())
        .collect();
    let asc = list(&app, &[("sortBy", "userName")]).await;
    assert_eq!(ids(&asc), expected);
    assert_eq!(asc["totalResults"], 7);
    let explicit = list(&app, &[("sortBy", "USERNAME"), ("sortOrder", "Ascending")]).await;
    assert_eq!(ids(&explicit), expected);
    let desc = list(&app, &[("sortBy", "userName"), ("sortOrder", "descending")]).await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(ids(&desc), reversed);
    // URN-qualified, and paged: pages concatenate to the whole order, no gaps, no repeats.
    let urn = "urn:ietf:params:scim:schemas:core:2.0:User:userName";
    assert_eq!(paged(&app, &[("sortBy", urn)], 3).await, expected);
    assert_eq!(
        paged(&app, &[("sortBy", "userName"), ("sortOrder", "descending")], 2).await,
        reversed
    );
    // A filter with the sort: only the matches, still in order.
    let filtered = list(&app, &[("sortBy", "userName"), ("filter", "userName gt \"c\"")]).await;
    assert_eq!(ids(&filtered), expected[2..].to_vec());
}

async fn nullable_and_case_exact_columns_sort_missing_last(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mk = |name: &str, display: Option<&str>, ext: Option<&str>| {
        let mut u = json!({"userName": name});
        if let Some(d) = display {
            u["displayName"] = json!(d);
        }
        if let Some(e) = ext {
            u["externalId"] = json!(e);
        }
        u
    };
    let u_a = create(&app, &mk("a", Some("beta"), Some("b"))).await;
    let u_b = create(&app, &mk("b", None, Some("B"))).await;
    let u_c = create(&app, &mk("c", Some("ALPHA"), None)).await;
    let u_d = create(&app, &mk("d", None, Some("a"))).await;
    let u_e = create(&app, &mk("e", Some("Gamma"), None)).await;
    let by_id = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };
    let cat = |parts: &[Vec<String>]| parts.concat();

    // displayName: case-insensitive; the users without one last (ascending), tied by id.
    let want = cat(&[
        vec![u_c.clone(), u_a.clone(), u_e.clone()],
        by_id(vec![&u_b, &u_d]),
    ]);
    assert_eq!(ids(&list(&app, &[("sortBy", "displayName")]).await), want);
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(
        ids(&list(&app, &[("sortBy", "displayName"), ("sortOrder", "descending")]).await),
        rev,
        "descending: missing first, then the exact reverse"
    );
    // externalId is caseExact: "B" < "a" < "b" by code point.
    let want = cat(&[
        vec![u_b.clone(), u_d.clone(), u_a.clone()],
        by_id(vec![&u_c, &u_e]),
    ]);
    assert_eq!(ids(&list(&app, &[("sortBy", "externalId")]).await), want);
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(
        ids(&list(&app, &[("sortBy", "externalId"), ("sortOrder", "descending")]).await),
        rev
    );
    // id and meta.created.
    assert_eq!(
        ids(&list(&app, &[("sortBy", "id")]).await),
        by_id(vec![&u_a, &u_b, &u_c, &u_d, &u_e])
    );
    assert_eq!(
        ids(&list(&app, &[("sortBy", "meta.created")]).await),
        ids(&list(&app, &[]).await),
        "the default order is meta.created ascending"
    );
}

async fn ties_break_by_id_and_pages_stay_stable(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut same = Vec::new();
    for (i, display) in ["Same", "same", "SAME", "sAmE", "same", "Other"]
        .iter()
        .enumerate()
    {
        let id = create(
            &app,
            &json!({"userName": format!("tie{i}"), "displayName": display, "title": "T", "active": i % 2 == 0}),
        )
        .await;
        if i < 5 {
            same.push(id);
        }
    }
    let other = ids(&list(&app, &[("filter", "displayName eq \"other\"")]).await);
    same.sort();
    // displayName: "other" < "same" (folded); the five "same" tie and are ordered by id.
    let by_display = [other.clone(), same.clone()].concat();
    // Everyone has the same title: the order is by id alone.
    let mut by_title = by_display.clone();
    by_title.sort();
    for (sort_by, expected) in [("displayName", by_display), ("title", by_title)] {
        assert_eq!(
            paged(&app, &[("sortBy", sort_by)], 2).await,
            expected,
            "{sort_by}"
        );
        let mut rev = expected.clone();
        rev.reverse();
        assert_eq!(
            paged(&app, &[("sortBy", sort_by), ("sortOrder", "descending")], 4).await,
            rev,
            "{sort_by} descending"
        );
    }
    // Booleans: false before true, ties by id.
    let active = list(&app, &[("sortBy", "active")]).await;
    let flags: Vec<Value> = field(&active, "active");
    assert_eq!(
        flags,
        json!([false, false, false, true, true, true])
            .as_array()
            .unwrap()
            .clone()
    );
}

/// Users whose attributes without a column give the Rust-side sort something to do.
async fn rich_users(app: &TestApp) -> Vec<String> {
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let bodies = [
        json!({"userName": "r0", "name": {"familyName": "Young"}, "title": "b",
               "emails": [{"value": "z@x.org"}, {"value": "B@x.org", "primary": true}],
               ent: {"employeeNumber": "10"}}),
        json!({"userName": "r1", "name": {"familyName": "adams"},
               "emails": [{"value": "c@x.org"}], ent: {"employeeNumber": "9"}}),
        json!({"userName": "r2", "name": {"familyName": "Ödegaard"}, "title": "A"}),
        json!({"userName": "r3", "name": {"givenName": "NoFamily"}, "title": "c",
               "emails": [{"value": "a@x.org", "type": "work"}]}),
        json!({"userName": "r4", "name": {"familyName": "Young"}, "title": "a"}),
    ];
    let mut out = Vec::new();
    for b in &bodies {
        out.push(create(app, b).await);
    }
    out
}

async fn attributes_without_a_column_sort_in_rust(backend: Backend) {
    let app = TestApp::start(backend).await;
    let u = rich_users(&app).await;
    let (y0, y4) = if u[0] < u[4] {
        (u[0].clone(), u[4].clone())
    } else {
        (u[4].clone(), u[0].clone())
    };
    let pick = |idx: &[usize]| idx.iter().map(|&i| u[i].clone()).collect::<Vec<_>>();
    // name.familyName: folded ("adams" < "young" < "ödegaard"), ties by id, no family name last.
    let want = [pick(&[1]), vec![y0.clone(), y4.clone()], pick(&[2, 3])].concat();
    assert_eq!(ids(&list(&app, &[("sortBy", "name.familyName")]).await), want);
    assert_eq!(paged(&app, &[("sortBy", "name.familyName")], 2).await, want);
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(
        paged(
            &app,
            &[("sortBy", "name.familyName"), ("sortOrder", "descending")],
            3
        )
        .await,
        rev
    );
    // emails: the primary value, else the first (a@ r3, b@ r0 (primary), c@ r1), none last.
    let none: Vec<String> = {
        let mut v = pick(&[2, 4]);
        v.sort();
        v
    };
    assert_eq!(
        ids(&list(&app, &[("sortBy", "emails")]).await),
        [pick(&[3, 0, 1]), none.clone()].concat()
    );
    assert_eq!(
        ids(&list(&app, &[("sortBy", "emails.value")]).await),
        [pick(&[3, 0, 1]), none].concat()
    );
    // title is caseExact: false in the User schema: "A" and "a" tie, broken by id.
    let (t2, t4) = if u[2] < u[4] { (2, 4) } else { (4, 2) };
    assert_eq!(
        ids(&list(&app, &[("sortBy", "title")]).await),
        pick(&[t2, t4, 0, 3, 1])
    );
    // An extension attribute, URN-qualified or not; a string, so "10" < "9".
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
    for sort_by in [ent, "employeeNumber"] {
        let got = ids(&list(&app, &[("sortBy", sort_by)]).await);
        assert_eq!(got.get(..2), Some(&pick(&[0, 1])[..]), "{sort_by}");
    }
    // With a filter the SQL cannot decide, and a window.
    let page = list(
        &app,
        &[
            ("sortBy", "name.familyName"),
            ("filter", "title pr"),
            ("startIndex", "2"),
            ("count", "2"),
        ],
    )
    .await;
    assert_eq!(page["totalResults"], 4);
    assert_eq!(ids(&page), vec![y4, u[2].clone()]);
}

async fn sql_and_rust_sorts_agree(backend: Backend) {
    let app = TestApp::start(backend).await;
    for (i, (name, display, ext)) in [
        ("Zoë", Some("émile"), Some("x-1")),
        ("adam", Some("Émile"), None),
        ("Ärger", None, Some("X-1")),
        ("bea", Some("zed"), Some("x-10")),
        ("ÆON", Some("Zed"), Some("")),
        ("ßtraße", Some("aa"), Some("x-2")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut u = json!({"userName": name, "title": format!("t{i}")});
        if let Some(d) = display {
            u["displayName"] = json!(d);
        }
        if let Some(e) = ext {
            u["externalId"] = json!(e);
        }
        create(&app, &u).await;
    }
    let first = ids(&list(&app, &[]).await);
    app.patch(
        &format!("/Users/{}", first[0]),
        &patch_op("replace", Some("title"), &json!("changed")),
    )
    .await;
    // `title pr` has no column: the same list, sorted in Rust instead of SQL.
    for sort_by in [
        "userName",
        "displayName",
        "externalId",
        "id",
        "meta.created",
        "meta.lastModified",
    ] {
        for order in ["ascending", "descending"] {
            let sql = ids(&list(&app, &[("sortBy", sort_by), ("sortOrder", order)]).await);
            let rust = ids(&list(
                &app,
                &[("sortBy", sort_by), ("sortOrder", order), ("filter", "title pr")],
            )
            .await);
            assert_eq!(sql.len(), 6);
            assert_eq!(sql, rust, "{sort_by} {order}");
        }
    }
    let last = ids(&list(&app, &[("sortBy", "meta.lastModified")]).await);
    assert_eq!(last.last(), Some(&first[0]), "the patched user was modified last");
}

async fn paging_edge_cases_with_a_sort(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.limits.max_results = 3).await;
    for name in ["e", "d", "c", "b", "a"] {
        app.create_user(name).await;
    }
    let sorted = ids(&list(&app, &[("sortBy", "userName"), ("count", "100")]).await);
    assert_eq!(sorted.len(), 3, "count above maxResults is capped, not refused");
    for sort_by in ["userName", "name.givenName"] {
        let zero = list(&app, &[("sortBy", sort_by), ("count", "0")]).await;
        assert_eq!(
            (&zero["totalResults"], &zero["itemsPerPage"], &zero["Resources"]),
            (&json!(5), &json!(0), &json!([])),
            "{sort_by}"
        );
        let neg = list(&app, &[("sortBy", sort_by), ("count", "-2")]).await;
        assert_eq!(neg["itemsPerPage"], 0);
        let from_zero = list(&app, &[("sortBy", sort_by), ("startIndex", "0"), ("count", "2")]).await;
        assert_eq!(from_zero["startIndex"], 1);
        let from_neg = list(&app, &[("sortBy", sort_by), ("startIndex", "-9"), ("count", "2")]).await;
        assert_eq!(ids(&from_neg), ids(&from_zero));
        let tail = list(&app, &[("sortBy", sort_by), ("startIndex", "5"), ("count", "3")]).await;
        assert_eq!((tail["totalResults"].as_u64(), ids(&tail).len()), (Some(5), 1));
        let beyond = list(&app, &[("sortBy", sort_by), ("startIndex", "6")]).await;
        assert_eq!(
            (&beyond["totalResults"], &beyond["Resources"]),
            (&json!(5), &json!([]))
        );
        let far = list(&app, &[("sortBy", sort_by), ("startIndex", "99999999999")]).await;
        assert_eq!(far["Resources"], json!([]));
    }
    let a_to_c = ids(&list(&app, &[("sortBy", "userName")]).await);
    let d_e = ids(&list(&app, &[("sortBy", "userName"), ("startIndex", "4")]).await);
    assert_eq!(a_to_c.len() + d_e.len(), 5);
    let e_to_c = ids(&list(&app, &[("sortBy", "userName"), ("sortOrder", "descending")]).await);
    assert_eq!(e_to_c.first(), d_e.last());
}

async fn bad_sort_parameters_are_400_invalid_value(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.create_user("x").await;
    for query in [
        "sortBy=nope",
        "sortBy=name",
        "sortBy=password",
        "sortBy=name.nope",
        "sortBy=emails%5Btype%20eq%20%22work%22%5D",
        "sortBy=urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:nope",
        "sortBy=userName&sortOrder=up",
        "sortOrder=sideways",
    ] {
        let res = app.get(&format!("/Users?{query}")).await;
        assert_eq!(
            (res.status, res.body["scimType"].as_str()),
            (400, Some("invalidValue")),
            "{query}: {}",
            res.text
        );
        assert_eq!(res.body["status"], "400");
    }
    // Blank sortBy is no sortBy.
    assert_eq!(app.get("/Users?sortBy=&sortOrder=descending").await.status, 200);
}

async fn post_search_on_users(backend: Backend) {
    let app = TestApp::start(backend).await;
    for name in ["carol", "alice", "bob", "dave"] {
        app.create_user(&format!("{name}@example.com")).await;
    }
    let body = json!({
        "schemas": [SEARCH],
        "attributes": ["userName", "name.givenName"],
        "filter": "userName sw \"b\" or userName sw \"C\" or userName sw \"d\"",
        "sortBy": "userName",
        "sortOrder": "descending",
        "startIndex": 1,
        "count": 2
    });
    let res = app.post("/Users/.search", &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/scim+json"));
    assert_eq!(
        res.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    assert_eq!(res.body["totalResults"], 3);
    assert_eq!(res.body["itemsPerPage"], 2);
    let first = &res.body["Resources"][0];
    assert_eq!(first["userName"], "dave@example.com");
    assert_eq!(first["name"], json!({"givenName": "Test"}));
    assert!(first.get("emails").is_none() && first.get("meta").is_none());
    assert!(first["id"].is_string(), "id is always returned");
    assert_eq!(res.body["Resources"][1]["userName"], "carol@example.com");

    // The same search as query parameters gives the same answer.
    let get = app
        .get(&format!(
            "/Users?attributes=userName,name.givenName&filter={}&sortBy=userName&sortOrder=descending&count=2",
            enc(body["filter"].as_str().unwrap())
        ))
        .await;
    assert_eq!(get.body, res.body);

    let excluded = app
        .post(
            "/Users/.search",
            &json!({"schemas": [SEARCH], "excludedAttributes": ["emails", "name"], "startIndex": 4}),
        )
        .await;
    assert_eq!(excluded.status, 200, "{}", excluded.text);
    assert_eq!(excluded.body["totalResults"], 4);
    let only = &excluded.body["Resources"][0];
    assert_eq!(only["userName"], "dave@example.com", "default order: creation");
    assert!(only.get("emails").is_none() && only.get("name").is_none() && only.get("meta").is_some());

    let bad = |body: &str| {
        TestRequest::post()
            .uri(&format!("{SCIM}/Users/.search"))
            .insert_header(("Authorization", format!("Bearer {}", app.token)))
            .insert_header(("Content-Type", "application/scim+json"))
            .set_payload(body.to_owned())
    };
    for (body, kind) in [
        ("{", "invalidSyntax"),
        ("{}", "invalidSyntax"),
        (
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}"#,
            "invalidSyntax",
        ),
        (
            &format!(r#"{{"schemas":["{SEARCH}"],"filter":"userName eq"}}"#),
            "invalidFilter",
        ),
        (
            &format!(r#"{{"schemas":["{SEARCH}"],"sortBy":"nope"}}"#),
            "invalidValue",
        ),
        (
            &format!(r#"{{"schemas":["{SEARCH}"],"count":"lots"}}"#),
            "invalidValue",
        ),
        (
            &format!(r#"{{"schemas":["{SEARCH}"],"attributes":"emails[value pr]"}}"#),
            "invalidPath",
        ),
    ] {
        let res = app.send(bad(body)).await;
        assert_eq!(
            (res.status, res.body["scimType"].as_str()),
            (400, Some(kind)),
            "{body}: {}",
            res.text
        );
    }
    // `.search` is not an id; other methods on it are not searches.
    assert_eq!(app.get("/Users/.search").await.status, 405);
    assert_eq!(
        app.get("/Users").await.body["totalResults"],
        4,
        "nothing was created"
    );
}

async fn post_search_on_the_root(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut made = Vec::new();
    for name in ["Mallory", "trent", "Peggy", "victor"] {
        made.push(app.create_user(name).await);
    }
    let res = app
        .post(
            "/.search",
            &json!({"schemas": [SEARCH], "filter": "userName ne \"trent\"", "sortBy": "userName",
                    "attributes": ["userName"], "count": 2, "startIndex": 2}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["totalResults"], 3);
    assert_eq!(res.body["startIndex"], 2);
    assert_eq!(field(&res.body, "userName"), [json!("Peggy"), json!("victor")]);
    assert_eq!(
        res.body["Resources"][0],
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": made[2], "userName": "Peggy"})
    );
    // Default order and every resource type's meta.
    let all = app.post("/.search", &json!({"schemas": [SEARCH]})).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let users: Vec<String> = ids(&all.body)
        .into_iter()
        .filter(|id| made.contains(id))
        .collect();
    assert_eq!(users, made, "creation order");
    assert!(
        all.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["meta"]["resourceType"].is_string())
    );
    let desc = app
        .post(
            "/.search",
            &json!({"schemas": [SEARCH], "filter": "meta.resourceType eq \"User\"",
                    "sortBy": "userName", "sortOrder": "descending", "count": 1}),
        )
        .await;
    assert_eq!(desc.status, 200, "{}", desc.text);
    assert_eq!(
        (desc.body["totalResults"].as_u64(), ids(&desc.body)),
        (Some(4), vec![made[3].clone()])
    );
    let zero = app
        .post("/.search", &json!({"schemas": [SEARCH], "count": 0}))
        .await;
    assert_eq!(
        (&zero.body["itemsPerPage"], &zero.body["Resources"]),
        (&json!(0), &json!([]))
    );
    let beyond = app
        .post(
            "/.search",
            &json!({"schemas": [SEARCH], "startIndex": 1000, "filter": "userName pr"}),
        )
        .await;
    assert_eq!(
        (&beyond.body["totalResults"], &beyond.body["Resources"]),
        (&json!(4), &json!([]))
    );

    for (body, kind) in [
        (
            json!({"schemas": [SEARCH], "filter": "nope eq 1"}),
            "invalidFilter",
        ),
        (json!({"schemas": [SEARCH], "sortBy": "nope"}), "invalidValue"),
        (json!({"filter": "userName pr"}), "invalidSyntax"),
    ] {
        let res = app.post("/.search", &body).await;
        assert_eq!(
            (res.status, res.body["scimType"].as_str()),
            (400, Some(kind)),
            "{body}: {}",
            res.text
        );
    }
}

async fn searches_authenticate_before_reading_the_body(backend: Backend) {
    let app = TestApp::start(backend).await;
    for path in ["/Users/.search", "/.search"] {
        for auth in [None, Some("Bearer ofb_wrong")] {
            for body in ["{not json", r#"{"schemas":[]}"#] {
                let mut req = TestRequest::post()
                    .uri(&format!("{SCIM}{path}"))
                    .set_payload(body.to_owned());
                if let Some(a) = auth {
                    req = req.insert_header(("Authorization", a));
                }
                let res = app.send(req).await;
                assert_eq!(res.status, 401, "{path} {auth:?} {body}: {}", res.text);
            }
        }
    }
}

async fn if_none_match_answers_304(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("etag@example.com").await;
    let uri = format!("{SCIM}/Users/{id}");
    let get = |tag: &str, auth: bool| {
        let mut req = TestRequest::get()
            .uri(&uri)
            .insert_header(("If-None-Match", tag.to_owned()));
        if auth {
            req = req.insert_header(("Authorization", format!("Bearer {}", app.token)));
        }
        req
    };
    for tag in ["W/\"1\"", "\"1\"", "*", "W/\"7\", W/\"1\""] {
        let res = app.send(get(tag, true)).await;
        assert_eq!(res.status, 304, "{tag}: {}", res.text);
        assert_eq!(res.header("etag"), Some("W/\"1\""), "{tag}");
        assert!(res.text.is_empty(), "{tag}: no body");
    }
    let stale = app.send(get("W/\"2\"", true)).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body["id"], id);
    assert_eq!(
        app.send(get("*", false)).await.status,
        401,
        "authentication first"
    );

    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", Some("displayName"), &json!("New")),
    )
    .await;
    let changed = app.send(get("W/\"1\"", true)).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.header("etag"), Some("W/\"2\""));
    assert_eq!(changed.body["displayName"], "New");
    assert_eq!(app.send(get("W/\"2\"", true)).await.status, 304);

    app.delete(&format!("/Users/{id}")).await;
    assert_eq!(
        app.send(get("*", true)).await.status,
        404,
        "* needs a current resource"
    );
}

async fn too_many_only_past_the_scan_bound(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.limits.max_scan = 3).await;
    for i in 0..5 {
        let mut u = new_user(&format!("s{i}@example.com"));
        u["title"] = json!(format!("t{i}"));
        create(&app, &u).await;
    }
    for query in [
        "filter=title%20eq%20%22t1%22",
        "sortBy=title",
        "sortBy=userName&filter=not%20(title%20eq%20%22t1%22)",
    ] {
        let res = app.get(&format!("/Users?{query}")).await;
        assert_too_many(&res, query);
        assert!(res.body["detail"].as_str().unwrap().contains("limits.max_scan"));
    }
    // Filters and sorts SQL answers alone are never refused; neither is a Rust check of few candidates.
    for (query, total) in [
        ("sortBy=userName&sortOrder=descending", 5),
        ("filter=userName%20sw%20%22s%22&sortBy=externalId", 5),
        (
            "filter=userName%20lt%20%22s2%22%20and%20title%20pr&sortBy=title",
            2,
        ),
        ("filter=userName%20lt%20%22s3%22&sortBy=name.familyName", 3),
    ] {
        let res = app.get(&format!("/Users?{query}")).await;
        assert_eq!(res.status, 200, "{query}: {}", res.text);
        assert_eq!(res.body["totalResults"], total, "{query}");
    }
    // A root search page deeper than the bound.
    let deep = app
        .post(
            "/.search",
            &json!({"schemas": [SEARCH], "startIndex": 2, "count": 3}),
        )
        .await;
    assert_too_many(&deep, "");
    let shallow = app
        .post(
            "/.search",
            &json!({"schemas": [SEARCH], "startIndex": 2, "count": 2}),
        )
        .await;
    assert_eq!(shallow.status, 200, "{}", shallow.text);
    assert_eq!(ids(&shallow.body).len(), 2);
}

/// Microsoft's SCIM test collection asks `GET /Users/?filter=…`: every collection (and each resource) answers with
/// a trailing slash as without one.
async fn collections_answer_with_a_trailing_slash(backend: Backend) {
    let app = TestApp::start(backend).await;
    let uid = create(&app, &new_user("slash@example.com")).await;
    let res = app
        .post(
            "/Groups/",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "slashers",
                "members": [{"value": uid}]}),
        )
        .await;
    assert_eq!(res.status, 201, "POST /Groups/: {}", res.text);
    let gid = res.body["id"].as_str().unwrap().to_owned();
    let filter = enc("userName eq \"slash@example.com\"");
    let res = app.get(&format!("/Users/?filter={filter}")).await;
    assert_eq!(res.status, 200, "GET /Users/?filter: {}", res.text);
    assert_eq!(ids(&res.body), vec![uid.clone()]);
    let res = app
        .get(&format!("/Groups/?filter={}", enc("displayName eq \"slashers\"")))
        .await;
    assert_eq!(res.status, 200, "GET /Groups/?filter: {}", res.text);
    assert_eq!(ids(&res.body), vec![gid.clone()]);
    let search = json!({"schemas": [SEARCH], "filter": "userName eq \"slash@example.com\""});
    for path in ["/Users/.search/", "/.search/"] {
        let res = app.post(path, &search).await;
        assert_eq!(res.status, 200, "POST {path}: {}", res.text);
        assert_eq!(ids(&res.body), vec![uid.clone()], "POST {path}");
    }
    let res = app
        .post(
            "/Groups/.search/",
            &json!({"schemas": [SEARCH], "filter": "displayName eq \"slashers\""}),
        )
        .await;
    assert_eq!(res.status, 200, "POST /Groups/.search/: {}", res.text);
    assert_eq!(ids(&res.body), vec![gid.clone()]);
    for path in [
        "/ServiceProviderConfig/",
        "/ResourceTypes/",
        "/ResourceTypes/User/",
        "/Schemas/",
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User/",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status, 200, "GET {path}: {}", res.text);
    }
    let res = app.get(&format!("/Users/{uid}/")).await;
    assert_eq!((res.status, res.body["id"].as_str()), (200, Some(uid.as_str())));
    let res = app.get(&format!("/Groups/{gid}/")).await;
    assert_eq!((res.status, res.body["id"].as_str()), (200, Some(gid.as_str())));
    let res = app
        .patch(
            &format!("/Users/{uid}/"),
            &patch_op("replace", Some("displayName"), &json!("Slash")),
        )
        .await;
    assert_eq!(res.status, 200, "PATCH /Users/{{id}}/: {}", res.text);
    assert_eq!(
        app.scim("DELETE", &format!("/Groups/{gid}/"), None).await.status,
        204
    );
    // Other methods still answer 405 there.
    assert_eq!(app.scim("DELETE", "/Users/", None).await.status, 405);
}

/// Every filter the database decides has a bounded cost: `emails.value co` OR'ed 363 times (134 s on SQLite
/// before) is a 400 `tooMany` on every list and search endpoint, as is a filter over `limits.max_filter_terms`
/// comparisons; a handful of substring terms still works.
async fn filters_over_the_term_limits_are_too_many(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut want = Vec::new();
    for name in ["ann@a.example", "bob@b.example", "cy@c.example"] {
        let id = create(&app, &new_user(name)).await;
        if !name.starts_with("cy") {
            want.push(id);
        }
    }
    let cos = |n: usize| -> String {
        (0..n)
            .map(|i| format!("emails.value co \"x{i}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let attack = cos(363);
    let res = app.get(&format!("/Users?filter={}", enc(&attack))).await;
    assert_too_many(&res, "GET /Users");
    assert!(
        res.body["detail"]
            .as_str()
            .unwrap()
            .contains("max_filter_substring_terms")
    );
    let search = json!({"schemas": [SEARCH], "filter": attack});
    for path in ["/Users/.search", "/.search"] {
        assert_too_many(&app.post(path, &search).await, path);
    }
    let groups = (0..11)
        .map(|i| format!("displayName co \"g{i}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    assert_too_many(
        &app.get(&format!("/Groups?filter={}", enc(&groups))).await,
        "GET /Groups",
    );
    assert_too_many(
        &app.post("/Groups/.search", &json!({"schemas": [SEARCH], "filter": groups}))
            .await,
        "POST /Groups/.search",
    );
    // A value filter's comparisons count too.
    let inside = format!("emails[{}]", cos(11).replace("emails.value", "value"));
    assert_too_many(
        &app.get(&format!("/Users?filter={}", enc(&inside))).await,
        "value filter",
    );
    // Any kind of term: 51 `eq` terms are over limits.max_filter_terms (50).
    let eqs = (0..51)
        .map(|i| format!("userName eq \"u{i}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    let res = app.get(&format!("/Users?filter={}", enc(&eqs))).await;
    assert_too_many(&res, "51 eq terms");
    assert!(res.body["detail"].as_str().unwrap().contains("max_filter_terms"));
    // Within the limits: 10 substring terms, 50 terms in all.
    let ok = format!(
        "emails.value co \"@a.\" or emails.value ew \"b.example\" or {} or {}",
        cos(8),
        (0..40)
            .map(|i| format!("userName eq \"u{i}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    let mut got = ids(&list(&app, &[("filter", &ok)]).await);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let res = app
        .post("/.search", &json!({"schemas": [SEARCH], "filter": ok}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["totalResults"], 2);
}

/// On PostgreSQL every list statement runs under `limits.list_statement_timeout_ms`: one cut off answers 400
/// `tooMany` (here a 1 ms bound over 50 000 rows), and the server goes on answering. SQLite has no such bound
/// (the term limits bound its filters), so the same list answers there.
async fn slow_list_statements_are_cut_off_on_postgres(backend: Backend) {
    use diesel::RunQueryDsl;
    let app = TestApp::start_with(backend, |c| c.limits.list_statement_timeout_ms = 1).await;
    app.db()
        .write(|c| {
            diesel::sql_query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
                 INSERT INTO users (id, user_name, user_name_folded, display_name, display_name_folded, active, \
                 resource, token_generation, version, created, last_modified) \
                 SELECT 'seed-' || i, 'seed' || i, 'seed' || i, 'Seed ' || i, 'seed ' || i, 1 = 1, '{}', 0, 1, \
                 CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM n",
            )
            .execute(c)?;
            Ok::<_, offboard::db::DbError>(())
        })
        .unwrap();
    let slow = (0..10)
        .map(|i| format!("displayName co \"zz{i}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    let res = app.get(&format!("/Users?filter={}", enc(&slow))).await;
    match backend {
        Backend::Postgres => {
            assert_too_many(&res, "");
            assert!(
                res.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("list_statement_timeout_ms")
            );
            let res = app
                .post("/.search", &json!({"schemas": [SEARCH], "filter": slow}))
                .await;
            assert_too_many(&res, "");
        }
        Backend::Sqlite => {
            assert_eq!(res.status, 200, "{}", res.text);
            assert_eq!(res.body["totalResults"], 0);
        }
    }
    // Reads and writes go on.
    let id = create(&app, &new_user("after@example.com")).await;
    assert_eq!(app.get(&format!("/Users/{id}")).await.status, 200);
}

/// A page carries its total in the same statement (docs/decisions/0042-list-page-and-total-in-one-statement.md):
/// `totalResults` stays right on a full and a partial first page, a middle page, the last page, a page past the
/// end, an empty selection and `count=0`, with filters whose binds appear twice in the statement.
async fn totals_hold_on_every_page(backend: Backend) {
    type Case<'a> = (&'a [(&'a str, &'a str)], u64, usize);
    let app = TestApp::start(backend).await;
    for i in 0..7 {
        let mut body = new_user(&format!(
            "t{i}@{}.example.com",
            if i % 2 == 0 { "even" } else { "odd" }
        ));
        body["displayName"] = json!(if i < 5 { "Team A" } else { "Team B" });
        create(&app, &body).await;
    }
    let cases: [Case<'_>; 12] = [
        (&[("count", "3")], 7, 3),
        (&[("count", "10")], 7, 7),
        (&[("startIndex", "4"), ("count", "3")], 7, 3),
        (&[("startIndex", "7"), ("count", "3")], 7, 1),
        (&[("startIndex", "8"), ("count", "3")], 7, 0),
        (&[("startIndex", "99"), ("count", "3")], 7, 0),
        (&[("count", "0")], 7, 0),
        (
            &[
                (
                    "filter",
                    "displayName eq \"Team A\" and emails.value ew \"even.example.com\"",
                ),
                ("count", "2"),
            ],
            3,
            2,
        ),
        (
            &[
                (
                    "filter",
                    "displayName eq \"Team A\" and emails.value ew \"even.example.com\"",
                ),
                ("startIndex", "3"),
            ],
            3,
            1,
        ),
        (
            &[
                (
                    "filter",
                    "displayName eq \"Team A\" and emails.value ew \"even.example.com\"",
                ),
                ("startIndex", "4"),
            ],
            3,
            0,
        ),
        (&[("filter", "displayName eq \"Team C\"")], 0, 0),
        (
            &[("filter", "displayName eq \"Team C\""), ("startIndex", "2")],
            0,
            0,
        ),
    ];
    for (query, total, items) in cases {
        let page = list(&app, query).await;
        assert_eq!(
            (
                page["totalResults"].as_u64(),
                ids(&page).len(),
                page["itemsPerPage"].as_u64()
            ),
            (Some(total), items, Some(items as u64)),
            "{query:?}"
        );
    }
    // The pages of a list, read one after another, are the whole list once.
    let all = ids(&list(&app, &[("count", "100")]).await);
    let mut pages = Vec::new();
    for start in ["1", "4", "7"] {
        pages.extend(ids(&list(&app, &[("startIndex", start), ("count", "3")]).await));
    }
    assert_eq!(pages, all);
}

both_backends!(
    user_name_order_is_case_insensitive_by_code_point,
    nullable_and_case_exact_columns_sort_missing_last,
    ties_break_by_id_and_pages_stay_stable,
    attributes_without_a_column_sort_in_rust,
    sql_and_rust_sorts_agree,
    paging_edge_cases_with_a_sort,
    bad_sort_parameters_are_400_invalid_value,
    post_search_on_users,
    post_search_on_the_root,
    searches_authenticate_before_reading_the_body,
    if_none_match_answers_304,
    too_many_only_past_the_scan_bound,
    collections_answer_with_a_trailing_slash,
    filters_over_the_term_limits_are_too_many,
    slow_list_statements_are_cut_off_on_postgres,
    totals_hold_on_every_page,
);
