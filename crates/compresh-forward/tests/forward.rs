//! End-to-end forwarding tests against the mock provider (real sockets on 127.0.0.1).

use std::time::Duration;

use bytes::Bytes;
use compresh_forward::{
    ForwardConfig, ForwardError, Forwarder, ProviderKind, UnreachableReason, Upstream,
};
use compresh_mock::{Gate, MockProvider, MockResponse};
use compresh_vault::ProviderSecret;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

use common::{assert_unreachable, assert_upstream_failed, chat_body, read_exactly, WAIT};

const PROVIDER_KEY: &str = "sk-provider-secret-4242";
const CLIENT_KEY: &str = "comp_live_client_key_9999";
fn forwarder() -> Forwarder {
    Forwarder::new(ForwardConfig::default()).unwrap()
}

fn secret() -> Option<ProviderSecret> {
    Some(ProviderSecret::new(PROVIDER_KEY.to_owned()))
}

fn openai(mock: &MockProvider) -> Upstream {
    Upstream::new(
        "mock-openai",
        ProviderKind::OpenAi,
        Some(&mock.openai_base_url()),
        secret(),
    )
    .unwrap()
}

fn anthropic(mock: &MockProvider) -> Upstream {
    Upstream::new(
        "mock-anthropic",
        ProviderKind::Anthropic,
        Some(&mock.base_url()),
        secret(),
    )
    .unwrap()
}

fn head(method: Method, path_and_query: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(path_and_query);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

async fn body_bytes(response: http::Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// A plain TCP server that reads a request, writes `reply` verbatim and closes the connection.
async fn raw_server(reply: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(reply).await;
        }
    });
    addr
}

fn contains_client_key(headers: &HeaderMap) -> bool {
    headers
        .values()
        .any(|v| v.as_bytes().windows(5).any(|w| w == b"comp_"))
}

#[tokio::test]
async fn credentials_are_swapped_for_the_provider_key() {
    let mock = MockProvider::start().await;
    let fwd = forwarder();
    let request = head(
        Method::POST,
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ("x-api-key", CLIENT_KEY),
            ("cookie", &format!("key={CLIENT_KEY}")),
            ("content-type", "application/json"),
        ],
    );
    let body = chat_body(false);
    let response = fwd
        .forward(&openai(&mock), request, body.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = body_bytes(response).await;
    assert!(answer.starts_with(b"{"), "JSON answer expected");

    let seen = mock.last_request().unwrap();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path_and_query, "/v1/chat/completions");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}")
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(!seen.headers.contains_key("x-api-key"));
    assert!(!seen.headers.contains_key("cookie"));
    assert!(!contains_client_key(&seen.headers), "{:?}", seen.headers);
    assert_eq!(seen.body, body, "body forwarded byte for byte");
}

