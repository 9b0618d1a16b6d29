//! The raw HTTP/1.1 lane against the hyper path, differentially: every case sends the same
//! bytes to a gateway that serves proxied requests on the lane (`raw_lane: true`) and to one
//! that serves everything with hyper (`raw_lane: false`, the reference), each in front of its
//! own mock or raw-socket provider, and asserts that both clients got the same answers
//! (status line, headers, framing, body, trailers, whether the body was complete), that their
//! connections were left in the same state (the next request answered alike, or a close), that
//! both providers received the same requests (and, where the client leaves early, saw them
//! dropped alike) and that the same usage rows were written. Some cases begin the gateway's
//! graceful shutdown with a request in flight.
//!
//! Only what legitimately differs between two gateways is normalised: `date`, the proxy
//! overhead, the rate limit's reset time (`x-ratelimit-reset`, the `t=` of `ratelimit`), a
//! session id the gateway generated (checked to be `sess_` and 32 hex digits), and the `host`
//! the gateway sends upstream (each provider listens on its own port). Header names are
//! compared case-insensitively, as sorted multisets; chunk boundaries are not compared. Both
//! gateways get the same API key and key id, so the requests are the same bytes and
//! `x-ratelimit-remaining` counts down alike. Each case also checks, from the lane's request
//! counter, that the lane gateway served on the lane what it should (so a case cannot pass by
//! handing everything to hyper), and that the reference answered what the case is about.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compresh::gateway::GatewayConfig;
use compresh::usage::UsageConfig;
use compresh_e2e::wire::{
    chat, find, request, use_upstream, Conn, Framing, RawAnswer, RawRequest, RawUpstream,
    READ_TIMEOUT,
};
use compresh_e2e::{set_provider, TestGateway, ANTHROPIC_SECRET, OPENAI_SECRET};
use compresh_keys::{ApiKey, KeyId};
use compresh_mock::{Gate, MockResponse, RecordedRequest};
use compresh_store::NewApiKey;
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM_USAGE: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES: &str = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
/// A plain completion with its usage, as the raw upstreams send it.
const COMPLETION: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"raw"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
/// Server-sent events of a streamed completion, the last with usage (asked for or injected).
const EVENTS: [&str; 4] = [
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
    "data: [DONE]\n\n",
];

// ---------------------------------------------------------------------------------------------
// Requests the lane serves, to the mock's default answers.

#[tokio::test]
async fn plain_chat_completion() {
    let plan = Plan::new("plain chat completion");
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].framing, Framing::Length);
    assert_eq!(reference.answers[0].header("x-ratelimit-remaining"), ["9"]);
    assert_eq!(
        reference.after.answer().header("x-ratelimit-remaining"),
        ["8"]
    );
    assert_eq!(reference.usage.len(), 2, "{:?}", reference.usage);
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((12, 7)));
}

#[tokio::test]
async fn streamed_chat_without_stream_options() {
    // The gateway asks the provider for usage and strips it from the answer.
    let plan = Plan::new("streamed chat, include_usage injected");
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT_STREAM), 200)
        .lane_serves(2)
        .run()
        .await;
    let answer = &reference.answers[0];
    assert_eq!(answer.framing, Framing::Chunked);
    assert_eq!(answer.header("content-type"), ["text/event-stream"]);
    assert!(
        answer.body.0.ends_with(b"data: [DONE]\n\n"),
        "{:?}",
        answer.body
    );
    assert!(
        find(&answer.body.0, b"\"usage\"").is_none(),
        "{:?}",
        answer.body
    );
    let forwarded: serde_json::Value =
        serde_json::from_slice(&reference.forwarded[0].body.0).expect("JSON");
    assert_eq!(forwarded["stream_options"]["include_usage"], true);
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((12, 7)));
}

#[tokio::test]
async fn streamed_chat_with_include_usage() {
    let plan = Plan::new("streamed chat, include_usage asked by the client");
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT_STREAM_USAGE), 200)
        .lane_serves(2)
        .run()
        .await;
    let answer = &reference.answers[0];
    assert_eq!(answer.framing, Framing::Chunked);
    assert!(
        find(&answer.body.0, b"\"usage\"").is_some(),
        "{:?}",
        answer.body
    );
    assert_eq!(reference.forwarded[0].body.0, CHAT_STREAM_USAGE.as_bytes());
}

#[tokio::test]
async fn anthropic_messages() {
    let plan = Plan::new("anthropic messages, plain");
    let key = plan.key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("content-type", "application/json"),
    ];
    let mut versioned = headers.to_vec();
    versioned.push(("anthropic-version", "2024-01-01"));
    let reference = plan
        .send(request("POST", "/v1/messages", &headers, MESSAGES), 200)
        .send(request("POST", "/v1/messages", &versioned, MESSAGES), 200)
        .lane_serves(3)
        .run()
        .await;
    assert_eq!(reference.answers[0].framing, Framing::Length);
    let forwarded = &reference.forwarded;
    assert_eq!(forwarded[0].header("anthropic-version"), ["2023-06-01"]);
    assert_eq!(forwarded[1].header("anthropic-version"), ["2024-01-01"]);
    assert_eq!(forwarded[0].header("x-api-key"), [ANTHROPIC_SECRET]);
    assert_usage(
        &reference,
        200,
        "anthropic",
        "claude-3-5-sonnet-latest",
        Some((10, 5)),
    );
}

#[tokio::test]
async fn anthropic_messages_streamed() {
    let plan = Plan::new("anthropic messages, streamed");
    let key = plan.key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("content-type", "application/json"),
    ];
    let reference = plan
        .send(
            request("POST", "/v1/messages", &headers, MESSAGES_STREAM),
            200,
        )
        .lane_serves(2)
        .run()
        .await;
    let answer = &reference.answers[0];
    assert_eq!(answer.framing, Framing::Chunked);
    assert_eq!(answer.header("content-type"), ["text/event-stream"]);
    assert_eq!(reference.forwarded[0].body.0, MESSAGES_STREAM.as_bytes());
    assert_usage(
        &reference,
        200,
        "anthropic",
        "claude-3-5-sonnet-latest",
        Some((10, 5)),
    );
}

#[tokio::test]
async fn a_query_string() {
    let plan = Plan::new("query string");
    let key = plan.key();
    let auth = format!("Bearer {key}");
    let path = "/v1/chat/completions?api-version=2024-02-01&x=a%20b&empty=";
    let reference = plan
        .send(
            request("POST", path, &[("authorization", &auth)], CHAT),
            200,
        )
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].line, format!("POST {path}"));
}

#[tokio::test]
async fn a_one_mib_request_body() {
    let plan = Plan::new("1 MiB request body");
    let key = plan.key();
    let head = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    let body = format!(
        "{head}{}{tail}",
        "x".repeat(1024 * 1024 - head.len() - tail.len())
    );
    assert_eq!(body.len(), 1024 * 1024);
    let reference = plan
        .send(chat(&key, &[], &body), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].body.0, body.as_bytes());
}

#[tokio::test]
async fn a_request_written_a_few_bytes_at_a_time() {
    let plan = Plan::new("request written 7 bytes at a time");
    let key = plan.key();
    plan.send_in_pieces(chat(&key, &[], CHAT), 7, 200)
        .lane_serves(2)
        .run()
        .await;
}

// ---------------------------------------------------------------------------------------------
// What the client sends.

#[tokio::test]
async fn client_headers_are_filtered_alike() {
    let plan = Plan::new("client headers");
    let key = plan.key();
    let extra = [
        ("Connection", "keep-alive"),
        ("X-Custom-Kept", "yes"),
        ("user-agent", "lane-test/1.0"),
        ("accept", "application/json"),
        ("x-stainless-lang", "python"),
        ("x-compresh-debug", "1"),
        ("cookie", "a=b; c=d"),
        ("x-session-id", "client-session-1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("x-repeated", "1"),
        ("X-Repeated", "2"),
    ];
    let reference = plan
        .send(chat(&key, &extra, CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(
        reference.answers[0].header("x-compresh-session-id"),
        ["client-session-1"]
    );
    let forwarded = &reference.forwarded[0];
    assert_eq!(forwarded.header("x-custom-kept"), ["yes"]);
    assert_eq!(forwarded.header("x-repeated"), ["1", "2"]);
    for dropped in [
        "x-compresh-debug",
        "cookie",
        "x-session-id",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(forwarded.header(dropped).is_empty(), "{dropped} forwarded");
    }
}

#[tokio::test]
async fn session_ids_kept_or_generated() {
    let plan = Plan::new("session ids");
    let key = plan.key();
    let longest = "s".repeat(128);
    let too_long = "s".repeat(129);
    let reference = plan
        .send(chat(&key, &[("x-session-id", &longest)], CHAT), 200)
        .send(chat(&key, &[("x-session-id", &too_long)], CHAT), 200)
        .send(chat(&key, &[("x-session-id", "")], CHAT), 200)
        .send(
            chat(
                &key,
                &[("X-Session-Id", "first"), ("x-session-id", "second")],
                CHAT,
            ),
            200,
        )
        .lane_serves(5)
        .run()
        .await;
    let sessions: Vec<_> = reference
        .answers
        .iter()
        .map(|answer| answer.header("x-compresh-session-id"))
        .collect();
    assert_eq!(
        sessions,
        [
            [longest.as_str()],
            ["<generated>"],
            ["<generated>"],
            ["first"]
        ]
    );
}

#[tokio::test]
async fn api_keys_in_x_api_key_and_repeated_authorization() {
    let plan = Plan::new("x-api-key on an OpenAI route, repeated Authorization");
    let key = plan.key();
    let good = format!("Bearer {key}");
    let bad = format!("Bearer {}", ApiKey::generate().expose_secret());
    let json = ("content-type", "application/json");
    let path = "/v1/chat/completions";
    let reference = plan
        .send(
            request("POST", path, &[("x-api-key", &key), json], CHAT),
            200,
        )
        .send(
            request(
                "POST",
                path,
                &[("authorization", &good), ("authorization", &bad), json],
                CHAT,
            ),
            200,
        )
        // The first `Authorization` counts, on both paths: refused, handed to hyper.
        .send(
            request(
                "POST",
                path,
                &[("authorization", &bad), ("authorization", &good), json],
                CHAT,
            ),
            401,
        )
        .lane_serves(2)
        .run()
        .await;
    for forwarded in &reference.forwarded {
        assert_eq!(
            forwarded.header("authorization"),
            [format!("Bearer {OPENAI_SECRET}")]
        );
        assert!(forwarded.header("x-api-key").is_empty());
    }
}

#[tokio::test]
async fn unusual_but_valid_client_request_lines() {
    let plan = Plan::new("obs-text and empty header values, a zero-padded length");
    let key = plan.key();
    let mut obs_text = chat(
        &key,
        &[("x-note", "caf-placeholder"), ("x-empty", "")],
        CHAT,
    );
    let at = find(&obs_text, b"caf-placeholder").expect("placeholder");
    obs_text.splice(at..at + "caf-placeholder".len(), b"caf\xe9".iter().copied());
    let padded = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: compresh.test\r\nauthorization: Bearer {key}\r\n\
         content-length: 000{}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    let reference = plan
        .send(obs_text, 200)
        .send(padded.into_bytes(), 200)
        .lane_serves(3)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].header("x-empty"), [""]);
    assert_eq!(reference.forwarded[1].body.0, CHAT.as_bytes());
}

#[tokio::test]
async fn a_connection_header_listing_a_client_header() {
    // The lane hands this one to hyper (a `Connection` header naming more than keep-alive).
    let plan = Plan::new("Connection: keep-alive, x-hop");
    let key = plan.key();
    let extra = [("Connection", "keep-alive, x-hop"), ("x-hop", "1")];
    let reference = plan
        .send(chat(&key, &extra, CHAT), 200)
        .lane_serves(0)
        .run()
        .await;
    assert!(reference.forwarded[0].header("x-hop").is_empty());
}

#[tokio::test]
async fn connection_close_from_the_client() {
    let plan = Plan::new("Connection: close");
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[("connection", "close")], CHAT), 200)
        .then(Then::Closes)
        .lane_serves(0)
        .run()
        .await;
    assert_eq!(reference.answers[0].header("connection"), ["close"]);
}

