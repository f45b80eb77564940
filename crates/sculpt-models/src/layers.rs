//! Building blocks shared by T5 and LLaMA: a Hugging Face–layout linear layer, RMS norm, an
//! embedding table, and the conversions between burn tensors and [`HostTensor`]s.
//!
//! Weight layout: [`Linear::weight`] is stored `[out, in]` exactly as PyTorch / Hugging Face store
//! it (burn's own `nn::Linear` stores `[in, out]`), so a checkpoint tensor maps onto a parameter
//! without a transpose and `W` means the same matrix here as in the OSFT spec (`y = W x`).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

use crate::error::Result;
use crate::host::{HostTensor, TensorMap};

/// Upload a host tensor as a float tensor of rank `D`.
pub fn to_tensor<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    assert_eq!(t.shape.len(), D, "to_tensor: rank {} tensor into rank {D}", t.shape.len());
    Tensor::from_data(TensorData::new(t.data, t.shape), device)
}

/// Download a float tensor to the host as f32.
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 tensor data");
    HostTensor::new(shape, data)
}

/// An int tensor `[rows, cols]` from equal-length rows (token ids, masks, labels with `-100`).
pub fn int_tensor<B: Backend, T: Copy + Into<i64>>(rows: &[Vec<T>], device: &B::Device) -> Tensor<B, 2, Int> {
    let cols = rows.first().map_or(0, Vec::len);
    assert!(rows.iter().all(|r| r.len() == cols), "int_tensor: ragged rows");
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x.into()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

/// An int tensor `[rows, cols]` from token ids.
pub fn ids_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    int_tensor(rows, device)
}

/// Take a parameter of the given shape out of `map` and upload it.
pub fn load_param<B: Backend, const D: usize>(
    map: &mut TensorMap,
    name: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>> {
    Ok(Param::from_tensor(to_tensor(map.take(name, &shape)?, device)))
}

/// A low-rank term `U diag(s) Vt` added to a linear layer's weight: `U: [out, r]`, `s: [r]`,
/// `Vt: [r, in]`. Fine-tuning methods (OSFT's trainable low subspace, LoRA) attach one from
/// outside; the model only knows how to apply it.
#[derive(Module, Debug)]
pub struct LowRank<B: Backend> {
    /// `[out, r]`.
    pub u: Param<Tensor<B, 2>>,
    /// `[r]`.
    pub s: Param<Tensor<B, 1>>,
    /// `[r, in]`.
    pub vt: Param<Tensor<B, 2>>,
}

impl<B: Backend> LowRank<B> {
    /// The dense `[out, in]` matrix `U diag(s) Vt`.
    pub fn dense(&self) -> Tensor<B, 2> {
        (self.u.val() * self.s.val().unsqueeze::<2>()).matmul(self.vt.val())
    }
}

/// An observer of a linear layer's input `[tokens, in]`, called during every forward pass while
/// set — the hook calibration passes (e.g. OSFT's layer importance) use. Not part of the model's
/// parameters or checkpoint.
///
/// Stored type-erased (burn's derive treats any field generic over the backend as a sub-module),
/// and recovered for the backend of the tensors at call time.
#[derive(Clone, Default)]
pub struct InputProbe(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

/// The callback type held by an [`InputProbe`] for backend `B`.
pub type ProbeFn<B> = Box<dyn Fn(Tensor<B, 2>) + Send + Sync>;

impl InputProbe {
    /// No observer.
    pub fn none() -> Self {
        InputProbe(None)
    }
    /// Observe inputs on backend `B` with `f`.
    pub fn new<B: Backend>(f: ProbeFn<B>) -> Self {
        InputProbe(Some(std::sync::Arc::new(f)))
    }
    fn get<B: Backend>(&self) -> Option<&ProbeFn<B>> {
        self.0.as_ref().and_then(|a| a.downcast_ref::<ProbeFn<B>>())
    }
}

impl std::fmt::Debug for InputProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "InputProbe(set)" } else { "InputProbe(none)" })
    }
}

