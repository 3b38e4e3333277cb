//! The history on Scylla (or Cassandra).
//!
//! Tables, created at start if missing (keyspace name, replication, TTL and
//! consistency are configuration):
//! - `spam_events ((stream), event_id)`: the latest version of each event;
//! - `events_by_fingerprint ((fingerprint), last_seen DESC, stream,
//!   event_id)` and `events_by_stream ((stream), last_seen DESC, event_id)`:
//!   newest-first indexes;
//! - `decisions_at ((stream), user, at)`: every decision about a user in a
//!   stream (flagged again after the detector forgot them, say);
//!   `decisions ((stream), user)`, where releases before kept one per user,
//!   is still read until its rows expire;
//!   `decisions_by_user ((user), at DESC, stream)`, `decisions_by_stream
//!   ((stream), at DESC, user)`;
//!   `user_logins (user_id)`: another name of a user (column `user_id`:
//!   a Twitch user id, a YouTube display name) → the user its decisions are
//!   indexed under (`types::decision_user`), so they are found by it too;
//! - `spam_rate ((stream), minute, event_id, version)`: messages added by
//!   spam-class events (not crowd reactions),
//!   each event version, summed per minute on read (idempotent, no counters);
//! - `signatures (fingerprint)` and `lsh_bands ((band), fingerprint)`: the
//!   fuzzy-search index, as in the embedded store;
//! - the audit trail, one table per query, each row holding the record at
//!   its latest status: `actions ((stream), at DESC, id)`,
//!   `actions_by_user ((user), at DESC, stream, id)` and
//!   `actions_by_stream_user ((stream, user), at DESC, id)` (the user as
//!   decisions are indexed; `id` is the record id and the action).
//!
//! Point reads and writes are prepared once. Time-range reads are built
//! per request with their integer bounds inlined (never user text: the
//! in-process CQL server the tests use mis-reports bind markers in range
//! conditions), and paged by the driver's paging state, encoded as an
//! opaque cursor. The rows a page or a search names are then read
//! concurrently ([`LOOKUPS_IN_FLIGHT`] at a time, in order), not one query
//! after another. Rows expire with `USING TTL` when a TTL is
//! set, so [`ScyllaHistory::expire`] has nothing to do.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryRowsResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;
use spamscope_detect::clusters::Signer;
use spamscope_proto::v1::{ActionRecord, Decision, SpamEvent};

use crate::{HistoryError, Page, SpamMatch, band_keys, signatures, similarity, stream_key};
use prost::Message;

#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// CQL replication map, e.g. `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`.
    pub replication: String,
    /// Seconds; 0 = keep forever.
    pub ttl_s: u32,
    pub consistency: Consistency,
    /// Schema agreement and schema metadata (off for single-node test
    /// servers that do not publish peers).
    pub cluster_metadata: bool,
    /// (user, password) for a cluster that asks for a login
    /// (PasswordAuthenticator).
    pub login: Option<(String, String)>,
    /// PEM certificate authority: connect over TLS, trusting it.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "spamscope".into(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            ttl_s: 30 * 86_400,
            consistency: Consistency::LocalQuorum,
            cluster_metadata: true,
            login: None,
            ca_pem: None,
        }
    }
}

/// A query of one partition over a range of one clustering column.
struct RangeQuery {
    select: &'static str,
    table: &'static str,
    key: &'static str,
    col: &'static str,
}

const CHANNEL_EVENTS: RangeQuery = RangeQuery {
    select: "event_id",
    table: "events_by_stream",
    key: "stream",
    col: "last_seen",
};
const CHANNEL_DECISIONS: RangeQuery = RangeQuery {
    select: "user, at",
    table: "decisions_by_stream",
    key: "stream",
    col: "at",
};
const SPAM_RATE: RangeQuery = RangeQuery {
    select: "minute, added",
    table: "spam_rate",
    key: "stream",
    col: "minute",
};

