//! `application/x-www-form-urlencoded` bodies and `Cookie` headers, parsed by hand (both are
//! tiny formats; a dependency would cost more build time than these lines).

use std::collections::HashMap;

use zeroize::Zeroize;

/// Largest form body the dashboard accepts; its forms carry a few short fields.
pub const FORM_LIMIT: usize = 16 * 1024;

/// A parsed form. Values are wiped from memory on drop (the login form carries a password).
#[derive(Default)]
pub struct Form {
    fields: HashMap<String, String>,
}

impl Form {
    /// Parse a urlencoded body; the first occurrence of a name wins, undecodable pairs are
    /// skipped.
    pub fn parse(body: &[u8]) -> Self {
        let mut fields = HashMap::new();
        for pair in body.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let (Some(name), Some(value)) = (decode(name), decode(value)) else {
                continue;
            };
            fields.entry(name).or_insert(value);
        }
        Self { fields }
    }

    /// A field, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A field trimmed, or `""`.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", str::trim)
    }
}

impl Drop for Form {
    fn drop(&mut self) {
        for value in self.fields.values_mut() {
            value.zeroize();
        }
    }
}

/// Percent-decoding with `+` as space; `None` for bad escapes or invalid UTF-8.
fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of cookie `name` from all `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urlencoded_forms() {
        let form = Form::parse(b"name=my+key%21&env=prod&empty=&flag&name=second&bad=%zz");
        assert_eq!(form.get("name"), Some("my key!"));
        assert_eq!(form.get("env"), Some("prod"));
        assert_eq!(form.get("empty"), Some(""));
        assert_eq!(form.get("flag"), Some(""));
        assert_eq!(form.get("bad"), None);
        assert_eq!(form.get("missing"), None);
        assert_eq!(form.text("missing"), "");
        let utf8 = Form::parse("n=%3Cscript%3E%C3%A9".as_bytes());
        assert_eq!(utf8.get("n"), Some("<script>é"));
        assert_eq!(Form::parse(b"n=%C3").get("n"), None);
        assert_eq!(Form::parse(b"n=%4").get("n"), None);
        assert_eq!(Form::parse(b" a = b ").text(" a "), "b");
    }

    #[test]
    fn reads_cookies() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; compresh_session=abc".parse().unwrap(),
        );
        headers.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, "compresh_session"), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "session"), None);
    }
}
