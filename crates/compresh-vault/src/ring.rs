//! The versioned key ring: sealing, opening, rotation and the key-ring text format.

use std::collections::BTreeMap;
use std::fmt;

use fernet::Fernet;
use zeroize::Zeroizing;

use crate::{derive_fernet_key, MasterSecret, ProviderSecret, VaultError};

/// Name of the environment variable read by [`KeyRing::from_env`].
pub const MASTER_KEY_ENV: &str = "COMPRESH_MASTER_KEY";

/// "Now" passed to Fernet when opening. Sealed values are stored indefinitely, so neither a TTL
/// nor the spec's 60-second clock-skew check makes sense for them: with the real clock, a value
/// sealed while the clock ran ahead could not be opened until the clock caught up (Python's
/// `Fernet.decrypt` without a TTL skips the check too). Half of `u64::MAX` seconds disables the
/// check without any risk of overflow inside `fernet`.
const NO_CLOCK_CHECK: u64 = u64::MAX / 2;

const BARE_NOT_ALONE: &str =
    "a secret without a `v<N>:` prefix is only allowed as the only entry (it means v1)";
const BAD_VERSION: &str = "expected `v<N>:<base64 secret>` with N a whole number >= 1";
const BAD_BASE64: &str = "secret is not valid base64 (standard or URL-safe alphabet expected)";
const DUPLICATE: &str = "duplicate key version";
const NO_KEY: &str = "no master key found";

/// A provider secret encrypted under one version of the master key.
///
/// Store both fields; the token is Fernet ciphertext, so it is safe to log or `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Version of the master key the token was made with.
    pub version: u32,
    /// The Fernet token (URL-safe base64).
    pub token: String,
}

/// One version of the master key, with its Fernet instance derived once.
struct Entry {
    secret: MasterSecret,
    fernet: Fernet,
}

impl Entry {
    fn new(secret: MasterSecret) -> Entry {
        let key = derive_fernet_key(&secret);
        // Cannot fail: `derive_fernet_key` returns URL-safe base64 of exactly 32 bytes, which is
        // precisely what `Fernet::new` accepts.
        let fernet = Fernet::new(&key).expect("a derived key is always a valid Fernet key");
        Entry { secret, fernet }
    }
}

/// A versioned set of master secrets. Versions are `u32 >= 1`; encrypt with the newest.
///
/// Never empty: [`KeyRing::new`] and [`KeyRing::parse`] produce at least one key and
/// [`KeyRing::retire`] refuses to remove the newest. `Debug` shows only the versions.
pub struct KeyRing {
    entries: BTreeMap<u32, Entry>,
}

impl KeyRing {
    /// A ring holding a single key.
    ///
    /// # Panics
    ///
    /// Panics if `version` is 0 (versions start at 1); a literal 0 here is a programming error.
    #[must_use]
    pub fn new(version: u32, secret: MasterSecret) -> KeyRing {
        assert!(version >= 1, "master key versions start at 1");
        let mut entries = BTreeMap::new();
        entries.insert(version, Entry::new(secret));
        KeyRing { entries }
    }

