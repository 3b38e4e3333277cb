//! Text normaliser for similarity work.
//!
//! [`normalize`] turns a chat message into the form two copies of the same
//! spam share even when a spammer dodges duplicate filters:
//! 1. Unicode NFKC (full-width and styled letters become plain ones);
//! 2. invisible characters removed: zero-width space/joiners, bidi marks,
//!    word joiners (U+200B..U+200F, U+2060..U+206F), variation selectors, the
//!    tag block U+E0000..U+E0FFF (Twitch chatters append U+E0000), Hangul
//!    fillers, soft hyphen, BOM, other control characters;
//! 3. case folding, then confusable folding to the Unicode TR39 skeleton
//!    (the `unicode-security` crate), so `M0XY`, `MOXY` and `ＭＯＸＹ` agree;
//! 4. whitespace collapsed, runs of one character capped at two
//!    (`LOOOOOL` → `lool`);
//! 5. repeated tokens compressed: consecutive duplicates collapse and a
//!    message that repeats one phrase N times becomes the phrase once.
//!
//! [`grapheme_len`] counts user-perceived characters, not bytes, ignoring
//! invisible ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;
use unicode_segmentation::UnicodeSegmentation;

/// Characters that render as nothing and are used to make copies look
/// different to exact-match filters.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}'
    ) || (c.is_control() && !c.is_whitespace())
}

/// Blank-looking characters that separate words like a space does.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{2800}'
}

/// Number of visible grapheme clusters (what a reader counts as characters).
pub fn grapheme_len(text: &str) -> usize {
    if text.is_ascii() {
        return text.bytes().filter(|b| !b.is_ascii_control()).count();
    }
    text.graphemes(true)
        .filter(|g| g.chars().any(|c| !is_invisible(c)))
        .count()
}

/// Removes invisible characters, keeping everything else as it is.
pub fn strip_invisible(text: &str) -> String {
    text.chars().filter(|&c| !is_invisible(c)).collect()
}

/// Fold of each ASCII character (for example '0' → "o", '1' → "l",
/// 'm' → "rn"), computed once by the same [`fold_char`] the non-ASCII path
/// uses, so both paths agree.
static ASCII_FOLD: LazyLock<Vec<String>> =
    LazyLock::new(|| (0u8..128).map(|b| fold_char_uncached(b as char)).collect());

/// Entries of the per-thread cache of folded non-ASCII characters.
const FOLD_CACHE_MAX: usize = 1 << 16;

thread_local! {
    static FOLD_CACHE: RefCell<HashMap<char, Box<str>>> = RefCell::new(HashMap::new());
    static KMP_FAIL: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The similarity form of `text` (see the module doc).
pub fn normalize(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    if text.is_ascii() {
        let table = &*ASCII_FOLD;
        for b in text.bytes() {
            let c = b as char;
            if is_space(c) {
                folded.push(' ');
            } else if !c.is_ascii_control() {
                folded.push_str(&table[b as usize]);
            }
        }
    } else {
        let table = &*ASCII_FOLD;
        FOLD_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() > FOLD_CACHE_MAX {
                cache.clear();
            }
            for c in text.nfkc() {
                if is_space(c) {
                    folded.push(' ');
                } else if c.is_ascii() {
                    folded.push_str(&table[c as usize]);
                } else if !is_invisible(c) {
                    let f = cache
                        .entry(c)
                        .or_insert_with(|| fold_char_uncached(c).into_boxed_str());
                    folded.push_str(f);
                }
            }
        });
        // A folded combining mark may now compose with the character before.
        if !unicode_normalization::is_nfc(&folded) {
            folded = folded.nfc().collect();
        }
    }
    compress(&folded)
}

