//! Decomposition of every OSFT target of a model (SmolLM2-135M: 210 matrices) on the CPU,
//! printed as JSON lines: wall time of the exact and the randomized full split, and their
//! accuracy (reconstruction error, singular values of the randomized split against the exact).
//! `cargo xtask bench svd` pairs it with `benches/torch_svd.py` (`torch.linalg.svd`, the path PEFT
//! uses) in the same run and prints the ratio.
//!
//! `cargo bench -p sculpt --profile dev --bench decompose -- --model <gguf or HF folder>`

use std::time::Instant;

use burn::backend::Flex;
use sculpt_models::layers::{to_host, NamedParams};
use sculpt_models::Pretrained;
use sculpt_osft::targets::{default_targets, TargetSet};
use sculpt_osft::{decompose_all, SvdMethod};

fn arg(name: &str) -> Option<String> {
    Some(sculpt::bench_arg(name, "")).filter(|v| !v.is_empty())
}

fn main() {
    let Some(path) = arg("--model") else {
        eprintln!("decompose bench: pass --model <gguf or HF folder> (cargo xtask bench svd does this)");
        return;
    };
    let mut m = Pretrained::<Flex>::load(std::path::Path::new(&path), &Default::default()).expect("load model");
    let targets = TargetSet::new(&default_targets(m.model.family())).unwrap();
    let mut mats: Vec<(String, usize, usize, Vec<f32>)> = vec![];
    m.model.visit_linears_mut(&mut |name, lin| {
        if targets.matches(name) {
            let w = to_host(lin.weight.val());
            mats.push((name.to_string(), w.shape[0], w.shape[1], w.data));
        }
    });
    let refs: Vec<(usize, usize, &[f32])> = mats.iter().map(|(_, n, m, w)| (*n, *m, w.as_slice())).collect();
    let threads = rayon::current_num_threads();
    let rel_recon = |svds: &[Result<sculpt_osft::svd::Svd, String>]| -> f64 {
        svds.iter()
            .zip(&refs)
            .map(|(s, (_, _, w))| {
                let rec = s.as_ref().unwrap().reconstruct();
                let num: f64 = rec.iter().zip(w.iter()).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
                let den: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
                num / den
            })
            .fold(0.0, f64::max)
    };
    // Largest entry of `UᵀU − I` and `Vt Vtᵀ − I` over all matrices, the products in f64.
    let orthogonality = |svds: &[Result<sculpt_osft::svd::Svd, String>]| -> f64 { svds.iter().map(|s| s.as_ref().unwrap().orthogonality_error()).fold(0.0, f64::max) };
    let t0 = Instant::now();
    let exact = decompose_all(&refs, SvdMethod::ExactF64);
    let t_exact = t0.elapsed().as_secs_f64();
    println!(
        "{{\"impl\":\"sculpt-exact-f64\",\"targets\":{},\"secs\":{t_exact:.3},\"threads\":{threads},\"max_rel_reconstruction\":{:.2e}}}",
        refs.len(),
        rel_recon(&exact)
    );
    // The other methods, each compared with the f64 reference.
    let sigma_err = |svds: &[Result<sculpt_osft::svd::Svd, String>]| -> f64 {
        svds.iter()
            .zip(&exact)
            .map(|(r, e)| {
                let (r, e) = (r.as_ref().unwrap(), e.as_ref().unwrap());
                r.s.iter().zip(&e.s).map(|(a, b)| ((a - b) as f64).abs() / (*b as f64).max(1e-30)).fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    };
    // `--methods gram,exact,randomized,attach` (default all) picks the rows.
    let only = arg("--methods").unwrap_or_else(|| "gram,exact,randomized,attach".into());
    for (label, method) in [
        ("sculpt-gram-f64", SvdMethod::Gram),
        ("sculpt-exact-f32", SvdMethod::Exact),
        ("sculpt-randomized", SvdMethod::Randomized { power_iters: 1, block: 64 }),
    ] {
        if !only.split(',').any(|m| label.contains(&format!("-{m}"))) {
            continue;
        }
        let t0 = Instant::now();
        let svds = decompose_all(&refs, method);
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{{\"impl\":\"{label}\",\"targets\":{},\"secs\":{secs:.3},\"threads\":{threads},\"max_rel_reconstruction\":{:.2e},\"max_rel_sigma_err\":{:.2e},\"max_orthogonality\":{:.2e}}}",
            refs.len(),
            rel_recon(&svds),
            sigma_err(&svds),
            orthogonality(&svds)
        );
    }
    // What a run waits for at a task boundary: `Osft::attach` on the whole model (PEFT's default
    // split, half of each target preserved, `gram`): the decompositions, `W_high` and the bases.
    // `cargo xtask bench svd` pairs it with PEFT's `get_peft_model(…, OSFConfig(…))`.
    if only.split(',').any(|m| m == "attach") {
        drop(refs);
        drop(mats);
        let pre = Pretrained::<burn::backend::Autodiff<Flex>>::load(std::path::Path::new(&path), &Default::default()).expect("load model");
        let family = pre.model.family();
        let sculpt_models::Model::Llama(model) = pre.model else { panic!("the attach row expects a LLaMA") };
        let t0 = Instant::now();
        let (_model, osft) = sculpt_osft::Osft::attach(model, &sculpt_osft::OsftConfig::default(), family, None).expect("attach");
        let secs = t0.elapsed().as_secs_f64();
        println!("{{\"impl\":\"sculpt-attach\",\"targets\":{},\"secs\":{secs:.3},\"threads\":{threads}}}", osft.resolved().len());
    }
}
