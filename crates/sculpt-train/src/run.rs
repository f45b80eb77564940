//! A run: load the base model, train the task stream in order (OSFT re-decomposes the merged
//! weights at the start of every task and merges at its end), and write the outputs:
//!
//! ```text
//! <output>/run_config.toml      the resolved config
//! <output>/metrics.jsonl        one line per step: task, step, loss, grad_norm, lr
//! <output>/osft_ranks.json      per task: the resolved k of every target and the final leakage
//! <output>/model/               the final merged model as a Hugging Face folder
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::ParamId;
use burn::tensor::backend::AutodiffBackend;
use sculpt_data::{read_pretokenized, Batcher};
use sculpt_models::layers::{NamedParams, ParamRef};
use sculpt_models::{Model, Pretrained};
use sculpt_osft::importance::{measure, CalibrationMask};
use sculpt_osft::rank::normalize_importance;
use sculpt_osft::targets::{default_targets, TargetSet};
use sculpt_osft::{merge, CalibrationSource, Osft, ResolvedTarget};
use serde::Serialize;

use crate::config::{Method, RunConfig};
use crate::error::{Result, TrainError};
use crate::lm::LanguageModel;
use crate::optim::TaskOptimizer;
use crate::step::{train_step, StepContext};

/// What one task did.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    /// Task name.
    pub name: String,
    /// Optimizer steps.
    pub steps: usize,
    /// Loss at the first step.
    pub first_loss: f64,
    /// Loss at the last step.
    pub last_loss: f64,
    /// Resolved OSFT ranks (empty for other methods).
    pub ranks: Vec<ResolvedTarget>,
    /// `(max|U_hᵀ U_l|, max|Vt_l Vt_hᵀ|)` at the end of the task (OSFT only).
    pub leakage: Option<(f32, f32)>,
    /// How importances were measured, when the adaptive rule ran.
    pub calibration: Option<String>,
}

/// What the run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Per task.
    pub tasks: Vec<TaskSummary>,
    /// The saved final model.
    pub model_dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), source: e }
}

