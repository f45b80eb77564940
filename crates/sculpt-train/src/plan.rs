//! A memory estimate before a run starts (`sculpt plan --config …`, also logged by `train`):
//! parameters, trainable factors or adapters, frozen factors, gradients, optimizer state and
//! activations with and without activation checkpointing, for the configured method, batch and
//! sequence length, in fp32.
//!
//! Parameter shapes come from the checkpoint headers (safetensors) without reading the weights;
//! a GGUF file is read whole (small models only). Activations are an estimate of what the
//! autodiff graph keeps per token and layer for sculpt's implementation (see [`activations`]).

use std::collections::BTreeMap;
use std::path::Path;

use sculpt_osft::targets::{default_targets, TargetSet};
use serde::Serialize;

use crate::config::{Checkpointing, Method, RunConfig};
use crate::error::{Result, TrainError};

/// One line of the estimate.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    /// What it counts.
    pub what: String,
    /// Bytes.
    pub bytes: u64,
}

/// The estimate.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPlan {
    /// Model family.
    pub family: String,
    /// Method.
    pub method: Method,
    /// Parameters in the checkpoint.
    pub parameters: u64,
    /// Trainable parameters under the method.
    pub trainable: u64,
    /// Everything but activations.
    pub rows: Vec<PlanRow>,
    /// Activations without checkpointing.
    pub activations: u64,
    /// Activations with activation checkpointing (the configured strategy; `"blocks"` when the
    /// run has it off).
    pub activations_checkpointed: u64,
    /// The strategy `activations_checkpointed` assumes.
    pub checkpointing: Checkpointing,
    /// With bf16 and checkpointing, the bf16 weight copies still alive at the peak (replaces the
    /// `bf16 copies` row in the checkpointed total: per-block checkpointing keeps one block's).
    pub bf16_copies_checkpointed: u64,
    /// In fp32, the dense `W + U diag(s) Vt` of the targets that apply their low-rank term in
    /// the merged form ([`sculpt_models::layers::LowRankForm`]) still alive at the peak with
    /// checkpointing (replaces the merged-copies row in the checkpointed total).
    #[serde(default)]
    pub merged_copies_checkpointed: u64,
    /// With `[osft] frozen_precision = "bf16"` and fp32 compute, the fp32 copies of the bf16
    /// `W_high` that the factored products keep for the backward, still alive at the peak with
    /// checkpointing (replaces that row in the checkpointed total).
    #[serde(default)]
    pub frozen_copies_checkpointed: u64,
    /// Batch × sequence length the activations assume.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Where `seq` comes from: `--seq`, the longest example of a pre-tokenized task, or the
    /// text formats' `data.max_prompt_tokens + data.max_answer_tokens`.
    pub seq_from: String,
    /// bf16 mixed precision (`train.precision = "bf16"`).
    pub bf16: bool,
}

const F32: u64 = 4;
const BF16_COPIES: &str = "bf16 copies of the linear weights";
const MERGED_COPIES: &str = "merged-form dense weights";
const FROZEN_COPIES: &str = "fp32 copies of the bf16 W_high";

impl MemoryPlan {
    /// Total bytes without / with activation checkpointing.
    pub fn totals(&self) -> (u64, u64) {
        let base: u64 = self.rows.iter().map(|r| r.bytes).sum();
        let copies: u64 = self.rows.iter().filter(|r| r.what.starts_with(BF16_COPIES) || r.what.starts_with(MERGED_COPIES) || r.what.starts_with(FROZEN_COPIES)).map(|r| r.bytes).sum();
        let checkpointed = self.bf16_copies_checkpointed + self.merged_copies_checkpointed + self.frozen_copies_checkpointed;
        (base + self.activations, base - copies + checkpointed + self.activations_checkpointed)
    }

    /// A human-readable table.
    pub fn to_text(&self) -> String {
        let gib = |b: u64| format!("{:>10.3} GiB", b as f64 / (1u64 << 30) as f64);
        let mut s = format!(
            "memory plan: {} {}, {} parameters ({} trainable), batch {} × {} tokens ({}), {}\n",
            self.family,
            self.method.name(),
            self.parameters,
            self.trainable,
            self.batch,
            self.seq,
            self.seq_from,
            if self.bf16 { "bf16 mixed precision (fp32 master weights)" } else { "fp32" }
        );
        for r in &self.rows {
            s.push_str(&format!("  {:<56}{}\n", r.what, gib(r.bytes)));
        }
        s.push_str(&format!("  {:<56}{}\n", "activations", gib(self.activations)));
        let name = match self.checkpointing {
            Checkpointing::Ops => "ops",
            _ => "blocks",
        };
        s.push_str(&format!("  {:<56}{}\n", format!("activations (activation_checkpointing = {name})"), gib(self.activations_checkpointed)));
        if self.bf16 {
            s.push_str(&format!("  {:<56}{}\n", format!("{BF16_COPIES} (checkpointing = {name})"), gib(self.bf16_copies_checkpointed)));
        }
        if self.rows.iter().any(|r| r.what.starts_with(MERGED_COPIES)) {
            s.push_str(&format!("  {:<56}{}\n", format!("{MERGED_COPIES} (checkpointing = {name})"), gib(self.merged_copies_checkpointed)));
        }
        if self.rows.iter().any(|r| r.what.starts_with(FROZEN_COPIES)) {
            s.push_str(&format!("  {:<56}{}\n", format!("{FROZEN_COPIES} (checkpointing = {name})"), gib(self.frozen_copies_checkpointed)));
        }
        let (a, b) = self.totals();
        s.push_str(&format!("  {:<56}{}\n  {:<56}{}\n", "total", gib(a), "total with activation_checkpointing", gib(b)));
        s
    }
}

