//! The streaming replay: chat files read as they are consumed, never held
//! whole.
//!
//! Each file is parsed on a thread of its own into a bounded channel (a few
//! hundred events), so reading one file overlaps with detecting on another
//! core and memory does not grow with the file. Each file's events pass a
//! look-ahead of [`ReplayOptions::look_ahead_ms`] of event time, which puts
//! the small disorder of real logs (Twitch's `tmi-sent-ts` comes up to a
//! few hundred ms out of order) back in order, and the files are merged by
//! time: the result is the order [`crate::replay::merge`] gives (by time,
//! ties in file order) whenever no event is later than that in its file.
//! An event later than the look-ahead is replayed where it comes, and
//! counted ([`Replay::out_of_order`]).
//!
//! A stream ends (a `StreamEnded` follows) when every file that held it
//! has ended: right after its last event when a file holds one stream.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use spamscope_proto::v1::ChatEvent;

use crate::format::{EventSink, ParsedFile};
use crate::replay::{ReadError, ReplayFile, stream_ended};

/// Events a reader thread sends at once.
const BATCH: usize = 64;
/// Batches in flight from one reader thread.
const IN_FLIGHT: usize = 2;

/// How far a file's events are put back in order.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// An event is held until the file has reached this much later in
    /// event time: disorder up to this is undone.
    pub look_ahead_ms: i64,
    /// At most this many events held per file (a bound on memory whatever
    /// the timestamps do): past it the earliest goes out.
    pub max_held: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            look_ahead_ms: 60_000,
            max_held: 100_000,
        }
    }
}

/// What a reader thread sends.
enum Piece {
    Events(Vec<ChatEvent>),
    /// The file's counts (its events went out before), or why it could
    /// not be read.
    End(Box<Result<ParsedFile, ReadError>>),
}

/// An event held in a file's look-ahead, ordered by time, then by its
/// place in the file.
struct Held {
    ts: i64,
    seq: u64,
    ev: ChatEvent,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(other.ts, other.seq))
    }
}

/// Stream ids by platform: looked up by `&str`, no key built per event.
type ByPlatform<T> = HashMap<i32, HashMap<String, T>>;

/// One file being read.
struct Source {
    path: PathBuf,
    rx: Receiver<Piece>,
    /// The look-ahead: events in order, in (time, place in file) order
    /// (most of a file: appending is all it costs)...
    held: VecDeque<Held>,
    /// ... and the events that came earlier than the newest one held
    /// (a heap: a file in no order at all costs a log per event).
    late: BinaryHeap<Reverse<Held>>,
    /// Latest event time read from the file so far.
    reached: i64,
    seq: u64,
    /// The reader has sent its end.
    ended: Option<ParsedFile>,
    /// The event at the front, waiting for its turn in the merge.
    head: Option<Held>,
    /// Streams read from this file, by platform.
    streams: HashMap<i32, HashSet<String>>,
    /// Streams first read from this file since the merge last looked.
    new_streams: Vec<(i32, String)>,
}

impl Source {
    /// The file's next event in its order, reading as far as the look-ahead
    /// needs; `None` once it has ended.
    fn next_ready(&mut self, opts: &ReplayOptions) -> Result<Option<Held>, ReadError> {
        loop {
            let late_first = match (self.held.front(), self.late.peek()) {
                (Some(h), Some(Reverse(l))) => Some(l < h),
                (None, Some(_)) => Some(true),
                (Some(_), None) => Some(false),
                (None, None) => None,
            };
            if let Some(late_first) = late_first {
                let front_ts = if late_first {
                    self.late.peek().map(|Reverse(l)| l.ts)
                } else {
                    self.held.front().map(|h| h.ts)
                }
                .unwrap_or(i64::MIN);
                let due = self.ended.is_some()
                    || self.reached.saturating_sub(front_ts) > opts.look_ahead_ms
                    || self.held.len() + self.late.len() > opts.max_held;
                if due {
                    return Ok(if late_first {
                        self.late.pop().map(|Reverse(l)| l)
                    } else {
                        self.held.pop_front()
                    });
                }
            } else if self.ended.is_some() {
                return Ok(None);
            }
            match self.rx.recv() {
                Ok(Piece::Events(batch)) => {
                    for ev in batch {
                        let here = self.streams.entry(ev.platform).or_default();
                        if !here.contains(&ev.stream_id) {
                            here.insert(ev.stream_id.clone());
                            self.new_streams.push((ev.platform, ev.stream_id.clone()));
                        }
                        self.seq += 1;
                        self.reached = self.reached.max(ev.ts_ms);
                        let ts = ev.ts_ms;
                        let held = Held {
                            ts,
                            seq: self.seq,
                            ev,
                        };
                        if self.held.back().is_none_or(|b| b.ts <= ts) {
                            self.held.push_back(held);
                        } else {
                            self.late.push(Reverse(held));
                        }
                    }
                }
                Ok(Piece::End(end)) => self.ended = Some((*end)?),
                Err(_) => {
                    return Err(ReadError::Io {
                        path: self.path.clone(),
                        source: std::io::Error::other("the reader thread stopped"),
                    });
                }
            }
        }
    }
}

