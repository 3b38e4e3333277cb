//! The policies' state across a shard's hand-over: an engine restored from
//! another's snapshot (through its bytes) and fed the chat before it again
//! with `remember` carries on exactly as the engine that never stopped, on
//! the real #xqcow log with every rule acting: the same records with the
//! same ids, the ladder where it was, the grace windows of earlier nukes,
//! an undo of a nuke made before the hand-over, and a moderator's nuke that
//! reaches back past it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use prost::Message;
use spamscope_act::{Engine, NukeRequest, Output, Policies};
use spamscope_detect::{Detector, ScoreModel};
use spamscope_proto::v1::{ChatEvent, DetectorOutput, PolicySnapshot, chat_event};

const POLICY: &str = r#"
[defaults]
dry_run = false
flagged_users = "auto"
copypasta = "auto"
flood = "auto"
bot_wave = "auto"
link_promo = "auto"
ladder = ["delete", "timeout 60s", "timeout 10m"]
grace = "120s"
lookback = "5m"
"#;

/// The log's events, each with what the detector said of it.
fn log() -> Vec<(ChatEvent, Vec<DetectorOutput>)> {
    let read = spamscope_chat::replay::read_files(&[spamscope_testkit::xqcow()]).unwrap();
    let events = spamscope_chat::replay::merge(read);
    let mut d = Detector::new(Arc::new(ScoreModel::bundled()));
    let mut ignore = Vec::new();
    d.set_default_params(serde_json::json!({}), &mut ignore)
        .unwrap();
    events
        .into_iter()
        .map(|ev| {
            let mut out = Vec::new();
            d.handle(&ev, &mut out);
            (ev, out)
        })
        .collect()
}

/// What a moderator does at an index of the log: a nuke of a text reaching
/// back to a time, an undo of a nuke, and an undo of one action.
type Manual<'a> = Option<(usize, &'a str, i64, u64, u64)>;

/// Feeds `part` of the log, with what a moderator does at `manual`.
fn feed(e: &mut Engine, part: &[(ChatEvent, Vec<DetectorOutput>)], manual: Manual) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, (ev, said)) in part.iter().enumerate() {
        e.on_chat(ev, &mut out);
        for o in said {
            e.on_detector(o, &mut out);
        }
        if let Some((at, text, since_ms, undo, undo_one)) = manual
            && at == i
        {
            let one = e
                .undo_action("twitch.xqcow", undo_one, "bob", ev.ts_ms)
                .unwrap();
            out.push(Output::Record(Box::new(one)));
            let req = NukeRequest {
                stream: "twitch.xqcow".into(),
                text: Some(text.into()),
                since_ms: Some(since_ms),
                by: "alice".into(),
                ..NukeRequest::default()
            };
            let rep = e.nuke(&req, ev.ts_ms, &mut out).unwrap();
            // Its report as an output, to compare.
            out.push(Output::CommandResult(spamscope_act::engine::CommandReply {
                stream: rep.stream.clone(),
                command_id: "manual".into(),
                at_ms: ev.ts_ms,
                error: String::new(),
                nuke: Some(rep),
            }));
            for r in e.undo(undo, "alice", ev.ts_ms).unwrap() {
                out.push(Output::Record(Box::new(r)));
            }
        }
    }
    out
}

#[test]
fn a_restored_engine_carries_on_as_the_one_that_never_stopped() {
    let log = log();
    let cut = log.len() / 2;
    let (before, after) = log.split_at(cut);
    let policies = Policies::from_toml(POLICY).unwrap();

    // Before the hand-over: what the first owner did.
    let mut first = Engine::new(policies.clone());
    let done = feed(&mut first, before, None);
    let nuke_before = done
        .iter()
        .find_map(|o| match o {
            Output::Record(r) if r.nuke.is_some() && r.action.kind.undoable() => r.nuke,
            _ => None,
        })
        .expect("a nuke acted before the hand-over");
    // A text said before the hand-over (and only then) for the
    // moderator's nuke after it, reaching back to the log's start.
    let said_before = |ev: &ChatEvent| match &ev.kind {
        Some(chat_event::Kind::Message(m)) if m.text.split_whitespace().count() >= 4 => {
            Some(m.text.clone())
        }
        _ => None,
    };
    let text = before
        .iter()
        .rev()
        .find_map(|(ev, _)| said_before(ev))
        .unwrap();
    // One timeout or ban from before the hand-over (the last: the nuke's
    // undo still has others to lift).
    let one_before = done
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Record(r) if r.action.kind.undoable() && r.status.name() == "pending" => {
                Some(r.id)
            }
            _ => None,
        })
        .expect("a timeout or ban before the hand-over");
    let manual = Some((10, text.as_str(), log[0].0.ts_ms, nuke_before, one_before));

    // The engine that never stopped.
    let mut never = Engine::new(policies.clone());
    feed(&mut never, before, None);
    let want = feed(&mut never, after, manual);

    // The new owner: the snapshot through its bytes, then the chat before.
    let bytes = first.snapshot().encode_to_vec();
    let mut next = Engine::new(policies.clone());
    next.restore(&PolicySnapshot::decode(bytes.as_slice()).unwrap())
        .unwrap();
    for (ev, _) in before {
        next.remember(ev);
    }
    let got = feed(&mut next, after, manual);
    assert!(
        want.len() > 10,
        "{} outputs after the hand-over",
        want.len()
    );
    assert_eq!(got, want);

    // What was carried: the undo lifted the earlier nuke's actions, and
    // the moderator's nuke reached messages from before the hand-over.
    let undone = got
        .iter()
        .filter(
            |o| matches!(o, Output::Record(r) if r.undoes.is_some() && r.nuke == Some(nuke_before)),
        )
        .count();
    assert!(undone > 0, "the undo of nuke {nuke_before} lifted nothing");
    let cut_ms = after[0].0.ts_ms;
    let reached = |out: &[Output]| {
        out.iter()
            .find_map(|o| match o {
                Output::CommandResult(c) => c.nuke.as_ref().map(|n| n.users),
                _ => None,
            })
            .unwrap()
    };
    assert!(reached(&got) > 0, "the moderator's nuke reached nobody");
    // Without the chat before the hand-over it reaches nobody: the recent
    // messages are what `remember` gave back.
    let mut forgetful = Engine::new(policies.clone());
    forgetful
        .restore(&PolicySnapshot::decode(bytes.as_slice()).unwrap())
        .unwrap();
    let without = feed(&mut forgetful, after, manual);
    assert!(
        reached(&without) < reached(&got),
        "the nuke reached {} users without the earlier chat, {} with it",
        reached(&without),
        reached(&got)
    );

    // And the state mattered: an engine starting afresh does otherwise
    // (the undo of a nuke it never saw is refused).
    let mut afresh = Engine::new(policies);
    let mut out = Vec::new();
    for (ev, said) in after.iter().take(5) {
        afresh.on_chat(ev, &mut out);
        for o in said {
            afresh.on_detector(o, &mut out);
        }
    }
    assert!(afresh.undo(nuke_before, "alice", cut_ms).is_err());

    // A snapshot of another version is refused and changes nothing.
    let mut other = first.snapshot();
    other.version += 1;
    let mut e = Engine::new(Policies::default());
    assert!(e.restore(&other).unwrap_err().contains("version"));
    assert!(e.undo(nuke_before, "alice", cut_ms).is_err());
}
