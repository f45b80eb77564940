//! Training losses exactly as transformers computes them: mean token cross-entropy over the
//! labels that are not `IGNORE_INDEX`.
//!
//! On burn's CPU backend (`Flex`, with or without autodiff), and on its wgpu and cuda backends
//! when this crate's features of those names are on, the cross-entropy is one fused operation
//! ([`fused`]): the forward keeps only the logits and one log-sum-exp per row, and the backward
//! writes `softmax − one-hot` in one pass. Composed from tensor ops, the same loss allocates a
//! dozen `[tokens, vocab]` tensors per call (log-softmax, its exponentials, the scatter of the
//! gathered gradient, and their recomputation in the backward pass), which on the CPU cost more
//! in fresh pages than in arithmetic. Any other backend uses the composed form; both give the
//! same loss and gradient to fp32 rounding (tests below; `cargo xtask parity` compares the
//! wgpu backend's with the CPU's).

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Label value excluded from the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// `logits: [n, vocab]`, `labels: [n]` → scalar mean of `-log p(label)` over non-ignored rows.
/// With no counted label the result is 0 (not NaN).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let mut args = (logits, labels);
    // The fused operation on backend `$x`: with autodiff (either checkpointing strategy) or without.
    macro_rules! try_fused {
        ($x:ty) => {
            for_type!(Autodiff<$x>, fused::autodiff);
            for_type!(Autodiff<$x, BalancedCheckpointing>, fused::autodiff);
            for_type!($x, |z, l| fused::forward(z, l).0);
        };
    }
    macro_rules! for_type {
        ($t:ty, $f:expr) => {
            match fused::on::<B, $t>(args, $f) {
                Ok(loss) => return loss,
                Err(a) => args = a,
            }
        };
    }
    try_fused!(Flex);
    #[cfg(feature = "wgpu")]
    try_fused!(burn::backend::Wgpu);
    #[cfg(feature = "cuda")]
    try_fused!(burn::backend::Cuda);
    composed_cross_entropy(args.0, args.1)
}

/// [`cross_entropy`] composed from tensor ops (log-softmax, gather): what every backend without
/// the fused operation runs, and the fused one's reference in the tests.
pub fn composed_cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
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

