//! Opening a connection to a target with the zone's credentials, over TLS
//! when its `sslmode` asks (see `tls`), and capturing the NOTICE/WARNING
//! messages a smoke call raises.

use super::notices::NoticeInbox;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::tls::TlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::server_version::{ServerVersion, UnsupportedVersion};
use super::tls;
use crate::config::{TargetConfig, Timeouts};
use crate::secrets::resolve_password;
use pgrollout_shared::errors::error_chain;

/// A live connection plus the notices the server sent on it.
pub struct TargetConnection {
    pub client: Client,
    /// The server's major version, checked to be supported at connect.
    pub version: ServerVersion,
    notices: std::sync::Arc<NoticeInbox>,
    /// The id of the sealed transaction open on it (`jobs::context::txn_seal`).
    sealed_xid: std::sync::Mutex<Option<String>>,
    /// Why project SQL run on it was found to have ended or left that
    /// transaction, once a check after the calls found so.
    escaped: std::sync::Mutex<Option<String>>,
    /// Whether this session took the per-target deploy lock: every COMMIT
    /// on it then first checks the lock is still held (`jobs::context::fence`).
    holds_deploy_lock: std::sync::atomic::AtomicBool,
    /// Whether the notices of the last take overflowed the inbox.
    notices_overflowed: bool,
    /// Whether the seal's table was made ahead for the whole session
    /// (`txn_seal::prepare_table`): a sealed `BEGIN` then only inserts its row.
    seal_table: std::sync::atomic::AtomicBool,
    /// Plan routines' lookup texts under the agent's path (`signatures.rs`).
    signatures: std::sync::Mutex<
        std::collections::HashMap<pgrollout_shared::routine::RoutineIdentity, String>,
    >,
}

