//! Cluster state shared by the router and the detector replicas.
//!
//! Two implementations of one interface ([`Store`]):
//! - Redis (cluster mode): every key starts with a configurable prefix
//!   (default `spamscope:`). Membership is a key per replica with a TTL that
//!   heartbeats renew; shard owners are a hash `shard → "owner epoch"`;
//!   leadership is a key with a TTL; writes of owners and checkpoints are
//!   fenced in Lua, so a router that lost the lock, or a replica that lost a
//!   shard, cannot overwrite newer state.
//! - Memory (standalone, one process): the same semantics in a mutex.
//!
//! Keys: `shards`, `replica:<id>`, `leaving:<id>` (a replica handing its
//! shards over, with a TTL), `owners`, `leader`, `checkpoint:<shard>` (the
//! shard's position), `streams:<shard>` (a hash: stream key → that stream's
//! detector state, written with the checkpoint, only what changed),
//! `streams_saved:<shard>` (a sorted set: stream key → when its state was
//! last written, so state nobody wrote for long is forgotten),
//! `params` (scope → JSON), `progress` (shard → last sequence and pending).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

/// Prefix of every Redis key unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "spamscope:";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "this cluster was created with {recorded} shards, this process is configured with {configured}; \
         refusing to start (shard count is fixed per cluster)"
    )]
    ShardMismatch { recorded: u32, configured: u32 },
    #[error("stored value of {key} is not valid: {value:?}")]
    Corrupt { key: String, value: String },
    #[error(
        "a certificate authority or client certificate was given for a Redis URL without TLS (use rediss://)"
    )]
    CaWithoutTls,
}

/// TLS of a `rediss://` connection beyond the URL: a certificate authority
/// to trust instead of the system's roots, and a client certificate for a
/// server that asks for one (`tls-auth-clients yes`), all PEM.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    /// (certificate chain, private key).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Owner of one shard at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub replica: String,
    pub epoch: u64,
}

impl Owner {
    fn encode(&self) -> String {
        format!("{} {}", self.replica, self.epoch)
    }

    fn decode(key: &str, v: &str) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt {
            key: key.to_owned(),
            value: v.to_owned(),
        };
        let (r, e) = v.rsplit_once(' ').ok_or_else(corrupt)?;
        Ok(Owner {
            replica: r.to_owned(),
            epoch: e.parse().map_err(|_| corrupt())?,
        })
    }
}

#[derive(Clone)]
pub enum Store {
    Redis(RedisStore),
    Memory(Arc<Mutex<MemoryState>>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Redis(r) => write!(f, "Store::Redis(prefix {:?})", r.prefix),
            Store::Memory(_) => f.write_str("Store::Memory"),
        }
    }
}

#[derive(Clone)]
#[allow(missing_debug_implementations)] // ConnectionManager has no Debug; Store's Debug covers it
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

#[derive(Debug, Default)]
pub struct MemoryState {
    shards: Option<u32>,
    replicas: HashMap<String, Instant>,
    /// Who holds each replica id's heartbeat (see [`Store::heartbeat`]).
    holders: HashMap<String, String>,
    leaving: HashMap<String, Instant>,
    owners: BTreeMap<u32, Owner>,
    leader: Option<(String, Instant)>,
    checkpoints: HashMap<u32, Vec<u8>>,
    streams: HashMap<u32, SavedStreams>,
    params: BTreeMap<String, String>,
    policies: BTreeMap<String, String>,
    progress: BTreeMap<u32, Progress>,
    undo_handles: HashMap<String, (String, Instant)>,
}

/// Undo handles kept in the embedded store, at most (the oldest expire
/// first when it is full).
const MAX_MEMORY_HANDLES: usize = 100_000;

/// The saved stream states of one shard in the embedded store, with the
/// order in which they were last written.
#[derive(Debug, Default)]
struct SavedStreams {
    state: HashMap<String, (Vec<u8>, i64)>,
    by_time: std::collections::BTreeSet<(i64, String)>,
}

impl SavedStreams {
    fn remove(&mut self, key: &str) {
        if let Some((_, at)) = self.state.remove(key) {
            self.by_time.remove(&(at, key.to_owned()));
        }
    }

