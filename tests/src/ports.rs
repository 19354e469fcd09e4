//! Free TCP ports on 127.0.0.1.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Ports already handed out by this test binary; tests run in parallel threads, and the kernel may give the
/// same just-released port to two of them.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port, releases it.
///
/// Another process can still take it before the caller binds it; [`PgCluster`](crate::PgCluster) retries
/// with a new port when that happens. Servers under test should rather be handed a bound listener.
///
/// # Panics
///
/// When 127.0.0.1 cannot be bound at all: the machine cannot run these tests then.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("binding 127.0.0.1:0 must work for the integration tests");
        if handed_out.insert(port) {
            return port;
        }
    }
}
