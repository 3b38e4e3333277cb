//! What a message's text says by itself, worked out once per distinct
//! text: chat repeats itself (on the normvio-dev logs two messages in
//! three are an exact copy of an earlier one: emotes, copypastas, bot
//! waves), and the normal form, similarity key, hashes, length and links of
//! a text do not depend on who sent it, where, or the params.
//!
//! The cache is per thread (a detector's stream loop runs on one) and
//! bounded: two generations of at most [`GENERATION`] texts and
//! [`GENERATION_BYTES`] of text (the text, its normal form and its key),
//! each text at most [`MAX_CACHED_BYTES`] long; when the newer one fills
//! (either bound), the older is
//! dropped, and a text found in the older moves to the newer. A longer
//! text is worked out each time. Memoising pure functions: the outputs are
//! the same with or without it.
//!
//! Each entry also keeps, worked out when first needed, what grouping
//! derives from the text's key (its MinHash signature and word pieces,
//! [`Derived`]) and which promotion and blacklist patterns match it for the
//! compiled params last asked (most streams share one compilation; another
//! one's results replace them).

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use rustc_hash::FxHashMap;
use spamscope_chat::links::{self, Link};
use spamscope_chat::normalize::{grapheme_len, normalize, repetition, similarity_key};

use crate::clusters::Derived;
use crate::params::CompiledParams;
use crate::stable::stable_hash;

/// Texts per generation.
pub const GENERATION: usize = 4096;
/// Longest text kept with the others (bytes): a cache entry holds about
/// three copies of its text.
pub const MAX_SHORT_BYTES: usize = 1024;
/// Longest text kept at all (bytes). Longer than any chat message
/// (Twitch's 500 characters are at most 2,000 bytes): braille and emoji
/// walls of a few kilobytes are the costliest texts to work out. They are
/// kept apart, in generations bounded by bytes, so that a chat full of
/// distinct walls does not push the common short texts out.
pub const MAX_CACHED_BYTES: usize = 8 * 1024;
/// Bytes of text per generation of long texts (the text, its normal form
/// and its key, all counted): two generations hold at most about 2 MiB of
/// text per thread, besides each entry's fixed part.
pub const GENERATION_BYTES: usize = 1024 * 1024;

/// What a text says by itself.
#[derive(Debug)]
pub struct TextFacts {
    /// [`normalize`]d text and its hash.
    pub normalized: String,
    pub norm_hash: u64,
    /// [`similarity_key`], its hash, letters and digits of the whole text,
    /// and the key's length in chars.
    pub key: String,
    pub key_hash: u64,
    pub letters: usize,
    pub key_chars: usize,
    /// Visible grapheme clusters ([`grapheme_len`]).
    pub graphemes: u64,
    /// Links in the text ([`links::find`]), before any allow list.
    pub links: Vec<Link>,
    /// Whether it is a bot command (`!command`).
    pub command: bool,
    /// [`repetition`], worked out when first asked.
    copies: OnceCell<f32>,
    /// What grouping derives from the key on a miss.
    pub derived: Derived,
    /// Pattern results for the compiled params of this id.
    patterns: Cell<Option<(u64, PatternHits)>>,
}

/// The first pattern of a params' sets that matches a text, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatternHits {
    /// In `promo` (matched on the text; only texts of 12 letters or more).
    pub promo: Option<usize>,
    /// In `blacklist` (matched on the normal form).
    pub blacklist: Option<usize>,
}

/// Texts with fewer letters are not matched for self-promotion.
const MIN_PROMO_LETTERS: usize = 12;

impl TextFacts {
    fn of(text: &str) -> Self {
        let normalized = normalize(text);
        let sk = similarity_key(&normalized);
        TextFacts {
            norm_hash: stable_hash(&normalized),
            key_hash: stable_hash(&sk.key),
            key_chars: sk.key.chars().count(),
            letters: sk.letters,
            key: sk.key,
            normalized,
            graphemes: grapheme_len(text) as u64,
            links: links::find(text),
            command: text.trim_start().starts_with('!'),
            copies: OnceCell::new(),
            derived: Derived::default(),
            patterns: Cell::new(None),
        }
    }

