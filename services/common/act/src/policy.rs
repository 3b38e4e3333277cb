//! What spamscope may do in each channel.
//!
//! A policy file (TOML) has a `[defaults]` table and one table per channel
//! under `[channels."<platform>.<id>"]`; a channel's table overrides only
//! the keys it names. Every key is optional:
//!
//! ```toml
//! [defaults]
//! dry_run = true                 # report what would be done, send nothing
//! flagged_users = "suggest"      # off | suggest | auto
//! bot_wave = "suggest"           # one key per spam event class:
//! link_promo = "suggest"         #   bot_wave, link_promo, copypasta, flood
//! copypasta = "off"
//! flood = "off"
//! min_event_users = 3            # act on an event once this many users sent it
//! ladder = ["delete", "timeout 60s", "timeout 10m"]
//! strike_memory = "24h"          # how long an action counts towards the ladder
//! grace = "60s"                  # a nuke keeps acting on new copies this long
//! lookback = "5m"                # how far back a nuke reaches by default
//! protect_vips = true            # moderators and the broadcaster always are
//! allow = ["nightbot"]           # logins never acted on
//!
//! [channels."twitch.xqcow"]
//! dry_run = false
//! bot_wave = "auto"
//! ```
//!
//! **Dry-run is the default everywhere**: a channel acts on the platform
//! only when its policy says `dry_run = false`, and no rule acts by
//! default: flagged users, bot waves and link promotion are suggested,
//! copypastas and floods left alone. On real Twitch chat (normvio-dev) the
//! users of copypasta and flood events were almost never the users the
//! moderators acted on (agreement 0.017 and 0.032: a big channel's
//! copypastas are its culture), so nuking them is a choice a channel makes
//! for itself.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spamscope_proto::StreamKey;
use spamscope_proto::v1::SpamEventClass;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nothing.
    Off,
    /// A suggestion for a moderator to accept (a button in the console).
    Suggest,
    /// Act at once (still only reported while the channel is in dry-run).
    Auto,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Suggest => "suggest",
            Mode::Auto => "auto",
        }
    }
}

/// One rung of the ladder: what the n-th action on a user within the
/// strike memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Delete the user's messages that matched.
    Delete,
    /// Time the user out.
    Timeout(Duration),
    /// Ban the user.
    Ban,
}

impl Step {
    /// `delete`, `timeout <duration>` (`timeout 60s`, `timeout 10m`) or
    /// `ban`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "delete" => return Ok(Step::Delete),
            "ban" => return Ok(Step::Ban),
            _ => {}
        }
        let Some(d) = s.strip_prefix("timeout") else {
            return Err(format!(
                "{s:?} is not a step (delete, timeout <duration>, ban)"
            ));
        };
        let d = parse_duration(d.trim())?;
        // Twitch allows 1 s to 2 weeks.
        if d.as_secs() == 0 || d.as_secs() > 14 * 24 * 3600 {
            return Err(format!("{s:?}: a timeout lasts from 1 second to 2 weeks"));
        }
        Ok(Step::Timeout(d))
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Delete => f.write_str("delete"),
            Step::Ban => f.write_str("ban"),
            Step::Timeout(d) => write!(f, "timeout {}s", d.as_secs()),
        }
    }
}

/// A duration such as `60s`, `10m`, `24h` or `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (60s, 10m, 24h)"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// The policy of one channel, every key resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub dry_run: bool,
    pub flagged_users: Mode,
    pub copypasta: Mode,
    pub bot_wave: Mode,
    pub link_promo: Mode,
    pub flood: Mode,
    pub min_event_users: u64,
    pub ladder: Vec<Step>,
    pub strike_memory: Duration,
    pub grace: Duration,
    pub lookback: Duration,
    pub protect_vips: bool,
    /// Lower-cased logins never acted on.
    pub allow: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            dry_run: true,
            flagged_users: Mode::Suggest,
            copypasta: Mode::Off,
            bot_wave: Mode::Suggest,
            link_promo: Mode::Suggest,
            flood: Mode::Off,
            min_event_users: 3,
            ladder: vec![
                Step::Delete,
                Step::Timeout(Duration::from_secs(60)),
                Step::Timeout(Duration::from_secs(600)),
            ],
            strike_memory: Duration::from_secs(24 * 3600),
            grace: Duration::from_secs(60),
            lookback: Duration::from_secs(300),
            protect_vips: true,
            allow: Vec::new(),
        }
    }
}

