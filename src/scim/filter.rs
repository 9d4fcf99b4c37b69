//! SCIM filters (RFC 7644 §3.4.2.2): the grammar → [`Filter`] AST, its validation against a resource type, and its
//! evaluation over a JSON resource.
//!
//! The parser is a bounded recursive descent (winnow): input over [`MAX_LEN`] bytes or nested deeper than
//! [`MAX_DEPTH`] (parentheses, `not (…)`, `[…]`) is refused with `invalidFilter`, and `and`/`or` chains are built as
//! balanced trees, so no client input can overflow the stack here or in the code that walks the AST. It never
//! panics. Grammar extensions, on purpose: whitespace may be any run of Unicode whitespace; Entra's
//! `emails[type eq "work"].value eq "x"` parses as `ValuePath { emails, And(type eq "work", value eq "x") }`.
//! Unquoted string values (`externalId eq jyoung`, from an old Entra doc) are refused with `invalidFilter`: RFC
//! values are JSON literals, and Entra sends quoted values. A NUL character in a string value is `invalidValue`
//! (docs/decisions/0011-nul-and-foreign-ids.md). The grammar pieces shared with PATCH paths (`attrPath`, value
//! filters) are `pub(crate)` for `scim::path`.
//!
//! Evaluation follows the schema: `caseExact` (else compare [`fold`]ed), multi-valued attributes match when any value
//! does (a complex one without a sub-attribute compares its `value`), dateTime as instants, numbers as numbers,
//! booleans also given as `"True"`/`"false"` strings. An absent attribute: `eq`/`co`/… false, `ne` true. `pr` means
//! present and not null, `""`, `[]` or `{}`. This module does no I/O; the database layer (`db::filter_sql`) mirrors
//! these rules in SQL and must stay in step with them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};
use winnow::ascii::Caseless;
use winnow::combinator::{not, opt, preceded};
use winnow::error::{ContextError, ErrMode, ParseError, StrContext, StrContextValue};
use winnow::prelude::*;
use winnow::stream::Stream;
use winnow::token::{literal, one_of, take_while};

use super::schema::parse_datetime;

use super::schema::{AttrType, AttributeDef, ResourceType, Returned, fold};
use super::{ScimError, get_ci};

/// Longest filter (and PATCH path) accepted, in bytes (docs/decisions/0014-input-limits.md).
pub const MAX_LEN: usize = 16 * 1024;
/// Deepest nesting of `( … )`, `not ( … )` and `[ … ]` accepted (docs/decisions/0014-input-limits.md).
pub const MAX_DEPTH: usize = 32;

/// An attribute path as written by the client: `[urn ":"] name ["." sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// A path without URN nor sub-attribute.
    pub fn simple(name: impl Into<String>) -> Self {
        Self {
            urn: None,
            name: name.into(),
            sub: None,
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Co => "co",
            Self::Sw => "sw",
            Self::Ew => "ew",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }

    /// `gt`, `ge`, `lt`, `le`.
    pub fn is_ordering(self) -> bool {
        matches!(self, Self::Gt | Self::Ge | Self::Lt | Self::Le)
    }

    /// `co`, `sw`, `ew`.
    pub fn is_substring(self) -> bool {
        matches!(self, Self::Co | Self::Sw | Self::Ew)
    }

    fn from_word(word: &str) -> Option<Self> {
        const OPS: [CompareOp; 9] = [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ];
        OPS.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    /// Whether `ordering` (attribute value compared to the filter value) satisfies an ordering or equality operator.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering.is_eq(),
            Self::Ne => ordering.is_ne(),
            Self::Gt => ordering.is_gt(),
            Self::Ge => ordering.is_ge(),
            Self::Lt => ordering.is_lt(),
            Self::Le => ordering.is_le(),
            Self::Co | Self::Sw | Self::Ew => false,
        }
    }
}

/// A comparison value: a JSON literal.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
}

impl CompValue {
    /// The value as a boolean, also from Entra's `"True"`/`"false"` strings.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::String(s) => str_bool(s),
            Self::Null | Self::Number(_) => None,
        }
    }

    /// The value as text, for comparison with a string attribute (`employeeNumber eq 42` compares `"42"`).
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Self::String(s) => Some(Cow::Borrowed(s)),
            Self::Number(n) => Some(Cow::Owned(n.to_string())),
            Self::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Self::Null => None,
        }
    }

    /// The value as a number, also from a numeric string.
    pub fn as_number(&self) -> Option<Number> {
        match self {
            Self::Number(n) => Some(n.clone()),
            Self::String(s) => s.trim().parse::<Number>().ok(),
            Self::Null | Self::Bool(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `emails[type eq "work"]`; `path.sub` is None. Entra's non-RFC `emails[type eq "work"].value eq "x"` parses
    /// as `ValuePath { emails, And(type eq "work", value eq "x") }`. Paths inside `filter` name sub-attributes of
    /// `path`.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// How many comparisons a filter holds: every `attr op value` and `attr pr`, value filters' inside included, and
/// how many of them are substring matches (`co`, `sw`, `ew`), which no index serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terms {
    pub all: usize,
    pub substring: usize,
}

impl Filter {
    /// Counts the terms of the filter, without recursion.
    pub fn terms(&self) -> Terms {
        let mut terms = Terms::default();
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            match node {
                Self::Compare { op, .. } => {
                    terms.all += 1;
                    terms.substring += usize::from(op.is_substring());
                }
                Self::Present(_) => terms.all += 1,
                Self::And(a, b) | Self::Or(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
                Self::Not(a) | Self::ValuePath { filter: a, .. } => stack.push(a),
            }
        }
        terms
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------------

/// Parses a filter (the `filter` query parameter or `SearchRequest.filter`). Errors are 400 `invalidFilter` naming
/// the position and what was expected.
pub fn parse(input: &str) -> Result<Filter, ScimError> {
    check_input(input, Kind::Filter)?;
    filter_expr
        .parse(input)
        .map_err(|e| syntax_error(input, &e, Kind::Filter))
}

/// What is being parsed, for error messages and the `scimType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Filter,
    Path,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Path => "path",
        }
    }

    fn error(self, detail: String) -> ScimError {
        match self {
            Self::Filter => ScimError::invalid_filter(detail),
            Self::Path => ScimError::invalid_path(detail),
        }
    }
}

/// The checks made before parsing: not empty, not too long, no NUL.
pub(crate) fn check_input(input: &str, kind: Kind) -> Result<(), ScimError> {
    let noun = kind.noun();
    if input.len() > MAX_LEN {
        return Err(kind.error(format!("{noun} is longer than {MAX_LEN} bytes")));
    }
    if input.trim().is_empty() {
        return Err(kind.error(format!("{noun} is empty")));
    }
    if input.contains('\0') {
        return Err(ScimError::invalid_value(format!(
            "{noun} contains a NUL character"
        )));
    }
    Ok(())
}

/// Marks the error raised for a NUL character in a string literal, reported as `invalidValue`
/// (docs/decisions/0011-nul-and-foreign-ids.md).
const NUL_LABEL: &str = "a NUL character in a string value";

/// Turns a winnow error into the client's `ScimError`.
pub(crate) fn syntax_error(input: &str, e: &ParseError<&str, ContextError>, kind: Kind) -> ScimError {
    let noun = kind.noun();
    let offset = e.offset();
    let position = input.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
    let rest = input.get(offset..).unwrap_or_default();
    let is_token_char = |c: &char| !c.is_whitespace() && !c.is_control();
    let token: String = rest.chars().take_while(is_token_char).take(32).collect();
    let truncated = rest.chars().take_while(is_token_char).nth(32).is_some();
    let found = if rest.is_empty() {
        format!("the end of the {noun}")
    } else if token.is_empty() {
        "whitespace".to_owned()
    } else if truncated {
        format!("`{token}…`")
    } else {
        format!("`{token}`")
    };
    let mut label = None;
    let mut expected = Vec::new();
    for context in e.inner().context() {
        match context {
            StrContext::Label(l) => label = label.or(Some(*l)),
            StrContext::Expected(StrContextValue::Description(d)) => expected.push((*d).to_owned()),
            StrContext::Expected(other) => expected.push(other.to_string()),
            _ => {}
        }
    }
    if label == Some(NUL_LABEL) {
        return ScimError::invalid_value(format!("invalid {noun}: {NUL_LABEL} at position {position}"));
    }
    let detail = match (label, expected.first()) {
        (Some(l), _) => format!("invalid {noun} at position {position}: {l}, at {found}"),
        (None, Some(x)) => format!("invalid {noun} at position {position}: expected {x}, found {found}"),
        (None, None) => format!("invalid {noun} at position {position}: unexpected {found}"),
    };
    kind.error(detail)
}

type PResult<T> = winnow::ModalResult<T>;

/// A committed (non-backtracking) error at the current position, saying what was expected there.
fn expected<T>(what: &'static str) -> PResult<T> {
    let mut e = ContextError::new();
    e.push(StrContext::Expected(StrContextValue::Description(what)));
    Err(ErrMode::Cut(e))
}

/// A committed error at the current position with a message of its own.
fn failure<T>(message: &'static str) -> PResult<T> {
    let mut e = ContextError::new();
    e.push(StrContext::Label(message));
    Err(ErrMode::Cut(e))
}

const EXPECT_OPERATOR: &str = "an operator (eq, ne, co, sw, ew, gt, ge, lt, le or pr)";
const EXPECT_VALUE: &str = "a value (a string in double quotes, a number, true, false or null)";
const EXPECT_TERM: &str = "an attribute path, `(` or `not (`";
const EXPECT_PATH: &str = "an attribute path (name, name.subAttribute or urn:…:name)";
const TOO_DEEP: &str = "nested deeper than 32 levels";

/// A character that continues a word (attribute name, URN, keyword, number).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '$' | '+')
}

