//! `application/x-www-form-urlencoded` bodies of the OAuth endpoints (RFC 6749 §3.2: a
//! parameter sent more than once is an error, and so is an empty name).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("parameter {0:?} is repeated")]
    Repeated(String),
    #[error("the form body is not valid UTF-8 or has an empty parameter name")]
    Malformed,
}

/// The parameters of a form body. Parameters with empty values count as absent (RFC 6749 §3.1).
pub fn parse(body: &[u8]) -> Result<BTreeMap<String, String>, FormError> {
    if std::str::from_utf8(body).is_err() {
        return Err(FormError::Malformed);
    }
    let mut out = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if name.is_empty() {
            return Err(FormError::Malformed);
        }
        if out.contains_key(name.as_ref()) {
            return Err(FormError::Repeated(name.into_owned()));
        }
        if !value.is_empty() {
            out.insert(name.into_owned(), value.into_owned());
        } else {
            out.insert(name.into_owned(), String::new());
        }
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes_parameters() {
        let form = parse(b"grant_type=refresh_token&refresh_token=a%2Bb+c&scope=").expect("form");
        assert_eq!(form.get("grant_type").map(String::as_str), Some("refresh_token"));
        assert_eq!(form.get("refresh_token").map(String::as_str), Some("a+b c"));
        assert!(!form.contains_key("scope"));
    }

    #[test]
    fn refuses_repeated_and_nameless_parameters() {
        assert_eq!(parse(b"a=1&a=2"), Err(FormError::Repeated("a".into())));
        assert_eq!(parse(b"a=&a=2"), Err(FormError::Repeated("a".into())));
        assert_eq!(parse(b"=x"), Err(FormError::Malformed));
        assert_eq!(parse(&[0xff, b'=', b'1']), Err(FormError::Malformed));
    }
}
