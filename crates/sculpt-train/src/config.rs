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
    /// A fresh LoRA adapter on the targets per task, merged at the task's end.
    Lora,
    /// O-LoRA: a fresh LoRA adapter per task, kept orthogonal to the earlier tasks' adapters by
    /// an L1 penalty on `A_t A_iᵀ` (plus an optional L2 penalty on the new adapter).
    Olora,
    /// Full fine-tuning with elastic weight consolidation (diagonal Fisher, online).
    Ewc,
    /// Full fine-tuning on the task mixed with a replay buffer of earlier tasks' examples.
    Replay,
    /// Multi-task learning: every task at once (shuffled together), the usual upper bound.
    Mtl,
}

impl Method {
    /// Every method, in the order reports list them.
    pub const ALL: [Method; 7] = [Method::Osft, Method::Seqft, Method::Lora, Method::Olora, Method::Ewc, Method::Replay, Method::Mtl];

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Method::Osft => "osft",
            Method::Seqft => "seqft",
            Method::Lora => "lora",
            Method::Olora => "olora",
            Method::Ewc => "ewc",
            Method::Replay => "replay",
            Method::Mtl => "mtl",
        }
    }

    /// Parse the config spelling.
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s)
    }
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
    /// `{"input_ids": [...], "labels": [...]}` per line (`data`: the training file; `test`: an
    /// optional file of the same format, evaluated by greedy decoding of the labelled part).
    #[default]
    Pretokenized,
    /// An O-LoRA CL_Benchmark task folder (`train.json`, `test.json`, `labels.json`).
    Olora,
    /// A TRACE task folder (`train.json`, `test.json` of `{"prompt", "answer"}`).
    Trace,
    /// Chat JSONL (`{"messages": [...]}`, the last message the assistant's answer), rendered with
    /// the model's chat template (`data`: training file, `test`: optional evaluation file).
    Chat,
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
    /// Evaluation file for the file formats (pretokenized, chat); folder formats read their
    /// `test.json`.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Passes over this task's data (default: `train.epochs`).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// How predictions are scored (default `exact_match`; TRACE: `rouge_l` for MeetingBank,
    /// `edit_similarity` for Py150, `sari` for 20Minuten).
    #[serde(default)]
    pub metric: Option<sculpt_data::Metric>,
}

/// Training precision (`[train] precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// bf16 matrix products, fp32 master weights, optimizer state, SVD and projections.
    Bf16,
}

/// Activation checkpointing (`[train] activation_checkpointing`): `false`, `"blocks"` (or
/// `true`) or `"ops"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "CheckpointingRaw", into = "CheckpointingRaw")]
pub enum Checkpointing {
    /// Keep every activation the backward pass needs.
    #[default]
    Off,
    /// Per block: the forward keeps only each block's input (and the encoder output); the
    /// backward re-runs one block at a time and back-propagates through it alone.
    Blocks,
    /// burn's balanced strategy: memory-bound (element-wise) ops are recomputed in the backward
    /// pass, across every block.
    Ops,
}

impl Checkpointing {
    /// Any checkpointing at all.
    pub fn enabled(self) -> bool {
        self != Checkpointing::Off
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum CheckpointingRaw {
    Switch(bool),
    Named(String),
}

impl TryFrom<CheckpointingRaw> for Checkpointing {
    type Error = String;
    fn try_from(raw: CheckpointingRaw) -> std::result::Result<Self, String> {
        match raw {
            CheckpointingRaw::Switch(false) => Ok(Checkpointing::Off),
            CheckpointingRaw::Switch(true) => Ok(Checkpointing::Blocks),
            CheckpointingRaw::Named(n) => match n.as_str() {
                "off" | "none" => Ok(Checkpointing::Off),
                "blocks" => Ok(Checkpointing::Blocks),
                "ops" => Ok(Checkpointing::Ops),
                other => Err(format!("activation_checkpointing: expected false, true, \"blocks\" or \"ops\", got \"{other}\"")),
            },
        }
    }
}

impl From<Checkpointing> for CheckpointingRaw {
    fn from(c: Checkpointing) -> Self {
        match c {
            Checkpointing::Off => CheckpointingRaw::Switch(false),
            Checkpointing::Blocks => CheckpointingRaw::Named("blocks".into()),
            Checkpointing::Ops => CheckpointingRaw::Named("ops".into()),
        }
    }
}

/// What to do with a prompt or answer longer than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Keep the end of the prompt (where the question is) and the start of the answer.
    #[default]
    Truncate,
    /// Stop with an error naming the task and the example.
    Error,
}

/// The `[data]` section: how text examples become tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Use at most this many training examples per task (a seeded sample; all when unset).
    #[serde(default)]
    pub max_train_examples: Option<usize>,
    /// Evaluate on at most this many test examples per task (a seeded sample; all when unset).
    #[serde(default)]
    pub max_eval_examples: Option<usize>,
    /// Longest prompt in tokens (special tokens included).
    #[serde(default = "d_prompt")]
    pub max_prompt_tokens: usize,
    /// Longest answer in tokens (end-of-sequence included).
    #[serde(default = "d_answer")]
    pub max_answer_tokens: usize,
    /// Longer sequences are truncated or rejected.
    #[serde(default)]
    pub overflow: Overflow,
    /// O-LoRA rows whose label is not in `labels.json`: `error`, `skip` or `keep`.
    #[serde(default)]
    pub unknown_labels: sculpt_data::text::UnknownLabels,
}

