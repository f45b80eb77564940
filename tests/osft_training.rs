//! OSFT end to end on tiny models: parity with PEFT's independent `OSFConfig` implementation,
//! and the invariants that make it OSFT (orthogonality kept under AdamW, frozen part untouched,
//! model unchanged at step 0).
//!
//! Fixtures: `tests/fixtures/osft/*`, made by
//! `nice -n 10 /work/pyref/venv/bin/python tests/fixtures/make_osft_fixtures.py`
//! (torch 2.15, transformers 4.57.6, peft 0.18.1): effective_rank 0.5, default targets,
//! 3 full-batch SGD steps at lr 0.5, everything but the low factors frozen.

use std::collections::BTreeSet;

use burn::backend::{Autodiff, Flex};
use sculpt::{max_rel_diff, read_reference, repo_root, tiny_fixture};
use sculpt_data::Batch;
use sculpt_models::layers::{to_host, NamedParams};
use sculpt_models::{Model, Pretrained};
use sculpt_osft::{merge, Osft, OsftConfig};
use sculpt_train::config::{OptimizerKind, TrainSection};
use sculpt_train::lm::LanguageModel;
use sculpt_train::optim::TaskOptimizer;
use sculpt_train::step::{train_step, StepContext};

type Ad = Autodiff<Flex>;

fn batch_of(name: &str) -> Batch {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("tests/fixtures/osft").join(name).join("batch.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<i64>> {
        v[k].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect()
    };
    let input_ids: Vec<Vec<u32>> = rows("input_ids").into_iter().map(|r| r.into_iter().map(|x| x as u32).collect()).collect();
    let attention_mask = input_ids.iter().map(|r| vec![1; r.len()]).collect();
    Batch { input_ids, attention_mask, labels: rows("labels") }
}

/// Train `steps` steps on one batch; returns the losses and the OSFT state.
fn run<M: LanguageModel<Ad>>(model: M, batch: &Batch, train: &TrainSection, steps: usize) -> (M, Osft<Ad>, Vec<f64>) {
    let family = model.family();
    let (mut model, osft) = Osft::attach(model, &OsftConfig::default(), family, None).unwrap();
    let trainable = osft.low_param_ids();
    let decayed: BTreeSet<_> = trainable.iter().map(|(id, _)| *id).collect();
    let mut opt = TaskOptimizer::<M, Ad>::new(train, decayed);
    let cx = StepContext { osft: Some(&osft), trainable: &trainable, lr: train.lr, max_grad_norm: train.max_grad_norm, task: "t", names: None, skip_non_finite: false, checkpoint_blocks: false, shards: 1 };
    let mut losses = vec![];
    for step in 0..steps {
        let (m, s) = train_step(model, batch, &mut opt, &cx, step, None).unwrap();
        model = m;
        losses.push(s.loss);
    }
    (model, osft, losses)
}

fn sgd() -> TrainSection {
    TrainSection { optimizer: OptimizerKind::Sgd, lr: 0.5, max_grad_norm: 0.0, ..Default::default() }
}

#[test]
fn three_sgd_steps_match_peft_osf() {
    let device = Default::default();
    for name in ["llama-gqa-untied-tiny", "t5-v1_1-tiny"] {
        let dir = repo_root().join("tests/fixtures/osft").join(name);
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let reference = read_reference(&dir.join("merged.safetensors"));
        let pre = Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap();
        let batch = batch_of(name);
        let (ranks, losses, merged) = match pre.model {
            Model::Llama(m) => {
                let (mut m, o, l) = run(m, &batch, &sgd(), 3);
                merge(&mut m);
                (o.resolved(), l, m.export())
            }
            Model::T5(m) => {
                let (mut m, o, l) = run(m, &batch, &sgd(), 3);
                merge(&mut m);
                (o.resolved(), l, m.export())
            }
        };
        // Same targets and ranks as PEFT.
        let peft_targets: BTreeSet<String> = meta["targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        let ours: BTreeSet<String> = ranks.iter().map(|r| r.name.clone()).collect();
        assert_eq!(ours, peft_targets, "{name}: targets");
        for r in &ranks {
            assert_eq!(r.k as u64, meta["resolved_k"][&r.name].as_u64().unwrap(), "{name}: k of {}", r.name);
        }
        // Same losses before each step.
        for (i, (got, want)) in losses.iter().zip(meta["losses"].as_array().unwrap()).enumerate() {
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() <= 1e-5 * want.abs(), "{name}: loss before step {i}: {got} vs {want}");
        }
        // Same merged weights.
        assert_eq!(merged.tensors.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>(), "{name}: tensor names");
        let mut worst = (0.0f32, String::new());
        for (tname, t) in &merged.tensors {
            let d = max_rel_diff(&t.data, &reference[tname].f32());
            if d > worst.0 {
                worst = (d, tname.clone());
            }
            assert!(d <= 1e-4, "{name}: merged {tname} differs from PEFT by {d} (relative)");
        }
        println!("{name}: losses {losses:?}; worst merged-weight difference {:.1e} ({})", worst.0, worst.1);
    }
}

/// The tiny fixture `name` (a LLaMA) on the CPU backend.
fn tiny_llama(name: &str) -> sculpt_models::llama::Llama<Ad> {
    let Model::Llama(m) = Pretrained::<Ad>::load(&tiny_fixture(name), &Default::default()).unwrap().model else { panic!("{name} is not a LLaMA") };
    m
}

/// `steps` OSFT training steps on one batch (the low factors decayed, no clipping); the model
/// and the last loss.
fn osft_steps(
    mut model: sculpt_models::llama::Llama<Ad>,
    osft: &Osft<Ad>,
    batch: &Batch,
    train: &TrainSection,
    steps: usize,
) -> (sculpt_models::llama::Llama<Ad>, f64) {
    let trainable = osft.low_param_ids();
    let decayed: BTreeSet<_> = trainable.iter().map(|(id, _)| *id).collect();
    let mut opt = TaskOptimizer::<_, Ad>::new(train, decayed);
    let cx = StepContext { osft: Some(osft), trainable: &trainable, lr: train.lr, max_grad_norm: 0.0, task: "t", names: None, skip_non_finite: false, checkpoint_blocks: false, shards: 1 };
    let mut last = 0.0;
    for step in 0..steps {
        let (m, s) = train_step(model, batch, &mut opt, &cx, step, None).unwrap();
        model = m;
        last = s.loss;
    }
    (model, last)
}