    /// Which of `params`' promotion and blacklist patterns match `text`
    /// (the text these facts are of).
    pub fn patterns(&self, params: &CompiledParams, text: &str) -> PatternHits {
        if let Some((id, hits)) = self.patterns.get()
            && id == params.id
        {
            return hits;
        }
        let first = |set: &regex::RegexSet, s: &str| {
            if set.is_empty() || !set.is_match(s) {
                None
            } else {
                set.matches(s).iter().next()
            }
        };
        let hits = PatternHits {
            promo: if self.letters >= MIN_PROMO_LETTERS {
                first(&params.promo, text)
            } else {
                None
            },
            blacklist: first(&params.blacklist, &self.normalized),
        };
        self.patterns.set(Some((params.id, hits)));
        hits
    }

    /// How many times the text repeats one unit ([`repetition`] of
    /// `text`, the text these facts are of).
    pub fn copies(&self, text: &str) -> f32 {
        *self.copies.get_or_init(|| repetition(text))
    }
}

#[derive(Default)]
struct Cache {
    /// Texts of at most [`MAX_SHORT_BYTES`], bounded by count.
    short: Generations,
    /// Longer texts, bounded by bytes.
    long: Generations,
    hits: u64,
    misses: u64,
}

/// Two generations: the newer takes every text used; when it is full, the
/// older is dropped and the newer becomes it.
#[derive(Default)]
struct Generations {
    newer: FxHashMap<Box<str>, Rc<TextFacts>>,
    older: FxHashMap<Box<str>, Rc<TextFacts>>,
    /// Bytes of the newer generation ([`entry_bytes`]).
    newer_bytes: usize,
}

