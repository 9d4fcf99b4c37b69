//! SQL for listing any resource table (`users`, `groups`): counting, one page in a requested order, keyset scans
//! for filters and sorts evaluated in Rust, and loading rows by id. The statement building is pure and
//! unit-tested; the executors are generic over the row type. Which SCIM attribute maps to which column is the
//! resource's own repository's business (`users::sort_column`); the rules of the order are `scim::list`'s.
//!
//! The `ORDER BY` this renders orders exactly as `scim::list::compare`: text columns by code point (`COLLATE "C"`
//! on PostgreSQL, SQLite's default binary collation), a NULL (no value) last when ascending and first when
//! descending, ties by `id`, and descending as the exact reverse of ascending. Ids are server-assigned lower-case
//! UUIDs, which order the same under every collation, so `id` needs no `COLLATE` (and keeps its index).

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::RunQueryDsl;
use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel::sqlite::Sqlite;

use super::{pg_query, sqlite_query};
use crate::db::DbConnection;
use crate::db::filter_sql::{Bind, Dialect, SqlFilter};
use crate::scim::list::{SortKey, SortOrder};

/// A resource table as the list statements see it.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// SQL name.
    pub name: &'static str,
    /// The select list of its row struct.
    pub columns: &'static str,
    /// The condition every listed row meets (`deleted_at IS NULL`; `1=1` when there is none).
    pub live: &'static str,
}

/// A column a list can be ordered by in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortColumn {
    pub name: &'static str,
    /// Ordered by code point (`COLLATE "C"` on PostgreSQL).
    pub text: bool,
    pub nullable: bool,
}

/// `id` (see the module doc for why it is not marked text).
pub const ID: SortColumn = SortColumn {
    name: "id",
    text: false,
    nullable: false,
};
pub const CREATED: SortColumn = SortColumn {
    name: "created",
    text: false,
    nullable: false,
};
pub const LAST_MODIFIED: SortColumn = SortColumn {
    name: "last_modified",
    text: false,
    nullable: false,
};

/// The columns every resource table has for the common attributes: `id`, `meta.created`, `meta.lastModified`.
/// A resource's `sort_column` tries its own columns, then this.
pub fn common_sort_column(key: &SortKey<'_>) -> Option<SortColumn> {
    let r = &key.resolved;
    if r.schema != key.core {
        return None;
    }
    match (r.attr.name.as_str(), r.sub.map(|s| s.name.as_str())) {
        ("id", None) => Some(ID),
        ("meta", Some("created")) => Some(CREATED),
        ("meta", Some("lastModified")) => Some(LAST_MODIFIED),
        _ => None,
    }
}

/// `Some(col)` when `key` is the top-level core attribute `name` and its case-sensitivity is what `col` stores
/// (`folded` columns hold [`crate::scim::schema::fold`]ed values of a `caseExact: false` attribute).
pub fn text_sort_column(key: &SortKey<'_>, name: &str, col: SortColumn, folded: bool) -> Option<SortColumn> {
    let r = &key.resolved;
    let fits = r.schema == key.core
        && r.sub.is_none()
        && r.attr.name == name
        && r.attr.kind == crate::scim::schema::AttrType::String
        && !r.attr.multi_valued
        && r.attr.case_exact != folded;
    fits.then_some(col)
}

/// `ORDER BY` terms (without the keywords) for `col`, ties by `id`.
pub fn order_by(col: SortColumn, order: SortOrder, dialect: Dialect) -> String {
    let dir = match order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    };
    if col == ID {
        return format!("id {dir}");
    }
    let collate = if col.text && dialect == Dialect::Postgres {
        " COLLATE \"C\""
    } else {
        ""
    };
    let nulls = match (col.nullable, order) {
        (false, _) => "",
        (true, SortOrder::Ascending) => " NULLS LAST",
        (true, SortOrder::Descending) => " NULLS FIRST",
    };
    format!("{}{collate} {dir}{nulls}, id {dir}", col.name)
}

/// A statement and its binds, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl Statement {
    /// Appends a bound parameter (`?` or `$n`).
    fn push(&mut self, dialect: Dialect, bind: Bind) {
        self.binds.push(bind);
        match dialect {
            Dialect::Sqlite => self.sql.push('?'),
            Dialect::Postgres => {
                self.sql.push('$');
                self.sql.push_str(&self.binds.len().to_string());
            }
        }
    }
}

