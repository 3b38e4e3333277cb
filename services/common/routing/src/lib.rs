//! Where a stream's events go: its shard, and the shard's replica.
//!
//! Parts:
//! - [`shard_of`]: stream key → one of S shards, with xxh3 (stable across
//!   processes, platforms and releases; never `RandomState`).
//! - [`placement`]: shards → replicas on a `consistent_hash_ring` ring with
//!   virtual nodes over replica ids, so adding one replica of N moves about
//!   1/N of the shards and every process computes the same owners.

use consistent_hash_ring::RingBuilder;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Default number of shards of a cluster.
pub const DEFAULT_SHARDS: u32 = 64;
/// Virtual nodes per replica on the ring.
pub const DEFAULT_VNODES: usize = 64;

/// The shard of a stream key (`<platform>.<id>`).
pub fn shard_of(stream_key: &str, shards: u32) -> u32 {
    let shards = shards.max(1);
    (xxhash_rust::xxh3::xxh3_64(stream_key.as_bytes()) % u64::from(shards)) as u32
}

/// Owner of every shard (index = shard) for the given live replicas, or
/// `None` when there are none. The result depends only on the set of
/// replica ids, not on their order.
pub fn placement(replicas: &[String], shards: u32, vnodes: usize) -> Option<Vec<String>> {
    if replicas.is_empty() {
        return None;
    }
    let mut ids: Vec<&String> = replicas.iter().collect();
    ids.sort();
    ids.dedup();
    // xxh3 rather than the ring's default FNV: FNV mixes short, similar
    // ids ("detector-0", "detector-1") and keys poorly, which leaves some
    // replicas with a small fraction of the shards. xxh3 is stable too.
    let ring = RingBuilder::new(Xxh3DefaultBuilder)
        .vnodes(vnodes.max(1))
        .nodes_iter(ids.into_iter().cloned())
        .build();
    Some(
        (0..shards)
            .map(|s| ring.get(format!("shard-{s}")).clone())
            .collect(),
    )
}

/// Shards whose owner differs between two placements.
pub fn moved(before: &[String], after: &[String]) -> Vec<u32> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shard_hash_is_stable_across_releases() {
        // Pinned literal values (from Python's `xxhash` package:
        // `xxh3_64_intdigest(key) % 64`): changing them re-shards every
        // cluster.
        let pinned: Vec<u32> = [
            "twitch.xqcow",
            "youtube.chilledcow-2020-11",
            "twitch.pajlada",
        ]
        .iter()
        .map(|k| shard_of(k, 64))
        .collect();
        assert_eq!(pinned, vec![56, 17, 60]);
    }

    #[test]
    fn no_replicas_no_placement() {
        assert!(placement(&[], 64, 64).is_none());
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("detector-{i}")).collect()
    }

    proptest! {
        #[test]
        fn every_process_computes_the_same_owners(n in 1usize..8, seed in any::<u64>()) {
            let mut a = ids(n);
            let b = a.clone();
            // Any order of the membership list gives the same placement.
            let k = (seed as usize) % n.max(1);
            a.rotate_left(k);
            prop_assert_eq!(placement(&a, 64, DEFAULT_VNODES), placement(&b, 64, DEFAULT_VNODES));
        }

        #[test]
        fn shards_spread_evenly(n in 2usize..8) {
            let p = placement(&ids(n), 256, DEFAULT_VNODES).unwrap();
            let fair = 256.0 / n as f64;
            for id in ids(n) {
                let got = p.iter().filter(|o| **o == id).count() as f64;
                prop_assert!(got > fair * 0.5 && got < fair * 1.6, "{id}: {got} of 256 (fair {fair})");
            }
        }

        #[test]
        fn adding_one_replica_moves_about_one_nth(n in 1usize..8) {
            let shards = 256;
            let before = placement(&ids(n), shards, DEFAULT_VNODES).unwrap();
            let after = placement(&ids(n + 1), shards, DEFAULT_VNODES).unwrap();
            let moved = moved(&before, &after);
            let expected = f64::from(shards) / (n as f64 + 1.0);
            // Only shards going to the new replica move...
            let newcomer = format!("detector-{}", n);
            prop_assert!(moved.iter().all(|&s| after[s as usize] == newcomer));
            // ...and about 1/(N+1) of them (vnodes make it approximate).
            prop_assert!((moved.len() as f64) < expected * 1.8 + 8.0, "{} moved, expected ~{}", moved.len(), expected);
            prop_assert!((moved.len() as f64) > expected * 0.35, "{} moved, expected ~{}", moved.len(), expected);
        }
    }
}
