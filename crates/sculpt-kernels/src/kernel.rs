//! `#[cube]` kernels (cubecl 0.10) for the OSFT projections and the randomized-SVD helpers.
//!
//! Everything here works on 2-D [`Tensor`] views through `shape()`/`stride()`, so a transposed
//! operand is just a view with swapped strides: no kernel needs a "transpose" flag and the
//! V-side projection reuses the U-side kernels on transposed views (see `launch.rs`).
//!
//! The element type `F` is chosen at launch time from the tensor's dtype (`#[define(F)]`), so the
//! same kernels are meant to serve f16/bf16 tensors too (accumulating in `F`); only f32 is tested.

// The `#[cube(launch)]` macro generates a public module per kernel (`tiled_matmul::launch`, ...)
// whose helper items carry no doc comments; the kernels themselves are documented below.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Loads the `rows × cols` block of `t` whose top-left element is `(row0, col0)` into `smem`
/// (row-major with row pitch `cols + 1`: the padding column keeps the column-wise accesses free
/// of shared-memory bank conflicts). Elements outside `t` are stored as zero, so partial edge
/// tiles contribute nothing to the products.
///
/// Must be called by all `units` units of the cube; each loads `rows·cols / units` elements
/// (`rows·cols` must be a multiple of `units`). Element `e = UNIT_POS + i·units` of the tile is
/// taken in row-major order for a row-major view and in column-major order for a column-major
/// (transposed) view, so consecutive units always read consecutive addresses (coalesced). The
/// choice depends only on the strides, hence is uniform across the cube.
#[cube]
fn load_tile<F: Float>(
    t: &Tensor<F>,
    smem: &mut SharedMemory<F>,
    row0: usize,
    col0: usize,
    #[comptime] rows: usize,
    #[comptime] cols: usize,
    #[comptime] units: usize,
) {
    let col_major = t.stride(0) == 1 && t.stride(1) != 1;
    let lin = UNIT_POS as usize;
    #[unroll]
    for i in 0..comptime![rows * cols / units] {
        let e = lin + i * units;
        let mut r = e / cols;
        let mut c = e % cols;
        if col_major {
            r = e % rows;
            c = e / rows;
        }
        let gr = row0 + r;
        let gc = col0 + c;
        let mut v = F::new(0.0);
        if gr < t.shape(0) && gc < t.shape(1) {
            v = t[gr * t.stride(0) + gc * t.stride(1)];
        }
        smem[r * (cols + 1) + c] = v;
    }
}

/// The unit's `(row, col)` thread coordinates inside the cube's output block: `(UNIT_POS_Y,
/// UNIT_POS_X)` for a row-major output view, swapped for a column-major one, so that the
/// stores of consecutive units hit consecutive addresses either way. The unit owns the
/// `micro × micro` outputs `(row0 + rt + i·side, col0 + ct + j·side)`.
#[cube]
fn thread_coords<F: Float>(out: &Tensor<F>) -> (usize, usize) {
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let mut rt = ty;
    let mut ct = tx;
    if out.stride(0) == 1 && out.stride(1) != 1 {
        rt = tx;
        ct = ty;
    }
    (rt, ct)
}

/// Accumulates into `acc` (`micro × micro`, row-major, zero-initialised by the caller) the
/// products `Σ_k a[row0 + rt + i·side, k] · b[k, col0 + ct + j·side]` over the whole inner
/// dimension `K = a.shape(1)`.
///
/// Register-blocked tiled GEMM: the cube (`side × side` units) owns a `block × block` output
/// block, `block = side·micro`. `K` is walked in steps of `side`; per step the cube loads a
/// `block × side` tile of `a` and a `side × block` tile of `b` into shared memory (`micro`
/// elements per unit each), synchronises, and each unit does `side·micro²` multiply-adds from
/// shared memory, reading `2·micro` values per `micro²` multiply-adds. Must be called by every
/// unit of the cube (it contains `sync_cube`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn blocked_product<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    acc: &mut Array<F>,
    row0: usize,
    col0: usize,
    rt: usize,
    ct: usize,
    #[comptime] side: usize,
    #[comptime] micro: usize,
) {
    let block = comptime![side * micro];
    let units = comptime![side * side];
    let mut a_tile = SharedMemory::<F>::new(comptime![block * (side + 1)]);
    let mut b_tile = SharedMemory::<F>::new(comptime![side * (block + 1)]);
    let mut b_reg = Array::<F>::new(micro);
    let num_steps = a.shape(1).div_ceil(side);
    for step in 0..num_steps {
        let k0 = step * side;
        load_tile::<F>(a, &mut a_tile, row0, k0, block, side, units);
        load_tile::<F>(b, &mut b_tile, k0, col0, side, block, units);
        sync_cube();
        #[unroll]
        for kk in 0..side {
            #[unroll]
            for j in 0..micro {
                b_reg[j] = b_tile[kk * (block + 1) + ct + j * side];
            }
            #[unroll]
            for i in 0..micro {
                let a_val = a_tile[(rt + i * side) * (side + 1) + kk];
                #[unroll]
                for j in 0..micro {
                    acc[i * micro + j] += a_val * b_reg[j];
                }
            }
        }
        sync_cube();
    }
}

/// A zeroed `micro × micro` accumulator.
#[cube]
fn zero_acc<F: Float>(#[comptime] micro: usize) -> Array<F> {
    let mut acc = Array::<F>::new(comptime![micro * micro]);
    #[unroll]
    for i in 0..comptime![micro * micro] {
        acc[i] = F::new(0.0);
    }
    acc
}

