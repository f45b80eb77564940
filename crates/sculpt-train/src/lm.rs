//! The interface the training loop needs from a model: a loss on a padded batch, computed exactly
//! as transformers computes it, plus named parameters.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use sculpt_data::Batch;
use sculpt_models::generate::{greedy_llama_batch, greedy_t5_batch};
use sculpt_models::layers::{int_tensor, NamedParams};
use sculpt_models::llama::Llama;
use sculpt_models::loss::{causal_lm_loss, seq2seq_loss, IGNORE_INDEX};
use sculpt_models::t5::T5;

/// A trainable language model.
pub trait LanguageModel<B: AutodiffBackend>: AutodiffModule<B> + NamedParams<B> + Clone + Send {
    /// Mean token cross-entropy of the batch (labels `-100` ignored).
    fn loss(&self, batch: &Batch) -> Tensor<B, 1>;
    /// `"llama"` or `"t5"`.
    fn family(&self) -> &'static str;
    /// Whether labels are aligned with inputs (decoder-only) rather than decoder targets.
    fn decoder_only(&self) -> bool;
    /// The padding id used when batching.
    fn pad_id(&self) -> u32;
    /// Vocabulary size.
    fn vocab_size(&self) -> usize;
    /// The device the parameters live on.
    fn device(&self) -> B::Device;
    /// A forward pass for calibration (layer probes observe it): the whole input for decoder-only
    /// models; for encoder–decoder models the encoder input and one decoder start token.
    fn calibration_forward(&self, batch: &Batch);
    /// The end-of-sequence id answers end with.
    fn eos_id(&self) -> u32;
    /// Greedy continuations of `prompts` (new ids only, EOS kept), without autodiff.
    fn greedy(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Vec<Vec<u32>>;
}

impl<B: AutodiffBackend> LanguageModel<B> for Llama<B> {
    fn loss(&self, batch: &Batch) -> Tensor<B, 1> {
        let device = self.model.embed_tokens.weight.device();
        let ids = int_tensor::<B, _>(&batch.input_ids, &device);
        let mask = int_tensor::<B, _>(&batch.attention_mask, &device);
        let logits = self.forward(ids, Some(mask), None);
        causal_lm_loss(logits, int_tensor::<B, _>(&batch.labels, &device))
    }
    fn family(&self) -> &'static str {
        "llama"
    }
    fn decoder_only(&self) -> bool {
        true
    }
    fn pad_id(&self) -> u32 {
        let c = self.config();
        c.pad_token_id.or(c.eos_token_ids.first().copied()).unwrap_or(0)
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn device(&self) -> B::Device {
        self.model.embed_tokens.weight.device()
    }
    fn calibration_forward(&self, batch: &Batch) {
        let device = self.device();
        let ids = int_tensor::<B, _>(&batch.input_ids, &device);
        let mask = int_tensor::<B, _>(&batch.attention_mask, &device);
        let _ = self.hidden_states(ids, Some(mask), None);
    }
    fn eos_id(&self) -> u32 {
        self.config().eos_token_ids.first().copied().unwrap_or(0)
    }
    fn greedy(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Vec<Vec<u32>> {
        let m = self.valid();
        let device = self.device();
        greedy_llama_batch(&m, prompts, max_new_tokens, &device)
    }
}

/// transformers' `_shift_right`: decoder inputs are the labels shifted right behind the start
/// token, with ignored positions replaced by the pad id.
pub fn shift_right(labels: &[Vec<i64>], start: u32, pad: u32) -> Vec<Vec<i64>> {
    labels
        .iter()
        .map(|row| {
            std::iter::once(start as i64)
                .chain(row[..row.len().saturating_sub(1)].iter().map(|&x| if x == IGNORE_INDEX { pad as i64 } else { x }))
                .collect()
        })
        .collect()
}

impl<B: AutodiffBackend> LanguageModel<B> for T5<B> {
    fn loss(&self, batch: &Batch) -> Tensor<B, 1> {
        let device = self.shared.weight.device();
        let c = self.config();
        let ids = int_tensor::<B, _>(&batch.input_ids, &device);
        let mask = int_tensor::<B, _>(&batch.attention_mask, &device);
        let dec = int_tensor::<B, _>(&shift_right(&batch.labels, c.decoder_start_token_id, c.pad_token_id), &device);
        let logits = self.forward(ids, Some(mask), dec);
        seq2seq_loss(logits, int_tensor::<B, _>(&batch.labels, &device))
    }
    fn family(&self) -> &'static str {
        "t5"
    }
    fn decoder_only(&self) -> bool {
        false
    }
    fn pad_id(&self) -> u32 {
        self.config().pad_token_id
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn device(&self) -> B::Device {
        self.shared.weight.device()
    }
    fn calibration_forward(&self, batch: &Batch) {
        let device = self.device();
        let c = self.config();
        let ids = int_tensor::<B, _>(&batch.input_ids, &device);
        let mask = int_tensor::<B, _>(&batch.attention_mask, &device);
        let start = vec![vec![c.decoder_start_token_id as i64]; batch.input_ids.len()];
        let _ = self.forward(ids, Some(mask), int_tensor::<B, _>(&start, &device));
    }
    fn eos_id(&self) -> u32 {
        self.config().eos_token_id
    }
    fn greedy(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Vec<Vec<u32>> {
        let m = self.valid();
        let device = self.device();
        greedy_t5_batch(&m, prompts, max_new_tokens, &device)
    }
}