/// A stream's last event seen, for the `StreamEnded` that closes it.
struct StreamSeen {
    /// Files still being read that held it.
    open_files: usize,
    last: ChatEvent,
    /// Its place in the output, to end streams in the order of their last
    /// events.
    last_at: u64,
}

/// Chat files merged by time as they are read: an iterator of events, each
/// stream closed by a `StreamEnded`. A file that breaks while being read is
/// the iterator's error (the events before it were given); a file that
/// cannot be read at all, or holds no chat, is [`Replay::open`]'s.
pub struct Replay {
    sources: Vec<Source>,
    /// (time, file, place in file) of each file's head.
    order: BinaryHeap<Reverse<(i64, usize, u64)>>,
    ends: VecDeque<ChatEvent>,
    streams: ByPlatform<StreamSeen>,
    /// A file broke after the event just given: the next item.
    pending_error: Option<ReadError>,
    done: Vec<ReplayFile>,
    opts: ReplayOptions,
    given: u64,
    last_ts: i64,
    out_of_order: u64,
    failed: bool,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("files", &self.sources.len())
            .field("given", &self.given)
            .finish_non_exhaustive()
    }
}

/// Batches a reader's events into its channel; what is left goes when it
/// is dropped. A consumer that has gone away leaves the rest unsent.
struct Batcher {
    tx: SyncSender<Piece>,
    batch: Vec<ChatEvent>,
}

impl Batcher {
    fn push(&mut self, ev: ChatEvent) {
        self.batch.push(ev);
        if self.batch.len() >= BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            let _ = self.tx.send(Piece::Events(full));
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.tx.send(Piece::Events(std::mem::take(&mut self.batch)));
        }
    }
}

fn spawn_reader(index: usize, path: PathBuf) -> Result<Receiver<Piece>, ReadError> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name(format!("replay-read-{index}"))
        .spawn(move || {
            let mut batcher = Batcher {
                tx: tx.clone(),
                batch: Vec::with_capacity(BATCH),
            };
            let sink: EventSink = Box::new(move |ev| batcher.push(ev));
            // The sink (and its last batch) goes before the end.
            let result = crate::replay::read_into(&thread_path, Some(sink)).map(|mut parsed| {
                parsed.drop_sink();
                parsed
            });
            let _ = tx.send(Piece::End(Box::new(result)));
        })
        .map_err(|source| ReadError::Io { path, source })?;
    Ok(rx)
}

