//! OSFT attached to a model: every target linear `W` is split by SVD into a frozen high part and
//! a trainable low part, `W = W_high + U_l diag(s_l) Vt_l`, and the low factors are kept
//! orthogonal to the frozen bases `U_h`, `Vt_h` (form (C) of the spec).
//!
//! `W_high` is stored dense as `W − U_l0 diag(s_l0) Vt_l0` (the exact base minus the initial low
//! part), so the model output at step 0 equals the original model's up to one fp32 rounding,
//! not up to the SVD's round-off, and the merged weight is `W + (U_l S Vt_l − U_l0 S0 Vt_l0)`.
//! With `[osft] frozen_form = "factors"` it is held as `U_h diag(s_h) Vt_h` instead where that
//! takes less memory ([`FrozenForm`]), sharing the projection bases.
//! The projection bases `U_h` (`[n, k]`) and `Vt_h` (`[k, m]`) live here, outside the model, on
//! the same device, and never change during a task.

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use sculpt_models::layers::{set_low_rank_form, LowRank, LowRankForm, NamedParams};
use serde::{Deserialize, Serialize};

use crate::error::{OsftError, Result};
use crate::project::{project_u, project_vt};
use crate::rank::{RankOverride, RankPolicy, RankRule};
use crate::svd::{randomized_svd, thin_svd, RsvdOptions, Svd};
use crate::targets::{default_targets, TargetSet};

/// How target matrices are decomposed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "method", deny_unknown_fields)]
pub enum SvdMethod {
    /// Exact thin SVD (faer, fp32) on the host.
    Exact,
    /// Exact thin SVD computed in f64 on the host.
    ExactF64,
    /// Symmetric eigendecomposition of the Gram matrix in f64 on the host (the fast CPU path).
    #[default]
    Gram,
    /// Blocked randomized SVD with a full-width sketch.
    Randomized {
        /// Power iterations.
        #[serde(default = "one")]
        power_iters: usize,
        /// Gram–Schmidt block width.
        #[serde(default = "sixty_four")]
        block: usize,
    },
}

fn one() -> usize {
    1
}
fn sixty_four() -> usize {
    64
}

/// The `[osft]` section of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OsftConfig {
    /// Regexes selecting target modules by Hugging Face name (default: the family's projections).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// Retained-rank rule.
    #[serde(default)]
    pub rank: RankRule,
    /// Per-module overrides, first match wins.
    #[serde(default)]
    pub rank_overrides: Vec<RankOverride>,
    /// Decomposition method.
    #[serde(default)]
    pub svd: SvdMethod,
    /// Also train embeddings, heads and norms (unprojected), as mini_trainer does. Off by default (PEFT).
    #[serde(default)]
    pub train_non_targets: bool,
    /// Calibration for the adaptive rank rule.
    #[serde(default)]
    pub calibration: CalibrationConfig,
    /// How the projections run.
    #[serde(default)]
    pub projection: ProjectionImpl,
    /// Which basis each side's projection multiplies by.
    #[serde(default, skip_serializing_if = "is_default_bases")]
    pub bases: ProjectionBases,
    /// Grow the frozen rank over a stream, as a fraction of `R` per task (off by default: the
    /// paper re-splits every task by its rule alone). From a stream's second task on, each
    /// target keeps at least the previous task's `k` plus `⌊grow·R⌋` frozen, capped at `R − 1`;
    /// `0` only forbids `k` to fall. [OSL] and the PEFT docs budget long streams this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grow: Option<f64>,
    /// How the attached low-rank terms multiply: the cheaper form per call (`auto`), or always
    /// `factored` or `merged` ([`LowRankForm`]).
    #[serde(default, skip_serializing_if = "is_auto_form")]
    pub forward: LowRankForm,
    /// Storage of each target's frozen dense part `W_high`: `fp32` (default) or `bf16`
    /// ([`FrozenPrecision`]).
    #[serde(default, skip_serializing_if = "is_fp32_frozen")]
    pub frozen_precision: FrozenPrecision,
    /// How each target's frozen high part is held: the dense `W_high` (default) or its factors
    /// `U_h diag(s_h) Vt_h` where that takes less memory ([`FrozenForm`]).
    #[serde(default, skip_serializing_if = "is_dense_frozen")]
    pub frozen_form: FrozenForm,
}

fn is_dense_frozen(f: &FrozenForm) -> bool {
    *f == FrozenForm::Dense
}

/// How a target's frozen high part is held (`[osft] frozen_form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FrozenForm {
    /// The dense `W_high = W − U_l0 diag(s_l0) Vt_l0`: the model at step 0 is the original up
    /// to one fp32 rounding.
    #[default]
    Dense,
    /// `U_h diag(s_h) Vt_h`, on every target where the factors take less memory than the dense
    /// matrix ([`high_as_factors`]). A side that projects through its frozen basis shares it
    /// with the forward, so only the other side's factor is new: a non-square target (LLaMA's
    /// MLP) keeps `k·min(n, m) + k` new numbers instead of `n·m`, and a square one with
    /// `k ≤ R/2` (both sides on their frozen bases) only `s_h`; a square one with `k > R/2`
    /// (both sides on the complement) stays dense. The products then cost
    /// `k(n + m)` per token instead of `nm` (+3 % on LLaMA-2-7B's MLP at `unfreeze` 0.25; a call
    /// with many tokens may form the whole matrix instead, by
    /// [`sculpt_models::layers::merged_is_cheaper_on_factors`]), and the model at step 0 (and each merge) is
    /// the original up to the SVD's reconstruction error (≤ 1e-5 relative) instead of one
    /// rounding. Targets where the factors would not save memory stay dense.
    Factors,
}

