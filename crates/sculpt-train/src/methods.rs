//! The baselines beside OSFT, on the same loop: LoRA and O-LoRA adapters, and the EWC penalty.
//! (Sequential full fine-tuning, replay and multi-task learning need no extra state; `run.rs`
//! only changes which examples they see.)
//!
//! - **LoRA**: every target linear gets `ΔW = (α/r) B A` with `A: [r, in]` drawn from
//!   `U(−1/√in, 1/√in)` (PEFT's kaiming-uniform bound) and `B: [out, r] = 0`; everything else is
//!   frozen. At the end of a task the adapter is merged into the weight.
//! - **O-LoRA**: the same adapter, plus `λ1 Σ_targets Σ |A_t A_prevᵀ|` against the rows of every
//!   earlier task's `A` and `λ2 Σ (‖A_t‖ + ‖B_t‖)`. Earlier adapters are merged into the weight
//!   after their task (identical forward to keeping them beside it, frozen); their `A` rows are
//!   kept for the penalty.
//! - **EWC** (online): after task `t`, `F ← γ F + F_t` with `F_t` the mean squared gradient of
//!   one-example losses, and `θ* ←` the current weights; later tasks add `(λ/2) Σ F (θ − θ*)²`.
//!
//! Method state lives on the host by parameter name, so it can be checkpointed and resumed.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use sculpt_data::{Batcher, Example};
use sculpt_models::layers::{to_host, LowRank, NamedParams, ParamRef};
use sculpt_models::HostTensor;
use sculpt_osft::targets::TargetSet;

use crate::lm::LanguageModel;

fn upload<B: burn::tensor::backend::Backend, const D: usize>(t: &HostTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

/// Attach fresh LoRA adapters to the targets of `model` (all other parameters frozen). Returns
/// the model and the trainable parameters `(id, rank)`.
pub fn attach_lora<B: AutodiffBackend, M: LanguageModel<B>>(model: M, targets: &TargetSet, rank: usize, alpha: f64, seed: u64) -> (M, Vec<(ParamId, usize)>) {
    let mut model = model.no_grad();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ids = vec![];
    model.visit_linears_mut(&mut |name, lin| {
        if !targets.matches(name) {
            return;
        }
        let [out, inp] = lin.weight.val().dims();
        let r = rank.min(out).min(inp);
        let bound = 1.0 / (inp as f32).sqrt();
        let a: Vec<f32> = (0..r * inp).map(|_| rng.random_range(-bound..bound)).collect();
        let device = lin.weight.val().device();
        let delta = LowRank {
            u: Param::from_tensor(Tensor::zeros([out, r], &device)),
            s: Param::from_tensor(Tensor::full([r], alpha / r as f64, &device)).set_require_grad(false),
            vt: Param::from_tensor(Tensor::from_data(TensorData::new(a, [r, inp]), &device)),
        };
        ids.push((delta.u.id, 2));
        ids.push((delta.vt.id, 2));
        lin.delta = Some(delta);
    });
    (model, ids)
}

/// The `A` factors (`[r, in]`) of the attached adapters, by target name.
pub fn adapter_a<B: AutodiffBackend, M: LanguageModel<B>>(model: &mut M) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    model.visit_linears_mut(&mut |name, lin| {
        if let Some(d) = &lin.delta {
            out.insert(name.to_string(), to_host(d.vt.val().inner()));
        }
    });
    out
}

/// Append this task's `A` rows to the earlier tasks' (`previous[name]: [rows, in]`).
pub fn append_rows(previous: &mut BTreeMap<String, HostTensor>, new: BTreeMap<String, HostTensor>) {
    for (name, a) in new {
        match previous.get_mut(&name) {
            Some(p) => {
                p.shape[0] += a.shape[0];
                p.data.extend(a.data);
            }
            None => {
                previous.insert(name, a);
            }
        }
    }
}

/// O-LoRA's penalty on the attached adapters.
pub struct OloraPenalty<B: AutodiffBackend> {
    previous: BTreeMap<String, Tensor<B, 2>>,
    lambda1: f64,
    lambda2: f64,
}

impl<B: AutodiffBackend> OloraPenalty<B> {
    /// Against the earlier tasks' `A` rows (uploaded once).
    pub fn new(previous: &BTreeMap<String, HostTensor>, lambda1: f64, lambda2: f64, device: &B::Device) -> Self {
        OloraPenalty { previous: previous.iter().map(|(n, t)| (n.clone(), upload::<B, 2>(t, device))).collect(), lambda1, lambda2 }
    }

    /// `λ1 Σ |A_t A_prevᵀ| + λ2 Σ (‖A_t‖ + ‖B_t‖)`, or `None` when both terms are off or empty.
    pub fn value<M: LanguageModel<B>>(&self, model: &mut M) -> Option<Tensor<B, 1>> {
        let mut total: Option<Tensor<B, 1>> = None;
        let mut add = |t: Tensor<B, 1>| total = Some(match total.take() { Some(x) => x + t, None => t });
        model.visit_linears_mut(&mut |name, lin| {
            let Some(d) = &lin.delta else { return };
            if self.lambda1 > 0.0 {
                if let Some(prev) = self.previous.get(name) {
                    add(d.vt.val().matmul(prev.clone().transpose()).abs().sum() * self.lambda1);
                }
            }
            if self.lambda2 > 0.0 {
                add((d.vt.val().square().sum().sqrt() + d.u.val().square().sum().sqrt()) * self.lambda2);
            }
        });
        total
    }
}

