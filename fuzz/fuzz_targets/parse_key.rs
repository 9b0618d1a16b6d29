//! Fuzz `ApiKey` parsing and `extract_key` with arbitrary bytes.
//!
//! Asserts round-trips, not just "no panic": whatever parses must expose exactly the input,
//! and re-parsing the exposed text must give the same hash.

#![no_main]

use compresh_keys::{extract_key, ApiKey, KEY_LEN, KEY_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = std::str::from_utf8(data) {
        if let Ok(key) = input.parse::<ApiKey>() {
            assert_eq!(key.expose_secret(), input);
            assert_eq!(input.len(), KEY_LEN);
            assert!(input.starts_with(KEY_PREFIX));
            let again: ApiKey = key
                .expose_secret()
                .parse()
                .expect("an accepted key must parse again");
            assert_eq!(again.hash(), key.hash());
            assert!(!format!("{key:?}{key}").contains(key.expose_secret()));
        }
    }

    // Raw header bytes (need not be UTF-8), once as each header and split across both.
    let mid = data.len() / 2;
    let results = [
        extract_key(Some(data), None),
        extract_key(None, Some(data)),
        extract_key(Some(&data[..mid]), Some(&data[mid..])),
    ];
    for key in results.into_iter().flatten() {
        let text = key.expose_secret();
        let reparsed: ApiKey = text.parse().expect("an extracted key must parse again");
        assert_eq!(reparsed.hash(), key.hash());
        // The key came from the bytes: it must appear in them verbatim.
        assert!(data.windows(KEY_LEN).any(|w| w == text.as_bytes()));
    }
});
