//! The store's conformance suite (issue 18): every test written with
//! [`store_test!`] runs twice, once on an embedded SQLite store and once on
//! a PostgreSQL store in a real cluster of its own (`PgCluster`, from the
//! end-to-end harness), as `<test>::sqlite` and `<test>::postgres`. Nothing
//! is skipped: a machine without PostgreSQL fails the `postgres` half.
//!
//! The model is quickwit's metastore tests: one body, one macro, each backend
//! a test of its own, so a failure names the backend it failed on.

mod agent_streams;
mod audit_chain;
mod controllers;
mod fences;
mod jobs;
mod leases;
mod requests;
mod side_deliveries;
mod singletons;

use std::path::PathBuf;

use super::db::postgres::PgTarget;
use super::{Store, StoreError};

/// A store under test and what keeps it alive (its directory, its cluster).
pub struct Backend {
    pub store: Store,
    dir: tempfile::TempDir,
    cluster: Option<pgrollout_tests::PgCluster>,
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.sqlite")).expect("open sqlite store");
        Backend {
            store,
            dir,
            cluster: None,
        }
    }

    pub async fn postgres() -> Backend {
        let dir = tempfile::tempdir().expect("dir");
        let cluster = pgrollout_tests::PgCluster::start("store")
            .await
            .expect("a PostgreSQL cluster for the store");
        let store =
            open_postgres(&cluster, &dir.path().join("audit-key")).expect("open postgres store");
        Backend {
            store,
            dir,
            cluster: Some(cluster),
        }
    }

    /// A second store on the same database, as a restarted (or a second)
    /// controller opens it.
    pub fn reopen(&self) -> Store {
        match &self.cluster {
            None => Store::open(&self.dir.path().join("s.sqlite")).expect("reopen sqlite store"),
            Some(cluster) => open_postgres(cluster, &self.dir.path().join("audit-key"))
                .expect("reopen postgres store"),
        }
    }

    /// The PostgreSQL cluster, on the `postgres` half.
    #[allow(dead_code)] // only some tests reach into the database itself
    pub fn cluster(&self) -> Option<&pgrollout_tests::PgCluster> {
        self.cluster.as_ref()
    }
}

fn open_postgres(
    cluster: &pgrollout_tests::PgCluster,
    key: &std::path::Path,
) -> Result<Store, StoreError> {
    let target = PgTarget {
        config: cluster.config(),
        ca_file: None::<PathBuf>,
    };
    Store::open_postgres(target, key)
}

/// `store_test!(name, |store| { … })` or `|store, backend|`: the body runs
/// as `name::sqlite` and as `name::postgres`.
macro_rules! store_test {
    ($(#[$meta:meta])* $name:ident, |$store:ident| $body:block) => {
        $crate::store::conformance::store_test!($(#[$meta])* $name, |$store, _backend| $body);
    };
    ($(#[$meta:meta])* $name:ident, |$store:ident, $backend:ident| $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $backend = $crate::store::conformance::Backend::sqlite().await;
                #[allow(unused_variables)]
                let $store = $backend.store.clone();
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let $backend = $crate::store::conformance::Backend::postgres().await;
                #[allow(unused_variables)]
                let $store = $backend.store.clone();
                $body
            }
        }
    };
}
pub(crate) use store_test;