impl TargetConnection {
    /// The lookup texts resolved on this connection so far.
    pub fn signatures(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<pgrollout_shared::routine::RoutineIdentity, String>,
    > {
        self.signatures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the sealed transaction just opened (`None`: none).
    pub fn set_sealed_xid(&self, xid: Option<String>) {
        if xid.is_some() {
            // A new transaction: nothing has escaped it yet.
            *self.escaped.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        *self.sealed_xid.lock().unwrap_or_else(|p| p.into_inner()) = xid;
    }

    /// Records that project SQL ended or left the sealed transaction.
    pub fn set_escaped(&self, why: String) {
        *self.escaped.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Why the sealed transaction was found gone after project SQL ran.
    pub fn escaped(&self) -> Option<String> {
        self.escaped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the seal's table exists for the rest of the session.
    pub fn set_seal_table(&self) {
        self.seal_table
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the seal's table exists for the whole session.
    pub fn has_seal_table(&self) -> bool {
        self.seal_table.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records that this session holds the deploy lock.
    pub fn set_holds_deploy_lock(&self) {
        self.holds_deploy_lock
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this session took the deploy lock.
    pub fn holds_deploy_lock(&self) -> bool {
        self.holds_deploy_lock
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the statement(s) before the last [`TargetConnection::take_notices`]
    /// sent more notices than the agent keeps (and were cancelled for it).
    pub fn notices_overflowed(&self) -> bool {
        self.notices_overflowed
    }

    /// The id of the last sealed transaction opened on this connection.
    pub fn sealed_xid(&self) -> Option<String> {
        self.sealed_xid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notices received since the last call. The connection task forwards a
    /// notice before it completes the query that raised it, so after a query
    /// has returned, its notices are already here.
    ///
    /// Bounded (`notices.rs`): when a statement sent more than the inbox
    /// keeps, it was cancelled and [`TargetConnection::notices_overflowed`]
    /// says so until the next take.
    pub fn take_notices(&mut self) -> Vec<DbError> {
        let (notices, overflowed) = self.notices.take();
        self.notices_overflowed = overflowed;
        notices
    }
}

/// Asks the server to cancel whatever `token`'s connection is running (a
/// statement stuck on a lock, say), over the target's TLS settings. Used
/// before a job's work is dropped at its deadline or fence: a dropped
/// client cannot close a connection that still awaits a reply, so without
/// this the backend would wait on, holding its locks.
pub async fn cancel_query(target: &TargetConfig, token: &tokio_postgres::CancelToken) {
    let cancelled = match tls::client_config(target).await {
        Ok(None) => token.cancel_query(NoTls).await,
        Ok(Some(tls_config)) => token.cancel_query(MakeRustlsConnect::new(tls_config)).await,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "cannot cancel a query: TLS settings");
            return;
        }
    };
    if let Err(error) = cancelled {
        tracing::warn!(error = %error_chain(&error), "cancelling a query failed");
    }
}

/// Why a target could not be reached. The message names the target, never
/// the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Password(#[from] crate::secrets::PasswordError),
    #[error("cannot connect to target {target} ({user}@{host}:{port}/{dbname}): {reason}")]
    Database {
        target: String,
        user: String,
        host: String,
        port: u16,
        dbname: String,
        reason: String,
        /// The server's SQLSTATE when it refused (28P01, 3D000, …): kept
        /// typed for the span, not read back out of `reason`.
        code: Option<SqlState>,
    },
    #[error(
        "target {target} ({host}:{port}/{dbname}) is read-only: {why}. pgrollout changes only a \
         writable primary: point the target's host at the primary (after a failover, the old \
         address may lead to a standby)"
    )]
    ReadOnly {
        target: String,
        host: String,
        port: u16,
        dbname: String,
        why: String,
    },
    #[error("target {target} ({host}:{port}/{dbname}): {source}")]
    Unsupported {
        target: String,
        host: String,
        port: u16,
        dbname: String,
        source: UnsupportedVersion,
    },
}

/// The search path every statement of the agent's own runs under: the
/// catalog, then the session's temporary schema (last, so nothing there can
/// shadow anything). Never `public` or any schema another role may create in:
/// PostgreSQL picks the best-matching overload across the whole path, so a
/// planted `public.unnest(text[])` beats `pg_catalog.unnest(anyarray)` and
/// would run with the agent's privileges (CVE-2018-1058's pattern). It also
/// makes the `regprocedure` texts the ledger records, and the definitions
/// `pg_get_functiondef` writes, name every schema but pg_catalog's, whatever
/// ALTER DATABASE or ALTER ROLE set. A plan's own SQL runs under its declared
/// path (`set_local_search_path_sql`), and is followed by
/// [`RESET_TO_AGENT_SEARCH_PATH`] before the agent's next statement.
pub const AGENT_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Back to [`AGENT_SEARCH_PATH`] (the session's value) for the rest of a
/// transaction, after a plan's SQL ran under a path of its own.
pub const RESET_TO_AGENT_SEARCH_PATH: &str = "SET LOCAL search_path TO DEFAULT";

/// Connects with `application_name = 'pgrollout'` and the configured lock and
/// statement timeouts, so nothing the agent runs can hang without bound; over
/// TLS unless the target's sslmode is `disable`.
pub async fn connect(
    target: &TargetConfig,
    timeouts: &Timeouts,
) -> Result<TargetConnection, ConnectError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.dbname)
        .user(&target.user)
        .application_name("pgrollout")
        .connect_timeout(timeouts.connect)
        .options(format!(
            // search_path: see AGENT_SEARCH_PATH. The connection check is
            // set once the server's version is known (see
            // `finish_connecting`): 13 refuses the whole startup packet over
            // a setting it lacks.
            "-c lock_timeout={} -c statement_timeout={} -c search_path={}",
            timeouts.lock.as_millis(),
            timeouts.statement.as_millis(),
            AGENT_SEARCH_PATH.replace(' ', "")
        ));
    if let Some(password) = resolve_password(target)? {
        config.password(password.expose());
    }
    let tls_config = tls::client_config(target)
        .await
        .map_err(|error| database_error(target, error_chain(&error), None))?;
    match tls_config {
        None => {
            config.ssl_mode(DriverSslMode::Disable);
            let connecting = config.connect(NoTls);
            finish_connecting(target, timeouts, connecting).await
        }
        Some(tls_config) => {
            // Only `prefer` falls back to plaintext when the server offers
            // no TLS; every other mode requires it.
            config.ssl_mode(if target.sslmode == crate::config::SslMode::Prefer {
                DriverSslMode::Prefer
            } else {
                DriverSslMode::Require
            });
            let connecting = config.connect(MakeRustlsConnect::new(tls_config));
            finish_connecting(target, timeouts, connecting).await
        }
    }
}

/// Awaits a connection attempt within the connect timeout, then drives the
/// connection on a task of its own that forwards the server's notices.
async fn finish_connecting<S, T>(
    target: &TargetConfig,
    timeouts: &Timeouts,
    connecting: impl std::future::Future<
        Output = Result<(Client, Connection<S, T>), tokio_postgres::Error>,
    >,
) -> Result<TargetConnection, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TlsStream + Unpin + Send + 'static,
{
    let (client, mut connection) = match tokio::time::timeout(timeouts.connect, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => {
            let reason = tls::describe_handshake_failure(&error, target)
                .unwrap_or_else(|| super::describe_error(&error, None));
            return Err(database_error(target, reason, error.code()));
        }
        Err(_) => {
            return Err(database_error(
                target,
                format!("no answer within {:?} (connect timeout)", timeouts.connect),
                None,
            ))
        }
    };
    let version =
        ServerVersion::from_reported(connection.parameter("server_version")).map_err(|source| {
            ConnectError::Unsupported {
                target: target.name.clone(),
                host: target.host.clone(),
                port: target.port,
                dbname: target.dbname.clone(),
                source,
            }
        })?;
    // PostgreSQL 14+ reports both at connect (ParameterStatus); 13 is asked.
    let reported_read_only = read_only_reason(
        connection.parameter("in_hot_standby"),
        connection.parameter("default_transaction_read_only"),
    );
    let reports_standby = connection.parameter("in_hot_standby").is_some();
    let notices = std::sync::Arc::new(NoticeInbox::default());
    let inbox = notices.clone();
    let cancel = client.cancel_token();
    let cancel_target = target.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notice(notice)) => {
                    if inbox.push(notice) {
                        // A flood: stop the statement sending it (the
                        // smoke check reports why).
                        let (target, token) = (cancel_target.clone(), cancel.clone());
                        tokio::spawn(async move { cancel_query(&target, &token).await });
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "target connection ended");
                    break;
                }
            }
        }
    });
    let read_only = match reported_read_only {
        Some(why) => Some(why),
        None if !reports_standby => asked_read_only(&client).await.map_err(|error| {
            database_error(target, super::describe_error(&error, None), error.code())
        })?,
        None => None,
    };
    if let Some(why) = read_only {
        return Err(ConnectError::ReadOnly {
            target: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
            dbname: target.dbname.clone(),
            why,
        });
    }
    if version.has_connection_check() {
        // Lets a backend whose agent died (kill -9, fenced) notice within a
        // second even while it waits on a lock, so its transaction rolls back
        // and its advisory lock is freed. 13 has no such check: see
        // `server_version` for what that costs there.
        client
            .batch_execute("SET client_connection_check_interval = 1000")
            .await
            .map_err(|error| {
                database_error(target, super::describe_error(&error, None), error.code())
            })?;
    }
    upgrade_ledger_once(target, &client).await?;
    Ok(TargetConnection {
        client,
        version,
        notices,
        sealed_xid: Default::default(),
        escaped: Default::default(),
        holds_deploy_lock: Default::default(),
        notices_overflowed: false,
        seal_table: std::sync::atomic::AtomicBool::new(false),
        signatures: Default::default(),
    })
}