#[test]
fn adamw_keeps_the_low_factors_orthogonal_and_the_frozen_part_fixed() {
    let device = Default::default();
    let name = "llama-gqa-untied-tiny";
    let pre = Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap();
    let Model::Llama(base) = pre.model else { unreachable!() };
    let batch = batch_of(name);
    let before = to_host(LanguageModel::<Ad>::loss(&base, &batch)).data[0];
    let logits_before = to_host(base.forward(sculpt_models::layers::ids_tensor(&batch.input_ids, &device), None, None));
    let family = base.family();
    let (attached, osft) = Osft::attach(base, &OsftConfig::default(), family, None).unwrap();
    // Step 0: the decomposed model computes the same function.
    let logits_after = to_host(attached.forward(sculpt_models::layers::ids_tensor(&batch.input_ids, &device), None, None));
    assert!(sculpt::max_abs_diff(&logits_after.data, &logits_before.data) <= 1e-5, "output changed at step 0");
    let frozen_before = attached.export();
    let bases_before: Vec<_> = osft.resolved().iter().map(|r| osft.frozen_bases(&r.name).unwrap()).collect();

    // 100 AdamW steps at PEFT's leak-test setting (lr 1e-2): PEFT leaks ‖U_hᵀU_l‖_F ≈ 0.76 here
    // (tests/fixtures/osft/adamw_leak.json); form (C) with post-step projection must not.
    let train = TrainSection { lr: 1e-2, max_grad_norm: 0.0, weight_decay: 0.01, ..Default::default() };
    let (mut model, last) = osft_steps(attached, &osft, &batch, &train, 100);
    assert!(last < before as f64 * 0.5, "training did not learn: {before} → {last}");
    let (lu, lv) = osft.leakage(&mut model);
    println!("after 100 AdamW steps: loss {before:.3} → {last:.3}; max|U_hᵀU_l| = {lu:.1e}, max|Vt_l Vt_hᵀ| = {lv:.1e}");
    assert!(lu <= 1e-5 && lv <= 1e-5, "low factors leaked into the frozen subspace: {lu}, {lv}");
    // Every frozen tensor (W_high of the targets, embeddings, norms, head) is bit-identical.
    assert_eq!(model.export().tensors, frozen_before.tensors, "a frozen parameter changed");
    let bases_after: Vec<_> = osft.resolved().iter().map(|r| osft.frozen_bases(&r.name).unwrap()).collect();
    assert_eq!(bases_after, bases_before);
    // And the weight change is confined to the low–low block: U_hᵀ ΔW = 0 and ΔW V_h = 0.
    let mut merged = model.clone();
    merge(&mut merged);
    let after = merged.export();
    let original = Pretrained::<Flex>::load(&tiny_fixture(name), &Default::default()).unwrap().model.export();
    for r in osft.resolved() {
        let (uh, vth) = osft.frozen_bases(&r.name).unwrap();
        let key = format!("{}.weight", r.name);
        // ΔW = merged − original.
        let (w, w0) = (&after.tensors[&key], &original.tensors[&key]);
        let (n, m, k) = (r.n, r.m, r.k);
        let mut max_u = 0.0f32;
        for a in 0..k {
            for j in 0..m {
                let s: f32 = (0..n).map(|i| uh[i * k + a] * (w.data[i * m + j] - w0.data[i * m + j])).sum();
                max_u = max_u.max(s.abs());
            }
        }
        let mut max_v = 0.0f32;
        for i in 0..n {
            for a in 0..k {
                let s: f32 = (0..m).map(|j| (w.data[i * m + j] - w0.data[i * m + j]) * vth[a * m + j]).sum();
                max_v = max_v.max(s.abs());
            }
        }
        assert!(max_u <= 1e-4 && max_v <= 1e-4, "{}: update leaves the low–low block: {max_u}, {max_v}", r.name);
    }
}

#[test]
fn layer_importance_is_the_masked_mean_cosine_of_each_layer_input_and_output() {
    use sculpt_osft::importance::{measure, CalibrationMask, NonSquare};
    use sculpt_osft::targets::TargetSet;
    let device = Default::default();
    let pre = Pretrained::<Flex>::load(&tiny_fixture("llama-gqa-untied-tiny"), &device).unwrap();
    let Model::Llama(mut m) = pre.model else { unreachable!() };
    // Two rows, the second padded after 3 tokens.
    let ids: Vec<Vec<u32>> = vec![vec![5, 17, 42, 99, 7], vec![11, 23, 8, 0, 0]];
    let mask: Vec<Vec<i64>> = vec![vec![1, 1, 1, 1, 1], vec![1, 1, 1, 0, 0]];
    let targets = TargetSet::new(&[r"layers\.0\.self_attn\.(q|k)_proj$".to_string()]).unwrap();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(CalibrationMask::default()));
    let mask_t = burn::tensor::Tensor::<Flex, 2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(mask.concat(), [2, 5]), &device);
    slot.lock().unwrap().mask = mask.concat().iter().map(|&x| x as f32).collect();
    let got = measure(&mut m, &targets, NonSquare::Truncate, 1, slot, |m, _| {
        let _ = m.hidden_states(sculpt_models::layers::ids_tensor(&ids, &device), Some(mask_t.clone()), None);
    });
    // Independent computation: the input of layer 0's q/k projections is input_layernorm(embed(ids)).
    let x = to_host(m.model.layers[0].input_layernorm.forward(m.model.embed_tokens.forward(sculpt_models::layers::ids_tensor(&ids, &device))));
    let d = x.shape[2];
    for (name, lin) in [("q_proj", &m.model.layers[0].self_attn.q_proj), ("k_proj", &m.model.layers[0].self_attn.k_proj)] {
        let w = to_host(lin.weight.val());
        let (n, mm) = (w.shape[0], w.shape[1]);
        let r = n.min(mm);
        let (mut sum, mut count) = (0.0f64, 0.0f64);
        for (row, mrow) in mask.iter().enumerate() {
            for (t, &keep) in mrow.iter().enumerate() {
                if keep == 0 {
                    continue;
                }
                let xi = &x.data[(row * 5 + t) * d..(row * 5 + t + 1) * d];
                let yi: Vec<f64> = (0..n).map(|o| (0..mm).map(|j| w.data[o * mm + j] as f64 * xi[j] as f64).sum()).collect();
                let dot: f64 = (0..r).map(|c| xi[c] as f64 * yi[c]).sum();
                let nx: f64 = (0..r).map(|c| (xi[c] as f64).powi(2)).sum::<f64>().sqrt();
                let ny: f64 = (0..r).map(|c| yi[c].powi(2)).sum::<f64>().sqrt();
                sum += dot / (nx * ny);
                count += 1.0;
            }
        }
        let want = sum / count;
        let key = format!("model.layers.0.self_attn.{name}");
        assert!((got[&key] - want).abs() < 1e-5, "{key}: {} vs {want}", got[&key]);
    }
}

