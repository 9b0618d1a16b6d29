//! Upstream forwarding for the Compresh gateway.
//!
//! Takes a request the gateway has already authenticated and sends it to the account's
//! provider (OpenAI, Anthropic or any OpenAI-compatible server), returning the provider's answer
//! unchanged and as it arrives: the response body is hyper's [`hyper::body::Incoming`], so
//! server-sent events stream through frame by frame, and dropping it closes the upstream
//! connection.
//!
//! # Rules
//!
//! - **Credentials are swapped, never mixed.** The client's `Authorization`, `x-api-key` and
//!   `Cookie` are removed (a `comp_` key never reaches a provider), then the provider credential
//!   is set: `Authorization: Bearer <key>` for the OpenAI family, `x-api-key: <key>` for
//!   Anthropic (plus `anthropic-version: 2023-06-01` when the client sent none).
//! - **Headers are otherwise kept**, except hop-by-hop ones, our own (`X-Session-Id`,
//!   `X-Compresh-*`), `Host` and `Content-Length` (recomputed). See [`rewrite_request_headers`].
//! - **Paths mirror the SDKs.** `/v1/<rest>` goes to `<base>/<rest>` for the OpenAI family (bases
//!   include `/v1`) and to `<base>/v1/<rest>` for Anthropic. Anything else is
//!   [`ForwardError::InvalidPath`].
//! - **Provider errors are answers.** A 4xx/5xx from the provider is returned as `Ok`,
//!   byte for byte. [`ForwardError`] is only for our own failures, classified by walking the
//!   error's source chain: unreachable (503), no headers in time (504), connection broken before
//!   the headers (502).
//!
//! # Design decisions
//!
//! - [`Upstream`] pre-parses everything at configuration time (URI parts, `Host`, the credential
//!   header), so [`Forwarder::forward`] only concatenates a path and clones a few headers.
//! - One [`Forwarder`] per process: a single hyper-util pool shared by clones (keep-alive,
//!   HTTP/1.1 + HTTP/2 by ALPN, several requests multiplexed on one HTTP/2 connection). TLS is
//!   rustls with the `ring` provider passed explicitly, so no process-level `CryptoProvider`
//!   must be installed, and the Mozilla roots (no OS dependency) plus any
//!   [`ForwardConfig::extra_root_certificates`] (an internal CA in front of a self-hosted
//!   server; [`parse_certificates`] reads a PEM or DER file).
//! - **Affinity for plain-HTTP upstreams.** The server gives each client connection an
//!   [`UpstreamAffinity`] and runs the connection through [`UpstreamAffinity::drive`];
//!   [`Forwarder::forward_with`] then sends a request for an `http://` upstream (a local
//!   OpenAI-compatible server, a sidecar) over that client connection's own HTTP/1 upstream
//!   connection, which the client connection's task polls itself: no pool checkout, dispatch
//!   channel or hand-off between tasks (about 6 k fewer instructions per proxied request,
//!   ~5 %). It is used only when that connection is idle and ready at once and goes to the
//!   same upstream; an HTTP/2 client's concurrent requests, a second upstream or a connect in
//!   progress go through the pool, so no request waits behind another. A request that comes
//!   back unsent (the provider closed the idle connection as it was sent) is sent once more
//!   through the pool; one already written is never resent. The connection is closed with the
//!   client connection, when the provider closes it, when a response body is dropped early,
//!   and after `pool_idle_timeout` to twice that without use. Timeouts, error classification
//!   and response handling are the same as on the pooled path.
//! - **[`wire`] for the gateway's raw HTTP/1.1 lane.** The same header rules applied to byte
//!   slices ([`wire::write_request_head`], [`wire::parse_response_head`]), an incremental
//!   chunked decoder and a [`wire::WireConnection`] that carries one request at a time, for a
//!   server that parses its clients' requests itself and never builds `http` maps. A kept
//!   connection is reused only after a non-blocking read finds it still open and quiet; a
//!   request once written is never resent.
//! - **HTTPS stays pooled.** A TLS handshake per client connection would cost more than the
//!   pool saves, and HTTP/2 by ALPN multiplexes the requests of many client connections over
//!   few provider connections; one connection per client connection would give both up.
//! - The connect timeout covers DNS, TCP and the TLS handshake together (a wrapper around the
//!   whole HTTPS connector), so a server that accepts but never completes the handshake is a
//!   prompt 503, not a 504 after the response timeout.
//! - The response timeout covers connect + waiting for the headers only: a long stream is not
//!   cut, and the default is long (600 s) because non-streaming LLM answers can take minutes.
//! - Secrets: the provider key arrives as a [`compresh_vault::ProviderSecret`]; it is copied once
//!   into a header value marked sensitive. No error or `Debug` output contains it.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use compresh_forward::{ForwardConfig, Forwarder, ProviderKind, Upstream};
//! use compresh_vault::ProviderSecret;
//!
//! # async fn run() -> Result<(), compresh_forward::ForwardError> {
//! // Once per process.
//! let forwarder = Forwarder::new(ForwardConfig::default())?;
//!
//! // Once per provider account (the key comes decrypted from the vault).
//! let kind: ProviderKind = "openai".parse()?;
//! let upstream = Upstream::new(
//!     "openai-main",
//!     kind,
//!     None, // default base: https://api.openai.com/v1
//!     Some(ProviderSecret::new("sk-...".to_owned())),
//! )?;
//! assert_eq!(
//!     upstream.target_uri("/v1/chat/completions")?.to_string(),
//!     "https://api.openai.com/v1/chat/completions"
//! );
//!
//! // Per request: the client's head and its (possibly rewritten) body.
//! let (head, ()) = http::Request::post("/v1/chat/completions")
//!     .header("authorization", "Bearer comp_client_key") // replaced, never forwarded
//!     .header("content-type", "application/json")
//!     .body(())
//!     .expect("static request is valid")
//!     .into_parts();
//! let body = Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[]}"#);
//! match forwarder.forward(&upstream, head, body).await {
//!     // Status, headers and a streaming body, straight from the provider.
//!     Ok(response) => println!("provider answered {}", response.status()),
//!     // Our own failure: map it to an HTTP error for the client.
//!     Err(err) => println!("{} {}: {}", err.status(), err.code(), err.message()),
//! }
//! # Ok(())
//! # }
//! ```

mod affinity;
mod error;
mod forwarder;
mod headers;
mod provider;
mod tls;
pub mod wire;

pub use affinity::{Drive, UpstreamAffinity};
pub use error::{ForwardError, UnreachableReason};
pub use forwarder::{ForwardConfig, Forwarder};
pub use headers::{rewrite_request_headers, strip_hop_by_hop, DEFAULT_ANTHROPIC_VERSION};
pub use provider::{ProviderKind, Upstream};
pub use tls::parse_certificates;
