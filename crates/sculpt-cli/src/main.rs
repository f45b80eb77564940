//! `sculpt`: the command-line entry point. Parses arguments, picks the backend, sets up logging.

mod backend;
mod bench;
mod parity;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sculpt_models::{Pretrained, StoreDtype};

use crate::backend::BackendKind;

/// Continual fine-tuning of language models with orthogonal subspaces (OSFT).
#[derive(Parser, Debug)]
#[command(name = "sculpt", version, about)]
struct Cli {
    /// Compute backend.
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Greedy generation: prints the continuation of the prompt (text only) on stdout.
    Generate {
        /// A Hugging Face model folder or a LLaMA-architecture .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        /// Upper bound on generated tokens (generation stops earlier at end-of-sequence).
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
    },
    /// Train a model on a stream of tasks (see `configs/`) and write the merged model as a
    /// Hugging Face folder under the run's output.
    Train {
        /// Run config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Continue from the latest complete checkpoint in the run's output folder, after a
        /// task or inside one; the result equals the uninterrupted run's.
        #[arg(long)]
        resume: bool,
        /// Start afresh in an output folder that holds an earlier run, deleting its
        /// checkpoints, final model and results first (without it, or `--resume`, such a folder
        /// is refused).
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
    },
    /// Print the memory estimate of a run (parameters, trainable and frozen factors, gradients,
    /// optimizer state, activations with and without checkpointing) without running it.
    Plan {
        /// Run config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Sequence length for the activation estimate (default: the longest training example
        /// of the pre-tokenized tasks, and data.max_prompt_tokens + data.max_answer_tokens for
        /// the text formats, whichever is larger).
        #[arg(long)]
        seq: Option<usize>,
        /// Device memory in GiB (e.g. 74.5 for an 80 GB card): say whether the run fits, and if
        /// not, which config changes make it fit, the least costly first.
        #[arg(long, value_name = "GIB")]
        fit: Option<f64>,
    },
    /// Backend parity: kernels, T5 and LLaMA forwards, one OSFT step and a 3-task micro stream on
    /// the selected backend against the CPU reference; one JSON line per case.
    Parity {
        /// The tiny fixtures folder (from a checkout: tests/fixtures/tiny).
        #[arg(long, default_value = "tests/fixtures/tiny")]
        fixtures: PathBuf,
    },
    /// Time a forward pass, the decomposition and an OSFT training step on a random LLaMA of the
    /// given shape on the selected backend; prints one JSON line with the memory plan's total
    /// for the same run (`cargo xtask bench backends` compares backends; `scripts/gpu-check.sh`
    /// runs 7B layer shapes).
    Bench {
        /// Width.
        #[arg(long, default_value_t = 256)]
        hidden: usize,
        /// MLP width (default: 3 × width).
        #[arg(long)]
        intermediate: Option<usize>,
        /// Attention heads (default: width / 64).
        #[arg(long)]
        heads: Option<usize>,
        /// Key/value heads (default: width / 128).
        #[arg(long)]
        kv_heads: Option<usize>,
        /// Blocks.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// Sequences per batch.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// Timed repetitions after one warm-up.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// OSFT trainable fraction of each target's rank (default: preserve half).
        #[arg(long)]
        unfreeze: Option<f64>,
        /// Per-block activation checkpointing.
        #[arg(long)]
        checkpoint: bool,
        /// bf16 mixed precision.
        #[arg(long)]
        bf16: bool,
        /// Store OSFT's frozen `W_high` in bf16 (`[osft] frozen_precision = "bf16"`).
        #[arg(long)]
        frozen_bf16: bool,
        /// Hold OSFT's frozen high parts as factors where that saves memory (`[osft]
        /// frozen_form = "factors"`).
        #[arg(long)]
        frozen_factors: bool,
        /// Run the projections as burn matmuls, not the cubecl kernels (`[osft] projection =
        /// "tensor"`; the CPU backend always does).
        #[arg(long)]
        tensor_projection: bool,
    },
    /// Run several methods on one stream (the config's `method` is replaced by each) and
    /// tabulate them; writes `<output>/<method>/…`, `<output>/compare.json` and `<output>/report.html`.
    Compare {
        /// Run config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Methods, comma-separated (osft, seqft, lora, olora, ewc, replay, mtl).
        #[arg(long, value_delimiter = ',', default_value = "osft,seqft")]
        methods: Vec<String>,
        /// Continue each run from its latest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Start each method afresh where its folder holds an earlier run, deleting that run's
        /// checkpoints, final model and results first.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
    },
    /// The embedded demo: generates a tiny model and a 3-task stream (no downloads), compares
    /// OSFT with sequential fine-tuning, prints both accuracy matrices and writes the report.
    Demo {
        /// Where the demo's files and results go.
        #[arg(long, default_value = "runs/demo")]
        output: PathBuf,
        /// Methods to compare, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "osft,seqft")]
        methods: Vec<String>,
    },
    /// Load a model (folder or .gguf) and write it as a Hugging Face folder.
    Convert {
        /// Source folder or .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// Destination folder (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Weight dtype of the written checkpoint (default: the source's).
        #[arg(long, value_enum)]
        dtype: Option<DtypeArg>,
    },
}

