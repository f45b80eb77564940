//! Hugging Face folders in and out: round trips are bit-exact, sharded and half-precision
//! checkpoints load, and bad checkpoints fail with errors that name the key or tensor.
//!
//! The saved folders also load in transformers: checked by hand with
//! `sculpt convert --model tests/fixtures/tiny/<name> --out /tmp/<name>` followed by
//! `/work/pyref/venv/bin/python tests/fixtures/make_fixtures.py --check-saved /tmp/<name> --against <name>`
//! (2026-12-01, transformers 4.57.6: max |Δlogits| = 0 for all four fixtures).

use std::path::Path;

use burn::backend::Flex;
use sculpt::tiny_fixture;
use sculpt_models::safetensors_io::{read_folder, write_folder};
use sculpt_models::{ModelError, NamedParams, Pretrained, StoreDtype};

const ALL: &[&str] = &["llama-gqa-untied-tiny", "llama-tied-tiny", "t5-v1_1-tiny", "t5-v1_0-tiny"];

fn load(dir: &Path) -> Result<Pretrained<Flex>, ModelError> {
    Pretrained::<Flex>::load(dir, &Default::default())
}

/// A writable copy of a fixture's config and tokenizer with the given tensors.
fn variant(name: &str, edit: impl FnOnce(&mut sculpt_models::TensorMap, &mut serde_json::Value)) -> tempfile::TempDir {
    let src = tiny_fixture(name);
    let dir = tempfile::tempdir().unwrap();
    let mut map = read_folder(&src).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut map, &mut config);
    write_folder(dir.path(), &map, StoreDtype::F32, u64::MAX).unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    dir
}

#[test]
fn load_save_load_is_bit_exact() {
    for name in ALL {
        let src = tiny_fixture(name);
        let a = load(&src).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dst = out.path().join("saved");
        a.save(&dst, None).unwrap();
        let b = load(&dst).unwrap();
        let (ea, eb) = (a.model.export(), b.model.export());
        assert_eq!(ea.tensors, eb.tensors, "{name}: tensors changed in the round trip");
        // The saved file holds exactly the original checkpoint's names and shapes.
        let orig = read_folder(&src).unwrap();
        let saved = read_folder(&dst).unwrap();
        let shapes = |m: &sculpt_models::TensorMap| m.tensors.iter().map(|(k, v)| (k.clone(), v.shape.clone())).collect::<Vec<_>>();
        assert_eq!(shapes(&orig), shapes(&saved), "{name}: tensor names/shapes differ from the original checkpoint");
        assert_eq!(orig.tensors, saved.tensors, "{name}: values differ from the original checkpoint");
        assert_eq!(std::fs::read(src.join("tokenizer.json")).unwrap(), std::fs::read(dst.join("tokenizer.json")).unwrap());
        assert_eq!(b.raw_config["model_type"], a.raw_config["model_type"]);
    }
}

#[test]
fn sharded_checkpoints_round_trip() {
    let map = read_folder(&tiny_fixture("llama-tied-tiny")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = write_folder(dir.path(), &map, StoreDtype::F32, 40_000).unwrap();
    assert!(files.len() > 2, "expected several shards and an index, got {files:?}");
    assert!(dir.path().join("model.safetensors.index.json").is_file());
    assert_eq!(read_folder(dir.path()).unwrap().tensors, map.tensors);
}

#[test]
fn bf16_and_f16_checkpoints_load_as_rounded_f32() {
    let f32_map = load(&tiny_fixture("llama-tied-tiny")).unwrap().model.export();
    let bf = load(&tiny_fixture("llama-tied-tiny-bf16")).unwrap();
    assert_eq!(bf.source_dtype, StoreDtype::BF16);
    for (name, t) in &bf.model.export().tensors {
        let want: Vec<f32> = f32_map.tensors[name].data.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        assert_eq!(t.data, want, "{name}: bf16 load");
    }
    // Saving in f16 and reloading gives the f16-rounded values.
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("f16");
    bf.save(&dst, Some(StoreDtype::F16)).unwrap();
    let h = load(&dst).unwrap();
    assert_eq!(h.source_dtype, StoreDtype::F16);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dst.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["dtype"], "float16");
    for (name, t) in &h.model.export().tensors {
        let want: Vec<f32> = bf.model.export().tensors[name].data.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        assert_eq!(t.data, want, "{name}: f16 save");
    }
}

