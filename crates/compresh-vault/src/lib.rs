//! Encryption at rest for the provider API keys users give Compresh.
//!
//! A provider key (OpenAI, Anthropic, ...) is held in memory as a [`ProviderSecret`] and stored
//! only as a [`Sealed`] value: a [Fernet](https://github.com/fernet/spec) token plus the version
//! of the master key that made it. A [`KeyRing`] holds the versions of the master key; it seals
//! with the newest and opens with whichever version a value names, so keys can be rotated
//! without downtime: [`KeyRing::rotate`], [`KeyRing::rewrap`] every stored value, then
//! [`KeyRing::retire`] the old version.
//!
//! # Quick start
//!
//! ```
//! use compresh_vault::{KeyRing, MasterSecret, ProviderSecret};
//!
//! let mut ring = KeyRing::new(1, MasterSecret::generate());
//! let key = ProviderSecret::new("sk-proj-0123456789abcdef".to_owned());
//! let sealed = ring.seal(&key)?; // store sealed.version and sealed.token
//! assert_eq!(sealed.version, 1);
//! assert_eq!(ring.open(&sealed)?.expose_secret(), "sk-proj-0123456789abcdef");
//! assert_eq!(format!("{key:?}"), "ProviderSecret(…cdef)"); // safe to log
//!
//! // Rotation: a new newest key, move stored values to it, drop the old key.
//! let v2 = ring.rotate();
//! let rewrapped = ring.rewrap(&sealed)?;
//! assert_eq!(rewrapped.version, v2);
//! ring.retire(1)?;
//! assert_eq!(ring.open(&rewrapped)?.expose_secret(), "sk-proj-0123456789abcdef");
//! # Ok::<(), compresh_vault::VaultError>(())
//! ```
//!
//! # Key derivation (exact)
//!
//! Each master secret (at least [`MIN_SECRET_LEN`] = 32 random bytes) is turned into a Fernet key
//! by [`derive_fernet_key`]:
//!
//! ```text
//! fernet_key = base64url(SHA-256(b"compresh-vault-v1\0" || secret))     -- with '=' padding
//! ```
//!
//! `b"compresh-vault-v1\0"` is the 17 ASCII bytes `compresh-vault-v1` followed by one NUL byte;
//! `||` is concatenation; base64url is RFC 4648 §5 with padding (a 44-character string). As
//! Fernet prescribes, the 32-byte digest is split into the HMAC-SHA256 signing key (first 16
//! bytes) and the AES-128-CBC key (last 16 bytes). The master secret is already uniformly random,
//! so one hash is enough; the prefix separates this use of the secret from any other.
//!
//! # Key file and `COMPRESH_MASTER_KEY`
//!
//! The master secret comes from the `COMPRESH_MASTER_KEY` environment variable
//! ([`KeyRing::from_env`]) or a key file ([`KeyRing::load_file`],
//! [`KeyRing::load_or_create_file`]). Both use the text format of [`KeyRing::parse`]:
//!
//! ```text
//! # Comments and blank lines are ignored.
//! v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
//! v2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=
//! ```
//!
//! One `v<N>:<base64url secret>` entry per version (N >= 1), written in ascending order; entries
//! may also be separated by commas (handy in an environment variable). Secrets may use the
//! standard or URL-safe base64 alphabet, with or without padding. A single bare secret without
//! `v<N>:` means version 1, so `COMPRESH_MASTER_KEY=$(openssl rand -base64 32)` works. The newest
//! (highest) version encrypts; the others only decrypt. [`KeyRing::save_file`] writes the file
//! atomically with mode 0600.
//!
//! # Decrypting a backup without Compresh
//!
//! With Python's `cryptography` package, using the key-file line whose version matches the
//! stored value's version:
//!
//! ```text
//! import base64, hashlib
//! from cryptography.fernet import Fernet
//!
//! def fernet_for(secret_b64: str) -> Fernet:
//!     """secret_b64: the part after `vN:` of a key-file line (or COMPRESH_MASTER_KEY)."""
//!     s = secret_b64.strip().replace("+", "-").replace("/", "_")
//!     secret = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
//!     digest = hashlib.sha256(b"compresh-vault-v1\0" + secret).digest()
//!     return Fernet(base64.urlsafe_b64encode(digest))
//!
//! f = fernet_for("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
//! print(f.decrypt(token).decode())   # token: the stored Sealed.token (str or bytes)
//! ```
//!
//! # Design decisions
//!
//! - **Secrets never print.** [`MasterSecret`], [`ProviderSecret`] and [`KeyRing`] implement
//!   `Debug` by hand (a length, a 4-character hint, the versions); errors carry versions, line
//!   numbers and paths, never key material or a line of a key file. Secrets are read only through
//!   explicitly named methods ([`ProviderSecret::expose_secret`], [`MasterSecret::to_base64`]).
//! - **Zeroized on drop**, and buffers holding secrets are allocated at their final size so they
//!   are not reallocated (which would leave copies behind). This is best effort: the `fernet` and
//!   `sha2` crates keep short-lived un-zeroized copies internally.
//! - **One error for every decryption failure** ([`VaultError::DecryptFailed`]): wrong key,
//!   tampered and malformed tokens are indistinguishable to callers, so no padding or MAC oracle.
//!   A missing key version is different: it is not secret, and the operator must act on it.
//! - **Sealed values never expire**: opening uses no TTL and skips Fernet's clock-skew check
//!   (as Python's `Fernet.decrypt` without a TTL does), so a value sealed while the clock was
//!   wrong stays readable.
//! - **Key files are never exposed or replaced by accident**: written to a 0600 temporary file
//!   and renamed into place; [`KeyRing::load_or_create_file`] never overwrites an existing file.

mod error;
mod file;
mod ring;
mod secret;

pub use error::VaultError;
pub use ring::{KeyRing, Sealed, MASTER_KEY_ENV};
pub use secret::{derive_fernet_key, MasterSecret, ProviderSecret, MIN_SECRET_LEN};
