//! End-to-end tests of the mock over real sockets, with a plain hyper HTTP/1 client.

use std::time::Duration;

use bytes::Bytes;
use compresh_mock::{Gate, MockConfig, MockProvider, MockResponse};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Upper bound for things that should happen promptly; never reached when the code works.
const PATIENCE: Duration = Duration::from_secs(10);

/// One HTTP/1 connection to the mock.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    connection: JoinHandle<()>,
}

impl Client {
    async fn connect(mock: &MockProvider) -> Client {
        let tcp = TcpStream::connect(mock.addr()).await.unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Client { sender, connection }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        self.sender.ready().await.unwrap();
        self.sender.send_request(request).await.unwrap()
    }

    async fn post(&mut self, path: &str, body: Value) -> Response<Incoming> {
        self.send(request(Method::POST, path, body.to_string()))
            .await
    }

    async fn get(&mut self, path: &str) -> Response<Incoming> {
        self.send(request(Method::GET, path, String::new())).await
    }

    /// Drops the connection from the client side.
    fn close(self) {
        drop(self.sender);
        self.connection.abort();
    }
}

fn request(method: Method, path: &str, body: String) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mock.test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn body_bytes(response: Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

async fn next(body: &mut Incoming) -> Bytes {
    body.frame().await.unwrap().unwrap().into_data().unwrap()
}

async fn body_json(response: Response<Incoming>) -> Value {
    serde_json::from_slice(&body_bytes(response).await).unwrap()
}

fn header<'a>(response: &'a Response<Incoming>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

/// One parsed SSE event: the `event:` name (if any) and the raw `data:` payload.
#[derive(Debug)]
struct Event {
    name: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

fn parse_sse(text: &str) -> Vec<Event> {
    assert!(
        text.ends_with("\n\n"),
        "stream must end on an event boundary: {text:?}"
    );
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = Some(rest.to_owned());
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data = Some(rest.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            Event {
                name,
                data: data.expect("every event has data"),
            }
        })
        .collect()
}

async fn sse(response: Response<Incoming>) -> Vec<Event> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let bytes = body_bytes(response).await;
    parse_sse(std::str::from_utf8(&bytes).unwrap())
}

fn chat_request(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn base_urls_use_the_bound_port() {
    let mock = MockProvider::start().await;
    let port = mock.addr().port();
    assert_ne!(port, 0);
    assert!(mock.addr().ip().is_loopback());
    assert_eq!(mock.base_url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        mock.openai_base_url(),
        format!("http://127.0.0.1:{port}/v1")
    );
}

#[tokio::test]
async fn openai_json_completion_echoes_the_model_and_has_fixed_usage() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    for model in ["gpt-4o", compresh_mock::OPENAI_DEFAULT_MODEL] {
        let response = client
            .post("/v1/chat/completions", chat_request(model))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), "10000");
        assert!(header(&response, "x-request-id").starts_with("req_"));
        let bytes = body_bytes(response).await;
        assert!(
            (800..1500).contains(&bytes.len()),
            "about 1 KB, got {}",
            bytes.len()
        );
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], model);
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(body["created"].is_u64());
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert!(!body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty());
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})
        );
    }
}

#[tokio::test]
async fn request_ids_differ_between_requests() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    let first = client.post("/v1/chat/completions", chat_request("m")).await;
    let first_id = header(&first, "x-request-id").to_owned();
    let second = client.post("/v1/chat/completions", chat_request("m")).await;
    assert_ne!(first_id, header(&second, "x-request-id"));
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage_field() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    let mut body = chat_request("gpt-4o");
    body["stream"] = json!(true);
    let events = sse(client.post("/v1/chat/completions", body).await).await;
    assert_eq!(events.len(), 4, "3 chunks and [DONE]: {events:?}");
    assert_eq!(events[3].data, "[DONE]");
    let chunks: Vec<Value> = events[..3].iter().map(Event::json).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o");
        assert!(chunk.get("usage").is_none(), "no usage key: {chunk}");
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert!(
        events.iter().all(|e| e.name.is_none()),
        "OpenAI sends data-only events"
    );
}

#[tokio::test]
async fn openai_stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    let mut body = chat_request("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse(client.post("/v1/chat/completions", body).await).await;
    assert_eq!(events.len(), 5, "3 chunks, usage, [DONE]: {events:?}");
    assert_eq!(events[4].data, "[DONE]");
    for event in &events[..3] {
        let chunk = event.json();
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some(), "explicit null: {chunk}");
    }
    let usage = events[3].json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})
    );
}

