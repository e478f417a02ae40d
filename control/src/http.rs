//! The HTTP listener: hyper serving the API's router over HTTP/1.1, with the limits a hostile client meets.
//!
//! - A client has `header_read_timeout_ms` to send a request's headers, counted from when its connection opens or
//!   its previous answer was sent: a connection holding an unfinished request line, or idling between
//!   keep-alive requests, is closed then.
//! - Once the headers are in, the body has `body_read_timeout_ms` to arrive (408 beyond).
//! - At most [`Limits::max_connections`] connections are open at once; more are closed as soon as they are
//!   accepted, and counted. The cap is never more than half the process's open-file limit, so control's own
//!   sockets and files (the dataplane's socket, the store, the flow log) always have room.
//!
//! On `stop`, the listener closes, connections finish the request they are serving, and the returned future ends
//! when the last one has closed (the caller bounds that wait: an event stream never ends by itself).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::{BoxError, Router};
use http_body::{Frame, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::config::Config;

/// What the listener allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits, with the connection cap lowered to half the open-file limit when that is lower.
    pub fn new(config: &Config) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            max_connections: connection_cap(config.max_connections, open_file_limit()),
        }
    }
}

/// The process's soft limit on open files (`None`: unlimited).
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// At most half the open-file limit: the rest stays for control's own files and sockets.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    configured.min(half).max(1)
}

/// Counts the connections closed because [`Limits::max_connections`] were open.
pub fn refused_counter() -> IntCounter {
    IntCounter::new(
        "bulkhead_control_http_connections_refused_total",
        "HTTP connections closed as soon as accepted because max_connections were open.",
    )
    .expect("a valid metric name")
}

/// Serves `router` on `listener` until `stop` resolves, then until the open connections have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    refused: IntCounter,
    stop: impl Future<Output = ()>,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_read_timeout,
        body_deadline,
    ));
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory: back off rather than spin; the connection that failed
                    // is already gone.
                    eprintln!("bulkhead-control: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for what is counted per source (failed authentications).
        let service = service.clone();
        let with_peer = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            service.call(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), with_peer));
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection: nothing to report.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Gives the request's body `limit` to arrive, from now (its headers are in).
async fn body_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(Deadline {
        body,
        deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A body that fails with [`BodyTimedOut`] when it has not been read in full by its deadline. (tower-http's
/// `TimeoutBody` restarts its timer at every frame, so a client dripping a byte at a time would never meet it.)
struct Deadline {
    body: Body,
    deadline: Pin<Box<Sleep>>,
}

/// The request body did not arrive within `body_read_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within body_read_timeout_ms")]
pub struct BodyTimedOut;

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_half_the_open_files() {
        assert_eq!(connection_cap(512, Some(1024)), 512);
        assert_eq!(connection_cap(4096, Some(1024)), 512);
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(4096, Some(1)), 1);
    }
}