/// Online EWC state: the accumulated diagonal Fisher and the anchor weights, by parameter name.
#[derive(Debug, Clone, Default)]
pub struct EwcState {
    /// `F` per parameter.
    pub fisher: BTreeMap<String, HostTensor>,
    /// `θ*` per parameter.
    pub anchor: BTreeMap<String, HostTensor>,
}

/// Trainable parameters by name: `(name, id, rank)`.
pub fn named_trainable<B: AutodiffBackend, M: NamedParams<B>>(model: &M) -> Vec<(String, ParamId, usize)> {
    let mut out = vec![];
    model.visit_params(&mut |name, p| match p {
        ParamRef::Vector(p) if p.is_require_grad() => out.push((name.to_string(), p.id, 1)),
        ParamRef::Matrix(p) if p.is_require_grad() => out.push((name.to_string(), p.id, 2)),
        _ => {}
    });
    out
}

fn grad_host<B: AutodiffBackend>(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<HostTensor> {
    match rank {
        1 => grads.get::<B::InnerBackend, 1>(id).map(to_host),
        _ => grads.get::<B::InnerBackend, 2>(id).map(to_host),
    }
}

impl EwcState {
    /// After a task: estimate `F_t` on up to `n` one-example losses of `examples`, fold it in with
    /// decay `gamma`, and anchor at the current weights.
    pub fn update<B: AutodiffBackend, M: LanguageModel<B>>(&mut self, model: &M, examples: &[Example], n: usize, gamma: f64) {
        let params = named_trainable::<B, M>(model);
        let take: Vec<Example> = examples.iter().take(n.max(1)).cloned().collect();
        let count = take.len();
        let mut batcher = Batcher::new(take, 1, model.pad_id(), None);
        let mut sums: BTreeMap<String, HostTensor> = BTreeMap::new();
        for _ in 0..count {
            let batch = batcher.next_batch();
            let grads = GradientsParams::from_grads(model.loss(&batch).backward(), model);
            for (name, id, rank) in &params {
                let Some(g) = grad_host::<B>(&grads, *id, *rank) else { continue };
                let e = sums.entry(name.clone()).or_insert_with(|| HostTensor::new(g.shape.clone(), vec![0.0; g.data.len()]));
                for (s, x) in e.data.iter_mut().zip(&g.data) {
                    *s += x * x / count as f32;
                }
            }
        }
        for (name, f_t) in sums {
            match self.fisher.get_mut(&name) {
                Some(f) => {
                    for (a, b) in f.data.iter_mut().zip(&f_t.data) {
                        *a = gamma as f32 * *a + b;
                    }
                }
                None => {
                    self.fisher.insert(name, f_t);
                }
            }
        }
        self.anchor.clear();
        model.visit_params(&mut |name, p| {
            if self.fisher.contains_key(name) {
                let t = match p {
                    ParamRef::Vector(p) => to_host(p.val().inner()),
                    ParamRef::Matrix(p) => to_host(p.val().inner()),
                };
                self.anchor.insert(name.to_string(), t);
            }
        });
    }
}

/// The EWC penalty of one task, uploaded once.
pub struct EwcPenalty<B: AutodiffBackend> {
    vectors: BTreeMap<String, (Tensor<B, 1>, Tensor<B, 1>)>,
    matrices: BTreeMap<String, (Tensor<B, 2>, Tensor<B, 2>)>,
    lambda: f64,
}

impl<B: AutodiffBackend> EwcPenalty<B> {
    /// From the state (empty before the first task's end).
    pub fn new(state: &EwcState, lambda: f64, device: &B::Device) -> Self {
        let (mut vectors, mut matrices) = (BTreeMap::new(), BTreeMap::new());
        for (name, f) in &state.fisher {
            let a = &state.anchor[name];
            match f.shape.len() {
                1 => {
                    vectors.insert(name.clone(), (upload::<B, 1>(f, device), upload::<B, 1>(a, device)));
                }
                _ => {
                    matrices.insert(name.clone(), (upload::<B, 2>(f, device), upload::<B, 2>(a, device)));
                }
            }
        }
        EwcPenalty { vectors, matrices, lambda }
    }

    /// `(λ/2) Σ F (θ − θ*)²`, or `None` when there is nothing to anchor to.
    pub fn value<M: NamedParams<B>>(&self, model: &M) -> Option<Tensor<B, 1>> {
        if self.lambda == 0.0 || (self.vectors.is_empty() && self.matrices.is_empty()) {
            return None;
        }
        let mut total: Option<Tensor<B, 1>> = None;
        model.visit_params(&mut |name, p| {
            let term = match p {
                ParamRef::Vector(p) => self.vectors.get(name).map(|(f, a)| ((p.val() - a.clone()).square() * f.clone()).sum()),
                ParamRef::Matrix(p) => self.matrices.get(name).map(|(f, a)| ((p.val() - a.clone()).square() * f.clone()).sum()),
            };
            if let Some(t) = term {
                total = Some(match total.take() { Some(x) => x + t, None => t });
            }
        });
        total.map(|t| t * (self.lambda / 2.0))
    }
}
