//! Groups of similar messages in one stream, and their promotion to spam
//! events.
//!
//! A message joins a group without comparing it to the stream's history:
//! 1. exact: the 64-bit hash of its normalised text is looked up (copies of
//!    a copypasta, with or without zero-width tricks, normalise the same);
//! 2. near: otherwise its MinHash signature (character 3-grams of the
//!    normalised text, gaoya's seeded `MinHasher32`) is queried in a banded
//!    LSH index (gaoya `MinHashIndex`) and the most similar group above the
//!    threshold wins (ties: the oldest group, so the choice is the same on
//!    every replica);
//! 3. otherwise it starts a new group.
//!
//! A group with enough messages from enough users is a spam event.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use gaoya::minhash::{MinHashIndex, MinHasher, MinHasher32};
use spamscope_proto::v1::SpamEventState;

/// Signature length = bands × rows. 8 bands of 3 rows put the LSH
/// candidate threshold, (1/8)^(1/3), at a Jaccard similarity of 0.5.
pub const BANDS: usize = 8;
pub const ROWS: usize = 3;
const NUM_HASHES: usize = BANDS * ROWS;
/// Seed of the hash family: part of the snapshot format, never change it.
const SEED: u64 = 0x5eed_5ca9_e000_0001;

/// Variants (distinct normalised texts) remembered per group.
const MAX_VARIANTS: usize = 8;
/// Distinct users remembered per group; beyond it, users are counted in
/// `users_overflow` (an upper bound of the distinct count).
pub const MAX_GROUP_USERS: usize = 4096;
const SAMPLE_USERS: usize = 5;

pub type Signature = Vec<u32>;

/// Stable 64-bit hash (xxh3), the same in every process and release.
pub fn stable_hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// MinHash signatures of normalised text.
pub struct Signer {
    hasher: MinHasher32<fnv::FnvBuildHasher>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Default for Signer {
    fn default() -> Self {
        Self {
            hasher: MinHasher32::new_with_hasher_and_seed(
                NUM_HASHES,
                fnv::FnvBuildHasher::default(),
                SEED,
            ),
        }
    }
}

impl Signer {
    pub fn sign(&self, normalized: &str) -> Signature {
        let chars: Vec<char> = normalized.chars().collect();
        if chars.len() < 3 {
            return self.hasher.create_signature(std::iter::once(&chars[..]));
        }
        self.hasher.create_signature(chars.windows(3))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub hash: u64,
    pub text: String,
    pub count: u64,
}

/// One group of similar messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub id: u64,
    pub signature: Signature,
    pub variants: Vec<Variant>,
    pub users: FxHashSet<u64>,
    pub users_overflow: u64,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Became a spam event (stays true once set).
    pub promoted: bool,
    pub state: SpamEventState,
    /// Updates emitted so far.
    pub version: u64,
    /// Changed since the last emitted update.
    pub dirty: bool,
    pub fingerprint: String,
    pub text: String,
    pub sample_users: Vec<String>,
}

impl Cluster {
    pub fn unique_users(&self) -> u64 {
        self.users.len() as u64 + self.users_overflow
    }

    pub fn is_active_event(&self) -> bool {
        self.promoted && self.state == SpamEventState::Active
    }

    /// A spam event with an update not emitted yet.
    pub fn has_pending_update(&self) -> bool {
        self.promoted && self.dirty
    }

    fn dominant(&self) -> Option<&Variant> {
        // Most frequent; ties go to the first seen (lowest index).
        self.variants
            .iter()
            .enumerate()
            .max_by(|(ia, a), (ib, b)| a.count.cmp(&b.count).then(ib.cmp(ia)))
            .map(|(_, v)| v)
    }
}

/// What happened to a message in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub cluster: u64,
    /// The group became a spam event with this message.
    pub promoted_now: bool,
    pub in_active_event: bool,
}

/// All groups of one stream.
pub struct Clusters {
    pub clusters: BTreeMap<u64, Cluster>,
    exact: FxHashMap<u64, u64>,
    index: MinHashIndex<u32, u64>,
    pub next_id: u64,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters")
            .field("groups", &self.clusters.len())
            .field("next_id", &self.next_id)
            .finish()
    }
}

impl Default for Clusters {
    fn default() -> Self {
        Self {
            clusters: BTreeMap::new(),
            exact: FxHashMap::default(),
            // Small start: most streams are quiet, and the default
            // constructor reserves room for thousands of entries per band.
            index: MinHashIndex::new_with_capacity(BANDS, ROWS, 0.0, 16, 0.0),
            next_id: 1,
        }
    }
}

