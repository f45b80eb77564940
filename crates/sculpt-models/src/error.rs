//! The one error type of `sculpt-models`: every variant names the file, key or tensor at fault.

use std::path::PathBuf;

/// Everything that can go wrong while reading, building or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` (or GGUF metadata) is not what a model of this family needs.
    #[error("{path}: key `{key}`: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What was expected and what was found.
        msg: String,
    },
    /// A file is malformed (not valid JSON, safetensors, GGUF…).
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The checkpoint lacks a tensor the model needs.
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// The checkpoint (folder or file).
        path: PathBuf,
        /// The tensor name, in Hugging Face naming.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors that the model does not use.
    #[error("{path}: {} unused tensor(s) the model does not know: {}", names.len(), names.join(", "))]
    UnusedTensors {
        /// The checkpoint.
        path: PathBuf,
        /// Their names.
        names: Vec<String>,
    },
    /// A tensor of a data type sculpt cannot read.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The dtype as the file spells it.
        dtype: String,
    },
    /// The tokenizer could not be loaded or used.
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer {
        /// The tokenizer file (or the GGUF it came from).
        path: PathBuf,
        /// The tokenizers crate's message.
        msg: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// Wrap an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
    /// A format error on `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::Format { path: path.into(), msg: msg.into() }
    }
    /// A config error on `key` of `path`.
    pub fn config(path: impl Into<PathBuf>, key: impl Into<String>, msg: impl Into<String>) -> Self {
        ModelError::Config { path: path.into(), key: key.into(), msg: msg.into() }
    }
}
