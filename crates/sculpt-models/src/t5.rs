//! T5 encoder–decoder (v1.0 ReLU and v1.1/flan gated-GELU layouts), matching transformers'
//! `T5ForConditionalGeneration`: relative position buckets shared by all layers of a stack,
//! unscaled dot-product attention, RMS "LayerNorm", tied or untied head (tied → `d_model^-0.5`
//! rescale before the head).

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::config::{check, from_value};
use crate::error::{ModelError, Result};
use crate::host::TensorMap;
use crate::layers::{mask_bias, Embedding, Linear, NamedParams, ParamRef, RmsNorm};

#[derive(Debug, Clone, Deserialize)]
struct RawT5Config {
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_layers: usize,
    num_decoder_layers: Option<usize>,
    num_heads: usize,
    #[serde(default = "default_buckets")]
    relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_ffp")]
    feed_forward_proj: String,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    pad_token_id: u32,
    #[serde(default = "default_eos")]
    eos_token_id: u32,
    decoder_start_token_id: Option<u32>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffp() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn default_eos() -> u32 {
    1
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5Act {
    /// `max(0, x)` (T5 v1.0).
    Relu,
    /// tanh-approximated GELU, transformers' `gelu_new` (T5 v1.1 / flan).
    GeluNew,
    /// exact (erf) GELU.
    Gelu,
    /// `x·σ(x)`.
    Silu,
}

/// A resolved T5 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Width of one head.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks.
    pub num_decoder_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative-position buckets.
    pub relative_attention_num_buckets: usize,
    /// Largest distinguished distance.
    pub relative_attention_max_distance: usize,
    /// Norm epsilon.
    pub layer_norm_epsilon: f64,
    /// Gated FFN (`wi_0`, `wi_1`) instead of `wi`.
    pub is_gated: bool,
    /// FFN activation.
    pub act: T5Act,
    /// Head tied to the shared embedding.
    pub tie_word_embeddings: bool,
    /// Padding id.
    pub pad_token_id: u32,
    /// End-of-sequence id.
    pub eos_token_id: u32,
    /// First decoder input.
    pub decoder_start_token_id: u32,
}

impl T5Config {
    /// Resolve the parsed `config.json`.
    pub fn from_json(path: &Path, value: &serde_json::Value) -> Result<Self> {
        let raw: RawT5Config = from_value(path, value)?;
        let parts: Vec<&str> = raw.feed_forward_proj.split('-').collect();
        let (is_gated, act_name) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => {
                return Err(ModelError::config(
                    path,
                    "feed_forward_proj",
                    format!("expected `<act>` or `gated-<act>`, found {:?}", raw.feed_forward_proj),
                ))
            }
        };
        // transformers maps "gated-gelu" to the tanh approximation for backwards compatibility.
        let act = match (is_gated, act_name) {
            (_, "relu") => T5Act::Relu,
            (true, "gelu") | (_, "gelu_new") => T5Act::GeluNew,
            (false, "gelu") => T5Act::Gelu,
            (_, "silu") => T5Act::Silu,
            _ => {
                return Err(ModelError::config(
                    path,
                    "feed_forward_proj",
                    format!("unsupported activation {act_name:?} (relu, gelu, gelu_new, silu)"),
                ))
            }
        };
        check(path, raw.relative_attention_num_buckets >= 4, "relative_attention_num_buckets", || {
            format!("needs at least 4 buckets, found {}", raw.relative_attention_num_buckets)
        })?;
        Ok(T5Config {
            vocab_size: raw.vocab_size,
            d_model: raw.d_model,
            d_kv: raw.d_kv,
            d_ff: raw.d_ff,
            num_layers: raw.num_layers,
            num_decoder_layers: raw.num_decoder_layers.unwrap_or(raw.num_layers),
            num_heads: raw.num_heads,
            relative_attention_num_buckets: raw.relative_attention_num_buckets,
            relative_attention_max_distance: raw.relative_attention_max_distance,
            layer_norm_epsilon: raw.layer_norm_epsilon,
            is_gated,
            act,
            tie_word_embeddings: raw.tie_word_embeddings,
            pad_token_id: raw.pad_token_id,
            eos_token_id: raw.eos_token_id,
            decoder_start_token_id: raw.decoder_start_token_id.unwrap_or(raw.pad_token_id),
        })
    }
}

