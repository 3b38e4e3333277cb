//! One async interface over both stores.

use std::sync::Arc;

use spamscope_proto::v1::{ActionRecord, Decision, SpamEvent};

use crate::scylla_store::ScyllaHistory;
use crate::{HistoryError, HistoryStore, Page, SpamMatch};

#[derive(Debug, Clone)]
pub enum History {
    Embedded(Arc<HistoryStore>),
    Scylla(Arc<ScyllaHistory>),
}

/// Runs a call on the embedded store off the async threads.
macro_rules! blocking {
    ($h:expr, |$s:ident| $body:expr) => {{
        let $s = Arc::clone($h);
        tokio::task::spawn_blocking(move || $body)
            .await
            .map_err(|e| HistoryError::Store(e.to_string()))?
    }};
}

impl History {
    pub async fn write(
        &self,
        events: Vec<SpamEvent>,
        decisions: Vec<Decision>,
        actions: Vec<ActionRecord>,
    ) -> Result<(), HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.write(&events, &decisions, &actions)),
            History::Scylla(s) => s.write(&events, &decisions, &actions).await,
        }
    }

    /// Actions in a stream, newest first; with `user`, only theirs.
    pub async fn channel_actions(
        &self,
        stream: String,
        user: Option<String>,
        size: usize,
        cursor: Option<String>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.channel_actions(
                &stream,
                user.as_deref(),
                size,
                cursor.as_deref()
            )),
            History::Scylla(s) => {
                s.channel_actions(&stream, user.as_deref(), size, cursor.as_deref())
                    .await
            }
        }
    }

    /// Actions about a user in every stream, newest first.
    pub async fn user_actions(
        &self,
        user: String,
        size: usize,
        cursor: Option<String>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        match self {
            History::Embedded(h) => {
                blocking!(h, |s| s.user_actions(&user, size, cursor.as_deref()))
            }
            History::Scylla(s) => s.user_actions(&user, size, cursor.as_deref()).await,
        }
    }

    pub async fn sightings(
        &self,
        fp: String,
        size: usize,
        cursor: Option<String>,
    ) -> Result<Page<SpamEvent>, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.sightings(&fp, size, cursor.as_deref())),
            History::Scylla(s) => s.sightings(&fp, size, cursor.as_deref()).await,
        }
    }

    pub async fn channel_events(
        &self,
        stream: String,
        from: i64,
        to: i64,
        size: usize,
        cursor: Option<String>,
    ) -> Result<Page<SpamEvent>, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.channel_events(
                &stream,
                from,
                to,
                size,
                cursor.as_deref()
            )),
            History::Scylla(s) => {
                s.channel_events(&stream, from, to, size, cursor.as_deref())
                    .await
            }
        }
    }

    pub async fn channel_decisions(
        &self,
        stream: String,
        from: i64,
        to: i64,
        size: usize,
        cursor: Option<String>,
    ) -> Result<Page<Decision>, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.channel_decisions(
                &stream,
                from,
                to,
                size,
                cursor.as_deref()
            )),
            History::Scylla(s) => {
                s.channel_decisions(&stream, from, to, size, cursor.as_deref())
                    .await
            }
        }
    }

    pub async fn user_decisions(
        &self,
        user: String,
        size: usize,
        cursor: Option<String>,
    ) -> Result<Page<Decision>, HistoryError> {
        match self {
            History::Embedded(h) => {
                blocking!(h, |s| s.user_decisions(&user, size, cursor.as_deref()))
            }
            History::Scylla(s) => s.user_decisions(&user, size, cursor.as_deref()).await,
        }
    }

    pub async fn spam_rate(
        &self,
        stream: String,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, u64)>, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.spam_rate(&stream, from, to)),
            History::Scylla(s) => s.spam_rate(&stream, from, to).await,
        }
    }

    pub async fn search(
        &self,
        text: String,
        min: f64,
        size: usize,
        cursor: Option<String>,
        per_match: usize,
    ) -> Result<Page<SpamMatch>, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.search(
                &text,
                min,
                size,
                cursor.as_deref(),
                per_match
            )),
            History::Scylla(s) => {
                s.search(&text, min, size, cursor.as_deref(), per_match)
                    .await
            }
        }
    }

    /// Drops records older than `cutoff_ms` (Scylla expires rows by TTL).
    pub async fn expire(&self, cutoff_ms: i64) -> Result<usize, HistoryError> {
        match self {
            History::Embedded(h) => blocking!(h, |s| s.expire(cutoff_ms)),
            History::Scylla(_) => Ok(0),
        }
    }
}
