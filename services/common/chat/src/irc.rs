//! IRCv3 line grammar: tags, prefix, command, parameters.
//!
//! Borrowing, allocation-free scanning of one line. The twitch-irc crate has a
//! parser too, but it builds a `HashMap<String, String>` of tags per line;
//! replaying a million lines a second needs the borrowed form, and the
//! Twitch-specific lenience (bad tag values drop one field, not the line)
//! lives in [`crate::twitch`].

use std::borrow::Cow;

use crate::ParseError;

/// One IRC line split into its parts; every part borrows from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcLine<'a> {
    tags: Option<&'a str>,
    /// The tags split once into (key, raw value): a line is asked for
    /// a dozen of its twenty-odd tags.
    tag_list: Vec<(&'a str, &'a str)>,
    /// `nick!user@host` or `server`, without the leading ':'.
    pub prefix: Option<&'a str>,
    pub command: &'a str,
    /// Middle parameters, then the trailing one (without its ':').
    pub params: Vec<&'a str>,
}

impl<'a> IrcLine<'a> {
    /// Parses one line (without its line terminator; a trailing CR is
    /// tolerated).
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return Err(ParseError::new("empty line"));
        }
        if line.contains(['\n', '\r', '\0']) {
            return Err(ParseError::new("line contains CR, LF or NUL"));
        }
        let mut rest = line;
        let mut tags = None;
        if let Some(after) = rest.strip_prefix('@') {
            let (t, r) = after
                .split_once(' ')
                .ok_or_else(|| ParseError::new("nothing after the tags"))?;
            if t.is_empty() {
                return Err(ParseError::new("empty tags"));
            }
            tags = Some(t);
            rest = r;
        }
        let mut prefix = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (p, r) = after
                .split_once(' ')
                .ok_or_else(|| ParseError::new("nothing after the prefix"))?;
            if p.is_empty() {
                return Err(ParseError::new("empty prefix"));
            }
            prefix = Some(p);
            rest = r;
        }
        let (command, mut rest) = match rest.split_once(' ') {
            Some((c, r)) => (c, Some(r)),
            None => (rest, None),
        };
        let valid_command = (!command.is_empty()
            && command.bytes().all(|b| b.is_ascii_alphabetic()))
            || (command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit()));
        if !valid_command {
            return Err(ParseError::new(format!("invalid command {command:?}")));
        }
        let mut params = Vec::with_capacity(2);
        while let Some(r) = rest {
            if let Some(trailing) = r.strip_prefix(':') {
                params.push(trailing);
                break;
            }
            let (p, next) = match r.split_once(' ') {
                Some((p, n)) => (p, Some(n)),
                None => (r, None),
            };
            if p.is_empty() {
                return Err(ParseError::new("empty middle parameter (stray space)"));
            }
            params.push(p);
            rest = next;
        }
        let tag_list = tags.map_or_else(Vec::new, |t| {
            t.split(';')
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                .collect()
        });
        Ok(IrcLine {
            tags,
            tag_list,
            prefix,
            command,
            params,
        })
    }

    /// A hash of what the line says: its tags (sorted, unescaped, empty
    /// ones left out), command and parameters. The same for a line that
    /// another IRC client serialised again (tag order, escaping), so two
    /// ingest replicas and a recorded log agree.
    pub fn content_hash(&self) -> u64 {
        let mut tags: Vec<(&str, Cow<'_, str>)> = self
            .tags
            .unwrap_or("")
            .split(';')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (!k.is_empty() && !v.is_empty()).then(|| (k, unescape_tag_value(v)))
            })
            .collect();
        tags.sort();
        let mut s = String::new();
        for (k, v) in &tags {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push(';');
        }
        s.push(' ');
        s.push_str(self.command);
        for p in &self.params {
            s.push(' ');
            s.push_str(p);
        }
        xxhash_rust::xxh3::xxh3_64(s.as_bytes())
    }

    /// The raw (still escaped) value of tag `key`; `Some("")` for a tag
    /// present without a value.
    pub fn raw_tag(&self, key: &str) -> Option<&'a str> {
        self.tag_list
            .iter()
            .find_map(|&(k, v)| (k == key).then_some(v))
    }

    /// The unescaped value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<Cow<'a, str>> {
        self.raw_tag(key).map(unescape_tag_value)
    }

    /// The unescaped value of tag `key`, or `None` when absent or empty.
    pub fn tag_nonempty(&self, key: &str) -> Option<Cow<'a, str>> {
        self.tag(key).filter(|v| !v.is_empty())
    }

    /// The nick of a `nick!user@host` prefix.
    pub fn nick(&self) -> Option<&'a str> {
        let p = self.prefix?;
        p.split_once('!')
            .map(|(n, _)| n)
            .or(Some(p))
            .filter(|n| !n.is_empty())
    }

    /// Parameter `i`, if present.
    pub fn param(&self, i: usize) -> Option<&'a str> {
        self.params.get(i).copied()
    }
}

/// Unescapes an IRCv3 tag value (`\:` `\s` `\\` `\r` `\n`; any other escaped
/// character stands for itself; a lone trailing backslash is dropped).
pub fn unescape_tag_value(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('\\') => out.push('\\'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tags_prefix_command_params() {
        let l =
            IrcLine::parse("@a=1;b=x\\sy;c :nick!nick@host PRIVMSG #chan :hello world").unwrap();
        assert_eq!(l.raw_tag("a"), Some("1"));
        assert_eq!(l.tag("b").as_deref(), Some("x y"));
        assert_eq!(l.raw_tag("c"), Some(""));
        assert_eq!(l.raw_tag("d"), None);
        assert_eq!(l.nick(), Some("nick"));
        assert_eq!(l.command, "PRIVMSG");
        assert_eq!(l.params, vec!["#chan", "hello world"]);
    }

    #[test]
    fn unescapes_every_sequence() {
        assert_eq!(
            unescape_tag_value(r"a\:b\sc\\d\re\nf\xg\"),
            "a;b c\\d\re\nfxg"
        );
        assert!(matches!(unescape_tag_value("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "",
            "@ :tmi.twitch.tv TEST",
            "@key=value",
            "@key=value : TEST",
            "@key=value :tmi.twitch.tv",
            " @key=value :tmi.twitch.tv PING",
            "@key=value :tmi.twitch.tv  PING",
            "@key=value :tmi.twitch.tv P!NG",
            "@key=value :tmi.twitch.tv P1NG",
            "@key=value :tmi.twitch.tv PING ",
            "@key=value :tmi.twitch.tv PING asd  def",
            "abc\ndef",
        ] {
            assert!(IrcLine::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn numeric_commands_and_trailing_cr() {
        let l = IrcLine::parse(":tmi.twitch.tv 001 me :Welcome\r").unwrap();
        assert_eq!(l.command, "001");
        assert_eq!(l.params, vec!["me", "Welcome"]);
    }
}
