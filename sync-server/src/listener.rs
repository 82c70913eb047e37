//! The API's accept loop: one hyper connection per accepted socket, with the limits that keep
//! slow, idle or too many connections from starving the others ([`ConnectionLimits`]), and a
//! graceful shutdown that ends within a bound.
//!
//! - Connections: at most `max_connections` open at once, and `max_connections_per_addr` from
//!   one peer address; a socket over either cap is closed as soon as it is accepted.
//! - Header read timeout (hyper's): a request head must arrive whole within it, counted from
//!   when the server starts waiting for it, so on HTTP/1.1 it also ends a kept-alive connection
//!   that sends no next request.
//! - Body read timeout (tower-http's `RequestBodyTimeout`): the longest wait for the next piece
//!   of a request body while a handler reads it; a body that keeps arriving, however slowly,
//!   is never cut.
//! - Idle timeout: a connection with no request in flight for this long is closed (for HTTP/2,
//!   which has no heads to wait for between requests). A request is in flight until its
//!   response body has been sent, so a live stream is never idle.
//! - TLS (with `--tls-cert`, see [`crate::tls`]): the handshake must finish within the header
//!   read timeout, in the connection's own task.
//! - Shutdown: the listener stops accepting, live streams end, idle connections close, requests
//!   in flight are let finish for up to `shutdown_timeout`; then what is left is cut.
//!
//! [`raise_fd_limit`] lifts the process's open-file limit so that the caps, not the kernel,
//! decide which connections are refused.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeout;

use crate::config::{
    DEFAULT_BODY_READ_TIMEOUT_SECS, DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_IDLE_TIMEOUT_SECS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDR, DEFAULT_SHUTDOWN_TIMEOUT_SECS,
    ServeArgs,
};
use crate::http::counting::CountingListener;
use crate::{AppState, router};

/// The limits of the API's connections (see the module's guide); `serve`'s flags set them.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_addr: usize,
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            body_read_timeout: Duration::from_secs(DEFAULT_BODY_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_addr: DEFAULT_MAX_CONNECTIONS_PER_ADDR,
            shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
        }
    }
}

impl From<&ServeArgs> for ConnectionLimits {
    /// The limits `serve`'s flags set (before [`fit_to_fd_limit`]).
    fn from(args: &ServeArgs) -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            max_connections: args.max_connections,
            max_connections_per_addr: args.max_connections_per_address,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
        }
    }
}

/// File descriptors kept for everything but client connections: the listeners, the store's
/// files (SQLite's database, WAL and shared-memory files per connection), logs, the runtime's
/// own. PostgreSQL connections come on top (see [`fit_to_fd_limit`]).
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard limit (the soft one is often 1,024, which a
/// flood of idle sockets exhausts) and returns the soft limit now in force, `None` when it is
/// unlimited or cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => return limit.maximum,
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
            }
        }
        limit.current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap that fits the open-file limit `fd_limit` once `reserved` descriptors are
/// set aside: `max_connections`, or less (at least 1) when the limit is too low for it.
pub fn fit_to_fd_limit(max_connections: usize, fd_limit: Option<u64>, reserved: u64) -> usize {
    match fd_limit {
        None => max_connections,
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
            max_connections.min(room).max(1)
        }
    }
}

/// Serves the API over plain HTTP on `listener` with `limits` until `shutdown` completes (see
/// the module's guide).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_on(listener, state, limits, None, shutdown).await
}