    fn insert(&mut self, key: &str, bytes: Vec<u8>, at: i64) {
        self.remove(key);
        self.by_time.insert((at, key.to_owned()));
        self.state.insert(key.to_owned(), (bytes, at));
    }

    /// Removes at most `limit` states last written before `before`.
    fn forget(&mut self, before: i64, limit: usize) -> u64 {
        let mut n = 0;
        while n < limit {
            match self.by_time.first() {
                Some((at, key)) if *at < before => {
                    let key = key.clone();
                    self.remove(&key);
                    n += 1;
                }
                _ => break,
            }
        }
        n as u64
    }
}

/// At most this many forgotten stream states are removed per checkpoint,
/// so one checkpoint stays short however many streams went quiet at once.
pub const FORGET_PER_CHECKPOINT: usize = 1_000;

/// How far the owner of a shard has consumed CHAT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub last_sequence: u64,
    /// Messages of the shard still to process.
    pub pending: u64,
}

/// Sets the owner only while `leader` holds the lock.
const SET_OWNER: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1";

/// Takes the lock if free, or renews it if held by ARGV[1].
const LEAD: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Releases the lock only if held by ARGV[1].
const RESIGN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// Writes a checkpoint only while the owners table says ARGV[2] owns shard
/// ARGV[1] at exactly this epoch (-1 when not), stamps the streams it
/// writes with ARGV[4] and forgets at most ARGV[6] streams last written
/// before ARGV[5]; returns how many it forgot.
const SAVE_CHECKPOINT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('SET', KEYS[2], ARGV[3])
local removed = tonumber(ARGV[7])
for i = 8, 7 + removed do
  redis.call('HDEL', KEYS[3], ARGV[i])
  redis.call('ZREM', KEYS[4], ARGV[i])
end
for i = 8 + removed, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[i])
end
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[5], 'LIMIT', 0, ARGV[6])
for _, k in ipairs(old) do
  redis.call('HDEL', KEYS[3], k)
  redis.call('ZREM', KEYS[4], k)
end
return #old";

/// Stamps with ARGV[1] the saved streams that have no time yet (state
/// written by a release before the times were kept); returns how many.
const STAMP_UNTIMED: &str = r"
if redis.call('ZCARD', KEYS[2]) >= redis.call('HLEN', KEYS[1]) then return 0 end
local n = 0
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  n = n + redis.call('ZADD', KEYS[2], 'NX', ARGV[1], k)
end
return n";

/// A shard's checkpoint as [`Store::save_checkpoint`] writes it: its
/// position, and the state of the streams that changed or ended since the
/// last one.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointWrite<'a> {
    pub position: &'a [u8],
    pub changed: &'a [(String, Vec<u8>)],
    pub removed: &'a [String],
    /// When this is written (wall clock, ms): the time `changed` is
    /// stamped with.
    pub now_ms: i64,
    /// Saved states last written before this (wall clock, ms) are
    /// forgotten, at most [`FORGET_PER_CHECKPOINT`] per write; `i64::MIN`
    /// keeps them all.
    pub forget_before_ms: i64,
}

/// What [`Store::save_checkpoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written; this many streams' saved state was forgotten.
    Written { forgotten: u64 },
    /// Not written: the caller does not own the shard at its epoch.
    Fenced,
}

impl Saved {
    pub fn written(self) -> bool {
        matches!(self, Saved::Written { .. })
    }
}

