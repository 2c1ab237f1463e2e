//! Role services refuse anything but a fresh caller context attested by the gateway on their
//! own link. A probe guest, allowed to chain to the real `patient`, `doctor`, `lab` and
//! `insurance` components, plays the attacker who reached a private service: no context, a
//! context signed with the wrong key or with another link's key (the gateway's to `jwks`, or to
//! another role service), one claiming another sender, a stale one, one replayed onto another
//! path or body, and an escalated caller are all refused with 401 by every service; a genuine
//! one works. And `jwks` serves each private endpoint only to its callers: the gateway's key
//! (all a compromised gateway holds) decrypts but never signs or encrypts.

use bytes::Bytes;
use health_core::context::{
    Attestation, CALLER_HEADER, FROM_HEADER, MAC_HEADER, PATH_HEADER, TIMESTAMP_HEADER, attest,
};
use health_core::{Caller, Component, Link, Role, SecretKey, TenantId};
use health_e2e::{MASTER_KEY, TestApp, context_key, root};
use health_e2e::{Target, secrets};
use health_host::LoadOptions;
use serde_json::json;

const SERVICES: [&str; 4] = ["patient", "doctor", "lab", "insurance"];

fn release(name: &str) -> String {
    root().join("target/wasm32-wasip2/release").join(name).display().to_string()
}

fn app(state: &std::path::Path) -> Target {
    let policy = release("policy.wasm");
    let mut manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "context-attacks"
[variables]
{variables}
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{probe}"
allowed_outbound_hosts = [{hosts}]
[component.probe.dependencies]
"health:platform/authorizer@0.1.0" = {{ path = "{policy}" }}
"#,
        probe = release("host_probe.wasm"),
        hosts = SERVICES.map(|s| format!("\"http://{s}.spin.internal\"")).join(", "),
        variables = SERVICES
            .map(|s| format!("context_key_{s} = {{ required = true, secret = true }}"))
            .into_iter()
            .chain(["phi_wrapping_key = { required = true, secret = true }".to_owned()])
            .collect::<Vec<_>>()
            .join("\n"),
    );
    for service in SERVICES {
        manifest.push_str(&format!(
            r#"[[trigger.http]]
route = {{ private = true }}
component = "{service}"
[component.{service}]
source = "{source}"
sqlite_databases = ["records"]
[component.{service}.variables]
context_key_{service} = "{{{{ context_key_{service} }}}}"
phi_wrapping_key = "{{{{ phi_wrapping_key }}}}"
demo_tenant = "true"
break_glass_window_secs = "3600"
[component.{service}.dependencies]
"health:platform/authorizer@0.1.0" = {{ path = "{policy}" }}
"#,
            source = release(&format!("{service}.wasm")),
        ));
    }
    std::fs::write(state.join("spin.toml"), manifest).expect("manifest");
    std::fs::write(state.join("rc.toml"), "[sqlite_database.records]\ntype = \"spin\"\npath = \"records.db\"\n")
        .expect("runtime config");
    Target::load(&LoadOptions {
        manifest: state.join("spin.toml"),
        runtime_config: Some(state.join("rc.toml")),
        state_dir: state.join(".spin"),
        env: secrets(MASTER_KEY),
    })
    .expect("app loads")
}

fn caller(subject: &str, role: Role, client_id: &str) -> Caller {
    Caller {
        tenant_id: TenantId::parse("demo-hospital").expect("tenant"),
        subject: health_core::Opaque::parse(subject).expect("subject"),
        role,
        client_id: Some(health_core::ClientId::parse(client_id).expect("client id")),
        scopes: vec!["insurance/summary.read".into()],
        jti: health_core::TokenId::parse("j-1").expect("jti"),
        enc_jwk: None,
    }
}

