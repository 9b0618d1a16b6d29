//! The gateway's public contract, end to end: the real server type on 127.0.0.1:0 in front of
//! the Rust mock provider.

use std::time::Duration;

use bytes::Bytes;
use compresh::gateway::GatewayConfig;
use compresh_e2e::{
    assert_error, assert_not_found, eventually_async, set_provider, TestGateway, ANTHROPIC_SECRET,
    OPENAI_SECRET,
};
use compresh_mock::{Gate, MockResponse};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;

#[tokio::test]
async fn health_needs_no_key() {
    let gw = TestGateway::start().await;
    for path in ["/health", "/v1/health"] {
        let reply = gw.send(Method::GET, path, &[], Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "ok");
        assert_eq!(reply.json()["version"], env!("CARGO_PKG_VERSION"));
    }
    let reply = gw.send(Method::GET, "/nope", &[], Bytes::new()).await;
    assert_not_found(&reply);
}

#[tokio::test]
async fn bad_credentials_get_401_and_nothing_is_forwarded() {
    let gw = TestGateway::start().await;
    let missing = gw
        .send(Method::POST, "/v1/chat/completions", &[], CHAT.to_owned())
        .await;
    assert_error(
        &missing,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "missing_api_key",
    );

    let malformed = gw.chat("comp_tooshort", CHAT).await;
    assert_error(
        &malformed,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
    );
    assert!(!String::from_utf8_lossy(&malformed.body).contains("comp_tooshort"));
    assert_eq!(
        malformed.json()["error"]["message"],
        "malformed API key: expected 32 characters, found 13 bytes"
    );

    let unknown = compresh_keys::ApiKey::generate();
    let reply = gw.chat(unknown.expose_secret(), CHAT).await;
    assert_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
    );

    let basic = gw
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", "Basic dXNlcjpwYXNz")],
            CHAT.to_owned(),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    assert!(
        gw.mock.requests().is_empty(),
        "nothing may reach the provider"
    );
}

#[tokio::test]
async fn chat_completion_swaps_credentials_and_carries_gateway_headers() {
    let gw = TestGateway::start().await;
    let reply = gw
        .send(
            Method::POST,
            "/v1/chat/completions?trace=1",
            &[
                ("authorization", &format!("Bearer {}", gw.api_key)),
                ("content-type", "application/json"),
                ("x-session-id", "session-42"),
                ("x-compresh-debug", "1"),
                ("openai-organization", "org-123"),
                ("cookie", "a=b"),
            ],
            CHAT.to_owned(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["usage"]["total_tokens"], 19);
    assert_eq!(reply.header("x-ratelimit-limit"), Some("2000"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("1999"));
    let reset: u64 = reply.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        reset >= now && reset <= now + 61,
        "reset {reset} vs now {now}"
    );
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"default\";q=2000;w=60")
    );
    assert!(reply
        .header("ratelimit")
        .unwrap()
        .starts_with("\"default\";r=1999;t="));
    assert_eq!(reply.header("x-compresh-session-id"), Some("session-42"));
    let overhead: u64 = reply
        .header("x-compresh-proxy-overhead-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead < 10_000);
    // The provider's own headers pass through.
    assert!(reply.header("x-request-id").is_some());

    let seen = gw.mock.last_request().expect("forwarded");
    assert_eq!(seen.path_and_query, "/v1/chat/completions?trace=1");
    assert_eq!(
        seen.headers.get("authorization").unwrap(),
        &format!("Bearer {OPENAI_SECRET}")
    );
    assert_eq!(seen.headers.get("openai-organization").unwrap(), "org-123");
    for dropped in ["x-session-id", "x-compresh-debug", "cookie", "x-api-key"] {
        assert!(
            seen.headers.get(dropped).is_none(),
            "{dropped} reached the provider"
        );
    }
    for (name, value) in &seen.headers {
        assert!(
            !value.as_bytes().windows(5).any(|w| w == b"comp_"),
            "a comp_ key reached the provider in {name}"
        );
    }
    assert_eq!(
        seen.body,
        Bytes::from(CHAT),
        "the body is forwarded as sent"
    );

    // A generated session id when the client sends none.
    let reply = gw.chat(&gw.api_key, CHAT).await;
    assert!(reply
        .header("x-compresh-session-id")
        .unwrap()
        .starts_with("sess_"));
}

