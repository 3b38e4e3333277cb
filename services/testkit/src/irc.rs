//! A local IRC server speaking enough of Twitch's protocol for a client.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// When the recorded lines are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrcScript {
    /// Each channel's lines (those naming ` #channel`) when it is joined.
    PerChannel,
    /// All lines, in their order (channels interleaved), once this many
    /// channels are joined on one connection.
    AllAfterJoins(usize),
}

/// Acknowledges CAP, welcomes after NICK, answers PING, confirms every
/// JOIN (with the channel's ROOMSTATE, as Twitch sends it, unless told
/// not to) and replays recorded lines as its [`IrcScript`] says. Serves
/// every connection on a thread of its own until the process ends.
#[derive(Debug)]
pub struct FakeIrc {
    pub port: u16,
    /// Every channel joined, in order, over all connections.
    pub joins: Arc<Mutex<Vec<String>>>,
    sent_at: Arc<Mutex<Option<Instant>>>,
}

impl FakeIrc {
    /// Serves each channel's recorded lines when it is joined.
    pub fn start(recorded: Vec<String>) -> Self {
        Self::serve(recorded, IrcScript::PerChannel, true)
    }

    /// Serves all recorded lines, in their order (channels interleaved),
    /// once `channels` channels are joined.
    pub fn start_after_joins(recorded: Vec<String>, channels: usize) -> Self {
        Self::serve(recorded, IrcScript::AllAfterJoins(channels), true)
    }

    /// The server with its script; `roomstate` false sends no ROOMSTATE on
    /// JOIN (then the client receives exactly the recorded lines).
    pub fn serve(recorded: Vec<String>, script: IrcScript, roomstate: bool) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = FakeIrc {
            port,
            joins: Arc::default(),
            sent_at: Arc::default(),
        };
        let recorded = Arc::new(recorded);
        let (joins, sent_at) = (server.joins.clone(), server.sent_at.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let session = Session {
                    recorded: recorded.clone(),
                    joins: joins.clone(),
                    sent_at: sent_at.clone(),
                    script,
                    roomstate,
                };
                std::thread::spawn(move || {
                    // A client that goes away ends its session; nothing to report.
                    let _ = session.run(conn);
                });
            }
        });
        server
    }

    /// When the first recorded line was sent, if it was.
    pub fn first_sent(&self) -> Option<Instant> {
        *self.sent_at.lock().unwrap()
    }
}

/// One client connection.
struct Session {
    recorded: Arc<Vec<String>>,
    joins: Arc<Mutex<Vec<String>>>,
    sent_at: Arc<Mutex<Option<Instant>>>,
    script: IrcScript,
    roomstate: bool,
}

impl Session {
    fn run(self, conn: TcpStream) -> std::io::Result<()> {
        let mut w = BufWriter::new(conn.try_clone()?);
        let mut nick = "justinfan".to_owned();
        for line in BufReader::new(conn).lines() {
            let line = line?;
            let line = line.trim_end();
            if let Some(caps) = line.strip_prefix("CAP REQ") {
                let caps = caps.split_once(':').map_or("", |x| x.1);
                write!(w, ":tmi.twitch.tv CAP * ACK :{caps}\r\n")?;
            } else if let Some(n) = line.strip_prefix("NICK ") {
                n.clone_into(&mut nick);
                write!(w, ":tmi.twitch.tv 001 {nick} :Welcome, GLHF!\r\n")?;
            } else if let Some(rest) = line.strip_prefix("PING") {
                write!(w, ":tmi.twitch.tv PONG tmi.twitch.tv{rest}\r\n")?;
            } else if let Some(chans) = line.strip_prefix("JOIN ") {
                for ch in chans.split(',') {
                    self.join(&mut w, &nick, ch)?;
                }
            }
            w.flush()?;
        }
        Ok(())
    }

    fn join(&self, w: &mut impl Write, nick: &str, ch: &str) -> std::io::Result<()> {
        let joined = {
            let mut j = self.joins.lock().unwrap();
            j.push(ch.to_owned());
            j.len()
        };
        write!(w, ":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN {ch}\r\n")?;
        if self.roomstate {
            write!(
                w,
                "@emote-only=0;followers-only=-1;r9k=0;room-id=1;slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE {ch}\r\n"
            )?;
        }
        let lines: Box<dyn Iterator<Item = &String>> = match self.script {
            IrcScript::AllAfterJoins(n) if joined == n => Box::new(self.recorded.iter()),
            IrcScript::AllAfterJoins(_) => return Ok(()),
            IrcScript::PerChannel => {
                let inner = format!(" {ch} ");
                let last = format!(" {ch}");
                Box::new(
                    self.recorded
                        .iter()
                        .filter(move |l| l.contains(&inner) || l.ends_with(&last)),
                )
            }
        };
        w.flush()?;
        let mut lines = lines.peekable();
        if lines.peek().is_some() {
            self.sent_at
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
        }
        for l in lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\r\n")?;
        }
        Ok(())
    }
}