#[tokio::test]
async fn stream_chunks_is_configurable() {
    let config = MockConfig {
        stream_chunks: 5,
        ..MockConfig::default()
    };
    let mock = MockProvider::start_with(config).await;
    let mut client = Client::connect(&mock).await;
    let events = sse(client
        .post(
            "/v1/chat/completions",
            json!({"model": "m", "stream": true}),
        )
        .await)
    .await;
    assert_eq!(events.len(), 6);
    let deltas = sse(client
        .post("/v1/messages", json!({"model": "c", "stream": true}))
        .await)
    .await
    .iter()
    .filter(|e| e.name.as_deref() == Some("content_block_delta"))
    .count();
    assert_eq!(deltas, 5);
}

#[tokio::test]
async fn anthropic_json_message() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    for model in ["claude-sonnet-4-5", compresh_mock::ANTHROPIC_DEFAULT_MODEL] {
        let response = client.post("/v1/messages", chat_request(model)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), "application/json");
        let body = body_json(response).await;
        assert_eq!(body["type"], "message");
        assert_eq!(body["role"], "assistant");
        assert_eq!(body["model"], model);
        assert_eq!(body["content"][0]["type"], "text");
        assert_eq!(
            body["usage"],
            json!({"input_tokens": 10, "output_tokens": 5})
        );
    }
}

#[tokio::test]
async fn anthropic_stream_has_the_anthropic_event_order() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    let mut body = chat_request("claude-sonnet-4-5");
    body["stream"] = json!(true);
    let events = sse(client.post("/v1/messages", body).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for event in &events {
        assert_eq!(event.json()["type"], event.name.as_deref().unwrap());
    }
    let start = events[0].json();
    assert_eq!(start["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(
        start["message"]["usage"],
        json!({"input_tokens": 10, "output_tokens": 1})
    );
    assert_eq!(events[2].json()["delta"]["type"], "text_delta");
    assert_eq!(events[6].json()["usage"], json!({"output_tokens": 5}));
    assert_eq!(events[6].json()["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn models_list_and_visible_path_mistakes() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;

    let models = client.get("/v1/models").await;
    assert_eq!(models.status(), StatusCode::OK);
    let models = body_json(models).await;
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));

    for (method, path) in [
        (Method::GET, "/models"),
        (Method::POST, "/chat/completions"),
        (Method::POST, "/messages"),
    ] {
        let response = client.send(request(method, path, "{}".into())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(header(&response, "content-type"), "application/json");
        let body = body_json(response).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(path) && message.contains("/v1"),
            "{message}"
        );
    }

    let other = client.get("/v2/whatever?x=1").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert!(body_json(other).await["error"]["message"].is_string());

    let wrong_method = client.get("/v1/chat/completions").await;
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&wrong_method, "allow"), "POST");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let response = client
            .send(request(Method::POST, path, "not json".into()))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            body_json(response).await["error"]["type"],
            "invalid_request_error"
        );
    }
}

#[tokio::test]
async fn fixed_responses_are_served_in_order_then_defaults_resume() {
    let mock = MockProvider::start().await;
    let raw = Bytes::from_static(b"{\"error\": {\"message\": \"slow down\"}}  \n");
    mock.enqueue(MockResponse::Fixed {
        status: 429,
        headers: vec![
            ("retry-after".into(), "7".into()),
            ("x-extra".into(), "a".into()),
            ("x-extra".into(), "b".into()),
        ],
        body: raw.clone(),
    });
    mock.enqueue(MockResponse::Fixed {
        status: 503,
        headers: vec![],
        body: Bytes::new(),
    });
    let mut client = Client::connect(&mock).await;

    let first = client.post("/v1/chat/completions", chat_request("m")).await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&first, "retry-after"), "7");
    let extras: Vec<_> = first.headers().get_all("x-extra").iter().collect();
    assert_eq!(extras, ["a", "b"]);
    assert_eq!(body_bytes(first).await, raw, "byte for byte");

    // Scripted responses apply to any path.
    let second = client.get("/nowhere").await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_bytes(second).await.is_empty());

    let third = client.post("/v1/chat/completions", chat_request("m")).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(body_json(third).await["object"], "chat.completion");
}

