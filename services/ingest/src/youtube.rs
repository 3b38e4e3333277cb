//! Live YouTube chat through innertube polling, as the web player does.
//!
//! Per video: the live-chat page gives the API key, client version and the
//! first continuation token; then `get_live_chat` is polled with the latest
//! continuation, honouring the `timeoutMs` the server returns between polls.
//! Actions go through the same parser as recorded innertube files. When the
//! server stops returning a continuation, the chat has closed: a
//! stream-ended event is published. Errors back off and retry.

use std::time::Duration;

use serde_json::{Value, json};
use spamscope_bus::Bus;
use spamscope_chat::youtube::{StreamContext, parse_action};
use spamscope_proto::v1::{ChatEvent, Platform, StreamEnded, chat_event::Kind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::twitch::publish_one;
use crate::{IngestError, IngestReport};

#[derive(Debug, Clone)]
pub struct YoutubeConfig {
    pub video_ids: Vec<String>,
    /// `https://www.youtube.com` in production; a local server in tests.
    pub base_url: String,
    /// Bounds on the server's poll interval.
    pub min_poll: Duration,
    pub max_poll: Duration,
}

impl Default for YoutubeConfig {
    fn default() -> Self {
        Self {
            video_ids: Vec::new(),
            base_url: "https://www.youtube.com".into(),
            min_poll: Duration::from_millis(500),
            max_poll: Duration::from_secs(30),
        }
    }
}

/// What the live-chat page says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPage {
    pub api_key: String,
    pub client_version: String,
    pub continuation: String,
}

fn quoted_after<'a>(html: &'a str, marker: &str) -> Option<&'a str> {
    let start = html.find(marker)? + marker.len();
    let rest = &html[start..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    rest.split('"').next()
}

/// Finds the API key, client version and first continuation in the page.
pub fn parse_chat_page(html: &str) -> Option<ChatPage> {
    Some(ChatPage {
        api_key: quoted_after(html, "\"INNERTUBE_API_KEY\"")?.to_owned(),
        client_version: quoted_after(html, "\"INNERTUBE_CONTEXT_CLIENT_VERSION\"")
            .unwrap_or("2.20240101.00.00")
            .to_owned(),
        continuation: quoted_after(html, "\"continuation\"")?.to_owned(),
    })
}

/// The channel a video belongs to, from its watch page: the `channelId` of
/// the player response's `videoDetails` (the owner's `UC…` id), or the
/// page's `<meta itemprop="channelId">`. Channel params of YouTube are keyed
/// by it.
pub fn parse_watch_page(html: &str) -> Option<String> {
    let from_details = html
        .find("\"videoDetails\"")
        .and_then(|at| quoted_after(&html[at..], "\"channelId\""));
    let from_meta = || {
        let at = html.find("itemprop=\"channelId\"")?;
        let tag_end = at + html[at..].find('>')?;
        let tag_start = html[..at].rfind('<')?;
        let tag = &html[tag_start..tag_end];
        let v = tag.split("content=\"").nth(1)?;
        v.split('"').next()
    };
    let id = from_details.or_else(from_meta)?;
    is_channel_id(id).then(|| id.to_owned())
}

/// `UC` and 22 URL-safe base64 characters.
fn is_channel_id(s: &str) -> bool {
    s.len() == 24
        && s.starts_with("UC")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Actions, next continuation and poll interval of a `get_live_chat` reply.
pub fn parse_poll(resp: &Value) -> (Vec<Value>, Option<(String, u64)>) {
    let cont = resp.pointer("/continuationContents/liveChatContinuation");
    let actions = cont
        .and_then(|c| c.get("actions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let next = cont
        .and_then(|c| c.get("continuations"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|c| {
            [
                "invalidationContinuationData",
                "timedContinuationData",
                "reloadContinuationData",
            ]
            .iter()
            .find_map(|k| c.get(*k))
        })
        .and_then(|d| {
            let token = d.get("continuation")?.as_str()?.to_owned();
            let timeout = d.get("timeoutMs").and_then(Value::as_u64).unwrap_or(5_000);
            Some((token, timeout))
        });
    (actions, next)
}

/// Polls every video until its chat closes or `shutdown`.
pub async fn run(
    bus: &Bus,
    cfg: YoutubeConfig,
    shards: u32,
    shutdown: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    let http = reqwest::Client::builder()
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) spamscope")
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| IngestError::Source(e.to_string()))?;
    let mut tasks = Vec::new();
    for video in cfg.video_ids.clone() {
        let (bus, http, cfg, stop) = (bus.clone(), http.clone(), cfg.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            poll_video(&bus, &http, &cfg, &video, shards, &stop).await
        }));
    }
    let mut report = IngestReport::default();
    for t in tasks {
        let r = t.await.map_err(|e| IngestError::Source(e.to_string()))??;
        report.published += r.published;
        report.duplicates += r.duplicates;
        report.interrupted |= r.interrupted;
    }
    Ok(report)
}

