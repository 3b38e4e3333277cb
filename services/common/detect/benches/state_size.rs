//! Bytes of detector state per tracked user and per stream, measured with
//! dhat's heap counters (live heap bytes after minus before).

use std::sync::Arc;

use spamscope_detect::{CompiledParams, DetectorParams, ScoreModel, StreamDetector};
use spamscope_proto::v1::{Author, ChatEvent, ChatMessage, Platform, Roles, chat_event::Kind};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn message(stream: &str, login: &str, ts: i64, text: &str) -> ChatEvent {
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        channel_id: String::new(),
        event_id: String::new(),
        ts_ms: ts,
        kind: Some(Kind::Message(ChatMessage {
            author: Some(Author {
                user_id: format!("{}", 10_000_000 + ts),
                login: login.into(),
                display_name: login.into(),
                roles: Some(Roles::default()),
            }),
            text: text.into(),
            ..ChatMessage::default()
        })),
    }
}

fn live_bytes() -> i64 {
    dhat::HeapStats::get().curr_bytes as i64
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let model = Arc::new(ScoreModel::bundled());
    let users = 100_000i64;
    #[allow(clippy::expect_used)]
    let params = CompiledParams::new(DetectorParams {
        max_users: users as u32 + 1,
        ..DetectorParams::default()
    })
    .expect("valid params");

    // Per stream: a detector that has seen one message.
    let before = live_bytes();
    let mut streams = Vec::new();
    for s in 0..1_000 {
        let mut d = StreamDetector::new(
            Platform::Twitch,
            &format!("s{s}"),
            Arc::clone(&params),
            Arc::clone(&model),
        );
        let mut out = Vec::new();
        d.handle(&message("s", "first", 1, "hello"), &mut out);
        streams.push(d);
    }
    let per_stream = (live_bytes() - before) / 1_000;
    drop(streams);

    // Per user: many users in one stream, each sending the same short
    // message (one group), message ids not tracked (empty ids), so the
    // growth is the users' own state.
    let mut d = StreamDetector::new(
        Platform::Twitch,
        "big",
        Arc::clone(&params),
        Arc::clone(&model),
    );
    let mut out = Vec::new();
    d.handle(&message("big", "warmup", 0, "gg"), &mut out);
    let before = live_bytes();
    for i in 1..=users {
        out.clear();
        // Chatter-like logins of 8-14 chars.
        d.handle(
            &message("big", &format!("viewer_{i:07}"), i, "gg"),
            &mut out,
        );
    }
    let per_user = (live_bytes() - before) as f64 / users as f64;
    println!("state: {per_stream} bytes per stream (after one message)");
    println!(
        "state: {per_user:.0} bytes per tracked user ({} users tracked)",
        d.tracked_users()
    );
    println!("target: at most 256 bytes per tracked user");
}