/// A character of an attribute path token (a URN may hold most punctuation).
fn is_path_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !matches!(c, '(' | ')' | '[' | ']' | '"')
}

fn ws(i: &mut &str) -> PResult<()> {
    take_while(0.., char::is_whitespace).void().parse_next(i)
}

/// A case-insensitive keyword not followed by a word character.
fn keyword<'i>(kw: &'static str) -> impl Parser<&'i str, &'i str, ErrMode<ContextError>> {
    (literal(Caseless(kw)), not(one_of(is_word_char))).take()
}

/// `filter` at the top level: the whole input.
fn filter_expr(i: &mut &str) -> PResult<Filter> {
    ws(i)?;
    let f = or_expr(i, 0, false)?;
    ws(i)?;
    if !i.is_empty() {
        return expected("`and`, `or` or the end of the filter");
    }
    Ok(f)
}

/// `term *("or" term)`; `in_value` is true inside `[…]`, where no value path may nest.
fn or_expr(i: &mut &str, depth: usize, in_value: bool) -> PResult<Filter> {
    let mut terms = vec![and_expr(i, depth, in_value)?];
    loop {
        let start = i.checkpoint();
        ws(i)?;
        if opt(keyword("or")).parse_next(i)?.is_none() {
            i.reset(&start);
            break;
        }
        ws(i)?;
        terms.push(and_expr(i, depth, in_value)?);
    }
    balance(terms, Filter::Or).map_or_else(|| expected(EXPECT_TERM), Ok)
}

fn and_expr(i: &mut &str, depth: usize, in_value: bool) -> PResult<Filter> {
    let mut terms = vec![unary(i, depth, in_value)?];
    loop {
        let start = i.checkpoint();
        ws(i)?;
        if opt(keyword("and")).parse_next(i)?.is_none() {
            i.reset(&start);
            break;
        }
        ws(i)?;
        terms.push(unary(i, depth, in_value)?);
    }
    balance(terms, Filter::And).map_or_else(|| expected(EXPECT_TERM), Ok)
}

/// Joins `a op b op c …` into a balanced tree (and/or are associative), so the AST depth grows with the log of a
/// chain's length, not the length: every walk over the AST stays shallow.
fn balance(mut terms: Vec<Filter>, join: fn(Box<Filter>, Box<Filter>) -> Filter) -> Option<Filter> {
    if terms.len() <= 1 {
        return terms.pop();
    }
    let right = terms.split_off(terms.len().div_ceil(2));
    Some(join(
        Box::new(balance(terms, join)?),
        Box::new(balance(right, join)?),
    ))
}

/// `not ( filter )` / `( filter )` / attribute expression / value path.
fn unary(i: &mut &str, depth: usize, in_value: bool) -> PResult<Filter> {
    if opt((keyword("not"), ws, '(')).parse_next(i)?.is_some() {
        return Ok(Filter::Not(Box::new(group(i, depth, in_value)?)));
    }
    if opt('(').parse_next(i)?.is_some() {
        return group(i, depth, in_value);
    }
    attr_expr(i, depth, in_value)
}

/// The inside of `( … )`, after the `(`, up to and including the `)`.
fn group(i: &mut &str, depth: usize, in_value: bool) -> PResult<Filter> {
    let depth = depth + 1;
    if depth > MAX_DEPTH {
        return failure(TOO_DEEP);
    }
    ws(i)?;
    let f = or_expr(i, depth, in_value)?;
    ws(i)?;
    if opt(')').parse_next(i)?.is_none() {
        return expected("`and`, `or` or `)`");
    }
    Ok(f)
}

