//! Usage accounting and metrics, end to end: tokens recorded from the mock provider's plain and
//! streamed answers, include_usage injection invisible to the client, shutdown flush, retried
//! writes, last_used_at, and the Prometheus scrape.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use compresh::gateway::GatewayConfig;
use compresh::usage::UsageConfig;
use compresh_e2e::{eventually, eventually_async, TestGateway, ANTHROPIC_SECRET, OPENAI_SECRET};
use compresh_keys::KeyId;
use compresh_mock::{Gate, MockResponse};
use compresh_store::{DailyUsage, UsageFilter};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM_NO_USAGE: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM_USAGE: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES: &str = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const WAIT: Duration = Duration::from_secs(20);

/// A gateway whose writer flushes quickly, so tests wait little.
async fn fast_gateway() -> TestGateway {
    TestGateway::start_with(GatewayConfig {
        usage: UsageConfig {
            flush_interval: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..UsageConfig::default()
        },
        ..GatewayConfig::default()
    })
    .await
}

async fn messages(gw: &TestGateway, key: &str, body: &str) -> compresh_e2e::Reply {
    gw.send(
        Method::POST,
        "/v1/messages",
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

fn usage_of(gw: &TestGateway, key_id: &str) -> Option<DailyUsage> {
    let filter = UsageFilter {
        key_id: Some(key_id.parse::<KeyId>().expect("key id")),
        ..UsageFilter::default()
    };
    let rows = gw.data.store.usage_daily(&filter).expect("usage query");
    assert!(rows.len() <= 1, "one key, one day: {rows:?}");
    rows.into_iter().next()
}

/// Poll until the key has `requests` requests recorded, then return its row.
async fn wait_for_usage(gw: &TestGateway, key_id: &str, requests: u64) -> DailyUsage {
    eventually(&format!("{requests} usage rows for {key_id}"), WAIT, || {
        usage_of(gw, key_id).is_some_and(|row| row.requests >= requests)
    })
    .await;
    let row = usage_of(gw, key_id).expect("row");
    assert_eq!(row.requests, requests, "{row:?}");
    row
}

/// Scrape `/metrics` and check every sample line is `name{labels} value`.
async fn scrape(gw: &TestGateway) -> HashMap<String, f64> {
    let reply = gw.send(Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .header("content-type")
        .is_some_and(|value| value.starts_with("text/plain; version=0.0.4")));
    parse_metrics(std::str::from_utf8(&reply.body).expect("utf-8"))
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name: {line}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels: {line}"
            );
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (label, quoted) = pair.split_once('=').expect("label=value");
                assert!(
                    label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(quoted.starts_with('"'), "{line}");
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate: {line}"
        );
    }
    samples
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// The body the mock itself sends for `body` (no gateway in between).
async fn straight_from_mock(gw: &TestGateway, body: &str) -> Bytes {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/chat/completions", gw.mock.openai_base_url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = client.request(request).await.expect("mock answered");
    assert_eq!(response.status(), StatusCode::OK);
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

#[tokio::test]
async fn tokens_are_recorded_for_plain_and_streamed_answers() {
    let gw = fast_gateway().await;
    let cases = [
        ("openai plain", CHAT, false, 12, 7),
        ("openai stream", CHAT_STREAM, false, 12, 7),
        ("openai stream with usage", CHAT_STREAM_USAGE, false, 12, 7),
        ("anthropic plain", MESSAGES, true, 10, 5),
        ("anthropic stream", MESSAGES_STREAM, true, 10, 5),
    ];
    for (what, body, anthropic, input, output) in cases {
        let (key, key_id) = gw.create_key(None);
        let reply = if anthropic {
            messages(&gw, &key, body).await
        } else {
            gw.chat(&key, body).await
        };
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        let row = wait_for_usage(&gw, &key_id, 1).await;
        assert_eq!(
            (row.input_tokens, row.output_tokens),
            (input, output),
            "{what}"
        );
        assert_eq!((row.errors, row.rate_limited), (0, 0), "{what}");
    }
}

#[tokio::test]
async fn injected_include_usage_is_invisible_to_the_client() {
    let gw = fast_gateway().await;
    for body in [CHAT_STREAM, CHAT_STREAM_NO_USAGE] {
        let expected = straight_from_mock(&gw, body).await;
        assert!(!String::from_utf8_lossy(&expected).contains("\"usage\""));

        let (key, key_id) = gw.create_key(None);
        let reply = gw.chat(&key, body).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        // The provider was asked for usage ...
        let forwarded = gw.mock.last_request().expect("forwarded");
        let forwarded: serde_json::Value = serde_json::from_slice(&forwarded.body).expect("json");
        assert_eq!(
            forwarded["stream_options"]["include_usage"], true,
            "{forwarded}"
        );
        assert_eq!(forwarded["messages"][0]["content"], "hi");
        // ... yet the client got exactly what it gets without asking, and usage was recorded.
        assert_eq!(
            String::from_utf8_lossy(&reply.body),
            String::from_utf8_lossy(&expected)
        );
        let row = wait_for_usage(&gw, &key_id, 1).await;
        assert_eq!((row.input_tokens, row.output_tokens), (12, 7));
    }
    let samples = scrape(&gw).await;
    assert_eq!(
        sample(&samples, "compresh_usage_include_injected_total"),
        2.0
    );
}

#[tokio::test]
async fn usage_the_client_asked_for_passes_through_untouched() {
    let gw = fast_gateway().await;
    let expected = straight_from_mock(&gw, CHAT_STREAM_USAGE).await;
    let text = String::from_utf8_lossy(&expected).into_owned();
    assert!(
        text.contains("\"usage\":null") && text.contains("\"choices\":[]"),
        "{text}"
    );
    let reply = gw.chat(&gw.api_key, CHAT_STREAM_USAGE).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&reply.body), text);
    let forwarded = gw.mock.last_request().expect("forwarded");
    assert_eq!(
        forwarded.body,
        Bytes::from(CHAT_STREAM_USAGE),
        "request forwarded unchanged"
    );
    let samples = scrape(&gw).await;
    assert_eq!(
        sample(&samples, "compresh_usage_include_injected_total"),
        0.0
    );
}

