//! Default behaviour by route, used when no scripted response is queued.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;

/// Model reported by the OpenAI route when the request names none.
pub const OPENAI_DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Model reported by the Anthropic route when the request names none.
pub const ANTHROPIC_DEFAULT_MODEL: &str = "claude-3-5-haiku-latest";

/// `created` in every OpenAI object: fixed, so bodies are deterministic and can be precomputed.
const CREATED: u64 = 1_700_000_000;
const CHAT_ID: &str = "chatcmpl-mock";
const MESSAGE_ID: &str = "msg_mock";
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const X_RATELIMIT_LIMIT_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-requests");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Per-server state the routes need: precomputed bodies and the streaming settings.
pub(crate) struct Routes {
    stream_chunks: usize,
    stream_gap: Duration,
    /// Non-stream OpenAI body for [`OPENAI_DEFAULT_MODEL`].
    openai_default: Bytes,
    /// Non-stream Anthropic body for [`ANTHROPIC_DEFAULT_MODEL`].
    anthropic_default: Bytes,
    models: Bytes,
}

/// What a request body asked for.
struct Ask {
    model: Option<String>,
    stream: bool,
    include_usage: bool,
}

impl Routes {
    pub(crate) fn new(stream_chunks: usize, stream_gap: Duration) -> Routes {
        Routes {
            stream_chunks,
            stream_gap,
            openai_default: to_bytes(&openai_completion(OPENAI_DEFAULT_MODEL)),
            anthropic_default: to_bytes(&anthropic_message(ANTHROPIC_DEFAULT_MODEL)),
            models: to_bytes(&models_list()),
        }
    }

    /// The default response for `method path` with `body`; `request_id` goes in the id headers.
    pub(crate) fn respond(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
        request_id: u64,
    ) -> Response<MockBody> {
        let mut response = match path {
            "/v1/chat/completions" if method == Method::POST => self.openai(body),
            "/v1/messages" if method == Method::POST => self.anthropic(body),
            "/v1/models" if method == Method::GET => {
                json_response(StatusCode::OK, self.models.clone())
            }
            "/v1/chat/completions" | "/v1/messages" => {
                let mut r = openai_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("mock: {method} is not allowed on {path}; use POST"),
                    "method_not_allowed",
                );
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
                r
            }
            "/v1/models" => {
                let mut r = openai_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("mock: {method} is not allowed on {path}; use GET"),
                    "method_not_allowed",
                );
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET"));
                r
            }
            "/models" | "/chat/completions" | "/messages" => openai_error(
                StatusCode::NOT_FOUND,
                &format!("mock: no route for {method} {path}: the provider expects the /v1 prefix"),
                "unknown_url",
            ),
            _ => openai_error(
                StatusCode::NOT_FOUND,
                &format!("mock: no route for {method} {path}"),
                "unknown_url",
            ),
        };
        let id = format!("req_mock_{request_id}");
        if let Ok(value) = HeaderValue::from_str(&id) {
            let name = if path == "/v1/messages" {
                REQUEST_ID
            } else {
                X_REQUEST_ID
            };
            response.headers_mut().insert(name, value);
        }
        response
    }

    fn openai(&self, body: &[u8]) -> Response<MockBody> {
        let Some(ask) = parse(body) else {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "mock: the request body is not a JSON object",
                "invalid_json",
            );
        };
        let model = ask.model.as_deref().unwrap_or(OPENAI_DEFAULT_MODEL);
        let mut response = if ask.stream {
            let mut events: Vec<Bytes> = (0..self.stream_chunks)
                .map(|i| {
                    sse_data(&openai_chunk(
                        model,
                        i,
                        self.stream_chunks,
                        ask.include_usage,
                    ))
                })
                .collect();
            if ask.include_usage {
                events.push(sse_data(&openai_usage_chunk(model)));
            }
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            event_stream(MockBody::frames(events, self.stream_gap))
        } else if model == OPENAI_DEFAULT_MODEL {
            json_response(StatusCode::OK, self.openai_default.clone())
        } else {
            json_response(StatusCode::OK, to_bytes(&openai_completion(model)))
        };
        response.headers_mut().insert(
            X_RATELIMIT_LIMIT_REQUESTS,
            HeaderValue::from_static("10000"),
        );
        response
    }

    fn anthropic(&self, body: &[u8]) -> Response<MockBody> {
        let Some(ask) = parse(body) else {
            let error = json!({
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "mock: the request body is not a JSON object",
                },
            });
            return json_response(StatusCode::BAD_REQUEST, to_bytes(&error));
        };
        let model = ask.model.as_deref().unwrap_or(ANTHROPIC_DEFAULT_MODEL);
        if !ask.stream {
            let body = if model == ANTHROPIC_DEFAULT_MODEL {
                self.anthropic_default.clone()
            } else {
                to_bytes(&anthropic_message(model))
            };
            return json_response(StatusCode::OK, body);
        }
        let mut events = Vec::with_capacity(self.stream_chunks + 5);
        let start = json!({
            "type": "message_start",
            "message": {
                "id": MESSAGE_ID,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
        });
        events.push(sse_event("message_start", &start));
        let block_start = json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        });
        events.push(sse_event("content_block_start", &block_start));
        for i in 0..self.stream_chunks {
            let delta = json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": format!("tok{i} ")},
            });
            events.push(sse_event("content_block_delta", &delta));
        }
        let block_stop = json!({"type": "content_block_stop", "index": 0});
        events.push(sse_event("content_block_stop", &block_stop));
        let message_delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 5},
        });
        events.push(sse_event("message_delta", &message_delta));
        events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        event_stream(MockBody::frames(events, self.stream_gap))
    }
}

