//! The store's database facade: the handful of calls the store makes
//! (`execute`, `query_row`, `prepare` + `query_map`/`query`, `transaction`,
//! `execute_batch`), shaped like rusqlite's so the store's SQL reads the same,
//! over either embedded SQLite or a PostgreSQL server (issue 18).
//!
//! Why a facade of our own rather than a trait per store operation: the store
//! is ~100 statements, nearly all portable SQL. One seam under them keeps one
//! copy of every statement and every compare-and-set, so the two backends
//! cannot drift apart; where the dialects truly differ, the statement picks
//! its text with [`Conn::dialect`] in place. Parameters are written `?N`
//! everywhere and rewritten to `$N` once when PostgreSQL prepares them.
//!
//! Calls are blocking and run on tokio's blocking pool (`Store::call`); the
//! PostgreSQL backend drives its async client from there on a small runtime
//! of its own (see `postgres`).

mod corrupt;
mod placeholders;
pub mod postgres;
mod sqlite;
mod value;

pub use value::{FromValue, ToValue, Value};

pub use corrupt::{BlobError, CorruptBlob};

/// Which SQL a statement must speak, where the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Builds a parameter list: `params![a, b]` is `&[Value]`.
macro_rules! params {
    () => { &[] as &[$crate::store::db::Value] };
    ($($param:expr),+ $(,)?) => {
        &[$($crate::store::db::ToValue::to_value(&$param)),+] as &[$crate::store::db::Value]
    };
}
pub(crate) use params;

/// What a store statement can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// `query_row` found nothing (see [`OptionalExtension`]).
    #[error("the query returned no rows")]
    NoRows,
    /// A stored message no longer decodes: the store is damaged.
    #[error(transparent)]
    Corrupt(Box<CorruptBlob>),
    /// A column read as a type it does not hold: a bug, never the data's.
    #[error("column {column} holds {found}, read as {wanted}")]
    Type {
        column: usize,
        wanted: &'static str,
        found: &'static str,
    },
    /// A PostgreSQL column of a type the store never uses (cast it).
    #[error("column {column} is of PostgreSQL type {ty}, which the store does not read")]
    Column { column: usize, ty: String },
    /// No connection to the store's database could be made.
    #[error("the store's database is unavailable: {0}")]
    Unavailable(String),
    /// A value PostgreSQL's column cannot take (e.g. an i64 beyond INTEGER).
    #[error("parameter {index} ({value}) does not fit PostgreSQL type {ty}")]
    Bind {
        index: usize,
        value: &'static str,
        ty: String,
    },
}

