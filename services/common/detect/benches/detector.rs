//! Detector throughput on the real logs, in events per second on one core.
//!
//! Each log is repeated with shifted stream ids (every copy is a new stream,
//! as many channels would be) so a run holds about 100,000 events.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spamscope_chat::normalize::normalize;
use spamscope_chat::replay;
use spamscope_detect::{Detector, ScoreModel};
use spamscope_proto::v1::ChatEvent;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../testdata")
        .join(rel)
}

/// `copies` copies of a log, each under its own stream id.
pub fn repeated(rel: &str, copies: usize) -> Vec<ChatEvent> {
    #[allow(clippy::expect_used)]
    let file = replay::read_file(&testdata(rel)).expect("bundled log");
    let base = replay::merge(vec![file]);
    let mut out = Vec::with_capacity(base.len() * copies);
    for c in 0..copies {
        for ev in &base {
            let mut e = ev.clone();
            e.stream_id = format!("{}-{c}", e.stream_id);
            out.push(e);
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let model = Arc::new(ScoreModel::bundled());
    let mut group = c.benchmark_group("detector");
    group.sample_size(10);
    for (name, rel, copies) in [
        ("xqcow", "twitch/xqcow-2019-09-15.irc", 20),
        (
            "chilledcow",
            "youtube/chilledcow-2020-11.chat-downloader.json",
            56,
        ),
    ] {
        let events = repeated(rel, copies);
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_with_input(BenchmarkId::new("events", name), &events, |b, events| {
            b.iter(|| {
                let mut d = Detector::new(Arc::clone(&model));
                let mut out = Vec::with_capacity(64);
                for ev in events {
                    out.clear();
                    d.handle(ev, &mut out);
                }
                out.len()
            });
        });
    }
    group.finish();

    let texts: Vec<String> = repeated("twitch/xqcow-2019-09-15.irc", 1)
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(spamscope_proto::v1::chat_event::Kind::Message(m)) => Some(m.text),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(texts.len() as u64));
    g.bench_function("xqcow messages", |b| {
        b.iter(|| texts.iter().map(|t| normalize(t).len()).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
