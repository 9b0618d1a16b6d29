//! [`ApiKey`] (the secret) and [`KeyHash`] (what is stored and compared).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::format::{crc32, encode_checksum, fill_base62, is_base62, CHECKSUM_LEN};
use crate::{KEY_LEN, KEY_PREFIX};

/// Length of `comp_` + the random part: the bytes covered by the checksum.
const BODY_LEN: usize = KEY_LEN - CHECKSUM_LEN;

/// Number of characters of the key shown by [`ApiKey::hint`].
const HINT_TAIL: usize = 4;

/// A `comp_` API key: the secret a client sends.
///
/// Can only be obtained from [`ApiKey::generate`] or by parsing (`"comp_…".parse()`), so a value
/// of this type always has a valid prefix, length, alphabet and checksum. `Debug` and `Display`
/// show only [`ApiKey::hint`]; the full text is only available from [`ApiKey::expose_secret`].
/// The text lives on the heap (so moves do not leave copies on the stack) and is zeroized on
/// drop.
#[derive(Clone)]
pub struct ApiKey {
    secret: Zeroizing<String>,
}

impl ApiKey {
    /// Generates a new key with 21 random base62 characters (≈125 bits) from the OS CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the operating system's random number generator fails (`getrandom` error);
    /// no key can be issued safely in that state.
    #[must_use]
    pub fn generate() -> ApiKey {
        ApiKey::generate_from(&mut OsRng)
    }

    /// Generates a key from any RNG; `generate` passes the OS CSPRNG, tests a seeded one.
    pub(crate) fn generate_from<R: RngCore + ?Sized>(rng: &mut R) -> ApiKey {
        let mut body = Zeroizing::new([0u8; BODY_LEN]);
        body[..KEY_PREFIX.len()].copy_from_slice(KEY_PREFIX.as_bytes());
        fill_base62(rng, &mut body[KEY_PREFIX.len()..]);
        let checksum = encode_checksum(crc32(body.as_slice()));
        let mut secret = Zeroizing::new(String::with_capacity(KEY_LEN));
        // All bytes are ASCII; the capacity is exact, so the String never reallocates (which
        // would leave an un-zeroized copy behind).
        secret.extend(body.iter().chain(&checksum).map(|&b| char::from(b)));
        ApiKey { secret }
    }

    /// The full key text. The only way to see the secret: call it only to send or show the key
    /// once, never to log it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// SHA-256 of the 32 ASCII bytes of the key: the value to store and look keys up by.
    #[must_use]
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.secret.as_bytes()).into())
    }

    /// A non-secret reminder of which key this is: `comp_…` + the last 4 characters,
    /// e.g. `comp_…c0Wc`.
    ///
    /// The last 4 characters belong to the checksum, so they reveal at most ≈24 of the ≈125
    /// random bits.
    #[must_use]
    pub fn hint(&self) -> String {
        // Every byte is ASCII and the length is KEY_LEN, so this slice is on a char boundary.
        format!("{KEY_PREFIX}…{}", &self.secret[KEY_LEN - HINT_TAIL..])
    }

    /// Strict parser shared by `FromStr` and `extract_key`: works on bytes, so input that is
    /// not UTF-8 is rejected (never sliced) and cannot panic.
    pub(crate) fn parse_bytes(input: &[u8]) -> Result<ApiKey, KeyError> {
        if !input.starts_with(KEY_PREFIX.as_bytes()) {
            return Err(KeyError::WrongPrefix);
        }
        if input.len() != KEY_LEN {
            return Err(KeyError::WrongLength { found: input.len() });
        }
        if let Some(offset) = input[KEY_PREFIX.len()..]
            .iter()
            .position(|&b| !is_base62(b))
        {
            return Err(KeyError::InvalidCharacter {
                position: KEY_PREFIX.len() + offset,
            });
        }
        // Comparing encodings (not decoded numbers) also rejects 6-digit values above u32::MAX.
        if input[BODY_LEN..] != encode_checksum(crc32(&input[..BODY_LEN])) {
            return Err(KeyError::ChecksumMismatch);
        }
        // Every byte was checked above to be ASCII, so this never fails. `push_str` copies in
        // one go (pushing `char`s one at a time was half of this function's cost).
        let text = std::str::from_utf8(input).map_err(|_| KeyError::InvalidCharacter {
            position: KEY_PREFIX.len(),
        })?;
        let mut secret = Zeroizing::new(String::with_capacity(KEY_LEN));
        secret.push_str(text);
        Ok(ApiKey { secret })
    }
}