fn parse_methods(names: &[String]) -> anyhow::Result<Vec<sculpt_train::config::Method>> {
    names
        .iter()
        .map(|n| {
            sculpt_train::config::Method::parse(n.trim()).ok_or_else(|| {
                let all: Vec<&str> = sculpt_train::config::Method::ALL.iter().map(|m| m.name()).collect();
                anyhow::anyhow!("--methods: unknown method {n:?} (expected one of {})", all.join(", "))
            })
        })
        .collect()
}

fn compare_on<B: burn::tensor::backend::Backend>(cfg: &sculpt_train::RunConfig, methods: &[sculpt_train::config::Method], device: &B::Device, opts: sculpt_train::RunOptions) -> anyhow::Result<()> {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let c = if cfg.train.activation_checkpointing == sculpt_train::config::Checkpointing::Ops {
        sculpt_train::compare::compare::<burn::backend::Autodiff<B, BalancedCheckpointing>>(cfg, methods, device, opts)?
    } else {
        sculpt_train::compare::compare::<burn::backend::Autodiff<B>>(cfg, methods, device, opts)?
    };
    println!("{}", c.table());
    println!("report written to {}", c.report.display());
    Ok(())
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DtypeArg> for StoreDtype {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => StoreDtype::F32,
            DtypeArg::F16 => StoreDtype::F16,
            DtypeArg::Bf16 => StoreDtype::BF16,
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SCULPT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let backend = cli.backend;
    // GPU runtimes report a missing driver or device by panicking on first use; turn that (and any
    // other panic) into one error line instead of a backtrace, unless RUST_BACKTRACE asks for it.
    // The first panic's message is kept: a device thread's panic reaches the main thread only as
    // a closed channel (`RecvError`), and the first one names the cause.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|info| {
            let _ = FIRST_PANIC.set(info.payload_as_str().unwrap_or("unknown panic").to_string());
        }));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            // The error and its causes, each cause once (our errors already print their source).
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("error: {msg}");
            if e.downcast_ref::<sculpt_train::TrainError>().is_some_and(|t| matches!(t, sculpt_train::TrainError::Interrupted { .. })) {
                std::process::ExitCode::from(EXIT_INTERRUPTED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            let first = FIRST_PANIC.get().filter(|first| first.as_str() != msg);
            match first {
                Some(first) => eprintln!("error: the {backend:?} backend failed: {first} (then, on the main thread: {msg}; set RUST_BACKTRACE=1 for a backtrace)"),
                None => eprintln!("error: the {backend:?} backend failed: {msg} (set RUST_BACKTRACE=1 for a backtrace)"),
            }
            if first.map_or(msg, String::as_str).contains("No possible adapter") {
                eprintln!("hint: wgpu found no GPU adapter: it needs a Vulkan (Linux), Metal (macOS) or DX12 (Windows) driver; a Linux machine without a GPU can use Mesa's software Vulkan driver, lavapipe (Debian/Ubuntu: apt install mesa-vulkan-drivers)");
            }
            std::process::ExitCode::from(2)
        }
    }
}

/// The message of the process's first panic, on any thread (set by `main`'s panic hook).
static FIRST_PANIC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Exit code of a run stopped by SIGINT/SIGTERM after a complete step (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// The first SIGINT/SIGTERM sets the returned flag (the run stops after its current step); a
/// second one exits at once with [`EXIT_INTERRUPTED`] — safe, because every file sculpt writes
/// is assembled under a temporary name and renamed into place.
fn stop_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_INTERRUPTED as i32, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    crate::backend::dispatch!(cli.backend, |B, device| run_on::<B>(cli.command, &device, cli.backend))
}

