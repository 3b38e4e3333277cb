//! The engine on hand-built chat: who a nuke reaches and spares, the grace
//! window, undo, the ladder, and what each policy mode does with detector
//! outputs.

#![allow(clippy::unwrap_used)]

use spamscope_act::{ActionKind, Engine, NukeRequest, Output, Policies, Record, Status};
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, Decision, DetectorOutput, Platform, Roles, SpamEvent,
    SpamEventClass, Trigger, chat_event, detector_output,
};

const PASTA: &str =
    "THIS STREAM IS SPONSORED BY RAID SHADOW LEGENDS the best free mobile game of the year";
const T0: i64 = 1_700_000_000_000;

fn msg(id: &str, login: &str, text: &str, ts: i64, roles: Roles) -> ChatEvent {
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: "chan".into(),
        channel_id: "1001".into(),
        event_id: id.into(),
        ts_ms: ts,
        kind: Some(chat_event::Kind::Message(ChatMessage {
            author: Some(Author {
                user_id: format!("id-{login}"),
                login: login.into(),
                display_name: login.into(),
                roles: Some(roles),
            }),
            text: text.into(),
            ..ChatMessage::default()
        })),
    }
}

fn plain() -> Roles {
    Roles::default()
}

fn records(out: &[Output]) -> Vec<&Record> {
    out.iter()
        .filter_map(|o| match o {
            Output::Record(r) => Some(&**r),
            _ => None,
        })
        .collect()
}

fn users_with(out: &[Output], status: &str) -> Vec<String> {
    let mut u: Vec<String> = records(out)
        .iter()
        .filter(|r| r.status.name() == status)
        .map(|r| r.action.target.user_login.clone())
        .collect();
    u.sort();
    u.dedup();
    u
}

fn policies(text: &str) -> Policies {
    Policies::from_toml(text).unwrap()
}