/// Whether an `n × m` target retaining `k` directions holds its high part as factors under
/// `form`: only where `U_h`, `s_h`, `Vt_h` cost fewer new numbers than the dense `n·m` (a side
/// projecting through its frozen basis shares it, see [`ProjectionBases::complement`]).
pub fn high_as_factors(form: FrozenForm, bases: ProjectionBases, n: usize, m: usize, k: usize) -> bool {
    if form == FrozenForm::Dense {
        return false;
    }
    let new_u = if bases.complement(n, n, m, k) { n * k } else { 0 };
    let new_vt = if bases.complement(m, n, m, k) { k * m } else { 0 };
    new_u + new_vt + k < n * m
}

fn is_fp32_frozen(p: &FrozenPrecision) -> bool {
    *p == FrozenPrecision::Fp32
}

/// Storage of the frozen dense `W_high` (`[osft] frozen_precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FrozenPrecision {
    /// fp32: the model at step 0 is the original up to one fp32 rounding.
    #[default]
    Fp32,
    /// bf16: half the memory of the largest frozen tensor (LLaMA-2-7B: 12 GiB less). `W_high` is
    /// rounded once to bf16 (8 significant bits) at each decomposition, so the model at step 0
    /// and the merged model differ from the fp32 split by that rounding. Products read it in the
    /// layer's compute precision: with fp32 compute a block's fp32 copies live during its
    /// forward and backward (with per-block checkpointing, one block's at a time); with
    /// `[train] precision = "bf16"` it is read as it is. The low factors, bases, gradients and
    /// optimizer state stay fp32, so the projections and the orthogonality are unchanged.
    Bf16,
}

fn is_auto_form(f: &LowRankForm) -> bool {
    *f == LowRankForm::Auto
}

impl OsftConfig {
    /// The smallest `k` that `[osft] grow` allows for each target after a task that froze
    /// `previous` (by module name): `None` when growth is off.
    pub fn grown_floors(&self, previous: &[ResolvedTarget]) -> Option<BTreeMap<String, usize>> {
        let grow = self.grow?;
        Some(previous.iter().map(|t| (t.name.clone(), crate::rank::grown_floor(t.k, t.n.min(t.m), grow))).collect())
    }
}

fn is_default_bases(b: &ProjectionBases) -> bool {
    *b == ProjectionBases::default()
}

/// The basis of each side's projection (`[osft] bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionBases {
    /// The smaller of two equal projections, per side. A side whose dimension is `R` (the `n`
    /// rows when `n ≤ m`, the `m` columns when `m ≤ n`) is spanned by the frozen and the initial
    /// low singular vectors together. There `I − U_h U_hᵀ = U_⊥ U_⊥ᵀ`, with `U_⊥` the low basis
    /// at decomposition. When `r < k`, `x ↦ U_⊥(U_⊥ᵀ x)` costs `r/k` of `x − U_h(U_hᵀ x)` and
    /// stores `r/k` of the basis. Other sides use the frozen basis.
    #[default]
    Auto,
    /// Always the frozen bases `U_h`, `Vt_h` (the spec's formula, on every side).
    High,
}

impl ProjectionBases {
    /// Whether the side of dimension `dim` (`n` or `m`) of an `n × m` target that retains `k`
    /// of its `R = min(n, m)` directions projects through the complement basis.
    pub fn complement(self, dim: usize, n: usize, m: usize, k: usize) -> bool {
        let r = n.min(m);
        self == ProjectionBases::Auto && dim == r && r - k < k
    }
}

/// The implementation of the training step's projections (`[osft] projection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionImpl {
    /// The cubecl kernels on the backends that have them (wgpu, cuda), tensor ops elsewhere.
    #[default]
    Kernel,
    /// burn tensor ops (two matmuls and a subtraction) on every backend.
    Tensor,
}

/// Which data the adaptive rule's importance is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationSource {
    /// The previous task's training data (the paper); the first task uses its own data.
    #[default]
    Previous,
    /// The current task's training data.
    Current,
}

/// `[osft.calibration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    /// Number of calibration examples (the authors' draft uses 128).
    #[serde(default = "d_examples")]
    pub examples: usize,
    /// Where they come from.
    #[serde(default)]
    pub source: CalibrationSource,
    /// How non-square layers are compared.
    #[serde(default)]
    pub non_square: crate::importance::NonSquare,
}

fn d_examples() -> usize {
    128
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig { examples: d_examples(), source: CalibrationSource::Previous, non_square: Default::default() }
    }
}


/// What was decided for one target (logged and saved with the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedTarget {
    /// Hugging Face module name.
    pub name: String,
    /// Rows (`out`).
    pub n: usize,
    /// Columns (`in`).
    pub m: usize,
    /// Retained (frozen) rank.
    pub k: usize,
    /// Trainable rank `min(n, m) − k`.
    pub r_low: usize,
    /// Normalised importance, when the adaptive rule ran.
    pub importance: Option<f64>,
    /// The rule that applied.
    pub rule: RankRule,
    /// The least `k` that `[osft] grow` required (the previous task's `k` plus the growth),
    /// when it applied; `k` is the larger of it and the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<usize>,
    /// Whether the high part is held as factors (`[osft] frozen_form = "factors"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub high_factors: bool,
}

