//! The two projections of form (C), in factored form only (never an `n×n` or `m×m` projector):
//!
//! * U side: `X ← X − U_h (U_hᵀ X)` for `X: [n, r]`, `U_h: [n, k]` — `2·n·k·r` multiply-adds;
//! * V side (row storage): `X ← X − (X Vt_hᵀ) Vt_h` for `X: [r, m]`, `Vt_h: [k, m]`.
//!
//! Applied to the low-factor gradients before the optimizer step and to the low factors
//! themselves after it, so that Adam's element-wise rescaling cannot leak into the frozen subspace.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `x − U_h (U_hᵀ x)`: remove from the columns of `x: [n, r]` their component in span(U_h).
pub fn project_u<B: Backend>(x: Tensor<B, 2>, u_high: &Tensor<B, 2>) -> Tensor<B, 2> {
    assert_eq!(x.dims()[0], u_high.dims()[0], "project_u: x is {:?}, U_h is {:?}", x.dims(), u_high.dims());
    let coef = u_high.clone().transpose().matmul(x.clone()); // [k, r]
    x - u_high.clone().matmul(coef)
}

/// `x − (x Vt_hᵀ) Vt_h`: remove from the rows of `x: [r, m]` their component in the row span of `Vt_h`.
pub fn project_vt<B: Backend>(x: Tensor<B, 2>, vt_high: &Tensor<B, 2>) -> Tensor<B, 2> {
    assert_eq!(x.dims()[1], vt_high.dims()[1], "project_vt: x is {:?}, Vt_h is {:?}", x.dims(), vt_high.dims());
    let coef = x.clone().matmul(vt_high.clone().transpose()); // [r, k]
    x - coef.matmul(vt_high.clone())
}
