//! `sculpt bench`: forward tokens/s and OSFT training-step time on the selected backend, on a
//! random LLaMA of a given size (generated in a temporary folder: no files needed), so backends
//! can be compared on one machine (`cargo xtask bench backends`). Prints one JSON line.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use sculpt_data::Batch;
use sculpt_models::layers::{ids_tensor, NamedParams};
use sculpt_models::{Model, Pretrained};
use sculpt_osft::{Osft, OsftConfig};
use sculpt_train::config::TrainSection;
use sculpt_train::optim::TaskOptimizer;
use sculpt_train::step::{train_step, StepContext};

/// Sizes and repetitions.
pub struct BenchArgs {
    /// Width.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed repetitions (after one warm-up).
    pub reps: usize,
}

fn sync<B: Backend>(device: &B::Device) {
    let _ = B::sync(device);
}

/// Run the bench on `B`.
pub fn run<B: Backend>(name: &str, device: &B::Device, a: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dims = sculpt_train::demo::LlamaDims { hidden: a.hidden, intermediate: a.hidden * 3, layers: a.layers, heads: (a.hidden / 64).max(1), kv_heads: (a.hidden / 128).max(1) };
    sculpt_train::demo::write_random_llama(dir.path(), dims, 0)?;
    let vocab = 40u32;
    let rows: Vec<Vec<u32>> = (0..a.batch).map(|r| (0..a.seq).map(|i| ((r * 31 + i * 7) as u32 % (vocab - 4)) + 4).collect()).collect();

    // Forward (no autodiff).
    let pre = Pretrained::<B>::load(dir.path(), device)?;
    let Model::Llama(m) = pre.model else { anyhow::bail!("expected a LLaMA") };
    let _ = m.forward(ids_tensor(&rows, device), None, None);
    sync::<B>(device);
    let t = Instant::now();
    for _ in 0..a.reps {
        let _ = sculpt_models::layers::to_host(m.forward(ids_tensor(&rows, device), None, None));
    }
    sync::<B>(device);
    let fwd = t.elapsed().as_secs_f64() / a.reps as f64;

    // OSFT training step (AdamW, preserve 0.5).
    let pre = Pretrained::<Autodiff<B>>::load(dir.path(), device)?;
    let Model::Llama(m) = pre.model else { anyhow::bail!("expected a LLaMA") };
    let (model, osft) = Osft::attach(m, &OsftConfig::default(), "llama", None)?;
    let labels: Vec<Vec<i64>> = rows.iter().map(|r| r.iter().map(|&x| x as i64).collect()).collect();
    let batch = Batch { input_ids: rows.clone(), attention_mask: vec![vec![1; a.seq]; a.batch], labels };
    let train = TrainSection { lr: 1e-4, ..TrainSection::default() };
    let trainable = osft.low_param_ids();
    let decayed = trainable.iter().map(|(id, _)| *id).collect();
    let mut opt = TaskOptimizer::<_, Autodiff<B>>::new(&train, decayed);
    // The trainer's automatic row shards for a model of this size.
    let shards = sculpt_train::step::row_shards::<Autodiff<B>>(None, burn::module::Module::num_params(&model));
    let cx = StepContext { osft: Some(&osft), trainable: &trainable, lr: train.lr, max_grad_norm: 1.0, task: "bench", names: None, skip_non_finite: false, checkpoint_blocks: false, shards };
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
    let _ = model.export().tensors.len();
    let tokens = (a.batch * a.seq) as f64;
    println!(
        "{}",
        serde_json::json!({"backend": name, "hidden": a.hidden, "layers": a.layers, "batch": a.batch, "seq": a.seq,
            "forward_s": fwd, "forward_tok_s": tokens / fwd, "osft_step_s": step, "osft_step_tok_s": tokens / step,
            "projection_share": proj / a.reps as f64 / step, "projection_kernels": osft.uses_kernels()})
    );
    Ok(())
}