/// One side's projection basis.
#[derive(Clone)]
enum Basis<B: Backend> {
    /// The frozen basis (`U_h: [n, k]`, or `Vt_h: [k, m]` as rows): `x − U_h(U_hᵀ x)`.
    High(Tensor<B, 2>),
    /// The complement basis (`U_⊥: [n, r]`, or `Vt_⊥: [r, m]`), the low factors at
    /// decomposition. `U_⊥(U_⊥ᵀ x)` is the same projection (see [`ProjectionBases::Auto`]).
    Low(Tensor<B, 2>),
}

struct Target<B: AutodiffBackend> {
    info: ResolvedTarget,
    u_basis: Basis<B::InnerBackend>,
    vt_basis: Basis<B::InnerBackend>,
    u_id: ParamId,
    s_id: ParamId,
    vt_id: ParamId,
}

/// The OSFT state of one task: projection bases and the ids of the trainable factors.
pub struct Osft<B: AutodiffBackend> {
    targets: Vec<Target<B>>,
    by_name: BTreeMap<String, usize>,
    kernels: bool,
    frozen: FrozenPrecision,
}

fn upload<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn slice_cols(a: &[f32], n: usize, cols: usize, from: usize, to: usize) -> Vec<f32> {
    (0..n).flat_map(|i| a[i * cols + from..i * cols + to].iter().copied()).collect()
}

impl<B: AutodiffBackend> Osft<B> {
    /// Whether `cfg` needs layer importances (an adaptive rule applies somewhere).
    pub fn needs_importance(cfg: &OsftConfig) -> Result<bool> {
        Ok(RankPolicy::new(cfg.rank.clone(), &cfg.rank_overrides)?.needs_importance())
    }

    /// Decompose the targets of `model` and attach trainable low factors.
    ///
    /// `importance` (normalised, by module name) is needed when a rank rule is adaptive.
    pub fn attach<M: Module<B> + NamedParams<B>>(
        model: M,
        cfg: &OsftConfig,
        family: &str,
        importance: Option<&BTreeMap<String, f64>>,
    ) -> Result<(M, Self)> {
        Self::attach_with_floors(model, cfg, family, importance, None)
    }