#[tokio::test]
async fn anthropic_messages_with_x_api_key() {
    let gw = TestGateway::start().await;
    let body = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let reply = gw
        .send(
            Method::POST,
            "/v1/messages",
            &[
                ("x-api-key", &gw.api_key),
                ("content-type", "application/json"),
            ],
            body.to_owned(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["type"], "message");
    assert!(reply.header("x-ratelimit-limit").is_some());
    let seen = gw.mock.last_request().unwrap();
    assert_eq!(seen.path_and_query, "/v1/messages");
    assert_eq!(seen.headers.get("x-api-key").unwrap(), ANTHROPIC_SECRET);
    assert_eq!(seen.headers.get("anthropic-version").unwrap(), "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn models_list_goes_to_openai() {
    let gw = TestGateway::start().await;
    let auth = format!("Bearer {}", gw.api_key);
    let reply = gw
        .send(
            Method::GET,
            "/v1/models",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["object"], "list");
    assert_eq!(gw.mock.last_request().unwrap().path_and_query, "/v1/models");
}

#[tokio::test]
async fn streams_are_relayed_incrementally() {
    let gw = TestGateway::start().await;
    let gate = Gate::new();
    let chunks: Vec<Bytes> = (0..3)
        .map(|i| Bytes::from(format!("data: {{\"chunk\":{i}}}\n\n")))
        .collect();
    gw.mock.enqueue(MockResponse::GatedStream {
        chunks: chunks.clone(),
        gate: gate.clone(),
    });
    let auth = format!("Bearer {}", gw.api_key);
    let response = gw
        .send_raw(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth)],
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#.to_owned(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("x-ratelimit-remaining").is_some());
    let mut body = response.into_body();
    let mut received = Vec::new();
    for (index, expected) in chunks.iter().enumerate() {
        // The chunk arrives while the mock still holds every later one.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("chunk arrived without the next one being released")
            .expect("frame")
            .expect("ok");
        let data = frame.into_data().expect("data frame");
        assert_eq!(&data, expected, "chunk {index}");
        assert_eq!(gate.chunks_sent(), index + 1);
        received.extend_from_slice(&data);
        gate.release();
    }
    assert!(body.frame().await.is_none(), "stream ended");
}

#[tokio::test]
async fn exactly_rpm_requests_pass_then_429() {
    let gw = TestGateway::start().await;
    let (key, _id) = gw.create_key(Some(3));
    for remaining in (0..3).rev() {
        let reply = gw.chat(&key, CHAT).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let reply = gw.chat(&key, CHAT).await;
    assert_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "rate_limit_exceeded",
    );
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("retry after"));
    assert!(reply.header("ratelimit-policy").unwrap().contains("q=3"));
    assert_eq!(gw.mock.requests().len(), 3, "the 429 was not forwarded");
    // Another key of the same account has its own bucket.
    assert_eq!(gw.chat(&gw.api_key, CHAT).await.status, StatusCode::OK);
}

