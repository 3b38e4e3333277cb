//! The fuzzy-search index every store keeps: two MinHash signatures of a
//! spam's text (its normalised form and its words), looked up by LSH band.

use spamscope_chat::normalize::normalize;
use spamscope_detect::clusters::{BANDS, ROWS, Signer};

/// Band keys of a signature; `kind` separates the two signatures a spam
/// is indexed under.
pub(crate) fn band_keys(kind: char, sig: &[u32]) -> Vec<String> {
    (0..BANDS)
        .map(|b| {
            let rows: Vec<u8> = sig[b * ROWS..(b + 1) * ROWS]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            format!("{kind}{b:02}\0{:016x}", xxhash_rust::xxh3::xxh3_64(&rows))
        })
        .collect()
}

/// The normalised text with every character that is not a letter or a
/// digit turned into a word break: a copypasta whose emote separators were
/// swapped (🧀 → 🥰) reads the same.
fn words_only(normalized: &str) -> String {
    normalized
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Both signatures of a text: of its normalised form and of its words.
pub(crate) fn signatures(signer: &Signer, text: &str) -> (Vec<u32>, Vec<u32>) {
    let n = normalize(text);
    let w = words_only(&n);
    (
        signer.sign(&n),
        signer.sign(if w.is_empty() { &n } else { &w }),
    )
}

pub(crate) fn similarity(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}
