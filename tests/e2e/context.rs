//! Role services refuse anything but a fresh caller context attested by the gateway. A probe
//! guest, allowed to chain to the real `patient`, `doctor`, `lab` and `insurance` components,
//! plays the attacker who reached a private service: no context, a context signed with the
//! wrong key, a stale one, one replayed onto another path or body, and an escalated caller are
//! all refused with 401 by every service; a genuine one works.

use std::collections::HashMap;

use bytes::Bytes;
use health_core::context::{Attestation, CALLER_HEADER, MAC_HEADER, TIMESTAMP_HEADER, attest};
use health_core::{Caller, Role, SecretKey, TenantId};
use health_e2e::Target;
use health_e2e::{CONTEXT_KEY, MASTER_KEY, root};
use health_host::LoadOptions;

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
context_key = {{ required = true, secret = true }}
master_key = {{ required = true, secret = true }}
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
context_key = "{{{{ context_key }}}}"
master_key = "{{{{ master_key }}}}"
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
        env: HashMap::from([
            ("SPIN_VARIABLE_CONTEXT_KEY".to_owned(), CONTEXT_KEY.to_owned()),
            ("SPIN_VARIABLE_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
        ]),
    })
    .expect("app loads")
}

fn caller(subject: &str, role: Role, client_id: &str) -> Caller {
    Caller {
        tenant_id: TenantId::parse("demo-hospital").expect("tenant"),
        subject: subject.into(),
        role,
        client_id: client_id.into(),
        scopes: vec!["insurance/summary.read".into()],
        jti: "j-1".into(),
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
    let mut req = http::Request::builder().uri(url);
    if let Some(att) = attestation {
        req = req
            .header(CALLER_HEADER, &att.caller)
            .header(TIMESTAMP_HEADER, &att.timestamp)
            .header(MAC_HEADER, &att.mac);
    }
    let res = app.handle(req.body(Bytes::new()).expect("request")).await.expect("handled");
    String::from_utf8_lossy(res.body()).into_owned()
}

#[tokio::test]
async fn every_role_service_refuses_missing_forged_stale_and_replayed_contexts() {
    let state = tempfile::tempdir().expect("tempdir");
    let app = app(state.path());
    let key = SecretKey::from_hex(CONTEXT_KEY).expect("key");
    for (service, who, path, marker, other_path) in genuine_requests() {
        let genuine = attest(&key, "GET", path, b"", &who, now());
        let ok = call(&app, service, path, Some(&genuine)).await;
        assert!(ok.starts_with("200 ") && ok.contains(marker), "{service}: {ok}");

        let refused = |reply: String, what: &str| {
            assert!(reply.starts_with("401 "), "{service} accepted {what}: {reply}");
            assert!(!reply.contains(marker) || marker == "200 ", "{service} leaked on {what}: {reply}");
        };
        refused(call(&app, service, path, None).await, "no context");
        let wrong_key = attest(&SecretKey::from_bytes([7; 32]), "GET", path, b"", &who, now());
        refused(call(&app, service, path, Some(&wrong_key)).await, "a context under another key");
        refused(
            call(&app, service, path, Some(&attest(&key, "GET", path, b"", &who, now() - 120))).await,
            "a stale context",
        );
        refused(
            call(&app, service, path, Some(&attest(&key, "GET", path, b"", &who, now() + 120))).await,
            "a future context",
        );
        refused(call(&app, service, other_path, Some(&genuine)).await, "a context replayed onto another path");
        let mut escalated = who.clone();
        escalated.role = Role::Doctor;
        escalated.subject = "u-dr-grey-impostor".into();
        let forged =
            Attestation { caller: attest(&key, "GET", path, b"", &escalated, now()).caller, ..genuine.clone() };
        refused(call(&app, service, path, Some(&forged)).await, "a caller rewritten without re-signing");
        let mut garbled = genuine.clone();
        garbled.mac = "!!".into();
        refused(call(&app, service, path, Some(&garbled)).await, "a malformed MAC");
    }
    // A genuine context still only reaches what policy allows.
    let alice = caller("u-alice", Role::Patient, "health-web");
    let bob_record = attest(&key, "GET", "/api/patients/p-1002/records", b"", &alice, now());
    assert!(call(&app, "patient", "/api/patients/p-1002/records", Some(&bob_record)).await.starts_with("403 "));
}