#[test]
fn the_adaptive_rule_spreads_ranks_around_the_target_ratio() {
    use sculpt_osft::RankRule;
    let device = Default::default();
    let pre = Pretrained::<Ad>::load(&tiny_fixture("llama-gqa-untied-tiny"), &device).unwrap();
    let Model::Llama(m) = pre.model else { unreachable!() };
    let imp: std::collections::BTreeMap<String, f64> = {
        // A spread of normalised importances with mean 1.
        let names: Vec<String> = (0..2)
            .flat_map(|l| {
                ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
                    .map(|p| format!("model.layers.{l}.{p}"))
            })
            .collect();
        let raw: Vec<f64> = (0..names.len()).map(|i| 0.5 + i as f64 / names.len() as f64).collect();
        names.into_iter().zip(sculpt_osft::rank::normalize_importance(&raw)).collect()
    };
    let cfg = OsftConfig { rank: RankRule::Adaptive { mrr: 0.1, trr: 0.8 }, ..Default::default() };
    let (_, osft) = Osft::attach(m, &cfg, "llama", Some(&imp)).unwrap();
    for r in osft.resolved() {
        let i = imp[&r.name];
        let want = ((0.1 + i * 0.7) * r.n.min(r.m) as f64).floor() as usize;
        assert_eq!(r.k, want.clamp(1, r.n.min(r.m) - 1), "{}", r.name);
        assert_eq!(r.importance, Some(i));
    }
    let ks: BTreeSet<usize> = osft.resolved().iter().map(|r| r.k).collect();
    assert!(ks.len() > 3, "ranks should differ between layers: {ks:?}");
    // Missing importances are an error, not a silent default.
    let pre = Pretrained::<Ad>::load(&tiny_fixture("llama-gqa-untied-tiny"), &device).unwrap();
    let Model::Llama(m) = pre.model else { unreachable!() };
    let err = Osft::attach(m, &cfg, "llama", None).err().expect("must fail").to_string();
    assert!(err.contains("importance"), "{err}");
}

#[test]
fn activation_checkpointing_changes_nothing_but_memory() {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    type Ck = Autodiff<Flex, BalancedCheckpointing>;
    let device = Default::default();
    let name = "llama-gqa-untied-tiny";
    let batch = batch_of(name);
    let train = TrainSection { lr: 1e-2, max_grad_norm: 1.0, ..Default::default() };
    fn go<B: burn::tensor::backend::AutodiffBackend>(name: &str, batch: &Batch, train: &TrainSection, device: &B::Device) -> (Vec<f64>, sculpt_models::TensorMap) {
        let Model::Llama(m) = Pretrained::<B>::load(&tiny_fixture(name), device).unwrap().model else { unreachable!() };
        let (mut model, osft) = Osft::attach(m, &OsftConfig::default(), "llama", None).unwrap();
        let trainable = osft.low_param_ids();
        let mut opt = TaskOptimizer::new(train, trainable.iter().map(|(id, _)| *id).collect());
        let cx = StepContext { osft: Some(&osft), trainable: &trainable, lr: train.lr, max_grad_norm: train.max_grad_norm, task: "t", names: None, skip_non_finite: false, checkpoint_blocks: false, shards: 1 };
        let mut losses = vec![];
        for step in 0..5 {
            let (m, s) = train_step(model, batch, &mut opt, &cx, step, None).unwrap();
            model = m;
            losses.push(s.loss);
        }
        merge(&mut model);
        (losses, model.export())
    }
    let (la, wa) = go::<Ad>(name, &batch, &train, &device);
    let (lb, wb) = go::<Ck>(name, &batch, &train, &device);
    assert_eq!(la, lb, "losses differ with checkpointing");
    for (k, t) in &wa.tensors {
        assert!(max_rel_diff(&wb.tensors[k].data, &t.data) <= 1e-6, "{k} differs with checkpointing");
    }
}

/// Gradient accumulation: one SGD step over two micro-batches of 4 rows equals one step over
/// the 8 rows at once (equal token counts, so the mean of the micro-batch means is the batch
/// mean), up to fp32 summation order.
#[test]
fn gradient_accumulation_equals_the_full_batch() {
    use sculpt_train::step::train_step_accumulated;
    let name = "llama-tied-tiny";
    let device = Default::default();
    let rows: Vec<Vec<u32>> = sculpt::random_ids(1, 8, 10, 90, 7).remove(0);
    let labels: Vec<Vec<i64>> = rows.iter().map(|r| r.iter().map(|&x| x as i64).collect()).collect();
    let full = Batch { input_ids: rows.clone(), attention_mask: vec![vec![1; 10]; 8], labels: labels.clone() };
    let half = |a: usize| Batch { input_ids: rows[a..a + 4].to_vec(), attention_mask: vec![vec![1; 10]; 4], labels: labels[a..a + 4].to_vec() };
    let train = sgd();
    let mut out = vec![];
    for micro in [vec![full], vec![half(0), half(4)]] {
        let Model::Llama(base) = Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap().model else { panic!() };
        let (model, osft) = Osft::attach(base, &OsftConfig::default(), "llama", None).unwrap();
        let trainable = osft.low_param_ids();
        let mut opt = TaskOptimizer::<_, Ad>::new(&train, BTreeSet::new());
        let cx = StepContext { osft: Some(&osft), trainable: &trainable, lr: train.lr, max_grad_norm: 0.0, task: "t", names: None, skip_non_finite: false, checkpoint_blocks: false, shards: 1 };
        let (mut m, s) = train_step_accumulated(model, &micro, &mut opt, &cx, 0, None).unwrap();
        merge(&mut m);
        out.push((s.loss, s.grad_norm, m.export()));
    }
    assert!((out[0].0 - out[1].0).abs() < 1e-6, "loss {} vs {}", out[0].0, out[1].0);
    assert!((out[0].1 - out[1].1).abs() < 1e-5 * out[0].1, "grad norm {} vs {}", out[0].1, out[1].1);
    for (k, a) in &out[0].2.tensors {
        let b = &out[1].2.tensors[k];
        assert!(max_rel_diff(&b.data, &a.data) < 1e-5, "{k}");
    }
}

