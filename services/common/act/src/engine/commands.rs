//! What moderators ask for: the commands that come in a stream's chat
//! (nuke, undo of a nuke, acceptance of a suggestion, undo of one action)
//! and the platform's answers an undo needs.

use std::time::Duration;

use spamscope_proto::v1::{ChatEvent, ModeratorCommand, moderator_command::Op};

use super::{
    Action, ActionKind, COMMAND_CLOCK_SLACK_MS, CommandReply, Engine, EngineError, NukeReport,
    NukeRequest, Output, Record, Status, user_of,
};

impl Engine {
    /// Carries out a moderator's command (nuke, undo, accept) that came in
    /// the stream's chat.
    pub(super) fn command(
        &mut self,
        ev: &ChatEvent,
        c: &ModeratorCommand,
        out: &mut Vec<Output>,
    ) -> CommandReply {
        let stream = ev.stream_key();
        let by = if c.by.is_empty() {
            "a moderator"
        } else {
            c.by.as_str()
        };
        // The gateway dates a command by its clock; a stream replayed from
        // an archive runs on the archive's. Far from the stream's newest
        // message (ten minutes), the command takes that message's time.
        let newest = self
            .streams
            .get(&stream)
            .and_then(|st| st.recent.back())
            .map(|s| s.ts_ms);
        let now = match newest {
            Some(t) if (ev.ts_ms - t).abs() > COMMAND_CLOCK_SLACK_MS => t,
            _ => ev.ts_ms,
        };
        let done: Result<Option<NukeReport>, EngineError> = match &c.op {
            Some(Op::Nuke(n)) => {
                let req = NukeRequest {
                    stream: stream.clone(),
                    event_id: (n.spam_event_id != 0).then_some(n.spam_event_id),
                    text: (!n.text.is_empty()).then(|| n.text.clone()),
                    since_ms: (n.since_ms != 0).then_some(n.since_ms),
                    grace: (n.grace_s != 0).then(|| Duration::from_secs(u64::from(n.grace_s))),
                    step: None,
                    by: by.to_owned(),
                    dry_run: n.dry_run,
                    min_copies: 0,
                };
                self.nuke(&req, now, out).map(Some)
            }
            // A command acts on its own stream's nukes and suggestions only.
            Some(Op::Undo(u))
                if self
                    .nukes
                    .get(&u.nuke_id)
                    .is_some_and(|n| n.stream != stream) =>
            {
                Err(EngineError::NotFound(format!(
                    "no nuke {} in {stream}",
                    u.nuke_id
                )))
            }
            Some(Op::Accept(a))
                if self
                    .suggestions
                    .get(&a.record_id)
                    .is_some_and(|r| r.stream != stream) =>
            {
                Err(EngineError::NotFound(format!(
                    "no open suggestion {} in {stream}",
                    a.record_id
                )))
            }
            Some(Op::Undo(u)) => self.undo(u.nuke_id, by, now).map(|records| {
                out.extend(records.into_iter().map(|r| Output::Record(Box::new(r))));
                None
            }),
            Some(Op::Accept(a)) => self.accept(a.record_id, by, now).map(|r| {
                out.push(Output::Record(Box::new(r)));
                None
            }),
            Some(Op::UndoAction(u)) => self.undo_action(&stream, u.record_id, by, now).map(|r| {
                out.push(Output::Record(Box::new(r)));
                None
            }),
            None => Err(EngineError::Invalid(
                "the command names no operation".into(),
            )),
        };
        let (error, nuke) = match done {
            Ok(n) => (String::new(), n),
            Err(e) => (e.to_string(), None),
        };
        CommandReply {
            stream,
            command_id: ev.event_id.clone(),
            at_ms: now,
            error,
            nuke,
        }
    }

