//! cubecl GPU kernels for the two OSFT projections, with a plain-tensor reference twin.
//!
//! * U side: `Y = X − U_h (U_hᵀ X)` for `X: [n, r]`, `U_h: [n, k]`;
//! * V side (row storage): `Y = X − (X Vt_hᵀ) Vt_h` for `X: [r, m]`, `Vt_h: [k, m]`;
//! * column normalisation `q_j = y_j / ‖y_j‖` (a randomized-SVD helper).
//!
//! The one public entry is the [`ProjectionOps`] extension trait of burn's `Backend`:
//!
//! | backend | implementation |
//! |---|---|
//! | `burn::backend::Flex` (always compiled) | [`mod@reference`] (burn tensor ops) |
//! | `burn::backend::Autodiff<B>` for any `B: ProjectionOps` | [`mod@reference`], differentiable (call the trait on `.inner()` tensors to get `B`'s kernels) |
//! | `burn_cubecl::CubeBackend<R, F, I, BT>`, any cubecl runtime `R` (feature `wgpu` / `cuda`) | the cubecl kernels of `kernel.rs`, launched by `launch.rs` |
//! | `burn_fusion::Fusion<B>` for any `B: FusionBackend + ProjectionOps` (feature `wgpu` / `cuda`) | a fusion *custom operation* that runs `B`'s kernels |
//!
//! With burn 0.21's default features `burn::backend::Wgpu` is
//! `Fusion<CubeBackend<WgpuRuntime, f32, i32, u32>>` and `burn::backend::Cuda` is
//! `Fusion<CubeBackend<CudaRuntime, f32, i32, u8>>`, so both get the kernels through the last
//! two rows; the un-fused types are available as [`WgpuRaw`] / [`CudaRaw`].
//!
//! **Randomized SVD.** Block Gram–Schmidt needs exactly `Y_b ← Y_b − Q (Qᵀ Y_b)`, which is
//! [`ProjectionOps::project_u`] with `U_h = Q`, so the same kernel serves the range finder's
//! orthonormalisation; [`ProjectionOps::normalize_columns`] then gives `q_j = y_j / ‖y_j‖`, and
//! [`gram_schmidt`] combines the two (column by column, re-orthogonalised once). No GPU SVD
//! is attempted: the small SVD stays on the host.
//!
//! **Use from the trainer.** The OSFT projections run on gradients and low factors outside the
//! autodiff graph, i.e. on `B::InnerBackend` tensors; bound that backend and call the trait:
//!
//! ```text
//! fn step<B: AutodiffBackend>(..) where B::InnerBackend: ProjectionOps {
//!     let g = <B::InnerBackend as ProjectionOps>::project_u(g, u_high.clone());
//! }
//! ```
//!
//! Features: `wgpu` and `cuda` (both off by default; with neither, only the reference is built).
//! `cube` is internal (the shared kernel code). Build and test the kernels with the same feature
//! set as the rest of the workspace's GPU build (`--features wgpu,cuda`), or cargo rebuilds
//! the whole cubecl stack for the different burn feature set.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub mod reference;

#[cfg(feature = "cube")]
pub mod kernel;
#[cfg(feature = "cube")]
pub mod launch;

#[cfg(feature = "cube")]
mod fused;

#[cfg(feature = "cuda")]
pub mod cuda_env;

/// burn's wgpu backend without the fusion decorator: `CubeBackend<WgpuRuntime, f32, i32, u32>`.
#[cfg(feature = "wgpu")]
pub type WgpuRaw = burn_cubecl::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;