/// bf16 mixed precision: the loss agrees with fp32 to bf16 accuracy, the gradients stay fp32
/// and point the same way, and 20 AdamW steps learn while the fp32 projections keep the low
/// factors orthogonal to the frozen subspace and the frozen part bit-identical.
#[test]
fn bf16_mixed_precision_trains_with_fp32_master_weights() {
    use sculpt_models::layers::{set_compute_dtype, ComputeDtype};
    let device = Default::default();
    let name = "llama-gqa-untied-tiny";
    let batch = batch_of(name);
    let Model::Llama(base) = Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap().model else { unreachable!() };
    let (fp32, osft) = Osft::attach(base, &OsftConfig::default(), "llama", None).unwrap();
    let mut bf16 = fp32.clone();
    set_compute_dtype(&mut bf16, ComputeDtype::Bf16);
    let (l32, l16) = (LanguageModel::<Ad>::loss(&fp32, &batch), LanguageModel::<Ad>::loss(&bf16, &batch));
    let (a, b) = (to_host(l32.clone()).data[0], to_host(l16.clone()).data[0]);
    assert!((a - b).abs() <= 2e-2 * a.abs(), "bf16 loss {b} vs fp32 {a}");
    assert_ne!(a, b, "the bf16 forward computed in fp32");
    let (g32, g16) = (l32.backward(), l16.backward());
    // Every low factor's gradient (U, s, Vt of every target), fp32 in both runs.
    let grads = |m: &sculpt_models::llama::Llama<Ad>, g: &<Ad as burn::tensor::backend::AutodiffBackend>::Gradients| {
        let mut out = vec![];
        let mut m = m.clone();
        m.visit_linears_mut(&mut |name, lin| {
            let Some(d) = lin.delta.as_ref() else { return }; // not a target (the head)
            for t in [d.u.grad(g).map(|t| t.into_data()), d.vt.grad(g).map(|t| t.into_data()), d.s.grad(g).map(|t| t.into_data())] {
                let t = t.unwrap_or_else(|| panic!("{name}: no gradient"));
                assert_eq!(t.dtype, burn::tensor::DType::F32, "{name}: the gradient of a master weight is not fp32");
                out.extend(t.to_vec::<f32>().unwrap());
            }
        });
        out
    };
    let (x, y) = (grads(&fp32, &g32), grads(&bf16, &g16));
    let (mut dot, mut n32, mut n16) = (0.0f64, 0.0f64, 0.0f64);
    for (p, q) in x.iter().zip(&y) {
        dot += (*p as f64) * (*q as f64);
        n32 += (*p as f64).powi(2);
        n16 += (*q as f64).powi(2);
    }
    let cos = dot / (n32.sqrt() * n16.sqrt());
    assert!(cos > 0.99, "bf16 and fp32 gradients disagree: cosine {cos}");

    let train = TrainSection { lr: 1e-2, max_grad_norm: 0.0, ..Default::default() };
    let frozen_before = bf16.export();
    let (mut model, last) = osft_steps(bf16, &osft, &batch, &train, 20);
    assert!(last < a as f64 * 0.7, "bf16 training did not learn: {a} → {last}");
    let (lu, lv) = osft.leakage(&mut model);
    assert!(lu <= 1e-5 && lv <= 1e-5, "low factors leaked into the frozen subspace under bf16: {lu}, {lv}");
    assert_eq!(model.export().tensors, frozen_before.tensors, "a frozen parameter changed under bf16");
}

/// A padded batch: row 2 is two tokens shorter (mask 0, labels -100 there) and the first
/// positions of every row are prompt (-100), so masks and ignored labels are exercised.
fn padded_batch(decoder_only: bool) -> Batch {
    let ids: Vec<Vec<u32>> = (0..3).map(|r| (0..7).map(|t| (3 + (r * 37 + t * 11) % 200) as u32).collect()).collect();
    let attention_mask: Vec<Vec<u32>> = (0..3).map(|r| (0..7).map(|t| u32::from(!(r == 2 && t >= 5))).collect()).collect();
    let labels = (0..3)
        .map(|r| {
            (0..7)
                .map(|t| {
                    let ignored = (r == 2 && t >= 5) || (decoder_only && t < 2) || (!decoder_only && t >= 5);
                    if ignored {
                        -100
                    } else {
                        ids[r][(t + 1) % 7] as i64
                    }
                })
                .collect()
        })
        .collect();
    Batch { input_ids: ids, attention_mask, labels }
}

fn grad_host(grads: &burn::optim::GradientsParams, id: burn::module::ParamId, rank: usize) -> Option<Vec<f32>> {
    type Inner = <Ad as burn::tensor::backend::AutodiffBackend>::InnerBackend;
    match rank {
        1 => grads.get::<Inner, 1>(id).map(|g| g.into_data().to_vec::<f32>().unwrap()),
        _ => grads.get::<Inner, 2>(id).map(|g| g.into_data().to_vec::<f32>().unwrap()),
    }
}

/// Per-block checkpointing's loss and gradients equal the whole graph's, for every trainable
/// parameter: full fine-tuning (embeddings, tied heads, norms, T5's position-bias tables) and
/// OSFT's low factors, on LLaMA (tied, untied GQA) and T5 (v1.0, v1.1), with padding.
#[test]
fn block_checkpointing_gives_the_whole_graphs_gradients() {
    use burn::optim::GradientsParams;
    use sculpt_models::layers::ParamRef;
    let device = Default::default();
    fn check<M: LanguageModel<Ad>>(name: &str, what: &str, model: &M, trainable: &[(burn::module::ParamId, usize)]) {
        let batch = padded_batch(model.decoder_only());
        let mut names = std::collections::BTreeMap::new();
        model.visit_params(&mut |n, p| {
            let id = match p {
                ParamRef::Vector(p) => p.id,
                ParamRef::Matrix(p) => p.id,
            };
            names.insert(id, n.to_string());
        });
        let label = |id: &burn::module::ParamId| names.get(id).cloned().unwrap_or_else(|| format!("low factor {id}"));
        let loss = model.loss(&batch);
        let value = loss.clone().into_scalar() as f64;
        let full = GradientsParams::from_grads(loss.backward(), model);
        let (v, ck) = model.loss_grads_checkpointed(&batch, 1.0, trainable);
        assert!((v - value).abs() <= 1e-6 * value.abs(), "{name} {what}: loss {v} vs {value}");
        let (_, half) = model.loss_grads_checkpointed(&batch, 0.5, trainable);
        let mut compared = 0;
        for &(id, rank) in trainable {
            let a = grad_host(&full, id, rank);
            let b = grad_host(&ck, id, rank);
            match (a, b) {
                (Some(a), Some(b)) => {
                    let err = max_rel_diff(&b, &a);
                    assert!(err <= 1e-5, "{name} {what}: `{}` gradient differs by {err}", label(&id));
                    let h: Vec<f32> = grad_host(&half, id, rank).unwrap().iter().map(|x| 2.0 * x).collect();
                    assert!(max_rel_diff(&h, &a) <= 1e-5, "{name} {what}: parts = 2 is not half the gradient");
                    compared += 1;
                }
                (None, None) => {}
                (a, b) => panic!("{name} {what}: `{}` has a gradient in only one path (full {}, checkpointed {})", label(&id), a.is_some(), b.is_some()),
            }
        }
        assert!(compared * 2 > trainable.len(), "{name} {what}: only {compared} of {} gradients compared", trainable.len());
    }
    fn all_ids<M: NamedParams<Ad>>(m: &M) -> Vec<(burn::module::ParamId, usize)> {
        let mut ids = vec![];
        m.visit_params(&mut |_, p| match p {
            ParamRef::Vector(p) => ids.push((p.id, 1)),
            ParamRef::Matrix(p) => ids.push((p.id, 2)),
        });
        ids
    }
    for name in ["llama-tied-tiny", "llama-gqa-untied-tiny", "t5-v1_0-tiny", "t5-v1_1-tiny"] {
        match Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap().model {
            Model::Llama(m) => {
                check(name, "full", &m, &all_ids(&m));
                let (m, osft) = Osft::attach(m, &OsftConfig::default(), "llama", None).unwrap();
                check(name, "osft", &m, &osft.low_param_ids());
            }
            Model::T5(m) => {
                check(name, "full", &m, &all_ids(&m));
                let (m, osft) = Osft::attach(m, &OsftConfig::default(), "t5", None).unwrap();
                check(name, "osft", &m, &osft.low_param_ids());
            }
        }
    }
}

