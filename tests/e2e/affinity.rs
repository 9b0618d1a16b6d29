//! Per-client-connection upstream connections through the real server: each client connection
//! gets its own upstream connection to a plain-HTTP provider, closed with it, and polls it for
//! the answer only when configured to; an HTTP/2 client sending concurrent requests is served
//! through the pool.

use std::time::Duration;

use bytes::Bytes;
use compresh_e2e::TestGateway;
use compresh_forward::ForwardConfig;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn chat(gateway: &TestGateway, uri: String) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("host", gateway.addr().to_string())
        .header("authorization", format!("Bearer {}", gateway.api_key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap()
}

/// One HTTP/1.1 client connection to the gateway; the task serving it ends when it closes.
async fn client_connection(
    gateway: &TestGateway,
) -> (http1::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let io = TokioIo::new(TcpStream::connect(gateway.addr()).await.unwrap());
    let (sender, connection) = http1::handshake(io).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// One chat completion on `sender`'s connection, answered 200 with a JSON body.
async fn chat_ok(sender: &mut http1::SendRequest<Full<Bytes>>, gateway: &TestGateway) {
    sender.ready().await.unwrap();
    let response = sender
        .send_request(chat(gateway, "/v1/chat/completions".to_owned()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{"), "{body:?}");
}

#[tokio::test]
async fn each_client_connection_has_its_own_upstream_connection() {
    let gateway = TestGateway::start().await;
    let (mut a, a_task) = client_connection(&gateway).await;
    let (mut b, b_task) = client_connection(&gateway).await;
    for _ in 0..3 {
        for sender in [&mut a, &mut b] {
            chat_ok(sender, &gateway).await;
        }
    }
    assert_eq!(gateway.mock.requests().len(), 6);
    // The pool alone would have reused one upstream connection for these sequential requests.
    assert_eq!(gateway.mock.connections_accepted(), 2);

    // A client connection that closes takes its upstream connection with it.
    drop(a);
    a_task.await.unwrap();
    assert!(gateway.mock.wait_connections_open(1, WAIT).await);
    drop(b);
    b_task.await.unwrap();
    assert!(gateway.mock.wait_connections_open(0, WAIT).await);
}

#[tokio::test]
async fn an_idle_client_connection_lets_its_upstream_connection_go_after_the_idle_timeout() {
    let gateway = TestGateway::start_with_forward(ForwardConfig {
        pool_idle_timeout: Duration::from_millis(200),
        ..ForwardConfig::default()
    })
    .await;
    let (mut sender, task) = client_connection(&gateway).await;
    for round in 1..=3 {
        chat_ok(&mut sender, &gateway).await;
        // The client keeps its connection open and idle; its upstream connection closes.
        assert!(
            gateway.mock.wait_connections_open(0, WAIT).await,
            "round {round}: the upstream connection outlived the idle timeout"
        );
        assert_eq!(gateway.mock.connections_accepted(), round);
    }
    if gateway.gateway.raw_lane() {
        let metrics = gateway.gateway.metrics().render();
        assert!(
            metrics.contains("compresh_lane_requests_total 3"),
            "the lane served them: {metrics}"
        );
    }
    drop(sender);
    task.await.unwrap();
}

#[tokio::test]
async fn answers_are_polled_for_only_when_configured() {
    // A window far longer than the mock takes to answer, even on a loaded machine.
    for (answer_poll, polled) in [(Duration::ZERO, 0), (Duration::from_millis(200), 3)] {
        let gateway = TestGateway::start_with_forward(ForwardConfig {
            answer_poll,
            ..ForwardConfig::default()
        })
        .await;
        if !gateway.gateway.raw_lane() {
            // Polling is the lane's; hyper's path always waits.
            return;
        }
        let (mut sender, task) = client_connection(&gateway).await;
        for _ in 0..3 {
            chat_ok(&mut sender, &gateway).await;
        }
        let metrics = gateway.gateway.metrics().render();
        assert!(
            metrics.contains(&format!(
                "\ncompresh_upstream_answers_polled_total {polled}\n"
            )),
            "with a {answer_poll:?} window: {metrics}"
        );
        drop(sender);
        task.await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_requests_of_an_http2_client_connection_all_succeed() {
    let gateway = TestGateway::start().await;
    let io = TokioIo::new(TcpStream::connect(gateway.addr()).await.unwrap());
    let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let url = gateway.url("/v1/chat/completions");
    // All sent before any is awaited: concurrent streams on one client connection.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let mut sender = sender.clone();
            let request = chat(&gateway, url.clone());
            tokio::spawn(async move {
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    for request in requests {
        let (status, body) = tokio::time::timeout(WAIT, request)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(b"{"), "{body:?}");
    }
    assert_eq!(gateway.mock.requests().len(), 8);
}
