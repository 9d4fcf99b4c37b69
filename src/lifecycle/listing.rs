//! The list engine every resource type shares (`GET /Users`, `POST /Users/.search`, and the same for Groups),
//! and the root search (`POST /.search`) across resource types. Reads only.
//!
//! A resource type plugs in by implementing [`Source`] (its table, filter translation, sort columns and
//! representation). Then one list is:
//! - **in SQL** when the filter translates exactly and the sort attribute has a column: one page with `ORDER BY
//!   column, id LIMIT … OFFSET …` and its total in the same statement (a `COUNT(*)` subquery; counted apart only
//!   when the page is past the end);
//! - **in Rust** otherwise (a filter on an attribute without a column, or `sortBy` on one): the rows the SQL part of
//!   the filter selects are scanned by id in batches, each represented and checked with `filter::matches`; only the
//!   sort value and id of each match are kept, sorted with `scim::list::compare`, and the page's rows loaded by id.
//!   More than `limits.max_scan` candidates is a 400 `tooMany` before any row is read: the one case where offboard
//!   will not evaluate a filter (docs/decisions/0013-list-paging.md).
//!
//! Both ways give the same order (`scim::list`'s rules; the SQL side renders them in `db::repo::list`).
//!
//! Every list is bounded before it runs ([`Bounds`]): a filter with more comparisons than
//! `limits.max_filter_terms`, or more substring comparisons (`co`, `sw`, `ew`, which no index serves: each one
//! scans every row, and an `emails.value co` one every email of every row) than `limits.max_filter_substring_terms`,
//! is a 400 `tooMany` before any query; the Rust-side work is bounded by `limits.max_scan`. On PostgreSQL every
//! statement of a list also runs under `statement_timeout` (`limits.list_statement_timeout_ms`), and one cut off
//! is a 400 `tooMany` too (SQLite offers no such bound through diesel; the term limits bound it there). Lists run
//! on read connections (on PostgreSQL in one read-only snapshot), never on SQLite's writer.

use std::collections::HashMap;

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sqlite::Sqlite;
use serde_json::Value;

use crate::db::filter_sql::{Dialect, SqlFilter};
use crate::db::repo::list::{self as sql, SortColumn, Table};
use crate::db::{Backend, Db, DbConnection};
use crate::error::AppError;
use crate::scim::filter::{self, Filter};
use crate::scim::list::{ListQuery, SortBy, SortKey, SortOrder, SortValue, compare};
use crate::scim::schema::ResourceType;
use crate::scim::{ScimError, ScimType};

/// Rows per batch of a Rust-side scan.
const SCAN_BATCH: usize = 500;

/// What a representation is for: evaluating a filter and sort key (everything a filter may name), or the
/// response (a type may leave out what the projection drops, as Groups do with `members`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Evaluate,
    Respond,
}

/// A resource type as the list engine sees it.
pub trait Source {
    type Row: QueryableByName<Sqlite> + QueryableByName<Pg> + 'static;

    fn rt(&self) -> &'static ResourceType;
    fn table(&self) -> &'static Table;
    /// The filter's SQL translation, placeholders numbered from `first`.
    fn filter_sql(&self, f: &Filter, dialect: Dialect, first: usize) -> SqlFilter;
    /// The column `key` orders by in SQL, if it has one.
    fn sort_column(&self, key: &SortKey<'_>) -> Option<SortColumn>;
    fn id<'r>(&self, row: &'r Self::Row) -> &'r str;
    /// Full SCIM representations of `rows`, in their order.
    fn represent(
        &self,
        conn: &mut DbConnection,
        rows: Vec<Self::Row>,
        purpose: Purpose,
        base_url: &str,
    ) -> Result<Vec<Value>, AppError>;

    /// The response representations of `rows` for the default projection, in their order: JSON text where the
    /// type can write it as the general path would answer it (Users, `super::represent`), else the full values.
    fn represent_default(
        &self,
        conn: &mut DbConnection,
        rows: Vec<Self::Row>,
        base_url: &str,
    ) -> Result<Vec<Resource>, AppError> {
        Ok(self
            .represent(conn, rows, Purpose::Respond, base_url)?
            .into_iter()
            .map(Resource::Value)
            .collect())
    }
}

/// One resource of a page.
#[derive(Debug)]
pub enum Resource {
    /// The full representation, still to be projected; it names its type in `meta.resourceType`.
    Value(Value),
    /// The response text for the default projection, projected already (asked for only when the request names no
    /// `attributes`/`excludedAttributes`).
    Text(Vec<u8>),
}

