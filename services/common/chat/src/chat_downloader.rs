//! chat-downloader's JSON, every version found in archives, to [`ChatEvent`].
//!
//! - **Current releases** (0.2): `action_type` (`add_chat_item`,
//!   `mark_chat_item_as_deleted`, ...), `message_type` (`text_message`,
//!   `paid_message`, `deleted_message`, `ban_user`, ...), `message_id`, a
//!   nested `author: {id, name, display_name, badges: [{title | name}]}`,
//!   `timestamp` in microseconds. Twitch items have numeric author ids and
//!   Twitch badge names; YouTube's are `UC…` channel ids.
//! - **2020 development builds**: flat `author`, `author_id`,
//!   `author_badges`; `id`; message types named after the innertube action
//!   (`mark_chat_item_as_deleted_action`, `target_id`), and dumps whose
//!   deletions say `message_type: "deleted_state_message"` beside their
//!   `action_type`.
//! - **2020 first releases**: no `action_type`, `message_type` or `id` at
//!   all. YouTube items have `author`, `author_id`, `message`, `timestamp`,
//!   `time_in_seconds`; Twitch VOD items `author_name`,
//!   `author_display_name`, `author_type`, `id` (the author's, not the
//!   message's) and a `timestamp` that is the author's account creation
//!   time, constant per author: their time is `time_in_seconds`, an offset
//!   into the video, as the file holds no wall-clock time.
//!
//! The kind is read from `action_type` where present, then `message_type`,
//! then the item's shape. Deletions carry no time: they get the time of the
//! item before. A deletion that shows `[message retracted]` is the author's
//! own and is marked [`MessageDeleted::by_author`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use spamscope_proto::v1::{
    Author, ChatCleared, ChatEvent, ChatMessage, EmoteRange, MessageDeleted, Platform, Roles,
    Support, SupportKind, UserBanned, UserMessagesRemoved, UserTimedOut, chat_event::Kind,
};

use crate::ParseError;
use crate::youtube::{StreamContext, member_months, parse_amount, retracted};

/// True when `v` looks like one chat-downloader item of any version.
pub fn looks_like_item(v: &Value) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    if o.contains_key("message_type") || o.contains_key("action_type") {
        return true;
    }
    // First releases: a message with an author and a time.
    o.get("message").is_some_and(Value::is_string)
        && ["author", "author_id", "author_name"]
            .iter()
            .any(|k| o.contains_key(*k))
        && (o.contains_key("timestamp") || o.contains_key("time_in_seconds"))
}

/// Kinds chat-downloader writes that are not chat (banners, tickers that
/// repeat paid items, engagement notes, Twitch notices and room states it
/// does not describe fully): skipped on purpose. Other skipped kinds are
/// new to this parser and are named on stderr.
pub fn is_known_kind(kind: &str) -> bool {
    kind.starts_with("ticker_")
        || kind.ends_with("_banner")
        || kind.ends_with("_tooltip")
        || matches!(
            kind,
            "add_live_chat_ticker_item"
                | "add_banner_to_live_chat_command"
                | "remove_banner_for_live_chat_command"
                | "show_live_chat_tooltip_command"
                | "show_live_chat_action_panel_action"
                | "update_live_chat_poll_action"
                | "close_live_chat_action_panel_action"
                | "banner"
                | "banner_header"
                | "viewer_engagement_message"
                | "placeholder_item"
                | "mode_change_message"
                | "donation_announcement"
                | "purchased_product_message"
                | "membership_gift_purchase"
                | "membership_gift_redemption"
                | "poll"
                | "room_state"
                | "user_state"
                | "user_notice"
                | "notice"
                | "host_target"
                | "successful_login"
                | "reconnect"
                | "crowd_chant"
                | "subscription"
                | "resubscription"
                | "subscription_gift"
                | "mystery_subscription_gift"
                | "anonymous_subscription_gift"
                | "anonymous_mystery_subscription_gift"
                | "extend_subscription"
                | "gift_paid_upgrade"
                | "prime_paid_upgrade"
                | "raid"
                | "ritual"
                | "bits_badge_tier"
        )
}

/// What an item is, from its action, message type and shape.
enum What {
    Message,
    Paid(SupportKind),
    Membership,
    Deleted,
    AuthorRemoved,
    /// Twitch CLEARCHAT with a user: a timeout with `ban_duration`, else a ban.
    Ban,
    ChatCleared,
    Skip,
}

/// One field of an item as the parser reads it, whatever its type: versions
/// disagree on whether ids are strings or numbers, and no item is refused
/// for a field's type. A string is borrowed from the input unless it holds
/// an escape; arrays and objects are skipped unread.
#[derive(Debug, Default)]
enum Scalar<'a> {
    /// The key is not in the item.
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Num(Number),
    /// null, a boolean, an array or an object.
    Other,
}

/// Stands in for a field an item's shape does not have.
static ABSENT: Scalar<'static> = Scalar::Absent;

