use super::*;
use health_core::b64url;
use health_jose::PrivateKey;
use rand_core::OsRng;

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example/a";

fn tenant() -> TenantId {
    TenantId::parse("north").expect("tenant")
}

fn settings() -> ProviderSettings {
    serde_json::from_value(serde_json::json!({
        "enabled": true,
        "issuer": ISSUER,
        "audience": "health-north",
        "jwks_uri": "https://idp.example/a/jwks",
        "mfa_roles": ["doctor"],
    }))
    .expect("settings")
}

struct Provider {
    key: PrivateKey,
    kid: String,
    keys: TenantKeys,
}

fn provider() -> Provider {
    let (key, record) = health_jose::generate(Algorithm::Es256, &tenant(), 0, &mut OsRng).expect("key");
    let jwks = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": record.jwk.kid, "x": record.jwk.x, "y": record.jwk.y, "use": "sig"
    }]});
    let keys = provider_keys(jwks.to_string().as_bytes(), &tenant(), ISSUER).expect("jwks");
    assert_eq!(keys.keys.len(), 1);
    Provider { kid: record.jwk.kid.clone(), key, keys }
}

fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "sub": "abc", "aud": "health-north", "exp": NOW + 600, "iat": NOW,
        "email": "Alice@Hospital.example", "email_verified": true, "amr": ["pwd"],
        "role": "admin",
    })
}

fn token(p: &Provider, header: serde_json::Value, claims: &serde_json::Value) -> String {
    let input = format!("{}.{}", b64url(header.to_string()), b64url(claims.to_string()));
    let sig = health_jose::sign_bytes(&p.key, Algorithm::Es256, input.as_bytes(), &mut OsRng).expect("sign");
    format!("{input}.{}", b64url(sig))
}

fn signed(p: &Provider, claims: &serde_json::Value) -> String {
    token(p, serde_json::json!({ "alg": "ES256", "kid": p.kid }), claims)
}

fn with(change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut c = claims();
    change(&mut c);
    c
}

#[test]
fn accepts_the_providers_token_and_normalises_the_email() {
    let p = provider();
    let verified = verify(&signed(&p, &claims()), SubjectKind::IdToken, &p.keys, &settings(), NOW).expect("verified");
    assert_eq!(verified.external_id, "alice@hospital.example");
    assert_eq!(verified.amr, ["pwd"]);
    assert_eq!(verified.auth_time, NOW);
}

#[test]
fn refuses_each_bad_claim_with_its_reason() {
    let p = provider();
    let s = settings();
    let cases: Vec<(serde_json::Value, Refused)> = vec![
        (with(|c| c["iss"] = "https://idp.example/b".into()), Refused::WrongIssuer),
        (with(|c| c["aud"] = "health-south".into()), Refused::WrongAudience),
        (with(|c| c["azp"] = "health-south".into()), Refused::WrongAudience),
        (with(|c| c["exp"] = (NOW - 31).into()), Refused::Expired),
        (with(|c| c["iat"] = (NOW + 31).into()), Refused::IssuedInFuture),
        (with(|c| c["nbf"] = (NOW + 31).into()), Refused::NotYetValid),
        (with(|c| c["exp"] = (NOW + 3601).into()), Refused::LifetimeTooLong),
        (with(|c| c["email_verified"] = false.into()), Refused::EmailNotVerified),
        (with(|c| drop(c.as_object_mut().map(|o| o.remove("email")))), Refused::MissingClaim("subject_claim")),
        (with(|c| drop(c.as_object_mut().map(|o| o.remove("exp")))), Refused::MissingClaim("exp")),
        (with(|c| drop(c.as_object_mut().map(|o| o.remove("iat")))), Refused::MissingClaim("iat")),
        (with(|c| drop(c.as_object_mut().map(|o| o.remove("sub")))), Refused::MissingClaim("sub")),
    ];
    for (claims, expected) in cases {
        assert_eq!(verify(&signed(&p, &claims), SubjectKind::Jwt, &p.keys, &s, NOW), Err(expected.clone()), "{claims}");
    }
    // One of several audiences, and azp naming the tenant's client.
    let many = with(|c| {
        c["aud"] = serde_json::json!(["x", "health-north"]);
        c["azp"] = "health-north".into();
    });
    assert!(verify(&signed(&p, &many), SubjectKind::Jwt, &p.keys, &s, NOW).is_ok());
    // Within the tolerance.
    assert!(verify(&signed(&p, &with(|c| c["exp"] = (NOW - 29).into())), SubjectKind::Jwt, &p.keys, &s, NOW).is_ok());
}

