//! The Compresh gateway: an HTTP server and CLI composing the Compresh crates.
//!
//! All behaviour lives in the library crates (`compresh-keys`, `compresh-vault`,
//! `compresh-ratelimit`, `compresh-forward`, `compresh-store`); this crate wires them together:
//!
//! - [`gateway::Gateway`] is the request path: authenticate the `comp_` key against the store's
//!   in-memory snapshot, apply the key's rate limit, check the key's restrictions, decrypt the
//!   account's provider key (cached per ciphertext) and forward, streaming the answer back.
//! - [`server`] accepts connections and shuts down gracefully.
//! - [`ops`] holds the administration operations shared by the CLI and the admin API.
//! - [`cli`] is the `compresh` command line.
//!
//! It is a library as well as a binary so that end-to-end tests can run the real server type on
//! `127.0.0.1:0`.

pub mod admin;
pub mod body;
pub mod bootstrap;
pub mod cli;
pub mod dashboard;
pub mod error;
pub mod gateway;
pub mod key_usage;
mod lane;
pub mod logging;
pub mod master_keys;
pub mod metrics;
pub mod ops;
mod request_json;
pub mod restrictions;
pub mod server;
#[cfg(test)]
mod test_log;
pub mod upstreams;
pub mod usage;
