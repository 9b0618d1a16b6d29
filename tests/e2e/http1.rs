//! The gateway's HTTP/1.1 behaviour at the socket level: requests written by hand on a raw
//! `TcpStream` (in one write, in pieces, pipelined, chunked, HTTP/1.0, `Expect: 100-continue`),
//! responses parsed by hand, against the mock provider or a raw-socket upstream for framings a
//! hyper server never sends. These pin what a client sees on the wire, whatever serves it.

use std::time::Duration;

use bytes::Bytes;
use compresh::gateway::GatewayConfig;
use compresh::usage::UsageConfig;
use compresh_e2e::wire::{
    chat, find, raw_upstream, request, use_upstream, Conn, Framing, RawAnswer, RawUpstream, Wire,
};
use compresh_e2e::{assert_error, assert_status, eventually, Reply, TestGateway, OPENAI_SECRET};
use compresh_forward::ForwardConfig;
use compresh_keys::KeyId;
use compresh_mock::MockResponse;
use compresh_store::UsageFilter;
use http::StatusCode;

/// Upper bound for waiting on usage rows: never reached when the server works.
const WAIT: Duration = Duration::from_secs(5);
const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// What the mock answers to `body` on its own (no gateway in between).
async fn straight_from_mock(gw: &TestGateway, body: &str) -> Bytes {
    let mut conn = Conn::open(gw.mock.addr()).await;
    let reply = conn
        .request(&request(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body,
        ))
        .await;
    assert_status(&reply, StatusCode::OK);
    reply.reply.body
}

fn remaining(reply: &Reply) -> u32 {
    reply
        .header("x-ratelimit-remaining")
        .expect("x-ratelimit-remaining")
        .parse()
        .expect("numeric")
}

#[tokio::test]
async fn keep_alive_serves_sequential_requests_on_one_connection() {
    let gw = TestGateway::start().await;
    let expected = straight_from_mock(&gw, CHAT).await;
    // 10 a minute: no request comes back between these (one every 6 s).
    let (key, _) = gw.create_key(Some(10));
    let mut conn = Conn::open(gw.addr()).await;
    let mut left = Vec::new();
    for _ in 0..3 {
        let reply = conn.request(&chat(&key, &[], CHAT)).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.version, "HTTP/1.1");
        assert_eq!(reply.framing, Framing::Length);
        assert_eq!(reply.body, expected, "the mock's body, byte for byte");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(reply.header("connection").is_none());
        assert!(reply.header("date").is_some());
        assert_eq!(reply.header("x-ratelimit-limit"), Some("10"));
        let reset: u64 = reply.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset > 1_700_000_000, "a Unix time: {reset}");
        assert!(reply
            .header("x-compresh-session-id")
            .is_some_and(|id| id.starts_with("sess_")));
        left.push(remaining(&reply));
    }
    assert_eq!(left, [9, 8, 7]);
    assert_eq!(gw.mock.requests().len(), 4, "one straight, three proxied");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let gw = TestGateway::start().await;
    let (key, _) = gw.create_key(Some(10));
    let mut conn = Conn::open(gw.addr()).await;
    let mut both = chat(&key, &[("x-session-id", "pipe-1")], CHAT);
    both.extend(chat(
        &key,
        &[("x-session-id", "pipe-2")],
        r#"{"model":"gpt-4o","messages":[]}"#,
    ));
    conn.write(&both).await;
    let first = conn.read_response().await;
    let second = conn.read_response().await;
    for (reply, session, model) in [
        (&first, "pipe-1", "gpt-4o-mini"),
        (&second, "pipe-2", "gpt-4o"),
    ] {
        assert_status(reply, StatusCode::OK);
        assert_eq!(reply.header("x-compresh-session-id"), Some(session));
        assert_eq!(reply.json()["model"], model, "each answer is its request's");
    }
    assert_eq!(remaining(&first), remaining(&second) + 1);
    let seen: Vec<_> = gw.mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], CHAT, "forwarded in order");
    // The connection is still usable afterwards.
    let third = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&third, StatusCode::OK);
}

#[tokio::test]
async fn a_head_written_a_few_bytes_at_a_time_is_served() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let bytes = chat(&gw.api_key, &[], CHAT);
    let head_end = find(&bytes, b"\r\n\r\n").unwrap() + 4;
    for piece in bytes[..head_end].chunks(3) {
        conn.write(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write(&bytes[head_end..]).await;
    let reply = conn.read_response().await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.json()["object"], "chat.completion");
    assert_eq!(gw.mock.last_request().unwrap().body, CHAT);
}

