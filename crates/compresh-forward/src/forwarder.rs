//! The pooled HTTP client and the forwarding call.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::affinity::{Affine, Failure};
use crate::error::{chain_to_string, classify, unreachable_reason};
use crate::tls::{client_config, TimeoutConnector};
use crate::wire::{AnswerWaits, WireConnection};
use crate::{rewrite_request_headers, strip_hop_by_hop, ForwardError, Upstream, UpstreamAffinity};

/// Timeouts, pool and TLS settings of a [`Forwarder`].
#[derive(Clone)]
pub struct ForwardConfig {
    /// Maximum time to establish a connection: DNS, TCP connect and the TLS handshake together
    /// (the TCP part is also capped per address tried). Default 10 s.
    pub connect_timeout: Duration,
    /// Maximum time from sending the request to receiving the response headers (includes the
    /// connect). Long by default (600 s) because non-streaming LLM answers can be slow. The body
    /// is not subject to it.
    pub response_timeout: Duration,
    /// How long an idle keep-alive connection stays in the pool. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host. Default 64.
    pub pool_max_idle_per_host: usize,
    /// CA certificates (DER) trusted in addition to the Mozilla roots, e.g. an internal CA in
    /// front of a self-hosted OpenAI-compatible server. Default none. See
    /// [`parse_certificates`](crate::parse_certificates) to read a PEM or DER file.
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// How long a [`WireConnection`](crate::wire::WireConnection) polls for an answer before
    /// it parks its task, while the upstream's answers typically start within that time.
    /// Saves a halted CPU's wake-up per request (tens of µs on a virtual machine) for a gateway
    /// on cores of its own in front of an upstream that answers within microseconds; costs the
    /// polled time in CPU, and on a shared core delays the upstream itself. Default zero: off.
    pub answer_poll: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            extra_root_certificates: Vec::new(),
            answer_poll: Duration::ZERO,
        }
    }
}

impl fmt::Debug for ForwardConfig {
    /// Certificates are shown as a count: their bytes say nothing to a reader of a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field(
                "extra_root_certificates",
                &self.extra_root_certificates.len(),
            )
            .field("answer_poll", &self.answer_poll)
            .finish()
    }
}

/// The process-wide forwarding client: one connection pool (keep-alive, HTTP/1.1 and HTTP/2 via
/// ALPN over TLS, plain HTTP for local servers). Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<TimeoutConnector, Full<Bytes>>,
    /// Connects the per-client-connection upstream connections (plain HTTP only).
    plain: HttpConnector,
    config: ForwardConfig,
    /// Answers awaited on the raw lane's connections (for answer polling).
    answer_waits: AnswerWaits,
}

