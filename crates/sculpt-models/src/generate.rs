//! KV-cached greedy decoding for both families, token for token what transformers'
//! `generate(do_sample=False)` produces: stop at the first end-of-sequence token (kept in the
//! output) or after `max_new_tokens`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::layers::ids_tensor;
use crate::llama::{KvCache, Llama};
use crate::pretrained::{Model, Pretrained};
use crate::t5::{T5Cache, T5};

fn argmax_last<B: Backend>(logits: Tensor<B, 3>) -> u32 {
    let [_, s, v] = logits.dims();
    let last = logits.slice([0..1, s - 1..s, 0..v]).reshape([v]);
    let id: Tensor<B, 1, Int> = last.argmax(0);
    id.into_data().convert::<i64>().into_vec::<i64>().expect("int data")[0] as u32
}

fn one<B: Backend>(id: u32, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(vec![id as i64], [1, 1]), device)
}

/// Continue `prompt` (token ids, BOS included if wanted); returns the new ids only.
pub fn greedy_llama<B: Backend>(model: &Llama<B>, prompt: &[u32], max_new_tokens: usize, device: &B::Device) -> Vec<u32> {
    assert!(!prompt.is_empty(), "greedy_llama: empty prompt");
    let eos = &model.config().eos_token_ids;
    let mut cache = KvCache::new(model.config().num_hidden_layers);
    let mut out = vec![];
    let mut logits = model.forward_last(ids_tensor(&[prompt.to_vec()], device), None, Some(&mut cache));
    for _ in 0..max_new_tokens {
        let next = argmax_last(logits);
        out.push(next);
        if eos.contains(&next) {
            break;
        }
        logits = model.forward(one(next, device), None, Some(&mut cache));
    }
    out
}

/// Decode from the decoder start token given encoder input ids; returns the new ids only.
pub fn greedy_t5<B: Backend>(model: &T5<B>, input: &[u32], max_new_tokens: usize, device: &B::Device) -> Vec<u32> {
    let c = model.config();
    let enc = model.encode(ids_tensor(&[input.to_vec()], device), None);
    let cross = model.cross_bias(&enc, None);
    let mut cache = T5Cache::new(c.num_decoder_layers);
    let mut next = c.decoder_start_token_id;
    let mut out = vec![];
    for _ in 0..max_new_tokens {
        let logits = model.decode(one(next, device), &enc, &cross, Some(&mut cache));
        next = argmax_last(logits);
        out.push(next);
        if next == c.eos_token_id {
            break;
        }
    }
    out
}

/// Greedy argmax of the last position of every row: `[b, s, v]` → `b` ids.
fn argmax_rows<B: Backend>(logits: Tensor<B, 3>) -> Vec<u32> {
    let [b, s, v] = logits.dims();
    let last = logits.slice([0..b, s - 1..s, 0..v]).reshape([b, v]);
    let ids: Tensor<B, 2, Int> = last.argmax(1);
    ids.into_data().convert::<i64>().into_vec::<i64>().expect("int data").into_iter().map(|x| x as u32).collect()
}

fn column<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [ids.len(), 1]), device)
}

/// Collect per-row outputs: stop a row at its first EOS (kept) and after `max_new_tokens`.
struct Rows {
    out: Vec<Vec<u32>>,
    done: Vec<bool>,
}

impl Rows {
    fn new(b: usize) -> Self {
        Rows { out: vec![vec![]; b], done: vec![false; b] }
    }
    fn push(&mut self, next: &[u32], is_eos: impl Fn(u32) -> bool) {
        for (i, &t) in next.iter().enumerate() {
            if !self.done[i] {
                self.out[i].push(t);
                self.done[i] = is_eos(t);
            }
        }
    }
    fn all_done(&self) -> bool {
        self.done.iter().all(|&d| d)
    }
}

