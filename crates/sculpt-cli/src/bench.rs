//! `sculpt bench`: forward tokens/s, decomposition time and OSFT training-step time on the
//! selected backend, on a random LLaMA of a given shape (generated in a temporary folder: no
//! files needed), so backends can be compared on one machine (`cargo xtask bench backends`) and
//! a GPU can be tried at 7B layer shapes (`scripts/gpu-check.sh`). Prints one JSON line, with the
//! memory plan's total for the same run beside it.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use sculpt_data::Batch;
use sculpt_models::layers::{ids_tensor, NamedParams};
use sculpt_models::{Model, Pretrained};
use sculpt_osft::Osft;
use sculpt_train::optim::TaskOptimizer;
use sculpt_train::step::{train_step, StepContext};

/// Shapes, settings and repetitions.
pub struct BenchArgs {
    /// Width.
    pub hidden: usize,
    /// MLP width (default 3 × width).
    pub intermediate: Option<usize>,
    /// Attention heads (default width / 64).
    pub heads: Option<usize>,
    /// Key/value heads (default width / 128).
    pub kv_heads: Option<usize>,
    /// Blocks.
    pub layers: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed repetitions (after one warm-up).
    pub reps: usize,
    /// OSFT's trainable fraction of each target's rank (`unfreeze`); default: the config
    /// default (preserve half).
    pub unfreeze: Option<f64>,
    /// Per-block activation checkpointing.
    pub checkpoint: bool,
    /// bf16 mixed precision.
    pub bf16: bool,
    /// OSFT's `W_high` stored in bf16 (`[osft] frozen_precision = "bf16"`).
    pub frozen_bf16: bool,
    /// OSFT's high parts held as factors (`[osft] frozen_form = "factors"`).
    pub frozen_factors: bool,
    /// Projections as burn matmuls (`[osft] projection = "tensor"`) instead of the kernels.
    pub tensor_projection: bool,
}

fn sync<B: Backend>(device: &B::Device) {
    let _ = B::sync(device);
}

/// The run config the bench trains with (also what the memory plan reads).
fn run_config(dir: &std::path::Path, a: &BenchArgs) -> anyhow::Result<sculpt_train::RunConfig> {
    let mut text = format!(
        "model = {:?}\noutput = \"unused\"\nmethod = \"osft\"\n[train]\nbatch_size = {}\nlr = 1e-4\nactivation_checkpointing = {}\nprecision = \"{}\"\n",
        dir.display().to_string(),
        a.batch,
        if a.checkpoint { "\"blocks\"" } else { "false" },
        if a.bf16 { "bf16" } else { "fp32" }
    );
    text += "[osft]\n";
    if let Some(f) = a.unfreeze {
        text += &format!("rank = {{ rule = \"unfreeze\", fraction = {f} }}\n");
    }
    if a.frozen_bf16 {
        text += "frozen_precision = \"bf16\"\n";
    }
    if a.frozen_factors {
        text += "frozen_form = \"factors\"\n";
    }
    if a.tensor_projection {
        text += "projection = \"tensor\"\n";
    }
    text += "[[tasks]]\nname = \"bench\"\ndata = \"unused.jsonl\"\n";
    Ok(sculpt_train::RunConfig::from_toml(&dir.join("bench.toml"), &text)?)
}

