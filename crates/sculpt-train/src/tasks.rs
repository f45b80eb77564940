//! Task data: every task of the stream read, checked and tokenized before anything trains, so a
//! bad file stops the run at once with an error that names it.
//!
//! Text examples become token examples per family:
//! - decoder-only (LLaMA): `input_ids = prompt ++ answer ++ [eos]` with the prompt encoded with
//!   the tokenizer's special tokens (BOS when it adds one) and the labels `-100` on the prompt;
//! - encoder–decoder (T5): the prompt is the encoder input, `answer ++ [eos]` the labels.
//!
//! Evaluation examples keep the prompt ids and the answer text; greedy decoding is scored by
//! exact match after O-LoRA normalisation.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use sculpt_data::text::{read_chat, read_olora, read_trace, Message};
use sculpt_data::{read_pretokenized, Example, Metric, Split, TextExample};
use sculpt_models::loss::IGNORE_INDEX;
use tokenizers::Tokenizer;

use crate::config::{DataFormat, DataSection, Overflow, RunConfig, TaskConfig};
use crate::error::{Result, TrainError};

/// One evaluation example.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalExample {
    /// The prompt's token ids (what generation continues).
    pub prompt_ids: Vec<u32>,
    /// The expected answer text.
    pub answer: String,
    /// The prompt text (SARI scores edits against it; empty for pre-tokenized data).
    pub source: String,
}

/// A task, ready to train and evaluate.
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Task name.
    pub name: String,
    /// Training examples.
    pub train: Vec<Example>,
    /// Evaluation examples (empty when the task has no test data).
    pub eval: Vec<EvalExample>,
    /// How its predictions are scored.
    pub metric: Metric,
}

/// What the tokenizer side needs to know about the model.
#[derive(Clone)]
pub struct TokenizerInfo<'a> {
    /// The tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Decoder-only (labels aligned with inputs) or encoder–decoder.
    pub decoder_only: bool,
    /// End-of-sequence id appended to answers.
    pub eos: u32,
    /// Vocabulary size of the model (bounds pre-tokenized ids).
    pub vocab: usize,
    /// The model's chat template (`tokenizer_config.json` `chat_template`), if any.
    pub chat_template: Option<String>,
    /// BOS / EOS token strings for chat templates.
    pub bos_token: String,
    /// EOS token string.
    pub eos_token: String,
}

fn sample<T>(mut xs: Vec<T>, max: Option<usize>, seed: u64) -> Vec<T> {
    match max {
        Some(n) if n < xs.len() => {
            xs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            xs.truncate(n);
            xs
        }
        _ => xs,
    }
}

fn data_err(path: &Path, index: usize, msg: String) -> TrainError {
    TrainError::Data(sculpt_data::DataError::Line { path: path.to_path_buf(), line: 0, msg: format!("example {index}: {msg}") })
}

/// Encode text, mapping tokenizer failures to an error naming the file.
fn encode(tok: &Tokenizer, text: &str, special: bool, path: &Path, index: usize) -> Result<Vec<u32>> {
    tok.encode(text, special).map(|e| e.get_ids().to_vec()).map_err(|e| data_err(path, index, format!("tokenizer: {e}")))
}

/// Fit `ids` into `max` tokens, or fail when the config says so. Prompts keep their end (where
/// the question is) and a leading BOS; answers keep their start and the final EOS.
fn fit(mut ids: Vec<u32>, max: usize, is_prompt: bool, keep_bos: bool, limits: &DataSection, path: &Path, index: usize) -> Result<Vec<u32>> {
    if ids.len() <= max {
        return Ok(ids);
    }
    let what = if is_prompt { "the prompt" } else { "the answer" };
    if limits.overflow == Overflow::Error {
        return Err(data_err(path, index, format!("{what} has {} tokens, more than the limit {max} (set `data.overflow = \"truncate\"` to cut it)", ids.len())));
    }
    if is_prompt {
        let first = ids[0];
        ids.drain(..ids.len() - max + usize::from(keep_bos));
        if keep_bos {
            ids.insert(0, first);
        }
    } else {
        let last = *ids.last().expect("non-empty");
        ids.truncate(max);
        *ids.last_mut().expect("non-empty") = last;
    }
    Ok(ids)
}

/// Tokenize one text example for training and as an evaluation example.
pub fn tokenize(info: &TokenizerInfo<'_>, ex: &TextExample, limits: &DataSection, path: &Path, index: usize) -> Result<(Example, EvalExample)> {
    let mut prompt = encode(info.tokenizer, &ex.prompt, true, path, index)?;
    if prompt.is_empty() {
        return Err(data_err(path, index, "the prompt encodes to no tokens".into()));
    }
    if !info.decoder_only && prompt.last() != Some(&info.eos) {
        prompt.push(info.eos);
    }
    // A leading BOS (decoder) stays when the prompt is cut; encoder inputs keep their final EOS
    // by cutting the start instead.
    let has_bos = info.decoder_only && info.tokenizer.id_to_token(prompt[0]).is_some_and(|t| t == info.bos_token);
    let prompt = fit(prompt, limits.max_prompt_tokens, true, has_bos, limits, path, index)?;
    let mut answer = encode(info.tokenizer, &ex.answer, false, path, index)?;
    if answer.last() != Some(&info.eos) {
        answer.push(info.eos);
    }
    let answer = fit(answer, limits.max_answer_tokens, false, false, limits, path, index)?;
    let train = if info.decoder_only {
        let mut input_ids = prompt.clone();
        input_ids.extend(&answer);
        let mut labels = vec![IGNORE_INDEX; prompt.len()];
        labels.extend(answer.iter().map(|&t| t as i64));
        Example { input_ids, labels }
    } else {
        Example { input_ids: prompt.clone(), labels: answer.iter().map(|&t| t as i64).collect() }
    };
    Ok((train, EvalExample { prompt_ids: prompt, answer: ex.answer.clone(), source: ex.prompt.clone() }))
}

