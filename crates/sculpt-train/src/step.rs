//! One training step, top to bottom: forward → loss → backward → project the low-factor
//! gradients → clip → optimizer step → project the low factors → report. This is the only place
//! where gradients are changed.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use sculpt_data::Batch;
use sculpt_osft::Osft;

use crate::error::{Result, TrainError};
use crate::lm::LanguageModel;
use crate::optim::TaskOptimizer;

/// What a step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Task loss before the update (without any method penalty).
    pub loss: f64,
    /// The method's penalty term (EWC, O-LoRA), 0 when none.
    pub penalty: f64,
    /// Global gradient norm after projection, before clipping.
    pub grad_norm: f64,
    /// Seconds spent in the two projections (device synchronised around them).
    pub projection_secs: f64,
    /// Seconds spent clipping the gradients and in the optimizer update (device synchronised).
    pub optimizer_secs: f64,
    /// The step was skipped (non-finite loss or gradient with `skip_non_finite`): nothing changed.
    pub skipped: bool,
}

/// Everything fixed for the steps of one task.
pub struct StepContext<'a, B: AutodiffBackend> {
    /// OSFT state (none for plain fine-tuning).
    pub osft: Option<&'a Osft<B>>,
    /// Every trainable parameter as `(id, rank)`.
    pub trainable: &'a [(ParamId, usize)],
    /// Learning rate.
    pub lr: f64,
    /// Global-norm clip, 0 = off.
    pub max_grad_norm: f64,
    /// Task name (for errors).
    pub task: &'a str,
    /// Parameter names, to name the first non-finite gradient in errors.
    pub names: Option<&'a std::collections::BTreeMap<ParamId, String>>,
    /// Skip a step whose loss or gradient is not finite instead of stopping the run.
    pub skip_non_finite: bool,
    /// Per-block activation checkpointing ([`crate::checkpoint`]); op-level checkpointing is
    /// the backend's (`Autodiff<_, BalancedCheckpointing>`) and needs nothing here.
    pub checkpoint_blocks: bool,
    /// Row shards of each micro-batch whose forward and backward run side by side, each on its
    /// own fork of the model ([`row_shards`] picks it; 1 = one pass per micro-batch). The
    /// gradients are the batch's exactly: each shard's mean loss is weighted by its share of
    /// the batch's counted labels.
    pub shards: usize,
}

/// Models below this many parameters keep one pass per micro-batch under the automatic
/// choice: their operations are too small for two shards to gain (the 2-layer, width-64 demo
/// model trained about 1.2× slower with two).
pub const AUTO_SHARDS_MIN_PARAMS: usize = 10_000_000;

/// `[train] row_shards`, or the automatic choice for a model of `params` parameters:
/// [`host_shards`] from [`AUTO_SHARDS_MIN_PARAMS`] up, 1 below.
pub fn row_shards<B: AutodiffBackend>(configured: Option<usize>, params: usize) -> usize {
    match configured {
        Some(n) => n.max(1),
        None if params >= AUTO_SHARDS_MIN_PARAMS => host_shards::<B>(),
        None => 1,
    }
}

/// The row shards worth running side by side on backend `B`: one per worker thread on the host
/// backends, whose element-wise operations run on one core each (a step alone keeps about 1.3
/// of 2 cores busy); 1 on the kernel backends, where one device queue runs everything in order.
pub fn host_shards<B: AutodiffBackend>() -> usize {
    if sculpt_kernels::has_kernels::<B::InnerBackend>() {
        1
    } else {
        rayon::current_num_threads().max(1)
    }
}

fn squared_norm<B: AutodiffBackend>(grads: &GradientsParams, id: ParamId, rank: usize) -> f64 {
    let sq = match rank {
        1 => grads.get::<B::InnerBackend, 1>(id).map(|g| g.square().sum().into_scalar().elem::<f64>()),
        2 => grads.get::<B::InnerBackend, 2>(id).map(|g| g.square().sum().into_scalar().elem::<f64>()),
        r => panic!("parameters of rank {r} are not expected"),
    };
    sq.unwrap_or(0.0)
}