    /// Adds a key. It becomes the newest only if `version` is higher than every other version.
    ///
    /// # Errors
    ///
    /// [`VaultError::DuplicateVersion`] if the ring already holds `version`,
    /// [`VaultError::InvalidVersion`] if `version` is 0.
    pub fn add(&mut self, version: u32, secret: MasterSecret) -> Result<(), VaultError> {
        if version == 0 {
            return Err(VaultError::InvalidVersion { version });
        }
        match self.entries.entry(version) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(VaultError::DuplicateVersion { version })
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(Entry::new(secret));
                Ok(())
            }
        }
    }

    /// The highest version held: the one [`KeyRing::seal`] uses.
    #[must_use]
    pub fn newest_version(&self) -> u32 {
        self.newest().0
    }

    /// All versions held, ascending.
    #[must_use]
    pub fn versions(&self) -> Vec<u32> {
        self.entries.keys().copied().collect()
    }

    /// Removes an old key (after every value sealed with it was [rewrapped](KeyRing::rewrap)).
    ///
    /// # Errors
    ///
    /// [`VaultError::CannotRetireNewest`] if `version` is the newest,
    /// [`VaultError::VersionNotFound`] if the ring does not hold it.
    pub fn retire(&mut self, version: u32) -> Result<(), VaultError> {
        if version == self.newest_version() {
            return Err(VaultError::CannotRetireNewest { version });
        }
        match self.entries.remove(&version) {
            Some(_) => Ok(()),
            None => Err(VaultError::VersionNotFound { version }),
        }
    }

    /// Encrypts a provider secret with the newest key.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for fallible backends.
    pub fn seal(&self, plaintext: &ProviderSecret) -> Result<Sealed, VaultError> {
        let (version, entry) = self.newest();
        let token = entry.fernet.encrypt(plaintext.expose_secret().as_bytes());
        Ok(Sealed { version, token })
    }

    /// Decrypts a sealed value with the key of its version. Tokens never expire.
    ///
    /// # Errors
    ///
    /// [`VaultError::UnknownKeyVersion`] if the ring does not hold `sealed.version`,
    /// [`VaultError::DecryptFailed`] if the token does not verify and decrypt under that key
    /// (wrong key, tampered, malformed), [`VaultError::NotUtf8`] if the authentic plaintext is not
    /// UTF-8 (it was not made by [`KeyRing::seal`]).
    pub fn open(&self, sealed: &Sealed) -> Result<ProviderSecret, VaultError> {
        let entry = self
            .entries
            .get(&sealed.version)
            .ok_or(VaultError::UnknownKeyVersion {
                version: sealed.version,
            })?;
        let bytes = Zeroizing::new(
            entry
                .fernet
                .decrypt_at_time(&sealed.token, None, NO_CLOCK_CHECK)
                .map_err(|_| VaultError::DecryptFailed)?,
        );
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::NotUtf8)?;
        Ok(ProviderSecret::new(text.to_owned()))
    }

    /// Re-encrypts a sealed value under the newest key; the plaintext never leaves this call.
    ///
    /// A value already sealed with the newest key is verified and returned unchanged, so a
    /// migration can skip writing rows where `rewrap(&s)? == s`.
    ///
    /// # Errors
    ///
    /// As [`KeyRing::open`].
    pub fn rewrap(&self, sealed: &Sealed) -> Result<Sealed, VaultError> {
        let plaintext = self.open(sealed)?;
        if sealed.version == self.newest_version() {
            return Ok(sealed.clone());
        }
        self.seal(&plaintext)
    }

    /// Parses key ring text.
    ///
    /// Key file text: one line per version, `v<N>:<base64url secret>`, ascending; `#` comments and
    /// blank lines ignored. A single bare base64 line (no `vN:`) means version 1 — that is also
    /// the accepted form of `COMPRESH_MASTER_KEY` (which may also use the multi-version form,
    /// lines or entries separated by newlines or commas).
    ///
    /// Secrets may use the standard or URL-safe base64 alphabet, with or without padding. Versions
    /// may appear in any order. A `#` starts a comment anywhere on a line (base64 never contains
    /// `#`).
    ///
    /// ```
    /// use compresh_vault::KeyRing;
    ///
    /// let ring = KeyRing::parse(
    ///     "# rotated 2025-01\n\
    ///      v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\
    ///      v2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n",
    /// )?;
    /// assert_eq!(ring.versions(), [1, 2]);
    /// // The single-key environment form:
    /// let ring = KeyRing::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")?;
    /// assert_eq!(ring.versions(), [1]);
    /// # Ok::<(), compresh_vault::VaultError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`VaultError::MalformedKeyFile`] (with the line number, never the line's content) for a
    /// bad `v<N>:` label, a version of 0, a duplicate version, invalid base64, a bare secret
    /// mixed with other entries, or text holding no key; [`VaultError::SecretTooShort`] for a
    /// secret under [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes.
    pub fn parse(text: &str) -> Result<KeyRing, VaultError> {
        let mut entries = BTreeMap::new();
        let mut bare: Option<MasterSecret> = None;
        for (index, raw_line) in text.lines().enumerate() {
            let line = index + 1;
            let malformed = |reason| VaultError::MalformedKeyFile { line, reason };
            let content = raw_line
                .split_once('#')
                .map_or(raw_line, |(before, _)| before);
            for item in content
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
            {
                if bare.is_some() {
                    return Err(malformed(BARE_NOT_ALONE));
                }
                match item.split_once(':') {
                    Some((label, encoded)) => {
                        let version = parse_version(label).ok_or(malformed(BAD_VERSION))?;
                        let secret = decode_secret(encoded, line)?;
                        if entries.insert(version, Entry::new(secret)).is_some() {
                            return Err(malformed(DUPLICATE));
                        }
                    }
                    None if entries.is_empty() => bare = Some(decode_secret(item, line)?),
                    None => return Err(malformed(BARE_NOT_ALONE)),
                }
            }
        }
        if let Some(secret) = bare {
            entries.insert(1, Entry::new(secret));
        }
        if entries.is_empty() {
            return Err(VaultError::MalformedKeyFile {
                line: 0,
                reason: NO_KEY,
            });
        }
        Ok(KeyRing { entries })
    }

    /// Renders the ring as key file text: `v<N>:<base64url secret>` lines, ascending, each ending
    /// in `\n`. [`KeyRing::parse`] reads it back.
    #[must_use]
    pub fn to_text(&self) -> Zeroizing<String> {
        // Allocate once at an upper bound so pushing never reallocates (which would leave a copy
        // of the secrets in freed memory). "v" + up to 10 digits + ":" + base64 + "\n".
        let capacity = self
            .entries
            .values()
            .map(|entry| 13 + base64::encoded_len(entry.secret.len(), true).unwrap_or(0))
            .sum();
        let mut out = Zeroizing::new(String::with_capacity(capacity));
        for (version, entry) in &self.entries {
            out.push_str(&format!("v{version}:"));
            out.push_str(&entry.secret.to_base64());
            out.push('\n');
        }
        out
    }

    /// Adds a freshly generated secret as `newest_version() + 1` and returns that version.
    ///
    /// # Panics
    ///
    /// Panics if the newest version is already `u32::MAX` (there is no next version).
    pub fn rotate(&mut self) -> u32 {
        let Some(version) = self.newest_version().checked_add(1) else {
            panic!("master key version v{} has no successor", u32::MAX);
        };
        self.entries
            .insert(version, Entry::new(MasterSecret::generate()));
        version
    }

    /// Reads the ring from the [`MASTER_KEY_ENV`] (`COMPRESH_MASTER_KEY`) environment variable,
    /// in [`KeyRing::parse`] format. `Ok(None)` if the variable is not set.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotUtf8`] if the variable is not UTF-8; otherwise as [`KeyRing::parse`].
    pub fn from_env() -> Result<Option<KeyRing>, VaultError> {
        Self::from_env_var(MASTER_KEY_ENV)
    }

    fn from_env_var(name: &str) -> Result<Option<KeyRing>, VaultError> {
        match std::env::var(name) {
            Ok(value) => Self::parse(&Zeroizing::new(value)).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(VaultError::NotUtf8),
        }
    }

    fn newest(&self) -> (u32, &Entry) {
        let (version, entry) = self
            .entries
            .last_key_value()
            // Cannot fail: every constructor inserts a key and `retire` never removes the newest.
            .expect("a key ring is never empty");
        (*version, entry)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

/// `v<N>` with N a decimal number >= 1 (digits only: no sign, no spaces inside).
fn parse_version(label: &str) -> Option<u32> {
    let digits = label.trim().strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|version| *version >= 1)
}

