//! Reading and writing `.safetensors` files (single or sharded with `model.safetensors.index.json`)
//! to and from a [`TensorMap`]. f32, f16 and bf16 are read (converted to f32); writes use one dtype.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{ModelError, Result};
use crate::host::{HostTensor, StoreDtype, TensorMap};

/// Name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Read all tensors of one safetensors file into `map`.
pub fn read_file(path: &Path, map: &mut TensorMap) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let bytes = read_bytes(path, &file)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::format(path, format!("not a valid safetensors file: {e}")))?;
    let mut counts: HashMap<StoreDtype, usize> = HashMap::new();
    for (name, view) in st.tensors() {
        let (data, dt) = decode(path, &name, &view)?;
        *counts.entry(dt).or_default() += 1;
        if map.tensors.insert(name.clone(), HostTensor::new(view.shape().to_vec(), data)).is_some() {
            return Err(ModelError::format(path, format!("tensor `{name}` appears in more than one file")));
        }
    }
    if let Some((dt, _)) = counts.into_iter().max_by_key(|(_, n)| *n) {
        map.dtype.get_or_insert(dt);
    }
    Ok(())
}

fn read_bytes(path: &Path, file: &std::fs::File) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut f = file;
    f.read_to_end(&mut buf).map_err(|e| ModelError::io(path, e))?;
    Ok(buf)
}

fn decode(path: &Path, name: &str, view: &TensorView<'_>) -> Result<(Vec<f32>, StoreDtype)> {
    let raw = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => (raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), StoreDtype::F32),
        Dtype::F16 => (
            raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            StoreDtype::F16,
        ),
        Dtype::BF16 => (
            raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            StoreDtype::BF16,
        ),
        other => {
            return Err(ModelError::UnsupportedDtype { path: path.to_path_buf(), name: name.to_string(), dtype: format!("{other:?}") })
        }
    })
}

/// Read the checkpoint of a Hugging Face folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json` (every shard must exist and every listed tensor must be found).
pub fn read_folder(dir: &Path) -> Result<TensorMap> {
    let single = dir.join(SINGLE_FILE);
    let index = dir.join(INDEX_FILE);
    if single.is_file() {
        let mut map = TensorMap::new(&single);
        read_file(&single, &mut map)?;
        return Ok(map);
    }
    if !index.is_file() {
        return Err(ModelError::format(dir, format!("no {SINGLE_FILE} and no {INDEX_FILE} in this folder")));
    }
    let v = crate::config::read_json(&index)?;
    let wm = v
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or_else(|| ModelError::config(&index, "weight_map", "expected an object of tensor name → shard file"))?;
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, file) in wm {
        let file = file.as_str().ok_or_else(|| ModelError::config(&index, format!("weight_map.{name}"), "expected a file name"))?;
        if file.contains('/') || file.contains("..") {
            return Err(ModelError::config(&index, format!("weight_map.{name}"), format!("shard {file:?} must be a plain file name")));
        }
        shards.entry(file.to_string()).or_default().push(name.clone());
    }
    let mut map = TensorMap::new(dir);
    for file in shards.keys() {
        read_file(&dir.join(file), &mut map)?;
    }
    for (file, names) in &shards {
        for n in names {
            if !map.contains(n) {
                return Err(ModelError::format(dir.join(file), format!("index lists tensor `{n}` in this shard but it is not there")));
            }
        }
    }
    Ok(map)
}

fn encode(t: &HostTensor, dtype: StoreDtype) -> Vec<u8> {
    match dtype {
        StoreDtype::F32 => t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        StoreDtype::F16 => t.data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        StoreDtype::BF16 => t.data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
    }
}

fn st_dtype(d: StoreDtype) -> Dtype {
    match d {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
        StoreDtype::BF16 => Dtype::BF16,
    }
}

/// Write `map` into `dir` as `model.safetensors`, or as shards of at most `max_shard_bytes` plus
/// the index when it does not fit in one. Returns the files written.
pub fn write_folder(dir: &Path, map: &TensorMap, dtype: StoreDtype, max_shard_bytes: u64) -> Result<Vec<PathBuf>> {
    let elem = match dtype {
        StoreDtype::F32 => 4,
        _ => 2,
    };
    let mut shards: Vec<Vec<&String>> = vec![vec![]];
    let mut size = 0u64;
    for (name, t) in &map.tensors {
        let bytes = (t.data.len() * elem) as u64;
        if size > 0 && size + bytes > max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        shards.last_mut().expect("non-empty").push(name);
        size += bytes;
    }
    let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let n = shards.len();
    let mut written = vec![];
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (i, names) in shards.iter().enumerate() {
        let file = if n == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{:05}.safetensors", i + 1, n) };
        let path = dir.join(&file);
        let encoded: Vec<(&String, Vec<u8>, &HostTensor)> =
            names.iter().map(|name| (*name, encode(&map.tensors[*name], dtype), &map.tensors[*name])).collect();
        let views = encoded
            .iter()
            .map(|(name, bytes, t)| {
                total += bytes.len() as u64;
                let v = TensorView::new(st_dtype(dtype), t.shape.clone(), bytes).expect("consistent shape and bytes");
                (name.to_string(), v)
            })
            .collect::<Vec<_>>();
        safetensors::serialize_to_file(views, meta.clone(), &path)
            .map_err(|e| ModelError::format(&path, format!("writing safetensors: {e}")))?;
        for name in names {
            weight_map.insert(name.to_string(), serde_json::Value::String(file.clone()));
        }
        written.push(path);
    }
    if n > 1 {
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let path = dir.join(INDEX_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&index).expect("json")).map_err(|e| ModelError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
