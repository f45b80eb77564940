//! Text task formats, read into `(prompt, answer)` pairs that the trainer tokenizes:
//!
//! - **O-LoRA CL_Benchmark** folders (`train.json`, `test.json`, `labels.json`, each a JSON list
//!   of `{"sentence", "label"}`), rendered with the O-LoRA prompt template (task key and dataset
//!   name prefix, the task key's instruction, the option list in `labels.json` order);
//! - **TRACE** folders (`train.json`, `test.json` lists of `{"prompt", "answer"}`);
//! - **chat** JSONL (`{"messages": [{"role", "content"}, …]}` per line): the last message must
//!   be the assistant's answer, everything before it is the prompt.
//!
//! Every error names the file (and the line or list index) and what was expected.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{DataError, Result};

/// One text example: the model sees `prompt` and must produce `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    /// The full prompt (instructions included).
    pub prompt: String,
    /// The expected answer text.
    pub answer: String,
}

/// Which split of a task folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train.json`.
    Train,
    /// `test.json`.
    Test,
}

impl Split {
    fn file(self) -> &'static str {
        match self {
            Split::Train => "train.json",
            Split::Test => "test.json",
        }
    }
}

/// O-LoRA's zero-shot instruction for a task key (`configs/instruction_config.json` of
/// CL_Benchmark), ending in a newline; `None` for keys without one (COPA).
pub fn olora_instruction(task_key: &str) -> Option<&'static str> {
    Some(match task_key {
        "TC" => "What is the topic of the following paragraph? Choose one from the option.\n",
        "SC" => "What is the sentiment of the following paragraph? Choose one from the option.\n",
        "NLI" => "What is the logical relationship between the \"sentence 1\" and the \"sentence 2\"? Choose one from the option.\n",
        "QQP" => "Whether the \"first sentence\" and the \"second sentence\" have the same meaning? Choose one from the option.\n",
        "BoolQA" => "According to the following passage, is the question true or false? Choose one from the option.\n",
        "MultiRC" => "According to the following passage and question, is the candidate answer true or false? Choose one from the option.\n",
        "WiC" => "Given a word and two sentences, whether the word is used with the same sense in both sentence? Choose one from the option.\n",
        _ => return None,
    })
}

/// The O-LoRA prompt: `Task:{key}\nDataset:{name}\n{instruction}Option: {l1, l2, …} \n{sentence}\nAnswer:`.
/// Task keys without an instruction (COPA) get neither instruction nor options.
pub fn olora_prompt(task_key: &str, dataset: &str, labels: &[String], sentence: &str) -> String {
    let mut p = format!("Task:{task_key}\nDataset:{dataset}\n");
    if let Some(instruction) = olora_instruction(task_key) {
        p.push_str(instruction);
        p.push_str("Option: ");
        p.push_str(&labels.join(", "));
        p.push_str(" \n");
    }
    p.push_str(sentence);
    p.push_str("\nAnswer:");
    p
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })
}

fn json_err(path: &Path, e: serde_path_to_error::Error<serde_json::Error>) -> DataError {
    let inner = e.inner();
    DataError::Line { path: path.to_path_buf(), line: inner.line(), msg: format!("at `{}`: {inner}", e.path()) }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = read_text(path)?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| json_err(path, e))
}

#[derive(Deserialize)]
struct OloraRow {
    sentence: String,
    label: String,
}

