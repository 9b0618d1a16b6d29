//! Server-sent events, read incrementally: an observer that only looks, and a stripper that
//! removes what `include_usage` added to an OpenAI-style stream.
//!
//! Lines end in `\n` (a preceding `\r` is ignored), as OpenAI, Anthropic and the
//! OpenAI-compatible servers we know send them; bare-`\r` line ends are not recognised (the
//! observer then sees no usage, the stripper passes the bytes through unchanged at the end).

use bytes::{Bytes, BytesMut};

use super::json;
use super::tokens::Tokens;

/// Longest SSE line (or held-back event) kept while waiting for its end; a longer one is not
/// parsed (observer) or passed through untouched (stripper).
pub const MAX_LINE: usize = 1024 * 1024;

/// Reads `data:` lines as they stream past, keeping only the partial trailing line.
#[derive(Debug, Default)]
pub struct SseObserver {
    partial: Vec<u8>,
    /// The current line outgrew [`MAX_LINE`]; ignore it up to its end.
    skipping: bool,
}

impl SseObserver {
    /// Look at the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8], tokens: &mut Tokens) {
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(end);
            rest = &after[1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if self.partial.is_empty() {
                observe_line(line, tokens);
            } else {
                self.partial.extend_from_slice(line);
                observe_line(&self.partial, tokens);
                self.partial.clear();
            }
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            self.partial = Vec::new();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(rest);
        }
    }
}

fn observe_line(line: &[u8], tokens: &mut Tokens) {
    if let Some(data) = data_of(line) {
        tokens.observe(data);
    }
}

/// The payload of a `data:` line (without the one optional space), or `None`.
fn data_of(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    Some(data.strip_prefix(b" ").unwrap_or(data))
}

/// Removes from an OpenAI-style stream what `stream_options.include_usage` added: the final
/// usage-only chunk (`"choices":[]` with a `usage` object) and the top-level `"usage":null` of
/// every other chunk. Complete events go out as soon as they are complete; only the bytes of
/// an unfinished event are held back.
#[derive(Debug, Default)]
pub struct SseStripper {
    /// Bytes of the event not yet complete.
    pending: BytesMut,
    /// How far into `pending` lines have been looked at.
    scanned: usize,
    /// The held-back event outgrew [`MAX_LINE`]: pass bytes through untouched until the next
    /// event boundary.
    passthrough: bool,
}

impl SseStripper {
    /// Feed the next chunk; returns what the client gets now (possibly empty).
    pub fn push(&mut self, chunk: &[u8], tokens: &mut Tokens) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        let mut event_start = 0;
        while let Some(offset) = memchr::memchr(b'\n', &self.pending[self.scanned..]) {
            let line_start = self.scanned;
            let line_end = line_start + offset + 1;
            self.scanned = line_end;
            let line = &self.pending[line_start..line_end - 1];
            if line.is_empty() || line == b"\r" {
                let event = &self.pending[event_start..line_end];
                if out.capacity() == 0 {
                    // Stripping only removes bytes: one allocation fits all that goes out.
                    out.reserve(self.pending.len() - event_start);
                }
                if std::mem::take(&mut self.passthrough) {
                    out.extend_from_slice(event);
                } else {
                    strip_event(event, tokens, &mut out);
                }
                event_start = line_end;
            }
        }
        let _ = self.pending.split_to(event_start);
        self.scanned -= event_start;
        if self.pending.len() > MAX_LINE || (self.passthrough && !self.pending.is_empty()) {
            // Too big to hold back: let it through unchanged rather than buffer without bound.
            self.passthrough = true;
            out.extend_from_slice(&self.pending);
            self.pending.clear();
            self.scanned = 0;
        }
        out.freeze()
    }

    /// The stream ended: whatever is held back (an unterminated last event) goes out as is.
    pub fn finish(&mut self, tokens: &mut Tokens) -> Bytes {
        self.scanned = 0;
        let rest = self.pending.split().freeze();
        for line in rest.split(|b| *b == b'\n') {
            observe_line(line, tokens);
        }
        rest
    }
}

