//! HTTP/1.1 on the wire, for the gateway's raw lane: the upstream request head written from the
//! client's parsed header lines, the provider's response head parsed in place, and the body
//! relayed piece by piece, without `http` header maps or hyper's connection machinery.
//!
//! The header rules are those of [`rewrite_request_headers`](crate::rewrite_request_headers)
//! and [`strip_hop_by_hop`](crate::strip_hop_by_hop), applied to byte slices; plain `http://`
//! upstreams only (a local OpenAI-compatible server, a sidecar).

pub mod chunked;
mod connection;
mod polling;
mod request;
mod response;

pub use connection::{BodyReader, Piece, WireConnection};
pub(crate) use polling::AnswerWaits;
pub use request::{push_decimal, write_header, write_request_head};
pub use response::{parse_response_head, Framing, Malformed, Parsed, ResponseHead};