#[tokio::test]
async fn a_provider_named_by_header() {
    let plan = Plan::new("x-compresh-provider naming a configured provider").local_provider();
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[("x-compresh-provider", "local")], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert!(reference.forwarded[0]
        .header("x-compresh-provider")
        .is_empty());
    assert_usage(&reference, 200, "local", "gpt-4o-mini", Some((12, 7)));
}

#[tokio::test]
async fn two_requests_pipelined_in_one_write() {
    let plan = Plan::new("two pipelined requests");
    let key = plan.key();
    let reference = plan
        .pipeline(&[
            (chat(&key, &[("x-session-id", "pipe-1")], CHAT), 200),
            (chat(&key, &[], r#"{"model":"gpt-4o","messages":[]}"#), 200),
        ])
        .lane_serves(3)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].body.0, CHAT.as_bytes());
    assert_eq!(reference.answers[1].header("x-ratelimit-remaining"), ["8"]);
}

#[tokio::test]
async fn a_stream_and_a_request_pipelined_behind_it() {
    let plan = Plan::new("pipelined: a stream, then a plain request");
    let key = plan.key();
    plan.pipeline(&[
        (chat(&key, &[], CHAT_STREAM), 200),
        (chat(&key, &[], CHAT), 200),
    ])
    .lane_serves(3)
    .run()
    .await;
}

#[tokio::test]
async fn a_pipelined_request_the_lane_hands_over() {
    // The lane serves the first, then hands the connection (and the second request, already
    // read) to hyper.
    let plan = Plan::new("pipelined: served, then handed over");
    let key = plan.key();
    let unknown = ApiKey::generate();
    let reference = plan
        .pipeline(&[
            (chat(&key, &[], CHAT), 200),
            (chat(unknown.expose_secret(), &[], CHAT), 401),
        ])
        .lane_serves(1)
        .run()
        .await;
    assert_eq!(reference.forwarded.len(), 2);
}

#[tokio::test]
async fn a_fragment_in_the_target_of_a_stream() {
    // hyper's `Uri` drops the fragment: the route is /v1/chat/completions, so the gateway
    // injects include_usage and strips the usage event.
    let plan = Plan::new("POST /v1/chat/completions#frag, streamed without stream_options");
    let key = plan.key();
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let reference = plan
        .send(
            request("POST", "/v1/chat/completions#frag", &headers, CHAT_STREAM),
            200,
        )
        // Handed over (and the connection with it), or served.
        .lane_serves_between(0, 2)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].line, "POST /v1/chat/completions");
    let forwarded: serde_json::Value =
        serde_json::from_slice(&reference.forwarded[0].body.0).expect("JSON");
    assert_eq!(forwarded["stream_options"]["include_usage"], true);
    let answer = &reference.answers[0];
    assert!(find(&answer.body.0, b"\"usage\"").is_none(), "{answer:?}");
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((12, 7)));
}

#[tokio::test]
async fn a_fragment_in_the_target_of_anthropic_messages() {
    // No X-Compresh-Provider: the provider follows the route, /v1/messages without its
    // fragment.
    let plan = Plan::new("POST /v1/messages#x, no provider header");
    let key = plan.key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("content-type", "application/json"),
    ];
    let reference = plan
        .send(request("POST", "/v1/messages#x", &headers, MESSAGES), 200)
        .lane_serves_between(0, 2)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].line, "POST /v1/messages");
    assert_eq!(
        reference.forwarded[0].header("x-api-key"),
        [ANTHROPIC_SECRET]
    );
    assert_usage(
        &reference,
        200,
        "anthropic",
        "claude-3-5-sonnet-latest",
        Some((10, 5)),
    );
}

#[tokio::test]
async fn brackets_in_the_query() {
    let reference = target_case(
        "/v1/chat/completions?q=a%20b&x=[1]",
        200,
        Then::Answers(200),
    )
    .await;
    assert_eq!(
        reference.forwarded[0].line,
        "POST /v1/chat/completions?q=a%20b&x=[1]"
    );
}

#[tokio::test]
async fn a_double_quote_in_the_query() {
    // httparse takes it; hyper's `Uri` does not: 400, and the connection closes.
    target_case("/v1/chat/completions?q=\"x\"", 400, Then::Closes).await;
}

#[tokio::test]
async fn braces_in_the_query() {
    target_case("/v1/chat/completions?q={x}", 200, Then::Answers(200)).await;
}

#[tokio::test]
async fn utf_8_in_the_query() {
    target_case("/v1/chat/completions?q=caf\u{e9}", 200, Then::Answers(200)).await;
}

/// A plain chat completion to `target` and the next request; the reference answers the first
/// with `status`, then `then`. The lane may serve the request or hand it over.
async fn target_case(target: &str, status: u16, then: Then) -> Transcript {
    let plan = Plan::new(format!("request target {target:?}"));
    let key = plan.key();
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    // Handed over (and the connection with it), or served.
    let most = 1 + u64::from(then == Then::Answers(200));
    plan.send(request("POST", target, &headers, CHAT), status)
        .then(then)
        .lane_serves_between(0, most)
        .run()
        .await
}

// ---------------------------------------------------------------------------------------------
// Requests the lane's parser leaves to hyper.

#[tokio::test]
async fn a_chunked_request_body() {
    // The lane leaves chunked request bodies to hyper.
    let plan = Plan::new("chunked request body");
    let key = plan.key();
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: compresh.test\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{CHAT}\r\n0\r\n\r\n",
        CHAT.len()
    );
    let reference = plan
        .send(chunked.into_bytes(), 200)
        .lane_serves(0)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].body.0, CHAT.as_bytes());
}

#[tokio::test]
async fn an_http_1_0_request() {
    let plan = Plan::new("HTTP/1.0 request");
    let key = plan.key();
    let old = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer {key}\r\n\
         content-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    let reference = plan
        .send(old.into_bytes(), 200)
        .then(Then::Closes)
        .lane_serves(0)
        .run()
        .await;
    assert!(reference.answers[0].status_line.starts_with("HTTP/1.0 "));
}

#[tokio::test]
async fn a_request_head_over_64_kib() {
    // Replayed to hyper once the lane has read past its head limit with the head incomplete
    // (a larger head that arrives whole in one read is served on the lane: 200 KiB always
    // crosses the limit first; hyper's own limit is about 400 KiB).
    let plan = Plan::new("200 KiB request head");
    let key = plan.key();
    let big = "h".repeat(200 * 1024);
    let reference = plan
        .send(chat(&key, &[("x-big", &big)], CHAT), 200)
        .lane_serves(0)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].header("x-big"), [big.as_str()]);
}

#[tokio::test]
async fn a_request_with_70_headers() {
    let plan = Plan::new("70 request headers");
    let key = plan.key();
    let names: Vec<String> = (0..70).map(|i| format!("x-h{i}")).collect();
    let extra: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "v")).collect();
    let reference = plan
        .send(chat(&key, &extra, CHAT), 200)
        .lane_serves(0)
        .run()
        .await;
    assert_eq!(reference.forwarded[0].header("x-h69"), ["v"]);
}

// ---------------------------------------------------------------------------------------------
// Refused before the commit point: the lane hands these to hyper.

#[tokio::test]
async fn unknown_key_is_refused_before_the_commit() {
    let plan = Plan::new("unknown key");
    let unknown = ApiKey::generate();
    let reference = plan
        .send(chat(unknown.expose_secret(), &[], CHAT), 401)
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "invalid_api_key");
    assert!(reference.answers[0].header("x-ratelimit-limit").is_empty());
    assert_eq!(reference.forwarded.len(), 1, "only the next request");
}

#[tokio::test]
async fn missing_key_is_refused_before_the_commit() {
    let plan = Plan::new("no key");
    let json = [("content-type", "application/json")];
    let reference = plan
        .send(request("POST", "/v1/chat/completions", &json, CHAT), 401)
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "missing_api_key");
    assert_eq!(reference.forwarded.len(), 1, "only the next request");
}

#[tokio::test]
async fn invalid_json_is_refused_after_the_commit() {
    // The limiter counts the request before its body is read, on both paths; the lane then
    // answers the body's failed check itself (two refusals and the next request).
    let plan = Plan::new("invalid JSON");
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], "this is not json"), 400)
        .send(chat(&key, &[], ""), 400)
        .lane_serves(3)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "invalid_json");
    // Counted by the limiter on hyper's path (it comes before the body is read).
    assert_eq!(reference.answers[0].header("x-ratelimit-remaining"), ["9"]);
    assert_eq!(reference.forwarded.len(), 1, "only the next request");
}

#[tokio::test]
async fn rate_limited_after_the_first_request() {
    let plan = Plan::new("rate limited").rpm(1);
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .send(chat(&key, &[], CHAT), 429)
        .then(Then::Answers(429))
        .lane_serves(1)
        .run()
        .await;
    let refused = &reference.answers[1];
    assert_gateway_error(refused, "rate_limit_exceeded");
    assert_eq!(refused.header("x-ratelimit-remaining"), ["0"]);
    assert_eq!(refused.header("retry-after").len(), 1);
    assert_eq!(reference.forwarded.len(), 1);
    let limited = reference
        .usage
        .iter()
        .filter(|row| row.rate_limited)
        .count();
    assert_eq!(limited, 2, "{:?}", reference.usage);
}

