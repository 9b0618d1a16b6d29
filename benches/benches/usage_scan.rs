//! Cost of reading token counts from answers as they stream past (`compresh::usage`), with a
//! full `serde_json` parse of the same answer as the baseline in the same run (what the
//! gateway did before it scanned).
//!
//! - `answer`: one non-streaming chat completion (~1 KB): `Tokens::observe` on the whole
//!   answer, which is what `ObservedBody` does for a JSON answer (scan, then parse only the
//!   `usage` value). Two answers: the mock provider's (one long line of text) and one whose
//!   text has line breaks and quotes (escapes in the JSON string), like real answers.
//! - `stream`: an OpenAI-style stream of 10 chunks into which the gateway added
//!   `include_usage`, fed event by event to `SseStripper` (count, and strip what was added),
//!   and an Anthropic stream fed to `SseObserver`.
//!
//! Run: `cargo bench -p compresh-benches --bench usage_scan -- --warm-up-time 1
//! --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};

use compresh::usage::{SseObserver, SseStripper, Tokens};

/// A chat completion shaped like the mock provider's, with `content` as its text.
fn answer(content: &str) -> Vec<u8> {
    let content = serde_json::to_string(content).unwrap();
    format!(
        concat!(
            r#"{{"choices":[{{"finish_reason":"stop","index":0,"logprobs":null,"message":"#,
            r#"{{"annotations":[],"content":{},"refusal":null,"role":"assistant"}}}}],"#,
            r#""created":1700000000,"id":"chatcmpl-mock","model":"gpt-4o-mini","#,
            r#""object":"chat.completion","service_tier":"default","#,
            r#""system_fingerprint":"fp_mock","usage":{{"completion_tokens":7,"#,
            r#""prompt_tokens":12,"total_tokens":19}}}}"#
        ),
        content
    )
    .into_bytes()
}

/// An OpenAI-style stream of `chunks` content chunks with `"usage":null` in each, the usage
/// chunk and `[DONE]`, one event per element (as a provider flushes them).
fn openai_stream(chunks: usize) -> Vec<Vec<u8>> {
    let mut events: Vec<Vec<u8>> = (0..chunks)
        .map(|i| {
            format!(
                concat!(
                    r#"data: {{"choices":[{{"delta":{{"content":"tok{} "}},"finish_reason":null,"#,
                    r#""index":0,"logprobs":null}}],"created":1700000000,"id":"chatcmpl-mock","#,
                    r#""model":"gpt-4o-mini","object":"chat.completion.chunk","#,
                    r#""system_fingerprint":"fp_mock","usage":null}}"#,
                    "\n\n"
                ),
                i
            )
            .into_bytes()
        })
        .collect();
    events.push(
        concat!(
            r#"data: {"choices":[],"created":1700000000,"id":"chatcmpl-mock","#,
            r#""model":"gpt-4o-mini","object":"chat.completion.chunk","#,
            r#""usage":{"completion_tokens":7,"prompt_tokens":12,"total_tokens":19}}"#,
            "\n\n"
        )
        .as_bytes()
        .to_vec(),
    );
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

/// An Anthropic message stream of `deltas` text deltas.
fn anthropic_stream(deltas: usize) -> Vec<Vec<u8>> {
    let event = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n").into_bytes();
    let mut events = vec![event(
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
    )];
    for i in 0..deltas {
        events.push(event(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"tok{i} "}}}}"#
            ),
        ));
    }
    events.push(event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
    ));
    events.push(event("message_stop", r#"{"type":"message_stop"}"#));
    events
}

fn usage_scan(c: &mut Criterion) {
    let mock = answer(
        "This is a mock completion from the Compresh test provider. "
            .repeat(12)
            .trim_end(),
    );
    let lines: Vec<String> = (0..14)
        .map(|i| format!("Line {i} of the answer, with \"a quote\" now and then, and more words."))
        .collect();
    let text = answer(&lines.join("\n"));
    let openai = openai_stream(10);
    let anthropic = anthropic_stream(10);

    let mut group = c.benchmark_group("usage");
    group.throughput(Throughput::Elements(1));
    for (name, body) in [("mock answer", &mock), ("answer with line breaks", &text)] {
        group.bench_function(format!("baseline: serde_json parse of the {name}"), |b| {
            b.iter(|| {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(body)).is_ok())
            });
        });
        group.bench_function(format!("scan the {name}"), |b| {
            b.iter(|| {
                let mut tokens = Tokens::default();
                tokens.observe(black_box(body));
                black_box(tokens)
            });
        });
    }
    group.bench_function("strip an OpenAI stream of 10 chunks", |b| {
        b.iter(|| {
            let mut stripper = SseStripper::default();
            let mut tokens = Tokens::default();
            let mut sent = 0;
            for event in &openai {
                sent += stripper.push(black_box(event), &mut tokens).len();
            }
            sent += stripper.finish(&mut tokens).len();
            black_box((sent, tokens))
        });
    });
    group.bench_function("observe an Anthropic stream of 10 deltas", |b| {
        b.iter(|| {
            let mut observer = SseObserver::default();
            let mut tokens = Tokens::default();
            for event in &anthropic {
                observer.push(black_box(event), &mut tokens);
            }
            black_box(tokens)
        });
    });
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn`; a private module keeps it out of
// `missing_docs` without allowing the lint for the whole file.
mod group {
    criterion::criterion_group!(benches, super::usage_scan);
}
criterion_main!(group::benches);
