//! Groups of similar messages in one stream, and their promotion to spam
//! events.
//!
//! A message joins a group without comparing it to the stream's history.
//! Everything works on its similarity key (letters and digits of the
//! normalised text, one repetition of its unit: `spamscope_chat::normalize::
//! similarity_key`), so spacing, punctuation, emoji between the words and
//! the number of repetitions do not split a copypasta:
//! 1. exact: the 64-bit hash of the key is looked up;
//! 2. near: otherwise its MinHash signature (character 3-grams of the key,
//!    gaoya's seeded `MinHasher32`) is looked up in a banded LSH index
//!    ([`Bands`]: the groups that share every slot of at least one band are
//!    the candidates) and the most similar group above the threshold wins
//!    (ties: the oldest group, so the choice is the same on every replica);
//! 3. a word more or less: a short message (up to four words) whose word or
//!    word pair is a group's key, or whose key is a word (pair) of a short
//!    group's text, joins it when that part is at least six letters and
//!    half of the longer key (`WATCH SADIST` and `SADIST`);
//! 4. otherwise it starts a new group.
//!
//! A group with enough messages from enough users is a spam event, with a
//! class ([`crate::classes`]). Its text follows its most frequent variant
//! (variants are counted with the Space-Saving algorithm, so a bounded
//! list still finds the heavy hitters); its fingerprint is the hash of that
//! variant's key at the event's first update and never changes after.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use compact_str::CompactString;
use gaoya::minhash::{MinHasher, MinHasher32};
use smallvec::SmallVec;
use spamscope_proto::v1::{SpamEventClass, SpamEventState, Trigger};

use crate::classes::Measures;
use crate::idle::IdleQueue;
use crate::params::DetectorParams;
use spamscope_chat::normalize::word_key_hashes;

/// Signature length = bands × rows. 8 bands of 3 rows put the LSH
/// candidate threshold, (1/8)^(1/3), at a Jaccard similarity of 0.5.
pub const BANDS: usize = 8;
pub const ROWS: usize = 3;
const NUM_HASHES: usize = BANDS * ROWS;
/// Seed of the hash family: part of the snapshot format, never change it.
const SEED: u64 = 0x5eed_5ca9_e000_0001;

/// Variants (distinct normalised texts) counted per group.
const MAX_VARIANTS: usize = 8;
/// Keys of a group found by exact lookup.
const MAX_KEYS: usize = 16;
/// Shortest word (pair) that matches a variant with a word more or less.
pub const MIN_PIECE_LETTERS: usize = 6;
/// Messages of up to this many words are matched by their words.
pub const MAX_PIECE_WORDS: usize = 4;
/// Distinct users remembered per group; beyond it, users are counted in
/// `users_overflow` (an upper bound of the distinct count).
pub const MAX_GROUP_USERS: usize = 4096;
const SAMPLE_USERS: usize = 5;

/// A MinHash signature, shared: the text cache and every group of that
/// text hold the same one.
pub type Signature = std::sync::Arc<[u32]>;

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

/// The signer of every detector (its hashes are fixed: signatures from
/// any process compare).
pub(crate) static SIGNER: std::sync::LazyLock<Signer> = std::sync::LazyLock::new(Signer::default);

/// What grouping derives from a similarity key when its exact key is not
/// grouped yet: the MinHash signature and the word pieces. Worked out at
/// most once; the text cache ([`crate::text`]) keeps one per distinct text,
/// so a copypasta is signed once per detector thread, not once per stream.
#[derive(Debug, Default)]
pub struct Derived {
    signature: std::cell::OnceCell<Signature>,
    pieces: std::cell::OnceCell<Vec<(u64, usize)>>,
}

impl Derived {
    pub(crate) fn signature(&self, key: &str) -> &Signature {
        self.signature.get_or_init(|| SIGNER.sign(key).into())
    }

    pub(crate) fn pieces(&self, normalized: &str) -> &[(u64, usize)] {
        self.pieces
            .get_or_init(|| word_key_hashes(normalized, MAX_PIECE_WORDS))
    }
}

/// How alike two texts are as grouping sees them: the estimated Jaccard
/// similarity of their similarity keys' character trigrams (the share of
/// equal MinHash slots), 1 for the same key and 0 when either has no
/// letters or digits. Grouping puts a text in a group from
/// [`crate::DetectorParams::similarity_threshold`] on.
pub fn similarity(a: &str, b: &str) -> f64 {
    let (fa, fb) = (crate::text::facts(a), crate::text::facts(b));
    if fa.key.is_empty() || fb.key.is_empty() {
        return 0.0;
    }
    if fa.key_hash == fb.key_hash && fa.key == fb.key {
        return 1.0;
    }
    signature_similarity(fa.derived.signature(&fa.key), fb.derived.signature(&fb.key))
}

/// The share of equal slots of two signatures (the estimated Jaccard
/// similarity of what they sign).
fn signature_similarity(a: &[u32], b: &[u32]) -> f64 {
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / a.len().max(b.len()).max(1) as f64
}

