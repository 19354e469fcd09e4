//! Reading a project's files: bounded in size, spread over the cores.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::{ProjectError, SourceLocation};

/// `work` mapped by `each`, spread over the cores for larger inputs;
/// results keep the input's order. Every worker (the calling thread too)
/// takes the next item as soon as it is done with one: items differ in cost
/// (a file of four overloads against a file of one), and fixed equal shares
/// left one core idle for the last third of a cold parse (issue 15 item 9).
pub(crate) fn in_parallel<T: Sync, R: Send>(work: &[T], each: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if workers < 2 || work.len() < 32 {
        return work.iter().map(each).collect();
    }
    let next = AtomicUsize::new(0);
    let take_turns = || {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = work.get(index) else {
                return done;
            };
            done.push((index, each(item)));
        }
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(take_turns)).collect();
        let mut done = take_turns();
        for helper in helpers {
            done.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        done
    });
    done.sort_unstable_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Largest source file the loader reads: a routine's SQL beyond this is far
/// more likely a mistake (a data dump, a generated blob) than a routine.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

pub(super) fn read(path: &Path) -> Result<String, ProjectError> {
    let read_error = |source| ProjectError::ReadFile {
        path: path.to_owned(),
        source,
    };
    // The open file's size, not the path's: one lookup per file, and the
    // size is the one of the file read.
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let bytes = file.metadata().map_err(read_error)?.len();
    if bytes > MAX_FILE_BYTES {
        return Err(ProjectError::FileTooLarge {
            path: path.to_owned(),
            bytes,
            limit: MAX_FILE_BYTES,
        });
    }
    let mut raw = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
    std::io::Read::read_to_end(&mut file, &mut raw).map_err(read_error)?;
    let mut text = String::from_utf8(raw).map_err(|error| {
        // Where the first byte that is not UTF-8 is, by line and column.
        let valid = error.utf8_error().valid_up_to();
        let raw = error.as_bytes();
        let before = std::str::from_utf8(&raw[..valid]).unwrap_or_default();
        ProjectError::NotUtf8 {
            at: SourceLocation::at_offset(&path.display().to_string(), before, valid),
            byte: raw[valid],
        }
    })?;
    skip_byte_order_mark(&mut text);
    Ok(text)
}

/// Drops a UTF-8 byte order mark, as Windows editors save files: psql skips
/// it, and so does every reader here (the parse, the cache, the plan's SQL).
pub(super) fn skip_byte_order_mark(text: &mut String) {
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
}

/// A read error again, for the file's one load attempt (io errors do not
/// clone; their kind and text are what the operator sees).
pub(super) fn clone_read_error(error: &ProjectError) -> ProjectError {
    match error {
        ProjectError::ReadFile { path, source } => ProjectError::ReadFile {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        ProjectError::NotUtf8 { at, byte } => ProjectError::NotUtf8 {
            at: at.clone(),
            byte: *byte,
        },
        ProjectError::FileTooLarge { path, bytes, limit } => ProjectError::FileTooLarge {
            path: path.clone(),
            bytes: *bytes,
            limit: *limit,
        },
        other => ProjectError::Syntax {
            at: SourceLocation::file("?"),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::in_parallel;

    #[test]
    fn every_item_is_mapped_once_and_the_order_is_kept() {
        // Uneven costs, as files are: the workers take turns, and the
        // results still come back in the input's order.
        let work: Vec<u64> = (0..500).collect();
        let mapped = in_parallel(&work, |&n| {
            let spin = if n % 7 == 0 { 20_000 } else { 10 };
            (0..spin).fold(n, |acc, i| acc.wrapping_add(i % 3))
                - (0..spin).map(|i| i % 3).sum::<u64>()
        });
        assert_eq!(mapped, work);
        let few: Vec<u64> = (0..5).collect();
        assert_eq!(in_parallel(&few, |&n| n * 2), vec![0, 2, 4, 6, 8]);
    }
}