#[test]
fn a_nuke_reaches_every_sender_spares_the_protected_keeps_its_grace_and_undoes() {
    let p = policies(
        r#"
        [channels."twitch.chan"]
        dry_run = false
        ladder = ["timeout 10m"]
        allow = ["friend"]
        "#,
    );
    let mut e = Engine::new(p);
    let mut out = Vec::new();
    let mut n = 0;
    let mut send =
        |e: &mut Engine, login: &str, text: &str, ts: i64, roles: Roles, out: &mut Vec<Output>| {
            n += 1;
            e.on_chat(&msg(&format!("m{n}"), login, text, ts, roles), out);
        };
    for (i, u) in ["spam1", "spam2", "spam3", "spam4", "spam5"]
        .iter()
        .enumerate()
    {
        // Edited copies count too: case, spacing and one changed word.
        let text = match i {
            0 => PASTA.to_owned(),
            1 => PASTA.to_lowercase(),
            2 => PASTA.replace("mobile", "phone"),
            _ => format!("{PASTA} !!!"),
        };
        send(&mut e, u, &text, T0 + i as i64 * 1000, plain(), &mut out);
    }
    send(
        &mut e,
        "modguy",
        PASTA,
        T0 + 6000,
        Roles {
            moderator: true,
            ..plain()
        },
        &mut out,
    );
    // The broadcaster, known by the channel's login even without badges
    // (logs reconstructed without tags have none).
    send(&mut e, "chan", PASTA, T0 + 7000, plain(), &mut out);
    send(&mut e, "friend", PASTA, T0 + 8000, plain(), &mut out);
    send(
        &mut e,
        "vipguy",
        PASTA,
        T0 + 9000,
        Roles {
            vip: true,
            ..plain()
        },
        &mut out,
    );
    send(
        &mut e,
        "bystander",
        "what a play that was insane",
        T0 + 9500,
        plain(),
        &mut out,
    );
    assert!(out.is_empty(), "chat alone does nothing: {out:?}");

    let now = T0 + 10_000;
    let report = e
        .nuke(
            &NukeRequest {
                stream: "twitch.chan".into(),
                text: Some(PASTA.into()),
                by: "alice".into(),
                ..NukeRequest::default()
            },
            now,
            &mut out,
        )
        .unwrap();
    assert_eq!(report.users, 9, "{report:?}");
    assert_eq!(report.protected, 4);
    assert!(!report.dry_run);
    assert_eq!(
        users_with(&out, "pending"),
        ["spam1", "spam2", "spam3", "spam4", "spam5"]
    );
    assert_eq!(
        users_with(&out, "protected"),
        ["chan", "friend", "modguy", "vipguy"]
    );
    for r in records(&out) {
        if r.status == Status::Pending {
            assert_eq!(r.action.kind, ActionKind::Timeout { seconds: 600 });
            assert_eq!(r.action.target.channel_id, "1001");
            assert!(r.by.contains("alice"), "{}", r.by);
        }
    }
    let nuke = report.nuke;
    out.clear();

    // During the grace window: a new sender is timed out, a repeat sender
    // loses the copy, other chat is left alone.
    send(
        &mut e,
        "spam6",
        &PASTA.to_uppercase(),
        now + 30_000,
        plain(),
        &mut out,
    );
    send(&mut e, "spam1", PASTA, now + 31_000, plain(), &mut out);
    send(&mut e, "bystander", "lol", now + 32_000, plain(), &mut out);
    let grace: Vec<(String, ActionKind)> = records(&out)
        .iter()
        .map(|r| (r.action.target.user_login.clone(), r.action.kind))
        .collect();
    assert_eq!(
        grace,
        [
            ("spam6".to_owned(), ActionKind::Timeout { seconds: 600 }),
            ("spam1".to_owned(), ActionKind::Delete),
        ]
    );
    out.clear();
    // After it: nothing.
    send(&mut e, "spam7", PASTA, now + 61_000, plain(), &mut out);
    assert!(out.is_empty(), "{out:?}");

    // Undo lifts the six timeouts, not the deletion.
    let undo = e.undo(nuke, "bob", now + 70_000).unwrap();
    let mut lifted: Vec<&str> = undo
        .iter()
        .map(|r| {
            assert_eq!(r.action.kind, ActionKind::Unban);
            assert_eq!(r.status, Status::Pending);
            assert!(r.undoes.is_some());
            r.action.target.user_login.as_str()
        })
        .collect();
    lifted.sort();
    assert_eq!(
        lifted,
        ["spam1", "spam2", "spam3", "spam4", "spam5", "spam6"]
    );
    assert!(e.undo(nuke, "bob", now + 71_000).is_err(), "undone twice");
    assert!(e.undo(999, "bob", now).is_err());
}

#[test]
fn the_ladder_climbs_with_each_action_and_forgets_after_the_strike_memory() {
    let p = policies("[defaults]\nstrike_memory = \"1h\"\n");
    let mut e = Engine::new(p);
    let mut out = Vec::new();
    let mut steps = Vec::new();
    // Rounds further apart than the grace window (60 s).
    for (round, at) in [0, 120_000, 240_000, 360_000, 360_000 + 2 * 3_600_000]
        .into_iter()
        .enumerate()
    {
        let ts = T0 + at;
        e.on_chat(
            &msg(&format!("r{round}"), "pest", PASTA, ts, plain()),
            &mut out,
        );
        out.clear();
        e.nuke(
            &NukeRequest {
                stream: "twitch.chan".into(),
                text: Some(PASTA.into()),
                since_ms: Some(ts),
                by: "alice".into(),
                ..NukeRequest::default()
            },
            ts + 1,
            &mut out,
        )
        .unwrap();
        let r = records(&out);
        assert_eq!(r.len(), 1, "{out:?}");
        assert_eq!(r[0].status, Status::DryRun, "dry-run is the default");
        steps.push(r[0].action.kind);
        if r[0].action.kind == ActionKind::Delete {
            assert_eq!(r[0].action.target.message_id, format!("r{round}"));
        }
        out.clear();
    }
    assert_eq!(
        steps,
        [
            ActionKind::Delete,
            ActionKind::Timeout { seconds: 60 },
            ActionKind::Timeout { seconds: 600 },
            ActionKind::Timeout { seconds: 600 },
            ActionKind::Delete,
        ]
    );
}