#[tokio::test]
async fn an_invalid_scripted_response_is_a_visible_500() {
    let mock = MockProvider::start().await;
    mock.enqueue(MockResponse::Fixed {
        status: 200,
        headers: vec![("bad header".into(), "v".into())],
        body: Bytes::new(),
    });
    mock.enqueue(MockResponse::Fixed {
        status: 1000,
        headers: vec![],
        body: Bytes::new(),
    });
    let mut client = Client::connect(&mock).await;
    let bad_header = client.get("/v1/models").await;
    assert_eq!(bad_header.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let message = body_json(bad_header).await["error"]["message"].to_string();
    assert!(message.contains("bad header"), "{message}");
    let bad_status = client.get("/v1/models").await;
    assert_eq!(bad_status.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_json(bad_status).await["error"]["message"]
        .to_string()
        .contains("1000"));
}

#[tokio::test]
async fn chunked_responses_are_sent_chunked_frame_by_frame() {
    let mock = MockProvider::start().await;
    mock.enqueue(MockResponse::Chunked {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        chunks: vec![Bytes::from("{\"a\":"), Bytes::from("1}")],
    });
    let mut client = Client::connect(&mock).await;
    let response = client.get("/v1/models").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "transfer-encoding"), "chunked");
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(header(&response, "content-type"), "application/json");
    let mut body = response.into_body();
    assert_eq!(next(&mut body).await, "{\"a\":");
    assert_eq!(next(&mut body).await, "1}");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn close_connections_serves_one_request_per_connection() {
    let mock = MockProvider::start().await;
    mock.set_close_connections(true);
    for round in 1..=2 {
        let mut client = Client::connect(&mock).await;
        let response = client.post("/v1/chat/completions", chat_request("m")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "connection"), "close");
        assert_eq!(body_json(response).await["object"], "chat.completion");
        let ended = tokio::time::timeout(PATIENCE, client.connection).await;
        assert!(ended.is_ok(), "the mock closed the connection");
        assert_eq!(mock.connections_accepted(), round);
    }
    assert!(mock.wait_connections_open(0, PATIENCE).await);

    // Switched off, new connections are kept alive again.
    mock.set_close_connections(false);
    let mut client = Client::connect(&mock).await;
    for _ in 0..2 {
        let response = client.get("/v1/models").await;
        assert!(response.headers().get("connection").is_none());
        let _ = body_bytes(response).await;
    }
    assert_eq!(mock.connections_accepted(), 3);
}

#[tokio::test]
async fn silent_records_the_request_but_never_answers() {
    let mock = MockProvider::start().await;
    mock.enqueue(MockResponse::Silent);
    let mut client = Client::connect(&mock).await;
    client.sender.ready().await.unwrap();
    let pending = client.sender.send_request(request(
        Method::POST,
        "/v1/chat/completions",
        chat_request("m").to_string(),
    ));
    // A short wait is enough to show "no headers yet"; a broken Silent answers at once.
    let outcome = tokio::time::timeout(Duration::from_millis(200), pending).await;
    assert!(outcome.is_err(), "no response headers may arrive");
    let recorded = mock
        .last_request()
        .expect("the request was read and recorded");
    assert_eq!(recorded.path_and_query, "/v1/chat/completions");
    assert_eq!(mock.connections_open(), 1);

    client.close();
    assert!(
        mock.wait_connections_open(0, PATIENCE).await,
        "the server notices the client gave up"
    );
}

