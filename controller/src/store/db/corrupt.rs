//! A stored message that no longer decodes (issue 14): the facade carries it
//! out of a row closure as its own error, the store reports it as damage.

/// Which stored message of which row did not decode.
#[derive(Debug, thiserror::Error)]
#[error("the {what} of {row} does not decode")]
pub struct CorruptBlob {
    /// The message, as an operator would name it (`plan`, `job result`…).
    pub(in crate::store) what: &'static str,
    /// The row, by its key (`request r-…`, `rollout …`, `watch …`).
    pub(in crate::store) row: String,
    #[source]
    pub(in crate::store) source: BlobError,
}

/// Why a stored message is unusable.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    /// It decodes, but no longer passes the checks it passed when stored.
    #[error("it decodes but is not valid")]
    Invalid(#[from] pgrollout_shared::routine::InvalidField),
}