/// Decodes one secret of a key ring text; invalid base64 is reported with its line number.
fn decode_secret(encoded: &str, line: usize) -> Result<MasterSecret, VaultError> {
    MasterSecret::from_base64(encoded).map_err(|err| match err {
        VaultError::InvalidBase64 => VaultError::MalformedKeyFile {
            line,
            reason: BAD_BASE64,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};
    use base64::Engine as _;

    use super::*;

    fn secret(fill: u8) -> MasterSecret {
        MasterSecret::from_bytes(vec![fill; 32]).unwrap()
    }

    fn provider(key: &str) -> ProviderSecret {
        ProviderSecret::new(key.to_owned())
    }

    #[test]
    fn seal_then_open_round_trips_with_the_newest_key() {
        let mut ring = KeyRing::new(1, secret(1));
        ring.add(5, secret(5)).unwrap();
        ring.add(3, secret(3)).unwrap();
        assert_eq!(ring.newest_version(), 5);
        assert_eq!(ring.versions(), [1, 3, 5]);
        let sealed = ring.seal(&provider("sk-test-1234567890")).unwrap();
        assert_eq!(sealed.version, 5);
        assert!(!sealed.token.contains("sk-test"));
        assert_eq!(
            ring.open(&sealed).unwrap().expose_secret(),
            "sk-test-1234567890"
        );
        // Two seals of the same secret differ (random IV).
        assert_ne!(ring.seal(&provider("sk-test-1234567890")).unwrap(), sealed);
    }

    #[test]
    fn add_refuses_duplicates_and_version_zero() {
        let mut ring = KeyRing::new(2, secret(2));
        assert!(matches!(
            ring.add(2, secret(9)),
            Err(VaultError::DuplicateVersion { version: 2 })
        ));
        assert!(matches!(
            ring.add(0, secret(9)),
            Err(VaultError::InvalidVersion { version: 0 })
        ));
        assert_eq!(ring.versions(), [2]);
    }

    #[test]
    #[should_panic(expected = "versions start at 1")]
    fn new_refuses_version_zero() {
        let _ = KeyRing::new(0, secret(0));
    }

    #[test]
    fn retire_keeps_the_newest_and_reports_unknown_versions() {
        let mut ring = KeyRing::new(1, secret(1));
        ring.add(2, secret(2)).unwrap();
        assert!(matches!(
            ring.retire(2),
            Err(VaultError::CannotRetireNewest { version: 2 })
        ));
        assert!(matches!(
            ring.retire(7),
            Err(VaultError::VersionNotFound { version: 7 })
        ));
        ring.retire(1).unwrap();
        assert_eq!(ring.versions(), [2]);
        assert!(matches!(
            ring.retire(2),
            Err(VaultError::CannotRetireNewest { version: 2 })
        ));
    }

    #[test]
    fn rotate_rewrap_retire_lifecycle() {
        let mut ring = KeyRing::new(1, secret(1));
        let old = ring.seal(&provider("sk-rewrapped-000000")).unwrap();
        let untouched = ring.seal(&provider("sk-forgotten-000000")).unwrap();

        assert_eq!(ring.rotate(), 2);
        assert_eq!(ring.newest_version(), 2);
        let moved = ring.rewrap(&old).unwrap();
        assert_eq!(moved.version, 2);
        assert_ne!(moved.token, old.token);
        // Rewrapping a value already on the newest key is a verified no-op.
        assert_eq!(ring.rewrap(&moved).unwrap(), moved);

        ring.retire(1).unwrap();
        assert_eq!(
            ring.open(&moved).unwrap().expose_secret(),
            "sk-rewrapped-000000"
        );
        let err = ring.open(&untouched).unwrap_err();
        assert!(
            matches!(err, VaultError::UnknownKeyVersion { version: 1 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "ciphertext was made with master key v1, which this key ring does not hold"
        );
        assert!(matches!(
            ring.rewrap(&untouched),
            Err(VaultError::UnknownKeyVersion { version: 1 })
        ));
    }

    #[test]
    fn wrong_key_tampering_and_garbage_are_all_decrypt_failed() {
        let ring = KeyRing::new(1, secret(1));
        let other = KeyRing::new(1, secret(2));
        let sealed = ring.seal(&provider("sk-abcdefghijklmnop")).unwrap();
        assert!(matches!(
            other.open(&sealed),
            Err(VaultError::DecryptFailed)
        ));

        // Flip one bit of the first ciphertext byte (after version, timestamp and IV).
        let mut raw = URL_SAFE.decode(&sealed.token).unwrap();
        raw[1 + 8 + 16] ^= 0x01;
        let tampered = Sealed {
            version: 1,
            token: URL_SAFE.encode(&raw),
        };
        assert!(matches!(
            ring.open(&tampered),
            Err(VaultError::DecryptFailed)
        ));

        for token in [
            "",
            "not a token",
            "gAAAAA",
            &sealed.token[..sealed.token.len() - 8],
        ] {
            let garbage = Sealed {
                version: 1,
                token: token.to_owned(),
            };
            assert!(
                matches!(ring.open(&garbage), Err(VaultError::DecryptFailed)),
                "{token:?}"
            );
        }
    }

    #[test]
    fn opens_tokens_from_the_future_and_the_distant_past() {
        // At-rest values never expire, and a clock that ran ahead when sealing must not make
        // them unreadable.
        let ring = KeyRing::new(1, secret(1));
        let fernet = Fernet::new(&derive_fernet_key(&secret(1))).unwrap();
        for timestamp in [0, 1, 4_102_444_800 /* 2100-01-01 */] {
            let sealed = Sealed {
                version: 1,
                token: fernet.encrypt_at_time(b"sk-time-travel-0000", timestamp),
            };
            assert_eq!(
                ring.open(&sealed).unwrap().expose_secret(),
                "sk-time-travel-0000"
            );
        }
    }

    #[test]
    fn authentic_non_utf8_plaintext_is_not_utf8() {
        let ring = KeyRing::new(1, secret(1));
        let fernet = Fernet::new(&derive_fernet_key(&secret(1))).unwrap();
        let sealed = Sealed {
            version: 1,
            token: fernet.encrypt(&[0xff, 0xfe, 0x00]),
        };
        assert!(matches!(ring.open(&sealed), Err(VaultError::NotUtf8)));
    }

    #[test]
    fn opens_a_token_made_by_python_cryptography() {
        // Made with Python `cryptography` 48 using the derivation documented in the crate docs,
        // for the secret bytes 0..32 (see the crate docs' snippet).
        let ring = KeyRing::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let sealed = Sealed {
            version: 1,
            token: "gAAAAABlU_EArGNlrTd8xFpvy84aNQy6SJ-VBW_7wbEDZPiWO0h5UYh2UeKqzayH-jmXT0KtfTX0pl8uN4h1-5O8wGDBSoEsbtHrL_wY6__Es7STxBYvSbw="
                .to_owned(),
        };
        assert_eq!(
            ring.open(&sealed).unwrap().expose_secret(),
            "sk-python-made-0123456789"
        );
    }

    #[test]
    fn to_text_and_parse_round_trip() {
        let mut ring = KeyRing::new(3, MasterSecret::generate());
        ring.add(1, MasterSecret::generate()).unwrap();
        ring.add(10, MasterSecret::generate()).unwrap();
        let text = ring.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("v1:"));
        assert!(lines[1].starts_with("v3:"));
        assert!(lines[2].starts_with("v10:"));
        assert!(text.ends_with('\n'));

        let parsed = KeyRing::parse(&text).unwrap();
        assert_eq!(parsed.versions(), [1, 3, 10]);
        assert_eq!(*parsed.to_text(), *text);
        // The parsed ring opens what the original sealed.
        let sealed = ring.seal(&provider("sk-roundtrip-0000")).unwrap();
        assert_eq!(
            parsed.open(&sealed).unwrap().expose_secret(),
            "sk-roundtrip-0000"
        );
    }

    #[test]
    fn parse_accepts_comments_blank_lines_commas_and_both_alphabets() {
        let one = URL_SAFE.encode([0xfb; 32]);
        let two = STANDARD_NO_PAD.encode([0xfa; 32]);
        let text = format!("# Compresh master keys\n\n  v2:{two}  # newest\r\nv1:{one}\n\n# end\n");
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.versions(), [1, 2]);

        let commas = KeyRing::parse(&format!("v1:{one}, v2:{two},")).unwrap();
        assert_eq!(*commas.to_text(), *ring.to_text());

        let bare = KeyRing::parse(&format!("\n  {two}\n")).unwrap();
        assert_eq!(bare.versions(), [1]);
        assert_eq!(
            *bare.to_text(),
            format!("v1:{}\n", URL_SAFE.encode([0xfa; 32]))
        );
    }

    #[test]
    fn parse_errors_name_the_line_and_never_the_secret() {
        let good = URL_SAFE.encode([0x5a; 32]);
        let cases: Vec<(String, usize, &str)> = vec![
            (format!("v1:{good}\n{good}"), 2, BARE_NOT_ALONE),
            (format!("{good}\nv2:{good}"), 2, BARE_NOT_ALONE),
            (format!("{good},{good}"), 1, BARE_NOT_ALONE),
            (format!("# c\nv0:{good}"), 2, BAD_VERSION),
            (format!("x1:{good}"), 1, BAD_VERSION),
            (format!("v:{good}"), 1, BAD_VERSION),
            (format!("v+1:{good}"), 1, BAD_VERSION),
            (format!("v99999999999:{good}"), 1, BAD_VERSION),
            (format!("v1:{good}\nv2:{good}\nv1:{good}"), 3, DUPLICATE),
            (format!("v1:{good}\nv2:{good}!!"), 2, BAD_BASE64),
            (String::new(), 0, NO_KEY),
            ("# only a comment\n\n , ,\n".to_owned(), 0, NO_KEY),
        ];
        for (text, want_line, want_reason) in cases {
            let err = KeyRing::parse(&text).unwrap_err();
            match &err {
                VaultError::MalformedKeyFile { line, reason } => {
                    assert_eq!((*line, *reason), (want_line, want_reason), "{text:?}");
                }
                other => panic!("{text:?}: unexpected {other:?}"),
            }
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(&good[..20]), "{shown}");
            }
        }
    }

    #[test]
    fn parse_refuses_a_short_secret() {
        let short = URL_SAFE.encode([0x11; 31]);
        let err = KeyRing::parse(&format!("v1:{short}")).unwrap_err();
        assert!(
            matches!(err, VaultError::SecretTooShort { len: 31 }),
            "{err:?}"
        );
        assert!(!err.to_string().contains(&short[..20]));
        assert!(matches!(
            KeyRing::parse(&short),
            Err(VaultError::SecretTooShort { len: 31 })
        ));
    }

    #[test]
    fn debug_shows_versions_only() {
        let mut ring = KeyRing::new(1, secret(0x41));
        ring.add(2, secret(0x42)).unwrap();
        let debug = format!("{ring:?}");
        assert_eq!(debug, "KeyRing { versions: [1, 2], .. }");
        let alternate = format!("{ring:#?}");
        for fill in [0x41, 0x42] {
            let encoded = secret(fill).to_base64();
            assert!(!alternate.contains(&encoded[..20]));
            assert!(!alternate.contains(derive_fernet_key(&secret(fill)).as_str()));
        }
    }

    #[test]
    fn from_env_var_reads_parses_and_reports_absence() {
        // A name only this test uses, so parallel tests cannot interfere.
        let name = "COMPRESH_VAULT_TEST_FROM_ENV_VAR";
        assert!(KeyRing::from_env_var(name).unwrap().is_none());
        let one = URL_SAFE.encode([0x33; 32]);
        let two = URL_SAFE.encode([0x44; 32]);
        std::env::set_var(name, format!("v1:{one},v2:{two}"));
        let ring = KeyRing::from_env_var(name).unwrap().unwrap();
        assert_eq!(ring.versions(), [1, 2]);
        std::env::set_var(name, "too-short");
        assert!(KeyRing::from_env_var(name).is_err());
        std::env::remove_var(name);
        assert_eq!(MASTER_KEY_ENV, "COMPRESH_MASTER_KEY");
    }
}
