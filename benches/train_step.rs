//! Training-step throughput on the CPU backend: a plain full fine-tuning step and an OSFT step
//! (PEFT's default, preserve half of every target) on the same model, batch and sequence length,
//! with the projections' share of the OSFT step; then OSFT preserving 0.8 of every target
//! through the frozen and through the complement bases. One JSON line per method.
//! `cargo xtask bench step` pairs it with `benches/torch_step.py` (plain PyTorch and PEFT OSF).
//!
//! `cargo bench -p sculpt --profile dev --bench train_step -- --model <gguf|folder> --batch 4 --seq 128 --steps 2`

use std::collections::BTreeSet;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use sculpt_data::Batch;
use sculpt_models::{Model, Pretrained};
use sculpt_osft::{Osft, OsftConfig, ProjectionBases, RankRule};
use sculpt_train::config::TrainSection;
use sculpt_train::lm::LanguageModel;
use sculpt_train::optim::TaskOptimizer;
use sculpt_train::step::{train_step, StepContext};

type Ad = Autodiff<Flex>;

use sculpt::bench_arg as arg;

fn batches(n: usize, b: usize, s: usize, vocab: u64) -> Vec<Batch> {
    sculpt::random_ids(n, b, s, vocab, 0x2545_F491_4F6C_DD1D)
        .into_iter()
        .map(|ids| {
            let labels = ids.iter().map(|r| r.iter().map(|&x| x as i64).collect()).collect();
            Batch { attention_mask: ids.iter().map(|r| vec![1; r.len()]).collect(), input_ids: ids, labels }
        })
        .collect()
}

fn main() {
    let path = arg("--model", "");
    if path.is_empty() {
        eprintln!("train_step bench: pass --model <gguf or HF folder> (cargo xtask bench step does this)");
        return;
    }
    let (b, s, steps): (usize, usize, usize) =
        (arg("--batch", "4").parse().unwrap(), arg("--seq", "128").parse().unwrap(), arg("--steps", "2").parse().unwrap());
    let device = Default::default();
    let load = || match Pretrained::<Ad>::load(std::path::Path::new(&path), &device).expect("load").model {
        Model::Llama(m) => m,
        Model::T5(_) => panic!("the step bench uses a LLaMA model"),
    };
    let train = TrainSection { lr: 1e-5, max_grad_norm: 1.0, ..Default::default() };
    // `osft`: PEFT's setting (k = R/2). `k0.8-*`: the adaptive rule's mean retained ratio
    // (trr 0.8) as a uniform rule, through the frozen bases and through the complement bases
    // (`[osft] bases = "auto"`, cheaper when r < k).
    for method in ["full", "osft", "k0.8-frozen", "k0.8-complement"] {
        let mut model = load();
        let vocab = LanguageModel::<Ad>::vocab_size(&model) as u64;
        let data = batches(steps + 1, b, s, vocab);
        let (osft, trainable, decayed) = if method != "full" {
            let cfg = match method {
                "osft" => OsftConfig::default(),
                _ => OsftConfig {
                    rank: RankRule::Preserve { fraction: Some(0.8), count: None },
                    bases: if method == "k0.8-frozen" { ProjectionBases::High } else { ProjectionBases::Auto },
                    ..Default::default()
                },
            };
            let t0 = Instant::now();
            let (m, o) = Osft::attach(model, &cfg, "llama", None).expect("attach");
            eprintln!("decomposed in {:.1} s", t0.elapsed().as_secs_f64());
            model = m;
            let ids = o.low_param_ids();
            let decayed: BTreeSet<_> = ids.iter().map(|(id, _)| *id).collect();
            (Some(o), ids, decayed)
        } else {
            let mut ids = vec![];
            sculpt_models::NamedParams::visit_params(&model, &mut |_, p| match p {
                sculpt_models::ParamRef::Vector(p) => ids.push((p.id, 1)),
                sculpt_models::ParamRef::Matrix(p) => ids.push((p.id, 2)),
            });
            (None, ids, BTreeSet::new())
        };
        let mut opt = TaskOptimizer::new(&train, decayed);
        let cx = StepContext { osft: osft.as_ref(), trainable: &trainable, lr: train.lr, max_grad_norm: train.max_grad_norm, task: "bench", names: None, skip_non_finite: false, checkpoint_blocks: false };
        // One warm-up step, then timed steps.
        let (m, _) = train_step(model, &data[0], &mut opt, &cx, 0, None).expect("step");
        model = m;
        let t0 = Instant::now();
        let mut proj = 0.0;
        for (i, batch) in data[1..].iter().enumerate() {
            let (m, st) = train_step(model, batch, &mut opt, &cx, i + 1, None).expect("step");
            model = m;
            proj += st.projection_secs;
        }
        let secs = t0.elapsed().as_secs_f64() / steps as f64;
        println!(
            "{{\"impl\":\"sculpt-{method}\",\"s_per_step\":{secs:.3},\"tokens_per_s\":{:.1},\"projection_fraction\":{:.4},\"batch\":{b},\"seq\":{s},\"steps\":{steps}}}",
            (b * s) as f64 / secs,
            proj / steps as f64 / secs
        );
    }
}