struct Prepared {
    get_action_rank: PreparedStatement,
    put_action: PreparedStatement,
    put_act_user: PreparedStatement,
    put_act_stream_user: PreparedStatement,
    channel_actions: PreparedStatement,
    channel_user_actions: PreparedStatement,
    user_actions: PreparedStatement,
    get_event: PreparedStatement,
    put_event: PreparedStatement,
    del_by_fp: PreparedStatement,
    put_by_fp: PreparedStatement,
    del_by_stream: PreparedStatement,
    put_by_stream: PreparedStatement,
    put_rate: PreparedStatement,
    get_sig: PreparedStatement,
    put_sig: PreparedStatement,
    put_band: PreparedStatement,
    get_band: PreparedStatement,
    get_decision: PreparedStatement,
    get_old_decision: PreparedStatement,
    put_decision: PreparedStatement,
    put_dec_user: PreparedStatement,
    put_dec_stream: PreparedStatement,
    sightings: PreparedStatement,
    user_decisions: PreparedStatement,
    put_user_login: PreparedStatement,
    get_user_login: PreparedStatement,
}

pub struct ScyllaHistory {
    session: Session,
    st: Prepared,
    signer: Signer,
    keyspace: String,
    consistency: Consistency,
}

impl std::fmt::Debug for ScyllaHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScyllaHistory")
    }
}

/// A `signatures` row: character and word signatures, and the text.
type SignatureRow = (Vec<u8>, Vec<u8>, String);

/// Point reads in flight at once for one page or one search.
pub const LOOKUPS_IN_FLIGHT: usize = 16;

/// The first (only) column of every row.
fn first_column<'f, T>(rows: &'f QueryRowsResult) -> Result<Vec<T>, HistoryError>
where
    (T,): DeserializeRow<'f, 'f>,
{
    rows.rows::<(T,)>()
        .map_err(err)?
        .map(|r| r.map(|(v,)| v).map_err(err))
        .collect()
}

fn two_columns<'f, A, B>(rows: &'f QueryRowsResult) -> Result<Vec<(A, B)>, HistoryError>
where
    (A, B): DeserializeRow<'f, 'f>,
{
    rows.rows::<(A, B)>()
        .map_err(err)?
        .map(|r| r.map_err(err))
        .collect()
}

/// Looks every key up, [`LOOKUPS_IN_FLIGHT`] at a time, in the keys'
/// order; keys that find nothing are left out.
async fn lookup_all<K, T, F, Fut>(keys: Vec<K>, lookup: F) -> Result<Vec<T>, HistoryError>
where
    F: FnMut(K) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, HistoryError>>,
{
    let found: Vec<Option<T>> = futures::stream::iter(keys)
        .map(lookup)
        .buffered(LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

fn err(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Store(format!("scylla: {e}"))
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn cursor_state(cursor: Option<&str>) -> Result<PagingState, HistoryError> {
    match cursor {
        None => Ok(PagingState::start()),
        Some(c) => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| HistoryError::BadCursor)?;
            Ok(PagingState::new_from_raw_bytes(raw))
        }
    }
}

fn next_cursor(p: PagingStateResponse) -> Option<String> {
    use base64::Engine;
    match p {
        PagingStateResponse::HasMorePages { state } => state
            .as_bytes_slice()
            .map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.as_ref())),
        PagingStateResponse::NoMorePages => None,
    }
}

