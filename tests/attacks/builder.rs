//! The attack corpus interpreter: reads the numbered JSON cases of `tests/attacks/` and turns
//! each into the exact bytes an attacker would send (a forged JWS or JWE, a mangled compact
//! string, odd `Authorization` headers). The format is described in `tests/attacks/README.md`.
//!
//! Pure given an [`Env`]: the running app's public facts (issuers, `kid`s, JWKs), the tenants'
//! private signing keys (what an insider holding `master_key` has, for cases that need a
//! validly signed token) and the attacker's own keys. It never talks to the app: the steps that
//! need it (logins, logout, rotation) are run by `tests/e2e/attacks.rs`. Nothing in a case says
//! "this passes": a case only describes bytes and what the gateway must answer.

use std::collections::HashMap;
use std::path::Path;

use health_core::{b64url, b64url_decode};
use health_jose::{Algorithm, PrivateKey, PublicJwk};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// One file of the corpus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub title: String,
    /// What the attacker tries and why a careless verifier would fall for it.
    pub attack: String,
    /// Actions on the running app before the attack request (see [`Step`]).
    #[serde(default)]
    pub steps: Vec<Step>,
    pub token: Source,
    /// Applied in order to the compact token after it is built.
    #[serde(default)]
    pub mutate: Vec<Mutation>,
    #[serde(default)]
    pub request: Request,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    /// The audit reason of the request; required for every 401.
    #[serde(default)]
    pub reason: Option<String>,
    /// The `WWW-Authenticate` of a 401: `Bearer error="invalid_token"` unless named (a request
    /// without bearer credentials gets `Bearer` alone, RFC 6750 §3.1).
    #[serde(default)]
    pub challenge: Option<String>,
    /// Refused by the runtime's HTTP server before any component runs (Spin's hyper server for
    /// an oversized head, Spin's header conversion for a non-UTF-8 value), so no audit event.
    #[serde(default)]
    pub by_runtime: bool,
}

/// Actions against the app, run in order before the attack request; `as` names a slot that
/// later steps and `{"issued": slot}` refer to.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A genuine login of a demo user (`alice`, `bob`).
    Login {
        user: String,
        #[serde(rename = "as")]
        slot: String,
        /// Also keep the opaque refresh token under this slot.
        #[serde(default)]
        refresh_as: Option<String>,
    },
    /// The demo insurer client's token (client_credentials): a one-time nested JWE.
    InsurerToken {
        #[serde(rename = "as")]
        slot: String,
    },
    /// `POST /auth/logout` with the token: it is revoked by `jti`.
    Logout { token: String },
    /// `POST /auth/logout-all` with the token: every token of the subject issued so far is refused.
    LogoutAll { token: String },
    /// `POST /admin/revoke-token` (operator) with the token's `jti`.
    RevokeJti { token: String },
    /// `POST /admin/rotate-key` (operator, signing key): the token's key becomes `retiring`.
    RotateSigningKey { tenant: String },
    /// `POST /admin/revoke-key` (operator) with the token's `kid`.
    RevokeKeyOf { token: String },
    /// The end of the retiring window of the token's key (token lifetime + 60 s after the
    /// rotation), reached without waiting 16 minutes: the key record's `not_after` is moved
    /// into the past in the `public-keys` store, the state `jwks` itself writes once it passes.
    EndRetiringWindowOf { token: String },
    /// Sends the token once to the target route; that use must get past authentication.
    UseOnce { token: String },
}