/// The fused cross-entropy: a custom autodiff operation over any inner backend, and the
/// run-time type check that routes a generic call to it.
pub mod fused {
    use std::any::Any;

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::Autodiff;
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::{FloatTensor, IntTensor};
    use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorPrimitive};

    use super::IGNORE_INDEX;

    /// `f` on the arguments when `B` is `T` (a run-time type check, nothing is converted), else
    /// the arguments back.
    #[allow(clippy::type_complexity)]
    pub fn on<B: Backend, T: Backend>(
        args: (Tensor<B, 2>, Tensor<B, 1, Int>),
        f: impl FnOnce(Tensor<T, 2>, Tensor<T, 1, Int>) -> Tensor<T, 1>,
    ) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 1, Int>)> {
        let (logits, labels) = args;
        let boxed: Box<dyn Any> = Box::new(logits);
        match boxed.downcast::<Tensor<T, 2>>() {
            Ok(z) => {
                let l = *(Box::new(labels) as Box<dyn Any>).downcast::<Tensor<T, 1, Int>>().expect("logits and labels share the backend");
                let out: Box<dyn Any> = Box::new(f(*z, l));
                Ok(*out.downcast::<Tensor<B, 1>>().expect("T = B"))
            }
            Err(boxed) => Err((*boxed.downcast::<Tensor<B, 2>>().expect("logits are a Tensor<B, 2>"), labels)),
        }
    }

    /// The forward pass on a plain backend: `(loss [1], lse [n, 1], safe labels [n, 1], w/count
    /// [n, 1])`. `lse` is each row's log-sum-exp, `safe` the labels with ignored ones set to 0, and
    /// the last the weight each row's `−log p` enters the mean with (0 for ignored rows).
    #[allow(clippy::type_complexity)]
    pub fn forward<X: Backend>(z: Tensor<X, 2>, labels: Tensor<X, 1, Int>) -> (Tensor<X, 1>, Tensor<X, 2>, Tensor<X, 2, Int>, Tensor<X, 2>) {
        let [n, _] = z.dims();
        let keep = labels.clone().not_equal_elem(IGNORE_INDEX);
        let safe = labels.mask_fill(keep.clone().bool_not(), 0).reshape([n, 1]);
        let w = keep.float().reshape([n, 1]);
        let count = w.clone().sum().clamp_min(1.0);
        let m = z.clone().max_dim(1);
        let lse = (z.clone() - m.clone()).exp().sum_dim(1).log() + m;
        let picked = z.gather(1, safe.clone());
        let loss = ((lse.clone() - picked) * w.clone()).sum() / count.clone();
        let scale = w / count.unsqueeze::<2>();
        (loss, lse, safe, scale)
    }

    #[derive(Debug)]
    struct CrossEntropy;

    impl<X: Backend> Backward<X, 1> for CrossEntropy {
        /// Logits, log-sum-exp per row, safe labels, row weights.
        type State = (FloatTensor<X>, FloatTensor<X>, IntTensor<X>, FloatTensor<X>);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (z, lse, safe, scale) = ops.state;
            unary::<X, _>(ops.parents, ops.node, grads, |g| {
                let float = |t| Tensor::<X, 2>::from_primitive(TensorPrimitive::Float(t));
                let g = Tensor::<X, 1>::from_primitive(TensorPrimitive::Float(g));
                // d loss / d z = (softmax(z) − onehot(label)) · w / count · g.
                let coef = float(scale) * g.unsqueeze::<2>();
                let p = (float(z) - float(lse)).exp() * coef.clone();
                p.scatter(1, Tensor::from_primitive(safe), coef.neg(), IndexingUpdateOp::Add).into_primitive().tensor()
            });
        }
    }

    /// The fused cross-entropy as one autodiff operation on `Autodiff<X, C>`.
    pub fn autodiff<X: Backend, C: CheckpointStrategy>(logits: Tensor<Autodiff<X, C>, 2>, labels: Tensor<Autodiff<X, C>, 1, Int>) -> Tensor<Autodiff<X, C>, 1> {
        let ad = logits.into_primitive().tensor();
        let z = Tensor::<X, 2>::from_primitive(TensorPrimitive::Float(ad.primitive.clone()));
        let labels = Tensor::<X, 1, Int>::from_primitive(labels.into_primitive());
        let (loss, lse, safe, scale) = forward(z, labels);
        let loss = loss.into_primitive().tensor();
        let out = match CrossEntropy.prepare::<C>([ad.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                prep.finish((ad.primitive, lse.into_primitive().tensor(), safe.into_primitive(), scale.into_primitive().tensor()), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(loss),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{Int, Tensor, TensorData};

    use super::{composed_cross_entropy, cross_entropy, IGNORE_INDEX};

    /// `[n, v]` logits spread over ±12 (some rows far from 0, so the max shift matters) and
    /// labels with every third one ignored.
    fn inputs(n: usize, v: usize) -> (Vec<f32>, Vec<i64>) {
        let z = (0..n * v).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 24.0 + (i / v) as f32 * 3.0).collect();
        let labels = (0..n).map(|i| if i % 3 == 1 { IGNORE_INDEX } else { ((i * 31 + 5) % v) as i64 }).collect();
        (z, labels)
    }

    /// Loss and gradient with respect to `w` of `cross_entropy(x w, labels)` (so the chain rule
    /// through the fused operation is exercised too), by `f`.
    fn loss_and_grad<B: AutodiffBackend>(f: fn(Tensor<B, 2>, Tensor<B, 1, Int>) -> Tensor<B, 1>, z: &[f32], labels: &[i64], n: usize, v: usize) -> (f32, Vec<f32>) {
        let dev = Default::default();
        let x = Tensor::<B, 2>::from_data(TensorData::new(z.to_vec(), [n, v]), &dev);
        let w = Tensor::<B, 2>::from_data(TensorData::new((0..v * v).map(|i| if i % (v + 1) == 0 { 1.0 } else { 0.01 * ((i % 7) as f32 - 3.0) }).collect::<Vec<f32>>(), [v, v]), &dev).require_grad();
        let l = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &dev);
        let loss = f(x.matmul(w.clone()), l);
        let value: f32 = loss.clone().into_data().to_vec::<f32>().unwrap()[0];
        let grads = loss.backward();
        (value, w.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap())
    }

    fn assert_close(a: (f32, Vec<f32>), b: (f32, Vec<f32>)) {
        assert!((a.0 - b.0).abs() <= 1e-6 * b.0.abs().max(1.0), "loss {} vs {}", a.0, b.0);
        let scale = b.1.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a.1.iter().zip(&b.1).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(scale > 0.0 && worst <= 1e-5 * scale, "gradient differs by {worst} (largest entry {scale})");
    }

    #[test]
    fn fused_matches_the_composed_loss_and_gradient() {
        let (n, v) = (7, 40);
        let (z, labels) = inputs(n, v);
        type Ad = Autodiff<Flex>;
        let reference = loss_and_grad::<Ad>(composed_cross_entropy, &z, &labels, n, v);
        assert_close(loss_and_grad::<Ad>(cross_entropy, &z, &labels, n, v), reference.clone());
        type Bal = Autodiff<Flex, BalancedCheckpointing>;
        assert_close(loss_and_grad::<Bal>(cross_entropy, &z, &labels, n, v), reference);
    }

    #[test]
    fn fused_forward_without_autodiff_matches() {
        let (n, v) = (5, 33);
        let (z, labels) = inputs(n, v);
        let dev = Default::default();
        let run = |f: fn(Tensor<Flex, 2>, Tensor<Flex, 1, Int>) -> Tensor<Flex, 1>| -> f32 {
            let loss = f(Tensor::from_data(TensorData::new(z.clone(), [n, v]), &dev), Tensor::from_data(TensorData::new(labels.clone(), [n]), &dev));
            loss.into_data().to_vec::<f32>().unwrap()[0]
        };
        let (a, b) = (run(cross_entropy), run(composed_cross_entropy));
        assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
    }

    #[test]
    fn fused_loss_without_counted_labels_is_zero_with_zero_gradient() {
        let (n, v) = (3, 8);
        let (z, _) = inputs(n, v);
        let (loss, grad) = loss_and_grad::<Autodiff<Flex>>(cross_entropy, &z, &[IGNORE_INDEX; 3], n, v);
        assert_eq!(loss, 0.0);
        assert!(grad.iter().all(|g| *g == 0.0), "{grad:?}");
    }

    #[test]
    fn loss_is_the_mean_negative_log_probability_of_the_labels() {
        // Two rows over three classes, the second ignored: −log softmax([1, 2, 3])[2].
        let dev = Default::default();
        let z = Tensor::<Autodiff<Flex>, 2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 9.0, 0.0, 0.0], [2, 3]), &dev);
        let l = Tensor::<Autodiff<Flex>, 1, Int>::from_data(TensorData::new(vec![2i64, IGNORE_INDEX], [2]), &dev);
        let got: f32 = cross_entropy(z, l).into_data().to_vec::<f32>().unwrap()[0];
        let want = -(3f64 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln());
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
}
