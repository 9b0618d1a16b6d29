//! The client's request head, parsed in place, and whether the lane may serve it.

use std::mem::MaybeUninit;
use std::ops::Range;

/// Headers beyond this many send the connection to hyper (which allows 100).
const MAX_HEADERS: usize = 64;

/// A request the lane serves: positions are ranges of the connection's read buffer.
#[derive(Debug)]
pub(crate) struct LaneRequest {
    /// Length of the head; the body follows.
    pub head_len: usize,
    /// The body's `Content-Length`.
    pub body_len: usize,
    /// The request target (path and query).
    pub target: Range<usize>,
    /// Every header line, in order: (name, value).
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// The first `Authorization`, `x-api-key`, `X-Session-Id` and `X-Compresh-Provider` values.
    pub authorization: Option<Range<usize>>,
    pub x_api_key: Option<Range<usize>>,
    pub session: Option<Range<usize>>,
    pub provider: Option<Range<usize>>,
}

/// What [`parse`] decided.
#[derive(Debug)]
pub(crate) enum Parse {
    /// A request the lane serves.
    Lane(LaneRequest),
    /// Anything else: hyper serves the connection from here on.
    Handover,
    /// The head is not complete yet.
    Partial,
}

/// Parses the request head at the start of `buffer`. The lane serves only the proxy traffic it
/// can frame and answer exactly as hyper would: `POST /v1/...` over HTTP/1.1 with a
/// `Content-Length` body of at most `body_limit` bytes, kept alive, without `Expect`,
/// `Upgrade`, `Transfer-Encoding` or a `Connection` header naming anything but `keep-alive`.
/// Everything else (errors included: hyper answers a malformed request as it always has) is a
/// [`Parse::Handover`].
pub(crate) fn parse(buffer: &[u8], body_limit: usize) -> Parse {
    // Left uninitialised: httparse writes only the lines it finds (zeroing all 64 was more
    // work than parsing a typical head's dozen).
    let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buffer, &mut lines) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Handover,
    };
    let (Some("POST"), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parse::Handover;
    };
    if !target.starts_with("/v1/") || !target.bytes().all(plain_target_byte) {
        return Parse::Handover;
    }
    let base = buffer.as_ptr() as usize;
    let range = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let mut parsed = LaneRequest {
        head_len,
        body_len: 0,
        target: range(target.as_bytes()),
        headers: Vec::with_capacity(request.headers.len()),
        authorization: None,
        x_api_key: None,
        session: None,
        provider: None,
    };
    let mut length = None;
    for line in request.headers.iter() {
        let name = line.name.as_bytes();
        let value = line.value;
        let first = |slot: &mut Option<Range<usize>>| {
            slot.get_or_insert_with(|| range(value));
        };
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let Some(declared) = parse_length(value) else {
                    return Parse::Handover;
                };
                if length.is_some() || declared > body_limit {
                    return Parse::Handover;
                }
                length = Some(declared);
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => first(&mut parsed.authorization),
            9 if name.eq_ignore_ascii_case(b"x-api-key") => first(&mut parsed.x_api_key),
            12 if name.eq_ignore_ascii_case(b"x-session-id") => first(&mut parsed.session),
            19 if name.eq_ignore_ascii_case(b"x-compresh-provider") => {
                first(&mut parsed.provider);
            }
            10 if name.eq_ignore_ascii_case(b"connection") && !only_keep_alive(value) => {
                return Parse::Handover;
            }
            6 if name.eq_ignore_ascii_case(b"expect") => return Parse::Handover,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parse::Handover,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Parse::Handover,
            _ => {}
        }
        parsed.headers.push((range(name), range(value)));
    }
    let Some(body_len) = length else {
        return Parse::Handover;
    };
    parsed.body_len = body_len;
    Parse::Lane(parsed)
}

/// The bytes of an origin-form target that `http::Uri` and the lane read alike: unreserved,
/// sub-delims, `:`, `@`, `/`, `?` and `%`. Anything else (a `#` fragment, which `Uri` cuts
/// off, quotes, braces, backslashes) goes to hyper.
fn plain_target_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&byte)
}

fn parse_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn only_keep_alive(value: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .all(|token| token.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    fn lane(text: &str) -> LaneRequest {
        match parse(text.as_bytes(), LIMIT) {
            Parse::Lane(request) => request,
            other => panic!("not served by the lane: {other:?}"),
        }
    }

    fn handed_over(text: &str) -> bool {
        matches!(parse(text.as_bytes(), LIMIT), Parse::Handover)
    }

    #[test]
    fn proxy_posts_are_served_with_their_headers_found() {
        let text = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer comp_a\r\nauthorization: Bearer comp_b\r\nX-Session-Id: s1\r\nX-Compresh-Provider: local\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}";
        let request = lane(text);
        assert_eq!(&text[request.target.clone()], "/v1/chat/completions?x=1");
        assert_eq!(request.body_len, 2);
        assert_eq!(&text[request.head_len..], "{}");
        assert_eq!(&text[request.authorization.unwrap()], "Bearer comp_a");
        assert_eq!(request.x_api_key, None);
        assert_eq!(&text[request.session.unwrap()], "s1");
        assert_eq!(&text[request.provider.unwrap()], "local");
        assert_eq!(request.headers.len(), 7);
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        let body = "Content-Length: 2\r\n\r\n{}";
        for head in [
            "GET /v1/models HTTP/1.1\r\n",
            "POST /health HTTP/1.1\r\n",
            "POST /v1/chat/completions HTTP/1.0\r\n",
            "POST /v1/x HTTP/1.1\r\nConnection: close\r\n",
            "POST /v1/x HTTP/1.1\r\nConnection: keep-alive, x-hop\r\n",
            "POST /v1/x HTTP/1.1\r\nExpect: 100-continue\r\n",
            "POST /v1/x HTTP/1.1\r\nUpgrade: h2c\r\n",
            "POST /v1/chat/completions#frag HTTP/1.1\r\n",
            "POST /v1/x?q={} HTTP/1.1\r\n",
            "POST /v1/x\"y HTTP/1.1\r\n",
            "POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\n",
        ] {
            assert!(handed_over(&format!("{head}{body}")), "{head}");
        }
        for head in [
            "POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/x HTTP/1.1\r\n\r\n",
            "POST /v1/x HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
            "POST /v1/x HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            "POST /v1/x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert!(handed_over(head), "{head}");
        }
        let many: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(handed_over(&format!("POST /v1/x HTTP/1.1\r\n{many}{body}")));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let text = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
        for end in 0..text.len() {
            assert!(
                matches!(parse(&text.as_bytes()[..end], LIMIT), Parse::Partial),
                "{end}"
            );
        }
    }
}
