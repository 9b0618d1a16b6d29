//! Secret-holding types: the master secret and a provider's API key, plus the key derivation.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

use crate::VaultError;

/// Minimum length, in bytes, of a master secret.
pub const MIN_SECRET_LEN: usize = 32;

/// Domain-separation prefix hashed before the master secret (NUL-terminated, so no secret can
/// make one prefix look like another).
const DERIVATION_CONTEXT: &[u8] = b"compresh-vault-v1\0";

/// Provider secrets shorter than this get a hint that reveals nothing.
const MIN_LEN_FOR_HINT: usize = 12;

/// Number of trailing characters a hint shows.
const HINT_TAIL: usize = 4;

/// Decoding config shared by both alphabets: padding optional.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// A master secret: at least [`MIN_SECRET_LEN`] random bytes from which a Fernet key is derived.
///
/// Zeroized on drop; `Debug` shows only the length. Read it only through
/// [`MasterSecret::to_base64`].
pub struct MasterSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl MasterSecret {
    /// Generates a fresh secret of [`MIN_SECRET_LEN`] bytes from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot provide random bytes (as `rand`'s `OsRng` does);
    /// continuing with a weak key would be worse.
    #[must_use]
    pub fn generate() -> MasterSecret {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_SECRET_LEN]);
        OsRng.fill_bytes(&mut bytes);
        MasterSecret { bytes }
    }

    /// Wraps raw secret bytes (taking ownership, so they are zeroized on drop).
    ///
    /// # Errors
    ///
    /// [`VaultError::SecretTooShort`] if `bytes` is shorter than [`MIN_SECRET_LEN`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<MasterSecret, VaultError> {
        Self::from_zeroizing(Zeroizing::new(bytes))
    }

    /// Decodes a base64 secret: standard or URL-safe alphabet, with or without `=` padding;
    /// surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// [`VaultError::InvalidBase64`] if `text` is not base64, [`VaultError::SecretTooShort`] if
    /// it decodes to fewer than [`MIN_SECRET_LEN`] bytes.
    pub fn from_base64(text: &str) -> Result<MasterSecret, VaultError> {
        let text = text.trim();
        // Reserve the full decoded size up front so decoding never reallocates (a reallocation
        // would leave an un-zeroized copy of the secret behind).
        let mut buffer =
            Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(text.len())));
        for engine in [&URL_SAFE_LENIENT, &STANDARD_LENIENT] {
            if engine.decode_vec(text, &mut buffer).is_ok() {
                return Self::from_zeroizing(buffer);
            }
            // Wipe whatever a failed attempt decoded before trying the other alphabet.
            buffer.zeroize();
        }
        Err(VaultError::InvalidBase64)
    }

    /// Encodes the secret as URL-safe base64 with padding (the form [`MasterSecret::from_base64`]
    /// and key files use).
    #[must_use]
    pub fn to_base64(&self) -> Zeroizing<String> {
        encode_url_safe(&self.bytes)
    }

    /// Length of the secret in bytes (not secret itself).
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always `false`: a master secret holds at least [`MIN_SECRET_LEN`] bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Result<MasterSecret, VaultError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(VaultError::SecretTooShort { len: bytes.len() });
        }
        Ok(MasterSecret { bytes })
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterSecret([REDACTED; {} bytes])", self.bytes.len())
    }
}

/// Derives the Fernet key for `secret`:
/// `base64url(SHA-256(b"compresh-vault-v1\0" || secret))`, padded with `=`.
///
/// Fernet splits the 32-byte digest into the HMAC signing key (first 16 bytes) and the AES-128
/// key (last 16 bytes). See the crate docs for a Python equivalent.
#[must_use]
pub fn derive_fernet_key(secret: &MasterSecret) -> Zeroizing<String> {
    let mut hasher = Sha256::new();
    hasher.update(DERIVATION_CONTEXT);
    hasher.update(&*secret.bytes);
    let mut digest = Zeroizing::new([0u8; 32]);
    // `finalize_into` writes straight into the zeroizing buffer: no stray copy of the key.
    hasher.finalize_into(GenericArray::from_mut_slice(&mut digest[..]));
    encode_url_safe(&digest[..])
}

/// URL-safe, padded base64 into a zeroizing string allocated once at its final size.
fn encode_url_safe(bytes: &[u8]) -> Zeroizing<String> {
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    let mut out = Zeroizing::new(String::with_capacity(len));
    URL_SAFE.encode_string(bytes, &mut out);
    out
}

/// A provider's API key (OpenAI, Anthropic, ...), in plaintext, in memory only.
///
/// Zeroized on drop. `Debug` and `Display` show only [`ProviderSecret::hint`], e.g.
/// `ProviderSecret(…wxyz)`; [`ProviderSecret::expose_secret`] is the only way to read it.
#[derive(Clone)]
pub struct ProviderSecret {
    secret: Zeroizing<String>,
}

impl ProviderSecret {
    /// Wraps a provider key, taking ownership so it is zeroized on drop.
    #[must_use]
    pub fn new(secret: String) -> ProviderSecret {
        ProviderSecret {
            secret: Zeroizing::new(secret),
        }
    }

