//! The sculpt training loop: run configs, the language-model interface the loop trains, the
//! optimizer, the projected training step, and the task-by-task run that writes a Hugging Face
//! folder at the end.

pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod demo;
pub mod error;
pub mod lm;
pub mod methods;
pub mod metrics;
pub mod optim;
pub mod plan;
pub mod report;
pub mod run;
pub mod step;
pub mod tasks;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use metrics::{AccuracyMatrix, Metrics};
pub use run::{train, train_with, RunOptions, RunResults, RunSummary};
