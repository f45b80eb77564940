//! Host side of the kernels: takes `CubeTensor<R>` primitives (the float tensors of
//! `burn_cubecl::CubeBackend<R, F, I, BT>` for any cubecl runtime `R`), makes them contiguous,
//! allocates the outputs and launches the kernels of [`crate::kernel`].
//!
//! No `unsafe` is needed: the kernels are declared `#[cube(launch)]`, whose generated `launch`
//! is the bounds-checked (safe) entry point in cubecl 0.10. The kernels guard every global
//! access themselves, so the checks never trigger; on lavapipe `launch_unchecked` measured no
//! faster (within noise). Switching to it would need an `unsafe` block (and
//! `#[allow(unsafe_code)]` here, the workspace denies `unsafe_code`).
//!
//! Launch geometry: the 2-D products use cubes of [`TILE`] × [`TILE`] units, one cube per
//! [`BLOCK`] × [`BLOCK`] output block (`CubeCount = (⌈N/BLOCK⌉, ⌈M/BLOCK⌉, 1)` for an `[M, N]`
//! output); column normalisation uses one cube of [`NORM_BLOCK`] units per column.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
use burn_cubecl::ops::permute;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::{CubeCount, CubeDim};

use crate::kernel;

/// Side of the square cubes of the product kernels (`TILE × TILE` units) and the step of their
/// inner-dimension loop.
pub const TILE: usize = 8;

/// Outputs per unit and per dimension in the product kernels (a `MICRO × MICRO` micro-tile), so
/// one cube computes a [`BLOCK`] × [`BLOCK`] output block.
pub const MICRO: usize = 8;

/// Side of the output block of one cube of the product kernels, `TILE · MICRO`.
pub const BLOCK: usize = TILE * MICRO;

/// Units per cube of the column-normalisation kernel (a power of two).
pub const NORM_BLOCK: usize = 256;

fn dims2<R: CubeRuntime>(t: &CubeTensor<R>, what: &str) -> [usize; 2] {
    let shape = t.meta.shape();
    assert_eq!(
        shape.num_dims(),
        2,
        "{what}: expected a 2-D tensor, got shape {shape:?}"
    );
    [shape[0], shape[1]]
}

fn transposed<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    permute(t, &[1, 0])
}

fn check_float_dtype(what: &str, a: DType, b: DType) {
    assert_eq!(a, b, "{what}: the two tensors have different dtypes ({a:?} vs {b:?})");
    assert!(a.is_float(), "{what}: expected a float tensor, got {a:?}");
}

fn tile_count(rows: usize, cols: usize) -> CubeCount {
    let t = BLOCK as u32;
    CubeCount::Static((cols as u32).div_ceil(t), (rows as u32).div_ceil(t), 1)
}

/// `out = x − u (uᵀ x)` on 2-D views `x, out: [n, r]`, `u: [n, k]` (any strides, `k, n, r > 0`):
/// the coefficient kernel writes `c = uᵀ x` (a `[k, r]` scratch tensor), then the update
/// kernel writes `out`. Both launches are queued on `x`'s client and run in order.
fn project_columns_into<R: CubeRuntime>(x: CubeTensor<R>, u: CubeTensor<R>, out: CubeTensor<R>) {
    let [n, r] = dims2(&x, "project");
    let k = u.meta.shape()[1];
    let dtype = x.dtype;
    let client = x.client.clone();
    let cube_dim = CubeDim::new_2d(TILE as u32, TILE as u32);

    let c = empty_device_dtype(client.clone(), x.device.clone(), Shape::new([k, r]), dtype);
    kernel::tiled_matmul::launch::<R>(
        &client,
        tile_count(k, r),
        cube_dim,
        transposed(u.clone()).into_tensor_arg(),
        x.clone().into_tensor_arg(),
        c.clone().into_tensor_arg(),
        TILE,
        MICRO,
        dtype.into(),
    );
    kernel::tiled_matmul_sub::launch::<R>(
        &client,
        tile_count(n, r),
        cube_dim,
        u.into_tensor_arg(),
        c.into_tensor_arg(),
        x.into_tensor_arg(),
        out.into_tensor_arg(),
        TILE,
        MICRO,
        dtype.into(),
    );
}