fn event(id: u64, class: SpamEventClass, users: u64, ts: i64) -> DetectorOutput {
    DetectorOutput {
        kind: Some(detector_output::Kind::SpamEvent(SpamEvent {
            platform: Platform::Twitch as i32,
            stream_id: "chan".into(),
            event_id: id,
            text: PASTA.into(),
            count: users,
            unique_users: users,
            first_seen_ms: T0,
            last_seen_ms: ts,
            class: class as i32,
            spam: !matches!(class, SpamEventClass::CrowdReaction),
            ..SpamEvent::default()
        })),
    }
}

#[test]
fn policy_modes_decide_between_nothing_a_suggestion_and_an_action() {
    let p = policies(
        r#"
        [defaults]
        bot_wave = "auto"
        copypasta = "suggest"
        min_event_users = 3
        [channels."twitch.chan"]
        flagged_users = "suggest"
        "#,
    );
    let mut e = Engine::new(p);
    let mut out = Vec::new();
    for i in 0..4 {
        e.on_chat(
            &msg(
                &format!("m{i}"),
                &format!("bot{i}"),
                PASTA,
                T0 + i * 100,
                plain(),
            ),
            &mut out,
        );
    }
    // Too few users yet; then a crowd reaction: nothing.
    e.on_detector(&event(1, SpamEventClass::BotWave, 2, T0 + 400), &mut out);
    e.on_detector(
        &event(2, SpamEventClass::CrowdReaction, 40, T0 + 400),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    // A bot wave with enough users: nuked at once, in dry-run.
    e.on_detector(&event(1, SpamEventClass::BotWave, 4, T0 + 500), &mut out);
    assert_eq!(
        users_with(&out, "dry_run"),
        ["bot0", "bot1", "bot2", "bot3"]
    );
    assert!(
        records(&out)
            .iter()
            .all(|r| r.by.contains("policy:bot_wave"))
    );
    let n = out.len();
    // Its next update does not nuke again.
    e.on_detector(&event(1, SpamEventClass::BotWave, 5, T0 + 600), &mut out);
    assert_eq!(out.len(), n);
    out.clear();

    // A copypasta is offered once.
    e.on_detector(&event(3, SpamEventClass::Copypasta, 4, T0 + 700), &mut out);
    e.on_detector(&event(3, SpamEventClass::Copypasta, 6, T0 + 800), &mut out);
    let offered: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::NukeSuggested(s) => Some(s.event_id),
            _ => None,
        })
        .collect();
    assert_eq!(offered, [3]);
    out.clear();

    // A flagged user is suggested, with the evidence; accepting it acts.
    e.on_chat(
        &msg(
            "x1",
            "sus",
            "buy followers at example dot com",
            T0 + 900,
            plain(),
        ),
        &mut out,
    );
    let flag = DetectorOutput {
        kind: Some(detector_output::Kind::Decision(Decision {
            platform: Platform::Twitch as i32,
            stream_id: "chan".into(),
            user_id: "id-sus".into(),
            user_login: "sus".into(),
            at_ms: T0 + 900,
            triggers: vec![Trigger {
                name: "self_promotion".into(),
                detail: "example.com".into(),
                ..Trigger::default()
            }],
            suspicion: 1.2,
            flag_threshold: 1.0,
            ..Decision::default()
        })),
    };
    e.on_detector(&flag, &mut out);
    e.on_detector(&flag, &mut out);
    let r = records(&out);
    assert_eq!(r.len(), 1, "suggested once: {out:?}");
    assert_eq!(r[0].status, Status::Suggested);
    assert_eq!(r[0].action.kind, ActionKind::Delete);
    assert_eq!(r[0].action.target.message_id, "x1");
    assert!(
        r[0].evidence.contains("self_promotion (example.com)"),
        "{}",
        r[0].evidence
    );
    let accepted = e.accept(r[0].id, "carol", T0 + 1000).unwrap();
    assert_eq!(accepted.status, Status::DryRun);
    assert!(accepted.by.contains("accepted by carol"));
    assert!(
        e.accept(r[0].id, "carol", T0 + 1000).is_err(),
        "accepted once"
    );
    // Flagged again later (the detector forgot them, then saw more): a
    // new suggestion, one rung up the ladder (the accepted delete counts).
    out.clear();
    let mut again = flag.clone();
    if let Some(detector_output::Kind::Decision(d)) = &mut again.kind {
        d.at_ms = T0 + 600_000;
    }
    e.on_detector(&again, &mut out);
    e.on_detector(&again, &mut out);
    let r = records(&out);
    assert_eq!(r.len(), 1, "the new flag suggested once: {out:?}");
    assert_eq!(r[0].action.kind, ActionKind::Timeout { seconds: 60 });
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let mut e = Engine::new(Policies::default());
    let mut out = Vec::new();
    let ask = |stream: &str, event: Option<u64>, text: Option<&str>| NukeRequest {
        stream: stream.into(),
        event_id: event,
        text: text.map(str::to_owned),
        by: "alice".into(),
        ..NukeRequest::default()
    };
    assert!(
        e.nuke(&ask("chan", None, Some("x")), T0, &mut out)
            .unwrap_err()
            .to_string()
            .contains("stream")
    );
    assert!(
        e.nuke(&ask("twitch.nobody", None, Some("x")), T0, &mut out)
            .unwrap_err()
            .to_string()
            .contains("no recent chat")
    );
    e.on_chat(&msg("m", "u", "hello", T0, plain()), &mut out);
    assert!(
        e.nuke(&ask("twitch.chan", Some(7), None), T0, &mut out)
            .unwrap_err()
            .to_string()
            .contains("no spam event 7")
    );
    assert!(
        e.nuke(&ask("twitch.chan", None, None), T0, &mut out)
            .unwrap_err()
            .to_string()
            .contains("either")
    );
    let mut long = ask("twitch.chan", None, Some("hello"));
    long.grace = Some(std::time::Duration::from_secs(7200));
    assert!(
        e.nuke(&long, T0, &mut out)
            .unwrap_err()
            .to_string()
            .contains("grace")
    );
    assert!(out.is_empty());
}

