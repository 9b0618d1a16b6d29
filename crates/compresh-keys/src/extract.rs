//! [`extract_key`]: finding the key in request headers.

use crate::error::KeyError;
use crate::key::ApiKey;

/// Pulls the API key out of request headers (raw header values as bytes, so no `http`
/// dependency).
///
/// - `Authorization: Bearer <key>` (scheme case-insensitive, whitespace around the value and
///   between scheme and key tolerated) wins over `x-api-key: <key>` (whitespace-trimmed).
/// - Neither header present, or both empty / whitespace-only, or `Bearer` with no token and no
///   `x-api-key` → [`KeyError::Missing`].
/// - `Authorization` with another scheme (e.g. `Basic`) → `x-api-key` is used if present,
///   otherwise [`KeyError::UnsupportedScheme`].
/// - A header that is present but does not hold a valid key → the parse error of
///   [`ApiKey`]'s `FromStr` (no fallback from a bad Bearer token to `x-api-key`).
///
/// The key itself is parsed strictly: case and inner characters are not altered.
///
/// # Errors
///
/// [`KeyError::Missing`], [`KeyError::UnsupportedScheme`], or a parse error
/// ([`KeyError::WrongPrefix`], [`KeyError::WrongLength`], [`KeyError::InvalidCharacter`],
/// [`KeyError::ChecksumMismatch`]); see above.
///
/// # Example
///
/// ```
/// use compresh_keys::{extract_key, KeyError};
///
/// let key = "comp_0123456789ABCDEFGHIJK0cc0Wc";
/// let auth = format!("bearer  {key} ");
/// assert_eq!(extract_key(Some(auth.as_bytes()), None)?.expose_secret(), key);
/// assert_eq!(extract_key(None, Some(key.as_bytes()))?.expose_secret(), key);
/// assert!(extract_key(None, None).unwrap_err().is_missing());
/// assert_eq!(
///     extract_key(Some(b"Basic dXNlcjpwYXNz"), None).unwrap_err(),
///     KeyError::UnsupportedScheme
/// );
/// # Ok::<(), KeyError>(())
/// ```
pub fn extract_key(
    authorization: Option<&[u8]>,
    x_api_key: Option<&[u8]>,
) -> Result<ApiKey, KeyError> {
    extract_key_with(authorization, || x_api_key)
}

/// [`extract_key`], reading `x-api-key` only when `Authorization` does not decide: a gateway
/// then skips that header's lookup for every `Bearer` request.
///
/// # Errors
///
/// As [`extract_key`].
pub fn extract_key_with<'a>(
    authorization: Option<&[u8]>,
    x_api_key: impl FnOnce() -> Option<&'a [u8]>,
) -> Result<ApiKey, KeyError> {
    let from_x_api_key = || match x_api_key().map(<[u8]>::trim_ascii) {
        Some(value) if !value.is_empty() => Some(ApiKey::parse_bytes(value)),
        _ => None,
    };
    let authorization = authorization
        .map(<[u8]>::trim_ascii)
        .filter(|value| !value.is_empty());
    match authorization.map(bearer_token) {
        Some(Some(token)) if !token.is_empty() => ApiKey::parse_bytes(token),
        // Bare `Bearer` carries no key: treat it like an absent header.
        Some(Some(_)) | None => from_x_api_key().unwrap_or(Err(KeyError::Missing)),
        Some(None) => from_x_api_key().unwrap_or(Err(KeyError::UnsupportedScheme)),
    }
}