    /// [`Osft::attach`] with a least retained rank per target (by module name, from
    /// [`OsftConfig::grown_floors`]): `k = max(rule's k, floor)`, capped at `R − 1`.
    pub fn attach_with_floors<M: Module<B> + NamedParams<B>>(
        model: M,
        cfg: &OsftConfig,
        family: &str,
        importance: Option<&BTreeMap<String, f64>>,
        floors: Option<&BTreeMap<String, usize>>,
    ) -> Result<(M, Self)> {
        let patterns = cfg.targets.clone().unwrap_or_else(|| default_targets(family));
        let targets = TargetSet::new(&patterns)?;
        let policy = RankPolicy::new(cfg.rank.clone(), &cfg.rank_overrides)?;
        let mut model = if cfg.train_non_targets { model } else { model.no_grad() };
        // Refused before any weight is copied off the device.
        if cfg.frozen_precision == FrozenPrecision::Bf16 && model.devices().first().is_some_and(|d| !B::supports_dtype(d, burn::tensor::DType::BF16)) {
            return Err(OsftError::UnsupportedDtype { key: "[osft] frozen_precision = \"bf16\"".into() });
        }

        // 1. Collect the effective dense weights of the targets.
        //    On a backend with the cubecl kernels the randomized SVD runs there, on the
        //    weights where they already are (the host copies still give `W_high`).
        let on_device = match cfg.svd {
            SvdMethod::Randomized { power_iters, block } if sculpt_kernels::has_kernels::<B::InnerBackend>() => {
                Some(RsvdOptions { power_iters, block, ..Default::default() })
            }
            _ => None,
        };
        let mut found: Vec<(String, usize, usize, Vec<f32>)> = vec![];
        let mut device_weights: Vec<Tensor<B::InnerBackend, 2>> = vec![];
        model.visit_linears_mut(&mut |name, lin| {
            if targets.matches(name) {
                let w = lin.effective_weight();
                if on_device.is_some() {
                    device_weights.push(w.clone().inner());
                }
                let w = sculpt_models::layers::to_host(w);
                found.push((name.to_string(), w.shape[0], w.shape[1], w.data));
            }
        });
        if found.is_empty() {
            return Err(OsftError::NoTargets { patterns });
        }
        // 2. Resolve ranks.
        let mut infos = vec![];
        for (name, n, m, _) in &found {
            let rule = policy.rule_for(name).clone();
            let imp = if rule.is_adaptive() {
                Some(*importance.and_then(|i| i.get(name)).ok_or_else(|| OsftError::BadRankRule {
                    key: "osft.rank".into(),
                    msg: format!("the adaptive rule needs an importance for `{name}`"),
                })?)
            } else {
                None
            };
            if n.min(m) < &2 {
                return Err(OsftError::RankOutOfRange { name: name.clone(), n: *n, m: *m, rank: 1, max: n.min(m).saturating_sub(1) });
            }
            let floor = floors.and_then(|f| f.get(name)).copied();
            let k = rule.retained(*n, *m, imp).max(floor.unwrap_or(0)).min(n.min(m) - 1);
            let high_factors = high_as_factors(cfg.frozen_form, cfg.bases, *n, *m, k);
            infos.push(ResolvedTarget { name: name.clone(), n: *n, m: *m, k, r_low: n.min(m) - k, importance: imp, rule, floor, high_factors });
        }
        if cfg.frozen_form == FrozenForm::Factors {
            let n = infos.iter().filter(|t| t.high_factors).count();
            if n == 0 {
                tracing::warn!("[osft] frozen_form = \"factors\": no target holds less as factors than dense (square targets with k > R/2 project through their complements), so every high part stays dense");
            } else {
                tracing::info!(factored = n, targets = infos.len(), "high parts held as factors");
            }
        }
        // 3. Decompose, matrices in parallel (each SVD single-threaded: better use of the cores
        //    than parallelising inside one small SVD), and split each on the thread that
        //    decomposed it: the low factors, `W_high = W − U_l diag(s_l) Vt_l`, and each side's
        //    projection basis.
        let mats: Vec<(usize, usize, &[f32])> = found.iter().map(|(_, n, m, w)| (*n, *m, w.as_slice())).collect();
        let split = |i: usize, svd: std::result::Result<Svd, String>| -> Result<Split> {
            let svd = svd.map_err(|msg| OsftError::Svd { name: infos[i].name.clone(), msg })?;
            Ok(Split::new(&svd, mats[i].2, infos[i].k, &cfg.bases, infos[i].high_factors))
        };
        let splits: Vec<Result<Split>> = match on_device {
            // On the device: one matrix at a time (the device is busy enough), then the splits.
            Some(opts) => {
                let svds: Vec<_> = device_weights.into_iter().map(|a| crate::rsvd_device::randomized_svd_device(a, opts)).collect();
                svds.into_par_iter().enumerate().map(|(i, svd)| split(i, svd)).collect()
            }
            None => decompose_all_then(&mats, cfg.svd, split),
        };
        let splits: Vec<(ResolvedTarget, Split)> = infos.into_iter().zip(splits).map(|(info, s)| s.map(|s| (info, s))).collect::<Result<_>>()?;
        drop(found);
        let mut parts: BTreeMap<String, (ResolvedTarget, Split)> = splits.into_iter().map(|(info, split)| (info.name.clone(), (info, split))).collect();
        let mut state = Osft { targets: vec![], by_name: BTreeMap::new(), kernels: cfg.projection == ProjectionImpl::Kernel, frozen: cfg.frozen_precision };
        model.visit_linears_mut(&mut |name, lin| {
            let Some((info, split)) = parts.remove(name) else { return };
            let device = lin.weight.val().device();
            let (n, m, k, rl) = (info.n, info.m, info.k, split.s_low.len());
            let delta = LowRank {
                u: Param::from_tensor(upload::<B, 2>(split.u_low, [n, rl], &device)),
                s: Param::from_tensor(upload::<B, 1>(split.s_low, [rl], &device)),
                vt: Param::from_tensor(upload::<B, 2>(split.vt_low, [rl, m], &device)),
            };
            let (u_id, s_id, vt_id) = (delta.u.id, delta.s.id, delta.vt.id);
            lin.delta = Some(delta);
            let basis = |(data, shape, low): (Vec<f32>, [usize; 2], bool)| {
                let t = upload::<B::InnerBackend, 2>(data, shape, &device);
                if low {
                    Basis::Low(t)
                } else {
                    Basis::High(t)
                }
            };
            let (u_basis, vt_basis) = (basis(split.u_basis), basis(split.vt_basis));
            match split.high {
                High::Dense(w_high) => {
                    let w_high = upload::<B, 2>(w_high, [n, m], &device);
                    lin.weight = Param::from_tensor(state.frozen_storage(w_high)).set_require_grad(false);
                }
                High::Factors { u, s, vt } => {
                    // A side projecting through its frozen basis lends it to the forward.
                    let u = match (&u_basis, u) {
                        (Basis::High(b), _) => Tensor::from_inner(b.clone()),
                        (_, u) => upload::<B, 2>(u.expect("U_h for a complement side"), [n, k], &device),
                    };
                    let vt = match (&vt_basis, vt) {
                        (Basis::High(b), _) => Tensor::from_inner(b.clone()),
                        (_, vt) => upload::<B, 2>(vt.expect("Vt_h for a complement side"), [k, m], &device),
                    };
                    lin.weight = Param::from_tensor(Tensor::zeros([0, m], &device)).set_require_grad(false);
                    lin.high = Some(LowRank {
                        u: Param::from_tensor(u).set_require_grad(false),
                        s: Param::from_tensor(upload::<B, 1>(s, [k], &device)).set_require_grad(false),
                        vt: Param::from_tensor(vt).set_require_grad(false),
                    });
                }
            }
            tracing::debug!(target = %info.name, n, m, k, r_low = rl, high_factors = info.high_factors, "decomposed");
            state.by_name.insert(info.name.clone(), state.targets.len());
            state.targets.push(Target { info, u_basis, vt_basis, u_id, s_id, vt_id });
        });
        set_low_rank_form(&mut model, cfg.forward);
        Ok((model, state))
    }