fn d_prompt() -> usize {
    512
}
fn d_answer() -> usize {
    50
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection { max_train_examples: None, max_eval_examples: None, max_prompt_tokens: d_prompt(), max_answer_tokens: d_answer(), overflow: Overflow::Truncate, unknown_labels: Default::default() }
    }
}

/// The `[eval]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate the base model and, after every task, every task of the stream.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Greedy decoding stops after this many new tokens (O-LoRA: 50).
    #[serde(default = "d_answer")]
    pub max_new_tokens: usize,
}

fn d_true() -> bool {
    true
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { enabled: true, max_new_tokens: d_answer() }
    }
}

/// The `[lora]` section (methods `lora` and `olora`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Adapter rank r.
    #[serde(default = "d_lora_rank")]
    pub rank: usize,
    /// Scale numerator: the adapter adds `(alpha / r) B A`.
    #[serde(default = "d_lora_alpha")]
    pub alpha: f64,
    /// Target regexes (default: the OSFT targets of the family).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// The adapters' learning rate (default: `train.lr`). Adapters usually want a larger one
    /// than full fine-tuning (O-LoRA trains with 1e-3).
    #[serde(default)]
    pub lr: Option<f64>,
}

fn d_lora_rank() -> usize {
    8
}
fn d_lora_alpha() -> f64 {
    16.0
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection { rank: d_lora_rank(), alpha: d_lora_alpha(), targets: None, lr: None }
    }
}

/// The `[olora]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OloraSection {
    /// Weight of `Σ |A_t A_iᵀ|` against the earlier tasks' adapters (O-LoRA's λ1).
    #[serde(default = "d_lambda1")]
    pub lambda1: f64,
    /// Weight of the L2 norm of the new adapter (O-LoRA's λ2).
    #[serde(default)]
    pub lambda2: f64,
}

fn d_lambda1() -> f64 {
    0.5
}

impl Default for OloraSection {
    fn default() -> Self {
        OloraSection { lambda1: d_lambda1(), lambda2: 0.0 }
    }
}

/// The `[ewc]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwcSection {
    /// Penalty weight λ in `(λ/2) Σ F (θ − θ*)²`.
    #[serde(default = "d_ewc_lambda")]
    pub lambda: f64,
    /// Examples (one per backward pass) used to estimate the diagonal Fisher after each task.
    #[serde(default = "d_fisher")]
    pub fisher_examples: usize,
    /// Online EWC decay: `F ← γ F + F_t`.
    #[serde(default = "d_gamma")]
    pub gamma: f64,
}

fn d_ewc_lambda() -> f64 {
    100.0
}
fn d_fisher() -> usize {
    64
}
fn d_gamma() -> f64 {
    1.0
}

impl Default for EwcSection {
    fn default() -> Self {
        EwcSection { lambda: d_ewc_lambda(), fisher_examples: d_fisher(), gamma: d_gamma() }
    }
}

/// The `[replay]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// Training examples kept from every earlier task and mixed into later ones.
    #[serde(default = "d_replay")]
    pub examples_per_task: usize,
}

fn d_replay() -> usize {
    32
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection { examples_per_task: d_replay() }
    }
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
    /// Upper bound on optimizer steps per task.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Micro-batches of `batch_size` per optimizer step (gradient accumulation; effective batch
    /// `batch_size × grad_accumulation`).
    #[serde(default = "d_one")]
    pub grad_accumulation: usize,
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
    /// Recompute activations in the backward pass instead of keeping them: `"blocks"` (`true`)
    /// keeps only block inputs and re-runs each block; `"ops"` is burn's op-level balanced
    /// strategy; `false` keeps everything.
    #[serde(default)]
    pub activation_checkpointing: Checkpointing,
    /// `fp32`, or `bf16` mixed precision: linear layers multiply in bf16 while the parameters,
    /// gradients, optimizer state, SVD and projections stay fp32 (norms, softmax, logits and the
    /// loss too).
    #[serde(default)]
    pub precision: Precision,
    /// A non-finite loss or gradient `stop`s the run (naming the step and the first offending
    /// tensor) or `skip`s the step.
    #[serde(default)]
    pub on_non_finite: NonFinitePolicy,
    /// Also write a checkpoint every this many steps inside a task (0 = only after each task;
    /// a stop signal always writes one).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Row shards of each micro-batch run side by side on the host backends (each on a fork of
    /// the model; the gradients are the whole batch's). Unset = automatic: one per core for
    /// models of at least 10 M parameters on the CPU backend, else 1 (GPU backends always 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_shards: Option<usize>,
}