#[test]
fn a_user_the_moderators_already_hold_is_left_to_them_and_counted() {
    let p = policies("[defaults]\nladder = [\"timeout 60s\"]\n");
    let mut e = Engine::new(p);
    let mut out = Vec::new();
    for (i, u) in ["held", "banned", "free"].iter().enumerate() {
        e.on_chat(
            &msg(&format!("m{i}"), u, PASTA, T0 + i as i64, plain()),
            &mut out,
        );
    }
    let action = |kind| ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: "chan".into(),
        ts_ms: T0 + 10,
        kind: Some(kind),
        ..ChatEvent::default()
    };
    e.on_chat(
        &action(chat_event::Kind::UserTimedOut(
            spamscope_proto::v1::UserTimedOut {
                user_id: "id-held".into(),
                user_login: "held".into(),
                duration_s: 600,
            },
        )),
        &mut out,
    );
    e.on_chat(
        &action(chat_event::Kind::UserBanned(
            spamscope_proto::v1::UserBanned {
                user_id: "id-banned".into(),
                user_login: "banned".into(),
            },
        )),
        &mut out,
    );
    let kinds: Vec<&str> = out
        .iter()
        .map(|o| match o {
            Output::Moderator(m) => m.action,
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["timeout", "ban"],
        "moderators' actions are reported"
    );
    out.clear();
    let nuke = |e: &mut Engine, at: i64, out: &mut Vec<Output>| {
        e.nuke(
            &NukeRequest {
                stream: "twitch.chan".into(),
                text: Some(PASTA.into()),
                since_ms: Some(T0),
                by: "alice".into(),
                ..NukeRequest::default()
            },
            at,
            out,
        )
        .unwrap()
    };
    nuke(&mut e, T0 + 20, &mut out);
    assert_eq!(users_with(&out, "dry_run"), ["free"]);
    assert_eq!(e.counts().left_to_moderators, 2);
    // Once the moderator's timeout has run out, spamscope may act again.
    out.clear();
    nuke(&mut e, T0 + 700_000, &mut out);
    assert_eq!(users_with(&out, "dry_run"), ["free", "held"]);
}

