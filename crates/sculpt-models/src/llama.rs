//! LLaMA-2/3 family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or untied
//! head), parameter names equal to the Hugging Face `LlamaForCausalLM` checkpoint names.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::config::{check, from_value, OneOrMany};
use crate::error::{ModelError, Result};
use crate::host::TensorMap;
use crate::layers::{mask_bias, Embedding, Linear, NamedParams, ParamRef, RmsNorm};

/// `config.json` of a LLaMA model as transformers writes it (unknown keys are ignored, as
/// transformers ignores them).
#[derive(Debug, Clone, Deserialize)]
struct RawLlamaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_act")]
    hidden_act: String,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

/// How RoPE frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// Scale factor.
        factor: f64,
    },
    /// The LLaMA-3.1 frequency-dependent rule.
    Llama3 {
        /// Scale factor for low frequencies.
        factor: f64,
        /// Wavelength boundary (low).
        low_freq_factor: f64,
        /// Wavelength boundary (high).
        high_freq_factor: f64,
        /// Context length of the original model.
        original_max_position_embeddings: f64,
    },
}

/// A resolved LLaMA configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling rule.
    pub rope_scaling: RopeScaling,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
    /// Output head shares the embedding table.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (generation stops at any of them).
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// Biases on q/k/v/o.
    pub attention_bias: bool,
    /// Biases on gate/up/down.
    pub mlp_bias: bool,
}

impl LlamaConfig {
    /// Resolve the parsed `config.json` (`path` is used in error messages).
    pub fn from_json(path: &Path, value: &serde_json::Value) -> Result<Self> {
        let raw: RawLlamaConfig = from_value(path, value)?;
        check(path, raw.hidden_act == "silu", "hidden_act", || format!("expected \"silu\", found {:?}", raw.hidden_act))?;
        let kv = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        check(path, raw.num_attention_heads > 0, "num_attention_heads", || "must be positive".into())?;
        check(path, kv > 0 && raw.num_attention_heads.is_multiple_of(kv), "num_key_value_heads", || {
            format!("{kv} must divide num_attention_heads = {}", raw.num_attention_heads)
        })?;
        let head_dim = match raw.head_dim {
            Some(h) => h,
            None => {
                check(path, raw.hidden_size.is_multiple_of(raw.num_attention_heads), "hidden_size", || {
                    format!("{} is not a multiple of num_attention_heads = {}", raw.hidden_size, raw.num_attention_heads)
                })?;
                raw.hidden_size / raw.num_attention_heads
            }
        };
        check(path, head_dim % 2 == 0, "head_dim", || format!("RoPE needs an even head_dim, found {head_dim}"))?;
        // transformers ≥ 5 moves rope_theta (and the scaling rule) into `rope_parameters`.
        let rope_params = raw.rope_parameters.as_ref();
        let theta = match (raw.rope_theta, rope_params.and_then(|p| p.get("rope_theta"))) {
            (Some(t), _) => t,
            (None, Some(t)) => t.as_f64().ok_or_else(|| ModelError::config(path, "rope_parameters.rope_theta", "expected a number"))?,
            (None, None) => 10000.0,
        };
        let (scaling_key, scaling) = match (&raw.rope_scaling, rope_params) {
            (Some(s), _) if !s.is_null() => ("rope_scaling", Some(s)),
            (_, Some(p)) => ("rope_parameters", Some(p)),
            _ => ("rope_scaling", None),
        };
        let rope_scaling = parse_rope_scaling(path, scaling_key, scaling)?;
        Ok(LlamaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: kv,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
            pad_token_id: raw.pad_token_id,
            attention_bias: raw.attention_bias,
            mlp_bias: raw.mlp_bias,
        })
    }

    /// Inverse RoPE frequencies `[head_dim / 2]`, computed in f32 as transformers does.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f32> =
            (0..d / 2).map(|i| 1.0 / (self.rope_theta as f32).powf((2 * i) as f32 / d as f32)).collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let low_wavelen = original_max_position_embeddings / low_freq_factor;
                let high_wavelen = original_max_position_embeddings / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f as f64;
                        if wavelen > low_wavelen {
                            f / factor as f32
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            ((1.0 - smooth) * f as f64 / factor + smooth * f as f64) as f32
                        }
                    })
                    .collect()
            }
        }
    }
}

