//! A pretrained model as a user has it on disk: a Hugging Face folder (`config.json`,
//! `model.safetensors` or shards, `tokenizer.json`) or a LLaMA-architecture `.gguf` file, loaded
//! into a burn module plus its tokenizer, and saved back as a folder transformers loads unchanged.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use tokenizers::Tokenizer;

use crate::config::read_json;
use crate::error::{ModelError, Result};
use crate::host::{StoreDtype, TensorMap};
use crate::layers::{NamedParams, ParamRef};
use crate::llama::{Llama, LlamaConfig};
use crate::safetensors_io;
use crate::t5::{T5Config, T5};

/// Files copied verbatim from the source folder when saving (tokenizer side-cars, generation defaults).
const SIDECAR_FILES: &[&str] = &["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

/// Default largest shard written (transformers' default is 5 GB).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// One of the supported model families.
#[derive(Debug)]
pub enum Model<B: Backend> {
    /// An encoder–decoder.
    T5(T5<B>),
    /// A decoder-only LLaMA.
    Llama(Llama<B>),
}

impl<B: Backend> NamedParams<B> for Model<B> {
    fn visit_params(&self, f: &mut dyn FnMut(&str, ParamRef<'_, B>)) {
        match self {
            Model::T5(m) => m.visit_params(f),
            Model::Llama(m) => m.visit_params(f),
        }
    }

    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut crate::layers::Linear<B>)) {
        match self {
            Model::T5(m) => m.visit_linears_mut(f),
            Model::Llama(m) => m.visit_linears_mut(f),
        }
    }
}

impl<B: Backend> Model<B> {
    /// `"t5"` or `"llama"`.
    pub fn family(&self) -> &'static str {
        match self {
            Model::T5(_) => "t5",
            Model::Llama(_) => "llama",
        }
    }
}

/// A model with everything needed to use it and to write it back.
#[derive(Debug)]
pub struct Pretrained<B: Backend> {
    /// The network.
    pub model: Model<B>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// `tokenizer.json` text, written back unchanged.
    pub tokenizer_json: String,
    /// `config.json` as read (or synthesised from GGUF metadata), written back with `torch_dtype` updated.
    pub raw_config: serde_json::Value,
    /// Dtype of the source weights (the default save dtype).
    pub source_dtype: StoreDtype,
    /// Where it came from.
    pub source: PathBuf,
    sidecars: Vec<(String, Vec<u8>)>,
}

/// Resolve a raw config into a model of its family and load the tensors.
fn build<B: Backend>(config_path: &Path, raw: &serde_json::Value, map: TensorMap, device: &B::Device) -> Result<Model<B>> {
    let model_type = raw
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ModelError::config(config_path, "model_type", "missing; expected \"t5\" or \"llama\""))?;
    match model_type {
        "t5" => Ok(Model::T5(T5::load(T5Config::from_json(config_path, raw)?, map, device)?)),
        "llama" => Ok(Model::Llama(Llama::load(LlamaConfig::from_json(config_path, raw)?, map, device)?)),
        other => Err(ModelError::config(config_path, "model_type", format!("unsupported {other:?}; expected \"t5\" or \"llama\""))),
    }
}

