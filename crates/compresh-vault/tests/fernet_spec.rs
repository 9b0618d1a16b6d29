//! Conformance with the Fernet specification's test vectors (`tests/data/*.json`, copied from
//! <https://github.com/fernet/spec>), and with this crate's documented key derivation.
//!
//! The `fernet` crate cannot encrypt with a chosen IV, which the `generate` vectors need, so
//! `spec_token` below builds tokens from the spec's layout itself (with a small AES-128 and
//! HMAC-SHA256, each checked against its standard's known answer) and the `fernet` crate must
//! then decrypt what it built.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use compresh_vault::{
    derive_fernet_key, KeyRing, MasterSecret, ProviderSecret, Sealed, VaultError,
};
use fernet::Fernet;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Deserialize)]
struct GenerateCase {
    token: String,
    now: String,
    iv: Vec<u8>,
    src: String,
    secret: String,
}

#[derive(Debug, Deserialize)]
struct VerifyCase {
    token: String,
    now: String,
    ttl_sec: u64,
    src: String,
    secret: String,
}

#[derive(Debug, Deserialize)]
struct InvalidCase {
    desc: String,
    token: String,
    now: String,
    ttl_sec: u64,
    secret: String,
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> Vec<T> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[test]
fn generate_vectors_produce_the_exact_token_and_fernet_decrypts_it() {
    let cases: Vec<GenerateCase> = load("generate.json");
    assert!(!cases.is_empty());
    for case in cases {
        let now = rfc3339::unix_seconds(&case.now);
        let iv: [u8; 16] = case.iv.as_slice().try_into().unwrap();
        let key = URL_SAFE.decode(&case.secret).unwrap();
        let token = spec_token::encode(&key, now, &iv, case.src.as_bytes());
        assert_eq!(token, case.token, "{case:?}");

        let fernet = Fernet::new(&case.secret).unwrap();
        let plaintext = fernet.decrypt_at_time(&token, None, now).unwrap();
        assert_eq!(plaintext, case.src.as_bytes());
    }
}

#[test]
fn verify_vectors_decrypt_at_their_time_with_their_ttl() {
    let cases: Vec<VerifyCase> = load("verify.json");
    assert!(!cases.is_empty());
    for case in cases {
        let now = rfc3339::unix_seconds(&case.now);
        let fernet = Fernet::new(&case.secret).unwrap();
        let plaintext = fernet
            .decrypt_at_time(&case.token, Some(case.ttl_sec), now)
            .unwrap_or_else(|err| panic!("{case:?}: {err}"));
        assert_eq!(plaintext, case.src.as_bytes());
    }
}

#[test]
fn all_invalid_vectors_are_rejected() {
    let cases: Vec<InvalidCase> = load("invalid.json");
    assert_eq!(cases.len(), 8, "the spec has 8 invalid cases");
    for case in cases {
        let now = rfc3339::unix_seconds(&case.now);
        let fernet = Fernet::new(&case.secret).unwrap();
        let result = fernet.decrypt_at_time(&case.token, Some(case.ttl_sec), now);
        assert!(result.is_err(), "accepted invalid case {:?}", case.desc);
    }
}

#[test]
fn the_vault_rejects_every_kind_of_bad_token_with_one_error() {
    // The invalid cases' kinds, rebuilt under a vault's derived key (the vault never checks
    // time, so the two time-based cases do not apply): all must be `DecryptFailed`.
    let secret_bytes = vec![0x42u8; 32];
    let ring = KeyRing::new(3, MasterSecret::from_bytes(secret_bytes.clone()).unwrap());
    let key = URL_SAFE
        .decode(derive_fernet_key(&MasterSecret::from_bytes(secret_bytes).unwrap()).as_str())
        .unwrap();
    let iv = [9u8; 16];
    let open = |token: String| ring.open(&Sealed { version: 3, token });

    let good = spec_token::encode(&key, 1_000, &iv, b"sk-good-token-0000");
    assert_eq!(
        open(good.clone()).unwrap().expose_secret(),
        "sk-good-token-0000"
    );

    let mut raw = URL_SAFE.decode(&good).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x80;
    let mut bad_tokens = vec![
        ("incorrect mac", URL_SAFE.encode(&raw)),
        ("too short", URL_SAFE.encode(&raw[..1 + 8 + 16 + 8])),
        ("invalid base64", format!("%%%{}", &good[3..])),
    ];
    // Correctly signed, but structurally wrong inside.
    let mut header = vec![0x80];
    header.extend_from_slice(&1_000u64.to_be_bytes());
    header.extend_from_slice(&iv);
    let mut ragged = header.clone();
    ragged.extend_from_slice(&[1u8; 17]);
    bad_tokens.push((
        "payload not a multiple of the block size",
        spec_token::sign(&key, ragged),
    ));
    bad_tokens.push((
        "payload padding error",
        spec_token::encode_unpadded(&key, 1_000, &iv, &[0u8; 16]),
    ));
    let mut wrong_version = URL_SAFE
        .decode(spec_token::encode(&key, 1_000, &iv, b"x"))
        .unwrap();
    wrong_version[0] = 0x81;
    wrong_version.truncate(wrong_version.len() - 32);
    bad_tokens.push(("wrong version byte", spec_token::sign(&key, wrong_version)));

    for (desc, token) in bad_tokens {
        let err = open(token).unwrap_err();
        assert!(matches!(err, VaultError::DecryptFailed), "{desc}: {err:?}");
    }
}

#[test]
fn documented_derivation_is_what_the_vault_uses() {
    let secret_bytes: Vec<u8> = (100u8..140).collect(); // 40 bytes: longer than the minimum
    let secret = MasterSecret::from_bytes(secret_bytes.clone()).unwrap();

    // Independently: base64url(SHA-256(b"compresh-vault-v1\0" || secret)), padded.
    let mut hasher = Sha256::new();
    hasher.update(b"compresh-vault-v1");
    hasher.update([0u8]);
    hasher.update(&secret_bytes);
    let digest = hasher.finalize();
    let expected_key = URL_SAFE.encode(digest);
    assert_eq!(expected_key.len(), 44);
    assert!(expected_key.ends_with('='));
    assert_eq!(*derive_fernet_key(&secret), expected_key);

    // A token sealed by the vault decrypts with a plain Fernet built from the expected key ...
    let ring = KeyRing::new(1, MasterSecret::from_bytes(secret_bytes).unwrap());
    let sealed = ring
        .seal(&ProviderSecret::new("sk-derivation-check-1234".to_owned()))
        .unwrap();
    let plaintext = Fernet::new(&expected_key)
        .unwrap()
        .decrypt(&sealed.token)
        .unwrap();
    assert_eq!(plaintext, b"sk-derivation-check-1234");

    // ... and a token built from the spec's layout with the digest split as Fernet prescribes
    // (signing key = first 16 bytes, AES key = last 16) opens in the vault.
    let token = spec_token::encode(&digest, 499_162_800, &[7u8; 16], b"sk-spec-built-99999");
    let opened = ring.open(&Sealed { version: 1, token }).unwrap();
    assert_eq!(opened.expose_secret(), "sk-spec-built-99999");
}

#[test]
fn test_helpers_match_their_standards() {
    assert_eq!(rfc3339::unix_seconds("1970-01-01T00:00:00Z"), 0);
    assert_eq!(
        rfc3339::unix_seconds("1985-10-26T01:20:00-07:00"),
        499_162_800
    );
    assert_eq!(
        rfc3339::unix_seconds("2000-03-01T00:00:00+01:00"),
        951_865_200
    );
    assert_eq!(
        rfc3339::unix_seconds("2024-02-29T23:59:59.5z"),
        1_709_251_199
    );

    // FIPS-197 appendix C.1.
    let key: [u8; 16] = core::array::from_fn(|i| i as u8);
    let mut block: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
    spec_token::aes128_encrypt_block(&key, &mut block);
    assert_eq!(hex(&block), "69c4e0d86a7b0430d8cdb78070b4c55a");

    // RFC 4231 test case 1.
    let mac = spec_token::hmac_sha256(&[0x0b; 20], b"Hi There");
    assert_eq!(
        hex(&mac),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds Fernet tokens exactly as the spec lays them out, with a caller-chosen IV and time:
/// `0x80 || timestamp (u64 BE) || IV || AES-128-CBC(PKCS#7(plaintext)) || HMAC-SHA256`, all
/// base64url with padding. Test-only; not constant-time.
mod spec_token {
    use base64::engine::general_purpose::URL_SAFE;
    use base64::Engine as _;
    use sha2::{Digest as _, Sha256};

    /// `key` is the 32-byte Fernet key: signing key first, encryption key second.
    pub fn encode(key: &[u8], timestamp: u64, iv: &[u8; 16], plaintext: &[u8]) -> String {
        let mut padded = plaintext.to_vec();
        let pad = 16 - plaintext.len() % 16;
        padded.extend(std::iter::repeat_n(pad as u8, pad));
        encode_unpadded(key, timestamp, iv, &padded)
    }

    /// Like `encode`, but `data` (a multiple of 16 bytes) is encrypted as is, without padding.
    pub fn encode_unpadded(key: &[u8], timestamp: u64, iv: &[u8; 16], data: &[u8]) -> String {
        assert_eq!(key.len(), 32);
        assert_eq!(data.len() % 16, 0);
        let encryption_key: [u8; 16] = key[16..].try_into().unwrap();
        let mut token = vec![0x80];
        token.extend_from_slice(&timestamp.to_be_bytes());
        token.extend_from_slice(iv);
        let mut previous = *iv;
        for chunk in data.chunks(16) {
            let mut block: [u8; 16] = core::array::from_fn(|i| chunk[i] ^ previous[i]);
            aes128_encrypt_block(&encryption_key, &mut block);
            token.extend_from_slice(&block);
            previous = block;
        }
        sign(key, token)
    }

    /// Appends the HMAC (keyed with the first half of `key`) and encodes: any body, however
    /// malformed, gets a valid signature.
    pub fn sign(key: &[u8], mut body: Vec<u8>) -> String {
        let mac = hmac_sha256(&key[..16], &body);
        body.extend_from_slice(&mac);
        URL_SAFE.encode(body)
    }

    pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        assert!(key.len() <= 64);
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(key);
        let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&inner_pad)
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(&outer_pad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// FIPS-197 AES-128, one block, state in column-major order (byte `r + 4c`).
    pub fn aes128_encrypt_block(key: &[u8; 16], block: &mut [u8; 16]) {
        let sbox = sbox();
        let round_keys = expand_key(key, &sbox);
        xor(block, &round_keys[0]);
        for (round, round_key) in round_keys.iter().enumerate().skip(1) {
            for byte in block.iter_mut() {
                *byte = sbox[usize::from(*byte)];
            }
            let state = *block;
            for row in 1..4 {
                for col in 0..4 {
                    block[row + 4 * col] = state[row + 4 * ((col + row) % 4)];
                }
            }
            if round != 10 {
                for col in block.chunks_mut(4) {
                    let [a0, a1, a2, a3] = [col[0], col[1], col[2], col[3]];
                    col[0] = gmul(a0, 2) ^ gmul(a1, 3) ^ a2 ^ a3;
                    col[1] = a0 ^ gmul(a1, 2) ^ gmul(a2, 3) ^ a3;
                    col[2] = a0 ^ a1 ^ gmul(a2, 2) ^ gmul(a3, 3);
                    col[3] = gmul(a0, 3) ^ a1 ^ a2 ^ gmul(a3, 2);
                }
            }
            xor(block, round_key);
        }
    }

    fn xor(block: &mut [u8; 16], key: &[u8; 16]) {
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
    }

    fn xtime(b: u8) -> u8 {
        (b << 1) ^ if b & 0x80 != 0 { 0x1b } else { 0 }
    }

    fn gmul(mut a: u8, mut b: u8) -> u8 {
        let mut product = 0;
        while b != 0 {
            if b & 1 != 0 {
                product ^= a;
            }
            a = xtime(a);
            b >>= 1;
        }
        product
    }

    /// The S-box computed from its definition (inverse in GF(2^8), then the affine map), so no
    /// 256-entry table can hide a typo.
    fn sbox() -> [u8; 256] {
        core::array::from_fn(|x| {
            let x = x as u8;
            // x^254 is the multiplicative inverse (and maps 0 to 0).
            let (mut inverse, mut base, mut exponent) = (1u8, x, 254u32);
            while exponent > 0 {
                if exponent & 1 == 1 {
                    inverse = gmul(inverse, base);
                }
                base = gmul(base, base);
                exponent >>= 1;
            }
            let b = inverse;
            b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63
        })
    }

    fn expand_key(key: &[u8; 16], sbox: &[u8; 256]) -> [[u8; 16]; 11] {
        let mut words = [[0u8; 4]; 44];
        for (i, word) in words.iter_mut().take(4).enumerate() {
            word.copy_from_slice(&key[4 * i..4 * i + 4]);
        }
        let mut rcon = 1u8;
        for i in 4..44 {
            let mut temp = words[i - 1];
            if i % 4 == 0 {
                temp.rotate_left(1);
                for byte in &mut temp {
                    *byte = sbox[usize::from(*byte)];
                }
                temp[0] ^= rcon;
                rcon = xtime(rcon);
            }
            for j in 0..4 {
                words[i][j] = words[i - 4][j] ^ temp[j];
            }
        }
        core::array::from_fn(|round| core::array::from_fn(|i| words[4 * round + i / 4][i % 4]))
    }
}

/// Just enough RFC 3339 for the vectors: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
mod rfc3339 {
    pub fn unix_seconds(text: &str) -> u64 {
        let (date, time) = text
            .split_once(['T', 't'])
            .unwrap_or_else(|| panic!("no T in {text:?}"));
        let mut date_parts = date.split('-').map(|part| part.parse::<i64>().unwrap());
        let (year, month, day) = (
            date_parts.next().unwrap(),
            date_parts.next().unwrap(),
            date_parts.next().unwrap(),
        );

        let (clock, offset_seconds) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else {
            let sign_at = time.rfind(['+', '-']).unwrap();
            let (clock, offset) = time.split_at(sign_at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset[1..].split_once(':').unwrap();
            let seconds =
                hours.parse::<i64>().unwrap() * 3600 + minutes.parse::<i64>().unwrap() * 60;
            (clock, sign * seconds)
        };
        let clock = clock
            .split_once('.')
            .map_or(clock, |(whole, _fraction)| whole);
        let mut clock_parts = clock.split(':').map(|part| part.parse::<i64>().unwrap());
        let (hour, minute, second) = (
            clock_parts.next().unwrap(),
            clock_parts.next().unwrap(),
            clock_parts.next().unwrap(),
        );

        let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
        u64::try_from(local - offset_seconds).unwrap()
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let shifted_month = if month > 2 { month - 3 } else { month + 9 };
        let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }
}