/// For each service: a caller it serves, a path it answers 200, the marker its answer holds,
/// and another path the replayed context is tried on.
fn genuine_requests() -> Vec<(&'static str, Caller, &'static str, &'static str, &'static str)> {
    let mut insurer = caller("acme-health", Role::Insurance, "acme-health");
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("demo/acme-health.enc.jwk.json")).expect("demo jwk"))
            .expect("json");
    let mut public = jwk.clone();
    public.as_object_mut().expect("object").remove("d");
    public["tenant_id"] = "demo-hospital".into();
    insurer.enc_jwk = Some(public);
    vec![
        (
            "patient",
            caller("u-alice", Role::Patient, "health-web"),
            "/api/patients/p-1001/records",
            "E11.9",
            "/api/patients/p-1002/records",
        ),
        (
            "doctor",
            caller("u-dr-grey", Role::Doctor, "health-web"),
            "/api/patients/p-1003/records",
            "J45.30",
            "/api/patients/p-1001/records",
        ),
        ("lab", caller("u-lab-north", Role::Lab, "health-web"), "/api/lab/orders", "o-2001", "/api/lab/orders?x=1"),
        (
            "insurance",
            insurer,
            "/api/insurance/patients/p-1003/summary",
            "200 ",
            "/api/insurance/patients/p-1001/summary",
        ),
    ]
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Asks the probe to GET `path` on `service` with `attestation`; returns "status body".
async fn call(app: &Target, service: &str, path: &str, attestation: Option<&Attestation>) -> String {
    // The probe forwards everything after `url=` as is, a query included.
    let url = format!("/call?url=http://{service}.spin.internal{path}");
    // The path where a role service reads it, as the gateway forwards it (the URL's is ignored).
    let mut req = http::Request::builder().uri(url).header(PATH_HEADER, path);
    if let Some(att) = attestation {
        req = req
            .header(FROM_HEADER, &att.from)
            .header(CALLER_HEADER, &att.caller)
            .header(TIMESTAMP_HEADER, &att.timestamp)
            .header(MAC_HEADER, &att.mac);
    }
    let res = app.handle(req.body(Bytes::new()).expect("request")).await.expect("handled");
    String::from_utf8_lossy(res.body()).into_owned()
}

fn link(from: Component, to: &str) -> Link {
    Link::new(from, Component::parse(to).expect("component")).expect("link")
}

#[tokio::test]
async fn every_role_service_refuses_missing_forged_stale_and_replayed_contexts() {
    let state = tempfile::tempdir().expect("tempdir");
    let app = app(state.path());
    for (service, who, path, marker, other_path) in genuine_requests() {
        let link = link(Component::Gateway, service);
        let key = context_key(link);
        let genuine = attest(&key, link, "GET", path, b"", &who, now());
        let ok = call(&app, service, path, Some(&genuine)).await;
        assert!(ok.starts_with("200 ") && ok.contains(marker), "{service}: {ok}");

        let refused = |reply: String, what: &str| {
            assert!(reply.starts_with("401 "), "{service} accepted {what}: {reply}");
            assert!(!reply.contains(marker) || marker == "200 ", "{service} leaked on {what}: {reply}");
        };
        refused(call(&app, service, path, None).await, "no context");
        let wrong_key = attest(&SecretKey::from_bytes([7; 32]), link, "GET", path, b"", &who, now());
        refused(call(&app, service, path, Some(&wrong_key)).await, "a context under another key");
        refused(
            call(&app, service, path, Some(&attest(&key, link, "GET", path, b"", &who, now() - 120))).await,
            "a stale context",
        );
        refused(
            call(&app, service, path, Some(&attest(&key, link, "GET", path, b"", &who, now() + 120))).await,
            "a future context",
        );
        refused(call(&app, service, other_path, Some(&genuine)).await, "a context replayed onto another path");
        let mut escalated = who.clone();
        escalated.role = Role::Doctor;
        escalated.subject = health_core::Opaque::parse("u-dr-grey-impostor").expect("subject");
        let forged =
            Attestation { caller: attest(&key, link, "GET", path, b"", &escalated, now()).caller, ..genuine.clone() };
        refused(call(&app, service, path, Some(&forged)).await, "a caller rewritten without re-signing");
        let mut garbled = genuine.clone();
        garbled.mac = "!!".into();
        refused(call(&app, service, path, Some(&garbled)).await, "a malformed MAC");
    }
    // A genuine context still only reaches what policy allows.
    let alice = caller("u-alice", Role::Patient, "health-web");
    let patient = link(Component::Gateway, "patient");
    let bob_record = attest(&context_key(patient), patient, "GET", "/api/patients/p-1002/records", b"", &alice, now());
    assert!(call(&app, "patient", "/api/patients/p-1002/records", Some(&bob_record)).await.starts_with("403 "));
}