/// Parameter shapes by name from a Hugging Face folder's safetensors headers, or a GGUF file.
pub fn parameter_shapes(model: &Path) -> Result<(serde_json::Value, BTreeMap<String, Vec<usize>>)> {
    let bad = |p: &Path, msg: String| TrainError::Config { path: p.to_path_buf(), msg };
    if model.is_file() {
        let g = sculpt_models::gguf::read_gguf(model)?;
        return Ok((g.config, g.tensors.tensors.into_iter().map(|(n, t)| (n, t.shape)).collect()));
    }
    let cfg_path = model.join("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::Io { path: cfg_path.clone(), source: e })?)
        .map_err(|e| bad(&cfg_path, e.to_string()))?;
    let mut files = vec![];
    let index = model.join("model.safetensors.index.json");
    if index.is_file() {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).map_err(|e| TrainError::Io { path: index.clone(), source: e })?)
            .map_err(|e| bad(&index, e.to_string()))?;
        let mut names: Vec<String> = v["weight_map"].as_object().ok_or_else(|| bad(&index, "no `weight_map`".into()))?.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        files.extend(names.into_iter().map(|n| model.join(n)));
    } else {
        files.push(model.join("model.safetensors"));
    }
    let mut shapes = BTreeMap::new();
    for f in files {
        use std::io::Read;
        let mut file = std::fs::File::open(&f).map_err(|e| TrainError::Io { path: f.clone(), source: e })?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|e| TrainError::Io { path: f.clone(), source: e })?;
        let n = u64::from_le_bytes(len);
        if n > 100_000_000 {
            return Err(bad(&f, format!("safetensors header of {n} bytes is not plausible")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| TrainError::Io { path: f.clone(), source: e })?;
        let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(&f, format!("safetensors header: {e}")))?;
        for (name, t) in v.as_object().ok_or_else(|| bad(&f, "safetensors header is not an object".into()))? {
            if name == "__metadata__" {
                continue;
            }
            let shape: Vec<usize> = t["shape"].as_array().map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect()).unwrap_or_default();
            shapes.insert(name.clone(), shape);
        }
    }
    Ok((config, shapes))
}

/// Activation bytes for `b` sequences of `s` tokens: `(plain, checkpointed)`.
///
/// Per layer and token the autodiff graph of sculpt's LLaMA keeps about `8d + 5·q + 3·kv + 5i`
/// floats (norm inputs and outputs, q/k/v before and after RoPE, the repeated k/v, attention
/// output, residuals, the SwiGLU branch) plus `3·H·s` for the attention scores, probabilities and
/// masked scores. burn's balanced checkpointing recomputes some memory-bound (element-wise) ops;
/// measured on a 25M-parameter LLaMA at 8 × 513 tokens (`crates/sculpt-cli/tests/memory.rs`) it
/// keeps about `6d + 4·q + 3·kv + 4i + 3·H·s` — it saves ≈ 13 % of the peak there, not the
/// activations of whole blocks. T5 blocks are counted the same way (encoder with
/// self-attention; decoder with self- and cross-attention). The output head adds `3·V` per
/// token (the logits, their gradient, and one temporary of the loss: on the CPU the fused
/// cross-entropy keeps no log-softmax, other backends do). LLaMA adds its RoPE tables,
/// `2·s·(q + kv)` floats per forward whatever `b` (`2·s·q` without grouped queries).
///
/// Per-block checkpointing (`"blocks"`) keeps each block's input (`d` per token and layer; T5
/// also the encoder output and its gradient) plus, at the peak, the gradient flowing between
/// blocks and the graph of the one segment being back-propagated: the largest of a block's
/// activations and the head's `3·V`.
///
/// With `bf16` mixed precision the inputs the linear layers keep for their weight gradients
/// (one shared copy per q/k/v and gate/up group, the attention output, the MLP hidden state)
/// are bf16: 2 bytes less each. Measured at the setting above: −8.6 % of the peak.
///
/// Returns `(plain, ops, blocks)` bytes.
pub fn activations(config: &serde_json::Value, b: usize, s: usize, bf16: bool) -> (u64, u64, u64) {
    let get = |k: &str| config.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as f64;
    let tokens = (b * s) as f64;
    let (b, s) = (b as f64, s as f64);
    let (plain, ckpt, blocks) = if config.get("model_type").and_then(|v| v.as_str()) == Some("t5") {
        let (d, ff, h, dkv, v) = (get("d_model"), get("d_ff"), get("num_heads"), get("d_kv"), get("vocab_size"));
        let q = h * dkv;
        let enc = get("num_layers");
        let dec = config.get("num_decoder_layers").and_then(|x| x.as_u64()).map_or(enc, |x| x as f64);
        let attn = |pl: bool| if pl { 8.0 * d + 8.0 * q + 3.0 * h * s } else { 6.0 * d + 6.0 * q + 3.0 * h * s };
        let mlp = |pl: bool| if pl { 5.0 * ff } else { 4.0 * ff };
        let per = |pl: bool| tokens * (enc * (attn(pl) + mlp(pl)) + dec * (2.0 * attn(pl) + mlp(pl)) + 3.0 * v);
        let halved = if bf16 { tokens * (enc * (3.0 * d + q + ff) + dec * (2.0 * (2.0 * d + q) + d + ff)) / 2.0 } else { 0.0 };
        let dec_block = 2.0 * attn(true) + mlp(true) - if bf16 { (2.0 * (2.0 * d + q) + d + ff) / 2.0 } else { 0.0 };
        let blocks = tokens * ((enc + dec + 4.0) * d + dec_block.max(3.0 * v));
        (per(true) - halved, per(false) - halved, blocks)
    } else {
        let (d, i, h, l, v) = (get("hidden_size"), get("intermediate_size"), get("num_attention_heads"), get("num_hidden_layers"), get("vocab_size"));
        let kvh = config.get("num_key_value_heads").and_then(|x| x.as_u64()).map_or(h, |x| x as f64);
        let hd = config.get("head_dim").and_then(|x| x.as_u64()).map_or(if h > 0.0 { d / h } else { 0.0 }, |x| x as f64);
        let (q, kv) = (h * hd, kvh * hd);
        let plain = tokens * (l * (8.0 * d + 5.0 * q + 3.0 * kv + 5.0 * i + 3.0 * h * s) + 3.0 * v);
        let ckpt = tokens * (l * (6.0 * d + 4.0 * q + 3.0 * kv + 4.0 * i + 3.0 * h * s) + 3.0 * v);
        let halved = if bf16 { tokens * l * (2.0 * d + q + i) / 2.0 } else { 0.0 };
        let block = 8.0 * d + 5.0 * q + 3.0 * kv + 5.0 * i + 3.0 * h * s - if bf16 { (2.0 * d + q + i) / 2.0 } else { 0.0 };
        let blocks = tokens * ((l + 2.0) * d + block.max(3.0 * v));
        // The RoPE tables, repeated per head (`llama.rs::RopeTables`), once per forward; one
        // table serves both sides when there are as many key/value heads as query heads.
        let rope = 2.0 * s * if kv == q { q } else { q + kv };
        (plain - halved + rope, ckpt - halved + rope, blocks + rope)
    };
    let _ = b;
    ((plain * F32 as f64) as u64, (ckpt * F32 as f64) as u64, (blocks * F32 as f64) as u64)
}

