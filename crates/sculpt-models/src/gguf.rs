//! GGUF import for LLaMA-architecture models, so that models in llama.cpp's format can be trained.
//!
//! [`read_gguf`] reads a GGUF file (version 2 or 3) and turns it into what the rest of the crate
//! reads from a Hugging Face checkpoint folder:
//!
//! * a LLaMA `config.json` equivalent, built from the `llama.*` metadata;
//! * every tensor, renamed to its Hugging Face name, in PyTorch layout, dequantized to f32;
//!   llama.cpp's converter permutes the rows of `q_proj` and `k_proj` for its rotary layout, and
//!   that permutation is undone here, so the weights equal the Hugging Face originals;
//! * the tokenizer, rebuilt from the `tokenizer.ggml.*` metadata as a `tokenizer.json`.
//!
//! Supported tensor types: F32, F16, BF16, Q8_0, Q4_0 and Q4_1, dequantized exactly as ggml does.
//! Any other type is reported as [`ModelError::UnsupportedDtype`].
//!
//! Supported tokenizers: `tokenizer.ggml.model = "gpt2"` (byte-level BPE, splitting text with
//! the regexes llama.cpp uses for the `tokenizer.ggml.pre` value: llama.cpp's `default` (also
//! used when the key is missing), the `gpt-2` family, the `smollm` family, the `llama-bpe`/`llama3`
//! family, the `qwen2` family and `tekken`; any other value is an error), and `"llama"`
//! (SentencePiece BPE with scores and byte fallback, laid out like Hugging Face's
//! `LlamaTokenizerFast` json). Control and user-defined tokens (`tokenizer.ggml.token_type` 3 and
//! 4) become added tokens; BOS/EOS are added only as `tokenizer.ggml.add_bos_token` /
//! `add_eos_token` say (defaulting as llama.cpp does).
//!
//! The file is read into memory in full. Bad input never panics: a truncated file, a bad magic, an
//! unknown value or tensor type, or an out-of-range offset is an error that names the file, the
//! key or tensor, and what was expected.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use serde_json::{json, Map, Value as Json};

use crate::error::{ModelError, Result};
use crate::host::{HostTensor, StoreDtype, TensorMap};

/// A LLaMA model imported from a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufModel {
    /// A Hugging Face LLaMA `config.json` equivalent, built from the GGUF metadata: keys
    /// `architectures` (`["LlamaForCausalLM"]`), `model_type` (`"llama"`), `vocab_size`,
    /// `hidden_size`, `intermediate_size`, `num_hidden_layers`, `num_attention_heads`,
    /// `num_key_value_heads`, `max_position_embeddings`, `rms_norm_eps`, `rope_theta`,
    /// `rope_scaling`, `tie_word_embeddings`, `bos_token_id`, `eos_token_id`, `pad_token_id`,
    /// `head_dim`, `attention_bias`, `mlp_bias`, `hidden_act` (`"silu"`) and `torch_dtype`
    /// (`"float32"`).
    pub config: serde_json::Value,
    /// Every tensor of the file under its Hugging Face name (`model.embed_tokens.weight`,
    /// `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`, `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
    /// `model.layers.{i}.input_layernorm.weight`, `model.layers.{i}.post_attention_layernorm.weight`,
    /// `model.norm.weight`, and `lm_head.weight` only if the file has `output.weight`), in PyTorch
    /// layout (`[out, in]` for linears), dequantized to f32, with `q_proj`/`k_proj` un-permuted.
    pub tensors: TensorMap,
    /// The tokenizer rebuilt from the `tokenizer.ggml.*` metadata, as a `tokenizer.json` string.
    pub tokenizer_json: String,
    /// The same tokenizer, parsed.
    pub tokenizer: tokenizers::Tokenizer,
}

/// Read a LLaMA-architecture GGUF file: its config, all its tensors (dequantized to f32 and
/// renamed to Hugging Face names) and its tokenizer.
///
/// Errors name the file and the key or tensor at fault: the file is not GGUF v2/v3, is truncated,
/// `general.architecture` is not `"llama"`, a required `llama.*` key is missing, a tensor has a
/// type other than F32/F16/BF16/Q8_0/Q4_0/Q4_1, a tensor is unknown, or the tokenizer metadata
/// cannot be turned into a tokenizer.
pub fn read_gguf(path: &Path) -> Result<GgufModel> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let file = parse_gguf(path, &bytes)?;
    build_model(path, &file, &bytes)
}

// ---------------------------------------------------------------------------------------------
// Container parsing
// ---------------------------------------------------------------------------------------------

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "uint8",
            MetaValue::I8(_) => "int8",
            MetaValue::U16(_) => "uint16",
            MetaValue::I16(_) => "int16",
            MetaValue::U32(_) => "uint32",
            MetaValue::I32(_) => "int32",
            MetaValue::F32(_) => "float32",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "uint64",
            MetaValue::I64(_) => "int64",
            MetaValue::F64(_) => "float64",
        }
    }

    /// The value as an integer, if it is one (of any width or signedness).
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float. An f32 is widened through its shortest decimal form, so that
    /// `1e-5f32` becomes `1e-5` rather than `9.999999747378752e-6`.
    fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.to_string().parse::<f64>().unwrap_or(f64::from(v))),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }
}

/// A tensor's entry in the tensor-info table.
#[derive(Debug, Clone)]
struct TensorInfo {
    name: String,
    /// Dimensions as GGUF lists them: innermost (`ne[0]`, the contiguous one) first.
    dims: Vec<u64>,
    ggml_type: u32,
    /// Offset from the start of the data section.
    offset: u64,
}

/// The parsed header of a GGUF file (tensor data stays in the byte buffer).
#[derive(Debug)]
struct GgufFile {
    meta: HashMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    data_start: u64,
}

/// A cursor over the file bytes whose reads fail (never panic) past the end.
struct Reader<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, what: &str, need: u64) -> ModelError {
        ModelError::format(
            self.path,
            format!(
                "truncated GGUF file: {what} needs {need} byte(s) at offset {}, but the file is only {} bytes long",
                self.pos,
                self.buf.len()
            ),
        )
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(self.truncated(what, n));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            ModelError::format(
                self.path,
                format!("{what}: string at offset {start} is not valid UTF-8 ({e})"),
            )
        })
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.take(1, what)?[0]),
            1 => MetaValue::I8(self.take(1, what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let b = self.take(1, what)?[0];
                match b {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    b => {
                        return Err(ModelError::format(
                            self.path,
                            format!("{what}: bool at offset {} is {b}, expected 0 or 1", self.pos - 1),
                        ))
                    }
                }
            }
            8 => MetaValue::Str(self.string(what)?),
            9 => {
                if depth >= 4 {
                    return Err(ModelError::format(
                        self.path,
                        format!("{what}: arrays nested more than 4 deep"),
                    ));
                }
                let elem_ty = self.u32(what)?;
                let n = self.u64(what)?;
                let min = min_value_size(elem_ty).ok_or_else(|| {
                    ModelError::format(
                        self.path,
                        format!("{what}: array element type {elem_ty} is not a GGUF value type (expected 0..=12)"),
                    )
                })?;
                if n.checked_mul(min).is_none_or(|b| b > self.remaining() as u64) {
                    return Err(self.truncated(&format!("{what} (an array of {n} elements)"), n.saturating_mul(min)));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem_ty, what, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => {
                return Err(ModelError::format(
                    self.path,
                    format!("{what}: value type {t} is not a GGUF value type (expected 0..=12)"),
                ))
            }
        })
    }
}

/// The fewest bytes one value of GGUF value type `ty` takes, or `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

