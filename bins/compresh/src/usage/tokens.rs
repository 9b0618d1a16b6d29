//! Token counts as providers report them, and the request rewrite that makes OpenAI-style
//! streams report them.

use bytes::Bytes;
use serde::Deserialize;

use super::json;

/// Tokens reported for one request; `None` when the provider did not say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt / input tokens.
    pub input: Option<u64>,
    /// Completion / output tokens.
    pub output: Option<u64>,
}

#[derive(Deserialize)]
struct UsageProbe {
    // OpenAI names.
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    // Anthropic names.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct MessageProbe {
    #[serde(default)]
    usage: Option<UsageProbe>,
}

/// What a JSON answer or one SSE event may carry: a top-level `usage` (OpenAI answers and
/// usage chunks, Anthropic answers and `message_delta`) or `message.usage` (Anthropic
/// `message_start`).
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    usage: Option<UsageProbe>,
    #[serde(default)]
    message: Option<MessageProbe>,
}

impl Tokens {
    /// Take the counts from a JSON document (a whole answer or one event's data), if any.
    /// Later reports win: Anthropic's `message_delta` carries the final output count.
    pub fn observe(&mut self, json: &[u8]) {
        // Most stream events carry no usage at all; skip parsing them.
        if !contains(json, b"\"usage\"") {
            return;
        }
        let Ok(probe) = serde_json::from_slice::<Probe>(json) else {
            return;
        };
        for usage in [probe.message.and_then(|m| m.usage), probe.usage]
            .into_iter()
            .flatten()
        {
            self.apply(&usage);
        }
    }
}

impl Tokens {
    /// Take the counts from the value of a `usage` member (an object), as [`Tokens::observe`]
    /// does for a document that contains it.
    pub(crate) fn observe_usage(&mut self, usage: &[u8]) {
        if let Ok(usage) = serde_json::from_slice::<UsageProbe>(usage) {
            self.apply(&usage);
        }
    }

    fn apply(&mut self, usage: &UsageProbe) {
        if let Some(input) = usage.prompt_tokens.or(usage.input_tokens) {
            self.input = Some(input);
        }
        if let Some(output) = usage.completion_tokens.or(usage.output_tokens) {
            self.output = Some(output);
        }
    }
}

/// What the gateway does to an OpenAI-style chat completion request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPlan {
    /// Not a stream (or not one we can rewrite): forward as is, observe the answer.
    Unchanged,
    /// A stream whose client asked for usage itself: forward and relay unchanged.
    ClientAsked,
    /// A stream into which `stream_options.include_usage` was added: forward this body and
    /// strip what that adds from the client's stream.
    Injected(Bytes),
}

/// Decide whether `body` (a chat completion request already known to be a JSON object) is a
/// stream that should be asked for usage, and rewrite it if so. Only the `stream_options`
/// member changes; every other byte of the request is kept.
pub fn plan_stream(body: &[u8]) -> StreamPlan {
    // A stream needs the literal `"stream": true`; most requests are not streams, and this
    // search is far cheaper than listing the members.
    if !contains(body, b"true") {
        return StreamPlan::Unchanged;
    }
    let Some((open, found)) = json::members(body) else {
        return StreamPlan::Unchanged;
    };
    let is_stream = json::find(body, &found, "stream")
        .is_some_and(|i| &body[found[i].value.0..found[i].value.1] == b"true");
    if !is_stream {
        return StreamPlan::Unchanged;
    }
    const ASK: &[u8] = br#"{"include_usage":true}"#;
    let Some(index) = json::find(body, &found, "stream_options") else {
        let mut member = br#""stream_options":"#.to_vec();
        member.extend_from_slice(ASK);
        // `stream` is a member, so the object is not empty and a comma must follow.
        member.push(b',');
        return StreamPlan::Injected(json::splice(body, open + 1, open + 1, &member));
    };
    let (from, to) = found[index].value;
    let value = &body[from..to];
    if value == b"null" {
        return StreamPlan::Injected(json::splice(body, from, to, ASK));
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value) {
        Ok(options) if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) => {
            StreamPlan::ClientAsked
        }
        Ok(mut options) => {
            options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
            let Ok(rewritten) = serde_json::to_vec(&options) else {
                return StreamPlan::Unchanged;
            };
            StreamPlan::Injected(json::splice(body, from, to, &rewritten))
        }
        // Not an object: the provider will reject it; do not touch it.
        Err(_) => StreamPlan::Unchanged,
    }
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(documents: &[&str]) -> Tokens {
        let mut tokens = Tokens::default();
        for document in documents {
            tokens.observe(document.as_bytes());
        }
        tokens
    }

    #[test]
    fn openai_and_anthropic_shapes() {
        let openai = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        assert_eq!(
            tokens(&[openai]),
            Tokens {
                input: Some(12),
                output: Some(7)
            }
        );
        let anthropic = r#"{"type":"message","usage":{"input_tokens":10,"output_tokens":5}}"#;
        assert_eq!(
            tokens(&[anthropic]),
            Tokens {
                input: Some(10),
                output: Some(5)
            }
        );
        let start =
            r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}"#;
        let delta = r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":5}}"#;
        assert_eq!(
            tokens(&[start, delta]),
            Tokens {
                input: Some(10),
                output: Some(5)
            }
        );
    }

    #[test]
    fn documents_without_usage_change_nothing() {
        let counted = r#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let after = [
            counted,
            r#"{"usage":null}"#,
            "[DONE]",
            "not json",
            r#"{"usage":"x"}"#,
        ];
        assert_eq!(
            tokens(&after),
            Tokens {
                input: Some(1),
                output: Some(2)
            }
        );
        assert_eq!(
            tokens(&[r#"{"choices":[{"delta":{}}]}"#]),
            Tokens::default()
        );
    }

    #[test]
    fn stream_requests_get_include_usage() {
        let injected = |body: &str| match plan_stream(body.as_bytes()) {
            StreamPlan::Injected(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            injected(r#"{"model":"m","stream":true}"#),
            r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#
        );
        assert_eq!(
            injected(r#"{"stream":true,"stream_options":null}"#),
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            injected(r#"{"stream":true,"stream_options":{"include_usage":false},"n":1}"#),
            r#"{"stream":true,"stream_options":{"include_usage":true},"n":1}"#
        );
        let asked = r#"{"stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(plan_stream(asked.as_bytes()), StreamPlan::ClientAsked);
        for unchanged in [
            r#"{"stream":false}"#,
            r#"{"model":"m"}"#,
            r#"{"stream":true,"stream_options":3}"#,
        ] {
            assert_eq!(
                plan_stream(unchanged.as_bytes()),
                StreamPlan::Unchanged,
                "{unchanged}"
            );
        }
    }

    #[test]
    fn injected_requests_stay_valid_json() {
        for body in [
            r#" { "stream" : true } "#,
            r#"{"stream":true,"messages":[{"role":"user","content":"{\"stream\":1}"}]}"#,
        ] {
            let StreamPlan::Injected(bytes) = plan_stream(body.as_bytes()) else {
                panic!("{body}");
            };
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(value["stream_options"]["include_usage"], true);
            assert_eq!(value["stream"], true);
        }
    }
}
