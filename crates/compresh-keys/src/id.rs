//! [`KeyId`]: the public name of a key.

use std::fmt;
use std::str::FromStr;

use rand::rngs::OsRng;
use rand::RngCore;

use crate::error::KeyError;
use crate::format::{fill_base62, is_base62};

/// Prefix of every key id.
const ID_PREFIX: &str = "key_";
/// Number of random base62 characters after the prefix (≈71 bits).
const ID_RANDOM_LEN: usize = 12;
const ID_LEN: usize = ID_PREFIX.len() + ID_RANDOM_LEN;

/// Public identifier of a key, `key_` + 12 random base62 characters, e.g. `key_4fT9xQ2mB7Lz`.
///
/// Random and independent of the key itself, so it is not secret: it may appear in logs, URLs
/// and admin output, and is how a key is named for revocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// A new random id from the OS CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the operating system's random number generator fails.
    #[must_use]
    pub fn generate() -> KeyId {
        KeyId::generate_from(&mut OsRng)
    }

    fn generate_from<R: RngCore + ?Sized>(rng: &mut R) -> KeyId {
        let mut random = [0u8; ID_RANDOM_LEN];
        fill_base62(rng, &mut random);
        let mut id = String::with_capacity(ID_LEN);
        id.push_str(ID_PREFIX);
        id.extend(random.iter().map(|&b| char::from(b)));
        KeyId(id)
    }

    /// The id as text, e.g. `key_4fT9xQ2mB7Lz`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    /// Parses `key_` + exactly 12 characters of `0-9A-Za-z` (strict: no trimming).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid = bytes.len() == ID_LEN
            && bytes.starts_with(ID_PREFIX.as_bytes())
            && bytes[ID_PREFIX.len()..].iter().all(|&b| is_base62(b));
        if valid {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(KeyError::InvalidKeyId)
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn generated_ids_have_the_documented_shape() {
        let id = KeyId::generate();
        assert_eq!(id.as_str().len(), 16);
        assert!(id.as_str().starts_with("key_"));
        assert!(id.as_str()[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(id.as_str().parse::<KeyId>().unwrap(), id);
    }

    #[test]
    fn generated_ids_differ() {
        let ids: HashSet<KeyId> = (0..100).map(|_| KeyId::generate()).collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn display_and_debug() {
        let id: KeyId = "key_0123456789Az".parse().unwrap();
        assert_eq!(id.to_string(), "key_0123456789Az");
        assert_eq!(format!("{id:?}"), "KeyId(key_0123456789Az)");
    }

    #[test]
    fn invalid_ids_are_rejected() {
        for bad in [
            "",
            "key_",
            "key_0123456789A",
            "key_0123456789Azz",
            "KEY_0123456789Az",
            "kid_0123456789Az",
            "key_0123456789A-",
            " key_0123456789A",
            "key_0123456789é",
            "comp_0123456789ABCDEFGHIJK0cc0Wc",
        ] {
            assert_eq!(bad.parse::<KeyId>(), Err(KeyError::InvalidKeyId), "{bad:?}");
        }
    }

    #[test]
    fn ids_order_by_text() {
        let a: KeyId = "key_000000000000".parse().unwrap();
        let b: KeyId = "key_00000000000a".parse().unwrap();
        assert!(a < b);
    }

    proptest! {
        #[test]
        fn generate_then_parse_round_trips(seed in any::<u64>()) {
            let id = KeyId::generate_from(&mut StdRng::seed_from_u64(seed));
            let parsed: KeyId = id.as_str().parse().unwrap();
            prop_assert_eq!(&parsed, &id);
            prop_assert_eq!(parsed.to_string(), id.as_str());
        }

        #[test]
        fn parse_accepts_exactly_the_format(s in any::<String>()) {
            let expected = s.len() == 16
                && s.starts_with("key_")
                && s[4..].bytes().all(|b| b.is_ascii_alphanumeric());
            prop_assert_eq!(s.parse::<KeyId>().is_ok(), expected);
        }

        #[test]
        fn well_formed_ids_round_trip(random in "[0-9A-Za-z]{12}") {
            let text = format!("key_{random}");
            let parsed: KeyId = text.parse().unwrap();
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }
    }
}
