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
        let logits = to_host(l.forward(ids_tensor(&[ids.clone()], &device), None, None));
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
