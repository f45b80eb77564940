//! Orthogonal subspace fine-tuning (OSFT, "Sculpting Subspaces", arXiv 2504.07097): the SVD split
//! of target weights into a frozen high subspace and a trainable low one, rank rules, the
//! factored projections that keep every update orthogonal to the frozen part, and the merge at a
//! task boundary. Implements form (C) of `docs/osft-spec.md`: gradients projected before the
//! optimizer step **and** the low factors projected after it.

pub mod error;
pub mod importance;
pub mod osft;
pub mod project;
pub mod rank;
pub mod rsvd_device;
pub mod svd;
pub mod targets;

pub use error::{OsftError, Result};
pub use osft::{decompose_all, merge, CalibrationConfig, CalibrationSource, FrozenForm, FrozenPrecision, high_as_factors, Osft, OsftConfig, ProjectionBases, ProjectionImpl, ResolvedTarget, SvdMethod};
pub use rank::{RankOverride, RankRule};
