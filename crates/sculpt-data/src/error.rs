//! The one error type of `sculpt-data`: every variant names the file (and line).

use std::path::PathBuf;

/// What can be wrong with a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A malformed line.
    #[error("{path}:{line}: {msg}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected.
        msg: String,
    },
    /// The file holds no usable example.
    #[error("{path}: no examples")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DataError>;
