//! Token counts as providers report them, and the request rewrite that makes OpenAI-style
//! streams report them.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::Finder;
use serde::Deserialize;

use super::json;
use super::scan::{find_quote, has_backslash, UsageScanner};

/// Tokens reported for one request; `None` when the provider did not say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt / input tokens.
    pub input: Option<u64>,
    /// Completion / output tokens.
    pub output: Option<u64>,
}

/// The counts of one `usage` object, as serde reads it: `None` when absent or `null`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct UsageProbe {
    // OpenAI names.
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    // Anthropic names.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Tokens {
    /// Take the counts from a JSON document (a whole answer or one event's data), if any:
    /// its top-level `usage`, after `message.usage` (Anthropic's `message_start`), as a full
    /// parse of a well-formed document finds them (see the `scan` module for the edge cases).
    /// Later reports win: Anthropic's `message_delta` carries the final output count.
    pub fn observe(&mut self, json: &[u8]) {
        // Most stream events carry no usage object (none, or `"usage":null` in every chunk of
        // a stream that asked for it); skip scanning them.
        if !may_hold_usage(json) {
            return;
        }
        let mut scanner = UsageScanner::default();
        scanner.push(json);
        // A truncated document does not parse.
        if scanner.complete() {
            scanner.finish(self);
        }
    }

    /// Apply one `usage` object's counts.
    pub(crate) fn apply(&mut self, usage: &UsageProbe) {
        if let Some(input) = usage.prompt_tokens.or(usage.input_tokens) {
            self.input = Some(input);
        }
        if let Some(output) = usage.completion_tokens.or(usage.output_tokens) {
            self.output = Some(output);
        }
    }
}

/// Read the value of a `usage` member as `serde_json` reads it into [`UsageProbe`]; `None`
/// where that fails.
///
/// Deserialising with serde cost more than scanning the whole answer; the common shape (keys
/// without escapes, counts as plain integers or `null`, other members skipped) is read here by
/// hand, anything else goes to serde so the result is the same.
pub(crate) fn parse_usage(json: &[u8]) -> Option<UsageProbe> {
    match parse_usage_plain(json) {
        Some(usage) => Some(usage),
        None => serde_json::from_slice(json).ok(),
    }
}

/// [`parse_usage`] for the plain shape, `None` for anything else (which may still be valid).
fn parse_usage_plain(json: &[u8]) -> Option<UsageProbe> {
    let mut usage = UsageProbe::default();
    let mut seen = [false; 4];
    let mut at = json::skip_ws(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    at = json::skip_ws(json, at + 1);
    if json.get(at) != Some(&b'}') {
        loop {
            if json.get(at) != Some(&b'"') {
                return None;
            }
            let key_end = at + 1 + find_quote(&json[at + 1..])?;
            if has_backslash(&json[at + 1..key_end]) {
                // An escaped key: serde decodes it.
                return None;
            }
            let field = match &json[at + 1..key_end] {
                b"prompt_tokens" => Some(0),
                b"completion_tokens" => Some(1),
                b"input_tokens" => Some(2),
                b"output_tokens" => Some(3),
                _ => None,
            };
            at = json::skip_ws(json, key_end + 1);
            if json.get(at) != Some(&b':') {
                return None;
            }
            at = json::skip_ws(json, at + 1);
            match field {
                Some(index) => {
                    if std::mem::replace(&mut seen[index], true) {
                        // Duplicate field: serde fails, and says so itself.
                        return None;
                    }
                    let (count, end) = plain_count(json, at)?;
                    match index {
                        0 => usage.prompt_tokens = count,
                        1 => usage.completion_tokens = count,
                        2 => usage.input_tokens = count,
                        _ => usage.output_tokens = count,
                    }
                    at = end;
                }
                None => at = json::skip_value(json, at)?,
            }
            at = json::skip_ws(json, at);
            match json.get(at)? {
                b',' => at = json::skip_ws(json, at + 1),
                b'}' => break,
                _ => return None,
            }
        }
    }
    (json::skip_ws(json, at + 1) == json.len()).then_some(usage)
}

/// A count at `at`: `null`, or an integer without sign, fraction, exponent or leading zero
/// that fits in a `u64`; with the offset after it.
fn plain_count(json: &[u8], at: usize) -> Option<(Option<u64>, usize)> {
    if json[at..].starts_with(b"null") {
        return ends_value(json, at + 4).then_some((None, at + 4));
    }
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && json[at] == b'0') {
        return None;
    }
    let mut count: u64 = 0;
    for &digit in &json[at..at + digits] {
        count = count
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    ends_value(json, at + digits).then_some((Some(count), at + digits))
}

/// Whether a number or literal may end before `at`.
fn ends_value(json: &[u8], at: usize) -> bool {
    json.get(at)
        .is_none_or(|b| matches!(b, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))
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
    if TRUE.find(body).is_none() {
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

/// Finders are built once: building one per search cost more than the search.
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static TRUE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"true"));

/// The offset of the first `"usage"` in `json`.
pub(crate) fn find_usage_key(json: &[u8]) -> Option<usize> {
    USAGE_KEY.find(json)
}

/// Whether `json` may hold a `usage` object: some `"usage"` is followed by `:` and `{`
/// (whitespace allowed between), the only way to write one with an unescaped key.
pub(crate) fn may_hold_usage(json: &[u8]) -> bool {
    USAGE_KEY.find_iter(json).any(|at| {
        let colon = json::skip_ws(json, at + b"\"usage\"".len());
        json.get(colon) == Some(&b':') && json.get(json::skip_ws(json, colon + 1)) == Some(&b'{')
    })
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
    fn only_usage_objects_are_worth_a_scan() {
        for (json, may) in [
            (r#"{"usage":{"prompt_tokens":1}}"#, true),
            (
                r#"{"usage" :
 {}}"#,
                true,
            ),
            (r#"{"a":"\"usage\"","usage":null,"b":{"usage":{}}}"#, true),
            (r#"{"usage":null}"#, false),
            (r#"{"a":"\"usage\":x","usage":null}"#, false),
            (r#"{"usage":"{"}"#, false),
            (r#"{"usage""#, false),
        ] {
            assert_eq!(may_hold_usage(json.as_bytes()), may, "{json}");
        }
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
