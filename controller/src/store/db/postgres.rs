//! The PostgreSQL side of the facade: a small pool of tokio-postgres
//! connections driven from the blocking pool.
//!
//! The store's calls are blocking (they run in `spawn_blocking`, as SQLite's
//! must). Each PostgreSQL call is `Handle::block_on` on a one-worker runtime
//! the pool owns, where the connections' tasks live: it drives their I/O
//! whatever runtime (or none) the caller runs in, and a test's runtime
//! ending cannot strand a connection. Measured against an async store API,
//! the hop costs one thread wake per statement (ARCHITECTURE.md, Store).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::placeholders;
use super::{Error, Result, Value};

/// How many connections one controller keeps to its store: the store's
/// calls are short, and SQLite serves the same load with one.
pub const POOL_SIZE: usize = 4;

/// Where the store is and how to reach it (`[store] url`, `ca_file`).
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    /// PEM roots to verify the server with; none means no TLS unless the
    /// URL's sslmode requires it (then the open is refused, saying why).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why the store's database could not be reached; never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the store URL is not a valid PostgreSQL URL: {0}")]
    Url(String),
    #[error("sslmode=require needs `[store] ca_file` (the PEM roots that sign the server's certificate)")]
    NeedsCa,
    #[error("cannot read the store's CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot start the store's runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error("no answer from the store's database within {0:?}")]
    Timeout(Duration),
}

impl PgTarget {
    /// Parses a `postgres://` URL (or key=value string); the caller keeps the
    /// text out of every message (see `redact_url`).
    pub fn parse(url: &str, ca_file: Option<std::path::PathBuf>) -> Result<Self, ConnectError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                // The driver's parse errors name the option, never its value.
                ConnectError::Url(e.to_string())
            })?;
        if config.get_application_name().is_none() {
            config.application_name("pgrollout-controller");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(PgTarget { config, ca_file })
    }

    /// `user@host:port/dbname`, for messages: what the URL says minus its
    /// password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{}:{}/{}",
            self.config.get_user().unwrap_or(""),
            hosts.join(","),
            port,
            self.config.get_dbname().unwrap_or("")
        )
    }
}

/// A runtime that is shut down without blocking when the last pool using it
/// goes (dropping a runtime inside async code would panic).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The pool: idle connections, and a condvar to wait for one.
pub struct PgPool {
    target: PgTarget,
    runtime: Arc<Runtime>,
    idle: Mutex<Vec<super::Conn>>,
    returned: Condvar,
    /// Connections open, idle or lent out (at most POOL_SIZE).
    open_count: std::sync::atomic::AtomicUsize,
}

impl PgPool {
    /// Connects the first connection now (so a wrong password or a store
    /// that is down fails the open); the others as they are needed.
    pub fn open(target: PgTarget) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pgrollout-store")
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        let pool = PgPool {
            target,
            runtime: Arc::new(Runtime(Some(runtime))),
            idle: Mutex::new(Vec::new()),
            returned: Condvar::new(),
            open_count: std::sync::atomic::AtomicUsize::new(1),
        };
        let first = pool.connect()?;
        pool.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(super::Conn::Postgres(first));
        // The rest are created on demand, up to POOL_SIZE (see `with`).
        Ok(pool)
    }

    /// Where the pool connects (a listening connection goes there too).
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime.0 {
            Some(runtime) => runtime.handle().clone(),
            // Only taken in Drop, when no pool uses it any more.
            None => unreachable!("the store's runtime outlives its pool"),
        }
    }

    fn connect(&self) -> Result<PgConn, ConnectError> {
        let handle = self.handle();
        let target = self.target.clone();
        let timeout = target
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        // On a plain thread: `open` may be called from async code, where
        // blocking on a runtime is not allowed.
        let connecting = handle.clone();
        let client = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    connecting.block_on(async move {
                        tokio::time::timeout(timeout + Duration::from_secs(1), connect(&target))
                            .await
                            .map_err(|_| ConnectError::Timeout(timeout))?
                    })
                })
                .join()
                .unwrap_or(Err(ConnectError::Timeout(timeout)))
        })?;
        Ok(PgConn {
            client,
            handle,
            statements: std::cell::RefCell::new(HashMap::new()),
        })
    }

    /// Runs `work` on a connection of the pool, waiting for one when all
    /// are busy; a connection found closed (the server restarted) is
    /// replaced first.
    pub fn with<R>(&self, work: impl FnOnce(&mut super::Conn) -> Result<R>) -> Result<R> {
        let mut lent = Lent {
            pool: self,
            conn: Some(self.checkout()?),
        };
        match lent.conn.as_mut() {
            Some(conn) => work(conn),
            None => unreachable!("set just above"),
        }
    }

    fn checkout(&self) -> Result<super::Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = idle.pop() {
                drop(idle);
                return match conn {
                    // The server closed it (a restart, a failover): a new
                    // one takes its place, or the place is freed.
                    super::Conn::Postgres(pg) if pg.client.is_closed() => self
                        .reconnect()
                        .map(super::Conn::Postgres)
                        .inspect_err(|_| {
                            self.open_count.fetch_sub(1, Ordering::Relaxed);
                        }),
                    other => Ok(other),
                };
            }
            let out = self.open_count.load(Ordering::Relaxed);
            if out < POOL_SIZE {
                self.open_count.fetch_add(1, Ordering::Relaxed);
                drop(idle);
                return self
                    .reconnect()
                    .map(super::Conn::Postgres)
                    .inspect_err(|_| {
                        self.open_count.fetch_sub(1, Ordering::Relaxed);
                    });
            }
            idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn reconnect(&self) -> Result<PgConn> {
        self.connect().map_err(|error| match error {
            ConnectError::Database(e) => Error::Postgres(e),
            other => Error::Unavailable(other.to_string()),
        })
    }
}