/// `attrPath SP "pr"`, `attrPath SP compareOp SP compValue`, `attrPath "[" valFilter "]"` (and Entra's
/// `attrPath "[" valFilter "]" "." subAttr SP compareOp SP compValue`).
fn attr_expr(i: &mut &str, depth: usize, in_value: bool) -> PResult<Filter> {
    let path = attr_path_or(i, EXPECT_TERM)?;
    if i.starts_with('[') {
        if in_value {
            return failure("a value filter inside a value filter");
        }
        if path.sub.is_some() {
            return failure("a value filter on a sub-attribute");
        }
        let inner = value_filter(i, depth)?;
        if opt('.').parse_next(i)?.is_none() {
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        let sub = attr_name(i)?;
        let last = operation(i, AttrPath::simple(sub))?;
        return Ok(Filter::ValuePath {
            path,
            filter: Box::new(Filter::And(Box::new(inner), Box::new(last))),
        });
    }
    operation(i, path)
}

/// `"[" valFilter "]"`, starting at the `[`; `depth` is the nesting outside it.
pub(crate) fn value_filter(i: &mut &str, depth: usize) -> PResult<Filter> {
    let depth = depth + 1;
    if depth > MAX_DEPTH {
        return failure(TOO_DEEP);
    }
    if opt('[').parse_next(i)?.is_none() {
        return expected("`[`");
    }
    ws(i)?;
    let f = or_expr(i, depth, true)?;
    ws(i)?;
    if opt(']').parse_next(i)?.is_none() {
        return expected("`and`, `or` or `]`");
    }
    Ok(f)
}

/// `SP "pr"` or `SP compareOp SP compValue` after `path`.
fn operation(i: &mut &str, path: AttrPath) -> PResult<Filter> {
    let space: &str = take_while(0.., char::is_whitespace).parse_next(i)?;
    if space.is_empty() {
        return expected(EXPECT_OPERATOR);
    }
    let word_start = i.checkpoint();
    let word: &str = take_while(0.., is_word_char).parse_next(i)?;
    if word.eq_ignore_ascii_case("pr") {
        return Ok(Filter::Present(path));
    }
    let Some(op) = CompareOp::from_word(word) else {
        i.reset(&word_start);
        return expected(EXPECT_OPERATOR);
    };
    let space: &str = take_while(0.., char::is_whitespace).parse_next(i)?;
    if space.is_empty() && !i.starts_with('"') {
        return expected(EXPECT_VALUE);
    }
    let value = comp_value(i)?;
    Ok(Filter::Compare { path, op, value })
}

/// `false / null / true / number / string`; the keywords case-insensitive (ABNF literals are).
fn comp_value(i: &mut &str) -> PResult<CompValue> {
    if i.starts_with('"') {
        return string_literal(i).map(CompValue::String);
    }
    let start = i.checkpoint();
    let token: &str = take_while(0.., is_path_char).parse_next(i)?;
    let value = if token.eq_ignore_ascii_case("true") {
        Some(CompValue::Bool(true))
    } else if token.eq_ignore_ascii_case("false") {
        Some(CompValue::Bool(false))
    } else if token.eq_ignore_ascii_case("null") {
        Some(CompValue::Null)
    } else if token.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        serde_json::from_str::<Number>(token).ok().map(CompValue::Number)
    } else {
        None
    };
    value.map_or_else(
        || {
            i.reset(&start);
            expected(EXPECT_VALUE)
        },
        Ok,
    )
}

/// A JSON string literal, at its opening quote.
fn string_literal(i: &mut &str) -> PResult<String> {
    let text: &str = i;
    let mut escaped = false;
    let mut end = None;
    for (at, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                end = Some(at + 1);
                break;
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return failure("a string without its closing `\"`");
    };
    let literal_text = text.get(..end).unwrap_or_default();
    let Ok(value) = serde_json::from_str::<String>(literal_text) else {
        return failure("an invalid string (bad escape or control character)");
    };
    if value.contains('\0') {
        return failure(NUL_LABEL);
    }
    let _ = i.next_slice(end);
    Ok(value)
}

/// `[URI ":"] ATTRNAME ["." ATTRNAME]`, failing with `what` expected.
fn attr_path_or(i: &mut &str, what: &'static str) -> PResult<AttrPath> {
    let start = i.checkpoint();
    let token: &str = take_while(0.., is_path_char).parse_next(i)?;
    if token.is_empty() {
        return expected(what);
    }
    let (urn, rest) = match token.rsplit_once(':') {
        Some((urn, rest)) => (Some(urn), rest),
        None => (None, token),
    };
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    let urn_ok = urn.is_none_or(|u| u.starts_with(|c: char| c.is_ascii_alphabetic()) && !u.ends_with(':'));
    if !urn_ok || !is_attr_name(name) || !sub.is_none_or(is_attr_name) {
        i.reset(&start);
        return expected(EXPECT_PATH);
    }
    Ok(AttrPath {
        urn: urn.map(str::to_owned),
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// An attribute path (for `scim::path`).
pub(crate) fn attr_path(i: &mut &str) -> PResult<AttrPath> {
    attr_path_or(i, EXPECT_PATH)
}

/// `ATTRNAME` (a sub-attribute after `]` and `.`).
pub(crate) fn attr_name(i: &mut &str) -> PResult<String> {
    let start = i.checkpoint();
    let name: &str = take_while(0.., |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '$')
    })
    .parse_next(i)?;
    if !is_attr_name(name) {
        i.reset(&start);
        return expected("a sub-attribute name");
    }
    Ok(name.to_owned())
}

/// `ATTRNAME = ALPHA *(nameChar)`, plus RFC 7643's `$ref`.
fn is_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = match chars.next() {
        Some('$') => chars.clone().next().is_some(),
        Some(c) => c.is_ascii_alphabetic(),
        None => false,
    };
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Skips whitespace then requires the end of input (for `scim::path`).
pub(crate) fn end(i: &mut &str, what: &'static str) -> PResult<()> {
    ws(i)?;
    if i.is_empty() { Ok(()) } else { expected(what) }
}

/// `"." ATTRNAME` if present (for `scim::path`).
pub(crate) fn dot_sub(i: &mut &str) -> PResult<Option<String>> {
    opt(preceded('.', attr_name)).parse_next(i)
}

// ---------------------------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------------------------

/// Where the paths of a (sub-)filter resolve: on the resource type, or on the sub-attributes of a complex
/// attribute (inside `[…]`).
#[derive(Clone, Copy)]
enum Scope<'a> {
    Resource(&'a ResourceType),
    Element(&'a AttributeDef),
}

/// A resolved attribute path: the attribute, its sub-attribute if named, and whether it lives under an extension
/// URN key in the resource.
struct Target<'a> {
    attr: &'a AttributeDef,
    sub: Option<&'a AttributeDef>,
    extension: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The definition the compared values have: the sub-attribute, or `value` for a complex attribute.
    fn leaf(&self) -> Option<&'a AttributeDef> {
        match self.sub {
            Some(sub) => Some(sub),
            None if self.attr.kind == AttrType::Complex => self.attr.sub("value"),
            None => Some(self.attr),
        }
    }
}

fn resolve<'a>(path: &AttrPath, scope: Scope<'a>) -> Option<Target<'a>> {
    match scope {
        Scope::Resource(rt) => {
            let r = rt.resolve(path)?;
            if path.sub.is_some() && r.sub.is_none() {
                return None;
            }
            let extension = rt
                .extensions
                .iter()
                .any(|(urn, _)| urn.eq_ignore_ascii_case(r.schema));
            Some(Target {
                attr: r.attr,
                sub: r.sub,
                extension: extension.then_some(r.schema),
            })
        }
        Scope::Element(parent) => {
            if path.urn.is_some() || path.sub.is_some() {
                return None;
            }
            Some(Target {
                attr: parent.sub(&path.name)?,
                sub: None,
                extension: None,
            })
        }
    }
}