/// The sequence length a run's activations are planned at, and where it comes from: the
/// largest over the tasks of
/// - for a pre-tokenized task, its longest training example (`input_ids`; for an
///   encoder–decoder model the longer of `input_ids` and `labels`, since the plan runs both
///   stacks at one length): these files are used as they are, however long;
/// - for the text formats, `data.max_prompt_tokens + data.max_answer_tokens`, beyond which
///   their examples are cut or refused.
///
/// A batch pads to its longest row, so every row is planned at this length.
pub fn data_seq(cfg: &RunConfig, encoder_decoder: bool) -> Result<(usize, String)> {
    let bound = (cfg.data.max_prompt_tokens + cfg.data.max_answer_tokens, "data.max_prompt_tokens + data.max_answer_tokens".to_string());
    let mut longest: Option<(usize, String)> = None;
    for t in &cfg.tasks {
        let this = if t.format == crate::config::DataFormat::Pretokenized {
            let (inputs, labels) = sculpt_data::longest_pretokenized(&t.data)?;
            (if encoder_decoder { inputs.max(labels) } else { inputs }, format!("the longest example of task {}", t.name))
        } else {
            bound.clone()
        };
        if longest.as_ref().is_none_or(|(l, _)| this.0 > *l) {
            longest = Some(this);
        }
    }
    Ok(longest.unwrap_or(bound))
}

/// The block a parameter or module name belongs to (`model.layers.3`, `encoder.block.0`), if any.
fn block_of(n: &str) -> Option<String> {
    let (a, r) = n.split_once(".layers.").or_else(|| n.split_once(".block."))?;
    Some(format!("{a}.{}", r.split('.').next().unwrap_or("")))
}

/// The largest sum of `bytes` over the items of one block (`None`: counted in no block): what
/// per-block checkpointing keeps alive at once.
fn largest_block(items: impl IntoIterator<Item = (Option<String>, u64)>) -> u64 {
    let mut per_block: BTreeMap<String, u64> = BTreeMap::new();
    for (block, bytes) in items {
        if let Some(b) = block {
            *per_block.entry(b).or_default() += bytes;
        }
    }
    per_block.values().copied().max().unwrap_or(0)
}

