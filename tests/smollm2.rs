//! The one real pretrained model available offline, SmolLM2-135M-Instruct (LLaMA architecture,
//! GQA 9/3, tied embeddings), from its Q4_1 GGUF: greedy generation token for token equal to
//! transformers on the same de-quantised weights. Skips with a message when the GGUF is absent
//! (`cargo xtask fetch-smollm2` fetches it).
//!
//! Reference: `tests/fixtures/smollm2/greedy.json`, made by
//! `/work/pyref/venv/bin/python tests/fixtures/make_smollm2_reference.py --gguf <file>`
//! (transformers 4.57.6's own GGUF loader). sculpt follows the GGUF's `add_bos_token = false`,
//! so it is compared with the reference's `results_no_bos` (prompts encoded without BOS).

use burn::backend::Flex;
use sculpt::{repo_root, smollm2_gguf};
use sculpt_models::layers::{ids_tensor, to_host};
use sculpt_models::{Model, Pretrained};

#[test]
fn smollm2_greedy_generation_matches_transformers() {
    let Some(gguf) = smollm2_gguf() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("tests/fixtures/smollm2/greedy.json")).unwrap()).unwrap();
    let device = Default::default();
    let m = Pretrained::<Flex>::load(&gguf, &device).unwrap();
    let Model::Llama(l) = &m.model else { panic!("SmolLM2 is a LLaMA") };
    assert_eq!((l.config().num_attention_heads, l.config().num_key_value_heads), (9, 3));
    assert!(l.config().tie_word_embeddings);
    let ids_of = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    for case in reference["results_no_bos"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = m.encode(prompt).unwrap();
        assert_eq!(ids, ids_of(&case["prompt_ids"]), "prompt ids of {prompt:?}");
        // Logits of the last prompt position: fp32 over 30 layers, values ~15, summation order differs.
        let logits = to_host(l.forward(ids_tensor(std::slice::from_ref(&ids), &device), None, None));
        let v = l.config().vocab_size;
        let last = &logits.data[(ids.len() - 1) * v..ids.len() * v];
        for t in case["top5_last_prompt_position"].as_array().unwrap() {
            let (id, want) = (t["id"].as_u64().unwrap() as usize, t["logit"].as_f64().unwrap() as f32);
            assert!((last[id] - want).abs() <= 2e-3, "{prompt:?}: logit of {id}: {} vs {want}", last[id]);
        }
        let new = ids_of(&case["new_ids"]);
        let (got, text) = m.generate(prompt, new.len(), &device).unwrap();
        assert_eq!(got, new, "greedy continuation of {prompt:?}");
        assert_eq!(text, case["new_text"].as_str().unwrap());
    }
}

/// The blocked randomized SVD (full split) on real weights: SmolLM2's 14 targets of blocks 0 and
/// 15, against an exact f64 SVD: singular values ≤ 1e-4 of σ_max, reconstruction ≤ 1e-5 relative,
/// and the frozen top-half subspace within the Davis–Kahan bound `sin θ ≤ c·ε·σ_max / (σ_k − σ_{k+1})`.
#[test]
fn randomized_svd_on_real_weights() {
    use sculpt_models::NamedParams;
    use sculpt_osft::svd::{randomized_svd, thin_svd_f64, RsvdOptions};
    let Some(gguf) = smollm2_gguf() else { return };
    let mut m = Pretrained::<Flex>::load(&gguf, &Default::default()).unwrap();
    let mut mats = vec![];
    m.model.visit_linears_mut(&mut |name, lin| {
        if name.starts_with("model.layers.0.") || name.starts_with("model.layers.15.") {
            mats.push((name.to_string(), to_host(lin.weight.val())));
        }
    });
    assert_eq!(mats.len(), 14);
    for (name, w) in &mats {
        let (n, mm) = (w.shape[0], w.shape[1]);
        let exact = thin_svd_f64(&w.data, n, mm).unwrap();
        let rs = randomized_svd(&w.data, n, mm, RsvdOptions::default()).unwrap();
        let smax = exact.s[0];
        let ds = rs.s.iter().zip(&exact.s).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / smax;
        assert!(ds <= 1e-4, "{name}: singular values off by {ds:.2e} of σ_max");
        let rec = rs.reconstruct();
        let num: f64 = rec.iter().zip(&w.data).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let den: f64 = w.data.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        assert!(num / den <= 1e-5, "{name}: reconstruction {:.2e}", num / den);
        // Top-k subspace (k = R/2): ‖(I − U_e U_eᵀ) U_r‖_F bounds sin θ; compare with Davis–Kahan.
        let r = exact.rank();
        let k = r / 2;
        let gap = (exact.s[k - 1] - exact.s[k]).max(1e-12);
        let mut resid = 0.0f64;
        for j in 0..k {
            // c = U_eᵀ u_j (over the top k exact directions), residual = u_j − U_e c.
            let uj: Vec<f64> = (0..n).map(|i| rs.u[i * r + j] as f64).collect();
            let c: Vec<f64> = (0..k).map(|t| (0..n).map(|i| exact.u[i * r + t] as f64 * uj[i]).sum()).collect();
            for (i, &uji) in uj.iter().enumerate() {
                let proj: f64 = (0..k).map(|t| exact.u[i * r + t] as f64 * c[t]).sum();
                resid += (uji - proj).powi(2);
            }
        }
        let sin = resid.sqrt();
        let bound = 1e-5 * smax as f64 / gap as f64;
        assert!(sin <= bound, "{name}: sin θ = {sin:.2e} > bound {bound:.2e} (gap {gap:.2e})");
    }
}
