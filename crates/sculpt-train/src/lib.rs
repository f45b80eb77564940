//! The sculpt training loop: run configs, the language-model interface the loop trains, the
//! optimizer, the projected training step, and the task-by-task run that writes a Hugging Face
//! folder at the end.

pub mod config;
pub mod error;
pub mod lm;
pub mod optim;
pub mod run;
pub mod step;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use run::{train, RunSummary};
