//! Acting on spam through the gateway: who may, and carrying a command to
//! the stream's detector replica.
//!
//! A command (nuke, undo, accept) needs the admin token or a moderator
//! token of the channel. Moderator tokens come from a file
//! (`--moderator-tokens-file`), one table per moderator:
//!
//! ```toml
//! [alice]
//! token = "a long random secret"
//! channels = ["twitch.xqcow", "youtube.jfKfPfyJRdk"]
//! ```
//!
//! The command goes into the stream's chat as a `ModeratorCommand` event,
//! so the replica that owns the stream carries it out in order with the
//! chat; the gateway waits for the replica's `CommandResult` on the
//! stream's output subject.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use spamscope_bus::subjects;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{
    ChatEvent, CommandResult, DetectorOutput, ModeratorCommand, detector_output,
    moderator_command::Op,
};
use spamscope_runtime::now_ms;
use tonic::Request;

use crate::{Gateway, GatewayError, same_secret};

/// How long the gateway waits for a replica to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest text a nuke takes.
pub const MAX_NUKE_TEXT_CHARS: usize = 2000;
/// Longest grace window a nuke asks for.
pub const MAX_GRACE_S: u32 = 3600;

/// One moderator's token and the channels it acts on.
#[derive(Clone)]
pub struct ModeratorToken {
    pub name: String,
    token: String,
    /// Stream keys (`twitch.xqcow`).
    pub channels: BTreeSet<String>,
}

impl std::fmt::Debug for ModeratorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModeratorToken")
            .field("name", &self.name)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    token: String,
    channels: Vec<String>,
}

/// Parses a moderator tokens file. Errors name the moderator and the key,
/// never a token.
pub fn parse_moderator_tokens(text: &str) -> Result<Vec<ModeratorToken>, String> {
    let table: std::collections::BTreeMap<String, Entry> = toml::from_str(text).map_err(|e| {
        // toml's message quotes the line, which may hold a token: only
        // where it is and what was wrong.
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].lines().count().max(1);
                format!(" (line {line})")
            })
            .unwrap_or_default();
        format!("not a moderator tokens file{at}: {}", e.message())
    })?;
    let mut out: Vec<ModeratorToken> = Vec::new();
    for (name, e) in table {
        let token = e.token.trim().to_owned();
        if token.chars().count() < 16 {
            return Err(format!("{name}.token: at least 16 characters"));
        }
        if out
            .iter()
            .any(|o| same_secret(o.token.as_bytes(), token.as_bytes()))
        {
            return Err(format!(
                "{name}.token: the same token as another moderator's"
            ));
        }
        if e.channels.is_empty() {
            return Err(format!("{name}.channels: name at least one channel"));
        }
        let mut channels = BTreeSet::new();
        for c in &e.channels {
            let key = StreamKey::parse(c).map_err(|err| format!("{name}.channels: {err}"))?;
            channels.insert(key.to_string());
        }
        out.push(ModeratorToken {
            name,
            token,
            channels,
        });
    }
    Ok(out)
}