/// transformers' `T5Attention._relative_position_bucket`, computed in f32 like torch.
pub fn relative_position_bucket(relative_position: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut nb = num_buckets as i64;
    let mut bucket = 0i64;
    let mut rp = relative_position;
    if bidirectional {
        nb /= 2;
        if rp > 0 {
            bucket += nb;
        }
        rp = rp.abs();
    } else {
        rp = -rp.min(0);
    }
    let max_exact = nb / 2;
    if rp < max_exact {
        bucket += rp;
    } else {
        let ratio = (rp as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln();
        let large = max_exact + (ratio * (nb - max_exact) as f32) as i64;
        bucket += large.min(nb - 1);
    }
    bucket as usize
}

/// Multi-head attention without score scaling (T5's scaling is folded into its init).
#[derive(Module, Debug)]
pub struct T5Attention<B: Backend> {
    /// Query.
    pub q: Linear<B>,
    /// Key.
    pub k: Linear<B>,
    /// Value.
    pub v: Linear<B>,
    /// Output.
    pub o: Linear<B>,
    /// `[num_buckets, heads]`, only in the first block of each stack.
    pub relative_attention_bias: Option<Embedding<B>>,
    n_heads: usize,
    d_kv: usize,
}

impl<B: Backend> T5Attention<B> {
    fn load(map: &mut TensorMap, p: &str, c: &T5Config, has_bias: bool, device: &B::Device) -> Result<Self> {
        let inner = c.num_heads * c.d_kv;
        Ok(T5Attention {
            q: Linear::load(map, &format!("{p}.q"), c.d_model, inner, false, device)?,
            k: Linear::load(map, &format!("{p}.k"), c.d_model, inner, false, device)?,
            v: Linear::load(map, &format!("{p}.v"), c.d_model, inner, false, device)?,
            o: Linear::load(map, &format!("{p}.o"), inner, c.d_model, false, device)?,
            relative_attention_bias: if has_bias {
                Some(Embedding::load(
                    map,
                    &format!("{p}.relative_attention_bias.weight"),
                    c.relative_attention_num_buckets,
                    c.num_heads,
                    device,
                )?)
            } else {
                None
            },
            n_heads: c.num_heads,
            d_kv: c.d_kv,
        })
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        self.q.visit(&format!("{p}.q"), f);
        self.k.visit(&format!("{p}.k"), f);
        self.v.visit(&format!("{p}.v"), f);
        self.o.visit(&format!("{p}.o"), f);
        if let Some(e) = &self.relative_attention_bias {
            e.visit(&format!("{p}.relative_attention_bias.weight"), f);
        }
    }

    fn heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, s, _] = x.dims();
        x.reshape([b, s, self.n_heads, self.d_kv]).swap_dims(1, 2)
    }

    /// Keys and values `[b, h, t, d_kv]` for `kv_input: [b, t, d_model]`.
    fn kv(&self, kv_input: Tensor<B, 3>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let kv_input = self.k.compute_input(kv_input);
        (self.heads(self.k.forward(kv_input.clone())), self.heads(self.v.forward(kv_input)))
    }

    /// Attention of `x` over keys/values `(k, v)` with additive `bias: [b|1, h|1, s, t]`.
    fn attend(&self, x: Tensor<B, 3>, k: Tensor<B, 4>, v: Tensor<B, 4>, bias: &Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let q = self.heads(self.q.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)) + bias.clone();
        let out = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, s, self.n_heads * self.d_kv]);
        self.o.forward(out)
    }
}

/// The feed-forward sub-layer (`DenseReluDense`).
#[derive(Module, Debug)]
pub struct T5DenseReluDense<B: Backend> {
    /// `wi` (v1.0) or `wi_0` (gated).
    pub wi_0: Linear<B>,
    /// `wi_1` (gated only).
    pub wi_1: Option<Linear<B>>,
    /// Output.
    pub wo: Linear<B>,
    #[module(skip)]
    act: T5Act,
}

