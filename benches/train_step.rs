//! Training-step throughput on the CPU backend: a plain full fine-tuning step and an OSFT step
//! (PEFT's default, preserve half of every target) on the same model, batch and sequence length,
//! with the projections' share of the OSFT step; then OSFT preserving 0.8 of every target
//! through the frozen and through the complement bases; and one OSFT step accumulated over
//! `--accumulate` micro-batches, for the projections' share at realistic tokens per step. One
//! JSON line per method; `--forward auto,factored` adds OSFT rows with the low-rank terms
//! forced into one form.
//! `cargo xtask bench step` pairs it with `benches/torch_step.py` (plain PyTorch and PEFT OSF).
//!
//! `cargo bench -p sculpt --profile dev --bench train_step -- --model <gguf|folder> --batch 4 --seq 128 --steps 2`

use std::collections::BTreeSet;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use sculpt_data::Batch;
use sculpt_models::layers::LowRankForm;
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

/// CPU seconds this process has used (user + system, from `/proc/self/stat`; `None` off Linux).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
    // (`[osft] bases = "auto"`, cheaper when r < k). `osft-factors` (not run by default): PEFT's
    // setting with the high parts held as factors (`[osft] frozen_form = "factors"`).
    let only = arg("--methods", "full,osft,k0.8-frozen,k0.8-complement");
    // `--forward auto,factored`: how the OSFT rows apply their low-rank terms, one row each
    // (`sculpt-osft` for auto, `sculpt-osft-factored`, `sculpt-osft-merged`).
    let forwards: Vec<LowRankForm> = arg("--forward", "auto")
        .split(',')
        .map(|f| serde_json::from_value(serde_json::Value::String(f.into())).expect("--forward: auto, factored or merged"))
        .collect();
    let runs = ["full", "osft", "osft-factors", "k0.8-frozen", "k0.8-complement"].into_iter().flat_map(|m| {
        let forms = if m == "full" { vec![LowRankForm::Auto] } else { forwards.clone() };
        forms.into_iter().map(move |f| (m, f))
    });
    for (method, forward) in runs {
        if !only.split(',').any(|m| m == method) {
            continue;
        }
        let label = match forward {
            LowRankForm::Auto => method.to_string(),
            f => format!("{method}-{}", serde_json::to_value(f).unwrap().as_str().unwrap()),
        };
        let mut model = load();
        let vocab = LanguageModel::<Ad>::vocab_size(&model) as u64;
        let data = batches(steps + 1, b, s, vocab);
        let (osft, trainable, decayed) = if method != "full" {
            let cfg = match method {
                "osft" => OsftConfig { forward, ..Default::default() },
                "osft-factors" => OsftConfig { forward, frozen_form: sculpt_osft::FrozenForm::Factors, ..Default::default() },
                _ => OsftConfig {
                    rank: RankRule::Preserve { fraction: Some(0.8), count: None },
                    bases: if method == "k0.8-frozen" { ProjectionBases::High } else { ProjectionBases::Auto },
                    forward,
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
        // `--shards N`: row shards run side by side (default: the step's own choice, one per core).
        let shards: usize = arg("--shards", &sculpt_train::step::host_shards::<Ad>().to_string()).parse().unwrap();
        let cx = StepContext { osft: osft.as_ref(), trainable: &trainable, lr: train.lr, max_grad_norm: train.max_grad_norm, task: "bench", names: None, skip_non_finite: false, checkpoint_blocks: false, shards };
        // One warm-up step, then timed steps.
        let (m, _) = train_step(model, &data[0], &mut opt, &cx, 0, None).expect("step");
        model = m;
        let (t0, c0) = (Instant::now(), cpu_secs());
        let (mut proj, mut optim) = (0.0, 0.0);
        for (i, batch) in data[1..].iter().enumerate() {
            let (m, st) = train_step(model, batch, &mut opt, &cx, i + 1, None).expect("step");
            model = m;
            proj += st.projection_secs;
            optim += st.optimizer_secs;
        }
        let wall = t0.elapsed().as_secs_f64();
        let secs = wall / steps as f64;
        // Average busy cores over the timed steps: how well the step keeps the CPU occupied.
        let busy = c0.zip(cpu_secs()).map_or(f64::NAN, |(a, b)| (b - a) / wall);
        println!(
            "{{\"impl\":\"sculpt-{label}\",\"s_per_step\":{secs:.3},\"tokens_per_s\":{:.1},\"projection_fraction\":{:.4},\"optimizer_fraction\":{:.4},\"busy_cores\":{busy:.2},\"shards\":{shards},\"batch\":{b},\"seq\":{s},\"steps\":{steps}}}",
            (b * s) as f64 / secs,
            proj / steps as f64 / secs,
            optim / steps as f64 / secs
        );
        // The projections run once per optimizer step, whatever its tokens: one step over
        // `--accumulate` micro-batches (default 8, 4096 tokens at 4 × 128) shows their share at
        // the token counts real runs use.
        let accumulate: usize = arg("--accumulate", "8").parse().unwrap();
        if method == "osft" && forward == LowRankForm::Auto && accumulate > 1 {
            let micro = batches(accumulate, b, s, vocab);
            let t0 = Instant::now();
            let (m, st) = sculpt_train::step::train_step_accumulated(model, &micro, &mut opt, &cx, steps + 1, None).expect("step");
            drop(m);
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{{\"impl\":\"sculpt-osft-accumulated\",\"s_per_step\":{secs:.3},\"tokens_per_s\":{:.1},\"projection_fraction\":{:.4},\"tokens_per_step\":{},\"batch\":{b},\"seq\":{s},\"micro_batches\":{accumulate}}}",
                (accumulate * b * s) as f64 / secs,
                st.projection_secs / secs,
                accumulate * b * s
            );
        }
    }
}
