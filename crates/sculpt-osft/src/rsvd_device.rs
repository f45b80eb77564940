//! The blocked randomized SVD with its heavy steps on the device: the matrix products of the
//! sketch, the power iterations and `B = Qᵀ A`, and the block Gram–Schmidt projections
//! `Y_b ← Y_b − Q (Qᵀ Y_b)` — the latter as the cubecl projection kernel on the wgpu and cuda
//! backends (`sculpt_kernels::project_u_auto`), as tensor ops elsewhere. Only small pieces go to
//! the host: the thin QR inside each block of `block` columns (`n × block`, with the
//! rank-deficiency repair of [`crate::svd::orthonormalize`]) and the small dense SVD of
//! `B` (`l × m`). The sketch is drawn on the host from the seed, so every backend decomposes with
//! the same random matrix, and the result matches the f64 host twin [`crate::svd::randomized_svd`]
//! up to f32 rounding.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use faer::Mat;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::svd::{RsvdOptions, Svd};

fn upload<B: Backend>(data: Vec<f32>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn download<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 data")
}

/// Orthonormal columns spanning `y: [n, l]` (`l ≤ n`), blocked classical Gram–Schmidt with
/// re-orthogonalisation: each block is projected twice against the finished ones on the device,
/// then orthonormalised inside itself by a host thin QR (f64). Columns that vanish are replaced
/// by fresh Gaussian directions and the block is projected again, so the result always has `l`
/// orthonormal columns.
pub fn orthonormalize_device<B: Backend>(y: Tensor<B, 2>, block: usize, seed: u64) -> Tensor<B, 2> {
    let [n, l] = y.dims();
    assert!(l <= n, "orthonormalize_device: {l} columns in {n} dimensions");
    let device = y.device();
    let block = block.max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9E37);
    let mut q: Option<Tensor<B, 2>> = None;
    let mut done = 0;
    while done < l {
        let w = block.min(l - done);
        let mut yb = y.clone().slice([0..n, done..done + w]);
        let scale0 = download(yb.clone().square().sum().reshape([1, 1]))[0].sqrt().max(f32::MIN_POSITIVE) as f64;
        let qb = 'attempts: {
            for _ in 0..8 {
                if let Some(q) = &q {
                    // CGS2: project out the finished blocks twice (the cubecl kernel on GPUs).
                    yb = sculpt_kernels::project_u_auto(yb, q.clone());
                    yb = sculpt_kernels::project_u_auto(yb, q.clone());
                }
                let host = download(yb.clone());
                let m = Mat::<f64>::from_fn(n, w, |i, j| host[i * w + j] as f64);
                let qr = m.qr();
                let bad: Vec<usize> = (0..w).filter(|&i| qr.thin_R()[(i, i)].abs() <= 1e-6 * scale0).collect();
                let qm = qr.compute_thin_Q();
                if bad.is_empty() {
                    break 'attempts qm;
                }
                // A (numerically) dependent column: draw a fresh direction for it and project again.
                let mut fresh = host;
                for &j in &bad {
                    for i in 0..n {
                        fresh[i * w + j] = StandardNormal.sample(&mut rng);
                    }
                }
                yb = upload::<B>(fresh, [n, w], &device);
            }
            panic!("orthonormalize_device: could not complete the basis");
        };
        let data: Vec<f32> = (0..n).flat_map(|i| (0..w).map(move |j| (i, j))).map(|(i, j)| qb[(i, j)] as f32).collect();
        let mut qb = upload::<B>(data, [n, w], &device);
        if let Some(q) = &q {
            // The host QR mixes the projected columns only, but f32 rounding of the upload can
            // reintroduce a trace of the earlier blocks: one more projection removes it.
            qb = sculpt_kernels::project_u_auto(qb, q.clone());
        }
        q = Some(match q {
            None => qb,
            Some(q) => Tensor::cat(vec![q, qb], 1),
        });
        done += w;
    }
    q.unwrap_or(y)
}