#[tokio::test]
async fn model_not_allowed_is_refused_after_the_commit() {
    // As invalid JSON: the model is in the body, read after the limiter counted the request.
    let plan = Plan::new("model not allowed").allowed_models(&["gpt-4o*"]);
    let key = plan.key();
    let reference = plan
        .send(
            chat(&key, &[], r#"{"model":"gpt-3.5-turbo","messages":[]}"#),
            403,
        )
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "model_not_allowed");
}

#[tokio::test]
async fn provider_not_allowed_is_refused_before_the_commit() {
    let plan = Plan::new("provider not allowed").allowed_providers(&["anthropic"]);
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 403)
        .then(Then::Answers(403))
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "provider_not_allowed");
}

#[tokio::test]
async fn provider_not_configured_is_refused_before_the_commit() {
    let plan = Plan::new("x-compresh-provider naming no provider");
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[("x-compresh-provider", "nowhere")], CHAT), 403)
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "provider_not_configured");
}

#[tokio::test]
async fn a_body_over_the_limit() {
    let plan = Plan::new("body over the limit").config(|config| config.body_limit = 1024);
    let key = plan.key();
    let body = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "x".repeat(2000));
    let reference = plan
        .send(chat(&key, &[], &body), 413)
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "request_too_large");
}

// ---------------------------------------------------------------------------------------------
// Refused without the body: hyper answers from the head, the client never sends the body.

/// The head of `POST /v1/chat/completions` declaring a 10 MB body (under the limit), with
/// `extra` headers, and no body.
fn head_of_a_large_body(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = String::from(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: compresh.test\r\n\
         content-type: application/json\r\ncontent-length: 10000000\r\n",
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// How long the client waits for an answer to a head whose body it never sends.
const ANSWER_FROM_THE_HEAD: Duration = Duration::from_secs(3);

// hyper answers from the head (its checks come before the body is read), without
// `connection: close`, and then closes the connection: the body was never read.

#[tokio::test]
async fn missing_key_with_a_large_body_never_sent() {
    let plan = Plan::new("no key, content-length: 10000000, no body");
    let reference = plan
        .send_within(head_of_a_large_body(&[]), 401, ANSWER_FROM_THE_HEAD)
        .then(Then::Closes)
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "missing_api_key");
}

#[tokio::test]
async fn unknown_key_with_a_large_body_never_sent() {
    let plan = Plan::new("unknown key, content-length: 10000000, no body");
    let unknown = ApiKey::generate();
    let auth = format!("Bearer {}", unknown.expose_secret());
    assert!(auth.starts_with("Bearer comp_"), "{auth}");
    let reference = plan
        .send_within(
            head_of_a_large_body(&[("authorization", &auth)]),
            401,
            ANSWER_FROM_THE_HEAD,
        )
        .then(Then::Closes)
        .lane_serves(0)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "invalid_api_key");
}

#[tokio::test]
async fn rate_limited_with_a_large_body_never_sent() {
    let plan = Plan::new("rate limited, content-length: 10000000, no body").rpm(1);
    let key = plan.key();
    let auth = format!("Bearer {key}");
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .send_within(
            head_of_a_large_body(&[("authorization", &auth)]),
            429,
            ANSWER_FROM_THE_HEAD,
        )
        .then(Then::Closes)
        .lane_serves(1)
        .run()
        .await;
    assert_gateway_error(&reference.answers[1], "rate_limit_exceeded");
    let limited = reference
        .usage
        .iter()
        .filter(|row| row.rate_limited)
        .count();
    assert_eq!(limited, 1, "{:?}", reference.usage);
}

// ---------------------------------------------------------------------------------------------
// What the provider answers.

