//! Provider kinds and pre-parsed upstream configurations.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use compresh_vault::ProviderSecret;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::uri::{Authority, Scheme};
use http::Uri;
use zeroize::Zeroizing;

use crate::ForwardError;

/// The `x-api-key` header Anthropic authenticates with.
pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The API family a provider speaks; decides the auth header and the path mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI (`https://api.openai.com/v1`, `Authorization: Bearer <key>`).
    OpenAi,
    /// Anthropic (`https://api.anthropic.com`, `x-api-key: <key>`, `anthropic-version`).
    Anthropic,
    /// Any server implementing the OpenAI API; base URL required, key optional.
    OpenAiCompatible,
}

impl ProviderKind {
    /// The configuration name: `"openai"`, `"anthropic"` or `"openai-compatible"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAiCompatible => "openai-compatible",
        }
    }

    /// The public API base URL, or `None` for `openai-compatible` (which has no default).
    ///
    /// OpenAI-family bases include `/v1`, the Anthropic base does not (like the official SDKs).
    pub fn default_base_url(&self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::OpenAiCompatible => None,
        }
    }
}

impl FromStr for ProviderKind {
    type Err = ForwardError;

    /// Parses the exact configuration names returned by [`ProviderKind::as_str`].
    ///
    /// # Errors
    ///
    /// [`ForwardError::UnknownKind`] for any other string.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            "openai-compatible" => Ok(ProviderKind::OpenAiCompatible),
            other => Err(ForwardError::UnknownKind {
                kind: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured provider account: where to send requests and how to authenticate them.
///
/// Everything `forward` needs (scheme, authority, path prefix, `Host` value, the credential
/// header) is parsed once here. Cloning is cheap (an `Arc`). `Debug` never shows the key.
///
/// The credential header value is a copy of the provider key held in an `http::HeaderValue`
/// marked sensitive (so HTTP/2 never HPACK-indexes it); `HeaderValue` cannot be zeroized, so
/// that one copy lives as long as the `Upstream`. The temporary buffer used to build it is
/// zeroized.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<UpstreamInner>,
}

struct UpstreamInner {
    name: String,
    kind: ProviderKind,
    base_url: String,
    scheme: Scheme,
    authority: Authority,
    /// Path every target starts with, without trailing slash: the base path, plus `/v1` for
    /// Anthropic. Empty for a base like `http://host:8000` of an openai-compatible server.
    path_prefix: String,
    host: HeaderValue,
    credential: Option<(HeaderName, HeaderValue)>,
    /// The targets of [`COMMON_PATHS`], built once: cloning one is two reference-count
    /// increments where building it allocated and parsed per request.
    common: Vec<(&'static str, Uri)>,
}

/// Client paths (after `/v1/`, without a query) that SDKs send most, whose targets every
/// [`Upstream`] pre-builds.
const COMMON_PATHS: [&str; 6] = [
    "chat/completions",
    "messages",
    "models",
    "embeddings",
    "completions",
    "responses",
];

impl Upstream {
    /// Validates and pre-parses a provider configuration.
    ///
    /// `base_url` overrides the kind's default (required for `openai-compatible`); a trailing
    /// slash is ignored. `secret` is required for `openai` and `anthropic`, optional for
    /// `openai-compatible` (an empty key counts as none).
    ///
    /// # Errors
    ///
    /// [`ForwardError::InvalidUpstream`] when the base URL is missing, not an `http`/`https` URL
    /// with a host, carries credentials, a query or a fragment; when a required key is missing;
    /// or when the key contains characters that cannot appear in an HTTP header.
    pub fn new(
        name: &str,
        kind: ProviderKind,
        base_url: Option<&str>,
        secret: Option<ProviderSecret>,
    ) -> Result<Upstream, ForwardError> {
        let invalid = |reason: &'static str| ForwardError::InvalidUpstream {
            provider: name.to_owned(),
            reason,
        };
        let base = base_url
            .or_else(|| kind.default_base_url())
            .ok_or_else(|| invalid("a base URL is required for openai-compatible providers"))?
            .trim();
        if base.contains('#') {
            return Err(invalid("the base URL must not have a fragment"));
        }
        let uri: Uri = base
            .parse()
            .map_err(|_| invalid("the base URL is not a valid URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(invalid("the base URL must start with http:// or https://")),
        };
        let authority = match uri.authority() {
            Some(a) if !a.host().is_empty() => a.clone(),
            _ => return Err(invalid("the base URL has no host")),
        };
        if authority.as_str().contains('@') {
            return Err(invalid("the base URL must not contain credentials"));
        }
        if uri.query().is_some() {
            return Err(invalid("the base URL must not have a query"));
        }
        let mut path_prefix = uri.path().trim_end_matches('/').to_owned();
        if kind == ProviderKind::Anthropic {
            path_prefix.push_str("/v1");
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("the base URL has no valid host"))?;

        let key = secret
            .as_ref()
            .map(ProviderSecret::expose_secret)
            .filter(|k| !k.is_empty());
        let bad_key = || invalid("the provider key contains characters not allowed in a header");
        let credential = match (kind, key) {
            (ProviderKind::OpenAi | ProviderKind::Anthropic, None) => {
                return Err(invalid("a provider key is required for this provider kind"));
            }
            (ProviderKind::OpenAiCompatible, None) => None,
            (ProviderKind::Anthropic, Some(key)) => {
                Some((X_API_KEY, sensitive_value(&[key]).ok_or_else(bad_key)?))
            }
            (ProviderKind::OpenAi | ProviderKind::OpenAiCompatible, Some(key)) => Some((
                AUTHORIZATION,
                sensitive_value(&["Bearer ", key]).ok_or_else(bad_key)?,
            )),
        };
        drop(secret);

        let common = COMMON_PATHS
            .iter()
            .filter_map(|rest| {
                let uri = build_target(&scheme, &authority, &path_prefix, rest).ok()?;
                Some((*rest, uri))
            })
            .collect();
        Ok(Upstream {
            inner: Arc::new(UpstreamInner {
                name: name.to_owned(),
                kind,
                base_url: base.trim_end_matches('/').to_owned(),
                scheme,
                authority,
                path_prefix,
                host,
                credential,
                common,
            }),
        })
    }

    /// The configured name, used in errors and logs.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The provider kind.
    pub fn kind(&self) -> ProviderKind {
        self.inner.kind
    }

    /// The effective base URL (the default for the kind when none was given), without a
    /// trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Whether requests carry a provider credential (always for openai and anthropic).
    pub fn has_credential(&self) -> bool {
        self.inner.credential.is_some()
    }

    /// The upstream URI for a client path_and_query like `"/v1/chat/completions?x=1"`.
    ///
    /// `/v1/<rest>` maps to `<base>/<rest>` for the OpenAI family (whose bases include `/v1`)
    /// and to `<base>/v1/<rest>` for Anthropic. The query is kept as is.
    ///
    /// # Errors
    ///
    /// [`ForwardError::InvalidPath`] when the path does not start with `/v1/`, contains a `.`
    /// or `..` segment (plain or percent-encoded), or does not form a valid URI.
    pub fn target_uri(&self, client_path_and_query: &str) -> Result<Uri, ForwardError> {
        let rest = client_path_and_query
            .strip_prefix("/v1/")
            .ok_or(ForwardError::InvalidPath)?;
        let inner = &self.inner;
        if let Some((_, uri)) = inner.common.iter().find(|(common, _)| *common == rest) {
            return Ok(uri.clone());
        }
        let path = rest.split_once('?').map_or(rest, |(path, _)| path);
        // Dot segments would let a client climb out of the base path (e.g. a gateway base of
        // `https://host/team-a/v1`); upstream servers normalise them, so refuse them here.
        if path.split('/').any(is_dot_segment) {
            return Err(ForwardError::InvalidPath);
        }
        build_target(&inner.scheme, &inner.authority, &inner.path_prefix, rest)
    }

    /// The `Host` header value (the base URL's authority).
    pub fn host_header(&self) -> &HeaderValue {
        &self.inner.host
    }

    /// The base URL's authority (`host[:port]`).
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// Whether the base URL is `http://` (no TLS, so no HTTP/2 by ALPN either).
    pub fn is_plain_http(&self) -> bool {
        self.inner.scheme == Scheme::HTTP
    }

    /// The credential header to set, if any.
    pub fn credential(&self) -> Option<&(HeaderName, HeaderValue)> {
        self.inner.credential.as_ref()
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.kind)
            .field("base_url", &self.inner.base_url)
            .field(
                "credential",
                &if self.has_credential() {
                    "[redacted]"
                } else {
                    "none"
                },
            )
            .finish()
    }
}

/// `<scheme>://<authority><path_prefix>/<rest>` (`rest`: the client's path and query after
/// `/v1/`).
fn build_target(
    scheme: &Scheme,
    authority: &Authority,
    path_prefix: &str,
    rest: &str,
) -> Result<Uri, ForwardError> {
    let mut path_and_query = String::with_capacity(path_prefix.len() + 1 + rest.len());
    path_and_query.push_str(path_prefix);
    path_and_query.push('/');
    path_and_query.push_str(rest);
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ForwardError::InvalidPath)
}

/// Builds a sensitive header value from parts, zeroizing the temporary buffer.
fn sensitive_value(parts: &[&str]) -> Option<HeaderValue> {
    let mut buf = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for part in parts {
        buf.extend_from_slice(part.as_bytes());
    }
    let mut value = HeaderValue::from_bytes(&buf).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn is_dot_segment(segment: &str) -> bool {
    if segment.len() > 6 || !(segment.contains('.') || segment.contains('%')) {
        return false;
    }
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<ProviderSecret> {
        Some(ProviderSecret::new(s.to_owned()))
    }

    fn target(up: &Upstream, pq: &str) -> String {
        up.target_uri(pq).unwrap().to_string()
    }

    #[test]
    fn kind_round_trips_through_strings() {
        for kind in [
            ProviderKind::OpenAi,
            ProviderKind::Anthropic,
            ProviderKind::OpenAiCompatible,
        ] {
            assert_eq!(kind.as_str().parse::<ProviderKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert!(matches!(
            "OpenAI".parse::<ProviderKind>(),
            Err(ForwardError::UnknownKind { kind }) if kind == "OpenAI"
        ));
    }

    #[test]
    fn default_bases() {
        assert_eq!(
            ProviderKind::OpenAi.default_base_url(),
            Some("https://api.openai.com/v1")
        );
        assert_eq!(
            ProviderKind::Anthropic.default_base_url(),
            Some("https://api.anthropic.com")
        );
        assert_eq!(ProviderKind::OpenAiCompatible.default_base_url(), None);
    }

    #[test]
    fn openai_default_mapping_keeps_query() {
        let up = Upstream::new("oa", ProviderKind::OpenAi, None, secret("sk-1")).unwrap();
        assert_eq!(up.base_url(), "https://api.openai.com/v1");
        assert_eq!(
            target(&up, "/v1/chat/completions?x=1&y=2"),
            "https://api.openai.com/v1/chat/completions?x=1&y=2"
        );
        assert_eq!(
            target(&up, "/v1/models"),
            "https://api.openai.com/v1/models"
        );
    }

    #[test]
    fn anthropic_mapping_adds_v1() {
        let up = Upstream::new("an", ProviderKind::Anthropic, None, secret("sk-ant")).unwrap();
        assert_eq!(
            target(&up, "/v1/messages?beta=true"),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        let up = Upstream::new(
            "an",
            ProviderKind::Anthropic,
            Some("http://127.0.0.1:9000/"),
            secret("sk-ant"),
        )
        .unwrap();
        assert_eq!(
            target(&up, "/v1/messages"),
            "http://127.0.0.1:9000/v1/messages"
        );
    }

    #[test]
    fn compatible_mapping_with_and_without_trailing_slash() {
        for base in ["http://localhost:8000/v1", "http://localhost:8000/v1/"] {
            let up =
                Upstream::new("vllm", ProviderKind::OpenAiCompatible, Some(base), None).unwrap();
            assert_eq!(up.base_url(), "http://localhost:8000/v1");
            assert_eq!(
                target(&up, "/v1/chat/completions?a=b"),
                "http://localhost:8000/v1/chat/completions?a=b"
            );
        }
        // A base without a path maps onto the root.
        let up = Upstream::new(
            "root",
            ProviderKind::OpenAiCompatible,
            Some("https://llm.example.com/"),
            None,
        )
        .unwrap();
        assert_eq!(
            target(&up, "/v1/embeddings"),
            "https://llm.example.com/embeddings"
        );
    }

    #[test]
    fn prebuilt_targets_match_built_ones() {
        let upstreams = [
            Upstream::new("oa", ProviderKind::OpenAi, None, secret("k")).unwrap(),
            Upstream::new("an", ProviderKind::Anthropic, None, secret("k")).unwrap(),
            Upstream::new(
                "c",
                ProviderKind::OpenAiCompatible,
                Some("http://127.0.0.1:9/team/v1/"),
                None,
            )
            .unwrap(),
        ];
        for up in &upstreams {
            assert_eq!(up.inner.common.len(), COMMON_PATHS.len());
            for rest in COMMON_PATHS {
                let inner = &up.inner;
                let built = build_target(&inner.scheme, &inner.authority, &inner.path_prefix, rest)
                    .unwrap();
                assert_eq!(up.target_uri(&format!("/v1/{rest}")).unwrap(), built);
            }
        }
        assert_eq!(
            target(&upstreams[2], "/v1/chat/completions"),
            "http://127.0.0.1:9/team/v1/chat/completions"
        );
        assert_eq!(
            target(&upstreams[1], "/v1/messages"),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn paths_outside_v1_are_rejected() {
        let up = Upstream::new("oa", ProviderKind::OpenAi, None, secret("sk-1")).unwrap();
        for pq in [
            "/chat/completions",
            "/v1",
            "/v2/models",
            "v1/models",
            "/v1x/models",
            "",
            "/v1/../admin",
            "/v1/a/./b",
            "/v1/%2E%2e/admin",
            "/v1/models/..?x=1",
        ] {
            assert!(
                matches!(up.target_uri(pq), Err(ForwardError::InvalidPath)),
                "{pq:?} should be rejected"
            );
        }
        // Dots inside a segment are fine.
        assert_eq!(
            target(&up, "/v1/files/file-1.jsonl"),
            "https://api.openai.com/v1/files/file-1.jsonl"
        );
    }

    #[test]
    fn validation_rules() {
        let err = |kind, base: Option<&str>, key: Option<ProviderSecret>| match Upstream::new(
            "p", kind, base, key,
        ) {
            Err(ForwardError::InvalidUpstream { provider, reason }) => {
                assert_eq!(provider, "p");
                reason
            }
            other => panic!("expected InvalidUpstream, got {other:?}"),
        };
        use ProviderKind::*;
        assert!(err(OpenAiCompatible, None, None).contains("base URL is required"));
        assert!(err(OpenAi, None, None).contains("key is required"));
        assert!(err(Anthropic, None, secret("")).contains("key is required"));
        assert!(err(OpenAi, Some("ftp://x.com/v1"), secret("k")).contains("http://"));
        let no_scheme = err(OpenAi, Some("api.openai.com/v1"), secret("k"));
        assert!(
            no_scheme.contains("http://") || no_scheme.contains("not a valid URL"),
            "{no_scheme}"
        );
        assert!(err(OpenAi, Some("not a url"), secret("k")).contains("not a valid URL"));
        assert!(err(OpenAi, Some("https://u:p@x.com/v1"), secret("k")).contains("credentials"));
        assert!(err(OpenAi, Some("https://x.com/v1?a=b"), secret("k")).contains("query"));
        assert!(err(OpenAi, Some("https://x.com/v1#f"), secret("k")).contains("fragment"));
        assert!(err(OpenAi, None, secret("sk\nx")).contains("characters"));
        // openai-compatible without a key is fine, and sends no credential.
        let up = Upstream::new("c", OpenAiCompatible, Some("http://h/v1"), None).unwrap();
        assert!(!up.has_credential());
        let up = Upstream::new("c", OpenAiCompatible, Some("http://h/v1"), secret("")).unwrap();
        assert!(!up.has_credential());
    }

    #[test]
    fn credential_headers_per_kind() {
        let up = Upstream::new("oa", ProviderKind::OpenAi, None, secret("sk-openai")).unwrap();
        let (name, value) = up.credential().unwrap();
        assert_eq!(name, AUTHORIZATION);
        assert_eq!(value, "Bearer sk-openai");
        assert!(value.is_sensitive());

        let up = Upstream::new("an", ProviderKind::Anthropic, None, secret("sk-ant")).unwrap();
        let (name, value) = up.credential().unwrap();
        assert_eq!(name, X_API_KEY);
        assert_eq!(value, "sk-ant");

        let up = Upstream::new(
            "c",
            ProviderKind::OpenAiCompatible,
            Some("http://h:1/v1"),
            secret("local-key"),
        )
        .unwrap();
        assert_eq!(up.credential().unwrap().1, "Bearer local-key");
        assert_eq!(up.host_header(), "h:1");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let up = Upstream::new(
            "oa",
            ProviderKind::OpenAi,
            None,
            secret("sk-very-secret-123"),
        )
        .unwrap();
        let dbg = format!("{up:?}");
        assert!(!dbg.contains("sk-very-secret-123"), "{dbg}");
        assert!(dbg.contains("[redacted]"), "{dbg}");
        assert!(dbg.contains("oa"), "{dbg}");
    }
}
