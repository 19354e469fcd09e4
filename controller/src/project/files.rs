//! Reading a project's files: bounded in size, spread over the cores.

use std::path::Path;

use super::error::{ProjectError, SourceLocation};

/// `work` mapped by `each`, spread over the cores for larger inputs;
/// results keep the input's order.
pub(super) fn in_parallel<T: Sync, R: Send>(work: &[T], each: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if workers < 2 || work.len() < 32 {
        return work.iter().map(each).collect();
    }
    let chunk = work.len().div_ceil(workers);
    let each = &each;
    std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(each).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
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
    let mut text = String::with_capacity(usize::try_from(bytes).unwrap_or(0));
    std::io::Read::read_to_string(&mut file, &mut text).map_err(read_error)?;
    Ok(text)
}

/// A read error again, for the file's one load attempt (io errors do not
/// clone; their kind and text are what the operator sees).
pub(super) fn clone_read_error(error: &ProjectError) -> ProjectError {
    match error {
        ProjectError::ReadFile { path, source } => ProjectError::ReadFile {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
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
