//! The Helix and YouTube clients against loopback servers that answer as
//! the platforms do (the test kit's stand-ins): actions done, partial
//! failures reported per user, bad tokens, missing scopes and
//! non-moderators refused, rate limits waited out, and an undo that lifts
//! what a nuke did. Nothing is sent to a real platform.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use spamscope_act::helix::{Helix, HelixConfig};
use spamscope_act::platform::{Moderator, SendError, execute};
use spamscope_act::youtube::{Youtube, YoutubeConfig};
use spamscope_act::{
    Action, ActionKind, Engine, NukeRequest, Output, Policies, Record, Status, Target,
};
use spamscope_proto::v1::{Author, ChatEvent, ChatMessage, Platform, chat_event};
use spamscope_testkit::platforms::{FakeHelix, FakeYoutube};

const TOKEN: &str = "s3cret-user-token";

fn action(kind: ActionKind, platform: Platform, user: &str, message: &str) -> Action {
    Action {
        kind,
        target: Target {
            platform: platform as i32,
            stream_id: if platform == Platform::Twitch {
                "chan".into()
            } else {
                "video1".into()
            },
            channel_id: "1001".into(),
            user_id: format!("id-{user}"),
            user_login: user.into(),
            message_id: message.into(),
        },
        reason: "spamscope: test".into(),
        undo_handle: String::new(),
    }
}

fn pending(id: u64, a: Action) -> Record {
    Record {
        id,
        at_ms: 0,
        stream: "twitch.chan".into(),
        action: a,
        status: Status::Pending,
        by: "test".into(),
        evidence: "test".into(),
        event_id: None,
        nuke: None,
        undoes: None,
    }
}

fn helix(fake: &FakeHelix, token: &str, moderator: &str) -> Helix {
    Helix::new(HelixConfig {
        base_url: fake.url.clone(),
        client_id: "app".into(),
        token: token.into(),
        moderator_id: moderator.into(),
    })
    .unwrap()
}

#[tokio::test]
async fn helix_does_each_action_and_reports_each_refusal_on_its_own() {
    let fake = FakeHelix::start("app", TOKEN, "mod1", "1001", 100).await;
    {
        let mut st = fake.state.lock().unwrap();
        st.messages.insert("msg-1".into());
        st.unbannable.insert("id-staffer".into());
    }
    let h = helix(&fake, TOKEN, "mod1");
    let mut recs = vec![
        pending(
            1,
            action(
                ActionKind::Timeout { seconds: 600 },
                Platform::Twitch,
                "a",
                "",
            ),
        ),
        pending(2, action(ActionKind::Ban, Platform::Twitch, "b", "")),
        pending(
            3,
            action(ActionKind::Delete, Platform::Twitch, "c", "msg-1"),
        ),
        pending(
            4,
            action(ActionKind::Delete, Platform::Twitch, "c", "msg-gone"),
        ),
        pending(5, action(ActionKind::Ban, Platform::Twitch, "staffer", "")),
        pending(6, action(ActionKind::Unban, Platform::Twitch, "a", "")),
        pending(7, action(ActionKind::Unban, Platform::Twitch, "never", "")),
    ];
    execute(&[&h], &mut recs).await;
    let got: Vec<&str> = recs.iter().map(|r| r.status.name()).collect();
    assert_eq!(
        got,
        ["done", "done", "done", "failed", "failed", "done", "failed"],
        "{recs:#?}"
    );
    let reason = |i: usize| match &recs[i].status {
        Status::Failed { reason } => reason.clone(),
        s => panic!("{s:?}"),
    };
    assert!(reason(3).contains("404"), "{}", reason(3));
    assert!(reason(4).contains("may not be banned"), "{}", reason(4));
    assert!(reason(6).contains("is not banned"), "{}", reason(6));
    match &recs[0].status {
        Status::Done { answer } => assert!(answer.contains("timed out until"), "{answer}"),
        s => panic!("{s:?}"),
    }
    // What the server holds now: b banned, a's timeout lifted, msg-1 gone.
    let st = fake.state.lock().unwrap();
    let bans: Vec<(String, bool)> = st
        .bans
        .iter()
        .map(|((_, u), end)| (u.clone(), end.is_none()))
        .collect();
    assert_eq!(bans, [("id-b".to_owned(), true)]);
    assert_eq!(st.deleted, BTreeSet::from(["msg-1".to_owned()]));
    // The requests had the documented shapes.
    let ban = st
        .calls
        .iter()
        .find(|c| c.method == "POST" && c.body["data"]["user_id"] == "id-a")
        .unwrap();
    assert_eq!(ban.body["data"]["duration"], 600);
    assert_eq!(ban.query["broadcaster_id"], "1001");
    assert_eq!(ban.query["moderator_id"], "mod1");
}

