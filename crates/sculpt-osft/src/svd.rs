//! Thin SVD of host matrices, two ways:
//!
//! * [`thin_svd`] — exact (faer's bidiagonalisation + divide-and-conquer), the CPU path and the
//!   test oracle;
//! * [`randomized_svd`] — the blocked randomized SVD (Gaussian sketch, power iterations, blocked
//!   Gram–Schmidt orthonormalisation, small dense SVD) that the GPU kernels implement. With the
//!   sketch width equal to `min(n, m)` it returns the **full** thin SVD, the split that form (C)
//!   needs (both the frozen top-k and the trainable complement).
//!
//! Matrices are row-major `[n, m]` f32; factors come back as `u: [n, r]`, `s: [r]` (descending),
//! `vt: [r, m]` with `r = min(n, m)` (or the sketch width).

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A thin SVD `A = U diag(s) Vt`.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Rows of `A`.
    pub n: usize,
    /// Columns of `A`.
    pub m: usize,
    /// `[n, r]` row-major, orthonormal columns.
    pub u: Vec<f32>,
    /// `[r]`, descending, ≥ 0.
    pub s: Vec<f32>,
    /// `[r, m]` row-major, orthonormal rows.
    pub vt: Vec<f32>,
}

impl Svd {
    /// The SVD of the transpose: `A = U S Vt` ⇒ `Aᵀ = V S Uᵀ`.
    pub fn transposed(self) -> Svd {
        let (n, m, r) = (self.n, self.m, self.s.len());
        // Aᵀ is [m, n]: its U is V ([m, r]), its Vt is Uᵀ ([r, n]).
        let u: Vec<f32> = (0..m).flat_map(|i| (0..r).map(move |j| (i, j))).map(|(i, j)| self.vt[j * m + i]).collect();
        let vt: Vec<f32> = (0..r).flat_map(|j| (0..n).map(move |i| (i, j))).map(|(i, j)| self.u[i * r + j]).collect();
        Svd { n: m, m: n, u, s: self.s, vt }
    }

