//! A fast path for the request body check: is it a JSON object, and what is its `model`?
//!
//! `serde_json` into a borrowed probe struct cost ~19 instructions per body byte, most of it
//! skipping `messages`. [`model`] validates the common case in one tight pass and answers only
//! when the answer is certain to be the one `serde_json` gives; anything unusual (escapes in
//! top-level keys or in `model`, non-ASCII there, deep nesting, a second `model`, a top-level
//! array, any syntax error) returns `None`, and the caller asks `serde_json`, which also
//! produces the exact error message. So the accepted language is a strict subset of
//! `serde_json`'s, with identical results on it.

/// `Some(model)` when `body` is a JSON object that `serde_json` accepts for a struct with one
/// optional borrowed string field `model` (unknown members ignored); `None` when not sure.
pub(crate) fn model(body: &[u8]) -> Option<Option<&str>> {
    let mut at = Cursor { body, at: 0 };
    at.skip_ws();
    at.eat(b'{')?;
    at.skip_ws();
    let mut model = None;
    let mut seen_model = false;
    if at.peek() == Some(b'}') {
        at.at += 1;
    } else {
        loop {
            let key = at.plain_string()?;
            at.skip_ws();
            at.eat(b':')?;
            at.skip_ws();
            if key == b"model" {
                // serde rejects a duplicate field: let it say so.
                if seen_model {
                    return None;
                }
                seen_model = true;
                model = match at.peek()? {
                    b'"' => Some(at.plain_string()?),
                    b'n' => {
                        at.literal(b"null")?;
                        None
                    }
                    // Any other type is a serde error.
                    _ => return None,
                };
            } else {
                at.value(1)?;
            }
            at.skip_ws();
            match at.next()? {
                b',' => at.skip_ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    at.skip_ws();
    if at.at != body.len() {
        return None;
    }
    // `plain_string` returns ASCII only, which is always UTF-8.
    Some(match model {
        Some(bytes) => Some(std::str::from_utf8(bytes).ok()?),
        None => None,
    })
}

/// Offset of the first `"`, `\\` or control character in `bytes` (and, if `ascii_only`, of the
/// first byte from 0x80 up), eight bytes per step: strings are most of a request body, and a
/// byte-by-byte loop cost ~14 instructions per byte.
fn find_special(bytes: &[u8], ascii_only: bool) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // The classic "has a zero byte" test, per predicate. A flag can be false only above a
        // true one of its own test, so the lowest flag of all is always a real match.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        let mut found = zero(word ^ QUOTES)
            | zero(word ^ BACKSLASHES)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        if ascii_only {
            found |= word;
        }
        found &= HIGH;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    // The last few bytes of the body (a string usually ends well before it).
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20 || (ascii_only && b >= 0x80))
        .map(|at| offset + at)
}

/// Nesting deeper than this is left to `serde_json` (which has its own limits), so the
/// recursion here stays shallow.
const MAX_DEPTH: usize = 64;

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// JSON's (and serde_json's) whitespace: space, tab, line feed, carriage return.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.body.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A string without escapes, control characters or non-ASCII bytes (a top-level key or
    /// the model, which serde decodes and checks as UTF-8): its bytes between the quotes.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        self.at += find_special(self.body.get(start..)?, true)?;
        self.eat(b'"')?;
        Some(&self.body[start..self.at - 1])
    }

    /// Any string, as serde_json skips it: no control characters, only valid escapes.
    /// Non-ASCII bytes are not checked, as serde_json does not check skipped strings either;
    /// a `\u` escape of a surrogate is left to serde_json.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.at += find_special(self.body.get(self.at..)?, false)?;
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = self.body.get(self.at..self.at + 4)?;
                        // Checked first: `from_str_radix` would also take a sign.
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        let unit = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                        if (0xd800..=0xdfff).contains(&unit) {
                            return None;
                        }
                        self.at += 4;
                    }
                    _ => return None,
                },
                // A control character.
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// Skips one value (after whitespace) nested `depth` levels deep.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.at += 1;
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip_string()?;
                    self.skip_ws();
                    self.eat(b':')?;
                    self.skip_ws();
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.next()? {
                        b',' => self.skip_ws(),
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.at += 1;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.next()? {
                        b',' => self.skip_ws(),
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// What the gateway asked serde_json before this fast path existed.
    fn serde_model(body: &[u8]) -> Result<Option<String>, ()> {
        #[derive(serde::Deserialize)]
        struct Probe<'a> {
            #[serde(borrow, default)]
            model: Option<Cow<'a, str>>,
        }
        serde_json::from_slice::<Probe<'_>>(body)
            .map(|probe| probe.model.map(Cow::into_owned))
            .map_err(|_| ())
    }

    /// The fast path either defers or agrees with serde_json; `true` if it answered.
    fn check(body: &[u8]) -> bool {
        let Some(fast) = model(body) else {
            return false;
        };
        assert_eq!(
            Ok(fast.map(str::to_owned)),
            serde_model(body),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        true
    }

    const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0.7,"top_p":1e0,"n":-1.5E+2,"stop":null,"stream":false,"logit_bias":{},"tools":[]}"#;

    #[test]
    fn common_bodies_are_answered_without_serde() {
        assert_eq!(model(CHAT.as_bytes()), Some(Some("gpt-4o-mini")));
        assert_eq!(model(b" {\"messages\":[]}\r\n"), Some(None));
        assert_eq!(model(b"{}"), Some(None));
        assert_eq!(model(br#"{"model":null}"#), Some(None));
        assert_eq!(
            model("{\"model\":\"m\",\"content\":\"caf\u{e9} \\u00e9 \\n\"}".as_bytes()),
            Some(Some("m"))
        );
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            br#"["gpt-4o"]"#,
            br#"{"model":"a","model":"b"}"#,
            br#"{"mod\u0065l":"a"}"#,
            br#"{"model":"gpt-\u0034o"}"#,
            br#"{"model":5}"#,
            br#"{"x":"\ud800"}"#,
            br#"{"x":"\u+123"}"#,
            br#"{"x":01}"#,
            br#"{"x":1.}"#,
            br#"{"x":-}"#,
            br#"{"x":"\q"}"#,
            b"{\"x\":\"\x01\"}",
            br#"{"x":1} x"#,
            br#"{"x":1,}"#,
            br#"{"x":[1,]}"#,
            br#"{"x":tru}"#,
            "{\"mod\u{e9}l\":1}".as_bytes(),
        ] {
            assert_eq!(model(body), None, "{:?}", String::from_utf8_lossy(body));
            check(body);
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(model(deep.as_bytes()), None);
        check(deep.as_bytes());
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.gen_range(0..32) {
                    0 => b'"',
                    1 => b'\\',
                    2 => rng.gen_range(0..0x20),
                    3 => rng.gen_range(0x80..=0xff),
                    _ => rng.gen_range(0x20..0x80),
                })
                .collect();
            let start = rng.gen_range(0..=len);
            for ascii_only in [false, true] {
                let naive = bytes[start..].iter().position(|&b| {
                    b == b'"' || b == b'\\' || b < 0x20 || (ascii_only && b >= 0x80)
                });
                assert_eq!(
                    find_special(&bytes[start..], ascii_only),
                    naive,
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn mutated_bodies_never_disagree_with_serde() {
        let alphabet = b"{}[]\":,\\ \t\n-+.0159eEtrufalsnmodel\x01\xc3\xa9";
        let mut rng = StdRng::seed_from_u64(8);
        let seeds = [
            CHAT,
            r#"{"a":[1,{"b":"c\"d"}],"model":"x"}"#,
            r#"{"model":"y"}"#,
        ];
        let (mut answered, mut serde_ok) = (0, 0);
        for _ in 0..20_000 {
            let mut body = seeds[rng.gen_range(0..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=body.len());
                match rng.gen_range(0..3) {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = alphabet[rng.gen_range(0..alphabet.len())],
                    _ => body.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
                }
            }
            answered += usize::from(check(&body));
            serde_ok += usize::from(serde_model(&body).is_ok());
        }
        // The mutations must exercise both sides: valid bodies the fast path answers, and
        // invalid ones it must not accept.
        eprintln!("{answered} answered, {serde_ok} valid for serde, of 20000");
        assert!(
            answered > 2_000 && serde_ok < 18_000,
            "{answered} {serde_ok}"
        );
    }
}