async fn poll_video(
    bus: &Bus,
    http: &reqwest::Client,
    cfg: &YoutubeConfig,
    video: &str,
    shards: u32,
    stop: &CancellationToken,
) -> Result<IngestReport, IngestError> {
    let mut report = IngestReport::default();
    let channel_id = watch_page_channel(http, cfg, video).await;
    let ctx = StreamContext {
        video_id: video.to_owned(),
        channel_id: channel_id.clone(),
    };
    let mut backoff = spamscope_runtime::Backoff::new(Duration::from_millis(500), cfg.max_poll);
    let page = loop {
        let url = format!("{}/live_chat?is_popout=1&v={video}", cfg.base_url);
        match http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            Ok(r) => match r.text().await.ok().as_deref().and_then(parse_chat_page) {
                Some(p) => break p,
                None => warn!(video, "live-chat page without a continuation (not live?)"),
            },
            Err(e) => warn!(video, error = %e, "live-chat page failed"),
        }
        if !sleep_or_stop(backoff.next_delay(), stop).await {
            report.interrupted = true;
            return Ok(report);
        }
    };
    info!(video, "polling YouTube live chat");
    let mut continuation = page.continuation.clone();
    let mut last_ts = 0i64;
    loop {
        let url = format!(
            "{}/youtubei/v1/live_chat/get_live_chat?key={}&prettyPrint=false",
            cfg.base_url, page.api_key
        );
        let body = json!({
            "context": {"client": {"clientName": "WEB", "clientVersion": page.client_version}},
            "continuation": continuation,
        });
        let resp = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let resp: Value = match resp {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(e) => {
                    warn!(video, error = %e, "poll reply is not JSON");
                    Value::Null
                }
            },
            Err(e) => {
                warn!(video, error = %e, "poll failed; backing off");
                if !sleep_or_stop(backoff.next_delay(), stop).await {
                    report.interrupted = true;
                    return Ok(report);
                }
                continue;
            }
        };
        backoff.reset();
        let (actions, next) = parse_poll(&resp);
        for a in actions.iter().flat_map(flatten_replay) {
            match parse_action(a, &ctx, last_ts) {
                Ok(Some(ev)) => {
                    last_ts = ev.ts_ms;
                    publish_one(bus, &ev, shards, stop, &mut report).await?;
                }
                Ok(None) => {}
                Err(e) => {
                    let reason = format!("unparsable innertube action: {e}");
                    let _ = bus
                        .dead_letter(
                            "ingest",
                            "youtube",
                            &reason,
                            bytes::Bytes::from(a.to_string()),
                        )
                        .await;
                }
            }
        }
        match next {
            Some((token, timeout_ms)) => {
                continuation = token;
                let wait = Duration::from_millis(timeout_ms).clamp(cfg.min_poll, cfg.max_poll);
                if !sleep_or_stop(wait, stop).await {
                    report.interrupted = true;
                    return Ok(report);
                }
            }
            None if resp.is_null() => {
                if !sleep_or_stop(backoff.peek(), stop).await {
                    report.interrupted = true;
                    return Ok(report);
                }
            }
            None => {
                info!(video, "live chat closed");
                let end = ChatEvent {
                    platform: Platform::Youtube as i32,
                    stream_id: video.to_owned(),
                    channel_id: channel_id.clone(),
                    event_id: format!("end:youtube.{video}"),
                    ts_ms: last_ts,
                    kind: Some(Kind::StreamEnded(StreamEnded {
                        reason: "live chat closed".into(),
                    })),
                };
                publish_one(bus, &end, shards, stop, &mut report).await?;
                return Ok(report);
            }
        }
    }
}