#[tokio::test]
async fn a_chunked_request_body_is_forwarded_whole_with_a_length() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let auth = format!("Bearer {}", gw.api_key);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: compresh.test\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    conn.write(head.as_bytes()).await;
    let (a, rest) = CHAT.split_at(10);
    let (b, c) = rest.split_at(30);
    // Upper- and lower-case hex sizes and a chunk extension; one chunk per write.
    for chunk in [
        format!("{:X}\r\n{a}\r\n", a.len()),
        format!("{:x};note=1\r\n{b}\r\n", b.len()),
        format!("{:x}\r\n{c}\r\n", c.len()),
        "0\r\n\r\n".to_owned(),
    ] {
        conn.write(chunk.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = conn.read_response().await;
    assert_status(&reply, StatusCode::OK);
    let seen = gw.mock.last_request().unwrap();
    assert_eq!(seen.body, CHAT, "the whole body reached the provider");
    // The gateway reads the body before forwarding: the provider sees a length, no chunking.
    assert_eq!(
        seen.headers.get("content-length").unwrap(),
        &CHAT.len().to_string()
    );
    assert!(seen.headers.get("transfer-encoding").is_none());
    // Still keep-alive.
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let bytes = chat(&gw.api_key, &[("expect", "100-continue")], CHAT);
    let head_end = find(&bytes, b"\r\n\r\n").unwrap() + 4;
    conn.write(&bytes[..head_end]).await;
    let interim = conn.read_response().await;
    assert_eq!(interim.status, StatusCode::CONTINUE);
    assert_eq!(interim.version, "HTTP/1.1");
    assert_eq!(interim.framing, Framing::Empty);
    assert!(conn.buf.is_empty(), "nothing after the 100 yet");
    conn.write(&bytes[head_end..]).await;
    let reply = conn.read_response().await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(gw.mock.last_request().unwrap().body, CHAT);

    // A request refused before its body is read gets its answer without a 100.
    let unknown = compresh_keys::ApiKey::generate();
    let bytes = chat(unknown.expose_secret(), &[("expect", "100-continue")], CHAT);
    conn.write(&bytes[..head_end]).await;
    let reply = conn.read_response().await;
    assert_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
    );
    // The client still holds a body it was told to wait with: the server closes.
    conn.assert_closed().await;
    assert_eq!(gw.mock.requests().len(), 1);
}

#[tokio::test]
async fn http_1_0_is_answered_then_closed() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let auth = format!("Bearer {}", gw.api_key);
    let bytes = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nhost: compresh.test\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    let reply = conn.request(bytes.as_bytes()).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.version, "HTTP/1.0");
    assert_eq!(reply.framing, Framing::Length);
    assert_eq!(reply.json()["object"], "chat.completion");
    assert!(reply.header("x-ratelimit-remaining").is_some());
    conn.assert_closed().await;
    assert_eq!(gw.mock.last_request().unwrap().body, CHAT);

    // HTTP/1.0 with `connection: keep-alive` stays open, and says so.
    let keep_alive = bytes.replace("host:", "connection: keep-alive\r\nhost:");
    let mut conn = Conn::open(gw.addr()).await;
    for _ in 0..2 {
        let reply = conn.request(keep_alive.as_bytes()).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.version, "HTTP/1.0");
        assert_eq!(reply.framing, Framing::Length);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }

    // A stream has no length to give an HTTP/1.0 client (no chunked encoding): its end is the
    // close, even when the client asked for keep-alive (the response then still carries
    // `connection: keep-alive`).
    let stream = bytes.replace(CHAT, CHAT_STREAM).replace(
        &format!("content-length: {}", CHAT.len()),
        &format!("content-length: {}", CHAT_STREAM.len()),
    );
    let expected = straight_from_mock(&gw, CHAT_STREAM).await;
    for request in [
        stream.clone(),
        stream.replace("host:", "connection: keep-alive\r\nhost:"),
    ] {
        let mut conn = Conn::open(gw.addr()).await;
        let reply = conn.request(request.as_bytes()).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.version, "HTTP/1.0");
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        assert_eq!(reply.framing, Framing::Close);
        assert_eq!(reply.body, expected);
    }
}

#[tokio::test]
async fn connection_close_from_the_client_closes_after_the_response() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn
        .request(&chat(&gw.api_key, &[("connection", "close")], CHAT))
        .await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.framing, Framing::Length);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.json()["object"], "chat.completion");
    conn.assert_closed().await;
}