/// Banded LSH: a signature's [`BANDS`] runs of [`ROWS`] slots are its
/// bands, and the groups whose signature has the same slots in a band are
/// in that band's bucket. Groups that share a bucket with a query are its
/// candidates (a Jaccard similarity of 0.5 shares one with probability
/// 1 - (1 - 0.5^3)^8 = 0.66, one of 0.8 with 0.99).
///
/// One flat table for every band: an entry is a bucket's key (a 64-bit
/// mix of the band's number and its slots) and one group, 16 bytes; a
/// bucket of several groups is several entries under the same key. Every
/// new group adds [`BANDS`] entries, so their size is most of the index's
/// memory: a map from the band's slots to a list of groups took three
/// times as much. Two different buckets whose keys collide (odds of
/// 2^-64 a pair) only add a candidate, and candidates are weighed on their
/// whole signature.
#[derive(Default)]
struct Bands {
    entries: hashbrown::HashTable<(u64, u64)>,
}

/// A bijective 64-bit mixer (the splitmix64 finaliser).
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Bands {
    /// The bucket keys of a signature; none for a signature of another
    /// length (never from [`Signer`]).
    fn keys(sig: &[u32]) -> impl Iterator<Item = u64> + '_ {
        let ok = sig.len() == NUM_HASHES;
        sig.chunks_exact(ROWS)
            .take(if ok { BANDS } else { 0 })
            .zip(0u64..)
            .map(|(slots, band)| {
                let low = u64::from(slots[0]) | u64::from(slots[1]) << 32;
                let high = u64::from(slots[2]) | band << 32;
                // An odd multiplier is a bijection: two buckets of the same
                // `high` never share a key, and the mixer spreads the rest.
                mix64(low.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ high)
            })
    }

    /// Indexes group `id`, once however often it is put back.
    fn insert(&mut self, id: u64, sig: &[u32]) {
        for key in Self::keys(sig) {
            if self.entries.find(key, |&e| e == (key, id)).is_none() {
                self.entries.insert_unique(key, (key, id), |&(k, _)| k);
            }
        }
    }

    /// Indexes a group that was never indexed (a new id).
    fn insert_new(&mut self, id: u64, sig: &[u32]) {
        for key in Self::keys(sig) {
            self.entries.insert_unique(key, (key, id), |&(k, _)| k);
        }
    }

    fn remove(&mut self, id: u64, sig: &[u32]) {
        for key in Self::keys(sig) {
            if let Ok(entry) = self.entries.find_entry(key, |&e| e == (key, id)) {
                entry.remove();
            }
        }
    }

    /// Every group in a bucket of `sig` (a group once per band it shares).
    fn candidates<'a>(&'a self, sig: &'a [u32]) -> impl Iterator<Item = u64> + 'a {
        Self::keys(sig).flat_map(move |key| {
            self.entries
                .iter_hash(key)
                .filter(move |&&(k, _)| k == key)
                .map(|&(_, id)| id)
        })
    }

    /// Entries (a group once per band).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Signer {
    /// Signature of a similarity key.
    pub fn sign(&self, key: &str) -> Vec<u32> {
        let chars: Vec<char> = key.chars().collect();
        if chars.len() < 3 {
            return self.hasher.create_signature(std::iter::once(&chars[..]));
        }
        self.hasher.create_signature(chars.windows(3))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Hash of the normalised text.
    pub hash: u64,
    /// Hash of the similarity key.
    pub key_hash: u64,
    pub letters: u32,
    /// Inline up to 24 bytes (most chat messages).
    pub text: CompactString,
    pub count: u64,
}

/// One group of similar messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub id: u64,
    pub signature: Signature,
    /// Most groups are one message: its variant and its author are
    /// inline, not allocated.
    pub variants: SmallVec<[Variant; 1]>,
    pub users: Members,
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
    pub sample_users: SmallVec<[CompactString; 1]>,
    /// Key hashes registered for exact lookup, and word (pair) hashes
    /// registered for the word-more-or-less match.
    pub keys: SmallVec<[u64; 2]>,
    pub partials: SmallVec<[u64; 2]>,
    /// Members who were first-time or new chatters when they joined.
    pub new_users: u64,
    /// Messages carrying a link (not on the allow list), and the first
    /// link's domain.
    pub link_messages: u32,
    pub link_domain: String,
    /// Letters and digits of the dominant variant's unit.
    pub letters: u32,
    /// On the channel's allow list.
    pub allowed: bool,
    pub class: SpamEventClass,
    /// Its messages counted as spam, decaying like the channel norms.
    pub spam_recent: crate::norms::Decayed,
}

/// The distinct users of a group. Most groups are one message of one
/// user: the first few are kept inline (no allocation), a set is made
/// when there are more.
#[derive(Debug, Clone)]
pub enum Members {
    Few(SmallVec<[u64; FEW_MEMBERS]>),
    Many(FxHashSet<u64>),
}

