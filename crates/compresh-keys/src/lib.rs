//! Compresh API keys: format, generation, parsing, hashing. No I/O, no async.
//!
//! Clients authenticate to the gateway with a `comp_` key. This crate defines what such a key
//! looks like, creates new ones, checks presented ones, and turns them into the [`KeyHash`] that
//! the store keeps (the key itself is shown once, at creation, and never stored).
//!
//! # Quick start
//!
//! ```
//! use compresh_keys::{extract_key, ApiKey, KeyHash, KeyId};
//!
//! // Issuing a key: show `expose_secret()` to the user once, store only the id and the hash.
//! let key = ApiKey::generate();
//! let id = KeyId::generate();
//! let stored_hash: String = key.hash().to_hex();
//! println!("created {id} ({key})"); // prints e.g. "created key_4fT9xQ2mB7Lz (comp_…a1B2)"
//!
//! // Checking a request: parse the header, hash, look the hash up.
//! let header = format!("Bearer {}", key.expose_secret());
//! let presented = extract_key(Some(header.as_bytes()), None)?;
//! assert_eq!(presented.hash(), KeyHash::from_hex(&stored_hash)?);
//! # Ok::<(), compresh_keys::KeyError>(())
//! ```
//!
//! # Key format (enough to reimplement it)
//!
//! A key is exactly 32 ASCII characters, in the style of GitHub tokens:
//!
//! | bytes   | content                                                          |
//! |---------|------------------------------------------------------------------|
//! | 0..5    | the prefix `comp_` ([`KEY_PREFIX`])                              |
//! | 5..26   | 21 random base62 characters (≈125 bits: 21 · log2 62)            |
//! | 26..32  | 6 base62 characters: checksum of bytes 0..26                      |
//!
//! - **Alphabet** (base62, in digit order): `0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz`,
//!   so digit 0 = `'0'`, 10 = `'A'`, 36 = `'a'`, 61 = `'z'`.
//! - **Random part**: each character drawn independently and uniformly from the OS CSPRNG
//!   (`rand::rngs::OsRng`) by rejection sampling: random bytes `>= 248` are discarded, a byte
//!   `b < 248` gives digit `b % 62`. No modulo bias.
//! - **Checksum**: CRC32 as used by zlib, PNG and Ethernet (CRC-32/ISO-HDLC: reflected
//!   polynomial `0xEDB88320`, initial value `0xFFFFFFFF`, final xor `0xFFFFFFFF`; the check
//!   value of `"123456789"` is `0xCBF43926`) over the 26 ASCII bytes `comp_` + random part.
//!   The `u32` is written as a 6-digit big-endian base62 number, left-padded with `'0'`
//!   (62⁶ > 2³², so it always fits; the first checksum digit is therefore `0`–`4`).
//! - **Hash** ([`ApiKey::hash`]): SHA-256 of the 32 ASCII bytes of the whole key, usually
//!   stored as 64 lowercase hex digits ([`KeyHash::to_hex`]).
//! - **Key id** ([`KeyId`]): `key_` + 12 random base62 characters, independent of the key.
//!
//! Worked example: random part `0123456789ABCDEFGHIJK`, so the checksummed text is
//! `comp_0123456789ABCDEFGHIJK`, whose CRC32 is `0x22020B16` = 570559254
//! = 0·62⁵ + 38·62⁴ + 38·62³ + 0·62² + 32·62 + 38, i.e. digits 0, 38, 38, 0, 32, 38 = `0cc0Wc`.
//! The key is `comp_0123456789ABCDEFGHIJK0cc0Wc`; its SHA-256 is
//! `0f17bc4f4ccc7082e59d40206f66c3b2148abfea62dcc75404a28e6f6bab2b67`.
//!
//! ```
//! use compresh_keys::ApiKey;
//!
//! let key: ApiKey = "comp_0123456789ABCDEFGHIJK0cc0Wc".parse()?;
//! assert_eq!(
//!     key.hash().to_hex(),
//!     "0f17bc4f4ccc7082e59d40206f66c3b2148abfea62dcc75404a28e6f6bab2b67"
//! );
//! assert_eq!(key.hint(), "comp_…c0Wc");
//! assert_eq!(format!("{key:?}"), "ApiKey(comp_…c0Wc)"); // never the secret
//! // One changed character is always caught by the checksum.
//! assert!("comp_0123456789ABCDEFGHIJL0cc0Wc".parse::<ApiKey>().is_err());
//! # Ok::<(), compresh_keys::KeyError>(())
//! ```
//!
//! # Design decisions
//!
//! - **Parse, don't validate.** An [`ApiKey`] can only come from [`ApiKey::generate`] or a
//!   successful parse, so holding one means prefix, length, alphabet and checksum are right.
//!   Parsing is strict (no trimming, no case folding) and checks in a fixed order: prefix,
//!   length (in bytes), characters, checksum. It works on bytes, so non-ASCII or non-UTF-8
//!   input is rejected without panicking. Only [`extract_key`] trims header whitespace.
//! - **The checksum is for typos, not security.** It lets the gateway reject a mistyped or
//!   truncated key, and lets secret scanners recognise real keys, without a store lookup.
//!   CRC32 catches every single-character change (any error burst up to 32 bits). Anyone can
//!   compute it; the ≈125 random bits are what protect the key.
//! - **Store the hash, compare in constant time.** The store keeps [`KeyHash`] (SHA-256; a
//!   slow password hash is unnecessary for 125-bit random secrets), and `KeyHash == KeyHash`
//!   uses `subtle` so lookups do not leak through timing.
//! - **Secrets do not leak by accident.** [`ApiKey`] has no derived `Debug`: `Debug` and
//!   `Display` print only the hint (`comp_…` + last 4 characters, which are checksum
//!   characters); the text is zeroized on drop; [`KeyError`] messages never quote the input.
//!   The only way to read the key is the explicitly named [`ApiKey::expose_secret`].

mod error;
mod extract;
mod format;
mod id;
mod key;

pub use error::KeyError;
pub use extract::{extract_key, extract_key_with};
pub use id::KeyId;
pub use key::{ApiKey, KeyHash};

/// Every API key starts with this prefix.
pub const KEY_PREFIX: &str = "comp_";

/// Length of every API key, in bytes (all ASCII, so also in characters).
pub const KEY_LEN: usize = 32;