/// A connection lent out by [`PgPool::with`]: back to the pool when the
/// work ends, or, when the work panicked mid-statement, closed and its place
/// freed so the pool never shrinks.
struct Lent<'p> {
    pool: &'p PgPool,
    conn: Option<super::Conn>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.pool.open_count.fetch_sub(1, Ordering::Relaxed);
        } else if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
        self.pool.returned.notify_one();
    }
}

async fn connect(target: &PgTarget) -> Result<Client, ConnectError> {
    use tokio_postgres::config::SslMode;
    let mode = target.config.get_ssl_mode();
    match (&target.ca_file, mode) {
        (None, SslMode::Require) => Err(ConnectError::NeedsCa),
        (Some(ca), mode) if mode != SslMode::Disable => {
            let tls = tls_config(ca)?;
            let (client, connection) = target
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %error, "store connection ended");
                }
            });
            Ok(client)
        }
        _ => {
            let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %error, "store connection ended");
                }
            });
            Ok(client)
        }
    }
}

/// A connection of its own that `LISTEN`s on `channel` (issue 18: a job
/// waiting for the controller that holds its agent's stream): each
/// notification's payload arrives on the receiver, which closes when the
/// connection ends (the caller polls meanwhile and listens again). Runs on
/// the caller's runtime: it is one long-lived async task, not a store call.
pub async fn listen(
    target: &PgTarget,
    channel: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, ConnectError> {
    use tokio_postgres::config::SslMode;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let listen = format!("LISTEN {channel}");
    match (&target.ca_file, target.config.get_ssl_mode()) {
        (None, SslMode::Require) => return Err(ConnectError::NeedsCa),
        (Some(ca), mode) if mode != SslMode::Disable => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca)?);
            let (client, connection) = target.config.connect(tls).await?;
            tokio::spawn(forward_notifications(connection, sender));
            client.batch_execute(&listen).await?;
            tokio::spawn(hold_until_closed(client));
        }
        _ => {
            let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(forward_notifications(connection, sender));
            client.batch_execute(&listen).await?;
            tokio::spawn(hold_until_closed(client));
        }
    }
    Ok(receiver)
}

/// Drives a listening connection, passing each notification's payload on.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    sender: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                if sender.send(note.payload().to_owned()).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!(error = %error, "store listening connection ended");
                return;
            }
            None => return,
        }
    }
}