#[tokio::test]
async fn upstream_500_json_error() {
    let plan = Plan::new("upstream 500").provider(Provider::Mock(|| {
        vec![MockResponse::Fixed {
            status: 500,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), "req-500".into()),
            ],
            body: Bytes::from_static(br#"{"error":{"message":"boom","type":"server_error"}}"#),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 500)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].header("x-request-id"), ["req-500"]);
    assert_usage(&reference, 500, "openai", "gpt-4o-mini", None);
}

#[tokio::test]
async fn upstream_429_with_its_own_rate_limit_headers() {
    let plan = Plan::new("upstream 429").provider(Provider::Mock(|| {
        vec![MockResponse::Fixed {
            status: 429,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "7".into()),
                ("x-ratelimit-limit".into(), "999".into()),
                ("X-RateLimit-Remaining".into(), "0".into()),
                ("ratelimit".into(), "\"upstream\";r=0;t=7".into()),
                ("x-ratelimit-limit-requests".into(), "500".into()),
            ],
            body: Bytes::from_static(br#"{"error":{"message":"slow down","type":"rate_limit"}}"#),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 429)
        .lane_serves(2)
        .run()
        .await;
    let answer = &reference.answers[0];
    assert_eq!(answer.header("retry-after"), ["7"], "the provider's");
    assert_eq!(answer.header("x-ratelimit-limit"), ["10"], "the gateway's");
    assert_eq!(
        answer.header("x-ratelimit-remaining"),
        ["9"],
        "the gateway's"
    );
    assert_eq!(answer.header("ratelimit"), ["\"default\";r=9;t=<reset>"]);
    assert_eq!(answer.header("x-ratelimit-limit-requests"), ["500"]);
    assert_usage(&reference, 429, "openai", "gpt-4o-mini", None);
}

#[tokio::test]
async fn upstream_204_without_a_body() {
    let plan = Plan::new("upstream 204").provider(Provider::Mock(|| {
        vec![MockResponse::Fixed {
            status: 204,
            headers: vec![("x-request-id".into(), "req-204".into())],
            body: Bytes::new(),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 204)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].framing, Framing::Empty);
}

#[tokio::test]
async fn upstream_200_with_an_empty_body() {
    let plan = Plan::new("upstream 200, content-length: 0").provider(Provider::Mock(|| {
        vec![MockResponse::Fixed {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::new(),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].header("content-length"), ["0"]);
}

#[tokio::test]
async fn upstream_text_plain_answer() {
    let plan = Plan::new("upstream text/plain").provider(Provider::Mock(|| {
        vec![MockResponse::Fixed {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from_static(b"just some text, not JSON\n"),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(
        reference.answers[0].body.0,
        b"just some text, not JSON\n".as_slice()
    );
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", None);
}

#[tokio::test]
async fn upstream_repeated_headers() {
    let plan = Plan::new("upstream repeated headers").provider(Provider::Mock(|| {
        vec![MockResponse::Fixed {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("set-cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into()),
                ("x-empty".into(), String::new()),
            ],
            body: Bytes::from_static(COMPLETION.as_bytes()),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].header("set-cookie"), ["a=1", "b=2"]);
}

#[tokio::test]
async fn upstream_chunked_answer() {
    let plan = Plan::new("upstream chunked answer").provider(Provider::Mock(|| {
        vec![MockResponse::Chunked {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: [
                r#"{"id":"chatcmpl-chunked","object":"chat.completion","#,
                r#""model":"gpt-4o-mini","choices":[],"#,
                r#""usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            ]
            .into_iter()
            .map(|chunk| Bytes::from_static(chunk.as_bytes()))
            .collect(),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].framing, Framing::Chunked);
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((3, 4)));
}

#[tokio::test]
async fn upstream_chunked_answer_with_trailers() {
    let mut wire = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\
         trailer: x-checksum\r\n\r\n",
    );
    for part in COMPLETION.as_bytes().chunks(40) {
        let part = std::str::from_utf8(part).expect("ASCII");
        wire.push_str(&format!("{:x};ext=1\r\n{part}\r\n", part.len()));
    }
    wire.push_str("0\r\nx-checksum: 1\r\n\r\n");
    let plan = Plan::new("upstream chunked answer with a trailer")
        .provider(Provider::Raw(RawAnswer::KeepAlive(wire.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[("te", "trailers")], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].body.0, COMPLETION.as_bytes());
}

#[tokio::test]
async fn upstream_close_delimited_answer() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream-kept: yes\r\n\r\n{COMPLETION}"
    );
    let plan = Plan::new("upstream close-delimited answer")
        .provider(Provider::Raw(RawAnswer::ThenClose(answer.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert_eq!(reference.answers[0].framing, Framing::Chunked);
    assert_eq!(reference.answers[0].body.0, COMPLETION.as_bytes());
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((3, 4)));
}

#[tokio::test]
async fn upstream_closing_after_every_answer() {
    let plan = Plan::new("upstream answering connection: close").provider(Provider::ClosingMock);
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .send(chat(&key, &[], CHAT_STREAM), 200)
        .lane_serves(3)
        .run()
        .await;
    assert!(reference.answers[0].header("connection").is_empty());
}

#[tokio::test]
async fn upstream_custom_reason_phrase() {
    let reference = raw_answer("HTTP/1.1 200 Fine", 200).await;
    assert_eq!(reference.answers[0].status_line, "HTTP/1.1 200 Fine");
    assert_eq!(reference.answers[0].framing, Framing::Length);
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((3, 4)));
}

#[tokio::test]
async fn upstream_status_line_without_a_reason_phrase() {
    raw_answer("HTTP/1.1 200", 200).await;
}

#[tokio::test]
async fn upstream_status_line_with_an_empty_reason_phrase() {
    raw_answer("HTTP/1.1 200 ", 200).await;
}

#[tokio::test]
async fn upstream_uncommon_status() {
    raw_answer("HTTP/1.1 299 Something Else", 299).await;
}

#[tokio::test]
async fn upstream_http_1_0_answer() {
    raw_answer("HTTP/1.0 200 OK", 200).await;
}

#[tokio::test]
async fn upstream_interim_answer_before_the_final_one() {
    raw_answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", 200).await;
}

#[tokio::test]
async fn upstream_header_listed_in_its_connection_header() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: X-Upstream-Hop\r\n\
         x-upstream-hop: 1\r\nkeep-alive: timeout=30\r\nproxy-status: p\r\nx-upstream-kept: yes\r\n\
         content-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    );
    let plan = Plan::new("upstream Connection header listing a header")
        .provider(Provider::Raw(RawAnswer::KeepAlive(answer.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    let answer = &reference.answers[0];
    assert_eq!(answer.header("x-upstream-kept"), ["yes"]);
    for hop in ["x-upstream-hop", "keep-alive", "connection", "proxy-status"] {
        assert!(answer.header(hop).is_empty(), "{hop} reached the client");
    }
}

#[tokio::test]
async fn upstream_large_response_head() {
    // 100 KiB of headers: within hyper's client limit (about 400 KiB).
    let big = "b".repeat(100 * 1024);
    raw_answer(&format!("HTTP/1.1 200 OK\r\nx-big: {big}"), 200).await;
}

#[tokio::test]
async fn upstream_content_length_beside_chunked() {
    let body = COMPLETION;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let plan = Plan::new("upstream content-length beside chunked")
        .provider(Provider::Raw(RawAnswer::KeepAlive(answer.into_bytes())))
        // Transfer-Encoding overrides Content-Length, which a proxy must not forward (RFC 9112
        // section 6.3): the whole body reaches the client, framed by the gateway.
        .on_each_side(|side| {
            for answer in [&side.answers[0], side.after.answer()] {
                assert!(answer.header("content-length").is_empty(), "{answer:?}");
                assert_eq!(answer.body.0, COMPLETION.as_bytes(), "{answer:?}");
            }
        });
    let key = plan.key();
    plan.send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
}

#[tokio::test]
async fn upstream_invalid_content_length() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12x\r\n\r\n{COMPLETION}"
    );
    let plan = Plan::new("upstream content-length: 12x")
        .provider(Provider::Raw(RawAnswer::ThenClose(answer.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 502)
        .then(Then::Answers(502))
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_error");
}

#[tokio::test]
async fn upstream_body_cut_short() {
    // The provider promises 1000 bytes, sends fewer and closes: the client gets the head and
    // what came, then a close.
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{COMPLETION}"
    );
    let plan = Plan::new("upstream body cut short")
        .provider(Provider::Raw(RawAnswer::ThenClose(answer.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .then(Then::Closes)
        .lane_serves(1)
        .run()
        .await;
    assert!(!reference.answers[0].complete);
}

#[tokio::test]
async fn upstream_stream_breaking_off() {
    // A chunked stream that ends with a close instead of its last chunk.
    let mut answer = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for event in &EVENTS[..2] {
        answer.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    let plan = Plan::new("upstream stream breaking off")
        .provider(Provider::Raw(RawAnswer::ThenClose(answer.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT_STREAM), 200)
        .then(Then::Closes)
        .lane_serves(1)
        .run()
        .await;
    assert!(!reference.answers[0].complete);
}

#[tokio::test]
async fn upstream_stream_with_a_content_length() {
    // An event stream framed by its length, usage injected: stripping changes the length, so
    // the client gets it chunked.
    let plan = Plan::new("event stream with a content-length, usage stripped").provider(
        Provider::Mock(|| {
            vec![MockResponse::Fixed {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                body: Bytes::from(EVENTS.concat()),
            }]
        }),
    );
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT_STREAM), 200)
        .lane_serves(2)
        .run()
        .await;
    let answer = &reference.answers[0];
    assert_eq!(answer.framing, Framing::Chunked);
    assert!(
        find(&answer.body.0, b"\"usage\"").is_none(),
        "{:?}",
        answer.body
    );
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((5, 2)));
}

#[tokio::test]
async fn a_gated_stream_is_relayed_event_by_event() {
    // Each event is released only once the client has the previous one: a gateway that held
    // the stream back would never finish.
    let plan = Plan::new("gated stream relayed as it comes").provider(Provider::Gated);
    let key = plan.key();
    let reference = plan
        .gated(chat(&key, &[], CHAT_STREAM), 200, true)
        .lane_serves(2)
        .run()
        .await;
    assert!(find(&reference.answers[0].body.0, b"\"usage\"").is_none());
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((5, 2)));
}

#[tokio::test]
async fn the_client_leaving_mid_stream() {
    let plan = Plan::new("client leaving mid-stream").provider(Provider::Gated);
    let key = plan.key();
    let reference = plan
        .leave_mid_stream(chat(&key, &[], CHAT_STREAM_USAGE), 200)
        .lane_serves(1)
        .run()
        .await;
    assert_eq!(reference.provider_released, Some(true));
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", None);
}

#[tokio::test]
async fn upstream_header_with_obs_text() {
    let mut answer = b"HTTP/1.1 200 OK\r\nx-latin: caf\xe9 cr\xe8me\r\n".to_vec();
    answer.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
            COMPLETION.len()
        )
        .as_bytes(),
    );
    raw_case(RawAnswer::KeepAlive(answer), 200).await;
}

#[tokio::test]
async fn upstream_obs_fold_header() {
    raw_answer("HTTP/1.1 200 OK\r\nx-folded: one\r\n two", 502).await;
}

#[tokio::test]
async fn upstream_space_before_a_colon() {
    raw_answer("HTTP/1.1 200 OK\r\nx-spaced : 1", 502).await;
}

#[tokio::test]
async fn upstream_bare_lf_line_ends() {
    let answer = format!(
        "HTTP/1.1 200 OK\ncontent-type: application/json\nx-lf: 1\ncontent-length: {}\n\n{COMPLETION}",
        COMPLETION.len()
    );
    raw_case(RawAnswer::KeepAlive(answer.into_bytes()), 200).await;
}

#[tokio::test]
async fn upstream_early_hints_before_the_final_answer() {
    raw_answer(
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK",
        200,
    )
    .await;
}

#[tokio::test]
async fn upstream_switching_protocols_unasked() {
    // A provider may not switch protocols unasked (RFC 9110 section 15.2.2), and a client that
    // sent no `Upgrade` cannot use a 101: the gateway's answer is a 502 `upstream_error`.
    let plan = Plan::new("upstream 101 to a request without Upgrade")
        .provider(Provider::Raw(RawAnswer::ThenClose(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
                .to_vec(),
        )))
        .on_each_side(|side| {
            let answer = &side.answers[0];
            assert_eq!(answer.status(), 502, "{answer:?}");
            assert_gateway_error(answer, "upstream_error");
            assert_eq!(side.after.answer().status(), 502, "{:?}", side.after);
        });
    let key = plan.key();
    plan.send(chat(&key, &[], CHAT), 502)
        .then(Then::Answers(502))
        .lane_serves(2)
        .run()
        .await;
}

#[tokio::test]
async fn upstream_gzip_then_chunked_coding() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
         {:x}\r\n{COMPLETION}\r\n0\r\n\r\n",
        COMPLETION.len()
    );
    raw_case(RawAnswer::KeepAlive(answer.into_bytes()), 200).await;
}

#[tokio::test]
async fn upstream_coding_without_chunked_is_read_to_the_close() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip\r\n\r\n{COMPLETION}"
    );
    raw_case(RawAnswer::ThenClose(answer.into_bytes()), 200).await;
}

#[tokio::test]
async fn upstream_bytes_after_its_answer() {
    // Bytes that answer nothing: the connection is not used again, the answer is intact.
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}\
         HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{{}}",
        COMPLETION.len()
    );
    raw_case(RawAnswer::KeepAlive(answer.into_bytes()), 200).await;
}

#[tokio::test]
async fn upstream_two_mib_answer() {
    let plan = Plan::new("upstream 2 MiB answer").provider(Provider::Mock(|| {
        let filler = "y".repeat(2 * 1024 * 1024);
        vec![MockResponse::Fixed {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(format!(
                r#"{{"filler":"{filler}","usage":{{"prompt_tokens":1,"completion_tokens":2}}}}"#
            )),
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .lane_serves(2)
        .run()
        .await;
    assert!(reference.answers[0].body.0.len() > 2 * 1024 * 1024);
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((1, 2)));
}

#[tokio::test]
async fn upstream_events_split_across_chunks() {
    // Usage injected and stripped, from events cut at odd places (inside lines, between the
    // two newlines that end an event).
    let plan = Plan::new("events split across chunks").provider(Provider::Mock(|| {
        let stream = EVENTS.concat();
        let cuts = [
            0,
            7,
            130,
            131,
            200,
            290,
            291,
            292,
            stream.len() - 3,
            stream.len(),
        ];
        let chunks = cuts
            .windows(2)
            .map(|cut| Bytes::from(stream[cut[0]..cut[1]].to_owned()))
            .collect();
        vec![MockResponse::Chunked {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks,
        }]
    }));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT_STREAM), 200)
        .lane_serves(2)
        .run()
        .await;
    let body = &reference.answers[0].body.0;
    assert!(find(body, b"\"usage\"").is_none(), "{body:?}");
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((5, 2)));
}

#[tokio::test]
async fn upstream_closing_its_kept_alive_connection_between_requests() {
    // No `connection: close`: the provider just closes after each answer. Given time to see
    // the close, neither gateway sends the next request on the dead connection.
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    );
    let plan = Plan::new("upstream closing between requests")
        .provider(Provider::Raw(RawAnswer::ThenClose(answer.into_bytes())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 200)
        .pause(Duration::from_millis(200))
        .send(chat(&key, &[], CHAT), 200)
        .pause(Duration::from_millis(200))
        .lane_serves(3)
        .run()
        .await;
    assert_eq!(reference.forwarded.len(), 3);
}

#[tokio::test]
async fn upstream_chunked_answer_a_few_bytes_at_a_time() {
    let mut wire = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for event in EVENTS {
        wire.push_str(&format!("{:X};ext=\"a b\"\r\n{event}\r\n", event.len()));
    }
    wire.push_str("0\r\n\r\n");
    let plan = Plan::new("upstream chunked answer, 3 bytes at a time").provider(
        Provider::RawInPieces(RawAnswer::KeepAlive(wire.into_bytes()), 3),
    );
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT_STREAM), 200)
        .lane_serves(2)
        .run()
        .await;
    assert!(find(&reference.answers[0].body.0, b"\"usage\"").is_none());
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((5, 2)));
}

#[tokio::test]
async fn upstream_partial_head_then_silence() {
    let plan = Plan::new("upstream partial head, then silence")
        .config(|config| config.forward.response_timeout = Duration::from_millis(500))
        .provider(Provider::Raw(RawAnswer::ThenHold(
            b"HTTP/1.1 200 OK\r\ncontent-type: appl".to_vec(),
        )));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 504)
        .then(Then::Answers(504))
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_timeout");
}

#[tokio::test]
async fn upstream_status_below_100() {
    let reference = raw_case(
        RawAnswer::KeepAlive(b"HTTP/1.1 042 Odd\r\ncontent-length: 2\r\n\r\n{}".to_vec()),
        502,
    )
    .await;
    assert_gateway_error(&reference.answers[0], "upstream_error");
}

#[tokio::test]
async fn upstream_repeated_content_length_value() {
    // `content-length: 5, 5` is one length, 5 (RFC 9110 section 8.6).
    let answer =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5, 5\r\n\r\n[1,2]";
    let reference = raw_case(RawAnswer::KeepAlive(answer.as_bytes().to_vec()), 200).await;
    assert_eq!(reference.answers[0].body.0, b"[1,2]".as_slice());
}

#[tokio::test]
async fn upstream_conflicting_content_lengths_beside_chunked() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\
         content-length: 7\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{COMPLETION}\r\n0\r\n\r\n",
        COMPLETION.len()
    );
    raw_case(RawAnswer::KeepAlive(answer.into_bytes()), 200).await;
}

#[tokio::test]
async fn upstream_http_1_0_answer_with_chunked() {
    let answer = format!(
        "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{COMPLETION}\r\n0\r\n\r\n",
        COMPLETION.len()
    );
    raw_case(RawAnswer::ThenClose(answer.into_bytes()), 502).await;
}

// ---------------------------------------------------------------------------------------------
// The gateway's own errors, after the commit point.

#[tokio::test]
async fn provider_unreachable() {
    let plan = Plan::new("provider unreachable").provider(Provider::Unreachable);
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 503)
        .then(Then::Answers(503))
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_unreachable");
    assert_usage(&reference, 503, "openai", "gpt-4o-mini", None);
}

#[tokio::test]
async fn response_timeout() {
    let plan = Plan::new("response timeout")
        .config(|config| config.forward.response_timeout = Duration::from_millis(500))
        .provider(Provider::Mock(|| vec![MockResponse::Silent]));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 504)
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_timeout");
    assert_eq!(
        reference.forwarded.len(),
        2,
        "the unanswered one and the next"
    );
    assert_usage(&reference, 504, "openai", "gpt-4o-mini", None);
}

#[tokio::test]
async fn response_timeout_on_a_raw_upstream() {
    let plan = Plan::new("response timeout, raw upstream")
        .config(|config| config.forward.response_timeout = Duration::from_millis(500))
        .provider(Provider::Raw(RawAnswer::Never));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 504)
        .then(Then::Answers(504))
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_timeout");
}

#[tokio::test]
async fn upstream_sending_garbage() {
    let plan = Plan::new("upstream garbage").provider(Provider::Raw(RawAnswer::ThenClose(
        b"SSH-2.0-OpenSSH_9.6\r\n\r\nthis is not HTTP\r\n".to_vec(),
    )));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 502)
        .then(Then::Answers(502))
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_error");
}

#[tokio::test]
async fn upstream_closing_without_an_answer() {
    let plan = Plan::new("upstream closing without an answer")
        .provider(Provider::Raw(RawAnswer::ThenClose(Vec::new())));
    let key = plan.key();
    let reference = plan
        .send(chat(&key, &[], CHAT), 502)
        .then(Then::Answers(502))
        .lane_serves(2)
        .run()
        .await;
    assert_gateway_error(&reference.answers[0], "upstream_error");
}

// ---------------------------------------------------------------------------------------------
// Connections ending with a request in flight: the client leaving, the gateway shutting down.

/// [`COMPLETION`] with its length, as a provider answers after `delay`.
fn delayed_completion(delay: Duration) -> Provider {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    );
    Provider::Raw(RawAnswer::Delayed(delay, answer.into_bytes()))
}

#[tokio::test]
async fn the_client_leaving_before_the_answer_head() {
    // The provider would answer after 3 s; the client closes 100 ms after its request. hyper
    // drops the request: its provider connection closes, no usage row is written.
    let plan = Plan::new("client leaving before the answer's head")
        .provider(delayed_completion(Duration::from_secs(3)));
    let key = plan.key();
    let reference = plan
        .leave_unanswered(chat(&key, &[], CHAT), Duration::from_millis(100))
        .lane_serves(1)
        .run()
        .await;
    assert_eq!(reference.provider_released, Some(true));
    assert_eq!(reference.forwarded.len(), 1);
    assert!(reference.usage.is_empty(), "{:?}", reference.usage);
}

#[tokio::test]
async fn the_client_leaving_before_a_streamed_answer_head() {
    let plan = Plan::new("client leaving before a stream's head")
        .provider(delayed_completion(Duration::from_secs(3)));
    let key = plan.key();
    let reference = plan
        .leave_unanswered(chat(&key, &[], CHAT_STREAM), Duration::from_millis(100))
        .lane_serves(1)
        .run()
        .await;
    assert_eq!(reference.provider_released, Some(true));
    assert!(reference.usage.is_empty(), "{:?}", reference.usage);
}

/// A shutdown while a stream is relayed, with `pipelined` (built with the case's key) written
/// behind the stream: hyper finishes the stream (its head went out before the shutdown, without
/// `connection: close`), then closes the connection without answering `pipelined`.
async fn shutdown_during_a_stream_then(name: &str, pipelined: fn(&str) -> Vec<u8>) {
    let plan = Plan::new(name).provider(Provider::Gated);
    let key = plan.key();
    let next = pipelined(&key);
    let stream = chat(&key, &[], CHAT_STREAM);
    let reference = plan
        .first_event(stream.clone())
        .shutdown()
        .write(next.clone())
        .gated_rest(&stream, 200, true)
        .pipeline_read(&next, 0)
        .then(Then::Closes)
        .lane_serves(1)
        .run()
        .await;
    assert!(reference.answers[0].complete, "{:?}", reference.answers[0]);
}

#[tokio::test]
async fn shutdown_during_a_stream_then_a_request_handed_over() {
    shutdown_during_a_stream_then(
        "shutdown mid-stream, then GET /v1/models pipelined",
        |key| {
            let auth = format!("Bearer {key}");
            request("GET", "/v1/models", &[("authorization", &auth)], "")
        },
    )
    .await;
}

#[tokio::test]
async fn shutdown_during_a_stream_then_a_lane_request() {
    shutdown_during_a_stream_then(
        "shutdown mid-stream, then a chat completion pipelined",
        |key| chat(key, &[], CHAT),
    )
    .await;
}

#[tokio::test]
async fn shutdown_while_a_request_waits_for_its_answer() {
    let plan = Plan::new("shutdown while the provider takes 300 ms")
        .provider(delayed_completion(Duration::from_millis(300)));
    let key = plan.key();
    let request = chat(&key, &[], CHAT);
    let reference = plan
        .write(request.clone())
        .pause(Duration::from_millis(100))
        .shutdown()
        .pipeline_read(&request, 200)
        .then(Then::Closes)
        .lane_serves(1)
        .run()
        .await;
    // Answered in full, announcing the close that follows.
    assert!(reference.answers[0].complete, "{:?}", reference.answers[0]);
    assert_eq!(reference.answers[0].header("connection"), ["close"]);
    assert_usage(&reference, 200, "openai", "gpt-4o-mini", Some((3, 4)));
}

/// A raw upstream answering `status_line` (and whatever head lines follow it in the text),
/// then JSON headers and [`COMPLETION`] with its length, on kept-alive connections.
async fn raw_answer(status_line: &str, status: u16) -> Transcript {
    let answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    );
    raw_case(RawAnswer::KeepAlive(answer.into_bytes()), status).await
}

/// A plain chat completion and the next request, to a raw upstream answering `answer`; the
/// reference answers both with `status`.
async fn raw_case(answer: RawAnswer, status: u16) -> Transcript {
    let (RawAnswer::KeepAlive(bytes) | RawAnswer::ThenClose(bytes) | RawAnswer::ThenHold(bytes)) =
        &answer
    else {
        unreachable!("an answer with bytes");
    };
    let text = String::from_utf8_lossy(bytes);
    let shown: String = text.chars().take(60).collect();
    let plan = Plan::new(format!("upstream answering {shown:?}")).provider(Provider::Raw(answer));
    let key = plan.key();
    plan.send(chat(&key, &[], CHAT), status)
        .then(Then::Answers(status))
        .lane_serves(2)
        .run()
        .await
}

// ---------------------------------------------------------------------------------------------
// The harness: a plan run on both gateways, and the comparison.

/// What the `openai` provider is.
enum Provider {
    /// The mock, after these scripted answers.
    Mock(fn() -> Vec<MockResponse>),
    /// The mock, closing its connection after every answer (`connection: close`).
    ClosingMock,
    /// The mock, whose first answer is a stream of [`EVENTS`] held at a gate: the events
    /// after the first are released by [`Read::Gated`] (or never, after [`Read::Leave`]).
    Gated,
    /// A raw socket answering every request with these bytes (in one write).
    Raw(RawAnswer),
    /// The same, written this many bytes at a time with short pauses.
    RawInPieces(RawAnswer, usize),
    /// A closed port.
    Unreachable,
}

/// One write of one or more requests, and how their answers are read.
struct Step {
    bytes: Vec<u8>,
    /// Written this many bytes at a time, with short pauses.
    piece: Option<usize>,
    read: Read,
}

enum Read {
    /// One answer per request, in order.
    Answers(Vec<Expected>),
    /// One streamed answer from [`Provider::Gated`], each event released once the client
    /// has the ones before; with `true`, the usage event is stripped (so never arrives).
    Gated(Expected, bool),
    /// The head and the first event of a [`Provider::Gated`] stream; then the client closes
    /// the connection.
    Leave(Expected),
    /// Nothing read: after this pause the client closes the connection, its request still
    /// unanswered (by a [`Provider::Raw`] answering [`RawAnswer::Delayed`]).
    LeaveUnanswered(Duration),
    /// One answer, given up on after this long (the client then sends nothing more).
    Within(Expected, Duration),
    /// The head and first event of a [`Provider::Gated`] stream, left in the client's buffer
    /// for a later [`Read::Gated`] (which releases the rest).
    FirstEvent,
    /// Nothing written or read: the gateway begins its graceful shutdown (see
    /// [`SHUTDOWN_SETTLES`]).
    Shutdown,
    /// Nothing read (after a write: the request only written), or nothing at all: a pause.
    Pause(Duration),
}

/// How long the client waits after a graceful shutdown began, for it to reach the connections.
const SHUTDOWN_SETTLES: Duration = Duration::from_millis(100);

/// How soon after the client left the provider's connection must be closed (well before a
/// [`RawAnswer::Delayed`] provider of these cases answers; not a performance bound).
const PROVIDER_RELEASE: Duration = Duration::from_millis(1500);

struct Expected {
    /// The request carries a usable `X-Session-Id`, which the answer must echo.
    session_sent: bool,
    /// The reference's status; 0: the connection closed before an answer.
    status: u16,
}

/// What the connection does after the steps, on the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The next request is answered with this status.
    Answers(u16),
    /// The gateway closes the connection.
    Closes,
    /// The client closed it (after [`Read::Leave`] or [`Read::LeaveUnanswered`]).
    Left,
}

/// A case: the gateways' settings, the provider, and what the client sends on one connection.
/// After the steps the next request (a plain chat completion) goes on the same connection, to
/// compare whether it is still usable.
struct Plan {
    name: String,
    config: GatewayConfig,
    key: ApiKey,
    key_id: KeyId,
    rpm: Option<u32>,
    allowed_providers: Vec<String>,
    allowed_models: Vec<String>,
    provider: Provider,
    /// Also configure a provider `local` (kind `openai`, the mock).
    local_provider: bool,
    steps: Vec<Step>,
    probe: Vec<u8>,
    then: Then,
    /// Requests the lane gateway serves on the lane (the next request included): a range
    /// where the lane may serve a request or hand it to hyper alike.
    lane_serves: Option<RangeInclusive<u64>>,
    /// Checked on each side before they are compared (where the reference is wrong).
    on_each_side: Option<fn(&Transcript)>,
}

impl Plan {
    fn new(name: impl Into<String>) -> Plan {
        let key = ApiKey::generate();
        let probe = chat(key.expose_secret(), &[], CHAT);
        Plan {
            name: name.into(),
            config: GatewayConfig {
                usage: UsageConfig {
                    flush_interval: Duration::from_millis(50),
                    ..UsageConfig::default()
                },
                ..GatewayConfig::default()
            },
            key,
            key_id: KeyId::generate(),
            // One request every 6 s: `x-ratelimit-remaining` only counts down within a case.
            rpm: Some(10),
            allowed_providers: Vec::new(),
            allowed_models: Vec::new(),
            provider: Provider::Mock(Vec::new),
            local_provider: false,
            steps: Vec::new(),
            probe,
            then: Then::Answers(200),
            lane_serves: None,
            on_each_side: None,
        }
    }

    /// The API key both gateways know.
    fn key(&self) -> String {
        self.key.expose_secret().to_owned()
    }

    fn config(mut self, change: impl FnOnce(&mut GatewayConfig)) -> Plan {
        change(&mut self.config);
        self
    }

    fn provider(mut self, provider: Provider) -> Plan {
        self.provider = provider;
        self
    }

    fn local_provider(mut self) -> Plan {
        self.local_provider = true;
        self
    }

    fn rpm(mut self, rpm: u32) -> Plan {
        self.rpm = Some(rpm);
        self
    }

    fn allowed_providers(mut self, providers: &[&str]) -> Plan {
        self.allowed_providers = providers.iter().map(|&name| name.to_owned()).collect();
        self
    }

    fn allowed_models(mut self, models: &[&str]) -> Plan {
        self.allowed_models = models.iter().map(|&model| model.to_owned()).collect();
        self
    }

    /// One request in one write, answered with `status` by the reference.
    fn send(self, bytes: Vec<u8>, status: u16) -> Plan {
        self.pipeline(&[(bytes, status)])
    }

    /// One request written `piece` bytes at a time.
    fn send_in_pieces(mut self, bytes: Vec<u8>, piece: usize, status: u16) -> Plan {
        let expected = Expected::new(&bytes, status);
        self.steps.push(Step {
            bytes,
            piece: Some(piece),
            read: Read::Answers(vec![expected]),
        });
        self
    }

    /// Several requests in one write.
    fn pipeline(mut self, requests: &[(Vec<u8>, u16)]) -> Plan {
        let mut bytes = Vec::new();
        let mut answers = Vec::new();
        for (request, status) in requests {
            bytes.extend_from_slice(request);
            answers.push(Expected::new(request, *status));
        }
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::Answers(answers),
        });
        self
    }

    /// The rest of the gated stream answering `request` (read by [`Plan::first_event`] as far
    /// as its first event), as [`Plan::gated`] reads it.
    fn gated_rest(mut self, request: &[u8], status: u16, stripped: bool) -> Plan {
        self.steps.push(Step {
            bytes: Vec::new(),
            piece: None,
            read: Read::Gated(Expected::new(request, status), stripped),
        });
        self
    }

    /// Reads the answer to `request`, written by an earlier step, as [`Plan::send`] would.
    fn pipeline_read(mut self, request: &[u8], status: u16) -> Plan {
        self.steps.push(Step {
            bytes: Vec::new(),
            piece: None,
            read: Read::Answers(vec![Expected::new(request, status)]),
        });
        self
    }

    /// A request answered by the gated stream, read event by event; `stripped`: the gateway
    /// strips the usage event (it asked for it).
    fn gated(mut self, bytes: Vec<u8>, status: u16, stripped: bool) -> Plan {
        let expected = Expected::new(&bytes, status);
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::Gated(expected, stripped),
        });
        self
    }

    /// A request answered by the gated stream, left after its first event.
    fn leave_mid_stream(mut self, bytes: Vec<u8>, status: u16) -> Plan {
        let expected = Expected::new(&bytes, status);
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::Leave(expected),
        });
        self.then = Then::Left;
        self
    }

    /// A request written and left unanswered: the client closes the connection after `after`.
    fn leave_unanswered(mut self, bytes: Vec<u8>, after: Duration) -> Plan {
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::LeaveUnanswered(after),
        });
        self.then = Then::Left;
        self
    }

    /// One request whose answer the client waits for only `within` (it then gives up and
    /// sends nothing more); a close before the answer is status 0.
    fn send_within(mut self, bytes: Vec<u8>, status: u16, within: Duration) -> Plan {
        let expected = Expected::new(&bytes, status);
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::Within(expected, within),
        });
        self
    }

    /// Bytes written, nothing read.
    fn write(mut self, bytes: Vec<u8>) -> Plan {
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::Pause(Duration::ZERO),
        });
        self
    }

    /// A request answered by the gated stream, read as far as its first event; a later
    /// [`Plan::gated_rest`] reads the rest.
    fn first_event(mut self, bytes: Vec<u8>) -> Plan {
        self.steps.push(Step {
            bytes,
            piece: None,
            read: Read::FirstEvent,
        });
        self
    }

    /// The gateway begins its graceful shutdown.
    fn shutdown(mut self) -> Plan {
        self.steps.push(Step {
            bytes: Vec::new(),
            piece: None,
            read: Read::Shutdown,
        });
        self
    }

    /// A pause before the next step (or the next request).
    fn pause(mut self, pause: Duration) -> Plan {
        self.steps.push(Step {
            bytes: Vec::new(),
            piece: None,
            read: Read::Pause(pause),
        });
        self
    }

    /// What the next request on the connection gets.
    fn then(mut self, then: Then) -> Plan {
        self.then = then;
        self
    }

    fn lane_serves(mut self, requests: u64) -> Plan {
        self.lane_serves = Some(requests..=requests);
        self
    }

    /// Where the lane may serve a request or hand it to hyper, either being right.
    fn lane_serves_between(mut self, fewest: u64, most: u64) -> Plan {
        self.lane_serves = Some(fewest..=most);
        self
    }

    fn on_each_side(mut self, check: fn(&Transcript)) -> Plan {
        self.on_each_side = Some(check);
        self
    }

    /// Runs the plan on both gateways, asserts they behaved the same, and returns what the
    /// reference (hyper) did.
    async fn run(self) -> Transcript {
        let plan = Arc::new(self);
        let name = plan.name.as_str();
        let lane = tokio::spawn(observe(Arc::clone(&plan), true)).await;
        let hyper = tokio::spawn(observe(Arc::clone(&plan), false)).await;
        let (lane, hyper) = match (lane, hyper) {
            (Ok(lane), Ok(hyper)) => (lane, hyper),
            (lane, hyper) => panic!(
                "{name}: a side failed\n  lane: {}\n  hyper: {}",
                outcome(&lane),
                outcome(&hyper)
            ),
        };
        if let Some(check) = plan.on_each_side {
            let checked = |side: &Transcript| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(side)))
                    .map_err(|panic| panic_text(&*panic))
            };
            let (on_lane, on_hyper) = (checked(&lane.transcript), checked(&hyper.transcript));
            assert!(
                on_lane.is_ok() && on_hyper.is_ok(),
                "{name}: wrong answers\n  lane: {on_lane:?}\n  hyper: {on_hyper:?}"
            );
        }
        let differences = differences(&lane.transcript, &hyper.transcript);
        assert!(
            differences.is_empty(),
            "{name}: the lane differs from hyper:\n  - {}\n\nlane: {:#?}\n\nhyper: {:#?}",
            differences.join("\n  - "),
            lane.transcript,
            hyper.transcript
        );
        assert_eq!(
            hyper.lane_requests, 0,
            "{name}: hyper's gateway has no lane"
        );
        let expected = plan
            .lane_serves
            .clone()
            .expect("every plan says what the lane serves");
        assert!(
            expected.contains(&lane.lane_requests),
            "{name}: requests served on the lane: {}, expected {expected:?}",
            lane.lane_requests
        );
        plan.check(&hyper.transcript);
        hyper.transcript
    }

    /// The reference answered what the case is about.
    fn check(&self, reference: &Transcript) {
        let name = &self.name;
        let expected: Vec<u16> = self
            .steps
            .iter()
            .flat_map(|step| match &step.read {
                Read::Answers(answers) => answers.iter().map(|answer| answer.status).collect(),
                Read::Gated(answer, _) | Read::Leave(answer) | Read::Within(answer, _) => {
                    vec![answer.status]
                }
                Read::LeaveUnanswered(_) | Read::FirstEvent | Read::Shutdown | Read::Pause(_) => {
                    Vec::new()
                }
            })
            .collect();
        let statuses: Vec<u16> = reference.answers.iter().map(Answer::status).collect();
        assert_eq!(statuses, expected, "{name}: {reference:#?}");
        let then = match &reference.after {
            After::Open(answer) => Then::Answers(answer.status()),
            After::Closed => Then::Closes,
            After::Left => Then::Left,
            After::Unread(bytes) => panic!("{name}: bytes after the last answer: {bytes:?}"),
            After::GaveUp => panic!("{name}: the client gave up waiting for an answer"),
        };
        assert_eq!(then, self.then, "{name}: the next request");
    }
}

