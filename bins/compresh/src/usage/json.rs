//! Byte-exact edits of the top level of a JSON object: find a member, remove it, insert one.
//!
//! Why not parse into `serde_json::Value` and serialise again? That would reorder keys, collapse
//! duplicate keys and lose integers beyond 64 bits — the provider must get the client's request,
//! and the client the provider's stream, unchanged except for the one member we touch.

use bytes::{Bytes, BytesMut};

use super::scan::{backslashes_before, find_quote};

/// The bytes that matter inside a nested value: strings and brackets.
const NESTED: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

/// One `"key": value` member of a top-level object, as byte offsets into the object text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    /// Offset of the key's opening quote.
    pub start: usize,
    /// The key between its quotes (still escaped).
    pub key: (usize, usize),
    /// The value's first byte and one past its last.
    pub value: (usize, usize),
}

/// The members of the top-level object in `json`, or `None` if it is not a well-formed object
/// at the top level (nested values are only skipped, not validated).
pub(crate) fn members(json: &[u8]) -> Option<(usize, Vec<Member>)> {
    let mut at = skip_ws(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    let open = at;
    at += 1;
    let mut found = Vec::new();
    loop {
        at = skip_ws(json, at);
        match json.get(at)? {
            b'}' if found.is_empty() => return Some((open, found)),
            b'"' => {}
            _ => return None,
        }
        let start = at;
        let key_end = skip_string(json, at)?;
        let key = (start + 1, key_end - 1);
        at = skip_ws(json, key_end);
        if json.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(json, at + 1);
        let value_start = at;
        at = skip_value(json, at)?;
        found.push(Member {
            start,
            key,
            value: (value_start, at),
        });
        at = skip_ws(json, at);
        match json.get(at)? {
            b',' => at += 1,
            b'}' => return Some((open, found)),
            _ => return None,
        }
    }
}

/// Index of the member named `name`, comparing the decoded key.
pub(crate) fn find(json: &[u8], found: &[Member], name: &str) -> Option<usize> {
    found.iter().position(|member| {
        let raw = &json[member.key.0..member.key.1];
        if raw.contains(&b'\\') {
            serde_json::from_slice::<String>(&json[member.start..member.key.1 + 1])
                .is_ok_and(|key| key == name)
        } else {
            raw == name.as_bytes()
        }
    })
}

/// The bytes to leave out to remove the member at `index`: the member and the comma that
/// separates it from its neighbour.
pub(crate) fn removal(found: &[Member], index: usize) -> (usize, usize) {
    let member = found[index];
    if let Some(next) = found.get(index + 1) {
        (member.start, next.start)
    } else if let Some(previous) = index.checked_sub(1).map(|i| found[i]) {
        (previous.value.1, member.value.1)
    } else {
        (member.start, member.value.1)
    }
}

/// `json` with `bytes` put in place of `json[from..to]`.
pub(crate) fn splice(json: &[u8], from: usize, to: usize, bytes: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() - (to - from) + bytes.len());
    out.extend_from_slice(&json[..from]);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&json[to..]);
    out.freeze()
}

/// The offset of the first non-whitespace byte at or after `at`.
pub(crate) fn skip_ws(json: &[u8], mut at: usize) -> usize {
    while json
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        at += 1;
    }
    at
}

/// `at` is on an opening quote; returns one past the closing quote.
fn skip_string(json: &[u8], at: usize) -> Option<usize> {
    let start = at + 1;
    let mut from = start;
    loop {
        // Message texts make up most of a request and are full of escapes (`\n`): jump from
        // quote to quote, and count the backslashes before one to see if it is escaped.
        let quote = from + find_quote(json.get(from..)?)?;
        if backslashes_before(&json[start..quote]) % 2 == 0 {
            return Some(quote + 1);
        }
        from = quote + 1;
    }
}

/// `at` is on a value's first byte; returns one past its last (nested values are only
/// skipped, not validated).
pub(crate) fn skip_value(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => skip_string(json, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                // Numbers, literals, commas, colons and whitespace change nothing here.
                i += json
                    .get(i..)?
                    .iter()
                    .position(|&b| NESTED[usize::from(b)])?;
                match json[i] {
                    b'"' => {
                        i = skip_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while json
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
            {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(json: &str) -> Vec<String> {
        let (_, found) = members(json.as_bytes()).unwrap();
        found
            .iter()
            .map(|m| json[m.key.0..m.key.1].to_owned())
            .collect()
    }

    #[test]
    fn finds_top_level_members_only() {
        let json =
            r#" { "a" : {"usage":null,"x":[1,"}"]}, "b\"c":"]" ,"usage":null, "n":-1.5e3 } "#;
        assert_eq!(keys(json), ["a", "b\\\"c", "usage", "n"]);
        let (_, found) = members(json.as_bytes()).unwrap();
        let usage = find(json.as_bytes(), &found, "usage").unwrap();
        assert_eq!(usage, 2);
        let (from, to) = found[usage].value;
        assert_eq!(&json[from..to], "null");
        assert_eq!(find(json.as_bytes(), &found, "b\"c"), Some(1));
        assert_eq!(find(json.as_bytes(), &found, "x"), None);
    }

    #[test]
    fn removal_keeps_the_rest_byte_for_byte() {
        let remove_usage = |json: &str| {
            let (_, found) = members(json.as_bytes()).unwrap();
            let index = find(json.as_bytes(), &found, "usage").unwrap();
            let (from, to) = removal(&found, index);
            format!("{}{}", &json[..from], &json[to..])
        };
        assert_eq!(remove_usage(r#"{"id":1,"usage":null}"#), r#"{"id":1}"#);
        assert_eq!(remove_usage(r#"{"usage":null, "id":1}"#), r#"{"id":1}"#);
        assert_eq!(
            remove_usage(r#"{"a":1,"usage":null,"b":2}"#),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(remove_usage(r#"{"usage":null}"#), r#"{}"#);
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        assert!(members(b"[1]").is_none());
        assert!(members(b"{\"a\":1").is_none());
        assert!(members(b"{\"a\" 1}").is_none());
        assert!(members(b"{\"a\":}").is_none());
        assert_eq!(members(b"{}").map(|(_, m)| m.len()), Some(0));
    }
}
