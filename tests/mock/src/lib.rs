//! A mock LLM provider that speaks the OpenAI and Anthropic wire shapes, for tests and benchmarks.
//!
//! [`MockProvider::start`] binds a real socket on `127.0.0.1:0` and serves HTTP/1.1 (and h2c)
//! with hyper, one task per connection, until the [`MockProvider`] is dropped.
//!
//! Default routes (when no scripted response is queued):
//!
//! | request | response |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI `chat.completion` JSON, or SSE `chat.completion.chunk`s ending in `data: [DONE]` when `"stream": true` (with a usage chunk only if `stream_options.include_usage`) |
//! | `POST /v1/messages` | Anthropic `message` JSON, or the Anthropic SSE event sequence when `"stream": true` |
//! | `GET /v1/models` | an OpenAI model list |
//! | `/models`, `/chat/completions`, `/messages` | 404 JSON that says the `/v1` prefix is missing |
//! | anything else | 404 JSON |
//!
//! Usage numbers are fixed so tests can assert on them: OpenAI `12 + 7 = 19` tokens, Anthropic
//! `10` input / `5` output tokens.
//!
//! # Design decisions
//!
//! - **Observable**: every request is recorded ([`MockProvider::requests`]) and TCP connections
//!   are counted ([`MockProvider::connections_accepted`], [`MockProvider::connections_open`]), so
//!   tests can check path mapping, header hygiene and connection reuse.
//! - **Scriptable**: [`MockProvider::enqueue`] queues [`MockResponse`]s that the next requests pop
//!   in order: a fixed response, a stream the test releases chunk by chunk ([`Gate`]) and that
//!   reports when the client went away, a body sent in chunked frames, or silence for timeout
//!   tests. [`MockProvider::set_close_connections`] makes the mock close every connection after
//!   its response, as some providers and proxies do.
//! - **Cheap per request** (it is the upstream of a proxy-overhead benchmark): the default
//!   non-stream bodies are serialised once at start-up and shared; bodies are a small enum, not a
//!   boxed trait object. Recording can be switched off with [`MockProvider::set_recording`] for
//!   long load runs, since the log otherwise grows without bound.
//! - Panics instead of errors only where a test cannot go on anyway ([`MockProvider::start`]
//!   cannot bind); [`MockProvider::try_start_with`] returns the I/O error instead.
//!
//! # Example
//!
//! ```
//! use compresh_mock::{MockProvider, MockResponse};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mock = MockProvider::start().await;
//! mock.enqueue(MockResponse::Fixed {
//!     status: 429,
//!     headers: vec![("retry-after".into(), "1".into())],
//!     body: bytes::Bytes::from_static(br#"{"error":{"message":"slow down"}}"#),
//! });
//!
//! // Any HTTP client works; point it at `mock.openai_base_url()` or `mock.base_url()`.
//! let mut tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
//! tcp.write_all(b"GET /v1/models HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n")
//!     .await
//!     .unwrap();
//! let mut reply = String::new();
//! tcp.read_to_string(&mut reply).await.unwrap();
//! assert!(reply.starts_with("HTTP/1.1 429"));
//!
//! let seen = mock.last_request().unwrap();
//! assert_eq!(seen.path_and_query, "/v1/models");
//! assert_eq!(mock.connections_accepted(), 1);
//! # }
//! ```

mod body;
mod gate;
mod routes;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::body::MockBody;
pub use crate::gate::Gate;
pub use crate::routes::{ANTHROPIC_DEFAULT_MODEL, OPENAI_DEFAULT_MODEL};