#[tokio::test]
async fn gated_stream_sends_one_chunk_per_release_and_reports_the_end() {
    let mock = MockProvider::start().await;
    let gate = Gate::new();
    let chunks: [Bytes; 3] = ["data: one\n\n", "data: two\n\n", "data: three\n\n"].map(Bytes::from);
    mock.enqueue(MockResponse::GatedStream {
        chunks: chunks.to_vec(),
        gate: gate.clone(),
    });
    let mut client = Client::connect(&mock).await;
    let response = client
        .post("/v1/chat/completions", json!({"stream": true}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let mut body = response.into_body();

    assert_eq!(
        next(&mut body).await,
        chunks[0],
        "first chunk needs no release"
    );
    assert_eq!(gate.chunks_sent(), 1);
    let early = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
    assert!(early.is_err(), "second chunk must wait for release");
    assert_eq!(gate.chunks_sent(), 1);
    assert!(!gate.is_closed());

    gate.release();
    assert_eq!(next(&mut body).await, chunks[1]);
    assert_eq!(gate.chunks_sent(), 2);
    gate.release();
    assert_eq!(next(&mut body).await, chunks[2]);
    assert!(
        body.frame().await.is_none(),
        "body ends after the last chunk"
    );
    assert_eq!(gate.chunks_sent(), 3);
    assert!(
        gate.wait_closed(PATIENCE).await,
        "finished body is released"
    );
}

#[tokio::test]
async fn gated_stream_notices_when_the_client_goes_away() {
    let mock = MockProvider::start().await;
    let gate = Gate::new();
    mock.enqueue(MockResponse::GatedStream {
        chunks: vec![
            Bytes::from_static(b"data: a\n\n"),
            Bytes::from_static(b"data: b\n\n"),
        ],
        gate: gate.clone(),
    });
    let mut client = Client::connect(&mock).await;
    let response = client.post("/v1/chat/completions", json!({})).await;
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "data: a\n\n");
    assert!(!gate.is_closed());

    drop(body);
    client.close();
    assert!(
        gate.wait_closed(PATIENCE).await,
        "closure detected while gated"
    );
    assert!(gate.is_closed());
    assert_eq!(gate.chunks_sent(), 1, "nothing after the client left");
    // A late release must not resurrect anything.
    gate.release();
    assert!(mock.wait_connections_open(0, PATIENCE).await);
    assert_eq!(gate.chunks_sent(), 1);
}

#[tokio::test]
async fn releases_given_before_the_request_are_kept() {
    let mock = MockProvider::start().await;
    let gate = Gate::new();
    gate.release();
    mock.enqueue(MockResponse::GatedStream {
        chunks: vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")],
        gate: gate.clone(),
    });
    let mut client = Client::connect(&mock).await;
    let response = client.post("/v1/messages", json!({})).await;
    assert_eq!(body_bytes(response).await, "xy");
    assert_eq!(gate.chunks_sent(), 2);
}

#[tokio::test]
async fn requests_are_recorded_in_order_with_headers_and_body() {
    let mock = MockProvider::start().await;
    assert!(mock.last_request().is_none());
    let mut client = Client::connect(&mock).await;
    let mut first = request(Method::POST, "/v1/messages?beta=true", "{\"a\":1}".into());
    first
        .headers_mut()
        .insert("x-api-key", "sk-ant-test".parse().unwrap());
    let _ = body_bytes(client.send(first).await).await;
    let _ = body_bytes(client.get("/v1/models").await).await;

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, Method::POST);
    assert_eq!(requests[0].path_and_query, "/v1/messages?beta=true");
    assert_eq!(requests[0].headers["x-api-key"], "sk-ant-test");
    assert_eq!(requests[0].headers["host"], "mock.test");
    assert_eq!(requests[0].body, "{\"a\":1}");
    assert_eq!(requests[1].method, Method::GET);
    assert_eq!(requests[1].path_and_query, "/v1/models");
    assert!(requests[1].body.is_empty());
    assert_eq!(mock.last_request().unwrap().path_and_query, "/v1/models");

    mock.clear_requests();
    assert!(mock.requests().is_empty());
    mock.set_recording(false);
    let _ = body_bytes(client.get("/v1/models").await).await;
    assert!(mock.requests().is_empty(), "recording off");
}

#[tokio::test]
async fn keep_alive_requests_share_one_accepted_connection() {
    let mock = MockProvider::start().await;
    assert_eq!(mock.connections_accepted(), 0);
    assert_eq!(mock.connections_open(), 0);

    let mut first = Client::connect(&mock).await;
    for _ in 0..2 {
        let response = first.post("/v1/chat/completions", chat_request("m")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let _ = body_bytes(response).await;
    }
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(mock.connections_accepted(), 1);
    assert!(mock.wait_connections_open(1, PATIENCE).await);

    let mut second = Client::connect(&mock).await;
    let _ = body_bytes(second.get("/v1/models").await).await;
    assert_eq!(mock.connections_accepted(), 2);
    assert!(mock.wait_connections_open(2, PATIENCE).await);

    first.close();
    assert!(mock.wait_connections_open(1, PATIENCE).await);
    second.close();
    assert!(mock.wait_connections_open(0, PATIENCE).await);
    assert_eq!(
        mock.connections_accepted(),
        2,
        "closing does not change accepted"
    );
}

#[tokio::test]
async fn wait_connections_open_reports_a_timeout() {
    let mock = MockProvider::start().await;
    assert!(
        !mock
            .wait_connections_open(1, Duration::from_millis(20))
            .await
    );
    assert!(
        mock.wait_connections_open(0, Duration::from_millis(20))
            .await
    );
}

#[tokio::test]
async fn dropping_the_mock_closes_its_connections() {
    let mock = MockProvider::start().await;
    let mut client = Client::connect(&mock).await;
    let _ = body_bytes(client.get("/v1/models").await).await;
    drop(mock);
    let ended = tokio::time::timeout(PATIENCE, client.connection).await;
    assert!(ended.is_ok(), "the server closed the kept-alive connection");
}
