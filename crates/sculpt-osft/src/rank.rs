//! Rank rules: how many singular directions `k` of each target matrix are **retained** (frozen).
//! The trainable low subspace has `min(n, m) − k` directions.
//!
//! * `preserve` — PEFT's `effective_rank`: a fraction `f ∈ (0, 1]` gives `k = floor(R·f)`, a count
//!   gives `k` directly;
//! * `unfreeze` — mini_trainer's `unfreeze_rank_ratio` `u`: `k = floor(R·(1 − u))`;
//! * `adaptive` — the paper's rule `ρ = mrr + Ĩ·(trr − mrr)`, `k = floor(ρ·R)`, with `Ĩ` the layer
//!   importance normalised to mean 1 over all targets;
//! * per-module regex overrides (first match wins) replace the rule for the modules they match.
//!
//! Every rule is clamped to `[1, R − 1]`, so both subspaces are non-empty.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{OsftError, Result};

/// A rank rule as written in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum RankRule {
    /// Retain a fraction of `R` (`fraction`) or a fixed number of directions (`count`).
    Preserve {
        /// Fraction of `R` retained, in (0, 1].
        #[serde(default)]
        fraction: Option<f64>,
        /// Number of directions retained.
        #[serde(default)]
        count: Option<usize>,
    },
    /// Make a fraction of `R` trainable: `k = floor(R·(1 − fraction))`.
    Unfreeze {
        /// Trainable fraction, in [0, 1).
        fraction: f64,
    },
    /// The paper's importance-adaptive rule.
    Adaptive {
        /// Minimum retained ratio (`mrr`).
        #[serde(default = "default_mrr")]
        mrr: f64,
        /// Target retained ratio (`trr`), the mean of `ρ` over targets.
        #[serde(default = "default_trr")]
        trr: f64,
    },
}

fn default_mrr() -> f64 {
    0.1
}
fn default_trr() -> f64 {
    0.8
}

impl Default for RankRule {
    /// PEFT's default: preserve half.
    fn default() -> Self {
        RankRule::Preserve { fraction: Some(0.5), count: None }
    }
}