impl Gateway {
    /// Who asks to act on `stream`: `admin`, or the moderator whose token
    /// it is, if it names the channel.
    pub(crate) fn authorize_channel<T>(
        &self,
        req: &Request<T>,
        stream: &str,
    ) -> Result<String, GatewayError> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                GatewayError::Unauthenticated(
                    "acting on a channel needs `authorization: Bearer <token>` (the admin token or a moderator token of the channel)".into(),
                )
            })?;
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| same_secret(given.as_bytes(), t.as_bytes()))
        {
            return Ok("admin".into());
        }
        // Every token compared, whatever matches.
        let matched: Vec<&ModeratorToken> = self
            .moderators
            .iter()
            .filter(|m| same_secret(given.as_bytes(), m.token.as_bytes()))
            .collect();
        match matched.first() {
            Some(m) if m.channels.contains(stream) => Ok(m.name.clone()),
            Some(m) => Err(GatewayError::PermissionDenied(format!(
                "{} is not a moderator of {stream}",
                m.name
            ))),
            None => Err(GatewayError::PermissionDenied(
                "the token is neither the admin token nor a moderator's".into(),
            )),
        }
    }

    /// Sends `op` by `by` into `key`'s chat and waits for its replica's
    /// answer.
    /// A command that names one nuke or record (`id`, the request's field
    /// `named.0`, which is `named.1`): the stream and the id checked, the
    /// caller authorized, then carried out as [`Gateway::command`].
    pub(crate) async fn command_on<T>(
        &self,
        req: &Request<T>,
        stream: &str,
        id: u64,
        named: (&str, &str),
        op: impl FnOnce(u64) -> Op,
    ) -> Result<CommandResult, GatewayError> {
        let key =
            StreamKey::parse(stream).map_err(|e| GatewayError::Invalid(format!("stream: {e}")))?;
        if id == 0 {
            return Err(GatewayError::Invalid(format!(
                "{}: name {}",
                named.0, named.1
            )));
        }
        let by = self.authorize_channel(req, &key.to_string())?;
        self.command(&key, by, op(id)).await
    }

    pub(crate) async fn command(
        &self,
        key: &StreamKey,
        by: String,
        op: Op,
    ) -> Result<CommandResult, GatewayError> {
        let shard = spamscope_routing::shard_of(&key.to_string(), self.shards);
        let platform = key.platform.key();
        let id = command_id();
        let ev = ChatEvent {
            platform: key.platform as i32,
            stream_id: key.id.clone(),
            event_id: id.clone(),
            ts_ms: now_ms(),
            kind: Some(spamscope_proto::v1::chat_event::Kind::Command(
                ModeratorCommand { by, op: Some(op) },
            )),
            ..ChatEvent::default()
        };
        // Listen before sending: the answer can come at once.
        let mut answers = self
            .bus
            .client
            .subscribe(subjects::spam_stream(platform, &key.id))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        self.bus
            .publish(
                subjects::chat(shard, platform, &key.id),
                &format!("{key}/{id}"),
                async_nats::HeaderMap::new(),
                Bytes::from(ev.encode_to_vec()),
            )
            .await
            .map_err(|e| GatewayError::Unavailable(format!("cannot send the command: {e}")))?;
        let wait = async {
            while let Some(m) = answers.next().await {
                if let Ok(DetectorOutput {
                    kind: Some(detector_output::Kind::CommandResult(r)),
                }) = DetectorOutput::decode(m.payload)
                    && r.command_id == id
                {
                    return Some(r);
                }
            }
            None
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, wait).await {
            Ok(Some(r)) => Ok(r),
            _ => Err(GatewayError::Unavailable(format!(
                "no detector answered within {} s: is one running with --policy?",
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A command id no other gateway or command shares.
fn command_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_i64(now_ms());
    format!("cmd-{}-{:016x}", now_ms(), h.finish())
}

/// Checks a nuke request; the stream key it names.
pub(crate) fn check_nuke(
    r: &spamscope_proto::v1::NukeRequest,
) -> Result<(StreamKey, Op), GatewayError> {
    let key =
        StreamKey::parse(&r.stream).map_err(|e| GatewayError::Invalid(format!("stream: {e}")))?;
    let text = r.text.trim();
    match (r.spam_event_id, text.is_empty()) {
        (0, true) => {
            return Err(GatewayError::Invalid(
                "name the spam event (spam_event_id) or the text to nuke".into(),
            ));
        }
        (id, false) if id != 0 => {
            return Err(GatewayError::Invalid(
                "name the spam event or the text to nuke, not both".into(),
            ));
        }
        _ => {}
    }
    if text.chars().count() > MAX_NUKE_TEXT_CHARS {
        return Err(GatewayError::Invalid(format!(
            "text: at most {MAX_NUKE_TEXT_CHARS} characters"
        )));
    }
    if r.grace_s > MAX_GRACE_S {
        return Err(GatewayError::Invalid(format!(
            "grace_s: at most {MAX_GRACE_S}"
        )));
    }
    if r.since_ms < 0 {
        return Err(GatewayError::Invalid("since_ms: not before 1970".into()));
    }
    Ok((
        key,
        Op::Nuke(spamscope_proto::v1::NukeCommand {
            spam_event_id: r.spam_event_id,
            text: text.to_owned(),
            since_ms: r.since_ms,
            grace_s: r.grace_s,
            dry_run: r.dry_run,
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_file_errors_name_the_key_and_never_the_token() {
        let ok = parse_moderator_tokens(
            "[alice]\ntoken = \"0123456789abcdefX\"\nchannels = [\"twitch.XQCow\"]\n",
        )
        .unwrap();
        assert_eq!(ok[0].channels, BTreeSet::from(["twitch.xqcow".to_owned()]));
        assert!(!format!("{ok:?}").contains("0123456789abcdefX"));
        for (text, says) in [
            (
                "[bob]\ntoken = \"short\"\nchannels = [\"twitch.x\"]",
                "bob.token",
            ),
            (
                "[bob]\ntoken = \"0123456789abcdefY\"\nchannels = []",
                "bob.channels",
            ),
            (
                "[bob]\ntoken = \"0123456789abcdefY\"\nchannels = [\"irc.x\"]",
                "bob.channels",
            ),
            (
                "[a]\ntoken = \"0123456789abcdefY\"\nchannels = [\"twitch.x\"]\n[b]\ntoken = \"0123456789abcdefY\"\nchannels = [\"twitch.y\"]",
                "b.token",
            ),
            (
                "[bob]\ntoken = \"0123456789abcdefSECRET\"\ncolour = 1",
                "line",
            ),
        ] {
            let e = parse_moderator_tokens(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("0123456789abcdef"), "{e}");
        }
    }
}