/// Checks a parsed filter against a resource type: every attribute exists (else `invalidFilter` naming it),
/// operators suit the attribute types, values have the attribute's type.
pub fn validate(f: &Filter, rt: &ResourceType) -> Result<(), ScimError> {
    validate_in(f, Scope::Resource(rt))
}

fn validate_in(f: &Filter, scope: Scope<'_>) -> Result<(), ScimError> {
    match f {
        Filter::Compare { path, op, value } => {
            let target = resolve_checked(path, scope)?;
            let Some(leaf) = target.leaf() else {
                return Err(ScimError::invalid_filter(format!(
                    "attribute `{path}` is complex: compare one of its sub-attributes"
                )));
            };
            check_comparison(path, leaf, *op, value)
        }
        Filter::Present(path) => resolve_checked(path, scope).map(drop),
        Filter::And(a, b) | Filter::Or(a, b) => {
            validate_in(a, scope)?;
            validate_in(b, scope)
        }
        Filter::Not(inner) => validate_in(inner, scope),
        Filter::ValuePath { path, filter } => {
            if matches!(scope, Scope::Element(_)) {
                return Err(ScimError::invalid_filter(
                    "a value filter cannot be nested in another",
                ));
            }
            let target = resolve_checked(path, scope)?;
            if target.sub.is_some() || target.attr.kind != AttrType::Complex {
                return Err(ScimError::invalid_filter(format!(
                    "`{path}[…]`: a value filter needs a complex attribute"
                )));
            }
            validate_in(filter, Scope::Element(target.attr))
        }
    }
}

fn resolve_checked<'a>(path: &AttrPath, scope: Scope<'a>) -> Result<Target<'a>, ScimError> {
    let target = resolve(path, scope).ok_or_else(|| match scope {
        Scope::Resource(rt) => ScimError::invalid_filter(format!(
            "unknown attribute `{path}` for resource type {}",
            rt.name
        )),
        Scope::Element(parent) => {
            ScimError::invalid_filter(format!("unknown sub-attribute `{path}` of `{}`", parent.name))
        }
    })?;
    if target.attr.returned == Returned::Never || target.sub.is_some_and(|s| s.returned == Returned::Never) {
        return Err(ScimError::invalid_filter(format!(
            "attribute `{path}` cannot be used in a filter"
        )));
    }
    Ok(target)
}

fn check_comparison(
    path: &AttrPath,
    leaf: &AttributeDef,
    op: CompareOp,
    value: &CompValue,
) -> Result<(), ScimError> {
    let refuse = |kind: &str| {
        Err(ScimError::invalid_filter(format!(
            "operator `{}` is not supported on {kind} attribute `{path}`",
            op.as_str()
        )))
    };
    let wrong_value = |want: &str| {
        Err(ScimError::invalid_filter(format!(
            "attribute `{path}` is {want}: the filter value does not fit"
        )))
    };
    let null = matches!(value, CompValue::Null);
    if null && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
        return Err(ScimError::invalid_filter(format!(
            "operator `{}` cannot compare `{path}` with null",
            op.as_str()
        )));
    }
    match leaf.kind {
        AttrType::Boolean => {
            if op.is_ordering() || op.is_substring() {
                return refuse("boolean");
            }
            if !null && value.as_bool().is_none() {
                return wrong_value("a boolean (true or false)");
            }
        }
        AttrType::Binary if op.is_ordering() => return refuse("binary"),
        AttrType::Integer | AttrType::Decimal => {
            if op.is_substring() {
                return refuse("numeric");
            }
            if !null && value.as_number().is_none() {
                return wrong_value("a number");
            }
        }
        AttrType::DateTime => {
            if op.is_substring() {
                return refuse("dateTime");
            }
            let ok = null || matches!(value, CompValue::String(s) if parse_datetime(s).is_some());
            if !ok {
                return wrong_value("a dateTime (an RFC 3339 string such as \"2024-05-01T00:00:00Z\")");
            }
        }
        AttrType::Complex => return refuse("complex"),
        AttrType::String | AttrType::Reference | AttrType::Binary => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------------------------

/// Whether `resource` (the full representation: stored form plus `id` and `meta`) matches `f`. A filter that does
/// not [`validate`] matches nothing where it is invalid.
pub fn matches(f: &Filter, resource: &Value, rt: &ResourceType) -> bool {
    eval(f, resource, Scope::Resource(rt))
}

/// `node` is the resource (scope `Resource`) or one element of a complex attribute (scope `Element`).
fn eval(f: &Filter, node: &Value, scope: Scope<'_>) -> bool {
    match f {
        Filter::And(a, b) => eval(a, node, scope) && eval(b, node, scope),
        Filter::Or(a, b) => eval(a, node, scope) || eval(b, node, scope),
        Filter::Not(inner) => !eval(inner, node, scope),
        Filter::Present(path) => {
            let Some(target) = resolve(path, scope) else {
                return false;
            };
            let Some(value) = attribute_value(node, &target) else {
                return false;
            };
            match target.sub {
                Some(sub) => elements(value).any(|e| get_ci(e, &sub.name).is_some_and(is_present)),
                None => is_present(value),
            }
        }
        Filter::Compare { path, op, value } => {
            let Some(target) = resolve(path, scope) else {
                return false;
            };
            let Some(leaf) = target.leaf() else { return false };
            let values = leaf_values(node, &target, leaf);
            match value {
                CompValue::Null => match op {
                    CompareOp::Eq => !values.iter().any(|v| is_present(v)),
                    CompareOp::Ne => values.iter().any(|v| is_present(v)),
                    _ => false,
                },
                _ if values.is_empty() => *op == CompareOp::Ne,
                _ => values.iter().any(|v| compare(leaf, *op, v, value)),
            }
        }
        Filter::ValuePath { path, filter } => {
            if matches!(scope, Scope::Element(_)) {
                return false;
            }
            let Some(target) = resolve(path, scope) else {
                return false;
            };
            if target.sub.is_some() {
                return false;
            }
            let Some(value) = attribute_value(node, &target) else {
                return false;
            };
            elements(value).any(|e| e.is_object() && eval(filter, e, Scope::Element(target.attr)))
        }
    }
}

/// The attribute's value in `node` (under its extension key if it has one), if not null.
fn attribute_value<'v>(node: &'v Value, target: &Target<'_>) -> Option<&'v Value> {
    let container = match target.extension {
        Some(urn) => get_ci(node, urn)?,
        None => node,
    };
    get_ci(container, &target.attr.name).filter(|v| !v.is_null())
}

/// The non-null values to compare: every value of a multi-valued attribute, the `leaf` sub-attribute of every
/// element of a complex one.
fn leaf_values<'v>(node: &'v Value, target: &Target<'_>, leaf: &AttributeDef) -> Vec<&'v Value> {
    let Some(value) = attribute_value(node, target) else {
        return Vec::new();
    };
    let of_attr: Vec<&Value> = if target.attr.kind == AttrType::Complex {
        elements(value).filter_map(|e| get_ci(e, &leaf.name)).collect()
    } else {
        vec![value]
    };
    of_attr
        .into_iter()
        .flat_map(elements)
        .filter(|v| !v.is_null())
        .collect()
}

/// The elements of an array, or the value itself.
fn elements(value: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match value {
        Value::Array(items) => Box::new(items.iter()),
        other => Box::new(std::iter::once(other)),
    }
}

/// `pr`: not null, not `""`, not `[]`, not `{}`; an array needs one present element, an object one present member
/// (looked at two levels deep, which covers every SCIM attribute shape).
fn is_present(value: &Value) -> bool {
    fn shallow(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(items) => !items.is_empty(),
            Value::Object(members) => !members.is_empty(),
            Value::Bool(_) | Value::Number(_) => true,
        }
    }
    match value {
        Value::Array(items) => items.iter().any(|item| match item {
            Value::Object(members) => members.values().any(shallow),
            other => shallow(other),
        }),
        Value::Object(members) => members.values().any(shallow),
        other => shallow(other),
    }
}

