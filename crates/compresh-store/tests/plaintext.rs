//! Provider keys reach the disk only as vault ciphertext.

use std::path::Path;

use compresh_store::{NewProvider, Store};
use compresh_vault::{KeyRing, MasterSecret, ProviderSecret};

const PLAINTEXT: &str = "sk-test-PLAINTEXT-abc123XYZ";

/// Minimal base64 (standard or URL-safe alphabet, with `=` padding) for the
/// negative check, so the test needs no extra dependency.
fn base64(input: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of the database and of its `-wal` / `-shm` files, if present.
fn all_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        if let Ok(b) = std::fs::read(&side) {
            bytes.extend(b);
        }
    }
    bytes
}

#[test]
fn base64_helper_matches_known_vectors() {
    assert_eq!(base64(b"foob", false), "Zm9vYg==");
    assert_eq!(base64(b"fooba", false), "Zm9vYmE=");
    assert_eq!(base64(b"foobar", false), "Zm9vYmFy");
    assert_eq!(base64(&[0xfb, 0xff], true), "-_8=");
}

#[test]
fn provider_plaintext_never_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compresh.db");
    let ring = KeyRing::new(1, MasterSecret::generate());
    let sealed = ring
        .seal(&ProviderSecret::new(PLAINTEXT.to_owned()))
        .unwrap();

    let store = Store::open(&path).unwrap();
    let account = store.create_account("acme", "free").unwrap();
    store
        .upsert_provider(NewProvider {
            account_id: account.id,
            name: "openai".to_owned(),
            kind: "openai".to_owned(),
            base_url: None,
            ciphertext: sealed.token.clone(),
            key_version: sealed.version,
            hint: "sk-…3XYZ".to_owned(),
        })
        .unwrap();
    // While open (data still in the WAL) ...
    let live = all_bytes(&path);
    drop(store);
    // ... and after close (checkpointed into the main file).
    let closed = all_bytes(&path);

    for bytes in [&live, &closed] {
        assert!(
            contains(bytes, sealed.token.as_bytes()),
            "ciphertext missing"
        );
        assert!(!contains(bytes, PLAINTEXT.as_bytes()), "plaintext on disk");
        // Every base64 rendering of the plaintext, at each alignment, and a
        // distinctive fragment of it.
        for url_safe in [false, true] {
            for skip in 0..3 {
                let encoded = base64(&PLAINTEXT.as_bytes()[skip..], url_safe);
                let core = encoded.trim_end_matches('=');
                // Drop the first and last characters, which depend on neighbours.
                let inner = &core[1..core.len() - 1];
                assert!(
                    !contains(bytes, inner.as_bytes()),
                    "base64 of plaintext on disk"
                );
            }
        }
        assert!(
            !contains(bytes, b"PLAINTEXT-abc123"),
            "plaintext fragment on disk"
        );
    }
}
