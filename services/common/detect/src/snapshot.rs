//! A stream detector's whole state to bytes (protobuf `DetectorSnapshot`,
//! versioned) and back. A restored detector behaves exactly like the
//! original: same outputs for the same following events (property-tested).
//! Params and the score model are not in the snapshot: the owner supplies
//! them on restore.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::sync::Arc;

use prost::Message;
use spamscope_proto::v1::{
    ChannelNormsSnapshot, ClusterSnapshot, DetectorSnapshot, EvidenceSnapshot, Platform,
    SpamEventClass, SpamEventState, UserSnapshot, VariantSnapshot,
};

use crate::clusters::{Cluster, Clusters, Variant};
use crate::norms::ChannelNorms;
use crate::params::CompiledParams;
use crate::score::ScoreModel;
use crate::stream::{GAP_BUCKETS, StreamCounters, StreamDetector};
use crate::user::{Evidence, EvidenceKind, UserState};

/// Version of the snapshot layout this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 2;

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
                user_id: u.user_id().to_owned(),
                login: u.login().to_owned(),
                messages: u.messages,
                deleted: u.deleted,
                first_ts_ms: u.first_ts_ms,
                last_ts_ms: u.last_ts_ms,
                last_seen_ms: u.last_seen_ms,
                roles: u.roles,
                supporter: u.supporter,
                decisive: u.decisive,
                flagged: u.flagged,
                recent_clusters: u.recent.iter().map(|(c, _)| *c).collect(),
                recent_cluster_counts: u.recent.iter().map(|(_, n)| *n).collect(),
                prev_ts_ms: u.prev_ts_ms,
                suspicion: u.suspicion,
                suspicion_at_ms: u.suspicion_at_ms,
                evidence: u
                    .evidence()
                    .iter()
                    .map(|e| EvidenceSnapshot {
                        kind: e.kind as u32,
                        count: e.count,
                        contribution: e.contribution,
                        observed: e.observed,
                        norm: e.norm,
                        threshold: e.threshold,
                        detail: e.detail.clone(),
                    })
                    .collect(),
                trusted: u.trusted,
                norm_marks: u.norm_marks.to_vec(),
            })
            .collect();
        users.sort_unstable_by_key(|u| u.key);
        let mut in_order: Vec<&Cluster> = self.clusters.clusters.values().map(|c| &**c).collect();
        in_order.sort_unstable_by_key(|c| c.id);
        let clusters = in_order
            .into_iter()
            .map(|c| {
                let mut members: Vec<u64> = c.users.iter().copied().collect();
                members.sort_unstable();
                ClusterSnapshot {
                    id: c.id,
                    signature: c.signature.to_vec(),
                    variants: c
                        .variants
                        .iter()
                        .map(|v| VariantSnapshot {
                            hash: v.hash,
                            text: v.text.as_str().to_owned(),
                            count: v.count,
                            key_hash: v.key_hash,
                            letters: v.letters,
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
                    sample_users: c.sample_logins(),
                    users_overflow: c.users_overflow,
                    keys: c.keys.to_vec(),
                    partials: c.partials.to_vec(),
                    new_users: c.new_users,
                    link_messages: c.link_messages,
                    link_domain: c.link_domain.clone(),
                    letters: c.letters,
                    class: c.class as i32,
                    allowed: c.allowed,
                    spam_recent: c.spam_recent.value,
                    spam_recent_at_ms: c.spam_recent.at_ms,
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
            norms: Some(ChannelNormsSnapshot {
                messages: self.norms.messages,
                walls: self.norms.walls,
                repeats: self.norms.repeats,
                spam: self.norms.spam,
                flags: self.norms.flags,
                at_ms: self.norms.at_ms,
            }),
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
        let platform = Platform::of(s.platform);
        let mut d = StreamDetector::new(platform, &s.stream_id, params, model);
        d.channel_id = s.channel_id;
        d.watermark_ms = s.watermark_ms;
        d.next_tick_ms = s.next_tick_ms;
        d.slow_mode_s = s.slow_mode_s;
        d.gap_total = s
            .gap_histogram
            .iter()
            .fold(0u32, |t, &n| t.saturating_add(n));
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
                let (names, id_len) = crate::user::pack_names(&u.user_id, &u.login);
                let state = UserState {
                    names,
                    id_len,
                    messages: u.messages,
                    deleted: u.deleted,
                    first_ts_ms: u.first_ts_ms,
                    last_ts_ms: u.last_ts_ms,
                    prev_ts_ms: u.prev_ts_ms,
                    last_seen_ms: u.last_seen_ms,
                    roles: u.roles,
                    supporter: u.supporter,
                    trusted: u.trusted,
                    flagged: u.flagged,
                    recent: u
                        .recent_clusters
                        .into_iter()
                        .zip(u.recent_cluster_counts)
                        .collect(),
                    suspicion: u.suspicion,
                    suspicion_at_ms: u.suspicion_at_ms,
                    decisive: u.decisive,
                    norm_marks: match u.norm_marks[..] {
                        [a, b, c, d] => [a, b, c, d],
                        _ => {
                            return Err(SnapshotError::Inconsistent(
                                "user norm marks have the wrong size",
                            ));
                        }
                    },
                    evidence: u
                        .evidence
                        .into_iter()
                        .map(|e| {
                            Ok(Evidence {
                                kind: EvidenceKind::from_u32(e.kind)
                                    .ok_or(SnapshotError::Inconsistent("unknown evidence kind"))?,
                                count: e.count,
                                contribution: e.contribution,
                                observed: e.observed,
                                norm: e.norm,
                                threshold: e.threshold,
                                detail: e.detail,
                            })
                        })
                        .collect::<Result<Vec<_>, SnapshotError>>()
                        .map(|v| (!v.is_empty()).then(|| Box::new(v)))?,
                };
                Ok((u.key, state))
            })
            .collect::<Result<FxHashMap<_, _>, _>>()?;
        let mut clusters = Clusters::default();
        for c in s.clusters {
            clusters.restore(Cluster {
                id: c.id,
                signature: c.signature.into(),
                variants: c
                    .variants
                    .into_iter()
                    .map(|v| Variant {
                        hash: v.hash,
                        key_hash: v.key_hash,
                        letters: v.letters,
                        text: v.text.into(),
                        count: v.count,
                    })
                    .collect(),
                users: c.users.into_iter().collect(),
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
                sample_users: c
                    .sample_users
                    .into_iter()
                    .map(compact_str::CompactString::from)
                    .collect(),
                keys: c.keys.into(),
                partials: c.partials.into(),
                new_users: c.new_users,
                link_messages: c.link_messages,
                link_domain: c.link_domain,
                letters: c.letters,
                allowed: c.allowed,
                class: SpamEventClass::try_from(c.class).unwrap_or(SpamEventClass::Unspecified),
                spam_recent: crate::norms::Decayed {
                    value: c.spam_recent,
                    at_ms: c.spam_recent_at_ms,
                },
            });
        }
        clusters.next_id = s.next_cluster_id;
        d.clusters = clusters;
        d.requeue_users();
        d.message_ids = s
            .message_ids
            .into_iter()
            .zip(s.message_users)
            .collect::<VecDeque<_>>();
        d.message_index = None;
        if let Some(n) = s.norms {
            d.norms = ChannelNorms {
                messages: n.messages,
                walls: n.walls,
                repeats: n.repeats,
                spam: n.spam,
                flags: n.flags,
                at_ms: n.at_ms,
            };
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_another_release_is_refused_by_version() {
        let d = StreamDetector::new(
            Platform::Twitch,
            "c",
            CompiledParams::defaults(),
            Arc::new(ScoreModel::bundled()),
        );
        let mut s = d.snapshot();
        assert_eq!(s.version, SNAPSHOT_VERSION);
        s.version = 1;
        let e = StreamDetector::restore(
            s,
            CompiledParams::defaults(),
            Arc::new(ScoreModel::bundled()),
        )
        .unwrap_err();
        assert!(matches!(e, SnapshotError::Version(1)), "{e}");
    }
}