/// One attribute value against the filter value, per the attribute's type.
fn compare(def: &AttributeDef, op: CompareOp, actual: &Value, wanted: &CompValue) -> bool {
    match def.kind {
        AttrType::Boolean => {
            let actual = match actual {
                Value::Bool(b) => Some(*b),
                Value::String(s) => str_bool(s),
                _ => None,
            };
            match (actual, wanted.as_bool(), op) {
                (Some(a), Some(w), CompareOp::Eq) => a == w,
                (Some(a), Some(w), CompareOp::Ne) => a != w,
                _ => false,
            }
        }
        AttrType::Integer | AttrType::Decimal => {
            let actual = match actual {
                Value::Number(n) => Some(n.clone()),
                Value::String(s) => s.trim().parse::<Number>().ok(),
                _ => None,
            };
            match (actual, wanted.as_number()) {
                (Some(a), Some(w)) => compare_numbers(&a, &w).is_some_and(|o| op.accepts(o)),
                _ => false,
            }
        }
        AttrType::DateTime => {
            let (Value::String(a), CompValue::String(w)) = (actual, wanted) else {
                return false;
            };
            match (parse_datetime(a), parse_datetime(w)) {
                (Some(a), Some(w)) => op.accepts(a.cmp(&w)),
                _ => compare_text(op, a, w, true) && !op.is_ordering(),
            }
        }
        AttrType::Binary => {
            let (Value::String(a), Some(w)) = (actual, wanted.as_text()) else {
                return false;
            };
            !op.is_ordering() && compare_text(op, a, &w, true)
        }
        AttrType::String | AttrType::Reference => {
            let (Value::String(a), Some(w)) = (actual, wanted.as_text()) else {
                return false;
            };
            compare_text(op, a, &w, def.case_exact)
        }
        AttrType::Complex => false,
    }
}

