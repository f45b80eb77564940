//! Per-block activation checkpointing (`[train] activation_checkpointing = "blocks"`).
//!
//! The forward pass runs on the inner (non-autodiff) backend and keeps only what enters each
//! block: the embedding output, every block's input, and for T5 the encoder output. The backward
//! pass then walks the segments from the loss back to the embedding. Each segment is re-run with
//! autodiff on its saved input, made a leaf that requires a gradient, and back-propagated alone:
//! the loss for the last segment, `Σ out ⊙ g_out` for the others. `g_out` is the gradient the
//! later segment left on this segment's output. The surrogate's gradient with respect to `out`
//! is exactly `g_out`, so every parameter gets the gradient of the whole graph. Only one block's
//! graph is alive at a time.
//!
//! Inputs that several segments read are leaves in each segment, and their gradients are summed
//! before they flow on: T5's encoder output feeds every decoder block's cross-attention, and each
//! stack's position bias comes from its first block's table. Parameter gradients go into one
//! [`GradientsParams`]. A tied embedding gets its head and embedding gradients added.

use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use sculpt_data::Batch;
use sculpt_models::layers::int_tensor;
use sculpt_models::llama::Llama;
use sculpt_models::loss::seq2seq_loss;
use sculpt_models::t5::T5;

use crate::lm::{llama_head_loss, shift_right};
use crate::step::add_grads;

/// A saved inner-backend tensor as a fresh autodiff leaf that requires a gradient.
fn leaf<B: AutodiffBackend, const D: usize>(x: Tensor<B::InnerBackend, D>) -> Tensor<B, D> {
    Tensor::from_inner(x).require_grad()
}

/// `Σ out ⊙ g`: back-propagating it gives every input of `out` the gradient `g` would give it.
fn surrogate<B: AutodiffBackend, const D: usize>(out: Tensor<B, D>, g: Tensor<B::InnerBackend, D>) -> Tensor<B, 1> {
    (out * Tensor::from_inner(g)).sum()
}

/// Collects the parameter gradients of the segments into one set.
struct Collect<'a> {
    acc: GradientsParams,
    trainable: &'a [(ParamId, usize)],
}

impl Collect<'_> {
    /// The gradients `grads` holds for the parameters of `module`.
    fn take<B: AutodiffBackend, M: AutodiffModule<B>>(&mut self, grads: &mut B::Gradients, module: &M) {
        let part = GradientsParams::from_module(grads, module);
        add_grads::<B>(&mut self.acc, part, self.trainable);
    }
}

fn grad_of<B: AutodiffBackend, const D: usize>(x: &Tensor<B, D>, grads: &B::Gradients) -> Tensor<B::InnerBackend, D> {
    x.grad(grads).expect("a checkpointed segment's input reaches its output")
}

/// Whether the token embedding or `stack`'s position-bias table trains (then the embedding
/// segment has something to back-propagate into; a graph with nothing tracked has no backward).
fn embedding_segment_trains<B: AutodiffBackend>(m: &T5<B>, stack: &sculpt_models::t5::T5Stack<B>) -> bool {
    let table = stack.block[0].self_attention.relative_attention_bias.as_ref().is_some_and(|t| t.weight.val().is_require_grad());
    table || m.shared.weight.val().is_require_grad()
}

/// The head segment's backward: the loss value, the gradients of `loss × scale`, and the
/// gradient on the segment's input `h`.
fn head_backward<B: AutodiffBackend>(loss: Tensor<B, 1>, scale: f64, h: &Tensor<B, 3>) -> (f64, B::Gradients, Tensor<B::InnerBackend, 3>) {
    let value = loss.clone().into_scalar().elem::<f64>();
    let loss = if scale != 1.0 { loss * scale } else { loss };
    let grads = loss.backward();
    let g = grad_of(h, &grads);
    (value, grads, g)
}

/// `(a + b)`, either side possibly absent.
fn sum_opt<B: burn::tensor::backend::Backend, const D: usize>(a: Option<Tensor<B, D>>, b: Tensor<B, D>) -> Option<Tensor<B, D>> {
    Some(match a {
        Some(a) => a + b,
        None => b,
    })
}

