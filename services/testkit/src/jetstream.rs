//! Readers of what the pipeline published on JetStream, and a gateway
//! client that waits for its server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use futures::StreamExt;
use serde_json::Value;

use crate::{Proc, tail};

/// How long a read waits for the next message, or for one JetStream
/// request, before it asks again.
const IDLE: Duration = Duration::from_secs(10);

/// How long a read keeps asking again before it gives up (and the test
/// fails saying why).
const GIVE_UP: Duration = Duration::from_secs(60);

/// Every message on a JetStream stream, from the start: (subject, headers,
/// payload). A JetStream cluster electing leaders answers "temporarily
/// unavailable" or breaks a consumer for a few seconds: the reader asks
/// again from the sequence it reached (an error used to end the read
/// early, and a drill then counted the unread chat as lost). An ordered
/// consumer whose server was paused can wait for good without an error
/// (it recreates itself forever): a read that gets nothing for [`IDLE`]
/// asks again too (a CI run hung an hour in such a read).
pub async fn read_stream(
    url: &str,
    stream: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    use async_nats::jetstream::consumer::DeliverPolicy;
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let js = jetstream(url).await;
    let deadline = Instant::now() + GIVE_UP;
    let mut out = Vec::new();
    let mut last = None;
    let mut next = 1u64;
    loop {
        let attempt = async {
            let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let l = s
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            let last = *last.get_or_insert(l);
            if next > last {
                return Ok::<_, String>(None);
            }
            let c = s
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let msgs = c.messages().await.map_err(|e| e.to_string())?;
            Ok(Some((last, msgs)))
        };
        let attempt = async {
            tokio::time::timeout(IDLE, attempt)
                .await
                .unwrap_or_else(|_| Err(format!("no answer in {IDLE:?}")))
        };
        let error = match attempt.await {
            Ok(None) => return out,
            Ok(Some((last, mut msgs))) => loop {
                let Ok(next_msg) = tokio::time::timeout(IDLE, msgs.next()).await else {
                    break format!("no message in {IDLE:?}");
                };
                match next_msg {
                    Some(Ok(m)) => {
                        let seq = m.info().unwrap().stream_sequence;
                        out.push((m.subject.to_string(), m.headers.clone(), m.payload.clone()));
                        next = seq + 1;
                        if seq >= last {
                            return out;
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "consumer ended".to_owned(),
                }
            },
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{stream}: {error} (read up to sequence {next})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Detector outputs published on SPAM, as replay-style JSON by key (scores
/// excluded); also returns how many messages carried a key seen before.
pub async fn pipeline_outputs(url: &str) -> (BTreeMap<String, Value>, usize) {
    use prost::Message;
    let mut out = BTreeMap::new();
    let mut dups = 0;
    for (_, _, payload) in read_stream(url, "SPAM").await {
        let o = spamscope_proto::v1::DetectorOutput::decode(payload).unwrap();
        if matches!(
            o.kind,
            Some(spamscope_proto::v1::detector_output::Kind::MessageScore(_))
        ) {
            continue;
        }
        let v = spamscope_detect::json::to_json(&o);
        let key = v["key"].as_str().unwrap().to_owned();
        if let Some(prev) = out.insert(key, v.clone()) {
            assert_eq!(prev, v, "two outputs with one key and different content");
            dups += 1;
        }
    }
    (out, dups)
}

/// Waits until the pipeline's outputs equal `expected`, or panics with the
/// difference (and the logs) after `timeout`.
pub async fn await_outputs(
    url: &str,
    expected: &BTreeMap<String, Value>,
    timeout: Duration,
    procs: &[&Proc],
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, dups) = pipeline_outputs(url).await;
        if &got == expected {
            return dups;
        }
        if Instant::now() > deadline {
            let missing: Vec<&String> = expected
                .keys()
                .filter(|k| !got.contains_key(*k))
                .take(10)
                .collect();
            let extra: Vec<&String> = got
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .take(10)
                .collect();
            let differ: Vec<&String> = expected
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .map(|(k, _)| k)
                .take(5)
                .collect();
            for p in procs {
                eprintln!("==== {} ====\n{}", p.name, tail(&p.log_text(), 40));
            }
            if let Some(k) = differ.first() {
                eprintln!("expected {k}: {}\n     got {k}: {}", expected[*k], got[*k]);
            }
            panic!(
                "pipeline outputs differ from the in-process replay: {} expected, {} got; missing {missing:?}; extra {extra:?}; different {differ:?}",
                expected.len(),
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
/// A JetStream context on `url` (one server or a comma-separated list),
/// connected within [`GIVE_UP`].
async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let connect = async_nats::connect(url.split(',').collect::<Vec<_>>());
        let error = match tokio::time::timeout(IDLE, connect).await {
            Ok(Ok(client)) => return async_nats::jetstream::new(client),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {IDLE:?}"),
        };
        assert!(Instant::now() < deadline, "NATS at {url}: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Messages in a JetStream stream now (0 before it is created). A server
/// that does not answer is asked again for [`GIVE_UP`].
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    let js = jetstream(url).await;
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let ask = async {
            match js.get_stream(stream).await {
                Ok(mut s) => s
                    .info()
                    .await
                    .map(|i| i.state.messages)
                    .map_err(|e| e.to_string()),
                Err(e)
                    if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    Ok(0)
                }
                Err(e) => Err(e.to_string()),
            }
        };
        let error = match tokio::time::timeout(IDLE, ask).await {
            Ok(Ok(n)) => return n,
            Ok(Err(e)) => e,
            Err(_) => format!("no answer in {IDLE:?}"),
        };
        assert!(Instant::now() < deadline, "{stream}: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every chat message in JetStream: the messages of all `CHAT-<shard>`
/// streams, shard by shard, each in its stream's order (a batch is one).
pub async fn read_chat_messages(
    url: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    let mut out = Vec::new();
    for name in chat_streams(url).await {
        out.extend(read_stream(url, &name).await);
    }
    out
}

/// Every chat event in JetStream, batches taken apart: (subject, headers
/// of its message, the event encoded on its own), shard by shard, each in
/// its stream's order. A payload that does not decode (the drills publish
/// garbage) is one entry, as it is.
pub async fn read_chat(url: &str) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    use prost::Message;
    let mut out = Vec::new();
    for (subject, headers, payload) in read_chat_messages(url).await {
        let batch = spamscope_bus::subjects::is_batch(headers.as_ref());
        match spamscope_proto::decode_chat(batch, payload.clone()) {
            Ok(events) => {
                for ev in events {
                    out.push((
                        subject.clone(),
                        headers.clone(),
                        bytes::Bytes::from(ev.encode_to_vec()),
                    ));
                }
            }
            Err(_) => out.push((subject, headers, payload)),
        }
    }
    out
}

/// Chat events in JetStream now, over all shards (batches counted by
/// their events).
pub async fn chat_events(url: &str) -> u64 {
    read_chat(url).await.len() as u64
}

/// Chat messages in JetStream now, over all shards (a batch is one).
pub async fn chat_len(url: &str) -> u64 {
    let mut n = 0;
    for name in chat_streams(url).await {
        n += stream_len(url, &name).await;
    }
    n
}

async fn chat_streams(url: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let js = jetstream(url).await;
    let deadline = Instant::now() + GIVE_UP;
    loop {
        // A page that fails is asked again: skipping it would count its
        // streams' chat as lost.
        let list = js.stream_names().try_collect::<Vec<String>>();
        let error = match tokio::time::timeout(IDLE, list).await {
            Ok(Ok(mut names)) => {
                names.retain(|n| n.starts_with(spamscope_bus::subjects::CHAT_STREAM_PREFIX));
                names.sort();
                return names;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {IDLE:?}"),
        };
        assert!(Instant::now() < deadline, "stream names at {url}: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A gRPC client of the gateway at `addr`, once it answers (30 s at most;
/// the failure shows the process's log).
pub async fn gateway_client(
    addr: &str,
    proc: &Proc,
) -> spamscope_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) =
            spamscope_proto::v1::gateway_client::GatewayClient::connect(format!("http://{addr}"))
                .await
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not up:\n{}",
            tail(&proc.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WatchChannel stream of `stream`, opened as soon as the gateway knows
/// the stream (before its first chat it answers NOT_FOUND; 30 s at most).
pub async fn watch_once_known(
    client: &mut spamscope_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
    stream: &str,
) -> tonic::Streaming<spamscope_proto::v1::WatchChannelEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .watch_channel(spamscope_proto::v1::WatchChannelRequest {
                stream: stream.into(),
            })
            .await
        {
            Ok(w) => return w.into_inner(),
            Err(e) if e.code() == tonic::Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("watch {stream}: {e:?}"),
        }
    }
}
