//! PATCH paths (RFC 7644 §3.5.2): `attrPath` / `valuePath ["." subAttr]` → [`PatchPath`].
//!
//! Shares the filter grammar of `scim::filter` (same attribute paths, same value filters, same limits: over 16 KiB
//! or nested deeper than 32 → `invalidPath`). A bare schema URN
//! (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`) parses as `urn` = everything before the last `:`,
//! `name` = the rest; the PATCH engine checks whether `urn + ":" + name` is a schema id. Resolving the path against a
//! schema is the caller's job; this module only parses.

use winnow::prelude::*;

use super::ScimError;
use super::filter::{self, AttrPath, Filter, Kind};

/// A parsed PATCH path.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// `urn`, `name`, and `sub` only when there is no filter (`name.givenName`).
    pub attr: AttrPath,
    /// The value filter of `emails[type eq "work"]`; its paths name sub-attributes of `attr`.
    pub filter: Option<Filter>,
    /// The sub-attribute after the filter: `emails[type eq "work"].value`.
    pub sub: Option<String>,
}

/// Parses a PATCH `path`; errors are 400 `invalidPath` naming the position and what was expected.
pub fn parse(input: &str) -> Result<PatchPath, ScimError> {
    filter::check_input(input, Kind::Path)?;
    patch_path
        .parse(input)
        .map_err(|e| filter::syntax_error(input, &e, Kind::Path))
}

fn patch_path(i: &mut &str) -> winnow::ModalResult<PatchPath> {
    let _ = winnow::ascii::multispace0.parse_next(i)?;
    let attr = filter::attr_path(i)?;
    if !i.starts_with('[') {
        filter::end(i, "the end of the path")?;
        return Ok(PatchPath {
            attr,
            filter: None,
            sub: None,
        });
    }
    if attr.sub.is_some() {
        filter::end(i, "the end of the path (no value filter after a sub-attribute)")?;
    }
    let value_filter = filter::value_filter(i, 0)?;
    let sub = filter::dot_sub(i)?;
    filter::end(i, "`.subAttribute` or the end of the path")?;
    Ok(PatchPath {
        attr,
        filter: Some(value_filter),
        sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::ScimType;
    use crate::scim::filter::{CompValue, CompareOp, MAX_DEPTH, MAX_LEN};

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn p(s: &str) -> PatchPath {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn attr(urn: Option<&str>, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            urn: urn.map(Into::into),
            name: name.into(),
            sub: sub.map(Into::into),
        }
    }

    fn eq(name: &str, value: &str) -> Filter {
        Filter::Compare {
            path: AttrPath::simple(name),
            op: CompareOp::Eq,
            value: CompValue::String(value.into()),
        }
    }

    #[test]
    fn attribute_paths() {
        assert_eq!(
            p("userName"),
            PatchPath {
                attr: attr(None, "userName", None),
                filter: None,
                sub: None
            }
        );
        assert_eq!(p("name.givenName").attr, attr(None, "name", Some("givenName")));
        assert_eq!(p(" Name.GivenName ").attr, attr(None, "Name", Some("GivenName")));
        assert_eq!(p("members.$ref").attr, attr(None, "members", Some("$ref")));
        assert_eq!(
            p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber").attr,
            attr(Some(ENTERPRISE), "employeeNumber", None)
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").attr,
            attr(Some(ENTERPRISE), "manager", Some("value"))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName").attr,
            attr(
                Some("urn:ietf:params:scim:schemas:core:2.0:User"),
                "name",
                Some("familyName")
            )
        );
    }

    #[test]
    fn bare_schema_urn_splits_at_the_last_colon() {
        let path = p(ENTERPRISE);
        assert_eq!(
            path.attr,
            attr(
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0"),
                "User",
                None
            )
        );
        assert_eq!(
            format!("{}:{}", path.attr.urn.unwrap(), path.attr.name),
            ENTERPRISE
        );
    }

    #[test]
    fn value_paths() {
        assert_eq!(
            p(r#"emails[type eq "work"]"#),
            PatchPath {
                attr: attr(None, "emails", None),
                filter: Some(eq("type", "work")),
                sub: None
            }
        );
        assert_eq!(
            p(r#"emails[type eq "work"].value"#),
            PatchPath {
                attr: attr(None, "emails", None),
                filter: Some(eq("type", "work")),
                sub: Some("value".into())
            }
        );
        assert_eq!(
            p(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#).filter,
            Some(eq("value", "2819c223-7f76-453a-919d-413861904646"))
        );
        let roles = p(r#"roles[primary eq "True"].display"#);
        assert_eq!(roles.filter, Some(eq("primary", "True")));
        assert_eq!(roles.sub.as_deref(), Some("display"));
        let path = p(r#"addresses[type eq "work" and (postalCode pr or not (locality eq "x"))].postalCode"#);
        assert!(matches!(path.filter, Some(Filter::And(..))));
        let path = p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager[value eq "x"]"#);
        assert_eq!(path.attr, attr(Some(ENTERPRISE), "manager", None));
        assert_eq!(p(r#"Emails[Type EQ "work"].Value"#).sub.as_deref(), Some("Value"));
    }

    #[test]
    fn invalid_paths() {
        for bad in [
            "",
            " ",
            "a b",
            "a.b.c",
            "1abc",
            "emails[",
            "emails[]",
            r#"emails[type eq "work""#,
            r#"emails[type eq "work"]x"#,
            r#"emails[type eq "work"]."#,
            r#"emails[type eq "work"].value.x"#,
            r#"emails[type eq "work"].value[type eq "x"]"#,
            r#"emails[type eq "work"][type eq "x"]"#,
            r#"emails[type[value eq "x"]]"#,
            r#"name.givenName[value eq "x"]"#,
            r"emails[type eq work]",
            "emails]",
            "(emails)",
            "userName eq \"x\"",
            "urn:",
            ":x",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.status, 400, "{bad}");
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{bad}: {e}");
            assert!(
                e.detail.starts_with("invalid path") || e.detail.starts_with("path is"),
                "{bad}: {e}"
            );
        }
        let e = parse(r#"emails[type eq "work"].value eq "x""#).unwrap_err();
        assert!(e.detail.ends_with("found `eq`"), "{}", e.detail);
        let e = parse(&format!("1{} x", "a".repeat(40))).unwrap_err();
        assert!(
            e.detail.ends_with(&format!("found `1{}…`", "a".repeat(31))),
            "{}",
            e.detail
        );
        let e = parse(r#"emails[type eq "work"]x"#).unwrap_err();
        assert!(
            e.detail.contains("position 23") && e.detail.contains("`x`"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn limits() {
        let deep = |n: usize| format!("emails[{}type pr{}]", "(".repeat(n - 1), ")".repeat(n - 1));
        p(&deep(MAX_DEPTH));
        let e = parse(&deep(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
        assert!(e.detail.contains("deeper than 32"), "{}", e.detail);
        let e = parse(&format!("emails[{}", "(".repeat(MAX_LEN - 10))).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
        let e = parse(&"a".repeat(MAX_LEN + 1)).unwrap_err();
        assert!(e.detail.contains("longer than 16384"), "{}", e.detail);
        assert_eq!(
            parse("user\0Name").unwrap_err().scim_type,
            Some(ScimType::InvalidValue)
        );
        assert_eq!(
            parse(r#"emails[value eq "\u0000"]"#).unwrap_err().scim_type,
            Some(ScimType::InvalidValue)
        );
    }
}
