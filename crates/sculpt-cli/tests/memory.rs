//! Activation memory: the same OSFT step on long sequences with and without
//! `activation_checkpointing`, each in its own `sculpt train` process, peak resident memory
//! measured by the process itself. Checkpointing must lower the peak, and both peaks must lie
//! within [0.5, 2] × `sculpt plan`'s estimate.

use std::path::Path;
use std::process::Command;

fn sculpt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sculpt"));
    c.env("SCULPT_LOG", "warn");
    c
}

/// `(measured GiB above start, planned GiB)` of one training run; `checkpointing` is the TOML
/// value of `activation_checkpointing`.
fn peak(dir: &Path, checkpointing: &str) -> (f64, f64) {
    peak_with(dir, checkpointing, "fp32")
}

fn peak_with(dir: &Path, checkpointing: &str, precision: &str) -> (f64, f64) {
    peak_osft(dir, checkpointing, precision, "")
}

/// As [`peak_with`], with `osft` as the `[osft]` section's body.
fn peak_osft(dir: &Path, checkpointing: &str, precision: &str, osft: &str) -> (f64, f64) {
    let tag = format!("{}{}", checkpointing.trim_matches('"'), if osft.is_empty() { "" } else { "-osft" });
    let cfg = dir.join(format!("run-{tag}-{precision}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "model = \"base-model\"\noutput = \"out-{tag}-{precision}\"\nmethod = \"osft\"\n[train]\nbatch_size = 8\nmax_steps = 2\nlr = 1e-3\nactivation_checkpointing = {checkpointing}\nprecision = \"{precision}\"\n[osft]\n{osft}\n\
             [eval]\nenabled = false\n[[tasks]]\nname = \"long\"\ndata = \"long.jsonl\"\n"
        ),
    )
    .unwrap();
    let out = sculpt().args(["train", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("peak resident memory")).unwrap_or_else(|| panic!("{stdout}"));
    println!("activation_checkpointing = {checkpointing}, precision = {precision}: {line}");
    let nums: Vec<f64> = line.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|x| x.parse().ok()).collect();
    (nums[0], nums[2])
}

fn long_sequences(dir: &Path) {
    let dims = sculpt_train::demo::LlamaDims { hidden: 256, intermediate: 768, layers: 8, heads: 4, kv_heads: 2 };
    sculpt_train::demo::write_random_llama(&dir.join("base-model"), dims, 0).unwrap();
    // 8 sequences of 512 tokens (the plan reads the longest: batch 8 × 512).
    let rows: Vec<String> = (0..8)
        .map(|r| {
            let ids: Vec<String> = (0..512).map(|i| ((r * 31 + i * 7) % 40 + 4).to_string()).collect();
            format!("{{\"input_ids\": [{}]}}", ids.join(", "))
        })
        .collect();
    std::fs::write(dir.join("long.jsonl"), rows.join("\n")).unwrap();
}

/// Both strategies lower the peak; per-block checkpointing (which keeps only block inputs)
/// lowers it far more than burn's op-level one, and every peak matches its plan.
#[test]
fn activation_checkpointing_lowers_the_measured_peak() {
    let dir = tempfile::tempdir().unwrap();
    long_sequences(dir.path());
    let (plain, plan_plain) = peak(dir.path(), "false");
    let (ops, plan_ops) = peak(dir.path(), "\"ops\"");
    let (blocks, plan_blocks) = peak(dir.path(), "\"blocks\"");
    assert!(ops < 0.95 * plain, "op-level checkpointing did not lower the peak: {ops:.3} vs {plain:.3} GiB");
    assert!(blocks < 0.75 * ops, "per-block checkpointing did not lower the peak well below op-level: {blocks:.3} vs {ops:.3} GiB");
    for (m, p) in [(plain, plan_plain), (ops, plan_ops), (blocks, plan_blocks)] {
        assert!(m >= 0.5 * p && m <= 2.0 * p, "measured {m:.3} GiB vs plan {p:.3} GiB");
    }
}

#[test]
fn bf16_mixed_precision_lowers_the_measured_peak() {
    let dir = tempfile::tempdir().unwrap();
    long_sequences(dir.path());
    let (fp32, _) = peak_with(dir.path(), "false", "fp32");
    let (bf16, plan_bf16) = peak_with(dir.path(), "false", "bf16");
    assert!(bf16 < fp32, "bf16 did not lower the peak: {bf16:.3} vs {fp32:.3} GiB");
    assert!(bf16 >= 0.5 * plan_bf16 && bf16 <= 2.0 * plan_bf16, "measured {bf16:.3} GiB vs plan {plan_bf16:.3} GiB");
}

/// The adaptive rank rule's calibration forward passes leave no autodiff graph behind: the run's
/// peak stays at its plan. With per-block checkpointing the plan is small, so a held graph of one
/// calibration forward would show as several times the plan.
#[test]
fn calibration_holds_no_graph() {
    let dir = tempfile::tempdir().unwrap();
    long_sequences(dir.path());
    let (m, p) = peak_osft(dir.path(), "\"blocks\"", "fp32", "rank = { rule = \"adaptive\" }\ncalibration = { examples = 8 }");
    assert!(m <= 2.0 * p, "measured {m:.3} GiB vs plan {p:.3} GiB after calibration");
}
