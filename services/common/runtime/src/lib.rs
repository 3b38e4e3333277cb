//! Shared by every role.
//!
//! Parts:
//! - [`Health`] and [`serve_health`]: `/healthz` (the process runs),
//!   `/readyz` (its dependencies answer) and `/metrics` (Prometheus text) on
//!   an already-bound listener.
//! - [`shutdown_on_signals`]: cancels a token on SIGTERM or Ctrl-C.
//! - [`init_logging`]: `tracing` to stderr, filtered by `RUST_LOG` (roles
//!   call `spamscope_telemetry::init`, which also sets up metrics and traces).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Readiness of a role, set by the role as its dependencies come and go.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown`.
pub async fn serve_health(
    listener: TcpListener,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = health.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
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
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    spamscope_telemetry::init_logging();
}