impl Expected {
    fn new(request: &[u8], status: u16) -> Expected {
        Expected {
            session_sent: sends_session(request),
            status,
        }
    }
}

/// `ok`, or how a side's task failed (its panic message).
fn outcome(result: &Result<Observed, tokio::task::JoinError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        // A panic's message is in the `Display`.
        Err(error) => error.to_string(),
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<String>(), panic.downcast_ref::<&str>()) {
        (Some(text), _) => text.clone(),
        (None, Some(text)) => (*text).to_owned(),
        (None, None) => "a panic".to_owned(),
    }
}

/// What one gateway did with a plan.
struct Observed {
    transcript: Transcript,
    /// `compresh_lane_requests_total`.
    lane_requests: u64,
}

/// Everything compared between the two gateways.
#[derive(Debug)]
struct Transcript {
    answers: Vec<Answer>,
    /// The connection after the last answer.
    after: After,
    /// The requests the provider received, in order.
    forwarded: Vec<Forwarded>,
    /// After the client left: the provider saw its gated stream dropped (within
    /// [`READ_TIMEOUT`]), or its connection closed with the answer still pending (within
    /// [`PROVIDER_RELEASE`]).
    provider_released: Option<bool>,
    /// The usage rows, sorted.
    usage: Vec<UsageRow>,
    /// The id of the plan's key (the same on both gateways).
    key_id: String,
}