/// burn's CUDA backend without the fusion decorator: `CubeBackend<CudaRuntime, f32, i32, u8>`.
#[cfg(feature = "cuda")]
pub type CudaRaw = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// The OSFT projections (and the column normalisation of the randomized SVD) as a backend
/// extension. The default methods are the [`mod@reference`] maths; the cubecl backends override
/// them with kernels. All shapes are checked (the methods panic on mismatched shapes).
pub trait ProjectionOps: Backend {
    /// U side: `x − U_h (U_hᵀ x)` for `x: [n, r]`, `u_high: [n, k]` (`U_h` is expected to have
    /// orthonormal columns; the formula is applied as is either way).
    ///
    /// Also the block Gram–Schmidt step `Y_b ← Y_b − Q (Qᵀ Y_b)` (with `u_high = Q`).
    fn project_u(x: Tensor<Self, 2>, u_high: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::project_u(x, u_high)
    }

    /// V side (row storage): `x − (x Vt_hᵀ) Vt_h` for `x: [r, m]`, `vt_high: [k, m]`.
    fn project_vt(x: Tensor<Self, 2>, vt_high: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::project_vt(x, vt_high)
    }

    /// `(q, norms)` with `q[:, j] = y[:, j] / ‖y[:, j]‖₂` for `y: [n, c]` and `norms[j] = ‖y[:, j]‖₂`;
    /// a zero column gives a zero `q` column and a zero norm.
    fn normalize_columns(y: Tensor<Self, 2>) -> (Tensor<Self, 2>, Tensor<Self, 1>) {
        reference::normalize_columns(y)
    }
}

impl ProjectionOps for burn::backend::Flex {}

impl<B: ProjectionOps, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> ProjectionOps
    for burn::backend::Autodiff<B, C>
{
}

/// Whether `B` is one of the backends the cubecl kernels are compiled for in this build
/// (`burn::backend::Wgpu` / `Cuda`, fused, or their un-fused [`WgpuRaw`] / [`CudaRaw`]).
pub fn has_kernels<B: Backend>() -> bool {
    let id = std::any::TypeId::of::<B>();
    #[cfg(feature = "wgpu")]
    if id == std::any::TypeId::of::<burn::backend::Wgpu>() || id == std::any::TypeId::of::<WgpuRaw>() {
        return true;
    }
    #[cfg(feature = "cuda")]
    if id == std::any::TypeId::of::<burn::backend::Cuda>() || id == std::any::TypeId::of::<CudaRaw>() {
        return true;
    }
    let _ = id;
    false
}

/// Runs `K`'s projection kernel when `B` is `K` (a run-time type check; no conversion happens),
/// else hands the inputs back.
#[allow(dead_code)]
fn on<B: Backend, K: ProjectionOps>(x: Tensor<B, 2>, basis: Tensor<B, 2>, u_side: bool) -> Result<Tensor<B, 2>, (Tensor<B, 2>, Tensor<B, 2>)> {
    use std::any::Any;
    let bx: Box<dyn Any> = Box::new(x);
    match bx.downcast::<Tensor<K, 2>>() {
        Ok(kx) => {
            let kb = *(Box::new(basis) as Box<dyn Any>).downcast::<Tensor<K, 2>>().expect("both tensors are on B = K");
            let y = if u_side { K::project_u(*kx, kb) } else { K::project_vt(*kx, kb) };
            let out: Box<dyn Any> = Box::new(y);
            Ok(*out.downcast::<Tensor<B, 2>>().expect("K = B"))
        }
        Err(bx) => Err((*bx.downcast::<Tensor<B, 2>>().expect("x is a Tensor<B, 2>"), basis)),
    }
}

/// Dispatches one projection to the kernels of the backend `B` turns out to be at run time
/// (every type [`has_kernels`] names), or to the reference on any other backend.
fn dispatch<B: Backend>(x: Tensor<B, 2>, basis: Tensor<B, 2>, u_side: bool) -> Tensor<B, 2> {
    #[allow(unused_mut)]
    let mut args = (x, basis);
    #[allow(unused_macros)]
    macro_rules! try_kernel {
        ($k:ty) => {
            match on::<B, $k>(args.0, args.1, u_side) {
                Ok(y) => return y,
                Err(a) => args = a,
            }
        };
    }
    #[cfg(feature = "wgpu")]
    {
        try_kernel!(burn::backend::Wgpu);
        try_kernel!(WgpuRaw);
    }
    #[cfg(feature = "cuda")]
    {
        try_kernel!(burn::backend::Cuda);
        try_kernel!(CudaRaw);
    }
    if u_side {
        reference::project_u(args.0, args.1)
    } else {
        reference::project_vt(args.0, args.1)
    }
}