impl Policy {
    /// The mode for spam events of a class (crowd reactions are never
    /// acted on).
    pub fn for_class(&self, c: SpamEventClass) -> Mode {
        match c {
            SpamEventClass::Copypasta => self.copypasta,
            SpamEventClass::BotWave => self.bot_wave,
            SpamEventClass::LinkPromo => self.link_promo,
            SpamEventClass::Flood => self.flood,
            SpamEventClass::CrowdReaction | SpamEventClass::Unspecified => Mode::Off,
        }
    }

    /// The step for a user who already had `strikes` actions within the
    /// strike memory (the last rung repeats).
    pub fn step(&self, strikes: usize) -> Step {
        self.ladder
            .get(strikes)
            .or(self.ladder.last())
            .copied()
            .unwrap_or(Step::Delete)
    }

    pub fn allows(&self, login: &str) -> bool {
        self.allow.iter().any(|a| a.eq_ignore_ascii_case(login))
    }
}

/// The keys of a `[defaults]` or channel table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    dry_run: Option<bool>,
    flagged_users: Option<Mode>,
    copypasta: Option<Mode>,
    bot_wave: Option<Mode>,
    link_promo: Option<Mode>,
    flood: Option<Mode>,
    min_event_users: Option<u64>,
    ladder: Option<Vec<String>>,
    strike_memory: Option<String>,
    grace: Option<String>,
    lookback: Option<String>,
    protect_vips: Option<bool>,
    allow: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Layer,
    #[serde(default)]
    channels: BTreeMap<String, Layer>,
}

/// A policy file that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// Longest ladder and allow list accepted.
const MAX_LADDER: usize = 16;
const MAX_ALLOW: usize = 10_000;
/// Longest grace window and look-back a nuke may have.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);
pub const MAX_LOOKBACK: Duration = Duration::from_secs(3600);

impl Layer {
    fn apply(&self, p: &mut Policy, at: &str) -> Result<(), PolicyError> {
        let key = |k: &str| format!("{at}.{k}");
        let err = |k: &str, e: String| PolicyError(format!("{}: {e}", key(k)));
        if let Some(v) = self.dry_run {
            p.dry_run = v;
        }
        for (slot, v) in [
            (&mut p.flagged_users, self.flagged_users),
            (&mut p.copypasta, self.copypasta),
            (&mut p.bot_wave, self.bot_wave),
            (&mut p.link_promo, self.link_promo),
            (&mut p.flood, self.flood),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
        if let Some(n) = self.min_event_users {
            if n == 0 {
                return Err(err("min_event_users", "must be at least 1".into()));
            }
            p.min_event_users = n;
        }
        if let Some(l) = &self.ladder {
            if l.is_empty() || l.len() > MAX_LADDER {
                return Err(err("ladder", format!("needs 1 to {MAX_LADDER} steps")));
            }
            p.ladder = l
                .iter()
                .map(|s| Step::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|e| err("ladder", e))?;
        }
        let dur =
            |k: &str, v: &Option<String>, max: Duration| -> Result<Option<Duration>, PolicyError> {
                let Some(v) = v else { return Ok(None) };
                let d = parse_duration(v).map_err(|e| err(k, e))?;
                if d > max {
                    return Err(err(k, format!("at most {}s", max.as_secs())));
                }
                Ok(Some(d))
            };
        if let Some(d) = dur(
            "strike_memory",
            &self.strike_memory,
            Duration::from_secs(30 * 24 * 3600),
        )? {
            p.strike_memory = d;
        }
        if let Some(d) = dur("grace", &self.grace, MAX_GRACE)? {
            p.grace = d;
        }
        if let Some(d) = dur("lookback", &self.lookback, MAX_LOOKBACK)? {
            p.lookback = d;
        }
        if let Some(v) = self.protect_vips {
            p.protect_vips = v;
        }
        if let Some(a) = &self.allow {
            if a.len() > MAX_ALLOW {
                return Err(err("allow", format!("at most {MAX_ALLOW} logins")));
            }
            p.allow = a.iter().map(|l| l.trim().to_lowercase()).collect();
        }
        Ok(())
    }
}

/// The policies of every channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    pub defaults: Policy,
    /// Stream key (`twitch.xqcow`) → its policy.
    pub channels: BTreeMap<String, Policy>,
}

