//! Scoring one generated answer against its reference: exact match (O-LoRA, most TRACE tasks) and
//! TRACE's generation metrics — ROUGE-L (MeetingBank), edit similarity (Py150) and SARI
//! (20Minuten). Every score is in `[0, 1]`; a task's score is the mean over its examples (so an
//! empty prediction counts as 0, as in TRACE's averages).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::text::exact_match;

/// How a task's predictions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 1 when the prediction equals the answer after O-LoRA normalisation, else 0.
    #[default]
    ExactMatch,
    /// ROUGE-L F1: longest common subsequence of lower-cased word tokens.
    RougeL,
    /// Character-level similarity `2·LCS / (|prediction| + |reference|)` — the ratio behind
    /// `fuzzywuzzy.fuzz.ratio` (Levenshtein distance with insertions and deletions only), as a
    /// fraction instead of a percentage.
    EditSimilarity,
    /// SARI (Xu et al. 2016) against the source text, n-grams 1–4, as in Hugging Face
    /// `evaluate`'s `sari` (its keep-recall fix included).
    Sari,
}

impl Metric {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ExactMatch => "exact_match",
            Metric::RougeL => "rouge_l",
            Metric::EditSimilarity => "edit_similarity",
            Metric::Sari => "sari",
        }
    }

    /// Score one prediction; `source` is the model's input text (only SARI reads it).
    pub fn score(self, prediction: &str, reference: &str, source: &str) -> f64 {
        match self {
            Metric::ExactMatch => f64::from(u8::from(exact_match(prediction, reference))),
            Metric::RougeL => rouge_l(prediction, reference),
            Metric::EditSimilarity => edit_similarity(prediction, reference),
            Metric::Sari => sari(source, prediction, &[reference]),
        }
    }
}