impl FromStr for ApiKey {
    type Err = KeyError;

    /// Parses a key strictly: no trimming, no case folding.
    ///
    /// Checks, in order: prefix `comp_` ([`KeyError::WrongPrefix`], also for the empty
    /// string), length 32 bytes ([`KeyError::WrongLength`]), characters `0-9A-Za-z`
    /// ([`KeyError::InvalidCharacter`]), checksum ([`KeyError::ChecksumMismatch`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiKey::parse_bytes(s.as_bytes())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.hint())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

/// SHA-256 of an API key: what the store keeps instead of the key.
///
/// Not secret (a 125-bit random key cannot be recovered from it), but equality is still
/// constant-time so that looking a presented key up leaks nothing through timing. `Debug`
/// shows only the first 8 hex digits to keep logs short.
#[derive(Clone, Copy, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The 64-character lowercase hexadecimal form.
    #[must_use]
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for &b in &self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
        out
    }

    /// Parses 64 hexadecimal characters (upper or lower case, no prefix, no whitespace).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidHash`] if the input is not exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<KeyHash, KeyError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(KeyError::InvalidHash);
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *slot = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(KeyHash(out))
    }

    /// The 32 raw bytes of the digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps 32 raw digest bytes (e.g. read back from the store).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> KeyHash {
        KeyHash(bytes)
    }
}

/// Value of one hex digit, either case.
fn hex_value(b: u8) -> Result<u8, KeyError> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(KeyError::InvalidHash),
    }
}

/// Constant-time, as every comparison of secrets: a server that caches a connection's last key
/// (to skip hashing it again) compares the next request's key with it.
impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.secret.as_bytes().ct_eq(other.secret.as_bytes()).into()
    }
}

impl Eq for ApiKey {}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        // Compared as four words: `subtle` hides each element from the optimiser separately,
        // and 32 single-byte barriers were 0.5-0.9 % of the gateway's CPU (every request's key
        // lookup compares one hash); four keep the comparison constant-time.
        words(&self.0).ct_eq(&words(&other.0)).into()
    }
}

fn words(bytes: &[u8; 32]) -> [u64; 4] {
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        *word = u64::from_le_bytes(eight);
    }
    words
}