    /// `w` in the configured storage precision of `W_high`.
    fn frozen_storage(&self, w: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.frozen {
            FrozenPrecision::Fp32 => w,
            FrozenPrecision::Bf16 => w.cast(burn::tensor::FloatDType::BF16),
        }
    }

    /// Put every target's frozen high part back into its configured storage after a module
    /// record was loaded (checkpoints are written in full precision, and a record holds its own
    /// copy of every tensor): a dense `W_high` into its storage precision, and high factors
    /// back onto the projection bases they share. The values are unchanged (a bf16 value is
    /// exact in fp32 and back; the record's factors are the bases' values).
    pub fn restore_frozen_storage<M: NamedParams<B>>(&self, model: &mut M) {
        model.visit_linears_mut(&mut |name, lin| {
            let Some(t) = self.by_name.get(name).map(|&i| &self.targets[i]) else { return };
            if lin.delta.is_none() {
                return;
            }
            if let Some(h) = lin.high.as_mut() {
                if let Basis::High(b) = &t.u_basis {
                    h.u = Param::from_tensor(Tensor::from_inner(b.clone())).set_require_grad(false);
                }
                if let Basis::High(b) = &t.vt_basis {
                    h.vt = Param::from_tensor(Tensor::from_inner(b.clone())).set_require_grad(false);
                }
            } else if self.frozen != FrozenPrecision::Fp32 {
                let w = self.frozen_storage(lin.weight.val());
                lin.weight = Param::from_tensor(w).set_require_grad(false);
            }
        });
    }

    /// Re-read the parameter ids of the trainable factors from `model`'s attached low-rank
    /// terms (after a module record, which carries its own ids, was loaded into it).
    pub fn refresh_ids<M: NamedParams<B>>(&mut self, model: &mut M) {
        let by_name = &self.by_name;
        let targets = &mut self.targets;
        model.visit_linears_mut(&mut |name, lin| {
            if let (Some(&i), Some(d)) = (by_name.get(name), lin.delta.as_ref()) {
                let t = &mut targets[i];
                (t.u_id, t.s_id, t.vt_id) = (d.u.id, d.s.id, d.vt.id);
            }
        });
    }

    /// The resolved rank of every target, in model order.
    pub fn resolved(&self) -> Vec<ResolvedTarget> {
        self.targets.iter().map(|t| t.info.clone()).collect()
    }

    /// The trainable low factors as `(id, rank)`: `U_l` (2), `s_l` (1), `Vt_l` (2) of every target.
    pub fn low_param_ids(&self) -> Vec<(ParamId, usize)> {
        self.targets.iter().flat_map(|t| [(t.u_id, 2), (t.s_id, 1), (t.vt_id, 2)]).collect()
    }

    /// Whether the projections run as cubecl kernels (a wgpu/cuda backend with
    /// `projection = "kernel"`).
    pub fn uses_kernels(&self) -> bool {
        self.kernels && sculpt_kernels::has_kernels::<B::InnerBackend>()
    }

    /// How many target sides project with the complement basis ([`ProjectionBases::Auto`]).
    pub fn complement_sides(&self) -> usize {
        self.targets.iter().map(|t| usize::from(matches!(t.u_basis, Basis::Low(_))) + usize::from(matches!(t.vt_basis, Basis::Low(_)))).sum()
    }

    /// U side: `x − U_h(U_hᵀ x)`, or `U_⊥(U_⊥ᵀ x)`.
    fn pu(&self, x: Tensor<B::InnerBackend, 2>, basis: &Basis<B::InnerBackend>) -> Tensor<B::InnerBackend, 2> {
        match (basis, self.uses_kernels()) {
            (Basis::High(b), true) => sculpt_kernels::project_u_auto(x, b.clone()),
            (Basis::High(b), false) => project_u(x, b.clone()),
            // The kernel removes a span; keeping one is `x` minus what it removes.
            (Basis::Low(b), true) => x.clone() - sculpt_kernels::project_u_auto(x, b.clone()),
            (Basis::Low(b), false) => b.clone().matmul(b.clone().transpose().matmul(x)),
        }
    }

    /// V side (rows): `x − (x Vt_hᵀ) Vt_h`, or `(x Vt_⊥ᵀ) Vt_⊥`.
    fn pv(&self, x: Tensor<B::InnerBackend, 2>, basis: &Basis<B::InnerBackend>) -> Tensor<B::InnerBackend, 2> {
        match (basis, self.uses_kernels()) {
            (Basis::High(b), true) => sculpt_kernels::project_vt_auto(x, b.clone()),
            (Basis::High(b), false) => project_vt(x, b.clone()),
            (Basis::Low(b), true) => x.clone() - sculpt_kernels::project_vt_auto(x, b.clone()),
            (Basis::Low(b), false) => x.matmul(b.clone().transpose()).matmul(b.clone()),
        }
    }

    /// Project the low-factor gradients: `dU ← dU − U_h(U_hᵀ dU)`, `dVt ← dVt − (dVt Vt_hᵀ) Vt_h`
    /// (or the same projections through the complement bases).
    pub fn project_grads(&self, grads: &mut GradientsParams) {
        let work: Vec<_> = self.targets.iter().map(|t| (t, grads.remove::<B::InnerBackend, 2>(t.u_id), grads.remove::<B::InnerBackend, 2>(t.vt_id))).collect();
        let done = self.each(work, |(t, gu, gv)| (t, gu.map(|g| self.pu(g, &t.u_basis)), gv.map(|g| self.pv(g, &t.vt_basis))));
        for (t, gu, gv) in done {
            if let Some(g) = gu {
                grads.register(t.u_id, g);
            }
            if let Some(g) = gv {
                grads.register(t.vt_id, g);
            }
        }
    }

