//! Batches of examples padded to a common length: padded inputs use `pad_id` with attention
//! mask 0, padded labels are `-100`. With shuffling off, batches follow file order.

use crate::pretokenized::Example;

/// A padded batch (row-major, `rows × len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `[b][s]` token ids.
    pub input_ids: Vec<Vec<u32>>,
    /// `[b][s]` 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
    /// `[b][t]` targets (`-100` ignored); `t = s` for decoder-only models.
    pub labels: Vec<Vec<i64>>,
}

/// Cuts a task's examples into batches, epoch after epoch, in file order or a seeded shuffle.
#[derive(Debug, Clone)]
pub struct Batcher {
    examples: Vec<Example>,
    batch_size: usize,
    pad_id: u32,
    shuffle: Option<u64>,
    order: Vec<usize>,
    epoch: usize,
    cursor: usize,
}

impl Batcher {
    /// A batcher over `examples`; `shuffle = Some(seed)` permutes each epoch deterministically.
    pub fn new(examples: Vec<Example>, batch_size: usize, pad_id: u32, shuffle: Option<u64>) -> Self {
        assert!(batch_size > 0 && !examples.is_empty(), "Batcher needs examples and a positive batch size");
        let mut b = Batcher { order: vec![], examples, batch_size, pad_id, shuffle, epoch: 0, cursor: 0 };
        b.reorder();
        b
    }

    fn reorder(&mut self) {
        self.order = (0..self.examples.len()).collect();
        if let Some(seed) = self.shuffle {
            // Fisher–Yates with a splitmix64 stream: reproducible without a dependency.
            let mut state = seed ^ (self.epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = || {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            for i in (1..self.order.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
        }
    }

    /// Batches per epoch (the last one may be short).
    pub fn batches_per_epoch(&self) -> usize {
        self.examples.len().div_ceil(self.batch_size)
    }

    /// The next batch, wrapping into a new epoch when one ends.
    pub fn next_batch(&mut self) -> Batch {
        if self.cursor >= self.order.len() {
            self.epoch += 1;
            self.cursor = 0;
            self.reorder();
        }
        let end = (self.cursor + self.batch_size).min(self.order.len());
        let rows: Vec<&Example> = self.order[self.cursor..end].iter().map(|&i| &self.examples[i]).collect();
        self.cursor = end;
        pad(&rows, self.pad_id)
    }
}

/// Pad `rows` to their longest input and longest label sequence.
pub fn pad(rows: &[&Example], pad_id: u32) -> Batch {
    let s = rows.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
    let t = rows.iter().map(|e| e.labels.len()).max().unwrap_or(0);
    let mut b = Batch { input_ids: vec![], attention_mask: vec![], labels: vec![] };
    for e in rows {
        let mut ids = e.input_ids.clone();
        let mut mask = vec![1; ids.len()];
        ids.resize(s, pad_id);
        mask.resize(s, 0);
        let mut labels = e.labels.clone();
        labels.resize(t, -100);
        b.input_ids.push(ids);
        b.attention_mask.push(mask);
        b.labels.push(labels);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize, v: u32) -> Example {
        Example { input_ids: vec![v; n], labels: vec![v as i64; n] }
    }

    #[test]
    fn pads_inputs_masks_and_labels() {
        let b = pad(&[&ex(3, 5), &ex(1, 6)], 0);
        assert_eq!(b.input_ids, vec![vec![5, 5, 5], vec![6, 0, 0]]);
        assert_eq!(b.attention_mask, vec![vec![1, 1, 1], vec![1, 0, 0]]);
        assert_eq!(b.labels[1], vec![6, -100, -100]);
    }

    #[test]
    fn file_order_without_shuffle_and_wraps_epochs() {
        let mut b = Batcher::new((0..5).map(|i| ex(1, i)).collect(), 2, 0, None);
        let firsts: Vec<u32> = (0..4).map(|_| b.next_batch().input_ids[0][0]).collect();
        assert_eq!(firsts, vec![0, 2, 4, 0]);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mk = || Batcher::new((0..10).map(|i| ex(1, i)).collect(), 10, 0, Some(7));
        let (mut a, mut b) = (mk(), mk());
        let (x, y) = (a.next_batch(), b.next_batch());
        assert_eq!(x, y);
        let mut seen: Vec<u32> = x.input_ids.iter().map(|r| r[0]).collect();
        assert_ne!(seen, (0..10).collect::<Vec<_>>());
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
