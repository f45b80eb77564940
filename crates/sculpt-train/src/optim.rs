//! The optimizer of a task: burn's AdamW or SGD, configured from `[train]`, with weight decay
//! restricted to the OSFT low factors (a second, decay-free instance steps everything else).

use std::collections::BTreeSet;
use std::path::Path;

use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder, RecorderError};

use burn::module::ParamId;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;

use crate::config::{OptimizerKind, TrainSection};
use crate::lm::LanguageModel;

enum One<M: LanguageModel<B>, B: AutodiffBackend> {
    AdamW(OptimizerAdaptor<AdamW, M, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
}

impl<M: LanguageModel<B>, B: AutodiffBackend> One<M, B> {
    fn new(t: &TrainSection, weight_decay: f64) -> Self {
        match t.optimizer {
            OptimizerKind::Adamw => One::AdamW(
                AdamWConfig::new()
                    .with_beta_1(t.betas[0] as f32)
                    .with_beta_2(t.betas[1] as f32)
                    .with_epsilon(t.eps as f32)
                    .with_weight_decay(weight_decay as f32)
                    .init(),
            ),
            OptimizerKind::Sgd => {
                let wd = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
                One::Sgd(SgdConfig::new().with_weight_decay(wd).init())
            }
        }
    }

    fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            One::AdamW(o) => o.step(lr, model, grads),
            One::Sgd(o) => o.step(lr, model, grads),
        }
    }

    fn save(&self, path: &Path) -> Result<(), RecorderError> {
        let r = BinFileRecorder::<FullPrecisionSettings>::new();
        match self {
            One::AdamW(o) => Recorder::<B>::record(&r, o.to_record(), path.to_path_buf()),
            One::Sgd(o) => Recorder::<B>::record(&r, o.to_record(), path.to_path_buf()),
        }
        .map(|_| ())
    }

    fn load(self, path: &Path, device: &B::Device) -> Result<Self, RecorderError> {
        let r = BinFileRecorder::<FullPrecisionSettings>::new();
        Ok(match self {
            One::AdamW(o) => One::AdamW(o.load_record(Recorder::<B>::load(&r, path.to_path_buf(), device)?)),
            One::Sgd(o) => One::Sgd(o.load_record(Recorder::<B>::load(&r, path.to_path_buf(), device)?)),
        })
    }
}

/// The optimizer pair of one task.
pub struct TaskOptimizer<M: LanguageModel<B>, B: AutodiffBackend> {
    decayed: One<M, B>,
    plain: One<M, B>,
    decayed_ids: BTreeSet<ParamId>,
}

impl<M: LanguageModel<B>, B: AutodiffBackend> TaskOptimizer<M, B> {
    /// `decayed_ids`: the parameters that get weight decay (the low factors); all others get none.
    pub fn new(t: &TrainSection, decayed_ids: BTreeSet<ParamId>) -> Self {
        TaskOptimizer { decayed: One::new(t, t.weight_decay), plain: One::new(t, 0.0), decayed_ids }
    }

    /// Write the state of both instances (moments, step counts) as `<stem>-decayed.bin` and
    /// `<stem>-plain.bin` in `dir`; the records are keyed by parameter id.
    pub fn save(&self, dir: &Path) -> Result<(), RecorderError> {
        self.decayed.save(&dir.join("optimizer-decayed"))?;
        self.plain.save(&dir.join("optimizer-plain"))
    }

    /// Load what [`TaskOptimizer::save`] wrote (the model must carry the same parameter ids).
    pub fn load(self, dir: &Path, device: &B::Device) -> Result<Self, RecorderError> {
        Ok(TaskOptimizer {
            decayed: self.decayed.load(&dir.join("optimizer-decayed"), device)?,
            plain: self.plain.load(&dir.join("optimizer-plain"), device)?,
            decayed_ids: self.decayed_ids,
        })
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, lr: f64, model: M, mut grads: GradientsParams, all_ids: &[(ParamId, usize)]) -> M {
        if self.decayed_ids.is_empty() {
            return self.plain.step(lr, model, grads);
        }
        let mut decayed = GradientsParams::new();
        for (id, rank) in all_ids {
            if self.decayed_ids.contains(id) {
                move_grad::<B>(&mut grads, &mut decayed, *id, *rank);
            }
        }
        let model = self.decayed.step(lr, model, decayed);
        if grads.is_empty() {
            model
        } else {
            self.plain.step(lr, model, grads)
        }
    }
}

/// Move the gradient of `id` (a rank-`rank` tensor) from `from` to `to`.
pub fn move_grad<B: AutodiffBackend>(from: &mut GradientsParams, to: &mut GradientsParams, id: ParamId, rank: usize) {
    match rank {
        1 => {
            if let Some(g) = from.remove::<B::InnerBackend, 1>(id) {
                to.register(id, g);
            }
        }
        2 => {
            if let Some(g) = from.remove::<B::InnerBackend, 2>(id) {
                to.register(id, g);
            }
        }
        r => panic!("parameters of rank {r} are not expected"),
    }
}
