//! `sculpt demo`: a continual-learning stream that sculpt generates itself — a tiny random LLaMA,
//! its word-level tokenizer and three conflicting tasks — written as ordinary files (a Hugging
//! Face folder and TRACE-format task folders) and run through the same pipeline as any user
//! stream, so the demo exercises the real code path.
//!
//! The tasks are ciphers: `C c3 c7 =` → `f_C(3) f_C(7)`, each task with its own input alphabet
//! and its own fixed random permutation `f_C` of the digits. Every task answers with the same ten
//! digit tokens through the same layers, so training a later cipher overwrites the earlier ones
//! unless the method protects them. (With one shared input alphabet no method without replay
//! could keep two ciphers: the inputs would be identical but for the task letter.)

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use sculpt_models::{HostTensor, StoreDtype, TensorMap};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// The demo's run config (also in `configs/demo.toml`).
pub const DEMO_CONFIG: &str = include_str!("../../../configs/demo.toml");

/// Task letters, in stream order.
pub const TASKS: [&str; 3] = ["a", "b", "c"];

const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend(TASKS.iter().map(|t| t.to_uppercase()));
    v.push("=".into());
    v.extend((0..10).map(|d| d.to_string()));
    for t in TASKS {
        v.extend((0..10).map(|d| format!("{t}{d}")));
    }
    v
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), source: e }
}

/// The tokenizer: word level over the vocabulary, whitespace split, BOS added.
fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i.into())).collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "<unk>"}
    })
}

/// Sizes of a random LLaMA.
#[derive(Debug, Clone, Copy)]
pub struct LlamaDims {
    /// Width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
}

/// The demo's model: 2 layers, width 64, GQA 4/2.
pub const DEMO_DIMS: LlamaDims = LlamaDims { hidden: 64, intermediate: 128, layers: 2, heads: 4, kv_heads: 2 };

/// Write the tiny random LLaMA (2 layers, width 64, GQA 4/2, untied head) with its tokenizer as a
/// Hugging Face folder at `dir`.
pub fn write_model(dir: &Path, seed: u64) -> Result<()> {
    write_random_llama(dir, DEMO_DIMS, seed)
}

/// Write a random LLaMA of the given sizes (N(0, 0.02) matrices, unit norms, untied head) with
/// the demo's tokenizer as a Hugging Face folder at `dir`.
pub fn write_random_llama(dir: &Path, dims: LlamaDims, seed: u64) -> Result<()> {
    let vocab = vocab();
    let (d, ff, layers, heads, kv, v) = (dims.hidden, dims.intermediate, dims.layers, dims.heads, dims.kv_heads, vocab.len());
    let hd = d / heads;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": v,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float32"
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).expect("normal");
    let mut map = TensorMap::new(dir);
    let mut add = |name: String, shape: Vec<usize>, rng: &mut rand::rngs::StdRng| {
        let n: usize = shape.iter().product();
        let data = if shape.len() == 1 { vec![1.0; n] } else { (0..n).map(|_| normal.sample(rng)).collect() };
        map.insert(name, HostTensor::new(shape, data));
    };
    add("model.embed_tokens.weight".into(), vec![v, d], &mut rng);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.input_layernorm.weight"), vec![d], &mut rng);
        add(format!("{p}.post_attention_layernorm.weight"), vec![d], &mut rng);
        add(format!("{p}.self_attn.q_proj.weight"), vec![heads * hd, d], &mut rng);
        add(format!("{p}.self_attn.k_proj.weight"), vec![kv * hd, d], &mut rng);
        add(format!("{p}.self_attn.v_proj.weight"), vec![kv * hd, d], &mut rng);
        add(format!("{p}.self_attn.o_proj.weight"), vec![d, heads * hd], &mut rng);
        add(format!("{p}.mlp.gate_proj.weight"), vec![ff, d], &mut rng);
        add(format!("{p}.mlp.up_proj.weight"), vec![ff, d], &mut rng);
        add(format!("{p}.mlp.down_proj.weight"), vec![d, ff], &mut rng);
    }
    add("model.norm.weight".into(), vec![d], &mut rng);
    add("lm_head.weight".into(), vec![v, d], &mut rng);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    sculpt_models::safetensors_io::write_folder(dir, &map, StoreDtype::F32, sculpt_models::pretrained::DEFAULT_MAX_SHARD_BYTES)?;
    let write = |name: &str, v: &serde_json::Value| {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).map_err(io(&p))
    };
    write("config.json", &config)?;
    write("tokenizer.json", &tokenizer_json(&vocab))?;
    write("tokenizer_config.json", &serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))?;
    Ok(())
}

/// The cipher of task `t` (a seeded permutation of the digits with no fixed point).
pub fn cipher(seed: u64, t: usize) -> [u8; 10] {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(t as u64 + 1));
    loop {
        let mut p: Vec<u8> = (0..10).collect();
        p.shuffle(&mut rng);
        if p.iter().enumerate().all(|(i, &x)| i as u8 != x) {
            return p.try_into().expect("10 digits");
        }
    }
}

/// Write the three task folders under `dir` (`cipher-a/`, …), each with `train.json` (every
/// digit pair once) and `test.json` (the same 100 pairs: the demo measures retention, not
/// generalisation).
pub fn write_data(dir: &Path, seed: u64) -> Result<()> {
    for (t, letter) in TASKS.iter().enumerate() {
        let f = cipher(seed, t);
        let rows: Vec<serde_json::Value> = (0..100u8)
            .map(|x| {
                let (a, b) = (x / 10, x % 10);
                serde_json::json!({"prompt": format!("{} {letter}{a} {letter}{b} =", letter.to_uppercase()), "answer": format!("{} {}", f[a as usize], f[b as usize])})
            })
            .collect();
        let task = dir.join(format!("cipher-{letter}"));
        std::fs::create_dir_all(&task).map_err(io(&task))?;
        for split in ["train.json", "test.json"] {
            let p = task.join(split);
            std::fs::write(&p, serde_json::to_string(&rows).expect("json")).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Write the demo's model, data and config under `dir`; returns the parsed config.
pub fn prepare(dir: &Path) -> Result<RunConfig> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg_path = dir.join("demo.toml");
    std::fs::write(&cfg_path, DEMO_CONFIG).map_err(io(&cfg_path))?;
    let cfg = RunConfig::from_toml(&cfg_path, DEMO_CONFIG)?;
    write_model(&cfg.model, cfg.seed)?;
    write_data(&dir.join("data"), cfg.seed)?;
    Ok(cfg)
}