/// String comparison; case-insensitive means both sides [`fold`]ed. Ordering is by code point (the SQL side uses a
/// binary collation to agree).
fn compare_text(op: CompareOp, actual: &str, wanted: &str, case_exact: bool) -> bool {
    let (a, w): (Cow<'_, str>, Cow<'_, str>) = if case_exact {
        (actual.into(), wanted.into())
    } else {
        (fold(actual).into(), fold(wanted).into())
    };
    match op {
        CompareOp::Co => a.contains(w.as_ref()),
        CompareOp::Sw => a.starts_with(w.as_ref()),
        CompareOp::Ew => a.ends_with(w.as_ref()),
        _ => op.accepts(a.cmp(&w)),
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return Some(a.cmp(&b));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// `"true"`/`"false"` in any case (Entra sends `"True"`).
fn str_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scim::ScimType;
    use crate::scim::schema::{Mutability, Uniqueness, registry};
    use serde_json::json;

    #[test]
    fn terms_count_every_comparison_and_the_substring_ones() {
        let t = |text: &str| parse(text).unwrap().terms();
        assert_eq!(t(r#"userName eq "a""#), Terms { all: 1, substring: 0 });
        assert_eq!(
            t(
                r#"emails[type eq "work" and value co "x"] or not (title pr) and userName sw "a" or displayName ew "z""#
            ),
            Terms { all: 5, substring: 3 }
        );
        let many = vec![r#"emails.value co "a""#; 363].join(" or ");
        assert_eq!(
            t(&many),
            Terms {
                all: 363,
                substring: 363
            }
        );
    }

    fn p(s: &str) -> Filter {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> ScimError {
        parse(s).expect_err(s)
    }

    fn path(name: &str) -> AttrPath {
        AttrPath::simple(name)
    }

    fn sub(name: &str, sub: &str) -> AttrPath {
        AttrPath {
            urn: None,
            name: name.into(),
            sub: Some(sub.into()),
        }
    }

    fn cmp(path: AttrPath, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare { path, op, value }
    }

    fn s(v: &str) -> CompValue {
        CompValue::String(v.into())
    }

    fn pr(name: &str) -> Filter {
        Filter::Present(path(name))
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn depth(f: &Filter) -> usize {
        match f {
            Filter::Compare { .. } | Filter::Present(_) => 1,
            Filter::And(a, b) | Filter::Or(a, b) => 1 + depth(a).max(depth(b)),
            Filter::Not(a) | Filter::ValuePath { filter: a, .. } => 1 + depth(a),
        }
    }

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    /// Every example filter of RFC 7644 §3.4.2.2.
    const RFC_EXAMPLES: &[&str] = &[
        r#"userName eq "bjensen""#,
        r#"name.familyName co "O'Malley""#,
        r#"userName sw "J""#,
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        r"title pr",
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
        r#"title pr and userType eq "Employee""#,
        r#"title pr or userType eq "Intern""#,
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType eq "Employee" and (emails.type eq "work")"#,
        r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
        r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
    ];

    #[test]
    fn rfc_examples_parse() {
        for example in RFC_EXAMPLES {
            p(example);
        }
        assert_eq!(
            p(r#"userName eq "bjensen""#),
            cmp(path("userName"), CompareOp::Eq, s("bjensen"))
        );
        assert_eq!(
            p(r#"name.familyName co "O'Malley""#),
            cmp(sub("name", "familyName"), CompareOp::Co, s("O'Malley"))
        );
        assert_eq!(p("title pr"), pr("title"));
        assert_eq!(
            p(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#),
            cmp(
                AttrPath {
                    urn: Some("urn:ietf:params:scim:schemas:core:2.0:User".into()),
                    name: "userName".into(),
                    sub: None
                },
                CompareOp::Sw,
                s("J")
            )
        );
        assert_eq!(
            p(r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#),
            and(
                cmp(path("userType"), CompareOp::Ne, s("Employee")),
                Filter::Not(Box::new(or(
                    cmp(path("emails"), CompareOp::Co, s("example.com")),
                    cmp(sub("emails", "value"), CompareOp::Co, s("example.org"))
                )))
            )
        );
        assert_eq!(
            p(
                r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#
            ),
            or(
                Filter::ValuePath {
                    path: path("emails"),
                    filter: Box::new(and(
                        cmp(path("type"), CompareOp::Eq, s("work")),
                        cmp(path("value"), CompareOp::Co, s("@example.com"))
                    ))
                },
                Filter::ValuePath {
                    path: path("ims"),
                    filter: Box::new(and(
                        cmp(path("type"), CompareOp::Eq, s("xmpp")),
                        cmp(path("value"), CompareOp::Co, s("@foo.com"))
                    ))
                }
            )
        );
    }

    #[test]
    fn precedence_not_and_or() {
        assert_eq!(p("a pr or b pr and c pr"), or(pr("a"), and(pr("b"), pr("c"))));
        assert_eq!(p("a pr and b pr or c pr"), or(and(pr("a"), pr("b")), pr("c")));
        assert_eq!(p("a pr or b pr or c pr"), or(or(pr("a"), pr("b")), pr("c")));
        assert_eq!(p("(a pr or b pr) and c pr"), and(or(pr("a"), pr("b")), pr("c")));
        assert_eq!(
            p("not (a pr) and b pr"),
            and(Filter::Not(Box::new(pr("a"))), pr("b"))
        );
        assert_eq!(
            p("not(a pr or b pr)"),
            Filter::Not(Box::new(or(pr("a"), pr("b"))))
        );
        assert_eq!(p("  ( ( a pr ) )  "), pr("a"));
        // `not`, `and`, `or` are only keywords where a keyword can stand: attributes may start with them.
        assert_eq!(p("notes pr and order pr"), and(pr("notes"), pr("order")));
        assert_eq!(p("andy pr or oracle pr"), or(pr("andy"), pr("oracle")));
    }

    #[test]
    fn operators_and_keywords_are_case_insensitive() {
        assert_eq!(
            p(r#"userName EQ "x""#),
            cmp(path("userName"), CompareOp::Eq, s("x"))
        );
        assert_eq!(p("a PR AND b Pr Or c pr"), or(and(pr("a"), pr("b")), pr("c")));
        assert_eq!(p("NOT (a pr)"), Filter::Not(Box::new(pr("a"))));
        for (word, op) in [
            ("eq", CompareOp::Eq),
            ("Ne", CompareOp::Ne),
            ("CO", CompareOp::Co),
            ("sW", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("GT", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("Lt", CompareOp::Lt),
            ("lE", CompareOp::Le),
        ] {
            assert_eq!(
                p(&format!("age {word} 1")),
                cmp(path("age"), op, CompValue::Number(1.into()))
            );
        }
        assert_eq!(
            p("active eq TRUE"),
            cmp(path("active"), CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            p("active eq False"),
            cmp(path("active"), CompareOp::Eq, CompValue::Bool(false))
        );
        assert_eq!(
            p("title eq NULL"),
            cmp(path("title"), CompareOp::Eq, CompValue::Null)
        );
    }

    #[test]
    fn values_numbers_and_escapes() {
        assert_eq!(
            p(r#"userName eq "a\"b\\c\u00e9\n\/""#),
            cmp(path("userName"), CompareOp::Eq, s("a\"b\\c\u{e9}\n/"))
        );
        assert_eq!(
            p(r#"userName eq "😀 é""#),
            cmp(path("userName"), CompareOp::Eq, s("😀 é"))
        );
        assert_eq!(
            p(r#"userName eq """#),
            cmp(path("userName"), CompareOp::Eq, s(""))
        );
        assert_eq!(
            p("age ge -1.5e3"),
            cmp(
                path("age"),
                CompareOp::Ge,
                CompValue::Number(Number::from_f64(-1500.0).unwrap())
            )
        );
        assert_eq!(
            p("(age lt 42)"),
            cmp(path("age"), CompareOp::Lt, CompValue::Number(42.into()))
        );
        assert_eq!(
            p(r#"userName eq"x""#),
            cmp(path("userName"), CompareOp::Eq, s("x"))
        );
        assert_eq!(
            p("userName\teq\t\"x\""),
            cmp(path("userName"), CompareOp::Eq, s("x"))
        );
    }

    #[test]
    fn urn_qualified_paths() {
        assert_eq!(
            p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#),
            cmp(
                AttrPath {
                    urn: Some(ENTERPRISE.into()),
                    name: "employeeNumber".into(),
                    sub: None
                },
                CompareOp::Eq,
                s("701984")
            )
        );
        assert_eq!(
            p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#),
            cmp(
                AttrPath {
                    urn: Some(ENTERPRISE.into()),
                    name: "manager".into(),
                    sub: Some("value".into())
                },
                CompareOp::Eq,
                s("26118915")
            )
        );
        assert_eq!(p("members.$ref pr"), Filter::Present(sub("members", "$ref")));
    }

    #[test]
    fn entra_value_path_with_sub_attribute() {
        assert_eq!(
            p(r#"emails[type eq "work"].value eq "user@contoso.com""#),
            Filter::ValuePath {
                path: path("emails"),
                filter: Box::new(and(
                    cmp(path("type"), CompareOp::Eq, s("work")),
                    cmp(path("value"), CompareOp::Eq, s("user@contoso.com"))
                ))
            }
        );
        assert_eq!(
            p(r#"emails[type eq "work"].value pr and userName eq "x""#),
            and(
                Filter::ValuePath {
                    path: path("emails"),
                    filter: Box::new(and(
                        cmp(path("type"), CompareOp::Eq, s("work")),
                        Filter::Present(path("value"))
                    ))
                },
                cmp(path("userName"), CompareOp::Eq, s("x"))
            )
        );
    }

    #[test]
    fn garbage_is_invalid_filter() {
        for bad in [
            "",
            "   ",
            "userName",
            "userName ",
            "userName eq",
            r#"userName eqq "x""#,
            "userName eq jyoung",
            r"userName eq 'x'",
            r#"(userName eq "x""#,
            r#"userName eq "x")"#,
            r#"userName eq "x"#,
            r#"userName eq "\x""#,
            "userName eq \"a\u{1}b\"",
            "and",
            "a pr and",
            "a pr or or b pr",
            "not a pr",
            "not",
            "()",
            r#"emails[type eq "work""#,
            r#"emails[type eq "work"]]"#,
            r#"emails[type eq "work"]."#,
            r#"emails[type eq "work"].value"#,
            r#"emails[type eq "work"].value.x eq "y""#,
            r"emails[]",
            r#"emails[type[value eq "x"]]"#,
            r#"name.givenName[value eq "x"]"#,
            "a.b.c pr",
            "1abc pr",
            ":abc pr",
            "urn: pr",
            "a pr b pr",
            r#"userName eq "x" foo"#,
            "age eq 01",
            "age eq 1e999",
            "age eq --1",
            "userName eq truex",
            "userName pr)",
            "[a pr]",
            "a pr]",
            "a eq \"x\"\"",
        ] {
            let e = err(bad);
            assert_eq!(e.status, 400, "{bad}");
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{bad}: {e}");
        }
    }

    #[test]
    fn error_detail_names_position_and_token() {
        let e = err(r#"userName eqq "x""#);
        assert!(e.detail.contains("position 10"), "{}", e.detail);
        assert!(e.detail.contains("`eqq`"), "{}", e.detail);
        assert!(e.detail.contains("operator"), "{}", e.detail);
        let e = err("externalId eq jyoung");
        assert!(
            e.detail.contains("position 15") && e.detail.contains("`jyoung`"),
            "{}",
            e.detail
        );
        assert!(e.detail.contains("double quotes"), "{}", e.detail);
        let e = err(r#"(userName eq "x""#);
        assert!(
            e.detail.contains("end of the filter") && e.detail.contains("`)`"),
            "{}",
            e.detail
        );
        let e = err(r#"userName eq "x" foo"#);
        assert!(e.detail.contains("`foo`"), "{}", e.detail);
        let e = err(r#"userName eq "never closed"#);
        assert!(e.detail.contains("closing"), "{}", e.detail);
        // Positions count characters, not bytes.
        let e = err(r#"userName eq "é" bar"#);
        assert!(e.detail.contains("position 17"), "{}", e.detail);
    }

    #[test]
    fn nul_is_invalid_value() {
        for bad in [
            r#"userName eq "a\u0000b""#,
            "userName eq \"a\0b\"",
            "user\0Name pr",
        ] {
            let e = err(bad);
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_are_enforced_without_overflow() {
        let nested = |n: usize| format!("{}a pr{}", "(".repeat(n), ")".repeat(n));
        p(&nested(MAX_DEPTH));
        let e = err(&nested(MAX_DEPTH + 1));
        assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
        assert!(e.detail.contains("deeper than 32"), "{}", e.detail);
        let nots = |n: usize| format!("{}a pr{}", "not (".repeat(n), ")".repeat(n));
        p(&nots(MAX_DEPTH));
        assert!(err(&nots(MAX_DEPTH + 1)).detail.contains("deeper"));
        let e = err(&format!(
            "emails[{}type pr{}]",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        ));
        assert!(e.detail.contains("deeper"), "{}", e.detail);
        // Would overflow an unbounded recursive descent.
        for hostile in [
            "(".repeat(MAX_LEN),
            "not (".repeat(MAX_LEN / 5),
            "[".repeat(MAX_LEN),
            "a[".repeat(MAX_LEN / 2),
        ] {
            assert_eq!(err(&hostile).scim_type, Some(ScimType::InvalidFilter));
        }
        let too_long = format!(r#"userName eq "{}""#, "x".repeat(MAX_LEN));
        assert!(err(&too_long).detail.contains("longer than 16384"));
        // A long flat chain is fine and stays shallow.
        let chain = vec!["id eq \"x\""; 1000].join(" or ");
        assert!(chain.len() <= MAX_LEN);
        let f = p(&chain);
        assert!(depth(&f) <= 11, "{}", depth(&f));
        assert!(!matches(&f, &json!({"id": "y"}), registry().user()));
        assert!(matches(&f, &json!({"id": "x"}), registry().user()));
    }

    /// A deterministic pseudo-random generator (xorshift64*), so the property test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[usize::try_from(self.next() % items.len() as u64).unwrap()]
        }
    }

    const PIECES: &[&str] = &[
        " ",
        " ",
        "(",
        ")",
        "[",
        "]",
        "\"",
        "\\",
        ".",
        ":",
        "not",
        "not (",
        "and",
        "or",
        "eq",
        "pr",
        "co",
        "gt",
        "EQ",
        "userName",
        "emails",
        "type",
        "value",
        "active",
        "meta.lastModified",
        "urn:ietf:params:scim:schemas:",
        "extension:enterprise:2.0:User:",
        "manager.value",
        "\"x\"",
        "\"True\"",
        "\"2011-05-13T04:42:34Z\"",
        "true",
        "null",
        "-1.5e3",
        "42",
        "é",
        "😀",
        "\u{0}",
        "\u{1}",
        "\t",
        "\\u00",
        "$ref",
        "-",
        "_",
        "]].",
        "name.",
        "schemas",
        "id",
        "age",
        "\"\\\"",
        "x",
        "\n",
        "\u{200b}",
    ];

    fn garbage(rng: &mut Rng) -> String {
        let n = rng.next() % 24;
        let mut out = String::new();
        for _ in 0..n {
            if rng.next().is_multiple_of(5) {
                // An arbitrary character, sometimes outside the BMP.
                let c = char::from_u32(u32::try_from(rng.next() % 0x1_0000).unwrap()).unwrap_or('?');
                out.push(c);
            } else {
                out.push_str(rng.pick(PIECES));
            }
        }
        out
    }

    #[test]
    fn never_panics_on_garbage() {
        let rt = registry().user();
        let resource = json!({
            "id": "x", "userName": "x", "active": true, "emails": [{"value": "x", "type": "work"}],
            "meta": {"lastModified": "2011-05-13T04:42:34Z"}, ENTERPRISE: {"manager": {"value": "x"}}
        });
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        for _ in 0..30_000 {
            let input = garbage(&mut rng);
            if let Ok(f) = parse(&input) {
                parsed += 1;
                let _ = validate(&f, rt);
                let _ = matches(&f, &resource, rt);
            }
            let _ = crate::scim::path::parse(&input);
        }
        assert!(parsed > 0, "the generator should hit some valid filters");
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Bjensen-Ext",
            "userName": "bjensen@example.com",
            "name": {"familyName": "O'Malley", "givenName": "Barbara"},
            "displayName": "Babs Jensen",
            "title": "",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z",
                "version": "W/\"3694e05e9dff590\""
            },
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
        })
    }

    fn m(filter: &str) -> bool {
        let rt = registry().user();
        let f = p(filter);
        validate(&f, rt).unwrap_or_else(|e| panic!("{filter}: {e}"));
        matches(&f, &user(), rt)
    }

    #[test]
    fn matches_strings_by_case_exactness() {
        assert!(m(r#"userName eq "BJensen@Example.COM""#));
        assert!(m(r#"USERNAME Eq "bjensen@example.com""#));
        assert!(m(r#"userName sw "BJ""#));
        assert!(m(r#"userName ew "COM""#));
        assert!(m(r#"userName co "@EXAMPLE""#));
        assert!(!m(r#"userName co "@example.org""#));
        assert!(m(r#"name.familyName co "o'malley""#));
        assert!(m(r#"Name.FamilyName eq "O'Malley""#));
        // caseExact: id, externalId.
        assert!(m(r#"externalId eq "Bjensen-Ext""#));
        assert!(!m(r#"externalId eq "bjensen-ext""#));
        assert!(m(r#"id eq "2819c223-7f76-453a-919d-413861904646""#));
        assert!(!m(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
        assert!(!m(r#"id sw "2819C""#));
        assert!(
            m(r#"displayName gt "Babs""#) && m(r#"displayName lt "c""#) && !m(r#"displayName le "babs""#)
        );
    }

    #[test]
    fn matches_multi_valued_and_value_paths() {
        assert!(m(r#"emails co "jensen.org""#));
        assert!(m(r#"emails.value co "JENSEN.ORG""#));
        assert!(m(r#"emails.type eq "home""#));
        assert!(!m(r#"emails.type eq "other""#));
        assert!(m(r#"emails[type eq "work" and value co "@example.com"]"#));
        assert!(!m(r#"emails[type eq "home" and value co "@example.com"]"#));
        assert!(m(r#"emails[type eq "work"].value eq "BJENSEN@example.com""#));
        assert!(
            !m(r#"emails[type eq "work"].value eq "babs@jensen.org""#),
            "one element must satisfy both"
        );
        assert!(m(r#"emails[not (type eq "work")]"#));
        assert!(m(r#"emails[primary eq true].type eq "work""#));
        assert!(m(r#"emails[primary eq "True"]"#));
        assert!(!m(r#"emails[primary eq "True" and type eq "home"]"#));
        assert!(!m(
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#
        ));
        assert!(m(r"emails pr") && m(r"emails.primary pr") && !m(r"phoneNumbers pr"));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager[value eq "26118915"]"#
        ));
    }

    #[test]
    fn matches_absent_present_and_null() {
        assert!(m("userName pr"));
        assert!(!m("title pr"), "empty string is not present");
        assert!(!m("nickName pr"));
        assert!(m(r#"nickName ne "x""#), "absent: ne is true");
        assert!(!m(r#"nickName eq "x""#));
        assert!(!m(r#"nickName co "x""#));
        assert!(m("nickName eq null") && !m("nickName ne null"));
        assert!(m("userName ne null") && !m("userName eq null"));
        assert!(m("title eq null"), "eq null is the negation of pr");
        assert!(m(r#"title eq """#));
        assert!(m(r#"userType ne "Employee""#));
        assert!(m("name pr") && m("meta pr"));
        assert!(!m(r"not (userName pr)"));
    }

    #[test]
    fn matches_extension_attributes_with_or_without_urn() {
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#
        ));
        assert!(m(r#"employeeNumber eq "701984""#));
        assert!(
            m("employeeNumber eq 701984"),
            "a number compares as text with a string attribute"
        );
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#
        ));
        assert!(m(
            r#"URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:MANAGER.VALUE eq "26118915""#
        ));
        assert!(
            m(r#"manager eq "26118915""#),
            "complex without sub-attribute compares `value`"
        );
        assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "B""#));
    }

    #[test]
    fn matches_booleans_numbers_and_datetimes() {
        assert!(m("active eq true") && m(r#"active eq "True""#) && m(r#"active eq "TRUE""#));
        assert!(!m(r#"active eq "False""#) && m(r#"active ne "false""#) && !m("active eq false"));
        assert!(m(r#"meta.lastModified eq "2011-05-13T04:42:34Z""#));
        assert!(
            m(r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#),
            "same instant, other offset"
        );
        assert!(m(r#"meta.lastModified eq "2011-05-13T04:42:34.000Z""#));
        assert!(!m(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#));
        assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
        assert!(!m(r#"meta.lastModified gt "2011-05-13T00:42:34-04:00""#));
        assert!(m(r#"meta.lastModified gt "2011-05-12T23:42:34-04:00""#));
        assert!(m(r#"meta.lastModified gt "2011-05-12T21:42:33.8617979-07:00""#));
        assert!(m(r#"meta.lastModified lt "2015-10-10T14:38:21.8617979-07:00""#));
        assert!(m(
            r#"meta.created lt "2011-05-13T04:42:34Z" and meta.lastModified le "2011-05-13T04:42:34Z""#
        ));
        assert!(m(
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#
        ));
        assert!(!m(r#"schemas eq "urn:example""#) && m("schemas pr"));
    }

    #[test]
    fn validate_names_unknown_attributes_and_bad_comparisons() {
        let rt = registry().user();
        let check = |filter: &str| validate(&p(filter), rt);
        for (filter, needle) in [
            (r#"nope eq "x""#, "`nope`"),
            (r#"name.nope eq "x""#, "`name.nope`"),
            (r#"urn:example:ext:thing eq "x""#, "`urn:example:ext:thing`"),
            (r#"emails[nope eq "x"]"#, "`nope`"),
            (r#"emails[type eq "x"].nope eq "y""#, "`nope`"),
            (r#"userName[value eq "x"]"#, "complex"),
            ("active gt true", "`gt`"),
            ("active co true", "`co`"),
            (r#"active eq "yes""#, "boolean"),
            (r#"meta.lastModified gt "yesterday""#, "dateTime"),
            (r#"meta.lastModified co "2011""#, "`co`"),
            (r#"name eq "x""#, "complex"),
            (r#"password eq "secret""#, "password"),
            ("x509Certificates.value gt \"x\"", "binary"),
            ("userName gt null", "null"),
        ] {
            let e = check(filter).expect_err(filter);
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{filter}");
            assert!(e.detail.contains(needle), "{filter}: {}", e.detail);
        }
        for ok in RFC_EXAMPLES.iter().filter(|f| !f.contains("ims[")) {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        check(r#"emails[type eq "work"].value eq "x""#).unwrap();
        check(r#"EMAILS[TYPE eq "work"]"#).unwrap();
        check("meta.lastModified gt \"2011-05-13T04:42:34Z\"").unwrap();
        let group = registry().group();
        validate(&p(r#"displayName eq "Admins""#), group).unwrap();
        validate(&p(r#"members[value eq "x"]"#), group).unwrap();
        assert!(validate(&p(r#"userName eq "x""#), group).is_err());
    }

    fn def(kind: AttrType) -> AttributeDef {
        AttributeDef {
            name: "n".into(),
            kind,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: Vec::new(),
            sub_attributes: Vec::new(),
        }
    }

    #[test]
    fn compares_numbers() {
        let num = |op, actual: Value, wanted: &str| {
            let Filter::Compare { value, .. } = p(&format!("n eq {wanted}")) else {
                unreachable!()
            };
            let d = def(AttrType::Integer);
            compare(&d, op, &actual, &value) && compare(&def(AttrType::Decimal), op, &actual, &value)
        };
        assert!(num(CompareOp::Eq, json!(42), "42") && num(CompareOp::Eq, json!(42), "42.0"));
        assert!(num(CompareOp::Gt, json!(42), "41.5") && !num(CompareOp::Lt, json!(42), "42"));
        assert!(num(CompareOp::Le, json!(42), "42") && num(CompareOp::Ge, json!(7.5), "7"));
        assert!(num(CompareOp::Lt, json!(-1), "18446744073709551615"));
        assert!(num(CompareOp::Eq, json!(42), "\"42\"") && num(CompareOp::Ne, json!(42), "1"));
        assert!(!num(CompareOp::Co, json!(42), "4"));
        let number_path = AttrPath::simple("n");
        let e =
            check_comparison(&number_path, &def(AttrType::Integer), CompareOp::Eq, &s("many")).unwrap_err();
        assert!(e.detail.contains("number"), "{}", e.detail);
        let e = check_comparison(&number_path, &def(AttrType::Decimal), CompareOp::Sw, &s("1")).unwrap_err();
        assert!(e.detail.contains("`sw`"), "{}", e.detail);
        check_comparison(
            &number_path,
            &def(AttrType::Decimal),
            CompareOp::Gt,
            &CompValue::Number(1.into()),
        )
        .unwrap();
    }
}
