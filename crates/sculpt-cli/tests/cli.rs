//! The `sculpt` binary end to end: `generate` prints exactly transformers' greedy continuation,
//! `convert` writes a folder that loads back, and bad input gives one clear error and exit code 1.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(name)
}

fn sculpt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sculpt"));
    c.env("SCULPT_LOG", "warn");
    c
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
}

#[test]
fn generate_prints_the_greedy_continuation() {
    for name in ["llama-tied-tiny", "t5-v1_1-tiny"] {
        let e = expected(name);
        let out = sculpt()
            .args(["generate", "--model"])
            .arg(fixture(name))
            .args(["--prompt", e["prompt"].as_str().unwrap(), "--max-new-tokens", "10"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", e["generated_text"].as_str().unwrap()), "{name}");
    }
}

#[test]
fn convert_then_generate_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("copy");
    let st = sculpt().args(["convert", "--model"]).arg(fixture("llama-gqa-untied-tiny")).arg("--out").arg(&out_dir).status().unwrap();
    assert!(st.success());
    let e = expected("llama-gqa-untied-tiny");
    let out = sculpt()
        .args(["generate", "--model"])
        .arg(&out_dir)
        .args(["--prompt", e["prompt"].as_str().unwrap(), "--max-new-tokens", "10"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", e["generated_text"].as_str().unwrap()));
}

#[test]
fn a_bad_model_path_is_one_clear_error() {
    let out = sculpt().args(["generate", "--model", "/no/such/model", "--prompt", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/no/such/model") && err.starts_with("error:"), "{err}");
}

#[test]
fn smollm2_generate_matches_transformers_when_present() {
    let p = std::env::var_os("SCULPT_SMOLLM2_GGUF").map(PathBuf::from).filter(|p| p.is_file());
    let Some(gguf) = p else {
        eprintln!("SKIP: set SCULPT_SMOLLM2_GGUF (cargo xtask fetch-smollm2) to run the SmolLM2 CLI check");
        return;
    };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/smollm2/greedy.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["results_no_bos"][0];
    let n = case["new_ids"].as_array().unwrap().len().to_string();
    let out = sculpt()
        .args(["generate", "--model"])
        .arg(gguf)
        .args(["--prompt", case["prompt"].as_str().unwrap(), "--max-new-tokens", &n])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", case["new_text"].as_str().unwrap()));
}
