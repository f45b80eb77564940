//! A run: load the base model, read every task, evaluate the base model, then train the task
//! stream in order with the configured method, evaluating every task after each one and writing
//! a checkpoint after each one:
//!
//! ```text
//! <output>/run_config.toml                 the resolved config
//! <output>/metrics.jsonl                   one line per step: task, step, loss, penalty, grad_norm, lr
//! <output>/checkpoints/task-NN-<name>/     after task NN: model/ (f32 Hugging Face folder),
//!                                          state.json (matrix and summaries so far),
//!                                          method_state/ (EWC Fisher and anchor, O-LoRA A rows)
//! <output>/results.json                    accuracy matrix, AA / BWT / forgetting / FWT, per task
//! <output>/report.html                     the self-contained report
//! <output>/osft_ranks.json                 per task: resolved k of every target, leakage
//! <output>/model/                          the final model as a Hugging Face folder
//! ```
//!
//! With `resume`, the latest complete checkpoint of `<output>` is loaded and the stream goes on
//! from the next task; the result is the one an uninterrupted run produces.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::ParamId;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use sculpt_data::{Batcher, Example};
use sculpt_models::layers::{NamedParams, ParamRef};
use sculpt_models::{HostTensor, Model, ModelFiles, Pretrained, StoreDtype, TensorMap};
use sculpt_osft::rank::normalize_importance;
use sculpt_osft::targets::{default_targets, TargetSet};
use sculpt_osft::{merge, CalibrationSource, Osft, ResolvedTarget};
use serde::{Deserialize, Serialize};

use crate::config::{Method, RunConfig};
use crate::error::{Result, TrainError};
use crate::lm::LanguageModel;
use crate::methods::{adapter_a, append_rows, attach_lora, EwcPenalty, EwcState, OloraPenalty};
use crate::metrics::{AccuracyMatrix, Metrics};
use crate::optim::TaskOptimizer;
use crate::step::{train_step_accumulated, StepContext};
use crate::tasks::{load_task, TaskData, TokenizerInfo};

/// What one training phase (a task; for `mtl` the joint run) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task name (`mtl`: the names joined with `+`).
    pub name: String,
    /// Training examples seen per epoch (replay: the task's plus the buffer).
    pub examples: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Loss at the first step.
    pub first_loss: f64,
    /// Loss at the last step.
    pub last_loss: f64,
    /// Wall seconds (setup, training and merge; evaluation excluded).
    pub train_secs: f64,
    /// Wall seconds of the evaluation after it.
    pub eval_secs: f64,
    /// Resolved OSFT ranks (empty for other methods).
    pub ranks: Vec<ResolvedTarget>,
    /// `(max|U_hᵀ U_l|, max|Vt_l Vt_hᵀ|)` at the end of the task (OSFT only).
    pub leakage: Option<(f32, f32)>,
    /// How importances were measured, when the adaptive rule ran.
    pub calibration: Option<String>,
}

/// A few predictions, for people reading the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Task.
    pub task: String,
    /// Expected answer.
    pub answer: String,
    /// What the model generated.
    pub prediction: String,
    /// Scored full marks (for exact match: equal after normalisation).
    pub correct: bool,
    /// The task metric's score of this prediction, in `[0, 1]`.
    #[serde(default)]
    pub score: f64,
}

/// `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// The method.
    pub method: Method,
    /// Accuracy matrix.
    pub matrix: AccuracyMatrix,
    /// Summary metrics.
    pub metrics: Metrics,
    /// Per phase.
    pub tasks: Vec<TaskSummary>,
    /// Predictions of the final model, the first few per task.
    pub samples: Vec<Sample>,
}

/// What the run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Results (also in `results.json`).
    pub results: RunResults,
    /// The saved final model.
    pub model_dir: PathBuf,
    /// The report.
    pub report: PathBuf,
}

/// Run options besides the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the latest checkpoint in the output folder (a fresh start when the folder
    /// holds no run yet).
    pub resume: bool,
    /// Set (by a signal handler) to stop after the current step.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Start afresh in an output folder that holds an earlier run: its checkpoints, final model
    /// and results are deleted first. Without it (and without `resume`) such a folder is an
    /// error ([`TrainError::OutputInUse`]), so an earlier run is never overwritten half-way and
    /// a later `resume` never picks up another run's checkpoint.
    pub overwrite: bool,
}

/// What a run writes into its output folder besides `run_config.toml`: removed by
/// [`RunOptions::overwrite`].
const RUN_OUTPUTS: [&str; 6] = ["checkpoints", "model", "results.json", "report.html", "osft_ranks.json", "metrics.jsonl"];

/// What an earlier run left in `output` that a fresh start would overwrite: its checkpoints,
/// its final model and its results (a run that stopped before its first checkpoint leaves
/// nothing worth keeping).
fn earlier_run(output: &Path) -> Vec<String> {
    let mut found = vec![];
    let n = checkpoint_states(output).len();
    if n > 0 {
        found.push(format!("{n} checkpoint{}", if n == 1 { "" } else { "s" }));
    }
    for name in ["model", "results.json"] {
        if output.join(name).exists() {
            found.push(name.to_string());
        }
    }
    found
}

/// [`TrainError::OutputInUse`] when an earlier run left results in `output` ([`earlier_run`]).
pub(crate) fn ensure_no_earlier_run(output: &Path) -> Result<()> {
    let found = earlier_run(output);
    if found.is_empty() {
        return Ok(());
    }
    Err(TrainError::OutputInUse { output: output.to_path_buf(), found: found.join(", ") })
}

