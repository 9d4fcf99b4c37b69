//! Filter micro-benchmarks (criterion): parsing the filters IdPs and checkers send, translating them to SQL, and
//! evaluating them in Rust over a user; and the PATCH engine (`patch/…`): parsing and applying PATCH messages of
//! many operations, the work a PATCH does inside its write transaction. `cargo bench --bench filter`.

use criterion::{Criterion, criterion_group, criterion_main};
use offboard::db::filter_sql::{Dialect, users_where};
use offboard::scim::schema::registry;
use offboard::scim::{PATCH_OP_SCHEMA, filter, patch};
use serde_json::{Value, json};

const FILTERS: &[(&str, &str)] = &[
    ("okta_username_eq", r#"userName eq "test.user@okta.local""#),
    (
        "entra_work_email",
        r#"emails[type eq "work"].value eq "TestMhvaes@test.microsoft.com""#,
    ),
    (
        "sw_and_or",
        r#"(userName sw "j" or displayName co "smith") and active eq true"#,
    ),
    (
        "rfc_complex",
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org") and not (meta.lastModified lt "2011-05-13T04:42:34Z")"#,
    ),
];

fn bench(c: &mut Criterion) {
    let rt = registry().user();
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "0192e4a1-0000-7000-8000-000000000001",
        "userName": "test.user@okta.local",
        "displayName": "Jane Smith",
        "userType": "Employee",
        "active": true,
        "emails": [{"value": "TestMhvaes@test.microsoft.com", "type": "work", "primary": true}],
        "meta": {"resourceType": "User", "created": "2026-01-01T00:00:00.000Z", "lastModified": "2026-01-02T00:00:00.000Z"}
    });
    for (name, text) in FILTERS {
        c.bench_function(&format!("parse/{name}"), |b| {
            b.iter(|| filter::parse(std::hint::black_box(text)));
        });
        let Ok(parsed) = filter::parse(text) else {
            panic!("benchmark filter {name} does not parse")
        };
        c.bench_function(&format!("sql/{name}"), |b| {
            b.iter(|| users_where(std::hint::black_box(&parsed), rt, Dialect::Postgres, 1));
        });
        c.bench_function(&format!("matches/{name}"), |b| {
            b.iter(|| filter::matches(std::hint::black_box(&parsed), &user, rt));
        });
    }
}

/// A PATCH message of `n` operations made by `op`.
fn patch_body(n: usize, op: impl Fn(usize) -> Value) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": (0..n).map(op).collect::<Vec<_>>()})
}

/// Parse + apply of big PATCH messages on a user (the 20 000-operation `add emails` of issue 12 took 17.9 s when
/// apply was quadratic); `limits.max_patch_operations` (1 000) refuses them over HTTP, so the 20 000 case measures
/// the engine alone.
fn bench_patch(c: &mut Criterion) {
    let rt = registry().user();
    let user =
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a", "active": true});
    let add_email = |i: usize| json!({"op": "add", "path": "emails", "value": [{"value": format!("e{i}@x.example"), "type": "work"}]});
    let cases: Vec<(String, Value)> = vec![
        ("add_emails_1000".into(), patch_body(1000, add_email)),
        ("add_emails_20000".into(), patch_body(20_000, add_email)),
        (
            "add_emails_one_op_20000_values".into(),
            json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "add", "path": "emails",
                "value": (0..20_000).map(|i| json!({"value": format!("e{i}@x.example")})).collect::<Vec<_>>()}]}),
        ),
        (
            "alternating_1000".into(),
            patch_body(1000, |i| {
                if i % 2 == 0 {
                    json!({"op": "replace", "path": "displayName", "value": format!("n{i}")})
                } else {
                    add_email(i)
                }
            }),
        ),
        (
            "filtered_replace_1000".into(),
            patch_body(
                1000,
                |i| json!({"op": "replace", "path": format!("emails[type eq \"t{i}\"].value"), "value": format!("e{i}@x.example")}),
            ),
        ),
    ];
    let mut group = c.benchmark_group("patch");
    group.sample_size(10);
    for (name, body) in &cases {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let ops = patch::parse_request(std::hint::black_box(body), usize::MAX)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                patch::apply(rt, &user, &ops).unwrap_or_else(|e| panic!("{name}: {e}"))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_patch);
criterion_main!(benches);