/// Parse the header, metadata and tensor infos of a GGUF file held in `buf`.
fn parse_gguf(path: &Path, buf: &[u8]) -> Result<GgufFile> {
    let mut r = Reader { path, buf, pos: 0 };
    let magic = r.take(4, "the magic number")?;
    if magic != b"GGUF" {
        return Err(ModelError::format(
            path,
            format!(
                "not a GGUF file: the magic number is {:?} ({magic:02x?}), expected \"GGUF\"",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = r.u32("the GGUF version")?;
    match version {
        2 | 3 => {}
        1 => return Err(ModelError::format(
            path,
            "GGUF version 1 is not supported (expected version 2 or 3); re-convert the model with a current llama.cpp",
        )),
        v if (2..=3).contains(&v.swap_bytes()) => {
            return Err(ModelError::format(
                path,
                "big-endian GGUF files are not supported (expected little-endian)",
            ))
        }
        v => {
            return Err(ModelError::format(
                path,
                format!("unsupported GGUF version {v}, expected 2 or 3"),
            ))
        }
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    // Each metadata entry takes at least 13 bytes, each tensor info at least 32.
    if n_kv > r.remaining() as u64 / 13 {
        return Err(ModelError::format(
            path,
            format!(
                "the header claims {n_kv} metadata entries, more than a file of {} bytes can hold",
                buf.len()
            ),
        ));
    }
    if n_tensors > r.remaining() as u64 / 32 {
        return Err(ModelError::format(
            path,
            format!(
                "the header claims {n_tensors} tensors, more than a file of {} bytes can hold",
                buf.len()
            ),
        ));
    }

    let mut meta = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.string(&format!("the key of metadata entry #{i}"))?;
        let what = format!("metadata key `{key}`");
        let ty = r.u32(&what)?;
        let value = r.value(ty, &what, 0)?;
        if meta.insert(key.clone(), value).is_some() {
            return Err(ModelError::format(
                path,
                format!("metadata key `{key}` appears more than once"),
            ));
        }
    }

    let alignment = match meta.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_i128() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= u32::MAX as i128 => a as u64,
            _ => {
                return Err(ModelError::config(
                    path,
                    "general.alignment",
                    format!("expected a power of two, found {}", describe(v)),
                ))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen = HashSet::new();
    for i in 0..n_tensors {
        let name = r.string(&format!("the name of tensor #{i}"))?;
        let what = format!("the info of tensor `{name}`");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > 4 {
            return Err(ModelError::format(
                path,
                format!("tensor `{name}` has {n_dims} dimensions, expected 1 to 4"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&what)?);
        }
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_none_or(|n| n > isize::MAX as u64 / 4)
        {
            return Err(ModelError::format(
                path,
                format!("tensor `{name}` has absurd dimensions {dims:?}"),
            ));
        }
        let ggml_type = r.u32(&what)?;
        let offset = r.u64(&what)?;
        if offset % alignment != 0 {
            return Err(ModelError::format(
                path,
                format!("tensor `{name}` has data offset {offset}, expected a multiple of the alignment {alignment}"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(ModelError::format(
                path,
                format!("tensor `{name}` appears more than once"),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    Ok(GgufFile {
        meta,
        tensors,
        data_start,
    })
}

/// A short description of a metadata value for error messages.
fn describe(v: &MetaValue) -> String {
    match v {
        MetaValue::Str(s) if s.len() <= 64 => format!("string {s:?}"),
        MetaValue::Array(a) => format!("an array of {} element(s)", a.len()),
        MetaValue::Str(_) => "a long string".to_string(),
        MetaValue::Bool(b) => format!("bool {b}"),
        v => match (v.as_i128(), v.as_f64()) {
            (Some(i), _) => format!("{} {i}", v.type_name()),
            (None, Some(f)) => format!("{} {f}", v.type_name()),
            _ => v.type_name().to_string(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Typed metadata access
// ---------------------------------------------------------------------------------------------

/// Metadata with typed getters whose errors name the file and key.
struct Meta<'a> {
    path: &'a Path,
    map: &'a HashMap<String, MetaValue>,
}

impl<'a> Meta<'a> {
    fn err(&self, key: &str, msg: impl Into<String>) -> ModelError {
        ModelError::config(self.path, key, msg)
    }

    fn missing(&self, key: &str, what: &str) -> ModelError {
        self.err(key, format!("missing; expected {what}"))
    }

    fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i128() {
                Some(i) if (0..=u64::MAX as i128).contains(&i) => Ok(Some(i as u64)),
                _ => Err(self.err(key, format!("expected a non-negative integer, found {}", describe(v)))),
            },
        }
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.uint(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| self.err(key, format!("value {v} is too large"))),
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?
            .ok_or_else(|| self.missing(key, "a non-negative integer"))
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {}", describe(v)))),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, found {}", describe(v)))),
        }
    }

    fn req_string(&self, key: &str) -> Result<&'a str> {
        self.string(key)?.ok_or_else(|| self.missing(key, "a string"))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected a bool, found {}", describe(v)))),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [MetaValue]>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.err(key, format!("expected an array, found {}", describe(v)))),
        }
    }

    fn string_array(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(a) = self.array(key)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                MetaValue::Str(s) => Ok(s.as_str()),
                v => Err(self.err(key, format!("element {i} is {}, expected a string", describe(v)))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(a) = self.array(key)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v.as_i128().and_then(|x| i64::try_from(x).ok()) {
                Some(x) => Ok(x),
                None => Err(self.err(key, format!("element {i} is {}, expected an integer", describe(v)))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn float_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(a) = self.array(key)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                MetaValue::F32(x) => Ok(f64::from(*x)),
                MetaValue::F64(x) => Ok(*x),
                v => Err(self.err(key, format!("element {i} is {}, expected a float", describe(v)))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor types and dequantization
// ---------------------------------------------------------------------------------------------

/// The ggml tensor types this module can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block)
    fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }
}

/// ggml's name for tensor type `id` (for error messages).
fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    };
    format!("ggml type {id} ({name}); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1")
}

#[inline]
fn f16_le(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// Dequantize `src` (whole blocks of type `ty`) into `n` f32 values, as ggml does.
fn dequantize(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => {
            out.extend(
                src.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        GgmlType::F16 => out.extend(src.chunks_exact(2).map(f16_le)),
        GgmlType::BF16 => {
            out.extend(
                src.chunks_exact(2)
                    .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
            );
        }
        GgmlType::Q8_0 => {
            // struct { f16 d; i8 qs[32]; }: x = qs[j] * d
            for blk in src.chunks_exact(34) {
                let d = f16_le(&blk[0..2]);
                out.extend(blk[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_0 => {
            // struct { f16 d; u8 qs[16]; }: x[j] = (lo(qs[j]) - 8) * d, x[j + 16] = (hi(qs[j]) - 8) * d
            for blk in src.chunks_exact(18) {
                let d = f16_le(&blk[0..2]);
                let qs = &blk[2..18];
                out.extend(qs.iter().map(|&q| f32::from((q & 0x0F) as i8 - 8) * d));
                out.extend(qs.iter().map(|&q| f32::from((q >> 4) as i8 - 8) * d));
            }
        }
        GgmlType::Q4_1 => {
            // struct { f16 d; f16 m; u8 qs[16]; }: x[j] = lo(qs[j]) * d + m, x[j + 16] = hi(qs[j]) * d + m
            for blk in src.chunks_exact(20) {
                let d = f16_le(&blk[0..2]);
                let m = f16_le(&blk[2..4]);
                let qs = &blk[4..20];
                out.extend(qs.iter().map(|&q| f32::from(q & 0x0F) * d + m));
                out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
            }
        }
    }
    debug_assert_eq!(out.len(), n);
    out
}

/// Read tensor `info` out of the file bytes as a PyTorch-layout f32 tensor.
fn load_tensor(path: &Path, file: &GgufFile, buf: &[u8], info: &TensorInfo) -> Result<HostTensor> {
    let name = &info.name;
    let ty = GgmlType::from_id(info.ggml_type).ok_or_else(|| ModelError::UnsupportedDtype {
        path: path.to_path_buf(),
        name: name.clone(),
        dtype: ggml_type_name(info.ggml_type),
    })?;
    // Overflow was ruled out when the infos were parsed.
    let n_elems: u64 = info.dims.iter().product();
    let (block_elems, block_bytes) = ty.block();
    if !info.dims[0].is_multiple_of(block_elems) {
        return Err(ModelError::format(
            path,
            format!(
                "tensor `{name}` of type {ty:?} has {} columns (ne[0]), expected a multiple of the block size {block_elems}",
                info.dims[0]
            ),
        ));
    }
    let n_bytes = n_elems / block_elems * block_bytes;
    let start = file.data_start.checked_add(info.offset);
    let end = start.and_then(|s| s.checked_add(n_bytes));
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) if e <= buf.len() as u64 => (s as usize, e as usize),
        _ => {
            return Err(ModelError::format(
                path,
                format!(
                    "tensor `{name}`: its {n_bytes} bytes at data offset {} (file offset {}) run past the end of the {}-byte file",
                    info.offset,
                    file.data_start.saturating_add(info.offset),
                    buf.len()
                ),
            ))
        }
    };
    let data = dequantize(ty, &buf[start..end], n_elems as usize);
    let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
    Ok(HostTensor::new(shape, data))
}

/// Undo llama.cpp's rotary permutation of the rows of a q/k projection weight (or bias).
///
/// The converter does `w.reshape(n_head, 2, d/2, rest).swapaxes(1, 2)`, so GGUF row
/// `h*d + 2*j + t` holds Hugging Face row `h*d + t*(d/2) + j`; this puts every row back.
fn unpermute_rows(t: &HostTensor, n_head: usize) -> Option<HostTensor> {
    let rows = *t.shape.first()?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return None;
    }
    let cols: usize = t.shape[1..].iter().product();
    let d = rows / n_head;
    let half = d / 2;
    let mut out = vec![0.0f32; t.data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for s in 0..2 {
                let src = (h * d + 2 * j + s) * cols;
                let dst = (h * d + s * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&t.data[src..src + cols]);
            }
        }
    }
    Some(HostTensor::new(t.shape.clone(), out))
}

// ---------------------------------------------------------------------------------------------
// Config and tensor names
// ---------------------------------------------------------------------------------------------

/// The hyper-parameters needed to build the config and to un-permute q/k.
struct Hparams {
    n_layers: usize,
    n_head: usize,
    n_kv_head: usize,
}

/// Error unless `general.architecture` is `"llama"`.
fn check_architecture(meta: &Meta) -> Result<()> {
    let arch = meta.req_string("general.architecture")?;
    if arch != "llama" {
        return Err(meta.err(
            "general.architecture",
            format!("expected \"llama\", found {arch:?} (only LLaMA-architecture GGUF files can be imported)"),
        ));
    }
    Ok(())
}

/// The Hugging Face config for the `llama.*` metadata (the architecture is already checked).
fn build_config(meta: &Meta, tensors: &[TensorInfo], n_vocab_tokens: usize) -> Result<(Json, Hparams)> {
    let hidden = meta.req_usize("llama.embedding_length")?;
    let n_layers = meta.req_usize("llama.block_count")?;
    let ff = meta.req_usize("llama.feed_forward_length")?;
    let n_head = meta.req_usize("llama.attention.head_count")?;
    let ctx = meta.req_usize("llama.context_length")?;
    let n_kv_head = meta.usize("llama.attention.head_count_kv")?.unwrap_or(n_head);
    let eps = meta
        .float("llama.attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| meta.missing("llama.attention.layer_norm_rms_epsilon", "a float"))?;
    let rope_theta = meta.float("llama.rope.freq_base")?.unwrap_or(10000.0);
    if n_head == 0 {
        return Err(meta.err("llama.attention.head_count", "expected at least 1 head, found 0"));
    }
    if n_kv_head == 0 || n_head % n_kv_head != 0 {
        return Err(meta.err(
            "llama.attention.head_count_kv",
            format!("expected a positive divisor of llama.attention.head_count = {n_head}, found {n_kv_head}"),
        ));
    }
    let head_dim = match meta.usize("llama.attention.key_length")? {
        Some(d) => d,
        None => {
            if hidden % n_head != 0 {
                return Err(meta.err(
                    "llama.embedding_length",
                    format!("{hidden} is not a multiple of llama.attention.head_count = {n_head}, and llama.attention.key_length is missing"),
                ));
            }
            hidden / n_head
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(meta.err(
            "llama.attention.key_length",
            format!("expected a positive even head dimension, found {head_dim}"),
        ));
    }
    if let Some(v) = meta.usize("llama.attention.value_length")? {
        if v != head_dim {
            return Err(meta.err(
                "llama.attention.value_length",
                format!("expected {head_dim} (the key length), found {v}: differing key and value head sizes are not supported"),
            ));
        }
    }
    if let Some(r) = meta.usize("llama.rope.dimension_count")? {
        if r != head_dim {
            return Err(meta.err(
                "llama.rope.dimension_count",
                format!(
                    "expected {head_dim} (the head dimension), found {r}: partial rotary embeddings are not supported"
                ),
            ));
        }
    }
    if let Some(e) = meta.uint("llama.expert_count")? {
        if e > 0 {
            return Err(meta.err(
                "llama.expert_count",
                format!("found {e} experts: mixture-of-experts models are not supported"),
            ));
        }
    }

    let mut scaling_type = meta.string("llama.rope.scaling.type")?.map(str::to_string);
    let mut factor = meta.float("llama.rope.scaling.factor")?;
    if let Some(f) = meta.float("llama.rope.scale_linear")? {
        scaling_type.get_or_insert_with(|| "linear".to_string());
        factor.get_or_insert(f);
    }
    let rope_scaling = match scaling_type.as_deref() {
        None | Some("none") => Json::Null,
        Some("linear") => match factor {
            Some(1.0) => Json::Null,
            Some(f) if f > 0.0 => json!({ "rope_type": "linear", "type": "linear", "factor": f }),
            _ => {
                return Err(meta.err(
                    "llama.rope.scaling.factor",
                    format!("expected a positive factor for linear rope scaling, found {factor:?}"),
                ))
            }
        },
        Some(other) => {
            return Err(meta.err(
                "llama.rope.scaling.type",
                format!("rope scaling {other:?} is not supported (expected \"none\" or \"linear\")"),
            ))
        }
    };

    let vocab_size = match meta.usize("llama.vocab_size")? {
        Some(v) => v,
        None => n_vocab_tokens,
    };
    let has_output = tensors.iter().any(|t| t.name == "output.weight");
    let has = |suffix: &str| {
        tensors
            .iter()
            .any(|t| t.name.starts_with("blk.") && t.name.ends_with(suffix))
    };
    let attention_bias = has(".attn_q.bias") || has(".attn_k.bias") || has(".attn_v.bias") || has(".attn_output.bias");
    let mlp_bias = has(".ffn_gate.bias") || has(".ffn_up.bias") || has(".ffn_down.bias");

    let token_id = |key: &str| -> Result<Json> {
        match meta.uint(key)? {
            None => Ok(Json::Null),
            Some(id) if (id as u128) < n_vocab_tokens as u128 => Ok(json!(id)),
            Some(id) => Err(meta.err(
                key,
                format!("token id {id} is out of range for a vocabulary of {n_vocab_tokens} tokens"),
            )),
        }
    };
    let bos = token_id("tokenizer.ggml.bos_token_id")?;
    let eos = token_id("tokenizer.ggml.eos_token_id")?;
    // llama.cpp ignores an out-of-range padding id; so do we.
    let pad = match meta.uint("tokenizer.ggml.padding_token_id")? {
        Some(id) if (id as u128) < n_vocab_tokens as u128 => json!(id),
        _ => Json::Null,
    };

    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv_head,
        "head_dim": head_dim,
        "max_position_embeddings": ctx,
        "rms_norm_eps": eps,
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": !has_output,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "attention_bias": attention_bias,
        "mlp_bias": mlp_bias,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    Ok((
        config,
        Hparams {
            n_layers,
            n_head,
            n_kv_head,
        },
    ))
}

/// Which rows permutation a tensor needs undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permute {
    None,
    /// q_proj: permuted with the attention head count.
    Query,
    /// k_proj: permuted with the key/value head count.
    Key,
}

/// The Hugging Face name of GGUF tensor `name`, or an explanation of why it has none.
fn hf_name(name: &str, n_layers: usize) -> std::result::Result<(String, Permute), String> {
    match name {
        "token_embd.weight" => return Ok(("model.embed_tokens.weight".into(), Permute::None)),
        "output_norm.weight" => return Ok(("model.norm.weight".into(), Permute::None)),
        "output.weight" => return Ok(("lm_head.weight".into(), Permute::None)),
        "rope_freqs.weight" => {
            return Err("llama3-style rope scaling (a `rope_freqs` tensor) is not supported".into());
        }
        _ => {}
    }
    let unknown = || {
        "not a known LLaMA tensor (expected token_embd.weight, output_norm.weight, output.weight or \
         blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight)"
            .to_string()
    };
    let rest = name.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    if layer >= n_layers {
        return Err(format!(
            "layer {layer} is out of range: llama.block_count is {n_layers}"
        ));
    }
    let (part, kind) = rest.rsplit_once('.').ok_or_else(unknown)?;
    if kind != "weight" && kind != "bias" {
        return Err(unknown());
    }
    let (hf, permute) = match part {
        "attn_norm" => ("input_layernorm", Permute::None),
        "ffn_norm" => ("post_attention_layernorm", Permute::None),
        "attn_q" => ("self_attn.q_proj", Permute::Query),
        "attn_k" => ("self_attn.k_proj", Permute::Key),
        "attn_v" => ("self_attn.v_proj", Permute::None),
        "attn_output" => ("self_attn.o_proj", Permute::None),
        "ffn_gate" => ("mlp.gate_proj", Permute::None),
        "ffn_up" => ("mlp.up_proj", Permute::None),
        "ffn_down" => ("mlp.down_proj", Permute::None),
        p if p.contains("exps") || p == "ffn_gate_inp" => {
            return Err("mixture-of-experts tensors are not supported".into());
        }
        _ => return Err(unknown()),
    };
    if kind == "bias" && matches!(part, "attn_norm" | "ffn_norm") {
        return Err(unknown());
    }
    Ok((format!("model.layers.{layer}.{hf}.{kind}"), permute))
}

fn build_model(path: &Path, file: &GgufFile, buf: &[u8]) -> Result<GgufModel> {
    let meta = Meta { path, map: &file.meta };
    check_architecture(&meta)?;
    let (tokenizer_json, tokenizer) = build_tokenizer(path, &meta)?;
    let n_tokens = meta.array("tokenizer.ggml.tokens")?.map_or(0, <[MetaValue]>::len);
    let (config, hp) = build_config(&meta, &file.tensors, n_tokens)?;

    // Map every name first, so that an unknown tensor is reported before any dequantization.
    let mut plan = Vec::with_capacity(file.tensors.len());
    for info in &file.tensors {
        let (hf, permute) = hf_name(&info.name, hp.n_layers)
            .map_err(|msg| ModelError::format(path, format!("tensor `{}`: {msg}", info.name)))?;
        plan.push((info, hf, permute));
    }

    let mut map = TensorMap::new(path);
    map.dtype = Some(StoreDtype::F32);
    for (info, hf, permute) in plan {
        let mut t = load_tensor(path, file, buf, info)?;
        let n_head = match permute {
            Permute::None => None,
            Permute::Query => Some((hp.n_head, "llama.attention.head_count")),
            Permute::Key => Some((hp.n_kv_head, "llama.attention.head_count_kv")),
        };
        if let Some((n_head, key)) = n_head {
            t = unpermute_rows(&t, n_head).ok_or_else(|| {
                ModelError::format(
                    path,
                    format!(
                        "tensor `{}` has shape {:?}: its {} rows are not a multiple of 2 * {key} = {}",
                        info.name,
                        t.shape,
                        t.shape.first().copied().unwrap_or(0),
                        2 * n_head
                    ),
                )
            })?;
        }
        if hf == "model.embed_tokens.weight" {
            let vocab = config["vocab_size"].as_u64().unwrap_or(0) as usize;
            if t.shape.first() != Some(&vocab) {
                return Err(ModelError::format(
                    path,
                    format!(
                        "tensor `{}` has shape {:?}, expected {vocab} rows (the vocabulary size)",
                        info.name, t.shape
                    ),
                ));
            }
        }
        map.insert(hf, t);
    }
    Ok(GgufModel {
        config,
        tensors: map,
        tokenizer_json,
        tokenizer,
    })
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

// llama.cpp token types (tokenizer.ggml.token_type).
const TOKEN_UNKNOWN: i64 = 2;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// The GPT-2 regex, as llama.cpp spells it (ByteLevel's own regex adds a redundant `|\s+`).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// The Llama 3 split regex (as in Meta's tokenizer.json).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex (as in Qwen's tokenizer.json).
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Tekken (Mistral Nemo) split regex (as in Mistral's tokenizer.json).
const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values [`bpe_pre_tokenizer`] knows.
const BPE_PRE_NAMES: &[&str] = &[
    "default",
    "gpt-2",
    "gpt2",
    "phi-2",
    "roberta-bpe",
    "mpt",
    "olmo",
    "jais",
    "trillion",
    "exaone4",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva-7b",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "dbrx",
    "smaug-bpe",
    "qwen2",
    "stablelm2",
    "megrez",
    "deepseek-r1-qwen",
    "tekken",
];

/// For a byte-level BPE tokenizer with `tokenizer.ggml.pre = pre`: the tokenizers pre-tokenizer
/// that splits text as llama.cpp does, whether whole pre-tokens found in the vocabulary skip the
/// merges (`ignore_merges`), and llama.cpp's default for `add_bos_token`.
///
/// llama.cpp applies a list of regexes in turn, each splitting the pieces the previous one left
/// (matches and the text between them both become pieces); that is a sequence of `Split`
/// pre-tokenizers with `Isolated` behaviour, followed by the byte-level mapping.
fn bpe_pre_tokenizer(pre: &str) -> Option<(Json, bool, bool)> {
    let split =
        |re: &str| json!({ "type": "Split", "pattern": { "Regex": re }, "behavior": "Isolated", "invert": false });
    let byte_level = |use_regex: bool| json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex });
    let seq = |mut pre: Vec<Json>, use_regex: bool| {
        pre.push(byte_level(use_regex));
        json!({ "type": "Sequence", "pretokenizers": pre })
    };
    Some(match pre {
        // llama.cpp's fallback for a missing or "default" pre-tokenizer.
        "default" => (
            seq(
                vec![
                    split(r"[\p{P}\$\+<=>\^~\|]+"),
                    split(GPT2_REGEX),
                    split(r"\p{N}+"),
                    split(r"[0-9][0-9][0-9]"),
                ],
                false,
            ),
            false,
            false,
        ),
        // Plain GPT-2: ByteLevel's own regex.
        "gpt-2" | "gpt2" | "phi-2" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" | "exaone4" => {
            (byte_level(true), false, false)
        }
        // Every `\p{N}` on its own, then GPT-2's regex (SmolLM's tokenizer.json: Digits + ByteLevel).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => (
            seq(vec![json!({ "type": "Digits", "individual_digits": true })], true),
            false,
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => (seq(vec![split(LLAMA3_REGEX)], false), true, true),
        "dbrx" | "smaug-bpe" => (seq(vec![split(LLAMA3_REGEX)], false), false, false),
        "qwen2" | "stablelm2" | "megrez" | "deepseek-r1-qwen" => (seq(vec![split(QWEN2_REGEX)], false), false, false),
        "tekken" => (seq(vec![split(TEKKEN_REGEX)], false), true, true),
        _ => return None,
    })
}

fn tok_err(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Build the tokenizer.json for the `tokenizer.ggml.*` metadata and parse it.
fn build_tokenizer(path: &Path, meta: &Meta) -> Result<(String, tokenizers::Tokenizer)> {
    let model = meta.req_string("tokenizer.ggml.model")?;
    let tokens = meta
        .string_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| meta.missing("tokenizer.ggml.tokens", "an array of strings"))?;
    // llama.cpp renames empty tokens so that they stay distinct.
    let tokens: Vec<std::borrow::Cow<str>> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]").into()
            } else {
                (*t).into()
            }
        })
        .collect();
    let tokens: Vec<&str> = tokens.iter().map(|t| t.as_ref()).collect();
    let n = tokens.len();
    let types = match meta.int_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() != n => {
            return Err(meta.err(
                "tokenizer.ggml.token_type",
                format!(
                    "has {} entries, expected {n} (one per token in tokenizer.ggml.tokens)",
                    t.len()
                ),
            ))
        }
        Some(t) => t,
        None => vec![1; n],
    };
    let special_id = |key: &str| -> Result<Option<usize>> {
        match meta.uint(key)? {
            None => Ok(None),
            Some(id) if (id as u128) < n as u128 => Ok(Some(id as usize)),
            Some(id) => Err(meta.err(
                key,
                format!("token id {id} is out of range for a vocabulary of {n} tokens"),
            )),
        }
    };
    let bos = special_id("tokenizer.ggml.bos_token_id")?;
    let eos = special_id("tokenizer.ggml.eos_token_id")?;
    let unk = special_id("tokenizer.ggml.unknown_token_id")?;

    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert((*t).to_string(), json!(i));
    }
    let added_tokens: Vec<Json> = types
        .iter()
        .enumerate()
        .filter(|(_, &ty)| matches!(ty, TOKEN_UNKNOWN | TOKEN_CONTROL | TOKEN_USER_DEFINED))
        .map(|(i, &ty)| {
            json!({
                "id": i,
                "content": tokens[i],
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": ty != TOKEN_USER_DEFINED,
            })
        })
        .collect();

    let template = |add_bos: bool, add_eos: bool, key: &str| -> Result<Option<Json>> {
        if !add_bos && !add_eos {
            return Ok(None);
        }
        let need = |id: Option<usize>, k: &str| {
            id.ok_or_else(|| meta.err(k, format!("missing, but {key} asks for the token to be added")))
        };
        let bos_tok = if add_bos {
            Some(tokens[need(bos, "tokenizer.ggml.bos_token_id")?])
        } else {
            None
        };
        let eos_tok = if add_eos {
            Some(tokens[need(eos, "tokenizer.ggml.eos_token_id")?])
        } else {
            None
        };
        let mut special = Map::new();
        for (tok, id) in [(bos_tok, bos), (eos_tok, eos)] {
            if let (Some(t), Some(id)) = (tok, id) {
                special.insert(t.to_string(), json!({ "id": t, "ids": [id], "tokens": [t] }));
            }
        }
        let segment = |seq: &str, type_id: u32| {
            let mut out = Vec::new();
            if let Some(t) = bos_tok {
                out.push(json!({ "SpecialToken": { "id": t, "type_id": type_id } }));
            }
            out.push(json!({ "Sequence": { "id": seq, "type_id": type_id } }));
            if let Some(t) = eos_tok {
                out.push(json!({ "SpecialToken": { "id": t, "type_id": type_id } }));
            }
            out
        };
        let single = segment("A", 0);
        let mut pair = segment("A", 0);
        pair.extend(segment("B", 1));
        Ok(Some(
            json!({ "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special }),
        ))
    };

    let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let tokenizer = match model {
        "gpt2" => {
            let pre = meta.string("tokenizer.ggml.pre")?.unwrap_or("default");
            let (pre_tokenizer, ignore_merges, default_bos) = bpe_pre_tokenizer(pre).ok_or_else(|| {
                meta.err(
                    "tokenizer.ggml.pre",
                    format!(
                        "pre-tokenizer {pre:?} is not supported (expected one of {})",
                        BPE_PRE_NAMES.join(", ")
                    ),
                )
            })?;
            let merges = meta
                .string_array("tokenizer.ggml.merges")?
                .ok_or_else(|| meta.missing("tokenizer.ggml.merges", "an array of \"left right\" strings"))?;
            let merges = merges
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    // As llama.cpp does: split at the first space after the first character.
                    let pos = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(p, _)| p);
                    match pos {
                        Some(p) => Ok(json!([&m[..p], &m[p + 1..]])),
                        None => Err(meta.err(
                            "tokenizer.ggml.merges",
                            format!("element {i} ({m:?}) is not of the form \"left right\""),
                        )),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let add_bos = meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_bos);
            let byte_level_post =
                json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true });
            let post_processor = match template(add_bos, add_eos, "tokenizer.ggml.add_bos_token / add_eos_token")? {
                None => byte_level_post,
                Some(t) => json!({ "type": "Sequence", "processors": [byte_level_post, t] }),
            };
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added_tokens,
                "normalizer": null,
                "pre_tokenizer": pre_tokenizer,
                "post_processor": post_processor,
                "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
                "model": {
                    "type": "BPE",
                    "dropout": null,
                    "unk_token": null,
                    "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "fuse_unk": false,
                    "byte_fallback": false,
                    "ignore_merges": ignore_merges,
                    "vocab": vocab,
                    "merges": merges,
                },
            })
        }
        "llama" => {
            let scores = meta
                .float_array("tokenizer.ggml.scores")?
                .ok_or_else(|| meta.missing("tokenizer.ggml.scores", "an array of floats (one score per token)"))?;
            if scores.len() != n {
                return Err(meta.err(
                    "tokenizer.ggml.scores",
                    format!(
                        "has {} entries, expected {n} (one per token in tokenizer.ggml.tokens)",
                        scores.len()
                    ),
                ));
            }
            let merges = spm_merges(&tokens, &scores);
            let add_space_prefix = meta.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            let add_bos = meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
            let mut normalizers = Vec::new();
            if add_space_prefix {
                normalizers.push(json!({ "type": "Prepend", "prepend": "\u{2581}" }));
            }
            normalizers.push(json!({ "type": "Replace", "pattern": { "String": " " }, "content": "\u{2581}" }));
            let mut decoders = vec![
                json!({ "type": "Replace", "pattern": { "String": "\u{2581}" }, "content": " " }),
                json!({ "type": "ByteFallback" }),
                json!({ "type": "Fuse" }),
            ];
            if add_space_prefix {
                decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
            }
            let post_processor = template(add_bos, add_eos, "tokenizer.ggml.add_bos_token / add_eos_token")?;
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added_tokens,
                "normalizer": { "type": "Sequence", "normalizers": normalizers },
                "pre_tokenizer": null,
                "post_processor": post_processor,
                "decoder": { "type": "Sequence", "decoders": decoders },
                "model": {
                    "type": "BPE",
                    "dropout": null,
                    "unk_token": unk.map(|u| tokens[u]),
                    "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "fuse_unk": true,
                    "byte_fallback": true,
                    "ignore_merges": false,
                    "vocab": vocab,
                    "merges": merges,
                },
            })
        }
        other => {
            return Err(meta.err(
                "tokenizer.ggml.model",
                format!("tokenizer model {other:?} is not supported (expected \"gpt2\" or \"llama\")"),
            ))
        }
    };
    let text = serde_json::to_string(&tokenizer)
        .map_err(|e| tok_err(path, format!("cannot serialize the rebuilt tokenizer.json: {e}")))?;
    let parsed = tokenizers::Tokenizer::from_str(&text).map_err(|e| {
        tok_err(
            path,
            format!("the tokenizer rebuilt from tokenizer.ggml.* is invalid: {e}"),
        )
    })?;
    Ok((text, parsed))
}

/// BPE merges for a SentencePiece vocabulary: every split of a piece into two pieces of the
/// vocabulary, ranked by the merged piece's score (highest first; ties in vocabulary order, and
/// the splits of one piece by the ids of their halves). Merging by these ranks reproduces
/// SentencePiece's (and llama.cpp's) highest-score-first BPE.
fn spm_merges(tokens: &[&str], scores: &[f64]) -> Vec<Json> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    let mut local = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        // The id a piece maps to (the last duplicate wins, as in the vocab map).
        if ids.get(piece) != Some(&id) {
            continue;
        }
        local.clear();
        for (p, _) in piece.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&piece[..p]), ids.get(&piece[p..])) {
                local.push((l, r));
            }
        }
        local.sort_unstable();
        merges.extend(local.iter().map(|&(l, r)| (scores[id], id, l, r)));
    }
    // Stable: equal scores keep vocabulary order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// A metadata value for the test writer.
    enum W {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(String),
        StrArr(Vec<String>),
        I32Arr(Vec<i32>),
        F32Arr(Vec<f32>),
    }

    /// A tiny GGUF writer.
    struct Writer {
        version: u32,
        kv: Vec<(String, W)>,
        tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    impl Writer {
        fn new() -> Self {
            Writer {
                version: 3,
                kv: Vec::new(),
                tensors: Vec::new(),
            }
        }
        fn kv(&mut self, k: &str, v: W) -> &mut Self {
            self.kv.retain(|(key, _)| key != k);
            self.kv.push((k.to_string(), v));
            self
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
            self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
            self
        }
        fn bytes(&self) -> Vec<u8> {
            let mut o = Vec::new();
            o.extend(b"GGUF");
            o.extend(self.version.to_le_bytes());
            o.extend((self.tensors.len() as u64).to_le_bytes());
            o.extend((self.kv.len() as u64).to_le_bytes());
            for (k, v) in &self.kv {
                put_str(&mut o, k);
                match v {
                    W::U32(x) => {
                        o.extend(4u32.to_le_bytes());
                        o.extend(x.to_le_bytes());
                    }
                    W::F32(x) => {
                        o.extend(6u32.to_le_bytes());
                        o.extend(x.to_le_bytes());
                    }
                    W::Bool(x) => {
                        o.extend(7u32.to_le_bytes());
                        o.push(*x as u8);
                    }
                    W::Str(s) => {
                        o.extend(8u32.to_le_bytes());
                        put_str(&mut o, s);
                    }
                    W::StrArr(a) => {
                        o.extend(9u32.to_le_bytes());
                        o.extend(8u32.to_le_bytes());
                        o.extend((a.len() as u64).to_le_bytes());
                        a.iter().for_each(|s| put_str(&mut o, s));
                    }
                    W::I32Arr(a) => {
                        o.extend(9u32.to_le_bytes());
                        o.extend(5u32.to_le_bytes());
                        o.extend((a.len() as u64).to_le_bytes());
                        a.iter().for_each(|x| o.extend(x.to_le_bytes()));
                    }
                    W::F32Arr(a) => {
                        o.extend(9u32.to_le_bytes());
                        o.extend(6u32.to_le_bytes());
                        o.extend((a.len() as u64).to_le_bytes());
                        a.iter().for_each(|x| o.extend(x.to_le_bytes()));
                    }
                }
            }
            let mut offset = 0u64;
            for (name, dims, ty, data) in &self.tensors {
                put_str(&mut o, name);
                o.extend((dims.len() as u32).to_le_bytes());
                dims.iter().for_each(|d| o.extend(d.to_le_bytes()));
                o.extend(ty.to_le_bytes());
                o.extend(offset.to_le_bytes());
                offset += (data.len() as u64).div_ceil(32) * 32;
            }
            while o.len() % 32 != 0 {
                o.push(0);
            }
            for (_, _, _, data) in &self.tensors {
                o.extend(data);
                while o.len() % 32 != 0 {
                    o.push(0);
                }
            }
            o
        }
    }

    fn f16b(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// One Q8_0 block: d = 0.5, qs[j] = j - 16.
    fn q8_0_block() -> (Vec<u8>, Vec<f32>) {
        let mut b = f16b(0.5).to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        (b, (0..32).map(|j| (j as f32 - 16.0) * 0.5).collect())
    }

    /// One Q4_0 block: d = 0.25, low nibble j, high nibble 15 - j.
    fn q4_0_block() -> (Vec<u8>, Vec<f32>) {
        let mut b = f16b(0.25).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut want: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 0.25).collect();
        want.extend((0..16).map(|j| ((15 - j) as f32 - 8.0) * 0.25));
        (b, want)
    }

    /// One Q4_1 block: d = 0.5, m = -1.0, low nibble j, high nibble (j * 7) % 16.
    fn q4_1_block() -> (Vec<u8>, Vec<f32>) {
        let mut b = f16b(0.5).to_vec();
        b.extend(f16b(-1.0));
        b.extend((0..16u8).map(|j| j | (((j * 7) % 16) << 4)));
        let mut want: Vec<f32> = (0..16).map(|j| j as f32 * 0.5 - 1.0).collect();
        want.extend((0..16).map(|j| ((j * 7) % 16) as f32 * 0.5 - 1.0));
        (b, want)
    }

    /// A byte-level vocabulary: the 256 byte symbols, a few merges, and two control tokens.
    fn gpt2_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
        let bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .collect();
        let mut extra = 0;
        let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".to_string()];
        let mut map = Vec::new();
        for b in 0u32..256 {
            if bytes.contains(&b) {
                map.push((b, char::from_u32(b).unwrap()));
            } else {
                map.push((b, char::from_u32(256 + extra).unwrap()));
                extra += 1;
            }
        }
        tokens.extend(map.iter().map(|(_, c)| c.to_string()));
        let merges = vec!["Ġ t".to_string(), "h e".to_string(), "Ġt he".to_string()];
        tokens.extend(["Ġt".to_string(), "he".to_string(), "Ġthe".to_string()]);
        let mut types = vec![1; tokens.len()];
        types[0] = 3;
        types[1] = 3;
        (tokens, types, merges)
    }

    const HIDDEN: u64 = 32;
    const FF: u64 = 64;

    /// A one-layer LLaMA with 2 heads, 1 kv head, head_dim 16, hidden 32, and every tensor type.
    fn tiny_llama() -> (Writer, Vec<(String, Vec<f32>)>) {
        let (tokens, types, merges) = gpt2_vocab();
        let vocab = tokens.len() as u64;
        let mut w = Writer::new();
        w.kv("general.architecture", W::Str("llama".into()))
            .kv("llama.embedding_length", W::U32(HIDDEN as u32))
            .kv("llama.block_count", W::U32(1))
            .kv("llama.feed_forward_length", W::U32(FF as u32))
            .kv("llama.attention.head_count", W::U32(2))
            .kv("llama.attention.head_count_kv", W::U32(1))
            .kv("llama.context_length", W::U32(128))
            .kv("llama.attention.layer_norm_rms_epsilon", W::F32(1e-5))
            .kv("llama.rope.freq_base", W::F32(10000.0))
            .kv("tokenizer.ggml.model", W::Str("gpt2".into()))
            .kv("tokenizer.ggml.pre", W::Str("smollm".into()))
            .kv("tokenizer.ggml.tokens", W::StrArr(tokens))
            .kv("tokenizer.ggml.token_type", W::I32Arr(types))
            .kv("tokenizer.ggml.merges", W::StrArr(merges))
            .kv("tokenizer.ggml.bos_token_id", W::U32(1))
            .kv("tokenizer.ggml.eos_token_id", W::U32(0))
            .kv("tokenizer.ggml.add_bos_token", W::Bool(false));
        let mut want = Vec::new();
        let mut add =
            |w: &mut Writer, name: &str, hf: &str, dims: &[u64], ty: u32, block: fn() -> (Vec<u8>, Vec<f32>)| {
                let n: u64 = dims.iter().product();
                let (b, v) = block();
                let mut data = Vec::new();
                let mut vals = Vec::new();
                for _ in 0..n / v.len() as u64 {
                    data.extend(&b);
                    vals.extend(&v);
                }
                w.tensor(name, dims, ty, data);
                want.push((hf.to_string(), vals));
            };
        let f32_block = || -> (Vec<u8>, Vec<f32>) {
            let v: Vec<f32> = (0..32).map(|i| i as f32 * 0.125 - 1.5).collect();
            (f32_bytes(&v), v)
        };
        let f16_block = || -> (Vec<u8>, Vec<f32>) {
            let v: Vec<f32> = (0..32).map(|i| i as f32 * 0.25 - 3.0).collect();
            (v.iter().flat_map(|&x| f16b(x)).collect(), v)
        };
        let bf16_block = || -> (Vec<u8>, Vec<f32>) {
            let v: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 1.5).collect();
            (
                v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                v,
            )
        };
        add(
            &mut w,
            "token_embd.weight",
            "model.embed_tokens.weight",
            &[HIDDEN, vocab],
            8,
            q8_0_block,
        );
        add(
            &mut w,
            "output_norm.weight",
            "model.norm.weight",
            &[HIDDEN],
            0,
            f32_block,
        );
        add(
            &mut w,
            "blk.0.attn_norm.weight",
            "model.layers.0.input_layernorm.weight",
            &[HIDDEN],
            0,
            f32_block,
        );
        add(
            &mut w,
            "blk.0.ffn_norm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            &[HIDDEN],
            1,
            f16_block,
        );
        add(
            &mut w,
            "blk.0.attn_v.weight",
            "model.layers.0.self_attn.v_proj.weight",
            &[HIDDEN, 16],
            2,
            q4_0_block,
        );
        add(
            &mut w,
            "blk.0.attn_output.weight",
            "model.layers.0.self_attn.o_proj.weight",
            &[HIDDEN, HIDDEN],
            3,
            q4_1_block,
        );
        add(
            &mut w,
            "blk.0.ffn_gate.weight",
            "model.layers.0.mlp.gate_proj.weight",
            &[HIDDEN, FF],
            30,
            bf16_block,
        );
        add(
            &mut w,
            "blk.0.ffn_up.weight",
            "model.layers.0.mlp.up_proj.weight",
            &[HIDDEN, FF],
            8,
            q8_0_block,
        );
        add(
            &mut w,
            "blk.0.ffn_down.weight",
            "model.layers.0.mlp.down_proj.weight",
            &[FF, HIDDEN],
            2,
            q4_0_block,
        );
        // q and k: rows numbered so that the un-permute is visible (checked separately below).
        let q_rows: Vec<f32> = (0..HIDDEN * HIDDEN).map(|i| (i / HIDDEN) as f32).collect();
        w.tensor("blk.0.attn_q.weight", &[HIDDEN, HIDDEN], 0, f32_bytes(&q_rows));
        let k_rows: Vec<f32> = (0..16 * HIDDEN).map(|i| (i / HIDDEN) as f32).collect();
        w.tensor("blk.0.attn_k.weight", &[HIDDEN, 16], 0, f32_bytes(&k_rows));
        (w, want)
    }

    /// A scratch directory under the system temp dir, removed on drop (no dev-dependency needed).
    struct TmpDir(std::path::PathBuf);

    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Write `bytes` to `<fresh temp dir>/model.gguf`.
    fn write_tmp(bytes: &[u8]) -> (TmpDir, std::path::PathBuf) {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sculpt-gguf-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("model.gguf");
        std::fs::write(&p, bytes).unwrap();
        (TmpDir(dir), p)
    }

    /// llama.cpp's permutation, written from its definition (reshape, swapaxes, reshape).
    fn permute_rows(rows: &[Vec<f32>], n_head: usize) -> Vec<Vec<f32>> {
        let d = rows.len() / n_head;
        let half = d / 2;
        // w.reshape(n_head, 2, half, cols): element (h, t, j) is row h*d + t*half + j.
        // .swapaxes(1, 2): element (h, j, t) of the result is (h, t, j) of the input.
        let mut out = Vec::new();
        for h in 0..n_head {
            for j in 0..half {
                for t in 0..2 {
                    out.push(rows[h * d + t * half + j].clone());
                }
            }
        }
        out
    }

    #[test]
    fn dequantizes_every_type_exactly() {
        for (ty, block) in [
            (GgmlType::Q8_0, q8_0_block as fn() -> (Vec<u8>, Vec<f32>)),
            (GgmlType::Q4_0, q4_0_block),
            (GgmlType::Q4_1, q4_1_block),
        ] {
            let (b, want) = block();
            assert_eq!(dequantize(ty, &b, 32), want, "{ty:?}");
        }
        // Hand-computed spot values.
        assert_eq!(dequantize(GgmlType::Q8_0, &q8_0_block().0, 32)[0], -8.0);
        assert_eq!(dequantize(GgmlType::Q4_0, &q4_0_block().0, 32)[16], 1.75); // (15 - 8) * 0.25
        assert_eq!(dequantize(GgmlType::Q4_1, &q4_1_block().0, 32)[17], 2.5); // 7 * 0.5 - 1
        assert_eq!(dequantize(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0], 2), vec![1.0, -2.0]);
        assert_eq!(
            dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x40, 0xC0], 2),
            vec![1.0, -3.0]
        );
        assert_eq!(dequantize(GgmlType::F32, &1.5f32.to_le_bytes(), 1), vec![1.5]);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // Hand example: one head of 4 rows -> llama.cpp order is rows [0, 2, 1, 3].
        let gguf = HostTensor::new(vec![4, 2], vec![0., 0., 2., 2., 1., 1., 3., 3.]);
        let hf = unpermute_rows(&gguf, 1).unwrap();
        assert_eq!(hf.data, vec![0., 0., 1., 1., 2., 2., 3., 3.]);
        // Two heads of 4 rows: [0, 2, 1, 3, 4, 6, 5, 7].
        let rows: Vec<Vec<f32>> = (0..8).map(|r| vec![r as f32]).collect();
        let permuted = permute_rows(&rows, 2);
        assert_eq!(permuted.concat(), vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        // Round trip on a bigger matrix, for several head counts.
        for n_head in [1, 2, 3, 6] {
            let rows: Vec<Vec<f32>> = (0..24).map(|r| (0..5).map(|c| (r * 10 + c) as f32).collect()).collect();
            let p = permute_rows(&rows, n_head);
            let t = HostTensor::new(vec![24, 5], p.concat());
            assert_eq!(
                unpermute_rows(&t, n_head).unwrap().data,
                rows.concat(),
                "n_head {n_head}"
            );
        }
        assert!(unpermute_rows(&HostTensor::new(vec![6, 1], vec![0.; 6]), 2).is_none());
    }

    #[test]
    fn reads_a_tiny_llama() {
        let (w, want) = tiny_llama();
        let (_dir, path) = write_tmp(&w.bytes());
        let m = read_gguf(&path).unwrap();
        let c = &m.config;
        assert_eq!(c["model_type"], "llama");
        assert_eq!(c["architectures"][0], "LlamaForCausalLM");
        assert_eq!(c["hidden_size"], HIDDEN);
        assert_eq!(c["intermediate_size"], FF);
        assert_eq!(c["num_attention_heads"], 2);
        assert_eq!(c["num_key_value_heads"], 1);
        assert_eq!(c["head_dim"], 16);
        assert_eq!(c["vocab_size"], 261);
        assert_eq!(c["rms_norm_eps"], 1e-5);
        assert_eq!(c["rope_theta"], 10000.0);
        assert_eq!(c["tie_word_embeddings"], true);
        assert_eq!(c["bos_token_id"], 1);
        assert_eq!(c["eos_token_id"], 0);
        assert_eq!(c["torch_dtype"], "float32");
        assert_eq!(c["hidden_act"], "silu");

        let t = &m.tensors.tensors;
        assert_eq!(t.len(), 11);
        assert!(!t.contains_key("lm_head.weight"));
        for (name, vals) in &want {
            assert_eq!(&t[name].data, vals, "{name}");
        }
        assert_eq!(t["model.embed_tokens.weight"].shape, vec![261, HIDDEN as usize]);
        assert_eq!(
            t["model.layers.0.self_attn.v_proj.weight"].shape,
            vec![16, HIDDEN as usize]
        );
        assert_eq!(
            t["model.layers.0.mlp.down_proj.weight"].shape,
            vec![HIDDEN as usize, FF as usize]
        );
        assert_eq!(t["model.norm.weight"].shape, vec![HIDDEN as usize]);

        // q: 2 heads of 16 rows. GGUF row h*16 + 2j + s holds HF row h*16 + 8s + j.
        let q = &t["model.layers.0.self_attn.q_proj.weight"];
        assert_eq!(q.shape, vec![32, 32]);
        let row_of = |t: &HostTensor, r: usize| t.data[r * 32];
        assert_eq!(row_of(q, 0), 0.0);
        assert_eq!(row_of(q, 1), 2.0);
        assert_eq!(row_of(q, 8), 1.0);
        assert_eq!(row_of(q, 17), 18.0);
        assert_eq!(row_of(q, 24), 17.0);
        let k = &t["model.layers.0.self_attn.k_proj.weight"];
        assert_eq!(k.shape, vec![16, 32]);
        let k_rows: Vec<f32> = (0..16).map(|r| row_of(k, r)).collect();
        assert_eq!(
            k_rows,
            vec![0., 2., 4., 6., 8., 10., 12., 14., 1., 3., 5., 7., 9., 11., 13., 15.]
        );

        // Tokenizer: merges, control tokens, no BOS, round trip.
        let tok = &m.tokenizer;
        let enc = tok.encode("<|im_start|>the the 12", true).unwrap();
        assert_eq!(enc.get_tokens(), &["<|im_start|>", "t", "he", "Ġthe", "Ġ", "1", "2"]);
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "<|im_start|>the the 12");
        assert!(tokenizers::Tokenizer::from_str(&m.tokenizer_json).is_ok());
    }

    #[test]
    fn gpt2_tokenizer_adds_bos_when_asked() {
        let (mut w, _) = tiny_llama();
        w.kv("tokenizer.ggml.add_bos_token", W::Bool(true))
            .kv("tokenizer.ggml.pre", W::Str("gpt2".into()));
        let (_dir, path) = write_tmp(&w.bytes());
        let m = read_gguf(&path).unwrap();
        let enc = m.tokenizer.encode("the 12", true).unwrap();
        assert_eq!(enc.get_tokens(), &["<|im_start|>", "t", "he", "Ġ", "1", "2"]);
    }

    #[test]
    fn every_known_pre_tokenizer_builds_and_round_trips() {
        let text = "Hello, World! It's 12345 ½ café\n\n  x\ty <|im_start|>";
        for &pre in BPE_PRE_NAMES {
            let (mut w, _) = tiny_llama();
            w.kv("tokenizer.ggml.pre", W::Str(pre.into()));
            let (_dir, path) = write_tmp(&w.bytes());
            let m = read_gguf(&path).unwrap_or_else(|e| panic!("{pre}: {e}"));
            let enc = m.tokenizer.encode(text, false).unwrap();
            assert_eq!(m.tokenizer.decode(enc.get_ids(), false).unwrap(), text, "{pre}");
            assert_eq!(
                enc.get_tokens().last().map(String::as_str),
                Some("<|im_start|>"),
                "{pre}"
            );
        }
        // llama.cpp's "default" splits runs of digits into threes.
        let (mut w, _) = tiny_llama();
        w.kv.retain(|(k, _)| k != "tokenizer.ggml.pre");
        let (_dir, path) = write_tmp(&w.bytes());
        let m = read_gguf(&path).unwrap();
        let toks = m.tokenizer.encode("12345", false).unwrap().get_tokens().to_vec();
        assert_eq!(toks, ["1", "2", "3", "4", "5"]);
        let pre = m.tokenizer.get_pre_tokenizer().unwrap();
        use tokenizers::PreTokenizer;
        let mut ps = tokenizers::PreTokenizedString::from("12345 a+b");
        pre.pre_tokenize(&mut ps).unwrap();
        let pieces: Vec<String> = ps
            .get_splits(tokenizers::OffsetReferential::Original, tokenizers::OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect();
        assert_eq!(pieces, ["123", "45", "Ġa", "+", "b"]);
    }

    #[test]
    fn output_weight_becomes_lm_head() {
        let (mut w, _) = tiny_llama();
        let (b, v) = q4_1_block();
        let vocab = 261u64;
        w.tensor("output.weight", &[HIDDEN, vocab], 3, b.repeat(vocab as usize));
        let (_dir, path) = write_tmp(&w.bytes());
        let m = read_gguf(&path).unwrap();
        assert_eq!(m.config["tie_word_embeddings"], false);
        let lm = &m.tensors.tensors["lm_head.weight"];
        assert_eq!(lm.shape, vec![vocab as usize, HIDDEN as usize]);
        assert_eq!(&lm.data[..32], &v[..]);
    }

    #[test]
    fn spm_tokenizer_with_byte_fallback() {
        let (mut w, _) = tiny_llama();
        // <unk> <s> </s>, 256 byte tokens, then pieces.
        let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0f32, 0.0, 0.0];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (i, p) in [
            "▁", "h", "e", "l", "o", "w", "r", "d", "ll", "he", "▁he", "llo", "▁hello", "or", "▁w",
        ]
        .iter()
        .enumerate()
        {
            tokens.push(p.to_string());
            types.push(1);
            scores.push(-(i as f32));
        }
        let n = tokens.len();
        w.kv("tokenizer.ggml.model", W::Str("llama".into()))
            .kv("tokenizer.ggml.tokens", W::StrArr(tokens))
            .kv("tokenizer.ggml.token_type", W::I32Arr(types))
            .kv("tokenizer.ggml.scores", W::F32Arr(scores))
            .kv("tokenizer.ggml.bos_token_id", W::U32(1))
            .kv("tokenizer.ggml.eos_token_id", W::U32(2))
            .kv("tokenizer.ggml.unknown_token_id", W::U32(0))
            .kv("tokenizer.ggml.add_bos_token", W::Bool(true))
            .kv("llama.vocab_size", W::U32(261));
        w.kv.retain(|(k, _)| k != "tokenizer.ggml.merges" && k != "tokenizer.ggml.pre");
        let (_dir, path) = write_tmp(&w.bytes());
        let m = read_gguf(&path).unwrap();
        assert_eq!(n, 274);
        let enc = m.tokenizer.encode("hello world!", true).unwrap();
        assert_eq!(enc.get_tokens(), &["<s>", "▁hello", "▁w", "or", "l", "d", "<0x21>"]);
        assert_eq!(m.tokenizer.decode(enc.get_ids(), true).unwrap(), "hello world!");
    }

    fn expect_err(bytes: &[u8]) -> String {
        let (_dir, path) = write_tmp(bytes);
        match read_gguf(&path) {
            Ok(_) => panic!("expected an error"),
            Err(e) => {
                let s = e.to_string();
                assert!(s.contains("model.gguf"), "error does not name the file: {s}");
                s
            }
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let (w, _) = tiny_llama();
        let mut b = w.bytes();
        b[..4].copy_from_slice(b"GGML");
        assert!(expect_err(&b).contains("not a GGUF file"));
        let mut w1 = tiny_llama().0;
        w1.version = 1;
        assert!(expect_err(&w1.bytes()).contains("version 1"));
        let mut b = tiny_llama().0.bytes();
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(expect_err(&b).contains("big-endian"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (w, _) = tiny_llama();
        let b = w.bytes();
        for len in (0..b.len()).step_by(7).chain([b.len() - 1]) {
            let s = expect_err(&b[..len]);
            assert!(
                s.contains("truncated") || s.contains("run past the end") || s.contains("claims"),
                "{len}: {s}"
            );
        }
        // The data section's last bytes name the tensor that is cut short.
        let s = expect_err(&b[..b.len() - 1]);
        assert!(s.contains("tensor `blk.0.attn_k.weight`"), "{s}");
    }

    #[test]
    fn unsupported_type_names_the_tensor() {
        let (mut w, _) = tiny_llama();
        w.tensors[4].2 = 14; // Q6_K
        let (_dir, path) = write_tmp(&w.bytes());
        match read_gguf(&path) {
            Err(ModelError::UnsupportedDtype { name, dtype, .. }) => {
                assert_eq!(name, "blk.0.attn_v.weight");
                assert!(dtype.contains("Q6_K"), "{dtype}");
            }
            other => panic!("expected UnsupportedDtype, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_offset_is_an_error() {
        let (w, _) = tiny_llama();
        let mut b = w.bytes();
        // Rewrite the offset of the last tensor info (k) to a huge aligned value.
        let name = b"blk.0.attn_k.weight";
        let at = b.windows(name.len()).rposition(|x| x == name).unwrap() + name.len();
        let off_at = at + 4 + 2 * 8 + 4;
        b[off_at..off_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
        let s = expect_err(&b);
        assert!(
            s.contains("blk.0.attn_k.weight") && s.contains("run past the end"),
            "{s}"
        );
        b[off_at..off_at + 8].copy_from_slice(&5u64.to_le_bytes());
        assert!(expect_err(&b).contains("multiple of the alignment"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let (mut w, _) = tiny_llama();
        w.kv("general.architecture", W::Str("gpt2".into()));
        let s = expect_err(&w.bytes());
        assert!(s.contains("general.architecture") && s.contains("\"llama\""), "{s}");
        let (mut w, _) = tiny_llama();
        w.kv.retain(|(k, _)| k != "llama.block_count");
        assert!(expect_err(&w.bytes()).contains("llama.block_count"));
        let (mut w, _) = tiny_llama();
        w.kv("tokenizer.ggml.pre", W::Str("mystery".into()));
        assert!(expect_err(&w.bytes()).contains("tokenizer.ggml.pre"));
        let (mut w, _) = tiny_llama();
        w.tensor("blk.0.mystery.weight", &[32], 0, vec![0; 128]);
        assert!(expect_err(&w.bytes()).contains("blk.0.mystery.weight"));
        let (mut w, _) = tiny_llama();
        w.tensor("blk.3.attn_q.weight", &[32], 0, vec![0; 128]);
        assert!(expect_err(&w.bytes()).contains("llama.block_count"));
    }
}