/// Greedy continuation of several prompts at once (left-padded; padded keys are masked and RoPE
/// depends only on relative positions, so each row gets its own continuation). Returns the new
/// ids of each row, EOS kept.
pub fn greedy_llama_batch<B: Backend>(model: &Llama<B>, prompts: &[Vec<u32>], max_new_tokens: usize, device: &B::Device) -> Vec<Vec<u32>> {
    if prompts.is_empty() || max_new_tokens == 0 {
        return vec![vec![]; prompts.len()];
    }
    assert!(prompts.iter().all(|p| !p.is_empty()), "greedy_llama_batch: empty prompt");
    let c = model.config();
    let pad = c.pad_token_id.or(c.eos_token_ids.first().copied()).unwrap_or(0);
    let len = prompts.iter().map(Vec::len).max().expect("non-empty");
    let mut mask: Vec<Vec<i64>> = prompts.iter().map(|p| std::iter::repeat_n(0, len - p.len()).chain(std::iter::repeat_n(1, p.len())).collect()).collect();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| std::iter::repeat_n(pad, len - p.len()).chain(p.iter().copied()).collect()).collect();
    let eos = &c.eos_token_ids;
    let mut cache = KvCache::new(c.num_hidden_layers);
    let mut rows = Rows::new(prompts.len());
    let mut logits = model.forward_last(ids_tensor(&ids, device), Some(crate::layers::int_tensor(&mask, device)), Some(&mut cache));
    for step in 0..max_new_tokens {
        let next = argmax_rows(logits);
        rows.push(&next, |t| eos.contains(&t));
        if rows.all_done() || step + 1 == max_new_tokens {
            break;
        }
        for m in &mut mask {
            m.push(1);
        }
        logits = model.forward(column(&next, device), Some(crate::layers::int_tensor(&mask, device)), Some(&mut cache));
    }
    rows.out
}

/// Greedy decoding of several encoder inputs at once (right-padded and masked).
pub fn greedy_t5_batch<B: Backend>(model: &T5<B>, inputs: &[Vec<u32>], max_new_tokens: usize, device: &B::Device) -> Vec<Vec<u32>> {
    if inputs.is_empty() || max_new_tokens == 0 {
        return vec![vec![]; inputs.len()];
    }
    let c = model.config();
    let len = inputs.iter().map(Vec::len).max().expect("non-empty").max(1);
    let ids: Vec<Vec<u32>> = inputs.iter().map(|p| p.iter().copied().chain(std::iter::repeat_n(c.pad_token_id, len - p.len())).collect()).collect();
    let mask: Vec<Vec<i64>> = inputs.iter().map(|p| std::iter::repeat_n(1, p.len()).chain(std::iter::repeat_n(0, len - p.len())).collect()).collect();
    let mask = crate::layers::int_tensor::<B, _>(&mask, device);
    let enc = model.encode(ids_tensor(&ids, device), Some(mask.clone()));
    let cross = model.cross_bias(&enc, Some(mask));
    let mut cache = T5Cache::new(c.num_decoder_layers);
    let mut next = vec![c.decoder_start_token_id; inputs.len()];
    let mut rows = Rows::new(inputs.len());
    for _ in 0..max_new_tokens {
        let logits = model.decode(column(&next, device), &enc, &cross, Some(&mut cache));
        next = argmax_rows(logits);
        rows.push(&next, |t| t == c.eos_token_id);
        if rows.all_done() {
            break;
        }
    }
    rows.out
}

impl<B: Backend> Pretrained<B> {
    /// Tokenize `prompt` (special tokens as the tokenizer's post-processor adds them).
    pub fn encode(&self, prompt: &str) -> crate::error::Result<Vec<u32>> {
        let enc = self.tokenizer.encode(prompt, true).map_err(|e| crate::error::ModelError::Tokenizer {
            path: self.source.clone(),
            msg: e.to_string(),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Greedy continuation of `prompt`: `(new token ids, their text without special tokens)`.
    pub fn generate(&self, prompt: &str, max_new_tokens: usize, device: &B::Device) -> crate::error::Result<(Vec<u32>, String)> {
        let ids = self.encode(prompt)?;
        let new = match &self.model {
            Model::Llama(m) => greedy_llama(m, &ids, max_new_tokens, device),
            Model::T5(m) => greedy_t5(m, &ids, max_new_tokens, device),
        };
        let text = self
            .tokenizer
            .decode(&new, true)
            .map_err(|e| crate::error::ModelError::Tokenizer { path: self.source.clone(), msg: e.to_string() })?;
        Ok((new, text))
    }
}
