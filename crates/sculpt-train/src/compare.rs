//! `sculpt compare`: one stream, several methods, the same budget; a table and one report.
//!
//! Each method runs with the stream's config, `method` replaced, into `<output>/<method>/`; the
//! combined results go to `<output>/compare.json` and `<output>/report.html`.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::config::{Method, RunConfig};
use crate::error::{Result, TrainError};
use crate::report::{read_losses, render, ReportRun};
use crate::run::{train_with, RunOptions, RunResults};

/// What a comparison produced.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Per method, in the order run.
    pub runs: Vec<(Method, RunResults)>,
    /// `compare.json`.
    pub json: PathBuf,
    /// `report.html`.
    pub report: PathBuf,
}

impl Comparison {
    /// The summary as an aligned text table (percent).
    pub fn table(&self) -> String {
        let p = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1}", 100.0 * v));
        let mut s = format!("{:8} {:>6} {:>7} {:>6} {:>6} {:>8}\n", "method", "AA", "BWT", "F", "FWT", "train s");
        for (m, r) in &self.runs {
            let secs: f64 = r.tasks.iter().map(|t| t.train_secs).sum();
            let x = &r.metrics;
            s.push_str(&format!("{:8} {:>6} {:>7} {:>6} {:>6} {:>8.1}\n", m.name(), p(x.aa), p(x.bwt), p(x.forgetting), p(x.fwt), secs));
        }
        s
    }
}

/// Run `methods` on `cfg`'s stream.
pub fn compare<B: AutodiffBackend>(cfg: &RunConfig, methods: &[Method], device: &B::Device, opts: RunOptions) -> Result<Comparison> {
    // A method folder holding an earlier run would stop the comparison when its turn comes,
    // after the methods before it trained: refuse before any of them starts.
    if !opts.resume && !opts.overwrite {
        for &m in methods {
            crate::run::ensure_no_earlier_run(&cfg.output.join(m.name()))?;
        }
    }
    let mut runs = vec![];
    let mut report_runs = vec![];
    for &m in methods {
        let mut c = cfg.clone();
        c.method = m;
        c.output = cfg.output.join(m.name());
        tracing::info!(method = m.name(), output = %c.output.display(), "comparison run");
        let s = train_with::<B>(&c, device, opts.clone())?;
        println!("{}: AA {}", m.name(), s.results.metrics.aa.map_or("–".into(), |a| format!("{:.1}%", 100.0 * a)));
        println!("{}", s.results.matrix.to_text());
        report_runs.push(ReportRun { name: m.name().into(), results: s.results.clone(), losses: read_losses(&c.output.join("metrics.jsonl")) });
        runs.push((m, s.results));
    }
    let json = cfg.output.join("compare.json");
    let body: Vec<serde_json::Value> = runs.iter().map(|(m, r)| serde_json::json!({"method": m.name(), "metrics": r.metrics, "matrix": r.matrix})).collect();
    std::fs::write(&json, serde_json::to_string_pretty(&body).expect("json")).map_err(|e| TrainError::Io { path: json.clone(), source: e })?;
    let report = cfg.output.join("report.html");
    let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    std::fs::write(&report, render(&format!("sculpt compare: {}", names.join(" vs ")), &report_runs)).map_err(|e| TrainError::Io { path: report.clone(), source: e })?;
    Ok(Comparison { runs, json, report })
}
