//! The upstream request head, written straight from the client's parsed header lines.

use http::header::HeaderValue;

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
        let listed_here = || {
            listed
                .iter()
                .any(|token| name.eq_ignore_ascii_case(token.as_bytes()))
        };
        if request_drops(name) || (!listed.is_empty() && listed_here()) {
            continue;
        }
        sent_anthropic_version |= name.eq_ignore_ascii_case(b"anthropic-version");
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

/// Appends one `name: value` header line.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
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

#[cfg(test)]
mod tests {
    use compresh_vault::ProviderSecret;
    use http::{HeaderMap, HeaderName};
    use proptest::prelude::*;

    use super::*;
    use crate::{rewrite_request_headers, ProviderKind};

    fn upstreams() -> Vec<Upstream> {
        let secret = |key: &str| Some(ProviderSecret::new(key.to_owned()));
        vec![
            Upstream::new("o", ProviderKind::OpenAi, None, secret("sk-o")).unwrap(),
            Upstream::new("a", ProviderKind::Anthropic, None, secret("sk-a")).unwrap(),
            Upstream::new(
                "l",
                ProviderKind::OpenAiCompatible,
                Some("http://127.0.0.1:8000/v1"),
                None,
            )
            .unwrap(),
        ]
    }

    /// The (lowercase name, value) pairs of a written head, sorted, and its request line.
    fn written(head: &[u8]) -> (String, Vec<(String, String)>) {
        let mut lines = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut lines);
        assert!(request.parse(head).unwrap().is_complete());
        let line = format!("{} {}", request.method.unwrap(), request.path.unwrap());
        let mut pairs: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.to_vec()).unwrap();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        pairs.sort();
        (line, pairs)
    }

    /// What hyper's path sends: `rewrite_request_headers` on a map, plus the length.
    fn expected(
        client: &[(String, String)],
        upstream: &Upstream,
        length: usize,
    ) -> Vec<(String, String)> {
        let mut map = HeaderMap::new();
        for (name, value) in client {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, value.parse().unwrap());
        }
        rewrite_request_headers(&mut map, upstream);
        let mut pairs: Vec<(String, String)> = map
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        pairs.push(("content-length".to_owned(), length.to_string()));
        pairs.sort();
        pairs
    }

    fn header() -> impl Strategy<Value = (String, String)> {
        let name = prop::sample::select(vec![
            "Connection",
            "connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Authorization",
            "X-Api-Key",
            "Cookie",
            "X-Session-Id",
            "Host",
            "Content-Length",
            "Proxy-Authorization",
            "proxy-connection",
            "X-Compresh-Provider",
            "x-compresh-debug",
            "Anthropic-Version",
            "anthropic-beta",
            "User-Agent",
            "Content-Type",
            "X-Custom",
            "x-custom",
            "X-Stainless-Lang",
            "Accept",
        ]);
        let value = prop::sample::select(vec![
            "keep-alive",
            "close",
            "x-custom",
            "X-Custom, keep-alive",
            "host, authorization",
            "anthropic-version",
            "te, trailer",
            "Bearer comp_abc",
            "1",
            "text/event-stream",
            "a=b",
            "2024-01-01",
            " spaced ",
        ]);
        (name, value).prop_map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
    }

    proptest! {
        #[test]
        fn the_wire_head_carries_what_rewrite_request_headers_leaves(
            client in prop::collection::vec(header(), 0..12),
            which in 0usize..3,
            length in 0usize..5000,
        ) {
            let upstream = &upstreams()[which];
            let mut out = Vec::new();
            let pairs = client.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
            write_request_head(&mut out, "POST", "/v1/chat/completions?x=1", pairs, upstream, length);
            let (line, sent) = written(&out);
            prop_assert_eq!(line, "POST /v1/chat/completions?x=1");
            prop_assert_eq!(sent, expected(&client, upstream, length));
        }
    }

    #[test]
    fn decimal_digits() {
        for (value, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, text.as_bytes());
        }
    }
}