/// `y = x Wᵀ + ((x Vtᵀ) ⊙ s) Uᵀ + b` with `W: [out, in]` (Hugging Face layout) and an optional
/// low-rank term (applied in the cheaper of two forms: [`LowRankForm`]).
///
/// The base `W` is either the dense `weight` or, when `high` is set, the frozen factors
/// `U_h diag(s_h) Vt_h` (OSFT's `[osft] frozen_form = "factors"`); `weight` is then an empty
/// `[0, in]` tensor.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out, in]` (`[0, in]` when `high` holds the base).
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`, when the checkpoint has one.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// A low-rank term added to `weight` (not part of the checkpoint; merge it before saving).
    pub delta: Option<LowRank<B>>,
    /// The base weight as frozen factors instead of the dense `weight` (not part of the
    /// checkpoint; merge before saving).
    pub high: Option<LowRank<B>>,
    /// Input observer (calibration only).
    #[module(skip)]
    pub probe: InputProbe,
    /// The precision the matrix products run in (the parameters stay fp32).
    #[module(skip)]
    pub compute: ComputeDtype,
    /// How an attached low-rank term is applied.
    #[module(skip)]
    pub form: LowRankForm,
}

/// How a linear layer applies its low-rank term (`[osft] forward`). Both give the same `y` and
/// the same gradients up to fp32 rounding; they differ in cost. For `T` tokens through an
/// `[n, m]` layer with a rank-`r` term, in multiply-adds:
///
/// | | forward + backward | forward only |
/// |---|---|---|
/// | factored | `2Tnm + 3Tr(n+m)` | `Tnm + Tr(n+m)` |
/// | merged | `3Tnm + 3nmr` | `Tnm + nmr` |
///
/// The factored form never forms `U diag(s) Vt`, but its three rank-`r` products per token cost
/// more than the dense weight gradient once `r` is a sizeable share of `R` (OSFT's low block:
/// half of `R` by default) and the call carries many tokens. The merged form pays `nmr` per
/// call to form the sum, and in the backward two more to turn its gradient into `dU`, `ds`
/// and `dVt`. LoRA's small `r` always picks the factored form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowRankForm {
    /// The cheaper of the two for each call, by [`merged_is_cheaper`].
    #[default]
    Auto,
    /// `x Wᵀ + ((x Vtᵀ) ⊙ s) Uᵀ`.
    Factored,
    /// `x (W + U diag(s) Vt)ᵀ`.
    Merged,
}

impl LowRankForm {
    /// Whether a call with `tokens` rows through an `[n, m]` layer with a rank-`r` term
    /// (`training`: the backward runs too) uses the merged form.
    pub fn merges(self, tokens: usize, n: usize, m: usize, r: usize, training: bool) -> bool {
        match self {
            LowRankForm::Factored => false,
            LowRankForm::Merged => true,
            LowRankForm::Auto => merged_is_cheaper(tokens, n, m, r, training),
        }
    }
}

/// Whether the merged form costs fewer multiply-adds than the factored one for `tokens` rows
/// through an `[n, m]` layer with a rank-`r` term (the table at [`LowRankForm`]); `training`:
/// the backward runs too.
pub fn merged_is_cheaper(tokens: usize, n: usize, m: usize, r: usize, training: bool) -> bool {
    let (t, n, m, r) = (tokens as f64, n as f64, m as f64, r as f64);
    if training {
        3.0 * t * n * m + 3.0 * n * m * r < 2.0 * t * n * m + 3.0 * t * r * (n + m)
    } else {
        n * m * r < t * r * (n + m)
    }
}

/// As [`merged_is_cheaper`] for a layer whose base is held as rank-`k` factors (OSFT's
/// `frozen_form = "factors"`). Factored, the base costs `Tk(n + m)` in the forward and again in
/// the backward (it has no weight gradient): `2Tk(n+m) + 3Tr(n+m)` with the low-rank term. Merged,
/// the call first forms `U_h diag(s_h) Vt_h + U diag(s) Vt` (`nm(k + r)`), then `3Tnm` and the two
/// `nmr` products of the factors' gradients. Forward only: `T(k+r)(n+m)` against `nm(k+r) + Tnm`.
pub fn merged_is_cheaper_on_factors(tokens: usize, n: usize, m: usize, k: usize, r: usize, training: bool) -> bool {
    let (t, n, m, k, r) = (tokens as f64, n as f64, m as f64, k as f64, r as f64);
    if training {
        3.0 * t * n * m + n * m * (k + r) + 2.0 * n * m * r < 2.0 * t * k * (n + m) + 3.0 * t * r * (n + m)
    } else {
        n * m * (k + r) + t * n * m < t * (k + r) * (n + m)
    }
}

impl LowRankForm {
    /// [`LowRankForm::merges`] for a layer whose base is held as rank-`k` factors.
    pub fn merges_on_factors(self, tokens: usize, n: usize, m: usize, k: usize, r: usize, training: bool) -> bool {
        match self {
            LowRankForm::Factored => false,
            LowRankForm::Merged => true,
            LowRankForm::Auto => merged_is_cheaper_on_factors(tokens, n, m, k, r, training),
        }
    }
}

/// Set how every linear layer of `model` applies an attached low-rank term.
pub fn set_low_rank_form<B: Backend, M: NamedParams<B>>(model: &mut M, form: LowRankForm) {
    model.visit_linears_mut(&mut |_, lin| lin.form = form);
}

/// The precision of a linear layer's matrix products. `Bf16` is mixed precision: the fp32
/// parameters (the master weights the optimizer and the OSFT projections work on) and the input
/// are cast to bf16 for the products, the output is cast back to fp32 (so norms, softmax, the
/// residual stream, logits and loss stay fp32), and gradients flow back through the casts into
/// fp32 parameter gradients. The activations saved for the backward pass are the bf16 copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDtype {
    /// fp32 products.
    #[default]
    F32,
    /// bf16 products, fp32 everything else.
    Bf16,
}

/// Set the compute precision of every linear layer of `model` (attached low-rank terms included).
pub fn set_compute_dtype<B: Backend, M: NamedParams<B>>(model: &mut M, compute: ComputeDtype) {
    model.visit_linears_mut(&mut |_, lin| lin.compute = compute);
}

impl<B: Backend> Linear<B> {
    /// Load `{prefix}.weight` (and `{prefix}.bias` when `bias`) from `map`.
    pub fn load(map: &mut TensorMap, prefix: &str, d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Result<Self> {
        let weight = load_param(map, &format!("{prefix}.weight"), [d_out, d_in], device)?;
        let bias = if bias { Some(load_param(map, &format!("{prefix}.bias"), [d_out], device)?) } else { None };
        Ok(Linear { weight, bias, delta: None, high: None, probe: InputProbe::none(), compute: ComputeDtype::F32, form: LowRankForm::Auto })
    }

    /// The dense base weight `[out, in]`: `weight`, or `U_h diag(s_h) Vt_h` when the base is
    /// held as factors.
    pub fn base_weight(&self) -> Tensor<B, 2> {
        match &self.high {
            Some(h) => h.dense(),
            None => self.weight.val(),
        }
    }

    /// `[out, in]` of the layer, whichever way its base is stored.
    pub fn dims(&self) -> [usize; 2] {
        match &self.high {
            Some(h) => [h.u.dims()[0], h.vt.dims()[1]],
            None => self.weight.dims(),
        }
    }

    /// The effective dense weight `W + U diag(s) Vt`, `[out, in]`.
    pub fn effective_weight(&self) -> Tensor<B, 2> {
        match &self.delta {
            // fp32 whatever the stored base's precision (OSFT may keep `W_high` in bf16).
            Some(d) => self.base_weight().cast(FloatDType::F32) + d.dense(),
            None => self.base_weight(),
        }
    }

    /// Visit `{prefix}.weight` (and bias). With a low-rank term attached this hands out the
    /// stored base weight only; merge first to see the effective weight.
    pub fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        f(&format!("{prefix}.weight"), ParamRef::Matrix(&self.weight));
        if let Some(b) = &self.bias {
            f(&format!("{prefix}.bias"), ParamRef::Vector(b));
        }
    }

    /// `x` in this layer's compute precision. Layers that read the same input (q/k/v,
    /// gate/up) share one cast this way: a bf16 input passes through [`Linear::forward`]'s own
    /// cast unchanged, so the backward pass keeps one bf16 copy instead of one per layer.
    pub fn compute_input(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.lowp(x)
    }

    /// `t` cast to the compute precision (unchanged when it already is in it: fp32 inputs and
    /// weights in fp32, a bf16 input or a bf16-stored frozen weight in bf16).
    fn lowp<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        match self.compute {
            ComputeDtype::F32 => t.cast(FloatDType::F32),
            ComputeDtype::Bf16 => t.cast(FloatDType::BF16),
        }
    }

    /// `x: [b, s, in] → [b, s, out]` (fp32 out whatever the compute precision).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d_in] = x.dims();
        let d_out = self.dims()[0];
        let x = x.reshape([b * s, d_in]);
        if let Some(probe) = self.probe.get::<B>() {
            probe(x.clone());
        }
        let x = self.lowp(x);
        let training = |d: &LowRank<B>| d.u.val().is_require_grad() || d.vt.val().is_require_grad();
        // ((x Vtᵀ) ⊙ s) Uᵀ: r(in + out) multiply-adds per token, never the dense product.
        let factored = |x: Tensor<B, 2>, f: &LowRank<B>| (x.matmul(self.lowp(f.vt.val()).transpose()) * self.lowp(f.s.val()).unsqueeze::<2>()).matmul(self.lowp(f.u.val()).transpose());
        let mut y = match (&self.high, &self.delta) {
            // A factored base: both terms factored, or (when the call carries enough tokens to
            // pay for it) the whole matrix formed for this call.
            (Some(h), Some(d)) if self.form.merges_on_factors(b * s, d_out, d_in, h.s.dims()[0], d.s.dims()[0], training(d)) => x.matmul(self.lowp(self.effective_weight()).transpose()),
            (Some(h), Some(d)) => factored(x.clone(), h) + factored(x, d),
            (Some(h), None) => factored(x, h),
            (None, Some(d)) if self.form.merges(b * s, d_out, d_in, d.s.dims()[0], training(d)) => x.matmul(self.lowp(self.effective_weight()).transpose()),
            (None, Some(d)) => x.clone().matmul(self.lowp(self.weight.val()).transpose()) + factored(x, d),
            (None, None) => x.matmul(self.lowp(self.weight.val()).transpose()),
        };
        if self.compute != ComputeDtype::F32 {
            y = y.cast(FloatDType::F32);
        }
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, s, d_out])
    }
}

/// Root-mean-square norm without mean subtraction (T5 "LayerNorm", LLaMA RMSNorm):
/// `y = x / sqrt(mean(x²) + eps) * weight`, statistics in f32.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Load `{prefix}.weight` of size `d`.
    pub fn load(map: &mut TensorMap, prefix: &str, d: usize, eps: f64, device: &B::Device) -> Result<Self> {
        Ok(RmsNorm { weight: load_param(map, &format!("{prefix}.weight"), [d], device)?, eps })
    }

    /// Visit `{prefix}.weight`.
    pub fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        f(&format!("{prefix}.weight"), ParamRef::Vector(&self.weight));
    }

    /// `x: [b, s, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let ms = x.clone().square().mean_dim(2);
        let inv = (ms + self.eps).sqrt().recip();
        x * inv * self.weight.val().unsqueeze::<3>()
    }
}

