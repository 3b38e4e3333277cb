//! The embedded store (redb: one file, ACID, crash-safe, pure Rust).

use std::path::Path;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use spamscope_detect::clusters::Signer;
use spamscope_proto::v1::{ActionRecord, Decision, SpamEvent};

use crate::search::{band_keys, signatures, similarity};
use crate::types::{decode_cursor, encode_cursor, stream_key};
use crate::{HistoryError, Page, SpamMatch};
use crate::{action_key, action_rank};

/// `stream \0 event_id` → SpamEvent (latest version).
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
/// `fingerprint \0 inverted last_seen \0 stream \0 event_id` → ().
const BY_FP: TableDefinition<&str, ()> = TableDefinition::new("events_by_fingerprint");
/// `stream \0 inverted last_seen \0 event_id` → ().
const BY_STREAM: TableDefinition<&str, ()> = TableDefinition::new("events_by_stream");
/// `stream \0 user \0 inverted at` → Decision: every decision about a
/// user in a stream (flagged again after the detector forgot them, say).
/// Files written before kept one per user, as `stream \0 user`; they are
/// still read ([`get_decision`]).
const DECISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("decisions");
/// `user \0 inverted at \0 stream` → ().
const DEC_BY_USER: TableDefinition<&str, ()> = TableDefinition::new("decisions_by_user");
/// another name of a user (lower-cased) → the user its decisions are
/// indexed under ([`crate::types::decision_user`]): a Twitch user id → the
/// login, a YouTube display name → the channel id.
const USER_LOGINS: TableDefinition<&str, &str> = TableDefinition::new("user_logins");
/// `stream \0 inverted at \0 user` → ().
const DEC_BY_STREAM: TableDefinition<&str, ()> = TableDefinition::new("decisions_by_stream");
/// `stream \0 minute` → spam messages.
const RATE: TableDefinition<&str, u64> = TableDefinition::new("spam_rate");
/// fingerprint → signature (u32 LE) followed by the representative text.
const SIGNATURES: TableDefinition<&str, &[u8]> = TableDefinition::new("signatures");
/// `band \0 band hash \0 fingerprint` → ().
const BANDS_T: TableDefinition<&str, ()> = TableDefinition::new("lsh_bands");
/// `stream \0 inverted at \0 record id` → ActionRecord (its latest status).
const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");
/// `user \0 inverted at \0 stream \0 record id` → (): the user as
/// decisions are indexed ([`crate::types::indexed_user`]).
const ACT_BY_USER: TableDefinition<&str, ()> = TableDefinition::new("actions_by_user");

pub struct HistoryStore {
    db: Database,
    signer: Signer,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryStore")
    }
}

fn inv(ts: i64) -> String {
    format!("{:020}", u64::MAX - ts.max(0) as u64)
}

