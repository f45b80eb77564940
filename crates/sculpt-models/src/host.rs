//! Host-side tensors keyed by their Hugging Face names: the common currency between checkpoint
//! formats (safetensors, GGUF) and the burn modules. All values are f32 on the host; the original
//! dtype of each tensor is remembered so that a save can write it back the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// Storage dtype of a tensor in a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StoreDtype {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
}

impl StoreDtype {
    /// The name `config.json`'s `torch_dtype` uses.
    pub fn torch_name(self) -> &'static str {
        match self {
            StoreDtype::F32 => "float32",
            StoreDtype::F16 => "float16",
            StoreDtype::BF16 => "bfloat16",
        }
    }
}

/// A dense row-major f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Row-major values; `data.len() == shape.iter().product()`.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and values. Panics if they disagree (a bug, not bad input).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "HostTensor: shape {shape:?} vs {} values", data.len());
        HostTensor { shape, data }
    }
}

/// Named host tensors read from (or to be written to) one checkpoint.
///
/// Loading is strict: a module takes every tensor it needs with [`TensorMap::take`], which checks the
/// shape, and [`TensorMap::finish`] reports whatever is left over as unused.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    /// Where the tensors came from (for error messages).
    pub source: PathBuf,
    /// The tensors, by Hugging Face name.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The dtype most tensors had in the file (used as the default save dtype).
    pub dtype: Option<StoreDtype>,
}

impl TensorMap {
    /// An empty map that says it came from `source`.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        TensorMap { source: source.into(), tensors: BTreeMap::new(), dtype: None }
    }

    /// Insert a tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Whether a tensor of this name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Remove and return tensor `name`, checking that its shape is `expected`.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let t = self.tensors.remove(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.source.clone(),
            name: name.to_string(),
            expected: expected.to_vec(),
        })?;
        if t.shape != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.source.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: t.shape,
            });
        }
        Ok(t)
    }

    /// Error if any tensor was not taken.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnusedTensors { path: self.source, names: self.tensors.into_keys().collect() })
        }
    }

    /// The source path.
    pub fn source(&self) -> &Path {
        &self.source
    }
}