/// Members kept inline.
const FEW_MEMBERS: usize = 4;

impl Default for Members {
    fn default() -> Self {
        Members::Few(SmallVec::new())
    }
}

impl Members {
    pub fn len(&self) -> usize {
        match self {
            Members::Few(v) => v.len(),
            Members::Many(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, user: &u64) -> bool {
        match self {
            Members::Few(v) => v.contains(user),
            Members::Many(s) => s.contains(user),
        }
    }

    /// Adds `user`; false when it was there.
    pub fn insert(&mut self, user: u64) -> bool {
        if self.contains(&user) {
            return false;
        }
        self.insert_absent(user);
        true
    }

    /// Adds `user`, known not to be a member (no second look).
    fn insert_absent(&mut self, user: u64) {
        match self {
            Members::Few(v) if v.len() < FEW_MEMBERS => v.push(user),
            Members::Few(v) => {
                let mut set: FxHashSet<u64> = v.iter().copied().collect();
                set.insert(user);
                *self = Members::Many(set);
            }
            Members::Many(s) => {
                s.insert(user);
            }
        }
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &u64> {
        let (few, many) = match self {
            Members::Few(v) => (Some(v.iter()), None),
            Members::Many(s) => (None, Some(s.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl FromIterator<u64> for Members {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut m = Members::default();
        for u in iter {
            m.insert(u);
        }
        m
    }
}

/// The same users, however they are held.
impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|u| other.contains(u))
    }
}

impl Cluster {
    pub fn unique_users(&self) -> u64 {
        self.users.len() as u64 + self.users_overflow
    }

    /// The sample of its users' logins, as outputs and snapshots carry
    /// them.
    pub fn sample_logins(&self) -> Vec<String> {
        self.sample_users
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect()
    }

    pub fn is_active_event(&self) -> bool {
        self.promoted && self.state == SpamEventState::Active
    }

    /// A spam event with an update not emitted yet.
    pub fn has_pending_update(&self) -> bool {
        self.promoted && self.dirty
    }

    /// Its recent spam messages, decayed to `ts_ms`.
    pub fn spam_recent_at(&self, ts_ms: i64, half_life_ms: u64) -> f64 {
        self.spam_recent.at(ts_ms, half_life_ms)
    }

    pub fn add_spam_recent(&mut self, ts_ms: i64, half_life_ms: u64) {
        self.spam_recent.add(ts_ms, half_life_ms);
    }

    /// What the group's class is decided on.
    fn measures(&self) -> Measures {
        let users = self.unique_users().max(1) as f64;
        let spread_ms = self.last_seen_ms.saturating_sub(self.first_seen_ms).max(0) as f64;
        Measures {
            users,
            per_user: self.count as f64 / users,
            letters: f64::from(self.letters),
            new_share: self.new_users as f64 / users,
            ms_per_user: spread_ms / users,
            link_share: if self.count == 0 {
                0.0
            } else {
                f64::from(self.link_messages) / self.count as f64
            },
        }
    }

    /// Text, letters and class follow the group as it grows; returns why
    /// the class (built for the update that shows it, not kept).
    pub fn refresh(&mut self, p: &DetectorParams) -> Vec<Trigger> {
        if let Some(i) = self.dominant_index() {
            let d = &self.variants[i];
            if self.text != d.text {
                self.text.clear();
                self.text.push_str(&d.text);
            }
            self.letters = d.letters;
        }
        let (class, evidence) =
            crate::classes::classify(&self.measures(), self.allowed, &self.link_domain, p);
        self.class = class;
        evidence
    }

    pub fn dominant(&self) -> Option<&Variant> {
        self.dominant_index().map(|i| &self.variants[i])
    }

    fn dominant_index(&self) -> Option<usize> {
        // Most frequent; ties go to the first seen (lowest index).
        self.variants
            .iter()
            .enumerate()
            .max_by(|(ia, a), (ib, b)| a.count.cmp(&b.count).then(ib.cmp(ia)))
            .map(|(i, _)| i)
    }
}

/// Counts the message's variant. When the list is full the least counted
/// variant gives its slot to the new one, which inherits its count plus
/// one (Space-Saving: every variant seen more than count / MAX_VARIANTS
/// times is in the list, so the most frequent one is found).
fn count_variant(c: &mut Cluster, m: &Message<'_>) {
    if let Some(v) = c.variants.iter_mut().find(|v| v.hash == m.norm_hash) {
        v.count += 1;
        return;
    }
    let fresh = Variant {
        hash: m.norm_hash,
        key_hash: m.key_hash,
        letters: m.letters,
        text: CompactString::from(m.text),
        count: 1,
    };
    if c.variants.len() < MAX_VARIANTS {
        c.variants.push(fresh);
        return;
    }
    // Least counted; the newest of equals gives way.
    if let Some((i, min)) = c
        .variants
        .iter()
        .enumerate()
        .min_by(|(ia, a), (ib, b)| a.count.cmp(&b.count).then(ib.cmp(ia)))
        .map(|(i, v)| (i, v.count))
    {
        c.variants[i] = Variant {
            count: min + 1,
            ..fresh
        };
    }
}

/// What happened to a message in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub cluster: u64,
    /// The group became a spam event with this message.
    pub promoted_now: bool,
    pub in_active_event: bool,
    /// The event's class (when `in_active_event`).
    pub class: SpamEventClass,
    /// Distinct users of the group, this message's author included.
    pub users: u64,
}

/// All groups of one stream.
pub struct Clusters {
    /// By id (iterate in id order where order shows: see the snapshot).
    /// Boxed: a group is a few hundred bytes, and the map moves its
    /// entries each time it grows.
    pub clusters: FxHashMap<u64, Box<Cluster>>,
    exact: FxHashMap<u64, u64>,
    partial: FxHashMap<u64, u64>,
    /// The groups' signatures by band.
    index: Bands,
    /// Ids of the groups that became spam events (few): a tick visits
    /// these, not every group.
    promoted: BTreeSet<u64>,
    /// The other groups by the time they were last seen when queued, so
    /// that forgetting idle groups visits only those that may be idle. A
    /// group is queued once; when taken and seen since, it is queued
    /// again at that time. A group already gone is skipped.
    idle_queue: IdleQueue,
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
            clusters: FxHashMap::default(),
            exact: FxHashMap::default(),
            partial: FxHashMap::default(),
            index: Bands::default(),
            promoted: BTreeSet::new(),
            idle_queue: IdleQueue::default(),
            next_id: 1,
        }
    }
}

/// One message as the index needs it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub norm_hash: u64,
    /// Similarity key, its hash and its letters.
    pub key: &'a str,
    pub key_hash: u64,
    pub letters: u32,
    /// The normalised text (its words are matched on a miss).
    pub normalized: &'a str,
    pub text: &'a str,
    pub user: u64,
    pub login: &'a str,
    pub ts_ms: i64,
    /// A first-time chatter, or the author's first message in this stream.
    pub new_user: bool,
    /// Domain of a link it carries (not on the allow list).
    pub link_domain: Option<&'a str>,
    /// On the channel's allow list.
    pub allowed: bool,
    /// Signature and word pieces of `key` and `normalized`, when needed.
    pub derived: &'a Derived,
}