#[tokio::test]
async fn helix_refuses_bad_tokens_missing_scopes_and_non_moderators_without_showing_the_token() {
    let fake = FakeHelix::start("app", TOKEN, "mod1", "1001", 100).await;
    fake.state.lock().unwrap().tokens.insert(
        "chat-only".into(),
        BTreeSet::from(["moderator:manage:chat_messages".to_owned()]),
    );
    let ban = action(ActionKind::Ban, Platform::Twitch, "x", "");
    let e = helix(&fake, "wrong-token", "mod1")
        .send(&ban)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    let e = helix(&fake, "chat-only", "mod1")
        .send(&ban)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Missing scope: moderator:manage:banned_users"),
        "{e}"
    );
    let e = helix(&fake, TOKEN, "not-a-mod")
        .send(&ban)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Forbidden(_)), "{e:?}");
    // No channel id: said, nothing sent.
    let mut no_room = ban.clone();
    no_room.target.channel_id.clear();
    let calls = fake.calls().len();
    let e = helix(&fake, TOKEN, "mod1")
        .send(&no_room)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("room-id"), "{e}");
    assert_eq!(fake.calls().len(), calls);
    // Neither errors nor the client's Debug show the token.
    let h = helix(&fake, TOKEN, "mod1");
    assert!(!format!("{h:?}").contains(TOKEN));
    for e in [e, SendError::Unauthorized("x".into())] {
        assert!(!e.to_string().contains(TOKEN));
    }
}

#[tokio::test]
async fn helix_waits_out_its_rate_limit_and_retries_a_429() {
    // Three requests a second: twelve actions need four windows, and the
    // client waits on Ratelimit-Remaining instead of being refused.
    let fake = FakeHelix::start("app", TOKEN, "mod1", "1001", 3).await;
    let h = helix(&fake, TOKEN, "mod1");
    let mut recs: Vec<Record> = (0..12)
        .map(|i| {
            pending(
                i,
                action(
                    ActionKind::Timeout { seconds: 60 },
                    Platform::Twitch,
                    &format!("u{i}"),
                    "",
                ),
            )
        })
        .collect();
    execute(&[&h], &mut recs).await;
    assert!(recs.iter().all(|r| r.status.name() == "done"), "{recs:#?}");
    let calls = fake.calls();
    assert_eq!(
        calls.len(),
        12,
        "no request was refused: {:?}",
        calls.iter().map(|c| c.status).collect::<Vec<_>>()
    );
    // Two 429s, then it goes through.
    fake.state.lock().unwrap().force_429 = 2;
    let a = action(ActionKind::Ban, Platform::Twitch, "late", "");
    h.send(&a).await.unwrap();
    let statuses: Vec<u16> = fake.calls()[12..].iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    // Refused on every try: given up, said so.
    fake.state.lock().unwrap().force_429 = 100;
    let e = h
        .send(&action(ActionKind::Ban, Platform::Twitch, "later", ""))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::RateLimited(5)), "{e:?}");
}

fn yt(fake: &FakeYoutube, token: &str) -> Youtube {
    Youtube::new(YoutubeConfig {
        base_url: fake.url.clone(),
        token: token.into(),
    })
    .unwrap()
}

#[tokio::test]
async fn youtube_bans_times_out_deletes_and_lifts_a_ban_by_its_id() {
    let fake = FakeYoutube::start(TOKEN, "video1", "chat-1").await;
    fake.state.lock().unwrap().messages.insert("yt-msg".into());
    let y = yt(&fake, TOKEN);
    let mut recs = vec![
        pending(
            1,
            action(
                ActionKind::Timeout { seconds: 300 },
                Platform::Youtube,
                "a",
                "",
            ),
        ),
        pending(2, action(ActionKind::Ban, Platform::Youtube, "b", "")),
        pending(
            3,
            action(ActionKind::Delete, Platform::Youtube, "c", "yt-msg"),
        ),
        pending(
            4,
            action(ActionKind::Delete, Platform::Youtube, "c", "yt-gone"),
        ),
        pending(5, action(ActionKind::Unban, Platform::Youtube, "d", "")),
    ];
    execute(&[&y], &mut recs).await;
    let got: Vec<&str> = recs.iter().map(|r| r.status.name()).collect();
    assert_eq!(
        got,
        ["done", "done", "done", "failed", "failed"],
        "{recs:#?}"
    );
    assert!(
        matches!(&recs[4].status, Status::Failed { reason } if reason.contains("id is not known"))
    );
    {
        let st = fake.state.lock().unwrap();
        let bans: Vec<(String, String, Option<u64>)> = st
            .bans
            .values()
            .map(|(chat, ch, kind, secs)| {
                assert_eq!(chat, "chat-1");
                (ch.clone(), kind.clone(), *secs)
            })
            .collect();
        assert_eq!(
            bans,
            [
                ("id-a".to_owned(), "temporary".to_owned(), Some(300)),
                ("id-b".to_owned(), "permanent".to_owned(), None)
            ]
        );
        // The live chat id was asked once.
        assert_eq!(st.calls.iter().filter(|c| c.path == "videos").count(), 1);
    }
    // Lifting by the id the ban answered with.
    let mut lift = action(ActionKind::Unban, Platform::Youtube, "a", "");
    lift.undo_handle = recs[0].action.undo_handle.clone();
    assert!(!lift.undo_handle.is_empty());
    y.send(&lift).await.unwrap();
    assert_eq!(fake.state.lock().unwrap().bans.len(), 1);
}

