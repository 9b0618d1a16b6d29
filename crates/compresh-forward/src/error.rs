//! The crate's error type and the classification of transport failures.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use http::StatusCode;

/// Everything that can go wrong while forwarding, other than the provider answering with an error
/// status (a provider 4xx/5xx is a normal response and is passed through unchanged).
///
/// No variant carries a secret or any part of the request body, so `Display`/`Debug` are safe to
/// log. [`ForwardError::message`] is the text meant for API clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The provider could not be reached: DNS failure, connection refused, TLS failure or
    /// connect timeout. Maps to 503 `upstream_unreachable`.
    #[error("provider {provider:?} unreachable: {reason}")]
    Unreachable {
        /// Name of the upstream (as given to [`Upstream::new`](crate::Upstream::new)).
        provider: String,
        /// What kind of connect failure happened.
        reason: UnreachableReason,
    },
    /// The provider sent no response headers within the response timeout. Maps to 504
    /// `upstream_timeout`.
    #[error("provider {provider:?} sent no response within {after:?}")]
    Timeout {
        /// Name of the upstream.
        provider: String,
        /// The response timeout that elapsed.
        after: Duration,
    },
    /// The connection was established but failed (reset, closed, protocol error) before the
    /// response headers arrived. Maps to 502 `upstream_error`.
    #[error("connection to provider {provider:?} failed before a response arrived")]
    UpstreamFailed {
        /// Name of the upstream.
        provider: String,
    },
    /// The client path does not start with `/v1/` (or contains dot segments). Maps to 404
    /// `not_found`.
    #[error("only /v1/... is forwarded")]
    InvalidPath,
    /// The upstream configuration is unusable (bad base URL, missing key...). Maps to 500
    /// `provider_misconfigured`.
    #[error("provider {provider:?} is misconfigured: {reason}")]
    InvalidUpstream {
        /// Name of the upstream.
        provider: String,
        /// Which rule the configuration breaks.
        reason: &'static str,
    },
    /// A provider kind string is not one of `openai`, `anthropic`, `openai-compatible`.
    /// Maps to 400 `unknown_provider_kind`.
    #[error("unknown provider kind {kind:?} (expected openai, anthropic or openai-compatible)")]
    UnknownKind {
        /// The rejected kind string.
        kind: String,
    },
    /// The HTTP client could not be built (TLS setup, invalid configuration). Maps to 500
    /// `internal`; the detail is for the log only.
    #[error("cannot build the upstream client: {0}")]
    Client(String),
}

/// Why a provider was unreachable (see [`ForwardError::Unreachable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnreachableReason {
    /// The host name could not be resolved.
    Dns,
    /// The provider refused the TCP connection.
    Refused,
    /// The TLS handshake failed (bad certificate, protocol mismatch...).
    Tls,
    /// The TCP connection was not established within the connect timeout.
    ConnectTimeout,
    /// Any other connect failure.
    Other,
}

impl UnreachableReason {
    /// A short human description, e.g. `"connection refused"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnreachableReason::Dns => "DNS lookup failed",
            UnreachableReason::Refused => "connection refused",
            UnreachableReason::Tls => "TLS handshake failed",
            UnreachableReason::ConnectTimeout => "connect timed out",
            UnreachableReason::Other => "connection failed",
        }
    }
}

