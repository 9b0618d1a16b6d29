//! Per-client-connection upstream connections (`UpstreamAffinity`) against the mock provider
//! and raw sockets on 127.0.0.1.
//!
//! Most tests use a fresh `Forwarder` (so a fresh, empty pool) for every request: a connection
//! reused across forwarders can only be the affine one.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use compresh_forward::{
    ForwardConfig, ForwardError, Forwarder, ProviderKind, UnreachableReason, Upstream,
    UpstreamAffinity,
};
use compresh_mock::{Gate, MockProvider, MockResponse};
use compresh_vault::ProviderSecret;
use http::request::Parts;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

mod common;

use common::{assert_unreachable, assert_upstream_failed, chat_body, read_exactly, WAIT};

fn forwarder() -> Forwarder {
    Forwarder::new(ForwardConfig::default()).unwrap()
}

fn openai(mock: &MockProvider) -> Upstream {
    Upstream::new(
        "mock-openai",
        ProviderKind::OpenAi,
        Some(&mock.openai_base_url()),
        Some(ProviderSecret::new("sk-test".to_owned())),
    )
    .unwrap()
}

fn compatible(base_url: &str) -> Upstream {
    Upstream::new(
        "local",
        ProviderKind::OpenAiCompatible,
        Some(base_url),
        None,
    )
    .unwrap()
}

fn get(path: &str) -> Parts {
    http::Request::get(path).body(()).unwrap().into_parts().0
}

fn post(path: &str) -> Parts {
    http::Request::post(path).body(()).unwrap().into_parts().0
}

/// Starts a stream on `connection`'s affinity that the mock holds open after its first chunk
/// (until `gate` opens); returns the gate and the body with that chunk already read.
async fn gated_stream(
    forwarder: &Forwarder,
    connection: &Connection,
    upstream: &Upstream,
    mock: &MockProvider,
) -> (Gate, Incoming) {
    let gate = Gate::new();
    let first = Bytes::from_static(b"data: {\"n\":1}\n\n");
    mock.enqueue(MockResponse::GatedStream {
        chunks: vec![first.clone(), Bytes::from_static(b"data: [DONE]\n\n")],
        gate: gate.clone(),
    });
    let mut body = forwarder
        .forward_with(
            Some(&connection.affinity),
            upstream,
            post("/v1/chat/completions"),
            chat_body(true),
        )
        .await
        .unwrap()
        .into_body();
    read_exactly(&mut body, &first).await;
    (gate, body)
}

/// `GET /v1/models` through `forwarder` on `connection`'s affinity.
async fn models(
    forwarder: &Forwarder,
    connection: &Connection,
    upstream: &Upstream,
) -> Result<http::Response<Incoming>, ForwardError> {
    forwarder
        .forward_with(
            Some(&connection.affinity),
            upstream,
            get("/v1/models"),
            Bytes::new(),
        )
        .await
}