    /// Number of singular triplets.
    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// The largest entry of `UᵀU − I` and of `Vt Vtᵀ − I`, the products in f64: how far the
    /// factors are from orthonormal (`cargo xtask bench svd`'s `max_orthogonality`).
    pub fn orthogonality_error(&self) -> f64 {
        let r = self.rank();
        // Both factors as `[len, r]` with orthonormal columns: U, and V (the transpose of Vt).
        let u = Mat::<f64>::from_fn(self.n, r, |i, j| self.u[i * r + j] as f64);
        let v = Mat::<f64>::from_fn(self.m, r, |i, j| self.vt[j * self.m + i] as f64);
        [u, v]
            .iter()
            .map(|q| {
                let g = q.transpose() * q;
                (0..r).flat_map(|i| (0..r).map(move |j| (i, j))).map(|(i, j)| (g[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs()).fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }

    /// `U diag(s) Vt` as a row-major `[n, m]` matrix.
    pub fn reconstruct(&self) -> Vec<f32> {
        let r = self.rank();
        let us = Mat::<f32>::from_fn(self.n, r, |i, j| self.u[i * r + j] * self.s[j]);
        let vt = Mat::<f32>::from_fn(r, self.m, |i, j| self.vt[i * self.m + j]);
        to_row_major((&us * &vt).as_ref())
    }
}

fn from_row_major(a: &[f32], n: usize, m: usize) -> Mat<f32> {
    assert_eq!(a.len(), n * m, "matrix of {n}×{m} needs {} values, got {}", n * m, a.len());
    Mat::from_fn(n, m, |i, j| a[i * m + j])
}

fn to_row_major(a: MatRef<'_, f32>) -> Vec<f32> {
    let (n, m) = (a.nrows(), a.ncols());
    let mut out = Vec::with_capacity(n * m);
    for i in 0..n {
        for j in 0..m {
            out.push(a[(i, j)]);
        }
    }
    out
}

/// Exact thin SVD of the row-major `[n, m]` matrix `a` (fp32), singular values descending.
pub fn thin_svd(a: &[f32], n: usize, m: usize) -> Result<Svd, String> {
    let mat = from_row_major(a, n, m);
    let svd = mat.thin_svd().map_err(|e| format!("{e:?}"))?;
    let r = n.min(m);
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let mut out = Svd { n, m, u: to_row_major(u), s: (0..r).map(|i| s[i]).collect(), vt: vec![0.0; r * m] };
    for i in 0..r {
        for j in 0..m {
            out.vt[i * m + j] = v[(j, i)];
        }
    }
    finish(out)
}

/// Exact thin SVD computed in f64 (the factors rounded to f32 at the end): slower than
/// [`thin_svd`] but accurate to f32 rounding.
pub fn thin_svd_f64(a: &[f32], n: usize, m: usize) -> Result<Svd, String> {
    assert_eq!(a.len(), n * m);
    let mat = Mat::<f64>::from_fn(n, m, |i, j| a[i * m + j] as f64);
    let svd = mat.thin_svd().map_err(|e| format!("{e:?}"))?;
    let r = n.min(m);
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let out = Svd {
        n,
        m,
        u: (0..n).flat_map(|i| (0..r).map(move |j| (i, j))).map(|(i, j)| u[(i, j)] as f32).collect(),
        s: (0..r).map(|i| s[i] as f32).collect(),
        vt: (0..r).flat_map(|i| (0..m).map(move |j| (i, j))).map(|(i, j)| v[(j, i)] as f32).collect(),
    };
    finish(out)
}

/// The long-side factor's columns with `σ_j ≥ σ_max / F32_LONG_FACTOR_BELOW` are computed in
/// f32 by [`gram_svd`]. The f32 product `Xᵀ w_j / σ_j` errs by about `ε_f32·σ_max/σ_j` relative,
/// so at most `32·ε_f32 ≈ 4e-6` (measured on SmolLM2's 210 targets by `cargo xtask bench svd`:
/// largest `UᵀU − I` / `VᵀV − I` entry 1.4e-6, against 2.6e-6 for `torch.linalg.svd` in fp32);
/// the smaller directions stay in f64. Only for products of at least
/// [`F32_LONG_FACTOR_MIN_WORK`] multiply-adds.
pub const F32_LONG_FACTOR_BELOW: f64 = 32.0;

/// Below this many multiply-adds (`l·r²`, 128³) the long factor is multiplied in f64 throughout:
/// the f32 product would save well under a millisecond there, and the f64 one keeps small
/// matrices' factors orthogonal to f64 rounding before the cast. Code paths that must agree
/// through the projection bases (frozen against complement bases, 100 AdamW steps, 1e-4; whole
/// graph against per-block checkpointing, 1e-5) do so on the tiny test models only with that.
pub const F32_LONG_FACTOR_MIN_WORK: usize = 1 << 21;

/// Thin SVD through the Gram matrix of the short side in f64. With `r = min(n, m)`, write `A`
/// (or `Aᵀ` when `n ≥ m`) as `X: [r, l]`; `G = X Xᵀ = W Σ² Wᵀ` by a symmetric eigendecomposition
/// gives the short-side factor `W`, and the long-side factor is `Xᵀ W Σ⁻¹`. Directions with
/// `σ ≤ 1e-7·σ_max` get an orthonormal completion. In f64 the squared condition number costs
/// nothing at f32 output precision for condition numbers up to ~1e4, and the symmetric
/// eigensolver is several times cheaper than a bidiagonal SVD. The long factor's well-conditioned
/// columns are multiplied in f32 ([`F32_LONG_FACTOR_BELOW`]), the rest in f64. Checked against
/// [`thin_svd_f64`] in the tests and in `cargo xtask bench svd`.
pub fn gram_svd(a: &[f32], n: usize, m: usize) -> Result<Svd, String> {
    assert_eq!(a.len(), n * m, "matrix of {n}×{m} needs {} values, got {}", n * m, a.len());
    let tall = n >= m;
    let (r, l) = (n.min(m), n.max(m));
    // `X [r, l]` in f64, filled column by column from contiguous runs of `a`: owned as `X` for a
    // tall matrix (its column j is row j of `A`), as `Xᵀ` for a wide one (column i of `Xᵀ` is row
    // i of `A`), and viewed as `X` either way.
    let x_owned = if tall { Mat::<f64>::from_fn(r, l, |i, j| a[j * m + i] as f64) } else { Mat::<f64>::from_fn(l, r, |j, i| a[i * m + j] as f64) };
    let x = if tall { x_owned.as_ref() } else { x_owned.transpose() };
    // `Xᵀ [l, r]` in f32, a view of `a` itself.
    let xt32 = if tall { MatRef::from_column_major_slice(a, m, n).transpose() } else { MatRef::from_column_major_slice(a, m, n) };
    // G = X Xᵀ, lower triangle only: the eigensolver reads no more, and it halves the product.
    let mut g = Mat::<f64>::zeros(r, r);
    triangular::matmul(
        g.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        x,
        BlockStructure::Rectangular,
        x.transpose(),
        BlockStructure::Rectangular,
        1.0,
        faer::get_global_parallelism(),
    );
    let evd = g.self_adjoint_eigen(faer::Side::Lower).map_err(|e| format!("{e:?}"))?;
    // Eigenvalues ascending → reverse for descending σ.
    let (ev, lam) = (evd.U(), evd.S().column_vector());
    let sigma: Vec<f64> = (0..r).rev().map(|i| lam[i].max(0.0).sqrt()).collect();
    let w = Mat::<f64>::from_fn(r, r, |i, j| ev[(i, r - 1 - j)]);
    let tol = 1e-7 * sigma[0].max(f64::MIN_POSITIVE);
    let good = sigma.iter().take_while(|&&s| s > tol).count();
    let single = f32_long_columns(&sigma, l, r).min(good);
    let inv: Vec<f64> = sigma.iter().map(|&s| 1.0 / s).collect();
    let inv32: Vec<f32> = inv.iter().map(|&v| v as f32).collect();
    // The long factor `L = Xᵀ W Σ⁻¹ [l, r]`, its first `single` columns in f32, written
    // row-major (`long[i·r + j] = L(i, j)`: U for a tall matrix) or column-major
    // (`long[j·l + i]`: Vt for a wide one). Each is computed in the orientation whose result
    // columns are the contiguous output rows.
    let (w32, w64) = (Mat::<f32>::from_fn(r, single, |i, j| w[(i, j)] as f32), w.subcols(single, r - single));
    let mut long = vec![0f32; l * r];
    if tall {
        // Lᵀ = Wᵀ X: column i is row i of L.
        let (p32, p64) = (w32.transpose() * xt32.transpose(), w64.transpose() * x);
        for (i, row) in long.chunks_exact_mut(r).enumerate() {
            let (head, tail) = row.split_at_mut(single);
            head.iter_mut().zip(p32.col(i).iter()).zip(&inv32).for_each(|((d, &v), &s)| *d = v * s);
            tail.iter_mut().zip(p64.col(i).iter()).zip(&inv[single..good]).for_each(|((d, &v), &s)| *d = (v * s) as f32);
        }
    } else {
        let (p32, p64) = (xt32 * &w32, x.transpose() * w64);
        for (j, col) in long.chunks_exact_mut(l).enumerate().take(good) {
            if j < single {
                let s = inv32[j];
                col.iter_mut().zip(p32.col(j).iter()).for_each(|(d, &v)| *d = v * s);
            } else {
                let s = inv[j];
                col.iter_mut().zip(p64.col(j - single).iter()).for_each(|(d, &v)| *d = (v * s) as f32);
            }
        }
    }
    let at = |i: usize, j: usize| if tall { i * r + j } else { j * l + i };
    if good < r {
        // Complete the basis for the (numerically) null directions: random columns after the
        // good ones, orthonormalised; the QR spans the same first `good` columns, so keep those
        // exactly and take the completion from it.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6A4D);
        let full = Mat::<f64>::from_fn(l, r, |i, j| if j < good { long[at(i, j)] as f64 } else { StandardNormal.sample(&mut rng) });
        let q = full.qr().compute_thin_Q();
        for j in good..r {
            for i in 0..l {
                long[at(i, j)] = q[(i, j)] as f32;
            }
        }
    }
    let s = sigma.iter().map(|&s| s as f32).collect();
    let out = if tall {
        // U = L, Vt = Wᵀ (row j = column j of W).
        let vt = (0..r).flat_map(|j| w.col(j).iter().map(|&v| v as f32).collect::<Vec<_>>()).collect();
        Svd { n, m, u: long, s, vt }
    } else {
        // U = W ([n, r] row-major), Vt = Lᵀ.
        let u = (0..n).flat_map(|i| (0..r).map(move |j| (i, j))).map(|(i, j)| w[(i, j)] as f32).collect();
        Svd { n, m, u, s, vt: long }
    };
    finish(out)
}

/// How many leading columns of the `[l, r]` long factor [`gram_svd`] multiplies in f32: those
/// with `σ_j ≥ σ_max / F32_LONG_FACTOR_BELOW` (`sigma` descending), none when the product has
/// fewer than [`F32_LONG_FACTOR_MIN_WORK`] multiply-adds.
fn f32_long_columns(sigma: &[f64], l: usize, r: usize) -> usize {
    if l * r * r < F32_LONG_FACTOR_MIN_WORK {
        return 0;
    }
    sigma.iter().take_while(|&&s| s * F32_LONG_FACTOR_BELOW >= sigma[0]).count()
}

/// Decompose a wide `[n, m]` matrix through its transpose: `Aᵀ = U S Vt` ⇒ `A = V S Uᵀ`.
fn via_transpose(a: &[f32], n: usize, m: usize, f: impl Fn(&[f32], usize, usize) -> Result<Svd, String>) -> Result<Svd, String> {
    let at: Vec<f32> = (0..m).flat_map(|j| (0..n).map(move |i| (i, j))).map(|(i, j)| a[i * m + j]).collect();
    Ok(f(&at, m, n)?.transposed())
}

/// A `[n, m]` test matrix with singular values `s` (for the device path's tests).
#[cfg(test)]
pub(crate) fn test_matrix_with_spectrum(n: usize, m: usize, s: &[f32], seed: u64) -> Vec<f32> {
    tests::with_spectrum(n, m, s, seed)
}

/// Sort the triplets descending and reject non-finite factors (shared with the device path).
pub(crate) fn finish(mut out: Svd) -> Result<Svd, String> {
    sort_descending(&mut out);
    if out.s.iter().chain(&out.u).chain(&out.vt).any(|x| !x.is_finite()) {
        return Err("non-finite values in the factors".into());
    }
    Ok(out)
}

/// Reorder triplets so that `s` is descending (faer already returns them so; this guards the invariant).
fn sort_descending(svd: &mut Svd) {
    let r = svd.rank();
    if svd.s.windows(2).all(|w| w[0] >= w[1]) {
        return;
    }
    let mut idx: Vec<usize> = (0..r).collect();
    idx.sort_by(|&a, &b| svd.s[b].total_cmp(&svd.s[a]));
    let (n, m) = (svd.n, svd.m);
    let u: Vec<f32> = (0..n).flat_map(|i| idx.iter().map(move |&j| (i, j))).map(|(i, j)| svd.u[i * r + j]).collect();
    let vt: Vec<f32> = idx.iter().flat_map(|&j| svd.vt[j * m..(j + 1) * m].to_vec()).collect();
    svd.s = idx.iter().map(|&j| svd.s[j]).collect();
    svd.u = u;
    svd.vt = vt;
}

/// Options of the randomized SVD.
#[derive(Debug, Clone, Copy)]
pub struct RsvdOptions {
    /// Sketch width `l` (`None` = `min(n, m)`, the full split).
    pub rank: Option<usize>,
    /// Power (subspace) iterations `q`; each multiplies by `A Aᵀ` once and re-orthonormalises.
    pub power_iters: usize,
    /// Column block of the blocked Gram–Schmidt.
    pub block: usize,
    /// Seed of the Gaussian sketch.
    pub seed: u64,
}

impl Default for RsvdOptions {
    fn default() -> Self {
        RsvdOptions { rank: None, power_iters: 1, block: 64, seed: 0x05F7 }
    }
}

/// Blocked classical Gram–Schmidt with re-orthogonalisation (BCGS2) on the columns of `y: [n, l]`:
/// each block of `block` columns is orthogonalised twice against the finished blocks
/// (`Y_b ← Y_b − Q (Qᵀ Y_b)`), then inside itself by a thin QR. Columns that vanish (rank
/// deficiency) are replaced by fresh directions orthogonal to everything so far, so `Q` always
/// has `l` orthonormal columns.
///
/// The host twin works in f64 (it is also the accuracy oracle for the f32 device version).
pub fn orthonormalize(y: &Mat<f64>, block: usize, seed: u64) -> Mat<f64> {
    let (n, l) = (y.nrows(), y.ncols());
    assert!(l <= n, "orthonormalize: {l} columns in {n} dimensions");
    let block = block.max(1);
    let mut q = Mat::<f64>::zeros(n, l);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9E37);
    let mut done = 0;
    while done < l {
        let w = block.min(l - done);
        let mut yb = y.subcols(done, w).to_owned();
        let scale0 = frob(yb.as_ref()).max(f64::MIN_POSITIVE);
        for attempt in 0.. {
            assert!(attempt < 8, "orthonormalize: could not complete the basis");
            if done > 0 {
                // CGS2: project out the finished blocks twice.
                let qd = q.subcols(0, done);
                for _ in 0..2 {
                    let c = qd.transpose() * &yb;
                    yb -= qd * &c;
                }
            }
            let qr = yb.qr();
            let bad: Vec<usize> = (0..w).filter(|&i| qr.thin_R()[(i, i)].abs() <= 1e-10 * scale0).collect();
            yb = qr.compute_thin_Q();
            if bad.is_empty() {
                break;
            }
            // A (numerically) dependent column: Householder still gives a unit vector, but an
            // arbitrary one that need not be orthogonal to the earlier blocks. Draw a fresh
            // direction and orthogonalise again.
            for &j in &bad {
                for i in 0..n {
                    yb[(i, j)] = StandardNormal.sample(&mut rng);
                }
            }
        }
        q.subcols_mut(done, w).copy_from(&yb);
        done += w;
    }
    q
}

fn frob(a: MatRef<'_, f64>) -> f64 {
    let mut acc = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            acc += a[(i, j)].powi(2);
        }
    }
    acc.sqrt()
}

/// Blocked randomized SVD of the row-major `[n, m]` matrix `a` (host twin, computed in f64).
///
/// Steps: sketch `Y = A Ω` with a Gaussian `Ω: [m, l]`; `q` power iterations `Y ← A (Aᵀ Q)` with
/// orthonormalisation between products; `Q = orth(Y)` (blocked, see [`orthonormalize`]);
/// `B = Qᵀ A` (`[l, m]`); a small dense SVD `B = Ũ Σ Vt`; `U = Q Ũ`.
/// For wide matrices the transpose is decomposed so the sketch lives in the short dimension.
pub fn randomized_svd(a: &[f32], n: usize, m: usize, opts: RsvdOptions) -> Result<Svd, String> {
    if n < m {
        return via_transpose(a, n, m, |at, n, m| randomized_svd(at, n, m, opts));
    }
    let r_full = m; // n ≥ m
    let l = opts.rank.unwrap_or(r_full).min(r_full);
    let amat = Mat::<f64>::from_fn(n, m, |i, j| a[i * m + j] as f64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let omega = Mat::<f64>::from_fn(m, l, |_, _| StandardNormal.sample(&mut rng));
    let mut q = orthonormalize(&(&amat * &omega), opts.block, opts.seed);
    for it in 0..opts.power_iters {
        let z = orthonormalize(&(amat.transpose() * &q), opts.block, opts.seed.wrapping_add(2 * it as u64 + 1));
        q = orthonormalize(&(&amat * &z), opts.block, opts.seed.wrapping_add(2 * it as u64 + 2));
    }
    let b = q.transpose() * &amat; // [l, m]
    let small = b.thin_svd().map_err(|e| format!("{e:?}"))?;
    let u = &q * small.U(); // [n, l]
    let s = small.S().column_vector();
    let v = small.V(); // [m, l]
    let out = Svd {
        n,
        m,
        u: (0..n).flat_map(|i| (0..l).map(move |j| (i, j))).map(|(i, j)| u[(i, j)] as f32).collect(),
        s: (0..l).map(|i| s[i] as f32).collect(),
        vt: (0..l).flat_map(|i| (0..m).map(move |j| (i, j))).map(|(i, j)| v[(j, i)] as f32).collect(),
    };
    finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[n, m]` matrix with singular values `s` and random orthonormal factors.
    pub(crate) fn with_spectrum(n: usize, m: usize, s: &[f32], seed: u64) -> Vec<f32> {
        with_spectrum_and_factors(n, m, s, seed).0
    }

    /// Like [`with_spectrum`], also returning the true `U: [n, r]` and `V: [m, r]`.
    fn with_spectrum_and_factors(n: usize, m: usize, s: &[f32], seed: u64) -> (Vec<f32>, Mat<f32>, Mat<f32>) {
        let r = n.min(m);
        assert_eq!(s.len(), r);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let gu = Mat::<f32>::from_fn(n, r, |_, _| StandardNormal.sample(&mut rng));
        let gv = Mat::<f32>::from_fn(m, r, |_, _| StandardNormal.sample(&mut rng));
        let u = gu.qr().compute_thin_Q();
        let v = gv.qr().compute_thin_Q();
        let us = Mat::<f32>::from_fn(n, r, |i, j| u[(i, j)] * s[j]);
        (to_row_major((&us * v.transpose()).as_ref()), u, v)
    }

    /// `sin θ` of the largest principal angle between span(A) and span(B) (orthonormal columns):
    /// the spectral norm of `(I − A Aᵀ) B`.
    fn sin_largest_angle(a: &Mat<f32>, b: &Mat<f32>) -> f32 {
        let resid = b - a * (a.transpose() * b);
        let sv = resid.thin_svd().unwrap();
        sv.S().column_vector()[0]
    }

    #[test]
    fn split_subspaces_are_within_the_spectral_gap_bound() {
        // Davis–Kahan: sin θ(Û_k, U_k) ≤ ‖E‖ / δ, with E the backward error of the SVD
        // (≈ c·ε_f32·σ_max) and δ = σ_k − σ_{k+1} the gap at the split.
        let (n, m, k) = (96, 64, 24);
        for delta in [1e-1f32, 1e-2, 1e-3] {
            let s: Vec<f32> = (0..m).map(|i| if i < k { 2.0 - 0.01 * i as f32 } else { 2.0 - 0.01 * k as f32 - delta - 0.001 * (i - k) as f32 }).collect();
            let (a, u_true, v_true) = with_spectrum_and_factors(n, m, &s, 19);
            let bound = 1e-5 * s[0] / delta;
            for (label, svd) in [
                ("gram", gram_svd(&a, n, m).unwrap()),
                ("exact_f64", thin_svd_f64(&a, n, m).unwrap()),
                ("randomized", randomized_svd(&a, n, m, RsvdOptions::default()).unwrap()),
            ] {
                let r = svd.rank();
                let uk = Mat::<f32>::from_fn(n, k, |i, j| svd.u[i * r + j]);
                let vk = Mat::<f32>::from_fn(m, k, |i, j| svd.vt[j * m + i]);
                let (ut, vt) = (u_true.subcols(0, k).to_owned(), v_true.subcols(0, k).to_owned());
                let (su, sv) = (sin_largest_angle(&ut, &uk), sin_largest_angle(&vt, &vk));
                assert!(su <= bound && sv <= bound, "{label}, gap {delta}: sin θ_U = {su:.2e}, sin θ_V = {sv:.2e}, bound {bound:.2e}");
            }
        }
    }

    fn check_svd(a: &[f32], n: usize, m: usize, svd: &Svd, s_ref: &[f32], tol_s: f32) {
        let r = n.min(m);
        assert_eq!((svd.n, svd.m, svd.rank()), (n, m, r), "shape");
        assert_eq!((svd.u.len(), svd.s.len(), svd.vt.len()), (n * r, r, r * m), "factor sizes");
        assert_eq!(s_ref.len(), r, "reference spectrum");
        assert!(svd.s.windows(2).all(|w| w[0] >= w[1]), "singular values not descending: {:?}", svd.s);
        let smax = s_ref[0].max(f32::MIN_POSITIVE);
        for (i, (&got, &want)) in svd.s.iter().zip(s_ref).enumerate() {
            assert!((got - want).abs() <= tol_s * smax, "σ_{i}: {got} vs {want}");
        }
        let rec = svd.reconstruct();
        let num: f64 = rec.iter().zip(a).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
        let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-30);
        assert!(num / den <= 1e-5, "reconstruction error {}", num / den);
        // Orthonormal columns of U and rows of Vt.
        let orth = svd.orthogonality_error();
        assert!(orth <= 1e-5, "UᵀU − I / Vt Vtᵀ − I = {orth:.1e}");
    }

    fn spectra(r: usize) -> Vec<(&'static str, Vec<f32>)> {
        vec![
            ("flat", vec![1.0; r]),
            ("decaying", (0..r).map(|i| (-(i as f32) / 8.0).exp()).collect()),
            ("clustered", (0..r).map(|i| if i < r / 2 { 2.0 + 1e-3 * (r / 2 - i) as f32 } else { 0.5 }).collect()),
            ("rank-deficient", (0..r).map(|i| if i < r / 3 { 1.0 + (r - i) as f32 / r as f32 } else { 0.0 }).collect()),
        ]
    }

    #[test]
    fn exact_svd_recovers_known_spectra() {
        for (n, m) in [(48, 48), (96, 32), (24, 72)] {
            for (name, s) in spectra(n.min(m)) {
                let a = with_spectrum(n, m, &s, 7);
                let svd = thin_svd(&a, n, m).unwrap();
                println!("exact {name} {n}×{m}");
                check_svd(&a, n, m, &svd, &s, 1e-5);
            }
        }
    }

    #[test]
    fn randomized_full_split_recovers_known_spectra() {
        for (n, m) in [(64, 64), (96, 40), (40, 96)] {
            for (name, s) in spectra(n.min(m)) {
                let a = with_spectrum(n, m, &s, 11);
                let svd = randomized_svd(&a, n, m, RsvdOptions { block: 16, ..Default::default() }).unwrap();
                assert_eq!(svd.rank(), n.min(m), "full split");
                println!("randomized {name} {n}×{m}");
                check_svd(&a, n, m, &svd, &s, 1e-4);
            }
        }
    }

    #[test]
    fn f64_and_gram_routes_recover_known_spectra() {
        for (n, m) in [(64, 64), (96, 40), (40, 96)] {
            for (name, s) in spectra(n.min(m)) {
                let a = with_spectrum(n, m, &s, 5);
                println!("f64 {name} {n}×{m}");
                check_svd(&a, n, m, &thin_svd_f64(&a, n, m).unwrap(), &s, 1e-5);
                println!("gram {name} {n}×{m}");
                check_svd(&a, n, m, &gram_svd(&a, n, m).unwrap(), &s, 1e-5);
            }
        }
    }

    #[test]
    fn gram_long_factor_mixes_precisions_at_f32_accuracy() {
        // σ from 1 down to 1e-4: the leading columns (σ ≥ 1/32) take the f32 product, the rest
        // f64. Against the f64 SVD every column must hold f32 accuracy, as
        // `torch.linalg.svd` in fp32 does (orthogonality up to 2.6e-6 on SmolLM2's targets).
        assert_eq!(f32_long_columns(&[1.0, 0.5, 1.0 / 32.0, 1.0 / 33.0, 0.0], 128, 128), 3);
        // Shapes above F32_LONG_FACTOR_MIN_WORK (both precisions), and one below it (f64 throughout).
        for (n, m, mixed) in [(160, 160, true), (256, 128, true), (128, 256, true), (96, 64, false)] {
            let r = n.min(m);
            let s: Vec<f32> = (0..r).map(|i| 10f32.powf(-4.0 * i as f32 / (r - 1) as f32)).collect();
            let single = f32_long_columns(&s.iter().map(|&x| x as f64).collect::<Vec<_>>(), n.max(m), r);
            if mixed {
                assert!(single > 0 && single < r, "{n}×{m}: both precisions are exercised ({single} of {r})");
            } else {
                assert_eq!(single, 0, "{n}×{m}: below the work threshold, f64 throughout");
            }
            let a = with_spectrum(n, m, &s, 23);
            let (g, e) = (gram_svd(&a, n, m).unwrap(), thin_svd_f64(&a, n, m).unwrap());
            for (i, (x, y)) in g.s.iter().zip(&e.s).enumerate() {
                assert!((x - y).abs() <= 1e-6 * y.max(1e-3), "σ_{i}: {x} vs {y}");
            }
            let orth = g.orthogonality_error();
            assert!(orth <= 2e-6, "{n}×{m}: UᵀU − I / VᵀV − I {orth:.1e}");
            let (u, vt) = (from_row_major(&g.u, n, r), from_row_major(&g.vt, r, m));
            // Each well-separated column equals the f64 one up to sign.
            let (eu, evt) = (from_row_major(&e.u, n, r), from_row_major(&e.vt, r, m));
            for j in 0..r {
                let dot: f32 = (0..n).map(|i| u[(i, j)] * eu[(i, j)]).sum();
                let dv: f32 = (0..m).map(|i| vt[(j, i)] * evt[(j, i)]).sum();
                assert!(1.0 - dot.abs() <= 1e-5 && 1.0 - dv.abs() <= 1e-5, "{n}×{m} column {j}: |cos| {dot}, {dv}");
            }
        }
    }

    #[test]
    fn randomized_agrees_with_exact_on_singular_values() {
        let (n, m) = (80, 56);
        let s: Vec<f32> = (0..56).map(|i| 3.0 / (1.0 + i as f32)).collect();
        let a = with_spectrum(n, m, &s, 3);
        let e = thin_svd(&a, n, m).unwrap();
        let r = randomized_svd(&a, n, m, RsvdOptions::default()).unwrap();
        for (x, y) in e.s.iter().zip(&r.s) {
            assert!((x - y).abs() <= 1e-4 * x.max(1e-3), "{x} vs {y}");
        }
    }

    #[test]
    fn orthonormalize_completes_a_rank_deficient_basis() {
        let n = 30;
        // 10 columns spanning only 3 dimensions.
        let base = Mat::<f64>::from_fn(n, 3, |i, j| ((i * 7 + j * 3) % 11) as f64 - 5.0);
        let mix = Mat::<f64>::from_fn(3, 10, |i, j| ((i + 2 * j) % 5) as f64 - 2.0);
        let y = &base * &mix;
        let q = orthonormalize(&y, 4, 1);
        let g = q.transpose() * &q;
        for i in 0..10 {
            for j in 0..10 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g[(i, j)] - want).abs() < 1e-5, "QᵀQ[{i},{j}] = {}", g[(i, j)]);
            }
        }
    }
}