impl<B: Backend> T5DenseReluDense<B> {
    fn load(map: &mut TensorMap, p: &str, c: &T5Config, device: &B::Device) -> Result<Self> {
        let (wi_0, wi_1) = if c.is_gated {
            (
                Linear::load(map, &format!("{p}.wi_0"), c.d_model, c.d_ff, false, device)?,
                Some(Linear::load(map, &format!("{p}.wi_1"), c.d_model, c.d_ff, false, device)?),
            )
        } else {
            (Linear::load(map, &format!("{p}.wi"), c.d_model, c.d_ff, false, device)?, None)
        };
        Ok(T5DenseReluDense { wi_0, wi_1, wo: Linear::load(map, &format!("{p}.wo"), c.d_ff, c.d_model, false, device)?, act: c.act })
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        match &self.wi_1 {
            Some(wi_1) => {
                self.wi_0.visit(&format!("{p}.wi_0"), f);
                wi_1.visit(&format!("{p}.wi_1"), f);
            }
            None => self.wi_0.visit(&format!("{p}.wi"), f),
        }
        self.wo.visit(&format!("{p}.wo"), f);
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.wi_0.compute_input(x);
        let h = self.wi_0.forward(x.clone());
        let h = match self.act {
            T5Act::Relu => relu(h),
            T5Act::GeluNew => gelu_approximate(h),
            T5Act::Gelu => gelu(h),
            T5Act::Silu => silu(h),
        };
        let h = match &self.wi_1 {
            Some(wi_1) => h * wi_1.forward(x),
            None => h,
        };
        self.wo.forward(h)
    }
}

/// One block: self-attention, (decoder only) cross-attention, feed-forward; each pre-normed with a residual.
#[derive(Module, Debug)]
pub struct T5Block<B: Backend> {
    /// `layer.0.SelfAttention`.
    pub self_attention: T5Attention<B>,
    /// `layer.0.layer_norm`.
    pub self_attention_norm: RmsNorm<B>,
    /// `layer.1.EncDecAttention` (decoder).
    pub cross_attention: Option<T5Attention<B>>,
    /// `layer.1.layer_norm` (decoder).
    pub cross_attention_norm: Option<RmsNorm<B>>,
    /// `layer.{1|2}.DenseReluDense`.
    pub ff: T5DenseReluDense<B>,
    /// `layer.{1|2}.layer_norm`.
    pub ff_norm: RmsNorm<B>,
}

impl<B: Backend> T5Block<B> {
    fn load(map: &mut TensorMap, p: &str, c: &T5Config, first: bool, decoder: bool, device: &B::Device) -> Result<Self> {
        let eps = c.layer_norm_epsilon;
        let self_attention = T5Attention::load(map, &format!("{p}.layer.0.SelfAttention"), c, first, device)?;
        let self_attention_norm = RmsNorm::load(map, &format!("{p}.layer.0.layer_norm"), c.d_model, eps, device)?;
        let (cross_attention, cross_attention_norm, ff_idx) = if decoder {
            (
                Some(T5Attention::load(map, &format!("{p}.layer.1.EncDecAttention"), c, false, device)?),
                Some(RmsNorm::load(map, &format!("{p}.layer.1.layer_norm"), c.d_model, eps, device)?),
                2,
            )
        } else {
            (None, None, 1)
        };
        Ok(T5Block {
            self_attention,
            self_attention_norm,
            cross_attention,
            cross_attention_norm,
            ff: T5DenseReluDense::load(map, &format!("{p}.layer.{ff_idx}.DenseReluDense"), c, device)?,
            ff_norm: RmsNorm::load(map, &format!("{p}.layer.{ff_idx}.layer_norm"), c.d_model, eps, device)?,
        })
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        self.self_attention.visit(&format!("{p}.layer.0.SelfAttention"), f);
        self.self_attention_norm.visit(&format!("{p}.layer.0.layer_norm"), f);
        let ff_idx = match (&self.cross_attention, &self.cross_attention_norm) {
            (Some(a), Some(n)) => {
                a.visit(&format!("{p}.layer.1.EncDecAttention"), f);
                n.visit(&format!("{p}.layer.1.layer_norm"), f);
                2
            }
            _ => 1,
        };
        self.ff.visit(&format!("{p}.layer.{ff_idx}.DenseReluDense"), f);
        self.ff_norm.visit(&format!("{p}.layer.{ff_idx}.layer_norm"), f);
    }
}