impl fmt::Display for UnreachableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ForwardError {
    /// The HTTP status the gateway should answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ForwardError::InvalidPath => StatusCode::NOT_FOUND,
            ForwardError::UnknownKind { .. } => StatusCode::BAD_REQUEST,
            ForwardError::InvalidUpstream { .. } | ForwardError::Client(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The machine-readable error code (`error.code` in the JSON body).
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::Unreachable { .. } => "upstream_unreachable",
            ForwardError::Timeout { .. } => "upstream_timeout",
            ForwardError::UpstreamFailed { .. } => "upstream_error",
            ForwardError::InvalidPath => "not_found",
            ForwardError::InvalidUpstream { .. } => "provider_misconfigured",
            ForwardError::UnknownKind { .. } => "unknown_provider_kind",
            ForwardError::Client(_) => "internal",
        }
    }

    /// The error type (`error.type` in the JSON body): `proxy_error` for everything about the
    /// upstream, `invalid_request_error` for client mistakes, `internal_error` otherwise.
    pub fn error_type(&self) -> &'static str {
        match self {
            ForwardError::Unreachable { .. }
            | ForwardError::Timeout { .. }
            | ForwardError::UpstreamFailed { .. }
            | ForwardError::InvalidUpstream { .. } => "proxy_error",
            ForwardError::InvalidPath | ForwardError::UnknownKind { .. } => "invalid_request_error",
            ForwardError::Client(_) => "internal_error",
        }
    }

    /// A message safe to show to API clients: it names the provider and the kind of failure,
    /// never a secret, the request body or internal details.
    pub fn message(&self) -> String {
        match self {
            ForwardError::Unreachable { provider, reason } => {
                format!("Could not reach provider '{provider}': {reason}.")
            }
            ForwardError::Timeout { provider, after } => format!(
                "Provider '{provider}' did not respond within {} seconds.",
                after.as_secs_f64()
            ),
            ForwardError::UpstreamFailed { provider } => {
                format!("The connection to provider '{provider}' failed before a response arrived.")
            }
            ForwardError::InvalidPath => "Only /v1/... paths are forwarded.".to_owned(),
            ForwardError::InvalidUpstream { provider, reason } => {
                format!("Provider '{provider}' is misconfigured: {reason}.")
            }
            ForwardError::UnknownKind { kind } => format!(
                "Unknown provider kind '{kind}' (expected openai, anthropic or openai-compatible)."
            ),
            ForwardError::Client(_) => "Internal error.".to_owned(),
        }
    }
}

/// Turns a client error into a [`ForwardError`]: connect-phase failures are `Unreachable` (with
/// the reason found in the source chain), anything after the connection was established is
/// `UpstreamFailed`.
pub(crate) fn classify(provider: &str, err: &hyper_util::client::legacy::Error) -> ForwardError {
    if err.is_connect() {
        ForwardError::Unreachable {
            provider: provider.to_owned(),
            reason: unreachable_reason(err),
        }
    } else {
        ForwardError::UpstreamFailed {
            provider: provider.to_owned(),
        }
    }
}

/// Walks the source chain of a connect error and reports the first recognised cause.
pub(crate) fn unreachable_reason(err: &(dyn StdError + 'static)) -> UnreachableReason {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(reason) = reason_of(e) {
            return reason;
        }
        current = next_in_chain(e);
    }
    UnreachableReason::Other
}

/// Renders an error and its sources as `a: b: c`, for logs. Plain `source()` steps here: an
/// `io::Error` already displays the error it wraps.
pub(crate) fn chain_to_string(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        out.push_str(": ");
        out.push_str(&e.to_string());
        current = e.source();
    }
    out
}