/// As [`serve_with_limits`], over HTTPS: every connection first completes a TLS handshake
/// with `tls`, within the header read timeout.
pub async fn serve_tls_with_limits(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_on(listener, state, limits, Some(tls), shutdown).await
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        header_read_timeout_secs = limits.header_read_timeout.as_secs_f64(),
        body_read_timeout_secs = limits.body_read_timeout.as_secs_f64(),
        idle_timeout_secs = limits.idle_timeout.as_secs_f64(),
        max_connections = limits.max_connections,
        max_connections_per_address = limits.max_connections_per_addr,
        shutdown_timeout_secs = limits.shutdown_timeout.as_secs_f64(),
        "serving the patrol API"
    );
    let mut listener = CountingListener::new(listener, state.metrics.clone());
    let feed = state.feed.clone();
    let metrics = state.metrics.clone();
    // Announces devices gone silent and shifts overdue on this instance's live streams; ends
    // when the streams are closed below.
    let gap_watcher = tokio::spawn(crate::http::gaps::watch(state.clone()));
    // Closes and finalises tour windows, and announces their changes on this instance's live
    // streams; ends with them too.
    let finaliser = tokio::spawn(crate::http::finaliser::run(state.clone()));
    // Escalates panic alarms nobody acknowledged in time, and announces alarm changes made
    // through other instances on this one's live streams; ends with them too.
    let alarm_watcher = tokio::spawn(crate::http::alarm_watch::run(state.clone()));
    // Sends the webhook deliveries due, from the outbox; ends with the live streams too (what
    // it was sending is sent again after its lease, see `http::webhook_sender`).
    let webhook_sender = tokio::spawn(crate::http::webhook_sender::run(state.clone()));
    let mut api = router(state);
    if tls.is_some() {
        // Browsers that once reached the server over HTTPS never fall back to plain HTTP.
        api = api.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    let app = RequestBodyTimeout::new(api, limits.body_read_timeout);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());

    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(PeerCounts::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Finished connections are reaped here, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (io, peer) = axum::serve::Listener::accept(&mut listener) => {
                // Over a cap the socket is dropped, that is closed, before a byte is read.
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics.add_wire_refused(false);
                    tracing::debug!(%peer, "connection cap reached; closing the new connection");
                    continue;
                };
                let Some(slot) = PeerCounts::enter(&peers, peer.ip(), limits.max_connections_per_addr)
                else {
                    metrics.add_wire_refused(true);
                    tracing::debug!(%peer, "per-address connection cap reached; closing the new connection");
                    continue;
                };
                let app = app.clone();
                let builder = builder.clone();
                let closing = closing_rx.clone();
                let tls = tls.clone();
                let handshake_timeout = limits.header_read_timeout;
                let idle = limits.idle_timeout;
                connections.spawn(async move {
                    match tls {
                        None => serve_connection(io, peer, app, builder, idle, closing).await,
                        // The handshake runs in the connection's task, bounded like a request
                        // head, so a client that stalls in it holds only its own slot.
                        Some(tls) => match tokio::time::timeout(handshake_timeout, tls.accept(io)).await {
                            Ok(Ok(io)) => serve_connection(io, peer, app, builder, idle, closing).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                    }
                    drop((permit, slot));
                });
            }
        }
    }
    drop(listener);
    // Live streams never end by themselves; idle connections close at once, requests in flight
    // are let finish within the bound.
    feed.close();
    gap_watcher.abort();
    finaliser.abort();
    alarm_watcher.abort();
    webhook_sender.abort();
    closing_tx.send_replace(true);
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            of = open,
            "connections still open after the shutdown timeout; closing them"
        );
        connections.shutdown().await;
    }
    tracing::info!("server stopped");
    Ok(())
}

type App = RequestBodyTimeout<axum::Router>;

/// Serves one connection until it ends, is idle for `idle`, or (after `closing` turns true)
/// has finished its requests in flight. Each request carries the peer's address as axum's
/// [`ConnectInfo`].
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: App,
    builder: auto::Builder<TokioExecutor>,
    idle: Duration,
    mut closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let guard = InFlight::enter(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|inner| InFlightBody {
                    inner,
                    _guard: guard,
                }))
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let check_at = activity.idle_deadline(idle);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = closing.changed(), if !shutting_down => {
                // An error means the server is gone, which is a shutdown too.
                if changed.is_err() || *closing.borrow() {
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(check_at) => {
                if activity.is_idle_for(idle) {
                    tracing::debug!("closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// A connection's requests in flight and when it last had none.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn idle_since(&self) -> Instant {
        // A poisoned lock only means a panic while storing an instant, which cannot tear it.
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= idle
    }

    /// When to check next: `idle` after the connection went idle, or `idle` from now while a
    /// request is in flight.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.idle_since() + idle
        } else {
            Instant::now() + idle
        }
    }
}

/// One request in flight on a connection, from its head to the end of its response body.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The instant is stored before the count drops, so an idle check never sees an old one.
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper has sent it or dropped it.
#[derive(Debug)]
struct InFlightBody {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections per peer address.
#[derive(Debug, Default)]
struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

impl PeerCounts {
    /// A place for one more connection from `ip`, or `None` when it has `max` open already.
    fn enter(counts: &Arc<PeerCounts>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        // An IPv4 client on a dual-stack socket is one address whichever way it is written.
        let ip = ip.to_canonical();
        let mut map = counts.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(PeerSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

/// One open connection counted against its peer address; released on drop.
#[derive(Debug)]
struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = map.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_counts_are_capped_and_released() {
        let counts = Arc::new(PeerCounts::default());
        let a: IpAddr = [127, 0, 0, 2].into();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap_or(a);
        let first = PeerCounts::enter(&counts, a, 2);
        let second = PeerCounts::enter(&counts, mapped, 2);
        assert!(first.is_some() && second.is_some());
        assert!(PeerCounts::enter(&counts, a, 2).is_none());
        assert!(PeerCounts::enter(&counts, [127, 0, 0, 3].into(), 2).is_some());
        drop(first);
        assert!(PeerCounts::enter(&counts, a, 2).is_some());
        drop(second);
        assert!(counts.0.lock().map(|m| m.is_empty()).unwrap_or(false));
    }

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        assert_eq!(fit_to_fd_limit(4096, None, RESERVED_FDS), 4096);
        assert_eq!(fit_to_fd_limit(4096, Some(1_048_576), RESERVED_FDS), 4096);
        assert_eq!(fit_to_fd_limit(4096, Some(1024), RESERVED_FDS), 768);
        assert_eq!(fit_to_fd_limit(4096, Some(10), RESERVED_FDS), 1);
    }
}
