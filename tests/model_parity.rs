//! Logit, gradient and greedy-generation parity of sculpt's T5 and LLaMA with transformers, on
//! tiny random-weight models.
//!
//! Fixtures: `tests/fixtures/tiny/*`, made by
//! `/work/pyref/venv/bin/python tests/fixtures/make_fixtures.py` (torch 2.15, transformers 4.57.6;
//! see each fixture's `expected.json`). Tolerances: fp32 on the CPU, ≤ 1e-4 absolute on logits
//! (values of order 1; summation order differs from PyTorch's) and ≤ 1e-4 relative on gradients.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use sculpt::{max_abs_diff, max_rel_diff, read_reference, tiny_fixture, RefTensor};
use sculpt_models::layers::{ids_tensor, to_host, NamedParams, ParamRef};
use sculpt_models::loss::{causal_lm_loss, seq2seq_loss};
use sculpt_models::{Model, Pretrained};

type Cpu = Flex;
type CpuAd = Autodiff<Flex>;

const LLAMAS: &[&str] = &["llama-gqa-untied-tiny", "llama-tied-tiny"];
const T5S: &[&str] = &["t5-v1_1-tiny", "t5-v1_0-tiny"];

fn int2<B: Backend>(t: &RefTensor, device: &B::Device) -> Tensor<B, 2, Int> {
    sculpt_models::layers::int_tensor(&t.rows_i64(), device)
}

fn logits_of<B: Backend>(m: &Pretrained<B>, r: &std::collections::BTreeMap<String, RefTensor>, device: &B::Device) -> Tensor<B, 3> {
    match &m.model {
        Model::Llama(l) => l.forward(int2(&r["input_ids"], device), None, None),
        Model::T5(t) => t.forward(int2(&r["input_ids"], device), None, int2(&r["decoder_input_ids"], device)),
    }
}

#[test]
fn logits_match_transformers() {
    let device = Default::default();
    for name in LLAMAS.iter().chain(T5S) {
        let dir = tiny_fixture(name);
        let r = read_reference(&dir.join("expected.safetensors"));
        let m = Pretrained::<Cpu>::load(&dir, &device).unwrap();
        let got = to_host(logits_of(&m, &r, &device));
        assert_eq!(got.shape, r["logits"].shape, "{name}: logits shape");
        let d = max_abs_diff(&got.data, &r["logits"].f32());
        println!("{name}: max |logits − transformers| = {d:.2e}");
        assert!(d <= 1e-4, "{name}: logits differ by {d}");
    }
}

#[test]
fn loss_and_gradients_match_pytorch() {
    let device = Default::default();
    for name in LLAMAS.iter().chain(T5S) {
        let dir = tiny_fixture(name);
        let r = read_reference(&dir.join("expected.safetensors"));
        let m = Pretrained::<CpuAd>::load(&dir, &device).unwrap();
        let loss = match &m.model {
            Model::Llama(l) => {
                let ids = int2(&r["input_ids"], &device);
                causal_lm_loss(l.forward(ids.clone(), None, None), ids)
            }
            Model::T5(_) => seq2seq_loss(logits_of(&m, &r, &device), int2(&r["labels"], &device)),
        };
        let lv = to_host(loss.clone()).data[0];
        let want = r["loss"].data[0] as f32;
        assert!((lv - want).abs() <= 1e-5 * want.abs().max(1.0), "{name}: loss {lv} vs {want}");
        let grads = loss.backward();
        let mut checked = 0;
        let mut worst = (0.0f32, String::new());
        m.model.visit_params(&mut |pname, p| {
            let key = format!("grad.{pname}");
            let reference = r.get(&key).unwrap_or_else(|| panic!("{name}: no reference gradient for {pname}"));
            let g = match p {
                ParamRef::Vector(p) => p.val().grad(&grads).map(to_host),
                ParamRef::Matrix(p) => p.val().grad(&grads).map(to_host),
            }
            .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            assert_eq!(g.shape, reference.shape, "{name}: {pname} gradient shape");
            let d = max_rel_diff(&g.data, &reference.f32());
            if d > worst.0 {
                worst = (d, pname.to_string());
            }
            assert!(d <= 1e-4, "{name}: gradient of {pname} differs by {d} (relative)");
            checked += 1;
        });
        let n_ref = r.keys().filter(|k| k.starts_with("grad.")).count();
        assert_eq!(checked, n_ref, "{name}: every reference gradient must be checked");
        println!("{name}: loss {lv:.6} (ref {want:.6}); {checked} gradients, worst {:.2e} at {}", worst.0, worst.1);
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let device = Default::default();
    for name in LLAMAS.iter().chain(T5S) {
        let dir = tiny_fixture(name);
        let r = read_reference(&dir.join("expected.safetensors"));
        let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let m = Pretrained::<Cpu>::load(&dir, &device).unwrap();
        let prompt = exp["prompt"].as_str().unwrap();
        let ids = m.encode(prompt).unwrap();
        assert_eq!(ids, r["gen.input_ids"].rows_u32()[0], "{name}: prompt tokenization");
        let n = exp["max_new_tokens"].as_u64().unwrap() as usize;
        let (new, text) = m.generate(prompt, n, &device).unwrap();
        let out = r["gen.output_ids"].rows_u32().remove(0);
        let want: Vec<u32> = match &m.model {
            Model::Llama(_) => out[ids.len()..].to_vec(),
            Model::T5(_) => out[1..].to_vec(),
        };
        assert_eq!(new, want, "{name}: greedy tokens");
        assert_eq!(text, exp["generated_text"].as_str().unwrap(), "{name}: decoded text");
    }
}

/// Batched greedy decoding (left padding for LLaMA, right padding for T5's encoder) gives every
/// row the continuation it gets alone, for prompts of different lengths.
#[test]
fn batched_greedy_equals_one_prompt_at_a_time() {
    use sculpt_models::generate::{greedy_llama, greedy_llama_batch, greedy_t5, greedy_t5_batch};
    let device = Default::default();
    for name in LLAMAS.iter().chain(T5S) {
        let m = Pretrained::<Cpu>::load(&tiny_fixture(name), &device).unwrap();
        let prompts: Vec<Vec<u32>> = [3usize, 9, 1, 14, 6]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (7 + 13 * i as u32 + 29 * j as u32) % 90 + 5).collect())
            .collect();
        let (batched, single): (Vec<Vec<u32>>, Vec<Vec<u32>>) = match &m.model {
            Model::Llama(l) => (greedy_llama_batch(l, &prompts, 8, &device), prompts.iter().map(|p| greedy_llama(l, p, 8, &device)).collect()),
            Model::T5(t) => (greedy_t5_batch(t, &prompts, 8, &device), prompts.iter().map(|p| greedy_t5(t, p, 8, &device)).collect()),
        };
        assert_eq!(batched, single, "{name}");
    }
}

