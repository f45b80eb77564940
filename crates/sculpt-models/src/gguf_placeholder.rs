//! placeholder
#![allow(missing_docs)]
pub struct GgufModel { pub config: serde_json::Value, pub tensors: crate::host::TensorMap, pub tokenizer_json: String, pub tokenizer: tokenizers::Tokenizer }
pub fn read_gguf(path: &std::path::Path) -> crate::error::Result<GgufModel> { Err(crate::error::ModelError::format(path, "gguf not yet")) }