impl Resource {
    /// The resource as a value (text parsed back; a list asks for text only where it needs no value).
    fn into_value(self) -> Value {
        match self {
            Self::Value(v) => v,
            Self::Text(t) => serde_json::from_slice(&t).unwrap_or(Value::Null),
        }
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub total: usize,
    pub start_index: usize,
    /// Full representations (each names its type in `meta.resourceType`), or response text.
    pub resources: Vec<Resource>,
}

/// How one resource type's results are ordered.
#[derive(Debug, Clone, Copy)]
pub enum Order<'a> {
    /// By an attribute of the type (the default order is `meta.created`).
    Key(SortKey<'a>),
    /// By id alone: a root search sorting on an attribute this type does not have (every value is missing).
    IdOnly(SortOrder),
}

impl Order<'_> {
    fn direction(&self) -> SortOrder {
        match self {
            Self::Key(k) => k.order,
            Self::IdOnly(o) => *o,
        }
    }

    fn value_of(&self, resource: &Value) -> Option<SortValue> {
        match self {
            Self::Key(k) => k.value_of(resource),
            Self::IdOnly(_) => None,
        }
    }
}

/// What a list may cost (from `limits.*`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most candidates a Rust-side evaluation may scan (`limits.max_scan`).
    pub max_scan: usize,
    /// Most comparisons in a filter (`limits.max_filter_terms`).
    pub max_filter_terms: usize,
    /// Most `co`/`sw`/`ew` comparisons in a filter (`limits.max_filter_substring_terms`).
    pub max_filter_substring_terms: usize,
    /// PostgreSQL `statement_timeout` of a list's statements in milliseconds (0: none).
    pub statement_timeout_ms: u64,
}

impl From<&crate::config::Limits> for Bounds {
    fn from(l: &crate::config::Limits) -> Self {
        Self {
            max_scan: l.max_scan,
            max_filter_terms: l.max_filter_terms,
            max_filter_substring_terms: l.max_filter_substring_terms,
            statement_timeout_ms: l.list_statement_timeout_ms,
        }
    }
}

impl Bounds {
    /// 400 `tooMany` for a filter whose database cost is not bounded by these limits.
    fn check(&self, f: &Filter) -> Result<(), ScimError> {
        let terms = f.terms();
        if terms.substring > self.max_filter_substring_terms {
            return Err(ScimError::bad_request(
                ScimType::TooMany,
                format!(
                    "the filter has {} substring comparisons (co, sw, ew), over limits.max_filter_substring_terms \
                     ({}): no index serves them, each one scans every resource; split the search",
                    terms.substring, self.max_filter_substring_terms
                ),
            ));
        }
        if terms.all > self.max_filter_terms {
            return Err(ScimError::bad_request(
                ScimType::TooMany,
                format!(
                    "the filter has {} comparisons, over limits.max_filter_terms ({}); split the search",
                    terms.all, self.max_filter_terms
                ),
            ));
        }
        Ok(())
    }
}

/// Runs a list's reads: on PostgreSQL in one read-only snapshot whose statements may run at most
/// `bounds.statement_timeout_ms` each (a statement cut off answers 400 `tooMany`); on SQLite on a read connection.
fn read_bounded<T>(
    db: &Db,
    bounds: &Bounds,
    f: impl FnOnce(&mut DbConnection) -> Result<T, AppError>,
) -> Result<T, AppError> {
    if db.backend() != Backend::Postgres || bounds.statement_timeout_ms == 0 {
        return db.read(f);
    }
    let ms = bounds.statement_timeout_ms;
    // Sent with the `BEGIN`: one round trip for both.
    db.snapshot_with(&format!("SET LOCAL statement_timeout = {ms}"), f)
        .map_err(|e| match e {
            AppError::Internal(cause) if cause.contains("statement timeout") => {
                tracing::warn!(
                    "a list statement ran over limits.list_statement_timeout_ms ({ms} ms): {cause}"
                );
                ScimError::bad_request(
                ScimType::TooMany,
                format!(
                    "the search ran longer than limits.list_statement_timeout_ms ({ms} ms); narrow the filter"
                ),
            )
            .into()
            }
            other => other,
        })
}

/// Parses, validates and bounds a filter for `rt` (none when absent or blank).
pub fn parse_filter(
    text: Option<&str>,
    rt: &ResourceType,
    bounds: &Bounds,
) -> Result<Option<Filter>, ScimError> {
    match text.map(str::trim) {
        Some(text) if !text.is_empty() => {
            let f = filter::parse(text)?;
            bounds.check(&f)?;
            filter::validate(&f, rt)?;
            Ok(Some(f))
        }
        _ => Ok(None),
    }
}

