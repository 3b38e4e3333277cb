//! Keys queued by the time they were last seen, so that forgetting what
//! went idle visits only what may be idle, not everything tracked each
//! sweep.
//!
//! Times are kept by the minute: a key is in the bucket of the minute it
//! was queued at. [`IdleQueue::take_due`] takes every bucket that may hold
//! a time at or before a cutoff, so it returns every key queued at or
//! before it, and perhaps some queued later in the same minute. The caller
//! checks each key's own time, forgets what is idle and queues the rest
//! again at their latest time. A key queued at a time no later than its
//! latest sighting is therefore always found when idle.
//!
//! Buckets instead of a binary heap: a push is an append to the newest
//! minute's list and a sweep takes whole lists, where a heap of thousands
//! paid two walks of its depth per key (the users' heap alone was 3 % of
//! the detector loop on a busy stream), and a key takes 8 bytes, not 16.

use std::collections::VecDeque;

/// One bucket per this many milliseconds.
const BUCKET_MS: i64 = 60_000;

#[derive(Debug, Default, Clone)]
pub(crate) struct IdleQueue {
    /// (minute, keys queued in it), oldest minute first. A deque, not an
    /// ordered map: nearly every push is to the newest minute, and a map's
    /// first node took 400 bytes per queue (two per stream).
    buckets: VecDeque<(i64, Vec<u64>)>,
    len: usize,
}

impl IdleQueue {
    /// Queues `key` as seen at `at_ms`.
    pub(crate) fn push(&mut self, at_ms: i64, key: u64) {
        let minute = at_ms.div_euclid(BUCKET_MS);
        self.len += 1;
        match self.buckets.back_mut() {
            Some((m, keys)) if *m == minute => keys.push(key),
            Some((m, _)) if *m > minute => {
                // Out of order (a key queued again at an earlier sighting,
                // or chat that arrived late): its minute's place.
                let i = self.buckets.partition_point(|(m, _)| *m < minute);
                match self.buckets.get_mut(i) {
                    Some((m, keys)) if *m == minute => keys.push(key),
                    _ => self.buckets.insert(i, (minute, vec![key])),
                }
            }
            _ => self.buckets.push_back((minute, vec![key])),
        }
    }

    /// Takes every key queued at or before `cutoff_ms` (and those queued
    /// later in the same minute), oldest minute first.
    pub(crate) fn take_due(&mut self, cutoff_ms: i64) -> Vec<u64> {
        let last = cutoff_ms.div_euclid(BUCKET_MS);
        let mut due = Vec::new();
        while self.buckets.front().is_some_and(|(m, _)| *m <= last) {
            let Some((_, keys)) = self.buckets.pop_front() else {
                break;
            };
            self.len -= keys.len();
            if due.is_empty() {
                due = keys;
            } else {
                due.extend(keys);
            }
        }
        due
    }

    /// Keys queued (a key may be queued more than once).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the keys `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.buckets.retain_mut(|(_, keys)| {
            keys.retain(|&k| keep(k));
            !keys.is_empty()
        });
        self.len = self.buckets.iter().map(|(_, keys)| keys.len()).sum();
    }

    /// Every key with the time it is queued at, in no set order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.buckets
            .iter()
            .flat_map(|(b, keys)| keys.iter().map(move |&k| (b * BUCKET_MS, k)))
    }
}

impl FromIterator<(i64, u64)> for IdleQueue {
    fn from_iter<I: IntoIterator<Item = (i64, u64)>>(iter: I) -> Self {
        let mut q = IdleQueue::default();
        for (at, key) in iter {
            q.push(at, key);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_every_key_queued_by_the_cutoff_and_keeps_the_later_minutes() {
        let mut q = IdleQueue::default();
        // (time, key): minutes 0, 0, 1, 2, -1 (before the epoch), then 1
        // again (out of order).
        for (at, key) in [
            (5_000, 1),
            (59_999, 2),
            (60_000, 3),
            (150_000, 4),
            (-1, 5),
            (61_000, 7),
        ] {
            q.push(at, key);
        }
        assert_eq!(q.len(), 6);
        assert!(q.take_due(-60_001).is_empty());
        // The cutoff 30 s into minute 0 takes minute -1 and all of minute 0
        // (key 2 is later than the cutoff: the caller checks it).
        assert_eq!(q.take_due(30_000), vec![5, 1, 2]);
        assert_eq!(q.len(), 3);
        assert_eq!(q.take_due(60_000), vec![3, 7]);
        q.push(61_000, 6);
        q.retain(|k| k != 4);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_due(i64::MAX), vec![6]);
        assert!(q.is_empty());
    }
}