impl<'a> Scalar<'a> {
    fn is_present(&self) -> bool {
        !matches!(self, Scalar::Absent)
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Num(n) => n.as_i64(),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::Num(n) => n.as_u64(),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Num(n) => n.as_f64(),
            _ => None,
        }
    }

    /// A string, or a number written out (as ids sometimes are).
    fn text(&self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s.as_ref().to_owned()),
            Scalar::Num(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// This field where the item has it, else `other`.
    fn or<'s>(&'s self, other: &'s Scalar<'a>) -> &'s Scalar<'a> {
        if self.is_present() { self } else { other }
    }
}

/// The first of `fields` that holds a string (or a number), or "".
fn first_text(fields: &[&Scalar]) -> String {
    fields.iter().find_map(|f| f.text()).unwrap_or_default()
}

/// How a field's type reads each kind of JSON value: every value that is
/// not an object or an array is a [`Scalar`]; objects and arrays are
/// skipped unless the type reads them.
trait Shape<'de>: Sized {
    fn scalar(s: Scalar<'de>) -> Self;

    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::scalar(Scalar::Other))
    }

    fn array<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::scalar(Scalar::Other))
    }
}

struct ShapeVisitor<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for ShapeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::scalar(Scalar::Other))
    }

    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::scalar(Scalar::Num(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::scalar(Scalar::Num(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::scalar(
            Number::from_f64(v).map_or(Scalar::Other, Scalar::Num),
        ))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok(T::scalar(Scalar::Str(Cow::Borrowed(v))))
    }

    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::scalar(Scalar::Str(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::scalar(Scalar::Str(Cow::Owned(v))))
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::scalar(Scalar::Other))
    }

    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::scalar(Scalar::Other))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::object(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::array(seq)
    }
}

/// `Deserialize` for types read by their [`Shape`].
macro_rules! deserialize_by_shape {
    ($($t:ident),*) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $t<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ShapeVisitor(PhantomData))
            }
        }
    )*};
}

deserialize_by_shape!(
    Scalar,
    AuthorField,
    Badges,
    Badge,
    Emotes,
    Emote,
    Locations,
    Money
);

impl<'de: 'a, 'a> Shape<'de> for Scalar<'a> {
    fn scalar(s: Scalar<'de>) -> Self {
        s
    }
}

/// Reads an object as the struct `T` (its other keys skipped).
fn object_as<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: A) -> Result<T, A::Error> {
    T::deserialize(MapAccessDeserializer::new(map))
}

/// Reads an array as a list of `T`.
fn array_of<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
    while let Some(x) = seq.next_element()? {
        out.push(x);
    }
    Ok(out)
}

/// `author`: an object in current releases, the name in older ones.
#[derive(Debug, Default)]
enum AuthorField<'a> {
    #[default]
    Absent,
    Nested(NestedAuthor<'a>),
    Flat(Scalar<'a>),
}

impl<'de: 'a, 'a> Shape<'de> for AuthorField<'a> {
    fn scalar(s: Scalar<'de>) -> Self {
        AuthorField::Flat(s)
    }

    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        object_as(map).map(AuthorField::Nested)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NestedAuthor<'a> {
    #[serde(borrow)]
    id: Scalar<'a>,
    #[serde(borrow)]
    name: Scalar<'a>,
    #[serde(borrow)]
    display_name: Scalar<'a>,
    #[serde(borrow)]
    badges: Badges<'a>,
}

/// Badges: `[{title}]` (YouTube), `[{name, version}]` (Twitch), `["title"]`,
/// or one string of titles separated by commas (first releases).
#[derive(Debug, Default)]
enum Badges<'a> {
    #[default]
    Absent,
    List(Vec<Badge<'a>>),
    Titles(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Shape<'de> for Badges<'a> {
    fn scalar(s: Scalar<'de>) -> Self {
        match s {
            Scalar::Str(t) => Badges::Titles(t),
            _ => Badges::Other,
        }
    }

    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        array_of(seq).map(Badges::List)
    }
}

impl Badges<'_> {
    fn is_present(&self) -> bool {
        !matches!(self, Badges::Absent)
    }
}

#[derive(Debug)]
enum Badge<'a> {
    Title(Cow<'a, str>),
    Object(BadgeObject<'a>),
    Other,
}

impl<'de: 'a, 'a> Shape<'de> for Badge<'a> {
    fn scalar(s: Scalar<'de>) -> Self {
        match s {
            Scalar::Str(t) => Badge::Title(t),
            _ => Badge::Other,
        }
    }

    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        object_as(map).map(Badge::Object)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BadgeObject<'a> {
    #[serde(borrow)]
    name: Scalar<'a>,
    #[serde(borrow)]
    title: Scalar<'a>,
    #[serde(borrow)]
    version: Scalar<'a>,
}

/// `emotes`, where it is a list.
#[derive(Debug, Default)]
struct Emotes<'a>(Vec<Emote<'a>>);

impl<'de: 'a, 'a> Shape<'de> for Emotes<'a> {
    fn scalar(_: Scalar<'de>) -> Self {
        Emotes::default()
    }

    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        array_of(seq).map(Emotes)
    }
}

/// One emote; anything but an object reads as one without fields.
#[derive(Debug, Default)]
struct Emote<'a>(EmoteObject<'a>);