/// A response, normalised.
#[derive(Debug, PartialEq)]
struct Answer {
    status_line: String,
    framing: Framing,
    /// Lowercase names, sorted.
    headers: Headers,
    /// De-chunked.
    body: Text,
    /// Lowercase names, in order.
    trailers: Headers,
    /// The body ended as its framing says (not cut off by a close).
    complete: bool,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Vec<&str> {
        values(&self.headers.0, name)
    }
}

/// The connection after the last answer: the next request's answer, or a close.
#[derive(Debug, PartialEq)]
enum After {
    Open(Box<Answer>),
    Closed,
    /// Bytes arrived that answer nothing.
    Unread(Text),
    /// The client closed it.
    Left,
    /// The client gave up waiting for an answer ([`Read::Within`]) and sent nothing more.
    GaveUp,
}

impl After {
    fn answer(&self) -> &Answer {
        match self {
            After::Open(answer) => answer,
            other => panic!("the connection did not serve the next request: {other:?}"),
        }
    }
}

/// A request a provider received, normalised.
#[derive(Debug, PartialEq)]
struct Forwarded {
    /// Method and target (and the version, from a raw upstream).
    line: String,
    /// Lowercase names, sorted; `host` normalised.
    headers: Headers,
    body: Text,
}

impl Forwarded {
    fn from_mock(request: &RecordedRequest, authority: &str) -> Forwarded {
        Forwarded {
            line: format!("{} {}", request.method, request.path_and_query),
            headers: forwarded_headers(&request.headers, authority),
            body: Text(request.body.clone()),
        }
    }