/// `activation_checkpointing = "blocks"` in the training step: AdamW steps with gradient
/// accumulation give the whole graph's losses and weights.
#[test]
fn block_checkpointing_trains_like_the_whole_graph() {
    use sculpt_train::step::train_step_accumulated;
    let name = "llama-gqa-untied-tiny";
    let batches = vec![padded_batch(true), batch_of(name)];
    let train = TrainSection { lr: 1e-2, max_grad_norm: 1.0, ..Default::default() };
    let go = |blocks: bool| {
        let m = tiny_llama(name);
        let (mut model, osft) = Osft::attach(m, &OsftConfig::default(), "llama", None).unwrap();
        let trainable = osft.low_param_ids();
        let mut opt = TaskOptimizer::new(&train, trainable.iter().map(|(id, _)| *id).collect());
        let cx = StepContext { osft: Some(&osft), trainable: &trainable, lr: train.lr, max_grad_norm: train.max_grad_norm, task: "t", names: None, skip_non_finite: false, checkpoint_blocks: blocks, shards: 1 };
        let mut losses = vec![];
        for step in 0..4 {
            let (m, s) = train_step_accumulated(model, &batches, &mut opt, &cx, step, None).unwrap();
            model = m;
            losses.push(s.loss);
        }
        merge(&mut model);
        (losses, model.export())
    };
    let (la, wa) = go(false);
    let (lb, wb) = go(true);
    for (a, b) in la.iter().zip(&lb) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "losses differ with block checkpointing: {la:?} vs {lb:?}");
    }
    assert!(la[3] < la[0], "the run did not learn: {la:?}");
    for (k, t) in &wa.tensors {
        assert!(max_rel_diff(&wb.tensors[k].data, &t.data) <= 1e-5, "{k} differs with block checkpointing");
    }
}

/// Three SGD steps (lr 0.5, clip 1.0) accumulated over `batches`, then merge: the losses and the
/// merged weights by name. OSFT decays its low factors; full fine-tuning decays nothing.
fn three_sgd_steps<M: LanguageModel<Ad>>(
    mut model: M,
    osft: Option<&Osft<Ad>>,
    trainable: &[(burn::module::ParamId, usize)],
    batches: &[Batch],
    blocks: bool,
    shards: usize,
) -> (Vec<f64>, std::collections::BTreeMap<String, Vec<f32>>) {
    use sculpt_train::step::train_step_accumulated;
    let train = TrainSection { optimizer: OptimizerKind::Sgd, lr: 0.5, max_grad_norm: 1.0, ..Default::default() };
    let decayed = if osft.is_some() { trainable.iter().map(|(id, _)| *id).collect() } else { BTreeSet::new() };
    let mut opt = TaskOptimizer::new(&train, decayed);
    let cx = StepContext { osft, trainable, lr: train.lr, max_grad_norm: train.max_grad_norm, task: "t", names: None, skip_non_finite: false, checkpoint_blocks: blocks, shards };
    let mut losses = vec![];
    for step in 0..3 {
        let (m, s) = train_step_accumulated(model, batches, &mut opt, &cx, step, None).unwrap();
        model = m;
        losses.push(s.loss);
    }
    merge(&mut model);
    (losses, model.export().tensors.into_iter().map(|(k, t)| (k, t.data)).collect())
}

/// Row shards run side by side (`StepContext::shards`, the host backends' default) train as
/// one pass over each micro-batch does. Shards carry unequal label counts (a padded row, a row
/// with every label ignored), so a plain mean of the shard losses would differ. Checked for full
/// fine-tuning and OSFT, on LLaMA (tied, untied GQA) and T5 (v1.0, v1.1), with gradient
/// accumulation, and with per-block checkpointing inside the shards. Three SGD steps give the
/// same losses and merged weights (1e-5; SGD, because Adam's normalised update turns the
/// summation order's rounding in near-zero gradient entries into visible weight differences).
#[test]
fn sharded_steps_train_like_one_pass() {
    use sculpt_models::layers::ParamRef;
    let device = Default::default();
    fn micro_batches(decoder_only: bool) -> Vec<Batch> {
        let mut a = padded_batch(decoder_only);
        a.input_ids.push(a.input_ids[0].clone());
        a.attention_mask.push(a.attention_mask[0].clone());
        a.labels.push(vec![-100; a.labels[0].len()]);
        let mut b = padded_batch(decoder_only);
        b.input_ids.reverse();
        b.attention_mask.reverse();
        b.labels.reverse();
        vec![a, b]
    }
    fn go<M: LanguageModel<Ad>>(model: M, osft: bool, shards: usize, blocks: bool) -> (Vec<f64>, std::collections::BTreeMap<String, Vec<f32>>) {
        let family = model.family();
        let (model, state, trainable) = if osft {
            let (m, o) = Osft::attach(model, &OsftConfig::default(), family, None).unwrap();
            let ids = o.low_param_ids();
            (m, Some(o), ids)
        } else {
            let mut ids = vec![];
            model.visit_params(&mut |_, p| match p {
                ParamRef::Vector(p) => ids.push((p.id, 1)),
                ParamRef::Matrix(p) => ids.push((p.id, 2)),
            });
            (model, None, ids)
        };
        let batches = micro_batches(model.decoder_only());
        three_sgd_steps(model, state.as_ref(), &trainable, &batches, blocks, shards)
    }
    fn compare<M: LanguageModel<Ad>>(name: &str, load: impl Fn() -> M) {
        for (osft, shards, blocks) in [(true, 2, false), (false, 3, false), (true, 4, true), (false, 2, true)] {
            let what = format!("{name} osft={osft} shards={shards} blocks={blocks}");
            let (la, wa) = go(load(), osft, 1, false);
            let (lb, wb) = go(load(), osft, shards, blocks);
            for (a, b) in la.iter().zip(&lb) {
                assert!((a - b).abs() <= 1e-5 * a.abs(), "{what}: losses {la:?} vs {lb:?}");
            }
            assert!(la[2] < la[0], "{what}: the run did not learn: {la:?}");
            for (k, t) in &wa {
                let err = max_rel_diff(&wb[k], t);
                assert!(err <= 1e-5, "{what}: `{k}` differs by {err}");
            }
        }
    }
    for name in ["llama-tied-tiny", "llama-gqa-untied-tiny", "t5-v1_0-tiny", "t5-v1_1-tiny"] {
        let load = || Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap().model;
        match load() {
            Model::Llama(_) => compare(name, || match load() {
                Model::Llama(m) => m,
                Model::T5(_) => unreachable!(),
            }),
            Model::T5(_) => compare(name, || match load() {
                Model::T5(m) => m,
                Model::Llama(_) => unreachable!(),
            }),
        }
    }
}

