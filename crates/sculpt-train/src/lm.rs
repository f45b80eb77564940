//! The interface the training loop needs from a model: a loss on a padded batch, computed exactly
//! as transformers computes it, plus named parameters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use sculpt_data::Batch;
use sculpt_models::generate::{greedy_llama_batch, greedy_t5_batch};
use sculpt_models::layers::{int_tensor, NamedParams};
use sculpt_models::llama::Llama;
use sculpt_models::loss::{causal_lm_loss, cross_entropy, seq2seq_loss, IGNORE_INDEX};
use sculpt_models::t5::T5;
use sculpt_osft::importance::{measure, CalibrationMask, NonSquare};
use sculpt_osft::targets::TargetSet;

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
    /// Raw layer importances of the `targets` over the calibration `batches`
    /// ([`sculpt_osft::importance::measure`]). Each forward pass takes the whole input for
    /// decoder-only models; encoder–decoder models take the encoder input and one decoder start
    /// token. The passes run on a copy of the model on the inner backend: burn's autodiff
    /// registers even untracked ops in its graph and keeps them until the next backward.
    fn calibration_importance(&self, targets: &TargetSet, mode: NonSquare, batches: &[Batch]) -> BTreeMap<String, f64>;
    /// The end-of-sequence id answers end with.
    fn eos_id(&self) -> u32;
    /// Greedy continuations of `prompts` (new ids only, EOS kept), without autodiff.
    fn greedy(&self, prompts: &[Vec<u32>], max_new_tokens: usize) -> Vec<Vec<u32>>;
    /// The loss value and the gradients of `loss × scale` for the `trainable` parameters, with
    /// per-block activation checkpointing ([`crate::checkpoint`]).
    fn loss_grads_checkpointed(&self, batch: &Batch, scale: f64, trainable: &[(ParamId, usize)]) -> (f64, GradientsParams);
}

/// [`measure`] on `model` (an inner-backend copy) over `batches`: `forward(model, ids, mask,
/// batch)` runs one calibration pass after the batch's token mask is handed to the probes.
fn calibrate<B: Backend, M: NamedParams<B>>(
    model: &mut M,
    targets: &TargetSet,
    mode: NonSquare,
    batches: &[Batch],
    device: &B::Device,
    forward: impl Fn(&M, Tensor<B, 2, Int>, Tensor<B, 2, Int>, &Batch),
) -> BTreeMap<String, f64> {
    let slot = Arc::new(Mutex::new(CalibrationMask::default()));
    measure(model, targets, mode, batches.len(), slot.clone(), |m, i| {
        let batch = &batches[i];
        slot.lock().expect("lock").mask = batch.attention_mask.iter().flatten().map(|&x| x as f32).collect();
        forward(m, int_tensor::<B, _>(&batch.input_ids, device), int_tensor::<B, _>(&batch.attention_mask, device), batch);
    })
}

/// The LLaMA loss from final-norm hidden states `h: [b, s, d]`.
pub(crate) fn llama_head_loss<B: AutodiffBackend>(m: &Llama<B>, h: Tensor<B, 3>, labels: &[Vec<i64>]) -> Tensor<B, 1> {
    let device = h.device();
    match predicting_positions(labels) {
        // The output head (and its backward) only at the positions that predict a counted
        // label — prompt-only positions contribute nothing to the loss or its gradient.
        Some((rows, targets)) => {
            let [b, s, d] = h.dims();
            let n = rows.len();
            let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
            let h = h.reshape([b * s, d]).select(0, rows).reshape([1, n, d]);
            let logits = m.head(h).reshape([n, m.config().vocab_size]);
            cross_entropy(logits, Tensor::from_data(TensorData::new(targets, [n]), &device))
        }
        None => causal_lm_loss(m.head(h), int_tensor::<B, _>(labels, &device)),
    }
}