fn scale<B: AutodiffBackend>(grads: &mut GradientsParams, id: ParamId, rank: usize, factor: f64) {
    match rank {
        1 => {
            if let Some(g) = grads.remove::<B::InnerBackend, 1>(id) {
                grads.register(id, g * factor);
            }
        }
        _ => {
            if let Some(g) = grads.remove::<B::InnerBackend, 2>(id) {
                grads.register(id, g * factor);
            }
        }
    }
}

/// The labels of one row that count in the loss: every label but `-100`, and for decoder-only
/// models not the first (position `t` predicts label `t + 1`).
fn counted_labels(row: &[i64], decoder_only: bool) -> usize {
    let skip = usize::from(decoder_only);
    row.iter().skip(skip).filter(|&&l| l != sculpt_models::loss::IGNORE_INDEX).count()
}

/// Forward and backward of `batch` in row shards side by side (`cx.shards` of them), each on a
/// fork of `model` (fresh autodiff leaves with the same parameter ids, so the graphs are
/// independent). Returns the batch's mean loss and the gradients of `loss × scale`: shard `i`'s
/// mean is weighted by `counted_i / counted`, which sums to the whole batch's token mean.
/// `None` when the batch cannot be sharded (one row, or no counted label at all).
fn sharded_grads<B: AutodiffBackend, M: LanguageModel<B>>(model: &M, batch: &Batch, scale: f64, cx: &StepContext<'_, B>) -> Option<(f64, GradientsParams)> {
    use rayon::prelude::*;
    let rows = batch.input_ids.len();
    let p = cx.shards.min(rows);
    let counts: Vec<usize> = batch.labels.iter().map(|r| counted_labels(r, model.decoder_only())).collect();
    let total: usize = counts.iter().sum();
    if p < 2 || total == 0 {
        return None;
    }
    let device = model.device();
    let work: Vec<(M, Batch, f64)> = (0..p)
        .map(|i| (i * rows / p, (i + 1) * rows / p))
        .map(|(lo, hi)| (lo, hi, counts[lo..hi].iter().sum::<usize>() as f64 / total as f64))
        // A shard without counted labels adds nothing to the loss or the gradients.
        .filter(|&(_, _, w)| w > 0.0)
        .map(|(lo, hi, w)| {
            let shard = Batch {
                input_ids: batch.input_ids[lo..hi].to_vec(),
                attention_mask: batch.attention_mask[lo..hi].to_vec(),
                labels: batch.labels[lo..hi].to_vec(),
            };
            (model.clone().fork(&device), shard, w)
        })
        .collect();
    let (blocks, trainable) = (cx.checkpoint_blocks, cx.trainable);
    let parts: Vec<(f64, GradientsParams)> = work
        .into_par_iter()
        .map(|(m, shard, w)| {
            if blocks {
                let (value, g) = m.loss_grads_checkpointed(&shard, scale * w, trainable);
                (value * w, g)
            } else {
                let loss = m.loss(&shard);
                let value = loss.clone().into_scalar().elem::<f64>();
                (value * w, GradientsParams::from_grads((loss * (scale * w)).backward(), &m))
            }
        })
        .collect();
    let mut value = 0.0;
    let mut acc: Option<GradientsParams> = None;
    for (v, g) in parts {
        value += v;
        accumulate::<B>(&mut acc, g, trainable);
    }
    acc.map(|g| (value, g))
}

/// One micro-batch's forward: a graph still to back-propagate, or gradients already computed
/// (per-block checkpointing).
enum Pass<B: AutodiffBackend> {
    Graph(burn::tensor::Tensor<B, 1>),
    Done(GradientsParams),
}

/// A method's extra loss term on the current parameters (EWC, O-LoRA); `None` adds nothing.
pub type Penalty<'a, B, M> = &'a dyn Fn(&mut M) -> Option<burn::tensor::Tensor<B, 1>>;