/// `[osft] bases = "auto"` projects a side whose dimension is `R` through the complement basis
/// when it is the smaller one. With 3/4 of the rank frozen, 100 AdamW steps through the
/// complement bases train as the frozen bases do. Losses and merged weights agree, and the low
/// factors stay in their subspace.
#[test]
fn complement_bases_train_like_the_frozen_bases() {
    use sculpt_osft::{ProjectionBases, RankRule};
    let name = "llama-gqa-untied-tiny";
    let batch = batch_of(name);
    let train = TrainSection { lr: 1e-2, max_grad_norm: 0.0, weight_decay: 0.01, ..Default::default() };
    let go = |bases: ProjectionBases| {
        let m = tiny_llama(name);
        let cfg = OsftConfig { rank: RankRule::Preserve { fraction: Some(0.75), count: None }, bases, ..Default::default() };
        let (model, osft) = Osft::attach(m, &cfg, "llama", None).unwrap();
        let sides = osft.complement_sides();
        let (mut model, last) = osft_steps(model, &osft, &batch, &train, 100);
        let leak = osft.leakage(&mut model);
        merge(&mut model);
        (sides, last, leak, model.export())
    };
    let (sides_high, last_high, leak_high, w_high) = go(ProjectionBases::High);
    let (sides, last, leak, w) = go(ProjectionBases::Auto);
    assert_eq!(sides_high, 0);
    // Every target of this model has a side of dimension R (q and o both), so each contributes.
    assert!(sides >= 14, "complement bases on only {sides} sides");
    println!("100 AdamW steps: loss {last_high:.6} (frozen bases) vs {last:.6} (complement); leakage {leak_high:?} vs {leak:?}");
    assert!((last - last_high).abs() <= 1e-4 * last_high.abs(), "losses differ: {last} vs {last_high}");
    assert!(leak.0 <= 1e-5 && leak.1 <= 1e-5, "complement bases leaked: {leak:?}");
    for (k, t) in &w_high.tensors {
        let err = max_rel_diff(&w.tensors[k].data, &t.data);
        assert!(err <= 1e-4, "{k} differs by {err}");
    }
}

/// `[osft] forward`: the merged form (`x (W + U diag(s) Vt)ᵀ`) and the factored form train
/// alike — three SGD steps with accumulation and per-block checkpointing give the same losses
/// and merged weights (1e-5) on LLaMA and T5; a LoRA-sized term is not involved here.
#[test]
fn merged_and_factored_forms_train_alike() {
    use sculpt_models::layers::LowRankForm;
    let device = Default::default();
    fn go<M: LanguageModel<Ad>>(model: M, form: LowRankForm) -> (Vec<f64>, std::collections::BTreeMap<String, Vec<f32>>) {
        let family = model.family();
        let cfg = OsftConfig { forward: form, ..Default::default() };
        let (model, o) = Osft::attach(model, &cfg, family, None).unwrap();
        let batches = vec![padded_batch(model.decoder_only()), padded_batch(model.decoder_only())];
        three_sgd_steps(model, Some(&o), &o.low_param_ids(), &batches, true, 1)
    }
    for name in ["llama-tied-tiny", "t5-v1_1-tiny"] {
        let run = |form| match Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap().model {
            Model::Llama(m) => go(m, form),
            Model::T5(m) => go(m, form),
        };
        let (lf, wf) = run(LowRankForm::Factored);
        let (lm, wm) = run(LowRankForm::Merged);
        assert!(lf[2] < lf[0], "{name}: the run did not learn: {lf:?}");
        // Both forms ran: the two summation orders round differently somewhere.
        assert!(wf != wm, "{name}: the forms gave bit-identical weights; did the merged form run?");
        for (a, b) in lf.iter().zip(&lm) {
            assert!((a - b).abs() <= 1e-5 * a.abs(), "{name}: losses {lf:?} vs {lm:?}");
        }
        for (k, t) in &wf {
            let err = max_rel_diff(&wm[k], t);
            assert!(err <= 1e-5, "{name}: `{k}` differs by {err}");
        }
    }
}

