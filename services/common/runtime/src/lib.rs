//! Shared by every role.
//!
//! Parts:
//! - [`Health`] and [`serve_health`]: `/healthz` (the process runs),
//!   `/readyz` (its dependencies answer) and `/metrics` (Prometheus text) on
//!   an already-bound listener.
//! - [`Supervisor`]: a role's named tasks; one that dies stops the role
//!   with the reason, and shutdown is bounded.
//! - [`shutdown_on_signals`]: cancels a token on SIGTERM or Ctrl-C, and a
//!   second one on the next signal (stop waiting, exit now).
//! - [`role`]: the cluster flags every role takes, connecting, and
//!   [`run_role`], which runs a role's tasks with all of the above.
//! - [`exit`]: exit codes (64 bad usage or config, 65 bad data).
//! - [`init_logging`]: `tracing` to stderr, filtered by `RUST_LOG` (roles
//!   call `spamscope_telemetry::init`, which also sets up metrics and traces).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod backoff;
pub mod exit;
pub mod local_nats;
pub mod role;
mod supervise;

pub use backoff::Backoff;
pub use role::{ClusterArgs, Lifecycle, Role, connect, redact_url, run_role};
pub use supervise::{Ended, Supervisor};

/// How long a role has, after SIGINT or SIGTERM, to stop its tasks.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// Readiness of a role: the role's own state (set as it starts, leads,
/// loses a dependency) and named checks of live dependencies (the NATS
/// connection), all of which must pass.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .field("failing", &self.failing())
            .finish()
    }
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Adds a dependency that must answer for the role to be ready.
    pub fn require(&self, name: &str, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.lock().push((name.to_owned(), Box::new(check)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Check)>> {
        // Checks are plain closures; a poisoned lock still holds them whole.
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What keeps the role from being ready; empty when it is.
    pub fn failing(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.ready.load(Ordering::Relaxed) {
            v.push("role not started or not serving".to_owned());
        }
        v.extend(
            self.lock()
                .iter()
                .filter(|(_, check)| !check())
                .map(|(name, _)| name.clone()),
        );
        v
    }

    pub fn is_ready(&self) -> bool {
        self.failing().is_empty()
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown`.
pub async fn serve_health(
    listener: TcpListener,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, health_router(health))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// `/healthz` (the process runs), `/readyz` (what `health` says) and
/// `/metrics` (Prometheus text), for a role's health port or to merge into
/// a server of its own (the gateway's).
pub fn health_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let failing = health.failing();
                async move {
                    if failing.is_empty() {
                        (StatusCode::OK, "ready\n".to_owned())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {}\n", failing.join(", ")),
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    spamscope_telemetry::prometheus_text(),
                )
            }),
        )
}

/// Cancels `token` on the first SIGTERM or SIGINT, and the returned token
/// on the next one: a role stops in order on the first signal, and stops
/// waiting for its tasks on the second. Should the role not get there
/// (stuck outside the supervisor), the process exits (130) two seconds
/// after the second signal.
pub fn shutdown_on_signals(token: CancellationToken) -> CancellationToken {
    let force = CancellationToken::new();
    let f = force.clone();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        signals.next().await;
        tracing::info!("shutdown signal received");
        eprintln!("spamscope: stopping (send the signal again to exit at once)");
        token.cancel();
        signals.next().await;
        eprintln!("spamscope: second signal, exiting now");
        f.cancel();
        tokio::time::sleep(Duration::from_secs(2)).await;
        std::process::exit(130);
    });
    force
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Wall-clock time in Unix milliseconds (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    spamscope_telemetry::init_logging();
}