/// Upper bound of all keys starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl HistoryStore {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            // Create every table so readers never meet a missing one.
            txn.open_table(EVENTS)?;
            txn.open_table(BY_FP)?;
            txn.open_table(BY_STREAM)?;
            txn.open_table(DECISIONS)?;
            txn.open_table(DEC_BY_USER)?;
            txn.open_table(USER_LOGINS)?;
            txn.open_table(DEC_BY_STREAM)?;
            txn.open_table(RATE)?;
            txn.open_table(SIGNATURES)?;
            txn.open_table(BANDS_T)?;
            txn.open_table(ACTIONS)?;
            txn.open_table(ACT_BY_USER)?;
        }
        txn.commit()?;
        Ok(Self {
            db,
            signer: Signer::default(),
        })
    }

    /// Writes a batch in one transaction. Idempotent: replaying the same
    /// outputs changes nothing.
    pub fn write(
        &self,
        events: &[SpamEvent],
        decisions: &[Decision],
        actions: &[ActionRecord],
    ) -> Result<(), HistoryError> {
        let txn = self.db.begin_write()?;
        {
            let mut ev_t = txn.open_table(EVENTS)?;
            let mut fp_t = txn.open_table(BY_FP)?;
            let mut st_t = txn.open_table(BY_STREAM)?;
            let mut rate_t = txn.open_table(RATE)?;
            let mut sig_t = txn.open_table(SIGNATURES)?;
            let mut band_t = txn.open_table(BANDS_T)?;
            for e in events {
                let stream = stream_key(e.platform, &e.stream_id);
                let key = format!("{stream}\0{:020}", e.event_id);
                let prev = match ev_t.get(key.as_str())? {
                    Some(v) => Some(SpamEvent::decode(v.value())?),
                    None => None,
                };
                if prev.as_ref().is_some_and(|p| p.version >= e.version) {
                    continue;
                }
                if let Some(p) = &prev {
                    fp_t.remove(
                        format!(
                            "{}\0{}\0{stream}\0{:020}",
                            p.fingerprint,
                            inv(p.last_seen_ms),
                            p.event_id
                        )
                        .as_str(),
                    )?;
                    st_t.remove(
                        format!("{stream}\0{}\0{:020}", inv(p.last_seen_ms), p.event_id).as_str(),
                    )?;
                }
                ev_t.insert(key.as_str(), e.encode_to_vec().as_slice())?;
                fp_t.insert(
                    format!(
                        "{}\0{}\0{stream}\0{:020}",
                        e.fingerprint,
                        inv(e.last_seen_ms),
                        e.event_id
                    )
                    .as_str(),
                    (),
                )?;
                st_t.insert(
                    format!("{stream}\0{}\0{:020}", inv(e.last_seen_ms), e.event_id).as_str(),
                    (),
                )?;
                // Messages added since the previous version, in the minute
                // of this update; crowd reactions are chat, not spam.
                let added = e.count.saturating_sub(prev.as_ref().map_or(0, |p| p.count));
                if added > 0 && e.spam {
                    let minute = e.last_seen_ms.div_euclid(60_000) * 60_000;
                    let rk = format!("{stream}\0{minute:020}");
                    let cur = rate_t.get(rk.as_str())?.map_or(0, |v| v.value());
                    rate_t.insert(rk.as_str(), cur + added)?;
                }
                if sig_t.get(e.fingerprint.as_str())?.is_none() {
                    let (chars, words) = signatures(&self.signer, &e.text);
                    let mut v: Vec<u8> = chars
                        .iter()
                        .chain(&words)
                        .flat_map(|x| x.to_le_bytes())
                        .collect();
                    v.extend_from_slice(e.text.as_bytes());
                    sig_t.insert(e.fingerprint.as_str(), v.as_slice())?;
                    for b in band_keys('c', &chars)
                        .into_iter()
                        .chain(band_keys('w', &words))
                    {
                        band_t.insert(format!("{b}\0{}", e.fingerprint).as_str(), ())?;
                    }
                }
            }
            let mut d_t = txn.open_table(DECISIONS)?;
            let mut du_t = txn.open_table(DEC_BY_USER)?;
            let mut ds_t = txn.open_table(DEC_BY_STREAM)?;
            let mut ul_t = txn.open_table(USER_LOGINS)?;
            for d in decisions {
                let stream = stream_key(d.platform, &d.stream_id);
                let (user, alias) = crate::types::decision_user(d);
                if let Some((alias, user)) = alias {
                    ul_t.insert(alias.as_str(), user.as_str())?;
                }
                let key = format!("{stream}\0{user}\0{}", inv(d.at_ms));
                // Written already (a redelivery), or by a release that kept
                // one decision per user, under the old key.
                if d_t.get(key.as_str())?.is_some()
                    || d_t
                        .get(format!("{stream}\0{user}").as_str())?
                        .and_then(|v| Decision::decode(v.value()).ok())
                        .is_some_and(|old| old.at_ms == d.at_ms)
                {
                    continue;
                }
                d_t.insert(key.as_str(), d.encode_to_vec().as_slice())?;
                du_t.insert(format!("{user}\0{}\0{stream}", inv(d.at_ms)).as_str(), ())?;
                ds_t.insert(format!("{stream}\0{}\0{user}", inv(d.at_ms)).as_str(), ())?;
            }
            let mut a_t = txn.open_table(ACTIONS)?;
            let mut au_t = txn.open_table(ACT_BY_USER)?;
            for a in actions {
                let stream = stream_key(a.platform, &a.stream_id);
                let (user, alias, id) = action_key(a);
                let key = format!("{stream}\0{}\0{id}", inv(a.at_ms));
                let kept_rank = match a_t.get(key.as_str())? {
                    Some(v) => Some(action_rank(&ActionRecord::decode(v.value())?.status)),
                    None => None,
                };
                if kept_rank.is_some_and(|r| r > action_rank(&a.status)) {
                    continue;
                }
                if let Some((alias, user)) = alias {
                    ul_t.insert(alias.as_str(), user.as_str())?;
                }
                a_t.insert(key.as_str(), a.encode_to_vec().as_slice())?;
                if !user.is_empty() {
                    au_t.insert(
                        format!("{user}\0{}\0{stream}\0{id}", inv(a.at_ms)).as_str(),
                        (),
                    )?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Actions in a stream, newest first (each at its latest status);
    /// with `user` (a login or id, any case), only theirs.
    pub fn channel_actions(
        &self,
        stream: &str,
        user: Option<&str>,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        let txn = self.db.begin_read()?;
        let a = txn.open_table(ACTIONS)?;
        let Some(user) = user else {
            let prefix = format!("{stream}\0");
            return scan(&a, &prefix, None, cursor, page_size, |k| get_action(&a, k));
        };
        self.actions_of(&txn, &a, user, Some(stream), page_size, cursor)
    }

    /// Actions about a user (login or id, any case) in every stream,
    /// newest first.
    pub fn user_actions(
        &self,
        user: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        let txn = self.db.begin_read()?;
        let a = txn.open_table(ACTIONS)?;
        self.actions_of(&txn, &a, user, None, page_size, cursor)
    }

    /// A user's actions through their index, in `stream` only when given.
    fn actions_of(
        &self,
        txn: &redb::ReadTransaction,
        a: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
        user: &str,
        stream: Option<&str>,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ActionRecord>, HistoryError> {
        let idx = txn.open_table(ACT_BY_USER)?;
        let prefix = format!("{}\0", self.resolve_user(txn, &idx, user)?);
        scan(&idx, &prefix, None, cursor, page_size, |k| {
            match k.split('\0').collect::<Vec<_>>()[..] {
                [_, at, s, id] if stream.is_none_or(|want| want == s) => {
                    get_action(a, &format!("{s}\0{at}\0{id}"))
                }
                _ => Ok(None),
            }
        })
    }

    /// The user `user` is indexed under in `idx`: itself, or the user its
    /// other name (a Twitch id, a YouTube display name) stands for.
    fn resolve_user(
        &self,
        txn: &redb::ReadTransaction,
        idx: &redb::ReadOnlyTable<&'static str, ()>,
        user: &str,
    ) -> Result<String, HistoryError> {
        let user = user.to_lowercase();
        let prefix = format!("{user}\0");
        let indexed = idx
            .range(prefix.as_str()..)?
            .next()
            .transpose()?
            .is_some_and(|(k, _)| k.value().starts_with(&prefix));
        if !indexed && let Some(login) = txn.open_table(USER_LOGINS)?.get(user.as_str())? {
            return Ok(login.value().to_owned());
        }
        Ok(user)
    }

    /// Where and when the spam with this fingerprint was seen, newest first.
    pub fn sightings(
        &self,
        fingerprint: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<SpamEvent>, HistoryError> {
        let txn = self.db.begin_read()?;
        let ev = txn.open_table(EVENTS)?;
        let idx = txn.open_table(BY_FP)?;
        let prefix = format!("{fingerprint}\0");
        scan(&idx, &prefix, None, cursor, page_size, |k| {
            let parts: Vec<&str> = k.split('\0').collect();
            match parts[..] {
                [_, _, stream, id] => get_event(&ev, stream, id),
                _ => Ok(None),
            }
        })
    }

    /// Spam events of a stream last seen in `[from_ms, to_ms]`, newest first.
    pub fn channel_events(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<SpamEvent>, HistoryError> {
        let txn = self.db.begin_read()?;
        let ev = txn.open_table(EVENTS)?;
        let idx = txn.open_table(BY_STREAM)?;
        let prefix = format!("{stream}\0");
        let range = (
            format!("{prefix}{}", inv(to_ms)),
            prefix_end(&format!("{prefix}{}", inv(from_ms))),
        );
        scan(&idx, &prefix, Some(range), cursor, page_size, |k| {
            let parts: Vec<&str> = k.split('\0').collect();
            match parts[..] {
                [s, _, id] => get_event(&ev, s, id),
                _ => Ok(None),
            }
        })
    }

    /// Decisions in a stream made in `[from_ms, to_ms]`, newest first.
    pub fn channel_decisions(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Decision>, HistoryError> {
        let txn = self.db.begin_read()?;
        let d = txn.open_table(DECISIONS)?;
        let idx = txn.open_table(DEC_BY_STREAM)?;
        let prefix = format!("{stream}\0");
        let range = (
            format!("{prefix}{}", inv(to_ms)),
            prefix_end(&format!("{prefix}{}", inv(from_ms))),
        );
        scan(&idx, &prefix, Some(range), cursor, page_size, |k| {
            let parts: Vec<&str> = k.split('\0').collect();
            match parts[..] {
                [s, at, user] => get_decision(&d, s, user, at),
                _ => Ok(None),
            }
        })
    }

    /// Decisions about a user (login or id) in every stream, newest first.
    pub fn user_decisions(
        &self,
        user: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Decision>, HistoryError> {
        let txn = self.db.begin_read()?;
        let d = txn.open_table(DECISIONS)?;
        let idx = txn.open_table(DEC_BY_USER)?;
        // Not a user decisions are indexed under: perhaps another name.
        let prefix = format!("{}\0", self.resolve_user(&txn, &idx, user)?);
        scan(&idx, &prefix, None, cursor, page_size, |k| {
            let parts: Vec<&str> = k.split('\0').collect();
            match parts[..] {
                [u, at, stream] => get_decision(&d, stream, u, at),
                _ => Ok(None),
            }
        })
    }

    /// Spam messages per minute of a stream in `[from_ms, to_ms]`, oldest
    /// first: (minute start in ms, count).
    pub fn spam_rate(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, u64)>, HistoryError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RATE)?;
        let from = format!(
            "{stream}\0{:020}",
            from_ms.max(0).div_euclid(60_000) * 60_000
        );
        let to = format!("{stream}\0{:020}", to_ms.max(0));
        let mut out = Vec::new();
        for row in t.range(from.as_str()..=to.as_str())? {
            let (k, v) = row?;
            if let Some(m) = k
                .value()
                .rsplit('\0')
                .next()
                .and_then(|m| m.parse::<i64>().ok())
            {
                out.push((m, v.value()));
            }
        }
        Ok(out)
    }

    /// Spam similar to `text` (at least `min_similarity`, estimated Jaccard
    /// of character 3-grams after normalisation), most similar first, with
    /// up to `sightings_per_match` sightings each. Candidates come from the
    /// LSH band tables.
    pub fn search(
        &self,
        text: &str,
        min_similarity: f64,
        page_size: usize,
        cursor: Option<&str>,
        sightings_per_match: usize,
    ) -> Result<Page<SpamMatch>, HistoryError> {
        let (chars, words) = signatures(&self.signer, text);
        let mut candidates: Vec<(f64, String, String)> = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let bands = txn.open_table(BANDS_T)?;
            let sigs = txn.open_table(SIGNATURES)?;
            let mut seen = std::collections::BTreeSet::new();
            for b in band_keys('c', &chars)
                .into_iter()
                .chain(band_keys('w', &words))
            {
                let prefix = format!("{b}\0");
                for row in bands.range(prefix.as_str()..prefix_end(&prefix).as_str())? {
                    let (k, _) = row?;
                    if let Some(fp) = k.value().rsplit('\0').next() {
                        seen.insert(fp.to_owned());
                    }
                }
            }
            for fp in seen {
                let Some(v) = sigs.get(fp.as_str())? else {
                    continue;
                };
                let v = v.value();
                let n = chars.len() * 4;
                if v.len() < 2 * n {
                    continue;
                }
                let stored: Vec<u32> = v[..2 * n]
                    .chunks(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let sim = similarity(&stored[..chars.len()], &chars)
                    .max(similarity(&stored[chars.len()..], &words));
                if sim >= min_similarity {
                    candidates.push((sim, fp, String::from_utf8_lossy(&v[2 * n..]).into_owned()));
                }
            }
        }
        // Most similar first; ties by fingerprint, so pages are stable.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let start = match cursor {
            Some(c) => decode_cursor(c)?
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
            .then(|| encode_cursor(&(start + page.len()).to_string()));
        let mut items = Vec::with_capacity(page.len());
        for (similarity, fingerprint, text) in page {
            let sightings = self
                .sightings(&fingerprint, sightings_per_match, None)?
                .items;
            items.push(SpamMatch {
                fingerprint,
                text,
                similarity,
                sightings,
            });
        }
        Ok(Page { items, next })
    }

    /// Drops spam events last seen, and decisions made, before `cutoff_ms`
    /// (the TTL). Returns how many records were removed.
    pub fn expire(&self, cutoff_ms: i64) -> Result<usize, HistoryError> {
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut ev_t = txn.open_table(EVENTS)?;
            let mut fp_t = txn.open_table(BY_FP)?;
            let mut st_t = txn.open_table(BY_STREAM)?;
            let old: Vec<(String, SpamEvent)> = ev_t
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(k, v)| {
                    SpamEvent::decode(v.value())
                        .ok()
                        .map(|e| (k.value().to_owned(), e))
                })
                .filter(|(_, e)| e.last_seen_ms < cutoff_ms)
                .collect();
            for (k, e) in old {
                let stream = stream_key(e.platform, &e.stream_id);
                ev_t.remove(k.as_str())?;
                fp_t.remove(
                    format!(
                        "{}\0{}\0{stream}\0{:020}",
                        e.fingerprint,
                        inv(e.last_seen_ms),
                        e.event_id
                    )
                    .as_str(),
                )?;
                st_t.remove(
                    format!("{stream}\0{}\0{:020}", inv(e.last_seen_ms), e.event_id).as_str(),
                )?;
                removed += 1;
            }
            let mut d_t = txn.open_table(DECISIONS)?;
            let mut du_t = txn.open_table(DEC_BY_USER)?;
            let mut ds_t = txn.open_table(DEC_BY_STREAM)?;
            let old: Vec<(String, Decision)> = d_t
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(k, v)| {
                    Decision::decode(v.value())
                        .ok()
                        .map(|d| (k.value().to_owned(), d))
                })
                .filter(|(_, d)| d.at_ms < cutoff_ms)
                .collect();
            for (k, d) in old {
                let stream = stream_key(d.platform, &d.stream_id);
                let user = k.split('\0').nth(1).unwrap_or("").to_owned();
                d_t.remove(k.as_str())?;
                du_t.remove(format!("{user}\0{}\0{stream}", inv(d.at_ms)).as_str())?;
                ds_t.remove(format!("{stream}\0{}\0{user}", inv(d.at_ms)).as_str())?;
                removed += 1;
            }
            let mut a_t = txn.open_table(ACTIONS)?;
            let mut au_t = txn.open_table(ACT_BY_USER)?;
            let old: Vec<(String, ActionRecord)> = a_t
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(k, v)| {
                    ActionRecord::decode(v.value())
                        .ok()
                        .map(|a| (k.value().to_owned(), a))
                })
                .filter(|(_, a)| a.at_ms < cutoff_ms)
                .collect();
            for (k, a) in old {
                let stream = stream_key(a.platform, &a.stream_id);
                let (user, _, id) = action_key(&a);
                a_t.remove(k.as_str())?;
                au_t.remove(format!("{user}\0{}\0{stream}\0{id}", inv(a.at_ms)).as_str())?;
                removed += 1;
            }
            let mut rate_t = txn.open_table(RATE)?;
            let old: Vec<String> = rate_t
                .iter()?
                .filter_map(Result::ok)
                .map(|(k, _)| k.value().to_owned())
                .filter(|k| {
                    k.rsplit('\0')
                        .next()
                        .and_then(|m| m.parse::<i64>().ok())
                        .is_some_and(|m| m + 60_000 <= cutoff_ms)
                })
                .collect();
            for k in old {
                rate_t.remove(k.as_str())?;
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

fn get_event(
    t: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
    stream: &str,
    id: &str,
) -> Result<Option<SpamEvent>, HistoryError> {
    Ok(match t.get(format!("{stream}\0{id}").as_str())? {
        Some(v) => Some(SpamEvent::decode(v.value())?),
        None => None,
    })
}

/// The decision about `user` in `stream` at `inv_at` (as the indexes
/// write it), under its key or the key of the release that kept one per
/// user.
fn get_decision(
    t: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
    stream: &str,
    user: &str,
    inv_at: &str,
) -> Result<Option<Decision>, HistoryError> {
    if let Some(v) = t.get(format!("{stream}\0{user}\0{inv_at}").as_str())? {
        return Ok(Some(Decision::decode(v.value())?));
    }
    Ok(match t.get(format!("{stream}\0{user}").as_str())? {
        Some(v) => Some(Decision::decode(v.value())?).filter(|d| inv(d.at_ms) == inv_at),
        None => None,
    })
}

fn get_action(
    t: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<ActionRecord>, HistoryError> {
    Ok(match t.get(key)? {
        Some(v) => Some(ActionRecord::decode(v.value())?),
        None => None,
    })
}

/// Pages through the keys of `idx` under `prefix` (optionally within
/// `range`), after the key in `cursor`, mapping each key to an item.
fn scan<T, V: redb::Value + 'static>(
    idx: &redb::ReadOnlyTable<&'static str, V>,
    prefix: &str,
    range: Option<(String, String)>,
    cursor: Option<&str>,
    page_size: usize,
    mut item: impl FnMut(&str) -> Result<Option<T>, HistoryError>,
) -> Result<Page<T>, HistoryError> {
    let after = cursor.map(decode_cursor).transpose()?;
    if after.as_ref().is_some_and(|a| !a.starts_with(prefix)) {
        return Err(HistoryError::BadCursor);
    }
    let (lo, hi) = range.unwrap_or_else(|| (prefix.to_owned(), prefix_end(prefix)));
    let lo = match &after {
        Some(a) if a.as_str() > lo.as_str() => a.clone(),
        _ => lo,
    };
    let mut items = Vec::new();
    let mut last: Option<String> = None;
    for row in idx.range(lo.as_str()..hi.as_str())? {
        let (k, _) = row?;
        let k = k.value();
        if after.as_deref() == Some(k) {
            continue;
        }
        if items.len() == page_size.max(1) {
            return Ok(Page {
                items,
                next: last.map(|l| encode_cursor(&l)),
            });
        }
        if let Some(x) = item(k)? {
            items.push(x);
        }
        last = Some(k.to_owned());
    }
    Ok(Page { items, next: None })
}
