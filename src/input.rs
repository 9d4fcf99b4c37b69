//! The one input check every surface applies before a value reaches a backend: no NUL character (PostgreSQL
//! refuses it in `text`, SQLite stores it, so without this check the two backends answer differently) and a
//! bounded length (PostgreSQL refuses an index row over about 2 700 bytes; one character may take four bytes in
//! UTF-8). Each surface maps an [`InputError`] to its own error format: SCIM `invalidValue`, OAuth
//! `invalid_request`, SSF `invalid_request`. The limits are documented in README.md ("Security: what is bounded").
//!
//! Pure: no HTTP, no database.

use serde_json::Value;

/// Attributes stored in an indexed column (SCIM `userName`, `displayName`, `externalId`, `emails.value`, group
/// `displayName`): at most 4 × 512 = 2 048 bytes, under PostgreSQL's btree row limit.
pub const MAX_INDEXED: usize = 512;
/// Identifiers and names: stream ids, credential names, `jti`s, subjects, acknowledged SET ids.
pub const MAX_ID: usize = 256;
/// URLs (push endpoints, issuers).
pub const MAX_URL: usize = 2_048;
/// Free text: descriptions, reasons, error descriptions.
pub const MAX_TEXT: usize = 4_096;
/// Any other string inside a JSON document (SCIM attributes without an index, token claims).
pub const MAX_STRING: usize = 65_536;

/// Why a value was refused; `field` names where it came from, for the error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{field} must not contain the NUL character")]
    Nul { field: String },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: String, max: usize },
}

/// Refuses a NUL character and more than `max` characters in `value`.
pub fn check(field: &str, value: &str, max: usize) -> Result<(), InputError> {
    if value.contains('\0') {
        return Err(InputError::Nul {
            field: field.to_owned(),
        });
    }
    // Bytes bound characters from above: count characters only when the byte length could exceed the limit.
    if value.len() > max && value.chars().count() > max {
        return Err(InputError::TooLong {
            field: field.to_owned(),
            max,
        });
    }
    Ok(())
}

/// [`check`] for an optional value.
pub fn check_opt(field: &str, value: Option<&str>, max: usize) -> Result<(), InputError> {
    value.map_or(Ok(()), |v| check(field, v, max))
}

/// Refuses a NUL character in any key or string of a JSON document, and any string longer than `max`.
/// Depth is bounded by `serde_json`'s recursion limit (128), so plain recursion is safe here.
pub fn check_json(field: &str, value: &Value, max: usize) -> Result<(), InputError> {
    match value {
        Value::String(s) => check(field, s, max),
        Value::Array(items) => items.iter().try_for_each(|v| check_json(field, v, max)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check(field, k, MAX_ID)?;
            check_json(field, v, max)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// `value` with every control character escaped (`\n`, `\r`, `\t`, others as `\x1b`; the Unicode line and
/// paragraph separators as `\u{2028}`, `\u{2029}`), for
/// text a person or a terminal reads: a log line, a text report. A client-supplied name then cannot start a
/// forged line or send a terminal escape sequence. Borrowed when there is nothing to escape.
pub fn escape_control(value: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    let escaped = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !value.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => {
                let code = u32::from(c);
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02x}")
                } else {
                    write!(out, "\\u{{{code:x}}}")
                };
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_and_length_are_refused() {
        assert!(check("x", "ok", 2).is_ok());
        assert_eq!(check("x", "a\0b", 10), Err(InputError::Nul { field: "x".into() }));
        assert_eq!(
            check("x", "abc", 2),
            Err(InputError::TooLong {
                field: "x".into(),
                max: 2
            })
        );
        // Characters, not bytes: four 4-byte characters fit a limit of four.
        assert!(check("x", "😀😀😀😀", 4).is_ok());
        assert!(check_opt("x", None, 0).is_ok());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(
            escape_control("plain ü"),
            std::borrow::Cow::Borrowed("plain ü")
        ));
        assert_eq!(escape_control("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(
            escape_control("\u{1b}[31mred\u{0}\u{7f}\u{85}"),
            "\\x1b[31mred\\x00\\x7f\\x85"
        );
        assert_eq!(escape_control("a\u{2028}b"), "a\\u{2028}b");
    }

    #[test]
    fn json_is_checked_deeply() {
        assert!(check_json("body", &json!({"a": [1, "ok", {"b": null}]}), 8).is_ok());
        assert!(matches!(
            check_json("body", &json!({"a": [{"b": "x\u{0}"}]}), 8),
            Err(InputError::Nul { .. })
        ));
        assert!(matches!(
            check_json("body", &json!({"k\u{0}": 1}), 8),
            Err(InputError::Nul { .. })
        ));
        assert!(matches!(
            check_json("body", &json!(["123456789"]), 8),
            Err(InputError::TooLong { .. })
        ));
    }
}