/// Lower case, TR39 skeleton, lower case, NFKC, invisibles dropped,
/// repeated until nothing changes: a skeleton can hold compatibility
/// characters ('%' → "°/₀") whose own fold differs. The skeleton is a
/// character-wise mapping of the decomposed text, so folding one character
/// at a time (and caching it) gives the same result as folding a string.
fn fold_char_uncached(c: char) -> String {
    let mut cur: String = c.to_lowercase().collect();
    for _ in 0..4 {
        let next: String = skeleton(&cur)
            .flat_map(char::to_lowercase)
            .nfkc()
            .filter(|&c| !is_invisible(c))
            .map(|c| if is_space(c) { ' ' } else { c })
            .collect();
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

/// Caps character runs at two, collapses whitespace and repeated tokens.
fn compress(folded: &str) -> String {
    let mut capped = String::with_capacity(folded.len());
    let (mut prev, mut run) = ('\0', 0);
    for c in folded.chars() {
        if c == ' ' && (capped.is_empty() || capped.ends_with(' ')) {
            continue;
        }
        run = if c == prev { run + 1 } else { 1 };
        prev = c;
        if run <= 2 || c == ' ' {
            capped.push(c);
        }
    }
    if capped.ends_with(' ') {
        capped.pop();
    }
    let mut tokens: Vec<&str> = Vec::with_capacity(16);
    for t in capped.split(' ') {
        if tokens.last() != Some(&t) {
            tokens.push(t);
        }
    }
    // The shortest prefix of which the tokens are a repetition (the last
    // one may be cut short), or all of them.
    let (period, _) = unit_of(&tokens);
    if period == tokens.len() && tokens.len() == capped.split(' ').count() {
        return capped;
    }
    tokens[..period].join(" ")
}

/// The form two variants of one spam share beyond [`normalize`]: only
/// its letters and digits (so `SAD-IST`, `SAD IST` and `SADIST`, or
/// `💚DREAM TEAM💚` and `💚 DREAM TEAM 💚`, agree), cut to one repetition
/// of its unit (`IM A BIG FANIM A BIG FAN` → `imabigfan`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityKey {
    /// The key. A text with fewer than two letters or digits (emoji,
    /// punctuation) keeps its normalised form without spaces instead.
    pub key: String,
    /// Letters and digits of the whole text.
    pub letters: usize,
}

/// [`SimilarityKey`] of a normalised text.
pub fn similarity_key(normalized: &str) -> SimilarityKey {
    if normalized.is_ascii() {
        // Most chat: bytes, no char buffer.
        let mut bytes: Vec<u8> = normalized
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .collect();
        let letters = bytes.len();
        if letters < 2 {
            bytes = normalized.bytes().filter(|b| *b != b' ').collect();
        }
        let (unit, _) = unit_of(&bytes);
        bytes.truncate(unit);
        return SimilarityKey {
            key: String::from_utf8(bytes).unwrap_or_default(),
            letters,
        };
    }
    let mut chars: Vec<char> = normalized.chars().filter(|c| c.is_alphanumeric()).collect();
    let letters = chars.len();
    if letters < 2 {
        chars = normalized.chars().filter(|c| *c != ' ').collect();
    }
    let (unit, _) = unit_of(&chars);
    SimilarityKey {
        key: chars[..unit].iter().collect(),
        letters,
    }
}

/// Length of the repeated unit of `s` and how many times it repeats.
fn unit_of<T: PartialEq>(s: &[T]) -> (usize, f32) {
    let n = s.len();
    let period = smallest_unit_period(s);
    if period > 0 && n >= 2 * period {
        (period, n as f32 / period as f32)
    } else {
        (n, 1.0)
    }
}

/// How many times a raw message repeats its unit (`forsenE GIGACHAD
/// forsenE GIGACHAD ...` → the number of copies), counted on its letters
/// and digits in lower case, or on its visible characters when it has
/// fewer than two letters (braille art, emoji walls). [`normalize`] has
/// already compressed repetitions away, so this reads the original text.
pub fn repetition(text: &str) -> f32 {
    if text.is_ascii() {
        let mut bytes: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| b.to_ascii_lowercase())
            .collect();
        if bytes.len() < 2 {
            bytes = text
                .bytes()
                .filter(|b| !b.is_ascii_whitespace() && !b.is_ascii_control())
                .collect();
        }
        return unit_of(&bytes).1;
    }
    let mut chars: Vec<char> = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if chars.len() < 2 {
        chars = text
            .chars()
            .filter(|c| !c.is_whitespace() && !is_invisible(*c) && *c != '\u{2800}')
            .collect();
    }
    unit_of(&chars).1
}

