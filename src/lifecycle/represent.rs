//! A user's response text written from its stored JSON without parsing it into a `Value` and serialising it
//! again, for a response with the default projection (no `attributes`/`excludedAttributes`): the stored text's
//! members are copied as they are and `id`, `active`, `meta` and `groups` put in among them, in the order `serde_json`
//! writes an object's keys. `scim::projection::write_default` decides from the text whether that is what the
//! general path ([`super::users::to_scim`], then `Projection::apply`, then `serde_json`) would answer, byte for
//! byte, and refuses when it cannot show it; the caller then takes the general path
//! (docs/decisions/0043-serving-the-stored-text.md). `tests/api/users.rs` compares both paths.

use serde::Serialize;

use super::users::{UserView, etag};
use crate::db::format_time;
use crate::scim::projection::write_default;
use crate::scim::schema::registry;

/// `meta`, its keys in `serde_json`'s order for a parsed object (byte order).
#[derive(Serialize)]
struct Meta<'a> {
    created: String,
    #[serde(rename = "lastModified")]
    last_modified: String,
    location: String,
    #[serde(rename = "resourceType")]
    resource_type: &'a str,
    version: String,
}

/// One element of `groups`, its keys in byte order.
#[derive(Serialize)]
struct GroupRef<'a> {
    #[serde(rename = "$ref")]
    reference: String,
    display: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    value: &'a str,
}