/// Cached decoder state for one layer: growing self-attention K/V and fixed cross-attention K/V.
#[derive(Debug, Clone)]
struct LayerCache<B: Backend> {
    self_kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    cross_kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

/// Decoder state for incremental greedy decoding.
#[derive(Debug, Clone)]
pub struct T5Cache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
}

impl<B: Backend> T5Cache<B> {
    /// An empty cache for `n_layers` decoder layers.
    pub fn new(n_layers: usize) -> Self {
        T5Cache { layers: vec![LayerCache { self_kv: None, cross_kv: None }; n_layers], len: 0 }
    }
    /// Decoder positions already processed.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An encoder or decoder stack.
#[derive(Module, Debug)]
pub struct T5Stack<B: Backend> {
    /// `{encoder|decoder}.block.{i}`.
    pub block: Vec<T5Block<B>>,
    /// `{encoder|decoder}.final_layer_norm`.
    pub final_layer_norm: RmsNorm<B>,
    is_decoder: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl<B: Backend> T5Stack<B> {
    /// Relative position bias `[1, h, s, t]` for queries `offset..offset+s` over keys `0..t`.
    fn position_bias(&self, s: usize, t: usize, offset: usize, device: &B::Device) -> Tensor<B, 4> {
        let table = self.block[0].self_attention.relative_attention_bias.as_ref().expect("first block has the bias");
        let buckets: Vec<i64> = (0..s)
            .flat_map(|i| {
                (0..t).map(move |j| {
                    let rel = j as i64 - (offset + i) as i64;
                    relative_position_bucket(rel, !self.is_decoder, self.num_buckets, self.max_distance) as i64
                })
            })
            .collect();
        let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(buckets, [s, t]), device);
        // embedding: [s, t] → [1, s·t... ] via a batch of one.
        let values = table.forward(idx); // [s, t, h]
        values.permute([2, 0, 1]).unsqueeze::<4>()
    }

    /// The self-attention bias every block of this stack adds, `[b | 1, h, s, t]`: the relative
    /// position bias (first block's table) with padded keys (`self_mask: [b, t]`) and, in the
    /// decoder, future positions masked. Queries are `offset..offset+s`.
    pub fn self_bias(&self, b: usize, s: usize, offset: usize, self_mask: Option<Tensor<B, 2, Int>>, device: &B::Device) -> Tensor<B, 4> {
        let t = offset + s;
        let mut bias = self.position_bias(s, t, offset, device);
        let mut masked: Option<Tensor<B, 4, Bool>> = None;
        if self.is_decoder {
            let causal: Vec<bool> = (0..s).flat_map(|i| (0..t).map(move |j| j > offset + i)).collect();
            masked = Some(Tensor::<B, 2, Bool>::from_data(TensorData::new(causal, [s, t]), device).unsqueeze::<4>().expand([b, 1, s, t]));
        }
        if let Some(m) = self_mask {
            assert_eq!(m.dims(), [b, t], "attention mask must be [batch, cached + new]");
            let pad = m.equal_elem(0).reshape([b, 1, 1, t]).expand([b, 1, s, t]);
            masked = Some(match masked {
                Some(c) => c.bool_or(pad),
                None => pad,
            });
        }
        if let Some(m) = masked {
            let [_, h, _, _] = bias.dims();
            bias = mask_bias(bias.expand([b, h, s, t]), m.expand([b, h, s, t]));
        }
        bias
    }

    /// Block `i` on its input `x` (no cache) with the stack's [`Self::self_bias`] and, in the
    /// decoder, the encoder output and its cross bias: one segment of the stack's forward, what
    /// per-block activation checkpointing re-runs in the backward pass.
    pub fn block_forward(&self, i: usize, x: Tensor<B, 3>, bias: &Tensor<B, 4>, encoder: Option<(&Tensor<B, 3>, &Tensor<B, 4>)>) -> Tensor<B, 3> {
        block_forward(&self.block[i], x, bias, encoder, None)
    }