/// Lower-cased words with ASCII punctuation split off as tokens of their own.
pub fn word_tokens(s: &str) -> Vec<String> {
    let mut out = vec![];
    for word in s.split_whitespace() {
        let mut cur = String::new();
        for c in word.chars() {
            if c.is_ascii_punctuation() {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            } else {
                cur.extend(c.to_lowercase());
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// Length of the longest common subsequence (O(|a|·|b|) time, O(|b|) memory).
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// ROUGE-L F1 over [`word_tokens`]; 0 when either side is empty.
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (word_tokens(prediction), word_tokens(reference));
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let l = lcs_len(&p, &r) as f64;
    if l == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (l / p.len() as f64, l / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// `2·LCS / (|a| + |b|)` over characters; 0 when either side is empty (TRACE skips those, which
/// counts them as 0 in its average).
pub fn edit_similarity(prediction: &str, reference: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (prediction.chars().collect(), reference.chars().collect());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    2.0 * lcs_len(&a, &b) as f64 / (a.len() + b.len()) as f64
}

type Counts = HashMap<Vec<String>, usize>;

fn ngrams(tokens: &[String], n: usize) -> Counts {
    let mut c = Counts::new();
    for w in tokens.windows(n) {
        *c.entry(w.to_vec()).or_default() += 1;
    }
    c
}

fn scaled(c: &Counts, k: usize) -> Counts {
    c.iter().map(|(g, &v)| (g.clone(), v * k)).collect()
}

/// Multiset intersection (counts: min, positive only).
fn and(a: &Counts, b: &Counts) -> Counts {
    a.iter().filter_map(|(g, &v)| b.get(g).map(|&w| (g.clone(), v.min(w)))).filter(|(_, v)| *v > 0).collect()
}

/// Multiset difference (counts: `a − b`, positive only).
fn minus(a: &Counts, b: &Counts) -> Counts {
    a.iter()
        .map(|(g, &v)| (g, v, b.get(g).copied().unwrap_or(0)))
        .filter(|&(_, v, w)| v > w)
        .map(|(g, v, w)| (g.clone(), v - w))
        .collect()
}

fn f1(p: f64, r: f64) -> f64 {
    if p > 0.0 || r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// Keep F1, deletion precision and addition F1 for one n-gram order.
fn sari_ngram(s: &Counts, c: &Counts, refs: &Counts, numref: usize) -> (f64, f64, f64) {
    let (s_rep, c_rep) = (scaled(s, numref), scaled(c, numref));
    // Keep.
    let keep = and(&s_rep, &c_rep);
    let keep_good = and(&keep, refs);
    let keep_all = and(&s_rep, refs);
    let good = |g: &Vec<String>, m: &Counts| m.get(g).copied().unwrap_or(0) as f64;
    let keep_p = if keep.is_empty() { 1.0 } else { keep.iter().map(|(g, &v)| good(g, &keep_good) / v as f64).sum::<f64>() / keep.len() as f64 };
    let keep_r = if keep_all.is_empty() {
        1.0
    } else {
        keep.keys().map(|g| good(g, &keep_good)).sum::<f64>() / keep_all.values().sum::<usize>() as f64
    };
    // Deletion (precision only, as in the original).
    let del = minus(&s_rep, &c_rep);
    let del_good = minus(&del, refs);
    let del_p = if del.is_empty() { 1.0 } else { del.iter().map(|(g, &v)| good(g, &del_good) / v as f64).sum::<f64>() / del.len() as f64 };
    // Addition (sets).
    let (s_set, c_set, r_set): (HashSet<_>, HashSet<_>, HashSet<_>) = (s.keys().collect(), c.keys().collect(), refs.keys().collect());
    let add: HashSet<_> = c_set.difference(&s_set).copied().collect();
    let add_good = add.intersection(&r_set).count() as f64;
    let add_all = r_set.difference(&s_set).count();
    let add_p = if add.is_empty() { 1.0 } else { add_good / add.len() as f64 };
    let add_r = if add_all == 0 { 1.0 } else { add_good / add_all as f64 };
    (f1(keep_p, keep_r), del_p, f1(add_p, add_r))
}

/// Sentence SARI in `[0, 1]`: the mean of the keep, deletion and addition scores, each averaged
/// over n-gram orders 1–4, on [`word_tokens`].
pub fn sari(source: &str, prediction: &str, references: &[&str]) -> f64 {
    let (s, c) = (word_tokens(source), word_tokens(prediction));
    let refs: Vec<Vec<String>> = references.iter().map(|r| word_tokens(r)).collect();
    let (mut keep, mut del, mut add) = (0.0, 0.0, 0.0);
    for n in 1..=4 {
        let mut r = Counts::new();
        for t in &refs {
            for (g, v) in ngrams(t, n) {
                *r.entry(g).or_default() += v;
            }
        }
        let (k, d, a) = sari_ngram(&ngrams(&s, n), &ngrams(&c, n), &r, references.len().max(1));
        keep += k;
        del += d;
        add += a;
    }
    (keep + del + add) / 12.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }

    #[test]
    fn lcs_and_rouge_l_by_hand() {
        assert_eq!(lcs_len(b"ABCBDAB", b"BDCABA"), 4);
        assert_eq!(lcs_len::<u8>(b"", b"abc"), 0);
        // "the cat sat on the mat" vs "the cat was on a mat": LCS = the cat on mat = 4 of 6 / 6.
        close(rouge_l("The cat sat on the mat", "the cat was on a mat"), 4.0 / 6.0);
        // 3 of 3 prediction words, 3 of 6 reference words: P 1, R 0.5, F 2/3.
        close(rouge_l("the cat sat", "the cat sat on the mat"), 2.0 / 3.0);
        close(rouge_l("", "x"), 0.0);
        close(rouge_l("Same, words.", "same , words ."), 1.0);
    }

    #[test]
    fn edit_similarity_is_fuzz_ratio_over_100() {
        // fuzz.ratio("abc", "abd") = 67: LCS 2, (2·2)/6.
        close(edit_similarity("abc", "abd"), 4.0 / 6.0);
        // fuzz.ratio("this is a test", "this is a test!") = 97.
        assert_eq!((100.0 * edit_similarity("this is a test", "this is a test!")).round(), 97.0);
        close(edit_similarity("return x", "return x"), 1.0);
        close(edit_similarity("", "x"), 0.0);
    }

    /// The example of Hugging Face `evaluate`'s SARI card: 26.953… with three references.
    #[test]
    fn sari_matches_the_reference_example() {
        let s = sari(
            "About 95 species are currently accepted.",
            "About 95 you now get in.",
            &["About 95 species are currently known.", "About 95 species are now accepted.", "95 species are now accepted."],
        );
        assert!((100.0 * s - 26.953).abs() < 0.01, "SARI {}", 100.0 * s);
    }

    #[test]
    fn sari_rewards_the_reference_edit() {
        let src = "the committee has decided to postpone the meeting";
        let reference = "the meeting is postponed";
        let copy = sari(src, src, &[reference]);
        let perfect = sari(src, reference, &[reference]);
        assert!(perfect > copy, "perfect {perfect} vs copy {copy}");
        assert!((0.0..=1.0).contains(&copy) && (0.0..=1.0).contains(&perfect));
    }

    #[test]
    fn metrics_parse_by_name() {
        for m in [Metric::ExactMatch, Metric::RougeL, Metric::EditSimilarity, Metric::Sari] {
            let parsed: Metric = serde_json::from_str(&format!("\"{}\"", m.name())).unwrap();
            assert_eq!(parsed, m);
        }
        close(Metric::ExactMatch.score("World.", "world", ""), 1.0);
    }
}
