//! The training loss over a large vocabulary on the CPU backend: the fused cross-entropy
//! (`sculpt_models::loss::cross_entropy` on `Autodiff<Flex>`) against the same loss composed from
//! tensor ops (`composed_cross_entropy`), forward and backward, alternated `--reps` times on
//! fresh logits. One JSON line per implementation with the median milliseconds.
//!
//! `cargo bench -p sculpt --bench loss -- --rows 254 --vocab 49152 --reps 5` (SmolLM2's vocabulary,
//! one row shard of a 4 × 128-token batch)

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use sculpt::bench_arg as arg;
use sculpt_models::loss::{composed_cross_entropy, cross_entropy, IGNORE_INDEX};

type Ad = Autodiff<Flex>;

fn main() {
    let (rows, vocab, reps): (usize, usize, usize) =
        (arg("--rows", "254").parse().unwrap(), arg("--vocab", "49152").parse().unwrap(), arg("--reps", "5").parse().unwrap());
    let device = Default::default();
    // Every 17th label ignored, as padding would be.
    let labels: Vec<i64> = (0..rows).map(|i| if i % 17 == 3 { IGNORE_INDEX } else { ((i * 7919) % vocab) as i64 }).collect();
    let mut times: [Vec<f64>; 2] = [vec![], vec![]];
    for rep in 0..reps * 2 {
        let which = rep % 2;
        let logits = Tensor::<Ad, 2>::random([rows, vocab], Distribution::Normal(0.0, 3.0), &device).require_grad();
        let l = Tensor::<Ad, 1, Int>::from_data(TensorData::new(labels.clone(), [rows]), &device);
        let t0 = Instant::now();
        let loss = if which == 0 { cross_entropy(logits.clone(), l) } else { composed_cross_entropy(logits.clone(), l) };
        let grads = loss.backward();
        // Reading the gradient back ends the timed region.
        let g: f32 = logits.grad(&grads).expect("logits gradient").abs().sum().into_scalar();
        times[which].push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(g.is_finite());
    }
    for (which, label) in ["fused", "composed"].iter().enumerate() {
        let mut t = times[which].clone();
        t.sort_by(f64::total_cmp);
        println!("{{\"impl\":\"sculpt-loss-{label}\",\"rows\":{rows},\"vocab\":{vocab},\"reps\":{reps},\"median_ms\":{:.1},\"min_ms\":{:.1}}}", t[t.len() / 2], t[0]);
    }
}