#[tokio::test]
async fn errors_do_not_spoil_the_connection() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let unknown = compresh_keys::ApiKey::generate();
    let reply = conn
        .request(&chat(unknown.expose_secret(), &[], CHAT))
        .await;
    assert_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
    );
    assert_eq!(reply.framing, Framing::Length);
    assert!(
        reply.header("x-ratelimit-limit").is_none(),
        "not identified"
    );

    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.json()["object"], "chat.completion");

    let reply = conn
        .request(&chat(&gw.api_key, &[], "this is not json"))
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_json",
    );
    assert!(reply.header("x-ratelimit-limit").is_some());

    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(gw.mock.requests().len(), 2, "only the good requests");
}

#[tokio::test]
async fn missing_key_is_401_and_x_api_key_works_for_openai_routes() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn
        .request(&request(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            CHAT,
        ))
        .await;
    assert_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "missing_api_key",
    );
    let reply = conn
        .request(&request(
            "POST",
            "/v1/chat/completions",
            &[
                ("x-api-key", &gw.api_key),
                ("content-type", "application/json"),
            ],
            CHAT,
        ))
        .await;
    assert_status(&reply, StatusCode::OK);
    let seen = gw.mock.last_request().unwrap();
    assert!(seen.headers.get("x-api-key").is_none());
    assert_eq!(
        seen.headers.get("authorization").unwrap(),
        &format!("Bearer {OPENAI_SECRET}")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let gw = TestGateway::start_with(GatewayConfig {
        body_limit: 1024,
        ..GatewayConfig::default()
    })
    .await;
    // A declared length over the limit is refused without waiting for the body.
    let mut conn = Conn::open(gw.addr()).await;
    let auth = format!("Bearer {}", gw.api_key);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: compresh.test\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ncontent-length: 4096\r\n\r\n"
    );
    let reply = conn.request(head.as_bytes()).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
    );
    assert!(reply.header("x-ratelimit-remaining").is_some());
    // The unread body makes the connection unusable: the server closes it.
    conn.assert_closed().await;

    // A chunked body is cut off once it passes the limit. (One write, so that the server has
    // read all of it when it answers: unread bytes at its close would reset the connection.)
    let mut conn = Conn::open(gw.addr()).await;
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    let unfinished =
        head.replace("content-length: 4096", "transfer-encoding: chunked") + &chunk + &chunk;
    let reply = conn.request(unfinished.as_bytes()).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
    );
    conn.assert_closed().await;
    assert!(gw.mock.requests().is_empty());

    // A body at the limit passes.
    let body = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "x".repeat(997));
    assert_eq!(body.len(), 1024);
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn.request(&chat(&gw.api_key, &[], &body)).await;
    assert_status(&reply, StatusCode::OK);
}

#[tokio::test]
async fn gateway_routes_follow_a_proxied_request_on_the_same_connection() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);

    let health = conn.request(&request("GET", "/health", &[], "")).await;
    assert_status(&health, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    assert!(health.header("x-ratelimit-limit").is_none());

    let auth = format!("Bearer {}", gw.api_key);
    let models = conn
        .request(&request(
            "GET",
            "/v1/models",
            &[("authorization", &auth)],
            "",
        ))
        .await;
    assert_status(&models, StatusCode::OK);
    assert_eq!(models.json()["object"], "list");
    let seen = gw.mock.last_request().unwrap();
    assert_eq!(seen.method, http::Method::GET);
    assert_eq!(seen.path_and_query, "/v1/models");
    assert!(seen.body.is_empty());

    let missing = conn.request(&request("GET", "/nope", &[], "")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let again = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&again, StatusCode::OK);
}