/// [`RunOptions::overwrite`]: delete what an earlier run left in `output` ([`RUN_OUTPUTS`]).
fn clear_earlier_run(output: &Path) -> Result<()> {
    let found = earlier_run(output);
    if found.is_empty() {
        return Ok(());
    }
    tracing::warn!(output = %output.display(), found = %found.join(", "), "--overwrite: deleting the earlier run's results");
    for name in RUN_OUTPUTS {
        let p = output.join(name);
        match if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) } {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(TrainError::Io { path: p, source: e }),
            _ => {}
        }
    }
    Ok(())
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    format: u32,
    method: Method,
    task_names: Vec<String>,
    completed: usize,
    matrix: AccuracyMatrix,
    tasks: Vec<TaskSummary>,
    final_dtype: StoreDtype,
    /// Set for a checkpoint written inside a task (`completed` tasks done, then these steps).
    #[serde(default)]
    in_task: Option<InTask>,
}

/// Where inside a task a mid-task checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct InTask {
    /// Steps of the task already taken.
    steps_done: usize,
    /// Loss at the task's first step.
    first_loss: f64,
    /// Loss at the last step taken.
    last_loss: f64,
    /// Training seconds spent in the task so far.
    train_secs: f64,
}

const STATE_FORMAT: u32 = 1;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), source: e }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}").expect("template").progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}

/// Run `cfg` on the device `device` of autodiff backend `B`.
pub fn train<B: AutodiffBackend>(cfg: &RunConfig, device: &B::Device) -> Result<RunSummary> {
    train_with::<B>(cfg, device, RunOptions::default())
}

/// The latest good checkpoint of a run folder: `(completed tasks, folder)`. Folders without
/// `model/`, with an unreadable `state.json`, or whose files do not match their
/// `manifest.json` (size and SHA-256 of every file) are skipped with a warning naming the
/// problem, so the previous good checkpoint is used.
pub fn latest_checkpoint(output: &Path) -> Option<(usize, PathBuf)> {
    checkpoints(output).into_iter().rev().find(|(_, dir)| match verify_manifest(dir) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(checkpoint = %dir.display(), %why, "corrupt or incomplete checkpoint; using an earlier one");
            false
        }
    })
}

/// `(relative path, size, sha256 hex)` of every file under `dir` but the manifest, sorted.
fn file_digests(dir: &Path) -> std::io::Result<Vec<(String, u64, String)>> {
    use sha2::Digest;
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
            if rel == "manifest.json" {
                continue;
            }
            let mut h = sha2::Sha256::new();
            let n = std::io::copy(&mut std::fs::File::open(&p)?, &mut h)?;
            out.push((rel, n, format!("{:x}", h.finalize())));
        }
    }
    out.sort();
    Ok(out)
}

fn write_manifest(dir: &Path) -> Result<()> {
    let files: Vec<serde_json::Value> =
        file_digests(dir).map_err(io_err(dir))?.into_iter().map(|(path, bytes, sha256)| serde_json::json!({"path": path, "bytes": bytes, "sha256": sha256})).collect();
    let p = dir.join("manifest.json");
    std::fs::write(&p, serde_json::to_string_pretty(&serde_json::json!({"files": files})).expect("json")).map_err(io_err(&p))?;
    std::fs::File::open(&p).and_then(|f| f.sync_all()).map_err(io_err(&p))
}