impl<B: Backend> Pretrained<B> {
    /// Load a Hugging Face folder or a `.gguf` file.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            return Self::load_gguf(path, device);
        }
        if !path.is_dir() {
            return Err(ModelError::format(path, "expected a Hugging Face model folder or a .gguf file"));
        }
        let config_path = path.join("config.json");
        let raw = read_json(&config_path)?;
        let map = safetensors_io::read_folder(path)?;
        let source_dtype = map.dtype.unwrap_or(StoreDtype::F32);
        let tok_path = path.join("tokenizer.json");
        let tokenizer_json = std::fs::read_to_string(&tok_path).map_err(|e| ModelError::io(&tok_path, e))?;
        let tokenizer = parse_tokenizer(&tok_path, &tokenizer_json)?;
        let model = build(&config_path, &raw, map, device)?;
        check_vocab(&tok_path, &tokenizer, &model)?;
        let mut sidecars = vec![];
        for name in SIDECAR_FILES {
            let p = path.join(name);
            if p.is_file() {
                sidecars.push((name.to_string(), std::fs::read(&p).map_err(|e| ModelError::io(&p, e))?));
            }
        }
        Ok(Pretrained { model, tokenizer, tokenizer_json, raw_config: raw, source_dtype, source: path.to_path_buf(), sidecars })
    }

    fn load_gguf(path: &Path, device: &B::Device) -> Result<Self> {
        let g = crate::gguf::read_gguf(path)?;
        let model = build(path, &g.config, g.tensors, device)?;
        check_vocab(path, &g.tokenizer, &model)?;
        Ok(Pretrained {
            model,
            tokenizer: g.tokenizer,
            tokenizer_json: g.tokenizer_json,
            raw_config: g.config,
            source_dtype: StoreDtype::F32,
            source: path.to_path_buf(),
            sidecars: vec![],
        })
    }

    /// Write a Hugging Face folder at `dir` (weights in `dtype`, default: the source dtype).
    ///
    /// The folder is assembled next to `dir` and renamed into place, so an existing `dir` is only
    /// replaced once the new one is complete; a failure leaves it untouched.
    pub fn save(&self, dir: &Path, dtype: Option<StoreDtype>) -> Result<()> {
        self.files().save(&self.model.export(), dir, dtype)
    }

    /// Everything but the network: what [`ModelFiles::save`] needs to write a folder for
    /// weights trained elsewhere.
    pub fn files(&self) -> ModelFiles {
        ModelFiles {
            tokenizer: self.tokenizer.clone(),
            tokenizer_json: self.tokenizer_json.clone(),
            raw_config: self.raw_config.clone(),
            source_dtype: self.source_dtype,
            source: self.source.clone(),
            sidecars: self.sidecars.clone(),
        }
    }
}

/// The files of a model besides its weights (tokenizer, config, sidecars), to write the weights
/// of a network back as a Hugging Face folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// `tokenizer.json` text.
    pub tokenizer_json: String,
    /// `config.json`.
    pub raw_config: serde_json::Value,
    /// Dtype of the source weights (the default save dtype).
    pub source_dtype: StoreDtype,
    /// Where the model came from.
    pub source: PathBuf,
    sidecars: Vec<(String, Vec<u8>)>,
}

impl ModelFiles {
    /// A sidecar file read with the model (`tokenizer_config.json`, …), by name.
    pub fn sidecar(&self, name: &str) -> Option<&[u8]> {
        self.sidecars.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice())
    }

    /// Write `map` (the weights, Hugging Face names) as a folder at `dir`, atomically: the
    /// folder is assembled next to `dir` and renamed into place, so an existing `dir` is only
    /// replaced once the new one is complete; a failure leaves it untouched.
    pub fn save(&self, map: &TensorMap, dir: &Path, dtype: Option<StoreDtype>) -> Result<()> {
        let dtype = dtype.unwrap_or(self.source_dtype);
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
        let name = dir.file_name().ok_or_else(|| ModelError::format(dir, "not a folder name"))?.to_string_lossy().to_string();
        let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        }
        let result = (|| -> Result<()> {
            std::fs::create_dir(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
            safetensors_io::write_folder(&tmp, map, dtype, DEFAULT_MAX_SHARD_BYTES)?;
            let mut config = self.raw_config.clone();
            if let Some(obj) = config.as_object_mut() {
                // transformers ≥ 4.56 writes `dtype`, older versions `torch_dtype`.
                let key = if obj.contains_key("dtype") { "dtype" } else { "torch_dtype" };
                obj.insert(key.into(), dtype.torch_name().into());
            }
            write(&tmp.join("config.json"), serde_json::to_string_pretty(&config).expect("json").as_bytes())?;
            write(&tmp.join("tokenizer.json"), self.tokenizer_json.as_bytes())?;
            for (n, bytes) in &self.sidecars {
                write(&tmp.join(n), bytes)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| ModelError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| ModelError::io(dir, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
        }
        Ok(())
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

/// Parse `tokenizer.json` text.
pub fn parse_tokenizer(path: &Path, json: &str) -> Result<Tokenizer> {
    json.parse::<Tokenizer>().map_err(|e| ModelError::Tokenizer { path: path.to_path_buf(), msg: e.to_string() })
}

fn check_vocab<B: Backend>(path: &Path, tok: &Tokenizer, model: &Model<B>) -> Result<()> {
    let vocab = match model {
        Model::T5(m) => m.config().vocab_size,
        Model::Llama(m) => m.config().vocab_size,
    };
    let n = tok.get_vocab_size(true);
    if n > vocab {
        return Err(ModelError::Tokenizer {
            path: path.to_path_buf(),
            msg: format!("tokenizer has {n} tokens but the model's vocab_size is {vocab}"),
        });
    }
    Ok(())
}
