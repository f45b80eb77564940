//! Which linear layers OSFT decomposes: per-family defaults (the spec's §1.2 / D10) or a regex list.

use regex::Regex;

use crate::error::{OsftError, Result};

/// LLaMA: the seven projections of every block.
pub const LLAMA_TARGETS: &[&str] = &[r"\.self_attn\.(q|k|v|o)_proj$", r"\.mlp\.(gate|up|down)_proj$"];

/// T5: self- and cross-attention q/k/v/o and the feed-forward `wi`/`wi_0`/`wi_1`/`wo`.
pub const T5_TARGETS: &[&str] = &[r"\.(SelfAttention|EncDecAttention)\.(q|k|v|o)$", r"\.DenseReluDense\.(wi|wi_0|wi_1|wo)$"];

/// Default target patterns for a model family (`"llama"` or `"t5"`).
pub fn default_targets(family: &str) -> Vec<String> {
    let list = match family {
        "t5" => T5_TARGETS,
        _ => LLAMA_TARGETS,
    };
    list.iter().map(|s| s.to_string()).collect()
}

/// A compiled target selector.
#[derive(Debug, Clone)]
pub struct TargetSet {
    patterns: Vec<String>,
    regexes: Vec<Regex>,
}

impl TargetSet {
    /// Compile `patterns` (searched in the Hugging Face module name, e.g. `model.layers.0.mlp.up_proj`).
    pub fn new(patterns: &[String]) -> Result<Self> {
        let regexes = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p).map_err(|e| OsftError::BadRegex { key: format!("osft.targets[{i}]"), pattern: p.clone(), msg: e.to_string() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TargetSet { patterns: patterns.to_vec(), regexes })
    }

    /// Whether module `name` is a target.
    pub fn matches(&self, name: &str) -> bool {
        self.regexes.iter().any(|r| r.is_match(name))
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pick_the_projections_and_nothing_else() {
        let l = TargetSet::new(&default_targets("llama")).unwrap();
        for n in ["model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "model.layers.2.self_attn.o_proj"] {
            assert!(l.matches(n), "{n}");
        }
        for n in ["lm_head", "model.layers.0.self_attn.q_proj_extra"] {
            assert!(!l.matches(n), "{n}");
        }
        let t = TargetSet::new(&default_targets("t5")).unwrap();
        for n in [
            "encoder.block.0.layer.0.SelfAttention.q",
            "decoder.block.1.layer.1.EncDecAttention.o",
            "decoder.block.1.layer.2.DenseReluDense.wi_1",
            "encoder.block.1.layer.1.DenseReluDense.wo",
        ] {
            assert!(t.matches(n), "{n}");
        }
        assert!(!t.matches("lm_head"));
    }
}