/// Run `cfg` on the device `device` of autodiff backend `B`.
pub fn train<B: AutodiffBackend>(cfg: &RunConfig, device: &B::Device) -> Result<RunSummary> {
    std::fs::create_dir_all(&cfg.output).map_err(io_err(&cfg.output))?;
    let cfg_path = cfg.output.join("run_config.toml");
    std::fs::write(&cfg_path, toml::to_string_pretty(cfg).expect("config serialises")).map_err(io_err(&cfg_path))?;
    let mut pre = Pretrained::<B>::load(&cfg.model, device)?;
    tracing::info!(family = pre.model.family(), tasks = cfg.tasks.len(), method = ?cfg.method, "run starts");
    // Take the network out of the Pretrained wrapper, train it, put it back to save.
    let (model, tasks) = match pre.model {
        Model::Llama(m) => {
            let (m, t) = run_stream(m, cfg)?;
            (Model::Llama(m), t)
        }
        Model::T5(m) => {
            let (m, t) = run_stream(m, cfg)?;
            (Model::T5(m), t)
        }
    };
    pre.model = model;
    let ranks_path = cfg.output.join("osft_ranks.json");
    std::fs::write(&ranks_path, serde_json::to_string_pretty(&tasks).expect("json")).map_err(io_err(&ranks_path))?;
    let model_dir = cfg.output.join("model");
    pre.save(&model_dir, None)?;
    tracing::info!(out = %model_dir.display(), "saved the final model");
    Ok(RunSummary { tasks, model_dir })
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

fn run_stream<B: AutodiffBackend, M: LanguageModel<B>>(mut model: M, cfg: &RunConfig) -> Result<(M, Vec<TaskSummary>)> {
    let metrics_path = cfg.output.join("metrics.jsonl");
    let mut metrics = std::io::BufWriter::new(std::fs::File::create(&metrics_path).map_err(io_err(&metrics_path))?);
    let mut summaries = vec![];
    let needs_importance = cfg.method == Method::Osft && Osft::<B>::needs_importance(&cfg.osft)?;
    let mut previous: Option<(String, Vec<sculpt_data::Example>)> = None;
    for (ti, task) in cfg.tasks.iter().enumerate() {
        let examples = read_pretokenized(&task.data, model.decoder_only(), model.vocab_size())?;
        let mut calibration = None;
        let importance = if needs_importance {
            let (source_name, source) = match (cfg.osft.calibration.source, &previous) {
                (CalibrationSource::Previous, Some((n, e))) => (n.clone(), e.clone()),
                _ => (task.name.clone(), examples.clone()),
            };
            let (imp, note) = measure_importance(&mut model, cfg, &source_name, source)?;
            calibration = Some(note);
            Some(imp)
        } else {
            None
        };
        previous = Some((task.name.clone(), examples.clone()));
        let n_examples = examples.len();
        let mut batcher =
            Batcher::new(examples, cfg.train.batch_size, model.pad_id(), cfg.train.shuffle.then(|| cfg.seed.wrapping_add(ti as u64)));
        let mut steps = cfg.train.epochs * batcher.batches_per_epoch();
        if let Some(max) = cfg.train.max_steps {
            steps = steps.min(max);
        }
        let t0 = std::time::Instant::now();
        let osft = match cfg.method {
            Method::Osft => {
                let family = model.family();
                let (m, o) = Osft::attach(model, &cfg.osft, family, importance.as_ref())?;
                model = m;
                tracing::info!(task = %task.name, targets = o.resolved().len(), secs = t0.elapsed().as_secs_f32(), "decomposed");
                Some(o)
            }
            Method::Seqft => None,
        };
        let trainable = trainable_ids(&model, osft.as_ref());
        // Weight decay: OSFT decays the low factors only (decaying anything else would move the
        // frozen subspace); plain fine-tuning decays every parameter.
        let decayed: BTreeSet<ParamId> = match &osft {
            Some(o) => o.low_param_ids().into_iter().map(|(id, _)| id).collect(),
            None => trainable.iter().map(|(id, _)| *id).collect(),
        };
        let mut opt = TaskOptimizer::<M, B>::new(&cfg.train, decayed);
        let cx = StepContext { osft: osft.as_ref(), trainable: &trainable, lr: cfg.train.lr, max_grad_norm: cfg.train.max_grad_norm, task: &task.name };
        tracing::info!(task = %task.name, examples = n_examples, steps, "training");
        let (mut first, mut last) = (f64::NAN, f64::NAN);
        for step in 0..steps {
            let batch = batcher.next_batch();
            let (m, stats) = train_step(model, &batch, &mut opt, &cx, step)?;
            model = m;
            if step == 0 {
                first = stats.loss;
            }
            last = stats.loss;
            let line = serde_json::json!({"task": task.name, "task_index": ti, "step": step, "loss": stats.loss, "grad_norm": stats.grad_norm, "lr": cfg.train.lr});
            writeln!(metrics, "{line}").map_err(io_err(&metrics_path))?;
            if step % 10 == 0 || step + 1 == steps {
                tracing::info!(task = %task.name, step, loss = stats.loss, grad_norm = stats.grad_norm, "step");
            }
        }
        metrics.flush().map_err(io_err(&metrics_path))?;
        let leakage = osft.as_ref().map(|o| o.leakage(&mut model));
        let ranks = osft.as_ref().map(|o| o.resolved()).unwrap_or_default();
        if osft.is_some() {
            merge(&mut model);
        }
        tracing::info!(task = %task.name, first_loss = first, last_loss = last, ?leakage, secs = t0.elapsed().as_secs_f32(), "task done");
        summaries.push(TaskSummary { name: task.name.clone(), steps, first_loss: first, last_loss: last, ranks, leakage, calibration });
    }
    // After the stream the model holds plain dense weights again; nothing more is trained.
    let model = model.no_grad();
    Ok((model, summaries))
}

/// Measure normalised layer importances on the first `osft.calibration.examples` examples of
/// `source` (padding masked). Returns them and a note for the run record.
fn measure_importance<B: AutodiffBackend, M: LanguageModel<B>>(
    model: &mut M,
    cfg: &RunConfig,
    source_name: &str,
    mut source: Vec<sculpt_data::Example>,
) -> Result<(std::collections::BTreeMap<String, f64>, String)> {
    let cal = &cfg.osft.calibration;
    source.truncate(cal.examples.max(1));
    let n = source.len();
    let patterns = cfg.osft.targets.clone().unwrap_or_else(|| default_targets(model.family()));
    let targets = TargetSet::new(&patterns)?;
    let mut batcher = Batcher::new(source, cfg.train.batch_size, model.pad_id(), None);
    let batches: Vec<sculpt_data::Batch> = (0..batcher.batches_per_epoch()).map(|_| batcher.next_batch()).collect();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(CalibrationMask::default()));
    let t0 = std::time::Instant::now();
    let raw = measure(model, &targets, cal.non_square, batches.len(), slot.clone(), |m, i| {
        slot.lock().expect("lock").mask = batches[i].attention_mask.iter().flatten().map(|&x| x as f32).collect();
        m.calibration_forward(&batches[i]);
    });
    let names: Vec<String> = raw.keys().cloned().collect();
    let values: Vec<f64> = raw.values().copied().collect();
    let norm = normalize_importance(&values);
    let note = format!("{n} examples of task `{source_name}`, padding masked, non-square layers: {:?}", cal.non_square);
    tracing::info!(secs = t0.elapsed().as_secs_f32(), %note, "measured layer importance");
    Ok((names.into_iter().zip(norm).collect(), note))
}