impl Clusters {
    /// Puts a message in its group.
    pub fn assign(&mut self, p: &DetectorParams, m: Message<'_>) -> Assignment {
        let id = match self.exact.get(&m.key_hash) {
            Some(&id) if self.clusters.contains_key(&id) => id,
            _ => {
                let sig = m.derived.signature(m.key);
                match self.nearest(sig, p.similarity_threshold) {
                    Some(id) => id,
                    None => {
                        let pieces = m.derived.pieces(m.normalized);
                        match self.by_pieces(&m, pieces) {
                            Some(id) => id,
                            None => self.create(sig.clone(), &m, pieces),
                        }
                    }
                }
            }
        };
        self.assign_to(id, p, m)
    }

    /// A group a word more or less away (see the module doc).
    fn by_pieces(&self, m: &Message<'_>, pieces: &[(u64, usize)]) -> Option<u64> {
        let len = m.letters as usize;
        for &(hash, plen) in pieces {
            if plen >= MIN_PIECE_LETTERS
                && plen * 2 >= len
                && let Some(&id) = self.exact.get(&hash)
                && self.clusters.contains_key(&id)
            {
                return Some(id);
            }
        }
        if len >= MIN_PIECE_LETTERS
            && let Some(&id) = self.partial.get(&m.key_hash)
            && let Some(c) = self.clusters.get(&id)
            && len * 2 >= c.letters as usize
        {
            return Some(id);
        }
        None
    }

    fn assign_to(&mut self, id: u64, p: &DetectorParams, m: Message<'_>) -> Assignment {
        let Some(c) = self.clusters.get_mut(&id) else {
            return Assignment {
                cluster: id,
                promoted_now: false,
                in_active_event: false,
                class: SpamEventClass::Unspecified,
                users: 0,
            };
        };
        c.count += 1;
        c.first_seen_ms = c.first_seen_ms.min(m.ts_ms);
        c.last_seen_ms = c.last_seen_ms.max(m.ts_ms);
        if !c.users.contains(&m.user) {
            if c.users.len() < MAX_GROUP_USERS {
                c.users.insert_absent(m.user);
            } else {
                c.users_overflow += 1;
            }
            if m.new_user {
                c.new_users += 1;
            }
            if c.sample_users.len() < SAMPLE_USERS {
                c.sample_users.push(CompactString::from(m.login));
            }
        }
        if let Some(domain) = m.link_domain {
            c.link_messages = c.link_messages.saturating_add(1);
            if c.link_domain.is_empty() {
                c.link_domain = domain.to_owned();
            }
        }
        c.allowed |= m.allowed;
        count_variant(c, &m);
        if !c.keys.contains(&m.key_hash) && c.keys.len() < MAX_KEYS {
            c.keys.push(m.key_hash);
            self.exact.entry(m.key_hash).or_insert(id);
        }
        c.dirty = true;
        let mut promoted_now = false;
        if !c.promoted
            && c.unique_users() >= u64::from(p.spam_min_users)
            && c.count >= u64::from(p.spam_min_count)
        {
            promoted_now = true;
            c.promoted = true;
            self.promoted.insert(id);
        }
        if c.promoted {
            if c.state != SpamEventState::Active {
                c.state = SpamEventState::Active;
            }
            // The label and the class's evidence are built on the next
            // update; the class itself is needed now.
            if promoted_now && let Some(d) = c.dominant() {
                c.letters = d.letters;
            }
            c.class = crate::classes::class_of(&c.measures(), c.allowed, p);
        }
        Assignment {
            cluster: id,
            promoted_now,
            in_active_event: c.is_active_event(),
            class: c.class,
            users: c.unique_users(),
        }
    }

