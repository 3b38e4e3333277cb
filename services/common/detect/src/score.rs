//! Message spam score in [0, 1].
//!
//! A logistic regression over hashed features of one message: word
//! unigrams and bigrams and character 4-grams of the normalised text, plus
//! content signals (links, self-promotion phrasing is learned from the
//! words, share of capitals, repeated characters, length, digits). It is
//! trained by `spamscope train` on labelled CSV files (UCI YouTube Spam
//! Collection format: CONTENT, CLASS) with plain SGD in a fixed order, so the
//! same files always give the same model. The model file records the content
//! hash of every file it was trained on, so evaluation can refuse to score a
//! file the model has seen.
//!
//! The detector combines the content probability `p` with membership in an
//! active spam event of a spam class: `1 − (1 − p)(1 − w·c)`, `c` the
//! class weight (1 for bot waves, floods and link spam, 1/2 for
//! copypastas, 0 for crowd reactions).

use serde::{Deserialize, Serialize};
use spamscope_chat::normalize::normalize;

use crate::stable::stable_hash;

/// Hashed feature space.
const DIM_BITS: u32 = 18;
const DIM: u32 = 1 << DIM_BITS;
const MODEL_VERSION: u32 = 1;
/// Weights below this magnitude are not kept in the model file.
pub const PRUNE_BELOW: f32 = 0.02;