#[tokio::test]
async fn a_chunked_upstream_answer_reaches_the_client_whole() {
    let gw = TestGateway::start().await;
    let chunks = [
        r#"{"id":"chatcmpl-chunked","object":"chat.completion","#,
        r#""model":"gpt-4o-mini","choices":[],"#,
        r#""usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
    ];
    gw.mock.enqueue(MockResponse::Chunked {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        chunks: chunks.iter().map(|c| Bytes::from(*c)).collect(),
    });
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.framing, Framing::Chunked, "no length to give");
    assert_eq!(reply.body, chunks.concat());
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);

    // Chunked the hard way: split inside size lines and CRLFs, with extensions and a trailer.
    let body = chunks.concat();
    let mut wire = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for chunk in chunks {
        wire.push_str(&format!("{:X};ext=1\r\n{chunk}\r\n", chunk.len()));
    }
    wire.push_str("0\r\nx-checksum: 1\r\n\r\n");
    use_upstream(&gw, raw_upstream(wire.into_bytes(), 7).await);
    for _ in 0..2 {
        // The raw upstream closes without announcing it (no `connection: close`): a request
        // sent before that close is seen goes out on the dying connection and gets a 502
        // `upstream_error` (a written POST is not retried), so give the close time to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.framing, Framing::Chunked);
        assert_eq!(reply.body, body);
        assert!(
            reply.header("x-checksum").is_none(),
            "trailers are not headers"
        );
    }
}

#[tokio::test]
async fn a_close_delimited_upstream_answer_reaches_the_client_whole() {
    let gw = TestGateway::start().await;
    let body = r#"{"id":"chatcmpl-close","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"until the end"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
    let wire = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close, x-upstream-hop\r\n\
         x-upstream-hop: 1\r\nkeep-alive: timeout=1\r\nx-upstream-kept: yes\r\n\r\n{body}"
    );
    use_upstream(&gw, raw_upstream(wire.into_bytes(), 11).await);
    let mut conn = Conn::open(gw.addr()).await;
    for _ in 0..3 {
        let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.body, body, "intact, up to the upstream's close");
        assert_eq!(reply.framing, Framing::Chunked, "no length to give");
        assert_eq!(reply.header("x-upstream-kept"), Some("yes"));
        // The upstream's hop-by-hop headers stay on its hop; the client's stays keep-alive.
        for hop in ["x-upstream-hop", "keep-alive", "connection"] {
            assert!(reply.header(hop).is_none(), "{hop} reached the client");
        }
        assert!(reply.header("x-ratelimit-remaining").is_some());
    }

    // The same answer as HTTP/1.0.
    let wire = format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{body}");
    use_upstream(&gw, raw_upstream(wire.into_bytes(), 13).await);
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.version, "HTTP/1.1");
    assert_eq!(reply.body, body);
}

#[tokio::test]
async fn an_upstream_closing_after_every_response_is_reconnected() {
    let gw = TestGateway::start().await;
    gw.mock.set_close_connections(true);
    let mut conn = Conn::open(gw.addr()).await;
    for i in 0..4 {
        // The first two back to back: the upstream's `connection: close` is in the head the
        // gateway has read, so the next request must not wait for the close to be seen.
        if i >= 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.json()["object"], "chat.completion");
        assert!(
            reply.header("connection").is_none(),
            "the upstream's close is not the client's"
        );
    }
    assert_eq!(gw.mock.connections_accepted(), 4, "one per request");
}

#[tokio::test]
async fn streams_arrive_chunked_and_end_with_done() {
    let gw = TestGateway::start().await;
    let expected = straight_from_mock(&gw, CHAT_STREAM).await;
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT_STREAM)).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.framing, Framing::Chunked);
    assert!(reply.header("x-ratelimit-remaining").is_some());
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert_eq!(
        text.matches("\"chat.completion.chunk\"").count(),
        3,
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(reply.body, expected, "as the mock sends it to a client");
    // The connection serves the next request after the stream.
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
}