/// The estimate for `cfg` (batch `train.batch_size`, sequence `seq`, else the one
/// [`data_seq`] reads from the tasks).
pub fn plan(cfg: &RunConfig, seq: Option<usize>) -> Result<MemoryPlan> {
    let (config, shapes) = parameter_shapes(&cfg.model)?;
    let family = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("llama").to_string();
    let (seq, seq_from) = match seq {
        Some(s) => (s, "--seq".to_string()),
        None => data_seq(cfg, family == "t5")?,
    };
    // Tied aliases are stored once.
    let parameters: u64 = shapes.values().map(|s| s.iter().product::<usize>() as u64).sum();
    let osft_patterns = cfg.osft.targets.clone().unwrap_or_else(|| default_targets(&family));
    let lora_patterns = cfg.lora.targets.clone().or_else(|| cfg.osft.targets.clone()).unwrap_or_else(|| default_targets(&family));
    let matrices = |patterns: &[String]| -> Result<Vec<(String, usize, usize)>> {
        let t = TargetSet::new(patterns)?;
        Ok(shapes.iter().filter_map(|(n, s)| n.strip_suffix(".weight").filter(|m| s.len() == 2 && t.matches(m)).map(|m| (m.to_string(), s[0], s[1]))).collect())
    };
    let adam = matches!(cfg.train.optimizer, crate::config::OptimizerKind::Adamw);
    let batch = cfg.train.batch_size;
    let bf16 = cfg.train.precision == crate::config::Precision::Bf16;
    // Row shards each run their own graph on `batch / shards` rows (unset: planned as one).
    let shards = cfg.train.row_shards.unwrap_or(1).clamp(1, batch.max(1));
    let tokens_per_call = batch.div_ceil(shards) * seq;
    // Targets whose low-rank term multiplies in the merged form keep `W + U diag(s) Vt` for the
    // backward: a dense fp32 copy per shard (in bf16 the bf16 copy of the weight is made and
    // counted either way). `(module name, bytes)`.
    let mut merged: Vec<(String, u64)> = vec![];
    // `[osft] frozen_precision = "bf16"`: with fp32 compute, the factored targets' products keep
    // an fp32 copy of `W_high` for the backward (`(module name, bytes)`); with bf16 compute they
    // read it as it is, so those targets have no bf16 copy (module names).
    let frozen_bf16 = cfg.method == Method::Osft && cfg.osft.frozen_precision == sculpt_osft::FrozenPrecision::Bf16;
    let mut frozen_copies: Vec<(String, u64)> = vec![];
    let mut read_as_stored: std::collections::BTreeSet<String> = Default::default();
    // Targets whose high part is held as factors: what their products read, `k(n + m)` numbers
    // (module name → count), in place of the dense `n·m`.
    let mut read_as_factors: BTreeMap<String, u64> = BTreeMap::new();
    let opt_factor = if adam { 2 } else { 0 };
    let mut rows = vec![];
    let trainable: u64;
    match cfg.method {
        Method::Osft => {
            let policy = sculpt_osft::rank::RankPolicy::new(cfg.osft.rank.clone(), &cfg.osft.rank_overrides)?;
            let (mut dense, mut high, mut low) = (0u64, 0u64, 0u64);
            // Targets whose high part is held as factors: the dense `n·m` they do not store, and
            // the factor values they store beyond the shared bases.
            let (mut replaced, mut factor_values, mut factored_targets) = (0u64, 0u64, 0usize);
            for (name, n, m) in matrices(&osft_patterns)? {
                // The adaptive rule averages ρ = trr over the targets; plan with that.
                let k = policy.rule_for(&name).retained(n, m, Some(1.0)) as u64;
                let as_factors = sculpt_osft::high_as_factors(cfg.osft.frozen_form, cfg.osft.bases, n, m, k as usize);
                let (n, m) = (n as u64, m as u64);
                let r = n.min(m) - k;
                // Each side stores the frozen basis, or the smaller complement one where it spans
                // the same projection (`[osft] bases = "auto"`).
                let complement = |dim: u64| cfg.osft.bases.complement(dim as usize, n as usize, m as usize, k as usize);
                let side = |dim: u64| if complement(dim) { r } else { k };
                high += n * side(n) + m * side(m);
                low += r * (n + m + 1);
                if as_factors {
                    // A factored high part keeps `s_h` and the factor of each side that
                    // projects through its complement. A call that merges forms the whole
                    // matrix and keeps it for the backward, as a dense target's merged call does.
                    replaced += n * m;
                    factor_values += k + if complement(n) { n * k } else { 0 } + if complement(m) { k * m } else { 0 };
                    factored_targets += 1;
                    if cfg.osft.forward.merges_on_factors(tokens_per_call, n as usize, m as usize, k as usize, r as usize, true) {
                        if !bf16 {
                            merged.push((name.clone(), F32 * n * m * shards as u64));
                        }
                    } else {
                        read_as_factors.insert(name.clone(), k * (n + m));
                    }
                    continue;
                }
                dense += n * m;
                let merges = cfg.osft.forward.merges(tokens_per_call, n as usize, m as usize, r as usize, true);
                if !bf16 && merges {
                    merged.push((name.clone(), F32 * n * m * shards as u64));
                }
                if frozen_bf16 && !merges {
                    if bf16 {
                        read_as_stored.insert(name.clone());
                    } else {
                        frozen_copies.push((name.clone(), F32 * n * m * shards as u64));
                    }
                }
            }
            let others = parameters - dense - replaced;
            let non_targets_train = if cfg.osft.train_non_targets { others } else { 0 };
            trainable = low + non_targets_train;
            if frozen_bf16 {
                rows.push(PlanRow { what: "frozen weights (non-targets + dense W_high in bf16)".into(), bytes: F32 * others + 2 * dense });
            } else {
                rows.push(PlanRow { what: "frozen weights (non-targets + dense W_high)".into(), bytes: F32 * (others + dense) });
            }
            if factored_targets > 0 {
                rows.push(PlanRow { what: format!("high parts held as factors ({factored_targets} targets; s_h, unshared U_h/Vt_h)"), bytes: F32 * factor_values });
            }
            rows.push(PlanRow { what: "projection bases (U_h, Vt_h or complements)".into(), bytes: F32 * high });
            rows.push(PlanRow { what: "trainable low factors U_l, s_l, Vt_l".into(), bytes: F32 * low });
            rows.push(PlanRow { what: "gradients".into(), bytes: F32 * trainable });
            rows.push(PlanRow { what: format!("optimizer state ({})", if adam { "AdamW: 2 moments" } else { "SGD: none" }), bytes: F32 * opt_factor * trainable });
        }
        Method::Lora | Method::Olora => {
            let r = cfg.lora.rank as u64;
            let adapters: u64 = matrices(&lora_patterns)?.iter().map(|&(_, n, m)| r.min(n as u64).min(m as u64) * (n + m) as u64).sum();
            trainable = adapters;
            rows.push(PlanRow { what: "frozen weights".into(), bytes: F32 * parameters });
            rows.push(PlanRow { what: format!("LoRA adapters (rank {r})"), bytes: F32 * adapters });
            rows.push(PlanRow { what: "gradients".into(), bytes: F32 * trainable });
            rows.push(PlanRow { what: format!("optimizer state ({})", if adam { "AdamW: 2 moments" } else { "SGD: none" }), bytes: F32 * opt_factor * trainable });
        }
        _ => {
            trainable = parameters;
            rows.push(PlanRow { what: "weights (all trainable)".into(), bytes: F32 * parameters });
            rows.push(PlanRow { what: "gradients".into(), bytes: F32 * trainable });
            rows.push(PlanRow { what: format!("optimizer state ({})", if adam { "AdamW: 2 moments" } else { "SGD: none" }), bytes: F32 * opt_factor * trainable });
            if cfg.method == Method::Ewc {
                rows.push(PlanRow { what: "EWC Fisher and anchor".into(), bytes: F32 * 2 * parameters });
            }
        }
    }
    if !merged.is_empty() {
        let what = format!("{MERGED_COPIES} W + U diag(s) Vt ({} targets, {tokens_per_call} tokens per call)", merged.len());
        rows.push(PlanRow { what, bytes: merged.iter().map(|(_, b)| b).sum() });
    }
    if !frozen_copies.is_empty() {
        let what = format!("{FROZEN_COPIES} ({} targets, fp32 compute)", frozen_copies.len());
        rows.push(PlanRow { what, bytes: frozen_copies.iter().map(|(_, b)| b).sum() });
    }
    let module = |n: &str| n.strip_suffix(".weight").unwrap_or(n).to_string();
    let copied = |n: &str| !read_as_stored.contains(&module(n));
    // What the products of a weight read: the dense matrix, or a factored high part's factors.
    let read = |n: &str, sh: &[usize]| read_as_factors.get(&module(n)).copied().unwrap_or(sh.iter().product::<usize>() as u64);
    // The bf16 copies of the weights the products read, kept for the backward pass.
    let bf16_copies: u64 = if bf16 {
        2 * shapes
            .iter()
            .filter(|(n, sh)| sh.len() == 2 && !n.contains("embed_tokens") && !n.starts_with("shared") && copied(n))
            .map(|(n, sh)| read(n, sh))
            .sum::<u64>()
    } else {
        0
    };
    if bf16 {
        rows.push(PlanRow { what: BF16_COPIES.into(), bytes: bf16_copies });
    }
    let checkpointing = match cfg.train.activation_checkpointing {
        Checkpointing::Ops => Checkpointing::Ops,
        _ => Checkpointing::Blocks,
    };
    let bf16_copies_checkpointed = match (bf16, checkpointing) {
        (false, _) => 0,
        (true, Checkpointing::Ops) => bf16_copies,
        // One segment's copies at a time: a block's, or the untied head's.
        (true, _) => {
            let head: u64 = shapes.iter().filter(|(n, sh)| sh.len() == 2 && n.starts_with("lm_head")).map(|(_, sh)| 2 * sh.iter().product::<usize>() as u64).sum();
            let matrices = shapes.iter().filter(|(n, sh)| sh.len() == 2 && copied(n)).map(|(n, sh)| (block_of(n), 2 * read(n, sh)));
            largest_block(matrices).max(head)
        }
    };
    // Per-block checkpointing keeps one block's per-target copies (per shard) at a time; the op
    // strategy keeps them all.
    let alive = |copies: &[(String, u64)]| match checkpointing {
        Checkpointing::Ops => copies.iter().map(|(_, b)| b).sum(),
        // Targets outside every block share one bucket.
        _ => largest_block(copies.iter().map(|(n, b)| (Some(block_of(n).unwrap_or_default()), *b))),
    };
    let (merged_copies_checkpointed, frozen_copies_checkpointed) = (alive(&merged), alive(&frozen_copies));
    let (activations, ops, blocks) = activations(&config, batch, seq, bf16);
    let activations_checkpointed = if checkpointing == Checkpointing::Ops { ops } else { blocks };
    Ok(MemoryPlan { family, method: cfg.method, parameters, trainable, rows, activations, activations_checkpointed, checkpointing, bf16_copies_checkpointed, merged_copies_checkpointed, frozen_copies_checkpointed, batch, seq, seq_from, bf16 })
}