/// The token of a trimmed `Bearer <token>` value (trimmed, possibly empty), or `None` for any
/// other scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = match value.iter().position(u8::is_ascii_whitespace) {
        Some(end) => value.split_at(end),
        None => (value, &[][..]),
    };
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &str = "comp_0123456789ABCDEFGHIJK0cc0Wc";
    const OTHER: &str = "comp_aB3dE5fG7hJ9kL1mN2pQ419BaJv";

    fn extract(auth: Option<&str>, x_api_key: Option<&str>) -> Result<String, KeyError> {
        extract_key(auth.map(str::as_bytes), x_api_key.map(str::as_bytes))
            .map(|key| key.expose_secret().to_owned())
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                extract(Some(&format!("{scheme} {KEY}")), None).as_deref(),
                Ok(KEY)
            );
        }
    }

    #[test]
    fn whitespace_around_bearer_value_is_tolerated() {
        for auth in [
            format!("  Bearer {KEY}"),
            format!("Bearer {KEY}  "),
            format!("Bearer   {KEY}"),
            format!("\tBearer\t{KEY}\r\n"),
        ] {
            assert_eq!(extract(Some(&auth), None).as_deref(), Ok(KEY), "{auth:?}");
        }
    }

    #[test]
    fn x_api_key_alone_is_trimmed() {
        assert_eq!(extract(None, Some(KEY)).as_deref(), Ok(KEY));
        assert_eq!(
            extract(None, Some(&format!(" \t{KEY} "))).as_deref(),
            Ok(KEY)
        );
    }

    #[test]
    fn bearer_wins_over_x_api_key() {
        let auth = format!("Bearer {KEY}");
        assert_eq!(extract(Some(&auth), Some(OTHER)).as_deref(), Ok(KEY));
        // Even when the Bearer key is bad: no silent fallback.
        let bad = format!("Bearer {}", &KEY[..31]);
        assert_eq!(
            extract(Some(&bad), Some(OTHER)),
            Err(KeyError::WrongLength { found: 31 })
        );
    }

    #[test]
    fn x_api_key_is_read_only_when_authorization_does_not_decide() {
        let read = std::cell::Cell::new(0);
        let x_api_key = || {
            read.set(read.get() + 1);
            Some(OTHER.as_bytes())
        };
        let auth = format!("Bearer {KEY}");
        let key = extract_key_with(Some(auth.as_bytes()), x_api_key).unwrap();
        assert_eq!((key.expose_secret(), read.get()), (KEY, 0));
        for auth in [None, Some("Basic abc"), Some("Bearer ")] {
            let key = extract_key_with(auth.map(str::as_bytes), x_api_key).unwrap();
            assert_eq!(key.expose_secret(), OTHER);
        }
        assert_eq!(read.get(), 3);
    }

    #[test]
    fn neither_or_empty_is_missing() {
        assert_eq!(extract(None, None), Err(KeyError::Missing));
        assert_eq!(extract(Some(""), Some("")), Err(KeyError::Missing));
        assert_eq!(extract(Some("   "), None), Err(KeyError::Missing));
        assert_eq!(extract(None, Some(" \t ")), Err(KeyError::Missing));
        assert_eq!(extract(Some("Bearer"), None), Err(KeyError::Missing));
        assert_eq!(extract(Some("Bearer   "), None), Err(KeyError::Missing));
        assert!(extract(None, None).unwrap_err().is_missing());
    }

    #[test]
    fn empty_authorization_falls_back_to_x_api_key() {
        assert_eq!(extract(Some(""), Some(KEY)).as_deref(), Ok(KEY));
        assert_eq!(extract(Some("Bearer "), Some(KEY)).as_deref(), Ok(KEY));
    }

    #[test]
    fn other_schemes_are_unsupported_without_x_api_key() {
        assert_eq!(
            extract(Some("Basic dXNlcjpwYXNz"), None),
            Err(KeyError::UnsupportedScheme)
        );
        assert_eq!(
            extract(Some(&format!("Token {KEY}")), Some("  ")),
            Err(KeyError::UnsupportedScheme)
        );
        // A bare key without a scheme is not a Bearer token.
        assert_eq!(extract(Some(KEY), None), Err(KeyError::UnsupportedScheme));
        assert_eq!(
            extract(Some(&format!("Bearer{KEY}")), None),
            Err(KeyError::UnsupportedScheme)
        );
    }

    #[test]
    fn other_scheme_with_x_api_key_uses_x_api_key() {
        assert_eq!(
            extract(Some("Basic dXNlcjpwYXNz"), Some(KEY)).as_deref(),
            Ok(KEY)
        );
    }

    #[test]
    fn present_but_invalid_gives_the_parse_error() {
        assert_eq!(
            extract(Some("Bearer sk-proj-abc"), None),
            Err(KeyError::WrongPrefix)
        );
        assert_eq!(
            extract(None, Some("comp_short")),
            Err(KeyError::WrongLength { found: 10 })
        );
        let mut bad = KEY.to_owned();
        bad.replace_range(31..32, "d");
        assert_eq!(
            extract(Some(&format!("Bearer {bad}")), None),
            Err(KeyError::ChecksumMismatch)
        );
        // Inner whitespace is not removed from the key.
        let spaced = format!("Bearer {} {}", &KEY[..16], &KEY[16..]);
        assert_eq!(
            extract(Some(&spaced), None),
            Err(KeyError::WrongLength { found: 33 })
        );
        // Non-UTF-8 header bytes are rejected, not a panic.
        assert_eq!(
            extract_key(Some(b"Bearer comp_\xff\xfe"), None).unwrap_err(),
            KeyError::WrongLength { found: 7 }
        );
        let mut raw = b"comp_".to_vec();
        raw.extend([0xC3; 27]);
        assert_eq!(
            extract_key(None, Some(&raw)).unwrap_err(),
            KeyError::InvalidCharacter { position: 5 }
        );
    }

    #[test]
    fn errors_do_not_contain_the_presented_text() {
        let mut bad = KEY.to_owned();
        bad.replace_range(31..32, "d");
        let err = extract(Some(&format!("Bearer {bad}")), None).unwrap_err();
        assert!(!err.to_string().contains(&bad[5..26]));
        assert!(!err.to_string().contains("0123456789ABCDEF"));
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(
            auth in proptest::option::of(any::<Vec<u8>>()),
            x in proptest::option::of(any::<Vec<u8>>()),
        ) {
            if let Ok(key) = extract_key(auth.as_deref(), x.as_deref()) {
                prop_assert_eq!(key.expose_secret().parse::<ApiKey>().unwrap().hash(), key.hash());
            }
        }

        #[test]
        fn padded_keys_are_found(pad_left in "[ \t]{0,3}", pad_right in "[ \t]{0,3}") {
            let auth = format!("{pad_left}Bearer {pad_left}{KEY}{pad_right}");
            prop_assert_eq!(extract(Some(&auth), None), Ok(KEY.to_owned()));
            let x = format!("{pad_left}{KEY}{pad_right}");
            prop_assert_eq!(extract(None, Some(&x)), Ok(KEY.to_owned()));
        }
    }
}