    fn forward(
        &self,
        embeds: Tensor<B, 3>,
        self_mask: Option<Tensor<B, 2, Int>>,
        encoder: Option<(&Tensor<B, 3>, &Tensor<B, 4>)>,
        mut cache: Option<&mut T5Cache<B>>,
    ) -> Tensor<B, 3> {
        let device = embeds.device();
        let [b, s, _] = embeds.dims();
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let t = offset + s;
        let bias = self.self_bias(b, s, offset, self_mask, &device);
        let mut x = embeds;
        for (i, blk) in self.block.iter().enumerate() {
            let lc = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block_forward(blk, x, &bias, encoder, lc);
        }
        if let Some(c) = cache {
            c.len = t;
        }
        self.final_layer_norm.forward(x)
    }
}

fn block_forward<B: Backend>(
    blk: &T5Block<B>,
    x: Tensor<B, 3>,
    bias: &Tensor<B, 4>,
    encoder: Option<(&Tensor<B, 3>, &Tensor<B, 4>)>,
    mut cache: Option<&mut LayerCache<B>>,
) -> Tensor<B, 3> {
    let normed = blk.self_attention_norm.forward(x.clone());
    let (mut k, mut v) = blk.self_attention.kv(normed.clone());
    if let Some(c) = cache.as_deref_mut() {
        if let Some((pk, pv)) = c.self_kv.take() {
            k = Tensor::cat(vec![pk, k], 2);
            v = Tensor::cat(vec![pv, v], 2);
        }
        c.self_kv = Some((k.clone(), v.clone()));
    }
    let mut x = x + blk.self_attention.attend(normed, k, v, bias);
    if let (Some(att), Some(norm), Some((enc, enc_bias))) = (&blk.cross_attention, &blk.cross_attention_norm, encoder) {
        let (k, v) = match cache {
            Some(c) => c.cross_kv.get_or_insert_with(|| att.kv(enc.clone())).clone(),
            None => att.kv(enc.clone()),
        };
        x = x.clone() + att.attend(norm.forward(x), k, v, enc_bias);
    }
    x.clone() + blk.ff.forward(blk.ff_norm.forward(x))
}

/// `T5ForConditionalGeneration`.
#[derive(Module, Debug)]
pub struct T5<B: Backend> {
    /// `shared`: the token embedding of both stacks.
    pub shared: Embedding<B>,
    /// `encoder`.
    pub encoder: T5Stack<B>,
    /// `decoder`.
    pub decoder: T5Stack<B>,
    /// `lm_head` when untied.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    config: T5Config,
}

impl<B: Backend> T5<B> {
    /// Build from Hugging Face tensors (strict).
    pub fn load(config: T5Config, mut map: TensorMap, device: &B::Device) -> Result<Self> {
        let c = &config;
        let shared = Embedding::load(&mut map, "shared.weight", c.vocab_size, c.d_model, device)?;
        // Tied copies of `shared` that some exporters write; transformers re-ties them on load.
        for alias in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
            map.tensors.remove(alias);
        }
        let stack = |map: &mut TensorMap, name: &str, n: usize, decoder: bool| -> Result<T5Stack<B>> {
            let block = (0..n)
                .map(|i| T5Block::load(map, &format!("{name}.block.{i}"), c, i == 0, decoder, device))
                .collect::<Result<Vec<_>>>()?;
            Ok(T5Stack {
                block,
                final_layer_norm: RmsNorm::load(map, &format!("{name}.final_layer_norm"), c.d_model, c.layer_norm_epsilon, device)?,
                is_decoder: decoder,
                num_buckets: c.relative_attention_num_buckets,
                max_distance: c.relative_attention_max_distance,
            })
        };
        check(map.source(), c.num_layers > 0 && c.num_decoder_layers > 0, "num_layers", || "needs at least one layer".into())?;
        let encoder = stack(&mut map, "encoder", c.num_layers, false)?;
        let decoder = stack(&mut map, "decoder", c.num_decoder_layers, true)?;
        let lm_head = if c.tie_word_embeddings {
            map.tensors.remove("lm_head.weight");
            None
        } else {
            Some(Linear::load(&mut map, "lm_head", c.d_model, c.vocab_size, false, device)?)
        };
        map.finish()?;
        Ok(T5 { shared, encoder, decoder, lm_head, config })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// Encoder output `[b, s, d_model]`; `attention_mask: [b, s]` (1 = token, 0 = padding).
    pub fn encode(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 3> {
        self.encoder.forward(self.shared.forward(input_ids), attention_mask, None, None)
    }

    /// Additive cross-attention bias `[b, 1, 1, t_enc]` from the encoder padding mask.
    pub fn cross_bias(&self, encoder_out: &Tensor<B, 3>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 4> {
        let [b, t, _] = encoder_out.dims();
        let device = encoder_out.device();
        let zeros = Tensor::zeros([b, 1, 1, t], &device);
        match attention_mask {
            Some(m) => mask_bias(zeros, m.equal_elem(0).reshape([b, 1, 1, t])),
            None => zeros,
        }
    }

    /// Decoder logits `[b, s, vocab]` given encoder output and its cross-attention bias.
    pub fn decode(
        &self,
        decoder_input_ids: Tensor<B, 2, Int>,
        encoder_out: &Tensor<B, 3>,
        cross_bias: &Tensor<B, 4>,
        cache: Option<&mut T5Cache<B>>,
    ) -> Tensor<B, 3> {
        let h = self.decoder.forward(self.shared.forward(decoder_input_ids), None, Some((encoder_out, cross_bias)), cache);
        self.head(h)
    }

    /// Output head on the decoder's final-norm states: `[b, s, d_model] → [b, s, vocab]` (tied
    /// heads rescale by `d_model^-1/2` first, as transformers does).
    pub fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => self.shared.attend(h * (self.config.d_model as f64).powf(-0.5)),
        }
    }