/// One message as the index needs it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub normalized: &'a str,
    pub norm_hash: u64,
    pub text: &'a str,
    pub user: u64,
    pub login: &'a str,
    pub ts_ms: i64,
}

impl Clusters {
    /// Puts a message in its group.
    pub fn assign(
        &mut self,
        signer: &Signer,
        threshold: f64,
        min_users: u32,
        min_count: u32,
        m: Message<'_>,
    ) -> Assignment {
        let id = match self.exact.get(&m.norm_hash) {
            Some(&id) if self.clusters.contains_key(&id) => id,
            _ => {
                let sig = signer.sign(m.normalized);
                match self.nearest(&sig, threshold) {
                    Some(id) => id,
                    None => self.create(sig),
                }
            }
        };
        self.assign_to(id, min_users, min_count, m)
    }

    fn assign_to(&mut self, id: u64, min_users: u32, min_count: u32, m: Message<'_>) -> Assignment {
        let Some(c) = self.clusters.get_mut(&id) else {
            return Assignment {
                cluster: id,
                promoted_now: false,
                in_active_event: false,
            };
        };
        c.count += 1;
        c.first_seen_ms = c.first_seen_ms.min(m.ts_ms);
        c.last_seen_ms = c.last_seen_ms.max(m.ts_ms);
        if !c.users.contains(&m.user) {
            if c.users.len() < MAX_GROUP_USERS {
                c.users.insert(m.user);
            } else {
                c.users_overflow += 1;
            }
            if c.sample_users.len() < SAMPLE_USERS {
                c.sample_users.push(m.login.to_owned());
            }
        }
        let room = c.variants.len() < MAX_VARIANTS;
        match c.variants.iter_mut().find(|v| v.hash == m.norm_hash) {
            Some(v) => v.count += 1,
            None if room => {
                c.variants.push(Variant {
                    hash: m.norm_hash,
                    text: m.text.to_owned(),
                    count: 1,
                });
                self.exact.insert(m.norm_hash, id);
            }
            None => {}
        }
        c.dirty = true;
        let mut promoted_now = false;
        if !c.promoted
            && c.unique_users() >= u64::from(min_users)
            && c.count >= u64::from(min_count)
        {
            promoted_now = true;
            c.promoted = true;
            if let Some((hash, text)) = c.dominant().map(|d| (d.hash, d.text.clone())) {
                c.fingerprint = format!("{hash:016x}");
                c.text = text;
            }
        }
        if c.promoted && c.state != SpamEventState::Active {
            c.state = SpamEventState::Active;
        }
        Assignment {
            cluster: id,
            promoted_now,
            in_active_event: c.is_active_event(),
        }
    }

    fn nearest(&self, sig: &Signature, threshold: f64) -> Option<u64> {
        let mut best: Option<(f64, u64)> = None;
        for (id, sim) in self.index.query_owned_return_similarity(sig) {
            if sim < threshold {
                continue;
            }
            best = match best {
                Some((bs, bid)) if bs > sim || (bs == sim && bid < id) => Some((bs, bid)),
                _ => Some((sim, id)),
            };
        }
        best.map(|(_, id)| id)
    }

