//! A stream detector's whole state to bytes (protobuf `DetectorSnapshot`,
//! versioned) and back. A restored detector behaves exactly like the
//! original: same outputs for the same following events (property-tested).
//! Params and the score model are not in the snapshot: the owner supplies
//! them on restore.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use prost::Message;
use spamscope_proto::v1::{
    ClusterSnapshot, DetectorSnapshot, Platform, SpamEventState, UserSnapshot, VariantSnapshot,
};

use crate::clusters::{Cluster, Clusters, Variant};
use crate::params::CompiledParams;
use crate::score::ScoreModel;
use crate::stream::{GAP_BUCKETS, StreamCounters, StreamDetector};
use crate::user::UserState;

/// Version of the snapshot layout this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("snapshot version {0}, this build reads version {SNAPSHOT_VERSION}")]
    Version(u32),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl StreamDetector {
    pub fn snapshot(&self) -> DetectorSnapshot {
        let mut users: Vec<UserSnapshot> = self
            .users
            .iter()
            .map(|(k, u)| UserSnapshot {
                key: *k,
                user_id: u.user_id.clone(),
                login: u.login.clone(),
                messages: u.messages,
                deleted: u.deleted,
                total_graphemes: u.total_graphemes,
                first_ts_ms: u.first_ts_ms,
                last_ts_ms: u.last_ts_ms,
                last_seen_ms: u.last_seen_ms,
                roles: u.roles,
                supporter: u.supporter,
                moderated: u.moderated,
                moderated_detail: u.moderated_detail.clone(),
                flagged: u.flagged,
                recent_clusters: u.recent.iter().map(|(c, _)| *c).collect(),
                recent_cluster_counts: u.recent.iter().map(|(_, n)| *n).collect(),
                spam_event_messages: u.spam_event_messages,
                blacklist_hits: u.blacklist_hits,
                blacklist_detail: u.blacklist_detail.clone(),
                prev_ts_ms: u.prev_ts_ms,
                max_repetition: u.max_repetition,
            })
            .collect();
        users.sort_unstable_by_key(|u| u.key);
        let clusters = self
            .clusters
            .clusters
            .values()
            .map(|c| {
                let mut members: Vec<u64> = c.users.iter().copied().collect();
                members.sort_unstable();
                ClusterSnapshot {
                    id: c.id,
                    signature: c.signature.clone(),
                    variants: c
                        .variants
                        .iter()
                        .map(|v| VariantSnapshot {
                            hash: v.hash,
                            text: v.text.clone(),
                            count: v.count,
                        })
                        .collect(),
                    users: members,
                    count: c.count,
                    first_seen_ms: c.first_seen_ms,
                    last_seen_ms: c.last_seen_ms,
                    promoted: c.promoted,
                    state: c.state as i32,
                    version: c.version,
                    dirty: c.dirty,
                    fingerprint: c.fingerprint.clone(),
                    text: c.text.clone(),
                    sample_users: c.sample_users.clone(),
                    users_overflow: c.users_overflow,
                }
            })
            .collect();
        DetectorSnapshot {
            version: SNAPSHOT_VERSION,
            platform: self.platform as i32,
            stream_id: self.stream_id.clone(),
            channel_id: self.channel_id.clone(),
            watermark_ms: self.watermark_ms,
            next_tick_ms: self.next_tick_ms,
            next_cluster_id: self.clusters.next_id,
            slow_mode_s: self.slow_mode_s,
            gap_histogram: self.gap_histogram.clone(),
            users,
            clusters,
            message_ids: self.message_ids.iter().map(|(m, _)| *m).collect(),
            message_users: self.message_ids.iter().map(|(_, u)| *u).collect(),
            unknown_deletions: self.counters.unknown_deletions,
            events_seen: self.counters.events,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.snapshot().encode_to_vec()
    }

    pub fn from_bytes(
        bytes: &[u8],
        params: Arc<CompiledParams>,
        model: Arc<ScoreModel>,
    ) -> Result<Self, SnapshotError> {
        Self::restore(DetectorSnapshot::decode(bytes)?, params, model)
    }

    pub fn restore(
        s: DetectorSnapshot,
        params: Arc<CompiledParams>,
        model: Arc<ScoreModel>,
    ) -> Result<Self, SnapshotError> {
        if s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(s.version));
        }
        if s.message_ids.len() != s.message_users.len() {
            return Err(SnapshotError::Inconsistent(
                "message ids and users differ in length",
            ));
        }
        if s.gap_histogram.len() != GAP_BUCKETS {
            return Err(SnapshotError::Inconsistent(
                "gap histogram has the wrong size",
            ));
        }
        let platform = Platform::try_from(s.platform).unwrap_or(Platform::Unspecified);
        let mut d = StreamDetector::new(platform, &s.stream_id, params, model);
        d.channel_id = s.channel_id;
        d.watermark_ms = s.watermark_ms;
        d.next_tick_ms = s.next_tick_ms;
        d.slow_mode_s = s.slow_mode_s;
        d.gap_histogram = s.gap_histogram;
        d.counters = StreamCounters {
            events: s.events_seen,
            unknown_deletions: s.unknown_deletions,
        };
        d.users = s
            .users
            .into_iter()
            .map(|u| {
                if u.recent_clusters.len() != u.recent_cluster_counts.len() {
                    return Err(SnapshotError::Inconsistent(
                        "user recent groups differ in length",
                    ));
                }
                let state = UserState {
                    user_id: u.user_id,
                    login: u.login,
                    messages: u.messages,
                    deleted: u.deleted,
                    total_graphemes: u.total_graphemes,
                    first_ts_ms: u.first_ts_ms,
                    last_ts_ms: u.last_ts_ms,
                    prev_ts_ms: u.prev_ts_ms,
                    last_seen_ms: u.last_seen_ms,
                    roles: u.roles,
                    supporter: u.supporter,
                    moderated: u.moderated,
                    moderated_detail: u.moderated_detail,
                    flagged: u.flagged,
                    recent: u
                        .recent_clusters
                        .into_iter()
                        .zip(u.recent_cluster_counts)
                        .collect(),
                    spam_event_messages: u.spam_event_messages,
                    blacklist_hits: u.blacklist_hits,
                    blacklist_detail: u.blacklist_detail,
                    max_repetition: u.max_repetition,
                };
                Ok((u.key, state))
            })
            .collect::<Result<FxHashMap<_, _>, _>>()?;
        let mut clusters = Clusters::default();
        for c in s.clusters {
            clusters.restore(Cluster {
                id: c.id,
                signature: c.signature,
                variants: c
                    .variants
                    .into_iter()
                    .map(|v| Variant {
                        hash: v.hash,
                        text: v.text,
                        count: v.count,
                    })
                    .collect(),
                users: c.users.into_iter().collect::<FxHashSet<u64>>(),
                users_overflow: c.users_overflow,
                count: c.count,
                first_seen_ms: c.first_seen_ms,
                last_seen_ms: c.last_seen_ms,
                promoted: c.promoted,
                state: SpamEventState::try_from(c.state).unwrap_or(SpamEventState::Unspecified),
                version: c.version,
                dirty: c.dirty,
                fingerprint: c.fingerprint,
                text: c.text,
                sample_users: c.sample_users,
            });
        }
        clusters.next_id = s.next_cluster_id;
        d.clusters = clusters;
        d.message_ids = s
            .message_ids
            .into_iter()
            .zip(s.message_users)
            .collect::<VecDeque<_>>();
        d.message_index = d.message_ids.iter().copied().collect();
        Ok(d)
    }
}