/// One optimizer step on `batch`; `penalty` (when given) is added to the loss.
pub fn train_step<B: AutodiffBackend, M: LanguageModel<B>>(
    model: M,
    batch: &Batch,
    opt: &mut TaskOptimizer<M, B>,
    cx: &StepContext<'_, B>,
    step: usize,
    penalty: Option<Penalty<'_, B, M>>,
) -> Result<(M, StepStats)> {
    train_step_accumulated(model, std::slice::from_ref(batch), opt, cx, step, penalty)
}

/// Sum `from` into `into` for every trainable parameter.
pub(crate) fn add_grads<B: AutodiffBackend>(into: &mut GradientsParams, mut from: GradientsParams, trainable: &[(ParamId, usize)]) {
    for &(id, rank) in trainable {
        match rank {
            1 => {
                if let Some(g) = from.remove::<B::InnerBackend, 1>(id) {
                    let sum = match into.remove::<B::InnerBackend, 1>(id) {
                        Some(a) => a + g,
                        None => g,
                    };
                    into.register(id, sum);
                }
            }
            _ => {
                if let Some(g) = from.remove::<B::InnerBackend, 2>(id) {
                    let sum = match into.remove::<B::InnerBackend, 2>(id) {
                        Some(a) => a + g,
                        None => g,
                    };
                    into.register(id, sum);
                }
            }
        }
    }
}

/// `g` added into the running sum `acc` (which it starts when empty).
fn accumulate<B: AutodiffBackend>(acc: &mut Option<GradientsParams>, g: GradientsParams, trainable: &[(ParamId, usize)]) {
    match acc {
        None => *acc = Some(g),
        Some(a) => add_grads::<B>(a, g, trainable),
    }
}