/// The planned total of `cfg`'s run as it is configured: with its activation checkpointing, or
/// without when that is off.
pub fn configured_total(cfg: &RunConfig, plan: &MemoryPlan) -> u64 {
    if cfg.train.activation_checkpointing.enabled() {
        plan.totals().1
    } else {
        plan.totals().0
    }
}

/// One change [`fit`] tried, with the planned total once it (and every change before it) is made.
#[derive(Debug, Clone, Serialize)]
pub struct FitStep {
    /// The config lines that make the change, as a user would write them.
    pub change: String,
    /// What it costs.
    pub cost: &'static str,
    /// The planned total with this and the earlier changes, in bytes.
    pub total: u64,
}

/// What [`fit`] found.
#[derive(Debug, Clone, Serialize)]
pub struct FitAdvice {
    /// The budget, in bytes.
    pub budget: u64,
    /// The planned total of the run as configured.
    pub total: u64,
    /// The changes tried, in order, each on top of the ones before; the last fits when
    /// `fits` is set (empty when the run fits as configured).
    pub steps: Vec<FitStep>,
    /// Whether the run (as configured, or with `steps`) fits the budget.
    pub fits: bool,
}

impl FitAdvice {
    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut s = format!("fit in {:.1} GiB: the run as configured plans {:.1} GiB", gib(self.budget), gib(self.total));
        if self.steps.is_empty() {
            s.push_str(if self.fits { " — it fits\n" } else { " — it does not fit\n" });
            return s;
        }
        s.push_str(" — it does not fit. Changes, each on top of the ones before:\n");
        for st in &self.steps {
            s.push_str(&format!("  {:<60}{:>8.1} GiB   ({})\n", st.change, gib(st.total), st.cost));
        }
        if self.fits {
            s.push_str("the last total fits; make the changes above in the config\n");
        } else {
            s.push_str("no change tried fits: a smaller model, shorter sequences or the data-parallel sharding planned after the single-GPU path\n");
        }
        s
    }
}

/// One change [`fit`] may make: applied to a config, the lines that make it (`None` when it does
/// not apply).
type FitChange = Box<dyn Fn(&mut RunConfig) -> Option<String>>;

/// Whether `cfg`'s run fits `budget` bytes by its plan, and if not, which config changes make it
/// fit: tried one after another, each kept, the least costly first — per-block activation
/// checkpointing (exact; recomputes the forward), OSFT's high parts as factors (the SVD's
/// round-off; +3 % flops on LLaMA-7B's MLP), micro-batches halved with twice the gradient
/// accumulation while the batch is even (exact; smaller products), OSFT's dense `W_high` in bf16
/// (one rounding), and bf16 mixed precision — until the plan fits. A change that would not
/// lower the plan is skipped.
pub fn fit(cfg: &RunConfig, seq: Option<usize>, budget: u64) -> Result<FitAdvice> {
    let first = plan(cfg, seq)?;
    let total = configured_total(cfg, &first);
    // The trials change no data: plan them at the length found once.
    let seq = Some(first.seq);
    let mut advice = FitAdvice { budget, total, steps: vec![], fits: total <= budget };
    let mut c = cfg.clone();
    let osft = c.method == Method::Osft;
    let mut changes: Vec<(FitChange, &'static str)> = vec![
        (
            Box::new(|c: &mut RunConfig| {
                (c.train.activation_checkpointing != Checkpointing::Blocks).then(|| {
                    c.train.activation_checkpointing = Checkpointing::Blocks;
                    "[train] activation_checkpointing = \"blocks\"".to_string()
                })
            }),
            "exact; the forward runs twice",
        ),
        (
            Box::new(move |c: &mut RunConfig| {
                (osft && c.osft.frozen_form != sculpt_osft::FrozenForm::Factors).then(|| {
                    c.osft.frozen_form = sculpt_osft::FrozenForm::Factors;
                    "[osft] frozen_form = \"factors\"".to_string()
                })
            }),
            "the SVD's round-off; a few % more flops on the factored layers",
        ),
    ];
    // Halving the micro-batch, as long as it stays a whole number.
    for _ in 0..usize::BITS {
        changes.push((
            Box::new(|c: &mut RunConfig| {
                (c.train.batch_size > 1 && c.train.batch_size.is_multiple_of(2)).then(|| {
                    c.train.batch_size /= 2;
                    c.train.grad_accumulation *= 2;
                    format!("[train] batch_size = {}, grad_accumulation = {}", c.train.batch_size, c.train.grad_accumulation)
                })
            }),
            "exact; the same batch in more, smaller products",
        ));
    }
    changes.push((
        Box::new(move |c: &mut RunConfig| {
            (osft && c.osft.frozen_precision != sculpt_osft::FrozenPrecision::Bf16).then(|| {
                c.osft.frozen_precision = sculpt_osft::FrozenPrecision::Bf16;
                "[osft] frozen_precision = \"bf16\"".to_string()
            })
        }),
        "one bf16 rounding of the dense W_high; not on wgpu",
    ));
    changes.push((
        Box::new(|c: &mut RunConfig| {
            (c.train.precision != crate::config::Precision::Bf16).then(|| {
                c.train.precision = crate::config::Precision::Bf16;
                "[train] precision = \"bf16\"".to_string()
            })
        }),
        "bf16 products (fp32 master weights); not on wgpu",
    ));
    if advice.fits {
        return Ok(advice);
    }
    let mut current = total;
    for (change, cost) in changes.iter_mut() {
        let mut trial = c.clone();
        let Some(line) = change(&mut trial) else { continue };
        let total = configured_total(&trial, &plan(&trial, seq)?);
        // A change that does not lower the plan is not kept (bf16 products add bf16 copies of
        // the weights, which can outweigh the smaller activations).
        if total >= current {
            continue;
        }
        (c, current) = (trial, total);
        advice.steps.push(FitStep { change: line, cost, total });
        if total <= budget {
            advice.fits = true;
            break;
        }
    }
    Ok(advice)
}

