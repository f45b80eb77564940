//! Training losses exactly as transformers computes them: mean token cross-entropy over the
//! labels that are not `IGNORE_INDEX`.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Label value excluded from the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// `logits: [n, vocab]`, `labels: [n]` → scalar mean of `-log p(label)` over non-ignored rows.
/// With no counted label the result is 0 (not NaN).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let keep = labels.clone().not_equal_elem(IGNORE_INDEX);
    let safe = labels.mask_fill(keep.clone().bool_not(), 0);
    let lp = log_softmax(logits, 1).gather(1, safe.reshape([n, 1])).reshape([n]);
    let w = keep.float();
    let count = w.clone().sum().clamp_min(1.0);
    (lp * w).sum().neg() / count
}

/// Causal-LM loss: position `t` predicts `labels[t + 1]` (`logits: [b, s, V]`, `labels: [b, s]`).
pub fn causal_lm_loss<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    assert!(s >= 2, "causal_lm_loss needs at least two positions");
    let pred = logits.slice([0..b, 0..s - 1, 0..v]).reshape([b * (s - 1), v]);
    let target = labels.slice([0..b, 1..s]).reshape([b * (s - 1)]);
    cross_entropy(pred, target)
}

/// Sequence-to-sequence loss: decoder position `t` predicts `labels[t]`.
pub fn seq2seq_loss<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    cross_entropy(logits.reshape([b * s, v]), labels.reshape([b * s]))
}