#[test]
fn a_nuke_reaches_messages_stamped_after_it_by_a_faster_clock() {
    // The platform stamps chat, the gateway stamps the command: a message
    // handled before the nuke can carry a later time (found wiring the
    // gateway: a nuke 300 ms "before" the copies reached one of five).
    let mut e = Engine::new(Policies::default());
    let mut out = Vec::new();
    for i in 0..3 {
        e.on_chat(
            &msg(
                &format!("m{i}"),
                &format!("u{i}"),
                PASTA,
                T0 + 500 + i,
                plain(),
            ),
            &mut out,
        );
    }
    let r = e
        .nuke(
            &NukeRequest {
                stream: "twitch.chan".into(),
                text: Some(PASTA.into()),
                by: "alice".into(),
                ..NukeRequest::default()
            },
            T0,
            &mut out,
        )
        .unwrap();
    assert_eq!((r.users, r.messages), (3, 3), "{r:?}");
}

#[test]
fn a_command_on_a_replayed_archive_runs_on_the_archive_clock() {
    use spamscope_proto::v1::{ModeratorCommand, NukeCommand, moderator_command::Op};
    // Chat from years back (a replay), a command stamped today by the
    // gateway: the nuke still reaches the copies and keeps its grace on
    // the archive's clock (found in the browser test: it reached nobody).
    let mut e = Engine::new(Policies::default());
    let mut out = Vec::new();
    for i in 0..3 {
        e.on_chat(
            &msg(&format!("m{i}"), &format!("u{i}"), PASTA, T0 + i, plain()),
            &mut out,
        );
    }
    let today = T0 + 5 * 365 * 86_400_000;
    let cmd = ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: "chan".into(),
        event_id: "cmd-1".into(),
        ts_ms: today,
        kind: Some(chat_event::Kind::Command(ModeratorCommand {
            by: "alice".into(),
            op: Some(Op::Nuke(NukeCommand {
                text: PASTA.into(),
                ..NukeCommand::default()
            })),
        })),
        ..ChatEvent::default()
    };
    e.on_chat(&cmd, &mut out);
    let reply = out
        .iter()
        .find_map(|o| match o {
            Output::CommandResult(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reply.error.is_empty(), "{reply:?}");
    let nuke = reply.nuke.unwrap();
    assert_eq!(nuke.users, 3);
    assert_eq!(
        nuke.until_ms,
        T0 + 2 + 60_000,
        "grace on the archive's clock"
    );
    out.clear();
    e.on_chat(&msg("late", "u9", PASTA, T0 + 30_000, plain()), &mut out);
    assert_eq!(users_with(&out, "dry_run"), ["u9"]);
}

/// The moderators' own actions on the real #xqcow log come out as records
/// of the audit trail (status done, by the moderator), one per timeout or
/// ban in the raw log, counted from its CLEARCHAT lines; Twitch's repeats
/// (the same user timed out again for as long within two seconds, as two
/// moderators or a moderator and a bot do) are one; spamscope's own
/// actions are never mistaken for them.
#[test]
fn the_moderators_actions_are_records_of_the_trail() {
    let path = spamscope_testkit::xqcow();
    let raw = std::fs::read_to_string(&path).unwrap();
    let tag = |l: &str, k: &str| {
        l.split(';')
            .find_map(|kv| kv.trim_start_matches('@').strip_prefix(&format!("{k}=")))
            .map(|v| v.split(' ').next().unwrap_or(v).to_owned())
    };
    let mut last: std::collections::HashMap<String, (i64, Option<String>)> = Default::default();
    let mut cleared = 0;
    let mut repeats = 0;
    for l in raw
        .lines()
        .filter(|l| l.contains(" CLEARCHAT #") && l.contains("target-user-id="))
    {
        let who = l.rsplit_once(" :").unwrap().1.trim().to_lowercase();
        let ts: i64 = tag(l, "tmi-sent-ts").unwrap().parse().unwrap();
        let dur = tag(l, "ban-duration");
        match last.insert(who, (ts, dur.clone())) {
            Some((before, d)) if ts - before <= 2_000 && d == dur => repeats += 1,
            _ => cleared += 1,
        }
    }
    assert!(repeats > 0, "the log has Twitch's repeats");
    let deleted = raw.lines().filter(|l| l.contains(" CLEARMSG #")).count();
    let events =
        spamscope_chat::replay::merge(spamscope_chat::replay::read_files(&[path]).unwrap());
    let mut e = Engine::new(policies("[defaults]\nflagged_users = \"off\"\n"));
    let mut out = Vec::new();
    for ev in &events {
        e.on_chat(ev, &mut out);
    }
    let records: Vec<spamscope_proto::v1::ActionRecord> = out
        .iter()
        .filter_map(spamscope_act::engine::to_detector_output)
        .filter_map(|o| match o.kind {
            Some(detector_output::Kind::Action(a)) => Some(a),
            _ => None,
        })
        .collect();
    let by_moderators = records.iter().filter(|a| a.by == "moderator").count();
    assert_eq!(by_moderators, cleared + deleted);
    assert!(cleared > 10, "{cleared} timeouts and bans in the log");
    assert!(records.iter().all(|a| a.by == "moderator"
        && a.status == "done"
        && a.record_id > 0
        && a.stream_id == "xqcow"
        && !a.user_login.is_empty()));
    let mut ids: Vec<u64> = records.iter().map(|a| a.record_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), records.len(), "one record id each");
}