impl Store {
    /// Redis at `url`, or the embedded store when `url` is `None`.
    /// Checks that `url` is a Redis URL, without connecting.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        redis::IntoConnectionInfo::into_connection_info(url)?;
        Ok(())
    }

    pub async fn open(url: Option<&str>, prefix: &str) -> Result<Self, StoreError> {
        Self::open_tls(url, prefix, RedisTls::default()).await
    }

    /// [`Store::open`], with `ca_pem` (PEM) the certificate authority to
    /// trust for a `rediss://` URL instead of the system's roots.
    pub async fn open_tls(
        url: Option<&str>,
        prefix: &str,
        tls_files: RedisTls,
    ) -> Result<Self, StoreError> {
        match url {
            None => Ok(Store::Memory(Arc::default())),
            Some(url) => {
                let tls = url.starts_with("rediss://");
                if tls {
                    // Several rustls providers are built in (kube, NATS):
                    // say which. Fails only when one is installed already.
                    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                }
                let client = match tls_files {
                    RedisTls {
                        ca_pem: None,
                        client: None,
                    } => redis::Client::open(url)?,
                    _ if !tls => return Err(StoreError::CaWithoutTls),
                    RedisTls { ca_pem, client } => redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates {
                            client_tls: client.map(|(client_cert, client_key)| {
                                redis::ClientTlsConfig {
                                    client_cert,
                                    client_key,
                                }
                            }),
                            root_cert: ca_pem,
                        },
                    )?,
                };
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(6);
                let conn = ConnectionManager::new_with_config(client, config).await?;
                Ok(Store::Redis(RedisStore {
                    conn,
                    prefix: prefix.to_owned(),
                }))
            }
        }
    }

    fn mem(m: &Arc<Mutex<MemoryState>>) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock only means another task panicked mid-update of
        // plain data; the data is still usable.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the shard count at first start; refuses a different one.
    pub async fn ensure_shards(&self, shards: u32) -> Result<u32, StoreError> {
        let recorded = match self {
            Store::Memory(m) => *Self::mem(m).shards.get_or_insert(shards),
            Store::Redis(r) => {
                let key = r.key("shards");
                let mut c = r.conn.clone();
                let _: bool = redis::cmd("SET")
                    .arg(&key)
                    .arg(shards)
                    .arg("NX")
                    .query_async::<Option<String>>(&mut c)
                    .await?
                    .is_some();
                let v: String = c.get(&key).await?;
                v.parse()
                    .map_err(|_| StoreError::Corrupt { key, value: v })?
            }
        };
        if recorded != shards {
            return Err(StoreError::ShardMismatch {
                recorded,
                configured: shards,
            });
        }
        Ok(recorded)
    }

    /// The shard count recorded at the cluster's first start, if any.
    pub async fn recorded_shards(&self) -> Result<Option<u32>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).shards),
            Store::Redis(r) => {
                let key = r.key("shards");
                let mut c = r.conn.clone();
                let v: Option<String> = c.get(&key).await?;
                v.map(|v| v.parse().map_err(|_| StoreError::Corrupt { key, value: v }))
                    .transpose()
            }
        }
    }

    /// Renews the membership of `replica` for `ttl`, held by `holder` (a
    /// token of one process): the heartbeat is a lease. `false` when
    /// another holder's heartbeat of the same replica id has not expired:
    /// two processes with one id would both open every shard of it.
    pub async fn heartbeat(
        &self,
        replica: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                let now = Instant::now();
                let taken = g.replicas.get(replica).is_some_and(|until| *until > now)
                    && g.holders.get(replica).is_some_and(|h| h != holder);
                if taken {
                    return Ok(false);
                }
                g.replicas.insert(replica.to_owned(), now + ttl);
                g.holders.insert(replica.to_owned(), holder.to_owned());
                Ok(true)
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let ok: i32 = redis::Script::new(LEAD)
                    .key(r.key(&format!("replica:{replica}")))
                    .arg(holder)
                    .arg(ttl.as_millis().max(1) as u64)
                    .invoke_async(&mut c)
                    .await?;
                Ok(ok == 1)
            }
        }
    }

    /// Leaves the membership and says so for `ttl`: the router places
    /// nothing more on `replica` but still asks it to close each shard it
    /// owns (a hand-over without replay). [`Store::deregister`] ends it.
    pub async fn leave(&self, replica: &str, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                g.replicas.remove(replica);
                g.leaving.insert(replica.to_owned(), Instant::now() + ttl);
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = redis::pipe()
                    .atomic()
                    .del(r.key(&format!("replica:{replica}")))
                    .pset_ex(
                        r.key(&format!("leaving:{replica}")),
                        "1",
                        ttl.as_millis().max(1) as u64,
                    )
                    .query_async(&mut c)
                    .await?;
            }
        }
        Ok(())
    }

    /// Leaves the membership now, hand-over done or not (clean shutdown).
    pub async fn deregister(&self, replica: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                g.replicas.remove(replica);
                g.leaving.remove(replica);
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c
                    .del(&[
                        r.key(&format!("replica:{replica}")),
                        r.key(&format!("leaving:{replica}")),
                    ])
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether this is a Redis store (shared between processes).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// Replicas whose heartbeat has not expired, sorted.
    pub async fn live_replicas(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::unexpired(&mut Self::mem(m).replicas)),
            Store::Redis(r) => Self::scan_ids(r, "replica:").await,
        }
    }

    /// Replicas handing their shards over ([`Store::leave`]), sorted.
    pub async fn leaving_replicas(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::unexpired(&mut Self::mem(m).leaving)),
            Store::Redis(r) => Self::scan_ids(r, "leaving:").await,
        }
    }

    /// The keys of `map` whose time has not come, sorted; drops the others.
    fn unexpired(map: &mut HashMap<String, Instant>) -> Vec<String> {
        let now = Instant::now();
        map.retain(|_, until| *until > now);
        let mut out: Vec<String> = map.keys().cloned().collect();
        out.sort();
        out
    }

    /// The ids of the keys `<prefix><id>`, sorted (SCAN: never blocks Redis).
    async fn scan_ids(r: &RedisStore, kind: &str) -> Result<Vec<String>, StoreError> {
        let mut c = r.conn.clone();
        let prefix = r.key(kind);
        let pattern = format!("{prefix}*");
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out: Vec<String> = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The owner of every shard that has one.
    pub async fn owners(&self) -> Result<BTreeMap<u32, Owner>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).owners.clone()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let key = r.key("owners");
                let raw: HashMap<String, String> = c.hgetall(&key).await?;
                let mut out = BTreeMap::new();
                for (shard, v) in raw {
                    let s: u32 = shard.parse().map_err(|_| StoreError::Corrupt {
                        key: key.clone(),
                        value: shard.clone(),
                    })?;
                    out.insert(s, Owner::decode(&key, &v)?);
                }
                Ok(out)
            }
        }
    }

    /// Takes or renews the router lock for `ttl`; true while `id` leads.
    pub async fn lead(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                let now = Instant::now();
                let free = g
                    .leader
                    .as_ref()
                    .is_none_or(|(holder, until)| holder == id || *until <= now);
                if free {
                    g.leader = Some((id.to_owned(), now + ttl));
                }
                Ok(free)
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let ok: i32 = redis::Script::new(LEAD)
                    .key(r.key("leader"))
                    .arg(id)
                    .arg(ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await?;
                Ok(ok == 1)
            }
        }
    }

    /// Gives the router lock up (clean shutdown of the leader).
    pub async fn resign(&self, id: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                if g.leader.as_ref().is_some_and(|(h, _)| h == id) {
                    g.leader = None;
                }
                Ok(())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: i32 = redis::Script::new(RESIGN)
                    .key(r.key("leader"))
                    .arg(id)
                    .invoke_async(&mut c)
                    .await?;
                Ok(())
            }
        }
    }

    /// Records `owner` for `shard`, only while `leader` holds the lock.
    pub async fn set_owner(
        &self,
        shard: u32,
        owner: &Owner,
        leader: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                if g.leader.as_ref().is_none_or(|(h, _)| h != leader) {
                    return Ok(false);
                }
                g.owners.insert(shard, owner.clone());
                Ok(true)
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let ok: i32 = redis::Script::new(SET_OWNER)
                    .key(r.key("leader"))
                    .key(r.key("owners"))
                    .arg(leader)
                    .arg(shard)
                    .arg(owner.encode())
                    .invoke_async(&mut c)
                    .await?;
                Ok(ok == 1)
            }
        }
    }

    /// Writes the checkpoint of `shard` (its position, and the state of the
    /// streams that changed or ended), all or nothing, only while `owner`
    /// owns it at its epoch, and forgets saved state nobody wrote since
    /// [`CheckpointWrite::forget_before_ms`]. [`Saved::Fenced`] means the
    /// caller lost the shard.
    pub async fn save_checkpoint(
        &self,
        shard: u32,
        owner: &Owner,
        w: CheckpointWrite<'_>,
    ) -> Result<Saved, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut g = Self::mem(m);
                if g.owners.get(&shard) != Some(owner) {
                    return Ok(Saved::Fenced);
                }
                g.checkpoints.insert(shard, w.position.to_vec());
                let streams = g.streams.entry(shard).or_default();
                for k in w.removed {
                    streams.remove(k);
                }
                for (k, v) in w.changed {
                    streams.insert(k, v.clone(), w.now_ms);
                }
                let forgotten = streams.forget(w.forget_before_ms, FORGET_PER_CHECKPOINT);
                Ok(Saved::Written { forgotten })
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let save = redis::Script::new(SAVE_CHECKPOINT);
                let mut script = save.prepare_invoke();
                script
                    .key(r.key("owners"))
                    .key(r.key(&format!("checkpoint:{shard}")))
                    .key(r.key(&format!("streams:{shard}")))
                    .key(r.key(&format!("streams_saved:{shard}")))
                    .arg(shard)
                    .arg(owner.encode())
                    .arg(w.position)
                    .arg(w.now_ms)
                    .arg(w.forget_before_ms)
                    .arg(FORGET_PER_CHECKPOINT)
                    .arg(w.removed.len());
                for k in w.removed {
                    script.arg(k);
                }
                for (k, v) in w.changed {
                    script.arg(k).arg(v.as_slice());
                }
                let n: i64 = script.invoke_async(&mut c).await?;
                Ok(match u64::try_from(n) {
                    Ok(forgotten) => Saved::Written { forgotten },
                    Err(_) => Saved::Fenced,
                })
            }
        }
    }

    /// Gives the saved streams of `shard` that have no write time (saved by
    /// a release before the times were kept) the time `now_ms`, so they are
    /// forgotten like the others; returns how many. Cheap when none lacks
    /// one.
    pub async fn stamp_saved_streams(&self, shard: u32, now_ms: i64) -> Result<u64, StoreError> {
        match self {
            // The embedded store always had the times.
            Store::Memory(_) => Ok(0),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let n: u64 = redis::Script::new(STAMP_UNTIMED)
                    .key(r.key(&format!("streams:{shard}")))
                    .key(r.key(&format!("streams_saved:{shard}")))
                    .arg(now_ms)
                    .invoke_async(&mut c)
                    .await?;
                Ok(n)
            }
        }
    }

    /// The saved state of these streams of `shard` (`None` for a stream
    /// without any), in the order asked.
    pub async fn load_streams(
        &self,
        shard: u32,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Memory(m) => {
                let g = Self::mem(m);
                let streams = g.streams.get(&shard);
                Ok(keys
                    .iter()
                    .map(|k| streams.and_then(|s| s.state.get(k)).map(|(b, _)| b.clone()))
                    .collect())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(r.key(&format!("streams:{shard}"))).arg(keys);
                Ok(cmd.query_async(&mut c).await?)
            }
        }
    }

    /// How many streams of `shard` have saved state, and their bytes.
    pub async fn saved_streams(&self, shard: u32) -> Result<(u64, u64), StoreError> {
        match self {
            Store::Memory(m) => {
                let g = Self::mem(m);
                Ok(g.streams.get(&shard).map_or((0, 0), |s| {
                    (
                        s.state.len() as u64,
                        s.state.values().map(|(v, _)| v.len() as u64).sum(),
                    )
                }))
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let key = r.key(&format!("streams:{shard}"));
                let n: u64 = c.hlen(&key).await?;
                let bytes: Option<u64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .query_async(&mut c)
                    .await?;
                Ok((n, bytes.unwrap_or(0)))
            }
        }
    }

    pub async fn load_checkpoint(&self, shard: u32) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).checkpoints.get(&shard).cloned()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                Ok(c.get(r.key(&format!("checkpoint:{shard}"))).await?)
            }
        }
    }

    /// Detector params overrides by scope ("" = cluster defaults).
    pub async fn all_params(&self) -> Result<BTreeMap<String, String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).params.clone()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let raw: HashMap<String, String> = c.hgetall(r.key("params")).await?;
                Ok(raw.into_iter().collect())
            }
        }
    }

    pub async fn set_params(&self, scope: &str, json: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                Self::mem(m)
                    .params
                    .insert(scope.to_owned(), json.to_owned());
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c.hset(r.key("params"), scope, json).await?;
            }
        }
        Ok(())
    }

    /// Channel policy layers set at run time, by stream key (TOML).
    pub async fn all_policies(&self) -> Result<BTreeMap<String, String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).policies.clone()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let raw: HashMap<String, String> = c.hgetall(r.key("policies")).await?;
                Ok(raw.into_iter().collect())
            }
        }
    }

    /// Sets a channel's policy layer; an empty one removes it.
    pub async fn set_policy(&self, stream: &str, toml: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                if toml.trim().is_empty() {
                    m.policies.remove(stream);
                } else {
                    m.policies.insert(stream.to_owned(), toml.to_owned());
                }
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = if toml.trim().is_empty() {
                    c.hdel(r.key("policies"), stream).await?
                } else {
                    c.hset(r.key("policies"), stream, toml).await?
                };
            }
        }
        Ok(())
    }

    pub async fn set_progress(&self, shard: u32, p: Progress) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                Self::mem(m).progress.insert(shard, p);
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c
                    .hset(
                        r.key("progress"),
                        shard,
                        format!("{} {}", p.last_sequence, p.pending),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn progress(&self) -> Result<BTreeMap<u32, Progress>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).progress.clone()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let raw: HashMap<String, String> = c.hgetall(r.key("progress")).await?;
                Ok(raw
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let (a, b) = v.split_once(' ')?;
                        Some((
                            k.parse().ok()?,
                            Progress {
                                last_sequence: a.parse().ok()?,
                                pending: b.parse().ok()?,
                            },
                        ))
                    })
                    .collect())
            }
        }
    }

    /// Keeps what a platform answered that undoing an action needs (a
    /// YouTube ban's id) under `key`, for `ttl`.
    pub async fn save_undo_handle(
        &self,
        key: &str,
        handle: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let now = Instant::now();
                if m.undo_handles.len() >= MAX_MEMORY_HANDLES {
                    m.undo_handles.retain(|_, (_, until)| *until > now);
                }
                if m.undo_handles.len() < MAX_MEMORY_HANDLES {
                    m.undo_handles
                        .insert(key.to_owned(), (handle.to_owned(), now + ttl));
                }
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c
                    .set_ex(r.key(&format!("undo:{key}")), handle, ttl.as_secs().max(1))
                    .await?;
            }
        }
        Ok(())
    }

    /// The undo handle under `key`, unless it expired.
    pub async fn undo_handle(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m)
                .undo_handles
                .get(key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(h, _)| h.clone())),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                Ok(c.get(r.key(&format!("undo:{key}"))).await?)
            }
        }
    }

    /// Forgets the undo handle under `key` (the action was undone).
    pub async fn forget_undo_handle(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                Self::mem(m).undo_handles.remove(key);
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c.del(r.key(&format!("undo:{key}"))).await?;
            }
        }
        Ok(())
    }

    /// Round trip to the store (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Store::Redis(r) = self {
            let mut c = r.conn.clone();
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
        }
        Ok(())
    }
}