async fn body_bytes(response: http::Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// A client connection stand-in: the affinity driven by its own task until `end` is sent.
struct Connection {
    affinity: UpstreamAffinity,
    end: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn open() -> Connection {
        let affinity = UpstreamAffinity::new();
        let (end, ended) = oneshot::channel::<()>();
        let task = tokio::spawn(affinity.clone().drive(async {
            let _ = ended.await;
        }));
        Connection {
            affinity,
            end: Some(end),
            task,
        }
    }

    async fn close(mut self) {
        let _ = self.end.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

#[tokio::test]
async fn sequential_requests_of_one_client_connection_share_one_upstream_connection() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let connection = Connection::open();
    for _ in 0..5 {
        let response = forwarder()
            .forward_with(
                Some(&connection.affinity),
                &up,
                post("/v1/chat/completions"),
                chat_body(false),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert!(!body_bytes(response).await.is_empty());
    }
    assert_eq!(mock.requests().len(), 5);
    assert_eq!(mock.connections_accepted(), 1);

    // The client connection ends: its upstream connection is closed.
    connection.close().await;
    assert!(mock.wait_connections_open(0, WAIT).await);
}

#[tokio::test]
async fn two_client_connections_get_two_upstream_connections() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let fwd = forwarder();
    let (a, b) = (Connection::open(), Connection::open());
    for _ in 0..3 {
        for connection in [&a, &b] {
            let response = models(&fwd, connection, &up).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            body_bytes(response).await;
        }
    }
    // The shared pool alone would have used one connection for these sequential requests.
    assert_eq!(mock.connections_accepted(), 2);
    a.close().await;
    assert!(mock.wait_connections_open(1, WAIT).await);
    b.close().await;
    assert!(mock.wait_connections_open(0, WAIT).await);
}

#[tokio::test]
async fn a_provider_that_closes_the_connection_gets_a_new_one() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let connection = Connection::open();
    for _ in 0..2 {
        mock.enqueue(MockResponse::Fixed {
            status: 200,
            headers: vec![("connection".to_owned(), "close".to_owned())],
            body: Bytes::from_static(b"{\"ok\":true}"),
        });
    }
    for _ in 0..3 {
        let response = models(&forwarder(), &connection, &up).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // `connection` is hop-by-hop: stripped on the affine path too.
        assert!(response.headers().get("connection").is_none());
        body_bytes(response).await;
    }
    // Each request sent exactly once, on a new connection after each close.
    assert_eq!(mock.requests().len(), 3);
    assert_eq!(mock.connections_accepted(), 3);
    connection.close().await;
}

/// The provider closes an idle keep-alive connection just as the next request is sent: the
/// request comes back unsent and goes out once more, through the pool; never twice.
///
/// Deterministic on a current-thread runtime: the request is made from inside the driven
/// future (as the gateway's are), the close is in the socket before that task runs again (a
/// blocking sleep), and `yield_now` lets the runtime poll the I/O driver before the request is
/// queued. So the affine connection still looks ready when the request is queued on it, and
/// reads the close before it writes the request.
#[tokio::test(flavor = "current_thread")]
async fn a_request_on_a_connection_closed_by_the_provider_is_retried_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    // Requests seen per accepted connection, reported when the server is done.
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let (mut first, _) = listener.accept().unwrap();
        seen.push(answer_requests(&mut first, b"first", Some(&close_rx)));
        drop(first);
        let (mut second, _) = listener.accept().unwrap();
        seen.push(answer_requests(&mut second, b"retried", None));
        seen
    });

    let up = compatible(&format!("http://{addr}/v1"));
    let fwd = forwarder();
    let affinity = UpstreamAffinity::new();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (first_done_tx, first_done_rx) = oneshot::channel::<()>();
    let client_connection = {
        let (affinity, fwd, up) = (affinity.clone(), fwd.clone(), up.clone());
        async move {
            let first = fwd
                .forward_with(Some(&affinity), &up, get("/v1/models"), Bytes::new())
                .await
                .unwrap();
            let first = body_bytes(first).await;
            first_done_tx.send(()).unwrap();
            go_rx.await.unwrap();
            tokio::task::yield_now().await;
            let second = fwd
                .forward_with(Some(&affinity), &up, get("/v1/models"), Bytes::new())
                .await
                .unwrap();
            (first, body_bytes(second).await)
        }
    };
    let driver = tokio::spawn(affinity.clone().drive(client_connection));
    first_done_rx.await.unwrap();
    // Let the driver take the answered connection back to idle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    close_tx.send(()).unwrap();
    // Blocking on purpose: the driver must not run between the close and the next request.
    std::thread::sleep(Duration::from_millis(200));
    go_tx.send(()).unwrap();

    let (first, second) = driver.await.unwrap();
    assert_eq!(first, "first");
    assert_eq!(second, "retried");
    // Dropping the pool closes the second connection, which ends the server.
    drop(fwd);
    let seen = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    // One request on the closed connection, the retry on a new one (the pool's).
    assert_eq!(seen, vec![1, 1]);
}

/// Answers GET requests on a blocking socket with `body`, until `close` fires (after the
/// first answer) or the peer closes. Returns the number of requests answered.
fn answer_requests(
    socket: &mut std::net::TcpStream,
    body: &[u8],
    close: Option<&std::sync::mpsc::Receiver<()>>,
) -> usize {
    let mut answered = 0;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            socket.write_all(head.as_bytes()).unwrap();
            socket.write_all(body).unwrap();
            answered += 1;
        }
        if answered > 0 {
            if let Some(close) = close {
                let _ = close.recv();
                return answered;
            }
        }
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => return answered,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_busy_connection_is_not_waited_for_the_pool_takes_the_request() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let fwd = forwarder();
    let connection = Connection::open();
    let (gate, mut stream) = gated_stream(&fwd, &connection, &up, &mock).await;

    // Like a second stream of an HTTP/2 client connection: the affine connection is busy.
    let response = tokio::time::timeout(
        WAIT,
        fwd.forward_with(
            Some(&connection.affinity),
            &up,
            get("/v1/models"),
            Bytes::new(),
        ),
    )
    .await
    .expect("the second request does not wait behind the stream")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response).await;
    assert_eq!(mock.connections_accepted(), 2);

    gate.release();
    read_exactly(&mut stream, b"data: [DONE]\n\n").await;
    assert!(stream.frame().await.is_none());
    connection.close().await;
}