#[test]
fn a_repeated_claim_is_refused_not_read_twice() {
    let p = provider();
    let header = serde_json::json!({ "alg": "ES256", "kid": p.kid }).to_string();
    let body = claims().to_string().replacen("\"sub\":\"abc\"", "\"sub\":\"abc\",\"sub\":\"other\"", 1);
    assert!(body.contains("\"other\""), "{body}");
    let input = format!("{}.{}", b64url(header), b64url(body));
    let sig = health_jose::sign_bytes(&p.key, Algorithm::Es256, input.as_bytes(), &mut OsRng).expect("sign");
    let token = format!("{input}.{}", b64url(sig));
    let refused = verify(&token, SubjectKind::IdToken, &p.keys, &settings(), NOW).map(|v| v.external_id);
    assert_eq!(refused, Err(Refused::Token(health_jose::Error::BadClaims)));
}

#[test]
fn the_algorithm_comes_from_the_key() {
    let p = provider();
    let s = settings();
    let payload = b64url(claims().to_string());
    let none = format!("{}.{payload}.", b64url(serde_json::json!({"alg": "none", "kid": p.kid}).to_string()));
    assert!(matches!(verify(&none, SubjectKind::Jwt, &p.keys, &s, NOW), Err(Refused::Token(_))));
    let header = b64url(serde_json::json!({"alg": "HS256", "kid": p.kid}).to_string());
    let hs = format!("{header}.{payload}.{}", b64url([0u8; 32]));
    assert_eq!(
        verify(&hs, SubjectKind::Jwt, &p.keys, &s, NOW),
        Err(Refused::Token(health_jose::Error::AlgorithmMismatch))
    );
    let unknown = token(&p, serde_json::json!({"alg": "ES256", "kid": "other"}), &claims());
    assert_eq!(
        verify(&unknown, SubjectKind::Jwt, &p.keys, &s, NOW),
        Err(Refused::Token(health_jose::Error::UnknownKid))
    );
    let embedded = token(&p, serde_json::json!({"alg": "ES256", "kid": p.kid, "jwk": {}}), &claims());
    assert!(matches!(
        verify(&embedded, SubjectKind::Jwt, &p.keys, &s, NOW),
        Err(Refused::Token(health_jose::Error::EmbeddedKey(_)))
    ));
}

#[test]
fn an_id_token_does_not_pass_for_an_access_token_nor_the_reverse() {
    let p = provider();
    let s = settings();
    let id = signed(&p, &claims());
    let access = token(&p, serde_json::json!({ "alg": "ES256", "kid": p.kid, "typ": "at+jwt" }), &claims());
    assert!(verify(&id, SubjectKind::IdToken, &p.keys, &s, NOW).is_ok());
    assert!(verify(&access, SubjectKind::AccessToken, &p.keys, &s, NOW).is_ok());
    assert!(verify(&id, SubjectKind::Jwt, &p.keys, &s, NOW).is_ok());
    assert!(verify(&access, SubjectKind::Jwt, &p.keys, &s, NOW).is_ok());
    assert_eq!(verify(&id, SubjectKind::AccessToken, &p.keys, &s, NOW), Err(Refused::WrongType));
    assert_eq!(verify(&access, SubjectKind::IdToken, &p.keys, &s, NOW), Err(Refused::WrongType));
    assert_eq!(SubjectKind::parse(ACCESS_TOKEN_TYPE), Some(SubjectKind::AccessToken));
    assert_eq!(SubjectKind::parse("urn:ietf:params:oauth:token-type:saml2"), None);
}

fn logout_claims() -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "sub": "abc", "aud": "health-north", "exp": NOW + 120, "iat": NOW, "jti": "j-1",
        "sid": "s-1", "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    })
}

fn logout_token(p: &Provider, claims: &serde_json::Value) -> String {
    token(p, serde_json::json!({ "alg": "ES256", "kid": p.kid, "typ": "logout+jwt" }), claims)
}