/// The shortest `p` such that `s[i] == s[i - p]` for every `i >= p` (the
/// last repetition may be cut short, as Twitch cuts messages at 500
/// characters): Knuth-Morris-Pratt's failure function, linear time.
pub fn smallest_unit_period<T: PartialEq>(s: &[T]) -> usize {
    let n = s.len();
    if n == 0 {
        return 0;
    }
    // One failure table per thread, reused: this runs for every message.
    KMP_FAIL.with(|cell| {
        let mut fail = cell.borrow_mut();
        fail.clear();
        fail.resize(n, 0);
        let mut k = 0;
        for i in 1..n {
            while k > 0 && s[i] != s[k] {
                k = fail[k - 1];
            }
            if s[i] == s[k] {
                k += 1;
            }
            fail[i] = k;
        }
        let period = n - fail[n - 1];
        if fail.capacity() > 1 << 16 {
            *fail = Vec::new();
        }
        period
    })
}

/// Keys of the words of a short normalised text and of each two adjacent
/// words, for matching a variant that adds or drops a word (`WATCH SADIST`
/// and `SADIST`), as (xxh3 hash of the key, its length in chars); the hash
/// of a pair is the hash of the two words joined. Empty for texts of one
/// word or more than `max_words` words.
pub fn word_key_hashes(normalized: &str, max_words: usize) -> Vec<(u64, usize)> {
    let mut words: [&str; 8] = [""; 8];
    let mut n = 0;
    for w in normalized
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if n == max_words.min(words.len()) {
            return Vec::new();
        }
        words[n] = w;
        n += 1;
    }
    if n < 2 {
        return Vec::new();
    }
    let len = |w: &str| {
        if w.is_ascii() {
            w.len()
        } else {
            w.chars().count()
        }
    };
    let mut out = Vec::with_capacity(2 * n - 1);
    for w in &words[..n] {
        out.push((xxhash_rust::xxh3::xxh3_64(w.as_bytes()), len(w)));
    }
    for pair in words[..n].windows(2) {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(pair[0].as_bytes());
        h.update(pair[1].as_bytes());
        out.push((h.digest(), len(pair[0]) + len(pair[1])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn youtube_zero_width_prefix_folds() {
        // The chilledcow copypasta, with and without the leading U+200B.
        let plain = "SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK";
        let dodged = "\u{200b}\u{200b}SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK";
        assert_ne!(plain, dodged);
        assert_eq!(normalize(plain), normalize(dodged));
        assert_eq!(grapheme_len(plain), grapheme_len(dodged));
    }

    #[test]
    fn twitch_tag_character_suffix_folds() {
        // xqcow chatters append " U+E0000" to repeat a message.
        assert_eq!(normalize("forsenE \u{E0000}"), normalize("forsenE"));
        assert_eq!(normalize("LULW \u{E0000}"), "lulw");
    }

    #[test]
    fn repeated_phrases_compress() {
        let flood = "DEVIL MAY CRY 5 gachiBASS ".repeat(13);
        assert_eq!(normalize(&flood), normalize("DEVIL MAY CRY 5 gachiBASS"));
        assert_eq!(normalize("pepeD pepeD pepeD"), normalize("pepeD"));
        assert_eq!(normalize("a b a b a"), normalize("a b"));
        assert_ne!(normalize("a b c"), normalize("a b"));
    }

    #[test]
    fn confusables_case_and_width() {
        assert_eq!(normalize("WHERES M0XY"), normalize("wheres moxy"));
        assert_eq!(normalize("ＦＲＥＥ ＣＯＩＮＳ"), normalize("free coins"));
        // Cyrillic а/е/о look like Latin a/e/o.
        assert_eq!(normalize("frее соins"), normalize("free coins"));
        assert_eq!(normalize("LOOOOOOL"), normalize("loool"));
        assert_eq!(normalize("  spaced\t\tout  "), normalize("spaced out"));
    }

    #[test]
    fn emoji_variation_selectors_fold() {
        assert_eq!(normalize("❤️ TECHNO"), normalize("❤ techno"));
    }

    #[test]
    fn lengths_are_graphemes_not_bytes() {
        assert_eq!(grapheme_len("テスト"), 3);
        assert_eq!(grapheme_len("👨‍👩‍👧 ok"), 4);
        assert_eq!(grapheme_len("e\u{301}"), 1);
        assert_eq!(grapheme_len("LULW \u{E0000}"), 5);
        assert_eq!(grapheme_len("ab\u{200b}"), 2);
    }

    #[test]
    fn ascii_and_unicode_paths_agree() {
        for s in ["Hello W0rld", "m|lk 1234", "SPAM THIS"] {
            let forced: String = format!("{s}\u{200b}");
            assert_eq!(normalize(s), normalize(&forced), "{s}");
        }
    }

    #[test]
    fn similarity_keys_merge_spacing_and_punctuation_variants() {
        let k = |t: &str| similarity_key(&normalize(t)).key;
        assert_eq!(k("SADIST"), k("SAD-IST"));
        assert_eq!(k("SADIST"), k("SAD IST"));
        assert_eq!(k("💚DREAM TEAM💚"), k("💚 DREAM TEAM 💚"));
        assert_eq!(
            k("SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK"),
            k("🧀SPAM THIS 🧀 CHEESE FOR 🧀 GOOD LUCK🧀")
        );
        assert_eq!(k("❤TECHNO SUPPORT ❤"), k("♥ TECHNO SUPPORT ♥"));
        assert_eq!(k("❤TECHNO SUPPORT ❤"), k("❤❤TECHNO SUPPORT❤❤"));
        assert_ne!(
            k("OK🧀STOP🧀SPAMMING🧀CHEESE"),
            k("SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK")
        );
        // Emoji-only text keeps its emoji.
        assert_eq!(k("❤ ❤"), "❤");
        assert_ne!(k("❤"), k("🧀"));
    }

    #[test]
    fn repetition_is_the_unit_count_even_when_cut_short() {
        let cut = &"IM A BIG FAN".repeat(7)[..80];
        let w = similarity_key(&normalize(cut));
        assert_eq!(w.key, similarity_key(&normalize("IM A BIG FAN")).key);
        assert!(repetition(cut) > 6.5, "{w:?}");
        let wall = "NOT HEARTSTONE 🥱".repeat(6);
        let w = similarity_key(&normalize(&wall));
        assert_eq!(w.key, similarity_key(&normalize("NOT HEARTSTONE")).key);
        assert!((repetition(&wall) - 6.0).abs() < 1e-6, "{w:?}");
        let one = similarity_key(&normalize("hello there"));
        assert_eq!((repetition("hello there"), one.letters), (1.0, 10));
        assert_eq!(smallest_unit_period(&['a', 'b', 'a']), 2);
        assert_eq!(smallest_unit_period::<char>(&[]), 0);
    }

    #[test]
    fn raw_repetition_counts_copies() {
        assert!((repetition(&"forsenE GIGACHAD ".repeat(10)) - 10.0).abs() < 1e-6);
        assert!(repetition(&"⣿⣿⡿⠛⣉⡉ ".repeat(8)) >= 8.0);
        assert_eq!(repetition("hello there"), 1.0);
        assert_eq!(repetition("?"), 1.0);
    }

    #[test]
    fn word_keys_of_short_texts() {
        let h = |s: &str| xxhash_rust::xxh3::xxh3_64(s.as_bytes());
        assert_eq!(
            word_key_hashes(&normalize("WATCH SADIST"), 4),
            [(h("watch"), 5), (h("sadist"), 6), (h("watchsadist"), 11)]
        );
        assert!(word_key_hashes(&normalize("one two three four five"), 4).is_empty());
        assert!(word_key_hashes(&normalize("single"), 4).is_empty());
    }
}