    fn nearest(&self, sig: &Signature, threshold: f64) -> Option<u64> {
        let mut best: Option<(f64, u64)> = None;
        // A group in several of the query's bands is weighed once per
        // band: the same similarity each time, so the same winner.
        for id in self.index.candidates(sig) {
            let Some(c) = self.clusters.get(&id) else {
                continue;
            };
            let sim = signature_similarity(&c.signature, sig);
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

    fn create(&mut self, sig: Signature, m: &Message<'_>, pieces: &[(u64, usize)]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.index.insert_new(id, &sig);
        self.idle_queue.push(m.ts_ms, id);
        let len = m.letters as usize;
        let mut partials = SmallVec::new();
        for &(h, plen) in pieces {
            if plen >= MIN_PIECE_LETTERS && plen * 2 >= len && !partials.contains(&h) {
                self.partial.entry(h).or_insert(id);
                partials.push(h);
            }
        }
        self.clusters.insert(
            id,
            Box::new(Cluster {
                id,
                signature: sig,
                variants: SmallVec::new(),
                users: Members::default(),
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
                sample_users: SmallVec::new(),
                keys: SmallVec::new(),
                partials,
                new_users: 0,
                link_messages: 0,
                link_domain: String::new(),
                letters: m.letters,
                allowed: false,
                class: SpamEventClass::Unspecified,
                spam_recent: crate::norms::Decayed::default(),
            }),
        );
        id
    }

    /// Puts back a group from a snapshot.
    pub fn restore(&mut self, c: Cluster) {
        for k in &c.keys {
            self.exact.entry(*k).or_insert(c.id);
        }
        for k in &c.partials {
            self.partial.entry(*k).or_insert(c.id);
        }
        self.index.insert(c.id, &c.signature);
        if c.promoted {
            self.promoted.insert(c.id);
        } else if !self.clusters.contains_key(&c.id) {
            self.idle_queue.push(c.last_seen_ms, c.id);
        }
        self.clusters.insert(c.id, Box::new(c));
    }

    pub fn get(&self, id: u64) -> Option<&Cluster> {
        self.clusters.get(&id).map(|c| &**c)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Cluster> {
        self.clusters.get_mut(&id).map(|c| &mut **c)
    }

    /// Ends quiet spam events and returns the groups to emit (in id order);
    /// with `sweep`, or when over `max`, forgets idle groups and the oldest
    /// beyond the bound.
    pub fn tick(
        &mut self,
        now_ms: i64,
        quiet_ms: u64,
        idle_ms: u64,
        max: u32,
        sweep: bool,
    ) -> Vec<u64> {
        let quiet = i64::try_from(quiet_ms).unwrap_or(i64::MAX);
        let idle = i64::try_from(idle_ms).unwrap_or(i64::MAX);
        let mut emit = Vec::new();
        for id in &self.promoted {
            let Some(c) = self.clusters.get_mut(id) else {
                continue;
            };
            if c.is_active_event() && now_ms.saturating_sub(c.last_seen_ms) >= quiet {
                c.state = SpamEventState::Ended;
                c.dirty = true;
            }
            if c.has_pending_update() {
                emit.push(c.id);
            }
        }
        if !sweep && self.clusters.len() <= max as usize {
            return emit;
        }
        let idle_now = |c: &Cluster| {
            !c.is_active_event()
                && !c.has_pending_update()
                && now_ms.saturating_sub(c.last_seen_ms) >= idle
        };
        // Spam events from their (short) list, the other groups from the
        // queue: only those last seen an idle time ago are visited.
        let mut forget: Vec<u64> = self
            .promoted
            .iter()
            .filter_map(|id| self.clusters.get(id))
            .filter(|c| idle_now(c))
            .map(|c| c.id)
            .collect();
        for id in self.idle_queue.take_due(now_ms.saturating_sub(idle)) {
            let Some(c) = self.clusters.get(&id) else {
                continue;
            };
            if c.promoted {
                // On the spam events' list from now on.
                continue;
            }
            if idle_now(c) {
                forget.push(id);
            } else {
                self.idle_queue.push(c.last_seen_ms, id);
            }
        }
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
                .filter(|c| !idle_now(c) && !c.has_pending_update())
                .map(|c| (c.is_active_event(), c.last_seen_ms, c.id))
                .collect();
            rest.sort_unstable();
            forget.extend(rest.into_iter().take(over).map(|(_, _, id)| id));
        }
        for id in forget {
            self.remove(id);
        }
        // Groups forgotten for the bound leave entries behind until their
        // time comes; the queue is cleared of them before it doubles.
        if self.idle_queue.len() > 2 * self.clusters.len() + 1024 {
            let clusters = &self.clusters;
            self.idle_queue.retain(|id| clusters.contains_key(&id));
        }
        emit
    }

    /// Marks an update of group `id` emitted (its text follows its most
    /// frequent variant, its class what it has become); returns it and
    /// the evidence of its class.
    pub fn mark_emitted(
        &mut self,
        id: u64,
        p: &DetectorParams,
    ) -> Option<(&Cluster, Vec<Trigger>)> {
        let c = self.clusters.get_mut(&id)?;
        c.version += 1;
        c.dirty = false;
        let evidence = c.refresh(p);
        if c.fingerprint.is_empty()
            && let Some(d) = c.dominant()
        {
            // Fixed at the first update: the key of the text it was first
            // shown with, so that text and fingerprint agree everywhere.
            c.fingerprint = format!("{:016x}", d.key_hash);
        }
        Some((c, evidence))
    }

    /// Ends every spam event (the stream closed); returns them in id order.
    pub fn end_all(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for id in &self.promoted {
            let Some(c) = self.clusters.get_mut(id) else {
                continue;
            };
            {
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
            if c.promoted {
                self.promoted.remove(&id);
            }
            for k in &c.keys {
                if self.exact.get(k) == Some(&id) {
                    self.exact.remove(k);
                }
            }
            for k in &c.partials {
                if self.partial.get(k) == Some(&id) {
                    self.partial.remove(k);
                }
            }
            self.index.remove(id, &c.signature);
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
    use crate::stable::stable_hash;
    use spamscope_chat::normalize::{normalize, similarity_key};

    struct Msg {
        key: String,
        norm_hash: u64,
        letters: u32,
        normalized: String,
        text: String,
    }

    fn prep(t: &str) -> Msg {
        let n = normalize(t);
        let k = similarity_key(&n);
        Msg {
            norm_hash: stable_hash(&n),
            letters: k.letters as u32,
            normalized: n.clone(),
            key: k.key,
            text: t.to_owned(),
        }
    }

    #[test]
    fn similarity_sees_what_grouping_sees() {
        let pasta = "I am once again asking for your financial support to keep this stream alive";
        // Spacing, case and punctuation are not part of the key.
        assert_eq!(
            similarity(pasta, &pasta.to_uppercase().replace(' ', "  ")),
            1.0
        );
        let edited = pasta.replace("financial", "emotional");
        let s = similarity(pasta, &edited);
        assert!((0.5..1.0).contains(&s), "{s}");
        assert!(similarity(pasta, "what a play, that was insane") < 0.2);
        assert_eq!(similarity(pasta, "!!! :) :)"), 0.0);
    }

    fn put(c: &mut Clusters, p: &DetectorParams, t: &str, user: u64, ts: i64) -> Assignment {
        let m = prep(t);
        c.assign(
            p,
            Message {
                norm_hash: m.norm_hash,
                key: &m.key,
                key_hash: stable_hash(&m.key),
                letters: m.letters,
                normalized: &m.normalized,
                text: &m.text,
                user,
                login: "u",
                ts_ms: ts,
                new_user: false,
                link_domain: None,
                allowed: false,
                derived: &Derived::default(),
            },
        )
    }

    fn one_group(texts: &[&str]) -> (Clusters, u64) {
        let p = DetectorParams::default();
        let mut c = Clusters::default();
        let ids: Vec<u64> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| put(&mut c, &p, t, i as u64, i as i64).cluster)
            .collect();
        assert!(ids.iter().all(|&i| i == ids[0]), "{texts:?}: {ids:?}");
        (c, ids[0])
    }

    #[test]
    fn near_duplicates_join_and_promote() {
        let texts = [
            "SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK",
            "\u{200b}\u{200b}SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK",
            "SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK🧀",
            "🧀SPAM THIS 🧀 CHEESE FOR 🧀 GOOD LUCK🧀",
            "SPAM🧀THIS🧀CHESSE🧀FOR🧀GOOD🧀LUCK",
        ];
        let (mut c, id) = one_group(&texts);
        let p = DetectorParams::default();
        let other = put(&mut c, &p, "what a nice stream today", 9, 9);
        assert_ne!(other.cluster, id);
        let stop = put(&mut c, &p, "OK🧀STOP🧀SPAMMING🧀CHEESE", 10, 10);
        assert_ne!(
            stop.cluster, id,
            "a different message about cheese is not the copypasta"
        );
        let ev = c.mark_emitted(id, &p).unwrap().0.clone();
        assert_eq!(ev.count, 5);
        assert_eq!(ev.unique_users(), 5);
        assert!(ev.promoted);
        assert_eq!(
            ev.fingerprint,
            format!(
                "{:016x}",
                stable_hash(&similarity_key(&normalize(texts[0])).key)
            )
        );
        assert_eq!(ev.class, SpamEventClass::Copypasta);
    }

    #[test]
    fn members_count_each_user_once_inline_or_in_a_set() {
        let mut m = Members::default();
        for u in [7, 3, 7, 9, 3] {
            m.insert(u);
        }
        assert!(matches!(m, Members::Few(_)));
        assert_eq!(m.len(), 3);
        // Past the inline ones: a set, the same users.
        for u in [1, 2, 9, 4, 5, 1] {
            m.insert(u);
        }
        assert!(matches!(m, Members::Many(_)));
        assert_eq!(m.len(), 7);
        assert!(!m.insert(4) && m.contains(&4) && !m.contains(&6));
        let mut all: Vec<u64> = m.iter().copied().collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3, 4, 5, 7, 9]);
        // Equal by who is in them, not by how they are held or ordered.
        let few: Members = [9, 3, 7].into_iter().collect();
        let mut set = FxHashSet::default();
        set.extend([3, 7, 9]);
        assert_eq!(few, Members::Many(set));
        assert_ne!(few, [3, 7].into_iter().collect::<Members>());
    }

    #[test]
    fn variant_sets_merge() {
        // The variant sets of real chat that used to split (issue 14).
        one_group(&["SADIST", "SAD-IST", "SAD IST", "WATCH SADIST", "SADIST"]);
        one_group(&["WATCH SADIST", "SADIST", "SAD IST"]);
        one_group(&["💚DREAM TEAM💚", "💚 DREAM TEAM 💚", "💚DREAM TEAM💚"]);
        one_group(&[
            "❤TECHNO SUPPORT ❤",
            "♥ TECHNO SUPPORT ♥",
            "❤❤TECHNO SUPPORT❤❤",
            "TECHNO SUPPORT Trash",
        ]);
    }

    #[test]
    fn text_follows_the_most_frequent_variant_and_fingerprint_stays() {
        let p = DetectorParams::default();
        let mut c = Clusters::default();
        let mut texts = vec!["TECHNO SUPPORT Trash"; 1];
        texts.extend(["❤TECHNO SUPPORT ❤"; 4]);
        texts.extend(["♥ TECHNO SUPPORT ♥"; 12]);
        let mut id = 0;
        for (i, t) in texts.iter().enumerate() {
            id = put(&mut c, &p, t, i as u64, i as i64).cluster;
        }
        let fp = c.mark_emitted(id, &p).unwrap().0.fingerprint.clone();
        for i in 0..20 {
            put(&mut c, &p, "❤❤TECHNO SUPPORT❤❤", 100 + i, 100 + i as i64);
        }
        let e = c.mark_emitted(id, &p).unwrap().0;
        assert_eq!(e.text, "❤❤TECHNO SUPPORT❤❤");
        assert_eq!(
            e.fingerprint, fp,
            "the fingerprint stays when the label changes"
        );
    }

    #[test]
    fn variants_are_bounded_and_still_find_the_heavy_hitter() {
        let p = DetectorParams::default();
        let mut c = Clusters::default();
        let mut id = 0;
        for i in 0..40u64 {
            // 30 distinct rare spellings, then the common one ten times.
            let t = if i < 30 {
                format!("free coins here {}", "!".repeat(i as usize + 1))
            } else {
                "FREE COINS HERE".to_owned()
            };
            let m = prep(&t);
            id = c
                .assign(
                    &p,
                    Message {
                        norm_hash: stable_hash(&t),
                        key: &m.key,
                        key_hash: stable_hash(&m.key),
                        letters: m.letters,
                        normalized: &m.normalized,
                        text: &t,
                        user: i,
                        login: "u",
                        ts_ms: i as i64,
                        new_user: false,
                        link_domain: None,
                        allowed: false,
                        derived: &Derived::default(),
                    },
                )
                .cluster;
        }
        let g = c.mark_emitted(id, &p).unwrap().0;
        assert!(g.variants.len() <= MAX_VARIANTS);
        assert_eq!(g.text, "FREE COINS HERE");
    }

    #[test]
    fn tick_ends_quiet_events_and_forgets_idle_groups() {
        let p = DetectorParams::default();
        let mut c = Clusters::default();
        for u in 0..5 {
            put(&mut c, &p, "buy followers now", u, 1_000);
        }
        put(&mut c, &p, "hello", 1, 1_000);
        assert_eq!(c.tick(2_000, 60_000, 300_000, 100, true), vec![1]);
        c.mark_emitted(1, &p);
        assert!(c.tick(3_000, 60_000, 300_000, 100, true).is_empty());
        assert_eq!(c.tick(70_000, 60_000, 300_000, 100, true), vec![1]);
        assert_eq!(c.get(1).unwrap().state, SpamEventState::Ended);
        c.mark_emitted(1, &p);
        c.tick(400_000, 60_000, 300_000, 100, true);
        assert!(c.is_empty());
        // Forgotten groups leave nothing in the indexes: a near copy of
        // the old text starts a group of its own.
        assert!(c.index.len() == 0 && c.exact.is_empty() && c.partial.is_empty());
        let again = put(&mut c, &p, "buy followers now!!", 9, 400_001);
        assert_eq!(again.cluster, 3);
        assert_eq!(c.index.len(), BANDS);
    }

    #[test]
    fn idle_groups_are_forgotten_on_time_and_the_queue_stays_bounded() {
        let p = DetectorParams::default();
        let idle: u64 = 300_000;
        let at = |ms: u64| ms as i64;
        let mut c = Clusters::default();
        let a = put(&mut c, &p, "first group of words", 1, 0).cluster;
        let b = put(&mut c, &p, "another thing entirely", 2, 0).cluster;
        // `a` is seen again after it was queued: it is idle later.
        put(&mut c, &p, "first group of words", 3, 200_000);
        c.tick(at(idle - 1), 60_000, idle, 100, true);
        assert!(c.get(a).is_some() && c.get(b).is_some(), "not idle yet");
        c.tick(at(idle), 60_000, idle, 100, true);
        assert!(c.get(a).is_some(), "seen 100 s ago");
        assert!(c.get(b).is_none(), "idle for exactly the idle time");
        c.tick(at(200_000 + idle - 1), 60_000, idle, 100, true);
        assert!(c.get(a).is_some());
        c.tick(at(200_000 + idle), 60_000, idle, 100, true);
        assert!(c.is_empty());
        assert!(c.idle_queue.is_empty());

        // Under the group cap, groups are forgotten before their idle
        // time; what they left in the queue is cleared as it grows.
        let max = 50;
        for i in 0..5_000u64 {
            let ts = i as i64;
            // Unlike each other: every message is a group of its own.
            let text = format!(
                "{:016x}{:016x}",
                stable_hash(&i.to_string()),
                stable_hash(&format!("x{i}"))
            );
            put(&mut c, &p, &text, i, ts);
            c.tick(ts, 60_000, idle, max, false);
            assert!(c.len() <= max as usize);
            assert!(
                c.idle_queue.len() <= 2 * c.len() + 1025,
                "{}",
                c.idle_queue.len()
            );
        }
        assert_eq!(c.len(), max as usize);
        assert_eq!(c.next_id, 3 + 5_000, "a group per message");
        // The survivors are the newest, and each is still forgotten when
        // it goes idle.
        c.tick(at(4_999 + idle), 60_000, idle, max, true);
        assert!(c.is_empty());
    }

    #[test]
    fn band_index_finds_groups_that_share_a_band_and_forgets_them() {
        let mut b = Bands::default();
        let sig: Vec<u32> = (0..NUM_HASHES as u32).collect();
        let mut near = sig.clone();
        // Every band but the last differs: still a candidate, once.
        for slot in near.iter_mut().take(NUM_HASHES - ROWS) {
            *slot += 1000;
        }
        let far: Vec<u32> = sig.iter().map(|s| s + 1000).collect();
        b.insert(7, &sig);
        b.insert(7, &sig);
        assert_eq!(b.candidates(&sig).count(), BANDS, "one entry per band");
        assert_eq!(b.candidates(&near).collect::<Vec<_>>(), [7]);
        assert_eq!(b.candidates(&far).count(), 0);
        // The same slots in another band are another bucket.
        let mut shifted = far.clone();
        shifted[..ROWS].copy_from_slice(&sig[ROWS..2 * ROWS]);
        assert_eq!(b.candidates(&shifted).count(), 0);
        b.insert(8, &near);
        assert_eq!(b.candidates(&sig).filter(|&g| g == 8).count(), 1);
        b.remove(7, &sig);
        assert_eq!(b.candidates(&sig).collect::<Vec<_>>(), [8]);
        // Groups of one bucket are each found (a bucket is several
        // entries under one key).
        b.insert_new(9, &near);
        let mut both: Vec<u64> = b.candidates(&near).collect();
        both.sort_unstable();
        assert_eq!(
            both,
            [8; BANDS].into_iter().chain([9; BANDS]).collect::<Vec<_>>()
        );
        b.remove(9, &near);
        b.remove(8, &near);
        assert_eq!(b.len(), 0);
        // A signature of another length has no bands.
        b.insert(9, &sig[..5]);
        assert_eq!(b.len(), 0);
    }
}
