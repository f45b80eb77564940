//! Helpers shared by sculpt's end-to-end tests and benches: fixture paths, reading reference
//! tensors written by the Python fixture scripts, and tolerance checks.

use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/tiny/<name>`.
pub fn tiny_fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/tiny").join(name)
}

/// A reference tensor: shape and values (ints widened to f64 for uniformity).
#[derive(Debug, Clone)]
pub struct RefTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f64>,
}

impl RefTensor {
    /// Values as f32.
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }
    /// Values as token ids, one row per leading index of a 2-D tensor.
    pub fn rows_u32(&self) -> Vec<Vec<u32>> {
        assert_eq!(self.shape.len(), 2, "rows_u32 needs a 2-D tensor");
        self.data.chunks(self.shape[1]).map(|r| r.iter().map(|&x| x as u32).collect()).collect()
    }
    /// Values as i64 rows.
    pub fn rows_i64(&self) -> Vec<Vec<i64>> {
        assert_eq!(self.shape.len(), 2, "rows_i64 needs a 2-D tensor");
        self.data.chunks(self.shape[1]).map(|r| r.iter().map(|&x| x as i64).collect()).collect()
    }
}

/// All tensors of a safetensors file (f32 and i64 supported).
pub fn read_reference(path: &Path) -> std::collections::BTreeMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let raw = v.data();
            let data: Vec<f64> = match v.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                Dtype::I64 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                other => panic!("{}: tensor {name} has unsupported dtype {other:?}", path.display()),
            };
            (name, RefTensor { shape: v.shape().to_vec(), data })
        })
        .collect()
}

/// Largest absolute difference; panics on a length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `max|a − b| / max|b|` (relative to the reference's scale; 0/0 counts as 0).
pub fn max_rel_diff(a: &[f32], reference: &[f32]) -> f32 {
    let scale = reference.iter().map(|x| x.abs()).fold(0.0, f32::max);
    let d = max_abs_diff(a, reference);
    if scale == 0.0 {
        d
    } else {
        d / scale
    }
}

/// The SmolLM2-135M-Instruct GGUF if it is on this machine: `$SCULPT_SMOLLM2_GGUF`, else
/// `<target dir>/models/SmolLM2-135M-Instruct.Q4_1.gguf` (where `cargo xtask fetch-smollm2` puts it).
/// `None` (and a message on stderr saying how to get it) otherwise.
pub fn smollm2_gguf() -> Option<PathBuf> {
    const NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let mut candidates = vec![];
    if let Some(p) = std::env::var_os("SCULPT_SMOLLM2_GGUF") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("models").join(NAME));
    }
    candidates.push(repo_root().join("target/models").join(NAME));
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    if found.is_none() {
        eprintln!("SKIP: SmolLM2 GGUF not found (looked at {candidates:?}); run `cargo xtask fetch-smollm2` or set SCULPT_SMOLLM2_GGUF");
    }
    found
}

/// `--name value` from the command line of a bench binary, or `default`.
pub fn bench_arg(name: &str, default: &str) -> String {
    let a: Vec<String> = std::env::args().collect();
    a.windows(2).find(|w| w[0] == name).map(|w| w[1].clone()).unwrap_or_else(|| default.to_string())
}

/// Reproducible pseudo-random token ids, `batches × rows × cols`, below `vocab` (a fixed LCG, so
/// every bench iteration sees different but repeatable inputs).
pub fn random_ids(batches: usize, rows: usize, cols: usize, vocab: u64, seed: u64) -> Vec<Vec<Vec<u32>>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % vocab) as u32
    };
    (0..batches).map(|_| (0..rows).map(|_| (0..cols).map(|_| next()).collect()).collect()).collect()
}