fn parse_rope_scaling(path: &Path, key: &str, v: Option<&serde_json::Value>) -> Result<RopeScaling> {
    let Some(v) = v else { return Ok(RopeScaling::None) };
    let ty = v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| ModelError::config(path, format!("{key}.{k}"), "expected a number"))
    };
    match ty {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(ModelError::config(
            path,
            format!("{key}.rope_type"),
            format!("unsupported RoPE scaling {other:?} (supported: default, linear, llama3)"),
        )),
    }
}

/// Per-layer key/value cache for incremental decoding: `[b, kv_heads, t, head_dim]` each.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        KvCache { layers: vec![None; n_layers] }
    }
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }
    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rotary embedding tables for positions `offset..offset + s`, laid out for [`apply_rope`]:
/// `cos`/`sin` as `[1, s·heads·head_dim]`, each position's row repeated for every head, once for
/// the query heads and once for the key/value heads.
///
/// The layout is chosen for the CPU backend: a `[b, n] ⊙ [1, n]` product is one of burn-flex's
/// contiguous broadcast patterns, while `[b, h, s, d] ⊙ [1, 1, s, d]` on the heads-first view (or
/// `[b, s, h, d] ⊙ [1, s, 1, d]`) goes through its strided element iterator. On a 2 × 128-token
/// SmolLM2 shard (9 query heads), forward and backward, the query RoPE went from 6.0–7.9 ms to
/// 2.4–3.0 ms over four runs of `cargo run -p sculpt-models [--release] --example rope`, with
/// identical values and gradients. The repeated tables cost `2·s·(heads + kv_heads)·head_dim`
/// floats per forward, shared by all blocks, or `2·s·heads·head_dim` when the two head counts
/// are equal and one table serves both: 0.13 GB for LLaMA-2-7B at 4096 tokens.
#[derive(Clone, Debug)]
pub(crate) struct RopeTables<B: Backend> {
    /// `(cos, sin)` for the query heads, each `[1, s·heads·head_dim]`.
    q: (Tensor<B, 2>, Tensor<B, 2>),
    /// `(cos, sin)` for the key/value heads, each `[1, s·kv_heads·head_dim]`.
    kv: (Tensor<B, 2>, Tensor<B, 2>),
}

fn rope_tables<B: Backend>(cfg: &LlamaConfig, offset: usize, s: usize, device: &B::Device) -> RopeTables<B> {
    let inv = cfg.inv_freq();
    let d = cfg.head_dim;
    // One position's `d` angles: emb = cat(freqs, freqs), as transformers' rotate_half convention.
    let angles = |p: usize| inv.iter().chain(inv.iter()).map(move |&f| p as f32 * f);
    let table = |heads: usize| {
        let n = s * heads * d;
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for p in offset..offset + s {
            // One position's row, computed once and repeated for every head.
            let (c, sn): (Vec<f32>, Vec<f32>) = angles(p).map(|a| (a.cos(), a.sin())).unzip();
            for _ in 0..heads {
                cos.extend_from_slice(&c);
                sin.extend_from_slice(&sn);
            }
        }
        (Tensor::from_data(TensorData::new(cos, [1, n]), device), Tensor::from_data(TensorData::new(sin, [1, n]), device))
    };
    let (h, kvh) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let q = table(h);
    // Without grouped queries both sides read the same table.
    let kv = if kvh == h { q.clone() } else { table(kvh) };
    RopeTables { q, kv }
}