    /// A moderator accepts a suggested action: it is sent (or reported,
    /// in a dry-run channel) now.
    pub fn accept(&mut self, record_id: u64, by: &str, now_ms: i64) -> Result<Record, EngineError> {
        let mut r = self
            .suggestions
            .remove(&record_id)
            .ok_or_else(|| EngineError::NotFound(format!("no open suggestion {record_id}")))?;
        let dry_run = self.policies.of(&r.stream).dry_run;
        r.id = self.id();
        r.at_ms = now_ms;
        r.by = format!("{} accepted by {by}", r.by);
        r.status = if dry_run {
            Status::DryRun
        } else {
            Status::Pending
        };
        let user = user_of(&r.action.target.user_login, &r.action.target.user_id);
        if let Some(st) = self.streams.get_mut(&r.stream) {
            st.strikes.entry(user).or_default().push_back(now_ms);
        }
        self.remember_acted(&r);
        Ok(r)
    }

    /// Takes a nuke back: its grace window ends and every timeout and ban
    /// it made is lifted (deletions cannot be undone). Returns the unban
    /// records.
    pub fn undo(
        &mut self,
        nuke_id: u64,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<Record>, EngineError> {
        let n = self
            .nukes
            .get_mut(&nuke_id)
            .ok_or_else(|| EngineError::NotFound(format!("no nuke {nuke_id}")))?;
        if n.undone {
            return Err(EngineError::Invalid(format!(
                "nuke {nuke_id} is already undone"
            )));
        }
        n.undone = true;
        n.until_ms = n.until_ms.min(now_ms);
        let dry_run = n.dry_run;
        let stream = n.stream.clone();
        let event_id = n.event_id;
        let lift: Vec<(u64, Action)> = n
            .undoable
            .iter()
            .filter(|(_, (_, live))| *live)
            .map(|(id, (a, _))| (*id, a.clone()))
            .collect();
        let mut records = Vec::new();
        for (undoes, a) in lift {
            let id = self.id();
            records.push(Record {
                id,
                at_ms: now_ms,
                stream: stream.clone(),
                action: Action {
                    kind: ActionKind::Unban,
                    reason: format!("spamscope: undo of nuke {nuke_id}"),
                    ..a
                },
                status: if dry_run {
                    Status::DryRun
                } else {
                    Status::Pending
                },
                by: format!("undo of nuke:{nuke_id} by {by}"),
                evidence: format!("nuke {nuke_id} taken back"),
                event_id,
                nuke: Some(nuke_id),
                undoes: Some(undoes),
            });
        }
        Ok(records)
    }

    /// A moderator lifts one timeout or ban spamscope made in `stream`:
    /// the unban record (reported only where the action was, or the
    /// channel is, in dry-run). A nuke's undo no longer lifts it.
    pub fn undo_action(
        &mut self,
        stream: &str,
        record_id: u64,
        by: &str,
        now_ms: i64,
    ) -> Result<Record, EngineError> {
        let acted = self
            .acted
            .get(&record_id)
            .filter(|r| r.stream == stream)
            .ok_or_else(|| {
                EngineError::NotFound(format!("no timeout or ban {record_id} of {stream} to undo"))
            })?
            .clone();
        self.acted.remove(&record_id);
        if let Some(n) = acted.nuke.and_then(|n| self.nukes.get_mut(&n))
            && let Some((_, live)) = n.undoable.get_mut(&record_id)
        {
            *live = false;
        }
        let dry_run = acted.status == Status::DryRun || self.policies.of(stream).dry_run;
        Ok(Record {
            id: self.id(),
            at_ms: now_ms,
            stream: stream.to_owned(),
            action: Action {
                kind: ActionKind::Unban,
                reason: format!("spamscope: undo of action {record_id}"),
                ..acted.action
            },
            status: if dry_run {
                Status::DryRun
            } else {
                Status::Pending
            },
            by: format!("undo by {by}"),
            evidence: format!(
                "{} taken back: {}",
                acted.action.kind.name(),
                acted.evidence
            ),
            event_id: acted.event_id,
            nuke: acted.nuke,
            undoes: Some(record_id),
        })
    }

    /// The platform's answer for a record sent: an undo needs it.
    pub fn settle(&mut self, r: &Record) {
        let Some(n) = r.nuke.and_then(|n| self.nukes.get_mut(&n)) else {
            return;
        };
        if let Some((a, live)) = n.undoable.get_mut(&r.id) {
            match &r.status {
                Status::Done { .. } => a.undo_handle.clone_from(&r.action.undo_handle),
                Status::Failed { .. } => *live = false,
                _ => {}
            }
        }
    }
}
