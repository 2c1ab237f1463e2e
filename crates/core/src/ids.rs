//! Identifiers validated at the edge. Every id that reaches a store or a log went through here,
//! which rules out path traversal, SQL/LIKE metacharacters and log injection by construction.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid {kind}: must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")]
    Invalid { kind: &'static str },
}

fn valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Opaque identifiers minted by the platform (client ids, subjects, `jti`s) are base64url, so
/// they may hold upper case; still no separators, quotes, `%` or whitespace.
fn valid_opaque(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Token ids (`jti`) are random base64url, so any of its characters may come first, `-` and `_`
/// included (2 in 64 do); still nothing outside that alphabet.
fn valid_base64url(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=64).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

macro_rules! id_type {
    ($name:ident, $kind:literal) => {
        id_type!($name, $kind, valid);
    };
    ($name:ident, $kind:literal, $valid:ident) => {
        #[doc = concat!("A validated ", $kind, ".")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if $valid(text) { Ok(Self(text.to_owned())) } else { Err(IdError::Invalid { kind: $kind }) }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(TenantId, "tenant id");
id_type!(PatientId, "patient id");
id_type!(Username, "username");
id_type!(OrderId, "order id");
id_type!(EntryId, "entry id");
id_type!(ClientId, "client id", valid_opaque);
// A lab organisation: an admin's choice of id, or the user id of a lab a version-2 order was
// assigned to (schema version 6 made each such lab user an organisation), so base64url.
id_type!(LabId, "lab id", valid_opaque);
id_type!(Opaque, "opaque identifier", valid_opaque);
id_type!(TokenId, "token id", valid_base64url);
id_type!(FamilyId, "refresh family id", valid_base64url);

macro_rules! random_id {
    ($($name:ident),*) => {$(
        impl $name {
            /// The id of 128 random bits: their base64url, 22 characters of its alphabet.
            pub fn from_random(bytes: [u8; 16]) -> Self {
                Self(crate::b64url(bytes))
            }
        }
    )*};
}

random_id!(TokenId, FamilyId);

/// An insurer client is the subject of its own tokens; both alphabets are the same.
impl From<ClientId> for Opaque {
    fn from(client: ClientId) -> Self {
        Opaque(client.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        assert_eq!(TenantId::parse("demo-hospital").unwrap().as_str(), "demo-hospital");
        assert!(PatientId::parse("p-1001").is_ok());
        assert!(Username::parse("dr_house").is_ok());
    }

    #[test]
    fn rejects_traversal_injection_and_oversize() {
        for bad in ["", "../etc", "a/b", "A", "x'--", "a b", "-lead", "%2e", "é", &"a".repeat(65)] {
            assert_eq!(TenantId::parse(bad), Err(IdError::Invalid { kind: "tenant id" }), "{bad:?}");
        }
    }

    #[test]
    fn opaque_ids_allow_base64url_but_nothing_else() {
        assert!(ClientId::parse("ins-AbC_9-x").is_ok());
        assert!(Opaque::parse("u-alice").is_ok());
        for bad in ["", "a.b", "a b", "x'", "a%20", "-x", &"A".repeat(65)] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PatientId::parse("P-1").is_err());
    }

    #[test]
    fn token_ids_may_start_with_any_base64url_character() {
        for jti in ["-x", "_x", "-", "AbC_9-x", &"_".repeat(64)] {
            assert!(TokenId::parse(jti).is_ok(), "{jti:?}");
        }
        for bad in ["", "a.b", "a b", "x'", "a%20", "a=", &"A".repeat(65)] {
            assert!(TokenId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_ids_are_valid_ids() {
        for bytes in [[0u8; 16], [0xff; 16], [0xfb; 16]] {
            let jti = TokenId::from_random(bytes);
            assert_eq!(TokenId::parse(jti.as_str()), Ok(jti.clone()));
            assert_eq!(
                FamilyId::parse(FamilyId::from_random(bytes).as_str()).map(|f| f.to_string()),
                Ok(jti.to_string())
            );
        }
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<TenantId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<TenantId>("\"../x\"").is_err());
    }
}
