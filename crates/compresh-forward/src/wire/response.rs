//! The upstream response head: status, the headers the client gets, and the body's framing.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::request::connection_tokens;
use crate::headers::response_drops;

/// Headers beyond this many make the answer unusable (hyper's client allows 100).
const MAX_HEADERS: usize = 100;

/// How the body after a response head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: `204`, `304`, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the provider closes the connection.
    UntilClose,
}

/// A parsed response head. Header positions are ranges of the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase, as sent (hyper relays a non-canonical one as it is).
    pub reason: Range<usize>,
    /// Length of the head in the buffer; the body starts there.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may carry another request once this body has been read.
    pub reusable: bool,
    /// The headers a client gets, by the rules of
    /// [`strip_hop_by_hop`](crate::strip_hop_by_hop), minus `Content-Length` and
    /// `Transfer-Encoding` (the relay frames the body itself): (name, value) ranges.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// The `Content-Type` value, if any.
    pub content_type: Option<Range<usize>>,
    /// The first `Content-Length` value as sent (`5, 5` stays so on hyper's path), when it
    /// frames the body.
    pub content_length: Option<Range<usize>>,
    /// The provider sent a `Date` header.
    pub has_date: bool,
}

/// What [`parse_response_head`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A final response head.
    Head(ResponseHead),
    /// An interim (`1xx`) response of this length, to be skipped.
    Interim(usize),
    /// The head is not complete yet.
    Partial,
}

/// Why a response head cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not an HTTP/1.x response head.
    Syntax,
    /// Content-Length values that disagree or are not numbers.
    Length,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    Upgrade,
}

/// Parses the response head at the start of `buffer`.
///
/// # Errors
/// [`Malformed`] when the head cannot be relayed as an answer.
pub fn parse_response_head(buffer: &[u8]) -> Result<Parsed, Malformed> {
    // Left uninitialised: httparse writes only the lines it finds (zeroing all 100 was more
    // work than parsing a typical head).
    let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buffer,
        &mut lines,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(Malformed::Syntax),
    };
    let status = response.code.ok_or(Malformed::Syntax)?;
    // hyper's client refuses these (`StatusCode` starts at 100).
    if status < 100 {
        return Err(Malformed::Syntax);
    }
    if status == 101 {
        return Err(Malformed::Upgrade);
    }
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim(head_len));
    }
    let base = buffer.as_ptr() as usize;
    // httparse hands out an empty reason phrase as a `""` that is not part of the buffer.
    let range = |part: &[u8]| match (part.as_ptr() as usize).checked_sub(base) {
        Some(start) if !part.is_empty() && start + part.len() <= buffer.len() => {
            start..start + part.len()
        }
        _ => 0..0,
    };
    let pairs = response
        .headers
        .iter()
        .map(|line| (line.name.as_bytes(), line.value));
    let listed = connection_tokens(pairs);
    let reason = response
        .reason
        .map_or(head_len..head_len, |reason| range(reason.as_bytes()));
    let mut head = ResponseHead {
        status,
        reason,
        head_len,
        framing: Framing::UntilClose,
        reusable: response.version == Some(1),
        headers: Vec::with_capacity(response.headers.len()),
        content_type: None,
        content_length: None,
        has_date: false,
    };
    if listed.iter().any(|token| token == "close") {
        head.reusable = false;
    }
    // `Transfer-Encoding` decides the framing whatever the lengths say (RFC 9112 §6.3), so the
    // lengths are only read without one, as hyper does.
    let has_transfer_encoding = response
        .headers
        .iter()
        .any(|line| line.name.eq_ignore_ascii_case("transfer-encoding"));
    if has_transfer_encoding && response.version == Some(0) {
        // hyper's client refuses chunked HTTP/1.0 answers.
        return Err(Malformed::Syntax);
    }
    let mut length = None;
    let mut chunked = None;
    for line in response.headers.iter() {
        let name = line.name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => {
                if !has_transfer_encoding {
                    let value = parse_length(line.value).ok_or(Malformed::Length)?;
                    if length.is_some_and(|earlier| earlier != value) {
                        return Err(Malformed::Length);
                    }
                    length = Some(value);
                    head.content_length.get_or_insert_with(|| range(line.value));
                }
                continue;
            }
            17 if is(b"transfer-encoding") => {
                // Only a final `chunked` coding delimits the body by chunks.
                chunked = Some(last_coding_is_chunked(line.value));
                continue;
            }
            12 if is(b"content-type") => head.content_type = Some(range(line.value)),
            4 if is(b"date") => head.has_date = true,
            _ => {}
        }
        let listed_here = || listed.iter().any(|token| is(token.as_bytes()));
        if !response_drops(name) && (listed.is_empty() || !listed_here()) {
            head.headers.push((range(name), range(line.value)));
        }
    }
    head.framing = if status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    if head.framing == Framing::UntilClose {
        head.reusable = false;
    }
    Ok(Parsed::Head(head))
}