/// The list of one resource type at its own endpoint: `GET /{Type}` and `POST /{Type}/.search`.
pub fn list<S: Source>(
    db: &Db,
    source: &S,
    q: &ListQuery,
    bounds: Bounds,
    base_url: &str,
) -> Result<Page, AppError> {
    let filter = parse_filter(q.filter.as_deref(), source.rt(), &bounds)?;
    list_parsed(db, source, filter.as_ref(), q, bounds, base_url, false)
}

/// [`list`] with the filter already parsed by [`parse_filter`]. With `default_projection` (the request names no
/// `attributes`/`excludedAttributes`) the page's resources come from [`Source::represent_default`].
pub fn list_parsed<S: Source>(
    db: &Db,
    source: &S,
    filter: Option<&Filter>,
    q: &ListQuery,
    bounds: Bounds,
    base_url: &str,
    default_projection: bool,
) -> Result<Page, AppError> {
    let rt = source.rt();
    let max_scan = bounds.max_scan;
    let sort = q.sort.clone().unwrap_or_else(SortBy::default_order);
    let order = Order::Key(sort.resolve_for(rt)?);
    let window = Window {
        offset: q.start_index.saturating_sub(1),
        count: q.count,
        max_scan,
        max_rows: usize::MAX,
    };
    let respond = Respond {
        base_url,
        default_projection,
    };
    let (total, resources) = read_bounded(db, &bounds, |c| {
        select(c, source, filter, &order, window, respond)
    })?;
    Ok(Page {
        total,
        start_index: q.start_index,
        resources,
    })
}

/// Which part of the ordered results to return, and the bounds on the work.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub offset: usize,
    pub count: usize,
    /// Most candidates a Rust-side evaluation may scan (`limits.max_scan`).
    pub max_scan: usize,
    /// Most rows the page may hold (a root search asks each type for `offset + count` rows).
    pub max_rows: usize,
}

/// What needs more Rust-side work than `limits.max_scan` allows.
#[derive(Debug, Clone, Copy)]
enum Over<'a> {
    Filter,
    Sort(&'a SortKey<'a>),
    /// A root search window: this many results of one type.
    Window,
}

fn too_many(rt: &ResourceType, over: Over<'_>, n: usize, limit: usize) -> AppError {
    const INDEXED: &str = "id, externalId, displayName, meta.created, meta.lastModified; for Users also userName, \
                           emails.value, active";
    let name = &rt.name;
    let detail = match over {
        Over::Filter => format!(
            "the filter names attributes without an index, so {n} {name} resources would be checked one by one, \
             over limits.max_scan ({limit}); add a condition on an indexed attribute ({INDEXED})"
        ),
        Over::Sort(key) => format!(
            "sortBy '{}' has no index, and {n} {name} resources would be sorted by it, over limits.max_scan \
             ({limit}); narrow the filter or sort by an indexed attribute ({INDEXED})",
            match key.resolved.sub {
                Some(sub) => format!("{}.{}", key.resolved.attr.name, sub.name),
                None => key.resolved.attr.name.clone(),
            }
        ),
        Over::Window => format!(
            "this root search page needs the first {n} {name} results, over limits.max_scan ({limit}); \
             search /{name}s or narrow the filter"
        ),
    };
    ScimError::bad_request(ScimType::TooMany, detail).into()
}

/// How a page's resources are represented.
#[derive(Debug, Clone, Copy)]
pub struct Respond<'a> {
    pub base_url: &'a str,
    /// The response has the default projection: [`Source::represent_default`].
    pub default_projection: bool,
}

impl Respond<'_> {
    fn represent<S: Source>(
        self,
        source: &S,
        conn: &mut DbConnection,
        rows: Vec<S::Row>,
    ) -> Result<Vec<Resource>, AppError> {
        if self.default_projection {
            source.represent_default(conn, rows, self.base_url)
        } else {
            Ok(source
                .represent(conn, rows, Purpose::Respond, self.base_url)?
                .into_iter()
                .map(Resource::Value)
                .collect())
        }
    }
}