/// Where the token comes from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A token from a step's slot, as issued by the platform.
    Issued(String),
    /// A JWS built here.
    Jws(Jws),
    /// A nested JWE built here (`ECDH-ES+A256KW` + `A256GCM`, like the platform's).
    Jwe(Box<Jwe>),
    /// Literal text (templates allowed).
    Raw(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jws {
    /// Over the base header `{"alg":"${alg}","typ":"at+jwt","kid":"${kid}"}`.
    #[serde(default)]
    pub header: Part,
    /// Over the base claims: a genuine token of alice with a fresh `jti` and times now.
    #[serde(default)]
    pub claims: Part,
    #[serde(default)]
    pub sign: Sign,
    /// Pads the claims (`pad`) and, if needed, the header (`hpad`) so the compact token is
    /// exactly this many bytes.
    #[serde(default)]
    pub size: Option<usize>,
}

/// A JSON object built from a base (`set` members replace or add, `remove` drop), or `raw`
/// bytes instead of any JSON (templates, `${byte:HH}` allowed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    #[serde(default)]
    pub set: Map<String, Value>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub raw: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sign {
    /// A tenant's own private signing key (default: `${tenant}`'s active key), under the key's
    /// algorithm whatever the header says.
    Tenant(String),
    #[default]
    Default,
    /// Empty signature segment.
    None,
    /// HMAC (`HS256`/`HS384`/`HS512`) keyed with an encoding of the tenant's public signing key.
    Hmac { secret: String, alg: String },
    /// The attacker's own RSA key (the one in `${attacker_jwk}` / `${attacker_x5c}`).
    Attacker,
    /// This exact text as the third segment.
    Segment(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwe {
    /// The plaintext: default a JWS built like `{"jws": {}}` (a valid access token).
    #[serde(default = "default_inner")]
    pub inner: Source,
    #[serde(default)]
    pub to: Recipient,
    /// Over the base protected header `{"alg":"ECDH-ES+A256KW","enc":"A256GCM","kid":<the
    /// recipient's kid>,"cty":"JWT","iss":"${iss}","epk":<fresh>}`.
    #[serde(default)]
    pub header: Part,
    /// `zip: "DEF"` and a DEFLATE-encoded plaintext.
    #[serde(default)]
    pub zip: bool,
}

fn default_inner() -> Source {
    Source::Jws(Jws::default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Recipient {
    /// `${tenant}`'s published encryption key.
    #[default]
    Default,
    /// Another tenant's published encryption key.
    Tenant(String),
    /// The attacker's own P-256 key.
    Attacker,
}

/// Edits of the compact token; `segment` counts the dot-separated parts from 0.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mutation {
    /// Appends text to one segment, or to the whole token.
    Append {
        #[serde(default)]
        segment: Option<usize>,
        text: String,
    },
    Prepend {
        text: String,
    },
    /// Replaces a segment's text.
    Set {
        segment: usize,
        text: String,
    },
    /// Inserts text into a segment at a character position.
    Insert {
        segment: usize,
        at: usize,
        text: String,
    },
    /// Replaces the character at `at` of a segment with another base64url character, so the
    /// segment still decodes but to different bytes.
    Flip {
        segment: usize,
        #[serde(default)]
        at: usize,
    },
    /// Removes a segment (and its dot).
    Drop {
        segment: usize,
    },
    /// Keeps the first `len` characters of a segment.
    Truncate {
        segment: usize,
        len: usize,
    },
    /// Replaces the first `count` occurrences of `from` in the whole token.
    Replace {
        from: String,
        to: String,
        count: usize,
    },
    /// Decodes a segment as JSON, edits members and re-encodes it (signatures and tags are
    /// left as they were).
    Json {
        segment: usize,
        #[serde(default)]
        set: Map<String, Value>,
        #[serde(default)]
        remove: Vec<String>,
    },
    /// Changes only the unused low bits of a segment's last character: the same bytes under a
    /// lenient decoder, a different string (signature malleability).
    NoncanonicalTail {
        segment: usize,
    },
}

/// The `Authorization` header values sent (templates; `${token}` is the built token). An
/// empty list sends none; `path_suffix` (a template too) is appended to the route, e.g. a
/// query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default = "default_authorization")]
    pub authorization: Vec<String>,
    #[serde(default)]
    pub path_suffix: String,
}

impl Default for Request {
    fn default() -> Self {
        Self { authorization: default_authorization(), path_suffix: String::new() }
    }
}

fn default_authorization() -> Vec<String> {
    vec!["Bearer ${token}".into()]
}

/// Every `NNN-*.json` under `dir`, sorted by name.
pub fn load_all(dir: &Path) -> Vec<(String, Case)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("attack corpus directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).expect("file name").to_owned();
            let text = std::fs::read_to_string(&path).expect("case readable");
            let case: Case = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, case)
        })
        .collect()
}