/// A `Content-Length` value; a list of equal values (`5, 5`) counts as one, as hyper reads it.
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&byte| byte == b',') {
        let text = std::str::from_utf8(part).ok()?.trim();
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let value: u64 = text.parse().ok()?;
        if length.is_some_and(|earlier| earlier != value) {
            return None;
        }
        length = Some(value);
    }
    length
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&byte| byte == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName};
    use proptest::prelude::*;

    use super::*;
    use crate::strip_hop_by_hop;

    fn header() -> impl Strategy<Value = (String, String)> {
        let name = prop::sample::select(vec![
            "Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Upgrade",
            "Proxy-Status",
            "proxy-connection",
            "Content-Type",
            "X-Request-Id",
            "x-hop",
            "X-Hop",
            "Date",
            "Authorization",
            "X-Compresh-Session-Id",
            "retry-after",
            "Set-Cookie",
        ]);
        let value = prop::sample::select(vec![
            "keep-alive",
            "close",
            "x-hop",
            "X-Hop, keep-alive",
            "date",
            "te, trailer",
            "application/json",
            "1",
            "Thu, 26 Nov 2026 10:00:00 GMT",
        ]);
        (name, value).prop_map(|(n, v)| (n.to_owned(), v.to_owned()))
    }

    proptest! {
        #[test]
        fn kept_headers_are_what_strip_hop_by_hop_leaves(
            headers in prop::collection::vec(header(), 0..12),
        ) {
            let mut text = String::from("HTTP/1.1 200 OK\r\n");
            let mut map = HeaderMap::new();
            for (name, value) in &headers {
                text.push_str(&format!("{name}: {value}\r\n"));
                map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            text.push_str("content-length: 2\r\n\r\n{}");
            let Ok(Parsed::Head(head)) = parse_response_head(text.as_bytes()) else {
                panic!("not a head");
            };
            let mut kept: Vec<(String, String)> = head
                .headers
                .iter()
                .map(|(n, v)| (text[n.clone()].to_ascii_lowercase(), text[v.clone()].to_owned()))
                .collect();
            kept.sort();
            strip_hop_by_hop(&mut map);
            let mut expected: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            expected.sort();
            prop_assert_eq!(kept, expected);
        }
    }

    fn head(text: &str) -> ResponseHead {
        match parse_response_head(text.as_bytes()).unwrap() {
            Parsed::Head(head) => head,
            other => panic!("not a head: {other:?}"),
        }
    }

    fn names<'a>(text: &'a str, head: &ResponseHead) -> Vec<&'a str> {
        head.headers
            .iter()
            .map(|(name, _)| &text[name.clone()])
            .collect()
    }

    #[test]
    fn length_framed_answer_keeps_its_end_to_end_headers() {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nKeep-Alive: timeout=5\r\nx-request-id: r1\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n{\"usage\":{}}";
        let head = head(text);
        assert_eq!(head.status, 200);
        assert_eq!(&text[head.reason.clone()], "OK");
        assert_eq!(head.framing, Framing::Length(12));
        assert!(head.reusable);
        assert!(head.has_date);
        assert_eq!(&text[head.head_len..], "{\"usage\":{}}");
        assert_eq!(
            &text[head.content_type.clone().unwrap()],
            "application/json"
        );
        assert_eq!(names(text, &head), ["Content-Type", "x-request-id", "Date"]);
    }

    #[test]
    fn chunked_close_and_connection_listed_headers() {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nProxy-Status: p\r\nx-kept: 2\r\n\r\n";
        let head = head(text);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.reusable);
        assert_eq!(names(text, &head), ["x-kept"]);
    }

    #[test]
    fn framing_by_status_version_and_headers() {
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        let close = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(close.framing, Framing::UntilClose);
        assert!(!close.reusable);
        let old = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(old.framing, Framing::Length(2));
        assert!(!old.reusable, "HTTP/1.0 connections are not kept");
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").framing,
            Framing::UntilClose
        );
    }

    #[test]
    fn a_missing_or_empty_reason_is_an_empty_range() {
        for text in [
            "HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 \r\n\r\n",
        ] {
            let head = head(text);
            assert_eq!(&text[head.reason.clone()], "", "{text:?}");
        }
    }

    #[test]
    fn interim_partial_and_malformed_heads() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            Ok(Parsed::Interim(25))
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(Parsed::Partial)
        );
        assert_eq!(
            parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(Malformed::Syntax)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 101 Switching\r\nupgrade: h2c\r\n\r\n"),
            Err(Malformed::Upgrade)
        );
        for lengths in [
            "content-length: 1\r\ncontent-length: 2",
            "content-length: -1",
            "content-length: 1x",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\n{lengths}\r\n\r\n");
            assert_eq!(
                parse_response_head(text.as_bytes()),
                Err(Malformed::Length),
                "{lengths}"
            );
        }
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n").framing,
            Framing::Length(3)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n"),
            Err(Malformed::Length)
        );
        let beside = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 9x\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(head(beside).framing, Framing::Chunked);
        for refused in [
            "HTTP/1.1 042 Odd\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                parse_response_head(refused.as_bytes()),
                Err(Malformed::Syntax),
                "{refused:?}"
            );
        }
    }
}