/// A TLS client configuration trusting the certificate authorities in
/// `pem` only.
pub fn tls_config(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, HistoryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| HistoryError::Store(format!("certificate authority: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl ScyllaHistory {
    /// Connects, creates or migrates the keyspace and tables, prepares
    /// every statement.
    pub async fn connect(cfg: &ScyllaConfig) -> Result<Self, HistoryError> {
        if !valid_ident(&cfg.keyspace) {
            return Err(HistoryError::Store(format!(
                "keyspace {:?} is not a valid identifier",
                cfg.keyspace
            )));
        }
        let mut builder = SessionBuilder::new()
            .known_nodes(&cfg.nodes)
            .auto_await_schema_agreement(cfg.cluster_metadata)
            .fetch_schema_metadata(cfg.cluster_metadata);
        if let Some((user, password)) = &cfg.login {
            builder = builder.user(user, password);
        }
        if let Some(pem) = &cfg.ca_pem {
            builder = builder.tls_context(Some(tls_config(pem)?));
        }
        let session = builder.build().await.map_err(err)?;
        let ks = &cfg.keyspace;
        let ttl = if cfg.ttl_s > 0 {
            format!(" USING TTL {}", cfg.ttl_s)
        } else {
            String::new()
        };
        let ddl = [
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH REPLICATION = {}",
                cfg.replication
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.spam_events (stream text, event_id bigint, version bigint, body blob, PRIMARY KEY ((stream), event_id))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.events_by_fingerprint (fingerprint text, last_seen bigint, stream text, event_id bigint, PRIMARY KEY ((fingerprint), last_seen, stream, event_id)) WITH CLUSTERING ORDER BY (last_seen DESC, stream ASC, event_id ASC)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.events_by_stream (stream text, last_seen bigint, event_id bigint, PRIMARY KEY ((stream), last_seen, event_id)) WITH CLUSTERING ORDER BY (last_seen DESC, event_id ASC)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.decisions (stream text, user text, at bigint, body blob, PRIMARY KEY ((stream), user))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.decisions_at (stream text, user text, at bigint, body blob, PRIMARY KEY ((stream), user, at))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.decisions_by_user (user text, at bigint, stream text, PRIMARY KEY ((user), at, stream)) WITH CLUSTERING ORDER BY (at DESC, stream ASC)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.user_logins (user_id text PRIMARY KEY, user text)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.decisions_by_stream (stream text, at bigint, user text, PRIMARY KEY ((stream), at, user)) WITH CLUSTERING ORDER BY (at DESC, user ASC)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.spam_rate (stream text, minute bigint, event_id bigint, version bigint, added bigint, PRIMARY KEY ((stream), minute, event_id, version))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.signatures (fingerprint text PRIMARY KEY, chars blob, words blob, text text)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.lsh_bands (band text, fingerprint text, PRIMARY KEY ((band), fingerprint))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.actions (stream text, at bigint, id text, status_rank int, body blob, PRIMARY KEY ((stream), at, id)) WITH CLUSTERING ORDER BY (at DESC, id ASC)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.actions_by_user (user text, at bigint, stream text, id text, body blob, PRIMARY KEY ((user), at, stream, id)) WITH CLUSTERING ORDER BY (at DESC, stream ASC, id ASC)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.actions_by_stream_user (stream text, user text, at bigint, id text, body blob, PRIMARY KEY ((stream, user), at, id)) WITH CLUSTERING ORDER BY (at DESC, id ASC)"
            ),
        ];
        for stmt in &ddl {
            session
                .query_unpaged(stmt.as_str(), ())
                .await
                .map_err(err)?;
        }
        let prep = |q: String| {
            let session = &session;
            async move {
                let mut p = session.prepare(q).await.map_err(err)?;
                p.set_consistency(cfg.consistency);
                Ok::<_, HistoryError>(p)
            }
        };
        let st = Prepared {
            get_event: prep(format!("SELECT version, body FROM {ks}.spam_events WHERE stream = ? AND event_id = ?")).await?,
            put_event: prep(format!("INSERT INTO {ks}.spam_events (stream, event_id, version, body) VALUES (?, ?, ?, ?){ttl}")).await?,
            del_by_fp: prep(format!("DELETE FROM {ks}.events_by_fingerprint WHERE fingerprint = ? AND last_seen = ? AND stream = ? AND event_id = ?")).await?,
            put_by_fp: prep(format!("INSERT INTO {ks}.events_by_fingerprint (fingerprint, last_seen, stream, event_id) VALUES (?, ?, ?, ?){ttl}")).await?,
            del_by_stream: prep(format!("DELETE FROM {ks}.events_by_stream WHERE stream = ? AND last_seen = ? AND event_id = ?")).await?,
            put_by_stream: prep(format!("INSERT INTO {ks}.events_by_stream (stream, last_seen, event_id) VALUES (?, ?, ?){ttl}")).await?,
            put_rate: prep(format!("INSERT INTO {ks}.spam_rate (stream, minute, event_id, version, added) VALUES (?, ?, ?, ?, ?){ttl}")).await?,
            get_sig: prep(format!("SELECT chars, words, text FROM {ks}.signatures WHERE fingerprint = ?")).await?,
            put_sig: prep(format!("INSERT INTO {ks}.signatures (fingerprint, chars, words, text) VALUES (?, ?, ?, ?){ttl}")).await?,
            put_band: prep(format!("INSERT INTO {ks}.lsh_bands (band, fingerprint) VALUES (?, ?){ttl}")).await?,
            get_band: prep(format!("SELECT fingerprint FROM {ks}.lsh_bands WHERE band = ?")).await?,
            get_decision: prep(format!("SELECT body FROM {ks}.decisions_at WHERE stream = ? AND user = ? AND at = ?")).await?,
            get_old_decision: prep(format!("SELECT at, body FROM {ks}.decisions WHERE stream = ? AND user = ?")).await?,
            put_decision: prep(format!("INSERT INTO {ks}.decisions_at (stream, user, at, body) VALUES (?, ?, ?, ?){ttl}")).await?,
            put_dec_user: prep(format!("INSERT INTO {ks}.decisions_by_user (user, at, stream) VALUES (?, ?, ?){ttl}")).await?,
            put_dec_stream: prep(format!("INSERT INTO {ks}.decisions_by_stream (stream, at, user) VALUES (?, ?, ?){ttl}")).await?,
            sightings: prep(format!("SELECT stream, event_id FROM {ks}.events_by_fingerprint WHERE fingerprint = ?")).await?,
            user_decisions: prep(format!("SELECT stream, at FROM {ks}.decisions_by_user WHERE user = ?")).await?,
            put_user_login: prep(format!("INSERT INTO {ks}.user_logins (user_id, user) VALUES (?, ?){ttl}")).await?,
            get_user_login: prep(format!("SELECT user FROM {ks}.user_logins WHERE user_id = ?")).await?,
            get_action_rank: prep(format!("SELECT status_rank FROM {ks}.actions WHERE stream = ? AND at = ? AND id = ?")).await?,
            put_action: prep(format!("INSERT INTO {ks}.actions (stream, at, id, status_rank, body) VALUES (?, ?, ?, ?, ?){ttl}")).await?,
            put_act_user: prep(format!("INSERT INTO {ks}.actions_by_user (user, at, stream, id, body) VALUES (?, ?, ?, ?, ?){ttl}")).await?,
            put_act_stream_user: prep(format!("INSERT INTO {ks}.actions_by_stream_user (stream, user, at, id, body) VALUES (?, ?, ?, ?, ?){ttl}")).await?,
            channel_actions: prep(format!("SELECT body FROM {ks}.actions WHERE stream = ?")).await?,
            channel_user_actions: prep(format!("SELECT body FROM {ks}.actions_by_stream_user WHERE stream = ? AND user = ?")).await?,
            user_actions: prep(format!("SELECT body FROM {ks}.actions_by_user WHERE user = ?")).await?,
        };
        Ok(Self {
            session,
            st,
            signer: Signer::default(),
            keyspace: ks.clone(),
            consistency: cfg.consistency,
        })
    }

    async fn event(&self, stream: &str, id: i64) -> Result<Option<(i64, SpamEvent)>, HistoryError> {
        let rows = self
            .session
            .execute_unpaged(&self.st.get_event, (stream, id))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let row = rows.maybe_first_row::<(i64, Vec<u8>)>().map_err(err)?;
        Ok(match row {
            Some((v, body)) => Some((v, SpamEvent::decode(body.as_slice())?)),
            None => None,
        })
    }

    /// Writes a batch. Idempotent: older versions and repeated decisions are
    /// skipped (read before write; one writer per store is assumed).
    pub async fn write(
        &self,
        events: &[SpamEvent],
        decisions: &[Decision],
        actions: &[ActionRecord],
    ) -> Result<(), HistoryError> {
        for e in events {
            let stream = stream_key(e.platform, &e.stream_id);
            let id = e.event_id as i64;
            let prev = self.event(&stream, id).await?;
            if prev.as_ref().is_some_and(|(v, _)| *v >= e.version as i64) {
                continue;
            }
            if let Some((_, p)) = &prev {
                self.session
                    .execute_unpaged(
                        &self.st.del_by_fp,
                        (&p.fingerprint, p.last_seen_ms, &stream, id),
                    )
                    .await
                    .map_err(err)?;
                self.session
                    .execute_unpaged(&self.st.del_by_stream, (&stream, p.last_seen_ms, id))
                    .await
                    .map_err(err)?;
            }
            self.session
                .execute_unpaged(
                    &self.st.put_event,
                    (&stream, id, e.version as i64, e.encode_to_vec()),
                )
                .await
                .map_err(err)?;
            self.session
                .execute_unpaged(
                    &self.st.put_by_fp,
                    (&e.fingerprint, e.last_seen_ms, &stream, id),
                )
                .await
                .map_err(err)?;
            self.session
                .execute_unpaged(&self.st.put_by_stream, (&stream, e.last_seen_ms, id))
                .await
                .map_err(err)?;
            let added = e
                .count
                .saturating_sub(prev.as_ref().map_or(0, |(_, p)| p.count));
            // Crowd reactions are chat, not spam.
            if added > 0 && e.spam {
                let minute = e.last_seen_ms.div_euclid(60_000) * 60_000;
                self.session
                    .execute_unpaged(
                        &self.st.put_rate,
                        (&stream, minute, id, e.version as i64, added as i64),
                    )
                    .await
                    .map_err(err)?;
            }
            let known = self
                .session
                .execute_unpaged(&self.st.get_sig, (&e.fingerprint,))
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?
                .rows_num()
                > 0;
            if !known {
                let (chars, words) = signatures(&self.signer, &e.text);
                let bytes = |s: &[u32]| s.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                self.session
                    .execute_unpaged(
                        &self.st.put_sig,
                        (&e.fingerprint, bytes(&chars), bytes(&words), &e.text),
                    )
                    .await
                    .map_err(err)?;
                for b in band_keys('c', &chars)
                    .into_iter()
                    .chain(band_keys('w', &words))
                {
                    self.session
                        .execute_unpaged(&self.st.put_band, (b, &e.fingerprint))
                        .await
                        .map_err(err)?;
                }
            }
        }
        for d in decisions {
            let stream = stream_key(d.platform, &d.stream_id);
            let (user, alias) = crate::types::decision_user(d);
            if let Some((alias, user)) = alias {
                self.session
                    .execute_unpaged(&self.st.put_user_login, (&alias, &user))
                    .await
                    .map_err(err)?;
            }
            // Keyed by its time, a decision written again (a redelivery)
            // writes the same rows: no read first.
            self.session
                .execute_unpaged(
                    &self.st.put_decision,
                    (&stream, &user, d.at_ms, d.encode_to_vec()),
                )
                .await
                .map_err(err)?;
            self.session
                .execute_unpaged(&self.st.put_dec_user, (&user, d.at_ms, &stream))
                .await
                .map_err(err)?;
            self.session
                .execute_unpaged(&self.st.put_dec_stream, (&stream, d.at_ms, &user))
                .await
                .map_err(err)?;
        }
        for a in actions {
            self.write_action(a).await?;
        }
        Ok(())
    }

    /// One action record, unless the kept one is further along
    /// ([`crate::action_rank`]).
    async fn write_action(&self, a: &ActionRecord) -> Result<(), HistoryError> {
        let stream = stream_key(a.platform, &a.stream_id);
        let (user, alias, id) = crate::action_key(a);
        let rank = crate::action_rank(&a.status);
        let kept = self
            .session
            .execute_unpaged(&self.st.get_action_rank, (&stream, a.at_ms, &id))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        if first_column::<i32>(&kept)?
            .first()
            .is_some_and(|k| *k > rank)
        {
            return Ok(());
        }
        if let Some((alias, user)) = alias {
            self.session
                .execute_unpaged(&self.st.put_user_login, (&alias, &user))
                .await
                .map_err(err)?;
        }
        let body = a.encode_to_vec();
        self.session
            .execute_unpaged(&self.st.put_action, (&stream, a.at_ms, &id, rank, &body))
            .await
            .map_err(err)?;
        if !user.is_empty() {
            self.session
                .execute_unpaged(&self.st.put_act_user, (&user, a.at_ms, &stream, &id, &body))
                .await
                .map_err(err)?;
            self.session
                .execute_unpaged(
                    &self.st.put_act_stream_user,
                    (&stream, &user, a.at_ms, &id, &body),
                )
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Actions in a stream, newest first; with `user`, only theirs.
    pub async fn channel_actions(
        &self,
        stream: &str,
        user: Option<&str>,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        match user {
            None => {
                self.actions_page(&self.st.channel_actions, (stream,), page_size, cursor)
                    .await
            }
            Some(user) => {
                let user = self.resolve_user(user).await?;
                self.actions_page(
                    &self.st.channel_user_actions,
                    (stream, user.as_str()),
                    page_size,
                    cursor,
                )
                .await
            }
        }
    }

    /// Actions about a user in every stream, newest first.
    pub async fn user_actions(
        &self,
        user: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        let user = self.resolve_user(user).await?;
        self.actions_page(&self.st.user_actions, (user.as_str(),), page_size, cursor)
            .await
    }

    /// The user actions are indexed under: `user`, or the user another
    /// name of theirs (a Twitch id, a YouTube display name) stands for.
    async fn resolve_user(&self, user: &str) -> Result<String, HistoryError> {
        let user = user.to_lowercase();
        Ok(self.user_of_alias(&user).await?.unwrap_or(user))
    }

    /// The user another name (lower case: a Twitch id, a YouTube display
    /// name) stands for, if it is one.
    async fn user_of_alias(&self, name: &str) -> Result<Option<String>, HistoryError> {
        let rows = self
            .session
            .execute_unpaged(&self.st.get_user_login, (name,))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(first_column::<String>(&rows)?.into_iter().next())
    }

    async fn actions_page(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        let mut st = st.clone();
        st.set_page_size(page_size.max(1) as i32);
        let (res, paging) = self
            .session
            .execute_single_page(&st, values, cursor_state(cursor)?)
            .await
            .map_err(err)?;
        let rows = res.into_rows_result().map_err(err)?;
        let items = first_column::<Vec<u8>>(&rows)?
            .iter()
            .map(|b| ActionRecord::decode(b.as_slice()).map_err(HistoryError::from))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next: next_cursor(paging),
        })
    }

    /// The decision about `user` in `stream` at `at`, from its table or
    /// from the table of the releases that kept one per user.
    async fn decision(
        &self,
        stream: &str,
        user: &str,
        at: i64,
    ) -> Result<Option<Decision>, HistoryError> {
        let rows = self
            .session
            .execute_unpaged(&self.st.get_decision, (stream, user, at))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        if let Some((b,)) = rows.maybe_first_row::<(Vec<u8>,)>().map_err(err)? {
            return Ok(Some(Decision::decode(b.as_slice())?));
        }
        let rows = self
            .session
            .execute_unpaged(&self.st.get_old_decision, (stream, user))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(
            match rows.maybe_first_row::<(i64, Vec<u8>)>().map_err(err)? {
                Some((old_at, b)) if old_at == at => Some(Decision::decode(b.as_slice())?),
                _ => None,
            },
        )
    }

    pub async fn sightings(
        &self,
        fingerprint: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<SpamEvent>, HistoryError> {
        let mut st = self.st.sightings.clone();
        st.set_page_size(page_size.max(1) as i32);
        let (res, paging) = self
            .session
            .execute_single_page(&st, (fingerprint,), cursor_state(cursor)?)
            .await
            .map_err(err)?;
        let rows = res.into_rows_result().map_err(err)?;
        let mut items = Vec::new();
        for r in rows.rows::<(String, i64)>().map_err(err)? {
            let (stream, id) = r.map_err(err)?;
            if let Some((_, e)) = self.event(&stream, id).await? {
                items.push(e);
            }
        }
        Ok(Page {
            items,
            next: next_cursor(paging),
        })
    }

    /// A time-range statement. The bounds are integers this code formats,
    /// inlined as literals (never user text): the in-process CQL server the
    /// tests use mis-reports bind markers in range conditions.
    fn range_statement(&self, q: &RangeQuery, from: i64, to: i64, page_size: usize) -> Statement {
        let RangeQuery {
            select,
            table,
            key,
            col,
        } = q;
        let mut st = Statement::new(format!(
            "SELECT {select} FROM {}.{table} WHERE {key} = ? AND {col} >= {from} AND {col} <= {to}",
            self.keyspace
        ));
        st.set_consistency(self.consistency);
        st.set_page_size(page_size.max(1) as i32);
        st
    }

    pub async fn channel_events(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<SpamEvent>, HistoryError> {
        let st = self.range_statement(&CHANNEL_EVENTS, from_ms, to_ms, page_size);
        let (res, paging) = self
            .session
            .query_single_page(st, (stream,), cursor_state(cursor)?)
            .await
            .map_err(err)?;
        let rows = res.into_rows_result().map_err(err)?;
        let ids: Vec<i64> = first_column(&rows)?;
        let items = lookup_all(ids, |id| async move {
            Ok(self.event(stream, id).await?.map(|(_, e)| e))
        })
        .await?;
        Ok(Page {
            items,
            next: next_cursor(paging),
        })
    }

    pub async fn channel_decisions(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Decision>, HistoryError> {
        let st = self.range_statement(&CHANNEL_DECISIONS, from_ms, to_ms, page_size);
        let (res, paging) = self
            .session
            .query_single_page(st, (stream,), cursor_state(cursor)?)
            .await
            .map_err(err)?;
        let rows = res.into_rows_result().map_err(err)?;
        let users: Vec<(String, i64)> = two_columns(&rows)?;
        let items = lookup_all(users, |(user, at)| async move {
            self.decision(stream, &user, at).await
        })
        .await?;
        Ok(Page {
            items,
            next: next_cursor(paging),
        })
    }

    pub async fn user_decisions(
        &self,
        user: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Decision>, HistoryError> {
        let mut user = user.to_lowercase();
        let mut st = self.st.user_decisions.clone();
        st.set_page_size(page_size.max(1) as i32);
        let (mut res, mut paging) = self
            .session
            .execute_single_page(&st, (&user,), cursor_state(cursor)?)
            .await
            .map_err(err)?;
        // Not a user decisions are indexed under: perhaps another name.
        if res.is_rows()
            && res.clone().into_rows_result().map_err(err)?.rows_num() == 0
            && let Some(login) = self.user_of_alias(&user).await?
        {
            user = login;
            (res, paging) = self
                .session
                .execute_single_page(&st, (&user,), cursor_state(cursor)?)
                .await
                .map_err(err)?;
        }
        let rows = res.into_rows_result().map_err(err)?;
        let streams: Vec<(String, i64)> = two_columns(&rows)?;
        let user = &user;
        let items = lookup_all(streams, |(stream, at)| async move {
            self.decision(&stream, user, at).await
        })
        .await?;
        Ok(Page {
            items,
            next: next_cursor(paging),
        })
    }

    pub async fn spam_rate(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, u64)>, HistoryError> {
        let from = from_ms.max(0).div_euclid(60_000) * 60_000;
        let st = self.range_statement(&SPAM_RATE, from, to_ms, 5_000);
        let rows = self
            .session
            .query_unpaged(st, (stream,))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut per_minute = std::collections::BTreeMap::new();
        for r in rows.rows::<(i64, i64)>().map_err(err)? {
            let (m, added) = r.map_err(err)?;
            *per_minute.entry(m).or_insert(0u64) += added.max(0) as u64;
        }
        Ok(per_minute.into_iter().collect())
    }

    pub async fn search(
        &self,
        text: &str,
        min_similarity: f64,
        page_size: usize,
        cursor: Option<&str>,
        sightings_per_match: usize,
    ) -> Result<Page<SpamMatch>, HistoryError> {
        let (chars, words) = signatures(&self.signer, text);
        let bands: Vec<_> = band_keys('c', &chars)
            .into_iter()
            .chain(band_keys('w', &words))
            .collect();
        let per_band: Vec<Vec<String>> = futures::stream::iter(bands)
            .map(|b| async move {
                let rows = self
                    .session
                    .execute_unpaged(&self.st.get_band, (b,))
                    .await
                    .map_err(err)?
                    .into_rows_result()
                    .map_err(err)?;
                first_column::<String>(&rows)
            })
            .buffered(LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        let seen: std::collections::BTreeSet<String> = per_band.into_iter().flatten().collect();
        let to_u32 = |b: &[u8]| {
            b.chunks(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<u32>>()
        };
        let sigs: Vec<(String, Option<SignatureRow>)> = futures::stream::iter(seen)
            .map(|fp| async move {
                let rows = self
                    .session
                    .execute_unpaged(&self.st.get_sig, (&fp,))
                    .await
                    .map_err(err)?
                    .into_rows_result()
                    .map_err(err)?;
                let row = rows
                    .maybe_first_row::<(Vec<u8>, Vec<u8>, String)>()
                    .map_err(err)?;
                Ok::<_, HistoryError>((fp, row))
            })
            .buffered(LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut candidates = Vec::new();
        for (fp, row) in sigs {
            if let Some((c, w, t)) = row {
                let sim = similarity(&to_u32(&c), &chars).max(similarity(&to_u32(&w), &words));
                if sim >= min_similarity {
                    candidates.push((sim, fp, t));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let start = match cursor {
            Some(c) => crate::decode_cursor(c)?
                .parse::<usize>()
                .map_err(|_| HistoryError::BadCursor)?,
            None => 0,
        };
        let page: Vec<_> = candidates
            .iter()
            .skip(start)
            .take(page_size)
            .cloned()
            .collect();
        let next = (start + page.len() < candidates.len())
            .then(|| crate::encode_cursor(&(start + page.len()).to_string()));
        let items = futures::stream::iter(page)
            .map(|(similarity, fingerprint, text)| async move {
                let sightings = self
                    .sightings(&fingerprint, sightings_per_match, None)
                    .await?
                    .items;
                Ok::<_, HistoryError>(SpamMatch {
                    fingerprint,
                    text,
                    similarity,
                    sightings,
                })
            })
            .buffered(LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Page { items, next })
    }
}