/// Matrix product `out = a · b` for 2-D views `a: [M, K]`, `b: [K, N]`, `out: [M, N]` (any
/// strides; transposes are views).
///
/// Algorithm (see `blocked_product`): cubes of `side × side` units, each computing a
/// `block × block` output block with `block = side·micro`, i.e. a strided `micro × micro`
/// micro-tile per unit; `K` in steps of `side` through two padded shared-memory tiles
/// (`block × (side + 1)` and `side × (block + 1)`). The launcher uses `side = 8`, `micro = 8`:
/// 64 units per cube, 64 × 64 output blocks, 8 × 8 outputs per unit, `K` in steps of 8
/// (measured 1.7× faster than `side = 16, micro = 4` on lavapipe; both shapes are usual on GPUs).
/// Cube `(CUBE_POS_X, CUBE_POS_Y)` covers output columns `[CUBE_POS_X·block, +block)` and rows
/// `[CUBE_POS_Y·block, +block)`; edge blocks are zero-padded on load and masked on store, so no
/// size needs to be a multiple of anything.
///
/// Used for the projection coefficients `C = U_hᵀ X` (`a` = transposed view of `U_h`).
#[cube(launch)]
pub fn tiled_matmul<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] side: usize,
    #[comptime] micro: usize,
    #[define(F)] _dtype: StorageType,
) {
    let block = comptime![side * micro];
    let row0 = CUBE_POS_Y as usize * block;
    let col0 = CUBE_POS_X as usize * block;
    let (rt, ct) = thread_coords::<F>(out);
    let mut acc = zero_acc::<F>(micro);
    blocked_product::<F>(a, b, &mut acc, row0, col0, rt, ct, side, micro);
    #[unroll]
    for i in 0..micro {
        #[unroll]
        for j in 0..micro {
            let row = row0 + rt + i * side;
            let col = col0 + ct + j * side;
            if row < out.shape(0) && col < out.shape(1) {
                let idx = row * out.stride(0) + col * out.stride(1);
                out[idx] = acc[i * micro + j];
            }
        }
    }
}

/// "Subtract a product": `out = x − a · b` for 2-D views `a: [M, K]`, `b: [K, N]`,
/// `x, out: [M, N]` (any strides).
///
/// Same algorithm and block sizes as [`tiled_matmul()`] (as launched: 8 × 8 units per cube, 64 × 64
/// output block, 8 × 8 outputs per unit, `K` in steps of 8 through padded shared-memory tiles);
/// only the epilogue differs: it reads `x` at each output position and stores `x − acc`.
///
/// Used for the projection update `Y = X − U_h C` (and, on transposed views, for the V side).
#[cube(launch)]
pub fn tiled_matmul_sub<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    x: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] side: usize,
    #[comptime] micro: usize,
    #[define(F)] _dtype: StorageType,
) {
    let block = comptime![side * micro];
    let row0 = CUBE_POS_Y as usize * block;
    let col0 = CUBE_POS_X as usize * block;
    let (rt, ct) = thread_coords::<F>(out);
    let mut acc = zero_acc::<F>(micro);
    blocked_product::<F>(a, b, &mut acc, row0, col0, rt, ct, side, micro);
    #[unroll]
    for i in 0..micro {
        #[unroll]
        for j in 0..micro {
            let row = row0 + rt + i * side;
            let col = col0 + ct + j * side;
            if row < out.shape(0) && col < out.shape(1) {
                let xv = x[row * x.stride(0) + col * x.stride(1)];
                let idx = row * out.stride(0) + col * out.stride(1);
                out[idx] = xv - acc[i * micro + j];
            }
        }
    }
}

/// Column normalisation `q_j = y_j / ‖y_j‖₂` for `y, q: [n, c]`, also writing `norms[j] = ‖y_j‖₂`
/// (`norms: [c]`). A column of norm zero is written as zeros (and its norm as 0), so the caller
/// can detect rank deficiency from `norms`.
///
/// Algorithm: one cube per column (`CUBE_POS_X` = column), cube dim `block` (the launcher uses
/// 256; it must be a power of two). Each unit accumulates the squares of rows
/// `UNIT_POS_X, UNIT_POS_X + block, …` (a grid-stride loop, so any `n` works), the cube
/// tree-reduces the `block` partial sums in shared memory (log₂ `block` halving steps with a
/// `sync_cube` after each), and every unit then rescales its rows by `1 / ‖y_j‖`.
#[cube(launch)]
pub fn normalize_columns<F: Float>(
    y: &Tensor<F>,
    q: &mut Tensor<F>,
    norms: &mut Tensor<F>,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let col = CUBE_POS_X as usize;
    let tid = UNIT_POS_X as usize;
    let n = y.shape(0);
    let mut partial = SharedMemory::<F>::new(block);

    let mut acc = F::new(0.0);
    let mut i = tid;
    while i < n {
        let v = y[i * y.stride(0) + col * y.stride(1)];
        acc += v * v;
        i += block;
    }
    partial[tid] = acc;
    sync_cube();

    // The halving counter must be a runtime value (a `let mut` initialised from the comptime
    // `block` would be a constant that the loop cannot mutate); `CUBE_DIM_X == block`.
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if tid < half {
            let other = partial[tid + half];
            partial[tid] += other;
        }
        sync_cube();
        half /= 2;
    }

    let norm = F::sqrt(partial[0]);
    let mut scale = F::new(0.0);
    if norm > F::new(0.0) {
        scale = F::new(1.0) / norm;
    }
    let mut j = tid;
    while j < n {
        let v = y[j * y.stride(0) + col * y.stride(1)];
        let idx = j * q.stride(0) + col * q.stride(1);
        q[idx] = v * scale;
        j += block;
    }
    if tid == 0 {
        norms[col * norms.stride(0)] = norm;
    }
}
