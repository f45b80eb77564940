//! Run configs (`sculpt train --config run.toml`): parsed strictly (unknown keys are errors that
//! name the key), then checked. Relative paths are resolved against the config file's folder.

use std::path::{Path, PathBuf};

use sculpt_osft::OsftConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Which fine-tuning method runs on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Orthogonal subspace fine-tuning.
    #[default]
    Osft,
    /// Plain sequential full fine-tuning of every parameter.
    Seqft,
}

/// Optimizer choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Decoupled weight decay Adam.
    #[default]
    Adamw,
    /// Plain SGD (no momentum).
    Sgd,
}

/// Dataset file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `{"input_ids": [...], "labels": [...]}` per line.
    #[default]
    Pretokenized,
}

/// One task of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Task name (used in logs and outputs).
    pub name: String,
    /// Training data file.
    pub data: PathBuf,
    /// Its format.
    #[serde(default)]
    pub format: DataFormat,
}

/// The `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Examples per batch.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Passes over each task's data.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Upper bound on steps per task.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Learning rate (constant).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Optimizer.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// AdamW betas.
    #[serde(default = "d_betas")]
    pub betas: [f64; 2],
    /// AdamW epsilon.
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Decoupled weight decay, applied to the trainable low factors only (OSFT).
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (after projection); 0 turns it off.
    #[serde(default = "d_clip")]
    pub max_grad_norm: f64,
    /// Shuffle each epoch with the run seed; off = file order.
    #[serde(default)]
    pub shuffle: bool,
    /// Recompute memory-bound activations in the backward pass instead of keeping them
    /// (burn's balanced checkpointing strategy, applied to every block).
    #[serde(default)]
    pub activation_checkpointing: bool,
}

fn d_batch() -> usize {
    8
}
fn d_epochs() -> usize {
    1
}
fn d_lr() -> f64 {
    1e-5
}
fn d_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn d_eps() -> f64 {
    1e-8
}
fn d_clip() -> f64 {
    1.0
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            batch_size: d_batch(),
            epochs: d_epochs(),
            max_steps: None,
            lr: d_lr(),
            optimizer: OptimizerKind::Adamw,
            betas: d_betas(),
            eps: d_eps(),
            weight_decay: 0.0,
            max_grad_norm: d_clip(),
            shuffle: false,
            activation_checkpointing: false,
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Base model: Hugging Face folder or `.gguf`.
    pub model: PathBuf,
    /// Output folder (created; the final model is written to `<output>/model`).
    pub output: PathBuf,
    /// Fine-tuning method.
    #[serde(default)]
    pub method: Method,
    /// Seed (shuffling).
    #[serde(default)]
    pub seed: u64,
    /// Optimisation settings.
    #[serde(default)]
    pub train: TrainSection,
    /// OSFT settings (used when `method = "osft"`).
    #[serde(default)]
    pub osft: OsftConfig,
    /// The task stream, trained in order.
    pub tasks: Vec<TaskConfig>,
}

impl RunConfig {
    /// Parse TOML text (`path` names the file in errors; relative paths resolve against its folder).
    pub fn from_toml(path: &Path, text: &str) -> Result<Self> {
        let mut cfg: RunConfig = toml::from_str(text).map_err(|e| TrainError::Config { path: path.to_path_buf(), msg: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut cfg.model);
        resolve(&mut cfg.output);
        for t in &mut cfg.tasks {
            resolve(&mut t.data);
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io { path: path.to_path_buf(), source: e })?;
        Self::from_toml(path, &text)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(TrainError::Config { path: path.to_path_buf(), msg });
        let t = &self.train;
        if self.tasks.is_empty() {
            return bad("`tasks`: at least one [[tasks]] entry is needed".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, task) in self.tasks.iter().enumerate() {
            if !names.insert(&task.name) {
                return bad(format!("`tasks[{i}].name`: duplicate task name {:?}", task.name));
            }
        }
        if t.batch_size == 0 {
            return bad("`train.batch_size` must be at least 1".into());
        }
        if t.epochs == 0 {
            return bad("`train.epochs` must be at least 1".into());
        }
        if t.max_steps == Some(0) {
            return bad("`train.max_steps` must be at least 1".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(format!("`train.lr` must be a positive number, got {}", t.lr));
        }
        if !t.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return bad(format!("`train.betas` must lie in [0, 1), got {:?}", t.betas));
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !(t.eps.is_finite() && t.eps > 0.0) || !non_negative(t.weight_decay) || !non_negative(t.max_grad_norm) {
            return bad("`train.eps` must be > 0 and `train.weight_decay`, `train.max_grad_norm` finite and ≥ 0".into());
        }
        self.osft.rank.validate("osft.rank").map_err(|e| TrainError::Config { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "model = \"m\"\noutput = \"out\"\n[[tasks]]\nname = \"a\"\ndata = \"a.jsonl\"\n";

    #[test]
    fn rank_overrides_parse() {
        let c = RunConfig::from_toml(
            Path::new("r.toml"),
            &format!("{MIN}[osft]\nrank_overrides = [{{ pattern = 'mlp', rule = \"unfreeze\", fraction = 0.25 }}]\n"),
        )
        .unwrap();
        assert_eq!(c.osft.rank_overrides[0].rule, sculpt_osft::RankRule::Unfreeze { fraction: 0.25 });
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = RunConfig::from_toml(Path::new("/cfg/run.toml"), MIN).unwrap();
        assert_eq!(c.model, PathBuf::from("/cfg/m"));
        assert_eq!(c.tasks[0].data, PathBuf::from("/cfg/a.jsonl"));
        assert_eq!(c.method, Method::Osft);
        assert_eq!(c.train.batch_size, 8);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (format!("{MIN}[train]\nbatch_size = 0\n"), "train.batch_size"),
            (format!("{MIN}[train]\nlearning_rate = 1.0\n"), "learning_rate"),
            (format!("{MIN}[train]\nlr = -1.0\n"), "train.lr"),
            (format!("{MIN}[train]\nweight_decay = nan\n"), "train.weight_decay"),
            (format!("{MIN}[train]\nmax_grad_norm = inf\n"), "train.max_grad_norm"),
            (format!("{MIN}[osft]\nrank = {{ rule = \"preserve\", fraction = 2.0 }}\n"), "osft.rank"),
            (format!("{MIN}[osft]\nrank_overrides = [{{ pattern = \"q\", rule = \"unfreeze\", fractoin = 0.2 }}]\n"), "fractoin"),
            (format!("{MIN}method = \"magic\"\n"), "method"),
            ("model = \"m\"\noutput = \"o\"\ntasks = []\n".to_string(), "tasks"),
            (format!("{MIN}[[tasks]]\nname = \"a\"\ndata = \"b\"\n"), "duplicate"),
        ];
        for (text, want) in cases {
            let e = RunConfig::from_toml(Path::new("run.toml"), &text).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("run.toml"), "{text}\n→ {e}");
        }
    }
}