/// Append `event` to `out` without what include_usage added.
fn strip_event(event: &[u8], tokens: &mut Tokens, out: &mut BytesMut) {
    let event_start = out.len();
    // `event[..copied]` is in `out` already (or dropped from it).
    let mut copied = 0;
    let mut line_start = 0;
    while let Some(offset) = memchr::memchr(b'\n', &event[line_start..]) {
        let line_end = line_start + offset;
        let Some(data_start) = data_start(&event[line_start..line_end]).map(|at| line_start + at)
        else {
            line_start = line_end + 1;
            continue;
        };
        let data_end = line_end - usize::from(event[..line_end].ends_with(b"\r"));
        let data = &event[data_start..data_end];
        match strip_data(data, tokens) {
            Some(Strip::DropEvent) => {
                out.truncate(event_start);
                return;
            }
            Some(Strip::Remove(from, to)) => {
                out.extend_from_slice(&event[copied..data_start + from]);
                copied = data_start + to;
            }
            None => {}
        }
        line_start = line_end + 1;
    }
    out.extend_from_slice(&event[copied..]);
}

/// Where the payload of a `data:` line (without its line end) starts, or `None`.
fn data_start(line: &[u8]) -> Option<usize> {
    let data = line.strip_prefix(b"data:")?;
    Some(if data.starts_with(b" ") { 6 } else { 5 })
}

/// What to do with one event's data.
enum Strip {
    /// It is the usage-only chunk: leave the whole event out.
    DropEvent,
    /// Leave out `data[from..to]` (the `usage` member and its comma).
    Remove(usize, usize),
}

/// The member OpenAI-style servers put last when include_usage was asked.
const USAGE_NULL_LAST: &[u8] = b",\"usage\":null}";