#[tokio::test]
async fn youtube_retries_rate_limits_and_refuses_bad_credentials() {
    let fake = FakeYoutube::start(TOKEN, "video1", "chat-1").await;
    let y = yt(&fake, TOKEN);
    {
        let mut st = fake.state.lock().unwrap();
        st.force_429 = 1;
        st.force_403_rate = 1;
    }
    y.send(&action(ActionKind::Ban, Platform::Youtube, "a", ""))
        .await
        .unwrap();
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [429, 403, 200, 200],
        "videos retried, then the ban"
    );
    let e = yt(&fake, "bad")
        .send(&action(ActionKind::Delete, Platform::Youtube, "a", "m"))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    fake.state
        .lock()
        .unwrap()
        .not_moderator
        .insert("viewer".into());
    let e = yt(&fake, "viewer")
        .send(&action(ActionKind::Delete, Platform::Youtube, "a", "m"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Forbidden(ref m) if m.contains("forbidden")),
        "{e:?}"
    );
    let mut elsewhere = action(ActionKind::Ban, Platform::Youtube, "a", "");
    elsewhere.target.stream_id = "not-live".into();
    let e = y.send(&elsewhere).await.unwrap_err();
    assert!(e.to_string().contains("no active live chat"), "{e}");
}

fn chat(id: &str, login: &str, text: &str, ts: i64) -> ChatEvent {
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
                ..Author::default()
            }),
            text: text.into(),
            ..ChatMessage::default()
        })),
    }
}

#[tokio::test]
async fn a_nuke_sent_to_helix_is_undone_there() {
    let fake = FakeHelix::start("app", TOKEN, "mod1", "1001", 100).await;
    fake.state.lock().unwrap().unbannable.insert("id-u2".into());
    let h = helix(&fake, TOKEN, "mod1");
    let policies = Policies::from_toml(
        "[channels.\"twitch.chan\"]\ndry_run = false\nladder = [\"timeout 5m\"]\n",
    )
    .unwrap();
    let mut e = Engine::new(policies);
    let mut out = Vec::new();
    let pasta = "free subs at this totally real site check it out now";
    for i in 0..4 {
        e.on_chat(
            &chat(&format!("m{i}"), &format!("u{i}"), pasta, 1_000 + i),
            &mut out,
        );
    }
    let report = e
        .nuke(
            &NukeRequest {
                stream: "twitch.chan".into(),
                text: Some(pasta.into()),
                by: "alice".into(),
                ..NukeRequest::default()
            },
            2_000,
            &mut out,
        )
        .unwrap();
    let mut recs: Vec<Record> = out
        .drain(..)
        .filter_map(|o| match o {
            Output::Record(r) => Some(*r),
            _ => None,
        })
        .collect();
    execute(&[&h], &mut recs).await;
    for r in &recs {
        e.settle(r);
    }
    let done = recs.iter().filter(|r| r.status.name() == "done").count();
    assert_eq!(
        (report.users, done),
        (4, 3),
        "u2 refused by Twitch: {recs:#?}"
    );
    assert_eq!(fake.state.lock().unwrap().bans.len(), 3);
    // The undo lifts what was done, not what failed.
    let mut undo = e.undo(report.nuke, "bob", 3_000).unwrap();
    assert_eq!(undo.len(), 3);
    execute(&[&h], &mut undo).await;
    assert!(undo.iter().all(|r| r.status.name() == "done"), "{undo:#?}");
    assert!(fake.state.lock().unwrap().bans.is_empty());
}