impl From<CorruptBlob> for Error {
    fn from(corrupt: CorruptBlob) -> Self {
        Error::Corrupt(Box::new(corrupt))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `query_row(…).optional()`: no row is `None`, as with rusqlite.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(Error::NoRows) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// A column's position (only `usize`, so a literal `0` infers it).
pub trait ColumnIndex {
    fn column(self) -> usize;
}

impl ColumnIndex for usize {
    fn column(self) -> usize {
        self
    }
}

/// One row, its values read out of the backend's row.
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// The value of column `index` as `T`; `get::<_, T>` reads as rusqlite's.
    pub fn get<I: ColumnIndex, T: FromValue>(&self, index: I) -> Result<T> {
        let column = index.column();
        let value = self.values.get(column).unwrap_or(&Value::Null);
        T::from_value(value).map_err(|wanted| Error::Type {
            column,
            wanted,
            found: value.kind(),
        })
    }

    /// The bytes of a BLOB/BYTEA column without copying them.
    pub fn get_blob(&self, column: usize) -> Result<&[u8]> {
        match self.values.get(column) {
            Some(Value::Bytes(bytes)) => Ok(bytes),
            other => Err(Error::Type {
                column,
                wanted: "bytes",
                found: other.unwrap_or(&Value::Null).kind(),
            }),
        }
    }
}

/// One connection to the store's database.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::PgConn),
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        self.prepare(sql)?.execute(params)
    }

    /// The first row, mapped; [`Error::NoRows`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.prepare(sql)?.query_row(params, map)
    }

    /// Prepares (from a per-connection cache) a statement.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Statement::Sqlite(c.prepare_cached(sql)?)),
            Conn::Postgres(c) => Ok(Statement::Postgres(c.prepare(sql)?, c)),
        }
    }

    /// The same as [`Conn::prepare`]: every statement is cached.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    /// Runs several statements without parameters (migrations, pragmas).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.batch(sql),
        }
    }

    /// Serialises the rest of the current transaction with every other
    /// transaction that takes `key`, until commit or rollback: for a read
    /// followed by a write that depends on it (the audit chain's last hash,
    /// the next position of an index). PostgreSQL's `pg_advisory_xact_lock`,
    /// across connections and controllers; nothing on SQLite, where such a
    /// transaction begins with `immediate_transaction` (the write lock
    /// first) unless it writes before it reads.
    pub fn serialise(&self, key: i64) -> Result<()> {
        match self.dialect() {
            Dialect::Sqlite => Ok(()),
            Dialect::Postgres => {
                self.query_row("SELECT pg_advisory_xact_lock(?1)", params![key], |_| Ok(()))
            }
        }
    }

    /// Begins a transaction, rolled back unless committed.
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.execute_batch("BEGIN")?;
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }

    /// Begins a transaction that takes the write lock at once (SQLite's
    /// IMMEDIATE): a read in it cannot go stale before its write. On
    /// PostgreSQL a plain transaction: what must be serialised there takes
    /// its own lock (the audit chain's advisory lock).
    pub fn immediate_transaction(&mut self) -> Result<Transaction<'_>> {
        let begin = match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        self.execute_batch(begin)?;
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }
}

/// An open transaction; reads and writes through it as through [`Conn`].
pub struct Transaction<'c> {
    conn: &'c mut Conn,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a connection that cannot roll back is broken and
            // its next statement says so.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A prepared statement.
pub enum Statement<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(tokio_postgres::Statement, &'c postgres::PgConn),
}

impl Statement<'_> {
    pub fn execute(&mut self, params: &[Value]) -> Result<usize> {
        match self {
            Statement::Sqlite(s) => Ok(s.execute(sqlite::params(params))?),
            Statement::Postgres(s, c) => c.execute(s, params),
        }
    }

    /// Every row, mapped, as rusqlite's `query_map` (collect it).
    pub fn query_map<T>(
        &mut self,
        params: &[Value],
        mut map: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut mapped = Vec::new();
        while let Some(row) = rows.next()? {
            mapped.push(map(row));
        }
        Ok(mapped.into_iter())
    }

    pub fn query_row<T>(
        &mut self,
        params: &[Value],
        map: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => map(row),
            None => Err(Error::NoRows),
        }
    }

    /// The rows one at a time, never all in memory at once.
    pub fn query(&mut self, params: &[Value]) -> Result<Rows<'_>> {
        match self {
            Statement::Sqlite(s) => Ok(Rows::Sqlite(
                s.query(sqlite::params(params))?,
                Row { values: Vec::new() },
            )),
            Statement::Postgres(s, c) => Ok(Rows::Postgres(
                c.query(s, params)?,
                Row { values: Vec::new() },
            )),
        }
    }
}

/// A statement's rows, read as they come.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>, Row),
    Postgres(postgres::PgRows<'s>, Row),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)] // lends each row, as rusqlite's
    pub fn next(&mut self) -> Result<Option<&Row>> {
        match self {
            Rows::Sqlite(rows, current) => match rows.next()? {
                Some(row) => {
                    current.values = sqlite::values(row)?;
                    Ok(Some(current))
                }
                None => Ok(None),
            },
            Rows::Postgres(rows, current) => match rows.next()? {
                Some(values) => {
                    current.values = values;
                    Ok(Some(current))
                }
                None => Ok(None),
            },
        }
    }
}