#[tokio::test]
async fn changes_from_another_connection_apply_within_a_second() {
    let gw = TestGateway::start().await;
    let (key, id) = gw.create_key(None);
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    let cli = gw.second_handle();

    // rpm change.
    compresh::ops::set_key_rpm(&cli.store, &id, Some(1)).unwrap();
    eventually_async("rpm change applies", Duration::from_secs(2), || async {
        gw.chat(&key, CHAT).await.header("x-ratelimit-limit") == Some("1")
    })
    .await;

    // Provider key rotation: the next requests carry the new provider key.
    set_provider(
        &cli,
        "openai",
        "openai",
        Some(&gw.mock.openai_base_url()),
        "sk-rotated-NEW-KEY-000111",
    );
    eventually_async(
        "provider key rotation applies",
        Duration::from_secs(2),
        || async {
            gw.chat(&gw.api_key, CHAT).await;
            gw.mock
                .last_request()
                .unwrap()
                .headers
                .get("authorization")
                .unwrap()
                == "Bearer sk-rotated-NEW-KEY-000111"
        },
    )
    .await;

    // Deactivation, then reactivation.
    compresh::ops::set_account_active(&cli.store, "default", false).unwrap();
    eventually_async("deactivation applies", Duration::from_secs(2), || async {
        gw.chat(&gw.api_key, CHAT).await.status == StatusCode::FORBIDDEN
    })
    .await;
    let reply = gw.chat(&gw.api_key, CHAT).await;
    assert_error(
        &reply,
        StatusCode::FORBIDDEN,
        "permission_error",
        "account_deactivated",
    );
    compresh::ops::set_account_active(&cli.store, "default", true).unwrap();
    eventually_async("reactivation applies", Duration::from_secs(2), || async {
        gw.chat(&gw.api_key, CHAT).await.status == StatusCode::OK
    })
    .await;

    // Revocation.
    compresh::ops::revoke_key(&cli.store, &id).unwrap();
    eventually_async("revocation applies", Duration::from_secs(2), || async {
        gw.chat(&key, CHAT).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    let reply = gw.chat(&key, CHAT).await;
    assert_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "revoked_api_key",
    );
}

#[tokio::test]
async fn in_process_changes_apply_on_the_next_request() {
    let gw = TestGateway::start().await;
    let (key, id) = gw.create_key(None);
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    compresh::ops::revoke_key(&gw.data.store, &id).unwrap();
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn key_restrictions_give_403() {
    let gw = TestGateway::start().await;
    let (key, _) = compresh::ops::create_key(
        &gw.data.store,
        compresh::ops::KeyRequest {
            account: "default".into(),
            name: "restricted".into(),
            allowed_providers: vec!["openai".into()],
            allowed_models: vec!["gpt-4o*".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let key = key.expose_secret().to_owned();
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    let reply = gw
        .chat(&key, r#"{"model":"gpt-3.5-turbo","messages":[]}"#)
        .await;
    assert_error(
        &reply,
        StatusCode::FORBIDDEN,
        "permission_error",
        "model_not_allowed",
    );
    assert!(
        reply.header("x-ratelimit-limit").is_some(),
        "authenticated responses carry limits"
    );
    let reply = gw
        .send(
            Method::POST,
            "/v1/messages",
            &[("x-api-key", &key)],
            r#"{"model":"gpt-4o","messages":[]}"#.to_owned(),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::FORBIDDEN,
        "permission_error",
        "provider_not_allowed",
    );
    assert_eq!(gw.mock.requests().len(), 1);
}

#[tokio::test]
async fn bad_bodies_get_clear_errors() {
    let gw = TestGateway::start_with(GatewayConfig {
        body_limit: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let reply = gw.chat(&gw.api_key, "this is not json").await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_json",
    );
    let big = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "x".repeat(4096));
    let reply = gw.chat(&gw.api_key, &big).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
    );
    assert!(gw.mock.requests().is_empty());
}

#[tokio::test]
async fn provider_errors_pass_through_unchanged() {
    let gw = TestGateway::start().await;
    for status in [400u16, 401, 429, 500] {
        let body = Bytes::from(format!(
            "{{\"error\":{{\"message\":\"provider said {status}\",\"type\":\"x\",\"code\":null}}}}"
        ));
        gw.mock.enqueue(MockResponse::Fixed {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-ratelimit-remaining-requests".into(), "0".into()),
            ],
            body: body.clone(),
        });
        let reply = gw.chat(&gw.api_key, CHAT).await;
        assert_eq!(reply.status.as_u16(), status);
        assert_eq!(reply.body, body, "byte for byte");
        assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
        assert!(reply.header("x-ratelimit-limit").is_some());
    }
}

#[tokio::test]
async fn unreachable_provider_is_503_without_secrets() {
    let gw = TestGateway::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    set_provider(
        &gw.data,
        "openai",
        "openai",
        Some(&format!("http://127.0.0.1:{port}/v1")),
        OPENAI_SECRET,
    );
    let reply = gw.chat(&gw.api_key, CHAT).await;
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "proxy_error",
        "upstream_unreachable",
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert!(!text.contains(OPENAI_SECRET) && !text.contains(&gw.api_key));
}

#[tokio::test]
async fn provider_header_selects_an_openai_compatible_server() {
    let gw = TestGateway::start().await;
    set_provider(
        &gw.data,
        "local",
        "openai-compatible",
        Some(&gw.mock.openai_base_url()),
        "",
    );
    let auth = format!("Bearer {}", gw.api_key);
    let reply = gw
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth), ("x-compresh-provider", "local")],
            CHAT.to_owned(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = gw.mock.last_request().unwrap();
    assert!(
        seen.headers.get("authorization").is_none(),
        "no key configured, none sent"
    );
    assert!(seen.headers.get("x-compresh-provider").is_none());
    let reply = gw
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth), ("x-compresh-provider", "nope")],
            CHAT.to_owned(),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::FORBIDDEN,
        "permission_error",
        "provider_not_configured",
    );
}

#[tokio::test]
async fn store_files_hold_no_secret_after_a_run() {
    let mut gw = TestGateway::start().await;
    assert_eq!(gw.chat(&gw.api_key, CHAT).await.status, StatusCode::OK);
    gw.shutdown().await;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(gw.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for secret in [OPENAI_SECRET, ANTHROPIC_SECRET, gw.api_key.as_str()] {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                found.push(format!("{} holds a secret", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let mut gw = TestGateway::start().await;
    let gate = Gate::new();
    gw.mock.enqueue(MockResponse::GatedStream {
        chunks: vec![
            Bytes::from("data: 1\n\n"),
            Bytes::from("data: 2\n\n"),
            Bytes::from("data: [DONE]\n\n"),
        ],
        gate: gate.clone(),
    });
    let auth = format!("Bearer {}", gw.api_key);
    let response = gw
        .send_raw(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth)],
            r#"{"model":"gpt-4o","stream":true}"#.to_owned(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let addr = gw.addr();
    let shutdown = tokio::spawn(async move {
        gw.shutdown().await;
        gw
    });
    // New connections are refused once shutdown began.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener closed");
    assert!(!shutdown.is_finished(), "shutdown waits for the stream");
    gate.release();
    gate.release();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("stream completed")
        .to_bytes();
    assert_eq!(body, Bytes::from("data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"));
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finished after the stream")
        .unwrap();
}
