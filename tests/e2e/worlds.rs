//! Least privilege proven on the binaries: every built component must target its WIT world in
//! `wit/health.wit` (the library equivalent of `wasm-tools component targets`), so a component
//! that starts importing a store, a variable interface or the network it was not granted fails
//! here even if spin.toml were edited to allow it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

const COMPONENTS: &[(&str, &str)] = &[
    ("gateway", "gateway"),
    ("auth", "auth"),
    ("jwks", "jwks"),
    ("patient", "patient-service"),
    ("doctor", "role-service"),
    ("lab", "role-service"),
    ("insurance", "role-service"),
    ("policy", "policy"),
    ("portal", "portal"),
];

/// The release build of `component`, refused if it is older than its sources.
fn built(component: &str) -> Vec<u8> {
    let path = root().join(format!("target/wasm32-wasip2/release/{component}.wasm"));
    health_e2e::fresh::ensure_fresh(&path).unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{} ({e}): run `cargo xtask build`", path.display()))
}

fn imports_of(wasm: &[u8]) -> Vec<String> {
    match wit_parser::decoding::decode(wasm) {
        Ok(wit_parser::decoding::DecodedWasm::Component(resolve, world)) => {
            resolve.worlds[world].imports.keys().map(|key| resolve.name_world_key(key)).collect()
        }
        _ => vec!["<not a component>".into()],
    }
}

#[test]
fn every_component_targets_its_world() {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(root().join("wit")).expect("wit/ parses");
    let mut failures = Vec::new();
    for (component, world) in COMPONENTS {
        let wasm = built(component);
        let world_id = resolve.select_world(&[package], Some(world)).expect("world exists");
        if let Err(e) = wit_component::targets(&resolve, world_id, &wasm, true) {
            failures.push(format!(
                "{component} does not target world {world}: {e:#}\n  it imports: {:?}",
                imports_of(&wasm)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_check_refuses_a_component_with_more_imports_than_its_world() {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(root().join("wit")).expect("wit/ parses");
    for (component, narrower_world) in
        [("gateway", "role-service"), ("jwks", "role-service"), ("patient", "role-service"), ("patient", "policy")]
    {
        let wasm = built(component);
        let world = resolve.select_world(&[package], Some(narrower_world)).expect("world exists");
        assert!(
            wit_component::targets(&resolve, world, &wasm, true).is_err(),
            "{component} passed as {narrower_world}"
        );
    }
}

#[test]
fn role_services_and_policy_import_no_store_variables_or_network_they_were_not_granted() {
    for (component, forbidden) in [
        ("policy", &["fermyon:spin", "wasi:http", "wasi:sockets", "wasi:keyvalue", "wasi:config"][..]),
        ("patient", &["fermyon:spin/key-value", "wasi:sockets"][..]),
        ("doctor", &["fermyon:spin/key-value", "wasi:http/outgoing-handler", "wasi:sockets"][..]),
        ("jwks", &["wasi:http/outgoing-handler", "wasi:sockets"][..]),
    ] {
        let wasm = built(component);
        let imports = imports_of(&wasm);
        for name in &imports {
            assert!(!forbidden.iter().any(|f| name.starts_with(f)), "{component} imports {name}");
        }
        assert!(!imports.is_empty() || component == "policy", "{component}: no imports decoded");
    }
}
