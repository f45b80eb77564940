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
    let mut logits = model.forward(ids_tensor(&[prompt.to_vec()], device), None, Some(&mut cache));
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
