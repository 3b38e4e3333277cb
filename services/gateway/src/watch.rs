//! Bounds on WatchChannel streams: how many are open in total and per
//! client, and how far one may fall behind.
//!
//! A watcher that does not read used to buffer without limit (200 of them
//! took a gateway from 63 MB to 2.27 GB). Each watch stream now gets a
//! buffer of `buffer` events between its NATS subscriptions and the
//! client. A burst that fills it waits for the client; a client that makes
//! no room for `stall` is disconnected with `RESOURCE_EXHAUSTED` (it
//! reconnects and starts from live chat again), and the subscriptions end
//! with it, so what NATS holds for it is freed too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Limits on WatchChannel streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Streams open at once on this gateway.
    pub total: usize,
    /// Streams open at once from one client address.
    pub per_client: usize,
    /// Events a stream may hold for a client that does not read.
    pub buffer: usize,
    /// How long a full buffer waits for the client to read before the
    /// stream is ended.
    pub stall: std::time::Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            total: 2_000,
            per_client: 16,
            buffer: 512,
            stall: std::time::Duration::from_secs(10),
        }
    }
}

/// The open watch streams, by client address (`None`: not known).
#[derive(Debug, Default)]
pub struct Watchers {
    open: Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
}

/// One admitted watch stream; its slot is given back when dropped.
#[derive(Debug)]
pub struct Slot {
    watchers: Arc<Watchers>,
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self
            .watchers
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.1.remove(&self.client);
            }
        }
    }
}

impl Watchers {
    /// A slot for one more stream of `client`, or the limit it would pass.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        limits: &WatchLimits,
    ) -> Result<Slot, Status> {
        let mut g = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 >= limits.total {
            return Err(Status::resource_exhausted(format!(
                "this gateway serves {} watch streams, its limit; try again later",
                limits.total
            )));
        }
        let mine = g.1.get(&client).copied().unwrap_or(0);
        if mine >= limits.per_client {
            return Err(Status::resource_exhausted(format!(
                "this client has {mine} watch streams open, the limit per client; close one first"
            )));
        }
        g.0 += 1;
        *g.1.entry(client).or_insert(0) += 1;
        Ok(Slot {
            watchers: Arc::clone(self),
            client,
        })
    }

    /// Watch streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `source` through a buffer of `limits.buffer` items, read by a task of
/// its own that holds `slot`: when the buffer stays full for
/// `limits.stall`, the stream ends with `RESOURCE_EXHAUSTED` after what it
/// holds; when the client goes away or `stop` is cancelled, the task ends
/// and drops `source` (and its subscriptions).
pub fn bounded<T: Send + 'static>(
    source: impl Stream<Item = Result<T, Status>> + Send + 'static,
    limits: &WatchLimits,
    slot: Slot,
    stop: CancellationToken,
) -> Boxed<T> {
    let (buffer, stall) = (limits.buffer, limits.stall);
    let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
    let lagged = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&lagged);
    tokio::spawn(async move {
        let _slot = slot;
        let mut source = std::pin::pin!(source);
        loop {
            tokio::select! {
                () = tx.closed() => break,
                () = stop.cancelled() => break,
                item = source.next() => match item {
                    None => break,
                    Some(item) => match tx.send_timeout(item, stall).await {
                        Ok(()) => {}
                        Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                            flag.store(true, Ordering::Relaxed);
                            break;
                        }
                        Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => break,
                    },
                },
            }
        }
    });
    let tail = futures::stream::once(async move {
        lagged.load(Ordering::Relaxed).then(|| {
            Err(Status::resource_exhausted(format!(
                "this watch stream held {buffer} events its client did not read for {} s and was ended; reconnect",
                stall.as_secs_f64()
            )))
        })
    })
    .filter_map(futures::future::ready);
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).chain(tail))
}
