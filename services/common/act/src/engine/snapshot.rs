//! The engine's state in a shard checkpoint ([`PolicySnapshot`]), so that
//! a new owner of the shard continues it: strikes, users held by
//! moderators, spam events seen, nukes (grace windows, what an undo takes
//! back), open suggestions, the timeouts and bans an undo of one lifts,
//! and the next record id. The recent messages
//! are left out; [`Engine::remember`] rebuilds them from the chat before
//! the checkpoint.

use spamscope_proto::v1::{
    ActionRecord, HeldUser, NukeSnapshot, PolicyEventSnapshot, PolicySnapshot,
    PolicyStreamSnapshot, UserStrikes,
};

use super::{
    Action, ChatEvent, Engine, EventSeen, Kind, Nuke, Output, Record, Status, Step, StreamState,
    detector_output, to_detector_output,
};

/// Version of [`PolicySnapshot`]; a snapshot of another version is not
/// restored (the policies start afresh).
pub const SNAPSHOT_VERSION: u32 = 1;

/// A record as published, for the snapshot.
fn to_proto(r: &Record) -> Option<ActionRecord> {
    match to_detector_output(&Output::Record(Box::new(r.clone())))?.kind? {
        detector_output::Kind::Action(a) => Some(a),
        _ => None,
    }
}

impl Engine {
    /// The state a shard's checkpoint keeps.
    pub fn snapshot(&self) -> PolicySnapshot {
        let streams = self
            .streams
            .iter()
            .map(|(key, st)| PolicyStreamSnapshot {
                stream: key.clone(),
                platform: st.platform,
                stream_id: st.stream_id.clone(),
                channel_id: st.channel_id.clone(),
                strikes: st
                    .strikes
                    .iter()
                    .map(|(user, at)| UserStrikes {
                        user: user.clone(),
                        at_ms: at.iter().copied().collect(),
                    })
                    .collect(),
                flag_handled: st
                    .flag_handled
                    .iter()
                    .map(|(user, at)| HeldUser {
                        user: user.clone(),
                        until_ms: *at,
                    })
                    .collect(),
                held: st
                    .held
                    .iter()
                    .map(|(user, until)| HeldUser {
                        user: user.clone(),
                        until_ms: *until,
                    })
                    .collect(),
                events: st
                    .events
                    .iter()
                    .map(|(id, e)| PolicyEventSnapshot {
                        event_id: *id,
                        class: e.class,
                        text: e.text.clone(),
                        users: e.users,
                        first_seen_ms: e.first_seen_ms,
                        nuked: e.nuked.unwrap_or(0),
                        suggested: e.suggested,
                    })
                    .collect(),
            })
            .collect();
        let nukes = self
            .nukes
            .values()
            .map(|n| NukeSnapshot {
                id: n.id,
                stream: n.stream.clone(),
                event_id: n.event_id,
                text: n.text.clone(),
                by: n.by.clone(),
                step: n.step.map(|s| s.to_string()).unwrap_or_default(),
                min_copies: u32::try_from(n.min_copies).unwrap_or(u32::MAX),
                since_ms: n.since_ms,
                dry_run: n.dry_run,
                until_ms: n.until_ms,
                users: n.users.iter().cloned().collect(),
                undoable: n
                    .undoable
                    .iter()
                    .filter_map(|(id, (a, live))| {
                        to_proto(&Record {
                            id: *id,
                            at_ms: 0,
                            stream: n.stream.clone(),
                            action: a.clone(),
                            status: if *live {
                                Status::Pending
                            } else {
                                Status::Failed {
                                    reason: String::new(),
                                }
                            },
                            by: String::new(),
                            evidence: String::new(),
                            event_id: None,
                            nuke: Some(n.id),
                            undoes: None,
                        })
                        .map(|mut r| {
                            r.detail.clone_from(&a.undo_handle);
                            r
                        })
                    })
                    .collect(),
                undone: n.undone,
            })
            .collect();
        PolicySnapshot {
            version: SNAPSHOT_VERSION,
            next_id: self.next_id,
            streams,
            nukes,
            suggestions: self.suggestions.values().filter_map(to_proto).collect(),
            acted: self
                .acted
                .values()
                .filter_map(|r| {
                    to_proto(r).map(|mut a| {
                        a.detail.clone_from(&r.action.undo_handle);
                        a
                    })
                })
                .collect(),
        }
    }