/// RoPE on a projection's output `x: [b, s, heads·d]`, returned heads-first `[b, heads, s, d]`:
/// `x ⊙ cos + rotate_half(x) ⊙ sin` per head, `rotate_half([x1, x2]) = [−x2, x1]` over `d`.
fn apply_rope<B: Backend>(x: Tensor<B, 3>, heads: usize, d: usize, (cos, sin): &(Tensor<B, 2>, Tensor<B, 2>)) -> Tensor<B, 4> {
    let [b, s, _] = x.dims();
    let x = x.reshape([b, s, heads, d]);
    let x1 = x.clone().slice([0..b, 0..s, 0..heads, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..s, 0..heads, d / 2..d]);
    let rot = Tensor::cat(vec![x2.neg(), x1], 3);
    let n = s * heads * d;
    let out = x.reshape([b, n]) * cos.clone() + rot.reshape([b, n]) * sin.clone();
    out.reshape([b, s, heads, d]).swap_dims(1, 2)
}

/// The per-forward inputs every block shares (see [`Llama::block_context`]).
#[derive(Clone, Debug)]
pub struct LlamaBlockContext<B: Backend> {
    rope: RopeTables<B>,
    bias: Tensor<B, 4>,
}

/// Grouped-query self-attention with RoPE.
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// `[heads·head_dim, hidden]`.
    pub q_proj: Linear<B>,
    /// `[kv_heads·head_dim, hidden]`.
    pub k_proj: Linear<B>,
    /// `[kv_heads·head_dim, hidden]`.
    pub v_proj: Linear<B>,
    /// `[hidden, heads·head_dim]`.
    pub o_proj: Linear<B>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

/// SwiGLU feed-forward: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// `[ffn, hidden]`.
    pub gate_proj: Linear<B>,
    /// `[ffn, hidden]`.
    pub up_proj: Linear<B>,
    /// `[hidden, ffn]`.
    pub down_proj: Linear<B>,
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct LlamaLayer<B: Backend> {
    /// Attention.
    pub self_attn: LlamaAttention<B>,
    /// Feed-forward.
    pub mlp: LlamaMlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// The decoder stack (`model.*` in the checkpoint).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// `model.embed_tokens`.
    pub embed_tokens: Embedding<B>,
    /// `model.layers.{i}`.
    pub layers: Vec<LlamaLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
}

/// `LlamaForCausalLM`: the decoder and its output head.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// The decoder.
    pub model: LlamaModel<B>,
    /// Untied output head `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    config: LlamaConfig,
}

impl<B: Backend> LlamaAttention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        bias: &Tensor<B, 4>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let split = |t: Tensor<B, 3>, heads: usize| t.reshape([b, s, heads, d]).swap_dims(1, 2);
        let x = self.q_proj.compute_input(x);
        let q = apply_rope(self.q_proj.forward(x.clone()), h, d, &rope.q);
        let mut k = apply_rope(self.k_proj.forward(x.clone()), kvh, d, &rope.kv);
        let mut v = split(self.v_proj.forward(x), kvh);
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let t = k.dims()[2];
        // repeat_kv: query head j reads kv head j / (h / kvh).
        let rep = h / kvh;
        let expand = |t4: Tensor<B, 4>| {
            if rep == 1 {
                t4
            } else {
                t4.unsqueeze_dim::<5>(2).repeat_dim(2, rep).reshape([b, h, t, d])
            }
        };
        let (k, v) = (expand(k), expand(v));
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt() + bias.clone();
        let p = softmax(scores, 3);
        let out = p.matmul(v).swap_dims(1, 2).reshape([b, s, h * d]);
        self.o_proj.forward(out)
    }
}

impl<B: Backend> LlamaMlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.gate_proj.compute_input(x);
        self.down_proj.forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

impl<B: Backend> LlamaLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        bias: &Tensor<B, 4>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, bias, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

