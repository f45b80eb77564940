//! Projection tests, written once as generic functions over `B: ProjectionOps` and run per
//! backend: Flex (the reference impl; plus a hand-computed case), and with feature `wgpu` the
//! fused `burn::backend::Wgpu` and the un-fused `WgpuRaw` (the cubecl kernels, compared with the
//! reference run on the same backend). With feature `cuda` the same checks exist for
//! `burn::backend::Cuda`, ignored by default (they need an NVIDIA driver).
//!
//! Tolerance: `TOL = 1e-5` absolute. Inputs are uniform in [-1, 1) and `U_h` has orthonormal
//! columns, so every term of the two fp32 sums (length `n` for `C = U_hᵀ X`, length `k` for
//! `U_h C`) is at most ~1 in size and the partial sums stay O(1). fp32 rounding then
//! accumulates like a random walk, ≈ √len · 2⁻²⁴ ≈ 1e-6 for the largest sums here
//! (len ≤ 300), and kernel and reference differ only by their summation order, so both
//! `max |Y_kernel − Y_ref|` and the orthogonality residual `max |U_hᵀ Y|` (a further sum of
//! length `n` over O(1) terms, plus the f32 rounding of `U_h`'s own orthonormality) sit around
//! 1e-6, with a 10× margin to `TOL`. Each check also prints the measured numbers.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use sculpt_kernels::{gram_schmidt, reference, ProjectionOps};

const TOL: f32 = 1e-5;

/// xorshift64* — deterministic test data without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    fn matrix(&mut self, rows: usize, cols: usize) -> Vec<f64> {
        (0..rows * cols).map(|_| self.next()).collect()
    }
}