// Written by hand because `PartialEq` is: hashing the same bytes keeps `a == b ⇒ h(a) == h(b)`.
impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::format::ALPHABET;

    const EXAMPLE: &str = "comp_0123456789ABCDEFGHIJK0cc0Wc";
    const EXAMPLE_HASH: &str = "0f17bc4f4ccc7082e59d40206f66c3b2148abfea62dcc75404a28e6f6bab2b67";

    #[test]
    fn keys_are_equal_only_to_the_same_text() {
        let key = parse(EXAMPLE).unwrap();
        assert_eq!(key, parse(EXAMPLE).unwrap());
        let other = ApiKey::generate();
        assert_ne!(key, other);
        assert_eq!(other, other.clone());
    }

    fn parse(s: &str) -> Result<ApiKey, KeyError> {
        s.parse()
    }

    fn parse_err(s: &str) -> KeyError {
        parse(s).unwrap_err()
    }

    fn key_from_seed(seed: u64) -> ApiKey {
        ApiKey::generate_from(&mut StdRng::seed_from_u64(seed))
    }

    /// The random part of a key: the text that must never appear in output.
    fn random_part(key: &ApiKey) -> &str {
        &key.expose_secret()[KEY_PREFIX.len()..BODY_LEN]
    }

    #[test]
    fn worked_example_parses_and_hashes() {
        let key = parse(EXAMPLE).unwrap();
        assert_eq!(key.expose_secret(), EXAMPLE);
        assert_eq!(key.hash().to_hex(), EXAMPLE_HASH);
        assert_eq!(key.hint(), "comp_…c0Wc");
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate();
        let text = key.expose_secret();
        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with(KEY_PREFIX));
        assert!(text[5..].bytes().all(|b| ALPHABET.contains(&b)));
        let expected = encode_checksum(crc32(&text.as_bytes()[..26]));
        assert_eq!(&text.as_bytes()[26..], &expected);
        assert_eq!(parse(text).unwrap().hash(), key.hash());
    }

    #[test]
    fn generated_keys_differ() {
        let keys: HashSet<String> = (0..100)
            .map(|_| ApiKey::generate().expose_secret().to_owned())
            .collect();
        assert_eq!(keys.len(), 100);
    }

    #[test]
    fn random_part_uses_the_whole_alphabet() {
        // 2,000 keys = 42,000 characters, ≈677 expected per character (sd ≈ 26): a missing
        // character or one at twice / half its share means the sampler is broken.
        let mut counts = [0u32; 62];
        for _ in 0..2_000 {
            let key = ApiKey::generate();
            for b in random_part(&key).bytes() {
                counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 338 && c < 1_355), "{counts:?}");
    }

    #[test]
    fn wrong_prefix() {
        assert_eq!(parse_err(""), KeyError::WrongPrefix);
        assert_eq!(parse_err("comp"), KeyError::WrongPrefix);
        assert_eq!(
            parse_err(&EXAMPLE.replace("comp_", "COMP_")),
            KeyError::WrongPrefix
        );
        assert_eq!(
            parse_err(&EXAMPLE.replace("comp_", "sk_xx")),
            KeyError::WrongPrefix
        );
        assert_eq!(parse_err(&format!(" {EXAMPLE}")), KeyError::WrongPrefix);
        // Prefix is checked before length.
        assert_eq!(parse_err("sk-short"), KeyError::WrongPrefix);
    }

    #[test]
    fn wrong_length_counts_bytes() {
        assert_eq!(parse_err("comp_"), KeyError::WrongLength { found: 5 });
        assert_eq!(
            parse_err(&EXAMPLE[..31]),
            KeyError::WrongLength { found: 31 }
        );
        assert_eq!(
            parse_err(&format!("{EXAMPLE}0")),
            KeyError::WrongLength { found: 33 }
        );
        assert_eq!(
            parse_err(&format!("{EXAMPLE}\n")),
            KeyError::WrongLength { found: 33 }
        );
        // 'é' is 2 bytes: 31 chars but 32 bytes passes the length check, then fails on bytes.
        let accented = format!("comp_é{}", &EXAMPLE[7..]);
        assert_eq!(accented.chars().count(), 31);
        assert_eq!(
            parse_err(&accented),
            KeyError::InvalidCharacter { position: 5 }
        );
        let long_multibyte = format!("comp_{}", "é".repeat(14));
        assert_eq!(
            parse_err(&long_multibyte),
            KeyError::WrongLength { found: 33 }
        );
    }

    #[test]
    fn invalid_character_reports_the_first_bad_byte() {
        let mut bad = EXAMPLE.to_owned();
        bad.replace_range(9..10, "-");
        bad.replace_range(20..21, "_");
        assert_eq!(parse_err(&bad), KeyError::InvalidCharacter { position: 9 });
        let mut in_checksum = EXAMPLE.to_owned();
        in_checksum.replace_range(31..32, "=");
        assert_eq!(
            parse_err(&in_checksum),
            KeyError::InvalidCharacter { position: 31 }
        );
        // A multi-byte char at the very end: never sliced through, no panic.
        let mut tail = EXAMPLE[..30].to_owned();
        tail.push('é');
        assert_eq!(
            parse_err(&tail),
            KeyError::InvalidCharacter { position: 30 }
        );
        assert_eq!(
            ApiKey::parse_bytes(&[b"comp_".as_slice(), &[0xFF; 27]].concat()).unwrap_err(),
            KeyError::InvalidCharacter { position: 5 }
        );
    }

    #[test]
    fn checksum_mismatch() {
        let mut bad = EXAMPLE.to_owned();
        bad.replace_range(31..32, "d");
        assert_eq!(parse_err(&bad), KeyError::ChecksumMismatch);
        // Swapping two characters of the random part.
        let swapped = EXAMPLE.replace("01", "10");
        assert_eq!(parse_err(&swapped), KeyError::ChecksumMismatch);
        // A 6-digit value above u32::MAX is not a valid encoding.
        let over = format!("{}zzzzzz", &EXAMPLE[..26]);
        assert_eq!(parse_err(&over), KeyError::ChecksumMismatch);
    }

    #[test]
    fn every_single_character_substitution_is_rejected_exhaustively() {
        for seed in 0..20 {
            let key = key_from_seed(seed);
            let original = key.expose_secret().as_bytes();
            for pos in 0..KEY_LEN {
                for &replacement in ALPHABET.iter().chain(b"_-+/= ") {
                    if replacement == original[pos] {
                        continue;
                    }
                    let mut changed = original.to_vec();
                    changed[pos] = replacement;
                    assert!(
                        ApiKey::parse_bytes(&changed).is_err(),
                        "seed {seed}, position {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn errors_never_contain_the_key() {
        let key = key_from_seed(1);
        let text = key.expose_secret();
        let mut candidates = vec![
            format!("{text}x"),
            text[..31].to_owned(),
            text.replacen("comp_", "camp_", 1),
        ];
        for pos in 5..KEY_LEN {
            let mut changed = text.as_bytes().to_vec();
            changed[pos] = if changed[pos] == b'0' { b'1' } else { b'0' };
            candidates.push(String::from_utf8(changed).unwrap());
            let mut invalid = text.as_bytes().to_vec();
            invalid[pos] = b'#';
            candidates.push(String::from_utf8(invalid).unwrap());
        }
        for candidate in &candidates {
            let err = parse(candidate).unwrap_err();
            for message in [err.to_string(), format!("{err:?}")] {
                for window in random_part(&key).as_bytes().windows(6) {
                    let window = std::str::from_utf8(window).unwrap();
                    assert!(!message.contains(window), "{message:?} leaks {window:?}");
                }
            }
        }
    }

    #[test]
    fn debug_and_display_show_only_the_hint() {
        let key = key_from_seed(2);
        let hint = key.hint();
        assert!(hint.starts_with("comp_…"));
        assert_eq!(hint.chars().count(), 10);
        assert!(hint.ends_with(&key.expose_secret()[28..]));
        let debug = format!("{key:?}");
        let alt_debug = format!("{key:#?}");
        let display = key.to_string();
        assert_eq!(debug, format!("ApiKey({hint})"));
        assert_eq!(display, hint);
        for shown in [debug, alt_debug, display] {
            assert!(!shown.contains(key.expose_secret()));
            assert!(!shown.contains(random_part(&key)));
            assert!(!shown.contains(&random_part(&key)[..6]));
        }
    }

    #[test]
    fn clone_is_the_same_key() {
        let key = key_from_seed(3);
        let copy = key.clone();
        assert_eq!(copy.expose_secret(), key.expose_secret());
        assert_eq!(copy.hash(), key.hash());
    }

    #[test]
    fn hash_is_sha256_of_the_ascii_text() {
        let key = key_from_seed(4);
        let expected: [u8; 32] = Sha256::digest(key.expose_secret().as_bytes()).into();
        assert_eq!(key.hash().as_bytes(), &expected);
        assert_ne!(key.hash(), key_from_seed(5).hash());
    }

    #[test]
    fn key_hash_hex() {
        let hash = KeyHash::from_hex(EXAMPLE_HASH).unwrap();
        assert_eq!(hash.to_hex(), EXAMPLE_HASH);
        assert_eq!(
            KeyHash::from_hex(&EXAMPLE_HASH.to_uppercase()).unwrap(),
            hash
        );
        assert_eq!(hash.as_bytes()[0], 0x0f);
        assert_eq!(KeyHash::from_bytes(*hash.as_bytes()), hash);
        for bad in [
            "",
            &EXAMPLE_HASH[..63],
            &format!("{EXAMPLE_HASH}0"),
            &EXAMPLE_HASH.replace('f', "g"),
            &format!("0x{}", &EXAMPLE_HASH[2..]),
            &format!(" {}", &EXAMPLE_HASH[1..]),
            // 64 bytes but 63 chars: non-ASCII never panics.
            &format!("é{}", &EXAMPLE_HASH[2..]),
        ] {
            assert_eq!(
                KeyHash::from_hex(bad),
                Err(KeyError::InvalidHash),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_hash_debug_is_short() {
        let hash = KeyHash::from_hex(EXAMPLE_HASH).unwrap();
        assert_eq!(format!("{hash:?}"), "KeyHash(0f17bc4f…)");
    }

    #[test]
    fn key_hash_eq_and_hash_agree() {
        let a = KeyHash::from_bytes([1; 32]);
        let mut b_bytes = [1; 32];
        b_bytes[31] = 2;
        let b = KeyHash::from_bytes(b_bytes);
        assert_ne!(a, b);
        let set: HashSet<KeyHash> = [a, a, b].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&KeyHash::from_bytes([1; 32])));
    }

    proptest! {
        #[test]
        fn key_hashes_differing_in_any_byte_are_unequal(
            bytes in any::<[u8; 32]>(),
            pos in 0..32usize,
            flip in 1..=255u8,
        ) {
            let mut other = bytes;
            other[pos] ^= flip;
            prop_assert_eq!(KeyHash::from_bytes(bytes), KeyHash::from_bytes(bytes));
            prop_assert_ne!(KeyHash::from_bytes(bytes), KeyHash::from_bytes(other));
        }

        #[test]
        fn generate_then_parse_round_trips(seed in any::<u64>()) {
            let key = key_from_seed(seed);
            let parsed = parse(key.expose_secret()).unwrap();
            prop_assert_eq!(parsed.expose_secret(), key.expose_secret());
            prop_assert_eq!(parsed.hash(), key.hash());
        }

        #[test]
        fn any_single_substitution_is_rejected(
            seed in any::<u64>(),
            pos in 0..KEY_LEN,
            replacement in any::<u8>(),
        ) {
            let key = key_from_seed(seed);
            let mut changed = key.expose_secret().as_bytes().to_vec();
            prop_assume!(changed[pos] != replacement);
            changed[pos] = replacement;
            prop_assert!(ApiKey::parse_bytes(&changed).is_err());
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in any::<String>()) {
            if let Ok(key) = parse(&s) {
                prop_assert_eq!(key.expose_secret(), s.as_str());
            }
        }

        #[test]
        fn valid_looking_text_is_accepted_iff_the_checksum_matches(
            body in "[0-9A-Za-z]{21}",
            checksum in "[0-9A-Za-z]{6}",
        ) {
            let text = format!("comp_{body}{checksum}");
            let expected = encode_checksum(crc32(&text.as_bytes()[..26]));
            let ok = checksum.as_bytes() == expected;
            prop_assert_eq!(parse(&text).is_ok(), ok);
            let fixed = format!("comp_{body}{}", std::str::from_utf8(&expected).unwrap());
            prop_assert!(parse(&fixed).is_ok());
        }

        #[test]
        fn key_hash_hex_round_trips(bytes in any::<[u8; 32]>()) {
            let hash = KeyHash::from_bytes(bytes);
            let hex = hash.to_hex();
            prop_assert_eq!(hex.len(), 64);
            prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert_eq!(KeyHash::from_hex(&hex).unwrap(), hash);
            prop_assert_eq!(KeyHash::from_hex(&hex.to_uppercase()).unwrap(), hash);
        }
    }
}