#[tokio::test]
async fn hop_by_hop_and_client_headers_stay_on_the_clients_hop() {
    let gw = TestGateway::start().await;
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn
        .request(&chat(
            &gw.api_key,
            &[
                ("Connection", "keep-alive, X-Hop-Custom"),
                ("X-Hop-Custom", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic dXNlcjpwYXNz"),
                ("x-compresh-debug", "1"),
                ("x-session-id", "hygiene"),
                ("X-Custom-Kept", "yes"),
                ("cookie", "a=b"),
            ],
            CHAT,
        ))
        .await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.header("x-compresh-session-id"), Some("hygiene"));
    let seen = gw.mock.last_request().unwrap();
    assert_eq!(seen.headers.get("x-custom-kept").unwrap(), "yes");
    assert_eq!(
        seen.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(
        seen.headers.get("authorization").unwrap(),
        &format!("Bearer {OPENAI_SECRET}")
    );
    assert_eq!(
        seen.headers.get("host").unwrap(),
        &gw.mock.addr().to_string()
    );
    for dropped in [
        "x-hop-custom",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-compresh-debug",
        "x-session-id",
        "cookie",
        "x-api-key",
    ] {
        assert!(
            seen.headers.get(dropped).is_none(),
            "{dropped} reached the provider"
        );
    }
    for value in seen.headers.get_all("connection") {
        assert!(!value.to_str().unwrap().to_ascii_lowercase().contains("hop"));
    }
    for (name, value) in &seen.headers {
        assert!(
            find(value.as_bytes(), b"comp_").is_none(),
            "a comp_ key reached the provider in {name}"
        );
    }
    // The connection stayed keep-alive.
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
}

/// Writes `bytes` on a new connection and returns the answer, if any, before the close.
async fn malformed(gw: &TestGateway, bytes: &[u8]) -> Option<Wire> {
    let mut conn = Conn::open(gw.addr()).await;
    conn.write(bytes).await;
    if conn.fill().await == 0 {
        return None;
    }
    let reply = conn.read_response().await;
    conn.assert_closed().await;
    Some(reply)
}

#[tokio::test]
async fn malformed_requests_get_400_or_a_close_never_a_hang() {
    let gw = TestGateway::start().await;
    let auth = format!("Bearer {}", gw.api_key);
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        (
            "header without a colon",
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_vec(),
        ),
        (
            "non-numeric content-length",
            request(
                "POST",
                "/v1/chat/completions",
                &[("authorization", &auth), ("content-length", "abc")],
                "",
            ),
        ),
        (
            "two different content-lengths",
            request(
                "POST",
                "/v1/chat/completions",
                &[("authorization", &auth), ("content-length", "3")],
                CHAT,
            ),
        ),
        (
            "a bad chunk size",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
                 transfer-encoding: chunked\r\n\r\nzz\r\n{CHAT}\r\n0\r\n\r\n"
            )
            .into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        // Today every one of them gets a 400 (hyper's with an empty body; a JSON
        // `body_read_failed` for the bad chunk), then the close.
        if let Some(reply) = malformed(&gw, &bytes).await {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}");
        }
    }
    assert!(gw.mock.requests().is_empty(), "nothing was forwarded");
    // The server still serves new connections.
    let mut conn = Conn::open(gw.addr()).await;
    let reply = conn.request(&request("GET", "/health", &[], "")).await;
    assert_status(&reply, StatusCode::OK);
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
}

#[tokio::test]
async fn each_request_of_a_keep_alive_connection_is_one_usage_row() {
    let gw = TestGateway::start_with(GatewayConfig {
        usage: UsageConfig {
            flush_interval: Duration::from_millis(50),
            ..UsageConfig::default()
        },
        ..GatewayConfig::default()
    })
    .await;
    let (key, key_id) = gw.create_key(None);
    let mut conn = Conn::open(gw.addr()).await;
    const N: u64 = 5;
    for i in 0..N {
        let body = if i % 2 == 0 { CHAT } else { CHAT_STREAM };
        let reply = conn.request(&chat(&key, &[], body)).await;
        assert_status(&reply, StatusCode::OK);
    }
    let filter = UsageFilter {
        key_id: Some(key_id.parse::<KeyId>().expect("key id")),
        ..UsageFilter::default()
    };
    // Summed over the days, should the test run across midnight (UTC).
    let totals = || {
        let rows = gw.data.store.usage_daily(&filter).expect("usage query");
        rows.iter().fold([0; 5], |sum, row| {
            [
                sum[0] + row.requests,
                sum[1] + row.input_tokens,
                sum[2] + row.output_tokens,
                sum[3] + row.errors,
                sum[4] + row.rate_limited,
            ]
        })
    };
    eventually("the usage rows are written", WAIT, || totals()[0] >= N).await;
    assert_eq!(totals(), [N, N * 12, N * 7, 0, 0]);
    let db = rusqlite::Connection::open(gw.data.store.path()).expect("open db");
    let events: Vec<(i64, i64, i64)> = db
        .prepare("SELECT status, input_tokens, output_tokens FROM usage_events WHERE key_id = ?1")
        .unwrap()
        .query_map([&key_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events, vec![(200, 12, 7); N as usize]);
}

#[tokio::test]
async fn content_length_beside_chunked_is_ignored_and_the_connection_closed() {
    let gw = TestGateway::start().await;
    let auth = format!("Bearer {}", gw.api_key);
    // Read by the content-length, the body would be 5 bytes and the rest a second request;
    // the chunked framing wins, and the pipelined request after it is never served.
    let mut bytes = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
         content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{CHAT}\r\n0\r\n\r\n",
        CHAT.len()
    )
    .into_bytes();
    bytes.extend(chat(&gw.api_key, &[("x-session-id", "smuggled")], CHAT));
    let reply = malformed(&gw, &bytes).await.expect("an answer");
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_ne!(reply.header("x-compresh-session-id"), Some("smuggled"));
    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 1, "the pipelined request was not served");
    assert_eq!(seen[0].body, CHAT, "the body by its chunks");
}

