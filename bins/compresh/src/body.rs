//! The response body type the gateway serves: either bytes of its own or a provider's stream.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Errors a body can yield while streaming (a provider connection failing mid-stream).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway produces.
pub type GatewayBody = UnsyncBoxBody<Bytes, BodyError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