impl Policies {
    /// Every channel in dry-run: a replay, a backtest or a cluster without
    /// `--policy-live` reports what it would do and never acts.
    pub fn all_dry_run(mut self) -> Self {
        self.defaults.dry_run = true;
        for c in self.channels.values_mut() {
            c.dry_run = true;
        }
        self
    }

    /// The longest look-back of any channel: how much chat before a
    /// checkpoint a new owner reads again ([`crate::Engine::remember`]).
    pub fn longest_lookback(&self) -> Duration {
        self.channels
            .values()
            .map(|p| p.lookback)
            .fold(self.defaults.lookback, Duration::max)
    }

    /// Reads and parses a policy file; errors name the file (and the key).
    pub fn read(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| PolicyError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses a policy file (TOML).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        // toml's message quotes the line, so it names the key.
        let file: File = toml::from_str(text).map_err(|e| PolicyError(format!("policy: {e}")))?;
        let mut defaults = Policy::default();
        file.defaults.apply(&mut defaults, "defaults")?;
        let mut channels = BTreeMap::new();
        for (name, layer) in &file.channels {
            let key = StreamKey::parse(name)
                .map_err(|e| PolicyError(format!("channels.{name:?}: {e}")))?;
            let mut p = defaults.clone();
            layer.apply(&mut p, &format!("channels.{name:?}"))?;
            channels.insert(key.to_string(), p);
        }
        Ok(Self { defaults, channels })
    }

    /// The policy of a stream (`twitch.xqcow`).
    pub fn of(&self, stream: &str) -> &Policy {
        self.channels.get(stream).unwrap_or(&self.defaults)
    }

    /// These policies with channel layers set at run time over them:
    /// `stored` maps a stream key to a layer's TOML (the keys of one
    /// `[channels."..."]` table; empty: none), each applied over that
    /// channel's policy here (or the defaults). Errors name the stream
    /// and the key.
    pub fn with_stored(&self, stored: &BTreeMap<String, String>) -> Result<Self, PolicyError> {
        let mut out = self.clone();
        for (name, text) in stored {
            if text.trim().is_empty() {
                continue;
            }
            let key = StreamKey::parse(name)
                .map_err(|e| PolicyError(format!("channel {name:?}: {e}")))?
                .to_string();
            let layer: Layer =
                toml::from_str(text).map_err(|e| PolicyError(format!("{key}: {e}")))?;
            let mut p = self.of(&key).clone();
            layer.apply(&mut p, &key)?;
            out.channels.insert(key, p);
        }
        Ok(out)
    }
}