/// An evaluation example from a pre-tokenized one: the prompt is the unlabelled prefix
/// (decoder-only) or the encoder input, the answer the decoded labelled tokens.
fn eval_from_tokens(info: &TokenizerInfo<'_>, ex: &Example, path: &Path, index: usize) -> Result<EvalExample> {
    let (prompt_ids, answer_ids): (Vec<u32>, Vec<u32>) = if info.decoder_only {
        let start = ex.labels.iter().position(|&l| l != IGNORE_INDEX).ok_or_else(|| data_err(path, index, "no labelled tokens to evaluate".into()))?;
        (ex.input_ids[..start].to_vec(), ex.labels[start..].iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect())
    } else {
        (ex.input_ids.clone(), ex.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect())
    };
    if prompt_ids.is_empty() {
        return Err(data_err(path, index, "the labelled part starts at position 0: nothing to prompt with".into()));
    }
    let answer = info.tokenizer.decode(&answer_ids, true).map_err(|e| data_err(path, index, format!("tokenizer: {e}")))?;
    Ok(EvalExample { prompt_ids, answer, source: String::new() })
}

/// Render a conversation with the model's chat template (Jinja, as transformers'
/// `apply_chat_template(…, add_generation_prompt=True)`), or `role: content` lines when the model
/// has none.
pub fn render_chat(info: &TokenizerInfo<'_>, messages: &[Message]) -> std::result::Result<String, String> {
    let Some(template) = &info.chat_template else {
        let mut s: String = messages.iter().map(|m| format!("{}: {}\n", m.role, m.content)).collect();
        s.push_str("assistant:");
        return Ok(s);
    };
    let mut env = minijinja::Environment::new();
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| e.to_string())?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => info.bos_token.clone(),
        eos_token => info.eos_token.clone(),
    };
    env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| e.to_string())
}

fn tokenize_all(info: &TokenizerInfo<'_>, xs: &[TextExample], limits: &DataSection, path: &Path) -> Result<(Vec<Example>, Vec<EvalExample>)> {
    let mut train = Vec::with_capacity(xs.len());
    let mut eval = Vec::with_capacity(xs.len());
    for (i, x) in xs.iter().enumerate() {
        let (t, e) = tokenize(info, x, limits, path, i)?;
        train.push(t);
        eval.push(e);
    }
    Ok((train, eval))
}

/// Read one task.
pub fn load_task(info: &TokenizerInfo<'_>, task: &TaskConfig, cfg: &RunConfig, index: usize) -> Result<TaskData> {
    let limits = &cfg.data;
    let seed = cfg.seed.wrapping_add(1000 + index as u64);
    let (train, eval) = match task.format {
        DataFormat::Pretokenized => {
            let train = read_pretokenized(&task.data, info.decoder_only, info.vocab)?;
            let eval = match &task.test {
                Some(p) => {
                    let xs = sample(read_pretokenized(p, info.decoder_only, info.vocab)?, limits.max_eval_examples, seed + 1);
                    xs.iter().enumerate().map(|(i, x)| eval_from_tokens(info, x, p, i)).collect::<Result<Vec<_>>>()?
                }
                None => vec![],
            };
            (sample(train, limits.max_train_examples, seed), eval)
        }
        DataFormat::Olora | DataFormat::Trace => {
            let read = |split| if task.format == DataFormat::Olora { read_olora(&task.data, split, limits.unknown_labels) } else { read_trace(&task.data, split) };
            let train_text = sample(read(Split::Train)?, limits.max_train_examples, seed);
            let test_text = sample(read(Split::Test)?, limits.max_eval_examples, seed + 1);
            let train_path = sculpt_data::text::split_file(&task.data, Split::Train)?;
            let test_path = sculpt_data::text::split_file(&task.data, Split::Test)?;
            (tokenize_all(info, &train_text, limits, &train_path)?.0, tokenize_all(info, &test_text, limits, &test_path)?.1)
        }
        DataFormat::Chat => {
            let render = |m: &[Message]| render_chat(info, m);
            let train_text = sample(read_chat(&task.data, &render)?, limits.max_train_examples, seed);
            let train = tokenize_all(info, &train_text, limits, &task.data)?.0;
            let eval = match &task.test {
                Some(p) => tokenize_all(info, &sample(read_chat(p, &render)?, limits.max_eval_examples, seed + 1), limits, p)?.1,
                None => vec![],
            };
            (train, eval)
        }
    };
    if train.is_empty() {
        return Err(TrainError::Data(sculpt_data::DataError::Empty { path: task.data.clone() }));
    }
    Ok(TaskData { name: task.name.clone(), train, eval, metric: task.metric.unwrap_or_default() })
}