    /// Project the low factors themselves (after the optimizer step).
    pub fn project_params<M: NamedParams<B>>(&self, model: &mut M) {
        let mut work = vec![];
        model.visit_linears_mut(&mut |name, lin| {
            if let (Some(&i), Some(d)) = (self.by_name.get(name), lin.delta.as_ref()) {
                work.push((i, d.u.val().inner(), d.vt.val().inner()));
            }
        });
        let done: BTreeMap<usize, _> = self.each(work, |(i, u, vt)| (i, (self.pu(u, &self.targets[i].u_basis), self.pv(vt, &self.targets[i].vt_basis)))).into_iter().collect();
        model.visit_linears_mut(&mut |name, lin| {
            let (Some(i), Some(d)) = (self.by_name.get(name), lin.delta.take()) else { return };
            let (u, vt) = done[i].clone();
            let u = d.u.map(|_| Tensor::from_inner(u).require_grad());
            let vt = d.vt.map(|_| Tensor::from_inner(vt).require_grad());
            lin.delta = Some(LowRank { u, s: d.s, vt });
        });
    }

    /// `f` over the targets' work items: in parallel on the host backends, where the projections'
    /// small products use the cores better side by side than one after another; in order on
    /// the kernel backends (one device queue).
    fn each<T: Send, R: Send>(&self, work: Vec<T>, f: impl Fn(T) -> R + Send + Sync) -> Vec<R> {
        if self.uses_kernels() {
            work.into_iter().map(f).collect()
        } else {
            work.into_par_iter().map(f).collect()
        }
    }

    /// How far the low factors have left the space they may move in, over all targets, as the
    /// largest entry on each side: `max|U_hᵀ U_l|` and `max|Vt_l Vt_hᵀ|`, or, for a complement
    /// basis, of the part outside it (`U_l − U_⊥U_⊥ᵀU_l`). Zero to rounding while the low
    /// factors stay orthogonal to the frozen subspace.
    pub fn leakage<M: NamedParams<B>>(&self, model: &mut M) -> (f32, f32) {
        let mut worst = (0.0f32, 0.0f32);
        model.visit_linears_mut(&mut |name, lin| {
            let (Some(&i), Some(d)) = (self.by_name.get(name), lin.delta.as_ref()) else { return };
            let t = &self.targets[i];
            let (u, vt) = (d.u.val().inner(), d.vt.val().inner());
            let a = match &t.u_basis {
                Basis::High(b) => b.clone().transpose().matmul(u),
                Basis::Low(b) => u.clone() - b.clone().matmul(b.clone().transpose().matmul(u)),
            };
            let c = match &t.vt_basis {
                Basis::High(b) => vt.matmul(b.clone().transpose()),
                Basis::Low(b) => vt.clone() - vt.matmul(b.clone().transpose()).matmul(b.clone()),
            };
            let a: f32 = a.abs().max().into_scalar().to_f32_lossy();
            let c: f32 = c.abs().max().into_scalar().to_f32_lossy();
            worst = (worst.0.max(a), worst.1.max(c));
        });
        worst
    }

    /// The projection bases of `name` as they are held (`[U side, Vt side]`), each with whether
    /// it is the complement basis; a high part held as factors shares the frozen ones.
    pub fn basis_tensors(&self, name: &str) -> Option<[(Tensor<B::InnerBackend, 2>, bool); 2]> {
        let t = &self.targets[*self.by_name.get(name)?];
        let f = |b: &Basis<B::InnerBackend>| match b {
            Basis::High(x) => (x.clone(), false),
            Basis::Low(x) => (x.clone(), true),
        };
        Some([f(&t.u_basis), f(&t.vt_basis)])
    }

    /// The frozen bases of `name` on the host, `(U_h [n, k], Vt_h [k, m])`, when both of its sides
    /// project with them (`None` for a side on the complement basis).
    pub fn frozen_bases(&self, name: &str) -> Option<(Vec<f32>, Vec<f32>)> {
        let t = &self.targets[*self.by_name.get(name)?];
        let f = |x: &Tensor<B::InnerBackend, 2>| x.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32");
        match (&t.u_basis, &t.vt_basis) {
            (Basis::High(u), Basis::High(vt)) => Some((f(u), f(vt))),
            _ => None,
        }
    }
}

/// A target's frozen high part, on the host.
enum High {
    /// `W − U_l diag(s_l) Vt_l`, row-major `[n, m]`.
    Dense(Vec<f32>),
    /// `s_h` and those of `U_h [n, k]`, `Vt_h [k, m]` that no projection basis already holds.
    Factors { u: Option<Vec<f32>>, s: Vec<f32>, vt: Option<Vec<f32>> },
}

/// One target's split, on the host, ready to upload.
struct Split {
    u_low: Vec<f32>,
    s_low: Vec<f32>,
    vt_low: Vec<f32>,
    high: High,
    /// `(values, shape, whether it is the complement basis)` of each side.
    u_basis: (Vec<f32>, [usize; 2], bool),
    vt_basis: (Vec<f32>, [usize; 2], bool),
}

