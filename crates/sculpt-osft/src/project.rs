//! The two projections of form (C), in factored form only (never an `n×n` or `m×m` projector):
//!
//! * U side: `X ← X − U_h (U_hᵀ X)` for `X: [n, r]`, `U_h: [n, k]` — `2·n·k·r` multiply-adds;
//! * V side (row storage): `X ← X − (X Vt_hᵀ) Vt_h` for `X: [r, m]`, `Vt_h: [k, m]`.
//!
//! Applied to the low-factor gradients before the optimizer step and to the low factors
//! themselves after it, so that Adam's element-wise rescaling cannot leak into the frozen subspace.
//! The maths lives once, in `sculpt-kernels` (its tensor-op reference twin, which the cubecl
//! kernels are tested against).

pub use sculpt_kernels::reference::{project_u, project_vt};
