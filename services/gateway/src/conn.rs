//! The gateway's connections: how many, and how long one may say nothing.
//!
//! `axum::serve` accepts without limit and gives a connection all the time
//! it wants: 1,000 idle or half-open connections were all still held 70 s
//! later. Here a connection must send its first bytes, and an HTTP/1.1
//! request its whole head, within `header_timeout`. That also holds between
//! the requests of a kept-alive connection. HTTP/2 connections are pinged,
//! and one that does not answer is closed. Connections past
//! `max_connections` are closed at once, counted and logged. A WatchChannel
//! stream is not affected: a response being streamed is not a request
//! being waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// Limits on the gateway's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once; more are closed as they come.
    pub max_connections: usize,
    /// Time to the first bytes of a connection, and to the end of each
    /// HTTP/1.1 request head (also between kept-alive requests).
    pub header_timeout: Duration,
    /// HTTP/2 ping interval; a ping not answered within as long closes
    /// the connection.
    pub keepalive: Duration,
    /// At shutdown, how long open connections get to finish.
    pub drain: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            drain: Duration::from_secs(5),
        }
    }
}

/// What the accept loop turned away or timed out (for tests and logs).
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections closed because `max_connections` were open.
    pub refused: AtomicU64,
    /// Connections that sent nothing within `header_timeout`.
    pub silent: AtomicU64,
}

/// Serves `app` on `listener` under `limits` until `shutdown`; then lets
/// open connections finish for `limits.drain`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    counters: Arc<ConnCounters>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive)
        .keep_alive_timeout(limits.keepalive)
        // HTTP/2 websockets and gRPC-web over h2 ask for it, as with
        // axum::serve.
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            let n = counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per 1,000, not one per connection of a flood.
            if n % 1_000 == 1 {
                warn!(
                    %peer,
                    max = limits.max_connections,
                    refused = n,
                    "connection closed: the gateway holds its maximum of connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.map(axum::body::Body::new)
                });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let counters = Arc::clone(&counters);
        let first_bytes = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // The protocol is told by the first bytes, which hyper waits
            // for without a deadline.
            let mut one = [0u8; 1];
            match tokio::time::timeout(first_bytes, stream.peek(&mut one)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    counters.silent.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "connection closed: nothing sent");
                    return;
                }
            }
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(svc),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("connections still open after the drain time: dropped");
    }
    Ok(())
}
