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
    strip_fixed_hop_by_hop(headers);
    remove_prefixed(headers, &["proxy-", "x-compresh-"]);
    for name in [
        AUTHORIZATION,
        X_API_KEY,
        COOKIE,
        X_SESSION_ID,
        HOST,
        CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    if let Some((name, value)) = upstream.credential() {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(HOST, upstream.host_header().clone());
    if upstream.kind() == ProviderKind::Anthropic && !headers.contains_key(ANTHROPIC_VERSION) {
        headers.insert(
            ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
}

/// Removes hop-by-hop headers, in place: `Connection` and every header it names,
/// `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and any `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_fixed_hop_by_hop(headers);
    remove_prefixed(headers, &["proxy-"]);
}

/// Everything of [`strip_hop_by_hop`] except the `Proxy-*` scan, so that
/// [`rewrite_request_headers`] can do all prefix removals in one pass over the names.
fn strip_fixed_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Removes every header whose (lowercase) name starts with one of `prefixes`.
fn remove_prefixed(headers: &mut HeaderMap, prefixes: &[&str]) {
    // An empty Vec does not allocate, so the common case (nothing to remove) is free.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| prefixes.iter().any(|p| name.as_str().starts_with(p)))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
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