/// The targets whose ledger this process has seen in the qualified form.
static LEDGERS_QUALIFIED: std::sync::Mutex<Vec<(String, u16, String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// On the first connection to each target: rewrites a ledger an older agent
/// wrote (`super::ledger::qualify_legacy_identities`), so no job reads it in
/// the old form. Fails the connection if that is not possible: every job
/// after it would match identities wrongly.
async fn upgrade_ledger_once(target: &TargetConfig, client: &Client) -> Result<(), ConnectError> {
    let key = (
        target.host.clone(),
        target.port,
        target.dbname.clone(),
        target.ledger_schema.clone(),
    );
    let seen = |ledgers: &Vec<_>| ledgers.contains(&key);
    if seen(&LEDGERS_QUALIFIED.lock().expect("not poisoned")) {
        return Ok(());
    }
    super::ledger::qualify_legacy_identities(client, &target.ledger_schema)
        .await
        .map_err(|error| {
            database_error(
                target,
                format!(
                    "the ledger {}.ledger, written by an older agent, could not be brought to \
                     schema-qualified identities: {}",
                    target.ledger_schema,
                    super::describe_error(&error, None)
                ),
                error.code(),
            )
        })?;
    let mut ledgers = LEDGERS_QUALIFIED.lock().expect("not poisoned");
    if !seen(&ledgers) {
        ledgers.push(key);
    }
    Ok(())
}

/// Why a server that reported these settings refuses every change, if it does.
fn read_only_reason(
    in_hot_standby: Option<&str>,
    default_read_only: Option<&str>,
) -> Option<String> {
    if in_hot_standby == Some("on") {
        return Some("the server is a standby in recovery (in_hot_standby = on)".into());
    }
    if default_read_only == Some("on") {
        return Some(
            "default_transaction_read_only = on for this database or user (a DBA's freeze?)".into(),
        );
    }
    None
}

/// [`read_only_reason`] for a server that does not report it (13).
async fn asked_read_only(client: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_is_in_recovery()::text, \
                    pg_catalog.current_setting('default_transaction_read_only')",
            &[],
        )
        .await?;
    let in_recovery: String = row.get(0);
    let default_read_only: String = row.get(1);
    Ok(read_only_reason(
        Some(if in_recovery == "true" { "on" } else { "off" }),
        Some(default_read_only.as_str()),
    ))
}

fn database_error(target: &TargetConfig, reason: String, code: Option<&SqlState>) -> ConnectError {
    ConnectError::Database {
        target: target.name.clone(),
        user: target.user.clone(),
        host: target.host.clone(),
        port: target.port,
        dbname: target.dbname.clone(),
        reason,
        code: code.cloned(),
    }
}

impl ConnectError {
    /// The server's SQLSTATE, when the server refused the connection.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match self {
            ConnectError::Database { code, .. } => code.as_ref(),
            ConnectError::Password(_)
            | ConnectError::Unsupported { .. }
            | ConnectError::ReadOnly { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_only_reason;

    #[test]
    fn a_standby_or_a_frozen_database_is_read_only_and_says_which() {
        let standby = read_only_reason(Some("on"), Some("off")).expect("a standby");
        assert!(standby.contains("standby"), "{standby}");
        let frozen = read_only_reason(Some("off"), Some("on")).expect("frozen");
        assert!(frozen.contains("default_transaction_read_only"), "{frozen}");
        assert_eq!(read_only_reason(Some("off"), Some("off")), None);
        // 13 reports neither: the caller asks the server instead.
        assert_eq!(read_only_reason(None, None), None);
    }
}
