//! # patrol-server
//!
//! The sync server of the guard patrol system. Devices push their shift logs (automerge
//! documents, one per site, device and shift) to `POST /api/v1/sync`; the server checks each
//! push with `patrol_core::merge`, stores the document and projects its events into a per-site
//! feed with server sequence numbers, all in one transaction per request. The control room
//! reads the feed and the device list over JSON, or in the web console the server serves at `/`
//! (hand-written scripts under `console/`, compiled in: [`http::console`]).
//!
//! Four layers, each importing only from those below it:
//!
//! | layer | module | holds | may import |
//! |---|---|---|---|
//! | HTTP | [`http`] | the axum router ([`router`]), one file per resource with its routes; [`AppState`], the sync admission queue, extractors, [`AppError`] (the JSON error body), bearer authentication, the OpenAPI document, the traffic-counting wrappers; the web console's page and scripts | `report`, `store`, `credentials`, `config`, `metrics` |
//! | reports | [`report`] | the daily activity report: its model, built from a [`Store`] (so the same on every backend), and its CSV and PDF | `store` |
//! | storage | [`store`] | the [`Store`] trait (the canonical site record) and its backends: [`SqliteStore`], an embedded SQLite file in the data directory (the default), and [`PostgresStore`], which several server instances can share | `credentials` |
//! | credentials | [`credentials`] | token kinds, secrets and their SHA-256 (the only form stored), users, roles, scopes, and who may do what | nothing of this crate |
//!
//! Beside them: [`config`], the command line (`serve`, `site`, `admin create`, `user`) and the
//! API settings, with the defaults of every flag; [`metrics`], [`Metrics`], the traffic and
//! domain counters (the HTTP layer feeds them and serves them as Prometheus text on `/metrics`,
//! and optionally on a side listener, [`serve_metrics`], whose own traffic is not counted).
//! Neither imports the layers above. The storage layer never imports the HTTP layer: a store
//! answers in [`StoreError`], which the HTTP layer turns into answers. Above the HTTP layer,
//! [`listener`] is the accept loop that serves the router ([`serve`]) within the connection
//! limits ([`ConnectionLimits`]: timeouts, caps, the shutdown bound), over plain HTTP or over
//! HTTPS with the certificate [`tls`] loads (and reloads on SIGHUP).
//! Also above it, [`listing`] renders what `patrol-server site list` and `user list` print: a
//! table, or the API's own JSON views of sites and users.
//!
//! To embed or test the server, open a store, wrap it in an [`AppState`], and either call
//! [`router`] (e.g. with `tower::ServiceExt::oneshot`) or [`serve`] on a bound listener:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use patrol_server::{AppState, SqliteStore, serve, shutdown_signal};
//!
//! let store = SqliteStore::open_dir("./patrol-data")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, AppState::new(Arc::new(store)), shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod credentials;
pub mod http;
pub mod listener;
pub mod listing;
pub mod metrics;
pub mod report;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

pub use config::ApiConfig;
pub use http::{AppError, AppState, router};
pub use listener::{ConnectionLimits, serve_tls_with_limits, serve_with_limits};
pub use metrics::{Metrics, MetricsSnapshot};
pub use store::postgres::{PostgresOptions, PostgresStore};
pub use store::sqlite::SqliteStore;
pub use store::{Store, StoreError};

/// Serves the API on `listener` with the default [`ConnectionLimits`] until `shutdown`
/// completes, then lets in-flight requests finish within the shutdown timeout (each sync
/// request is one transaction, so stopping never leaves half a push). See
/// [`serve_with_limits`] and [`listener`].
///
/// Every accepted socket counts its bytes into `state.metrics` (see [`http::counting`]), and
/// accepted sockets get `TCP_NODELAY`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, state, ConnectionLimits::default(), shutdown).await
}

/// Serves `/metrics` (and `/healthz`) for `metrics` on a side listener until `shutdown`
/// completes. Nothing here is counted: a harness can poll the counters without changing them.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving metrics");
    axum::serve(listener, http::health::metrics_router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM; call it inside the tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed now, not when the future is first polled: a SIGTERM that
    // arrives between start-up and the first poll would otherwise take the default action and
    // kill the process without a graceful shutdown. Must be called inside the runtime.
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let interrupt = async {
                match interrupt {
                    Ok(mut sig) => {
                        sig.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for Ctrl-C");
                        std::future::pending::<()>().await;
                    }
                }
            };
            let terminate = async {
                match terminate {
                    Ok(mut sig) => {
                        sig.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = interrupt => tracing::info!("received Ctrl-C, shutting down"),
                () = terminate => tracing::info!("received SIGTERM, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("received Ctrl-C, shutting down");
        }
    }
}

/// The server's wall clock, milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