impl<B: AutodiffBackend> LanguageModel<B> for Llama<B> {
    fn loss(&self, batch: &Batch) -> Tensor<B, 1> {
        let device = self.model.embed_tokens.weight.device();
        let ids = int_tensor::<B, _>(&batch.input_ids, &device);
        let mask = int_tensor::<B, _>(&batch.attention_mask, &device);
        let h = self.hidden_states(ids, Some(mask), None);
        llama_head_loss(self, h, &batch.labels)
    }
    fn loss_grads_checkpointed(&self, batch: &Batch, scale: f64, trainable: &[(ParamId, usize)]) -> (f64, GradientsParams) {
        crate::checkpoint::llama(self, batch, scale, trainable)
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
    fn calibration_importance(&self, targets: &TargetSet, mode: NonSquare, batches: &[Batch]) -> BTreeMap<String, f64> {
        calibrate(&mut self.valid(), targets, mode, batches, &self.device(), |m, ids, mask, _| {
            let _ = m.hidden_states(ids, Some(mask), None);
        })
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

/// The flat positions `r·s + t` (`t < s − 1`) whose next label counts, with those labels — or
/// `None` when no label counts (the full path then returns transformers' zero loss).
fn predicting_positions(labels: &[Vec<i64>]) -> Option<(Vec<i64>, Vec<i64>)> {
    let s = labels.first().map_or(0, Vec::len);
    let (mut rows, mut targets) = (vec![], vec![]);
    for (r, row) in labels.iter().enumerate() {
        for t in 0..s.saturating_sub(1) {
            if row[t + 1] != IGNORE_INDEX {
                rows.push((r * s + t) as i64);
                targets.push(row[t + 1]);
            }
        }
    }
    (!rows.is_empty()).then_some((rows, targets))
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
    fn loss_grads_checkpointed(&self, batch: &Batch, scale: f64, trainable: &[(ParamId, usize)]) -> (f64, GradientsParams) {
        crate::checkpoint::t5(self, batch, scale, trainable)
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
    fn calibration_importance(&self, targets: &TargetSet, mode: NonSquare, batches: &[Batch]) -> BTreeMap<String, f64> {
        let device = self.device();
        let start_id = self.config().decoder_start_token_id as i64;
        calibrate(&mut self.valid(), targets, mode, batches, &device, |m, ids, mask, batch| {
            let start = vec![vec![start_id]; batch.input_ids.len()];
            let _ = m.forward(ids, Some(mask), int_tensor::<B::InnerBackend, _>(&start, &device));
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{write_random_llama, LlamaDims};
    use burn::backend::{Autodiff, Flex};
    use sculpt_models::pretrained::{Model, Pretrained};

    type AB = Autodiff<Flex>;

    /// The head applied only at label-predicting positions gives the full path's loss and
    /// gradients (prompt positions, padding and a row with no counted label included).
    #[test]
    fn the_gathered_head_gives_the_full_loss_and_gradients() {
        let dir = tempfile::tempdir().unwrap();
        let dims = LlamaDims { hidden: 32, intermediate: 64, layers: 2, heads: 4, kv_heads: 2 };
        write_random_llama(dir.path(), dims, 7).unwrap();
        let device = Default::default();
        let Model::Llama(m) = Pretrained::<AB>::load(dir.path(), &device).unwrap().model else { panic!("llama") };
        let batch = Batch {
            input_ids: vec![vec![5, 6, 7, 8, 9, 10], vec![11, 12, 13, 14, 0, 0], vec![3, 4, 5, 6, 7, 8]],
            attention_mask: vec![vec![1; 6], vec![1, 1, 1, 1, 0, 0], vec![1; 6]],
            labels: vec![vec![-100, -100, -100, 8, 9, 10], vec![-100, -100, 13, 14, -100, -100], vec![-100; 6]],
        };
        let gathered = m.loss(&batch);
        let full = {
            let ids = int_tensor::<AB, _>(&batch.input_ids, &device);
            let mask = int_tensor::<AB, _>(&batch.attention_mask, &device);
            causal_lm_loss(m.forward(ids, Some(mask), None), int_tensor::<AB, _>(&batch.labels, &device))
        };
        let (a, b) = (gathered.clone().into_scalar(), full.clone().into_scalar());
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "loss {a} vs {b}");
        let (ga, gb) = (gathered.backward(), full.backward());
        let mut worst = 0.0f32;
        m.visit_params(&mut |name, p| {
            let (x, y) = match p {
                sculpt_models::layers::ParamRef::Matrix(t) => {
                    (t.grad(&ga).expect(name).into_data().to_vec::<f32>().unwrap(), t.grad(&gb).expect(name).into_data().to_vec::<f32>().unwrap())
                }
                sculpt_models::layers::ParamRef::Vector(t) => {
                    (t.grad(&ga).expect(name).into_data().to_vec::<f32>().unwrap(), t.grad(&gb).expect(name).into_data().to_vec::<f32>().unwrap())
                }
            };
            for (x, y) in x.iter().zip(&y) {
                worst = worst.max((x - y).abs() / y.abs().max(1e-3));
            }
        });
        assert!(worst <= 1e-4, "worst relative gradient difference {worst}");
    }

    #[test]
    fn predicting_positions_are_the_shifted_counted_labels() {
        let labels = vec![vec![-100, 4, 5], vec![-100, -100, -100], vec![1, -100, 2]];
        assert_eq!(predicting_positions(&labels), Some((vec![0, 1, 7], vec![4, 5, 2])));
        assert_eq!(predicting_positions(&[vec![-100, -100]]), None);
    }
}