/// Blocked randomized SVD of the device matrix `a: [n, m]` (see the module docs). With
/// `opts.rank = None` the sketch is `min(n, m)` wide and the result is the full thin SVD, the
/// split form (C) needs. Wide matrices are decomposed through their transpose.
pub fn randomized_svd_device<B: Backend>(a: Tensor<B, 2>, opts: RsvdOptions) -> Result<Svd, String> {
    let [n, m] = a.dims();
    if n < m {
        return Ok(randomized_svd_device(a.transpose(), opts)?.transposed());
    }
    let device = a.device();
    let l = opts.rank.unwrap_or(m).min(m);
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    // The same Gaussian sketch as the host twin (drawn in f64, rounded once).
    let omega: Vec<f32> = (0..m * l).map(|_| StandardNormal.sample(&mut rng)).map(|x: f64| x as f32).collect();
    let omega = upload::<B>(omega, [m, l], &device);
    let mut q = orthonormalize_device(a.clone().matmul(omega), opts.block, opts.seed);
    for it in 0..opts.power_iters {
        let z = orthonormalize_device(a.clone().transpose().matmul(q), opts.block, opts.seed.wrapping_add(2 * it as u64 + 1));
        q = orthonormalize_device(a.clone().matmul(z), opts.block, opts.seed.wrapping_add(2 * it as u64 + 2));
    }
    let b = download(q.clone().transpose().matmul(a)); // [l, m]
    let bm = Mat::<f64>::from_fn(l, m, |i, j| b[i * m + j] as f64);
    let small = bm.thin_svd().map_err(|e| format!("{e:?}"))?;
    let k = small.S().column_vector().nrows();
    let ut: Vec<f32> = (0..l).flat_map(|i| (0..k).map(move |j| (i, j))).map(|(i, j)| small.U()[(i, j)] as f32).collect();
    let u = download(q.matmul(upload::<B>(ut, [l, k], &device))); // [n, k]
    let s: Vec<f32> = (0..k).map(|i| small.S().column_vector()[i] as f32).collect();
    let v = small.V(); // [m, k]
    let vt: Vec<f32> = (0..k).flat_map(|i| (0..m).map(move |j| (i, j))).map(|(i, j)| v[(j, i)] as f32).collect();
    crate::svd::finish(Svd { n, m, u, s, vt })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::randomized_svd;
    use burn::backend::Flex;

    fn spectrum_matrix(n: usize, m: usize, s: &[f32], seed: u64) -> Vec<f32> {
        crate::svd::test_matrix_with_spectrum(n, m, s, seed)
    }

    /// On the CPU backend the device path equals the f64 host twin to f32 accuracy on known
    /// spectra (full split), tall and wide, including a rank-deficient one.
    #[test]
    fn device_path_matches_the_host_twin() {
        let device = Default::default();
        for (n, m) in [(48, 32), (24, 40)] {
            let r = n.min(m);
            let spectra: Vec<Vec<f32>> = vec![
                (0..r).map(|i| 0.9f32.powi(i as i32)).collect(),
                (0..r).map(|i| if i < r / 2 { 1.0 + i as f32 * 0.01 } else { 0.0 }).collect(),
            ];
            for s in &spectra {
                let a = spectrum_matrix(n, m, s, 3);
                let opts = RsvdOptions { block: 8, ..Default::default() };
                let host = randomized_svd(&a, n, m, opts).unwrap();
                let dev = randomized_svd_device(upload::<Flex>(a.clone(), [n, m], &device), opts).unwrap();
                let smax = host.s[0];
                for (x, y) in dev.s.iter().zip(&host.s) {
                    assert!((x - y).abs() <= 1e-4 * smax, "σ {x} vs {y} ({n}×{m})");
                }
                let rec = dev.reconstruct();
                let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let err = rec.iter().zip(&a).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt() / norm;
                assert!(err <= 1e-5, "reconstruction {err} ({n}×{m})");
                // Orthonormal columns of U (the null directions of a rank-deficient matrix too).
                let k = dev.s.len();
                for i in 0..k {
                    for j in 0..k {
                        let d: f32 = (0..n).map(|t| dev.u[t * k + i] * dev.u[t * k + j]).sum();
                        let want = if i == j { 1.0 } else { 0.0 };
                        assert!((d - want).abs() <= 1e-5, "UᵀU[{i}][{j}] = {d} ({n}×{m})");
                    }
                }
            }
        }
    }
}