    fn from_raw(request: &RawRequest, authority: &str) -> Forwarded {
        Forwarded {
            line: request.start.clone(),
            headers: forwarded_headers(&request.headers, authority),
            body: Text(request.body.clone()),
        }
    }

    fn header(&self, name: &str) -> Vec<&str> {
        values(&self.headers.0, name)
    }
}

/// The compared columns of a `usage_events` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct UsageRow {
    key_id: String,
    status: i64,
    provider: String,
    model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    rate_limited: bool,
}

/// `reference` wrote this usage row (among others), not rate limited.
fn assert_usage(
    reference: &Transcript,
    status: i64,
    provider: &str,
    model: &str,
    tokens: Option<(i64, i64)>,
) {
    let row = UsageRow {
        key_id: reference.key_id.clone(),
        status,
        provider: provider.to_owned(),
        model: Some(model.to_owned()),
        input_tokens: tokens.map(|(input, _)| input),
        output_tokens: tokens.map(|(_, output)| output),
        rate_limited: false,
    };
    assert!(
        reference.usage.contains(&row),
        "{row:?} not in {:#?}",
        reference.usage
    );
}

/// Header lines, (lowercase name, value); long values are cut short when shown.
#[derive(PartialEq)]
struct Headers(Vec<(String, String)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, value)| (name, Short(value))))
            .finish()
    }
}

/// Text shown cut short when long.
struct Short<'a>(&'a str);

impl fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 160;
        match self.0.char_indices().nth(SHOWN) {
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// Bytes, compared exactly, shown as text (cut short when long).
#[derive(PartialEq)]
struct Text(Bytes);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 1500;
        let text = String::from_utf8_lossy(&self.0);
        if text.len() <= SHOWN {
            write!(f, "{text:?}")
        } else {
            let cut = (0..=SHOWN)
                .rev()
                .find(|&at| text.is_char_boundary(at))
                .unwrap_or(0);
            write!(f, "{:?}... ({} bytes)", &text[..cut], self.0.len())
        }
    }
}

/// Runs `plan` on a gateway with or without the lane.
async fn observe(plan: Arc<Plan>, raw_lane: bool) -> Observed {
    let mut config = plan.config.clone();
    config.raw_lane = raw_lane;
    let mut gw = TestGateway::start_exactly(config).await;
    install_key(&gw, &plan);
    if plan.local_provider {
        set_provider(
            &gw.data,
            "local",
            "openai",
            Some(&gw.mock.openai_base_url()),
            OPENAI_SECRET,
        );
    }
    let gate = Gate::new();
    let raw = match &plan.provider {
        Provider::Mock(script) => {
            for response in script() {
                gw.mock.enqueue(response);
            }
            None
        }
        Provider::ClosingMock => {
            gw.mock.set_close_connections(true);
            None
        }
        Provider::Gated => {
            gw.mock.enqueue(MockResponse::GatedStream {
                chunks: EVENTS.iter().map(|event| Bytes::from(*event)).collect(),
                gate: gate.clone(),
            });
            None
        }
        Provider::Raw(answer) | Provider::RawInPieces(answer, _) => {
            let piece = match &plan.provider {
                Provider::RawInPieces(_, piece) => *piece,
                _ => usize::MAX,
            };
            let upstream = RawUpstream::start(answer.clone(), piece).await;
            use_upstream(&gw, upstream.addr());
            Some(upstream)
        }
        Provider::Unreachable => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let closed = listener.local_addr().expect("addr");
            drop(listener);
            use_upstream(&gw, closed);
            None
        }
    };

    let mut conn = Some(Conn::open(gw.addr()).await);
    let mut answers = Vec::new();
    let mut provider_released = None;
    let mut gave_up = false;
    for step in &plan.steps {
        let client = conn.as_mut().expect("the client left before this step");
        match step.piece {
            Some(piece) => {
                for part in step.bytes.chunks(piece) {
                    client.write(part).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            None if step.bytes.is_empty() => {}
            None => client.write(&step.bytes).await,
        }
        match &step.read {
            Read::Answers(expected) => {
                for expected in expected {
                    answers.push(read_answer(client, expected.session_sent, |_| false).await);
                }
            }
            Read::Gated(expected, stripped) => {
                // What the client gets of the events released so far; one more is released
                // each time the client has it all.
                let relayed = |event: &str| {
                    let usage_only = event.contains("\"choices\":[],\"usage\":{");
                    if *stripped && usage_only {
                        0
                    } else {
                        event.len()
                    }
                };
                let mut released = 0;
                let mut available = relayed(EVENTS[0]);
                let answer = read_answer(client, expected.session_sent, |received| {
                    while received >= available && released + 1 < EVENTS.len() {
                        released += 1;
                        available += relayed(EVENTS[released]);
                        gate.release();
                    }
                    false
                })
                .await;
                answers.push(answer);
            }
            Read::Pause(pause) => tokio::time::sleep(*pause).await,
            Read::LeaveUnanswered(after) => {
                tokio::time::sleep(*after).await;
                conn = None;
                let upstream = raw
                    .as_ref()
                    .expect("a RawAnswer::Delayed provider, to leave before its answer");
                provider_released = Some(upstream.wait_left_unanswered(1, PROVIDER_RELEASE).await);
                continue;
            }
            Read::Within(expected, within) => {
                let answer = tokio::time::timeout(
                    *within,
                    read_answer(client, expected.session_sent, |_| false),
                )
                .await
                .unwrap_or_else(|_| {
                    gave_up = true;
                    Answer {
                        status_line: format!("(no answer within {within:?})"),
                        framing: Framing::Close,
                        headers: Headers(Vec::new()),
                        body: Text(Bytes::new()),
                        trailers: Headers(Vec::new()),
                        complete: false,
                    }
                });
                answers.push(answer);
            }
            Read::FirstEvent => {
                // `"Hel"` is in the first event only.
                while find(&client.buf, b"\"Hel\"").is_none() {
                    assert!(more(client).await, "closed before the stream's first event");
                }
            }
            Read::Shutdown => {
                gw.begin_shutdown();
                tokio::time::sleep(SHUTDOWN_SETTLES).await;
            }
            Read::Leave(expected) => {
                let first = EVENTS[0].len();
                let answer =
                    read_answer(client, expected.session_sent, |received| received >= first).await;
                answers.push(answer);
            }
        }
        if matches!(step.read, Read::Leave(_)) {
            conn = None;
            provider_released = Some(gate.wait_closed(READ_TIMEOUT).await);
        }
    }
    let after = match &mut conn {
        Some(_) if gave_up => After::GaveUp,
        Some(client) => next_request(client, &plan.probe).await,
        None => After::Left,
    };
    drop(conn);

    let lane_requests = lane_requests(&gw);
    // Stops the server and writes every queued usage row.
    gw.shutdown().await;
    let forwarded = match &raw {
        Some(upstream) => {
            let authority = upstream.addr().to_string();
            upstream
                .requests()
                .iter()
                .map(|request| Forwarded::from_raw(request, &authority))
                .collect()
        }
        None => {
            let authority = gw.mock.addr().to_string();
            gw.mock
                .requests()
                .iter()
                .map(|request| Forwarded::from_mock(request, &authority))
                .collect()
        }
    };
    Observed {
        transcript: Transcript {
            answers,
            after,
            forwarded,
            provider_released,
            usage: usage_rows(&gw),
            key_id: plan.key_id.to_string(),
        },
        lane_requests,
    }
}

/// Gives both gateways the same key (secret and id), with the plan's limit and restrictions.
fn install_key(gw: &TestGateway, plan: &Plan) {
    let store = &gw.data.store;
    let account = store.account_by_name("default").expect("default account");
    store
        .insert_key(NewApiKey {
            id: plan.key_id.clone(),
            account_id: account.id,
            name: "lane".to_owned(),
            environment: None,
            hint: plan.key.hint(),
            hash: plan.key.hash(),
            rpm: plan.rpm,
            allowed_providers: plan.allowed_providers.clone(),
            allowed_models: plan.allowed_models.clone(),
            expires_at: None,
        })
        .expect("insert key");
}

/// Sends `probe` on the connection: its answer if the connection still serves requests.
async fn next_request(conn: &mut Conn, probe: &[u8]) -> After {
    if !conn.buf.is_empty() {
        return After::Unread(Text(Bytes::from(std::mem::take(&mut conn.buf))));
    }
    // A closed connection may refuse the write; the read tells.
    let _ = conn.stream.write_all(probe).await;
    if !more(conn).await {
        return After::Closed;
    }
    After::Open(Box::new(read_answer(conn, false, |_| false).await))
}

/// Reads more of the connection; `false` at its end (a close or a reset).
async fn more(conn: &mut Conn) -> bool {
    conn.buf.reserve(16 * 1024);
    let read = tokio::time::timeout(READ_TIMEOUT, conn.stream.read_buf(&mut conn.buf))
        .await
        .expect("the gateway sent more or closed within the timeout");
    matches!(read, Ok(read) if read > 0)
}

/// One CRLF-terminated line, without the CRLF; `None` when the connection ends first.
async fn line(conn: &mut Conn) -> Option<Vec<u8>> {
    loop {
        if let Some(at) = find(&conn.buf, b"\r\n") {
            let mut line: Vec<u8> = conn.buf.drain(..at + 2).collect();
            line.truncate(at);
            return Some(line);
        }
        if !more(conn).await {
            return None;
        }
    }
}

/// A header line as (lowercase name, trimmed value).
fn header_line(line: &[u8]) -> (String, String) {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .unwrap_or_else(|| panic!("not a header line: {:?}", String::from_utf8_lossy(line)));
    (
        String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase(),
        String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned(),
    )
}

/// Reads one answer, its body by its framing. A body the gateway breaks off (closing the
/// connection) is kept as far as it came; so is one that `stop` (given the body's length so
/// far, after each read) ends early. A close before any answer is an answer without a status.
async fn read_answer(
    conn: &mut Conn,
    session_sent: bool,
    mut stop: impl FnMut(usize) -> bool,
) -> Answer {
    let Some(status_line) = line(conn).await else {
        return Answer {
            status_line: "(closed before an answer)".to_owned(),
            framing: Framing::Close,
            headers: Headers(Vec::new()),
            body: Text(Bytes::new()),
            trailers: Headers(Vec::new()),
            complete: false,
        };
    };
    let status_line = String::from_utf8_lossy(&status_line).into_owned();
    let mut headers = Vec::new();
    loop {
        match line(conn).await {
            Some(line) if line.is_empty() => break,
            Some(line) => headers.push(header_line(&line)),
            None => panic!("closed inside the head after {status_line:?}"),
        }
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let chunked = values(&headers, "transfer-encoding")
        .iter()
        .any(|value| value.contains("chunked"));
    // A list of equal lengths is one length (RFC 9110 section 8.6).
    let length = values(&headers, "content-length").first().map(|value| {
        let lengths: Vec<usize> = value
            .split(',')
            .map(|length| length.trim().parse().ok())
            .collect::<Option<_>>()
            .unwrap_or_else(|| panic!("content-length: {value}"));
        assert!(
            lengths.windows(2).all(|pair| pair[0] == pair[1]),
            "content-length: {value}"
        );
        lengths[0]
    });
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    let (framing, complete) = if (100..200).contains(&status) || status == 204 || status == 304 {
        (Framing::Empty, true)
    } else if chunked {
        assert!(length.is_none(), "both framings: {headers:?}");
        let complete = read_chunks(conn, &mut body, &mut trailers, &mut stop).await;
        (Framing::Chunked, complete)
    } else if let Some(length) = length {
        while conn.buf.len() < length && !stop(conn.buf.len()) && more(conn).await {}
        let got = conn.buf.len().min(length);
        body.extend(conn.buf.drain(..got));
        (Framing::Length, got == length)
    } else {
        while !stop(conn.buf.len()) && more(conn).await {}
        body = std::mem::take(&mut conn.buf);
        (Framing::Close, true)
    };
    let mut headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(name, value)| {
            let value = normalise(&name, value, session_sent);
            (name, value)
        })
        .collect();
    headers.sort();
    Answer {
        status_line,
        framing,
        headers: Headers(headers),
        body: Text(Bytes::from(body)),
        trailers: Headers(trailers),
        complete,
    }
}

/// Decodes a chunked body into `body`; whether it ended with its last chunk and trailer
/// section (not a close, nor `stop`).
async fn read_chunks(
    conn: &mut Conn,
    body: &mut Vec<u8>,
    trailers: &mut Vec<(String, String)>,
    stop: &mut impl FnMut(usize) -> bool,
) -> bool {
    loop {
        if stop(body.len()) {
            return false;
        }
        let Some(size_line) = line(conn).await else {
            return false;
        };
        let size_line = String::from_utf8_lossy(&size_line).into_owned();
        let size = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            loop {
                match line(conn).await {
                    Some(line) if line.is_empty() => return true,
                    Some(line) => trailers.push(header_line(&line)),
                    None => return false,
                }
            }
        }
        while conn.buf.len() < size + 2 {
            if !more(conn).await {
                let got = conn.buf.len().min(size);
                body.extend(conn.buf.drain(..got));
                return false;
            }
        }
        body.extend(conn.buf.drain(..size));
        let end: Vec<u8> = conn.buf.drain(..2).collect();
        assert_eq!(end, b"\r\n", "chunk data ends in CRLF");
    }
}

