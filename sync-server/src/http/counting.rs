//! Byte counting on the wire and in HTTP bodies, feeding [`Metrics`].
//!
//! - [`CountingListener`] wraps the main `TcpListener`: every accepted socket becomes a
//!   [`CountingStream`] that adds each successful read and write to the wire counters. That is
//!   everything on the connection: request lines, headers, chunked framing, bodies.
//! - [`count_traffic`] is a middleware that counts requests, responses by status class, and the
//!   body bytes as they stream through it ([`CountingBody`]). It is the router's outermost
//!   layer, so a compression layer added inside it is counted as sent (after encoding).
//!
//! Seeing the request body go by, [`count_traffic`] also closes the connection after an answer
//! to a request whose body the server did not read. A refusal made before the body is read (too
//! large by its `Content-Length`, server busy, a bad credential or content type) leaves the
//! body's bytes on the socket, and hyper then closes the connection rather than read them. A
//! client that pooled the connection meanwhile sends its next request into the closing socket
//! and gets "connection closed before message completed": a phone retrying after a 503 would
//! fail again for no reason. `Connection: close` on such an answer tells it not to reuse it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// A `TcpListener` whose accepted sockets count their bytes into [`Metrics`].
#[derive(Debug)]
pub struct CountingListener {
    inner: TcpListener,
    metrics: Arc<Metrics>,
}

impl CountingListener {
    pub fn new(inner: TcpListener, metrics: Arc<Metrics>) -> Self {
        CountingListener { inner, metrics }
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountingStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own impl retries and backs off on accept errors (e.g. EMFILE); reuse it.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Responses are written whole by hyper, so Nagle's algorithm would only add a delay
        // (up to the peer's delayed-ACK timeout) to the last segment of a larger one; the
        // request/response latency of small syncs and feed pages matters more than packets.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %addr, "cannot set TCP_NODELAY");
        }
        self.metrics.add_wire_connection();
        (CountingStream::new(stream, self.metrics.clone()), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A stream that adds the bytes each read and write moved to the wire counters.
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> CountingStream<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        CountingStream { inner, metrics }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.metrics.add_wire_read(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.metrics.add_wire_written(n);
        Poll::Ready(Ok(n))
    }

    // Forwarded so that hyper keeps writing headers and body with one `writev` instead of
    // copying them into one buffer first (it checks `is_write_vectored`).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.metrics.add_wire_written(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    Request,
    Response,
}

/// A body that adds the length of each data frame to the request or response body counter as
/// it passes, and sets `read_to_end`, if given, once it has been read to its end. Size hint and
/// end of stream are the inner body's, so hyper still sends a `Content-Length` where it would
/// have (wrapping must not turn a response into chunked).
#[derive(Debug)]
pub struct CountingBody {
    inner: Body,
    metrics: Arc<Metrics>,
    direction: Direction,
    read_to_end: Option<Arc<AtomicBool>>,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            match this.direction {
                Direction::Request => this.metrics.add_http_request_body(data.len()),
                Direction::Response => this.metrics.add_http_response_body(data.len()),
            }
        }
        if let Some(read) = &this.read_to_end
            && (frame.is_none() || this.inner.is_end_stream())
        {
            read.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`): counts the request, wraps both bodies
/// in [`CountingBody`], and counts the response by status class once its head is ready.
///
/// A body the handler never reads (e.g. a sync request refused for its content type) is not
/// counted here; the wire counters still see whatever of it the client sent.
pub async fn count_traffic(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    metrics.add_http_request();
    let read_to_end = (!request.body().is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
    let request = request.map(|inner| {
        Body::new(CountingBody {
            inner,
            metrics: metrics.clone(),
            direction: Direction::Request,
            read_to_end: read_to_end.clone(),
        })
    });
    let mut response = next.run(request).await;
    metrics.add_http_response(response.status());
    if read_to_end.is_some_and(|read| !read.load(Ordering::Relaxed)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(|inner| {
        Body::new(CountingBody {
            inner,
            metrics,
            direction: Direction::Response,
            read_to_end: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn stream_counts_reads_and_writes() -> io::Result<()> {
        let metrics = Arc::new(Metrics::new());
        let (client, server) = tokio::io::duplex(64);
        let mut counted = CountingStream::new(server, metrics.clone());
        let mut client = client;
        client.write_all(b"hello world").await?;
        let mut buf = [0u8; 11];
        counted.read_exact(&mut buf).await?;
        counted.write_all(b"answer").await?;
        counted.flush().await?;
        let mut back = [0u8; 6];
        client.read_exact(&mut back).await?;
        let s = metrics.snapshot();
        assert_eq!((s.wire_read_bytes, s.wire_written_bytes), (11, 6));
        Ok(())
    }

    #[tokio::test]
    async fn body_counts_frames_and_keeps_the_size_hint() -> Result<(), axum::Error> {
        let metrics = Arc::new(Metrics::new());
        let body = CountingBody {
            inner: Body::from("0123456789"),
            metrics: metrics.clone(),
            direction: Direction::Response,
            read_to_end: None,
        };
        assert_eq!(body.size_hint().exact(), Some(10));
        let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await?;
        assert_eq!(bytes.len(), 10);
        let s = metrics.snapshot();
        assert_eq!(
            (s.http_response_body_bytes, s.http_request_body_bytes),
            (10, 0)
        );
        Ok(())
    }

    /// The `Connection` header of the answer to a POST of `body`, which the handler reads or
    /// not.
    async fn answer(
        body: &'static str,
        read_it: bool,
    ) -> Result<Option<HeaderValue>, Box<dyn std::error::Error>> {
        let app = Router::new()
            .route(
                "/",
                post(move |request: Request| async move {
                    if read_it {
                        let _ = axum::body::to_bytes(request.into_body(), 1024).await;
                    }
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(Metrics::new()),
                count_traffic,
            ));
        let request = Request::post("/").body(Body::from(body))?;
        let response = app.oneshot(request).await?;
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        Ok(response.headers().get(header::CONNECTION).cloned())
    }

    #[tokio::test]
    async fn only_an_unread_body_closes_the_connection() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            answer("a body", false).await?,
            Some(HeaderValue::from_static("close"))
        );
        assert_eq!(answer("a body", true).await?, None);
        assert_eq!(answer("", false).await?, None);
        Ok(())
    }
}