impl<'de: 'a, 'a> Shape<'de> for Emote<'a> {
    fn scalar(_: Scalar<'de>) -> Self {
        Emote::default()
    }

    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        object_as(map).map(Emote)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EmoteObject<'a> {
    #[serde(borrow)]
    id: Scalar<'a>,
    #[serde(borrow)]
    name: Scalar<'a>,
    #[serde(borrow)]
    locations: Locations<'a>,
}

/// Where an emote is in the text: `"0-4,12-16"` or `["0-4", "12-16"]`.
#[derive(Debug, Default)]
enum Locations<'a> {
    #[default]
    None,
    Joined(Cow<'a, str>),
    List(Vec<Scalar<'a>>),
}

impl<'de: 'a, 'a> Shape<'de> for Locations<'a> {
    fn scalar(s: Scalar<'de>) -> Self {
        match s {
            Scalar::Str(t) => Locations::Joined(t),
            _ => Locations::None,
        }
    }

    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        array_of(seq).map(Locations::List)
    }
}

/// `money` of a paid item; anything but an object reads as none.
#[derive(Debug, Default)]
struct Money<'a>(MoneyObject<'a>);

impl<'de: 'a, 'a> Shape<'de> for Money<'a> {
    fn scalar(_: Scalar<'de>) -> Self {
        Money::default()
    }

    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        object_as(map).map(Money)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MoneyObject<'a> {
    #[serde(borrow)]
    text: Scalar<'a>,
    #[serde(borrow)]
    amount: Scalar<'a>,
    #[serde(borrow)]
    currency: Scalar<'a>,
}

/// One chat-downloader item, every version's fields, read without building
/// a JSON tree: the fields the parser does not use (author images, emote
/// images, colours, ...) are skipped as they are read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Item<'a> {
    #[serde(borrow)]
    action_type: Scalar<'a>,
    #[serde(borrow)]
    message_type: Scalar<'a>,
    #[serde(borrow)]
    message: Scalar<'a>,
    #[serde(borrow)]
    author: AuthorField<'a>,
    #[serde(borrow)]
    author_id: Scalar<'a>,
    #[serde(borrow)]
    author_name: Scalar<'a>,
    #[serde(borrow)]
    author_display_name: Scalar<'a>,
    #[serde(borrow)]
    author_type: Scalar<'a>,
    #[serde(borrow)]
    author_badges: Badges<'a>,
    #[serde(borrow)]
    badges: Badges<'a>,
    #[serde(borrow)]
    external_channel_id: Scalar<'a>,
    #[serde(borrow)]
    id: Scalar<'a>,
    #[serde(borrow)]
    message_id: Scalar<'a>,
    #[serde(borrow)]
    target_message_id: Scalar<'a>,
    #[serde(borrow)]
    target_id: Scalar<'a>,
    #[serde(borrow)]
    target_author_id: Scalar<'a>,
    #[serde(borrow)]
    banned_user: Scalar<'a>,
    #[serde(borrow)]
    ban_duration: Scalar<'a>,
    #[serde(borrow)]
    timestamp: Scalar<'a>,
    #[serde(borrow)]
    time_in_seconds: Scalar<'a>,
    #[serde(borrow)]
    money: Money<'a>,
    #[serde(borrow)]
    purchase_amount_text: Scalar<'a>,
    #[serde(borrow)]
    emotes: Emotes<'a>,
}

impl<'a> Item<'a> {
    /// The item in `bytes` (one JSON object), its strings borrowed from
    /// them. `None` when they hold no object or one this reading refuses
    /// (a key twice): [`Item::from_value`] on the parsed value reads those.
    pub fn from_slice(bytes: &'a [u8]) -> Option<Self> {
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }

    /// The item in a parsed JSON value.
    pub fn from_value(v: &'a Value) -> Result<Self, ParseError> {
        if !v.is_object() {
            return Err(ParseError::new("item is not a JSON object"));
        }
        Item::deserialize(v).map_err(|e| ParseError::new(format!("unreadable item: {e}")))
    }

    /// Whether the item is surely one of chat-downloader's, as
    /// [`looks_like_item`] tells on a JSON value: it names its kind, or
    /// (first releases) holds a message with an author and a time. An item
    /// whose `message` is not text may be a Twitch VOD comment; it is left
    /// to the general way.
    pub fn is_chat_downloader(&self) -> bool {
        if matches!(self.message, Scalar::Other) {
            return false;
        }
        if self.message_type.is_present() || self.action_type.is_present() {
            return true;
        }
        self.message.as_str().is_some()
            && (!matches!(self.author, AuthorField::Absent)
                || self.author_id.is_present()
                || self.author_name.is_present())
            && (self.timestamp.is_present() || self.time_in_seconds.is_present())
    }

