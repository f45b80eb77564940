//! The one error type of `sculpt-osft`.

/// What can go wrong when configuring or applying OSFT.
#[derive(Debug, thiserror::Error)]
pub enum OsftError {
    /// A rank rule value out of range.
    #[error("rank rule `{key}`: {msg}")]
    BadRankRule {
        /// The config key.
        key: String,
        /// What was expected.
        msg: String,
    },
    /// A retained rank that cannot be applied to a matrix.
    #[error("target `{name}` ({n}×{m}): retained rank {rank} is out of range 1..={max}")]
    RankOutOfRange {
        /// The module.
        name: String,
        /// Rows.
        n: usize,
        /// Columns.
        m: usize,
        /// Requested retained rank.
        rank: usize,
        /// Largest allowed (`min(n, m) − 1`).
        max: usize,
    },
    /// An invalid regular expression in a target list or override.
    #[error("`{key}`: invalid regex {pattern:?}: {msg}")]
    BadRegex {
        /// The config key.
        key: String,
        /// The pattern.
        pattern: String,
        /// The regex crate's message.
        msg: String,
    },
    /// No module matched the target patterns.
    #[error("no linear module matches the OSFT targets {patterns:?}")]
    NoTargets {
        /// The patterns.
        patterns: Vec<String>,
    },
    /// The SVD did not converge or produced non-finite values.
    #[error("SVD of `{name}` failed: {msg}")]
    Svd {
        /// The module.
        name: String,
        /// Why.
        msg: String,
    },
    /// The config asks for a dtype the backend's device cannot compute in.
    #[error("`{key}` needs bf16 tensors, which this backend's device does not support (wgpu: WGSL has no bf16)")]
    UnsupportedDtype {
        /// The config key, with its value.
        key: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, OsftError>;