/// The total and the window of the resources of one type that `filter` selects, in `order`.
pub fn select<S: Source>(
    conn: &mut DbConnection,
    source: &S,
    filter: Option<&Filter>,
    order: &Order<'_>,
    w: Window,
    respond: Respond<'_>,
) -> Result<(usize, Vec<Resource>), AppError> {
    let dialect = sql::dialect(conn);
    let table = source.table();
    let where_sql = filter.map(|f| source.filter_sql(f, dialect, 1));
    let exact = where_sql.as_ref().is_none_or(|f| f.exact);
    let order_sql = match order {
        Order::Key(k) => source
            .sort_column(k)
            .map(|col| sql::order_by(col, k.order, dialect)),
        Order::IdOnly(o) => Some(sql::order_by(sql::ID, *o, dialect)),
    };
    // A page of an exact, SQL-ordered list is one statement that carries the total too
    // (docs/decisions/0042-list-page-and-total-in-one-statement.md). A page past the end has no row to carry it:
    // then the total is counted on its own.
    if let Some(order_sql) = order_sql
        .as_ref()
        .filter(|_| exact && w.count > 0 && w.count <= w.max_rows)
    {
        let st =
            sql::counted_page_statement(table, where_sql.as_ref(), order_sql, w.offset, w.count, dialect);
        let (rows, total) = sql::load_counted::<S::Row>(conn, &st)?;
        let total = match total {
            Some(total) => total,
            None if w.offset == 0 => 0,
            None => sql::count(conn, &sql::count_statement(table, where_sql.as_ref()))?,
        };
        return Ok((total, respond.represent(source, conn, rows)?));
    }
    let counted = sql::count(conn, &sql::count_statement(table, where_sql.as_ref()))?;
    match order_sql {
        Some(order_sql) if exact => {
            let rows_wanted = counted.saturating_sub(w.offset).min(w.count);
            if rows_wanted > w.max_rows {
                return Err(too_many(source.rt(), Over::Window, rows_wanted, w.max_rows));
            }
            if rows_wanted == 0 {
                return Ok((counted, Vec::new()));
            }
            let st = sql::page_statement(table, where_sql.as_ref(), &order_sql, w.offset, w.count, dialect);
            let rows = sql::load::<S::Row>(conn, &st)?;
            Ok((counted, respond.represent(source, conn, rows)?))
        }
        _ => {
            if counted > w.max_scan {
                let over = match order {
                    Order::Key(key) if exact => Over::Sort(key),
                    _ => Over::Filter,
                };
                return Err(too_many(source.rt(), over, counted, w.max_scan));
            }
            let filter = if exact { None } else { filter };
            scan(conn, source, where_sql.as_ref(), filter, order, w, respond)
        }
    }
}

/// The Rust-side evaluation: scan the SQL candidates by id, keep each match's sort value and id, sort, and load
/// the window's rows.
fn scan<S: Source>(
    conn: &mut DbConnection,
    source: &S,
    where_sql: Option<&SqlFilter>,
    filter: Option<&Filter>,
    order: &Order<'_>,
    w: Window,
    respond: Respond<'_>,
) -> Result<(usize, Vec<Resource>), AppError> {
    let (rt, table) = (source.rt(), source.table());
    let dialect = sql::dialect(conn);
    let mut matches: Vec<(Option<SortValue>, String)> = Vec::new();
    let mut after: Option<String> = None;
    let mut scanned = 0usize;
    loop {
        let st = sql::scan_statement(table, where_sql, after.as_deref(), SCAN_BATCH, dialect);
        let rows = sql::load::<S::Row>(conn, &st)?;
        let n = rows.len();
        scanned += n;
        if scanned > w.max_scan {
            // Rows arrived after the count; still refuse rather than run unbounded.
            return Err(too_many(rt, Over::Filter, scanned, w.max_scan));
        }
        after = rows.last().map(|r| source.id(r).to_owned());
        for v in source.represent(conn, rows, Purpose::Evaluate, respond.base_url)? {
            if filter.is_some_and(|f| !filter::matches(f, &v, rt)) {
                continue;
            }
            let Some(id) = v.get("id").and_then(Value::as_str) else {
                continue;
            };
            matches.push((order.value_of(&v), id.to_owned()));
        }
        if n < SCAN_BATCH {
            break;
        }
    }
    let direction = order.direction();
    matches.sort_by(|a, b| compare((a.0.as_ref(), &a.1), (b.0.as_ref(), &b.1), direction));
    let total = matches.len();
    let ids: Vec<&str> = matches
        .iter()
        .skip(w.offset)
        .take(w.count)
        .map(|m| m.1.as_str())
        .collect();
    if ids.len() > w.max_rows {
        return Err(too_many(rt, Over::Window, ids.len(), w.max_rows));
    }
    if ids.is_empty() {
        return Ok((total, Vec::new()));
    }
    let mut by_id: HashMap<String, S::Row> = sql::load_by_ids::<S::Row>(conn, table, &ids)?
        .into_iter()
        .map(|r| (source.id(&r).to_owned(), r))
        .collect();
    // Rows deleted since the scan are simply missing from the page.
    let ordered: Vec<S::Row> = ids.iter().filter_map(|id| by_id.remove(*id)).collect();
    Ok((total, respond.represent(source, conn, ordered)?))
}

