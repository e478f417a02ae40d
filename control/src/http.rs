//! The listener: hyper serving the API's router over HTTP/1.1 on TLS (rustls; plain HTTP only where the config
//! allows it), with the limits a hostile client meets.
//!
//! - A client has `header_read_timeout_ms` to send a request's headers, counted from when its connection opens or
//!   its previous answer was sent: a connection holding an unfinished request line, or idling between
//!   keep-alive requests, is closed then.
//! - Once the headers are in, the body has `body_read_timeout_ms` to arrive (408 beyond).
//! - At most [`Limits::max_connections`] connections are open at once; more are closed as soon as they are
//!   accepted, and counted. The cap is never more than half the process's open-file limit, so control's own
//!   sockets and files (the dataplane's socket, the store, the flow log) always have room.
//!
//! - On TLS, the handshake must end within `header_read_timeout_ms` too; a failed or late one closes the
//!   connection and is counted.
//!
//! Every request carries its client's address (`ConnectInfo<SocketAddr>`), and every answer the security
//! headers ([`security_headers`]).
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
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::{BoxError, Router};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounter, Registry};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

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

/// The listener's counters, exported with the metrics.
#[derive(Clone)]
pub struct Counters {
    /// Connections closed because [`Limits::max_connections`] were open.
    pub refused: IntCounter,
    /// TLS handshakes that failed or did not end within the header-read timeout.
    pub handshake_failures: IntCounter,
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            refused: IntCounter::new(
                "bulkhead_control_http_connections_refused_total",
                "HTTP connections closed as soon as accepted because max_connections were open.",
            )
            .expect("a valid metric name"),
            handshake_failures: IntCounter::new(
                "bulkhead_control_tls_handshake_failures_total",
                "TLS handshakes that failed (plain HTTP, a refused client certificate, a protocol error) or did \
                 not end within header_read_timeout_ms.",
            )
            .expect("a valid metric name"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.handshake_failures.clone()))
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` resolves, then until the open connections
/// have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<ServerConfig>>,
    counters: Counters,
    stop: impl Future<Output = ()>,
) {
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            limits.body_read_timeout,
            body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            tls.is_some(),
            security_headers,
        ));
    let tls = tls.map(TlsAcceptor::from);
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
            counters.refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for handlers and middleware that need it (as axum's `ConnectInfo`).
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            router.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_failures = counters.handshake_failures.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection: nothing to report.
            match tls {
                None => {
                    let _ = watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await;
                }
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await;
                        }
                        Ok(Err(_)) | Err(_) => handshake_failures.inc(),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The Content-Security-Policy of every answer: the console loads only its own scripts, styles and data, runs no
/// inline code, and may not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// HSTS on TLS: a year, for this host only (control is often reached by address, its neighbours are not ours).
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Adds the security headers to every answer (API, errors, static files, metrics, event streams); HSTS only when
/// served over TLS (`on_tls`).
async fn security_headers(
    axum::extract::State(on_tls): axum::extract::State<bool>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if on_tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    resp
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