impl RedisStore {
    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(bytes: &[u8]) -> CheckpointWrite<'_> {
        CheckpointWrite {
            position: bytes,
            changed: &[],
            removed: &[],
            now_ms: 0,
            forget_before_ms: i64::MIN,
        }
    }

    #[tokio::test]
    async fn a_checkpoint_writes_only_the_streams_that_changed_or_ended() {
        let s = Store::open(None, "").await.unwrap();
        assert!(s.lead("r", Duration::from_secs(5)).await.unwrap());
        let a = Owner {
            replica: "d0".into(),
            epoch: 1,
        };
        assert!(s.set_owner(2, &a, "r").await.unwrap());
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let first = [
            ("t.a".to_owned(), b"A1".to_vec()),
            ("t.b".to_owned(), b"B1".to_vec()),
        ];
        let w = CheckpointWrite {
            position: b"p1",
            changed: &first,
            removed: &[],
            now_ms: 0,
            forget_before_ms: i64::MIN,
        };
        assert!(s.save_checkpoint(2, &a, w).await.unwrap().written());
        // The next one names only what moved: a changed, b ended, c new.
        let second = [
            ("t.a".to_owned(), b"A2".to_vec()),
            ("t.c".to_owned(), b"C1".to_vec()),
        ];
        let removed = keys(&["t.b"]);
        let w = CheckpointWrite {
            position: b"p2",
            changed: &second,
            removed: &removed,
            now_ms: 0,
            forget_before_ms: i64::MIN,
        };
        assert!(s.save_checkpoint(2, &a, w).await.unwrap().written());
        let got = s
            .load_streams(2, &keys(&["t.a", "t.b", "t.c", "t.d"]))
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![Some(b"A2".to_vec()), None, Some(b"C1".to_vec()), None]
        );
        assert_eq!(s.saved_streams(2).await.unwrap(), (2, 4));
        assert_eq!(
            s.load_checkpoint(2).await.unwrap().as_deref(),
            Some(&b"p2"[..])
        );
        // Fenced: a stale owner changes neither the position nor a stream.
        let b = Owner {
            replica: "d1".into(),
            epoch: 2,
        };
        assert!(s.set_owner(2, &b, "r").await.unwrap());
        let stale = [("t.a".to_owned(), b"stale".to_vec())];
        let w = CheckpointWrite {
            position: b"p3",
            changed: &stale,
            removed: &removed,
            now_ms: 0,
            forget_before_ms: i64::MIN,
        };
        assert!(!s.save_checkpoint(2, &a, w).await.unwrap().written());
        assert_eq!(
            s.load_streams(2, &keys(&["t.a"])).await.unwrap(),
            vec![Some(b"A2".to_vec())]
        );
        assert_eq!(
            s.load_checkpoint(2).await.unwrap().as_deref(),
            Some(&b"p2"[..])
        );
        // Other shards are apart.
        assert_eq!(
            s.load_streams(3, &keys(&["t.a"])).await.unwrap(),
            vec![None]
        );
    }

    #[tokio::test]
    async fn a_leaving_replica_is_out_of_the_membership_until_it_deregisters() {
        let s = Store::open(None, "").await.unwrap();
        let long = Duration::from_secs(60);
        assert!(s.heartbeat("a", "pa", long).await.unwrap());
        assert!(s.heartbeat("b", "pb", long).await.unwrap());
        s.leave("b", long).await.unwrap();
        assert_eq!(s.live_replicas().await.unwrap(), vec!["a"]);
        assert_eq!(s.leaving_replicas().await.unwrap(), vec!["b"]);
        s.deregister("b").await.unwrap();
        assert!(s.leaving_replicas().await.unwrap().is_empty());
        // The marker expires on its own (a replica killed mid-hand-over).
        s.leave("a", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(s.leaving_replicas().await.unwrap().is_empty());
        assert!(s.live_replicas().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn memory_store_fences_owners_and_checkpoints() {
        let s = Store::open(None, "").await.unwrap();
        assert_eq!(s.ensure_shards(8).await.unwrap(), 8);
        assert!(matches!(
            s.ensure_shards(16).await,
            Err(StoreError::ShardMismatch {
                recorded: 8,
                configured: 16
            })
        ));
        assert!(s.lead("r1", Duration::from_secs(5)).await.unwrap());
        assert!(!s.lead("r2", Duration::from_secs(5)).await.unwrap());
        let a = Owner {
            replica: "d0".into(),
            epoch: 1,
        };
        assert!(s.set_owner(3, &a, "r1").await.unwrap());
        assert!(!s.set_owner(3, &a, "r2").await.unwrap(), "not the leader");
        assert!(
            s.save_checkpoint(3, &a, position(b"x"))
                .await
                .unwrap()
                .written()
        );
        let b = Owner {
            replica: "d1".into(),
            epoch: 2,
        };
        assert!(s.set_owner(3, &b, "r1").await.unwrap());
        assert!(
            !s.save_checkpoint(3, &a, position(b"stale"))
                .await
                .unwrap()
                .written(),
            "stale owner fenced"
        );
        assert_eq!(
            s.load_checkpoint(3).await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
        assert!(
            s.heartbeat("d0", "p0", Duration::from_millis(50))
                .await
                .unwrap()
        );
        assert!(
            s.heartbeat("d1", "p1", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert_eq!(s.live_replicas().await.unwrap(), vec!["d0", "d1"]);
        // A second process with a live replica's id is refused until that
        // heartbeat expires.
        assert!(
            !s.heartbeat("d1", "p2", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            !s.heartbeat("d0", "p2", Duration::from_secs(5))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(s.live_replicas().await.unwrap(), vec!["d1"]);
        assert!(
            s.heartbeat("d0", "p2", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            s.heartbeat("d1", "p1", Duration::from_secs(5))
                .await
                .unwrap()
        );
    }
}