/// What a non-finite loss or gradient does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Stop with an error; the checkpoints written so far stay as they are.
    #[default]
    Stop,
    /// Skip the step (no update) and log it.
    Skip,
}

fn d_batch() -> usize {
    8
}
fn d_epochs() -> usize {
    1
}
fn d_one() -> usize {
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
            grad_accumulation: 1,
            lr: d_lr(),
            optimizer: OptimizerKind::Adamw,
            betas: d_betas(),
            eps: d_eps(),
            weight_decay: 0.0,
            max_grad_norm: d_clip(),
            shuffle: false,
            activation_checkpointing: Checkpointing::Off,
            precision: Precision::Fp32,
            on_non_finite: NonFinitePolicy::Stop,
            checkpoint_every: 0,
            row_shards: None,
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
    /// Tokenization limits and sampling of the task data.
    #[serde(default)]
    pub data: DataSection,
    /// Evaluation after every task.
    #[serde(default)]
    pub eval: EvalSection,
    /// LoRA adapters (`lora`, `olora`).
    #[serde(default)]
    pub lora: LoraSection,
    /// O-LoRA penalties.
    #[serde(default)]
    pub olora: OloraSection,
    /// EWC penalty.
    #[serde(default)]
    pub ewc: EwcSection,
    /// Replay buffer.
    #[serde(default)]
    pub replay: ReplaySection,
    /// Folder that relative task paths resolve against (default: the config file's folder;
    /// itself relative to the config file's folder).
    #[serde(default)]
    pub data_root: Option<PathBuf>,
    /// The task stream, trained in order.
    pub tasks: Vec<TaskConfig>,
}

