//! Saved stream state that nobody wrote for long is forgotten, in both
//! stores alike: the embedded one and a real redis-server.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::time::Duration;

use spamscope_store::{CheckpointWrite, FORGET_PER_CHECKPOINT, Owner, Saved, Store};
use spamscope_testkit::Redis;

const SHARD: u32 = 4;

fn owner() -> Owner {
    Owner {
        replica: "d0".into(),
        epoch: 1,
    }
}

async fn owned(store: &Store) {
    assert!(store.lead("r", Duration::from_secs(30)).await.unwrap());
    assert!(store.set_owner(SHARD, &owner(), "r").await.unwrap());
}

async fn write(
    store: &Store,
    changed: &[(String, Vec<u8>)],
    removed: &[String],
    now_ms: i64,
    forget_before_ms: i64,
) -> Saved {
    let w = CheckpointWrite {
        position: b"pos",
        changed,
        removed,
        now_ms,
        forget_before_ms,
    };
    store.save_checkpoint(SHARD, &owner(), w).await.unwrap()
}

fn states(keys: &[&str]) -> Vec<(String, Vec<u8>)> {
    keys.iter()
        .map(|k| (k.to_string(), k.as_bytes().to_vec()))
        .collect()
}

async fn present(store: &Store, keys: &[&str]) -> Vec<bool> {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    store
        .load_streams(SHARD, &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.is_some())
        .collect()
}

async fn forgets_what_nobody_wrote_since_the_cutoff(store: &Store) {
    owned(store).await;
    assert_eq!(
        write(store, &states(&["t.a", "t.b"]), &[], 1_000, i64::MIN).await,
        Saved::Written { forgotten: 0 }
    );
    assert_eq!(
        write(store, &states(&["t.c"]), &[], 5_000, i64::MIN).await,
        Saved::Written { forgotten: 0 }
    );
    // a and b were last written at 1,000: before the cutoff.
    assert_eq!(
        write(store, &[], &[], 6_000, 2_000).await,
        Saved::Written { forgotten: 2 }
    );
    assert_eq!(
        present(store, &["t.a", "t.b", "t.c"]).await,
        [false, false, true]
    );
    // Written again, a stream counts from its new write.
    assert_eq!(
        write(store, &states(&["t.c"]), &[], 9_000, 5_500).await,
        Saved::Written { forgotten: 0 }
    );
    assert_eq!(
        write(store, &states(&["t.d"]), &[], 9_500, 9_400).await,
        Saved::Written { forgotten: 1 },
        "c (9,000) goes, d written at 9,500 stays"
    );
    assert_eq!(present(store, &["t.c", "t.d"]).await, [false, true]);
    assert_eq!(store.saved_streams(SHARD).await.unwrap().0, 1);
    // A stream that ended (removed) is not counted as forgotten later.
    let removed = ["t.d".to_owned()];
    assert_eq!(
        write(store, &[], &removed, 10_000, 20_000).await,
        Saved::Written { forgotten: 0 }
    );

    // Many at once: at most FORGET_PER_CHECKPOINT per checkpoint, the rest
    // at the next.
    let many: Vec<(String, Vec<u8>)> = (0..FORGET_PER_CHECKPOINT + 5)
        .map(|i| (format!("t.m{i}"), vec![1]))
        .collect();
    write(store, &many, &[], 11_000, i64::MIN).await;
    assert_eq!(
        write(store, &[], &[], 12_000, 11_500).await,
        Saved::Written {
            forgotten: FORGET_PER_CHECKPOINT as u64
        }
    );
    assert_eq!(
        write(store, &[], &[], 12_001, 11_500).await,
        Saved::Written { forgotten: 5 }
    );
    assert_eq!(store.saved_streams(SHARD).await.unwrap().0, 0);

    // A stale owner forgets nothing.
    write(store, &states(&["t.e"]), &[], 13_000, i64::MIN).await;
    let newer = Owner {
        replica: "d1".into(),
        epoch: 2,
    };
    assert!(store.set_owner(SHARD, &newer, "r").await.unwrap());
    assert_eq!(write(store, &[], &[], 99_000, 99_000).await, Saved::Fenced);
    assert_eq!(present(store, &["t.e"]).await, [true]);
}

#[tokio::test]
async fn the_embedded_store_forgets_silent_streams() {
    let store = Store::open(None, "spamscope:").await.unwrap();
    forgets_what_nobody_wrote_since_the_cutoff(&store).await;
}

#[tokio::test]
async fn redis_forgets_silent_streams() {
    let redis = Redis::start();
    let store = Store::open(Some(&redis.url()), "spamscope:").await.unwrap();
    forgets_what_nobody_wrote_since_the_cutoff(&store).await;
}

/// State saved by a release that kept no write times has none: it is
/// stamped when its shard opens, and forgotten counting from then.
#[tokio::test]
async fn redis_state_saved_without_times_is_stamped_then_forgotten() {
    let redis = Redis::start();
    let store = Store::open(Some(&redis.url()), "spamscope:").await.unwrap();
    owned(&store).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("spamscope:streams:{SHARD}"))
        .arg("t.old1")
        .arg("x")
        .arg("t.old2")
        .arg("y")
        .query_async(&mut raw)
        .await
        .unwrap();
    // Untimed state is never forgotten.
    assert_eq!(
        write(&store, &[], &[], 50, 40).await,
        Saved::Written { forgotten: 0 }
    );
    assert_eq!(store.stamp_saved_streams(SHARD, 100).await.unwrap(), 2);
    assert_eq!(store.stamp_saved_streams(SHARD, 500).await.unwrap(), 0);
    assert_eq!(
        write(&store, &[], &[], 150, 100).await,
        Saved::Written { forgotten: 0 },
        "stamped at 100, not before it"
    );
    assert_eq!(
        write(&store, &[], &[], 200, 101).await,
        Saved::Written { forgotten: 2 }
    );
    assert_eq!(store.saved_streams(SHARD).await.unwrap().0, 0);
}