/// `FROM table WHERE live [AND (filter)]`; `filter` must number its placeholders from 1.
fn from(table: &Table, filter: Option<&SqlFilter>) -> Statement {
    match filter {
        Some(f) => Statement {
            sql: format!("FROM {} WHERE {} AND ({})", table.name, table.live, f.sql),
            binds: f.binds.clone(),
        },
        None => Statement {
            sql: format!("FROM {} WHERE {}", table.name, table.live),
            binds: Vec::new(),
        },
    }
}

fn big(n: usize) -> Bind {
    Bind::BigInt(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Counts the rows `filter` selects.
pub fn count_statement(table: &Table, filter: Option<&SqlFilter>) -> Statement {
    let base = from(table, filter);
    Statement {
        sql: format!("SELECT COUNT(*) AS n {}", base.sql),
        binds: base.binds,
    }
}

/// One page of the rows `filter` selects, in the order `order_by` (from [`order_by`]).
pub fn page_statement(
    table: &Table,
    filter: Option<&SqlFilter>,
    order_by: &str,
    offset: usize,
    limit: usize,
    dialect: Dialect,
) -> Statement {
    let mut st = from(table, filter);
    st.sql = format!("SELECT {} {} ORDER BY {order_by} LIMIT ", table.columns, st.sql);
    st.push(dialect, big(limit));
    st.sql.push_str(" OFFSET ");
    st.push(dialect, big(offset));
    st
}

/// [`page_statement`] that also returns the total the page is part of, as column `total_count` of every row: an
/// uncorrelated scalar subquery (`(SELECT COUNT(*) FROM … WHERE …)`), which both backends evaluate once per
/// statement, so a page and its `totalResults` are one round trip. Not `COUNT(*) OVER ()`: a window over the whole
/// selection makes both backends materialise every selected row (with its resource) before the `LIMIT`, where
/// the subquery counts from an index. A page past the end has no row to carry the total: the caller counts then
/// ([`count_statement`]). On PostgreSQL the subquery reuses the filter's `$n` placeholders; SQLite's `?` are
/// positional, so the filter's binds are bound twice (docs/decisions/0042-list-page-and-total-in-one-statement.md).
pub fn counted_page_statement(
    table: &Table,
    filter: Option<&SqlFilter>,
    order_by: &str,
    offset: usize,
    limit: usize,
    dialect: Dialect,
) -> Statement {
    let base = from(table, filter);
    let mut binds = base.binds.clone();
    if dialect == Dialect::Sqlite {
        binds.extend(base.binds.iter().cloned());
    }
    let mut st = Statement {
        sql: format!(
            "SELECT {}, (SELECT COUNT(*) {}) AS total_count {} ORDER BY {order_by} LIMIT ",
            table.columns, base.sql, base.sql
        ),
        binds,
    };
    st.push(dialect, big(limit));
    st.sql.push_str(" OFFSET ");
    st.push(dialect, big(offset));
    st
}

/// A row of a [`counted_page_statement`]: the table's row and the total of the selection.
#[derive(Debug)]
pub struct Totalled<R> {
    pub row: R,
    pub total: i64,
}

impl<R, DB> QueryableByName<DB> for Totalled<R>
where
    DB: diesel::backend::Backend,
    R: QueryableByName<DB>,
    i64: diesel::deserialize::FromSql<BigInt, DB>,
{
    fn build<'a>(row: &impl diesel::row::NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        Ok(Self {
            row: R::build(row)?,
            total: diesel::row::NamedRow::get::<BigInt, i64>(row, "total_count")?,
        })
    }
}

/// Runs a [`counted_page_statement`]: the page's rows and, when there is one, the total (none for an empty page,
/// which carries no row).
pub fn load_counted<R>(conn: &mut DbConnection, st: &Statement) -> QueryResult<(Vec<R>, Option<usize>)>
where
    R: QueryableByName<Sqlite> + QueryableByName<Pg> + 'static,
{
    let rows = load::<Totalled<R>>(conn, st)?;
    let total = rows.first().map(|r| usize::try_from(r.total).unwrap_or(0));
    Ok((rows.into_iter().map(|r| r.row).collect(), total))
}

