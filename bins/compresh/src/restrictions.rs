//! Per-key restrictions: which providers and models a key may use.

use compresh_store::ApiKeyRecord;

/// Whether the key may use the provider named `provider`.
pub fn provider_allowed(record: &ApiKeyRecord, provider: &str) -> bool {
    record.allowed_providers.is_empty() || record.allowed_providers.iter().any(|p| p == provider)
}

/// Whether the key may use `model` (`None`: the request names no model).
pub fn model_allowed(record: &ApiKeyRecord, model: Option<&str>) -> bool {
    if record.allowed_models.is_empty() {
        return true;
    }
    model.is_some_and(|model| {
        record
            .allowed_models
            .iter()
            .any(|pattern| glob_matches(pattern.as_bytes(), model.as_bytes()))
    })
}

/// `*` matches any run of characters, `?` exactly one; everything else matches itself.
/// Iterative with one backtrack point, so a hostile pattern cannot blow up.
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches(b"gpt-4o*", b"gpt-4o-mini"));
        assert!(glob_matches(b"gpt-4o*", b"gpt-4o"));
        assert!(!glob_matches(b"gpt-4o*", b"gpt-3.5-turbo"));
        assert!(glob_matches(
            b"claude-*-sonnet-*",
            b"claude-3-5-sonnet-latest"
        ));
        assert!(glob_matches(b"*", b""));
        assert!(glob_matches(b"gpt-?", b"gpt-4"));
        assert!(!glob_matches(b"gpt-?", b"gpt-40"));
        assert!(!glob_matches(b"exact", b"exactly"));
        assert!(glob_matches(b"*a*a*a*a*b", b"aaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!glob_matches(b"*a*a*a*a*b", b"aaaaaaaaaaaaaaaaaaaaaaa"));
    }
}