#[tokio::test]
async fn refused_connection_is_503_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let connection = Connection::open();
    let err = forwarder()
        .forward_with(
            Some(&connection.affinity),
            &compatible(&format!("http://{addr}/v1")),
            get("/v1/models"),
            Bytes::new(),
        )
        .await
        .unwrap_err();
    assert_unreachable(&err, Some("local"), UnreachableReason::Refused);
    // The failed connect left the slot free: a later request connects again.
    assert!(format!("{:?}", connection.affinity).contains("empty"));
    connection.close().await;
}

#[tokio::test]
async fn silent_provider_is_504_and_the_connection_is_dropped() {
    let mock = MockProvider::start().await;
    let connection = Connection::open();
    let fwd = Forwarder::new(ForwardConfig {
        response_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    })
    .unwrap();
    mock.enqueue(MockResponse::Silent);
    let err = fwd
        .forward_with(
            Some(&connection.affinity),
            &openai(&mock),
            post("/v1/chat/completions"),
            chat_body(false),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ForwardError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(mock.wait_connections_open(0, WAIT).await);
    // The next request of the same client connection works (on a new connection).
    let response = models(&fwd, &connection, &openai(&mock)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    connection.close().await;
}

#[tokio::test]
async fn connection_closed_before_headers_is_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
        }
    });
    let connection = Connection::open();
    let err = forwarder()
        .forward_with(
            Some(&connection.affinity),
            &compatible(&format!("http://{addr}/v1")),
            post("/v1/chat/completions"),
            chat_body(false),
        )
        .await
        .unwrap_err();
    assert_upstream_failed(&err, "local");
    connection.close().await;
}

#[tokio::test]
async fn dropping_the_body_mid_stream_closes_the_upstream_and_the_next_request_works() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let connection = Connection::open();
    let (gate, body) = gated_stream(&forwarder(), &connection, &up, &mock).await;
    drop(body);
    assert!(gate.wait_closed(WAIT).await, "upstream stream not closed");
    assert!(mock.wait_connections_open(0, WAIT).await);

    let response = models(&forwarder(), &connection, &up).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response).await;
    assert_eq!(mock.connections_accepted(), 2);
    connection.close().await;
}

/// HTTPS upstreams keep the pool (HTTP/2 by ALPN): the affinity is not used for them. A plain
/// HTTP server behind an `https://` URL fails the pool's TLS handshake (`Tls`); the affine
/// path, which has no TLS, would have failed differently.
#[tokio::test]
async fn https_upstreams_use_the_pool() {
    let mock = MockProvider::start().await;
    let connection = Connection::open();
    let base = format!("{}/v1", mock.base_url().replace("http://", "https://"));
    let err = models(&forwarder(), &connection, &compatible(&base))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForwardError::Unreachable {
                reason: UnreachableReason::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(format!("{:?}", connection.affinity).contains("empty"));
    connection.close().await;
}

fn short_idle_forwarder(idle: Duration) -> Forwarder {
    Forwarder::new(ForwardConfig {
        pool_idle_timeout: idle,
        ..ForwardConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn an_idle_upstream_connection_is_closed_after_the_idle_timeout() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let fwd = short_idle_forwarder(Duration::from_millis(100));
    let connection = Connection::open();
    let response = models(&fwd, &connection, &up).await.unwrap();
    body_bytes(response).await;
    // The client connection stays open; its idle upstream connection does not.
    assert!(mock.wait_connections_open(0, WAIT).await);
    assert!(format!("{:?}", connection.affinity).contains("empty"));

    let response = models(&fwd, &connection, &up).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response).await;
    assert_eq!(mock.connections_accepted(), 2);
    connection.close().await;
}

#[tokio::test]
async fn a_stream_longer_than_the_idle_timeout_is_not_cut() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let fwd = short_idle_forwarder(Duration::from_millis(20));
    let connection = Connection::open();
    let (gate, mut body) = gated_stream(&fwd, &connection, &up, &mock).await;
    // Many idle periods pass while the stream waits (not a timing assertion: any length works).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!gate.is_closed(), "the idle timer closed a busy connection");
    gate.release();
    read_exactly(&mut body, b"data: [DONE]\n\n").await;
    assert!(body.frame().await.is_none());
    assert_eq!(mock.connections_accepted(), 1);
    connection.close().await;
}