#[tokio::test]
async fn shutdown_writes_every_queued_row() {
    // Rows are only written on a full batch or after a minute: only the shutdown flush can
    // put them in the store within this test.
    let mut gw = TestGateway::start_with(GatewayConfig {
        usage: UsageConfig {
            flush_interval: Duration::from_secs(60),
            batch_rows: 10_000,
            ..UsageConfig::default()
        },
        ..GatewayConfig::default()
    })
    .await;
    let (key, key_id) = gw.create_key(None);
    for _ in 0..3 {
        assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    }
    assert_eq!(
        messages(&gw, &key, MESSAGES_STREAM).await.status,
        StatusCode::OK
    );
    gw.shutdown().await;
    let row = usage_of(&gw, &key_id).expect("flushed at shutdown");
    assert_eq!(row.requests, 4);
    assert_eq!(
        (row.input_tokens, row.output_tokens),
        (3 * 12 + 10, 3 * 7 + 5)
    );
    let key = gw
        .data
        .store
        .key_by_id(&key_id.parse().expect("id"))
        .expect("key");
    assert!(key.last_used_at.is_some(), "last_used_at flushed too");
}

#[tokio::test]
async fn a_full_batch_is_written_before_the_flush_interval() {
    // The writer is not woken per row: only the sinks' "batch full" signal can write these
    // rows before the minute is over (the wait below gives up after 20 s).
    let gw = TestGateway::start_with(GatewayConfig {
        usage: UsageConfig {
            flush_interval: Duration::from_secs(60),
            batch_rows: 3,
            ..UsageConfig::default()
        },
        ..GatewayConfig::default()
    })
    .await;
    let (key, key_id) = gw.create_key(None);
    for _ in 0..3 {
        assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    }
    let row = wait_for_usage(&gw, &key_id, 3).await;
    assert_eq!((row.input_tokens, row.output_tokens), (3 * 12, 3 * 7));
}

#[tokio::test]
async fn failed_writes_are_retried_until_they_succeed() {
    let gw = fast_gateway().await;
    let (key, key_id) = gw.create_key(None);
    // A second connection holds the write lock, as a long CLI transaction would.
    let blocker = rusqlite::Connection::open(gw.data.store.path()).expect("open db");
    blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    // The request itself is not held up by the failing writer.
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    eventually_async("a failed usage write", Duration::from_secs(30), || async {
        sample(&scrape(&gw).await, "compresh_usage_write_failures_total") >= 1.0
    })
    .await;
    assert_eq!(
        sample(&scrape(&gw).await, "compresh_usage_rows_written_total"),
        0.0
    );

    blocker.execute_batch("ROLLBACK").expect("unlock");
    drop(blocker);
    let row = wait_for_usage(&gw, &key_id, 1).await;
    assert_eq!((row.input_tokens, row.output_tokens), (12, 7));
    let samples = scrape(&gw).await;
    assert_eq!(sample(&samples, "compresh_usage_rows_written_total"), 1.0);
    assert_eq!(sample(&samples, "compresh_usage_rows_dropped_total"), 0.0);
}

#[tokio::test]
async fn last_used_at_is_kept_current() {
    let gw = fast_gateway().await;
    let (key, key_id) = gw.create_key(None);
    let id: KeyId = key_id.parse().expect("id");
    assert_eq!(
        gw.data.store.key_by_id(&id).expect("key").last_used_at,
        None
    );
    let before = compresh::gateway::unix_now();
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    eventually("last_used_at set", WAIT, || {
        gw.data
            .store
            .key_by_id(&id)
            .expect("key")
            .last_used_at
            .is_some()
    })
    .await;
    let used = gw
        .data
        .store
        .key_by_id(&id)
        .expect("key")
        .last_used_at
        .expect("set");
    assert!(used >= before, "{used} < {before}");
}