/// Issue 14, item 14: a key per caller -> callee link. What one link's key attests, no other
/// link's receiver accepts, and a receiver serves only the senders it lists.
#[tokio::test]
async fn every_role_service_refuses_a_context_under_another_links_key_or_from_another_sender() {
    let state = tempfile::tempdir().expect("tempdir");
    let app = app(state.path());
    for (service, who, path, marker, _) in genuine_requests() {
        let own = link(Component::Gateway, service);
        let refused = |reply: String, what: &str| {
            assert!(reply.starts_with("401 "), "{service} accepted {what}: {reply}");
            assert!(!reply.contains(marker) || marker == "200 ", "{service} leaked on {what}: {reply}");
        };
        // The keys of every other link: the gateway's to jwks and to the other role services,
        // auth's to jwks. Each signs a context that is well formed for this service's link.
        for other in Link::ALL.into_iter().filter(|l| *l != own) {
            let under_other_key = attest(&context_key(other), own, "GET", path, b"", &who, now());
            refused(
                call(&app, service, path, Some(&under_other_key)).await,
                &format!("a context under {}", other.key_variable()),
            );
            // The same key on its own link, sent here: the receiver is under the MAC.
            let for_other_link = attest(&context_key(other), other, "GET", path, b"", &who, now());
            refused(
                call(&app, service, path, Some(&for_other_link)).await,
                &format!("a context attested for {:?} -> {:?}", other.from(), other.to()),
            );
        }
        // Another sender claimed, with the service's own key and MAC: role services serve only
        // the gateway, so a role service (or auth) that holds a key cannot call another.
        let genuine = attest(&context_key(own), own, "GET", path, b"", &who, now());
        for sender in ["auth", "jwks", "patient", "doctor", "lab", "insurance", "GATEWAY", "", "gateway2"] {
            let claimed = Attestation { from: sender.into(), ..genuine.clone() };
            refused(call(&app, service, path, Some(&claimed)).await, &format!("a context claiming {sender:?}"));
        }
        // Control: the genuine one is still accepted.
        assert!(call(&app, service, path, Some(&genuine)).await.starts_with("200 "), "{service}");
    }
}

fn sign_caller() -> Caller {
    let mut caller = caller("u-alice", Role::Patient, "health-web");
    caller.jti = health_core::TokenId::parse("j-sign-1").expect("jti");
    caller
}

/// Claims `jwks` would sign for [`sign_caller`]: matching the caller, the tenant's issuer, a
/// lifetime within the cap.
fn claims() -> String {
    let now = now();
    json!({
        "iss": "http://127.0.0.1:3000/t/demo-hospital", "sub": "u-alice", "aud": "health-platform",
        "exp": now + 300, "iat": now, "nbf": now, "jti": "j-sign-1", "tenant_id": "demo-hospital",
        "role": "patient", "scope": "records:read", "client_id": "health-web", "amr": ["pwd"], "auth_time": now,
    })
    .to_string()
}

/// Sends `body` to `jwks`'s `path` through the probe with `att`'s headers.
async fn to_jwks(app: &TestApp, path: &str, att: &Attestation, body: &str) -> (u16, String) {
    let url = format!("/probe/call?url=http://jwks.spin.internal{path}");
    let headers = [
        ("content-type", "application/json"),
        (FROM_HEADER, att.from.as_str()),
        (CALLER_HEADER, att.caller.as_str()),
        (TIMESTAMP_HEADER, att.timestamp.as_str()),
        (MAC_HEADER, att.mac.as_str()),
    ];
    let reply = app.send("POST", &url, &headers, body).await;
    assert_eq!(reply.status, 200, "probe failed: {}", reply.body);
    let (status, body) = reply.body.split_once(' ').expect("status and body");
    (status.parse().expect("status"), body.to_owned())
}