/// `k` orthonormal columns of length `n` (row-major `[n, k]`), by modified Gram–Schmidt with
/// re-orthogonalisation in f64 on the host.
fn orthonormal_columns(n: usize, k: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let a = rng.matrix(n, k);
    let mut q = vec![0.0f64; n * k];
    for j in 0..k {
        let mut v: Vec<f64> = (0..n).map(|i| a[i * k + j]).collect();
        for _pass in 0..2 {
            for p in 0..j {
                let dot: f64 = (0..n).map(|i| q[i * k + p] * v[i]).sum();
                for i in 0..n {
                    v[i] -= dot * q[i * k + p];
                }
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for i in 0..n {
            q[i * k + j] = v[i] / norm;
        }
    }
    q
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; a.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// Host f64 `x − u (uᵀ x)` with `x: [n, r]`, `u: [n, k]` (the exact answer, up to f64).
fn host_project_u(x: &[f64], u: &[f64], n: usize, r: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0; k * r];
    for a in 0..k {
        for j in 0..r {
            c[a * r + j] = (0..n).map(|i| u[i * k + a] * x[i * r + j]).sum();
        }
    }
    let mut y = x.to_vec();
    for i in 0..n {
        for j in 0..r {
            y[i * r + j] -= (0..k).map(|a| u[i * k + a] * c[a * r + j]).sum::<f64>();
        }
    }
    y
}

fn tensor<B: ProjectionOps>(data: &[f64], rows: usize, cols: usize, device: &B::Device) -> Tensor<B, 2> {
    let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}

fn values<B: ProjectionOps, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// The reference run on Flex from the same host data: a second, independent implementation
/// (different matmul, different summation order) for the cross-backend comparison.
fn flex_reference(
    x: &[f64],
    basis: &[f64],
    x_dims: [usize; 2],
    basis_dims: [usize; 2],
    f: fn(Tensor<Flex, 2>, Tensor<Flex, 2>) -> Tensor<Flex, 2>,
) -> Tensor<Flex, 2> {
    let device = Default::default();
    let x = tensor::<Flex>(x, x_dims[0], x_dims[1], &device);
    let basis = tensor::<Flex>(basis, basis_dims[0], basis_dims[1], &device);
    f(x, basis)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn max_abs_diff_f64(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}

fn max_abs<B: ProjectionOps>(t: Tensor<B, 2>) -> f32 {
    values(t).iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// U side on random data: kernel (`B::project_u`) vs the reference on the same backend vs host
/// f64, and orthogonality `max |U_hᵀ Y|`. `x` is passed as a transposed (non-contiguous) view when
/// `transposed_input` is set.
fn check_project_u<B: ProjectionOps>(device: &B::Device, n: usize, r: usize, k: usize, transposed_input: bool) {
    let x_host = Rng::new(1000 + (n * r * k) as u64).matrix(n, r);
    let u_host = orthonormal_columns(n, k, 7 + n as u64);
    let x = if transposed_input {
        tensor::<B>(&transpose(&x_host, n, r), r, n, device).transpose()
    } else {
        tensor::<B>(&x_host, n, r, device)
    };
    let u = tensor::<B>(&u_host, n, k, device);

    let y = B::project_u(x.clone(), u.clone());
    assert_eq!(y.dims(), [n, r]);
    let y_ref = reference::project_u(x, u.clone());
    let ortho = max_abs(u.transpose().matmul(y.clone()));
    let y = values(y);
    let diff = max_abs_diff(&y, &values(y_ref));
    let exact = max_abs_diff_f64(&y, &host_project_u(&x_host, &u_host, n, r, k));
    let flex = max_abs_diff(
        &y,
        &values(flex_reference(&x_host, &u_host, [n, r], [n, k], reference::project_u)),
    );
    eprintln!(
        "[{}] project_u n={n} r={r} k={k} transposed={transposed_input}: max|kernel-ref|={diff:.2e} \
         max|kernel-ref_flex|={flex:.2e} max|kernel-f64|={exact:.2e} max|U_h^T Y|={ortho:.2e}",
        B::name(device)
    );
    assert!(flex <= TOL, "kernel vs reference on Flex: {flex}");
    assert!(diff <= TOL, "kernel vs reference: {diff}");
    assert!(ortho <= TOL, "orthogonality: {ortho}");
}

/// V side on random data: `x: [r, m]`, `Vt_h: [k, m]` with orthonormal rows; orthogonality is
/// `max |Y Vt_hᵀ|`.
fn check_project_vt<B: ProjectionOps>(device: &B::Device, r: usize, m: usize, k: usize) {
    let x_host = Rng::new(2000 + (r * m * k) as u64).matrix(r, m);
    let vt_host = transpose(&orthonormal_columns(m, k, 11 + m as u64), m, k); // [k, m]
    let x = tensor::<B>(&x_host, r, m, device);
    let vt = tensor::<B>(&vt_host, k, m, device);

    let y = B::project_vt(x.clone(), vt.clone());
    assert_eq!(y.dims(), [r, m]);
    let y_ref = reference::project_vt(x, vt.clone());
    let ortho = max_abs(y.clone().matmul(vt.transpose()));
    let y = values(y);
    let diff = max_abs_diff(&y, &values(y_ref));
    // Exact: (Y)ᵀ = Xᵀ − Vt_hᵀ (Vt_h Xᵀ), i.e. the U side on transposes.
    let exact_t = host_project_u(&transpose(&x_host, r, m), &transpose(&vt_host, k, m), m, r, k);
    let exact = max_abs_diff_f64(&y, &transpose(&exact_t, m, r));
    let flex = max_abs_diff(
        &y,
        &values(flex_reference(&x_host, &vt_host, [r, m], [k, m], reference::project_vt)),
    );
    eprintln!(
        "[{}] project_vt r={r} m={m} k={k}: max|kernel-ref|={diff:.2e} max|kernel-ref_flex|={flex:.2e} \
         max|kernel-f64|={exact:.2e} max|Y Vt_h^T|={ortho:.2e}",
        B::name(device)
    );
    assert!(flex <= TOL, "kernel vs reference on Flex: {flex}");
    assert!(diff <= TOL, "kernel vs reference: {diff}");
    assert!(ortho <= TOL, "orthogonality: {ortho}");
}

/// The projection inside a chain of other (fusable) ops: `0.5 · P(2x) + 1` must equal `P(x) + 1`.
fn check_chained<B: ProjectionOps>(device: &B::Device) {
    let (n, r, k) = (45, 19, 9);
    let x = tensor::<B>(&Rng::new(5).matrix(n, r), n, r, device);
    let u = tensor::<B>(&orthonormal_columns(n, k, 6), n, k, device);
    let chained = B::project_u(x.clone() * 2.0, u.clone()) * 0.5 + 1.0;
    let direct = reference::project_u(x, u) + 1.0;
    let diff = max_abs_diff(&values(chained), &values(direct));
    eprintln!("[{}] chained: max diff {diff:.2e}", B::name(device));
    assert!(diff <= TOL, "chained: {diff}");
}

/// Column normalisation vs reference, with a zero column (which must come out as zeros, norm 0).
fn check_normalize<B: ProjectionOps>(device: &B::Device, n: usize, c: usize) {
    let mut y_host = Rng::new(3000 + (n * c) as u64).matrix(n, c);
    for i in 0..n {
        y_host[i * c + c / 2] = 0.0;
    }
    let y = tensor::<B>(&y_host, n, c, device);
    let (q, norms) = B::normalize_columns(y.clone());
    let (q_ref, norms_ref) = reference::normalize_columns(y);
    assert_eq!(q.dims(), [n, c]);
    assert_eq!(norms.dims(), [c]);
    let norms = values(norms);
    let q_norms = values(q.clone().square().sum_dim(0).sqrt());
    let dq = max_abs_diff(&values(q), &values(q_ref));
    // Norms are O(√n); compare them relatively.
    let dn = norms
        .iter()
        .zip(values(norms_ref))
        .map(|(a, b)| (a - b).abs() / b.max(1.0))
        .fold(0.0, f32::max);
    eprintln!(
        "[{}] normalize_columns n={n} c={c}: max|q-q_ref|={dq:.2e} max rel |norm diff|={dn:.2e}",
        B::name(device)
    );
    assert!(dq <= TOL && dn <= TOL, "normalize: {dq} {dn}");
    assert_eq!(norms[c / 2], 0.0);
    assert_eq!(q_norms[c / 2], 0.0);
    for (j, qn) in q_norms.iter().enumerate() {
        if j != c / 2 {
            assert!((qn - 1.0).abs() <= TOL, "column {j} has norm {qn}");
        }
    }
}

/// `gram_schmidt` gives orthonormal columns spanning the input: `QᵀQ = I`, and the input
/// projected off span(Q) vanishes.
fn check_gram_schmidt<B: ProjectionOps>(device: &B::Device, n: usize, c: usize) {
    let y = tensor::<B>(&Rng::new(4000 + (n * c) as u64).matrix(n, c), n, c, device);
    let q = gram_schmidt(y.clone());
    let gram = values(q.clone().transpose().matmul(q.clone()));
    let eye: Vec<f32> = (0..c * c).map(|i| if i / c == i % c { 1.0 } else { 0.0 }).collect();
    let d_eye = max_abs_diff(&gram, &eye);
    let residual = max_abs(B::project_u(y, q));
    eprintln!(
        "[{}] gram_schmidt n={n} c={c}: max|QᵀQ-I|={d_eye:.2e} max|Y-QQᵀY|={residual:.2e}",
        B::name(device)
    );
    // Residual entries are sums over O(√n)-sized values: allow 10× TOL.
    assert!(
        d_eye <= TOL && residual <= 10.0 * TOL,
        "gram_schmidt: {d_eye} {residual}"
    );
}

/// All randomized checks, at odd sizes: the kernels work in 64 × 64 output blocks with an
/// inner-dimension step of 8, and almost no size here is a multiple of either.
/// Prints the wall time of each check (the first ones on a GPU backend include shader
/// compilation and the autotuning of the reference's matmuls).
fn check_all<B: ProjectionOps>(device: &B::Device) {
    let timed = |what: &str, f: &dyn Fn()| {
        let start = std::time::Instant::now();
        f();
        eprintln!("[{}]   {what}: {:.2} s", B::name(device), start.elapsed().as_secs_f64());
    };
    timed("project_u 37x13 k=5", &|| {
        check_project_u::<B>(device, 37, 13, 5, false)
    });
    // n = 128 is two full blocks, r = 96 one and a half; k = 40 is five full K steps.
    timed("project_u 128x96 k=40", &|| {
        check_project_u::<B>(device, 128, 96, 40, false)
    });
    // Several blocks in both output dims, partial edge blocks and a partial last K step.
    timed("project_u 200x70 k=130", &|| {
        check_project_u::<B>(device, 200, 70, 130, false)
    });
    timed("project_u 300x7 k=101 (transposed x)", &|| {
        check_project_u::<B>(device, 300, 7, 101, true)
    });
    timed("project_u 1x1 k=1", &|| check_project_u::<B>(device, 1, 1, 1, false));
    timed("project_vt 13x37 k=5", &|| check_project_vt::<B>(device, 13, 37, 5));
    timed("project_vt 96x128 k=40", &|| check_project_vt::<B>(device, 96, 128, 40));
    timed("project_vt 9x257 k=33", &|| check_project_vt::<B>(device, 9, 257, 33));
    timed("project_vt 70x200 k=130", &|| {
        check_project_vt::<B>(device, 70, 200, 130)
    });
    timed("chained", &|| check_chained::<B>(device));
    timed("normalize 37x5", &|| check_normalize::<B>(device, 37, 5));
    timed("normalize 1000x17", &|| check_normalize::<B>(device, 1000, 17));
    timed("gram_schmidt 129x12", &|| check_gram_schmidt::<B>(device, 129, 12));
}

/// Hand-computed small case (`U_h = (e₁ + e₂)/√2`, `Vt_h = (e₁ + e₂)ᵀ/√2`).
fn check_hand_computed<B: ProjectionOps>(device: &B::Device) {
    let s = std::f64::consts::FRAC_1_SQRT_2;
    // X = [[1,2],[3,4],[5,6]]; Uᵀ X = [4, 6]/√2; U Uᵀ X = [[2,3],[2,3],[0,0]].
    let x = tensor::<B>(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2, device);
    let u = tensor::<B>(&[s, s, 0.0], 3, 1, device);
    let y = values(B::project_u(x, u));
    assert!(max_abs_diff(&y, &[-1.0, -1.0, 1.0, 1.0, 5.0, 6.0]) <= 1e-6, "{y:?}");
    // X = [[1,3,5],[2,4,6]]; X Vtᵀ = [4, 6]ᵀ/√2; (X Vtᵀ) Vt = [[2,2,0],[3,3,0]].
    let x = tensor::<B>(&[1.0, 3.0, 5.0, 2.0, 4.0, 6.0], 2, 3, device);
    let vt = tensor::<B>(&[s, s, 0.0], 1, 3, device);
    let y = values(B::project_vt(x, vt));
    assert!(max_abs_diff(&y, &[-1.0, 1.0, 5.0, -1.0, 1.0, 6.0]) <= 1e-6, "{y:?}");
    // Columns [3, 4] and [0, 0]: q = [[0.6, 0], [0.8, 0]], norms [5, 0].
    let (q, norms) = B::normalize_columns(tensor::<B>(&[3.0, 0.0, 4.0, 0.0], 2, 2, device));
    assert!(max_abs_diff(&values(q), &[0.6, 0.0, 0.8, 0.0]) <= 1e-6);
    assert!(max_abs_diff(&values(norms), &[5.0, 0.0]) <= 1e-6);
}

mod flex {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn hand_computed() {
        check_hand_computed::<B>(&Default::default());
    }

    #[test]
    fn random_matrices() {
        check_all::<B>(&Default::default());
    }

    #[test]
    fn autodiff_uses_reference_and_is_differentiable() {
        type A = burn::backend::Autodiff<B>;
        let device = Default::default();
        check_hand_computed::<A>(&device);
        // d/dX sum(P X) = P 1 = 1 − U Uᵀ 1.
        let (n, r, k) = (6, 2, 2);
        let x = tensor::<A>(&Rng::new(1).matrix(n, r), n, r, &device).require_grad();
        let u = tensor::<A>(&orthonormal_columns(n, k, 2), n, k, &device);
        let grads = A::project_u(x.clone(), u.clone()).sum().backward();
        let g = values(x.grad(&grads).unwrap());
        let ones = Tensor::<B, 2>::ones([n, r], &device);
        let expected = values(reference::project_u(ones, u.inner()));
        assert!(max_abs_diff(&g, &expected) <= 1e-6);
    }
}

/// The trainer's entry points (`project_*_auto`) pick the kernels on a kernel backend — the same
/// bits as calling the kernel — and the reference on any other.
fn check_auto_dispatch<B: ProjectionOps>(device: &B::Device, expect_kernels: bool) {
    assert_eq!(sculpt_kernels::has_kernels::<B>(), expect_kernels, "{}", B::name(device));
    let (n, r, k) = (96, 24, 40);
    let x = tensor::<B>(&Rng::new(5).matrix(n, r), n, r, device);
    let u = tensor::<B>(&orthonormal_columns(n, k, 6), n, k, device);
    let auto = values(sculpt_kernels::project_u_auto(x.clone(), u.clone()));
    let kernel = values(B::project_u(x.clone(), u.clone()));
    let reference = values(reference::project_u(x.clone(), u.clone()));
    if expect_kernels {
        assert_eq!(auto, kernel, "project_u_auto did not run the kernel");
    } else {
        assert_eq!(auto, reference, "project_u_auto did not run the reference");
    }
    assert!(max_abs_diff(&auto, &reference) <= TOL);
    let xt = x.transpose();
    let vt = u.transpose();
    let auto = values(sculpt_kernels::project_vt_auto(xt.clone(), vt.clone()));
    let kernel = values(B::project_vt(xt.clone(), vt.clone()));
    if expect_kernels {
        assert_eq!(auto, kernel, "project_vt_auto did not run the kernel");
    }
    assert!(max_abs_diff(&auto, &values(reference::project_vt(xt, vt))) <= TOL);
}

#[test]
fn auto_dispatch_uses_the_reference_on_the_cpu() {
    check_auto_dispatch::<burn::backend::Flex>(&Default::default(), false);
}

#[cfg(feature = "wgpu")]
mod wgpu_fused {
    use super::*;
    type B = burn::backend::Wgpu;

    #[test]
    fn auto_dispatch_uses_the_kernels() {
        check_auto_dispatch::<B>(&Default::default(), true);
    }

    #[test]
    fn hand_computed() {
        check_hand_computed::<B>(&Default::default());
    }

    #[test]
    fn random_matrices() {
        check_all::<B>(&Default::default());
    }
}

#[cfg(feature = "wgpu")]
mod wgpu_raw {
    use super::*;
    type B = sculpt_kernels::WgpuRaw;

    #[test]
    fn auto_dispatch_uses_the_kernels() {
        check_auto_dispatch::<B>(&Default::default(), true);
    }

    #[test]
    fn hand_computed() {
        check_hand_computed::<B>(&Default::default());
    }

    #[test]
    fn random_matrices() {
        check_all::<B>(&Default::default());
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    type B = burn::backend::Cuda;

    #[test]
    #[ignore = "needs an NVIDIA GPU and driver"]
    fn hand_computed() {
        check_hand_computed::<B>(&Default::default());
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU and driver"]
    fn random_matrices() {
        check_all::<B>(&Default::default());
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU and driver"]
    fn random_matrices_unfused() {
        check_all::<sculpt_kernels::CudaRaw>(&Default::default());
    }
}