/// Run the bench on `B`.
pub fn run<B: Backend>(name: &str, device: &B::Device, a: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let heads = a.heads.unwrap_or((a.hidden / 64).max(1));
    let dims = sculpt_train::demo::LlamaDims {
        hidden: a.hidden,
        intermediate: a.intermediate.unwrap_or(a.hidden * 3),
        layers: a.layers,
        heads,
        kv_heads: a.kv_heads.unwrap_or((a.hidden / 128).max(1)),
    };
    anyhow::ensure!(dims.kv_heads > 0 && dims.hidden.is_multiple_of(dims.heads) && dims.heads.is_multiple_of(dims.kv_heads), "bench: width {} must divide into {} heads, and those into {} key/value heads", dims.hidden, dims.heads, dims.kv_heads);
    let t = Instant::now();
    sculpt_train::demo::write_random_llama(dir.path(), dims, 0)?;
    let write_s = t.elapsed().as_secs_f64();
    let cfg = run_config(dir.path(), a)?;
    sculpt_train::run::check_device::<B>(&cfg, device)?;
    let plan = sculpt_train::plan::plan(&cfg, Some(a.seq))?;
    let planned = if a.checkpoint { plan.totals().1 } else { plan.totals().0 };
    let vocab = 40u32;
    let rows: Vec<Vec<u32>> = (0..a.batch).map(|r| (0..a.seq).map(|i| ((r * 31 + i * 7) as u32 % (vocab - 4)) + 4).collect()).collect();
    let compute = if a.bf16 { sculpt_models::layers::ComputeDtype::Bf16 } else { sculpt_models::layers::ComputeDtype::F32 };

    // Forward (no autodiff).
    let fwd = {
        let pre = Pretrained::<B>::load(dir.path(), device)?;
        let Model::Llama(mut m) = pre.model else { anyhow::bail!("expected a LLaMA") };
        sculpt_models::layers::set_compute_dtype(&mut m, compute);
        let _ = sculpt_models::layers::to_host(m.forward(ids_tensor(&rows, device), None, None));
        sync::<B>(device);
        let t = Instant::now();
        for _ in 0..a.reps {
            let _ = sculpt_models::layers::to_host(m.forward(ids_tensor(&rows, device), None, None));
        }
        sync::<B>(device);
        t.elapsed().as_secs_f64() / a.reps as f64
    };

    // Decomposition of every target, then the OSFT training step (AdamW).
    let pre = Pretrained::<Autodiff<B>>::load(dir.path(), device)?;
    let Model::Llama(mut m) = pre.model else { anyhow::bail!("expected a LLaMA") };
    sculpt_models::layers::set_compute_dtype(&mut m, compute);
    sync::<B>(device);
    let t = Instant::now();
    let (model, osft) = Osft::attach(m, &cfg.osft, "llama", None)?;
    sync::<B>(device);
    let decompose = t.elapsed().as_secs_f64();
    let labels: Vec<Vec<i64>> = rows.iter().map(|r| r.iter().map(|&x| x as i64).collect()).collect();
    let batch = Batch { input_ids: rows.clone(), attention_mask: vec![vec![1; a.seq]; a.batch], labels };
    let trainable = osft.low_param_ids();
    let decayed = trainable.iter().map(|(id, _)| *id).collect();
    let mut opt = TaskOptimizer::<_, Autodiff<B>>::new(&cfg.train, decayed);
    // The trainer's automatic row shards for a model of this size.
    let shards = sculpt_train::step::row_shards::<Autodiff<B>>(None, burn::module::Module::num_params(&model));
    let cx = StepContext { osft: Some(&osft), trainable: &trainable, lr: cfg.train.lr, max_grad_norm: cfg.train.max_grad_norm, task: "bench", names: None, skip_non_finite: false, checkpoint_blocks: cfg.train.activation_checkpointing == sculpt_train::config::Checkpointing::Blocks, shards };
    let (mut model, _) = train_step(model, &batch, &mut opt, &cx, 0, None)?;
    sync::<B>(device);
    let t = Instant::now();
    let mut proj = 0.0;
    for i in 0..a.reps {
        let (m, s) = train_step(model, &batch, &mut opt, &cx, i + 1, None)?;
        model = m;
        proj += s.projection_secs;
    }
    sync::<B>(device);
    let step = t.elapsed().as_secs_f64() / a.reps as f64;
    // The trained model as it would be saved (merged), read back to the host.
    sculpt_osft::merge(&mut model);
    let _ = model.export().tensors.len();
    let tokens = (a.batch * a.seq) as f64;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "{}",
        serde_json::json!({"backend": name, "hidden": dims.hidden, "intermediate": dims.intermediate, "heads": dims.heads, "kv_heads": dims.kv_heads,
            "layers": a.layers, "batch": a.batch, "seq": a.seq, "unfreeze": a.unfreeze, "checkpoint": a.checkpoint, "bf16": a.bf16, "frozen_bf16": a.frozen_bf16, "frozen_factors": a.frozen_factors,
            "parameters": plan.parameters, "trainable": plan.trainable, "write_s": write_s, "decompose_s": decompose,
            "forward_s": fwd, "forward_tok_s": tokens / fwd, "osft_step_s": step, "osft_step_tok_s": tokens / step,
            "projection_share": proj / a.reps as f64 / step, "projection_kernels": osft.uses_kernels(),
            "plan_gib": gib(planned), "host_peak_rss_gib": sculpt_train::plan::peak_rss_bytes().map(gib)})
    );
    Ok(())
}