/// `x − U_h (U_hᵀ x)` on any backend: the cubecl kernel where `B` has one ([`has_kernels`]),
/// the reference elsewhere. This is what the trainer calls, so it needs no extra trait bound.
pub fn project_u_auto<B: Backend>(x: Tensor<B, 2>, u_high: Tensor<B, 2>) -> Tensor<B, 2> {
    dispatch(x, u_high, true)
}

/// `x − (x Vt_hᵀ) Vt_h` on any backend: kernel where `B` has one, reference elsewhere.
pub fn project_vt_auto<B: Backend>(x: Tensor<B, 2>, vt_high: Tensor<B, 2>) -> Tensor<B, 2> {
    dispatch(x, vt_high, false)
}

/// Orthonormalises the columns of `y: [n, c]` (`c ≤ n`) by classical Gram–Schmidt with one
/// re-orthogonalisation ("CGS2"), built only from [`ProjectionOps`]: for each column,
/// `v ← v − Q (Qᵀ v)` twice, then `q = v / ‖v‖`. Returns `q: [n, c]`; a column that is (numerically)
/// in the span of the previous ones comes out as zero rather than as noise.
///
/// This is the column-at-a-time form of block Gram–Schmidt (`4c` projection launches plus `c`
/// normalisations on a kernel backend), meant for the modest `c` of a randomized SVD sketch.
pub fn gram_schmidt<B: ProjectionOps>(y: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, c] = y.dims();
    let mut q: Option<Tensor<B, 2>> = None;
    for j in 0..c {
        let mut v = y.clone().slice([0..n, j..j + 1]);
        let mut norm_in = None;
        if let Some(q) = &q {
            norm_in = Some(B::normalize_columns(v.clone()).1);
            v = B::project_u(v, q.clone());
            v = B::project_u(v, q.clone());
        }
        let (mut qj, norm) = B::normalize_columns(v);
        if let Some(norm_in) = norm_in {
            // Drop a column that lost all but rounding noise to the projections.
            let keep = norm.greater(norm_in.mul_scalar(1e-5)).float().unsqueeze_dim::<2>(0);
            qj = qj * keep;
        }
        q = Some(match q {
            None => qj,
            Some(q) => Tensor::cat(vec![q, qj], 1),
        });
    }
    q.unwrap_or(y)
}

/// Converts a float tensor into its backend primitive (helper for the kernel impls).
#[cfg(feature = "cube")]
fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

/// Wraps a float primitive back into a tensor (helper for the kernel impls).
#[cfg(feature = "cube")]
fn from_primitive<B: Backend, const D: usize>(t: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(t))
}

#[cfg(feature = "cube")]
impl<R, F, I, BT> ProjectionOps for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    fn project_u(x: Tensor<Self, 2>, u_high: Tensor<Self, 2>) -> Tensor<Self, 2> {
        from_primitive(launch::project_u(primitive(x), primitive(u_high)))
    }

    fn project_vt(x: Tensor<Self, 2>, vt_high: Tensor<Self, 2>) -> Tensor<Self, 2> {
        from_primitive(launch::project_vt(primitive(x), primitive(vt_high)))
    }

    fn normalize_columns(y: Tensor<Self, 2>) -> (Tensor<Self, 2>, Tensor<Self, 1>) {
        let (q, norms) = launch::normalize_columns(primitive(y));
        (from_primitive(q), from_primitive(norms))
    }
}
