//! History of spam: where and when each spam message was seen, and the
//! decisions about users, queryable by fingerprint, channel, user, time and
//! by fuzzy text.
//!
//! Parts:
//! - [`HistoryStore`] (`embedded`): the embedded store (redb: one file, ACID, crash-safe,
//!   pure Rust), used on one machine and in standalone mode.
//! - [`scylla_store::ScyllaHistory`]: the same queries on Scylla (keyspace
//!   and tables created at start, prepared statements, driver paging as
//!   opaque cursors, TTL and consistency configurable).
//! - [`any::History`]: either, behind one async interface.
//! - Queries: sightings of a spam (newest first), spam events and decisions
//!   of a channel in a time range (newest first), decisions about a user
//!   across channels, spam messages per channel per minute, and fuzzy search:
//!   the query text is normalised like chat and its MinHash signature looked
//!   up in LSH band tables (not a scan), so a pasted variant of a copypasta
//!   (other emotes, zero-width characters, case) finds the same events.
//! - Paging with opaque cursors; records older than the TTL are dropped by
//!   [`HistoryStore::expire`].
//!
//! - The audit trail of actions (suggested or taken, with their status,
//!   the rule, nuke or moderator behind them and the evidence): per stream,
//!   per user in a stream, and per user across streams, newest first.
//!
//! Writes are idempotent: a spam event is kept at its highest version, a
//! decision once per (stream, user), an action at its latest status (a
//! platform's answer is never replaced by an earlier status).

//!
//! Modules: `types` (pages, matches, errors, cursors), `search` (the
//! signatures and LSH bands both stores index), `embedded`,
//! [`scylla_store`], [`any`].

pub mod any;
mod embedded;
pub mod scylla_store;
mod search;
mod types;

pub use embedded::HistoryStore;
pub(crate) use search::{band_keys, signatures, similarity};
pub use types::{HistoryError, Page, SpamMatch};
pub(crate) use types::{action_key, action_rank, decode_cursor, encode_cursor, stream_key};
