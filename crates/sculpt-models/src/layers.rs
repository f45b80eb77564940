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
/// low-rank term.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`, when the checkpoint has one.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// A low-rank term added to `weight` (not part of the checkpoint; merge it before saving).
    pub delta: Option<LowRank<B>>,
    /// Input observer (calibration only).
    #[module(skip)]
    pub probe: InputProbe,
    /// The precision the matrix products run in (the parameters stay fp32).
    #[module(skip)]
    pub compute: ComputeDtype,
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
        Ok(Linear { weight, bias, delta: None, probe: InputProbe::none(), compute: ComputeDtype::F32 })
    }

    /// The effective dense weight `W + U diag(s) Vt`, `[out, in]`.
    pub fn effective_weight(&self) -> Tensor<B, 2> {
        match &self.delta {
            Some(d) => self.weight.val() + d.dense(),
            None => self.weight.val(),
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

    /// `t` cast to the compute precision (unchanged in fp32, or when it already is bf16).
    fn lowp<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        match self.compute {
            ComputeDtype::F32 => t,
            ComputeDtype::Bf16 => t.cast(FloatDType::BF16),
        }
    }

    /// `x: [b, s, in] → [b, s, out]` (fp32 out whatever the compute precision).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d_in] = x.dims();
        let w = self.weight.val();
        let d_out = w.dims()[0];
        let x = x.reshape([b * s, d_in]);
        if let Some(probe) = self.probe.get::<B>() {
            probe(x.clone());
        }
        let x = self.lowp(x);
        let mut y = x.clone().matmul(self.lowp(w).transpose());
        if let Some(d) = &self.delta {
            // ((x Vtᵀ) ⊙ s) Uᵀ: r(in + out) multiply-adds per token, never the dense product.
            y = y + (x.matmul(self.lowp(d.vt.val()).transpose()) * self.lowp(d.s.val()).unsqueeze::<2>()).matmul(self.lowp(d.u.val()).transpose());
        }
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
    fn export(&self) -> TensorMap {
        let mut map = TensorMap::new("<memory>");
        self.visit_params(&mut |name, p| map.insert(name, p.to_host()));
        map
    }
}