/// A token-embedding table `[vocab, d]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[vocab, d]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// Load `{name}` of shape `[vocab, d]`.
    pub fn load(map: &mut TensorMap, name: &str, vocab: usize, d: usize, device: &B::Device) -> Result<Self> {
        Ok(Embedding { weight: load_param(map, name, [vocab, d], device)? })
    }

    /// Visit the table as `name`.
    pub fn visit(&self, name: &str, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        f(name, ParamRef::Matrix(&self.weight));
    }

    /// `ids: [b, s] → [b, s, d]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }

    /// `h: [b, s, d] → logits [b, s, vocab]` with the table as a tied output head.
    pub fn attend(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = h.dims();
        let w = self.weight.val();
        let v = w.dims()[0];
        h.reshape([b * s, d]).matmul(w.transpose()).reshape([b, s, v])
    }
}

/// Additive attention bias from a boolean "masked" tensor: masked → a large negative number.
pub fn mask_bias<B: Backend, const D: usize>(scores: Tensor<B, D>, masked: Tensor<B, D, burn::tensor::Bool>) -> Tensor<B, D> {
    scores.mask_fill(masked, MASKED)
}

/// The score given to masked positions (finite, so fully masked rows stay NaN-free, as in transformers).
pub const MASKED: f32 = -1.0e30;