impl<B: Backend> Llama<B> {
    /// Build from Hugging Face tensors (strict: every tensor used, every shape checked).
    pub fn load(config: LlamaConfig, mut map: TensorMap, device: &B::Device) -> Result<Self> {
        let c = &config;
        let (hd, q_out, kv_out) = (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let embed_tokens = Embedding::load(&mut map, "model.embed_tokens.weight", c.vocab_size, hd, device)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            // Old checkpoints carry the non-persistent RoPE buffer; transformers ignores it too.
            map.tensors.remove(&format!("{p}.self_attn.rotary_emb.inv_freq"));
            let ab = c.attention_bias;
            let mb = c.mlp_bias;
            let self_attn = LlamaAttention {
                q_proj: Linear::load(&mut map, &format!("{p}.self_attn.q_proj"), hd, q_out, ab, device)?,
                k_proj: Linear::load(&mut map, &format!("{p}.self_attn.k_proj"), hd, kv_out, ab, device)?,
                v_proj: Linear::load(&mut map, &format!("{p}.self_attn.v_proj"), hd, kv_out, ab, device)?,
                o_proj: Linear::load(&mut map, &format!("{p}.self_attn.o_proj"), q_out, hd, ab, device)?,
                n_heads: c.num_attention_heads,
                n_kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
            };
            let mlp = LlamaMlp {
                gate_proj: Linear::load(&mut map, &format!("{p}.mlp.gate_proj"), hd, c.intermediate_size, mb, device)?,
                up_proj: Linear::load(&mut map, &format!("{p}.mlp.up_proj"), hd, c.intermediate_size, mb, device)?,
                down_proj: Linear::load(&mut map, &format!("{p}.mlp.down_proj"), c.intermediate_size, hd, mb, device)?,
            };
            layers.push(LlamaLayer {
                self_attn,
                mlp,
                input_layernorm: RmsNorm::load(&mut map, &format!("{p}.input_layernorm"), hd, c.rms_norm_eps, device)?,
                post_attention_layernorm: RmsNorm::load(
                    &mut map,
                    &format!("{p}.post_attention_layernorm"),
                    hd,
                    c.rms_norm_eps,
                    device,
                )?,
            });
        }
        let norm = RmsNorm::load(&mut map, "model.norm", hd, c.rms_norm_eps, device)?;
        let lm_head = if c.tie_word_embeddings {
            // Some exporters write the tied head anyway; transformers overwrites it with the embedding.
            map.tensors.remove("lm_head.weight");
            None
        } else {
            Some(Linear::load(&mut map, "lm_head", hd, c.vocab_size, false, device)?)
        };
        map.finish()?;
        Ok(Llama { model: LlamaModel { embed_tokens, layers, norm }, lm_head, config })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Logits `[b, s, vocab]` for `input_ids: [b, s]`.
    ///
    /// `attention_mask: [b, t]` (1 = real token, 0 = padding; `t` = cached + new positions) masks
    /// padded keys. With `cache`, the new tokens continue the cached positions.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let h = self.hidden_states(input_ids, attention_mask, cache);
        self.head(h)
    }

    /// Logits of the last position only, `[b, 1, vocab]` (what greedy decoding needs: the output
    /// head is the largest matmul of a small model, so a prompt's other positions skip it).
    pub fn forward_last(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let h = self.hidden_states(input_ids, attention_mask, cache);
        let [b, s, d] = h.dims();
        self.head(h.slice([0..b, s - 1..s, 0..d]))
    }

    /// Final-norm hidden states `[b, s, hidden]`.
    pub fn hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let device = input_ids.device();
        let [b, s] = input_ids.dims();
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let t = offset + s;
        let rope = rope_tables::<B>(&self.config, offset, s, &device);
        let bias = attention_bias::<B>(b, self.config.num_attention_heads, s, offset, attention_mask, &device);
        let mut x = self.model.embed_tokens.forward(input_ids);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &rope, &bias, slot);
        }
        let _ = t;
        self.model.norm.forward(x)
    }

    /// What every block of a forward over `b × s` new tokens (no cache) reads besides its
    /// input: the RoPE tables and the additive attention bias of `attention_mask`.
    pub fn block_context(&self, b: usize, s: usize, attention_mask: Option<Tensor<B, 2, Int>>, device: &B::Device) -> LlamaBlockContext<B> {
        LlamaBlockContext {
            rope: rope_tables::<B>(&self.config, 0, s, device),
            bias: attention_bias::<B>(b, self.config.num_attention_heads, s, 0, attention_mask, device),
        }
    }

    /// The token embedding `[b, s] → [b, s, hidden]` (the first segment of [`Self::hidden_states`]).
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.model.embed_tokens.forward(input_ids)
    }

    /// Decoder block `i` on its input `x` (no cache): one segment of [`Self::hidden_states`],
    /// what per-block activation checkpointing re-runs in the backward pass.
    pub fn block(&self, i: usize, x: Tensor<B, 3>, cx: &LlamaBlockContext<B>) -> Tensor<B, 3> {
        self.model.layers[i].forward(x, &cx.rope, &cx.bias, None)
    }

    /// The final norm after the last block.
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.model.norm.forward(x)
    }

    /// Output head: `[b, s, hidden] → [b, s, vocab]`.
    pub fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => self.model.embed_tokens.attend(h),
        }
    }
}