/// LLaMA: loss value and the gradients of `loss × scale`, with per-block checkpointing.
pub fn llama<B: AutodiffBackend>(m: &Llama<B>, batch: &Batch, scale: f64, trainable: &[(ParamId, usize)]) -> (f64, GradientsParams) {
    let device = m.model.embed_tokens.weight.device();
    let n = m.model.layers.len();
    let [b, s] = [batch.input_ids.len(), batch.input_ids.first().map_or(0, Vec::len)];
    // Forward without a graph, keeping block inputs.
    let inner = m.valid();
    let icx = inner.block_context(b, s, Some(int_tensor::<B::InnerBackend, _>(&batch.attention_mask, &device)), &device);
    let mut inputs = Vec::with_capacity(n);
    let mut x = inner.embed(int_tensor::<B::InnerBackend, _>(&batch.input_ids, &device));
    for i in 0..n {
        inputs.push(x.clone());
        x = inner.block(i, x, &icx);
    }
    drop((icx, inner));
    let mut out = Collect { acc: GradientsParams::new(), trainable };
    // The head segment: final norm, output head, loss.
    let h = leaf::<B, 3>(x);
    let (value, mut grads, mut g) = head_backward(llama_head_loss(m, m.final_norm(h.clone()), &batch.labels), scale, &h);
    out.take::<B, _>(&mut grads, &m.model.norm);
    match &m.lm_head {
        Some(head) => out.take::<B, _>(&mut grads, head),
        None => out.take::<B, _>(&mut grads, &m.model.embed_tokens),
    }
    drop(grads);
    // Blocks, last first.
    let acx = m.block_context(b, s, Some(int_tensor::<B, _>(&batch.attention_mask, &device)), &device);
    for i in (0..n).rev() {
        let x = leaf::<B, 3>(inputs.pop().expect("one input per block"));
        let mut grads = surrogate(m.block(i, x.clone(), &acx), g).backward();
        g = grad_of(&x, &grads);
        out.take::<B, _>(&mut grads, &m.model.layers[i]);
    }
    // The embedding, when it trains.
    if m.model.embed_tokens.weight.val().is_require_grad() {
        let e = m.embed(int_tensor::<B, _>(&batch.input_ids, &device));
        let mut grads = surrogate(e, g).backward();
        out.take::<B, _>(&mut grads, &m.model.embed_tokens);
    }
    (value, out.acc)
}

