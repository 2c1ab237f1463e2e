//! `ids`: the validators every identifier from a request goes through (`TenantId`,
//! `PatientId`, `Username`), strict base64url decoding, and role names.
//!
//! Input: UTF-8 text. Whatever is accepted must obey the rule it was accepted under.

use health_core::{PatientId, Role, TenantId, Username, b64url, b64url_decode};

fn plain_id_rule(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(bytes) = b64url_decode(text) {
        // Strict decoding: one spelling per value, so the decoded bytes re-encode to the input.
        assert_eq!(b64url(&bytes), text, "non-canonical base64url accepted");
    }
    let json = serde_json::Value::String(text.to_owned());
    let results = [
        TenantId::parse(text).map(|id| id.to_string()),
        PatientId::parse(text).map(|id| id.to_string()),
        Username::parse(text).map(|id| id.to_string()),
    ];
    for parsed in &results {
        assert_eq!(parsed.is_ok(), plain_id_rule(text), "identifier rule for {text:?}");
        if let Ok(id) = parsed {
            assert_eq!(id, text);
        }
    }
    assert_eq!(serde_json::from_value::<TenantId>(json.clone()).is_ok(), results[0].is_ok(), "serde bypasses parse");
    assert_eq!(serde_json::from_value::<PatientId>(json).is_ok(), results[1].is_ok(), "serde bypasses parse");
    if let Some(role) = Role::parse(text) {
        assert_eq!(role.as_str(), text);
    }
}