/// Peak resident memory of this process so far (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current resident memory (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}


#[cfg(test)]
mod tests {
    use super::*;

    /// A Hugging Face folder with a header-only `model.safetensors` (the plan reads shapes only).
    fn llama_folder(dir: &Path, d: usize, i: usize, layers: usize, heads: usize, kv: usize, vocab: usize) {
        let hd = d / heads;
        let mut header = serde_json::Map::new();
        let mut add = |name: String, shape: Vec<usize>| {
            header.insert(name, serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [0, 0]}));
        };
        add("model.embed_tokens.weight".into(), vec![vocab, d]);
        add("lm_head.weight".into(), vec![vocab, d]);
        add("model.norm.weight".into(), vec![d]);
        for l in 0..layers {
            let p = format!("model.layers.{l}");
            add(format!("{p}.input_layernorm.weight"), vec![d]);
            add(format!("{p}.post_attention_layernorm.weight"), vec![d]);
            add(format!("{p}.self_attn.q_proj.weight"), vec![heads * hd, d]);
            add(format!("{p}.self_attn.k_proj.weight"), vec![kv * hd, d]);
            add(format!("{p}.self_attn.v_proj.weight"), vec![kv * hd, d]);
            add(format!("{p}.self_attn.o_proj.weight"), vec![d, heads * hd]);
            add(format!("{p}.mlp.gate_proj.weight"), vec![i, d]);
            add(format!("{p}.mlp.up_proj.weight"), vec![i, d]);
            add(format!("{p}.mlp.down_proj.weight"), vec![d, i]);
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(h);
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        let cfg = serde_json::json!({"model_type": "llama", "hidden_size": d, "intermediate_size": i, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab});
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    }

    fn cfg(model: &Path, method: &str, extra: &str) -> RunConfig {
        let text = format!("model = {model:?}\noutput = \"o\"\nmethod = \"{method}\"\n{extra}\n[[tasks]]\nname = \"a\"\ndata = \"a.jsonl\"\n");
        RunConfig::from_toml(Path::new("/x/run.toml"), &text).unwrap()
    }

    /// Without `--seq` the activations are planned at the data's length: a pre-tokenized task's
    /// longest example (for an encoder–decoder model, the longer of its lists), the text formats'
    /// token limits, the largest over the tasks; an unreadable file is an error naming it.
    #[test]
    fn the_sequence_comes_from_the_data() {
        let dir = tempfile::tempdir().unwrap();
        llama_folder(dir.path(), 64, 128, 2, 4, 2, 64);
        let line = |i: usize, l: usize| format!("{{\"input_ids\": {:?}, \"labels\": {:?}}}\n", vec![1; i], vec![1; l]);
        std::fs::write(dir.path().join("short.jsonl"), line(5, 5) + &line(9, 3)).unwrap();
        std::fs::write(dir.path().join("long.jsonl"), line(40, 40) + "\n" + &line(12, 70)).unwrap();
        let run = |tasks: &str| {
            let text = format!("model = {:?}\noutput = \"o\"\n[data]\nmax_prompt_tokens = 20\nmax_answer_tokens = 4\n{tasks}", dir.path());
            RunConfig::from_toml(&dir.path().join("run.toml"), &text).unwrap()
        };
        let task = |name: &str, extra: &str| format!("[[tasks]]\nname = \"{name}\"\ndata = \"{name}.jsonl\"\n{extra}");
        let short = run(&task("short", ""));
        let both = run(&(task("short", "") + &task("long", "")));
        assert_eq!(data_seq(&short, false).unwrap(), (9, "the longest example of task short".to_string()));
        assert_eq!(data_seq(&both, false).unwrap(), (40, "the longest example of task long".to_string()));
        assert_eq!(data_seq(&both, true).unwrap().0, 70, "an encoder–decoder plan takes the longer list");
        // A text task is bounded by the limits (20 + 4), and wins over shorter pre-tokenized data.
        let olora = run(&(task("short", "") + &task("text", "format = \"olora\"")));
        assert_eq!(data_seq(&olora, false).unwrap(), (24, "data.max_prompt_tokens + data.max_answer_tokens".to_string()));
        // The plan itself, and its activations, follow; `--seq` still wins.
        let (p9, p40, given) = (plan(&short, None).unwrap(), plan(&both, None).unwrap(), plan(&both, Some(9)).unwrap());
        assert_eq!((p9.seq, p40.seq, given.seq), (9, 40, 9));
        assert!(p9.to_text().contains("batch 8 × 9 tokens (the longest example of task short)"), "{}", p9.to_text());
        assert!(given.to_text().contains("× 9 tokens (--seq)"), "{}", given.to_text());
        assert_eq!(given.activations, p9.activations);
        assert!(p40.activations > 4 * p9.activations, "{} vs {}", p40.activations, p9.activations);
        let missing = run(&task("absent", ""));
        let e = plan(&missing, None).unwrap_err().to_string();
        assert!(e.contains("absent.jsonl"), "{e}");
        assert!(plan(&missing, Some(16)).is_ok(), "with --seq the data is not read");
    }

    /// Targets whose low-rank term multiplies in the merged form add their dense fp32 weights
    /// (per row shard; one block's with per-block checkpointing); the factored form and bf16
    /// (whose weight copies are made either way) add none.
    #[test]
    fn merged_form_copies_are_planned() {
        let dir = tempfile::tempdir().unwrap();
        llama_folder(dir.path(), 256, 768, 2, 4, 2, 64);
        let dense_per_layer: u64 = 2 * 256 * 256 + 2 * 128 * 256 + 3 * 768 * 256;
        let row = |p: &MemoryPlan| p.rows.iter().find(|r| r.what.starts_with(MERGED_COPIES)).map(|r| r.bytes);
        // 8 × 513 tokens per call: every target merges (the half-rank default).
        let p = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\n"), Some(513)).unwrap();
        assert_eq!(row(&p), Some(F32 * 2 * dense_per_layer));
        assert_eq!(p.merged_copies_checkpointed, F32 * dense_per_layer);
        let (plain, ckpt) = p.totals();
        assert!(p.to_text().contains(MERGED_COPIES));
        // Two row shards: two graphs, each with its own copies.
        let sharded = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nrow_shards = 2\n"), Some(513)).unwrap();
        assert_eq!(row(&sharded), Some(F32 * 4 * dense_per_layer));
        // Forced factored, or bf16: no row, and the totals drop by exactly the copies.
        let f = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\n[osft]\nforward = \"factored\"\n"), Some(513)).unwrap();
        assert_eq!(row(&f), None);
        assert_eq!(f.totals(), (plain - F32 * 2 * dense_per_layer, ckpt - F32 * dense_per_layer));
        let b = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nprecision = \"bf16\"\n"), Some(513)).unwrap();
        assert_eq!(row(&b), None);
        // One short row per call stays factored.
        let short = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 1\n"), Some(8)).unwrap();
        assert_eq!(row(&short), None);
    }

    /// LLaMA-2-7B at unfreeze 0.25, batch 8 × 512 (the README's worked example): the parameter
    /// count is LLaMA-2-7B's, the low factors are what the rank rule implies, and the totals are
    /// printed for the README.
    #[test]
    fn llama2_7b_worked_example() {
        let dir = tempfile::tempdir().unwrap();
        llama_folder(dir.path(), 4096, 11008, 32, 32, 32, 32000);
        let p = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\n"), Some(512)).unwrap();
        assert_eq!(p.parameters, 6_738_415_616);
        // Per layer: 4 attention matrices 4096² (R 4096, r 1024) and 3 MLP ones 11008×4096 (R 4096, r 1024).
        let low_per_layer = 4 * 1024 * (4096 + 4096 + 1) + 3 * 1024 * (11008 + 4096 + 1);
        assert_eq!(p.trainable, 32 * low_per_layer as u64);
        // Per-block checkpointing keeps the block inputs and one block's graph.
        assert_eq!(p.checkpointing, Checkpointing::Blocks);
        assert!(p.activations_checkpointed * 10 < p.activations, "{} vs {}", p.activations_checkpointed, p.activations);
        let one = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 1\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\n"), Some(512)).unwrap();
        println!("{}", one.to_text());
        let ops = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nactivation_checkpointing = \"ops\"\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\n"), Some(512)).unwrap();
        assert_eq!(ops.checkpointing, Checkpointing::Ops);
        assert!(ops.activations_checkpointed > 10 * p.activations_checkpointed && ops.activations_checkpointed < p.activations);
        println!("{}", ops.to_text());
        let seqft = plan(&cfg(dir.path(), "seqft", "[train]\nbatch_size = 8\n"), Some(512)).unwrap();
        assert_eq!(seqft.trainable, p.parameters);
        println!("{}\n{}", p.to_text(), seqft.to_text());
        let lora = plan(&cfg(dir.path(), "lora", "[train]\nbatch_size = 8\n"), Some(512)).unwrap();
        assert_eq!(lora.trainable, 32 * 8 * (4 * (4096 + 4096) + 3 * (11008 + 4096)) as u64);
        // bf16 mixed precision: smaller activations, plus bf16 copies of the linear weights.
        let bf = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nprecision = \"bf16\"\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\n"), Some(512)).unwrap();
        println!("{}", bf.to_text());
        assert!(bf.activations < p.activations && bf.activations_checkpointed < p.activations_checkpointed);
        let copies = bf.rows.iter().find(|r| r.what.starts_with("bf16 copies")).expect("bf16 row").bytes;
        assert_eq!(copies, 2 * (32 * (4 * 4096 * 4096 + 3 * 11008 * 4096) + 32000 * 4096));
        // Checkpointed by blocks, one block's copies are alive at a time.
        assert_eq!(bf.bf16_copies_checkpointed, 2 * (4 * 4096 * 4096 + 3 * 11008 * 4096));

        // `W_high` stored in bf16: the frozen row loses 2 bytes per target weight; with fp32
        // compute one block's fp32 copies come back under per-block checkpointing, with bf16
        // compute the targets need no bf16 copy at all.
        let dense: u64 = 32 * (4 * 4096 * 4096 + 3 * 11008 * 4096);
        let frozen = |p: &MemoryPlan| p.rows.iter().find(|r| r.what.starts_with("frozen weights")).expect("frozen row").bytes;
        let fb = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\nfrozen_precision = \"bf16\"\n"), Some(512)).unwrap();
        println!("{}", fb.to_text());
        assert_eq!(frozen(&p) - frozen(&fb), 2 * dense);
        let block = 4 * (4 * 4096 * 4096 + 3 * 11008 * 4096);
        assert_eq!(fb.frozen_copies_checkpointed, block);
        assert_eq!(p.totals().1 - fb.totals().1, 2 * dense - block);
        let fb1 = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 1\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\nfrozen_precision = \"bf16\"\n"), Some(512)).unwrap();
        assert_eq!(one.totals().1 - fb1.totals().1, 2 * dense - block);
        println!("batch 1 × 512, blocks, bf16 W_high: {:.2} GiB", fb1.totals().1 as f64 / (1u64 << 30) as f64);
        // Without checkpointing every copy is kept: no saving.
        assert_eq!(fb.totals().0, p.totals().0 + 2 * dense);
        let fbb = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nprecision = \"bf16\"\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\nfrozen_precision = \"bf16\"\n"), Some(512)).unwrap();
        println!("{}", fbb.to_text());
        let copies_bf = |p: &MemoryPlan| p.rows.iter().find(|r| r.what.starts_with("bf16 copies")).expect("bf16 row").bytes;
        // Only the untied head's copy is left (the targets are every linear layer of the blocks).
        assert_eq!(copies_bf(&fbb), 2 * 32000 * 4096);
        assert_eq!(fbb.frozen_copies_checkpointed, 0);
        assert_eq!(bf.totals().1 - fbb.totals().1, 2 * dense + bf.bf16_copies_checkpointed - fbb.bf16_copies_checkpointed);

        // The high part as factors: the MLP targets (11008 × 4096, k 3072) keep `s_h` and
        // `Vt_h` (their 4096 side projects through the complement) instead of the dense matrix;
        // the square attention targets (k 3072 > R/2: both sides on the complement) stay dense.
        let ff = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\nfrozen_form = \"factors\"\n"), Some(512)).unwrap();
        println!("{}", ff.to_text());
        let factors = ff.rows.iter().find(|r| r.what.starts_with("high parts held as factors (96 targets")).expect("factors row").bytes;
        assert_eq!(factors, 4 * 96 * (3072 + 3072 * 4096));
        assert_eq!(frozen(&p) - frozen(&ff), 4 * 96 * 11008 * 4096);
        assert_eq!(ff.trainable, p.trainable);
        let saved = 4 * 96 * (11008 * 4096 - 3072 * 4096 - 3072);
        assert_eq!(p.totals().1 - ff.totals().1, saved);
        println!("batch 8 × 512, blocks, high parts as factors: {:.2} GiB (saves {:.2})", ff.totals().1 as f64 / (1u64 << 30) as f64, saved as f64 / (1u64 << 30) as f64);
        // Together with bf16 storage of the attention targets' dense `W_high`.
        let ffb = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\nfrozen_form = \"factors\"\nfrozen_precision = \"bf16\"\n"), Some(512)).unwrap();
        let attn: u64 = 32 * 4 * 4096 * 4096;
        assert_eq!(ff.totals().1 - ffb.totals().1, 2 * attn - 4 * 4 * 4096 * 4096);
        println!("{}", ffb.to_text());
        println!("batch 8 × 512, blocks, factors + bf16 W_high: {:.2} GiB", ffb.totals().1 as f64 / (1u64 << 30) as f64);
        // Under bf16 compute the factored targets' copies are of the factors they read.
        let ffc = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nprecision = \"bf16\"\n[osft]\nrank = { rule = \"unfreeze\", fraction = 0.25 }\nfrozen_form = \"factors\"\n"), Some(512)).unwrap();
        let copies_ff = ffc.rows.iter().find(|r| r.what.starts_with("bf16 copies")).expect("bf16 row").bytes;
        // The paper's LLaMA configs (`configs/paper/llama-order*.toml`): the adaptive rule
        // (planned at its mean, ρ = trr = 0.8), batch 8 × (512 + 50) tokens, per-block checkpointing.
        let paper_at = |seq: usize, extra: &str| plan(&cfg(dir.path(), "osft", &format!("[train]\nbatch_size = 8\n[osft]\nrank = {{ rule = \"adaptive\" }}\n{extra}")), Some(seq)).unwrap().totals().1 as f64 / (1u64 << 30) as f64;
        let paper = |extra: &str| paper_at(562, extra);
        // TRACE (`configs/paper/trace-llama2-chat.toml`): 1024 + 512 tokens.
        let trace_b4 = plan(&cfg(dir.path(), "osft", "[train]\nbatch_size = 4\ngrad_accumulation = 2\n[osft]\nrank = { rule = \"adaptive\" }\nfrozen_form = \"factors\"\n"), Some(1536)).unwrap().totals().1 as f64 / (1u64 << 30) as f64;
        println!("TRACE config: {:.2} GiB; with factors: {:.2} GiB; factors + bf16 W_high: {:.2} GiB; factors, 2 micro-batches of 4: {trace_b4:.2} GiB", paper_at(1536, ""), paper_at(1536, "frozen_form = \"factors\"\n"), paper_at(1536, "frozen_form = \"factors\"\nfrozen_precision = \"bf16\"\n"));
        let (p_dense, p_factors, p_small) = (paper(""), paper("frozen_form = \"factors\"\n"), paper("frozen_form = \"factors\"\nfrozen_precision = \"bf16\"\n"));
        println!("paper config: {p_dense:.2} GiB; with factors: {p_factors:.2} GiB; with factors + bf16 W_high: {p_small:.2} GiB");
        // An 80 GB card holds 74.5 GiB: the paper's run fits there only with the two switches
        // the configs name in a comment.
        assert!(p_dense > 74.5 && p_small < 74.5 - 5.0, "{p_dense} / {p_small} GiB");
        // TRACE's 1536-token sequences need half-size micro-batches as well.
        assert!(trace_b4 < 74.5, "{trace_b4} GiB");

        // `fit` finds those changes for an 80 GB card: the paper config needs the factors only;
        // TRACE then halves its micro-batch once (the same steps as the configs' comments).
        let card = (74.5 * (1u64 << 30) as f64) as u64;
        let paper_cfg = cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nactivation_checkpointing = \"blocks\"\n[osft]\nrank = { rule = \"adaptive\" }\n");
        let a = fit(&paper_cfg, Some(562), card).unwrap();
        println!("{}", a.to_text());
        assert!(a.fits && !a.steps.is_empty());
        assert_eq!(a.steps.iter().map(|s| s.change.as_str()).collect::<Vec<_>>(), ["[osft] frozen_form = \"factors\""]);
        let t = fit(&paper_cfg, Some(1536), card).unwrap();
        println!("{}", t.to_text());
        assert_eq!(t.steps.iter().map(|s| s.change.as_str()).collect::<Vec<_>>(), ["[osft] frozen_form = \"factors\"", "[train] batch_size = 4, grad_accumulation = 2"]);
        assert!(t.fits && (t.steps[1].total as f64 / (1u64 << 30) as f64 - trace_b4).abs() < 1e-9);
        // Checkpointing off: turned on first. On a 141 GB card the paper run fits as it is.
        let off = cfg(dir.path(), "osft", "[train]\nbatch_size = 8\nactivation_checkpointing = false\n[osft]\nrank = { rule = \"adaptive\" }\n");
        let o = fit(&off, Some(562), card).unwrap();
        assert_eq!(o.steps[0].change, "[train] activation_checkpointing = \"blocks\"");
        assert!(o.steps[0].total < o.total);
        let h200 = fit(&paper_cfg, Some(562), 131 << 30).unwrap();
        assert!(h200.fits && h200.steps.is_empty());
        // Nothing fits a 10 GiB card: every change is tried, the batch halved down to 1.
        let none = fit(&paper_cfg, Some(562), 10 << 30).unwrap();
        assert!(!none.fits);
        assert!(none.steps.iter().any(|s| s.change == "[train] batch_size = 1, grad_accumulation = 8"));
        assert!(none.steps.iter().any(|s| s.change == "[osft] frozen_precision = \"bf16\""));
        assert!(none.steps.windows(2).all(|w| w[1].total < w[0].total), "a kept change did not lower the plan");
        println!("{}", none.to_text());
        assert_eq!(copies_ff - copies, 2 * 96 * (3072 * (11008 + 4096) - 11008 * 4096));
    }
}