#[test]
fn a_logout_token_is_checked_as_back_channel_logout_says() {
    let (p, s) = (provider(), settings());
    let accepted = verify_logout(&logout_token(&p, &logout_claims()), &p.keys, &s, NOW).expect("accepted");
    assert_eq!(
        (accepted.sub.as_deref(), accepted.sid.as_deref(), accepted.jti.as_str()),
        (Some("abc"), Some("s-1"), "j-1")
    );
    assert!(accepted.remember_until >= NOW + MAX_LOGOUT_TOKEN_AGE_SECS);
    let only_sid = logout_claims().as_object().cloned().map(|mut c| {
        c.remove("sub");
        serde_json::Value::Object(c)
    });
    let only_sid = verify_logout(&logout_token(&p, &only_sid.expect("claims")), &p.keys, &s, NOW).expect("sid only");
    assert_eq!((only_sid.sub, only_sid.sid.as_deref()), (None, Some("s-1")));
    let change = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = logout_claims().as_object().cloned().expect("object");
        f(&mut c);
        logout_token(&p, &serde_json::Value::Object(c))
    };
    let cases: Vec<(&str, String, Refused)> = vec![
        ("nonce", change(&|c| drop(c.insert("nonce".into(), "n".into()))), Refused::Nonce),
        ("no events", change(&|c| drop(c.remove("events"))), Refused::NotALogoutToken),
        (
            "another event",
            change(&|c| drop(c.insert("events".into(), serde_json::json!({ "urn:x": {} })))),
            Refused::NotALogoutToken,
        ),
        (
            "event not an object",
            change(&|c| drop(c.insert("events".into(), serde_json::json!({ BACKCHANNEL_LOGOUT_EVENT: true })))),
            Refused::NotALogoutToken,
        ),
        (
            "neither sub nor sid",
            change(&|c| {
                c.remove("sub");
                c.remove("sid");
            }),
            Refused::MissingClaim("sub or sid"),
        ),
        ("no jti", change(&|c| drop(c.remove("jti"))), Refused::MissingClaim("jti")),
        ("wrong issuer", change(&|c| drop(c.insert("iss".into(), "https://evil".into()))), Refused::WrongIssuer),
        ("wrong audience", change(&|c| drop(c.insert("aud".into(), "other".into()))), Refused::WrongAudience),
        ("no exp", change(&|c| drop(c.remove("exp"))), Refused::MissingClaim("exp")),
        (
            "too old",
            change(&|c| {
                c.insert("iat".into(), (NOW - MAX_LOGOUT_TOKEN_AGE_SECS - 60).into());
            }),
            Refused::Expired,
        ),
        ("future iat", change(&|c| drop(c.insert("iat".into(), (NOW + 100).into()))), Refused::IssuedInFuture),
    ];
    for (case, token, refused) in cases {
        assert_eq!(verify_logout(&token, &p.keys, &s, NOW), Err(refused), "{case}");
    }
    // An access token's typ is not a logout token's; an ID token (no events) is not one either.
    let typed = token(&p, serde_json::json!({ "alg": "ES256", "kid": p.kid, "typ": "at+jwt" }), &logout_claims());
    assert_eq!(verify_logout(&typed, &p.keys, &s, NOW), Err(Refused::NotALogoutToken));
    assert_eq!(verify_logout(&signed(&p, &claims()), &p.keys, &s, NOW), Err(Refused::NotALogoutToken));
    // Unsigned, or signed by another key under the provider's kid.
    let unsigned = format!("{}.{}.", b64url(r#"{"alg":"none"}"#), b64url(logout_claims().to_string()));
    assert!(matches!(verify_logout(&unsigned, &p.keys, &s, NOW), Err(Refused::Token(_))));
    let other = provider();
    let forged =
        token(&other, serde_json::json!({ "alg": "ES256", "kid": p.kid, "typ": "logout+jwt" }), &logout_claims());
    assert_eq!(verify_logout(&forged, &p.keys, &s, NOW), Err(Refused::Token(health_jose::Error::BadSignature)));
    // ... and a logout token never signs anyone in, whatever it carries.
    let mut sign_in = logout_claims();
    sign_in["email"] = "alice@hospital.example".into();
    for kind in [SubjectKind::IdToken, SubjectKind::Jwt] {
        assert_eq!(verify(&logout_token(&p, &sign_in), kind, &p.keys, &s, NOW), Err(Refused::WrongType));
        assert_eq!(verify(&signed(&p, &sign_in), kind, &p.keys, &s, NOW), Err(Refused::WrongType));
    }
}

#[test]
fn a_caep_security_event_is_checked_and_its_subject_read() {
    let (p, s) = (provider(), settings());
    let set = |header_typ: &str, claims: serde_json::Value| {
        token(&p, serde_json::json!({ "alg": "ES256", "kid": p.kid, "typ": header_typ }), &claims)
    };
    let claims = |event: &str, sub_id: serde_json::Value| {
        serde_json::json!({ "iss": ISSUER, "aud": "health-north", "iat": NOW, "jti": "e-1",
            "sub_id": sub_id, "events": { event: { "event_timestamp": NOW } } })
    };
    let email = serde_json::json!({ "format": "email", "email": "Alice@Hospital.example" });
    let revoked =
        verify_security_event(&set("secevent+jwt", claims(CAEP_SESSION_REVOKED, email.clone())), &p.keys, &s, NOW)
            .expect("accepted without exp");
    assert_eq!(
        (revoked.event, revoked.subject, revoked.jti.as_str()),
        (Some(CAEP_SESSION_REVOKED), EventSubject::Email("alice@hospital.example".into()), "e-1")
    );
    let iss_sub = serde_json::json!({ "format": "iss_sub", "iss": ISSUER, "sub": "abc" });
    let changed =
        verify_security_event(&set("secevent+jwt", claims(CAEP_CREDENTIAL_CHANGE, iss_sub)), &p.keys, &s, NOW)
            .expect("accepted");
    assert_eq!(
        (changed.event, changed.subject),
        (Some(CAEP_CREDENTIAL_CHANGE), EventSubject::ProviderSub("abc".into()))
    );
    let foreign = serde_json::json!({ "format": "iss_sub", "iss": "https://evil", "sub": "abc" });
    let other = verify_security_event(&set("secevent+jwt", claims(CAEP_SESSION_REVOKED, foreign)), &p.keys, &s, NOW);
    assert_eq!(other.expect("accepted").subject, EventSubject::Other);
    let ignored = verify_security_event(&set("secevent+jwt", claims("urn:x:other", email.clone())), &p.keys, &s, NOW);
    assert_eq!(ignored.expect("accepted").event, None);
    let refused = |token: String| verify_security_event(&token, &p.keys, &s, NOW);
    assert_eq!(refused(set("JWT", claims(CAEP_SESSION_REVOKED, email.clone()))), Err(Refused::NotASecurityEvent));
    assert_eq!(
        refused(set("secevent+jwt", claims(BACKCHANNEL_LOGOUT_EVENT, email.clone()))),
        Err(Refused::NotASecurityEvent)
    );
    let mut expired = claims(CAEP_SESSION_REVOKED, email.clone());
    expired["exp"] = (NOW - 120).into();
    assert_eq!(refused(set("secevent+jwt", expired)), Err(Refused::Expired));
    let mut old = claims(CAEP_SESSION_REVOKED, email.clone());
    old["iat"] = (NOW - MAX_LOGOUT_TOKEN_AGE_SECS - 60).into();
    assert_eq!(refused(set("secevent+jwt", old)), Err(Refused::Expired));
    let mut wrong = claims(CAEP_SESSION_REVOKED, email.clone());
    wrong["aud"] = "other".into();
    assert_eq!(refused(set("secevent+jwt", wrong)), Err(Refused::WrongAudience));
    let mut no_subject = claims(CAEP_SESSION_REVOKED, email);
    no_subject.as_object_mut().expect("object").remove("sub_id");
    assert_eq!(refused(set("secevent+jwt", no_subject)), Err(Refused::MissingClaim("sub_id")));
}

#[test]
fn mfa_is_needed_only_by_the_configured_roles() {
    let mut s = settings();
    let verified = |amr: &[&str], acr: Option<&str>| Verified {
        external_id: "a".into(),
        sub: "a".into(),
        amr: amr.iter().map(|a| (*a).to_owned()).collect(),
        acr: acr.map(str::to_owned),
        auth_time: NOW,
        exp: NOW,
        sid: None,
        iat: NOW,
        jti: None,
    };
    assert!(mfa_satisfied(&s, Role::Patient, &verified(&["pwd"], None)));
    assert!(!mfa_satisfied(&s, Role::Doctor, &verified(&["pwd"], None)));
    assert!(mfa_satisfied(&s, Role::Doctor, &verified(&["pwd", "mfa"], None)));
    assert!(!mfa_satisfied(&s, Role::Doctor, &verified(&["pwd"], Some("silver"))));
    s.mfa_acr = vec!["gold".into()];
    assert!(mfa_satisfied(&s, Role::Doctor, &verified(&[], Some("gold"))));
}

#[test]
fn takes_only_supported_signing_keys_from_a_jwks() {
    let p = provider();
    let ec = &p.keys.keys[0].jwk;
    let jwks = serde_json::json!({ "keys": [
        { "kty": "oct", "kid": "sym", "k": "AAAA" },
        { "kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": ec.x, "y": ec.y },
        { "kty": "EC", "crv": "P-256", "kid": "ps", "alg": "ES384", "x": ec.x, "y": ec.y },
        { "kty": "EC", "crv": "P-256", "kid": "bad", "x": ec.x, "y": ec.x },
        { "kty": "EC", "crv": "P-256", "x": ec.x, "y": ec.y },
        { "kty": "EC", "crv": "P-256", "kid": "ok", "x": ec.x, "y": ec.y },
    ]});
    let keys = provider_keys(jwks.to_string().as_bytes(), &tenant(), ISSUER).expect("jwks");
    let kids: Vec<_> = keys.keys.iter().map(|k| k.jwk.kid.as_str()).collect();
    assert_eq!(kids, ["ok"]);
    assert!(provider_keys(b"{}", &tenant(), ISSUER).is_none());
}

#[test]
fn settings_are_checked() {
    assert_eq!(settings().validate(), Ok(()));
    let check = |change: fn(&mut ProviderSettings)| {
        let mut s = settings();
        change(&mut s);
        s.validate()
    };
    assert_eq!(check(|s| s.clock_tolerance_secs = 61), Err(SettingsError::Tolerance));
    assert_eq!(check(|s| s.jwks_refetch_cooldown_secs = 0), Err(SettingsError::Cooldown));
    assert_eq!(settings().jwks_refetch_cooldown_secs, 30);
    assert_eq!(check(|s| s.issuer = "idp.example".into()), Err(SettingsError::Issuer));
    assert_eq!(
        check(|s| s.discovery_url = Some("https://idp.example/.well-known".into())),
        Err(SettingsError::KeySource)
    );
    assert_eq!(check(|s| s.jwks_uri = None), Err(SettingsError::KeySource));
    assert_eq!(check(|s| s.subject_claim = "Email".into()), Err(SettingsError::SubjectClaim));
    assert_eq!(
        check(|s| {
            s.enabled = false;
            s.required = true;
        }),
        Err(SettingsError::RequiredDisabled)
    );
    let mut s = settings();
    s.required = true;
    s.break_glass = Some(Username::parse("root_admin").expect("username"));
    assert!(s.refuses_password(&Username::parse("dr_house").expect("username")));
    assert!(!s.refuses_password(&Username::parse("root_admin").expect("username")));
}

#[test]
fn freshness_follows_cache_control_within_bounds() {
    assert_eq!(fresh_secs(None), JWKS_DEFAULT_FRESH_SECS);
    assert_eq!(fresh_secs(Some("public, max-age=600")), 600);
    assert_eq!(fresh_secs(Some("max-age=0")), JWKS_MIN_FRESH_SECS);
    assert_eq!(fresh_secs(Some("max-age=99999999")), JWKS_MAX_FRESH_SECS);
    assert_eq!(fresh_secs(Some("no-store")), JWKS_MIN_FRESH_SECS);
}

#[test]
fn an_unknown_kid_refetches_once_per_cooldown() {
    let cached =
        CachedJwks { source: "s".into(), jwks: String::new(), fetched_at: 0, fresh_until: 300, attempted_at: 0 };
    assert_eq!(plan(None, "s", false, 10, 30), Plan::Fetch);
    assert_eq!(plan(Some(&cached), "s", true, 10, 30), Plan::UseCached);
    assert_eq!(plan(Some(&cached), "s", false, 10, 30), Plan::UseCached);
    assert_eq!(plan(Some(&cached), "s", false, 30, 30), Plan::Fetch);
    assert_eq!(plan(Some(&cached), "other", true, 10, 30), Plan::Fetch);
    // Stale: fetched, but not more often than the cooldown while the provider is down.
    assert_eq!(plan(Some(&cached), "s", true, 400, 30), Plan::Fetch);
    let tried = CachedJwks { attempted_at: 390, ..cached };
    assert_eq!(plan(Some(&tried), "s", true, 400, 30), Plan::UseCached);
    // Nothing ever fetched (a provider down from the start): asked once per cooldown too.
    let marker =
        CachedJwks { source: "s".into(), jwks: String::new(), fetched_at: 0, fresh_until: 0, attempted_at: 390 };
    assert_eq!(plan(Some(&marker), "s", false, 400, 30), Plan::UseCached);
    assert_eq!(plan(Some(&marker), "s", false, 420, 30), Plan::Fetch);
}

#[test]
fn a_code_flow_id_token_is_verified_as_the_exchange_verifies_it_and_carries_the_sign_ins_nonce() {
    let p = provider();
    let s = settings();
    let with_nonce = |nonce: &str| with(|c| c["nonce"] = nonce.into());
    let verified = verify_sign_in(&signed(&p, &with_nonce("n-1")), &p.keys, &s, NOW, "n-1").expect("verified");
    assert_eq!(verified.external_id, "alice@hospital.example");
    let refused = |token: &str, nonce: &str| verify_sign_in(token, &p.keys, &s, NOW, nonce).expect_err("refused");
    assert_eq!(refused(&signed(&p, &with_nonce("n-2")), "n-1"), Refused::WrongNonce);
    assert_eq!(refused(&signed(&p, &with_nonce("n-2")), "n-1").reason(), Reason::SignInNonceMismatch);
    assert_eq!(refused(&signed(&p, &claims()), "n-1"), Refused::MissingClaim("nonce"));
    assert_eq!(refused(&signed(&p, &with_nonce("")), ""), Refused::WrongNonce);
    // The exchange's checks come first: a nonce does not make a bad token good.
    let expired = with(|c| {
        c["nonce"] = "n-1".into();
        c["exp"] = (NOW - 120).into();
    });
    assert_eq!(refused(&signed(&p, &expired), "n-1"), Refused::Expired);
    let wrong_aud = with(|c| {
        c["nonce"] = "n-1".into();
        c["aud"] = "health-south".into();
    });
    assert_eq!(refused(&signed(&p, &wrong_aud), "n-1"), Refused::WrongAudience);
    let access = token(&p, serde_json::json!({ "alg": "ES256", "kid": p.kid, "typ": "at+jwt" }), &with_nonce("n-1"));
    assert_eq!(refused(&access, "n-1"), Refused::WrongType);
}

#[test]
fn the_pkce_challenge_is_rfc_7636s_and_return_to_is_a_same_origin_path() {
    // RFC 7636 Appendix B.
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    for good in ["/app/", "/app/?view=records#top", "/"] {
        assert_eq!(same_origin_path(good), Some(good));
    }
    for bad in ["https://evil.example/", "//evil", "/\\evil", "\\\\evil", "app/", "", "/app/\nx", "javascript:alert(1)"]
    {
        assert_eq!(same_origin_path(bad), None, "{bad:?}");
    }
}

#[test]
fn the_authorization_url_keeps_the_endpoints_query_and_encodes_the_parameters() {
    let params = [("redirect_uri", "https://h.example/auth/federation/north/callback"), ("scope", "openid email")];
    assert_eq!(
        authorization_url("https://idp.example/auth", &params),
        "https://idp.example/auth?redirect_uri=https%3A%2F%2Fh.example%2Fauth%2Ffederation%2Fnorth%2Fcallback&scope=openid+email"
    );
    assert!(
        authorization_url("https://idp.example/auth?tenant=x", &params)
            .starts_with("https://idp.example/auth?tenant=x&redirect_uri=")
    );
}