    fn nested_author(&self) -> Option<&NestedAuthor<'a>> {
        match &self.author {
            AuthorField::Nested(a) => Some(a),
            _ => None,
        }
    }

    /// `author` where it is the name (not an object).
    fn flat_author(&self) -> &Scalar<'a> {
        match &self.author {
            AuthorField::Flat(s) => s,
            _ => &ABSENT,
        }
    }

    /// The item's kind as the file names it (`action_type`, else
    /// `message_type`, else `message` for a first-release item): what a
    /// skipped item is counted under.
    pub fn kind_name(&self) -> String {
        match (self.action_type.as_str(), self.message_type.as_str()) {
            (Some(a), Some(m)) if a == "add_chat_item" || a == "replace_chat_item" => m.to_owned(),
            (Some(a), _) => a.to_owned(),
            (None, Some(m)) => m.to_owned(),
            (None, None) => "message".to_owned(),
        }
    }

    /// First-release Twitch VOD items: `author_type` and no message type.
    pub fn is_legacy_twitch(&self) -> bool {
        self.author_type.is_present() && !self.message_type.is_present()
    }

    fn target_id(&self) -> Option<&str> {
        self.target_message_id.or(&self.target_id).as_str()
    }

    /// Which platform the item comes from: YouTube author ids are channel
    /// ids (`UC` and 22 more), Twitch's are numbers; items without one are
    /// told by the fields only Twitch items have.
    fn platform(&self) -> Platform {
        let id = self.author_id();
        if id.len() == 24 && id.starts_with("UC") {
            return Platform::Youtube;
        }
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            return Platform::Twitch;
        }
        let twitchy = self.author_type.is_present()
            || self.author_display_name.is_present()
            || self
                .nested_author()
                .is_some_and(|a| a.display_name.is_present())
            || self.ban_duration.is_present()
            || self.banned_user.is_present();
        if twitchy {
            Platform::Twitch
        } else {
            Platform::Youtube
        }
    }

    fn author_id(&self) -> &str {
        let nested = self.nested_author().map_or(&ABSENT, |a| &a.id);
        let legacy = if self.is_legacy_twitch() {
            &self.id
        } else {
            &ABSENT
        };
        nested
            .or(&self.author_id)
            .or(&self.external_channel_id)
            .or(legacy)
            .as_str()
            .unwrap_or("")
    }

    fn what(&self, platform: Platform) -> What {
        let by_action = match self.action_type.as_str() {
            Some("mark_chat_item_as_deleted") => Some(What::Deleted),
            Some("mark_chat_items_by_author_as_deleted") => Some(What::AuthorRemoved),
            Some("add_chat_item" | "replace_chat_item") | None => None,
            Some(_) => Some(What::Skip),
        };
        if let Some(w) = by_action {
            return w;
        }
        match self.message_type.as_str() {
            Some("text_message") => What::Message,
            Some("paid_message") => What::Paid(SupportKind::SuperChat),
            Some("paid_sticker") => What::Paid(SupportKind::SuperSticker),
            Some("membership_item") => What::Membership,
            Some("mark_chat_item_as_deleted_action" | "deleted_message" | "delete_message") => {
                What::Deleted
            }
            Some("mark_chat_items_by_author_as_deleted_action") => What::AuthorRemoved,
            Some("ban_user") if platform == Platform::Youtube => What::AuthorRemoved,
            Some("ban_user") => What::Ban,
            Some("clear_chat") => What::ChatCleared,
            // Without its action: a deletion names its target, a removal
            // only the author.
            Some("deleted_state_message") if self.target_id().is_some() => What::Deleted,
            Some("deleted_state_message") => What::AuthorRemoved,
            Some(_) => What::Skip,
            None if self.message.as_str().is_some() => What::Message,
            None => What::Skip,
        }
    }

    /// The item's time in milliseconds: `timestamp` (microseconds), except
    /// in first-release Twitch VOD items, whose time is `time_in_seconds`
    /// (at least 1 ms: a time of 0 reads as none). `None` when the item has
    /// none.
    fn time_ms(&self) -> Result<Option<i64>, ParseError> {
        if self.is_legacy_twitch() {
            return match &self.time_in_seconds {
                Scalar::Absent => Ok(None),
                t => t
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
                    .map(|s| Some(((s * 1000.0).round() as i64).max(1)))
                    .ok_or_else(|| ParseError::new("time_in_seconds is not a number of seconds")),
            };
        }
        match &self.timestamp {
            Scalar::Absent => Ok(None),
            t => t
                .as_i64()
                .map(|us| Some(us / 1000))
                .ok_or_else(|| ParseError::new("timestamp is not an integer")),
        }
    }

    /// The badges: the nested author's, else `author_badges`, else
    /// `badges`.
    fn badges(&self) -> &Badges<'a> {
        match self.nested_author() {
            Some(a) if a.badges.is_present() => &a.badges,
            _ if self.author_badges.is_present() => &self.author_badges,
            _ => &self.badges,
        }
    }

    fn author(&self, platform: Platform) -> Author {
        let nested = self.nested_author();
        let get = |pick: for<'n> fn(&'n NestedAuthor<'a>) -> &'n Scalar<'a>,
                   flat: &[&Scalar]|
         -> String {
            nested
                .and_then(|a| pick(a).as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| first_text(flat))
        };
        let name = get(|a| &a.name, &[&self.author_name, self.flat_author()]);
        let display = get(|a| &a.display_name, &[&self.author_display_name]);
        let mut roles = Roles::default();
        let badges = self.badges();
        for badge in badge_names(badges) {
            match platform {
                Platform::Twitch => crate::twitch::apply_badge(&mut roles, &badge.to_lowercase()),
                _ => match badge {
                    "Owner" => roles.broadcaster = true,
                    "Moderator" => roles.moderator = true,
                    "Verified" => roles.verified = true,
                    t if t.contains("ember") => {
                        roles.member = true;
                        roles.member_months = member_months(t);
                    }
                    _ => {}
                },
            }
        }
        // Twitch badges name their set; the sub badge's version is months.
        if platform == Platform::Twitch
            && let Badges::List(list) = badges
        {
            for b in list {
                if let Badge::Object(o) = b
                    && matches!(o.name.as_str(), Some("subscriber" | "founder"))
                {
                    roles.member_months = first_text(&[&o.version]).parse().unwrap_or(0);
                }
            }
        }
        Author {
            user_id: self.author_id().to_owned(),
            display_name: if display.is_empty() {
                name.clone()
            } else {
                display
            },
            login: match platform {
                Platform::Twitch => name.to_lowercase(),
                _ => name,
            },
            roles: Some(roles),
        }
    }

    /// Emote positions: Twitch items list `locations` (`"0-4,12-16"`,
    /// inclusive char ranges as in IRC); YouTube items only the emotes'
    /// names, found in the text.
    fn emotes(&self, text: &str) -> Vec<EmoteRange> {
        let list = &self.emotes.0;
        if list.is_empty() {
            return Vec::new();
        }
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let len = chars.len() as u32;
        let mut out = Vec::new();
        for Emote(e) in list {
            let id = first_text(&[&e.id]);
            let locations: Vec<&str> = match &e.locations {
                Locations::Joined(s) => s.split(',').collect(),
                Locations::List(a) => a.iter().filter_map(Scalar::as_str).collect(),
                Locations::None => Vec::new(),
            };
            if !locations.is_empty() {
                for loc in locations {
                    let Some((a, b)) = loc.split_once('-') else {
                        continue;
                    };
                    if let (Ok(start), Ok(last)) =
                        (a.trim().parse::<u32>(), b.trim().parse::<u32>())
                        && start <= last
                        && last < len
                    {
                        out.push(EmoteRange {
                            emote_id: id.clone(),
                            start,
                            end: last + 1,
                        });
                    }
                }
            } else if let Some(name) = e.name.as_str().filter(|n| !n.is_empty()) {
                let width = name.chars().count() as u32;
                for (byte, _) in text.match_indices(name) {
                    let start = chars.partition_point(|(b, _)| *b < byte) as u32;
                    out.push(EmoteRange {
                        emote_id: id.clone(),
                        start,
                        end: start.saturating_add(width),
                    });
                }
            }
        }
        out.sort_by_key(|e| e.start);
        out.dedup_by_key(|e| e.start);
        out
    }

    /// The event the item holds, `None` for a kind that is not chat.
    /// `ts_fallback_ms` stands in for a missing time (the time of the item
    /// before).
    pub fn parse(
        &self,
        ctx: &StreamContext,
        ts_fallback_ms: i64,
    ) -> Result<Option<ChatEvent>, ParseError> {
        let platform = self.platform();
        let text = self.message.as_str().unwrap_or("");
        let kind = match self.what(platform) {
            What::Skip => return Ok(None),
            What::Message => Kind::Message(ChatMessage {
                author: Some(self.author(platform)),
                text: text.to_owned(),
                emotes: self.emotes(text),
                ..ChatMessage::default()
            }),
            What::Paid(kind) => {
                let money = &self.money.0;
                let amount_text = money
                    .text
                    .or(&self.purchase_amount_text)
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let (mut amount_micros, mut currency) = parse_amount(&amount_text);
                if let Some(a) = money.amount.as_f64() {
                    amount_micros = (a * 1e6).round() as i64;
                }
                if let Some(c) = money.currency.as_str() {
                    currency = c.to_owned();
                }
                Kind::Support(Support {
                    author: Some(self.author(platform)),
                    kind: kind as i32,
                    amount_micros,
                    currency,
                    amount_text,
                    text: text.to_owned(),
                    ..Support::default()
                })
            }
            What::Membership => {
                let a = self.author(platform);
                let months = a.roles.as_ref().map_or(0, |r| r.member_months);
                let kind = if text.is_empty() {
                    SupportKind::Membership
                } else {
                    SupportKind::MembershipMilestone
                };
                Kind::Support(Support {
                    author: Some(a),
                    kind: kind as i32,
                    months,
                    text: text.to_owned(),
                    ..Support::default()
                })
            }
            What::Deleted => Kind::MessageDeleted(MessageDeleted {
                target_message_id: self
                    .target_id()
                    .ok_or_else(|| ParseError::new("deletion without target_message_id"))?
                    .to_owned(),
                // Twitch's CLEARMSG says whose message it was.
                user_login: first_text(&[&self.author_name]),
                by_author: platform == Platform::Youtube && retracted(text),
                ..MessageDeleted::default()
            }),
            What::AuthorRemoved => {
                let id = self.author_id();
                if id.is_empty() {
                    return Err(ParseError::new("author removal without author_id"));
                }
                Kind::UserMessagesRemoved(UserMessagesRemoved {
                    user_id: id.to_owned(),
                })
            }
            What::Ban => {
                let user_id = first_text(&[&self.target_author_id, &self.author_id]);
                let user_login = first_text(&[&self.banned_user, &self.author_name]);
                if user_id.is_empty() && user_login.is_empty() {
                    return Err(ParseError::new("ban without the user"));
                }
                match self.ban_duration.as_u64() {
                    Some(d) => Kind::UserTimedOut(UserTimedOut {
                        user_id,
                        user_login,
                        duration_s: u32::try_from(d).unwrap_or(u32::MAX),
                    }),
                    None => Kind::UserBanned(UserBanned {
                        user_id,
                        user_login,
                    }),
                }
            }
            What::ChatCleared => Kind::ChatCleared(ChatCleared {}),
        };
        let ts_ms = self.time_ms()?.unwrap_or(ts_fallback_ms);
        let id = if self.is_legacy_twitch() {
            &ABSENT
        } else {
            &self.id
        };
        let event_id = match self.message_id.or(id).as_str() {
            Some(id) => id.to_owned(),
            None => match &kind {
                Kind::MessageDeleted(d) => format!("deleted:{}", d.target_message_id),
                Kind::UserMessagesRemoved(r) => format!("removed:{}:{ts_ms}", r.user_id),
                // First releases wrote no id: one from what the item says,
                // so the same item read twice is the same event.
                _ => format!(
                    "cd:{:016x}",
                    xxhash_rust::xxh3::xxh3_64(
                        format!("{}\u{1f}{ts_ms}\u{1f}{text}", self.author_id()).as_bytes()
                    )
                ),
            },
        };
        Ok(Some(ChatEvent {
            platform: platform as i32,
            stream_id: ctx.video_id.clone(),
            channel_id: ctx.channel_id.clone(),
            event_id,
            ts_ms,
            kind: Some(kind),
        }))
    }
}

