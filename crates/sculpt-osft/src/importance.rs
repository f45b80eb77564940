//! Layer importance for the paper's adaptive rank rule: `I = mean_i cos(x_i, W x_i)` over the
//! calibration tokens `x_i` entering each target linear layer (padding masked), normalised to
//! mean 1 over all targets (`Ĩ = I / mean I`).
//!
//! Non-square `W` (the paper is silent, spec D5): `NonSquare::Truncate` compares the first
//! `R = min(n, m)` coordinates of `x` and `W x`, as the authors' draft code does (parity);
//! `NonSquare::Singular` compares in singular coordinates, `cos(Vtᵣ x, Uᵣᵀ W x) = cos(Vᵀx, ΣVᵀx)`,
//! which measures only how anisotropic `Σ` is on the data. The choice is recorded with the run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sculpt_models::layers::{InputProbe, NamedParams};
use serde::{Deserialize, Serialize};

use crate::targets::TargetSet;

/// How non-square layers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonSquare {
    /// First `min(n, m)` coordinates of input and output (the authors' draft).
    #[default]
    Truncate,
    /// Singular coordinates `cos(Vᵀx, ΣVᵀx)` (square layers too; exact for them only up to rotation).
    Singular,
}

/// Token mask of the batch being calibrated: `rows` tokens, `mask[i] = 1` for real tokens.
/// A layer whose input has a different number of rows (a T5 decoder fed one start token per
/// example) counts all its rows.
#[derive(Debug, Clone, Default)]
pub struct CalibrationMask {
    /// Token flags, row-major over `[batch, seq]`.
    pub mask: Vec<f32>,
}

#[derive(Default)]
struct Acc {
    sum: f64,
    count: f64,
}

/// Raw importances (not normalised) measured by `forward` over calibration batches.
///
/// `forward(model, i)` must run the model on calibration batch `i` after storing its token mask
/// in the given [`CalibrationMask`] slot; the probes read it.
pub fn measure<B: Backend, M: NamedParams<B>>(
    model: &mut M,
    targets: &TargetSet,
    mode: NonSquare,
    batches: usize,
    mask_slot: Arc<Mutex<CalibrationMask>>,
    mut forward: impl FnMut(&M, usize),
) -> BTreeMap<String, f64> {
    let accs: Arc<Mutex<BTreeMap<String, Acc>>> = Arc::new(Mutex::new(BTreeMap::new()));
    model.visit_linears_mut(&mut |name, lin| {
        if !targets.matches(name) {
            return;
        }
        let w = lin.effective_weight().detach();
        let [n, m] = w.dims();
        let r = n.min(m);
        // For singular coordinates, precompute Vtᵣ and Uᵣᵀ on the host.
        let sing = (mode == NonSquare::Singular).then(|| {
            let host = sculpt_models::layers::to_host(w.clone());
            let svd = crate::svd::gram_svd(&host.data, n, m).expect("SVD for importance");
            let device = w.device();
            let vt = Tensor::<B, 2>::from_data(TensorData::new(svd.vt.clone(), [r, m]), &device);
            let u = Tensor::<B, 2>::from_data(TensorData::new(svd.u.clone(), [n, r]), &device);
            (vt, u)
        });
        let (accs, slot, name) = (accs.clone(), mask_slot.clone(), name.to_string());
        accs.lock().expect("lock").entry(name.clone()).or_default();
        lin.probe = InputProbe::new::<B>(Box::new(move |x: Tensor<B, 2>| {
            let x = x.detach();
            let rows = x.dims()[0];
            let y = x.clone().matmul(w.clone().transpose()); // W x, no bias
            let (a, b) = match &sing {
                Some((vt, u)) => (x.matmul(vt.clone().transpose()), y.matmul(u.clone())),
                None => (x.slice([0..rows, 0..r]), y.slice([0..rows, 0..r])),
            };
            let dot = (a.clone() * b.clone()).sum_dim(1);
            let na = a.square().sum_dim(1).sqrt();
            let nb = b.square().sum_dim(1).sqrt();
            let cos: Vec<f32> = (dot / (na * nb + 1e-12)).into_data().convert::<f32>().into_vec::<f32>().expect("f32");
            let mask = slot.lock().expect("lock").mask.clone();
            let weights: Vec<f32> = if mask.len() == rows { mask } else { vec![1.0; rows] };
            let mut g = accs.lock().expect("lock");
            let acc = g.get_mut(&name).expect("registered");
            for (c, w) in cos.iter().zip(&weights) {
                acc.sum += (*c as f64) * (*w as f64);
                acc.count += *w as f64;
            }
        }));
    });
    for i in 0..batches {
        forward(model, i);
    }
    model.visit_linears_mut(&mut |_, lin| lin.probe = InputProbe::none());
    let out = accs.lock().expect("lock").iter().map(|(k, a)| (k.clone(), a.sum / a.count.max(1.0))).collect();
    out
}
