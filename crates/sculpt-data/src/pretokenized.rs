//! Pre-tokenized JSONL, as mini_trainer uses: one `{"input_ids": [...], "labels": [...]}` object
//! per line, labels `-100` where the loss ignores a position. For decoder-only models both lists
//! have the same length (position `t` of `labels` is the token at `t`; the loss shifts); for
//! encoder–decoder models `input_ids` feed the encoder and `labels` are the decoder targets.

use std::path::Path;

use serde::Deserialize;

use crate::error::{DataError, Result};

/// One training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Targets, `-100` = ignored.
    pub labels: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    input_ids: Vec<i64>,
    labels: Option<Vec<i64>>,
    #[serde(default)]
    #[allow(dead_code)]
    attention_mask: Option<Vec<i64>>,
}

/// Read a pre-tokenized JSONL file. `same_length` requires `labels` to match `input_ids` in
/// length (decoder-only models); `vocab` bounds every id. Blank lines are skipped.
pub fn read_pretokenized(path: &Path, same_length: bool, vocab: usize) -> Result<Vec<Example>> {
    let text = read(path)?;
    let mut out = vec![];
    for parsed in lines(&text, path) {
        let (line, l) = parsed?;
        let err = |msg: String| DataError::Line { path: path.to_path_buf(), line, msg };
        if l.input_ids.is_empty() {
            return Err(err("`input_ids` is empty".into()));
        }
        let ids = l
            .input_ids
            .iter()
            .map(|&x| if x >= 0 && (x as usize) < vocab { Ok(x as u32) } else { Err(err(format!("token id {x} in `input_ids` is outside the vocabulary 0..{vocab}"))) })
            .collect::<Result<Vec<u32>>>()?;
        let labels = l.labels.unwrap_or_else(|| ids.iter().map(|&x| x as i64).collect());
        if same_length && labels.len() != ids.len() {
            return Err(err(format!("`labels` has {} entries but `input_ids` has {}", labels.len(), ids.len())));
        }
        if let Some(bad) = labels.iter().find(|&&x| x != -100 && !(x >= 0 && (x as usize) < vocab)) {
            return Err(err(format!("label {bad} is neither -100 nor a token id in 0..{vocab}")));
        }
        if labels.iter().all(|&x| x == -100) {
            return Err(err("every label is -100: the example contributes no loss".into()));
        }
        out.push(Example { input_ids: ids, labels });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })
}

/// The non-blank lines of `text` (the file `path`), each parsed as a [`Line`] with its 1-based
/// line number, in order; a line that is not one is an error naming the file and line.
fn lines<'a>(text: &'a str, path: &'a Path) -> impl Iterator<Item = Result<(usize, Line)>> + 'a {
    text.lines().enumerate().filter(|(_, raw)| !raw.trim().is_empty()).map(move |(i, raw)| {
        serde_json::from_str(raw)
            .map(|l| (i + 1, l))
            .map_err(|e| DataError::Line { path: path.to_path_buf(), line: i + 1, msg: format!("expected {{\"input_ids\": [...], \"labels\": [...]}}: {e}") })
    })
}

/// The longest `input_ids` and the longest `labels` (a line without `labels` counts its
/// `input_ids`) of a pre-tokenized JSONL file, with no id checked or kept: what a memory plan
/// needs before the model's vocabulary is known. Blank lines are skipped; a line that is not a
/// `{"input_ids": [...], ...}` object is an error naming the file and line, as in
/// [`read_pretokenized`].
pub fn longest_pretokenized(path: &Path) -> Result<(usize, usize)> {
    let text = read(path)?;
    let (mut inputs, mut labels, mut any) = (0, 0, false);
    for parsed in lines(&text, path) {
        let (_, l) = parsed?;
        inputs = inputs.max(l.input_ids.len());
        labels = labels.max(l.labels.map_or(l.input_ids.len(), |x| x.len()));
        any = true;
    }
    if !any {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok((inputs, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, same: bool) -> Result<Vec<Example>> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        read_pretokenized(f.path(), same, 100)
    }

    #[test]
    fn reads_lines_and_defaults_labels_to_the_inputs() {
        let ex = read("{\"input_ids\":[1,2,3],\"labels\":[-100,2,3]}\n\n{\"input_ids\":[4,5]}\n", true).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].labels, vec![-100, 2, 3]);
        assert_eq!(ex[1].labels, vec![4, 5]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("{\"input_ids\":[1,2]}\nnot json\n", ":2:"),
            ("{\"input_ids\":[1,2],\"labels\":[1]}\n", "has 1 entries"),
            ("{\"input_ids\":[1,200]}\n", "outside the vocabulary"),
            ("{\"input_ids\":[1,2],\"labels\":[-100,-100]}\n", "no loss"),
            ("{\"input_ids\":[1],\"extra\":1}\n", "unknown field"),
            ("\n\n", "no examples"),
        ];
        for (text, want) in cases {
            let e = read(text, true).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn longest_lists_without_reading_ids() {
        let f = tempfile::NamedTempFile::new().unwrap();
        // Labels longer than the inputs (an encoder–decoder example), a line without labels,
        // and ids no vocabulary bounds yet.
        std::fs::write(f.path(), "{\"input_ids\":[1,2,3],\"labels\":[1,2,3,4,5]}\n\n{\"input_ids\":[9,9,9,9,9,9,999999]}\n").unwrap();
        assert_eq!(longest_pretokenized(f.path()).unwrap(), (7, 7));
        std::fs::write(f.path(), "{\"input_ids\":[1,2],\"labels\":[1,2,3,4]}\n").unwrap();
        assert_eq!(longest_pretokenized(f.path()).unwrap(), (2, 4));
        for (text, want) in [("{\"input_ids\":[1]}\n{\"ids\":[1]}\n", ":2:"), ("\n", "no examples")] {
            std::fs::write(f.path(), text).unwrap();
            let e = longest_pretokenized(f.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in "\\PC*") {
            let _ = read(&s, true);
        }
    }
}