/// One optimizer step over the micro-batches `batches` (gradient accumulation): the loss is the
/// mean of the micro-batch losses (each micro-batch's own token mean, as transformers' Trainer
/// accumulates), the penalty is added once, and the summed gradients go through projection,
/// clipping and the update exactly as a single batch's would.
pub fn train_step_accumulated<B: AutodiffBackend, M: LanguageModel<B>>(
    mut model: M,
    batches: &[Batch],
    opt: &mut TaskOptimizer<M, B>,
    cx: &StepContext<'_, B>,
    step: usize,
    penalty: Option<Penalty<'_, B, M>>,
) -> Result<(M, StepStats)> {
    assert!(!batches.is_empty(), "train_step: no batch");
    let parts = batches.len();
    let skipped = |model: M, loss: f64| Ok((model, StepStats { loss, penalty: f64::NAN, grad_norm: f64::NAN, projection_secs: 0.0, optimizer_secs: 0.0, skipped: true }));
    let mut loss_sum = 0.0;
    let mut penalty_value = 0.0;
    let mut acc: Option<GradientsParams> = None;
    for (i, batch) in batches.iter().enumerate() {
        // forward → loss (→ backward already, block by block, when checkpointing by blocks)
        let scale = 1.0 / parts as f64;
        let sharded = if cx.shards > 1 { sharded_grads(&model, batch, scale, cx) } else { None };
        let (value, pass) = if let Some((value, g)) = sharded {
            (value, Pass::Done(g))
        } else if cx.checkpoint_blocks {
            let (value, g) = model.loss_grads_checkpointed(batch, scale, cx.trainable);
            (value, Pass::Done(g))
        } else {
            let loss = model.loss(batch);
            (loss.clone().into_scalar().elem::<f64>(), Pass::Graph(if parts > 1 { loss / parts as f64 } else { loss }))
        };
        if !value.is_finite() {
            if cx.skip_non_finite {
                return skipped(model, value);
            }
            return Err(TrainError::NonFinite { task: cx.task.into(), step, what: format!("loss ({value})") });
        }
        loss_sum += value;
        let mut term = None;
        if i == 0 {
            if let Some(t) = penalty.and_then(|f| f(&mut model)) {
                penalty_value = t.clone().into_scalar().elem::<f64>();
                if !penalty_value.is_finite() {
                    return Err(TrainError::NonFinite { task: cx.task.into(), step, what: format!("penalty ({penalty_value})") });
                }
                term = Some(t);
            }
        }
        // backward
        let g = match pass {
            Pass::Graph(loss) => {
                let loss = match term {
                    Some(t) => loss + t,
                    None => loss,
                };
                GradientsParams::from_grads(loss.backward(), &model)
            }
            Pass::Done(mut g) => {
                if let Some(t) = term {
                    add_grads::<B>(&mut g, GradientsParams::from_grads(t.backward(), &model), cx.trainable);
                }
                g
            }
        };
        accumulate::<B>(&mut acc, g, cx.trainable);
    }
    let loss_value = loss_sum / parts as f64;
    let mut grads = acc.expect("at least one batch");
    // project: dU ← dU − U_h(U_hᵀ dU), dVt ← dVt − (dVt Vt_hᵀ) Vt_h
    let device = model.device();
    let mut projection_secs = 0.0;
    if let Some(osft) = cx.osft {
        let _ = B::sync(&device);
        let t = std::time::Instant::now();
        osft.project_grads(&mut grads);
        let _ = B::sync(&device);
        projection_secs += t.elapsed().as_secs_f64();
    }
    // clip the global norm (PyTorch's clip_grad_norm_ rule)
    let t_opt = std::time::Instant::now();
    let squares: Vec<f64> = cx.trainable.iter().map(|&(id, r)| squared_norm::<B>(&grads, id, r)).collect();
    let norm = squares.iter().sum::<f64>().sqrt();
    if !norm.is_finite() {
        if cx.skip_non_finite {
            return skipped(model, loss_value);
        }
        let first = cx.trainable.iter().zip(&squares).find(|(_, sq)| !sq.is_finite()).map(|((id, _), _)| *id);
        let name = first.map(|id| cx.names.and_then(|n| n.get(&id)).cloned().unwrap_or_else(|| format!("parameter {id}")));
        let what = match name {
            Some(n) => format!("gradient of `{n}` (the first non-finite one; global norm {norm})"),
            None => format!("gradient norm ({norm})"),
        };
        return Err(TrainError::NonFinite { task: cx.task.into(), step, what });
    }
    if cx.max_grad_norm > 0.0 {
        let coef = cx.max_grad_norm / (norm + 1e-6);
        if coef < 1.0 {
            for &(id, r) in cx.trainable {
                scale::<B>(&mut grads, id, r, coef);
            }
        }
    }
    // optimizer step
    let mut model = opt.step(cx.lr, model, grads, cx.trainable);
    let _ = B::sync(&device);
    let optimizer_secs = t_opt.elapsed().as_secs_f64();
    // project the low factors: U_l ← U_l − U_h(U_hᵀ U_l), Vt_l ← Vt_l − (Vt_l Vt_hᵀ) Vt_h
    if let Some(osft) = cx.osft {
        let _ = B::sync(&device);
        let t = std::time::Instant::now();
        osft.project_params(&mut model);
        let _ = B::sync(&device);
        projection_secs += t.elapsed().as_secs_f64();
    }
    Ok((model, StepStats { loss: loss_value, penalty: penalty_value, grad_norm: norm, projection_secs, optimizer_secs, skipped: false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    #[test]
    fn row_shards_follow_the_config_then_the_model_size() {
        assert_eq!(row_shards::<Ad>(Some(3), 0), 3, "an explicit count wins");
        assert_eq!(row_shards::<Ad>(None, AUTO_SHARDS_MIN_PARAMS - 1), 1, "small models keep one pass");
        assert_eq!(row_shards::<Ad>(None, AUTO_SHARDS_MIN_PARAMS), rayon::current_num_threads().max(1), "one per worker thread on the CPU backend");
    }

    #[test]
    fn counted_labels_skip_the_first_position_of_decoder_only_rows() {
        let row = [-100, 5, -100, 7, 8];
        assert_eq!(counted_labels(&row, true), 3);
        assert_eq!(counted_labels(&[5, -100, 7], true), 1);
        assert_eq!(counted_labels(&[5, -100, 7], false), 2);
    }
}
