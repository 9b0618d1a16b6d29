//! Finds the `usage` object of a JSON answer as the answer streams past, without copying it.
//!
//! Copying every answer and parsing it whole at its end cost about a tenth of the gateway's CPU
//! (`benches/RESULTS.md`). [`UsageScanner`] instead runs over each chunk once and looks only at
//! what decides where a top-level member starts:
//!
//! - Outside strings it jumps from one `"`, `{` or `}` to the next (numbers, literals, commas,
//!   colons, whitespace and arrays change nothing there), looking at the next two bytes first
//!   (most separators are `":"` or `","`), then eight bytes at a time with word arithmetic.
//! - Inside strings it jumps from quote to quote — a word at a time, `memchr` (SIMD) past the
//!   first 32 bytes, the generated text — and counts the backslashes before a quote to see
//!   whether it is escaped. Stopping at every backslash instead cost a fifth more on answers
//!   with line breaks (`\n`), a tenth less on answers without any.
//! - Only strings that can be a key we want (members of the top-level object and of its
//!   `message` object) are compared, and only the value of the top-level `usage` and of
//!   `message.usage` (Anthropic's `message_start` shape) is parsed — in place when it lies
//!   within one chunk, as it almost always does, otherwise from a bounded copy.
//!
//! The cost is per token more than per byte: about 4,600 instructions for the mock provider's
//! 1 KB answer (27 strings), where stepping through every byte cost twice that and parsing the
//! `usage` value with serde another 1,600. The counts are applied in the order
//! [`Tokens::observe`] used to, so they are those of a full parse of a well-formed answer,
//! including its failures: a duplicate `usage`/`message` key or a `usage` that is neither an
//! object nor `null` makes the whole parse fail and yields nothing.
//!
//! Not emulated (a full parse would differ only on these): keys written with escapes
//! (`"usag\u0065"`), top-level arrays, and malformed JSON outside the `usage` value.

use super::tokens::{parse_usage, Tokens, UsageProbe};

/// Longest `usage` value parsed; real ones are under 300 bytes. A longer one is ignored (and
/// never buffered beyond this when it spans chunks).
const MAX_USAGE: usize = 4096;
/// Longest key remembered across a chunk boundary (`"message"` is the longest we look for).
const NAME: usize = 8;
/// Bytes of a string searched a word at a time before searching the rest with `memchr`: keys
/// and short values end sooner than that search's set-up costs.
const SHORT_STRING: usize = 32;

/// Outside strings: the bytes that can change the scanner's state when nothing is pending.
const OUTSIDE: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table
};
/// A key we look for, by where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// `usage` of the top-level object.
    Top,
    /// `message` of the top-level object.
    Message,
    /// `usage` of the top-level `message` object.
    MessageUsage,
}

