//! Times the kernel projections against the reference (burn matmuls) on burn's wgpu backend.
//!
//! `cargo run -p sculpt-kernels --features wgpu,cuda --example bench_projection [-- n k r [iters]]`
//! (default `2048 1024 256 5`). Inputs differ on every iteration (results of identical calls
//! can be cached), and each timing ends with a read-back so queued work is included.

use std::time::Instant;

use burn::backend::Wgpu;
use burn::tensor::{Distribution, Tensor};
use sculpt_kernels::{reference, ProjectionOps};

type B = Wgpu;

fn time<F: FnMut(usize) -> Tensor<B, 2>>(iters: usize, mut f: F) -> f64 {
    // Warm-up (shader compilation, autotune) on iteration 0, not timed.
    let _ = f(0).into_data();
    let start = Instant::now();
    for i in 1..=iters {
        let _ = f(i).into_data();
    }
    start.elapsed().as_secs_f64() / iters as f64
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integer argument"))
        .collect();
    let (n, k, r) = (
        *args.first().unwrap_or(&2048),
        *args.get(1).unwrap_or(&1024),
        *args.get(2).unwrap_or(&256),
    );
    let iters = *args.get(3).unwrap_or(&5);
    let device = Default::default();
    let u = Tensor::<B, 2>::random([n, k], Distribution::Normal(0.0, 1.0 / (n as f64).sqrt()), &device);
    let xs: Vec<Tensor<B, 2>> = (0..=iters)
        .map(|_| Tensor::random([n, r], Distribution::Uniform(-1.0, 1.0), &device))
        .collect();
    let xts: Vec<Tensor<B, 2>> = (0..=iters)
        .map(|_| Tensor::random([r, n], Distribution::Uniform(-1.0, 1.0), &device))
        .collect();
    let vt = u.clone().transpose();
    let flop = 4.0 * (n * k * r) as f64; // 2·n·k·r multiply-adds

    let kernel_u = time(iters, |i| B::project_u(xs[i].clone(), u.clone()));
    let ref_u = time(iters, |i| reference::project_u(xs[i].clone(), u.clone()));
    let kernel_vt = time(iters, |i| B::project_vt(xts[i].clone(), vt.clone()));
    let ref_vt = time(iters, |i| reference::project_vt(xts[i].clone(), vt.clone()));
    println!("n={n} k={k} r={r}, {iters} timed iterations, per call:");
    for (name, t) in [
        ("project_u  kernel", kernel_u),
        ("project_u  reference", ref_u),
        ("project_vt kernel", kernel_vt),
        ("project_vt reference", ref_vt),
    ] {
        println!("  {name:<22} {:>9.2} ms  {:>7.2} GFLOP/s", t * 1e3, flop / t / 1e9);
    }
}