/// The video's channel id, read once from its watch page. Without it the
/// chat still flows: the events carry no channel id, and the channel's
/// params layer does not apply to this video (said once, as a warning).
async fn watch_page_channel(http: &reqwest::Client, cfg: &YoutubeConfig, video: &str) -> String {
    let url = format!("{}/watch?v={video}", cfg.base_url);
    let page = match http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
    {
        Ok(r) => r.text().await.ok(),
        Err(e) => {
            warn!(video, error = %e, "watch page failed: no channel id, channel params will not apply to this video");
            return String::new();
        }
    };
    match page.as_deref().and_then(parse_watch_page) {
        Some(id) => {
            info!(video, channel = %id, "video's channel");
            id
        }
        None => {
            warn!(
                video,
                "no channel id on the watch page: channel params will not apply to this video"
            );
            String::new()
        }
    }
}

fn flatten_replay(a: &Value) -> Vec<&Value> {
    match a
        .pointer("/replayChatItemAction/actions")
        .and_then(Value::as_array)
    {
        Some(inner) => inner.iter().collect(),
        None => vec![a],
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_page_and_poll_replies() {
        let html = r#"<script>ytcfg.set({"INNERTUBE_API_KEY": "AIzaKEY","INNERTUBE_CONTEXT_CLIENT_VERSION":"2.2020"});
            var ytInitialData = {"contents":{"liveChatRenderer":{"continuations":[{"invalidationContinuationData":{"continuation":"0ofMy","timeoutMs":5000}}]}}};</script>"#;
        let p = parse_chat_page(html).unwrap();
        assert_eq!(
            (
                p.api_key.as_str(),
                p.client_version.as_str(),
                p.continuation.as_str()
            ),
            ("AIzaKEY", "2.2020", "0ofMy")
        );
        assert!(parse_chat_page("<html>no chat</html>").is_none());
        let resp = json!({"continuationContents": {"liveChatContinuation": {
            "continuations": [{"timedContinuationData": {"continuation": "next", "timeoutMs": 1234}}],
            "actions": [{"a": 1}, {"b": 2}]}}});
        let (actions, next) = parse_poll(&resp);
        assert_eq!(actions.len(), 2);
        assert_eq!(next, Some(("next".to_owned(), 1234)));
        assert_eq!(parse_poll(&json!({})).1, None);
    }

    #[test]
    fn watch_page_channel_id() {
        // The player response names the owner after other channel ids
        // (a recommended video's `externalChannelId` comes first here).
        let html = r#"<script>var ytInitialData = {"externalChannelId":"UCaaaaaaaaaaaaaaaaaaaaaa"};
            var ytInitialPlayerResponse = {"videoDetails":{"videoId":"jfKfPfyJRdk","title":"lofi","lengthSeconds":"0","channelId":"UCSJ4gkVC6NrvII8umztf0Ow","isLive":true}};</script>"#;
        assert_eq!(
            parse_watch_page(html).as_deref(),
            Some("UCSJ4gkVC6NrvII8umztf0Ow")
        );
        let meta = r#"<head><meta itemprop="channelId" content="UCSJ4gkVC6NrvII8umztf0Ow"></head>"#;
        assert_eq!(
            parse_watch_page(meta).as_deref(),
            Some("UCSJ4gkVC6NrvII8umztf0Ow")
        );
        // Not a channel id: refused rather than keyed on.
        assert_eq!(
            parse_watch_page(r#"{"videoDetails":{"channelId":"../../x"}}"#),
            None
        );
        assert_eq!(parse_watch_page("<html>consent wall</html>"), None);
    }
}
