//! RoPE on the CPU backend in two layouts, forward and backward on `Autodiff<Flex>`, at the shape
//! of one SmolLM2 row shard (2 × 128 tokens, 9 query heads of 64): the heads-first form
//! (`[b, h, s, d] ⊙ [1, 1, s, d]` tables, on the transposed view of the projection), which
//! `sculpt_models::llama` used before, and the flat form it uses now (`[b, s·h·d] ⊙ [1, s·h·d]`,
//! before the transpose). Each output feeds what attention does next (`q·qᵀ`, summed, then the
//! backward); a third run does only that, on the projection without RoPE, and is subtracted to
//! give RoPE's own cost. Checks that both layouts give the same values and gradients, then prints
//! the median milliseconds of each over alternated repetitions.
//!
//! `cargo run -p sculpt-models --release --example rope -- [reps]`

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor, TensorData};

type B = Autodiff<Flex>;

fn main() {
    let reps: usize = std::env::args().nth(1).map_or(30, |r| r.parse().expect("reps: a count"));
    let dev = Default::default();
    let (b, s, h, d) = (2, 128, 9, 64);
    let x0 = Tensor::<B, 3>::random([b, s, h * d], Distribution::Normal(0.0, 1.0), &dev);
    let angle = |p: usize, j: usize| p as f32 * 10000f32.powf(-((j % (d / 2)) as f32 * 2.0) / d as f32);
    let table = |f: fn(f32) -> f32, heads: usize| -> Vec<f32> { (0..s).flat_map(|p| (0..heads * d).map(move |i| f(angle(p, i % d)))).collect() };
    let heads_first = (
        Tensor::<B, 4>::from_data(TensorData::new(table(f32::cos, 1), [1, 1, s, d]), &dev),
        Tensor::<B, 4>::from_data(TensorData::new(table(f32::sin, 1), [1, 1, s, d]), &dev),
    );
    let flat = (
        Tensor::<B, 2>::from_data(TensorData::new(table(f32::cos, h), [1, s * h * d]), &dev),
        Tensor::<B, 2>::from_data(TensorData::new(table(f32::sin, h), [1, s * h * d]), &dev),
    );
    // 0: heads-first, 1: flat, 2: no RoPE (the consumer alone).
    let run = |layout: usize| {
        let x = x0.clone().require_grad();
        let out = if layout == 2 {
            x.clone().reshape([b, s, h, d]).swap_dims(1, 2)
        } else if layout == 1 {
            let t = x.clone().reshape([b, s, h, d]);
            let rot = Tensor::cat(vec![t.clone().slice([0..b, 0..s, 0..h, d / 2..d]).neg(), t.clone().slice([0..b, 0..s, 0..h, 0..d / 2])], 3);
            let n = s * h * d;
            (t.reshape([b, n]) * flat.0.clone() + rot.reshape([b, n]) * flat.1.clone()).reshape([b, s, h, d]).swap_dims(1, 2)
        } else {
            let t = x.clone().reshape([b, s, h, d]).swap_dims(1, 2);
            let rot = Tensor::cat(vec![t.clone().slice([0..b, 0..h, 0..s, d / 2..d]).neg(), t.clone().slice([0..b, 0..h, 0..s, 0..d / 2])], 3);
            t * heads_first.0.clone() + rot * heads_first.1.clone()
        };
        let grads = out.clone().matmul(out.clone().swap_dims(2, 3)).sum().backward();
        (out.into_data().to_vec::<f32>().unwrap(), x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap())
    };
    let (a, b_) = (run(0), run(1));
    let diff = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let (dv, dg) = (diff(&a.0, &b_.0), diff(&a.1, &b_.1));
    assert!(dv <= 1e-6 && dg <= 1e-6, "the layouts disagree: values {dv:e}, gradients {dg:e}");
    let (mut t_heads, mut t_flat, mut t_none) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        for (layout, times) in [(0, &mut t_heads), (1, &mut t_flat), (2, &mut t_none)] {
            let t = Instant::now();
            std::hint::black_box(run(layout));
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mh, mf, mn) = (median(&mut t_heads), median(&mut t_flat), median(&mut t_none));
    println!(
        "{{\"bench\":\"rope\",\"shape\":[{b},{s},{h},{d}],\"reps\":{reps},\"heads_first_ms\":{mh:.2},\"flat_ms\":{mf:.2},\"consumer_only_ms\":{mn:.2},\"rope_heads_first_ms\":{:.2},\"rope_flat_ms\":{:.2},\"max_value_diff\":{dv:.1e},\"max_grad_diff\":{dg:.1e}}}",
        mh - mn,
        mf - mn
    );
}