/// One tenant as the app publishes it, plus its private signing key.
pub struct Tenant {
    pub id: String,
    pub issuer: String,
    pub sig_kid: String,
    pub sig_alg: Algorithm,
    pub sig_jwk: PublicJwk,
    pub sig_key: PrivateKey,
    pub enc_kid: String,
    pub enc_key: p256::PublicKey,
}

/// The attacker's own keys.
pub struct Attacker {
    pub rsa: rsa::RsaPrivateKey,
    pub ec: p256::SecretKey,
    pub jwk: Value,
    pub kid: String,
    pub x5c: Vec<String>,
}

impl Attacker {
    /// Reproducible keys (seeded), a JWK and a self-signed certificate for the RSA one.
    pub fn new() -> Self {
        use rand_core::SeedableRng;
        use rsa::traits::PublicKeyParts;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0x6a74_6b61_7474);
        let rsa = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("attacker RSA key");
        let ec = p256::SecretKey::random(&mut rng);
        let (n, e) = (b64url(rsa.n().to_bytes_be()), b64url(rsa.e().to_bytes_be()));
        let kid = health_jose::thumbprint(&n, &e);
        let jwk = json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e });
        let x5c = vec![base64_std(&self_signed_certificate(&rsa))];
        Self { rsa, ec, jwk, kid, x5c }
    }
}

/// What a case is built against.
pub struct Env {
    /// `demo-hospital` (`${tenant}`, `${iss}`, `${kid}`, ...) and the second tenant (`..._b`).
    pub tenants: HashMap<String, Tenant>,
    pub tenant: String,
    pub tenant_b: String,
    /// Claims of a genuine access token of alice (times and `jti` are replaced per case).
    pub alice_claims: Map<String, Value>,
    pub attacker: Attacker,
    /// Tokens from the steps, by slot.
    pub issued: HashMap<String, String>,
    pub now: i64,
}

impl Env {
    fn tenant(&self, name: &str) -> &Tenant {
        let name = self.interp_str(name);
        self.tenants.get(&name).unwrap_or_else(|| panic!("unknown tenant {name:?}"))
    }

    /// The value of `${name}`.
    fn lookup(&self, name: &str) -> Value {
        let (a, b) = (&self.tenants[&self.tenant], &self.tenants[&self.tenant_b]);
        if let Some(offset) = name.strip_prefix("now") {
            let offset: i64 = if offset.is_empty() {
                0
            } else {
                offset.trim_start_matches('+').parse().unwrap_or_else(|_| panic!("bad offset in ${{{name}}}"))
            };
            return json!(self.now + offset);
        }
        if let Some(spec) = name.strip_prefix("repeat:") {
            let (text, count) = spec.rsplit_once(':').expect("${repeat:TEXT:COUNT}");
            return json!(text.repeat(count.parse().expect("repeat count")));
        }
        match name {
            "tenant" => json!(a.id),
            "iss" => json!(a.issuer),
            "kid" => json!(a.sig_kid),
            "alg" => json!(a.sig_alg.as_str()),
            "enc_kid" => json!(a.enc_kid),
            "tenant_b" => json!(b.id),
            "iss_b" => json!(b.issuer),
            "kid_b" => json!(b.sig_kid),
            "enc_kid_b" => json!(b.enc_kid),
            "sub" => self.alice_claims["sub"].clone(),
            "jti" => json!(fresh_id()),
            "attacker_jwk" => self.attacker.jwk.clone(),
            "attacker_kid" => json!(self.attacker.kid),
            "attacker_x5c" => json!(self.attacker.x5c),
            _ => panic!("unknown template variable ${{{name}}}"),
        }
    }