#[tokio::test]
async fn headers_are_stripped_by_category_and_the_rest_kept() {
    let mock = MockProvider::start().await;
    let fwd = forwarder();
    let request = head(
        Method::POST,
        "/v1/chat/completions",
        &[
            // hop-by-hop, including a header named by Connection
            ("connection", "keep-alive, x-hop-named"),
            ("x-hop-named", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            // ours
            ("x-session-id", "sess-1"),
            ("x-compresh-trace", "abc"),
            // recomputed
            ("host", "gateway.example.com"),
            ("content-length", "3"),
            // kept
            ("user-agent", "OpenAI/Python 1.52.0"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("openai-organization", "org-123"),
            ("x-stainless-lang", "python"),
        ],
    );
    let body = chat_body(false);
    let response = fwd
        .forward(&openai(&mock), request, body.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response).await;

    let seen = mock.last_request().unwrap().headers;
    for gone in [
        "x-hop-named",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "x-session-id",
        "x-compresh-trace",
        "transfer-encoding",
    ] {
        assert!(!seen.contains_key(gone), "{gone} reached the provider");
    }
    assert_eq!(seen["host"], mock.addr().to_string());
    assert_eq!(seen["content-length"], body.len().to_string());
    assert_eq!(seen["user-agent"], "OpenAI/Python 1.52.0");
    assert_eq!(seen["content-type"], "application/json");
    assert_eq!(seen["accept"], "application/json");
    assert_eq!(seen["openai-organization"], "org-123");
    assert_eq!(seen["x-stainless-lang"], "python");
}

#[tokio::test]
async fn path_mapping_for_all_three_kinds() {
    let mock = MockProvider::start().await;
    let fwd = forwarder();
    let cases = [
        (
            Upstream::new(
                "oa",
                ProviderKind::OpenAi,
                Some(&format!("{}/", mock.openai_base_url())),
                secret(),
            )
            .unwrap(),
            Method::POST,
            "/v1/chat/completions?trace=1&x=y",
        ),
        (
            Upstream::new(
                "an",
                ProviderKind::Anthropic,
                Some(&format!("{}/", mock.base_url())),
                secret(),
            )
            .unwrap(),
            Method::POST,
            "/v1/messages?beta=true",
        ),
        (
            Upstream::new(
                "compat",
                ProviderKind::OpenAiCompatible,
                Some(&mock.openai_base_url()),
                None,
            )
            .unwrap(),
            Method::GET,
            "/v1/models?limit=2",
        ),
    ];
    for (upstream, method, pq) in cases {
        let body = if method == Method::GET {
            Bytes::new()
        } else {
            chat_body(false)
        };
        let response = fwd
            .forward(&upstream, head(method, pq, &[]), body)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{pq}");
        body_bytes(response).await;
        let seen = mock.last_request().unwrap();
        assert_eq!(seen.path_and_query, pq, "{}", upstream.name());
    }
    // The keyless openai-compatible upstream sent no credential at all.
    let seen = mock.last_request().unwrap();
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn non_v1_paths_are_refused_without_contacting_the_provider() {
    let mock = MockProvider::start().await;
    let err = forwarder()
        .forward(
            &openai(&mock),
            head(Method::GET, "/models", &[]),
            Bytes::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::InvalidPath), "{err:?}");
    assert_eq!(err.status(), StatusCode::NOT_FOUND);
    assert!(mock.requests().is_empty());
    assert_eq!(mock.connections_accepted(), 0);
}

#[tokio::test]
async fn anthropic_version_defaults_or_is_kept_and_beta_passes() {
    let mock = MockProvider::start().await;
    let fwd = forwarder();
    let up = anthropic(&mock);

    let request = head(
        Method::POST,
        "/v1/messages",
        &[
            ("x-api-key", CLIENT_KEY),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
        ],
    );
    let response = fwd.forward(&up, request, chat_body(false)).await.unwrap();
    body_bytes(response).await;
    let seen = mock.last_request().unwrap().headers;
    assert_eq!(seen["x-api-key"], PROVIDER_KEY);
    assert_eq!(seen["anthropic-version"], "2023-06-01");
    assert_eq!(seen["anthropic-beta"], "prompt-caching-2024-07-31");
    assert!(!seen.contains_key("authorization"));
    assert!(!contains_client_key(&seen));

    let request = head(
        Method::POST,
        "/v1/messages",
        &[("anthropic-version", "2024-10-22")],
    );
    let response = fwd.forward(&up, request, chat_body(false)).await.unwrap();
    body_bytes(response).await;
    let seen = mock.last_request().unwrap().headers;
    assert_eq!(seen["anthropic-version"], "2024-10-22");
    assert_eq!(seen.get_all("anthropic-version").iter().count(), 1);
}

#[tokio::test]
async fn sse_is_relayed_incrementally() {
    let mock = MockProvider::start().await;
    let gate = Gate::new();
    let chunks = [
        Bytes::from_static(b"data: {\"n\":1}\n\n"),
        Bytes::from_static(b"data: {\"n\":2}\n\n"),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ];
    mock.enqueue(MockResponse::GatedStream {
        chunks: chunks.to_vec(),
        gate: gate.clone(),
    });
    let response = forwarder()
        .forward(
            &openai(&mock),
            head(Method::POST, "/v1/chat/completions", &[]),
            chat_body(true),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The mock streams with chunked encoding; that is hop-by-hop and must not be relayed.
    assert!(!response.headers().contains_key("transfer-encoding"));
    let mut body = response.into_body();

    // Chunk 1 arrives while the mock still holds chunk 2 behind its gate.
    read_exactly(&mut body, &chunks[0]).await;
    assert_eq!(gate.chunks_sent(), 1);
    gate.release();
    read_exactly(&mut body, &chunks[1]).await;
    assert_eq!(gate.chunks_sent(), 2);
    gate.release();
    read_exactly(&mut body, &chunks[2]).await;
    let end = tokio::time::timeout(WAIT, body.frame()).await.unwrap();
    assert!(end.is_none(), "stream should end after the last chunk");
}

#[tokio::test]
async fn provider_errors_pass_through_byte_for_byte() {
    let mock = MockProvider::start().await;
    let fwd = forwarder();
    for status in [400u16, 401, 429, 500] {
        let body = Bytes::from(format!(
            "{{\"error\":{{\"message\":\"provider says {status}\",\"type\":\"x\"}}}}\n"
        ));
        mock.enqueue(MockResponse::Fixed {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), format!("req_{status}")),
                ("retry-after".into(), "7".into()),
                ("x-ratelimit-remaining-requests".into(), "0".into()),
            ],
            body: body.clone(),
        });
        let response = fwd
            .forward(
                &openai(&mock),
                head(Method::POST, "/v1/chat/completions", &[]),
                chat_body(false),
            )
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-request-id"], format!("req_{status}").as_str());
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
        assert_eq!(headers["content-length"], body.len().to_string());
        assert_eq!(body_bytes(response).await, body);
    }
}

