//! Finds the `usage` object of a JSON answer as the answer streams past, without copying it.
//!
//! Copying every answer and parsing it whole at its end cost about a tenth of the gateway's CPU
//! (`benches/RESULTS.md`). [`UsageScanner`] instead runs a small state machine over each chunk
//! (string and nesting state only) and copies just the value of the top-level `usage` member and
//! of `message.usage` (Anthropic's `message_start` shape), a few dozen bytes. Those are parsed
//! at the end, in the order [`Tokens::observe`] applies them, so the counts are the same as
//! parsing the whole answer. Memory is bounded whatever the answer's size.

use super::tokens::Tokens;

/// Longest `usage` value kept; real ones are under 200 bytes. A longer one is not parsed.
const MAX_USAGE: usize = 4096;
/// Longest key remembered for comparison (`"message"` is the longest we look for).
const NAME: usize = 8;

/// Bytes of a string looked at one by one before searching the rest with `memchr2`.
const SHORT_STRING: usize = 16;
/// The bytes that change the scanner's state outside strings when nothing is pending.
const SIGNIFICANT: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

/// Which `usage` a captured value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// `message.usage`.
    Message,
    /// The top-level `usage`.
    Top,
}

/// The last string seen outside a value we care about, if it may be a key we want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    Usage,
    Message,
}

/// Incremental scanner over one JSON document; feed it with [`UsageScanner::push`].
#[derive(Debug)]
pub struct UsageScanner {
    /// Open objects and arrays.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The first bytes of the string being read; `name_len > NAME` means longer (or escaped).
    name: [u8; NAME],
    name_len: usize,
    /// The string before a `:` is the member's key.
    last: Key,
    /// A `"message":` member of the top-level object awaits its value.
    message_next: bool,
    /// Inside the top-level `message` object.
    in_message: bool,
    /// A wanted `"usage":` awaits its value.
    usage_next: Option<Slot>,
    /// The value being copied, and the depth its closing brace returns to.
    capture: Option<(Slot, u32, Vec<u8>)>,
    message: Option<Vec<u8>>,
    top: Option<Vec<u8>>,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self {
            depth: 0,
            in_string: false,
            escaped: false,
            name: [0; NAME],
            name_len: 0,
            last: Key::Other,
            message_next: false,
            in_message: false,
            usage_next: None,
            capture: None,
            message: None,
            top: None,
        }
    }
}

impl UsageScanner {
    /// Read the next chunk of the document.
    pub fn push(&mut self, mut chunk: &[u8]) {
        loop {
            if self.in_string && !self.escaped && self.capture.is_none() {
                // Most of an answer is string contents (the generated text): skip to the
                // next quote or backslash at SIMD speed instead of byte by byte. Keys and
                // short values end within a few bytes, found sooner by looking at those.
                let short = chunk.len().min(SHORT_STRING);
                let at = match chunk[..short].iter().position(|&b| b == b'"' || b == b'\\') {
                    Some(at) => Some(at),
                    None => memchr::memchr2(b'"', b'\\', &chunk[short..]).map(|at| at + short),
                };
                let Some(at) = at else {
                    self.string_run(chunk);
                    return;
                };
                self.string_run(&chunk[..at]);
                self.string_byte(chunk[at]);
                chunk = &chunk[at + 1..];
                continue;
            }
            if self.idle() {
                // Nothing pending: numbers, literals, commas, colons and whitespace change
                // no state here (see `structural_byte`), so skip to the next quote or bracket.
                let skip = chunk
                    .iter()
                    .position(|&b| SIGNIFICANT[usize::from(b)])
                    .unwrap_or(chunk.len());
                chunk = &chunk[skip..];
            }
            let Some((&byte, rest)) = chunk.split_first() else {
                return;
            };
            if let Some((_, _, copy)) = &mut self.capture {
                copy.push(byte);
            }
            if self.in_string {
                self.string_byte(byte);
            } else {
                self.structural_byte(byte);
            }
            chunk = rest;
        }
    }

    /// Apply what was found to `tokens`, as parsing the whole document would.
    pub fn finish(self, tokens: &mut Tokens) {
        for usage in [self.message, self.top].into_iter().flatten() {
            tokens.observe_usage(&usage);
        }
    }

    /// Outside strings, not copying, and not waiting for the value of a key we want.
    fn idle(&self) -> bool {
        !self.in_string
            && self.capture.is_none()
            && self.usage_next.is_none()
            && !self.message_next
            && self.last == Key::Other
    }

    /// String contents without quotes or backslashes.
    fn string_run(&mut self, run: &[u8]) {
        let end = self.name_len + run.len();
        if end <= NAME {
            self.name[self.name_len..end].copy_from_slice(run);
            self.name_len = end;
        } else {
            self.name_len = NAME + 1;
        }
    }

    fn string_byte(&mut self, byte: u8) {
        if self.escaped {
            self.escaped = false;
        } else if byte == b'\\' {
            self.escaped = true;
            // Escaped keys are never ones we look for in practice; treat them as other keys.
            self.name_len = NAME + 1;
        } else if byte == b'"' {
            self.in_string = false;
            let name = &self.name[..self.name_len.min(NAME)];
            self.last = match (self.name_len <= NAME, name) {
                (true, b"usage") => Key::Usage,
                (true, b"message") => Key::Message,
                _ => Key::Other,
            };
        } else if self.name_len < NAME {
            self.name[self.name_len] = byte;
            self.name_len += 1;
        } else {
            self.name_len = NAME + 1;
        }
    }

