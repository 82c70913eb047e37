//! Closes the connection after an answer to a request whose body the server did not read.
//!
//! A refusal made before the body is read (too large by its `Content-Length`, server busy, a
//! bad credential or content type) leaves the body's bytes on the socket, and hyper then closes
//! the connection rather than read them. A client that pooled the connection meanwhile sends its
//! next request into the closing socket and gets "connection closed before message completed":
//! a phone retrying after a 503 would fail again for no reason. `Connection: close` on such an
//! answer tells the client not to reuse the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// A request body that says when it has been read to its end.
#[derive(Debug)]
struct TrackedBody {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.read.store(true, Ordering::Relaxed);
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

/// Middleware (`axum::middleware::from_fn`): adds `Connection: close` to the answer of a
/// request whose body was left unread.
pub async fn close_if_body_unread(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(TrackedBody {
            inner,
            read: Arc::clone(&read),
        })
    });
    let mut response = next.run(request).await;
    if !read.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt as _;

    async fn answer(body: &'static str, read_it: bool) -> Option<HeaderValue> {
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
            .layer(axum::middleware::from_fn(close_if_body_unread));
        let request = Request::post("/").body(Body::from(body)).ok()?;
        let response = app.oneshot(request).await.ok()?;
        response.headers().get(header::CONNECTION).cloned()
    }

    #[tokio::test]
    async fn only_an_unread_body_closes_the_connection() {
        assert_eq!(
            answer("a body", false).await,
            Some(HeaderValue::from_static("close"))
        );
        assert_eq!(answer("a body", true).await, None);
        assert_eq!(answer("", false).await, None);
    }
}