/// The model bundled with the binary (trained on the three labelled CSV
/// files in `testdata/labeled/` by `make model`).
pub const BUNDLED_MODEL: &str = include_str!("../model/score-model.json");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainedOn {
    pub file: String,
    /// xxh3 of the file's bytes, hex.
    pub content_hash: String,
    pub rows: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreModel {
    pub version: u32,
    pub bias: f32,
    /// Sparse weights: (feature index, weight).
    pub weights: Vec<(u32, f32)>,
    pub trained_on: Vec<TrainedOn>,
    #[serde(skip)]
    dense: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file: {0}")]
    Parse(String),
    #[error("model file version {0}, this build reads version {MODEL_VERSION}")]
    Version(u32),
}

/// Sparse feature vector of one message.
pub fn features(text: &str) -> Vec<(u32, f32)> {
    let norm = normalize(text);
    let mut f: Vec<(u32, f32)> = Vec::with_capacity(64);
    let mut add = |key: &str, v: f32| f.push(((stable_hash(key) as u32) & (DIM - 1), v));
    let words: Vec<&str> = norm
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for w in &words {
        add(&format!("w:{w}"), 1.0);
    }
    for pair in words.windows(2) {
        add(&format!("b:{} {}", pair[0], pair[1]), 1.0);
    }
    let chars: Vec<char> = norm.chars().collect();
    for g in chars.windows(4) {
        let s: String = g.iter().collect();
        add(&format!("c:{s}"), 0.5);
    }
    // Content signals on the original text.
    let lower = text.to_lowercase();
    let link = [
        "http", "www.", ".com", "bit.ly", ".ly/", "://", ".net", ".org",
    ]
    .iter()
    .any(|p| lower.contains(p));
    add("s:link", if link { 1.0 } else { 0.0 });
    let letters = text.chars().filter(|c| c.is_alphabetic()).count().max(1);
    let caps = text.chars().filter(|c| c.is_uppercase()).count();
    add(&format!("s:caps{}", (caps * 4) / letters), 1.0);
    let glen = spamscope_chat::normalize::grapheme_len(text);
    let len_bin = match glen {
        0..=10 => 0,
        11..=30 => 1,
        31..=80 => 2,
        81..=200 => 3,
        _ => 4,
    };
    add(&format!("s:len{len_bin}"), 1.0);
    let digits = text.chars().filter(char::is_ascii_digit).count();
    add(&format!("s:digits{}", digits.min(12) / 4), 1.0);
    let repeated = norm.len() * 2 < text.len();
    add("s:repetitive", if repeated { 1.0 } else { 0.0 });
    add("s:bias", 1.0);
    f
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl ScoreModel {
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let mut m: ScoreModel =
            serde_json::from_str(json).map_err(|e| ModelError::Parse(e.to_string()))?;
        if m.version != MODEL_VERSION {
            return Err(ModelError::Version(m.version));
        }
        m.dense = vec![0.0; DIM as usize];
        for &(i, w) in &m.weights {
            if let Some(slot) = m.dense.get_mut(i as usize) {
                *slot = w;
            }
        }
        Ok(m)
    }

    pub fn bundled() -> Self {
        #[allow(clippy::expect_used)] // a unit test loads it
        Self::from_json(BUNDLED_MODEL).expect("bundled model is valid")
    }

    pub fn to_json(&self) -> String {
        // Serialising plain numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Probability that the message is spam from its content alone.
    pub fn content_probability(&self, text: &str) -> f32 {
        let z: f32 = self.bias
            + features(text)
                .iter()
                .map(|&(i, v)| self.dense.get(i as usize).copied().unwrap_or(0.0) * v)
                .sum::<f32>();
        sigmoid(z)
    }

    /// Trains on `(text, is_spam)` rows. Deterministic. Weights smaller
    /// than [`PRUNE_BELOW`] are dropped and the rest rounded to 3 decimals,
    /// which keeps the bundled model file small at no measured cost in F1.
    pub fn train(rows: &[(String, bool)], trained_on: Vec<TrainedOn>) -> Self {
        const EPOCHS: usize = 12;
        const L2: f32 = 1e-5;
        let feats: Vec<Vec<(u32, f32)>> = rows.iter().map(|(t, _)| features(t)).collect();
        let mut w = vec![0.0f32; DIM as usize];
        let mut bias = 0.0f32;
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for epoch in 0..EPOCHS {
            // Fisher-Yates with a fixed-seed xorshift: same order every run.
            for i in (1..order.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                order.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            let lr = 0.2 / (1.0 + epoch as f32 * 0.3);
            for &k in &order {
                let y = if rows[k].1 { 1.0 } else { 0.0 };
                let z = bias
                    + feats[k]
                        .iter()
                        .map(|&(i, v)| w[i as usize] * v)
                        .sum::<f32>();
                let g = sigmoid(z) - y;
                bias -= lr * g;
                for &(i, v) in &feats[k] {
                    let wi = &mut w[i as usize];
                    *wi -= lr * (g * v + L2 * *wi);
                }
            }
        }
        let weights = w
            .iter()
            .enumerate()
            .filter(|(_, x)| x.abs() >= PRUNE_BELOW)
            .map(|(i, x)| (i as u32, (x * 1_000.0).round() / 1_000.0))
            .collect();
        let m = ScoreModel {
            version: MODEL_VERSION,
            bias,
            weights,
            trained_on,
            dense: Vec::new(),
        };
        // Score with exactly what the file will hold.
        Self::from_json(&m.to_json()).unwrap_or(m)
    }

    /// True if the model was trained on a file with these bytes.
    pub fn was_trained_on(&self, bytes: &[u8]) -> bool {
        let h = content_hash(bytes);
        self.trained_on.iter().any(|t| t.content_hash == h)
    }
}

pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Combines content probability and spam-event membership.
/// The message score: `1 − (1 − p)(1 − e)` for content probability `p`
/// and event weight `e` (the weight of the spam event the message is in,
/// 0 outside spam-class events).
pub fn combine(content: f32, event: f64) -> f64 {
    1.0 - (1.0 - f64::from(content)) * (1.0 - event.clamp(0.0, 1.0))
}

/// One labelled row of a UCI YouTube Spam Collection CSV.
#[derive(Debug, Deserialize)]
struct LabelledRow {
    #[serde(rename = "CONTENT")]
    content: String,
    #[serde(rename = "CLASS")]
    class: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("row {row}: {reason}")]
    Row { row: usize, reason: String },
    #[error("{0}")]
    Csv(String),
}

/// Reads `(CONTENT, CLASS == 1)` rows of a labelled CSV.
pub fn read_labelled(bytes: &[u8]) -> Result<Vec<(String, bool)>, CsvError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let mut out = Vec::new();
    for (i, rec) in rdr.deserialize::<LabelledRow>().enumerate() {
        let r = rec.map_err(|e| CsvError::Csv(e.to_string()))?;
        let spam = match r.class.trim() {
            "1" => true,
            "0" => false,
            other => {
                return Err(CsvError::Row {
                    row: i + 2,
                    reason: format!("CLASS must be 0 or 1, not {other:?}"),
                });
            }
        };
        out.push((r.content, spam));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_model_loads_and_separates_obvious_cases() {
        let m = ScoreModel::bundled();
        assert_eq!(m.trained_on.len(), 3);
        let spam =
            m.content_probability("Check out my channel!! subscribe please http://bit.ly/free");
        let ham = m.content_probability("this song reminds me of summer");
        assert!(spam > 0.5 && ham < 0.5, "spam {spam}, ham {ham}");
    }

    #[test]
    fn training_is_deterministic() {
        let rows = vec![
            ("subscribe to my channel".to_owned(), true),
            ("love this song".to_owned(), false),
            ("check out my page http://x.com".to_owned(), true),
            ("great video".to_owned(), false),
        ];
        let a = ScoreModel::train(&rows, vec![]);
        let b = ScoreModel::train(&rows, vec![]);
        assert_eq!(a.to_json(), b.to_json());
        assert!(
            a.content_probability("subscribe to my page")
                > a.content_probability("love this video")
        );
    }

    #[test]
    fn combine_raises_score_in_spam_events() {
        assert!((combine(0.1, 0.0) - 0.1).abs() < 1e-6);
        assert!((combine(0.1, 0.6) - 0.64).abs() < 1e-6);
    }

    #[test]
    fn csv_rows_and_bad_class() {
        let rows = read_labelled(
            b"COMMENT_ID,AUTHOR,DATE,CONTENT,CLASS\na,b,c,\"hi, there\",0\nd,e,f,buy,1\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![("hi, there".to_owned(), false), ("buy".to_owned(), true)]
        );
        assert!(read_labelled(b"CONTENT,CLASS\nx,maybe\n").is_err());
    }
}