/// Observe one event's data and decide what to strip from it.
fn strip_data(data: &[u8], tokens: &mut Tokens) -> Option<Strip> {
    // Without a `"usage"` there is nothing to count or strip.
    let first = super::tokens::find_usage_key(data)?;
    // Every chunk but the usage chunk ends in `,"usage":null}`. When that is the only
    // `"usage"`, it is the top-level member (the `}` that follows closes the document), so
    // it can be cut without listing the members, and there are no counts to observe.
    if data.len() >= USAGE_NULL_LAST.len()
        && first == data.len() - USAGE_NULL_LAST.len() + 1
        && data.ends_with(USAGE_NULL_LAST)
        && data.first() == Some(&b'{')
    {
        return Some(Strip::Remove(first - 1, data.len() - 1));
    }
    tokens.observe(data);
    let (_, found) = json::members(data)?;
    let usage = json::find(data, &found, "usage")?;
    let (from, to) = found[usage].value;
    if &data[from..to] == b"null" {
        let (from, to) = json::removal(&found, usage);
        return Some(Strip::Remove(from, to));
    }
    let choices = json::find(data, &found, "choices")?;
    let (from, to) = found[choices].value;
    let empty = data[from..to]
        .iter()
        .all(|b| matches!(b, b'[' | b']' | b' ' | b'\t' | b'\r' | b'\n'));
    (empty && data[from] == b'[').then_some(Strip::DropEvent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7}}\n\n",
        "data: [DONE]\n\n",
    );
    const WITHOUT_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    fn strip_in_pieces(input: &str, piece: usize) -> (String, Tokens) {
        let mut stripper = SseStripper::default();
        let mut tokens = Tokens::default();
        let mut out = Vec::new();
        for chunk in input.as_bytes().chunks(piece) {
            out.extend_from_slice(&stripper.push(chunk, &mut tokens));
        }
        out.extend_from_slice(&stripper.finish(&mut tokens));
        (String::from_utf8(out).unwrap(), tokens)
    }

    #[test]
    fn stripping_restores_the_stream_without_usage_at_any_split() {
        for piece in [1, 2, 3, 7, 16, 64, 10_000] {
            let (out, tokens) = strip_in_pieces(WITH_USAGE, piece);
            assert_eq!(out, WITHOUT_USAGE, "piece size {piece}");
            assert_eq!(
                tokens,
                Tokens {
                    input: Some(12),
                    output: Some(7)
                }
            );
        }
    }

    #[test]
    fn crlf_events_and_other_fields_are_kept() {
        let input = "event: x\r\ndata: {\"a\":1,\"usage\":null}\r\n\r\n: comment\n\n";
        let (out, _) = strip_in_pieces(input, 5);
        assert_eq!(out, "event: x\r\ndata: {\"a\":1}\r\n\r\n: comment\n\n");
    }

    #[test]
    fn complete_events_are_not_held_back() {
        let mut stripper = SseStripper::default();
        let mut tokens = Tokens::default();
        let first = stripper.push(b"data: {\"a\":1}\n\ndata: {\"b\"", &mut tokens);
        assert_eq!(&first[..], b"data: {\"a\":1}\n\n");
        let second = stripper.push(b":2}\n\n", &mut tokens);
        assert_eq!(&second[..], b"data: {\"b\":2}\n\n");
    }

    #[test]
    fn unterminated_tail_is_flushed_unchanged() {
        let (out, _) = strip_in_pieces("data: {\"a\":1,\"usage\":null}\n\ndata: [DONE]", 4);
        assert_eq!(out, "data: {\"a\":1}\n\ndata: [DONE]");
    }

    #[test]
    fn usage_with_choices_is_not_dropped() {
        let input = "data: {\"choices\":[{\"x\":1}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        assert_eq!(strip_in_pieces(input, 3).0, input);
    }

    #[test]
    fn observer_reads_usage_across_chunk_boundaries() {
        for piece in [1, 5, 1000] {
            let mut observer = SseObserver::default();
            let mut tokens = Tokens::default();
            for chunk in WITH_USAGE.as_bytes().chunks(piece) {
                observer.push(chunk, &mut tokens);
            }
            assert_eq!(
                tokens,
                Tokens {
                    input: Some(12),
                    output: Some(7)
                }
            );
        }
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\nevent: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\r\n\r\n";
        let mut observer = SseObserver::default();
        let mut tokens = Tokens::default();
        observer.push(anthropic.as_bytes(), &mut tokens);
        assert_eq!(
            tokens,
            Tokens {
                input: Some(10),
                output: Some(5)
            }
        );
    }

    proptest::proptest! {
        /// Any OpenAI-style stream that include_usage was added to, cut anywhere: the client
        /// gets the stream it would have got without, and the counts of the usage chunk.
        #[test]
        fn stripping_any_stream_gives_the_stream_without_usage(
            contents in proptest::collection::vec(
                "(usage|\"usage\":null}|,\"usage\":null}|[ -~]|\\\\|\n|\u{e9})*", 1..5),
            member_after in proptest::option::of("[a-z]{1,4}"),
            crlf in proptest::bool::ANY,
            counts in (0u64..100_000, 0u64..100_000),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..8),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let after = member_after
                .map(|key| format!(",\"{key}\":1"))
                .unwrap_or_default();
            let mut with = String::new();
            let mut without = String::new();
            for content in &contents {
                let choices = format!(
                    "{{\"id\":\"c\",\"choices\":[{{\"delta\":{{\"content\":{}}}}}]",
                    serde_json::to_string(content).unwrap()
                );
                with.push_str(&format!("data: {choices},\"usage\":null{after}}}{end}{end}"));
                without.push_str(&format!("data: {choices}{after}}}{end}{end}"));
            }
            with.push_str(&format!(
                "data: {{\"id\":\"c\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{}}}}}{end}{end}",
                counts.0, counts.1
            ));
            for stream in [&mut with, &mut without] {
                stream.push_str(&format!("data: [DONE]{end}{end}"));
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (with.len() + 1)).collect();
            cuts.sort_unstable();
            let mut stripper = SseStripper::default();
            let mut tokens = Tokens::default();
            let mut out = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([with.len()]) {
                out.extend_from_slice(&stripper.push(&with.as_bytes()[from..cut], &mut tokens));
                from = cut;
            }
            out.extend_from_slice(&stripper.finish(&mut tokens));
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), without);
            proptest::prop_assert_eq!(
                tokens,
                Tokens { input: Some(counts.0), output: Some(counts.1) }
            );
        }
    }

    #[test]
    fn oversized_lines_are_bounded() {
        let mut observer = SseObserver::default();
        let mut tokens = Tokens::default();
        observer.push(&vec![b'x'; MAX_LINE + 1], &mut tokens);
        assert!(observer.partial.capacity() <= MAX_LINE);
        observer.push(b"x\ndata: {\"usage\":{\"prompt_tokens\":3}}\n", &mut tokens);
        assert_eq!(tokens.input, Some(3));

        let mut stripper = SseStripper::default();
        let big = vec![b'y'; MAX_LINE + 1];
        let out = stripper.push(&big, &mut tokens);
        assert_eq!(out.len(), big.len(), "passed through, not held");
        let out = stripper.push(b"y\n\ndata: {\"usage\":null,\"a\":1}\n\n", &mut tokens);
        assert_eq!(&out[..], b"y\n\ndata: {\"a\":1}\n\n");
    }
}