fn reason_of(e: &(dyn StdError + 'static)) -> Option<UnreachableReason> {
    if e.is::<rustls::Error>() {
        return Some(UnreachableReason::Tls);
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        match io.kind() {
            io::ErrorKind::ConnectionRefused => return Some(UnreachableReason::Refused),
            // hyper-util's HttpConnector reports its connect timeout as `TimedOut`; the OS
            // reports a SYN that was never answered the same way.
            io::ErrorKind::TimedOut => return Some(UnreachableReason::ConnectTimeout),
            _ => {}
        }
    }
    // hyper-util's `ConnectError` is not exported; its resolver failures are the ones whose
    // message is exactly "dns error" (stable since hyper 0.14).
    if e.to_string() == "dns error" {
        return Some(UnreachableReason::Dns);
    }
    None
}

/// The next error in the chain. `io::Error::source()` skips the wrapped error itself (it returns
/// the inner error's source), so for an `io::Error` we step into `get_ref()` instead; that is
/// where tokio-rustls puts the `rustls::Error` of a failed handshake.
fn next_in_chain<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if let Some(inner) = io.get_ref() {
            return Some(inner);
        }
    }
    e.source()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that looks like hyper-util's private `ConnectError`.
    #[derive(Debug)]
    struct Wrapper {
        msg: &'static str,
        cause: Box<dyn StdError + Send + Sync>,
    }

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.msg)
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.cause)
        }
    }

    fn wrap(msg: &'static str, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Wrapper {
        Wrapper {
            msg,
            cause: cause.into(),
        }
    }

    #[test]
    fn refused_is_found_deep_in_the_chain() {
        let err = wrap(
            "client error",
            wrap(
                "tcp connect error",
                io::Error::from(io::ErrorKind::ConnectionRefused),
            ),
        );
        assert_eq!(unreachable_reason(&err), UnreachableReason::Refused);
    }

    #[test]
    fn timed_out_is_a_connect_timeout() {
        let err = wrap(
            "tcp connect error",
            io::Error::new(io::ErrorKind::TimedOut, "deadline has elapsed"),
        );
        assert_eq!(unreachable_reason(&err), UnreachableReason::ConnectTimeout);
    }

    #[test]
    fn dns_error_message_is_recognised() {
        let err = wrap(
            "client error",
            wrap("dns error", io::Error::other("failed to lookup address")),
        );
        assert_eq!(unreachable_reason(&err), UnreachableReason::Dns);
    }

    #[test]
    fn rustls_error_inside_io_error_is_tls() {
        // tokio-rustls wraps handshake errors as io::Error(InvalidData, rustls::Error), and
        // io::Error::source() would skip it: this checks we step into get_ref().
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let err = wrap("client error", io);
        assert_eq!(unreachable_reason(&err), UnreachableReason::Tls);
    }

    #[test]
    fn unknown_cause_is_other() {
        let err = wrap("client error", io::Error::other("something else"));
        assert_eq!(unreachable_reason(&err), UnreachableReason::Other);
    }

    #[test]
    fn chain_is_rendered_through_io_errors() {
        let err = wrap(
            "tcp connect error",
            io::Error::new(io::ErrorKind::TimedOut, "deadline has elapsed"),
        );
        assert_eq!(
            chain_to_string(&err),
            "tcp connect error: deadline has elapsed"
        );
    }

    #[test]
    fn statuses_codes_and_types() {
        let p = || "openai-main".to_owned();
        let cases = [
            (
                ForwardError::Unreachable {
                    provider: p(),
                    reason: UnreachableReason::Refused,
                },
                503,
                "upstream_unreachable",
                "proxy_error",
            ),
            (
                ForwardError::Timeout {
                    provider: p(),
                    after: Duration::from_secs(600),
                },
                504,
                "upstream_timeout",
                "proxy_error",
            ),
            (
                ForwardError::UpstreamFailed { provider: p() },
                502,
                "upstream_error",
                "proxy_error",
            ),
            (
                ForwardError::InvalidPath,
                404,
                "not_found",
                "invalid_request_error",
            ),
            (
                ForwardError::InvalidUpstream {
                    provider: p(),
                    reason: "x",
                },
                500,
                "provider_misconfigured",
                "proxy_error",
            ),
            (
                ForwardError::UnknownKind { kind: "x".into() },
                400,
                "unknown_provider_kind",
                "invalid_request_error",
            ),
            (
                ForwardError::Client("tls".into()),
                500,
                "internal",
                "internal_error",
            ),
        ];
        for (err, status, code, ty) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.error_type(), ty, "{err:?}");
        }
    }

    #[test]
    fn messages_name_provider_and_failure() {
        let err = ForwardError::Unreachable {
            provider: "openai-main".into(),
            reason: UnreachableReason::Refused,
        };
        assert_eq!(
            err.message(),
            "Could not reach provider 'openai-main': connection refused."
        );
        let err = ForwardError::Timeout {
            provider: "claude".into(),
            after: Duration::from_millis(300),
        };
        assert_eq!(
            err.message(),
            "Provider 'claude' did not respond within 0.3 seconds."
        );
        let err = ForwardError::UpstreamFailed {
            provider: "local".into(),
        };
        assert!(err.message().contains("'local'"));
        assert!(err.message().contains("failed"));
    }

    #[test]
    fn client_error_detail_stays_out_of_the_message() {
        let err = ForwardError::Client("rustls: no protocol versions".into());
        assert_eq!(err.message(), "Internal error.");
        assert!(err.to_string().contains("no protocol versions"));
    }
}