impl Generations {
    /// The facts of `text` and whether they were kept here.
    fn get(&mut self, text: &str, max_len: usize, max_bytes: usize) -> (Rc<TextFacts>, bool) {
        if let Some(f) = self.newer.get(text) {
            return (Rc::clone(f), true);
        }
        let (key, f, hit) = match self.older.remove_entry(text) {
            Some((k, f)) => (k, f, true),
            None => (Box::from(text), Rc::new(TextFacts::of(text)), false),
        };
        let bytes = entry_bytes(&key, &f);
        if self.newer.len() >= max_len || self.newer_bytes + bytes > max_bytes {
            self.older = std::mem::take(&mut self.newer);
            self.newer_bytes = 0;
        }
        self.newer_bytes += bytes;
        self.newer.insert(key, Rc::clone(&f));
        (f, hit)
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The facts of `text`, from this thread's cache when it has them.
pub fn facts(text: &str) -> Rc<TextFacts> {
    if text.len() > MAX_CACHED_BYTES {
        return Rc::new(TextFacts::of(text));
    }
    CACHE.with(|cache| {
        let c = &mut *cache.borrow_mut();
        let (f, hit) = if text.len() <= MAX_SHORT_BYTES {
            c.short.get(text, GENERATION, usize::MAX)
        } else {
            c.long.get(text, GENERATION, GENERATION_BYTES)
        };
        if hit {
            c.hits += 1;
        } else {
            c.misses += 1;
        }
        f
    })
}

/// What an entry counts against [`GENERATION_BYTES`].
fn entry_bytes(text: &str, f: &TextFacts) -> usize {
    text.len() + f.normalized.len() + f.key.len()
}

/// This thread's cache hits and misses so far (for benchmarks).
pub fn cache_counts() -> (u64, u64) {
    CACHE.with(|c| {
        let c = c.borrow();
        (c.hits, c.misses)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walls_are_cached_within_the_byte_bound() {
        // Braille walls of 3 bytes a character, about 1.5 KB each: cached
        // (a second look is a hit), and many distinct ones rotate the
        // generations by bytes long before their count would.
        let wall = |i: usize| format!("{i} {}", "\u{28ff}\u{2800}".repeat(250));
        facts("short and common");
        let (h0, _) = cache_counts();
        facts(&wall(0));
        facts(&wall(0));
        assert_eq!(cache_counts().0, h0 + 1, "a wall is kept");
        for i in 0..2 * GENERATION_BYTES / 1500 {
            facts(&wall(i));
        }
        CACHE.with(|c| {
            let c = c.borrow();
            assert!(
                c.long.newer_bytes <= GENERATION_BYTES,
                "{}",
                c.long.newer_bytes
            );
            assert!(
                c.long.newer.len() < GENERATION / 4,
                "{}",
                c.long.newer.len()
            );
            // The walls pushed out no short text.
            assert!(c.short.newer.contains_key("short and common"));
        });
        // Past the longest kept: worked out each time, still right.
        let huge = "a".repeat(MAX_CACHED_BYTES + 1);
        let (h1, m1) = cache_counts();
        assert_eq!(facts(&huge).key, TextFacts::of(&huge).key);
        assert_eq!(cache_counts(), (h1, m1));
    }

    #[test]
    fn cached_facts_equal_fresh_ones_and_the_cache_stays_bounded() {
        let texts: Vec<String> = (0..3 * GENERATION)
            .map(|i| format!("KEKW {} LUL https://bit.ly/x{}", i % 5000, i % 7))
            .collect();
        for t in texts.iter().chain(texts.iter().rev()) {
            let cached = facts(t);
            let fresh = TextFacts::of(t);
            assert_eq!(cached.normalized, fresh.normalized);
            assert_eq!(cached.key, fresh.key);
            assert_eq!(
                (
                    cached.norm_hash,
                    cached.key_hash,
                    cached.letters,
                    cached.key_chars
                ),
                (
                    fresh.norm_hash,
                    fresh.key_hash,
                    fresh.letters,
                    fresh.key_chars
                )
            );
            assert_eq!(cached.graphemes, fresh.graphemes);
            assert_eq!(cached.links, fresh.links);
            assert_eq!(cached.copies(t), repetition(t));
        }
        CACHE.with(|c| {
            let c = c.borrow();
            assert!(c.short.newer.len() <= GENERATION && c.short.older.len() <= GENERATION);
            assert_eq!(
                c.short.newer_bytes,
                c.short
                    .newer
                    .iter()
                    .map(|(k, f)| entry_bytes(k, f))
                    .sum::<usize>()
            );
        });
        let (hits, misses) = cache_counts();
        assert!(hits > 0 && misses > 0, "{hits} {misses}");
        // What grouping derives is the signer's and the word pieces' own.
        let t = "WATCH SADIST on youtube";
        let f = facts(t);
        let signer = crate::clusters::Signer::default();
        assert_eq!(&f.derived.signature(&f.key)[..], &signer.sign(&f.key)[..]);
        assert_eq!(
            f.derived.pieces(&f.normalized),
            &spamscope_chat::normalize::word_key_hashes(
                &f.normalized,
                crate::clusters::MAX_PIECE_WORDS
            )[..]
        );
        // Pattern results follow the params asked, not the last ones.
        let promo = "hey follow my twitch channel please";
        let with = CompiledParams::defaults();
        let without = CompiledParams::new(crate::params::DetectorParams {
            promo_patterns: Vec::new(),
            blacklist: vec!["twitch".into()],
            ..Default::default()
        })
        .unwrap();
        let f = facts(promo);
        for _ in 0..2 {
            assert_eq!(f.patterns(&with, promo).promo, Some(0));
            assert_eq!(f.patterns(&with, promo).blacklist, None);
            assert_eq!(f.patterns(&without, promo).promo, None);
            assert_eq!(f.patterns(&without, promo).blacklist, Some(0));
        }
        let long = "a".repeat(MAX_CACHED_BYTES + 1);
        assert_eq!(facts(&long).graphemes, (MAX_CACHED_BYTES + 1) as u64);
    }
}
