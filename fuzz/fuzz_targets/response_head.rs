//! Fuzz the provider response-head parser of the raw lane with arbitrary bytes.
//!
//! Asserts it never panics, that every range it returns (reason phrase, kept headers,
//! `Content-Type`) lies within the head it parsed, that kept headers are never framing or
//! hop-by-hop ones, and that a head which parses whole parses the same with any bytes after it
//! (what follows a head is its body and must not change how the head reads).

#![no_main]

use compresh_forward::wire::{parse_response_head, Parsed, ResponseHead};
use libfuzzer_sys::fuzz_target;

fn check(input: &[u8], head: &ResponseHead) {
    assert!(head.head_len <= input.len());
    let within = |range: &std::ops::Range<usize>| range.start <= range.end && range.end <= head.head_len;
    assert!(within(&head.reason));
    if let Some(content_type) = &head.content_type {
        assert!(within(content_type));
    }
    for (name, value) in &head.headers {
        assert!(within(name) && within(value));
        let name = &input[name.clone()];
        for framing in [&b"content-length"[..], b"transfer-encoding", b"connection", b"keep-alive"] {
            assert!(!name.eq_ignore_ascii_case(framing), "{name:?} was kept");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(Parsed::Head(head)) = parse_response_head(input) else {
        return;
    };
    check(input, &head);
    let mut longer = input[..head.head_len].to_vec();
    longer.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(parse_response_head(&longer), Ok(Parsed::Head(head)));
});
