//! Values that come out the same in every process, release and run: the
//! hash of a text (shard-independent group keys, feature hashing, trusted
//! users) and evidence numbers as people read them.

/// Stable 64-bit hash (xxh3), the same in every process and release.
pub fn stable_hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Three decimals: evidence is for people, and f32 noise in the last
/// digits only makes outputs differ between equal runs' printouts.
pub fn round3(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}