    fn structural_byte(&mut self, byte: u8) {
        match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'"' => {
                // A string: a key, or a value (which ends any wait for one).
                self.in_string = true;
                self.name_len = 0;
                self.usage_next = None;
                self.message_next = false;
            }
            b':' => {
                let key = std::mem::replace(&mut self.last, Key::Other);
                match key {
                    Key::Usage if self.depth == 1 => self.usage_next = Some(Slot::Top),
                    Key::Usage if self.depth == 2 && self.in_message => {
                        self.usage_next = Some(Slot::Message);
                    }
                    Key::Message if self.depth == 1 => self.message_next = true,
                    _ => {}
                }
            }
            b'{' | b'[' => {
                if byte == b'{' {
                    if let Some(slot) = self.usage_next {
                        if self.capture.is_none() {
                            self.capture = Some((slot, self.depth, vec![b'{']));
                        }
                    }
                    if self.message_next {
                        self.in_message = true;
                    }
                }
                self.usage_next = None;
                self.message_next = false;
                self.last = Key::Other;
                self.depth += 1;
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth <= 1 {
                    self.in_message = false;
                }
                self.last = Key::Other;
                let closes_capture = self
                    .capture
                    .as_ref()
                    .is_some_and(|(_, depth, _)| *depth == self.depth);
                if closes_capture {
                    if let Some((slot, _, copy)) = self.capture.take() {
                        match slot {
                            Slot::Message => self.message = Some(copy),
                            Slot::Top => self.top = Some(copy),
                        }
                    }
                }
            }
            _ => {
                // Numbers, literals, commas: end any wait for a value we want.
                self.usage_next = None;
                self.message_next = false;
                self.last = Key::Other;
            }
        }
        if self
            .capture
            .as_ref()
            .is_some_and(|(_, _, copy)| copy.len() > MAX_USAGE)
        {
            self.capture = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scanned(document: &[u8], chunk: usize) -> Tokens {
        let mut scanner = UsageScanner::default();
        for part in document.chunks(chunk.max(1)) {
            scanner.push(part);
        }
        let mut tokens = Tokens::default();
        scanner.finish(&mut tokens);
        tokens
    }

    fn parsed(document: &[u8]) -> Tokens {
        let mut tokens = Tokens::default();
        tokens.observe(document);
        tokens
    }

    #[test]
    fn finds_usage_of_openai_and_anthropic_answers_in_any_chunking() {
        let openai = br#"{"id":"x","choices":[{"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\":99} is text"}}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        let anthropic = br#"{"type":"message","content":[{"type":"text","text":"usage"}],"usage":{"input_tokens":10,"output_tokens":5}}"#;
        let start = br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":10,"output_tokens":1}}}"#;
        for chunk in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(
                scanned(openai, chunk),
                Tokens {
                    input: Some(12),
                    output: Some(7)
                }
            );
            assert_eq!(
                scanned(anthropic, chunk),
                Tokens {
                    input: Some(10),
                    output: Some(5)
                }
            );
            assert_eq!(
                scanned(start, chunk),
                Tokens {
                    input: Some(10),
                    output: Some(1)
                }
            );
        }
    }

    #[test]
    fn nested_or_non_object_usage_is_ignored() {
        for document in [
            &br#"{"choices":[{"usage":{"prompt_tokens":1}}]}"#[..],
            br#"{"meta":{"usage":{"prompt_tokens":1}}}"#,
            br#"{"usage":null}"#,
            br#"{"usage":"x"}"#,
            br#"{"a":"usage","b":{"prompt_tokens":1}}"#,
            br#"[{"usage":{"prompt_tokens":1}}]"#,
            br#"{"message":[{"usage":{"prompt_tokens":1}}]}"#,
        ] {
            assert_eq!(
                scanned(document, 3),
                Tokens::default(),
                "{}",
                String::from_utf8_lossy(document)
            );
        }
    }

    #[test]
    fn agrees_with_parsing_the_whole_answer_on_usage_then_message() {
        let both = br#"{"usage":{"output_tokens":9},"message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#;
        assert_eq!(scanned(both, 5), parsed(both));
        assert_eq!(
            scanned(both, 5),
            Tokens {
                input: Some(3),
                output: Some(9)
            }
        );
    }

    proptest! {
        /// Whatever the surrounding members, their order and the chunking, the scanner finds
        /// what a full parse finds.
        #[test]
        fn matches_a_full_parse(
            prefix in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,12}"), 0..4),
            input in proptest::option::of(0u64..100_000),
            output in proptest::option::of(0u64..100_000),
            nested in any::<bool>(),
            chunk in 1usize..40,
        ) {
            let mut document = serde_json::Map::new();
            for (key, text) in &prefix {
                if key != "usage" && key != "message" {
                    document.insert(key.clone(), serde_json::Value::String(text.clone()));
                }
            }
            let mut usage = serde_json::Map::new();
            if let Some(input) = input {
                usage.insert("prompt_tokens".into(), input.into());
            }
            if let Some(output) = output {
                usage.insert("completion_tokens".into(), output.into());
            }
            let usage = serde_json::Value::Object(usage);
            if nested {
                document.insert("message".into(), serde_json::json!({"usage": usage}));
            } else {
                document.insert("usage".into(), usage);
            }
            let text = serde_json::to_vec_pretty(&document).unwrap();
            prop_assert_eq!(scanned(&text, chunk), parsed(&text));
            prop_assert_eq!(scanned(&text, chunk), Tokens { input, output });
        }
    }
}