/// `compresh_lane_requests_total`, as `/metrics` shows it (read from the gateway itself: the
/// server may be shutting down).
fn lane_requests(gw: &TestGateway) -> u64 {
    let text = gw.gateway.metrics().render();
    text.lines()
        .find_map(|line| line.strip_prefix("compresh_lane_requests_total "))
        .expect("compresh_lane_requests_total in /metrics")
        .trim()
        .parse()
        .expect("a count")
}

fn usage_rows(gw: &TestGateway) -> Vec<UsageRow> {
    let db = rusqlite::Connection::open(gw.data.store.path()).expect("open db");
    let mut rows: Vec<UsageRow> = db
        .prepare(
            "SELECT key_id, status, provider, model, input_tokens, output_tokens, rate_limited \
             FROM usage_events",
        )
        .expect("prepare")
        .query_map([], |row| {
            Ok(UsageRow {
                key_id: row.get(0)?,
                status: row.get(1)?,
                provider: row.get(2)?,
                model: row.get(3)?,
                input_tokens: row.get(4)?,
                output_tokens: row.get(5)?,
                rate_limited: row.get(6)?,
            })
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows.sort();
    rows
}

/// Whether a request's head carries a session id the gateway echoes: the first
/// `X-Session-Id`, non-empty and at most 128 bytes.
fn sends_session(request: &[u8]) -> bool {
    let end = find(request, b"\r\n\r\n").expect("a complete head");
    request[..end]
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| header_line(line.trim_ascii()))
        .find(|(name, _)| name == "x-session-id")
        .is_some_and(|(_, value)| !value.is_empty() && value.len() <= 128)
}

/// A provider's request headers, sorted; `host` names the provider's own port, which differs
/// between the two.
fn forwarded_headers(headers: &HeaderMap, authority: &str) -> Headers {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let value = if name == "host" && value == authority {
                "<provider>".to_owned()
            } else {
                value
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    sorted.sort();
    Headers(sorted)
}

fn values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
        .collect()
}

/// The answer header values that legitimately differ between two gateways, checked for their
/// shape and replaced by a placeholder.
fn normalise(name: &str, value: String, session_sent: bool) -> String {
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match name {
        "date" => {
            assert!(value.ends_with(" GMT"), "date: {value}");
            "<date>".to_owned()
        }
        "x-compresh-proxy-overhead-ms" | "x-ratelimit-reset" => {
            assert!(digits(&value), "{name}: {value}");
            format!("<{name}>")
        }
        "ratelimit" => match value.rsplit_once(";t=") {
            Some((policy, reset)) if digits(reset) => format!("{policy};t=<reset>"),
            // Not the gateway's: compared as it is.
            _ => value,
        },
        "x-compresh-session-id" if !session_sent => {
            let hex = value.strip_prefix("sess_").unwrap_or_default();
            assert!(
                hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "a generated session id is sess_ and 32 hex digits: {value}"
            );
            "<generated>".to_owned()
        }
        _ => value,
    }
}

fn assert_gateway_error(answer: &Answer, code: &str) {
    let json: serde_json::Value = serde_json::from_slice(&answer.body.0).expect("a JSON error");
    assert_eq!(json["error"]["code"], code, "{json}");
    assert_eq!(answer.header("content-type"), ["application/json"]);
}

/// Every difference between the two transcripts, described.
fn differences(lane: &Transcript, hyper: &Transcript) -> Vec<String> {
    let mut out = Vec::new();
    if lane.answers.len() != hyper.answers.len() {
        out.push(format!(
            "answers: lane {}, hyper {}",
            lane.answers.len(),
            hyper.answers.len()
        ));
    }
    for (i, (l, h)) in lane.answers.iter().zip(&hyper.answers).enumerate() {
        compare_answers(&format!("answer {i}"), l, h, &mut out);
    }
    match (&lane.after, &hyper.after) {
        (After::Open(l), After::Open(h)) => {
            compare_answers("the next request's answer", l, h, &mut out);
        }
        (l, h) if l != h => out.push(format!("connection afterwards: lane {l:?}, hyper {h:?}")),
        _ => {}
    }
    if lane.forwarded.len() != hyper.forwarded.len() {
        out.push(format!(
            "requests the provider received: lane {}, hyper {}",
            lane.forwarded.len(),
            hyper.forwarded.len()
        ));
    }
    for (i, (l, h)) in lane.forwarded.iter().zip(&hyper.forwarded).enumerate() {
        let what = format!("forwarded request {i}");
        if l.line != h.line {
            out.push(format!(
                "{what}: line: lane {:?}, hyper {:?}",
                l.line, h.line
            ));
        }
        compare_headers(&what, &l.headers.0, &h.headers.0, &mut out);
        if l.body != h.body {
            out.push(format!(
                "{what}: body: lane {:?}, hyper {:?}",
                l.body, h.body
            ));
        }
    }
    if lane.provider_released != hyper.provider_released {
        out.push(format!(
            "the provider released after the client left: lane {:?}, hyper {:?}",
            lane.provider_released, hyper.provider_released
        ));
    }
    if lane.usage != hyper.usage {
        out.push(format!(
            "usage rows: lane {:?}, hyper {:?}",
            lane.usage, hyper.usage
        ));
    }
    out
}

fn compare_answers(what: &str, lane: &Answer, hyper: &Answer, out: &mut Vec<String>) {
    if lane.status_line != hyper.status_line {
        out.push(format!(
            "{what}: status line: lane {:?}, hyper {:?}",
            lane.status_line, hyper.status_line
        ));
    }
    if lane.framing != hyper.framing {
        out.push(format!(
            "{what}: framing: lane {:?}, hyper {:?}",
            lane.framing, hyper.framing
        ));
    }
    compare_headers(what, &lane.headers.0, &hyper.headers.0, out);
    if lane.body != hyper.body {
        out.push(format!(
            "{what}: body: lane {:?}, hyper {:?}",
            lane.body, hyper.body
        ));
    }
    if lane.trailers != hyper.trailers {
        out.push(format!(
            "{what}: trailers: lane {:?}, hyper {:?}",
            lane.trailers, hyper.trailers
        ));
    }
    if lane.complete != hyper.complete {
        out.push(format!(
            "{what}: body complete: lane {}, hyper {}",
            lane.complete, hyper.complete
        ));
    }
}

/// The headers only one side has (as multisets).
fn compare_headers(
    what: &str,
    lane: &[(String, String)],
    hyper: &[(String, String)],
    out: &mut Vec<String>,
) {
    let only = |these: &[(String, String)], those: &[(String, String)]| {
        let mut rest = those.to_vec();
        let mut only = Vec::new();
        for header in these {
            match rest.iter().position(|other| other == header) {
                Some(at) => {
                    rest.remove(at);
                }
                None => only.push(format!("{}: {:?}", header.0, Short(&header.1))),
            }
        }
        only
    };
    let (only_lane, only_hyper) = (only(lane, hyper), only(hyper, lane));
    if !only_lane.is_empty() || !only_hyper.is_empty() {
        out.push(format!(
            "{what}: headers only the lane sent {only_lane:?}, only hyper sent {only_hyper:?}"
        ));
    }
}