impl Split {
    /// Split `svd` of `w` after its first `k` directions; each side's basis is the frozen one,
    /// or the complement where it spans the same projection and is smaller (`bases`); the high
    /// part is dense, or its factors when `factors`.
    fn new(svd: &Svd, w: &[f32], k: usize, bases: &ProjectionBases, factors: bool) -> Split {
        let (n, m, r) = (svd.n, svd.m, svd.rank());
        let rl = r - k;
        let u_low = slice_cols(&svd.u, n, r, k, r);
        let s_low = svd.s[k..].to_vec();
        let vt_low = svd.vt[k * m..].to_vec();
        let (u_comp, vt_comp) = (bases.complement(n, n, m, k), bases.complement(m, n, m, k));
        let high = if factors {
            High::Factors {
                u: u_comp.then(|| slice_cols(&svd.u, n, r, 0, k)),
                s: svd.s[..k].to_vec(),
                vt: vt_comp.then(|| svd.vt[..k * m].to_vec()),
            }
        } else {
            High::Dense(high_part(w, n, m, &u_low, &s_low, &vt_low))
        };
        let u_basis = if u_comp { (u_low.clone(), [n, rl], true) } else { (slice_cols(&svd.u, n, r, 0, k), [n, k], false) };
        let vt_basis = if vt_comp { (vt_low.clone(), [rl, m], true) } else { (svd.vt[..k * m].to_vec(), [k, m], false) };
        Split { u_low, s_low, vt_low, high, u_basis, vt_basis }
    }
}

/// `W − U_l diag(s_l) Vt_l` (row-major `[n, m]`), one thread. On real models the product is
/// f32: its rounding, about `√r·ε` of the low part's scale, is far below the f32 rounding of
/// `W`'s own entries whenever the low part is the small-σ end of the spectrum
/// (`tests/osft_training.rs` holds the decomposed model's step-0 logits to the original's
/// within 1e-5). Products under [`crate::svd::F32_LONG_FACTOR_MIN_WORK`] multiply-adds (the tiny
/// test models) stay in f64, as `gram`'s long factor does, so the PEFT-parity tests keep their
/// margins.
fn high_part(w: &[f32], n: usize, m: usize, u_low: &[f32], s_low: &[f32], vt_low: &[f32]) -> Vec<f32> {
    let rl = s_low.len();
    let mut out = w.to_vec();
    if rl == 0 {
        return out;
    }
    if n * m * rl < crate::svd::F32_LONG_FACTOR_MIN_WORK {
        let us = faer::Mat::<f64>::from_fn(n, rl, |i, t| u_low[i * rl + t] as f64 * s_low[t] as f64);
        let vt = faer::Mat::<f64>::from_fn(rl, m, |t, j| vt_low[t * m + j] as f64);
        let mut low = faer::Mat::<f64>::zeros(n, m);
        faer::linalg::matmul::matmul(low.as_mut(), faer::Accum::Replace, us.as_ref(), vt.as_ref(), 1.0, faer::Par::Seq);
        for (i, row) in out.chunks_exact_mut(m).enumerate() {
            row.iter_mut().enumerate().for_each(|(j, x)| *x = (*x as f64 - low[(i, j)]) as f32);
        }
        return out;
    }
    let us = faer::Mat::<f32>::from_fn(n, rl, |i, t| u_low[i * rl + t] * s_low[t]);
    let vt = faer::MatRef::from_row_major_slice(vt_low, rl, m);
    let dst = faer::MatMut::from_row_major_slice_mut(&mut out, n, m);
    faer::linalg::matmul::matmul(dst, faer::Accum::Add, us.as_ref(), vt, -1.0f32, faer::Par::Seq);
    out
}

/// Thin SVDs of many row-major matrices `(n, m, values)`, in parallel over matrices (each SVD
/// single-threaded: on a few cores that uses them better than parallelising inside one small SVD).
/// The largest start first (`n·m·min(n, m)`, their cost), so that no large one is left to finish
/// alone on one core at the end; the results come back in the order of `mats`.
pub fn decompose_all(mats: &[(usize, usize, &[f32])], method: SvdMethod) -> Vec<std::result::Result<Svd, String>> {
    decompose_all_then(mats, method, |_, svd| svd)
}