impl RunConfig {
    /// The learning rate the method trains with: `lora.lr` for the adapter methods when set,
    /// else `train.lr`.
    pub fn lr(&self) -> f64 {
        match self.method {
            Method::Lora | Method::Olora => self.lora.lr.unwrap_or(self.train.lr),
            _ => self.train.lr,
        }
    }

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
        let data_base = match &cfg.data_root {
            Some(r) if r.is_relative() => base.join(r),
            Some(r) => r.clone(),
            None => base.to_path_buf(),
        };
        for t in &mut cfg.tasks {
            for p in std::iter::once(&mut t.data).chain(t.test.as_mut()) {
                if p.is_relative() {
                    *p = data_base.join(&*p);
                }
            }
        }
        cfg.data_root = Some(data_base);
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
        if t.grad_accumulation == 0 {
            return bad("`train.grad_accumulation` must be at least 1".into());
        }
        if t.epochs == 0 {
            return bad("`train.epochs` must be at least 1".into());
        }
        if t.max_steps == Some(0) {
            return bad("`train.max_steps` must be at least 1".into());
        }
        if t.row_shards == Some(0) {
            return bad("`train.row_shards` must be at least 1 (or left out for the automatic choice)".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(format!("`train.lr` must be a positive number, got {}", t.lr));
        }
        if !t.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return bad(format!("`train.betas` must lie in [0, 1), got {:?}", t.betas));
        }
        let (positive, non_negative) = (|x: f64| x.is_finite() && x > 0.0, |x: f64| x.is_finite() && x >= 0.0);
        if !positive(t.eps) || !non_negative(t.weight_decay) || !non_negative(t.max_grad_norm) {
            return bad("`train.eps` must be > 0 and `train.weight_decay`, `train.max_grad_norm` finite and ≥ 0".into());
        }
        if self.data.max_prompt_tokens < 2 || self.data.max_answer_tokens < 1 || self.eval.max_new_tokens < 1 {
            return bad("`data.max_prompt_tokens` must be ≥ 2, `data.max_answer_tokens` and `eval.max_new_tokens` ≥ 1".into());
        }
        if self.data.max_train_examples == Some(0) || self.data.max_eval_examples == Some(0) {
            return bad("`data.max_train_examples` / `data.max_eval_examples` must be at least 1 when set".into());
        }
        if let Some(lr) = self.lora.lr {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!("`lora.lr` must be a positive number, got {lr}"));
            }
        }
        if self.lora.rank == 0 || !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return bad(format!("`lora.rank` must be ≥ 1 and `lora.alpha` > 0, got {} and {}", self.lora.rank, self.lora.alpha));
        }
        if !non_negative(self.olora.lambda1) || !non_negative(self.olora.lambda2) {
            return bad("`olora.lambda1` and `olora.lambda2` must be finite and ≥ 0".into());
        }
        if !non_negative(self.ewc.lambda) || self.ewc.fisher_examples == 0 || !(0.0..=1.0).contains(&self.ewc.gamma) {
            return bad("`ewc.lambda` must be ≥ 0, `ewc.fisher_examples` ≥ 1 and `ewc.gamma` in [0, 1]".into());
        }
        if self.method == Method::Replay && self.replay.examples_per_task == 0 {
            return bad("`replay.examples_per_task` must be at least 1".into());
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if task.epochs == Some(0) {
                return bad(format!("`tasks[{i}].epochs` must be at least 1"));
            }
            if matches!(task.format, DataFormat::Olora | DataFormat::Trace) && task.test.is_some() {
                return bad(format!("`tasks[{i}].test`: the {:?} format reads test.json from the task folder; remove `test`", task.format));
            }
        }
        self.osft.rank.validate("osft.rank").map_err(|e| TrainError::Config { path: path.to_path_buf(), msg: e.to_string() })?;
        if let Some(g) = self.osft.grow {
            sculpt_osft::rank::validate_grow("osft.grow", g).map_err(|e| TrainError::Config { path: path.to_path_buf(), msg: e.to_string() })?;
        }
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
    fn activation_checkpointing_values() {
        for (v, want) in [("false", Checkpointing::Off), ("true", Checkpointing::Blocks), ("\"blocks\"", Checkpointing::Blocks), ("\"ops\"", Checkpointing::Ops)] {
            let c = RunConfig::from_toml(Path::new("r.toml"), &format!("{MIN}[train]\nactivation_checkpointing = {v}\n")).unwrap();
            assert_eq!(c.train.activation_checkpointing, want, "{v}");
            // What a run saves reads back the same.
            let again: RunConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
            assert_eq!(again.train.activation_checkpointing, want, "{v} round trip");
        }
        let e = RunConfig::from_toml(Path::new("r.toml"), &format!("{MIN}[train]\nactivation_checkpointing = \"layers\"\n")).unwrap_err().to_string();
        assert!(e.contains("activation_checkpointing") && e.contains("\"blocks\"") && e.contains("layers") && e.contains("r.toml"), "{e}");
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (format!("{MIN}[train]\nbatch_size = 0\n"), "train.batch_size"),
            (format!("{MIN}[train]\nrow_shards = 0\n"), "train.row_shards"),
            (format!("{MIN}[train]\nlearning_rate = 1.0\n"), "learning_rate"),
            (format!("{MIN}[train]\nlr = -1.0\n"), "train.lr"),
            (format!("{MIN}[train]\nweight_decay = nan\n"), "train.weight_decay"),
            (format!("{MIN}[train]\nmax_grad_norm = inf\n"), "train.max_grad_norm"),
            (format!("{MIN}[osft]\nrank = {{ rule = \"preserve\", fraction = 2.0 }}\n"), "osft.rank"),
            (format!("{MIN}[osft]\ngrow = 1.5\n"), "osft.grow"),
            (format!("{MIN}[osft]\nfrozen_form = \"sparse\"\n"), "frozen_form"),
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

#[cfg(test)]
mod shipped_configs {
    use super::*;

    /// Every config under `configs/` parses and validates, also with the `frozen_form` switch
    /// that the paper's LLaMA configs carry as a comment.
    #[test]
    fn every_shipped_config_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut stack = vec![root];
        let (mut n, mut switchable) = (0, 0);
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "toml") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    RunConfig::from_toml(&p, &text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    n += 1;
                    // The switch the paper's LLaMA configs suggest in a comment works uncommented.
                    let switched = text.replace("# frozen_form = \"factors\"", "frozen_form = \"factors\"");
                    if switched != text {
                        let c = RunConfig::from_toml(&p, &switched).unwrap_or_else(|e| panic!("{} (frozen_form uncommented): {e}", p.display()));
                        assert_eq!(c.osft.frozen_form, sculpt_osft::FrozenForm::Factors, "{}", p.display());
                        switchable += 1;
                    }
                }
            }
        }
        assert!(n >= 12, "found only {n} configs");
        assert_eq!(switchable, 7, "the LLaMA paper configs (6 orders and TRACE) suggest frozen_form");
    }
}
