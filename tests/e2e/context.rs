//! Role services refuse anything but a fresh caller context attested by the gateway. A probe
//! guest, allowed to chain to the real `patient` component, plays the attacker who reached
//! the private service: no context, a context signed with the wrong key, a stale one, one
//! replayed onto another path, and an escalated caller are all refused; a genuine one works.

use std::collections::HashMap;

use bytes::Bytes;
use health_core::context::{Attestation, CALLER_HEADER, MAC_HEADER, TIMESTAMP_HEADER, attest};
use health_core::{Caller, Role, SecretKey, TenantId};
use health_e2e::{CONTEXT_KEY, root};
use health_host::{App, LoadOptions};

fn release(name: &str) -> String {
    root().join("target/wasm32-wasip2/release").join(name).display().to_string()
}

fn app(state: &std::path::Path) -> App {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "context-attacks"
[variables]
context_key = {{ required = true, secret = true }}
[[trigger.http]]
route = "/..."
component = "probe"
[[trigger.http]]
route = {{ private = true }}
component = "patient"
[component.probe]
source = "{probe}"
allowed_outbound_hosts = ["http://patient.spin.internal"]
[component.probe.dependencies]
"health:platform/authorizer@0.1.0" = {{ path = "{policy}" }}
[component.patient]
source = "{patient}"
sqlite_databases = ["records"]
[component.patient.variables]
context_key = "{{{{ context_key }}}}"
demo_tenant = "true"
[component.patient.dependencies]
"health:platform/authorizer@0.1.0" = {{ path = "{policy}" }}
"#,
        probe = release("host_probe.wasm"),
        patient = release("patient.wasm"),
        policy = release("policy.wasm"),
    );
    std::fs::write(state.join("spin.toml"), manifest).expect("manifest");
    std::fs::write(state.join("rc.toml"), "[sqlite_database.records]\ntype = \"spin\"\npath = \"records.db\"\n")
        .expect("runtime config");
    App::load(&LoadOptions {
        manifest: state.join("spin.toml"),
        runtime_config: Some(state.join("rc.toml")),
        state_dir: state.join(".spin"),
        env: HashMap::from([("SPIN_VARIABLE_CONTEXT_KEY".to_owned(), CONTEXT_KEY.to_owned())]),
    })
    .expect("app loads")
}

fn alice() -> Caller {
    Caller {
        tenant_id: TenantId::parse("demo-hospital").expect("tenant"),
        subject: "u-alice".into(),
        role: Role::Patient,
        client_id: "health-web".into(),
        scopes: vec![],
        jti: "j-1".into(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Asks the probe to GET `path` on the patient service with `attestation`; returns the status line.
async fn call(app: &App, path: &str, attestation: Option<&Attestation>) -> String {
    let mut req = http::Request::builder().uri(format!("/call?url=http://patient.spin.internal{path}"));
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
async fn role_service_refuses_missing_forged_stale_and_replayed_contexts() {
    let state = tempfile::tempdir().expect("tempdir");
    let app = app(state.path());
    let key = SecretKey::from_hex(CONTEXT_KEY).expect("key");
    let path = "/patients/p-1001/record";

    let genuine = attest(&key, "GET", path, b"", &alice(), now());
    let ok = call(&app, path, Some(&genuine)).await;
    assert!(ok.starts_with("200 ") && ok.contains("E11.9"), "{ok}");

    assert!(call(&app, path, None).await.starts_with("401 "));
    let wrong_key = attest(&SecretKey::from_bytes([7; 32]), "GET", path, b"", &alice(), now());
    assert!(call(&app, path, Some(&wrong_key)).await.starts_with("401 "));
    let stale = attest(&key, "GET", path, b"", &alice(), now() - 120);
    assert!(call(&app, path, Some(&stale)).await.starts_with("401 "));
    // A genuine context for Alice's record replayed onto Bob's.
    let replayed = call(&app, "/patients/p-1002/record", Some(&genuine)).await;
    assert!(replayed.starts_with("401 ") && !replayed.contains("I10"), "{replayed}");
    // The caller rewritten to a doctor without re-signing.
    let mut doctor = alice();
    doctor.role = Role::Doctor;
    let escalated = Attestation { caller: attest(&key, "GET", path, b"", &doctor, now()).caller, ..genuine.clone() };
    assert!(call(&app, path, Some(&escalated)).await.starts_with("401 "));
    // A genuine context still only reaches what policy allows.
    let bob_record = attest(&key, "GET", "/patients/p-1002/record", b"", &alice(), now());
    assert!(call(&app, "/patients/p-1002/record", Some(&bob_record)).await.starts_with("403 "));
}