/// Issue 14, item 14: only `auth` may have `jwks` sign and encrypt; the gateway's key (what a
/// compromised gateway holds) gets a nested token decrypted and nothing else. A role service's
/// key reaches nothing in `jwks`.
#[tokio::test(flavor = "multi_thread")]
async fn only_auth_gets_jwks_to_sign_or_encrypt_and_the_gateway_only_to_decrypt() {
    let app = TestApp::start_with_probe().expect("app loads");
    let caller = sign_caller();
    let claims = claims();
    let (gateway, auth) = (Component::Gateway, Component::Auth);

    // The gateway's own key, on its own link, for a perfectly valid signing request: refused.
    let from_gateway = app.chained_as(gateway, "jwks", "POST", "/internal/sign", Some(&caller), &claims).await;
    assert_eq!(from_gateway.status, 401, "the gateway's key got a token signed: {}", from_gateway.body);
    assert!(!from_gateway.body.contains("\"token\""), "{}", from_gateway.body);
    let body = json!({ "plaintext": "x", "cty": "JWT" }).to_string();
    let encrypt = app.chained_as(gateway, "jwks", "POST", "/internal/encrypt", Some(&caller), &body).await;
    assert_eq!(encrypt.status, 401, "the gateway's key got jwks to encrypt: {}", encrypt.body);

    // The same requests from auth: signed and encrypted (the control).
    let signed = app.chained_as(auth, "jwks", "POST", "/internal/sign", Some(&caller), &claims).await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    let encrypted = app.chained_as(auth, "jwks", "POST", "/internal/encrypt", Some(&caller), &body).await;
    assert_eq!(encrypted.status, 200, "{}", encrypted.body);
    let jwe = encrypted.json()["jwe"].as_str().expect("jwe").to_owned();

    // Decryption: the gateway and auth alike.
    let body = json!({ "jwe": jwe }).to_string();
    for from in [gateway, auth] {
        let decrypted = app.chained_as(from, "jwks", "POST", "/internal/decrypt", Some(&caller), &body).await;
        assert_eq!((decrypted.status, decrypted.json()["plaintext"].as_str()), (200, Some("x")), "{from:?}");
    }

    // The gateway claiming to be auth: under its own key, or under auth's link with its key.
    let (gateway_jwks, auth_jwks) =
        (Link::new(gateway, Component::Jwks).expect("link"), Link::new(auth, Component::Jwks).expect("link"));
    let as_auth =
        attest(&context_key(gateway_jwks), auth_jwks, "POST", "/internal/sign", claims.as_bytes(), &caller, now());
    assert_eq!(as_auth.from, "auth");
    assert_eq!(to_jwks(&app, "/internal/sign", &as_auth, &claims).await.0, 401, "a gateway claiming to be auth");
    let relabelled = Attestation {
        from: "auth".into(),
        ..attest(&context_key(gateway_jwks), gateway_jwks, "POST", "/internal/sign", claims.as_bytes(), &caller, now())
    };
    assert_eq!(to_jwks(&app, "/internal/sign", &relabelled, &claims).await.0, 401, "a relabelled gateway context");
    // A role service's key, whatever sender it claims, reaches no jwks endpoint.
    for path in ["/internal/sign", "/internal/encrypt", "/internal/decrypt"] {
        let patient_key = context_key(Link::new(gateway, Component::Patient).expect("link"));
        for (from, link) in [("patient", gateway_jwks), ("gateway", gateway_jwks), ("auth", auth_jwks)] {
            let att = Attestation {
                from: from.into(),
                ..attest(&patient_key, link, "POST", path, claims.as_bytes(), &caller, now())
            };
            assert_eq!(
                to_jwks(&app, path, &att, &claims).await.0,
                401,
                "{path} under the patient link's key as {from}"
            );
        }
    }
}
