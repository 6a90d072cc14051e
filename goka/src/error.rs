//! The error types of each layer, and [`Error`], which any of them converts into.
//!
//! Each layer has its own `thiserror` enum whose messages name what failed (topic, partition,
//! offset, key, path where they apply). Code that spans layers returns [`Error`].

pub use crate::codec::CodecError;
pub use crate::storage::StorageError;

/// Any error of the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Encoding or decoding a value failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Local storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
