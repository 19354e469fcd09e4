//! Shapes already read, by content, for the life of the process.
//!
//! The controller orders every batch it is sent, and a redeploy sends the
//! same routines again: reading a routine's calls means parsing its CREATE,
//! its PL/pgSQL body and every expression in it, which dominated ordering a
//! 1,000-routine batch (issue 15). A shape depends only on what [`key_of`]
//! hashes, so one read for the same content is as good as another. Only
//! shapes that were read without an error are kept; the memo is bounded,
//! and emptied when full (a long-lived controller sees many versions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use pgrollout_shared::routine::Routine;
use sha2::{Digest, Sha256};

use super::read::Shape;

/// Enough for several large projects' worth of routines, a few KB each.
const MAX_ENTRIES: usize = 20_000;

pub(super) type Key = [u8; 32];

fn memo() -> &'static Mutex<HashMap<Key, Arc<Shape>>> {
    static SHAPES: OnceLock<Mutex<HashMap<Key, Arc<Shape>>>> = OnceLock::new();
    SHAPES.get_or_init(Mutex::default)
}

/// Everything `read_shape` reads of a routine.
pub(super) fn key_of(routine: &Routine) -> Key {
    let mut hasher = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(b"pgrollout-shape-v1");
    part(&[u8::from(routine.retire.is_some())]);
    part(routine.identity.schema.as_bytes());
    part(&(routine.search_path.len() as u64).to_be_bytes());
    for schema in &routine.search_path {
        part(schema.as_bytes());
    }
    part(routine.create_sql.as_bytes());
    hasher.finalize().into()
}

/// The shapes known for `keys`, in their order: shared, not copied (a
/// thousand deep copies of calls and names were a millisecond of every
/// redeployed batch's order).
pub(super) fn lookup(keys: &[Key]) -> Vec<Option<Arc<Shape>>> {
    let shapes = memo().lock().unwrap_or_else(PoisonError::into_inner);
    keys.iter().map(|key| shapes.get(key).cloned()).collect()
}

/// Keeps these shapes.
pub(super) fn keep(read: impl IntoIterator<Item = (Key, Arc<Shape>)>) {
    let mut shapes = memo().lock().unwrap_or_else(PoisonError::into_inner);
    for (key, shape) in read {
        if shapes.len() >= MAX_ENTRIES {
            shapes.clear();
        }
        shapes.insert(key, shape);
    }
}