    /// Full forward: logits `[b, s_dec, vocab]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        decoder_input_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let enc = self.encode(input_ids, attention_mask.clone());
        let cross = self.cross_bias(&enc, attention_mask);
        self.decode(decoder_input_ids, &enc, &cross, None)
    }
}

impl<B: Backend> NamedParams<B> for T5<B> {
    fn visit_params(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        self.shared.visit("shared.weight", f);
        for (name, st) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for (i, blk) in st.block.iter().enumerate() {
                blk.visit(&format!("{name}.block.{i}"), f);
            }
            st.final_layer_norm.visit(&format!("{name}.final_layer_norm"), f);
        }
        if let Some(h) = &self.lm_head {
            h.visit("lm_head", f);
        }
    }

    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        for (name, st) in [("encoder", &mut self.encoder), ("decoder", &mut self.decoder)] {
            for (i, blk) in st.block.iter_mut().enumerate() {
                let p = format!("{name}.block.{i}");
                let attn = |a: &mut T5Attention<B>, p: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)| {
                    f(&format!("{p}.q"), &mut a.q);
                    f(&format!("{p}.k"), &mut a.k);
                    f(&format!("{p}.v"), &mut a.v);
                    f(&format!("{p}.o"), &mut a.o);
                };
                attn(&mut blk.self_attention, &format!("{p}.layer.0.SelfAttention"), f);
                let ff_idx = match &mut blk.cross_attention {
                    Some(a) => {
                        attn(a, &format!("{p}.layer.1.EncDecAttention"), f);
                        2
                    }
                    None => 1,
                };
                let ff = &mut blk.ff;
                let fp = format!("{p}.layer.{ff_idx}.DenseReluDense");
                match &mut ff.wi_1 {
                    Some(wi_1) => {
                        f(&format!("{fp}.wi_0"), &mut ff.wi_0);
                        f(&format!("{fp}.wi_1"), wi_1);
                    }
                    None => f(&format!("{fp}.wi"), &mut ff.wi_0),
                }
                f(&format!("{fp}.wo"), &mut ff.wo);
            }
        }
        if let Some(h) = &mut self.lm_head {
            f("lm_head", h);
        }
    }
}