/// The file of `split` inside a task folder: `train.json` / `test.json`, or the `*.head.json`
/// sample when only that exists.
pub fn split_file(dir: &Path, split: Split) -> Result<PathBuf> {
    let full = dir.join(split.file());
    if full.is_file() {
        return Ok(full);
    }
    let head = dir.join(split.file().replace(".json", ".head.json"));
    if head.is_file() {
        return Ok(head);
    }
    Err(DataError::Io { path: full, source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file (nor a .head.json sample)") })
}

/// What to do with a row whose label is not in `labels.json` (MNLI's test set has 131 rows
/// labelled `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownLabels {
    /// An error naming the file and row.
    #[default]
    Error,
    /// Drop the row.
    Skip,
    /// Keep it (its answer can never be matched: O-LoRA's evaluation counts such rows as wrong).
    Keep,
}

/// Read one split of an O-LoRA CL_Benchmark task folder (`…/<TaskKey>/<dataset>/`). Labels
/// should be listed in `labels.json`; `unknown` says what happens to rows whose label is not.
pub fn read_olora(dir: &Path, split: Split, unknown: UnknownLabels) -> Result<Vec<TextExample>> {
    let labels_path = dir.join("labels.json");
    let labels: Vec<String> = parse_json(&labels_path)?;
    if labels.is_empty() {
        return Err(DataError::Empty { path: labels_path });
    }
    let dataset = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let task_key = dir.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let path = split_file(dir, split)?;
    let rows: Vec<OloraRow> = parse_json(&path)?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        if !labels.contains(&row.label) {
            match unknown {
                UnknownLabels::Skip => continue,
                UnknownLabels::Keep => {}
                UnknownLabels::Error => return Err(DataError::Line {
                path: path.clone(),
                line: 0,
                msg: format!("row {i}: label {:?} is not one of labels.json {:?} (set `data.unknown_labels` to \"skip\" or \"keep\" to accept it)", row.label, labels),
            }),
            }
        }
        out.push(TextExample { prompt: olora_prompt(&task_key, &dataset, &labels, &row.sentence), answer: row.label });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRow {
    prompt: String,
    answer: String,
}

/// Read one split of a TRACE task folder (`train.json` / `test.json`: lists of `{"prompt", "answer"}`).
pub fn read_trace(dir: &Path, split: Split) -> Result<Vec<TextExample>> {
    let path = split_file(dir, split)?;
    let rows: Vec<TraceRow> = parse_json(&path)?;
    if rows.is_empty() {
        return Err(DataError::Empty { path });
    }
    Ok(rows.into_iter().map(|r| TextExample { prompt: r.prompt, answer: r.answer }).collect())
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatLine {
    messages: Vec<Message>,
}

/// Read chat JSONL: one `{"messages": [...]}` per line, ending with an assistant message. Returns
/// the conversation before the answer and the answer, per line; `render` turns the former into
/// the prompt text (the model's chat template).
pub fn read_chat(path: &Path, render: &dyn Fn(&[Message]) -> std::result::Result<String, String>) -> Result<Vec<TextExample>> {
    let text = read_text(path)?;
    let mut out = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: String| DataError::Line { path: path.to_path_buf(), line, msg };
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: ChatLine = serde_json::from_str(raw).map_err(|e| err(format!("expected {{\"messages\": [{{\"role\", \"content\"}}, …]}}: {e}")))?;
        let Some((last, before)) = parsed.messages.split_last() else {
            return Err(err("`messages` is empty".into()));
        };
        if last.role != "assistant" {
            return Err(err(format!("the last message must be the assistant's answer, found role {:?}", last.role)));
        }
        if let Some(m) = before.iter().find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant")) {
            return Err(err(format!("unknown role {:?} (expected system, user or assistant)", m.role)));
        }
        let prompt = render(before).map_err(|e| err(format!("chat template: {e}")))?;
        out.push(TextExample { prompt, answer: last.content.clone() });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

/// O-LoRA's answer normalisation for exact match: lowercase, drop ASCII punctuation, collapse
/// whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lowered: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exact match after [`normalize_answer`].
pub fn exact_match(prediction: &str, answer: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    /// The canonical format of the spec (§3.3), character for character.
    #[test]
    fn olora_prompt_matches_the_spec_template() {
        let p = olora_prompt(
            "TC",
            "agnews",
            &labels(&["World", "Sports", "Business", "Science or Technology"]),
            "Title: US embassy bomb plot trial opens\nText: Six suspected Islamic militants go on trial.\n",
        );
        assert_eq!(
            p,
            "Task:TC\nDataset:agnews\nWhat is the topic of the following paragraph? Choose one from the option.\n\
             Option: World, Sports, Business, Science or Technology \n\
             Title: US embassy bomb plot trial opens\nText: Six suspected Islamic militants go on trial.\n\nAnswer:"
        );
        let nli = olora_prompt("NLI", "CB", &labels(&["entailment", "contradiction", "neutral"]), "s");
        assert!(nli.contains("between the \"sentence 1\" and the \"sentence 2\"? Choose one from the option.\nOption: entailment, contradiction, neutral \ns\nAnswer:"));
    }

    #[test]
    fn copa_has_no_instruction_or_options() {
        let p = olora_prompt("COPA", "COPA", &labels(&["A", "B"]), "Which sentence is the effect of \"x\"? Choose one between A and B.\nA: a\nB: b");
        assert_eq!(p, "Task:COPA\nDataset:COPA\nWhich sentence is the effect of \"x\"? Choose one between A and B.\nA: a\nB: b\nAnswer:");
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_answer("  Science or  Technology. "), "science or technology");
        assert!(exact_match("very negative!", "Very Negative"));
        assert!(!exact_match("negative", "very negative"));
        assert!(exact_match("Society & Culture", "society  culture"));
    }

    #[test]
    fn olora_folder_and_bad_label() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("SC").join("toy");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join("labels.json"), r#"["Good", "Bad"]"#).unwrap();
        std::fs::write(task.join("train.json"), r#"[{"sentence": "fine film", "label": "Good"}]"#).unwrap();
        std::fs::write(task.join("test.json"), r#"[{"sentence": "x", "label": "Meh"}]"#).unwrap();
        let train = read_olora(&task, Split::Train, UnknownLabels::Error).unwrap();
        assert_eq!(train[0].answer, "Good");
        assert!(train[0].prompt.starts_with("Task:SC\nDataset:toy\nWhat is the sentiment"), "{}", train[0].prompt);
        let e = read_olora(&task, Split::Test, UnknownLabels::Error).unwrap_err().to_string();
        assert!(e.contains("test.json") && e.contains("row 0") && e.contains("Meh"), "{e}");
        assert_eq!(read_olora(&task, Split::Test, UnknownLabels::Keep).unwrap()[0].answer, "Meh");
        assert!(matches!(read_olora(&task, Split::Test, UnknownLabels::Skip), Err(DataError::Empty { .. })));
        std::fs::write(task.join("test.json"), r#"[{"sentence": "x"}]"#).unwrap();
        let e = read_olora(&task, Split::Test, UnknownLabels::Error).unwrap_err().to_string();
        assert!(e.contains("test.json") && e.contains("label"), "{e}");
    }

    #[test]
    fn trace_and_chat() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.json"), r#"[{"prompt": "Stance:", "answer": "hawkish"}]"#).unwrap();
        assert_eq!(read_trace(dir.path(), Split::Train).unwrap()[0].answer, "hawkish");
        assert!(read_trace(dir.path(), Split::Test).unwrap_err().to_string().contains("test.json"));
        let chat = dir.path().join("c.jsonl");
        std::fs::write(&chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n").unwrap();
        let render = |m: &[Message]| Ok(m.iter().map(|m| format!("{}: {}\n", m.role, m.content)).collect::<String>());
        let e = read_chat(&chat, &render).unwrap_err().to_string();
        assert!(e.contains("c.jsonl:3") && e.contains("assistant"), "{e}");
        std::fs::write(&chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n").unwrap();
        assert_eq!(read_chat(&chat, &render).unwrap(), vec![TextExample { prompt: "user: hi\n".into(), answer: "yo".into() }]);
    }
}
