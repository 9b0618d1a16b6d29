//! The crate's single error type.

/// Why an API key, key hash or key id was rejected.
///
/// Messages are fixed strings (plus a length or a position): they never quote the
/// rejected input, so they are safe to log and to return to the client.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// No key was sent at all (no header, or only whitespace).
    #[error("no API key: send Authorization: Bearer comp_... or x-api-key")]
    Missing,
    /// An `Authorization` header with a scheme other than `Bearer` (e.g. `Basic`).
    #[error("unsupported Authorization scheme: use Authorization: Bearer comp_... or x-api-key")]
    UnsupportedScheme,
    /// The key does not start with `comp_`.
    #[error("malformed API key: it must start with comp_")]
    WrongPrefix,
    /// The key is not exactly 32 bytes long.
    #[error("malformed API key: expected 32 characters, found {found} bytes")]
    WrongLength {
        /// Length of the rejected input, in bytes.
        found: usize,
    },
    /// A byte after the prefix is not in `0-9A-Za-z`.
    #[error("malformed API key: invalid character at position {position}")]
    InvalidCharacter {
        /// Zero-based byte offset of the first invalid byte.
        position: usize,
    },
    /// The last 6 characters do not match the CRC32 of the first 26 (a typo or a made-up key).
    #[error("malformed API key: checksum mismatch (typo or truncated copy?)")]
    ChecksumMismatch,
    /// A key hash is not 64 hexadecimal characters.
    #[error("invalid key hash: expected 64 hexadecimal characters")]
    InvalidHash,
    /// A key id is not `key_` followed by 12 characters of `0-9A-Za-z`.
    #[error("invalid key id: expected key_ followed by 12 characters of 0-9A-Za-z")]
    InvalidKeyId,
}

impl KeyError {
    /// `true` when no key was sent at all, `false` when something was sent but rejected.
    ///
    /// Lets the gateway tell "you forgot the header" apart from "your key is malformed".
    #[must_use]
    pub fn is_missing(&self) -> bool {
        matches!(self, KeyError::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_is_missing() {
        assert!(KeyError::Missing.is_missing());
        for err in [
            KeyError::UnsupportedScheme,
            KeyError::WrongPrefix,
            KeyError::WrongLength { found: 3 },
            KeyError::InvalidCharacter { position: 7 },
            KeyError::ChecksumMismatch,
            KeyError::InvalidHash,
            KeyError::InvalidKeyId,
        ] {
            assert!(!err.is_missing(), "{err:?}");
        }
    }

    #[test]
    fn messages_carry_length_and_position() {
        assert_eq!(
            KeyError::Missing.to_string(),
            "no API key: send Authorization: Bearer comp_... or x-api-key"
        );
        assert!(KeyError::WrongLength { found: 31 }
            .to_string()
            .contains("found 31 bytes"));
        assert!(KeyError::InvalidCharacter { position: 9 }
            .to_string()
            .contains("position 9"));
    }
}