    /// `text` with every `${...}` replaced; `${byte:HH}` inserts one raw byte.
    pub fn interp_bytes(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.extend_from_slice(&rest.as_bytes()[..start]);
            let end = rest[start..].find('}').map(|e| start + e).expect("unclosed ${");
            let name = &rest[start + 2..end];
            if let Some(hex) = name.strip_prefix("byte:") {
                out.push(u8::from_str_radix(hex, 16).expect("${byte:HH}"));
            } else {
                match self.lookup(name) {
                    Value::String(s) => out.extend_from_slice(s.as_bytes()),
                    other => out.extend_from_slice(other.to_string().as_bytes()),
                }
            }
            rest = &rest[end + 1..];
        }
        out.extend_from_slice(rest.as_bytes());
        out
    }

    pub fn interp_str(&self, text: &str) -> String {
        String::from_utf8(self.interp_bytes(text)).expect("template yields UTF-8 here")
    }

    /// A JSON value with templates replaced; a string that is exactly one `${name}` takes the
    /// variable's own JSON type (a number for `${now+60}`, an object for `${attacker_jwk}`).
    fn interp_value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) if s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1 => {
                self.lookup(&s[2..s.len() - 1])
            }
            Value::String(s) => json!(self.interp_str(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.interp_value(v)).collect()),
            Value::Object(members) => {
                Value::Object(members.iter().map(|(k, v)| (k.clone(), self.interp_value(v))).collect())
            }
            other => other.clone(),
        }
    }

    fn object(&self, base: Map<String, Value>, part: &Part) -> Map<String, Value> {
        let mut object = base;
        for name in &part.remove {
            object.remove(name);
        }
        for (name, value) in &part.set {
            object.insert(name.clone(), self.interp_value(value));
        }
        object
    }

    fn bytes(&self, base: Map<String, Value>, part: &Part) -> Vec<u8> {
        match &part.raw {
            Some(raw) => {
                assert!(part.set.is_empty() && part.remove.is_empty(), "raw excludes set/remove");
                self.interp_bytes(raw)
            }
            None => serde_json::to_vec(&self.object(base, part)).expect("JSON"),
        }
    }

    fn base_header(&self) -> Map<String, Value> {
        let a = &self.tenants[&self.tenant];
        as_object(json!({ "alg": a.sig_alg.as_str(), "typ": "at+jwt", "kid": a.sig_kid }))
    }

    fn base_claims(&self) -> Map<String, Value> {
        let mut claims = self.alice_claims.clone();
        for (name, value) in [
            ("jti", json!(fresh_id())),
            ("iat", json!(self.now)),
            ("nbf", json!(self.now)),
            ("auth_time", json!(self.now)),
            ("exp", json!(self.now + 600)),
        ] {
            claims.insert(name.into(), value);
        }
        claims
    }

    /// The compact token of `case` (before the request templates).
    pub fn token(&self, case: &Case) -> String {
        let mut token = self.source(&case.token);
        for mutation in &case.mutate {
            token = self.mutate(&token, mutation);
        }
        token
    }

    fn source(&self, source: &Source) -> String {
        match source {
            Source::Issued(slot) => {
                self.issued.get(slot).unwrap_or_else(|| panic!("no token in slot {slot:?}")).clone()
            }
            Source::Jws(jws) => self.jws(jws),
            Source::Jwe(jwe) => self.jwe(jwe),
            Source::Raw(text) => self.interp_str(text),
        }
    }

    fn jws(&self, spec: &Jws) -> String {
        let mut header = self.bytes(self.base_header(), &spec.header);
        let mut claims = self.bytes(self.base_claims(), &spec.claims);
        if let Some(size) = spec.size {
            assert!(spec.header.raw.is_none() && spec.claims.raw.is_none(), "size needs JSON parts");
            (header, claims) = self.padded(spec, size);
        }
        let input = format!("{}.{}", b64url(&header), b64url(&claims));
        let signature = self.signature(&spec.sign, input.as_bytes());
        let token = format!("{input}.{signature}");
        if let Some(size) = spec.size {
            assert_eq!(token.len(), size, "padded token size");
        }
        token
    }

    /// Header and claims padded so the signed token is exactly `size` bytes.
    fn padded(&self, spec: &Jws, size: usize) -> (Vec<u8>, Vec<u8>) {
        let signature_len = self.signature(&spec.sign, b"probe").len();
        let base_header = self.object(self.base_header(), &spec.header);
        let base_claims = self.object(self.base_claims(), &spec.claims);
        let with = |mut object: Map<String, Value>, name: &str, len: Option<usize>| {
            if let Some(len) = len {
                object.insert(name.into(), json!("x".repeat(len)));
            }
            serde_json::to_vec(&object).expect("JSON")
        };
        // The pad's characters need no escaping, so the claims grow by exactly one byte per pad
        // character; solve for the length, trying header paddings for base64's missing residue.
        let claims_unpadded = with(base_claims.clone(), "pad", Some(0)).len();
        for header_pad in [None, Some(0), Some(1), Some(2), Some(3)] {
            let header = with(base_header.clone(), "hpad", header_pad);
            let Some(target) = size.checked_sub(b64len(header.len()) + 2 + signature_len) else { continue };
            let claims_len = target * 3 / 4;
            if b64len(claims_len) != target || claims_len < claims_unpadded {
                continue;
            }
            let claims = with(base_claims.clone(), "pad", Some(claims_len - claims_unpadded));
            assert_eq!(claims.len(), claims_len);
            return (header, claims);
        }
        panic!("no padding makes a {size}-byte token");
    }

    fn signature(&self, sign: &Sign, input: &[u8]) -> String {
        let tenant_key = |tenant: &Tenant| {
            let signature = health_jose::sign_bytes(&tenant.sig_key, tenant.sig_alg, input, &mut rand_core::OsRng)
                .expect("tenant key signs");
            b64url(signature)
        };
        match sign {
            Sign::Default => tenant_key(&self.tenants[&self.tenant]),
            Sign::Tenant(tenant) => tenant_key(self.tenant(tenant)),
            Sign::None => String::new(),
            Sign::Hmac { secret, alg } => b64url(hmac(alg, &self.public_key_as_secret(secret), input)),
            Sign::Attacker => {
                let key = PrivateKey::Rsa(self.attacker.rsa.clone());
                b64url(health_jose::sign_bytes(&key, Algorithm::Rs256, input, &mut rand_core::OsRng).expect("signs"))
            }
            Sign::Segment(text) => self.interp_str(text),
        }
    }

    /// The tenant's public signing key in the encodings an alg-confusion attacker tries as
    /// an HMAC secret (every one is public: the JWK Set publishes the key).
    fn public_key_as_secret(&self, encoding: &str) -> Vec<u8> {
        use rsa::pkcs1::{EncodeRsaPublicKey, LineEnding};
        use rsa::pkcs8::EncodePublicKey;
        let jwk = &self.tenants[&self.tenant].sig_jwk;
        let key = jwk.rsa_public_key().expect("RSA signing key");
        match encoding {
            "spki_pem" => key.to_public_key_pem(LineEnding::LF).expect("PEM").into_bytes(),
            "spki_pem_crlf" => key.to_public_key_pem(LineEnding::CRLF).expect("PEM").into_bytes(),
            "pkcs1_pem" => key.to_pkcs1_pem(LineEnding::LF).expect("PEM").into_bytes(),
            "spki_der" => key.to_public_key_der().expect("DER").as_bytes().to_vec(),
            "pkcs1_der" => key.to_pkcs1_der().expect("DER").as_bytes().to_vec(),
            // Byte for byte as `GET /jwk/{tenant}` publishes it.
            "jwk_published" => serde_json::to_vec(jwk).expect("JWK"),
            // RFC 7638 canonical members.
            "jwk_canonical" => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                jwk.e.as_deref().expect("e"),
                jwk.n.as_deref().expect("n")
            )
            .into_bytes(),
            "modulus" => b64url_decode(jwk.n.as_deref().expect("n")).expect("n decodes"),
            // What a key file lookup of kid "/dev/null" yields.
            "empty" => Vec::new(),
            other => panic!("unknown public key encoding {other:?}"),
        }
    }

    fn jwe(&self, spec: &Jwe) -> String {
        let inner = self.source(&spec.inner);
        let (recipient, kid) = match &spec.to {
            Recipient::Default => {
                let a = &self.tenants[&self.tenant];
                (a.enc_key, a.enc_kid.clone())
            }
            Recipient::Tenant(name) => {
                let t = self.tenant(name);
                (t.enc_key, t.enc_kid.clone())
            }
            Recipient::Attacker => (self.attacker.ec.public_key(), self.attacker.kid.clone()),
        };
        let base = as_object(json!({
            "alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": kid, "cty": "JWT", "iss": self.tenants[&self.tenant].issuer,
        }));
        let mut plaintext = inner.into_bytes();
        let mut extra = Map::new();
        if spec.zip {
            plaintext = deflate_stored(&plaintext);
            extra.insert("zip".into(), json!("DEF"));
        }
        encrypt_ecdh_es(&plaintext, &recipient, |epk| {
            let mut header = base;
            header.insert("epk".into(), epk);
            header.extend(extra);
            match &spec.header.raw {
                Some(raw) => self.interp_bytes(raw),
                None => serde_json::to_vec(&self.object(header, &spec.header)).expect("JSON"),
            }
        })
    }

    fn mutate(&self, token: &str, mutation: &Mutation) -> String {
        let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
        fn segment(segments: &mut [String], i: usize) -> &mut String {
            let count = segments.len();
            segments.get_mut(i).unwrap_or_else(|| panic!("no segment {i} in a {count}-part token"))
        }
        match mutation {
            Mutation::Append { segment: None, text } => return format!("{token}{}", self.interp_str(text)),
            Mutation::Prepend { text } => return format!("{}{token}", self.interp_str(text)),
            Mutation::Replace { from, to, count } => return token.replacen(from.as_str(), to, *count),
            Mutation::Append { segment: Some(i), text } => segment(&mut segments, *i).push_str(&self.interp_str(text)),
            Mutation::Set { segment: i, text } => *segment(&mut segments, *i) = self.interp_str(text),
            Mutation::Insert { segment: i, at, text } => segment(&mut segments, *i).insert_str(*at, text),
            Mutation::Truncate { segment: i, len } => segment(&mut segments, *i).truncate(*len),
            Mutation::Drop { segment: i } => {
                segment(&mut segments, *i);
                segments.remove(*i);
            }
            Mutation::Flip { segment: i, at } => {
                let s = segment(&mut segments, *i);
                let old = s.as_bytes()[*at];
                let new = if old == b'A' { "B" } else { "A" };
                s.replace_range(*at..=*at, new);
            }
            Mutation::Json { segment: i, set, remove } => {
                let s = segment(&mut segments, *i);
                let value: Value =
                    serde_json::from_slice(&b64url_decode(s).expect("segment decodes")).expect("segment is JSON");
                let part = Part { set: set.clone(), remove: remove.clone(), raw: None };
                *s = b64url(serde_json::to_vec(&self.object(as_object(value), &part)).expect("JSON"));
            }
            Mutation::NoncanonicalTail { segment: i } => {
                let s = segment(&mut segments, *i);
                // Unused low bits of the last character: 4 when len % 4 == 2, 2 when 3.
                let unused = match s.len() % 4 {
                    2 => 4,
                    3 => 2,
                    _ => panic!("segment {i} has no unused bits"),
                };
                const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let last = *s.as_bytes().last().expect("non-empty");
                let value = ALPHABET.iter().position(|c| *c == last).expect("base64url");
                let new = ALPHABET[value ^ ((1 << unused) - 1)];
                s.pop();
                s.push(char::from(new));
            }
        }
        segments.join(".")
    }
}

