//! T5 and LLaMA as plain burn modules, read from and written to Hugging Face folders
//! (`config.json`, safetensors, `tokenizer.json`) and imported from GGUF, with KV-cached greedy
//! generation. Parameter names follow the Hugging Face checkpoints; weights are `[out, in]`.

pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod host;
pub mod layers;
pub mod llama;
pub mod loss;
pub mod pretrained;
pub mod safetensors_io;
pub mod t5;

pub use error::{ModelError, Result};
pub use host::{HostTensor, StoreDtype, TensorMap};
pub use layers::{NamedParams, ParamRef};
pub use pretrained::{Model, ModelFiles, Pretrained};
