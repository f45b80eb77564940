//! Forward-pass throughput of a model on the CPU backend, printed as one JSON line.
//! Run through `cargo xtask bench forward`, which pairs it with `benches/torch_forward.py` on the
//! same machine in the same run and prints the ratio.
//!
//! `cargo bench -p sculpt --bench forward -- --gguf <file.gguf | HF folder> --batch 1 --seq 128 --iters 5`

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor};
use sculpt_models::{Model, Pretrained};

use sculpt::bench_arg as arg;

fn main() {
    let path = arg("--gguf", "");
    if path.is_empty() {
        eprintln!("forward bench: pass --gguf <model> (cargo xtask bench forward does this)");
        return;
    }
    let (batch, seq, iters): (usize, usize, usize) =
        (arg("--batch", "1").parse().unwrap(), arg("--seq", "128").parse().unwrap(), arg("--iters", "5").parse().unwrap());
    let device = Default::default();
    let m = Pretrained::<Flex>::load(std::path::Path::new(&path), &device).expect("load model");
    let Model::Llama(model) = &m.model else { panic!("forward bench expects a LLaMA model") };
    let vocab = model.config().vocab_size as u64;
    let mut all = sculpt::random_ids(iters + 1, batch, seq, vocab, 0x9E37_79B9_7F4A_7C15).into_iter();
    let mut ids = || -> Tensor<Flex, 2, Int> { sculpt_models::layers::int_tensor(&all.next().expect("enough batches"), &device) };
    // Reading a scalar back synchronises the device inside the timed region.
    let run = |x: Tensor<Flex, 2, Int>| model.forward(x, None, None).sum().into_scalar();
    let _ = run(ids());
    let inputs: Vec<_> = (0..iters).map(|_| ids()).collect();
    let t0 = Instant::now();
    for x in inputs {
        let _ = run(x);
    }
    let s = t0.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{{\"impl\":\"sculpt\",\"backend\":\"cpu-flex\",\"tokens_per_s\":{:.1},\"s_per_iter\":{:.4},\"batch\":{batch},\"seq\":{seq},\"iters\":{iters}}}",
        (batch * seq) as f64 / s,
        s
    );
}