/// The JSON of segment `i` of a compact token.
pub fn segment_json(token: &str, i: usize) -> Value {
    let segment = token.split('.').nth(i).expect("segment");
    serde_json::from_slice(&b64url_decode(segment).expect("segment decodes")).expect("segment is JSON")
}

fn as_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

fn b64len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

fn fresh_id() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    b64url(bytes)
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac(alg: &str, key: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], input: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        "HS256" => run::<Hmac<sha2::Sha256>>(key, input),
        "HS384" => run::<Hmac<sha2::Sha384>>(key, input),
        "HS512" => run::<Hmac<sha2::Sha512>>(key, input),
        other => panic!("unknown HMAC {other:?}"),
    }
}

/// A JWE to `recipient` with `ECDH-ES+A256KW` key agreement (fresh ephemeral key, Concat KDF
/// of RFC 7518 §4.6.2 without apu/apv) and `A256GCM`; `header` gets the `epk` member and
/// returns the protected header's bytes, so a case can alter anything in it.
fn encrypt_ecdh_es(plaintext: &[u8], recipient: &p256::PublicKey, header: impl FnOnce(Value) -> Vec<u8>) -> String {
    use aes_kw::KekAes256;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use rand_core::RngCore;
    use sha2::Digest;
    let ephemeral = p256::SecretKey::random(&mut rand_core::OsRng);
    let point = ephemeral.public_key().to_encoded_point(false);
    let epk = json!({
        "kty": "EC", "crv": "P-256",
        "x": b64url(point.x().expect("x")), "y": b64url(point.y().expect("y")),
    });
    let z = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
    let alg = b"ECDH-ES+A256KW";
    let mut kdf = sha2::Sha256::new();
    kdf.update(1u32.to_be_bytes());
    kdf.update(z.raw_secret_bytes());
    kdf.update(u32::try_from(alg.len()).expect("len").to_be_bytes());
    kdf.update(alg);
    kdf.update(0u32.to_be_bytes()); // apu
    kdf.update(0u32.to_be_bytes()); // apv
    kdf.update(256u32.to_be_bytes());
    let kek: [u8; 32] = kdf.finalize().into();
    let mut cek = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut cek);
    let mut iv = [0u8; 12];
    rand_core::OsRng.fill_bytes(&mut iv);
    let wrapped = KekAes256::from(kek).wrap_vec(&cek).expect("wraps");
    let protected = b64url(header(epk));
    health_jose::jwe::seal(&protected, &wrapped, &cek, &iv, plaintext).expect("seals")
}