/// One resource type as a root search sees it: [`Source`] without its row type, so types can share a list.
pub trait Searchable: Send + Sync {
    fn rt(&self) -> &'static ResourceType;
    fn select_window(
        &self,
        conn: &mut DbConnection,
        filter: Option<&Filter>,
        order: &Order<'_>,
        w: Window,
        base_url: &str,
    ) -> Result<(usize, Vec<Value>), AppError>;
}

impl<S: Source + Send + Sync> Searchable for S {
    fn rt(&self) -> &'static ResourceType {
        Source::rt(self)
    }

    fn select_window(
        &self,
        conn: &mut DbConnection,
        filter: Option<&Filter>,
        order: &Order<'_>,
        w: Window,
        base_url: &str,
    ) -> Result<(usize, Vec<Value>), AppError> {
        let respond = Respond {
            base_url,
            default_projection: false,
        };
        let (total, resources) = select(conn, self, filter, order, w, respond)?;
        Ok((total, resources.into_iter().map(Resource::into_value).collect()))
    }
}

/// `POST /.search` (RFC 7644 §3.4.3 on the server root): the resources of every type in `sources`, filtered,
/// sorted and paged as one list.
///
/// The filter applies to each type it is valid for (its attributes exist there); a type it names unknown
/// attributes of contributes nothing, and a filter valid for no type is the first type's 400 `invalidFilter`. A
/// `sortBy` that a type lacks sorts that type's resources as having no value; one that no type has is a 400
/// `invalidValue`. Each type returns its first `startIndex - 1 + count` results in the common order; they are
/// merged and the window taken. So a deep page costs that many rows per type, bounded by `limits.max_scan`
/// (`tooMany` beyond).
pub fn search_root(
    db: &Db,
    sources: &[&dyn Searchable],
    q: &ListQuery,
    bounds: Bounds,
    base_url: &str,
) -> Result<Page, AppError> {
    let max_scan = bounds.max_scan;
    let parsed = match q.filter.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => {
            let f = filter::parse(text)?;
            bounds.check(&f)?;
            Some(f)
        }
        _ => None,
    };
    let sort = q.sort.clone().unwrap_or_else(SortBy::default_order);
    let mut filter_error = None;
    let mut sortable = false;
    let mut parts = Vec::new();
    for source in sources {
        let rt = source.rt();
        let order = match sort.resolve(rt)? {
            Some(key) => Order::Key(key),
            None => Order::IdOnly(sort.order),
        };
        sortable |= matches!(order, Order::Key(_));
        match parsed.as_ref().map(|f| filter::validate(f, rt)) {
            Some(Err(e)) => {
                filter_error.get_or_insert(e);
            }
            _ => parts.push((*source, order)),
        }
    }
    if !sortable {
        return Err(ScimError::invalid_value(format!(
            "sortBy: '{}' is not an attribute of any resource type",
            sort.path
        ))
        .into());
    }
    if parts.is_empty()
        && let Some(e) = filter_error
    {
        return Err(e.into());
    }
    let offset = q.start_index.saturating_sub(1);
    let (total, mut merged) = read_bounded(db, &bounds, |c| {
        // Past the first page, count first: a window past the end needs no rows at all.
        if offset > 0 || q.count == 0 {
            let counting = Window {
                offset: 0,
                count: 0,
                max_scan,
                max_rows: 0,
            };
            let mut total = 0usize;
            for (source, order) in &parts {
                total += source
                    .select_window(c, parsed.as_ref(), order, counting, base_url)?
                    .0;
            }
            if offset >= total || q.count == 0 {
                return Ok((total, Vec::new()));
            }
        }
        let window = Window {
            offset: 0,
            count: offset.saturating_add(q.count),
            max_scan,
            max_rows: max_scan,
        };
        let mut total = 0usize;
        let mut merged: Vec<(Option<SortValue>, String, Value)> = Vec::new();
        for (source, order) in &parts {
            let (n, resources) = source.select_window(c, parsed.as_ref(), order, window, base_url)?;
            total += n;
            for v in resources {
                let id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                merged.push((order.value_of(&v), id, v));
            }
        }
        Ok::<_, AppError>((total, merged))
    })?;
    merged.sort_by(|a, b| compare((a.0.as_ref(), &a.1), (b.0.as_ref(), &b.1), sort.order));
    Ok(Page {
        total,
        start_index: q.start_index,
        resources: merged
            .into_iter()
            .skip(offset)
            .take(q.count)
            .map(|m| Resource::Value(m.2))
            .collect(),
    })
}