#[tokio::test]
async fn metrics_scrape_parses_and_counters_move() {
    let gw = fast_gateway().await;
    let chat_ok = r#"compresh_requests_total{route="/v1/chat/completions",provider="openai",status_class="2xx"}"#;
    let unauthenticated = r#"compresh_requests_total{route="/v1/chat/completions",provider="none",status_class="4xx"}"#;
    let before = scrape(&gw).await;
    assert_eq!(sample(&before, chat_ok), 0.0);
    assert_eq!(sample(&before, "compresh_active_streams"), 0.0);

    assert_eq!(gw.chat(&gw.api_key, CHAT).await.status, StatusCode::OK);
    assert_eq!(
        gw.chat(&gw.api_key, CHAT_STREAM).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.chat("comp_nope", CHAT).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A client-chosen provider name that is not configured must not become a label.
    let auth = format!("Bearer {}", gw.api_key);
    let reply = gw
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("x-compresh-provider", "made-up-name"),
            ],
            CHAT.to_owned(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let after = scrape(&gw).await;
    assert_eq!(sample(&after, chat_ok), 2.0);
    assert_eq!(sample(&after, unauthenticated), 2.0);
    let overhead = "compresh_gateway_overhead_seconds_count";
    assert_eq!(sample(&after, overhead) - sample(&before, overhead), 4.0);
    let upstream = "compresh_upstream_latency_seconds_count";
    assert_eq!(sample(&after, upstream) - sample(&before, upstream), 2.0);
    assert!(
        sample(
            &after,
            r#"compresh_upstream_latency_seconds_bucket{le="+Inf"}"#
        ) >= 2.0
    );
    eventually_async("rows written", WAIT, || async {
        sample(&scrape(&gw).await, "compresh_usage_rows_written_total") >= 3.0
    })
    .await;
    assert_eq!(
        sample(&scrape(&gw).await, "compresh_usage_queue_depth"),
        0.0
    );

    let text = String::from_utf8_lossy(
        &gw.send(Method::GET, "/metrics", &[], Bytes::new())
            .await
            .body,
    )
    .into_owned();
    for secret in [
        gw.api_key.as_str(),
        OPENAI_SECRET,
        ANTHROPIC_SECRET,
        "made-up-name",
    ] {
        assert!(!text.contains(secret), "metrics leak {secret}");
    }
}

#[tokio::test]
async fn rate_limited_requests_are_counted_and_recorded() {
    let gw = fast_gateway().await;
    let (key, key_id) = gw.create_key(Some(1));
    assert_eq!(gw.chat(&key, CHAT).await.status, StatusCode::OK);
    assert_eq!(
        gw.chat(&key, CHAT).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let samples = scrape(&gw).await;
    assert_eq!(sample(&samples, "compresh_rate_limited_total"), 1.0);
    let limited = r#"compresh_requests_total{route="/v1/chat/completions",provider="none",status_class="4xx"}"#;
    assert_eq!(sample(&samples, limited), 1.0);
    let row = wait_for_usage(&gw, &key_id, 2).await;
    assert_eq!((row.rate_limited, row.errors), (1, 0));
    assert_eq!((row.input_tokens, row.output_tokens), (12, 7));
}

#[tokio::test]
async fn provider_errors_are_recorded() {
    let gw = fast_gateway().await;
    let (key, key_id) = gw.create_key(None);
    gw.mock.enqueue(MockResponse::Fixed {
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from_static(br#"{"error":{"message":"boom"}}"#),
    });
    assert_eq!(
        gw.chat(&key, CHAT).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let row = wait_for_usage(&gw, &key_id, 1).await;
    assert_eq!((row.errors, row.input_tokens, row.output_tokens), (1, 0, 0));
    let samples = scrape(&gw).await;
    let errors = r#"compresh_requests_total{route="/v1/chat/completions",provider="openai",status_class="5xx"}"#;
    assert_eq!(sample(&samples, errors), 1.0);
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_recorded_with_what_was_seen() {
    let gw = fast_gateway().await;
    let (key, key_id) = gw.create_key(None);
    let gate = Gate::new();
    let start = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
    );
    gw.mock.enqueue(MockResponse::GatedStream {
        chunks: vec![
            Bytes::from_static(start.as_bytes()),
            Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        ],
        gate: gate.clone(),
    });
    let response = gw
        .send_raw(
            Method::POST,
            "/v1/messages",
            &[("x-api-key", &key), ("content-type", "application/json")],
            MESSAGES_STREAM.to_owned(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("ok");
    assert!(String::from_utf8_lossy(first.data_ref().expect("data")).contains("message_start"));
    assert_eq!(sample(&scrape(&gw).await, "compresh_active_streams"), 1.0);

    drop(body);
    assert!(
        gate.wait_closed(WAIT).await,
        "the provider stream was closed"
    );
    let row = wait_for_usage(&gw, &key_id, 1).await;
    assert_eq!((row.input_tokens, row.output_tokens), (10, 1));
    eventually_async("no active streams", WAIT, || async {
        sample(&scrape(&gw).await, "compresh_active_streams") == 0.0
    })
    .await;
}
