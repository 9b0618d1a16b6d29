//! The upstream request head, written straight from the client's parsed header lines.

use http::header::HeaderValue;

use super::lowercase;
use crate::headers::{needs_anthropic_version, request_drops, DEFAULT_ANTHROPIC_VERSION};
use crate::Upstream;

/// Writes an HTTP/1.1 request head for `upstream` into `out`: the request line, the client's
/// headers under the rules of [`rewrite_request_headers`](crate::rewrite_request_headers)
/// (hop-by-hop headers, names a `Connection` header lists, the client's credentials and the
/// gateway's own headers are left out), then `Host`, the provider credential, the default
/// `Anthropic-Version` when it applies, and the body's `Content-Length`.
///
/// `headers` are the client's lines as parsed (name and value bytes, any case);
/// `path_and_query` is the upstream target (see [`Upstream::target_uri`]).
pub fn write_request_head<'a>(
    out: &mut Vec<u8>,
    method: &str,
    path_and_query: &str,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    upstream: &Upstream,
    body_len: usize,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let listed = connection_tokens(headers.clone());
    let mut sent_anthropic_version = false;
    for (name, value) in headers {
        let mut buffer = [0; 64];
        let Some(name_lower) = lowercase(name, &mut buffer) else {
            // Longer than any name with a rule: kept unless a `Connection` header lists it.
            if !listed
                .iter()
                .any(|token| name.eq_ignore_ascii_case(token.as_bytes()))
            {
                write_header(out, name, value);
            }
            continue;
        };
        if request_drops(name_lower) || listed.iter().any(|token| token == name_lower) {
            continue;
        }
        sent_anthropic_version |= name_lower == "anthropic-version";
        write_header(out, name, value);
    }
    write_header(out, b"host", upstream.host_header().as_bytes());
    if let Some((name, value)) = upstream.credential() {
        write_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if needs_anthropic_version(upstream, sent_anthropic_version) {
        write_header(
            out,
            b"anthropic-version",
            DEFAULT_ANTHROPIC_VERSION.as_bytes(),
        );
    }
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The lowercase names the `Connection` headers list (empty, and unallocated, when there are
/// none, as in nearly every request).
pub(crate) fn connection_tokens<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<String> {
    let mut tokens = Vec::new();
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case(b"connection") {
            continue;
        }
        // Values that are not text are skipped, as `HeaderValue::to_str` fails on them.
        let Some(text) = HeaderValue::from_bytes(value)
            .ok()
            .and_then(|value| value.to_str().ok().map(str::to_owned))
        else {
            continue;
        };
        tokens.extend(
            text.split(',')
                .map(|token| token.trim().to_ascii_lowercase())
                .filter(|token| !token.is_empty()),
        );
    }
    tokens
}

pub(crate) fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `value` in decimal, without `format!`.
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}