impl Want {
    fn bit(self) -> u8 {
        match self {
            Want::Top => 1,
            Want::Message => 2,
            Want::MessageUsage => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the document's first byte.
    Start,
    /// Outside strings, nothing pending.
    Idle,
    /// In a string that cannot be a key we want; `escaped`: the next byte is escaped.
    Skip { escaped: bool },
    /// In a string that may be a key we want (its start is in `name` when it began in an
    /// earlier chunk).
    Name { escaped: bool },
    /// A key we want was read; a `:` makes it a key.
    Colon(Want),
    /// After the `:` of a key we want; its value follows.
    Value(Want),
    /// The document ended, or it is not an object: nothing more to find.
    Done,
}

/// The `usage` value being read across chunks.
#[derive(Debug)]
struct Capture {
    want: Want,
    /// The depth its closing brace returns to.
    depth: u32,
    /// Its bytes from earlier chunks.
    copy: Vec<u8>,
    /// Longer than [`MAX_USAGE`]: find its end, ignore it.
    oversized: bool,
}

/// Incremental scanner over one JSON document; feed it with [`UsageScanner::push`].
#[derive(Debug)]
pub struct UsageScanner {
    state: State,
    /// Open objects (arrays are not counted: no key we want can be directly inside one).
    depth: u32,
    /// Inside the top-level `message` object.
    in_message: bool,
    /// The start of a possible key that began in an earlier chunk; `name_len > NAME` means
    /// longer (or escaped), so not a key we want.
    name: [u8; NAME],
    name_len: usize,
    capture: Option<Capture>,
    /// [`Want::bit`]s of the keys seen: a second one fails a full parse.
    seen: u8,
    /// A full parse would fail: nothing is applied.
    failed: bool,
    message: Option<UsageProbe>,
    top: Option<UsageProbe>,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self {
            state: State::Start,
            depth: 0,
            in_message: false,
            name: [0; NAME],
            name_len: 0,
            capture: None,
            seen: 0,
            failed: false,
            message: None,
            top: None,
        }
    }
}

impl UsageScanner {
    /// Read the next chunk of the document.
    pub fn push(&mut self, chunk: &[u8]) {
        let mut at = 0;
        // Where this chunk's part of a possible key, and of the captured value, starts.
        let mut name_from = 0;
        let mut copy_from = 0;
        while at < chunk.len() {
            match self.state {
                State::Idle => {
                    // The hot loop: from one `"`, `{` or `}` to the next, through whole strings.
                    while let Some(skip) = next_outside(chunk, at) {
                        at += skip + 1;
                        match chunk[at - 1] {
                            b'"' => {
                                let wanted =
                                    self.depth == 1 || (self.depth == 2 && self.in_message);
                                let start = at;
                                match skip_string(chunk, &mut at) {
                                    Ok(()) => {
                                        if wanted {
                                            self.name_len = 0;
                                            if let Some(want) = self.key(&chunk[start..at - 1]) {
                                                self.state = State::Colon(want);
                                                break;
                                            }
                                        }
                                    }
                                    Err(escaped) => {
                                        // The string goes on in the next chunk.
                                        self.state = if wanted {
                                            name_from = start;
                                            self.name_len = 0;
                                            State::Name { escaped }
                                        } else {
                                            State::Skip { escaped }
                                        };
                                        break;
                                    }
                                }
                            }
                            b'{' => self.depth += 1,
                            _ => {
                                self.close(&chunk[copy_from..at]);
                                if self.state == State::Done {
                                    return;
                                }
                            }
                        }
                    }
                    if self.state == State::Idle {
                        at = chunk.len();
                    }
                }
                State::Skip { escaped } | State::Name { escaped } => {
                    let name = matches!(self.state, State::Name { .. });
                    if escaped {
                        // The escaped byte itself, whatever it is (a key we want has none).
                        at += 1;
                        self.name_len = NAME + 1;
                    }
                    match skip_string(chunk, &mut at) {
                        Ok(()) => {
                            self.state = State::Idle;
                            if name {
                                if let Some(want) = self.key(&chunk[name_from..at - 1]) {
                                    self.state = State::Colon(want);
                                }
                            }
                        }
                        Err(escaped) => {
                            self.state = if name {
                                State::Name { escaped }
                            } else {
                                State::Skip { escaped }
                            };
                        }
                    }
                }
                State::Colon(want) => match chunk[at] {
                    b' ' | b'\t' | b'\r' | b'\n' => at += 1,
                    b':' => {
                        at += 1;
                        if self.seen & want.bit() != 0 {
                            // A duplicate field fails the whole parse.
                            self.failed = true;
                        }
                        self.seen |= want.bit();
                        self.state = State::Value(want);
                    }
                    // A string value, not a key: look at this byte again.
                    _ => self.state = State::Idle,
                },
                State::Value(want) => match chunk[at] {
                    b' ' | b'\t' | b'\r' | b'\n' => at += 1,
                    b'{' => {
                        at += 1;
                        self.depth += 1;
                        if want == Want::Message {
                            self.in_message = true;
                        } else {
                            copy_from = at - 1;
                            self.capture = Some(Capture {
                                want,
                                depth: self.depth - 1,
                                copy: Vec::new(),
                                oversized: false,
                            });
                        }
                        self.state = State::Idle;
                    }
                    // `null` is a valid absent value; `n` changes nothing when idle.
                    b'n' => self.state = State::Idle,
                    _ => {
                        // A string, number, boolean or array where a full parse wants an
                        // object: it fails.
                        self.failed = true;
                        self.state = State::Idle;
                    }
                },
                State::Start => match chunk[at] {
                    b' ' | b'\t' | b'\r' | b'\n' => at += 1,
                    b'{' => {
                        at += 1;
                        self.depth = 1;
                        self.state = State::Idle;
                    }
                    _ => {
                        // Not an object: a full parse into the usage shape fails.
                        self.failed = true;
                        self.state = State::Done;
                    }
                },
                State::Done => return,
            }
        }
        if let State::Name { .. } = self.state {
            self.carry_name(&chunk[name_from.min(chunk.len())..]);
        }
        if let Some(capture) = &mut self.capture {
            let rest = &chunk[copy_from.min(chunk.len())..];
            if capture.oversized || capture.copy.len() + rest.len() > MAX_USAGE {
                capture.oversized = true;
                capture.copy = Vec::new();
            } else {
                capture.copy.extend_from_slice(rest);
            }
        }
    }