/// A moderator lifts one timeout spamscope made: one unban, by them, that
/// names the record it takes back; the nuke's undo then leaves that user
/// alone; nothing else is undone one by one (an unknown record, another
/// stream's, a deletion, the same record twice).
#[test]
fn one_timeout_is_undone_on_its_own() {
    let p = policies("[channels.\"twitch.chan\"]\ndry_run = false\nladder = [\"timeout 10m\"]\n");
    let mut e = Engine::new(p);
    let mut out = Vec::new();
    for (i, u) in ["spam1", "spam2", "spam3"].iter().enumerate() {
        e.on_chat(
            &msg(&format!("m{i}"), u, PASTA, T0 + i as i64 * 1000, plain()),
            &mut out,
        );
    }
    let req = NukeRequest {
        stream: "twitch.chan".into(),
        text: Some(PASTA.into()),
        by: "alice".into(),
        ..NukeRequest::default()
    };
    let report = e.nuke(&req, T0 + 5_000, &mut out).unwrap();
    let timeouts: Vec<Record> = records(&out).into_iter().cloned().collect();
    assert_eq!(timeouts.len(), 3, "{timeouts:?}");
    let first = &timeouts[0];

    let lifted = e
        .undo_action("twitch.chan", first.id, "bob", T0 + 6_000)
        .unwrap();
    assert_eq!(lifted.action.kind, ActionKind::Unban);
    assert_eq!(lifted.undoes, Some(first.id));
    assert_eq!(lifted.status, Status::Pending);
    assert_eq!(
        lifted.action.target.user_login,
        first.action.target.user_login
    );
    assert!(lifted.by.contains("bob"), "{}", lifted.by);
    assert!(lifted.id > report.nuke);
    // Not twice, not from another stream, not a record that is no action.
    assert!(
        e.undo_action("twitch.chan", first.id, "bob", T0 + 6_500)
            .is_err()
    );
    assert!(
        e.undo_action("twitch.other", timeouts[1].id, "bob", T0 + 6_500)
            .is_err()
    );
    assert!(
        e.undo_action("twitch.chan", 999_999, "bob", T0 + 6_500)
            .is_err()
    );
    // The nuke's undo lifts the other two only.
    let rest = e.undo(report.nuke, "alice", T0 + 7_000).unwrap();
    let mut users: Vec<&str> = rest
        .iter()
        .map(|r| r.action.target.user_login.as_str())
        .collect();
    users.sort();
    let mut others: Vec<&str> = timeouts[1..]
        .iter()
        .map(|r| r.action.target.user_login.as_str())
        .collect();
    others.sort();
    assert_eq!(users, others);
}