impl Forwarder {
    /// Builds the client. TLS uses rustls with the `ring` provider passed explicitly (no
    /// process-level default `CryptoProvider` is needed), the Mozilla (webpki) roots and
    /// [`ForwardConfig::extra_root_certificates`].
    ///
    /// Does not need a Tokio runtime; `forward` does.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Client`] when `connect_timeout` or `response_timeout` is zero, when an
    /// extra root certificate is not a valid DER certificate, or when the TLS configuration
    /// cannot be built.
    pub fn new(config: ForwardConfig) -> Result<Forwarder, ForwardError> {
        if config.connect_timeout.is_zero() || config.response_timeout.is_zero() {
            return Err(ForwardError::Client(
                "connect_timeout and response_timeout must be non-zero".to_owned(),
            ));
        }
        let mut plain = HttpConnector::new();
        plain.set_connect_timeout(Some(config.connect_timeout));
        // Streaming answers are many small writes from the provider; requests are one write.
        plain.set_nodelay(true);
        let mut http = plain.clone();
        // The HTTPS connector hands us https:// URIs too.
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(client_config(&config.extra_root_certificates)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = TimeoutConnector::new(https, config.connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            // Without a pool timer the idle timeout is never enforced.
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Forwarder {
            inner: Arc::new(Inner {
                client,
                plain,
                config,
                answer_waits: AnswerWaits::default(),
            }),
        })
    }

    /// The configuration this forwarder was built with.
    pub fn config(&self) -> &ForwardConfig {
        &self.inner.config
    }

    /// Opens a raw-lane connection to `upstream` (plain HTTP; the caller checked
    /// [`Upstream::is_plain_http`]) with this forwarder's connect timeout and answer polling.
    ///
    /// # Errors
    /// [`ForwardError::Unreachable`] when the connection cannot be made within the connect
    /// timeout.
    pub async fn connect_wire(&self, upstream: &Upstream) -> Result<WireConnection, ForwardError> {
        WireConnection::connect(
            upstream,
            &self.inner.config,
            self.inner.answer_waits.clone(),
        )
        .await
    }

    /// Sends the client's request to `upstream` and returns the provider's response as soon as
    /// its headers arrive.
    ///
    /// `request` is the client's request head (method, uri = client path+query, headers);
    /// `body` the full client body (already read by the caller, who may have rewritten it).
    /// The headers are rewritten with [`rewrite_request_headers`]; the response keeps the
    /// provider's status, headers minus hop-by-hop ones, and its body as hyper's [`Incoming`],
    /// which streams frame by frame. Provider 4xx/5xx are returned as `Ok`. Dropping the body
    /// before its end closes the upstream connection.
    ///
    /// # Errors
    ///
    /// [`ForwardError::InvalidPath`] when the path is not `/v1/...`;
    /// [`ForwardError::Unreachable`] when connecting fails (DNS, refused, TLS, connect timeout);
    /// [`ForwardError::Timeout`] when no response headers arrive within `response_timeout`;
    /// [`ForwardError::UpstreamFailed`] when the connection breaks before the headers.
    pub async fn forward(
        &self,
        upstream: &Upstream,
        request: Parts,
        body: Bytes,
    ) -> Result<Response<Incoming>, ForwardError> {
        self.forward_with(None, upstream, request, body).await
    }

    /// [`Forwarder::forward`] for a request of the client connection that `affinity` belongs
    /// to: a plain `http://` upstream is reached over that client connection's own upstream
    /// connection when it is idle (see [`UpstreamAffinity`]); anything else, or `None`, goes
    /// through the shared pool. Same response, timeouts and errors either way.
    ///
    /// # Errors
    ///
    /// As [`Forwarder::forward`].
    pub async fn forward_with(
        &self,
        affinity: Option<&UpstreamAffinity>,
        upstream: &Upstream,
        request: Parts,
        body: Bytes,
    ) -> Result<Response<Incoming>, ForwardError> {
        let path_and_query = request
            .uri
            .path_and_query()
            .ok_or(ForwardError::InvalidPath)?;
        let uri = upstream.target_uri(path_and_query.as_str())?;
        let mut headers = request.headers;
        rewrite_request_headers(&mut headers, upstream);

        // A fresh request: default version (HTTP/1.1; the pool upgrades to HTTP/2 by ALPN) and
        // none of the client connection's extensions.
        let mut outgoing = Request::new(Full::new(body));
        *outgoing.method_mut() = request.method;
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = headers;

        let timeout = self.inner.config.response_timeout;
        // HTTPS stays pooled: HTTP/2 by ALPN multiplexes requests of many client connections.
        let affinity = affinity.filter(|_| upstream.is_plain_http());
        let result = tokio::time::timeout(timeout, self.send(affinity, upstream, outgoing)).await;
        let mut response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(failure)) => {
                let (error, cause) = match &failure {
                    Failure::Pool(err) => (classify(upstream.name(), err), chain_to_string(err)),
                    Failure::Connect(err) => (
                        ForwardError::Unreachable {
                            provider: upstream.name().to_owned(),
                            reason: unreachable_reason(&**err),
                        },
                        chain_to_string(&**err),
                    ),
                    Failure::Upstream(err) => (
                        ForwardError::UpstreamFailed {
                            provider: upstream.name().to_owned(),
                        },
                        chain_to_string(err),
                    ),
                };
                tracing::warn!(
                    provider = upstream.name(),
                    code = error.code(),
                    cause = %cause,
                    "upstream request failed"
                );
                return Err(error);
            }
            Err(_elapsed) => {
                tracing::warn!(
                    provider = upstream.name(),
                    timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    "upstream response timed out"
                );
                // Dropping the request future abandons the connection; hyper closes it.
                return Err(ForwardError::Timeout {
                    provider: upstream.name().to_owned(),
                    after: timeout,
                });
            }
        };
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // No forwarded request asks for an upgrade, and a client could not use the
            // switched connection (RFC 9110 §15.2.2).
            tracing::warn!(
                provider = upstream.name(),
                "upstream switched protocols unasked"
            );
            return Err(ForwardError::UpstreamFailed {
                provider: upstream.name().to_owned(),
            });
        }
        if response
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING)
        {
            // A length beside `Transfer-Encoding` is void (RFC 9112 §6.3): hyper read the body by
            // its chunks, and relaying the length would cut the client's copy short.
            response.headers_mut().remove(http::header::CONTENT_LENGTH);
        }
        strip_hop_by_hop(response.headers_mut());
        // The upstream's HTTP version (1.0, 2) describes the upstream hop only; the client's
        // connection decides its own, and hyper would otherwise answer an HTTP/1.1 client with
        // an `HTTP/1.0` status line.
        *response.version_mut() = http::Version::default();
        tracing::debug!(
            provider = upstream.name(),
            status = response.status().as_u16(),
            "upstream responded"
        );
        Ok(response)
    }
}

impl Forwarder {
    /// Connect + send + wait for the headers, on the affine connection when possible.
    async fn send(
        &self,
        affinity: Option<&UpstreamAffinity>,
        upstream: &Upstream,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Failure> {
        let request = match affinity {
            Some(affinity) => {
                let config = &self.inner.config;
                match affinity
                    .send(
                        &self.inner.plain,
                        config.connect_timeout,
                        config.pool_idle_timeout,
                        upstream.authority(),
                        request,
                    )
                    .await
                {
                    Affine::Done(result) => return result,
                    Affine::UsePool(request) => request,
                }
            }
            None => request,
        };
        self.inner
            .client
            .request(request)
            .await
            .map_err(Failure::Pool)
    }
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = ForwardConfig::default();
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.response_timeout, Duration::from_secs(600));
        assert_eq!(c.pool_idle_timeout, Duration::from_secs(90));
        assert!(c.pool_max_idle_per_host > 0);
    }

    #[test]
    fn builds_without_a_runtime_or_global_crypto_provider() {
        let f = Forwarder::new(ForwardConfig::default()).unwrap();
        let clone = f.clone();
        assert!(Arc::ptr_eq(&f.inner, &clone.inner));
        assert!(format!("{f:?}").contains("Forwarder"));
    }

    #[test]
    fn zero_timeouts_are_rejected() {
        let config = ForwardConfig {
            response_timeout: Duration::ZERO,
            ..ForwardConfig::default()
        };
        assert!(matches!(
            Forwarder::new(config),
            Err(ForwardError::Client(_))
        ));
    }
}