/// `[osft] frozen_precision = "bf16"`: every target's `W_high` is stored as bf16 (the fp32
/// split's `W_high` rounded once), the model moves at step 0 by that rounding only, and training
/// keeps the low factors as orthogonal and the frozen part as untouched as in fp32; the merge
/// gives fp32 weights.
#[test]
fn bf16_frozen_part_is_the_rounded_fp32_one_and_trains_alike() {
    use burn::tensor::DType;
    use sculpt_osft::FrozenPrecision;
    let device = Default::default();
    let name = "llama-gqa-untied-tiny";
    let batch = batch_of(name);
    let load = || tiny_llama(name);
    let ids = || sculpt_models::layers::ids_tensor(&batch.input_ids, &device);
    let base = load();
    let logits_before = to_host(base.forward(ids(), None, None));
    let cfg = OsftConfig { frozen_precision: FrozenPrecision::Bf16, ..Default::default() };
    let (mut bf, bf_osft) = Osft::attach(base, &cfg, "llama", None).unwrap();
    let (mut fp, fp_osft) = Osft::attach(load(), &OsftConfig::default(), "llama", None).unwrap();
    let high = |m: &mut sculpt_models::llama::Llama<Ad>| {
        let mut out = std::collections::BTreeMap::new();
        m.visit_linears_mut(&mut |name, lin| {
            out.insert(name.to_string(), (lin.weight.val().dtype(), lin.delta.is_some(), to_host(lin.weight.val()).data));
        });
        out
    };
    let (hb, hf) = (high(&mut bf), high(&mut fp));
    assert_eq!(hb.values().filter(|(_, attached, _)| *attached).count(), bf_osft.resolved().len());
    for (name, (dtype, attached, w)) in &hb {
        let (fdtype, _, fw) = &hf[name];
        assert_eq!(*fdtype, DType::F32);
        if *attached {
            assert_eq!(*dtype, DType::BF16, "{name}");
            // A bf16 value (its low 16 bits zero) next to the fp32 one: within one bf16 step
            // (2⁻⁸ relative; the cast rounds to nearest but for rare near-ties).
            for (x, y) in w.iter().zip(fw) {
                assert_eq!(x.to_bits() & 0xFFFF, 0, "{name}: {x} is not a bf16 value");
                assert!((x - y).abs() <= y.abs() * 2f32.powi(-8), "{name}: {x} is not {y} rounded to bf16");
            }
            let nearest = w.iter().zip(fw).filter(|(x, y)| **x == half::bf16::from_f32(**y).to_f32()).count();
            assert!(nearest * 100 >= w.len() * 99, "{name}: {nearest} of {} rounded to nearest", w.len());
        } else {
            assert_eq!((*dtype, w), (DType::F32, fw), "{name}: a non-target changed");
        }
    }
    // Step 0: the logits moved, by about W_high's rounding.
    let moved = sculpt::max_abs_diff(&to_host(bf.forward(ids(), None, None)).data, &logits_before.data);
    let scale = logits_before.data.iter().fold(0f32, |a, x| a.max(x.abs()));
    println!("step-0 logits moved by {moved:.2e} with a bf16 W_high (largest logit {scale:.2})");
    // bf16 keeps 8 significant bits: about 2⁻⁹ relative per weight, through two blocks and the head.
    assert!(moved > 1e-6 && moved <= 3e-2 * scale, "step-0 logits moved by {moved} (largest {scale})");

    let frozen_before = high(&mut bf);
    let train = TrainSection { lr: 1e-2, max_grad_norm: 0.0, weight_decay: 0.01, ..Default::default() };
    let (mut bf, bf_last) = osft_steps(bf, &bf_osft, &batch, &train, 40);
    let (_, fp_last) = osft_steps(fp, &fp_osft, &batch, &train, 40);
    println!("40 AdamW steps: loss {bf_last:.4} (bf16 W_high) vs {fp_last:.4} (fp32)");
    assert!((bf_last - fp_last).abs() <= 0.05 * fp_last, "{bf_last} vs {fp_last}");
    let (lu, lv) = bf_osft.leakage(&mut bf);
    assert!(lu <= 1e-5 && lv <= 1e-5, "low factors leaked: {lu}, {lv}");
    let after = high(&mut bf);
    for (name, (dtype, attached, w)) in &frozen_before {
        if *attached {
            assert_eq!((&after[name].0, &after[name].2), (dtype, w), "{name}: W_high changed in training");
        }
    }
    // A full-precision module record (what mid-task checkpoints write) loads `W_high` as fp32;
    // `restore_frozen_storage` puts it back into bf16 with the same values.
    {
        use burn::module::Module;
        use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(bf.clone().into_record(), ()).unwrap();
        let mut back = bf.clone().load_record(recorder.load(bytes, &device).unwrap());
        let loaded = high(&mut back);
        println!("W_high after loading a record: {:?}", loaded.values().find(|v| v.1).map(|v| v.0));
        bf_osft.restore_frozen_storage(&mut back);
        let restored = high(&mut back);
        assert_eq!(restored, after, "restoring changed a value or left a dtype");
    }
    // The merge is fp32: W_high (as fp32) + U diag(s) Vt.
    merge(&mut bf);
    assert!(high(&mut bf).values().all(|(d, attached, _)| *d == DType::F32 && !attached));
}

/// The start of a Flex tensor's storage: equal for two tensors that share one buffer.
fn storage_ptr(t: burn::tensor::Tensor<Flex, 2>) -> usize {
    t.into_primitive().tensor().bytes().as_ptr() as usize
}

