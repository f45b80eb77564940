//! Continual-learning metrics over the accuracy matrix.
//!
//! `acc[i][c]` is the accuracy on task `i` (0-based) at evaluation point `c`: `c = 0` is the
//! base model, `c = t + 1` is after training task `t`. With `T` tasks and `a_{i,t}` the paper's
//! 1-based notation (`a_{i,t} = acc[i-1][t]`, `b_i = acc[i-1][0]`):
//!
//! - average accuracy `AA = (1/T) Σ_i a_{i,T}` (macro over tasks);
//! - backward transfer `BWT = (1/(T−1)) Σ_{i<T} (a_{i,T} − a_{i,i})` (negative = forgetting);
//! - forgetting `F = (1/(T−1)) Σ_{i<T} (max_{i ≤ t < T} a_{i,t} − a_{i,T})`;
//! - forward transfer `FWT = (1/(T−1)) Σ_{i≥2} (a_{i,i−1} − b_i)`.
//!
//! A metric is `None` when an entry it needs was not evaluated (or `T = 1` for the last three).

use serde::{Deserialize, Serialize};

/// The accuracy matrix of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyMatrix {
    /// Task names, in stream order.
    pub tasks: Vec<String>,
    /// `acc[task][point]`, `T × (T + 1)`; `None` where not evaluated.
    pub acc: Vec<Vec<Option<f64>>>,
}

/// The summary metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Average accuracy after the last task.
    pub aa: Option<f64>,
    /// Backward transfer.
    pub bwt: Option<f64>,
    /// Forgetting.
    pub forgetting: Option<f64>,
    /// Forward transfer.
    pub fwt: Option<f64>,
}

fn mean(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = xs.collect();
    let v = v?;
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl AccuracyMatrix {
    /// An empty matrix for `tasks`.
    pub fn new(tasks: Vec<String>) -> Self {
        let t = tasks.len();
        AccuracyMatrix { tasks, acc: vec![vec![None; t + 1]; t] }
    }

    /// From a full matrix (tests, reports).
    pub fn from_rows(tasks: Vec<String>, acc: Vec<Vec<Option<f64>>>) -> Self {
        assert!(acc.len() == tasks.len() && acc.iter().all(|r| r.len() == tasks.len() + 1), "matrix must be T × (T+1)");
        AccuracyMatrix { tasks, acc }
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Compute every metric.
    pub fn metrics(&self) -> Metrics {
        let t = self.len();
        let a = |i: usize, c: usize| self.acc[i][c];
        let aa = mean((0..t).map(|i| a(i, t)));
        if t < 2 {
            return Metrics { aa, bwt: None, forgetting: None, fwt: None };
        }
        let bwt = mean((0..t - 1).map(|i| Some(a(i, t)? - a(i, i + 1)?)));
        let forgetting = mean((0..t - 1).map(|i| {
            let best = (i + 1..t).map(|c| a(i, c)).collect::<Option<Vec<f64>>>()?.into_iter().fold(f64::NEG_INFINITY, f64::max);
            Some(best - a(i, t)?)
        }));
        let fwt = mean((1..t).map(|i| Some(a(i, i)? - a(i, 0)?)));
        Metrics { aa, bwt, forgetting, fwt }
    }

    /// The matrix as aligned text (percent), one row per task, one column per evaluation point.
    pub fn to_text(&self) -> String {
        let w = self.tasks.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
        let mut s = format!("{:w$}  {:>6}", "task", "base");
        for c in 1..=self.tasks.len() {
            s.push_str(&format!("  {:>8}", format!("after {c}")));
        }
        s.push('\n');
        for (i, row) in self.acc.iter().enumerate() {
            s.push_str(&format!("{:w$}", self.tasks[i]));
            for (c, x) in row.iter().enumerate() {
                let width = if c == 0 { 6 } else { 8 };
                match x {
                    Some(v) => s.push_str(&format!("  {:>width$.1}", 100.0 * v)),
                    None => s.push_str(&format!("  {:>width$}", "·")),
                }
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[[f64; 4]]) -> AccuracyMatrix {
        AccuracyMatrix::from_rows(vec!["a".into(), "b".into(), "c".into()], rows.iter().map(|r| r.iter().map(|&x| Some(x)).collect()).collect())
    }

    /// Hand-computed: columns base, after a, after b, after c.
    #[test]
    fn metrics_match_hand_computation() {
        let mx = m(&[[0.1, 0.9, 0.6, 0.5], [0.2, 0.3, 0.8, 0.4], [0.0, 0.1, 0.2, 0.7]]);
        let r = mx.metrics();
        // AA = (0.5 + 0.4 + 0.7) / 3
        assert!((r.aa.unwrap() - 1.6 / 3.0).abs() < 1e-12);
        // BWT = ((0.5 − 0.9) + (0.4 − 0.8)) / 2 = −0.4
        assert!((r.bwt.unwrap() + 0.4).abs() < 1e-12);
        // F = ((max(0.9, 0.6) − 0.5) + (max(0.8) − 0.4)) / 2 = 0.4
        assert!((r.forgetting.unwrap() - 0.4).abs() < 1e-12);
        // FWT = ((a_{b, after a} − b_b) + (a_{c, after b} − b_c)) / 2 = ((0.3 − 0.2) + (0.2 − 0.0)) / 2
        assert!((r.fwt.unwrap() - 0.15).abs() < 1e-12);
    }

    /// Forgetting uses the best earlier accuracy, not the one right after training.
    #[test]
    fn forgetting_takes_the_peak() {
        let mx = m(&[[0.0, 0.5, 0.9, 0.3], [0.0, 0.0, 0.6, 0.6], [0.0, 0.0, 0.0, 1.0]]);
        let r = mx.metrics();
        assert!((r.forgetting.unwrap() - 0.3).abs() < 1e-12); // ((0.9 − 0.3) + (0.6 − 0.6)) / 2
        assert!((r.bwt.unwrap() + 0.1).abs() < 1e-12); // ((0.3 − 0.5) + 0) / 2
    }

    #[test]
    fn missing_entries_and_single_task() {
        let mut mx = AccuracyMatrix::new(vec!["a".into(), "b".into()]);
        mx.acc[0][2] = Some(0.5);
        mx.acc[1][2] = Some(1.0);
        let r = mx.metrics();
        assert_eq!(r.aa, Some(0.75));
        assert_eq!(r.bwt, None);
        assert_eq!(r.fwt, None);
        let one = AccuracyMatrix::from_rows(vec!["a".into()], vec![vec![Some(0.0), Some(0.25)]]);
        assert_eq!(one.metrics(), Metrics { aa: Some(0.25), bwt: None, forgetting: None, fwt: None });
        assert!(one.to_text().contains("25.0"));
    }
}
