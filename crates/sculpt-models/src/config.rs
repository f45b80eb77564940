//! Reading Hugging Face `config.json` files: parse with serde, keeping the key path of any error,
//! then resolve into the no-`Option` configs the models use.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{ModelError, Result};

/// Deserialise `value` (the contents of `path`) into `T`; a type or missing-field error names the key.
pub fn from_value<T: DeserializeOwned>(path: &Path, value: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at the parent path; pull the field name into the key.
        let key = match (key.as_str(), inner.strip_prefix("missing field `")) {
            (".", Some(rest)) => rest.trim_end_matches('`').to_string(),
            (_, Some(rest)) => format!("{key}.{}", rest.trim_end_matches('`')),
            _ => key,
        };
        ModelError::config(path, key, inner)
    })
}

/// Read and parse a JSON file.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::format(path, format!("not valid JSON: {e}")))
}

/// `eos_token_id` may be one id or a list.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl OneOrMany {
    /// All ids.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            OneOrMany::One(x) => vec![*x],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Fail with a config error naming `key` unless `ok`.
pub fn check(path: &Path, ok: bool, key: &str, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(ModelError::config(path, key, msg()))
    }
}
