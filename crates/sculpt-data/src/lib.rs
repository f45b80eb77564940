//! Task data for sculpt: reading dataset files into token examples and batching them.

pub mod batch;
pub mod error;
pub mod pretokenized;
pub mod score;
pub mod text;

pub use batch::{Batch, Batcher};
pub use error::{DataError, Result};
pub use pretokenized::{longest_pretokenized, read_pretokenized, Example};
pub use score::Metric;
pub use text::{exact_match, normalize_answer, Split, TextExample};