fn run_on<B: burn::tensor::backend::Backend + sculpt_kernels::ProjectionOps>(command: Command, device: &B::Device, backend: BackendKind) -> anyhow::Result<()> {
    match command {
        Command::Generate { model, prompt, max_new_tokens } => {
            let t0 = std::time::Instant::now();
            let m = Pretrained::<B>::load(&model, device).with_context(|| format!("loading {}", model.display()))?;
            tracing::info!(family = m.model.family(), secs = t0.elapsed().as_secs_f32(), "model loaded");
            let t1 = std::time::Instant::now();
            let (ids, text) = m.generate(&prompt, max_new_tokens, device)?;
            let secs = t1.elapsed().as_secs_f32();
            tracing::info!(tokens = ids.len(), secs, tok_per_s = ids.len() as f32 / secs.max(1e-9), "generated");
            println!("{text}");
            Ok(())
        }
        Command::Parity { fixtures } => {
            let name = format!("{backend:?}").to_lowercase();
            let rows = parity::run::<B>(&name, device, &fixtures)?;
            let failed: Vec<&str> = rows.iter().filter(|r| !r.pass()).map(|r| r.case()).collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("parity failed on {name}: {}", failed.join(", ")))
            }
        }
        Command::Bench { hidden, intermediate, heads, kv_heads, layers, batch, seq, reps, unfreeze, checkpoint, bf16, frozen_bf16, frozen_factors, tensor_projection } => {
            let name = format!("{backend:?}").to_lowercase();
            bench::run::<B>(&name, device, &bench::BenchArgs { hidden, intermediate, heads, kv_heads, layers, batch, seq, reps, unfreeze, checkpoint, bf16, frozen_bf16, frozen_factors, tensor_projection })
        }
        Command::Plan { config, seq, fit } => {
            let cfg = sculpt_train::RunConfig::load(&config)?;
            let planned = sculpt_train::plan::plan(&cfg, seq);
            let planned = if seq.is_none() { planned.context("the plan reads each pre-tokenized training file for its longest example (`--seq N` plans at N tokens without reading them)")? } else { planned? };
            print!("{}", planned.to_text());
            if let Some(gib) = fit {
                anyhow::ensure!(gib.is_finite() && gib > 0.0, "--fit: {gib} is not a positive number of GiB");
                print!("{}", sculpt_train::plan::fit(&cfg, seq, (gib * (1u64 << 30) as f64) as u64)?.to_text());
            }
            Ok(())
        }
        Command::Train { config, resume, overwrite } => {
            let cfg = sculpt_train::RunConfig::load(&config)?;
            let rss_start = sculpt_train::plan::rss_bytes();
            let planned = match sculpt_train::plan::plan(&cfg, None) {
                Ok(p) => {
                    tracing::info!("{}", p.to_text().trim_end());
                    Some(if cfg.train.activation_checkpointing.enabled() { p.totals().1 } else { p.totals().0 })
                }
                Err(e) => {
                    tracing::warn!("no memory plan: {e}");
                    None
                }
            };
            let opts = sculpt_train::RunOptions { resume, overwrite, stop: Some(stop_flag()?) };
            use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
            let summary = if cfg.train.activation_checkpointing == sculpt_train::config::Checkpointing::Ops {
                sculpt_train::train_with::<burn::backend::Autodiff<B, BalancedCheckpointing>>(&cfg, device, opts)?
            } else {
                sculpt_train::train_with::<burn::backend::Autodiff<B>>(&cfg, device, opts)?
            };
            for t in &summary.results.tasks {
                println!("task {:<16} steps {:>5}  loss {:.4} → {:.4}", t.name, t.steps, t.first_loss, t.last_loss);
            }
            if summary.results.matrix.acc.iter().flatten().any(Option::is_some) {
                println!("\naccuracy (%), rows: task, columns: when\n{}", summary.results.matrix.to_text());
                let m = summary.results.metrics;
                let p = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1}", 100.0 * v));
                println!("AA {}  BWT {}  forgetting {}  FWT {}", p(m.aa), p(m.bwt), p(m.forgetting), p(m.fwt));
            }
            println!("model written to {}", summary.model_dir.display());
            println!("report written to {}", summary.report.display());
            if let (Some(peak), Some(start)) = (sculpt_train::plan::peak_rss_bytes(), rss_start) {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                println!(
                    "peak resident memory: {:.3} GiB above the {:.3} GiB at start (plan: {})",
                    gib(peak.saturating_sub(start)),
                    gib(start),
                    planned.map_or("–".into(), |p| format!("{:.3} GiB", gib(p)))
                );
            }
            Ok(())
        }
        Command::Compare { config, methods, resume, overwrite } => {
            let cfg = sculpt_train::RunConfig::load(&config)?;
            let methods = parse_methods(&methods)?;
            compare_on::<B>(&cfg, &methods, device, sculpt_train::RunOptions { resume, overwrite, stop: Some(stop_flag()?) })
        }
        Command::Demo { output, methods } => {
            let methods = parse_methods(&methods)?;
            let cfg = sculpt_train::demo::prepare(&output)?;
            println!("demo: a tiny random LLaMA and three cipher tasks written to {}", output.display());
            // The demo's folder is its own (`prepare` has just regenerated the model and data):
            // each run replaces the last one's results.
            compare_on::<B>(&cfg, &methods, device, sculpt_train::RunOptions { resume: false, overwrite: true, stop: Some(stop_flag()?) })
        }
        Command::Convert { model, out, dtype } => {
            let m = Pretrained::<B>::load(&model, device).with_context(|| format!("loading {}", model.display()))?;
            m.save(&out, dtype.map(Into::into)).with_context(|| format!("writing {}", out.display()))?;
            tracing::info!(out = %out.display(), "saved");
            Ok(())
        }
    }
}