impl<B: Backend> NamedParams<B> for Llama<B> {
    fn visit_params(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        self.model.embed_tokens.visit("model.embed_tokens.weight", f);
        for (i, l) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            l.self_attn.q_proj.visit(&format!("{p}.self_attn.q_proj"), f);
            l.self_attn.k_proj.visit(&format!("{p}.self_attn.k_proj"), f);
            l.self_attn.v_proj.visit(&format!("{p}.self_attn.v_proj"), f);
            l.self_attn.o_proj.visit(&format!("{p}.self_attn.o_proj"), f);
            l.mlp.gate_proj.visit(&format!("{p}.mlp.gate_proj"), f);
            l.mlp.up_proj.visit(&format!("{p}.mlp.up_proj"), f);
            l.mlp.down_proj.visit(&format!("{p}.mlp.down_proj"), f);
            l.input_layernorm.visit(&format!("{p}.input_layernorm"), f);
            l.post_attention_layernorm.visit(&format!("{p}.post_attention_layernorm"), f);
        }
        self.model.norm.visit("model.norm", f);
        if let Some(h) = &self.lm_head {
            h.visit("lm_head", f);
        }
    }

    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        for (i, l) in self.model.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            f(&format!("{p}.self_attn.q_proj"), &mut l.self_attn.q_proj);
            f(&format!("{p}.self_attn.k_proj"), &mut l.self_attn.k_proj);
            f(&format!("{p}.self_attn.v_proj"), &mut l.self_attn.v_proj);
            f(&format!("{p}.self_attn.o_proj"), &mut l.self_attn.o_proj);
            f(&format!("{p}.mlp.gate_proj"), &mut l.mlp.gate_proj);
            f(&format!("{p}.mlp.up_proj"), &mut l.mlp.up_proj);
            f(&format!("{p}.mlp.down_proj"), &mut l.mlp.down_proj);
        }
        if let Some(h) = &mut self.lm_head {
            f("lm_head", h);
        }
    }
}

/// Causal (+ key padding) additive bias `[b, h, s, t]` for queries at `offset..offset+s`.
///
/// Materialised for every head once per forward, so that each layer's `scores + bias` is an
/// add of two contiguous tensors (a broadcast add is a strided slow path on the CPU backend;
/// part of the prefill speed-up in README.md, "Benchmarks").
fn attention_bias<B: Backend>(
    b: usize,
    h: usize,
    s: usize,
    offset: usize,
    attention_mask: Option<Tensor<B, 2, Int>>,
    device: &B::Device,
) -> Tensor<B, 4> {
    let t = offset + s;
    let causal: Vec<bool> = (0..s).flat_map(|i| (0..t).map(move |j| j > offset + i)).collect();
    let mut masked = Tensor::<B, 2, Bool>::from_data(TensorData::new(causal, [s, t]), device)
        .unsqueeze::<4>()
        .expand([b, h, s, t]);
    if let Some(m) = attention_mask {
        assert_eq!(m.dims(), [b, t], "attention_mask must be [batch, cached + new]");
        let pad = m.equal_elem(0).reshape([b, 1, 1, t]).expand([b, h, s, t]);
        masked = masked.bool_or(pad);
    }
    mask_bias(Tensor::zeros([b, h, s, t], device), masked)
}
