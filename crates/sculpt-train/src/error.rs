//! The one error type of `sculpt-train`.

use std::path::PathBuf;

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run config is malformed.
    #[error("{path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        msg: String,
    },
    /// A model could not be read or written.
    #[error(transparent)]
    Model(#[from] sculpt_models::ModelError),
    /// OSFT could not be applied.
    #[error(transparent)]
    Osft(#[from] sculpt_osft::OsftError),
    /// A dataset is bad.
    #[error(transparent)]
    Data(#[from] sculpt_data::DataError),
    /// The loss or a gradient became NaN/∞.
    #[error("task `{task}` step {step}: non-finite {what}")]
    NonFinite {
        /// Task name.
        task: String,
        /// Step within the task.
        step: usize,
        /// Which value.
        what: String,
    },
    /// The config asks for bf16 on a device that has no bf16.
    #[error("{key} needs bf16 tensors, which this backend's device does not support (wgpu: WGSL has no bf16); use \"fp32\" there, or the cpu or cuda backend")]
    UnsupportedDtype {
        /// The config key, with its value.
        key: &'static str,
    },
    /// A stop was requested (SIGINT/SIGTERM); the run ended after a complete step.
    #[error("interrupted in task `{task}` after step {step}; {resume}")]
    Interrupted {
        /// Task name.
        task: String,
        /// Last completed step of that task.
        step: usize,
        /// What resuming will do.
        resume: String,
    },
    /// The output folder holds an earlier run's results, and neither resuming nor overwriting
    /// was asked for.
    #[error("{output} already holds a run ({found}); `--resume` continues it, `--overwrite` deletes those results and starts over, or set another `output`")]
    OutputInUse {
        /// The run's output folder.
        output: PathBuf,
        /// What the earlier run left there.
        found: String,
    },
    /// Writing run outputs failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