impl RankRule {
    /// Check the numbers; `key` names the config key in errors.
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |msg: String| Err(OsftError::BadRankRule { key: key.to_string(), msg });
        match *self {
            RankRule::Preserve { fraction: Some(_), count: Some(_) } => bad("give `fraction` or `count`, not both".into()),
            RankRule::Preserve { fraction: None, count: None } => bad("`preserve` needs `fraction` or `count`".into()),
            RankRule::Preserve { fraction: Some(f), .. } if !(f > 0.0 && f <= 1.0) => bad(format!("fraction {f} is not in (0, 1]")),
            RankRule::Preserve { count: Some(0), .. } => bad("count must be at least 1".into()),
            RankRule::Unfreeze { fraction } if !(0.0..1.0).contains(&fraction) => bad(format!("fraction {fraction} is not in [0, 1)")),
            RankRule::Adaptive { mrr, trr } if !(0.0 <= mrr && mrr <= trr && trr <= 1.0) => {
                bad(format!("need 0 ≤ mrr ≤ trr ≤ 1, got mrr {mrr}, trr {trr}"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the rule needs layer importances.
    pub fn is_adaptive(&self) -> bool {
        matches!(self, RankRule::Adaptive { .. })
    }

    /// Retained rank for an `[n, m]` matrix; `importance` is the normalised `Ĩ` (adaptive only).
    pub fn retained(&self, n: usize, m: usize, importance: Option<f64>) -> usize {
        let r = n.min(m);
        assert!(r >= 2, "a {n}×{m} matrix has no room for two subspaces");
        let k = match *self {
            RankRule::Preserve { count: Some(c), .. } => c,
            RankRule::Preserve { fraction: Some(f), .. } => (r as f64 * f).floor() as usize,
            RankRule::Preserve { .. } => unreachable!("validated"),
            RankRule::Unfreeze { fraction } => (r as f64 * (1.0 - fraction)).floor() as usize,
            RankRule::Adaptive { mrr, trr } => {
                let i = importance.expect("adaptive rank rule needs an importance");
                let rho = mrr + i * (trr - mrr);
                (rho * r as f64).floor().max(0.0) as usize
            }
        };
        k.clamp(1, r - 1)
    }
}

/// The least retained rank after a task that froze `previous_k` of `r`, under `[osft] grow`:
/// `previous_k + ⌊grow·r⌋`, capped at `r − 1` (one trainable direction always remains).
pub fn grown_floor(previous_k: usize, r: usize, grow: f64) -> usize {
    (previous_k + (grow * r as f64).floor() as usize).min(r.saturating_sub(1))
}

/// Check `[osft] grow`: a fraction of `R` per task in [0, 1); `key` names it in errors.
pub fn validate_grow(key: &str, grow: f64) -> Result<()> {
    if (0.0..1.0).contains(&grow) {
        Ok(())
    } else {
        Err(OsftError::BadRankRule { key: key.to_string(), msg: format!("{grow} is not a fraction of R in [0, 1)") })
    }
}

/// A per-module override: modules whose name matches `pattern` use `rule`. (Unknown keys are
/// rejected by the flattened rule, which sees every key but `pattern`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankOverride {
    /// Regex searched in the module name (e.g. `mlp\.down_proj`).
    pub pattern: String,
    /// The rule for matching modules.
    #[serde(flatten)]
    pub rule: RankRule,
}

/// The rank policy: a default rule and ordered overrides.
#[derive(Debug, Clone)]
pub struct RankPolicy {
    default: RankRule,
    overrides: Vec<(Regex, RankRule)>,
}

impl RankPolicy {
    /// Compile and check a policy.
    pub fn new(default: RankRule, overrides: &[RankOverride]) -> Result<Self> {
        default.validate("osft.rank")?;
        let mut compiled = vec![];
        for (i, o) in overrides.iter().enumerate() {
            let key = format!("osft.rank_overrides[{i}]");
            o.rule.validate(&key)?;
            let re = Regex::new(&o.pattern).map_err(|e| OsftError::BadRegex { key, pattern: o.pattern.clone(), msg: e.to_string() })?;
            compiled.push((re, o.rule.clone()));
        }
        Ok(RankPolicy { default, overrides: compiled })
    }

    /// The rule that applies to module `name`.
    pub fn rule_for(&self, name: &str) -> &RankRule {
        self.overrides.iter().find(|(re, _)| re.is_match(name)).map(|(_, r)| r).unwrap_or(&self.default)
    }

    /// Whether any applicable rule needs importances.
    pub fn needs_importance(&self) -> bool {
        self.default.is_adaptive() || self.overrides.iter().any(|(_, r)| r.is_adaptive())
    }
}

/// Normalise raw importances to mean 1 over all targets (the paper's `Ĩ = I / mean I`).
pub fn normalize_importance(raw: &[f64]) -> Vec<f64> {
    let mean = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
    if mean.abs() < 1e-12 {
        return vec![1.0; raw.len()];
    }
    raw.iter().map(|i| i / mean).collect()
}

/// Whether mean-normalisation breaks the adaptive rule on these raw importances, with a message
/// saying so. With a mean that is not positive, or small next to the values' spread, the
/// normalised scores reach far beyond the rule's range. `|Ĩ| > 5` puts `ρ` outside [−3, 3.6]
/// at the default mrr/trr, so nearly every `k` lands on a clamp (1 or R − 1). The layers then
/// train almost fully or not at all. Cosines that average near zero do this: LLaMA's q/k/v
/// projections map the hidden state into other spaces.
pub fn degenerate_importance(raw: &[f64]) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let n = raw.len() as f64;
    let mean = raw.iter().sum::<f64>() / n;
    let norm = normalize_importance(raw);
    let worst = norm.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    if mean > 0.0 && worst <= 5.0 {
        return None;
    }
    let (lo, hi) = norm.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    Some(format!(
        "the adaptive rank rule degenerates: mean importance {mean:.4} over {} targets, normalised scores from {lo:.1} to {hi:.1}, so the retained ranks land on the clamps [1, R−1]; consider `non_square = \"singular\"` (cosines of Σ in singular coordinates, always ≥ 0) or a uniform rule",
        raw.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_importance_is_reported() {
        // Positive cosines with a moderate spread: fine.
        assert_eq!(degenerate_importance(&[0.3, 0.5, 0.9, 0.6]), None);
        // Cosines around zero: the mean is tiny next to the spread.
        let msg = degenerate_importance(&[0.05, -0.04, 0.02, -0.02, 0.001]).expect("degenerate");
        assert!(msg.contains("degenerates") && msg.contains("5 targets"), "{msg}");
        // A negative mean flips every sign.
        assert!(degenerate_importance(&[-0.2, -0.1, 0.05]).is_some());
    }

    fn check(rule: RankRule, n: usize, m: usize, imp: Option<f64>, want: usize) {
        rule.validate("t").unwrap();
        assert_eq!(rule.retained(n, m, imp), want, "{rule:?} on {n}×{m} with {imp:?}");
    }

    #[test]
    fn rules_match_their_sources() {
        // PEFT: effective_rank 0.5 on 64×32 keeps 16 (measured in tests/fixtures/osft meta.json).
        check(RankRule::Preserve { fraction: Some(0.5), count: None }, 64, 32, None, 16);
        check(RankRule::Preserve { fraction: Some(0.5), count: None }, 16, 32, None, 8);
        check(RankRule::Preserve { fraction: None, count: Some(5) }, 64, 32, None, 5);
        // mini_trainer: unfreeze 0.25 on 4096² keeps 3072.
        check(RankRule::Unfreeze { fraction: 0.25 }, 4096, 4096, None, 3072);
        // Adaptive: Ĩ = 1 gives trr; Ĩ = 0 gives mrr.
        check(RankRule::Adaptive { mrr: 0.1, trr: 0.8 }, 100, 100, Some(1.0), 80);
        check(RankRule::Adaptive { mrr: 0.1, trr: 0.8 }, 100, 100, Some(0.0), 10);
    }

    #[test]
    fn ranks_are_clamped_to_leave_both_subspaces() {
        check(RankRule::Preserve { fraction: Some(1.0), count: None }, 10, 20, None, 9);
        check(RankRule::Preserve { fraction: None, count: Some(99) }, 10, 20, None, 9);
        check(RankRule::Unfreeze { fraction: 0.0 }, 10, 10, None, 9);
        check(RankRule::Adaptive { mrr: 0.1, trr: 0.8 }, 100, 100, Some(3.0), 99);
        check(RankRule::Adaptive { mrr: 0.1, trr: 0.8 }, 100, 100, Some(-2.0), 1);
    }

    #[test]
    fn bad_values_are_rejected_with_the_key() {
        let e = RankRule::Preserve { fraction: Some(1.5), count: None }.validate("osft.rank").unwrap_err().to_string();
        assert!(e.contains("osft.rank") && e.contains("1.5"), "{e}");
        assert!(RankRule::Unfreeze { fraction: 1.0 }.validate("k").is_err());
        assert!(RankRule::Adaptive { mrr: 0.9, trr: 0.8 }.validate("k").is_err());
        let e = RankPolicy::new(RankRule::default(), &[RankOverride { pattern: "(".into(), rule: RankRule::default() }]).unwrap_err();
        assert!(e.to_string().contains("rank_overrides[0]"), "{e}");
    }

    #[test]
    fn growth_adds_a_fraction_of_r_and_leaves_one_direction() {
        assert_eq!(grown_floor(32, 64, 0.25), 48);
        assert_eq!(grown_floor(32, 64, 0.0), 32);
        assert_eq!(grown_floor(60, 64, 0.25), 63);
        assert_eq!(grown_floor(10, 64, 0.01), 10, "⌊0.64⌋ adds nothing");
        assert!(validate_grow("osft.grow", 0.1).is_ok());
        for bad in [-0.1, 1.0, f64::NAN] {
            let e = validate_grow("osft.grow", bad).unwrap_err().to_string();
            assert!(e.contains("osft.grow"), "{e}");
        }
    }

    #[test]
    fn overrides_win_in_order() {
        let p = RankPolicy::new(
            RankRule::default(),
            &[
                RankOverride { pattern: r"mlp\.down_proj".into(), rule: RankRule::Unfreeze { fraction: 0.1 } },
                RankOverride { pattern: r"mlp\.".into(), rule: RankRule::Preserve { fraction: Some(0.25), count: None } },
            ],
        )
        .unwrap();
        assert_eq!(p.rule_for("model.layers.3.mlp.down_proj").retained(64, 64, None), 57);
        assert_eq!(p.rule_for("model.layers.3.mlp.up_proj").retained(64, 64, None), 16);
        assert_eq!(p.rule_for("model.layers.3.self_attn.q_proj").retained(64, 64, None), 32);
    }

    #[test]
    fn importance_is_normalised_to_mean_one() {
        let n = normalize_importance(&[0.2, 0.4, 0.6]);
        assert!((n.iter().sum::<f64>() / 3.0 - 1.0).abs() < 1e-12);
        assert!((n[0] - 0.5).abs() < 1e-12);
    }
}
