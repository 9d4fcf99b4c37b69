//! How many statements each SCIM write use case sends, counted with `offboard::db::statements` on the thread that
//! runs it (docs/decisions/0041-fewer-statements-per-write.md): a regression guard on the figures, and on every
//! statement staying in diesel's statement cache. Counts, never timings.

use offboard::db::statements::{Recorded, record};
use offboard::lifecycle::users;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, both_backends, new_user};

/// The PATCH the identity provider sends to (de)activate a user, as Okta and the side-by-side bench send it.
fn set_active(active: bool) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": active}}]
    })
}

/// The statements of each use case on one user, in the order the bench runs them (create, deactivate,
/// reactivate), then a PUT and a DELETE.
fn cycle(app: &TestApp, user_name: &str) -> Vec<(&'static str, Recorded)> {
    let db = app.db();
    let max_ops = app.state.config.limits.max_patch_operations;
    let (view, create) = record(|| users::create(db, &new_user(user_name)).expect("create"));
    let id = view.user.id;
    let (view, deactivate) =
        record(|| users::patch(db, &id, &set_active(false), None, max_ops).expect("deactivate"));
    assert!(!view.user.active);
    let (view, reactivate) =
        record(|| users::patch(db, &id, &set_active(true), None, max_ops).expect("reactivate"));
    assert!(view.user.active);
    let mut replacement = new_user(user_name);
    replacement["displayName"] = json!("Renamed User");
    let (view, put) = record(|| users::replace(db, &id, &replacement, None).expect("replace"));
    assert_eq!(view.user.display_name.as_deref(), Some("Renamed User"));
    let ((), delete) = record(|| users::delete(db, &id, None).expect("delete"));
    vec![
        ("create", create),
        ("deactivate", deactivate),
        ("reactivate", reactivate),
        ("put", put),
        ("delete", delete),
    ]
}

/// Most statements each use case may send, in [`cycle`]'s order.
type Limits = [(&'static str, usize); 5];

/// Prints what each use case sent and checks it against `limits`.
fn check(backend: Backend, streams: &str, counted: &[(&'static str, Recorded)], limits: &Limits) {
    for ((name, r), (limit_name, limit)) in counted.iter().zip(limits) {
        assert_eq!(name, limit_name);
        eprintln!(
            "{backend:?} {streams} {name}: {} statements, {} uncached\n{r}",
            r.total(),
            r.uncached().len()
        );
        assert!(
            r.total() <= *limit,
            "{backend:?} {streams}: {name} sent {} statements, at most {limit} expected:\n{r}",
            r.total()
        );
        // Every statement stays prepared, the announcement of a change of revocation state included.
        let uncached = r.uncached();
        assert!(
            uncached.is_empty(),
            "{backend:?} {streams}: {name} prepared statements again: {uncached:?}"
        );
    }
}

async fn write_use_cases_send_few_statements(backend: Backend) {
    let app = TestApp::start(backend).await;
    // The first run fills the statement caches; the second is what every later write costs.
    cycle(&app, "warm@example.com");
    let counted = cycle(&app, "counted@example.com");
    let limits = match backend {
        Backend::Sqlite => [
            ("create", 10),
            ("deactivate", 17),
            ("reactivate", 14),
            ("put", 11),
            ("delete", 18),
        ],
        Backend::Postgres => [
            ("create", 9),
            ("deactivate", 18),
            ("reactivate", 13),
            ("put", 11),
            ("delete", 19),
        ],
    };
    check(backend, "no streams", &counted, &limits);
}

async fn write_use_cases_with_a_stream_send_few_statements(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("poller", &[offboard::credentials::Scope::SsfManage]);
    let res = app
        .send(
            actix_web::test::TestRequest::post()
                .uri("/ssf/streams")
                .insert_header(("Authorization", format!("Bearer {secret}")))
                .set_json(json!({})),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    cycle(&app, "warm@example.com");
    let counted = cycle(&app, "counted@example.com");
    let limits = match backend {
        Backend::Sqlite => [
            ("create", 10),
            ("deactivate", 20),
            ("reactivate", 17),
            ("put", 11),
            ("delete", 21),
        ],
        Backend::Postgres => [
            ("create", 9),
            ("deactivate", 23),
            ("reactivate", 18),
            ("put", 11),
            ("delete", 24),
        ],
    };
    check(backend, "one stream", &counted, &limits);
}

both_backends!(
    write_use_cases_send_few_statements,
    write_use_cases_with_a_stream_send_few_statements
);