/// Parses one item (a JSON value). `ts_fallback_ms` stands in for a missing
/// time (the time of the item before).
pub fn parse_item(
    item: &Value,
    ctx: &StreamContext,
    ts_fallback_ms: i64,
) -> Result<Option<ChatEvent>, ParseError> {
    Item::from_value(item)?.parse(ctx, ts_fallback_ms)
}

/// Badge names: `[{title}]` (YouTube), `[{name}]` (Twitch), `["title"]`, or
/// one string of titles separated by commas (first releases).
fn badge_names<'s>(badges: &'s Badges) -> Vec<&'s str> {
    match badges {
        Badges::List(list) => list
            .iter()
            .filter_map(|b| match b {
                Badge::Title(s) => Some(s.as_ref()),
                Badge::Object(o) => o.name.or(&o.title).as_str(),
                Badge::Other => None,
            })
            .collect(),
        Badges::Titles(s) => s.split(", ").collect(),
        Badges::Absent | Badges::Other => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(v: &Value) -> ChatEvent {
        parse_item(v, &StreamContext::default(), 77)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn flat_author_with_badges() {
        let v = json!({"action_type": "add_chat_item", "message_type": "text_message", "id": "i",
            "timestamp": 1_607_054_357_301_894_i64, "author": "ChilledCow", "author_id": "UCSJ4gkVC6NrvII8umztf0Ow",
            "author_badges": ["Verified", "Owner", "Member (10 months)"], "message": "hi"});
        let ev = parse(&v);
        assert_eq!(ev.ts_ms, 1_607_054_357_301);
        assert_eq!(ev.platform(), Platform::Youtube);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        let a = m.author.unwrap();
        assert_eq!(a.user_id, "UCSJ4gkVC6NrvII8umztf0Ow");
        let r = a.roles.unwrap();
        assert!(r.verified && r.broadcaster && r.member && !r.moderator);
        assert_eq!(r.member_months, 10);
    }

    #[test]
    fn nested_author_and_paid_message() {
        let v = json!({"message_type": "paid_message", "message_id": "p", "timestamp": 5_000,
            "author": {"name": "n", "id": "UC2", "badges": [{"title": "Moderator"}]},
            "money": {"amount": 5.0, "currency": "USD", "text": "$5.00"}, "message": "thanks"});
        let ev = parse(&v);
        assert_eq!(ev.event_id, "p");
        let Some(Kind::Support(s)) = ev.kind else {
            panic!()
        };
        assert_eq!((s.amount_micros, s.currency.as_str()), (5_000_000, "USD"));
        assert!(s.author.unwrap().roles.unwrap().moderator);
    }

    #[test]
    fn deletions_of_every_version_and_who_made_them() {
        // Current: deleted_message with target_message_id.
        let v = json!({"action_type": "mark_chat_item_as_deleted", "message_type": "deleted_message",
            "message": "[message deleted]", "target_message_id": "T1"});
        let Some(Kind::MessageDeleted(d)) = parse(&v).kind else {
            panic!()
        };
        assert_eq!((d.target_message_id.as_str(), d.by_author), ("T1", false));
        // A dump's deleted_state_message with the author's own retraction.
        let v = json!({"action_type": "mark_chat_item_as_deleted", "message_type": "deleted_state_message",
            "message": "[message retracted]", "target_message_id": "T2"});
        let Some(Kind::MessageDeleted(d)) = parse(&v).kind else {
            panic!()
        };
        assert!(d.by_author);
        // 2020 development build: *_action and target_id; no time, so the
        // fallback.
        let v = json!({"action_type": "mark_chat_item_as_deleted", "message_type": "mark_chat_item_as_deleted_action",
            "message": "[message deleted]", "target_id": "T3"});
        let ev = parse(&v);
        assert_eq!(ev.ts_ms, 77);
        assert!(
            matches!(ev.kind, Some(Kind::MessageDeleted(ref d)) if d.target_message_id == "T3")
        );
        // Removal of an author, in the three spellings.
        for v in [
            json!({"message_type": "mark_chat_items_by_author_as_deleted_action", "author_id": "UC3"}),
            json!({"action_type": "mark_chat_items_by_author_as_deleted", "message_type": "deleted_state_message", "author_id": "UC3"}),
            json!({"action_type": "mark_chat_items_by_author_as_deleted", "message_type": "ban_user", "author": {"id": "UC3"}}),
        ] {
            assert!(
                matches!(parse(&v).kind, Some(Kind::UserMessagesRemoved(ref r)) if r.user_id == "UC3"),
                "{v}"
            );
        }
    }

    #[test]
    fn twitch_items_bans_timeouts_and_badges() {
        let msg = json!({"message_type": "text_message", "message_id": "m", "timestamp": 2_000_000,
            "author": {"id": "123", "name": "Foo", "display_name": "Foo",
                "badges": [{"name": "subscriber", "version": "12", "title": "1-Year Subscriber"}, {"name": "vip", "version": "1"}]},
            "message": "Kappa hi", "emotes": [{"id": "25", "name": "Kappa", "locations": "0-4"}]});
        let ev = parse(&msg);
        assert_eq!(ev.platform(), Platform::Twitch);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        let a = m.author.unwrap();
        assert_eq!(a.login, "foo");
        let r = a.roles.unwrap();
        assert!(r.member && r.vip && r.member_months == 12);
        assert_eq!((m.emotes[0].start, m.emotes[0].end), (0, 5));

        let timeout = json!({"message_type": "ban_user", "timestamp": 3_000_000, "ban_duration": 600,
            "banned_user": "foo", "target_author_id": "123"});
        assert!(matches!(parse(&timeout).kind,
            Some(Kind::UserTimedOut(ref t)) if t.duration_s == 600 && t.user_login == "foo"));
        let ban = json!({"message_type": "ban_user", "timestamp": 3_000_000, "banned_user": "foo", "target_author_id": "123"});
        assert!(matches!(parse(&ban).kind, Some(Kind::UserBanned(_))));
        let clear = json!({"message_type": "clear_chat", "timestamp": 3_000_000, "author_display_name": "x"});
        assert!(matches!(parse(&clear).kind, Some(Kind::ChatCleared(_))));
    }

    #[test]
    fn first_releases_have_no_types_and_no_ids() {
        let yt = json!({"author": "A", "author_id": "UCg1sqBxUL4pSx_e7ucXL7dA", "message": "hi",
            "time_in_seconds": 14, "timestamp": 1_597_516_936_244_955_i64, "badges": "Member (6 months)"});
        assert!(looks_like_item(&yt));
        let ev = parse(&yt);
        assert_eq!(
            (ev.platform(), ev.ts_ms),
            (Platform::Youtube, 1_597_516_936_244)
        );
        assert!(ev.event_id.starts_with("cd:"));
        assert_eq!(ev.event_id, parse(&yt).event_id);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert_eq!(m.author.unwrap().roles.unwrap().member_months, 6);

        // Twitch VOD: `id` is the author's, `timestamp` their account's
        // creation; the time is the video offset.
        let tw = json!({"author_display_name": "K", "author_name": "k", "author_type": "user",
            "id": "537016825", "message": "AGAIN?????", "time_in_seconds": 0.066,
            "timestamp": 1_590_747_502_976_216_i64});
        let ev = parse(&tw);
        assert_eq!((ev.platform(), ev.ts_ms), (Platform::Twitch, 66));
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert_eq!(m.author.unwrap().user_id, "537016825");
    }

    #[test]
    fn skipped_kinds_are_named() {
        let ticker = json!({"action_type": "add_live_chat_ticker_item", "message_type": "ticker_paid_message_item"});
        assert!(
            parse_item(&ticker, &StreamContext::default(), 0)
                .unwrap()
                .is_none()
        );
        let kind = |v: &Value| Item::from_value(v).unwrap().kind_name();
        assert_eq!(kind(&ticker), "add_live_chat_ticker_item");
        assert!(is_known_kind(&kind(&ticker)));
        let new = json!({"action_type": "add_chat_item", "message_type": "hologram_message"});
        assert!(
            parse_item(&new, &StreamContext::default(), 0)
                .unwrap()
                .is_none()
        );
        assert_eq!(kind(&new), "hologram_message");
        assert!(!is_known_kind("hologram_message"));
    }

    #[test]
    fn bad_timestamp_is_malformed() {
        let bad = json!({"message_type": "text_message", "id": "x", "timestamp": "soon"});
        assert!(parse_item(&bad, &StreamContext::default(), 0).is_err());
    }

    /// A value of any type an item's field might hold in some version.
    fn arb_field() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e7f64..1e7).prop_map(Value::from),
            prop_oneof![
                Just("text_message"),
                Just("paid_message"),
                Just("membership_item"),
                Just("ban_user"),
                Just("deleted_state_message"),
                Just("add_chat_item"),
                Just("mark_chat_item_as_deleted"),
                Just("subscriber"),
                Just("Moderator"),
                Just("Member (6 months)"),
                Just("UCabcdefghijklmnopqrstuv"),
                Just("123456"),
                Just("0-1,3-4"),
                Just("$5.00"),
                Just("Kappa"),
                Just("[message retracted]"),
            ]
            .prop_map(Value::from),
            "[a-zA-Z0-9 ,\\-\"\\\\\u{e9}\u{1F600}\n]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            let key = prop_oneof![
                Just("id"),
                Just("name"),
                Just("display_name"),
                Just("title"),
                Just("version"),
                Just("badges"),
                Just("locations"),
                Just("text"),
                Just("amount"),
                Just("currency"),
                Just("url"),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec((key, inner), 0..5).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    /// An object with some of the keys items of any version have.
    fn arb_item() -> impl Strategy<Value = Value> {
        const KEYS: &[&str] = &[
            "action_type",
            "message_type",
            "message",
            "author",
            "author_id",
            "author_name",
            "author_display_name",
            "author_type",
            "author_badges",
            "author_images",
            "badges",
            "external_channel_id",
            "id",
            "message_id",
            "target_message_id",
            "target_id",
            "target_author_id",
            "banned_user",
            "ban_duration",
            "timestamp",
            "time_in_seconds",
            "money",
            "purchase_amount_text",
            "emotes",
        ];
        const KINDS: &[&str] = &[
            "text_message",
            "paid_message",
            "paid_sticker",
            "membership_item",
            "ban_user",
            "clear_chat",
            "deleted_message",
            "deleted_state_message",
            "mark_chat_items_by_author_as_deleted_action",
            "banner",
        ];
        // Most items name a kind the parser reads, so most reach the fields.
        let kind = proptest::option::weighted(0.8, proptest::sample::select(KINDS));
        let fields =
            proptest::collection::vec((proptest::sample::select(KEYS), arb_field()), 0..12);
        (kind, fields).prop_map(|(kind, kv)| {
            let mut item: serde_json::Map<String, Value> = kind
                .map(|k| ("message_type".to_owned(), Value::from(k)))
                .into_iter()
                .collect();
            item.extend(kv.into_iter().map(|(k, v)| (k.to_owned(), v)));
            Value::Object(item)
        })
    }

    proptest! {
        /// An item read from its bytes (the streaming reader's way) is the
        /// item read from its parsed JSON value, whatever its fields hold.
        #[test]
        fn bytes_and_value_read_the_same_item(v in arb_item()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            let ctx = StreamContext::default();
            let from_bytes = Item::from_slice(&bytes).expect("an object without repeated keys");
            let from_value = Item::from_value(&v).unwrap();
            prop_assert_eq!(
                format!("{:?}", from_bytes.parse(&ctx, 5)),
                format!("{:?}", from_value.parse(&ctx, 5))
            );
            prop_assert_eq!(from_bytes.kind_name(), from_value.kind_name());
            prop_assert_eq!(from_bytes.is_legacy_twitch(), from_value.is_legacy_twitch());
            if from_bytes.is_chat_downloader() {
                prop_assert!(looks_like_item(&v) && !crate::twitch_vod::looks_like_comment(&v));
            }
        }
    }

    #[test]
    fn only_objects_are_read_from_bytes() {
        assert!(Item::from_slice(b"[\"text_message\", 1]").is_none());
        assert!(Item::from_slice(b"\"text_message\"").is_none());
        // serde_json keeps the last of a repeated key; this reading refuses
        // the item, and the reader then takes the general way.
        assert!(Item::from_slice(br#"{"message": "a", "message": "b"}"#).is_none());
        assert!(Item::from_value(&json!(["text_message"])).is_err());
        let escaped = br#"{"message_type": "text_message", "id": "x", "timestamp": 2000,
            "message": "say \"hi\"\n", "author": {"id": "UCabcdefghijklmnopqrstuv",
            "name": "Ren\u00e9", "badges": [{"title": "Moderator", "icons": [{"url": "u"}]}]}}"#;
        let ev = Item::from_slice(escaped)
            .unwrap()
            .parse(&StreamContext::default(), 0)
            .unwrap()
            .unwrap();
        let Some(Kind::Message(m)) = ev.kind else {
            panic!("a message")
        };
        assert_eq!(m.text, "say \"hi\"\n");
        let author = m.author.unwrap();
        assert_eq!(author.login, "René");
        assert!(author.roles.unwrap().moderator);
        assert_eq!(ev.ts_ms, 2);
    }
}
