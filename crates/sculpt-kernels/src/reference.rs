//! Reference twin of the kernels: the same maths in plain burn tensor ops, generic over any
//! `B: Backend` (and differentiable on `Autodiff<B>`). This is what the CPU backend (Flex)
//! runs, and what the kernel tests compare against.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// U side: `x − U_h (U_hᵀ x)` for `x: [n, r]`, `u_high: [n, k]` (two matmuls, `2·n·k·r`
/// multiply-adds; never forms the `n × n` projector).
///
/// # Panics
/// If the row counts of `x` and `u_high` differ.
pub fn project_u<B: Backend>(x: Tensor<B, 2>, u_high: Tensor<B, 2>) -> Tensor<B, 2> {
    assert_eq!(
        x.dims()[0],
        u_high.dims()[0],
        "project_u: x is {:?}, U_h is {:?}",
        x.dims(),
        u_high.dims()
    );
    let coef = u_high.clone().transpose().matmul(x.clone()); // [k, r]
    x - u_high.matmul(coef)
}

/// V side (row storage): `x − (x Vt_hᵀ) Vt_h` for `x: [r, m]`, `vt_high: [k, m]`.
///
/// # Panics
/// If the column counts of `x` and `vt_high` differ.
pub fn project_vt<B: Backend>(x: Tensor<B, 2>, vt_high: Tensor<B, 2>) -> Tensor<B, 2> {
    assert_eq!(
        x.dims()[1],
        vt_high.dims()[1],
        "project_vt: x is {:?}, Vt_h is {:?}",
        x.dims(),
        vt_high.dims()
    );
    let coef = x.clone().matmul(vt_high.clone().transpose()); // [r, k]
    x - coef.matmul(vt_high)
}

/// Column normalisation: `(q, norms)` with `q[:, j] = y[:, j] / ‖y[:, j]‖₂` and
/// `norms[j] = ‖y[:, j]‖₂`; a zero column stays zero (its norm is 0).
pub fn normalize_columns<B: Backend>(y: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let norms = y.clone().square().sum_dim(0).sqrt(); // [1, c]
                                                      // 1/‖y_j‖ where the norm is positive, 0 where it is zero (0·(1/0) would be NaN).
    let positive = norms.clone().greater_elem(0.0);
    let scale = norms.clone().recip().mask_fill(positive.bool_not(), 0.0);
    let q = y * scale;
    (q, norms.squeeze_dim(0))
}