#[tokio::test]
async fn refused_connection_is_503_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let up = Upstream::new(
        "gone",
        ProviderKind::OpenAi,
        Some(&format!("http://{addr}/v1")),
        secret(),
    )
    .unwrap();
    let err = forwarder()
        .forward(
            &up,
            head(Method::GET, "/v1/models", &[]),
            Bytes::from(PROVIDER_KEY),
        )
        .await
        .unwrap_err();
    assert_unreachable(&err, Some("gone"), UnreachableReason::Refused);
    assert_eq!(err.code(), "upstream_unreachable");
    assert_eq!(err.error_type(), "proxy_error");
    assert_eq!(
        err.message(),
        "Could not reach provider 'gone': connection refused."
    );
    for text in [format!("{err:?}"), err.to_string(), err.message()] {
        assert!(!text.contains(PROVIDER_KEY), "{text}");
    }
}

#[tokio::test]
async fn silent_provider_is_504_and_the_connection_is_dropped() {
    let mock = MockProvider::start().await;
    mock.enqueue(MockResponse::Silent);
    let fwd = Forwarder::new(ForwardConfig {
        response_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    })
    .unwrap();
    let err = fwd
        .forward(
            &openai(&mock),
            head(Method::POST, "/v1/chat/completions", &[]),
            chat_body(false),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ForwardError::Timeout { provider, after }
            if provider == "mock-openai" && *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(err.code(), "upstream_timeout");
    // The abandoned request must not keep its connection open.
    assert!(mock.wait_connections_open(0, WAIT).await);
}

/// A server that reads the request then closes the connection without answering.
#[tokio::test]
async fn connection_closed_before_headers_is_502() {
    let addr = raw_server(b"").await;
    let up = Upstream::new(
        "flaky",
        ProviderKind::OpenAiCompatible,
        Some(&format!("http://{addr}/v1")),
        None,
    )
    .unwrap();
    let err = forwarder()
        .forward(
            &up,
            head(Method::POST, "/v1/chat/completions", &[]),
            chat_body(false),
        )
        .await
        .unwrap_err();
    assert_upstream_failed(&err, "flaky");
    assert_eq!(err.code(), "upstream_error");
}

/// An HTTP/1.0 upstream's version must not leak into the client's response.
#[tokio::test]
async fn upstream_http_version_is_not_passed_on() {
    let addr =
        raw_server(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"ok\":true}").await;
    let up = Upstream::new(
        "old",
        ProviderKind::OpenAiCompatible,
        Some(&format!("http://{addr}/v1")),
        None,
    )
    .unwrap();
    let response = forwarder()
        .forward(
            &up,
            head(Method::POST, "/v1/chat/completions", &[]),
            chat_body(false),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(
        body_bytes(response).await,
        Bytes::from_static(b"{\"ok\":true}")
    );
}

/// An https:// base whose server does not speak TLS fails the handshake.
#[tokio::test]
async fn tls_handshake_failure_is_503_tls() {
    let addr = raw_server(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
    let up = Upstream::new(
        "not-tls",
        ProviderKind::OpenAi,
        Some(&format!("https://{addr}/v1")),
        secret(),
    )
    .unwrap();
    let err = forwarder()
        .forward(&up, head(Method::GET, "/v1/models", &[]), Bytes::new())
        .await
        .unwrap_err();
    assert_unreachable(&err, None, UnreachableReason::Tls);
}

#[tokio::test]
async fn dropping_the_body_mid_stream_closes_the_upstream() {
    let mock = MockProvider::start().await;
    let gate = Gate::new();
    let first = Bytes::from_static(b"data: {\"n\":1}\n\n");
    mock.enqueue(MockResponse::GatedStream {
        chunks: vec![
            first.clone(),
            Bytes::from_static(b"data: {\"n\":2}\n\n"),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
        gate: gate.clone(),
    });
    let response = forwarder()
        .forward(
            &openai(&mock),
            head(Method::POST, "/v1/chat/completions", &[]),
            chat_body(true),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    read_exactly(&mut body, &first).await;
    assert!(!gate.is_closed(), "stream still pending before the drop");

    drop(body);
    assert!(
        gate.wait_closed(WAIT).await,
        "upstream stream not closed after the client dropped the body"
    );
    assert_eq!(gate.chunks_sent(), 1, "no chunk was released");
    assert!(mock.wait_connections_open(0, WAIT).await);
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let mock = MockProvider::start().await;
    let fwd = forwarder();
    let up = openai(&mock);
    for _ in 0..2 {
        let response = fwd
            .forward(&up, head(Method::GET, "/v1/models", &[]), Bytes::new())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        body_bytes(response).await;
    }
    // A clone shares the pool.
    let response = fwd
        .clone()
        .forward(&up, head(Method::GET, "/v1/models", &[]), Bytes::new())
        .await
        .unwrap();
    body_bytes(response).await;
    assert_eq!(mock.requests().len(), 3);
    assert_eq!(mock.connections_accepted(), 1);
}

#[tokio::test]
async fn debug_output_never_contains_the_secret() {
    let mock = MockProvider::start().await;
    let up = openai(&mock);
    let text = format!("{up:?}");
    assert!(!text.contains(PROVIDER_KEY), "{text}");
    assert!(text.contains("mock-openai"), "{text}");

    let errors = [
        ForwardError::UpstreamFailed {
            provider: up.name().to_owned(),
        },
        Upstream::new("bad", ProviderKind::OpenAi, Some("ftp://x"), secret()).unwrap_err(),
        Upstream::new(
            "bad-key",
            ProviderKind::OpenAi,
            None,
            Some(ProviderSecret::new(format!("{PROVIDER_KEY}\n"))),
        )
        .unwrap_err(),
    ];
    for err in errors {
        for text in [format!("{err:?}"), err.to_string(), err.message()] {
            assert!(!text.contains(PROVIDER_KEY), "{text}");
        }
    }
}