#[tokio::test]
async fn lenient_request_forms_are_served() {
    let gw = TestGateway::start().await;
    let auth = format!("Bearer {}", gw.api_key);
    let mut conn = Conn::open(gw.addr()).await;
    let len = CHAT.len();
    let cases = [
        (
            "no host header",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nauthorization: {auth}\r\n\
                 content-length: {len}\r\n\r\n{CHAT}"
            ),
            "/v1/chat/completions",
        ),
        (
            "absolute-form target",
            format!(
                "POST http://example.com/v1/chat/completions?x=1 HTTP/1.1\r\nhost: example.com\r\n\
                 authorization: {auth}\r\ncontent-length: {len}\r\n\r\n{CHAT}"
            ),
            "/v1/chat/completions?x=1",
        ),
        (
            "bare LF line ends",
            format!(
                "POST /v1/chat/completions HTTP/1.1\nhost: x\nauthorization: {auth}\n\
                 content-length: {len}\n\n{CHAT}"
            ),
            "/v1/chat/completions",
        ),
        (
            "a chunked body with a trailer",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
                 transfer-encoding: chunked\r\n\r\n{len:x}\r\n{CHAT}\r\n0\r\nx-t: 1\r\n\r\n"
            ),
            "/v1/chat/completions",
        ),
        (
            "a 64 KiB header value",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
                 x-big: {}\r\ncontent-length: {len}\r\n\r\n{CHAT}",
                "a".repeat(64 * 1024)
            ),
            "/v1/chat/completions",
        ),
        (
            "60 headers",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
                 {}content-length: {len}\r\n\r\n{CHAT}",
                (0..57)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>()
            ),
            "/v1/chat/completions",
        ),
    ];
    for (what, bytes, path) in cases {
        let reply = conn.request(bytes.as_bytes()).await;
        assert_status(&reply, StatusCode::OK);
        assert!(reply.header("connection").is_none(), "{what}: kept alive");
        let seen = gw.mock.last_request().unwrap();
        assert_eq!(seen.path_and_query, path, "{what}");
        assert_eq!(seen.body, CHAT, "{what}");
    }
    assert_eq!(gw.mock.requests().len(), 6);
}

#[tokio::test]
async fn too_many_headers_get_431_and_a_close() {
    let gw = TestGateway::start().await;
    let mut text = String::from("GET /health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..150 {
        text.push_str(&format!("x-h{i}: v\r\n"));
    }
    text.push_str("\r\n");
    let reply = malformed(&gw, text.as_bytes()).await.expect("an answer");
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(reply.body.is_empty());
}

/// The response timeout counts from each request, not from the connection's first one or its
/// previous request: a provider that always answers in 300 ms under a 500 ms timeout, on one
/// client connection that stays busy, then idle, for longer than the timeout.
#[tokio::test]
async fn the_response_timeout_runs_from_each_request() {
    let gw = TestGateway::start_with_forward(ForwardConfig {
        response_timeout: Duration::from_millis(500),
        ..ForwardConfig::default()
    })
    .await;
    let body = r#"{"id":"chatcmpl-slow","object":"chat.completion","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let upstream = RawUpstream::start(
        RawAnswer::Delayed(Duration::from_millis(300), answer.into_bytes()),
        usize::MAX,
    )
    .await;
    use_upstream(&gw, upstream.addr());
    let mut conn = Conn::open(gw.addr()).await;
    // Back to back: the third ends 900 ms after the first began.
    for _ in 0..3 {
        let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.body, body);
    }
    // Idle past the timeout, then one more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(upstream.requests().len(), 4);

    // A provider slower than the timeout still gets the gateway's 504.
    let silent = RawUpstream::start(RawAnswer::Never, usize::MAX).await;
    use_upstream(&gw, silent.addr());
    let reply = conn.request(&chat(&gw.api_key, &[], CHAT)).await;
    assert_error(
        &reply,
        StatusCode::GATEWAY_TIMEOUT,
        "proxy_error",
        "upstream_timeout",
    );
}