/// [`decompose_all`] with `then(i, svd)` applied to each result on the thread that computed it
/// (the attach's split: the split's products then fill the cores while the last SVDs finish).
pub fn decompose_all_then<T: Send>(
    mats: &[(usize, usize, &[f32])],
    method: SvdMethod,
    then: impl Fn(usize, std::result::Result<Svd, String>) -> T + Sync,
) -> Vec<T> {
    let prev = faer::get_global_parallelism();
    faer::set_global_parallelism(faer::Par::Seq);
    let mut order: Vec<usize> = (0..mats.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(mats[i].0 * mats[i].1 * mats[i].0.min(mats[i].1)));
    let mut done: Vec<(usize, T)> = order
        .into_par_iter()
        .map(|i| {
            let (n, m, w) = mats[i];
            let svd = match method {
                SvdMethod::Exact => thin_svd(w, n, m),
                SvdMethod::ExactF64 => crate::svd::thin_svd_f64(w, n, m),
                SvdMethod::Gram => crate::svd::gram_svd(w, n, m),
                SvdMethod::Randomized { power_iters, block } => randomized_svd(w, n, m, RsvdOptions { power_iters, block, ..Default::default() }),
            };
            (i, then(i, svd))
        })
        .collect();
    faer::set_global_parallelism(prev);
    done.sort_by_key(|&(i, _)| i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// Fold every attached low-rank term into its dense weight (in fp32): `W ← W + U diag(s) Vt`.
/// The result is a plain model, ready to save or to decompose again at the next task.
pub fn merge<B: Backend, M: NamedParams<B>>(model: &mut M) {
    model.visit_linears_mut(&mut |_, lin| {
        if lin.delta.is_some() || lin.high.is_some() {
            let w = lin.effective_weight();
            lin.delta = None;
            lin.high = None;
            lin.weight = Param::from_tensor(w.detach());
        }
    });
}

trait ToF32Lossy {
    fn to_f32_lossy(self) -> f32;
}
impl<E: burn::tensor::ElementConversion> ToF32Lossy for E {
    fn to_f32_lossy(self) -> f32 {
        self.elem::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `W_high + U_l diag(s_l) Vt_l` gives `W` back to f32 rounding on a matrix large enough for
    /// the f32 product (a decaying spectrum, the low half trainable), and the f32 `W_high` is
    /// within a few ulps of the f64 product's.
    #[test]
    fn high_part_in_f32_reconstructs_the_weight() {
        let (n, m) = (320, 512);
        let s: Vec<f32> = (0..n).map(|i| 0.99f32.powi(i as i32)).collect();
        let w = crate::svd::test_matrix_with_spectrum(n, m, &s, 7);
        let svd = crate::svd::gram_svd(&w, n, m).unwrap();
        let k = n / 2;
        let split = Split::new(&svd, &w, k, &ProjectionBases::default(), false);
        let High::Dense(w_high) = &split.high else { panic!("a dense split holds factors") };
        assert!(n * m * (n - k) >= crate::svd::F32_LONG_FACTOR_MIN_WORK, "the f32 path is the one tested");
        // The f64 reference of the same subtraction.
        let rl = n - k;
        let mut worst_rec = 0f64;
        let mut worst_f64 = 0f64;
        let scale = w.iter().fold(0f32, |a, x| a.max(x.abs())) as f64;
        for i in 0..n {
            for j in 0..m {
                let low: f64 = (0..rl).map(|t| split.u_low[i * rl + t] as f64 * split.s_low[t] as f64 * split.vt_low[t * m + j] as f64).sum();
                let hi = w_high[i * m + j] as f64;
                worst_rec = worst_rec.max((hi + low - w[i * m + j] as f64).abs());
                worst_f64 = worst_f64.max((hi - (w[i * m + j] as f64 - low)).abs());
            }
        }
        assert!(worst_rec <= 1e-6 * scale, "reconstruction {worst_rec:e} of entries up to {scale:e}");
        assert!(worst_f64 <= 4.0 * f32::EPSILON as f64 * scale, "f32 against f64 W_high: {worst_f64:e}");
        assert_eq!((split.u_basis.1, split.vt_basis.1), ([n, k], [k, m]));
    }

    /// Factors where they hold fewer new numbers than the dense part: the frozen bases a side
    /// projects through are shared, a complement side needs its own factor.
    #[test]
    fn factors_only_where_they_hold_less_than_the_dense_part() {
        use FrozenForm::{Dense, Factors};
        let auto = ProjectionBases::Auto;
        assert!(!high_as_factors(Dense, auto, 11008, 4096, 3072));
        // LLaMA-2-7B's MLP at unfreeze 0.25, either orientation: `s_h` and the R side's factor.
        assert!(high_as_factors(Factors, auto, 11008, 4096, 3072));
        assert!(high_as_factors(Factors, auto, 4096, 11008, 3072));
        // Square at k ≤ R/2: both frozen bases shared, only `s_h` is new.
        assert!(high_as_factors(Factors, auto, 576, 576, 288));
        // Square at k > R/2: both sides on the complement, 2Rk + k > R².
        assert!(!high_as_factors(Factors, auto, 576, 576, 289));
        // The frozen bases everywhere: every target.
        assert!(high_as_factors(Factors, ProjectionBases::High, 576, 576, 575));

        // The split hands over the factors no basis holds, and no dense part.
        let (n, m) = (48, 80);
        let s: Vec<f32> = (0..n).map(|i| 0.9f32.powi(i as i32)).collect();
        let w = crate::svd::test_matrix_with_spectrum(n, m, &s, 3);
        let svd = crate::svd::gram_svd(&w, n, m).unwrap();
        for (k, u_own) in [(24, false), (36, true)] {
            let split = Split::new(&svd, &w, k, &auto, true);
            let High::Factors { u, s: s_h, vt } = &split.high else { panic!("k {k}: a dense high part") };
            assert_eq!(s_h.as_slice(), &svd.s[..k]);
            assert_eq!(u.is_some(), u_own, "k {k}: U_h uploaded apart from the basis");
            assert_eq!(split.u_basis.2, u_own, "k {k}: the n side (= R) is on the complement");
            if let Some(u) = u {
                assert_eq!(u, &slice_cols(&svd.u, n, n, 0, k));
            }
            // The m side (> R) always projects through the frozen `Vt_h`, which the forward shares.
            assert!(vt.is_none() && !split.vt_basis.2);
            assert_eq!(split.vt_basis.0.as_slice(), &svd.vt[..k * m]);
        }
    }
}