/// U side: `Y = X − U_h (U_hᵀ X)` for `x: [n, r]`, `u_high: [n, k]`.
///
/// Inputs are made contiguous first (a no-op when they already are); the output is a fresh
/// `[n, r]` tensor. Two launches: `C = U_hᵀ X` (`[k, r]` scratch) with
/// [`kernel::tiled_matmul()`], then `Y = X − U_h C` with [`kernel::tiled_matmul_sub()`].
/// `2·n·k·r` multiply-adds in all, as for the matmul form.
///
/// The same call is the block Gram–Schmidt step of a randomized SVD range finder,
/// `Y_b ← Y_b − Q (Qᵀ Y_b)` (with `Q` the orthonormal columns found so far).
///
/// # Panics
/// If the tensors are not 2-D, their row counts differ, their dtypes differ or are not float,
/// or they live on different devices.
pub fn project_u<R: CubeRuntime>(x: CubeTensor<R>, u_high: CubeTensor<R>) -> CubeTensor<R> {
    let [n, r] = dims2(&x, "project_u (x)");
    let [nu, k] = dims2(&u_high, "project_u (U_h)");
    assert_eq!(n, nu, "project_u: x is [{n}, {r}] but U_h is [{nu}, {k}]");
    check_float_dtype("project_u", x.dtype, u_high.dtype);
    x.assert_is_on_same_device(&u_high);
    let x = into_contiguous(x);
    if k == 0 || n == 0 || r == 0 {
        return x; // nothing to remove (or nothing to remove it from)
    }
    let u_high = into_contiguous(u_high);
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::new([n, r]), x.dtype);
    project_columns_into(x, u_high, out.clone());
    out
}

/// V side (row storage): `Y = X − (X Vt_hᵀ) Vt_h` for `x: [r, m]`, `vt_high: [k, m]`.
///
/// This is the U-side projection of `Xᵀ` against `U = Vt_hᵀ` (`Yᵀ = Xᵀ − Vt_hᵀ (Vt_h Xᵀ)`),
/// so it runs the same two kernels on transposed *views* (strides swapped, no copies): the
/// scratch is `Vt_h Xᵀ` (`[k, r]`), and the output is allocated `[r, m]` row-major and written
/// through its transposed view. The kernels pick their unit→element map from the strides, so
/// the global loads and stores stay coalesced.
///
/// # Panics
/// As [`project_u`], with "column counts" for "row counts".
pub fn project_vt<R: CubeRuntime>(x: CubeTensor<R>, vt_high: CubeTensor<R>) -> CubeTensor<R> {
    let [r, m] = dims2(&x, "project_vt (x)");
    let [k, mv] = dims2(&vt_high, "project_vt (Vt_h)");
    assert_eq!(m, mv, "project_vt: x is [{r}, {m}] but Vt_h is [{k}, {mv}]");
    check_float_dtype("project_vt", x.dtype, vt_high.dtype);
    x.assert_is_on_same_device(&vt_high);
    let x = into_contiguous(x);
    if k == 0 || m == 0 || r == 0 {
        return x;
    }
    let vt_high = into_contiguous(vt_high);
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::new([r, m]), x.dtype);
    project_columns_into(transposed(x), transposed(vt_high), transposed(out.clone()));
    out
}

/// Column normalisation for `y: [n, c]`: returns `(q, norms)` with `q[:, j] = y[:, j] / ‖y[:, j]‖`
/// (`[n, c]`) and `norms[j] = ‖y[:, j]‖₂` (`[c]`). A zero column gives a zero `q` column and a
/// zero norm. One launch of [`kernel::normalize_columns()`].
///
/// # Panics
/// If `y` is not a 2-D float tensor.
pub fn normalize_columns<R: CubeRuntime>(y: CubeTensor<R>) -> (CubeTensor<R>, CubeTensor<R>) {
    let [n, c] = dims2(&y, "normalize_columns");
    check_float_dtype("normalize_columns", y.dtype, y.dtype);
    let y = into_contiguous(y);
    let client = y.client.clone();
    let (device, dtype) = (y.device.clone(), y.dtype);
    if n == 0 || c == 0 {
        // Nothing to launch over: an empty (or zero-row) `q` and zero norms.
        let q = zeros_client(client.clone(), device.clone(), Shape::new([n, c]), dtype);
        return (q, zeros_client(client, device, Shape::new([c]), dtype));
    }
    let q = empty_device_dtype(client.clone(), device.clone(), Shape::new([n, c]), dtype);
    let norms = empty_device_dtype(client.clone(), device, Shape::new([c]), dtype);
    kernel::normalize_columns::launch::<R>(
        &client,
        CubeCount::Static(c as u32, 1, 1),
        CubeDim::new_1d(NORM_BLOCK as u32),
        y.into_tensor_arg(),
        q.clone().into_tensor_arg(),
        norms.clone().into_tensor_arg(),
        NORM_BLOCK,
        dtype.into(),
    );
    (q, norms)
}