/// Keeps a listening connection's client alive as long as its connection.
async fn hold_until_closed(client: Client) {
    while !client.is_closed() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn tls_config(ca: &std::path::Path) -> Result<rustls::ClientConfig, ConnectError> {
    let ca_error = |reason: String| ConnectError::Ca {
        path: ca.display().to_string(),
        reason,
    };
    let certs = pgrollout_shared::tls::load_certs(ca).map_err(|e| ca_error(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One connection and its prepared statements.
pub struct PgConn {
    client: Client,
    handle: tokio::runtime::Handle,
    /// Prepared once per connection, by the store's SQL text.
    statements: std::cell::RefCell<HashMap<String, tokio_postgres::Statement>>,
}

/// A query's rows. Read whole: a second statement on the connection while
/// rows are still streaming would wait behind them (ARCHITECTURE.md).
pub struct PgRows<'c> {
    rows: std::vec::IntoIter<tokio_postgres::Row>,
    _conn: std::marker::PhantomData<&'c PgConn>,
}

impl PgRows<'_> {
    pub fn next(&mut self) -> Result<Option<Vec<Value>>> {
        self.rows.next().map(|row| values(&row)).transpose()
    }
}

impl PgConn {
    pub(super) fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let text = placeholders::to_postgres(sql);
        let statement = self.handle.block_on(self.client.prepare(&text))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[Value],
    ) -> Result<usize> {
        let bound = bind(statement.params(), params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as _).collect();
        let changed = self
            .handle
            .block_on(self.client.execute(statement, &refs))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(super) fn query(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[Value],
    ) -> Result<PgRows<'_>> {
        let bound = bind(statement.params(), params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as _).collect();
        let rows = self.handle.block_on(self.client.query(statement, &refs))?;
        Ok(PgRows {
            rows: rows.into_iter(),
            _conn: std::marker::PhantomData,
        })
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.handle.block_on(self.client.batch_execute(sql))?)
    }
}

type Bound = Box<dyn ToSql + Sync + Send>;

/// Each value as the type PostgreSQL inferred for its parameter: a store
/// integer binds to BIGINT, INTEGER or BOOLEAN columns alike.
fn bind(types: &[Type], values: &[Value]) -> Result<Vec<Bound>> {
    let mut bound: Vec<Bound> = Vec::with_capacity(types.len());
    for (index, ty) in types.iter().enumerate() {
        let value = values.get(index).unwrap_or(&Value::Null);
        let misfit = || Error::Bind {
            index: index + 1,
            value: value.kind(),
            ty: ty.name().to_owned(),
        };
        let as_i64 = match value {
            Value::Int(n) => Some(*n),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        };
        let one: Bound = match (value, ty) {
            (Value::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
            (Value::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
            (Value::Null, t) if *t == Type::INT2 => Box::new(None::<i16>),
            (Value::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
            (Value::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
            (Value::Null, t) if *t == Type::TEXT || *t == Type::VARCHAR => Box::new(None::<String>),
            (Value::Null, _) => Box::new(None::<i64>),
            (_, t) if *t == Type::INT8 => Box::new(as_i64.ok_or_else(misfit)?),
            (_, t) if *t == Type::INT4 => Box::new(
                as_i64
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(misfit)?,
            ),
            (_, t) if *t == Type::INT2 => Box::new(
                as_i64
                    .and_then(|n| i16::try_from(n).ok())
                    .ok_or_else(misfit)?,
            ),
            (_, t) if *t == Type::BOOL => Box::new(as_i64.map(|n| n != 0).ok_or_else(misfit)?),
            (Value::Real(r), t) if *t == Type::FLOAT8 => Box::new(*r),
            (Value::Int(n), t) if *t == Type::FLOAT8 => Box::new(*n as f64),
            (Value::Text(s), t) if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME => {
                Box::new(s.clone())
            }
            (Value::Bytes(b), t) if *t == Type::BYTEA => Box::new(b.clone()),
            _ => return Err(misfit()),
        };
        bound.push(one);
    }
    Ok(bound)
}

/// A row's values; integers of every width read as one.
fn values(row: &tokio_postgres::Row) -> Result<Vec<Value>> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(index)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(index)?
                .map(|n| Value::Int(n.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(index)?
                .map(|n| Value::Int(n.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(index)?.map(Value::Bool)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(index)?.map(Value::Bytes)
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(index)?.map(Value::Real)
        } else if *ty == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(index)?
                .map(|r| Value::Real(r.into()))
        } else if *ty == Type::TEXT
            || *ty == Type::VARCHAR
            || *ty == Type::NAME
            || *ty == Type::BPCHAR
        {
            row.try_get::<_, Option<String>>(index)?.map(Value::Text)
        } else if *ty == Type::VOID {
            // A function run for its effect (`pg_advisory_xact_lock`).
            None
        } else {
            return Err(Error::Column {
                column: index,
                ty: ty.name().to_owned(),
            });
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(values)
}