impl Policy {
    /// The policy as a complete layer (the keys of a `[channels."..."]`
    /// table), every key given.
    pub fn to_toml(&self) -> String {
        let dur = |d: Duration| format!("\"{}s\"", d.as_secs());
        let list = |v: Vec<String>| {
            let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        [
            format!("dry_run = {}", self.dry_run),
            format!("flagged_users = \"{}\"", self.flagged_users.name()),
            format!("copypasta = \"{}\"", self.copypasta.name()),
            format!("bot_wave = \"{}\"", self.bot_wave.name()),
            format!("link_promo = \"{}\"", self.link_promo.name()),
            format!("flood = \"{}\"", self.flood.name()),
            format!("min_event_users = {}", self.min_event_users),
            format!(
                "ladder = {}",
                list(self.ladder.iter().map(ToString::to_string).collect())
            ),
            format!("strike_memory = {}", dur(self.strike_memory)),
            format!("grace = {}", dur(self.grace)),
            format!("lookback = {}", dur(self.lookback)),
            format!("protect_vips = {}", self.protect_vips),
            format!("allow = {}", list(self.allow.clone())),
        ]
        .join("\n")
            + "\n"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_example_file_holds_the_defaults() {
        let p = Policies::from_toml(include_str!("../../../../docs/policy.example.toml")).unwrap();
        let want = Policy {
            allow: vec!["nightbot".into(), "streamelements".into()],
            ..Policy::default()
        };
        assert_eq!(p.defaults, want);
        assert!(p.channels.is_empty());
    }

    #[test]
    fn a_stored_layer_applies_over_the_file_and_round_trips_as_toml() {
        let file = Policies::from_toml(
            "[defaults]\ncopypasta = \"suggest\"\n[channels.\"twitch.a\"]\nflood = \"auto\"\ngrace = \"2m\"\n",
        )
        .unwrap();
        let stored: BTreeMap<String, String> = [
            (
                "twitch.a".to_owned(),
                "dry_run = false\nladder = [\"ban\"]\n".to_owned(),
            ),
            ("twitch.B".to_owned(), "bot_wave = \"off\"\n".to_owned()),
            ("twitch.c".to_owned(), String::new()),
        ]
        .into();
        let p = file.with_stored(&stored).unwrap();
        let a = p.of("twitch.a");
        // The file's channel layer stays under the stored one.
        assert_eq!((a.flood, a.grace), (Mode::Auto, Duration::from_secs(120)));
        assert_eq!((a.dry_run, a.ladder.clone()), (false, vec![Step::Ban]));
        // A stored layer of a channel the file does not name sits on the
        // defaults; the stream key is normalised (Twitch logins).
        let b = p.of("twitch.b");
        assert_eq!((b.copypasta, b.bot_wave), (Mode::Suggest, Mode::Off));
        assert_eq!(p.of("twitch.c"), &p.defaults);
        // A policy written out as TOML reads back the same.
        let again =
            Policies::from_toml(&format!("[channels.\"twitch.a\"]\n{}", a.to_toml())).unwrap();
        assert_eq!(again.of("twitch.a"), a);
        // A bad layer names the channel and the key.
        let bad: BTreeMap<String, String> =
            [("twitch.a".to_owned(), "flood = \"sometimes\"\n".to_owned())].into();
        let e = file.with_stored(&bad).unwrap_err().to_string();
        assert!(e.contains("twitch.a") && e.contains("flood"), "{e}");
    }
    use super::*;

    #[test]
    fn defaults_only_suggest_and_dry_run() {
        let p = Policies::from_toml("").unwrap();
        assert!(p.defaults.dry_run);
        assert_eq!(p.of("twitch.anyone").flagged_users, Mode::Suggest);
        for (class, mode) in [
            (SpamEventClass::Flood, Mode::Off),
            (SpamEventClass::Copypasta, Mode::Off),
            (SpamEventClass::BotWave, Mode::Suggest),
            (SpamEventClass::LinkPromo, Mode::Suggest),
        ] {
            assert_eq!(p.of("twitch.anyone").for_class(class), mode, "{class:?}");
        }
        assert_eq!(
            p.of("twitch.anyone")
                .for_class(SpamEventClass::CrowdReaction),
            Mode::Off
        );
    }

    #[test]
    fn channels_override_only_what_they_name() {
        let p = Policies::from_toml(
            r#"
            [defaults]
            copypasta = "auto"
            ladder = ["timeout 30s", "ban"]
            [channels."twitch.XQCow"]
            dry_run = false
            allow = ["NightBot"]
            "#,
        )
        .unwrap();
        let x = p.of("twitch.xqcow");
        assert!(!x.dry_run);
        assert_eq!(x.copypasta, Mode::Auto);
        assert_eq!(
            x.ladder,
            vec![Step::Timeout(Duration::from_secs(30)), Step::Ban]
        );
        assert!(x.allows("nightbot"));
        assert_eq!(x.step(0), Step::Timeout(Duration::from_secs(30)));
        assert_eq!(x.step(5), Step::Ban);
        assert!(p.of("twitch.other").dry_run);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[defaults]\nbot_wave = \"sometimes\"", "bot_wave"),
            ("[defaults]\nladder = [\"slap\"]", "defaults.ladder"),
            ("[defaults]\ngrace = \"soon\"", "defaults.grace"),
            ("[defaults]\ngrace = \"2h\"", "defaults.grace"),
            ("[defaults]\ncolour = 1", "colour"),
            ("[channels.\"irc.x\"]\ndry_run = false", "irc.x"),
            (
                "[channels.\"twitch.x\"]\nladder = [\"timeout 3w\"]",
                "ladder",
            ),
        ] {
            let e = Policies::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
