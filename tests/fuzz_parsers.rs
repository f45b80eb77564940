//! Fuzzing of the parsers a user's files reach: run configs, every dataset format and the
//! checkpoint state — arbitrary bytes and mutations of valid inputs must give an error (or a
//! value), never a panic.
//!
//! CI runs a short pass (256 cases per parser). The long run (10^5 cases per parser):
//! `SCULPT_FUZZ_CASES=100000 cargo test --release --test fuzz_parsers`.

use std::path::Path;

use proptest::prelude::*;
use sculpt_data::text::{read_chat, read_olora, read_trace, Message, UnknownLabels};
use sculpt_data::{read_pretokenized, Split};
use sculpt_train::RunConfig;

fn cases() -> u32 {
    std::env::var("SCULPT_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
}

const VALID_CONFIG: &str = include_str!("../configs/demo.toml");

/// Byte-level mutations of a valid input: flip, delete, duplicate or insert at random places.
fn mutate(base: &str) -> impl Strategy<Value = Vec<u8>> {
    let bytes = base.as_bytes().to_vec();
    let n = bytes.len();
    prop::collection::vec((0..n.max(1), 0u8..4, any::<u8>()), 1..12).prop_map(move |edits| {
        let mut b = bytes.clone();
        for (at, op, x) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match op {
                0 if !b.is_empty() => b[at] = x,
                1 if !b.is_empty() => {
                    b.remove(at);
                }
                2 => b.insert(at, x),
                _ => {
                    let end = (at + 8).min(b.len());
                    let chunk = b[at..end].to_vec();
                    b.splice(at..at, chunk);
                }
            }
        }
        b
    })
}

fn text_or_bytes(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![mutate(base), prop::collection::vec(any::<u8>(), 0..256)]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn run_configs_never_panic(bytes in text_or_bytes(VALID_CONFIG)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = RunConfig::from_toml(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn text_datasets_never_panic(
        trace in text_or_bytes(r#"[{"prompt": "Stance:", "answer": "hawkish"}, {"prompt": "x", "answer": "y"}]"#),
        olora in text_or_bytes(r#"[{"sentence": "fine film", "label": "Good"}, {"sentence": "bad", "label": "Bad"}]"#),
        labels in text_or_bytes(r#"["Good", "Bad"]"#),
        chat in text_or_bytes("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n"),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("SC").join("toy");
        std::fs::create_dir_all(&task).unwrap();
        write(&task, "train.json", &trace);
        let _ = read_trace(&task, Split::Train);
        write(&task, "train.json", &olora);
        write(&task, "labels.json", &labels);
        for u in [UnknownLabels::Error, UnknownLabels::Skip, UnknownLabels::Keep] {
            let _ = read_olora(&task, Split::Train, u);
        }
        let p = write(dir.path(), "chat.jsonl", &chat);
        let render = |m: &[Message]| Ok::<_, String>(m.iter().map(|m| m.content.clone()).collect::<String>());
        let _ = read_chat(&p, &render);
        let p = write(dir.path(), "pre.jsonl", &chat);
        let _ = read_pretokenized(&p, true, 50);
    }

    #[test]
    fn pretokenized_never_panics(bytes in text_or_bytes("{\"input_ids\": [1, 2, 3], \"labels\": [-100, 2, 3]}\n{\"input_ids\": [4]}\n")) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", &bytes);
        let _ = read_pretokenized(&p, true, 10);
        let _ = read_pretokenized(&p, false, 10);
    }

    /// The checkpoint state (`state.json`) as the resume path reads it.
    #[test]
    fn checkpoint_state_never_panics(bytes in text_or_bytes(r#"{"format": 1, "method": "osft", "task_names": ["a"], "completed": 1, "matrix": {"tasks": ["a"], "acc": [[0.0, 1.0]]}, "tasks": [], "final_dtype": "F32"}"#)) {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let ck = run.join("checkpoints").join("task-01-a");
        std::fs::create_dir_all(ck.join("model")).unwrap();
        write(&ck, "state.json", &bytes);
        let _ = sculpt_train::run::latest_checkpoint(&run);
    }
}
