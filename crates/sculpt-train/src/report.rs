//! The self-contained HTML report (inline SVG, no scripts, no external files): a summary table of
//! every run, the accuracy matrix of each as a heatmap, a per-task accuracy curve across the
//! stream with one line per run, and the loss curve of each run with its task boundaries.

use std::fmt::Write;
use std::path::Path;

use crate::run::RunResults;

/// One run in a report.
#[derive(Debug, Clone)]
pub struct ReportRun {
    /// Label (the method, or the run folder).
    pub name: String,
    /// Its results.
    pub results: RunResults,
    /// `(task_index, loss)` per step, in order.
    pub losses: Vec<(usize, f64)>,
}

const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

/// Read `(task_index, loss)` from a `metrics.jsonl` (missing file: empty).
pub fn read_losses(path: &Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["task_index"].as_u64()? as usize, v["loss"].as_f64()?))
        })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))
}

/// White (0) to dark blue (1).
fn cell_color(v: f64) -> String {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    format!("#{:02x}{:02x}{:02x}", lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

fn heatmap(r: &RunResults) -> String {
    let m = &r.matrix;
    let (cw, ch, left, top) = (64.0, 26.0, 120.0, 40.0);
    let cols = m.len() + 1;
    let (w, h) = (left + cw * cols as f64 + 10.0, top + ch * m.len() as f64 + 10.0);
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#);
    for c in 0..cols {
        let label = if c == 0 { "base".to_string() } else { format!("after {}", m.tasks[c - 1]) };
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + cw * (c as f64 + 0.5), top - 8.0, esc(&truncate(&label, 11)));
    }
    for (i, row) in m.acc.iter().enumerate() {
        let y = top + ch * i as f64;
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, left - 6.0, y + ch * 0.65, esc(&truncate(&m.tasks[i], 16)));
        for (c, v) in row.iter().enumerate() {
            let x = left + cw * c as f64;
            let (fill, text, fg) = match v {
                Some(v) => (cell_color(*v), format!("{:.1}", 100.0 * v), if *v > 0.55 { "white" } else { "black" }),
                None => ("#eeeeee".to_string(), "·".to_string(), "#888"),
            };
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{fill}" stroke="white"/><text x="{}" y="{}" text-anchor="middle" fill="{fg}">{text}</text>"#,
                x + cw / 2.0,
                y + ch * 0.65
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// A line chart: `series` of `(label, points)`, x from 0, y in `[y0, y1]`.
fn line_chart(title: &str, series: &[(String, Vec<(f64, f64)>)], x_max: f64, y_range: (f64, f64), x_labels: &[String], marks: &[f64]) -> String {
    let (w, h, l, r, t, b) = (420.0, 220.0, 44.0, 110.0, 24.0, 30.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let (y0, y1) = if (y_range.1 - y_range.0).abs() < 1e-12 { (y_range.0 - 0.5, y_range.1 + 0.5) } else { y_range };
    let px = |x: f64| l + pw * if x_max > 0.0 { x / x_max } else { 0.0 };
    let py = |y: f64| t + ph * (1.0 - (y - y0) / (y1 - y0));
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="10">"#);
    let _ = write!(s, r#"<text x="{l}" y="14" font-size="12" font-weight="bold">{}</text>"#, esc(title));
    let _ = write!(s, r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * k as f64 / 4.0;
        let _ = write!(s, r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{l}" x2="{}" y1="{}" y2="{}" stroke="#eee"/>"##, l - 4.0, py(y) + 3.0, fmt_tick(y), l + pw, py(y), py(y));
    }
    for (i, lab) in x_labels.iter().enumerate() {
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, px(i as f64), t + ph + 14.0, esc(&truncate(lab, 8)));
    }
    for &m in marks {
        let _ = write!(s, r##"<line x1="{}" x2="{}" y1="{t}" y2="{}" stroke="#bbb" stroke-dasharray="3,3"/>"##, px(m), px(m), t + ph);
    }
    for (k, (label, pts)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        if !path.is_empty() {
            let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, path.join(" "));
        }
        if pts.len() <= 40 {
            for &(x, y) in pts {
                let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#, px(x), py(y));
            }
        }
        let ly = t + 12.0 + 14.0 * k as f64;
        let _ = write!(s, r#"<rect x="{}" y="{}" width="10" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#, l + pw + 8.0, ly - 4.0, l + pw + 22.0, ly, esc(&truncate(label, 14)));
    }
    s.push_str("</svg>");
    s
}

fn fmt_tick(y: f64) -> String {
    if y.abs() >= 100.0 || y == y.round() {
        format!("{y:.0}")
    } else {
        format!("{y:.2}")
    }
}

/// Render the report for one or more runs on the same stream.
pub fn render(title: &str, runs: &[ReportRun]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}.row{{display:flex;flex-wrap:wrap;gap:16px}}</style></head><body><h1>{0}</h1>",
        esc(title)
    );
    s.push_str("<h2>Summary</h2><p>Accuracies in %: exact match after O-LoRA normalisation, greedy decoding. AA: average accuracy after the last task; BWT: backward transfer (negative = forgetting); F: forgetting; FWT: forward transfer.</p>");
    s.push_str("<table><tr><th>run</th><th>AA</th><th>BWT</th><th>F</th><th>FWT</th><th>train s</th><th>eval s</th></tr>");
    for r in runs {
        let m = &r.results.metrics;
        let train: f64 = r.results.tasks.iter().map(|t| t.train_secs).sum();
        let eval: f64 = r.results.tasks.iter().map(|t| t.eval_secs).sum();
        let _ = write!(s, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{train:.1}</td><td>{eval:.1}</td></tr>", esc(&r.name), pct(m.aa), pct(m.bwt), pct(m.forgetting), pct(m.fwt));
    }
    s.push_str("</table>");
    s.push_str("<h2>Accuracy matrices</h2><p>Row: the task evaluated; column: when (before training, then after each task).</p><div class=\"row\">");
    for r in runs {
        let _ = write!(s, "<div><h3>{}</h3>{}</div>", esc(&r.name), heatmap(&r.results));
    }
    s.push_str("</div>");
    if let Some(first) = runs.first() {
        let m = &first.results.matrix;
        let mut labels = vec!["base".to_string()];
        labels.extend(m.tasks.iter().cloned());
        s.push_str("<h2>Accuracy of each task across the stream</h2><div class=\"row\">");
        for (i, task) in m.tasks.iter().enumerate() {
            let series: Vec<(String, Vec<(f64, f64)>)> = runs
                .iter()
                .map(|r| {
                    let row = &r.results.matrix.acc[i];
                    (r.name.clone(), row.iter().enumerate().filter_map(|(c, v)| v.map(|v| (c as f64, 100.0 * v))).collect())
                })
                .collect();
            s.push_str(&line_chart(task, &series, m.len() as f64, (0.0, 100.0), &labels, &[(i + 1) as f64]));
        }
        s.push_str("</div>");
    }
    s.push_str("<h2>Training loss</h2><p>Per step; dashed lines are task boundaries.</p><div class=\"row\">");
    for r in runs {
        if r.losses.is_empty() {
            continue;
        }
        let pts: Vec<(f64, f64)> = r.losses.iter().enumerate().map(|(k, &(_, l))| (k as f64, l)).collect();
        let marks: Vec<f64> = r.losses.windows(2).enumerate().filter(|(_, w)| w[0].0 != w[1].0).map(|(k, _)| (k + 1) as f64).collect();
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min).min(0.0);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        s.push_str(&line_chart(&r.name, &[("loss".into(), pts.clone())], (pts.len().max(2) - 1) as f64, (lo, hi), &[], &marks));
    }
    s.push_str("</div>");
    s.push_str("<h2>Sample predictions (final model)</h2>");
    for r in runs {
        if r.results.samples.is_empty() {
            continue;
        }
        let _ = write!(s, "<h3>{}</h3><table><tr><th>task</th><th>answer</th><th>prediction</th><th>ok</th></tr>", esc(&r.name));
        for x in &r.results.samples {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&x.task), esc(&x.answer), esc(&x.prediction), mark(x));
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}

/// ✓ / ✗ for an all-or-nothing score, the score itself otherwise (ROUGE-L, SARI, …).
fn mark(x: &crate::run::Sample) -> String {
    if x.correct {
        "✓".into()
    } else if x.score > 0.0 {
        format!("{:.2}", x.score)
    } else {
        "✗".into()
    }
}