/// `[osft] frozen_form = "factors"`: every target where the factors take less memory holds its
/// high part as `U_h diag(s_h) Vt_h`, sharing the projection bases (one buffer), with an empty
/// dense weight; the model at step 0 is the original up to the SVD's round-off; 40 AdamW steps
/// give the dense run's losses and merged weights; the factors stay bit-identical and shared
/// through a module record. Checked at PEFT's split (every target factored on the tiny model) and
/// at `unfreeze` 0.25 (square targets stay dense, the others upload the complement side's factor).
#[test]
fn factored_high_parts_share_the_bases_and_train_like_dense_ones() {
    use burn::module::Module;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use sculpt_osft::{high_as_factors, FrozenForm, RankRule};
    let device = Default::default();
    let name = "llama-gqa-untied-tiny";
    let batch = batch_of(name);
    let load = || tiny_llama(name);
    let ids = || sculpt_models::layers::ids_tensor(&batch.input_ids, &device);
    let logits_before = to_host(load().forward(ids(), None, None));
    let scale = logits_before.data.iter().fold(0f32, |a, x| a.max(x.abs()));
    type Factors = std::collections::BTreeMap<String, (Vec<f32>, Vec<f32>, Vec<f32>)>;
    let factors = |m: &mut sculpt_models::llama::Llama<Ad>| -> Factors {
        let mut out = Factors::new();
        m.visit_linears_mut(&mut |name, lin| {
            if let Some(h) = &lin.high {
                out.insert(name.to_string(), (to_host(h.u.val()).data, to_host(h.s.val()).data, to_host(h.vt.val()).data));
            }
        });
        out
    };
    // Every factored target's frozen-basis sides are the bases' buffers, its complement sides not.
    let check_sharing = |m: &mut sculpt_models::llama::Llama<Ad>, osft: &Osft<Ad>| {
        let mut shared = 0;
        m.visit_linears_mut(&mut |name, lin| {
            let (Some(h), Some([(bu, cu), (bv, cv)])) = (&lin.high, osft.basis_tensors(name)) else { return };
            for (factor, basis, complement, side) in [(h.u.val(), bu, cu, "U"), (h.vt.val(), bv, cv, "Vt")] {
                let same = storage_ptr(factor.inner()) == storage_ptr(basis);
                assert_eq!(same, !complement, "{name}: {side}_h shared {same}, complement basis {complement}");
                shared += same as usize;
            }
        });
        shared
    };
    let half = RankRule::default();
    let quarter = RankRule::Unfreeze { fraction: 0.25 };
    for (label, rule, all_factored) in [("preserve half", half, true), ("unfreeze 0.25", quarter, false)] {
        let dense_cfg = OsftConfig { rank: rule.clone(), ..Default::default() };
        let cfg = OsftConfig { frozen_form: FrozenForm::Factors, ..dense_cfg.clone() };
        let (mut fm, f_osft) = Osft::attach(load(), &cfg, "llama", None).unwrap();
        let (dm, d_osft) = Osft::attach(load(), &dense_cfg, "llama", None).unwrap();
        let resolved = f_osft.resolved();
        let factored: Vec<_> = resolved.iter().filter(|t| t.high_factors).map(|t| t.name.clone()).collect();
        assert!(d_osft.resolved().iter().all(|t| !t.high_factors));
        assert_eq!(factored.len() == resolved.len(), all_factored, "{label}: factored {factored:?}");
        assert!(!factored.is_empty(), "{label}: no target factored");
        fm.visit_linears_mut(&mut |name, lin| {
            let Some(t) = resolved.iter().find(|t| t.name == name) else { return };
            assert_eq!(t.high_factors, high_as_factors(FrozenForm::Factors, cfg.bases, t.n, t.m, t.k), "{name}");
            assert_eq!(lin.high.is_some(), t.high_factors, "{label}: {name}");
            assert_eq!(lin.dims(), [t.n, t.m]);
            let w = lin.weight.val().dims();
            assert_eq!(w, if t.high_factors { [0, t.m] } else { [t.n, t.m] }, "{label}: {name}'s dense weight");
        });
        let shared = check_sharing(&mut fm, &f_osft);
        assert!(shared >= factored.len(), "{label}: {shared} shared sides over {} factored targets", factored.len());
        // Step 0: the original model up to the SVD's round-off.
        let moved = sculpt::max_abs_diff(&to_host(fm.forward(ids(), None, None)).data, &logits_before.data);
        println!("{label}: {} of {} targets factored; step-0 logits moved by {moved:.2e} (largest {scale:.2})", factored.len(), resolved.len());
        assert!(moved <= 1e-5 * scale, "{label}: step-0 logits moved by {moved}");

        let before = factors(&mut fm);
        let train = TrainSection { lr: 1e-2, max_grad_norm: 0.0, weight_decay: 0.01, ..Default::default() };
        let (mut fm, f_last) = osft_steps(fm, &f_osft, &batch, &train, 40);
        let (mut dm, d_last) = osft_steps(dm, &d_osft, &batch, &train, 40);
        println!("{label}: 40 AdamW steps: loss {f_last:.6} (factors) vs {d_last:.6} (dense)");
        assert!((f_last - d_last).abs() <= 1e-4 * d_last, "{label}: {f_last} vs {d_last}");
        let (lu, lv) = f_osft.leakage(&mut fm);
        assert!(lu <= 1e-5 && lv <= 1e-5, "{label}: low factors leaked: {lu}, {lv}");
        assert_eq!(factors(&mut fm), before, "{label}: a frozen factor changed in training");
        // A module record holds its own copies; restoring the storage shares the bases again.
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(fm.clone().into_record(), ()).unwrap();
        let mut back = fm.clone().load_record(recorder.load(bytes, &device).unwrap());
        f_osft.restore_frozen_storage(&mut back);
        assert_eq!(factors(&mut back), before, "{label}: the record changed a factor");
        assert_eq!(check_sharing(&mut back, &f_osft), shared, "{label}: sharing not restored");
        // The merges agree, and leave plain dense layers.
        merge(&mut fm);
        merge(&mut dm);
        let (wf, wd) = (fm.export().tensors, dm.export().tensors);
        for (k, t) in &wd {
            let err = max_rel_diff(&wf[k].data, &t.data);
            assert!(err <= 1e-4, "{label}: merged `{k}` differs by {err}");
        }
        fm.visit_linears_mut(&mut |name, lin| assert!(lin.high.is_none() && lin.delta.is_none(), "{name} still attached"));
    }
}

/// High parts held as factors through the rest of the trainer's machinery: T5 (v1.0 and v1.1:
/// attention, cross-attention and the gated and plain FFNs) and LLaMA (tied), with gradient
/// accumulation, per-block checkpointing (the forward re-run on the inner backend) and two row
/// shards (forks of the model) — three SGD steps give the dense run's losses and merged weights.
#[test]
fn factored_high_parts_train_like_dense_ones_on_t5_with_blocks_and_shards() {
    use sculpt_osft::FrozenForm;
    let device = Default::default();
    fn go<M: LanguageModel<Ad>>(model: M, form: FrozenForm) -> (usize, Vec<f64>, std::collections::BTreeMap<String, Vec<f32>>) {
        let family = model.family();
        let cfg = OsftConfig { frozen_form: form, ..Default::default() };
        let (model, o) = Osft::attach(model, &cfg, family, None).unwrap();
        let factored = o.resolved().iter().filter(|t| t.high_factors).count();
        let batches = vec![padded_batch(model.decoder_only()), padded_batch(model.decoder_only())];
        let (losses, weights) = three_sgd_steps(model, Some(&o), &o.low_param_ids(), &batches, true, 2);
        (factored, losses, weights)
    }
    for name in ["t5-v1_0-tiny", "t5-v1_1-tiny", "llama-tied-tiny"] {
        let run = |form| match Pretrained::<Ad>::load(&tiny_fixture(name), &device).unwrap().model {
            Model::Llama(m) => go(m, form),
            Model::T5(m) => go(m, form),
        };
        let (nd, ld, wd) = run(FrozenForm::Dense);
        let (nf, lf, wf) = run(FrozenForm::Factors);
        println!("{name}: {nf} targets factored; losses {lf:?} vs dense {ld:?}");
        assert_eq!(nd, 0);
        assert!(nf > 0, "{name}: no target factored");
        assert!(lf[2] < lf[0], "{name}: the run did not learn: {lf:?}");
        for (a, b) in lf.iter().zip(&ld) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{name}: losses {lf:?} vs {ld:?}");
        }
        for (k, t) in &wd {
            let err = max_rel_diff(&wf[k], t);
            assert!(err <= 1e-4, "{name}: `{k}` differs by {err}");
        }
    }
}