    /// Apply what was found to `tokens`, as parsing the whole document would.
    pub fn finish(&self, tokens: &mut Tokens) {
        if self.failed {
            return;
        }
        for usage in [&self.message, &self.top].into_iter().flatten() {
            tokens.apply(usage);
        }
    }

    /// Whether the top-level object was closed (a whole document was read).
    pub fn complete(&self) -> bool {
        self.state == State::Done && self.depth == 0
    }

    /// A `}` outside strings; `copied` is this chunk's part of a captured value up to it.
    fn close(&mut self, copied: &[u8]) {
        self.depth = self.depth.saturating_sub(1);
        if self.depth <= 1 {
            self.in_message = false;
        }
        if self.depth == 0 {
            // Anything after the document is not part of it.
            self.state = State::Done;
        }
        if self
            .capture
            .as_ref()
            .is_none_or(|capture| capture.depth != self.depth)
        {
            return;
        }
        let Some(mut capture) = self.capture.take() else {
            return;
        };
        if capture.oversized || capture.copy.len() + copied.len() > MAX_USAGE {
            return;
        }
        let value = if capture.copy.is_empty() {
            copied
        } else {
            capture.copy.extend_from_slice(copied);
            &capture.copy
        };
        let Some(usage) = parse_usage(value) else {
            self.failed = true;
            return;
        };
        match capture.want {
            Want::Top => self.top = Some(usage),
            _ => self.message = Some(usage),
        }
    }

    /// The key a string that just ended (its last part `tail`) is, if one we want.
    #[inline(always)]
    fn key(&self, tail: &[u8]) -> Option<Want> {
        // Most keys differ in length from both names: no copy, no comparison.
        let len = self.name_len + tail.len();
        if len != 5 && len != 7 {
            return None;
        }
        let mut joined = [0; NAME];
        let name = if self.name_len == 0 {
            tail
        } else {
            joined[..self.name_len].copy_from_slice(&self.name[..self.name_len]);
            joined[self.name_len..len].copy_from_slice(tail);
            &joined[..len]
        };
        match (name, self.depth) {
            (b"usage", 1) => Some(Want::Top),
            (b"message", 1) => Some(Want::Message),
            (b"usage", _) => Some(Want::MessageUsage),
            _ => None,
        }
    }

