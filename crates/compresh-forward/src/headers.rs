//! Header hygiene for both directions.

use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

use crate::provider::X_API_KEY;
use crate::{ProviderKind, Upstream};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// The API version sent to Anthropic when the client did not pick one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Rewrites a client's request headers, in place, for `upstream`.
///
/// Removes hop-by-hop headers (see [`strip_hop_by_hop`]), the client's credentials
/// (`Authorization`, `x-api-key`, `Cookie`), the gateway's own headers (`X-Session-Id`, any
/// `X-Compresh-*`), `Host` and `Content-Length` (hyper recomputes the length from the body);
/// then sets the provider credential and `Host`, and for Anthropic adds
/// `anthropic-version: 2023-06-01` unless the client sent one. Everything else (user-agent,
/// content-type, accept, openai-organization, x-stainless-*, anthropic-beta...) is kept.
pub fn rewrite_request_headers(headers: &mut HeaderMap, upstream: &Upstream) {
    let credential = upstream.credential();
    let mut doomed = scan(headers, Direction::Request);
    // `insert` below replaces every value of its name in place, so removing `Host` or the
    // header the provider credential goes into first would only cost another hash and probe.
    doomed.fixed &= !HOST_BIT;
    if let Some((name, _)) = credential {
        doomed.fixed &= !fixed_bit(name.as_str().as_bytes(), Direction::Request);
    }
    doomed.remove_from(headers);
    if let Some((name, value)) = credential {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(HOST, upstream.host_header().clone());
    if needs_anthropic_version(upstream, headers.contains_key(ANTHROPIC_VERSION)) {
        headers.insert(
            ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
}

/// Removes hop-by-hop headers, in place: `Connection` and every header it names,
/// `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and any `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    scan(headers, Direction::Response).remove_from(headers);
}

/// Which removal rules apply: hop-by-hop only (responses), or also the client's credentials
/// and the gateway's own headers (requests to the provider).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// The fixed names [`scan`] looks for, one bit each (a `static`: indexing a `const` array
/// copies all of it first).
static FIXED: [HeaderName; 12] = [
    CONNECTION,
    KEEP_ALIVE,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    AUTHORIZATION,
    X_API_KEY,
    COOKIE,
    X_SESSION_ID,
    HOST,
    CONTENT_LENGTH,
];
/// Bits of [`FIXED`] removed in both directions (the hop-by-hop headers).
const HOP_BY_HOP_BITS: u16 = 0b11_1111;
const CONNECTION_BIT: u16 = 1;
const HOST_BIT: u16 = 1 << 10;

/// The bit of a fixed name to remove in `direction`, or 0. Case-insensitive: a
/// [`HeaderName`] is lowercase already, a name parsed off the wire ([`crate::wire`]) may not be.
fn fixed_bit(name: &[u8], direction: Direction) -> u16 {
    // Dispatch on the length first: one comparison per header instead of twelve.
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    let bit = match name.len() {
        10 if is(b"connection") => 1,
        10 if is(b"keep-alive") => 1 << 1,
        2 if is(b"te") => 1 << 2,
        7 if is(b"trailer") => 1 << 3,
        17 if is(b"transfer-encoding") => 1 << 4,
        7 if is(b"upgrade") => 1 << 5,
        13 if is(b"authorization") => 1 << 6,
        9 if is(b"x-api-key") => 1 << 7,
        6 if is(b"cookie") => 1 << 8,
        12 if is(b"x-session-id") => 1 << 9,
        4 if is(b"host") => HOST_BIT,
        14 if is(b"content-length") => 1 << 11,
        _ => 0,
    };
    match direction {
        Direction::Request => bit,
        Direction::Response => bit & HOP_BY_HOP_BITS,
    }
}

/// The headers of a map to remove: fixed names as bits, anything else (names a `Connection`
/// header lists, `Proxy-*`, `X-Compresh-*`) in a list that stays empty, and so unallocated, in
/// the common case.
struct Doomed {
    fixed: u16,
    other: Vec<HeaderName>,
}

impl Doomed {
    fn remove_from(self, headers: &mut HeaderMap) {
        let mut fixed = self.fixed;
        while fixed != 0 {
            headers.remove(&FIXED[fixed.trailing_zeros() as usize]);
            // Clear the lowest set bit.
            fixed &= fixed - 1;
        }
        for name in self.other {
            headers.remove(name);
        }
    }
}

/// `Proxy-*` headers are hop-by-hop; `X-Compresh-*` are the gateway's own and never reach a
/// provider.
fn dropped_by_prefix(name: &[u8], direction: Direction) -> bool {
    let starts = |prefix: &[u8]| {
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts(b"proxy-") || (direction == Direction::Request && starts(b"x-compresh-"))
}

/// Whether [`rewrite_request_headers`] drops or replaces a client header of this name (any
/// case), leaving aside the names a `Connection` header lists: the same rules for a request that
/// never becomes a [`HeaderMap`] (see [`crate::wire`]).
pub(crate) fn request_drops(name: &[u8]) -> bool {
    fixed_bit(name, Direction::Request) != 0 || dropped_by_prefix(name, Direction::Request)
}

/// Whether [`strip_hop_by_hop`] drops a response header of this name (any case), leaving aside
/// the names a `Connection` header lists.
pub(crate) fn response_drops(name: &[u8]) -> bool {
    fixed_bit(name, Direction::Response) != 0 || dropped_by_prefix(name, Direction::Response)
}

/// The `Anthropic-Version` default applies (see [`rewrite_request_headers`]).
pub(crate) fn needs_anthropic_version(upstream: &Upstream, client_sent_one: bool) -> bool {
    upstream.kind() == ProviderKind::Anthropic && !client_sent_one
}

/// One pass over the names (no hashing) deciding what to remove, so that absent headers cost
/// no `HeaderMap::remove` lookups.
fn scan(headers: &HeaderMap, direction: Direction) -> Doomed {
    let mut doomed = Doomed {
        fixed: 0,
        other: Vec::new(),
    };
    for name in headers.keys() {
        let text = name.as_str();
        let bit = fixed_bit(text.as_bytes(), direction);
        if bit != 0 {
            doomed.fixed |= bit;
        } else if dropped_by_prefix(text.as_bytes(), direction) {
            doomed.other.push(name.clone());
        }
    }
    if doomed.fixed & CONNECTION_BIT != 0 {
        doomed.other.extend(
            headers
                .get_all(CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok()),
        );
    }
    doomed
}

#[cfg(test)]
mod tests {
    use compresh_vault::ProviderSecret;

    use super::*;

    fn upstream(kind: ProviderKind, base: Option<&str>, key: Option<&str>) -> Upstream {
        Upstream::new(
            "p",
            kind,
            base,
            key.map(|k| ProviderSecret::new(k.to_owned())),
        )
        .unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-other"),
            ("x-custom-hop", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }

    #[test]
    fn each_fixed_name_has_its_own_bit() {
        for (index, name) in FIXED.iter().enumerate() {
            let name = name.as_str().as_bytes();
            assert_eq!(fixed_bit(name, Direction::Request), 1 << index);
            let upper = name.to_ascii_uppercase();
            assert_eq!(fixed_bit(&upper, Direction::Request), 1 << index);
            let hop_by_hop = fixed_bit(name, Direction::Response) != 0;
            assert_eq!(hop_by_hop, HOP_BY_HOP_BITS & (1 << index) != 0, "{name:?}");
        }
        assert_eq!(FIXED[CONNECTION_BIT.trailing_zeros() as usize], CONNECTION);
        assert_eq!(FIXED[HOST_BIT.trailing_zeros() as usize], HOST);
        assert_eq!(fixed_bit(b"x-custom", Direction::Request), 0);
        assert!(request_drops(b"X-Compresh-Debug") && request_drops(b"Proxy-Authorization"));
        assert!(!response_drops(b"X-Compresh-Session-Id") && response_drops(b"PROXY-STATUS"));
    }

    #[test]
    fn responses_keep_everything_but_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "close"),
            ("x-compresh-session-id", "s"),
            ("authorization", "x"),
            ("content-length", "2"),
            ("proxy-status", "p"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["authorization", "content-length", "x-compresh-session-id"]
        );
    }

    #[test]
    fn repeated_and_connection_named_credentials_are_replaced_once() {
        let up = upstream(ProviderKind::OpenAi, None, Some("sk-provider"));
        let mut h = map(&[
            ("authorization", "Bearer comp_a"),
            ("authorization", "Bearer comp_b"),
            ("host", "a"),
            ("host", "b"),
            ("connection", "authorization, Host"),
            ("x-stainless-lang", "python"),
        ]);
        rewrite_request_headers(&mut h, &up);
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert_eq!(h["authorization"], "Bearer sk-provider");
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(h["host"], "api.openai.com");
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "host", "x-stainless-lang"]);
    }

    #[test]
    fn client_credentials_and_gateway_headers_are_replaced() {
        let up = upstream(ProviderKind::OpenAi, None, Some("sk-provider"));
        let mut h = map(&[
            ("authorization", "Bearer comp_client_key"),
            ("x-api-key", "comp_client_key"),
            ("cookie", "session=abc"),
            ("x-session-id", "s1"),
            ("x-compresh-trace", "t"),
            ("X-Compresh-Debug", "1"),
            ("host", "gateway.example.com"),
            ("content-length", "999"),
            ("user-agent", "OpenAI/Python 1.0"),
            ("openai-organization", "org-1"),
            ("x-stainless-lang", "python"),
            ("accept", "text/event-stream"),
        ]);
        rewrite_request_headers(&mut h, &up);
        assert_eq!(h["authorization"], "Bearer sk-provider");
        assert_eq!(h["host"], "api.openai.com");
        for gone in [
            "x-api-key",
            "cookie",
            "x-session-id",
            "x-compresh-trace",
            "x-compresh-debug",
            "content-length",
            "anthropic-version",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["user-agent"], "OpenAI/Python 1.0");
        assert_eq!(h["openai-organization"], "org-1");
        assert_eq!(h["x-stainless-lang"], "python");
        assert_eq!(h["accept"], "text/event-stream");
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert!(h
            .values()
            .all(|v| !v.as_bytes().windows(5).any(|w| w == b"comp_")));
    }

    #[test]
    fn anthropic_gets_api_key_and_default_version() {
        let up = upstream(ProviderKind::Anthropic, None, Some("sk-ant"));
        let mut h = map(&[
            ("authorization", "Bearer comp_x"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
        ]);
        rewrite_request_headers(&mut h, &up);
        assert_eq!(h["x-api-key"], "sk-ant");
        assert!(!h.contains_key("authorization"));
        assert_eq!(h["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
        assert_eq!(h["anthropic-beta"], "prompt-caching-2024-07-31");
        assert_eq!(h["host"], "api.anthropic.com");

        let mut h = map(&[("anthropic-version", "2024-01-01")]);
        rewrite_request_headers(&mut h, &up);
        assert_eq!(h["anthropic-version"], "2024-01-01");
        assert_eq!(h.get_all("anthropic-version").iter().count(), 1);
    }

    #[test]
    fn keyless_compatible_sends_no_credential() {
        let up = upstream(
            ProviderKind::OpenAiCompatible,
            Some("http://127.0.0.1:8000/v1"),
            None,
        );
        let mut h = map(&[("authorization", "Bearer comp_x"), ("x-api-key", "comp_x")]);
        rewrite_request_headers(&mut h, &up);
        assert!(!h.contains_key("authorization"));
        assert!(!h.contains_key("x-api-key"));
        assert_eq!(h["host"], "127.0.0.1:8000");
    }
}
