//! The crate's single error type.

use std::path::PathBuf;

use crate::MIN_SECRET_LEN;

/// Everything that can go wrong in the vault.
///
/// No variant carries secret material: a message names versions, lengths, line numbers and
/// paths, never a key, a secret or a line of a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A master secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("master secret is {len} bytes long; at least {min} bytes are required", min = MIN_SECRET_LEN)]
    SecretTooShort {
        /// The length, in bytes, of the refused secret.
        len: usize,
    },
    /// A master secret is not valid base64 (standard or URL-safe, padded or not).
    #[error("master secret is not valid base64 (standard or URL-safe alphabet expected)")]
    InvalidBase64,
    /// A [`Sealed`](crate::Sealed) value names a key version the ring does not hold.
    #[error("ciphertext was made with master key v{version}, which this key ring does not hold")]
    UnknownKeyVersion {
        /// The version recorded with the ciphertext.
        version: u32,
    },
    /// The token could not be decrypted: wrong key, tampered or malformed token.
    ///
    /// Deliberately one kind for all three, so callers cannot build a decryption oracle.
    #[error("decryption failed: wrong master key, or a tampered or malformed token")]
    DecryptFailed,
    /// [`KeyRing::add`](crate::KeyRing::add) was given a version the ring already holds.
    #[error("key ring already holds master key v{version}")]
    DuplicateVersion {
        /// The duplicated version.
        version: u32,
    },
    /// [`KeyRing::retire`](crate::KeyRing::retire) was asked to remove the newest key.
    #[error("cannot retire master key v{version}: it is the newest key (rotate first)")]
    CannotRetireNewest {
        /// The newest version.
        version: u32,
    },
    /// Key ring text (a key file or `COMPRESH_MASTER_KEY`) is malformed.
    #[error("malformed key file, line {line}: {reason}")]
    MalformedKeyFile {
        /// 1-based line number; 0 when the problem concerns the whole text (e.g. it holds no key).
        line: usize,
        /// What is wrong with the line.
        reason: &'static str,
    },
    /// Reading or writing a key file failed.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file (or its temporary sibling) that could not be read or written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Text that must be UTF-8 (a key file, the environment variable, a decrypted secret) is not.
    #[error("data is not valid UTF-8")]
    NotUtf8,
    /// A key version of 0 was given; versions start at 1.
    #[error("invalid master key version v{version}: versions start at 1")]
    InvalidVersion {
        /// The refused version.
        version: u32,
    },
    /// [`KeyRing::retire`](crate::KeyRing::retire) was asked to remove a version the ring does not hold.
    #[error("key ring holds no master key v{version}")]
    VersionNotFound {
        /// The requested version.
        version: u32,
    },
    /// A key file was read but its content is unusable; `source` says why.
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its content (malformed, too short, not UTF-8, ...).
        source: Box<VaultError>,
    },
}