/// Raw DEFLATE (RFC 1951) with stored blocks: valid `zip: "DEF"` content without a compressor.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = data.chunks(0xffff).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = u16::try_from(chunk.len()).expect("chunk");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("short"));
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("long"));
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A self-signed X.509 v3 certificate (RFC 5280) for the attacker's RSA key, `CN=demo-hospital`:
/// what an `x5c` header would carry to get its own key trusted.
fn self_signed_certificate(key: &rsa::RsaPrivateKey) -> Vec<u8> {
    use rsa::pkcs8::EncodePublicKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let spki = key.to_public_key().to_public_key_der().expect("SPKI");
    // sha256WithRSAEncryption, NULL parameters.
    let algorithm =
        der(0x30, &[der(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]), der(0x05, &[])].concat());
    let cn = der(0x30, &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"demo-hospital")].concat());
    let name = der(0x30, &der(0x31, &cn));
    let validity = der(0x30, &[der(0x17, b"250101000000Z"), der(0x17, b"350101000000Z")].concat());
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[0x06, 0x66]),
            algorithm.clone(),
            name.clone(),
            validity,
            name,
            spki.as_bytes().to_vec(),
        ]
        .concat(),
    );
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    let signature = signer.sign(&tbs).to_vec();
    der(0x30, &[tbs, algorithm, der(0x03, &[&[0u8][..], &signature].concat())].concat())
}