/// Appends the default representation of `view` to `out` and answers `true`, or answers `false` (leaving `out`
/// as it was) when the general path must answer.
pub fn write_user(view: &UserView, base_url: &str, out: &mut Vec<u8>) -> bool {
    let user = &view.user;
    let Ok(id) = serde_json::to_string(&user.id) else {
        return false;
    };
    let meta = Meta {
        created: format_time(user.created),
        last_modified: format_time(user.last_modified),
        location: format!("{base_url}/Users/{}", user.id),
        resource_type: "User",
        version: etag(user.version),
    };
    let Ok(meta) = serde_json::to_string(&meta) else {
        return false;
    };
    let active = if user.active { "true" } else { "false" };
    let mut computed = vec![("id", id.as_str()), ("active", active), ("meta", meta.as_str())];
    let groups;
    if !view.groups.is_empty() {
        let refs: Vec<GroupRef<'_>> = view
            .groups
            .iter()
            .map(|(id, name)| GroupRef {
                reference: format!("{base_url}/Groups/{id}"),
                display: name,
                kind: "direct",
                value: id,
            })
            .collect();
        let Ok(text) = serde_json::to_string(&refs) else {
            return false;
        };
        groups = text;
        computed.push(("groups", groups.as_str()));
    }
    write_default(registry().user(), &user.resource, &computed, out)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::db::models::User;
    use crate::lifecycle::users::to_scim;
    use crate::scim::projection::Projection;

    const BASE: &str = "https://offboard.example/scim/v2";

    fn view(resource: &str, active: bool, groups: &[(&str, &str)]) -> UserView {
        let at = chrono::DateTime::from_timestamp_millis(1_764_950_400_123)
            .unwrap()
            .naive_utc();
        UserView {
            user: User {
                id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
                user_name: "u".into(),
                user_name_folded: "u".into(),
                external_id: None,
                display_name: None,
                display_name_folded: None,
                active,
                resource: resource.into(),
                token_generation: 3,
                version: 7,
                created: at,
                last_modified: at,
                deleted_at: None,
            },
            groups: groups
                .iter()
                .map(|(id, name)| ((*id).to_owned(), (*name).to_owned()))
                .collect(),
        }
    }

    /// The general path's bytes: the full value, projected by default, serialised.
    fn general(v: &UserView) -> Vec<u8> {
        let mut value = to_scim(v, BASE);
        Projection::default().apply(registry().user(), &mut value);
        serde_json::to_vec(&value).unwrap()
    }

    /// Whether the text path answers, and then with the general path's bytes.
    fn same_bytes(v: &UserView) -> bool {
        let mut text = b"prefix".to_vec();
        let written = write_user(v, BASE, &mut text);
        if written {
            assert_eq!(
                String::from_utf8_lossy(text.get(6..).unwrap()),
                String::from_utf8_lossy(&general(v)),
                "resource {}",
                v.user.resource
            );
        } else {
            assert_eq!(text, b"prefix", "a refusal leaves the buffer as it was");
        }
        written
    }

    /// The stored form of a POST body, as `users::create` stores it.
    fn stored(body: &Value) -> String {
        let mut s = registry().user().normalize(body).unwrap();
        let active = s.get("active").and_then(Value::as_bool).unwrap_or(true);
        s.as_object_mut()
            .unwrap()
            .insert("active".into(), Value::Bool(active));
        serde_json::to_string(&s).unwrap()
    }

    #[test]
    fn every_idp_user_body_is_served_from_its_text_with_the_same_bytes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/idp");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let is_user_write = matches!(fixture["method"].as_str(), Some("POST" | "PUT"))
                && fixture["path"].as_str().is_some_and(|p| p.starts_with("/Users"));
            if !is_user_write || fixture["body"].get("userName").is_none() {
                continue;
            }
            let Ok(text) = registry()
                .user()
                .normalize(&fixture["body"])
                .map(|_| stored(&fixture["body"]))
            else {
                continue;
            };
            for groups in [&[][..], &[("g-1", "Eng"), ("g-2", "Ops \"core\"")][..]] {
                for active in [true, false] {
                    assert!(same_bytes(&view(&text, active, groups)), "{}", path.display());
                }
            }
            seen += 1;
        }
        assert!(seen >= 8, "only {seen} user bodies among the fixtures");
    }

    #[test]
    fn tricky_resources_are_served_from_their_text_with_the_same_bytes() {
        let bodies = [
            json!({"userName": "σίσυφος ǆemal straße 🎉", "displayName": "tab\there \"quoted\" back\\slash \u{1}ctl",
                   "name": {"givenName": "Zoë", "familyName": "Ünal"}}),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                               "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                   "userName": "ext@example.com",
                   "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                       "employeeNumber": "701984", "costCenter": "4130", "manager": {"value": "m-1"}}}),
            json!({"userName": "multi@example.com",
                   "emails": [{"value": "a@example.com", "type": "work", "primary": true},
                              {"value": "b@example.com", "type": "home", "primary": true}],
                   "phoneNumbers": [{"value": "+1 555 0100", "type": "mobile"}],
                   "addresses": [{"streetAddress": "1 Main St\nSuite 2", "locality": "Köln", "country": "DE"}],
                   "x509Certificates": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAwTjELMAkGA1UEBhMCVVMx"}],
                   "roles": [{"value": "admin", "primary": "True"}], "entitlements": "solo",
                   "password": "never stored", "id": "client-sent", "groups": [{"value": "g"}],
                   "meta": {"resourceType": "User"}, "unknownAttr": {"x": 1},
                   "name": {"givenName": "", "middleName": null, "honorificPrefix": "Dr."},
                   "nickName": "", "title": null}),
        ];
        for body in &bodies {
            let text = stored(body);
            assert!(same_bytes(&view(&text, true, &[("g-9", "Ω")])), "{text}");
        }
    }

    #[test]
    fn text_the_projection_would_change_takes_the_general_path() {
        // Each is refused by the text path; where the general path can answer, it still does, with what the
        // projection makes of it.
        let refused = [
            // Not written by serde_json from a parsed value: keys out of order, a duplicate key.
            r#"{"userName":"a","active":true,"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}"#,
            r#"{"name":{"givenName":"b","familyName":"a"},"userName":"a"}"#,
            r#"{"userName":"a","userName":"b"}"#,
            // What the default projection drops: a `never` attribute, an unknown sub-attribute, empty complex
            // values, an empty extension.
            r#"{"password":"x","userName":"a"}"#,
            r#"{"emails":[{"nosuch":"x","value":"a@b"}],"userName":"a"}"#,
            r#"{"emails":[{}],"userName":"a"}"#,
            r#"{"emails":[],"userName":"a"}"#,
            r#"{"name":{},"userName":"a"}"#,
            r#"{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{},"userName":"a"}"#,
            // Not an object at all.
            r#"["userName"]"#,
            "not json",
        ];
        for text in refused {
            assert!(
                !same_bytes(&view(text, true, &[])),
                "{text} was served from its text"
            );
        }
    }
}