#[test]
fn kv_cache_gives_the_same_logits_as_a_full_forward() {
    let device = Default::default();
    let dir = tiny_fixture("llama-gqa-untied-tiny");
    let m = Pretrained::<Cpu>::load(&dir, &device).unwrap();
    let Model::Llama(l) = &m.model else { unreachable!() };
    let ids: Vec<u32> = vec![1, 17, 42, 99, 7, 3, 250, 12];
    let full = to_host(l.forward(ids_tensor(std::slice::from_ref(&ids), &device), None, None));
    let mut cache = sculpt_models::llama::KvCache::new(l.config().num_hidden_layers);
    let a = to_host(l.forward(ids_tensor(&[ids[..5].to_vec()], &device), None, Some(&mut cache)));
    let b = to_host(l.forward(ids_tensor(&[ids[5..].to_vec()], &device), None, Some(&mut cache)));
    let stitched: Vec<f32> = a.data.iter().chain(&b.data).copied().collect();
    assert!(max_abs_diff(&stitched, &full.data) <= 1e-5);
}

#[test]
fn padding_masks_leave_real_tokens_unchanged() {
    let device = Default::default();
    let mask_of = |rows: &[Vec<i64>]| -> Tensor<Cpu, 2, Int> {
        Tensor::from_data(TensorData::new(rows.concat(), [rows.len(), rows[0].len()]), &device)
    };
    // LLaMA, right padding: the logits of the real positions equal those of the unpadded row.
    let m = Pretrained::<Cpu>::load(&tiny_fixture("llama-gqa-untied-tiny"), &device).unwrap();
    let Model::Llama(l) = &m.model else { unreachable!() };
    let alone = to_host(l.forward(ids_tensor(&[vec![5, 17, 42]], &device), None, None));
    let padded = to_host(l.forward(
        ids_tensor(&[vec![5, 17, 42, 0, 0], vec![9, 8, 7, 6, 5]], &device),
        Some(mask_of(&[vec![1, 1, 1, 0, 0], vec![1, 1, 1, 1, 1]])),
        None,
    ));
    let v = l.config().vocab_size;
    assert!(max_abs_diff(&padded.data[..3 * v], &alone.data) <= 1e-5);
    // T5, encoder padding: decoder logits equal those without the padded encoder positions.
    let m = Pretrained::<Cpu>::load(&tiny_fixture("t5-v1_1-tiny"), &device).unwrap();
    let Model::T5(t) = &m.model else { unreachable!() };
    let dec = ids_tensor::<Cpu>(&[vec![0, 14, 33]], &device);
    let alone = to_host(t.forward(ids_tensor(&[vec![14, 108, 121, 1]], &device), None, dec.clone()));
    let padded = to_host(t.forward(ids_tensor(&[vec![14, 108, 121, 1, 0, 0]], &device), Some(mask_of(&[vec![1, 1, 1, 1, 0, 0]])), dec));
    assert!(max_abs_diff(&padded.data, &alone.data) <= 1e-5);
}
