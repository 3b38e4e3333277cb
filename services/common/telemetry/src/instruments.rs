//! The instruments every role records. Names follow OpenTelemetry
//! conventions; on `/metrics` the dots become underscores and counters end
//! in `_total` (`spamscope.events.in` is `spamscope_events_in_total`).

use std::sync::OnceLock;

use opentelemetry::global;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

/// See the module docs; every instrument carries a `service` attribute
/// (`ingest`, `detector`, `router`, `history-writer`, `gateway`) because
/// `standalone` runs all of them in one process.
#[derive(Debug)]
pub struct Metrics {
    /// Messages a service took in (chat events read by ingest and the
    /// detector, outputs read by the history writer and the gateway).
    pub events_in: Counter<u64>,
    /// Messages a service put out (events published by ingest, outputs
    /// published by the detector, rows written, outputs sent to watchers).
    pub events_out: Counter<u64>,
    /// Detector outputs by `kind`: `decision`, `spam_event`, `score`.
    pub outputs: Counter<u64>,
    /// Messages sent to a dead-letter subject.
    pub dead_letters: Counter<u64>,
    /// Chat a detector could not read because its stream no longer held
    /// it (retention passed a checkpoint, or the stream was created
    /// again), by `shard`: each time, `gaps` counts one and `skipped` the
    /// sequences known to be lost.
    pub chat_gaps: Counter<u64>,
    pub chat_skipped: Counter<u64>,
    /// Times a shard's consumer delivered nothing for two checkpoint
    /// periods while its stream held more chat, and the shard opened again
    /// from its checkpoint, by `shard`.
    pub consumer_restarts: Counter<u64>,
    /// Streams a shard holds in memory, by `shard`.
    pub streams_held: Gauge<u64>,
    /// Streams moved out of memory to the shard's saved state (idle, or
    /// beyond the cap), and streams loaded back when their chat came, by
    /// `shard`.
    pub streams_evicted: Counter<u64>,
    pub streams_loaded: Counter<u64>,
    /// Saved stream states deleted because nobody wrote them for
    /// `--stream-forget-s`, by `shard`.
    pub streams_forgotten: Counter<u64>,
    /// JetStream messages not yet delivered to a shard's consumer, by `shard`.
    pub consumer_lag: Gauge<u64>,
    /// Seconds since a shard's last checkpoint, by `shard`.
    pub checkpoint_age: Gauge<f64>,
    /// Shards a detector replica owns.
    pub shards_owned: Gauge<u64>,
    /// Seconds a shard hand-over took: `phase` = `close` (old owner: flush
    /// and checkpoint) or `move` (router: Close, record, Open).
    pub handover: Histogram<f64>,
    /// Shards the router moved.
    pub shards_moved: Counter<u64>,
}

/// The instruments, bound to the meter provider [`crate::init`] installed
/// (no-ops in a process that never called it).
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = global::meter("spamscope");
        Metrics {
            events_in: m
                .u64_counter("spamscope.events.in")
                .with_description("Messages a service took in")
                .build(),
            events_out: m
                .u64_counter("spamscope.events.out")
                .with_description("Messages a service put out")
                .build(),
            outputs: m
                .u64_counter("spamscope.detector.outputs")
                .with_description("Detector outputs by kind")
                .build(),
            dead_letters: m
                .u64_counter("spamscope.dead_letters")
                .with_description("Messages sent to a dead-letter subject")
                .build(),
            chat_gaps: m
                .u64_counter("spamscope.detector.chat_gaps")
                .with_description("Times a shard's checkpoint did not match its chat stream")
                .build(),
            chat_skipped: m
                .u64_counter("spamscope.detector.chat_skipped")
                .with_description("Chat sequences lost before a detector read them")
                .build(),
            consumer_restarts: m
                .u64_counter("spamscope.detector.consumer_restarts")
                .with_description("Shards opened again because their consumer stopped delivering")
                .build(),
            streams_held: m
                .u64_gauge("spamscope.detector.streams.held")
                .with_description("Streams a shard holds in memory")
                .build(),
            streams_evicted: m
                .u64_counter("spamscope.detector.streams.evicted")
                .with_description("Streams moved out of memory to the shard's saved state")
                .build(),
            streams_loaded: m
                .u64_counter("spamscope.detector.streams.loaded")
                .with_description("Streams loaded back from the shard's saved state")
                .build(),
            streams_forgotten: m
                .u64_counter("spamscope.detector.streams.forgotten")
                .with_description("Saved stream states deleted after a long silence")
                .build(),
            consumer_lag: m
                .u64_gauge("spamscope.consumer.lag")
                .with_description("JetStream messages pending for a shard's consumer")
                .build(),
            checkpoint_age: m
                .f64_gauge("spamscope.checkpoint.age")
                .with_unit("s")
                .with_description("Seconds since the shard's last checkpoint")
                .build(),
            shards_owned: m
                .u64_gauge("spamscope.detector.shards")
                .with_description("Shards this detector replica owns")
                .build(),
            handover: m
                .f64_histogram("spamscope.shard.handover.duration")
                .with_unit("s")
                .with_description("Shard hand-over time by phase")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
            shards_moved: m
                .u64_counter("spamscope.router.shards.moved")
                .with_description("Shards the router moved to a new owner")
                .build(),
        }
    })
}