/// How the mock streams and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockConfig {
    /// Content events per default stream (OpenAI chunks / Anthropic `content_block_delta`s).
    pub stream_chunks: usize,
    /// Pause between the frames of a default stream.
    pub stream_gap: Duration,
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for MockConfig {
    /// 3 chunks, no gap, `127.0.0.1:0`.
    fn default() -> Self {
        MockConfig {
            stream_chunks: 3,
            stream_gap: Duration::ZERO,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// One request as the mock received it (body read in full).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Path plus `?query` if any, e.g. `/v1/chat/completions`.
    pub path_and_query: String,
    /// Headers exactly as received.
    pub headers: http::HeaderMap,
    /// The whole request body.
    pub body: Bytes,
}

/// A scripted response; see [`MockProvider::enqueue`].
#[derive(Debug)]
pub enum MockResponse {
    /// Fixed response, body byte for byte.
    ///
    /// A status outside 100..=999 or a header that is not valid HTTP turns into a 500 whose JSON
    /// body names the problem, so a typo in a test is visible rather than silently dropped.
    Fixed {
        /// Status code.
        status: u16,
        /// Headers, in order (repeated names are all sent).
        headers: Vec<(String, String)>,
        /// Body, sent as is with a `content-length` (unless `headers` sets one).
        body: Bytes,
    },
    /// 200 text/event-stream; sends `chunks[0]` immediately, then waits on the gate before EACH
    /// subsequent chunk (gate.release() lets exactly one more chunk out). Reports when the client
    /// side drops the body ([`Gate::wait_closed`] resolves / [`Gate::is_closed`] turns true).
    GatedStream {
        /// Body chunks, each sent as its own frame, verbatim (include the SSE framing yourself).
        chunks: Vec<Bytes>,
        /// The test's handle on the stream.
        gate: Gate,
    },
    /// Like [`MockResponse::Fixed`], but the body goes out as one frame per element with no
    /// `content-length` (unless `headers` sets one), so it is sent `Transfer-Encoding: chunked`.
    Chunked {
        /// Status code.
        status: u16,
        /// Headers, in order (repeated names are all sent).
        headers: Vec<(String, String)>,
        /// Body frames, each sent as its own chunk.
        chunks: Vec<Bytes>,
    },
    /// Read the request, then never send response headers (for timeout tests).
    Silent,
}

/// A running mock provider; dropping it shuts the server down (listener and open connections).
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the sender wakes every `changed()` in the accept loop and connection tasks.
    _shutdown: watch::Sender<()>,
}

struct Shared {
    routes: routes::Routes,
    recording: AtomicBool,
    /// Serve one request per connection: answer with `connection: close`, then close.
    close_connections: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
    queue: Mutex<VecDeque<MockResponse>>,
    next_request_id: AtomicU64,
    accepted: AtomicUsize,
    /// Open connections; a watch so `wait_connections_open` cannot miss a change.
    open: watch::Sender<usize>,
}

impl MockProvider {
    /// Starts a mock with [`MockConfig::default`] on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If the socket cannot be bound (see [`MockProvider::try_start_with`]).
    pub async fn start() -> MockProvider {
        MockProvider::start_with(MockConfig::default()).await
    }

    /// Starts a mock with `config`. Must be called inside a Tokio runtime.
    ///
    /// # Panics
    ///
    /// If `config.listen` cannot be bound; a test cannot continue without its upstream, so a
    /// panic with the address is the most useful report. Use [`MockProvider::try_start_with`]
    /// to handle the error.
    pub async fn start_with(config: MockConfig) -> MockProvider {
        let listen = config.listen;
        match MockProvider::try_start_with(config).await {
            Ok(mock) => mock,
            Err(error) => panic!("mock provider: cannot bind {listen}: {error}"),
        }
    }

    /// Starts a mock with `config`, returning bind errors instead of panicking.
    ///
    /// # Errors
    ///
    /// The I/O error from binding `config.listen` or reading its local address.
    pub async fn try_start_with(config: MockConfig) -> io::Result<MockProvider> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            routes: routes::Routes::new(config.stream_chunks, config.stream_gap),
            recording: AtomicBool::new(true),
            close_connections: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            queue: Mutex::new(VecDeque::new()),
            next_request_id: AtomicU64::new(1),
            accepted: AtomicUsize::new(0),
            open: watch::Sender::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(MockProvider {
            addr,
            shared,
            _shutdown: shutdown,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the Anthropic-style base URL (paths start with `/v1/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, the OpenAI-style base URL (paths are relative to `/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far, in order of arrival (while recording is on).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Turns request recording on (the default) or off. Switch it off for long load runs: the
    /// log keeps every request, body included, until the mock is dropped.
    pub fn set_recording(&self, enabled: bool) {
        self.shared.recording.store(enabled, Ordering::SeqCst);
    }

    /// When on, every connection accepted from now on serves one request: its response carries
    /// `connection: close` and the mock closes the connection after it (off by default:
    /// keep-alive).
    pub fn set_close_connections(&self, enabled: bool) {
        self.shared
            .close_connections
            .store(enabled, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open.
    pub fn connections_open(&self) -> usize {
        *self.shared.open.borrow()
    }

    /// Queue a scripted response; each request pops the front of the queue, else default behaviour.
    pub fn enqueue(&self, response: MockResponse) {
        lock(&self.shared.queue).push_back(response);
    }

    /// Wait (with the given timeout) until `connections_open() == n`; returns whether it happened.
    pub async fn wait_connections_open(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.open.subscribe();
        // `wait_for` fails only if the sender is dropped, and `self.shared` owns it.
        let reached = tokio::time::timeout(timeout, rx.wait_for(|open| *open == n)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

impl fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr)
            .field("connections_accepted", &self.connections_accepted())
            .field("connections_open", &self.connections_open())
            .finish_non_exhaustive()
    }
}

/// Locks, ignoring poisoning: the data (a log and a queue) stays consistent after any panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decrements the open-connection count however the connection task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|open| *open -= 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                // Per-connection errors (e.g. the peer reset before accept) or fd exhaustion:
                // keep serving; back off briefly so a persistent error does not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // Streams must not wait for Nagle: every SSE frame should leave at once.
        let _ = stream.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.send_modify(|open| *open += 1);
        let guard = OpenGuard(Arc::clone(&shared));
        let shared = Arc::clone(&shared);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let service_shared = Arc::clone(&shared);
            let service = service_fn(move |request| handle(Arc::clone(&service_shared), request));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if shared.close_connections.load(Ordering::SeqCst) {
                builder.http1().keep_alive(false);
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                // Connection errors (peer reset, malformed request) only end this connection.
                _ = connection => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = request.into_parts();
    // A body that fails to arrive means the client is gone; whatever we answer is not read.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let request_id = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
    let scripted = lock(&shared.queue).pop_front();
    let response = match scripted {
        None => Some(
            shared
                .routes
                .respond(&parts.method, parts.uri.path(), &body, request_id),
        ),
        Some(MockResponse::Silent) => None,
        Some(MockResponse::Fixed {
            status,
            headers,
            body,
        }) => Some(fixed(status, &headers, MockBody::full(body))),
        Some(MockResponse::Chunked {
            status,
            headers,
            chunks,
        }) => Some(fixed(
            status,
            &headers,
            MockBody::frames(chunks, Duration::ZERO),
        )),
        Some(MockResponse::GatedStream { chunks, gate }) => Some(gated(chunks, gate)),
    };
    if shared.recording.load(Ordering::Relaxed) {
        lock(&shared.requests).push(RecordedRequest {
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            body,
        });
    }
    match response {
        Some(response) => Ok(response),
        // Silent: hold the request until the client gives up or the mock is dropped.
        None => std::future::pending().await,
    }
}

fn fixed(status: u16, headers: &[(String, String)], body: MockBody) -> Response<MockBody> {
    let Ok(status) = StatusCode::from_u16(status) else {
        return routes::openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("mock: scripted status {status} is not a valid HTTP status"),
            "mock_script_error",
        );
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        let parsed = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        );
        let (Ok(name), Ok(value)) = parsed else {
            return routes::openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("mock: scripted header {name:?}: {value:?} is not valid HTTP"),
                "mock_script_error",
            );
        };
        response.headers_mut().append(name, value);
    }
    response
}

fn gated(chunks: Vec<Bytes>, gate: Gate) -> Response<MockBody> {
    // Capacity 1: a chunk is only produced once the previous one was taken by the body.
    let (tx, rx) = mpsc::channel(1);
    let feeder_gate = gate.clone();
    tokio::spawn(async move {
        let mut chunks = chunks.into_iter();
        if let Some(first) = chunks.next() {
            if tx.send(first).await.is_err() {
                return;
            }
        }
        for chunk in chunks {
            tokio::select! {
                released = feeder_gate.acquire() => if !released { return },
                // The body (receiver) was dropped: hyper gave up on the response.
                () = tx.closed() => return,
            }
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        // Dropping `tx` here ends the body after the last chunk.
    });
    routes::event_stream(MockBody::gated(rx, gate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config() {
        let config = MockConfig::default();
        assert_eq!(config.stream_chunks, 3);
        assert_eq!(config.stream_gap, Duration::ZERO);
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn fixed_keeps_repeated_headers_and_rejects_bad_ones() {
        let headers = vec![
            ("x-a".to_owned(), "1".to_owned()),
            ("X-A".to_owned(), "2".to_owned()),
        ];
        let response = fixed(418, &headers, MockBody::full(Bytes::from_static(b"teapot")));
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        let values: Vec<_> = response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);

        let bad_value = vec![("x-a".to_owned(), "line\nbreak".to_owned())];
        let response = fixed(200, &bad_value, MockBody::full(Bytes::new()));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            fixed(99, &[], MockBody::full(Bytes::new())).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn binding_a_taken_port_is_an_error_not_a_panic() {
        let first = MockProvider::start().await;
        let config = MockConfig {
            listen: first.addr(),
            ..MockConfig::default()
        };
        assert!(MockProvider::try_start_with(config).await.is_err());
    }

    #[tokio::test]
    async fn debug_shows_the_address() {
        let mock = MockProvider::start().await;
        let debug = format!("{mock:?}");
        assert!(debug.contains(&mock.addr().to_string()), "{debug}");
    }
}