    /// Keep the start of a possible key that continues in the next chunk.
    fn carry_name(&mut self, part: &[u8]) {
        let end = self.name_len + part.len();
        if end <= NAME {
            self.name[self.name_len..end].copy_from_slice(part);
            self.name_len = end;
        } else {
            self.name_len = NAME + 1;
        }
    }
}

/// Move `at` (just after an opening quote, or inside a string at a byte that is not escaped)
/// past the string's closing quote. `Err(escaped)` if the string goes on in the next chunk,
/// with `at` at the chunk's end: `escaped` if the next chunk's first byte is escaped.
///
/// Generated text is full of escapes (`\n`), so this jumps from quote to quote and counts
/// the backslashes before a quote to see whether it is escaped (an odd run escapes it).
#[inline(always)]
fn skip_string(chunk: &[u8], at: &mut usize) -> Result<(), bool> {
    let start = (*at).min(chunk.len());
    let mut from = start;
    loop {
        let Some(quote) = find_quote(&chunk[from..]).map(|offset| from + offset) else {
            *at = chunk.len();
            return Err(backslashes_before(&chunk[start..]) % 2 == 1);
        };
        if backslashes_before(&chunk[start..quote]) % 2 == 0 {
            *at = quote + 1;
            return Ok(());
        }
        from = quote + 1;
    }
}

/// The number of backslashes `contents` ends with.
#[inline(always)]
pub(super) fn backslashes_before(contents: &[u8]) -> usize {
    match contents.last() {
        Some(b'\\') => contents.iter().rev().take_while(|&&b| b == b'\\').count(),
        _ => 0,
    }
}

/// `0x01` repeated in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The high bit of every byte of a word.
const HIGHS: u64 = ONES << 7;

/// High bits set at the bytes of `word` equal to `byte`; exact for the lowest one (a borrow
/// can only set bits above a true match), which is all the searches below use.
#[inline(always)]
fn equal_bytes(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The offset from `at` of the next `"`, `{` or `}`: most are at `at` or one further (`":"`,
/// `","`, `":{"`), seen by looking before searching.
#[inline(always)]
fn next_outside(chunk: &[u8], at: usize) -> Option<usize> {
    match chunk.get(at..at + 2) {
        Some(&[first, second]) => {
            if OUTSIDE[usize::from(first)] {
                Some(0)
            } else if OUTSIDE[usize::from(second)] {
                Some(1)
            } else {
                Some(2 + find_outside(&chunk[at + 2..])?)
            }
        }
        _ => find_outside(&chunk[at..]),
    }
}

/// The offset of the first `"`, `{` or `}`: eight bytes at a time, the runs between them
/// being short (`":"`, `":1700000000,"`).
#[inline(always)]
fn find_outside(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = bytes[at..].first_chunk::<8>() {
        let word = u64::from_le_bytes(*word);
        let hits = equal_bytes(word, b'"') | equal_bytes(word, b'{') | equal_bytes(word, b'}');
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes[at..].iter().position(|&b| OUTSIDE[usize::from(b)])?;
    Some(at + rest)
}

/// Whether a short string (a key) contains a backslash, a word at a time.
#[inline(always)]
pub(super) fn has_backslash(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut hits = 0;
    for word in words.by_ref() {
        let mut array = [0; 8];
        array.copy_from_slice(word);
        hits |= equal_bytes(u64::from_le_bytes(array), b'\\');
    }
    hits != 0 || words.remainder().contains(&b'\\')
}

/// The offset of the first `"`: a word at a time for short strings, `memchr` (SIMD) past
/// [`SHORT_STRING`] bytes.
#[inline(always)]
pub(super) fn find_quote(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = bytes[at..].first_chunk::<8>() {
        let hits = equal_bytes(u64::from_le_bytes(*word), b'"');
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
        if at >= SHORT_STRING {
            return memchr::memchr(b'"', &bytes[at..]).map(|rest| at + rest);
        }
    }
    let rest = bytes[at..].iter().position(|&b| b == b'"')?;
    Some(at + rest)
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

    /// The reference: parse the whole document with serde, as the gateway once did.
    fn parsed(document: &[u8]) -> Tokens {
        #[derive(serde::Deserialize)]
        struct Message {
            #[serde(default)]
            usage: Option<UsageProbe>,
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(default)]
            usage: Option<UsageProbe>,
            #[serde(default)]
            message: Option<Message>,
        }
        let mut tokens = Tokens::default();
        if let Ok(probe) = serde_json::from_slice::<Probe>(document) {
            for usage in [probe.message.and_then(|m| m.usage), probe.usage]
                .into_iter()
                .flatten()
            {
                tokens.apply(&usage);
            }
        }
        tokens
    }

    /// Scan `document` split at `cuts` (offsets, any order).
    fn scanned_at(document: &[u8], cuts: &[usize]) -> Tokens {
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (document.len() + 1)).collect();
        cuts.sort_unstable();
        let mut scanner = UsageScanner::default();
        let mut from = 0;
        for cut in cuts.into_iter().chain([document.len()]) {
            scanner.push(&document[from..cut]);
            from = cut;
        }
        let mut tokens = Tokens::default();
        scanner.finish(&mut tokens);
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

    #[test]
    fn what_fails_a_full_parse_yields_nothing() {
        for document in [
            &br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#[..],
            br#"{"usage":null,"usage":{"prompt_tokens":2}}"#,
            br#"{"message":{},"message":{"usage":{"input_tokens":1}}}"#,
            br#"{"message":{"usage":{"input_tokens":1},"usage":null}}"#,
            br#"{"usage":{"prompt_tokens":1},"message":"x"}"#,
            br#"{"usage":{"prompt_tokens":"1"}}"#,
            br#"{"usage":{"prompt_tokens":1.0}}"#,
            br#"{"usage":{"prompt_tokens":-1}}"#,
            br#"{"usage":{"prompt_tokens":1,"prompt_tokens":1}}"#,
            br#"{"usage":{"prompt_tokens":18446744073709551616}}"#,
            br#"{"usage":{"prompt_tokens":1},"message":{"usage":{"input_tokens":true}}}"#,
        ] {
            assert_eq!(parsed(document), Tokens::default());
            for chunk in [1, 2, 5, 1000] {
                assert_eq!(
                    scanned(document, chunk),
                    Tokens::default(),
                    "{}",
                    String::from_utf8_lossy(document)
                );
            }
        }
    }

    #[test]
    fn unusual_but_valid_usage_values_match_serde() {
        for document in [
            &br#"{"usage":{"prompt_tokens":null,"completion_tokens":3}}"#[..],
            br#"{"usage":{"prompt\u005ftokens":4,"x":{"y":[1,"}"]},"completion_tokens":0}}"#,
            br#"{"usage":{ "prompt_tokens" : 18446744073709551615 , "z" : "a\"b" }}"#,
            br#"{"usage":{"prompt_tokens":1e2}}"#,
            br#"{"usage":{"input_tokens":7,"prompt_tokens":8,"output_tokens":1}}"#,
            br#"{"usage":{}, "message":{"usage":{"output_tokens":2}}}"#,
            br#"{"a":[{"b":"}"},"{"],"usage":{"prompt_tokens":5}}"#,
            br#"{"a":"\\","usage":{"prompt_tokens":6}}"#,
            br#"{"message":{"a":{"usage":{"input_tokens":9}}},"usage":{"output_tokens":1}}"#,
        ] {
            for chunk in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    scanned(document, chunk),
                    parsed(document),
                    "{}",
                    String::from_utf8_lossy(document)
                );
            }
        }
        assert_eq!(
            parsed(br#"{"usage":{"prompt_tokens":1e2}}"#),
            Tokens::default(),
            "serde rejects a float count"
        );
    }

    #[test]
    fn escapes_are_followed_across_any_cut() {
        // Runs of backslashes before quotes, braces in strings, and the names we look for.
        let document = br#"{"a":"\\\\\"}\\","usage\\":{"b":"\\"},"c\"":"\"usage\":{","usage":{"prompt_tokens":3},"d":"\\\\"}"#;
        assert_eq!(
            parsed(document),
            Tokens {
                input: Some(3),
                output: None
            }
        );
        for cut in 0..=document.len() {
            for second in cut..=document.len() {
                assert_eq!(
                    scanned_at(document, &[cut, second]),
                    parsed(document),
                    "cut at {cut} and {second}"
                );
            }
        }
    }

    #[test]
    fn long_usage_values_are_bounded() {
        let filler = "x".repeat(MAX_USAGE);
        let document = format!(r#"{{"usage":{{"prompt_tokens":1,"pad":"{filler}"}}}}"#);
        let mut scanner = UsageScanner::default();
        for part in document.as_bytes().chunks(100) {
            scanner.push(part);
            let held = scanner.capture.as_ref().map_or(0, |c| c.copy.capacity());
            assert!(held <= MAX_USAGE * 2, "{held}");
        }
        let mut tokens = Tokens::default();
        scanner.finish(&mut tokens);
        assert_eq!(tokens, Tokens::default());
    }

    /// A JSON text for the property test: a value of any shape, with strings that contain
    /// the names we look for, quotes, braces and escapes.
    fn any_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<u32>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "(usage|message|[ -~]|\\\\|\"|\u{e9}){0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::vec(("(usage|message|[a-z\"\\\\]{1,8})", inner), 0..4)
                    .prop_map(|members| serde_json::Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn any_usage() -> impl Strategy<Value = serde_json::Value> {
        (
            proptest::option::of(0u64..100_000),
            proptest::option::of(proptest::option::of(0u64..100_000)),
            proptest::option::of(any_value()),
        )
            .prop_map(|(prompt, output, extra)| {
                let mut usage = serde_json::Map::new();
                if let Some(extra) = extra {
                    usage.insert("details".into(), extra);
                }
                if let Some(prompt) = prompt {
                    usage.insert("prompt_tokens".into(), prompt.into());
                }
                if let Some(output) = output {
                    usage.insert("output_tokens".into(), output.into());
                }
                serde_json::Value::Object(usage)
            })
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

        /// Random members of any shape around a `usage` and a `message` (either may be
        /// missing, null or hold a usage with other members), compact or pretty, cut at
        /// random offsets: the scanner agrees with a full parse.
        #[test]
        fn matches_a_full_parse_of_any_document(
            before in proptest::collection::vec(("[a-z]{1,6}", any_value()), 0..4),
            after in proptest::collection::vec(("[a-z]{1,6}", any_value()), 0..3),
            top in proptest::option::of(proptest::option::of(any_usage())),
            message in proptest::option::of(proptest::option::of((
                proptest::collection::vec(("[a-z]{1,6}", any_value()), 0..3),
                proptest::option::of(any_usage()),
            ))),
            top_first in any::<bool>(),
            pretty in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            // Members are written in this order (serde_json's map here keeps insertion order
            // only with a feature, so write the text by hand).
            let mut members: Vec<(String, serde_json::Value)> = before;
            let top = top.map(|usage| ("usage".to_owned(), usage.unwrap_or_default()));
            let message = message.map(|message| {
                let value = message.map_or(serde_json::Value::Null, |(others, usage)| {
                    let mut object: serde_json::Map<String, serde_json::Value> =
                        others.into_iter().filter(|(k, _)| k != "usage").collect();
                    if let Some(usage) = usage {
                        object.insert("usage".into(), usage);
                    }
                    serde_json::Value::Object(object)
                });
                ("message".to_owned(), value)
            });
            let (first, second) = if top_first { (top, message) } else { (message, top) };
            members.retain(|(k, _)| k != "usage" && k != "message");
            members.extend(first);
            members.extend(second);
            members.extend(after.into_iter().filter(|(k, _)| k != "usage" && k != "message"));
            let write = |value: &serde_json::Value| {
                if pretty {
                    serde_json::to_string_pretty(value).unwrap()
                } else {
                    serde_json::to_string(value).unwrap()
                }
            };
            let mut text = String::from("{");
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                if pretty {
                    text.push_str("\n  ");
                }
                text.push_str(&serde_json::to_string(key).unwrap());
                text.push_str(if pretty { ": " } else { ":" });
                text.push_str(&write(value));
            }
            text.push_str(if pretty { "\n}\n" } else { "}" });
            let text = text.into_bytes();
            prop_assert_eq!(scanned_at(&text, &cuts), parsed(&text));
            let mut tokens = Tokens::default();
            tokens.observe(&text);
            prop_assert_eq!(tokens, parsed(&text));
        }
    }
}
