//! What every history store answers with, and its errors.

use base64::Engine;
use spamscope_proto::StreamKey;
use spamscope_proto::v1::{ActionRecord, Decision, Platform, SpamEvent};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store: {0}")]
    Store(String),
    #[error("invalid page token")]
    BadCursor,
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for HistoryError {
            fn from(e: $t) -> Self { HistoryError::Store(e.to_string()) }
        }
    )*};
}
store_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    prost::DecodeError
);

/// One page of results and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A spam that matches a search, with where and when it was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamMatch {
    pub fingerprint: String,
    pub text: String,
    pub similarity: f64,
    pub sightings: Vec<SpamEvent>,
}

pub(crate) fn stream_key(platform: i32, id: &str) -> String {
    StreamKey::format(Platform::of(platform), id)
}

pub(crate) fn encode_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

pub(crate) fn decode_cursor(c: &str) -> Result<String, HistoryError> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| HistoryError::BadCursor)?;
    String::from_utf8(b).map_err(|_| HistoryError::BadCursor)
}

/// Which user a decision is indexed under, and another name that finds it.
///
/// - Twitch: the login (lower case), found by the user id as well.
/// - YouTube: the author's channel id (lower case), the one stable id: two
///   authors may share a display name and one can change it. Found by the
///   display name too (the channel id that name last had).
///
/// The alias is `(alias, indexed user)` when it differs from the key.
pub fn decision_user(d: &Decision) -> (String, Option<(String, String)>) {
    indexed_user(d.platform, &d.user_login, &d.user_id)
}

/// [`decision_user`] of a platform, login and user id: actions are
/// indexed under the same user as decisions, so one name finds both.
pub fn indexed_user(platform: i32, login: &str, id: &str) -> (String, Option<(String, String)>) {
    let (login, id) = (login.to_lowercase(), id.to_lowercase());
    let by_id = Platform::of(platform) == Platform::Youtube && !id.is_empty();
    let (user, alias) = if by_id || login.is_empty() {
        (id, login)
    } else {
        (login, id)
    };
    let alias = (!alias.is_empty() && alias != user).then(|| (alias, user.clone()));
    (user, alias)
}

/// Where an action record is kept: (indexed user, the record's id within
/// its stream and time). A record is one action of one rule, nuke or
/// moderator; its later updates (pending, then done or failed) carry the
/// same id.
pub(crate) fn action_key(a: &ActionRecord) -> (String, Option<(String, String)>, String) {
    let (user, alias) = indexed_user(a.platform, &a.user_login, &a.user_id);
    (user, alias, format!("{:020}.{}", a.record_id, a.action))
}

/// An update of a record replaces the kept one unless the kept one is
/// further along: a platform's answer (done, failed) is final, and a
/// redelivered `pending` written after it must not undo it.
pub(crate) fn action_rank(status: &str) -> i32 {
    match status {
        "done" | "failed" => 1,
        _ => 0,
    }
}