    /// Continues from a shard's snapshot (on top of nothing: a new owner's
    /// engine). A snapshot of another version, or a part this build does
    /// not read, is an error and changes nothing.
    pub fn restore(&mut self, s: &PolicySnapshot) -> Result<(), String> {
        if s.version != SNAPSHOT_VERSION {
            return Err(format!(
                "policy state of version {} (this build reads {SNAPSHOT_VERSION})",
                s.version
            ));
        }
        let mut streams = std::collections::HashMap::new();
        for p in &s.streams {
            let st = StreamState {
                platform: p.platform,
                stream_id: p.stream_id.clone(),
                channel_id: p.channel_id.clone(),
                strikes: p
                    .strikes
                    .iter()
                    .map(|u| (u.user.clone(), u.at_ms.iter().copied().collect()))
                    .collect(),
                flag_handled: p
                    .flag_handled
                    .iter()
                    .map(|h| (h.user.clone(), h.until_ms))
                    .collect(),
                held: p
                    .held
                    .iter()
                    .map(|h| (h.user.clone(), h.until_ms))
                    .collect(),
                events: p
                    .events
                    .iter()
                    .map(|e| {
                        (
                            e.event_id,
                            EventSeen {
                                class: e.class,
                                text: e.text.clone(),
                                users: e.users,
                                first_seen_ms: e.first_seen_ms,
                                nuked: (e.nuked != 0).then_some(e.nuked),
                                suggested: e.suggested,
                            },
                        )
                    })
                    .collect(),
                ..StreamState::default()
            };
            streams.insert(p.stream.clone(), st);
        }
        let mut nukes = std::collections::BTreeMap::new();
        for n in &s.nukes {
            let step = match n.step.as_str() {
                "" => None,
                s => Some(Step::parse(s).map_err(|e| format!("nuke {}: {e}", n.id))?),
            };
            let mut undoable = std::collections::BTreeMap::new();
            for a in &n.undoable {
                let r = Record::from_proto(a)
                    .ok_or_else(|| format!("nuke {}: an action this build does not know", n.id))?;
                let action = Action {
                    undo_handle: a.detail.clone(),
                    ..r.action
                };
                undoable.insert(a.record_id, (action, a.status == "pending"));
            }
            nukes.insert(
                n.id,
                Nuke {
                    id: n.id,
                    stream: n.stream.clone(),
                    event_id: n.event_id,
                    text: n.text.clone(),
                    by: n.by.clone(),
                    step,
                    min_copies: n.min_copies as usize,
                    since_ms: n.since_ms,
                    dry_run: n.dry_run,
                    until_ms: n.until_ms,
                    users: n.users.iter().cloned().collect(),
                    undoable,
                    undone: n.undone,
                },
            );
        }
        let mut suggestions = std::collections::BTreeMap::new();
        for a in &s.suggestions {
            let r = Record::from_proto(a).ok_or_else(|| {
                format!("suggestion {}: not a record this build reads", a.record_id)
            })?;
            suggestions.insert(r.id, r);
        }
        let mut acted = std::collections::BTreeMap::new();
        for a in &s.acted {
            let mut r = Record::from_proto(a)
                .ok_or_else(|| format!("action {}: not a record this build reads", a.record_id))?;
            // The status says dry run or not; the detail held the handle.
            r.action.undo_handle.clone_from(&a.detail);
            acted.insert(r.id, r);
        }
        self.streams = streams;
        self.nukes = nukes;
        self.suggestions = suggestions;
        self.acted = acted;
        self.next_id = self.next_id.max(s.next_id);
        Ok(())
    }

    /// Feeds chat from before the checkpoint, after [`Engine::restore`]:
    /// it rebuilds the recent messages a nuke reaches back to, the users
    /// protected by their roles and the moderators' holds. Nothing acts
    /// and no command runs again (their effects are in the snapshot).
    pub fn remember(&mut self, ev: &ChatEvent) {
        if matches!(
            ev.kind,
            Some(Kind::Message(_) | Kind::UserTimedOut(_) | Kind::UserBanned(_))
        ) {
            let mut ignored = Vec::new();
            self.chat(ev, &mut ignored, false);
        }
    }
}