/// A borrowed parameter of either rank, as handed out by the models' `visit` methods.
pub enum ParamRef<'a, B: Backend> {
    /// A vector (norm weights, biases).
    Vector(&'a Param<Tensor<B, 1>>),
    /// A matrix (linear weights, embeddings).
    Matrix(&'a Param<Tensor<B, 2>>),
}

impl<B: Backend> ParamRef<'_, B> {
    /// The current value on the host.
    pub fn to_host(&self) -> HostTensor {
        match self {
            ParamRef::Vector(p) => to_host(p.val()),
            ParamRef::Matrix(p) => to_host(p.val()),
        }
    }
}

/// A model whose parameters can be enumerated under their Hugging Face names.
pub trait NamedParams<B: Backend> {
    /// Call `f` once per parameter, in checkpoint order, with its Hugging Face name.
    fn visit_params(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>));

    /// Call `f` once per linear layer with its Hugging Face module name (`….q_proj`), mutably:
    /// the hook through which fine-tuning methods attach, update and merge low-rank terms.
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear<B>));

    /// All parameter values on the host, by Hugging Face name (tied tensors once).
    ///
    /// Panics on a layer whose base is held as factors (its dense `weight` is empty): merge the
    /// attached parts first, as the trainer does before every save.
    fn export(&self) -> TensorMap {
        let mut map = TensorMap::new("<memory>");
        self.visit_params(&mut |name, p| {
            let t = p.to_host();
            assert!(t.shape.len() != 2 || t.shape[0] > 0, "export of `{name}` while its frozen high part is held as factors: merge first");
            map.insert(name, t)
        });
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type Ad = Autodiff<Flex>;

    fn param<const D: usize>(shape: [usize; D], seed: u64) -> Param<Tensor<Ad, D>> {
        let n: usize = shape.iter().product();
        // A fixed pseudo-random fill (no global RNG state).
        let data: Vec<f32> = (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), &Default::default()))
    }

    fn layer(n: usize, m: usize, r: usize, form: LowRankForm) -> Linear<Ad> {
        let delta = LowRank { u: param([n, r], 1), s: param([r], 2), vt: param([r, m], 3) };
        Linear { weight: param([n, m], 4).set_require_grad(false), bias: None, delta: Some(delta), high: None, probe: InputProbe::none(), compute: ComputeDtype::F32, form }
    }

    /// Each form computes its own expression (bit for bit), `Auto` picks by the cost model, and
    /// the two forms' outputs and gradients agree.
    #[test]
    fn both_forms_agree_and_auto_picks_by_cost() {
        let (n, m, r) = (24, 16, 8);
        let x = |t: usize| Tensor::<Ad, 3>::random([1, t, m], Distribution::Uniform(-1.0, 1.0), &Default::default());
        for t in [2, 64] {
            let x = x(t);
            let run = |form| {
                let l = layer(n, m, r, form);
                let y = l.forward(x.clone().require_grad());
                (l, y)
            };
            let (lf, yf) = run(LowRankForm::Factored);
            let (lm, ym) = run(LowRankForm::Merged);
            let (_, ya) = run(LowRankForm::Auto);
            let d = lf.delta.as_ref().unwrap();
            let x2 = x.clone().reshape([t, m]);
            let want_f = x2.clone().matmul(lf.weight.val().transpose()) + (x2.clone().matmul(d.vt.val().transpose()) * d.s.val().unsqueeze::<2>()).matmul(d.u.val().transpose());
            let want_m = x2.matmul((lm.weight.val() + d.dense()).transpose());
            yf.clone().reshape([t, n]).into_data().assert_eq(&want_f.into_data(), true);
            ym.clone().reshape([t, n]).into_data().assert_eq(&want_m.into_data(), true);
            let auto_merged = merged_is_cheaper(t, n, m, r, true);
            assert_eq!(auto_merged, t == 64, "the cost model at T = {t}");
            ya.into_data().assert_eq(&(if auto_merged { ym.clone() } else { yf.clone() }).into_data(), true);
            yf.clone().into_data().assert_approx_eq::<f32>(&ym.clone().into_data(), burn::tensor::Tolerance::absolute(1e-5));
            // Gradients of the same loss through either form.
            let gf = (yf.clone() * yf).sum().backward();
            let gm = (ym.clone() * ym).sum().backward();
            let (df, dm) = (lf.delta.as_ref().unwrap(), lm.delta.as_ref().unwrap());
            for (a, b) in [(df.u.val().grad(&gf).unwrap(), dm.u.val().grad(&gm).unwrap()), (df.vt.val().grad(&gf).unwrap(), dm.vt.val().grad(&gm).unwrap())] {
                let scale = a.clone().abs().max().into_scalar().max(1e-6);
                let err = (a - b).abs().max().into_scalar() / scale;
                assert!(err < 1e-5, "T = {t}: gradients differ by {err}");
            }
            let (sa, sb) = (df.s.val().grad(&gf).unwrap(), dm.s.val().grad(&gm).unwrap());
            let err = (sa.clone() - sb).abs().max().into_scalar() / sa.abs().max().into_scalar().max(1e-6);
            assert!(err < 1e-5, "T = {t}: ds differs by {err}");
        }
    }

    /// A base held as frozen factors gives the output and gradients of the same base held
    /// dense, in every low-rank form, and reports the layer's shape.
    #[test]
    fn a_factored_base_equals_its_dense_product() {
        let (n, m, r, k) = (24, 16, 6, 9);
        let x = Tensor::<Ad, 3>::random([2, 5, m], Distribution::Uniform(-1.0, 1.0), &Default::default());
        let high = || LowRank { u: param([n, k], 7).set_require_grad(false), s: param([k], 8).set_require_grad(false), vt: param([k, m], 9).set_require_grad(false) };
        for form in [LowRankForm::Auto, LowRankForm::Factored, LowRankForm::Merged] {
            let mut dense = layer(n, m, r, form);
            dense.weight = Param::from_tensor(high().dense()).set_require_grad(false);
            let mut fact = layer(n, m, r, form);
            fact.weight = Param::from_tensor(Tensor::zeros([0, m], &Default::default())).set_require_grad(false);
            fact.high = Some(high());
            assert_eq!(fact.dims(), [n, m]);
            fact.effective_weight().into_data().assert_approx_eq::<f32>(&dense.effective_weight().into_data(), burn::tensor::Tolerance::absolute(1e-6));
            let xa = x.clone().require_grad();
            let xb = x.clone().require_grad();
            let (ya, yb) = (dense.forward(xa.clone()), fact.forward(xb.clone()));
            ya.clone().into_data().assert_approx_eq::<f32>(&yb.clone().into_data(), burn::tensor::Tolerance::absolute(1e-5));
            let (ga, gb) = ((ya.clone() * ya).sum().backward(), (yb.clone() * yb).sum().backward());
            let (da, db) = (dense.delta.as_ref().unwrap(), fact.delta.as_ref().unwrap());
            for (a, b) in [(da.u.val().grad(&ga).unwrap(), db.u.val().grad(&gb).unwrap()), (da.vt.val().grad(&ga).unwrap(), db.vt.val().grad(&gb).unwrap())] {
                let err = (a.clone() - b).abs().max().into_scalar() / a.abs().max().into_scalar().max(1e-6);
                assert!(err < 1e-5, "{form:?}: low-factor gradients differ by {err}");
            }
            let (a, b) = (xa.grad(&ga).unwrap(), xb.grad(&gb).unwrap());
            let err = (a.clone() - b).abs().max().into_scalar() / a.abs().max().into_scalar().max(1e-6);
            assert!(err < 1e-5, "{form:?}: input gradients differ by {err}");
            // The frozen factors get no gradient.
            assert!(fact.high.as_ref().unwrap().u.val().grad(&gb).is_none());
        }
    }

    /// On a factored base the forms cost differently: SmolLM2's MLP (1536 × 576 at PEFT's split,
    /// k = r = 288) stays factored in a 256-token row shard (the factored base is cheaper there
    /// than the dense one) and merges at 4096 tokens; LLaMA-2-7B's MLP at `unfreeze` 0.25
    /// (k 3072, r 1024) stays factored at 4096.
    #[test]
    fn the_factored_base_cost_model() {
        assert!(!merged_is_cheaper_on_factors(256, 1536, 576, 288, 288, true));
        assert!(merged_is_cheaper_on_factors(4096, 1536, 576, 288, 288, true));
        assert!(!merged_is_cheaper_on_factors(4096, 11008, 4096, 3072, 1024, true));
        // Forward only: merging pays once T(k + r)(n + m) > nm(k + r) + Tnm.
        assert!(!merged_is_cheaper_on_factors(300, 576, 576, 288, 288, false));
        assert!(merged_is_cheaper_on_factors(600, 576, 576, 288, 288, false));
        // The forms' outputs agree (the factored-base test above runs all three).
        assert!(LowRankForm::Merged.merges_on_factors(1, 8, 8, 4, 4, true) && !LowRankForm::Factored.merges_on_factors(1 << 20, 8, 8, 4, 4, true));
    }

    #[test]
    fn the_cost_model_follows_the_multiply_add_counts() {
        // SmolLM2's q_proj (576²) at OSFT's default half-rank split: one 256-token row shard
        // stays factored, 512 tokens merge.
        assert!(!merged_is_cheaper(256, 576, 576, 288, true));
        assert!(merged_is_cheaper(512, 576, 576, 288, true));
        // LoRA's rank 8 never merges for training, however many tokens.
        assert!(!merged_is_cheaper(1 << 20, 576, 576, 8, true));
        // Forward only: merging pays once T(n + m) > nm (288 tokens for 576²).
        assert!(!merged_is_cheaper(288, 576, 576, 8, false));
        assert!(merged_is_cheaper(289, 576, 576, 8, false));
    }
}