    /// The plaintext key. The only accessor: grep for it to audit where keys are used.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// A hint safe to show and log: `"…"` followed by the last 4 characters, or just `"…"` when
    /// the key is shorter than 12 characters (so nothing of a short key is revealed).
    #[must_use]
    pub fn hint(&self) -> String {
        let count = self.secret.chars().count();
        if count < MIN_LEN_FOR_HINT {
            return "…".to_owned();
        }
        let tail: String = self.secret.chars().skip(count - HINT_TAIL).collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderSecret({})", self.hint())
    }
}

impl fmt::Display for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

    use super::*;

    fn counting_bytes() -> Vec<u8> {
        (0u8..32).collect()
    }

    #[test]
    fn generate_makes_distinct_secrets_of_minimum_length() {
        let a = MasterSecret::generate();
        let b = MasterSecret::generate();
        assert_eq!(a.len(), MIN_SECRET_LEN);
        assert_ne!(*a.to_base64(), *b.to_base64());
    }

    #[test]
    fn short_secret_is_refused_with_the_minimum_in_the_message() {
        let err = MasterSecret::from_bytes(vec![7u8; 31]).unwrap_err();
        assert!(
            matches!(err, VaultError::SecretTooShort { len: 31 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("32"), "{err}");
        assert!(MasterSecret::from_bytes(vec![7u8; 32]).is_ok());
        assert!(MasterSecret::from_bytes(Vec::new()).is_err());
        // Too short via base64 as well (16 bytes).
        let short = URL_SAFE.encode([1u8; 16]);
        assert!(matches!(
            MasterSecret::from_base64(&short),
            Err(VaultError::SecretTooShort { len: 16 })
        ));
    }

    #[test]
    fn from_base64_accepts_both_alphabets_with_or_without_padding() {
        // 0xfb 0xff yields '+' '/' in standard and '-' '_' in URL-safe base64.
        let mut bytes = counting_bytes();
        bytes.extend_from_slice(&[0xfb, 0xff, 0xfe]);
        let encodings = [
            URL_SAFE.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
            STANDARD.encode(&bytes),
            STANDARD_NO_PAD.encode(&bytes),
            format!("  \n{}\t\n", STANDARD.encode(&bytes)),
        ];
        assert!(encodings[2].contains('+') || encodings[2].contains('/'));
        for text in encodings {
            let secret = MasterSecret::from_base64(&text).unwrap();
            assert_eq!(*secret.bytes, bytes, "decoding {text:?}");
        }
    }

    #[test]
    fn from_base64_rejects_garbage() {
        for text in ["not base64!!", "%%%%", "abc$def", "AAAA-AAA+AAA"] {
            assert!(
                matches!(
                    MasterSecret::from_base64(text),
                    Err(VaultError::InvalidBase64)
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn to_base64_is_url_safe_and_padded_and_round_trips() {
        let mut bytes = vec![0xfb; 32];
        bytes[0] = 0xff;
        let secret = MasterSecret::from_bytes(bytes.clone()).unwrap();
        let text = secret.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert!(!text.contains('+') && !text.contains('/'));
        assert_eq!(*MasterSecret::from_base64(&text).unwrap().bytes, bytes);
    }

    #[test]
    fn derivation_matches_an_independent_computation_and_python() {
        let secret = MasterSecret::from_bytes(counting_bytes()).unwrap();
        let mut input = b"compresh-vault-v1\0".to_vec();
        input.extend_from_slice(&counting_bytes());
        let expected = URL_SAFE.encode(Sha256::digest(&input));
        assert_eq!(*derive_fernet_key(&secret), expected);
        // Known answer computed with Python's hashlib/base64 (the crate docs' snippet).
        assert_eq!(
            *derive_fernet_key(&secret),
            "J4t2yqGofXlCmkCfkBlrZJQoNH6UaADM44a-QrYUKsY="
        );
    }

    #[test]
    fn master_secret_debug_is_redacted() {
        let secret = MasterSecret::from_bytes(counting_bytes()).unwrap();
        let debug = format!("{secret:?}");
        assert_eq!(debug, "MasterSecret([REDACTED; 32 bytes])");
        assert!(!debug.contains(secret.to_base64().as_str()));
    }

    #[test]
    fn hint_shows_last_four_chars_of_long_keys_only() {
        let long = ProviderSecret::new("sk-proj-abcdefghwxyz".to_owned());
        assert_eq!(long.hint(), "…wxyz");
        assert_eq!(format!("{long:?}"), "ProviderSecret(…wxyz)");
        assert_eq!(long.to_string(), "ProviderSecret(…wxyz)");

        let eleven = ProviderSecret::new("abcdefghijk".to_owned());
        assert_eq!(eleven.hint(), "…");
        assert_eq!(format!("{eleven:?}"), "ProviderSecret(…)");
        let twelve = ProviderSecret::new("abcdefghijkl".to_owned());
        assert_eq!(twelve.hint(), "…ijkl");
        assert_eq!(ProviderSecret::new(String::new()).hint(), "…");

        // Counted in characters, not bytes: no panic on multi-byte text.
        let unicode = ProviderSecret::new("ключ-ключ-ключ-ж".to_owned());
        assert_eq!(unicode.hint(), "…юч-ж");
    }

    #[test]
    fn provider_secret_debug_and_display_never_show_the_key() {
        let key = "sk-ant-api03-SECRETSECRETSECRET-tail";
        let secret = ProviderSecret::new(key.to_owned());
        let clone = secret.clone();
        assert_eq!(clone.expose_secret(), key);
        for shown in [
            format!("{secret:?}"),
            secret.to_string(),
            format!("{secret:#?}"),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