/// The next `limit` rows `filter` selects after id `after`, by id: a keyset scan that sees each row once.
pub fn scan_statement(
    table: &Table,
    filter: Option<&SqlFilter>,
    after: Option<&str>,
    limit: usize,
    dialect: Dialect,
) -> Statement {
    let mut st = from(table, filter);
    st.sql = format!("SELECT {} {}", table.columns, st.sql);
    if let Some(after) = after {
        st.sql.push_str(" AND id > ");
        st.push(dialect, Bind::Text(after.to_owned()));
    }
    st.sql.push_str(" ORDER BY id LIMIT ");
    st.push(dialect, big(limit));
    st
}

/// The listed rows with these ids (any order).
pub fn by_ids_statement(table: &Table, ids: &[&str], dialect: Dialect) -> Statement {
    let mut st = from(table, None);
    st.sql = format!("SELECT {} {} AND id IN (", table.columns, st.sql);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            st.sql.push_str(", ");
        }
        st.push(dialect, Bind::Text((*id).to_owned()));
    }
    if ids.is_empty() {
        st.sql.push_str("NULL");
    }
    st.sql.push(')');
    st
}

pub fn dialect(conn: &DbConnection) -> Dialect {
    match conn {
        DbConnection::Sqlite(_) => Dialect::Sqlite,
        DbConnection::Postgres(_) => Dialect::Postgres,
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs a [`count_statement`].
pub fn count(conn: &mut DbConnection, st: &Statement) -> QueryResult<usize> {
    let n = match conn {
        DbConnection::Sqlite(c) => sqlite_query(st.sql.clone(), &st.binds).get_result::<Count>(c)?.n,
        DbConnection::Postgres(c) => pg_query(st.sql.clone(), &st.binds).get_result::<Count>(c)?.n,
    };
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Runs a statement that selects `table.columns`.
pub fn load<R>(conn: &mut DbConnection, st: &Statement) -> QueryResult<Vec<R>>
where
    R: QueryableByName<Sqlite> + QueryableByName<Pg> + 'static,
{
    match conn {
        DbConnection::Sqlite(c) => sqlite_query(st.sql.clone(), &st.binds).load::<R>(c),
        DbConnection::Postgres(c) => pg_query(st.sql.clone(), &st.binds).load::<R>(c),
    }
}

/// Loads the listed rows with these ids, in chunks (any order).
pub fn load_by_ids<R>(conn: &mut DbConnection, table: &Table, ids: &[&str]) -> QueryResult<Vec<R>>
where
    R: QueryableByName<Sqlite> + QueryableByName<Pg> + 'static,
{
    const CHUNK: usize = 500;
    let dialect = dialect(conn);
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        rows.extend(load::<R>(conn, &by_ids_statement(table, chunk, dialect))?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::list::SortBy;
    use crate::scim::schema::registry;

    const USERS: Table = Table {
        name: "users",
        columns: "id, resource",
        live: "deleted_at IS NULL",
    };

    const NAME: SortColumn = SortColumn {
        name: "user_name_folded",
        text: true,
        nullable: false,
    };
    const DISPLAY: SortColumn = SortColumn {
        name: "display_name_folded",
        text: true,
        nullable: true,
    };

    #[test]
    fn order_by_matches_the_scim_order() {
        use Dialect::{Postgres, Sqlite};
        use SortOrder::{Ascending, Descending};
        assert_eq!(order_by(CREATED, Ascending, Sqlite), "created ASC, id ASC");
        assert_eq!(order_by(CREATED, Descending, Postgres), "created DESC, id DESC");
        assert_eq!(order_by(ID, Descending, Postgres), "id DESC");
        assert_eq!(order_by(NAME, Ascending, Sqlite), "user_name_folded ASC, id ASC");
        assert_eq!(
            order_by(NAME, Descending, Postgres),
            "user_name_folded COLLATE \"C\" DESC, id DESC"
        );
        assert_eq!(
            order_by(DISPLAY, Ascending, Postgres),
            "display_name_folded COLLATE \"C\" ASC NULLS LAST, id ASC"
        );
        assert_eq!(
            order_by(DISPLAY, Descending, Sqlite),
            "display_name_folded DESC NULLS FIRST, id DESC"
        );
    }

    #[test]
    fn statements_number_placeholders_after_the_filter() {
        let filter = SqlFilter {
            sql: "a = $1 AND b = $2".into(),
            binds: vec![Bind::Text("x".into()), Bind::Text("y".into())],
            exact: true,
        };
        let st = page_statement(
            &USERS,
            Some(&filter),
            "created ASC, id ASC",
            20,
            10,
            Dialect::Postgres,
        );
        assert_eq!(
            st.sql,
            "SELECT id, resource FROM users WHERE deleted_at IS NULL AND (a = $1 AND b = $2) \
             ORDER BY created ASC, id ASC LIMIT $3 OFFSET $4"
        );
        assert_eq!(st.binds.get(2..), Some(&[Bind::BigInt(10), Bind::BigInt(20)][..]));
        let st = counted_page_statement(
            &USERS,
            Some(&filter),
            "created ASC, id ASC",
            20,
            10,
            Dialect::Postgres,
        );
        assert_eq!(
            st.sql,
            "SELECT id, resource, (SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND (a = $1 AND b = $2)) \
             AS total_count FROM users WHERE deleted_at IS NULL AND (a = $1 AND b = $2) \
             ORDER BY created ASC, id ASC LIMIT $3 OFFSET $4"
        );
        assert_eq!(st.binds.len(), 4);
        let sqlite_filter = SqlFilter {
            sql: "a = ? AND b = ?".into(),
            binds: vec![Bind::Text("x".into()), Bind::Text("y".into())],
            exact: true,
        };
        let st = counted_page_statement(&USERS, Some(&sqlite_filter), "id ASC", 0, 10, Dialect::Sqlite);
        assert_eq!(
            st.sql,
            "SELECT id, resource, (SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND (a = ? AND b = ?)) \
             AS total_count FROM users WHERE deleted_at IS NULL AND (a = ? AND b = ?) ORDER BY id ASC LIMIT ? OFFSET ?"
        );
        // The subquery's binds come first (it precedes the WHERE), then the WHERE's, then LIMIT and OFFSET.
        let text = |v: &str| Bind::Text(v.into());
        assert_eq!(
            st.binds,
            vec![
                text("x"),
                text("y"),
                text("x"),
                text("y"),
                Bind::BigInt(10),
                Bind::BigInt(0)
            ]
        );
        let st = scan_statement(&USERS, Some(&filter), Some("k"), 5, Dialect::Postgres);
        assert_eq!(
            st.sql,
            "SELECT id, resource FROM users WHERE deleted_at IS NULL AND (a = $1 AND b = $2) \
             AND id > $3 ORDER BY id LIMIT $4"
        );
        let st = scan_statement(&USERS, None, None, 5, Dialect::Sqlite);
        assert_eq!(
            st.sql,
            "SELECT id, resource FROM users WHERE deleted_at IS NULL ORDER BY id LIMIT ?"
        );
        let st = count_statement(&USERS, None);
        assert_eq!(st.sql, "SELECT COUNT(*) AS n FROM users WHERE deleted_at IS NULL");
        let st = by_ids_statement(&USERS, &["a", "b"], Dialect::Postgres);
        assert_eq!(
            st.sql,
            "SELECT id, resource FROM users WHERE deleted_at IS NULL AND id IN ($1, $2)"
        );
        assert!(
            by_ids_statement(&USERS, &[], Dialect::Sqlite)
                .sql
                .ends_with("IN (NULL)")
        );
    }

    #[test]
    fn common_and_text_columns() {
        let key = |path: &str, rt| {
            SortBy::parse(Some(path), None)
                .unwrap()
                .unwrap()
                .resolve_for(rt)
                .unwrap()
        };
        let user = registry().user();
        assert_eq!(common_sort_column(&key("meta.created", user)), Some(CREATED));
        assert_eq!(
            common_sort_column(&key("META.LASTMODIFIED", user)),
            Some(LAST_MODIFIED)
        );
        assert_eq!(common_sort_column(&key("id", registry().group())), Some(ID));
        assert_eq!(common_sort_column(&key("meta.version", user)), None);
        assert_eq!(common_sort_column(&key("userName", user)), None);
        assert_eq!(
            text_sort_column(&key("username", user), "userName", NAME, true),
            Some(NAME)
        );
        assert_eq!(
            text_sort_column(&key("username", user), "userName", NAME, false),
            None
        );
        assert_eq!(
            text_sort_column(&key("name.familyName", user), "name", NAME, true),
            None
        );
        assert_eq!(
            text_sort_column(
                &key("urn:ietf:params:scim:schemas:core:2.0:User:externalId", user),
                "externalId",
                DISPLAY,
                false
            ),
            Some(DISPLAY)
        );
    }
}