impl Replay {
    /// Starts reading every file and waits for each one's first event:
    /// a file that cannot be read, is of no known format or holds no chat
    /// is the error, before any event is given.
    pub fn open<P: AsRef<Path>>(paths: &[P], opts: ReplayOptions) -> Result<Self, ReadError> {
        let mut sources = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            let path = p.as_ref().to_owned();
            sources.push(Source {
                rx: spawn_reader(i, path.clone())?,
                path,
                held: VecDeque::new(),
                late: BinaryHeap::new(),
                reached: i64::MIN,
                seq: 0,
                ended: None,
                head: None,
                streams: HashMap::new(),
                new_streams: Vec::new(),
            });
        }
        let mut r = Replay {
            sources,
            order: BinaryHeap::new(),
            ends: VecDeque::new(),
            streams: HashMap::new(),
            pending_error: None,
            done: Vec::new(),
            opts,
            given: 0,
            last_ts: i64::MIN,
            out_of_order: 0,
            failed: false,
        };
        for i in 0..r.sources.len() {
            r.refill(i)?;
        }
        Ok(r)
    }

    /// The files read to their end so far, with their counts (malformed
    /// lines, skipped kinds, notes); their events are not held.
    pub fn files(&self) -> &[ReplayFile] {
        &self.done
    }

    /// Events given earlier than one given before them: later in their
    /// file than the look-ahead undoes.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// The look-ahead this replay uses.
    pub fn options(&self) -> ReplayOptions {
        self.opts
    }

    /// Puts file `i`'s next event at its place in the merge, or ends the
    /// file (and the streams only it still held).
    fn refill(&mut self, i: usize) -> Result<(), ReadError> {
        let src = &mut self.sources[i];
        let next = src.next_ready(&self.opts);
        // A stream is open while a file that has held it is being read.
        for (platform, id) in src.new_streams.drain(..) {
            let of_platform = self.streams.entry(platform).or_default();
            let seen = of_platform.entry(id).or_insert_with_key(|id| StreamSeen {
                open_files: 0,
                last: ChatEvent {
                    platform,
                    stream_id: id.clone(),
                    ..ChatEvent::default()
                },
                last_at: 0,
            });
            seen.open_files += 1;
        }
        match next? {
            Some(h) => {
                self.order.push(Reverse((h.ts, i, h.seq)));
                src.head = Some(h);
            }
            None => {
                let parsed = src.ended.take().unwrap_or_default();
                let mut closing: Vec<StreamSeen> = Vec::new();
                for (platform, ids) in src.streams.drain() {
                    let Some(of_platform) = self.streams.get_mut(&platform) else {
                        continue;
                    };
                    for id in ids {
                        let last_file = of_platform.get_mut(&id).is_some_and(|seen| {
                            seen.open_files = seen.open_files.saturating_sub(1);
                            seen.open_files == 0
                        });
                        if last_file && let Some(seen) = of_platform.remove(&id) {
                            closing.push(seen);
                        }
                    }
                }
                closing.sort_by_key(|s| s.last_at);
                self.ends
                    .extend(closing.iter().map(|s| stream_ended(&s.last)));
                self.done.push(ReplayFile {
                    path: src.path.clone(),
                    parsed,
                });
            }
        }
        Ok(())
    }
}

impl Replay {
    /// Notes `ev` as the latest event given of its stream (opened when its
    /// file's reader met it).
    fn note_stream(&mut self, ev: &ChatEvent) {
        let Some(seen) = self
            .streams
            .get_mut(&ev.platform)
            .and_then(|s| s.get_mut(&ev.stream_id))
        else {
            return;
        };
        seen.last.ts_ms = ev.ts_ms;
        if seen.last.channel_id != ev.channel_id {
            seen.last.channel_id.clone_from(&ev.channel_id);
        }
        seen.last_at = self.given;
    }
}

impl Iterator for Replay {
    type Item = Result<ChatEvent, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(end) = self.ends.pop_front() {
            return Some(Ok(end));
        }
        if let Some(e) = self.pending_error.take() {
            return Some(Err(e));
        }
        if self.failed {
            return None;
        }
        let Reverse((_, i, _)) = self.order.pop()?;
        let ev = self.sources[i].head.take()?.ev;
        self.given += 1;
        if ev.ts_ms < self.last_ts {
            self.out_of_order += 1;
        }
        self.last_ts = self.last_ts.max(ev.ts_ms);
        self.note_stream(&ev);
        if let Err(e) = self.refill(i) {
            // The event is given; the error comes next, and nothing after.
            self.failed = true;
            self.ends.clear();
            self.pending_error = Some(e);
        }
        Some(Ok(ev))
    }
}