fn err_text(dir: &Path) -> String {
    match load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_unused_and_misshapen_tensors_are_named() {
    let d = variant("llama-tied-tiny", |m, _| {
        m.tensors.remove("model.layers.1.mlp.up_proj.weight");
    });
    let e = err_text(d.path());
    assert!(e.contains("missing tensor `model.layers.1.mlp.up_proj.weight`") && e.contains("[64, 32]"), "{e}");

    let d = variant("t5-v1_1-tiny", |m, _| {
        let t = m.tensors["shared.weight"].clone();
        m.insert("decoder.block.9.layer.0.SelfAttention.q.weight", t);
    });
    let e = err_text(d.path());
    assert!(e.contains("unused tensor") && e.contains("decoder.block.9.layer.0.SelfAttention.q.weight"), "{e}");

    let d = variant("llama-gqa-untied-tiny", |m, _| {
        let t = m.tensors.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        t.shape = vec![t.shape[1], t.shape[0]];
    });
    let e = err_text(d.path());
    assert!(e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("[32, 16]") && e.contains("[16, 32]"), "{e}");
}

#[test]
fn malformed_config_names_the_key() {
    let d = variant("llama-tied-tiny", |_, c| {
        c["hidden_size"] = serde_json::json!("wide");
    });
    let e = err_text(d.path());
    assert!(e.contains("config.json") && e.contains("`hidden_size`"), "{e}");

    let d = variant("llama-tied-tiny", |_, c| {
        c.as_object_mut().unwrap().remove("num_hidden_layers");
    });
    let e = err_text(d.path());
    assert!(e.contains("`num_hidden_layers`") && e.contains("missing"), "{e}");

    let d = variant("llama-gqa-untied-tiny", |_, c| {
        c["num_key_value_heads"] = serde_json::json!(3);
    });
    let e = err_text(d.path());
    assert!(e.contains("`num_key_value_heads`") && e.contains("divide"), "{e}");

    let d = variant("t5-v1_0-tiny", |_, c| {
        c["feed_forward_proj"] = serde_json::json!("gated-swish-x");
    });
    let e = err_text(d.path());
    assert!(e.contains("`feed_forward_proj`"), "{e}");

    let d = variant("t5-v1_0-tiny", |_, c| {
        c["model_type"] = serde_json::json!("bert");
    });
    let e = err_text(d.path());
    assert!(e.contains("`model_type`") && e.contains("bert"), "{e}");
}

#[test]
fn rope_theta_is_read_from_rope_parameters_too() {
    // transformers ≥ 5 layout: no top-level rope_theta.
    let reference = load(&tiny_fixture("llama-gqa-untied-tiny")).unwrap();
    let theta = reference.raw_config["rope_theta"].as_f64().unwrap();
    let d = variant("llama-gqa-untied-tiny", |_, c| {
        let obj = c.as_object_mut().unwrap();
        obj.remove("rope_theta");
        obj.remove("rope_scaling");
        obj.insert("rope_parameters".into(), serde_json::json!({"rope_type": "default", "rope_theta": theta}));
    });
    let m = load(d.path()).unwrap();
    let (sculpt_models::Model::Llama(a), sculpt_models::Model::Llama(b)) = (&m.model, &reference.model) else { unreachable!() };
    assert_eq!(a.config().rope_theta, theta);
    assert_eq!(a.config(), b.config());
}

#[test]
fn saving_over_an_existing_folder_replaces_it_whole() {
    let m = load(&tiny_fixture("llama-tied-tiny")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("model");
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("stale.txt"), "old").unwrap();
    m.save(&dst, None).unwrap();
    assert!(!dst.join("stale.txt").exists());
    assert!(dst.join("model.safetensors").is_file());
    // No temporary folders are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn a_missing_folder_or_tokenizer_is_a_clear_error() {
    let e = err_text(Path::new("/nonexistent/model"));
    assert!(e.contains("/nonexistent/model"), "{e}");
    let d = variant("llama-tied-tiny", |_, _| {});
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let e = err_text(d.path());
    assert!(e.contains("tokenizer.json"), "{e}");
}
