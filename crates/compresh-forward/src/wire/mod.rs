//! HTTP/1.1 on the wire, for the gateway's raw lane: the upstream request head written from the
//! client's parsed header lines, the provider's response head parsed in place, and the body
//! relayed piece by piece, without `http` header maps or hyper's connection machinery.
//!
//! The header rules are those of [`rewrite_request_headers`](crate::rewrite_request_headers)
//! and [`strip_hop_by_hop`](crate::strip_hop_by_hop), applied to byte slices; plain `http://`
//! upstreams only (a local OpenAI-compatible server, a sidecar).

pub mod chunked;
mod connection;
mod request;
mod response;

pub use connection::{BodyReader, Piece, WireConnection};
pub use request::{push_decimal, write_request_head};
pub use response::{parse_response_head, Framing, Malformed, Parsed, ResponseHead};

/// `name` in lowercase, in `buffer`; `None` when it is longer than the buffer or not UTF-8
/// (no name with a rule is).
pub(crate) fn lowercase<'b>(name: &[u8], buffer: &'b mut [u8; 64]) -> Option<&'b str> {
    let target = buffer.get_mut(..name.len())?;
    for (out, byte) in target.iter_mut().zip(name) {
        *out = byte.to_ascii_lowercase();
    }
    std::str::from_utf8(target).ok()
}
