//! faer's f64 symmetric eigensolver, phase by phase, on the Gram matrix `X Xᵀ` of a random
//! `576 × 1536` matrix (the shape of SmolLM2's MLP targets in `gram_svd`), one thread, in ms:
//! tridiagonalisation, the tridiagonal divide and conquer, the back-transformation, and the
//! whole `self_adjoint_eigen`. `benches/eigh_lapack.py` times LAPACK on the same shape.
//!
//! `cargo run -p sculpt-osft --release --example eigensolver -- [reps]`

use std::time::Instant;

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, tridiag};
use faer::linalg::householder;
use faer::{Mat, Par};
use rand::prelude::*;
use rand_distr::StandardNormal;

fn main() {
    faer::set_global_parallelism(Par::Seq);
    let reps: usize = std::env::args().nth(1).map_or(10, |r| r.parse().expect("reps: a count"));
    let (n, l) = (576, 1536);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let x = Mat::<f64>::from_fn(n, l, |_, _| {
        let v: f64 = StandardNormal.sample(&mut rng);
        0.02 * v
    });
    let g = &x * x.transpose();
    let ms = |f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    let full = ms(&mut || drop(g.self_adjoint_eigen(faer::Side::Lower).expect("evd")));
    // The phases, as `self_adjoint_evd` runs them.
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
    let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::Yes, Par::Seq, Default::default()));
    let (mut a, mut h) = (g.clone(), Mat::<f64>::zeros(bs, n - 1));
    let tri = ms(&mut || {
        a.copy_from(&g);
        tridiag::tridiag_in_place(a.as_mut(), h.as_mut(), Par::Seq, MemStack::new(&mut mem), Default::default());
    });
    let d = Mat::<f64>::from_fn(n, 1, |i, _| a[(i, i)]);
    let e = Mat::<f64>::from_fn(n, 1, |i, _| if i + 1 < n { a[(i + 1, i)] } else { 0.0 });
    let (mut z, mut s) = (Mat::<f64>::zeros(n, n), Mat::<f64>::zeros(n, 1));
    let dc = ms(&mut || {
        evd::tridiagonal_self_adjoint_evd(d.col(0).as_diagonal(), e.col(0).as_diagonal(), s.col_mut(0).as_diagonal_mut(), Some(z.as_mut()), Par::Seq, MemStack::new(&mut mem), Default::default())
            .expect("tridiagonal evd");
    });
    let mut w = z.clone();
    let back = ms(&mut || {
        w.copy_from(&z);
        householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(a.as_ref().submatrix(1, 0, n - 1, n - 1), h.as_ref(), faer::Conj::No, w.as_mut().subrows_mut(1, n - 1), Par::Seq, MemStack::new(&mut mem));
    });
    println!("{{\"impl\":\"faer-self-adjoint-eigen\",\"n\":{n},\"reps\":{reps},\"full_ms\":{full:.1},\"tridiagonalise_ms\":{tri:.1},\"divide_and_conquer_ms\":{dc:.1},\"back_transform_ms\":{back:.1}}}");
}