    fn create(&mut self, sig: Signature) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.index.insert(id, sig.clone());
        self.clusters.insert(
            id,
            Cluster {
                id,
                signature: sig,
                variants: Vec::new(),
                users: FxHashSet::default(),
                users_overflow: 0,
                count: 0,
                first_seen_ms: i64::MAX,
                last_seen_ms: i64::MIN,
                promoted: false,
                state: SpamEventState::Unspecified,
                version: 0,
                dirty: false,
                fingerprint: String::new(),
                text: String::new(),
                sample_users: Vec::new(),
            },
        );
        id
    }

    /// Puts back a group from a snapshot.
    pub fn restore(&mut self, c: Cluster) {
        for v in &c.variants {
            self.exact.insert(v.hash, c.id);
        }
        self.index.insert(c.id, c.signature.clone());
        self.clusters.insert(c.id, c);
    }

    pub fn get(&self, id: u64) -> Option<&Cluster> {
        self.clusters.get(&id)
    }

    /// Ends quiet spam events, returns the groups to emit (in id order) and
    /// forgets idle groups beyond the bounds.
    pub fn tick(&mut self, now_ms: i64, quiet_ms: u64, idle_ms: u64, max: u32) -> Vec<u64> {
        let quiet = i64::try_from(quiet_ms).unwrap_or(i64::MAX);
        let idle = i64::try_from(idle_ms).unwrap_or(i64::MAX);
        let mut emit = Vec::new();
        for c in self.clusters.values_mut() {
            if c.is_active_event() && now_ms.saturating_sub(c.last_seen_ms) >= quiet {
                c.state = SpamEventState::Ended;
                c.dirty = true;
            }
            if c.has_pending_update() {
                emit.push(c.id);
            }
        }
        let mut forget: Vec<u64> = self
            .clusters
            .values()
            .filter(|c| {
                !c.is_active_event()
                    && !c.has_pending_update()
                    && now_ms.saturating_sub(c.last_seen_ms) >= idle
            })
            .map(|c| c.id)
            .collect();
        let over = self
            .clusters
            .len()
            .saturating_sub(forget.len())
            .saturating_sub(max as usize);
        if over > 0 {
            // Oldest first; active spam events are kept as long as possible.
            let mut rest: Vec<(bool, i64, u64)> = self
                .clusters
                .values()
                .filter(|c| !forget.contains(&c.id) && !c.has_pending_update())
                .map(|c| (c.is_active_event(), c.last_seen_ms, c.id))
                .collect();
            rest.sort_unstable();
            forget.extend(rest.into_iter().take(over).map(|(_, _, id)| id));
        }
        for id in forget {
            self.remove(id);
        }
        emit
    }

    /// Marks an update of group `id` emitted; returns its new version.
    pub fn mark_emitted(&mut self, id: u64) -> Option<&Cluster> {
        let c = self.clusters.get_mut(&id)?;
        c.version += 1;
        c.dirty = false;
        Some(c)
    }

    /// Ends every spam event (the stream closed); returns them in id order.
    pub fn end_all(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for c in self.clusters.values_mut() {
            if c.promoted {
                if c.state != SpamEventState::Ended {
                    c.state = SpamEventState::Ended;
                    c.dirty = true;
                }
                if c.dirty {
                    out.push(c.id);
                }
            }
        }
        out
    }

    fn remove(&mut self, id: u64) {
        if let Some(c) = self.clusters.remove(&id) {
            for v in &c.variants {
                if self.exact.get(&v.hash) == Some(&id) {
                    self.exact.remove(&v.hash);
                }
            }
            self.index.remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spamscope_chat::normalize::normalize;

    fn msg<'a>(n: &'a str, t: &'a str, user: u64, ts: i64) -> Message<'a> {
        Message {
            normalized: n,
            norm_hash: stable_hash(n),
            text: t,
            user,
            login: "u",
            ts_ms: ts,
        }
    }

    #[test]
    fn near_duplicates_join_and_promote() {
        let s = Signer::default();
        let mut c = Clusters::default();
        let texts = [
            "SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK",
            "\u{200b}\u{200b}SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK",
            "SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK🧀",
            "SPAM🧀 THIS 🧀 CHEESE🧀FOR🧀GOOD🧀LUCK🧀",
            "SPAM🧀THIS🧀CHESSE🧀FOR🧀GOOD🧀LUCK",
        ];
        let mut ids = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let n = normalize(t);
            let a = c.assign(&s, 0.6, 3, 5, msg(&n, t, i as u64, i as i64));
            ids.push(a.cluster);
            if i == 4 {
                assert!(a.promoted_now && a.in_active_event);
            }
        }
        assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
        let other = normalize("what a nice stream today");
        let a = c.assign(&s, 0.6, 3, 5, msg(&other, "x", 9, 9));
        assert_ne!(a.cluster, ids[0]);
        let ev = c.get(ids[0]).unwrap();
        assert_eq!(ev.count, 5);
        assert_eq!(ev.unique_users(), 5);
        assert_eq!(
            ev.fingerprint,
            format!("{:016x}", stable_hash(&normalize(texts[0])))
        );
    }

    #[test]
    fn tick_ends_quiet_events_and_forgets_idle_groups() {
        let s = Signer::default();
        let mut c = Clusters::default();
        for u in 0..5 {
            let n = normalize("buy followers now");
            c.assign(&s, 0.6, 3, 5, msg(&n, "buy followers now", u, 1_000));
        }
        let n = normalize("hello");
        c.assign(&s, 0.6, 3, 5, msg(&n, "hello", 1, 1_000));
        assert_eq!(c.tick(2_000, 60_000, 300_000, 100), vec![1]);
        c.mark_emitted(1);
        assert!(c.tick(3_000, 60_000, 300_000, 100).is_empty());
        assert_eq!(c.tick(70_000, 60_000, 300_000, 100), vec![1]);
        assert_eq!(c.get(1).unwrap().state, SpamEventState::Ended);
        c.mark_emitted(1);
        c.tick(400_000, 60_000, 300_000, 100);
        assert!(c.is_empty());
    }
}
