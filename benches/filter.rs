//! Filter micro-benchmarks (criterion): parsing the filters IdPs and checkers send, translating them to SQL, and
//! evaluating them in Rust over a user. `cargo bench --bench filter`.

use criterion::{Criterion, criterion_group, criterion_main};
use offboard::db::filter_sql::{Dialect, users_where};
use offboard::scim::filter;
use offboard::scim::schema::registry;
use serde_json::json;

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

criterion_group!(benches, bench);
criterion_main!(benches);
