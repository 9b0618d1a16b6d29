//! The wire format's building blocks: base62 alphabet, CRC32, checksum encoding, sampling.

use rand::RngCore;
use zeroize::Zeroizing;

/// The base62 alphabet in digit order: index 0 = `'0'`, 10 = `'A'`, 36 = `'a'`.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Number of characters of the checksum suffix.
pub(crate) const CHECKSUM_LEN: usize = 6;

/// Largest multiple of 62 that fits in a byte (4 * 62): bytes at or above it are rejected so
/// that `byte % 62` is uniform.
const REJECT_FROM: u8 = 248;

/// `true` if `b` is one of the 62 alphabet bytes.
pub(crate) fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// CRC-32/ISO-HDLC lookup table (reflected polynomial 0xEDB88320), built at compile time.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC32 as in zlib, PNG and Ethernet: init `0xFFFFFFFF`, reflected, final xor `0xFFFFFFFF`.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        // The index is masked to 0..=255, so it is always in bounds.
        crc = CRC32_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// `value` as a 6-digit big-endian base62 number, left-padded with `'0'`.
///
/// 62^6 > 2^32, so every `u32` fits and the encoding is injective.
pub(crate) fn encode_checksum(mut value: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        // `value % 62` is below 62, so the index is in bounds.
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Fills `out` with uniformly distributed alphabet bytes drawn from `rng`.
///
/// Rejection sampling: a random byte `b < 248` maps to `ALPHABET[b % 62]`, bytes `>= 248` are
/// dropped, so every character has probability exactly 1/62.
pub(crate) fn fill_base62<R: RngCore + ?Sized>(rng: &mut R, out: &mut [u8]) {
    // The random bytes are key material: wipe them after use.
    let mut pool = Zeroizing::new([0u8; 32]);
    let mut filled = 0;
    while filled < out.len() {
        rng.fill_bytes(pool.as_mut_slice());
        for &b in pool.iter().filter(|&&b| b < REJECT_FROM) {
            if filled == out.len() {
                break;
            }
            out[filled] = ALPHABET[usize::from(b % 62)];
            filled += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn alphabet_is_in_digit_order() {
        assert_eq!(ALPHABET[0], b'0');
        assert_eq!(ALPHABET[10], b'A');
        assert_eq!(ALPHABET[36], b'a');
        assert_eq!(ALPHABET[61], b'z');
        for b in 0..=255u8 {
            assert_eq!(is_base62(b), ALPHABET.contains(&b), "byte {b}");
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        // Same value as Python's zlib.crc32 for the documented example body.
        assert_eq!(crc32(b"comp_0123456789ABCDEFGHIJK"), 0x2202_0B16);
    }

    #[test]
    fn checksum_encoding_is_padded_big_endian_base62() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        assert_eq!(&encode_checksum(0x2202_0B16), b"0cc0Wc");
        // u32::MAX = 4 * 62^5 + ... still fits in 6 digits.
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    /// A deterministic RNG that returns the bytes it is given, then zeros.
    struct Scripted(Vec<u8>);

    impl RngCore for Scripted {
        fn next_u32(&mut self) -> u32 {
            unreachable!("fill_base62 only uses fill_bytes")
        }
        fn next_u64(&mut self) -> u64 {
            unreachable!("fill_base62 only uses fill_bytes")
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                *d = if self.0.is_empty() {
                    0
                } else {
                    self.0.remove(0)
                };
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn bytes_from_248_up_are_rejected() {
        let mut script = vec![248, 255, 0, 61, 62, 247, 250, 10];
        script.resize(32, 255);
        let mut out = [0u8; 5];
        fill_base62(&mut Scripted(script), &mut out);
        // 248, 255 and 250 are dropped; 0, 61, 62, 247 and 10 map through `% 62`.
        assert_eq!(&out, b"0z0zA");
    }

    #[test]
    fn sampling_is_unbiased() {
        // With plain `byte % 62` (no rejection) the first 8 characters would each get 5/256
        // instead of 1/62: 15.6% of all samples instead of 12.9%. 420,000 samples put the
        // unbiased share within a few tenths of a percent of 12.9% (sd ≈ 0.05%).
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 62];
        let mut buf = [0u8; 21];
        for _ in 0..20_000 {
            fill_base62(&mut rng, &mut buf);
            for &b in &buf {
                let idx = ALPHABET.iter().position(|&a| a == b).unwrap();
                counts[idx] += 1;
            }
        }
        let total: u32 = counts.iter().sum();
        let first8: u32 = counts[..8].iter().sum();
        let share = f64::from(first8) / f64::from(total);
        assert!((0.124..0.134).contains(&share), "share of 0-7: {share}");
        assert!(counts.iter().all(|&c| c > 5_000 && c < 8_500), "{counts:?}");
    }
}