/// `None` when the body is not a JSON object.
fn parse(body: &[u8]) -> Option<Ask> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    Some(Ask {
        model: object
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
        stream: object
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        include_usage: value
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn sse_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

pub(crate) fn event_stream(body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, EVENT_STREAM);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn openai_error(status: StatusCode, message: &str, code: &str) -> Response<MockBody> {
    let body = json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": code,
        },
    });
    json_response(status, to_bytes(&body))
}

fn openai_completion(model: &str) -> Value {
    // Long enough that the whole body is about 1 KB, like a short real answer.
    let content = "This is a mock completion from the Compresh test provider. ".repeat(12);
    json!({
        "id": CHAT_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": content.trim_end(),
                "refusal": null,
                "annotations": [],
            },
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": openai_usage(),
        "service_tier": "default",
    })
}

fn openai_usage() -> Value {
    json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})
}

/// Chunk `i` of `n`: the first carries the role, the last the finish reason.
fn openai_chunk(model: &str, i: usize, n: usize, include_usage: bool) -> Value {
    let mut delta = json!({"content": format!("tok{i} ")});
    if i == 0 {
        delta["role"] = json!("assistant");
        delta["refusal"] = Value::Null;
    }
    let finish_reason = if i + 1 == n {
        json!("stop")
    } else {
        Value::Null
    };
    let mut chunk = json!({
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
    });
    if include_usage {
        chunk["usage"] = Value::Null;
    }
    chunk
}

fn openai_usage_chunk(model: &str) -> Value {
    json!({
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [],
        "usage": openai_usage(),
    })
}

fn anthropic_message(model: &str) -> Value {
    json!({
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "This is a mock message from the Compresh test provider."}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    })
}

fn models_list() -> Value {
    let model = |id: &str, owner: &str| json!({"id": id, "object": "model", "created": CREATED, "owned_by": owner});
    json!({
        "object": "list",
        "data": [
            model(OPENAI_DEFAULT_MODEL, "system"),
            model("gpt-4o", "system"),
            model(ANTHROPIC_DEFAULT_MODEL, "anthropic"),
        ],
    })
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_of(response: Response<MockBody>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    fn routes(chunks: usize) -> Routes {
        Routes::new(chunks, Duration::ZERO)
    }

    #[tokio::test]
    async fn precomputed_bodies_match_freshly_built_ones() {
        let routes = routes(3);
        let request = json!({"model": OPENAI_DEFAULT_MODEL}).to_string();
        let cached = routes.respond(&Method::POST, "/v1/chat/completions", request.as_bytes(), 1);
        assert_eq!(
            body_of(cached).await,
            to_bytes(&openai_completion(OPENAI_DEFAULT_MODEL))
        );
        // No model at all falls back to the default model too.
        let no_model = routes.respond(&Method::POST, "/v1/chat/completions", b"{}", 2);
        let body: Value = serde_json::from_slice(&body_of(no_model).await).unwrap();
        assert_eq!(body["model"], OPENAI_DEFAULT_MODEL);
        let anthropic = routes.respond(&Method::POST, "/v1/messages", b"{}", 3);
        assert_eq!(
            body_of(anthropic).await,
            to_bytes(&anthropic_message(ANTHROPIC_DEFAULT_MODEL))
        );
    }

    #[test]
    fn id_header_name_follows_the_provider() {
        let routes = routes(3);
        let openai = routes.respond(&Method::POST, "/v1/chat/completions", b"{}", 41);
        assert_eq!(openai.headers()["x-request-id"], "req_mock_41");
        let anthropic = routes.respond(&Method::POST, "/v1/messages", b"{}", 42);
        assert_eq!(anthropic.headers()["request-id"], "req_mock_42");
        assert!(anthropic
            .headers()
            .get("x-ratelimit-limit-requests")
            .is_none());
    }

    #[test]
    fn a_single_chunk_carries_role_and_finish_reason() {
        let chunk = openai_chunk("m", 0, 1, false);
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
        assert!(chunk.get("usage").is_none());
        assert_eq!(openai_chunk("m", 1, 3, true)["usage"], Value::Null);
    }

    #[tokio::test]
    async fn zero_chunks_still_terminate_the_stream() {
        let routes = routes(0);
        let request = br#"{"stream": true, "stream_options": {"include_usage": true}}"#;
        let response = routes.respond(&Method::POST, "/v1/chat/completions", request, 1);
        let text = body_of(response).await;
        let events: Vec<&str> = std::str::from_utf8(&text)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .collect();
        assert_eq!(events.len(), 2, "usage chunk and [DONE]: {events:?}");
        assert!(events[0].contains("\"usage\":{"));
        assert_eq!(events[1], "data: [DONE]");
    }

    #[test]
    fn stream_flag_must_be_a_boolean_true() {
        let ask = parse(br#"{"stream": "yes", "model": "m"}"#).unwrap();
        assert!(!ask.stream);
        assert_eq!(ask.model.as_deref(), Some("m"));
        assert!(parse(b"[1, 2]").is_none(), "not an object");
        assert!(parse(b"").is_none());
    }
}
