//! Time `Osft::attach` (what a run waits for at every task boundary) against `decompose_all`
//! alone on the same targets, on the CPU backend.
//!
//! `cargo run -p sculpt-osft --release --example attach -- <gguf or HF folder> [repeats]`

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use sculpt_models::layers::{to_host, NamedParams};
use sculpt_models::{Model, Pretrained};
use sculpt_osft::targets::{default_targets, TargetSet};
use sculpt_osft::{decompose_all, Osft, OsftConfig, SvdMethod};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: attach <gguf or HF folder> [repeats]");
    let repeats: usize = args.next().map_or(2, |s| s.parse().expect("repeats"));
    let device = Default::default();
    for _ in 0..repeats {
        let pre = Pretrained::<Autodiff<Flex>>::load(std::path::Path::new(&path), &device).expect("load");
        let Model::Llama(mut m) = pre.model else { panic!("expected a LLaMA") };
        let targets = TargetSet::new(&default_targets("llama")).unwrap();
        let mut mats: Vec<(usize, usize, Vec<f32>)> = vec![];
        m.visit_linears_mut(&mut |name, lin| {
            if targets.matches(name) {
                let w = to_host(lin.weight.val());
                mats.push((w.shape[0], w.shape[1], w.data));
            }
        });
        let refs: Vec<(usize, usize, &[f32])> = mats.iter().map(|(n, m, w)| (*n, *m, w.as_slice())).collect();
        let t = Instant::now();
        let _ = decompose_all(&refs, SvdMethod::Gram);
        let svd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (_m, osft) = Osft::attach(m, &OsftConfig::default(), "llama", None).expect("attach");
        let attach = t.elapsed().as_secs_f64();
        println!("{{\"targets\":{},\"decompose_all_s\":{svd:.3},\"attach_s\":{attach:.3}}}", osft.resolved().len());
    }
}