/// Check a checkpoint against its manifest; the error says which file is wrong and how.
fn verify_manifest(dir: &Path) -> std::result::Result<(), String> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
    let want: Vec<(String, u64, String)> = v["files"]
        .as_array()
        .ok_or_else(|| format!("{}: no `files` list", p.display()))?
        .iter()
        .map(|f| Some((f["path"].as_str()?.to_string(), f["bytes"].as_u64()?, f["sha256"].as_str()?.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{}: malformed entry", p.display()))?;
    let have = file_digests(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (path, bytes, sha) in &want {
        match have.iter().find(|h| &h.0 == path) {
            None => return Err(format!("{path} is missing")),
            Some(h) if h.1 != *bytes => return Err(format!("{path} has {} bytes, the manifest says {bytes}", h.1)),
            Some(h) if &h.2 != sha => return Err(format!("{path} does not match its SHA-256 in the manifest")),
            _ => {}
        }
    }
    Ok(())
}

/// The checkpoints of a run folder with a readable state, oldest first: `(completed tasks, folder)`.
fn checkpoints(output: &Path) -> Vec<(usize, PathBuf)> {
    let mut v = checkpoint_states(output);
    v.sort_by_key(|(s, _)| (s.completed, s.in_task.map_or(0, |t| t.steps_done)));
    v.into_iter().map(|(s, p)| (s.completed, p)).collect()
}

/// Every checkpoint folder with a readable `state.json`, unordered.
fn checkpoint_states(output: &Path) -> Vec<(CheckpointState, PathBuf)> {
    let dir = output.join("checkpoints");
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(&dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("task-") || !p.join("state.json").is_file() {
            continue;
        }
        match std::fs::read_to_string(p.join("state.json")).ok().and_then(|t| serde_json::from_str::<CheckpointState>(&t).ok()) {
            Some(s) if p.join(if s.in_task.is_some() { "module.bin" } else { "model" }).exists() => out.push((s, p)),
            _ => tracing::warn!(checkpoint = %p.display(), "unreadable state.json or missing weights; skipping this checkpoint"),
        }
    }
    out
}

/// Remove what an earlier, killed process left half-written (`.<name>.partial…` folders; they
/// are never read).
fn remove_stale_partials(output: &Path) {
    for dir in [output.to_path_buf(), output.join("checkpoints")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.contains(".partial") && e.path().is_dir() {
                tracing::info!(path = %e.path().display(), "removing a partial folder left by an interrupted run");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Refuse, before anything is written, a config whose dtypes the device cannot compute in:
/// bf16 on WebGPU, whose shading language has no bf16 (cubecl's wgsl compiler panics on it).
pub fn check_device<B: burn::tensor::backend::Backend>(cfg: &RunConfig, device: &B::Device) -> Result<()> {
    let key = if cfg.train.precision == crate::config::Precision::Bf16 {
        Some("[train] precision = \"bf16\"")
    } else if cfg.method == Method::Osft && cfg.osft.frozen_precision == sculpt_osft::FrozenPrecision::Bf16 {
        Some("[osft] frozen_precision = \"bf16\"")
    } else {
        None
    };
    match key {
        Some(key) if !B::supports_dtype(device, burn::tensor::DType::BF16) => Err(TrainError::UnsupportedDtype { key }),
        _ => Ok(()),
    }
}

/// Run `cfg`, optionally resuming.
pub fn train_with<B: AutodiffBackend>(cfg: &RunConfig, device: &B::Device, opts: RunOptions) -> Result<RunSummary> {
    check_device::<B>(cfg, device)?;
    std::fs::create_dir_all(&cfg.output).map_err(io_err(&cfg.output))?;
    remove_stale_partials(&cfg.output);
    let cfg_path = cfg.output.join("run_config.toml");
    let cfg_text = toml::to_string_pretty(cfg).expect("config serialises");
    let fresh = !cfg_path.is_file();
    // The final model goes to `<output>/model`, checkpoints under `<output>/checkpoints`, and
    // `overwrite` deletes both: neither may hold the base model.
    if let Ok(base) = std::fs::canonicalize(&cfg.model) {
        for name in ["model", "checkpoints"] {
            if std::fs::canonicalize(cfg.output.join(name)).is_ok_and(|d| base.starts_with(&d)) {
                return Err(TrainError::Config {
                    path: cfg_path,
                    msg: format!("`model` ({}) lies in `<output>/{name}`, which the run writes over; set another `output`", cfg.model.display()),
                });
            }
        }
    }
    if opts.resume && fresh {
        tracing::info!(output = %cfg.output.display(), "nothing to resume in this folder; starting the run");
    }
    let resume_from = if opts.resume && !fresh {
        let previous = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        if previous != cfg_text {
            return Err(TrainError::Config {
                path: cfg_path,
                msg: "the config differs from the one this run was started with; resume with the same config (or start a new output folder)".into(),
            });
        }
        let found = latest_checkpoint(&cfg.output);
        if found.is_none() {
            tracing::warn!(output = %cfg.output.display(), "no complete checkpoint to resume from; starting from the base model");
        }
        found
    } else {
        if opts.overwrite {
            clear_earlier_run(&cfg.output)?;
        } else {
            ensure_no_earlier_run(&cfg.output)?;
        }
        std::fs::write(&cfg_path, &cfg_text).map_err(io_err(&cfg_path))?;
        None
    };
    let (model_path, state) = match &resume_from {
        Some((_, dir)) => {
            let p = dir.join("state.json");
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            let state: CheckpointState = serde_json::from_str(&text).map_err(|e| TrainError::Config { path: p.clone(), msg: e.to_string() })?;
            let names: Vec<String> = cfg.tasks.iter().map(|t| t.name.clone()).collect();
            if state.format != STATE_FORMAT || state.method != cfg.method || state.task_names != names {
                return Err(TrainError::Config { path: p, msg: "this checkpoint belongs to another method or task stream".into() });
            }
            tracing::info!(checkpoint = %dir.display(), completed = state.completed, in_task = ?state.in_task, "resuming");
            let model = if state.in_task.is_none() {
                dir.join("model")
            } else if state.completed == 0 {
                // Inside the first task: it started from the base model.
                cfg.model.clone()
            } else {
                // Inside a later task: it started from the previous task's checkpoint.
                checkpoint_states(&cfg.output)
                    .into_iter()
                    .find(|(s, d)| s.in_task.is_none() && s.completed == state.completed && verify_manifest(d).is_ok())
                    .map(|(_, d)| d.join("model"))
                    .ok_or_else(|| TrainError::Config {
                        path: dir.clone(),
                        msg: format!("this mid-task checkpoint needs the checkpoint after task {}, which is missing or corrupt", state.completed),
                    })?
            };
            (model, Some(state))
        }
        None => (cfg.model.clone(), None),
    };
    let pre = Pretrained::<B>::load(&model_path, device)?;
    let files = pre.files();
    let final_dtype = state.as_ref().map_or(pre.source_dtype, |s| s.final_dtype);
    tracing::info!(family = pre.model.family(), tasks = cfg.tasks.len(), method = cfg.method.name(), "run starts");
    let ctx = Ctx { cfg, files: &files, resume: state, resume_dir: resume_from.map(|(_, d)| d), final_dtype, stop: opts.stop.clone() };
    let (export, results) = match pre.model {
        Model::Llama(m) => run_stream(m, &ctx)?,
        Model::T5(m) => run_stream(m, &ctx)?,
    };
    let model_dir = cfg.output.join("model");
    files.save(&export, &model_dir, Some(final_dtype))?;
    tracing::info!(out = %model_dir.display(), "saved the final model");
    let report = cfg.output.join("report.html");
    let losses = crate::report::read_losses(&cfg.output.join("metrics.jsonl"));
    let html = crate::report::render(&format!("sculpt: {}", cfg.method.name()), &[crate::report::ReportRun { name: cfg.method.name().into(), results: results.clone(), losses }]);
    std::fs::write(&report, html).map_err(io_err(&report))?;
    Ok(RunSummary { results, model_dir, report })
}

struct Ctx<'a> {
    cfg: &'a RunConfig,
    files: &'a ModelFiles,
    resume: Option<CheckpointState>,
    resume_dir: Option<PathBuf>,
    final_dtype: StoreDtype,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Parameters that will receive gradients, as `(id, rank)`.
fn trainable_ids<B: AutodiffBackend, M: NamedParams<B>>(model: &M, osft: Option<&Osft<B>>) -> Vec<(ParamId, usize)> {
    let mut ids = vec![];
    model.visit_params(&mut |_, p| match p {
        ParamRef::Vector(p) if p.is_require_grad() => ids.push((p.id, 1)),
        ParamRef::Matrix(p) if p.is_require_grad() => ids.push((p.id, 2)),
        _ => {}
    });
    if let Some(o) = osft {
        ids.extend(o.low_param_ids());
    }
    ids
}

/// The row shards of `model`'s steps and evaluation batches: `[train] row_shards`, or
/// [`crate::step::row_shards`]'s automatic choice for its parameter count (burn's
/// `Module::num_params`: attached OSFT factors or adapters included).
fn row_shards<B: AutodiffBackend, M: LanguageModel<B>>(cfg: &RunConfig, model: &M) -> usize {
    crate::step::row_shards::<B>(cfg.train.row_shards, burn::module::Module::num_params(model))
}

/// [`LanguageModel::greedy`] over `prompts` cut into `shards` groups decoded side by side, in
/// order. On the host backends decoding is mostly small products and element-wise work on one
/// core each, so two groups keep two cores busy.
fn greedy_sharded<B: AutodiffBackend, M: LanguageModel<B>>(model: &M, prompts: &[Vec<u32>], max_new_tokens: usize, shards: usize) -> Vec<Vec<u32>> {
    use rayon::prelude::*;
    let (n, p) = (prompts.len(), shards.min(prompts.len()));
    if p < 2 {
        return model.greedy(prompts, max_new_tokens);
    }
    let work: Vec<(M, &[Vec<u32>])> = (0..p).map(|i| (model.clone(), &prompts[i * n / p..(i + 1) * n / p])).collect();
    let outs: Vec<Vec<Vec<u32>>> = work.into_par_iter().map(|(m, group)| m.greedy(group, max_new_tokens)).collect();
    outs.into_iter().flatten().collect()
}

/// Greedy-decode every evaluation example of `task`; `None` when it has none.
fn evaluate<B: AutodiffBackend, M: LanguageModel<B>>(model: &M, task: &TaskData, cx: &Ctx<'_>, samples: Option<&mut Vec<Sample>>) -> Result<Option<f64>> {
    if task.eval.is_empty() {
        return Ok(None);
    }
    let pb = bar(task.eval.len(), &format!("eval {}", task.name));
    let mut total = 0.0f64;
    let mut kept = vec![];
    let shards = row_shards::<B, M>(cx.cfg, model);
    for chunk in task.eval.chunks(16) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|e| e.prompt_ids.clone()).collect();
        let outs = greedy_sharded(model, &prompts, cx.cfg.eval.max_new_tokens, shards);
        for (e, out) in chunk.iter().zip(outs) {
            let text = cx.files.tokenizer.decode(&out, true).map_err(|err| TrainError::Config { path: cx.files.source.clone(), msg: format!("tokenizer decode: {err}") })?;
            let score = task.metric.score(&text, &e.answer, &e.source);
            total += score;
            if kept.len() < 5 {
                kept.push(Sample { task: task.name.clone(), answer: e.answer.clone(), prediction: text, correct: score >= 1.0, score });
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    if let Some(s) = samples {
        s.extend(kept);
    }
    Ok(Some(total / task.eval.len() as f64))
}

fn evaluate_all<B: AutodiffBackend, M: LanguageModel<B>>(
    model: &M,
    tasks: &[TaskData],
    matrix: &mut AccuracyMatrix,
    column: usize,
    cx: &Ctx<'_>,
    mut samples: Option<&mut Vec<Sample>>,
) -> Result<()> {
    if !cx.cfg.eval.enabled {
        return Ok(());
    }
    for (i, t) in tasks.iter().enumerate() {
        matrix.acc[i][column] = evaluate(model, t, cx, samples.as_deref_mut())?;
        if let Some(a) = matrix.acc[i][column] {
            tracing::info!(task = %t.name, point = column, accuracy = a, "evaluated");
        }
    }
    Ok(())
}

/// The host tensors of the method state, as a tensor map (`ewc.fisher.*`, `ewc.anchor.*`, `olora.*`).
fn method_state_map(ewc: &EwcState, olora: &BTreeMap<String, HostTensor>) -> TensorMap {
    let mut map = TensorMap::new("method_state");
    for (n, t) in &ewc.fisher {
        map.insert(format!("ewc.fisher.{n}"), t.clone());
    }
    for (n, t) in &ewc.anchor {
        map.insert(format!("ewc.anchor.{n}"), t.clone());
    }
    for (n, t) in olora {
        map.insert(format!("olora.{n}"), t.clone());
    }
    map
}

fn restore_method_state(dir: &Path) -> Result<(EwcState, BTreeMap<String, HostTensor>)> {
    let mut ewc = EwcState::default();
    let mut olora = BTreeMap::new();
    if !dir.join("model.safetensors").is_file() {
        return Ok((ewc, olora));
    }
    let map = sculpt_models::safetensors_io::read_folder(dir)?;
    for (name, t) in map.tensors {
        if let Some(n) = name.strip_prefix("ewc.fisher.") {
            ewc.fisher.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("ewc.anchor.") {
            ewc.anchor.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("olora.") {
            olora.insert(n.to_string(), t);
        }
    }
    Ok((ewc, olora))
}

/// Publish checkpoint `name`: assembled in `checkpoints/.<name>.partial` — the weights by
/// `write_weights` (which returns the weight files to sync), then the method state and
/// `state.json` — synced, given a manifest, and renamed into place. A failure removes the partial
/// folder and leaves every earlier checkpoint as it was.
fn publish_checkpoint(
    cx: &Ctx<'_>,
    name: &str,
    state: &CheckpointState,
    ewc: &EwcState,
    olora: &BTreeMap<String, HostTensor>,
    write_weights: impl FnOnce(&Path) -> Result<Vec<PathBuf>>,
) -> Result<PathBuf> {
    let root = cx.cfg.output.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let dir = root.join(name);
    let tmp = root.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let written = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let mut to_sync = write_weights(&tmp)?;
        let ms = method_state_map(ewc, olora);
        if !ms.tensors.is_empty() {
            let p = tmp.join("method_state");
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
            sculpt_models::safetensors_io::write_folder(&p, &ms, StoreDtype::F32, sculpt_models::pretrained::DEFAULT_MAX_SHARD_BYTES)?;
        }
        let sp = tmp.join("state.json");
        std::fs::write(&sp, serde_json::to_string_pretty(state).expect("json")).map_err(io_err(&sp))?;
        to_sync.push(sp);
        // Make the contents durable before the rename publishes them.
        for f in to_sync {
            if let Ok(file) = std::fs::File::open(&f) {
                file.sync_all().map_err(io_err(&f))?;
            }
        }
        write_manifest(&tmp)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        tracing::error!(checkpoint = %dir.display(), "checkpoint not written; the earlier checkpoints are untouched");
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    Ok(dir)
}

/// The checkpoint after `completed` phases: the model as an f32 Hugging Face folder.
fn write_checkpoint<B: AutodiffBackend, M: LanguageModel<B>>(
    cx: &Ctx<'_>,
    model: &M,
    state: &CheckpointState,
    ewc: &EwcState,
    olora: &BTreeMap<String, HostTensor>,
) -> Result<PathBuf> {
    let label = state.tasks.last().map(|t| t.name.replace(['/', '+', ' '], "_")).unwrap_or_default();
    let name = format!("task-{:02}-{label}", state.completed);
    publish_checkpoint(cx, &name, state, ewc, olora, |tmp| {
        cx.files.save(&model.export(), &tmp.join("model"), Some(StoreDtype::F32))?;
        Ok(vec![tmp.join("model").join("model.safetensors")])
    })
}

/// Mid-task checkpoints are superseded by any later checkpoint: remove all but `keep`.
fn remove_mid_task_checkpoints(output: &Path, keep: Option<&Path>) {
    for (s, dir) in checkpoint_states(output) {
        if s.in_task.is_some() && Some(dir.as_path()) != keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// A checkpoint inside a task: the whole module as a burn record (weights, attached factors or
/// adapters, parameter ids), the optimizer state, the method state and `state.json`; the
/// batcher position is the step count (batches are a pure function of the seed and the step).
#[allow(clippy::too_many_arguments)]
fn write_step_checkpoint<B: AutodiffBackend, M: LanguageModel<B>>(
    cx: &Ctx<'_>,
    model: &M,
    opt: &TaskOptimizer<M, B>,
    state: &CheckpointState,
    ewc: &EwcState,
    olora: &BTreeMap<String, HostTensor>,
    phase: &str,
) -> Result<PathBuf> {
    let steps = state.in_task.map_or(0, |t| t.steps_done);
    let name = format!("task-{:02}-{}-step-{steps:06}", state.completed + 1, phase.replace(['/', '+', ' '], "_"));
    let dir = publish_checkpoint(cx, &name, state, ewc, olora, |tmp| {
        let rec_err = |p: PathBuf| move |e: burn::record::RecorderError| TrainError::Config { path: p, msg: format!("writing a record: {e}") };
        Recorder::<B>::record(&BinFileRecorder::<FullPrecisionSettings>::new(), model.clone().into_record(), tmp.join("module"))
            .map_err(rec_err(tmp.join("module.bin")))?;
        opt.save(tmp).map_err(rec_err(tmp.to_path_buf()))?;
        Ok(["module.bin", "optimizer-decayed.bin", "optimizer-plain.bin"].iter().map(|f| tmp.join(f)).collect())
    })?;
    remove_mid_task_checkpoints(&cx.cfg.output, Some(&dir));
    tracing::info!(checkpoint = %dir.display(), "mid-task checkpoint written");
    Ok(dir)
}

/// The examples of phase `ti`: the task's, plus (replay) a seeded sample of every earlier task's,
/// or (mtl) every task's.
fn phase_examples(cfg: &RunConfig, tasks: &[TaskData], ti: usize) -> Vec<Example> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    match cfg.method {
        Method::Mtl => tasks.iter().flat_map(|t| t.train.iter().cloned()).collect(),
        Method::Replay => {
            let mut xs = tasks[ti].train.clone();
            for (j, t) in tasks[..ti].iter().enumerate() {
                let mut pool = t.train.clone();
                pool.shuffle(&mut rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_add(5000 + j as u64)));
                xs.extend(pool.into_iter().take(cfg.replay.examples_per_task));
            }
            xs
        }
        _ => tasks[ti].train.clone(),
    }
}

fn run_stream<B: AutodiffBackend, M: LanguageModel<B>>(mut model: M, cx: &Ctx<'_>) -> Result<(TensorMap, RunResults)> {
    let cfg = cx.cfg;
    if cfg.train.precision == crate::config::Precision::Bf16 {
        sculpt_models::layers::set_compute_dtype(&mut model, sculpt_models::layers::ComputeDtype::Bf16);
    }
    let info = TokenizerInfo {
        tokenizer: &cx.files.tokenizer,
        decoder_only: model.decoder_only(),
        eos: model.eos_id(),
        vocab: model.vocab_size(),
        chat_template: cx
            .files
            .sidecar("tokenizer_config.json")
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("chat_template").and_then(|t| t.as_str()).map(str::to_string)),
        bos_token: special_token(cx.files, "bos_token"),
        eos_token: special_token(cx.files, "eos_token"),
    };
    let t_load = std::time::Instant::now();
    let tasks: Vec<TaskData> = cfg.tasks.iter().enumerate().map(|(i, t)| load_task(&info, t, cfg, i)).collect::<Result<_>>()?;
    tracing::info!(secs = t_load.elapsed().as_secs_f32(), "read {} tasks ({} training / {} evaluation examples)", tasks.len(), tasks.iter().map(|t| t.train.len()).sum::<usize>(), tasks.iter().map(|t| t.eval.len()).sum::<usize>());
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let n_tasks = tasks.len();
    let phases = if cfg.method == Method::Mtl { 1 } else { n_tasks };

    let metrics_path = cfg.output.join("metrics.jsonl");
    let (mut matrix, mut summaries, start, mut ewc, mut olora_prev) = match &cx.resume {
        Some(s) => {
            let (ewc, olora) = restore_method_state(&cx.resume_dir.as_ref().expect("resume dir").join("method_state"))?;
            // Keep the metrics of the completed phases only, so the file equals an uninterrupted run's.
            let kept: String = std::fs::read_to_string(&metrics_path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    let v: Option<serde_json::Value> = serde_json::from_str(l).ok();
                    let (t, step) = v.map_or((None, None), |v| (v["task_index"].as_u64(), v["step"].as_u64()));
                    match (t, step, s.in_task) {
                        (Some(t), _, _) if (t as usize) < s.completed => true,
                        (Some(t), Some(step), Some(it)) => t as usize == s.completed && (step as usize) < it.steps_done,
                        _ => false,
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&metrics_path, kept).map_err(io_err(&metrics_path))?;
            (s.matrix.clone(), s.tasks.clone(), s.completed, ewc, olora)
        }
        None => {
            std::fs::write(&metrics_path, "").map_err(io_err(&metrics_path))?;
            (AccuracyMatrix::new(names.clone()), vec![], 0, EwcState::default(), BTreeMap::new())
        }
    };
    let mut metrics = std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&metrics_path).map_err(io_err(&metrics_path))?);
    if start == 0 {
        evaluate_all(&model, &tasks, &mut matrix, 0, cx, None)?;
    }
    let needs_importance = cfg.method == Method::Osft && Osft::<B>::needs_importance(&cfg.osft)?;
    let patterns = |own: &Option<Vec<String>>| own.clone().or_else(|| cfg.osft.targets.clone()).unwrap_or_else(|| default_targets(model.family()));
    let lora_targets = TargetSet::new(&patterns(&cfg.lora.targets))?;

    for ti in start..phases {
        let t0 = std::time::Instant::now();
        let phase_name = if cfg.method == Method::Mtl { names.join("+") } else { names[ti].clone() };
        let examples = phase_examples(cfg, &tasks, ti);
        let mut calibration = None;
        let importance = if needs_importance {
            let source = match (cfg.osft.calibration.source, ti) {
                (CalibrationSource::Previous, t) if t > 0 => &tasks[t - 1],
                _ => &tasks[ti],
            };
            let (imp, note) = measure_importance(&mut model, cfg, &source.name, source.train.clone())?;
            calibration = Some(note);
            Some(imp)
        } else {
            None
        };
        let n_examples = examples.len();
        let shuffle = cfg.train.shuffle || matches!(cfg.method, Method::Mtl | Method::Replay);
        let mut batcher = Batcher::new(examples, cfg.train.batch_size, model.pad_id(), shuffle.then(|| cfg.seed.wrapping_add(ti as u64)));
        let epochs = match cfg.method {
            Method::Mtl => cfg.train.epochs,
            _ => cfg.tasks[ti].epochs.unwrap_or(cfg.train.epochs),
        };
        let accum = cfg.train.grad_accumulation;
        let mut steps = (epochs * batcher.batches_per_epoch()).div_ceil(accum);
        if let Some(max) = cfg.train.max_steps {
            steps = steps.min(max);
        }
        // Method setup: which parameters train, which decay, which penalty applies.
        let device = model.device();
        let mut osft = None;
        let (trainable, decayed): (Vec<(ParamId, usize)>, BTreeSet<ParamId>) = match cfg.method {
            Method::Osft => {
                let spinner = ProgressBar::new_spinner().with_message(format!("decomposing ({phase_name})"));
                spinner.enable_steady_tick(std::time::Duration::from_millis(200));
                let family = model.family();
                // `[osft] grow`: at least the previous task's k plus the growth.
                let floors = summaries.last().and_then(|prev| cfg.osft.grown_floors(&prev.ranks));
                let (m, o) = Osft::attach_with_floors(model, &cfg.osft, family, importance.as_ref(), floors.as_ref())?;
                spinner.finish_and_clear();
                model = m;
                tracing::info!(task = %phase_name, targets = o.resolved().len(), secs = t0.elapsed().as_secs_f32(), "decomposed");
                let trainable = trainable_ids(&model, Some(&o));
                // OSFT decays the low factors only: decaying anything else would move the frozen subspace.
                let decayed = o.low_param_ids().into_iter().map(|(id, _)| id).collect();
                osft = Some(o);
                (trainable, decayed)
            }
            Method::Lora | Method::Olora => {
                let (m, ids) = attach_lora(model, &lora_targets, cfg.lora.rank, cfg.lora.alpha, cfg.seed.wrapping_add(7919 * (ti as u64 + 1)));
                model = m;
                let decayed = ids.iter().map(|(id, _)| *id).collect();
                (ids, decayed)
            }
            Method::Seqft | Method::Ewc | Method::Replay | Method::Mtl => {
                let ids = trainable_ids(&model, None);
                let decayed = ids.iter().map(|(id, _)| *id).collect();
                (ids, decayed)
            }
        };
        // Resuming inside this task: the setup above was redone exactly as the first time; now
        // the module record (weights, attached factors, their parameter ids) and the optimizer
        // state replace it, and the batcher skips the batches already seen.
        let mid = match (&cx.resume, &cx.resume_dir) {
            (Some(s), Some(dir)) if ti == start => s.in_task.map(|it| (it, dir.clone())),
            _ => None,
        };
        let (trainable, decayed) = match &mid {
            Some((_, dir)) => {
                let rec = Recorder::<B>::load(&BinFileRecorder::<FullPrecisionSettings>::new(), dir.join("module"), &device)
                    .map_err(|e| TrainError::Config { path: dir.join("module.bin"), msg: e.to_string() })?;
                model = model.load_record(rec);
                if let Some(o) = osft.as_mut() {
                    o.refresh_ids(&mut model);
                    o.restore_frozen_storage(&mut model);
                }
                let mut low = vec![];
                if cfg.method != Method::Osft {
                    model.visit_linears_mut(&mut |_, lin| {
                        if let Some(d) = &lin.delta {
                            low.extend([(d.u.id, 2), (d.vt.id, 2)]);
                        }
                    });
                }
                let trainable = match (&osft, cfg.method) {
                    (Some(o), _) => trainable_ids(&model, Some(o)),
                    (None, Method::Lora | Method::Olora) => low,
                    _ => trainable_ids(&model, None),
                };
                let decayed: BTreeSet<ParamId> = match &osft {
                    Some(o) => o.low_param_ids().into_iter().map(|(id, _)| id).collect(),
                    None => trainable.iter().map(|(id, _)| *id).collect(),
                };
                (trainable, decayed)
            }
            None => (trainable, decayed),
        };
        let olora_pen = (cfg.method == Method::Olora).then(|| OloraPenalty::<B>::new(&olora_prev, cfg.olora.lambda1, cfg.olora.lambda2, &device));
        let ewc_pen = (cfg.method == Method::Ewc).then(|| EwcPenalty::<B>::new(&ewc, cfg.ewc.lambda, &device));
        let penalty = |m: &mut M| -> Option<burn::tensor::Tensor<B, 1>> {
            match (&olora_pen, &ewc_pen) {
                (Some(p), _) => p.value(m),
                (_, Some(p)) => p.value(m),
                _ => None,
            }
        };
        let mut opt = TaskOptimizer::<M, B>::new(&cfg.train, decayed);
        let mut first_step = 0;
        let mut done_secs = 0.0;
        if let Some((it, dir)) = &mid {
            opt = opt.load(dir, &device).map_err(|e| TrainError::Config { path: dir.clone(), msg: format!("optimizer state: {e}") })?;
            for _ in 0..it.steps_done * accum {
                let _ = batcher.next_batch();
            }
            first_step = it.steps_done;
            done_secs = it.train_secs;
            tracing::info!(task = %phase_name, step = it.steps_done, "resuming inside the task");
        }
        let mut param_names: BTreeMap<ParamId, String> = BTreeMap::new();
        model.visit_params(&mut |name, p| {
            let id = match p {
                ParamRef::Vector(p) => p.id,
                ParamRef::Matrix(p) => p.id,
            };
            param_names.insert(id, name.to_string());
        });
        model.visit_linears_mut(&mut |name, lin| {
            if let Some(d) = &lin.delta {
                param_names.insert(d.u.id, format!("{name}.delta.u"));
                param_names.insert(d.s.id, format!("{name}.delta.s"));
                param_names.insert(d.vt.id, format!("{name}.delta.vt"));
            }
        });
        let scx = StepContext {
            osft: osft.as_ref(),
            trainable: &trainable,
            lr: cfg.lr(),
            max_grad_norm: cfg.train.max_grad_norm,
            task: &phase_name,
            names: Some(&param_names),
            skip_non_finite: cfg.train.on_non_finite == crate::config::NonFinitePolicy::Skip,
            checkpoint_blocks: cfg.train.activation_checkpointing == crate::config::Checkpointing::Blocks,
            shards: row_shards::<B, M>(cfg, &model),
        };
        tracing::info!(task = %phase_name, examples = n_examples, steps, "training");
        let pb = bar(steps, &format!("train {phase_name}"));
        let (mut first, mut last) = mid.as_ref().map_or((f64::NAN, f64::NAN), |(it, _)| (it.first_loss, it.last_loss));
        pb.inc(first_step as u64);
        for step in first_step..steps {
            let micro: Vec<sculpt_data::Batch> = (0..accum).map(|_| batcher.next_batch()).collect();
            let (m, stats) = train_step_accumulated(model, &micro, &mut opt, &scx, step, Some(&penalty))?;
            model = m;
            if stats.skipped {
                tracing::warn!(task = %phase_name, step, loss = stats.loss, "non-finite loss or gradient: step skipped");
            } else {
                if first.is_nan() {
                    first = stats.loss;
                }
                last = stats.loss;
            }
            let line = serde_json::json!({"task": phase_name, "task_index": ti, "step": step, "loss": stats.loss, "penalty": stats.penalty, "grad_norm": stats.grad_norm, "lr": cfg.lr(), "skipped": stats.skipped});
            writeln!(metrics, "{line}").map_err(io_err(&metrics_path))?;
            pb.inc(1);
            let stop = cx.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
            let every = cfg.train.checkpoint_every;
            if step + 1 < steps && (stop || (every > 0 && (step + 1) % every == 0)) {
                metrics.flush().map_err(io_err(&metrics_path))?;
                let in_task = InTask { steps_done: step + 1, first_loss: first, last_loss: last, train_secs: done_secs + t0.elapsed().as_secs_f64() };
                let state = CheckpointState {
                    format: STATE_FORMAT,
                    method: cfg.method,
                    task_names: names.clone(),
                    completed: ti,
                    matrix: matrix.clone(),
                    tasks: summaries.clone(),
                    final_dtype: cx.final_dtype,
                    in_task: Some(in_task),
                };
                let dir = write_step_checkpoint(cx, &model, &opt, &state, &ewc, &olora_prev, &phase_name)?;
                if stop {
                    pb.finish_and_clear();
                    let resume = format!("checkpoint written to {}; `--resume` continues with step {} of this task", dir.display(), step + 1);
                    return Err(TrainError::Interrupted { task: phase_name.clone(), step, resume });
                }
            }
            if step % 50 == 0 || step + 1 == steps {
                tracing::debug!(task = %phase_name, step, loss = stats.loss, grad_norm = stats.grad_norm, "step");
            }
        }
        pb.finish_and_clear();
        metrics.flush().map_err(io_err(&metrics_path))?;
        // Task end: merge adapters / factors back into dense weights, update method state.
        let leakage = osft.as_ref().map(|o| o.leakage(&mut model));
        let ranks = osft.as_ref().map(|o| o.resolved()).unwrap_or_default();
        match cfg.method {
            Method::Osft | Method::Lora => merge(&mut model),
            Method::Olora => {
                append_rows(&mut olora_prev, adapter_a(&mut model));
                merge(&mut model);
            }
            Method::Ewc => ewc.update(&model, &tasks[ti].train, cfg.ewc.fisher_examples, cfg.ewc.gamma),
            _ => {}
        }
        let train_secs = done_secs + t0.elapsed().as_secs_f64();
        // `leakage = "U 6.7e-8, V 6.0e-8"`: the largest |U_hᵀ U_l| and |V_lᵀ V_h| entries (OSFT only).
        let leak = leakage.map(|(u, v)| format!("U {u:.1e}, V {v:.1e}"));
        tracing::info!(task = %phase_name, first_loss = first, last_loss = last, leakage = leak.as_deref(), secs = train_secs as f32, "task trained");
        let t1 = std::time::Instant::now();
        let column = if cfg.method == Method::Mtl { n_tasks } else { ti + 1 };
        evaluate_all(&model, &tasks, &mut matrix, column, cx, None)?;
        summaries.push(TaskSummary { name: phase_name, examples: n_examples, steps, first_loss: first, last_loss: last, train_secs, eval_secs: t1.elapsed().as_secs_f64(), ranks, leakage, calibration });
        let state = CheckpointState {
            format: STATE_FORMAT,
            method: cfg.method,
            task_names: names.clone(),
            completed: ti + 1,
            matrix: matrix.clone(),
            tasks: summaries.clone(),
            final_dtype: cx.final_dtype,
            in_task: None,
        };
        let dir = write_checkpoint(cx, &model, &state, &ewc, &olora_prev)?;
        remove_mid_task_checkpoints(&cfg.output, None);
        tracing::info!(checkpoint = %dir.display(), "checkpoint written");
        // A stop requested during the task's last step or its evaluation ends the run here,
        // before the next task's calibration and decomposition.
        if ti + 1 < phases && cx.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
            let resume = format!("checkpoint written to {}; `--resume` continues with the next task", dir.display());
            return Err(TrainError::Interrupted { task: summaries.last().map(|t| t.name.clone()).unwrap_or_default(), step: steps.saturating_sub(1), resume });
        }
    }
    // Final predictions for the record.
    let mut samples = vec![];
    if cfg.eval.enabled {
        for t in &tasks {
            let few = TaskData { name: t.name.clone(), train: vec![], eval: t.eval.iter().take(5).cloned().collect(), metric: t.metric };
            evaluate(&model, &few, cx, Some(&mut samples))?;
        }
    }
    let ranks_path = cfg.output.join("osft_ranks.json");
    std::fs::write(&ranks_path, serde_json::to_string_pretty(&summaries).expect("json")).map_err(io_err(&ranks_path))?;
    let results = RunResults { method: cfg.method, metrics: matrix.metrics(), matrix, tasks: summaries, samples };
    let rp = cfg.output.join("results.json");
    std::fs::write(&rp, serde_json::to_string_pretty(&results).expect("json")).map_err(io_err(&rp))?;
    Ok((model.no_grad().export(), results))
}

fn special_token(files: &ModelFiles, key: &str) -> String {
    let from_config = files.sidecar("tokenizer_config.json").and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()).and_then(|v| match &v[key] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    });
    from_config.unwrap_or_else(|| if key == "bos_token" { "<s>".into() } else { "</s>".into() })
}

/// Measure normalised layer importances on the first `osft.calibration.examples` examples of
/// `source` (padding masked). Returns them and a note for the run record.
fn measure_importance<B: AutodiffBackend, M: LanguageModel<B>>(
    model: &mut M,
    cfg: &RunConfig,
    source_name: &str,
    mut source: Vec<Example>,
) -> Result<(BTreeMap<String, f64>, String)> {
    let cal = &cfg.osft.calibration;
    source.truncate(cal.examples.max(1));
    let n = source.len();
    let patterns = cfg.osft.targets.clone().unwrap_or_else(|| default_targets(model.family()));
    let targets = TargetSet::new(&patterns)?;
    let mut batcher = Batcher::new(source, cfg.train.batch_size, model.pad_id(), None);
    let batches: Vec<sculpt_data::Batch> = (0..batcher.batches_per_epoch()).map(|_| batcher.next_batch()).collect();
    let t0 = std::time::Instant::now();
    let raw = model.calibration_importance(&targets, cal.non_square, &batches);
    let names: Vec<String> = raw.keys().cloned().collect();
    let values: Vec<f64> = raw.values().copied().collect();
    let norm = normalize_importance(&values);
    let mut note = format!("{n} examples of task `{source_name}`, padding masked, non-square layers: {:?}", cal.non_square);
    if let Some(warning) = sculpt_osft::rank::degenerate_importance(&values) {
        tracing::warn!("{warning}");
        note = format!("{note}; {warning}");
    }
    tracing::info!(secs = t0.elapsed().as_secs_f32(), %note, "measured layer importance");
    Ok((names.into_iter().zip(norm).collect(), note))
}