/// T5: loss value and the gradients of `loss × scale`, with per-block checkpointing of both
/// stacks.
pub fn t5<B: AutodiffBackend>(m: &T5<B>, batch: &Batch, scale: f64, trainable: &[(ParamId, usize)]) -> (f64, GradientsParams) {
    let device = m.shared.weight.device();
    let c = m.config();
    let dec_ids = shift_right(&batch.labels, c.decoder_start_token_id, c.pad_token_id);
    let [b, s] = [batch.input_ids.len(), batch.input_ids.first().map_or(0, Vec::len)];
    let sd = dec_ids.first().map_or(0, Vec::len);
    let (ne, nd) = (m.encoder.block.len(), m.decoder.block.len());
    // Forward without a graph.
    let inner = m.valid();
    let mask_i = int_tensor::<B::InnerBackend, _>(&batch.attention_mask, &device);
    let ebias = inner.encoder.self_bias(b, s, 0, Some(mask_i.clone()), &device);
    let mut enc_inputs = Vec::with_capacity(ne);
    let mut x = inner.shared.forward(int_tensor::<B::InnerBackend, _>(&batch.input_ids, &device));
    for i in 0..ne {
        enc_inputs.push(x.clone());
        x = inner.encoder.block_forward(i, x, &ebias, None);
    }
    let enc_last = x;
    let enc_out = inner.encoder.final_layer_norm.forward(enc_last.clone());
    let cross = inner.cross_bias(&enc_out, Some(mask_i));
    let dbias = inner.decoder.self_bias(b, sd, 0, None, &device);
    let mut dec_inputs = Vec::with_capacity(nd);
    let mut y = inner.shared.forward(int_tensor::<B::InnerBackend, _>(&dec_ids, &device));
    for j in 0..nd {
        dec_inputs.push(y.clone());
        y = inner.decoder.block_forward(j, y, &dbias, Some((&enc_out, &cross)));
    }
    drop(inner);
    let mut out = Collect { acc: GradientsParams::new(), trainable };
    // Head segment.
    let h = leaf::<B, 3>(y);
    let loss = seq2seq_loss(m.head(m.decoder.final_layer_norm.forward(h.clone())), int_tensor::<B, _>(&batch.labels, &device));
    let (value, mut grads, mut g) = head_backward(loss, scale, &h);
    out.take::<B, _>(&mut grads, &m.decoder.final_layer_norm);
    match &m.lm_head {
        Some(head) => out.take::<B, _>(&mut grads, head),
        None => out.take::<B, _>(&mut grads, &m.shared),
    }
    drop(grads);
    // Decoder blocks, last first; the encoder output and the decoder bias are shared inputs.
    let cross = Tensor::<B, 4>::from_inner(cross);
    let (mut g_enc, mut g_dbias) = (None, None);
    for j in (0..nd).rev() {
        let x = leaf::<B, 3>(dec_inputs.pop().expect("one input per block"));
        let e = leaf::<B, 3>(enc_out.clone());
        let bias = leaf::<B, 4>(dbias.clone());
        let mut grads = surrogate(m.decoder.block_forward(j, x.clone(), &bias, Some((&e, &cross))), g).backward();
        g = grad_of(&x, &grads);
        g_enc = sum_opt(g_enc, grad_of(&e, &grads));
        g_dbias = sum_opt(g_dbias, grad_of(&bias, &grads));
        out.take::<B, _>(&mut grads, &m.decoder.block[j]);
    }
    // Decoder embedding and the decoder's position-bias table.
    let dec = m.shared.forward(int_tensor::<B, _>(&dec_ids, &device));
    let table = m.decoder.self_bias(b, sd, 0, None, &device);
    let term = surrogate(dec, g) + surrogate(table, g_dbias.expect("decoder has blocks"));
    if embedding_segment_trains(m, &m.decoder) {
        let mut grads = term.backward();
        out.take::<B, _>(&mut grads, &m.shared);
        out.take::<B, _>(&mut grads, &m.decoder.block[0]);
    }
    // Encoder final norm, then its blocks.
    let x = leaf::<B, 3>(enc_last);
    let mut grads = surrogate(m.encoder.final_layer_norm.forward(x.clone()), g_enc.expect("decoder reads the encoder")).backward();
    let mut g = grad_of(&x, &grads);
    out.take::<B, _>(&mut grads, &m.encoder.final_layer_norm);
    let mask = int_tensor::<B, _>(&batch.attention_mask, &device);
    let mut g_ebias = None;
    for i in (0..ne).rev() {
        let x = leaf::<B, 3>(enc_inputs.pop().expect("one input per block"));
        let bias = leaf::<B, 4>(ebias.clone());
        let mut grads = surrogate(m.encoder.block_forward(i, x.clone(), &bias, None), g).backward();
        g = grad_of(&x, &grads);
        g_ebias = sum_opt(g_ebias, grad_of(&bias, &grads));
        out.take::<B, _>(&mut grads, &m.encoder.block[i]);
    }
    let emb = m.shared.forward(int_tensor::<B, _>(&batch.input_ids, &device));
    let table = m.encoder.self_bias(b, s, 0, Some(mask), &device);
    let term = surrogate(emb, g) + surrogate(table, g_ebias.expect("encoder has blocks"));
    if embedding_segment_trains(m, &m.encoder) {
        let mut grads = term.backward();
        out.take::<B, _>(&mut grads, &m.shared);
        out.take::<B, _>(&mut grads, &m.encoder.block[0]);
    }
    (value, out.acc)
}
