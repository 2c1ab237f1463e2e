//! Component dependencies (`[component.X.dependencies]`) composed at load time with
//! `wac-graph`, as Spin does: the dependency's exports are plugged into the matching imports
//! of the component. A dependency must be pure: one importing any store, variables or network
//! interface is refused, so capabilities are only ever those spin.toml grants the component.

use anyhow::{Context, bail};
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// Interface prefixes a dependency may not import.
const FORBIDDEN_IN_DEPENDENCIES: &[&str] =
    &["fermyon:spin/", "spin:", "wasi:keyvalue/", "wasi:config/", "wasi:http/", "wasi:sockets/"];

/// The interfaces a component imports and exports, by name.
pub fn interfaces(bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let wit_parser::decoding::DecodedWasm::Component(resolve, world) =
        wit_parser::decoding::decode(bytes).context("decoding component")?
    else {
        bail!("not a component");
    };
    let names = |items: &wit_parser::IndexMap<wit_parser::WorldKey, wit_parser::WorldItem>| {
        items.keys().map(|k| resolve.name_world_key(k)).collect::<Vec<_>>()
    };
    let world = &resolve.worlds[world];
    Ok((names(&world.imports), names(&world.exports)))
}

/// Checks that `dependency` is pure and exports `interface` (e.g. `health:platform/authorizer@0.1.0`,
/// or a package `health:platform@0.1.0` meaning any of its interfaces).
pub fn check_dependency(name: &str, interface: &str, dependency: &[u8]) -> anyhow::Result<()> {
    let (imports, exports) = interfaces(dependency).with_context(|| format!("dependency {name:?}"))?;
    if let Some(bad) = imports.iter().find(|i| FORBIDDEN_IN_DEPENDENCIES.iter().any(|f| i.starts_with(f))) {
        bail!(
            "dependency {name:?} for {interface:?} imports {bad:?}: dependencies may not import stores, variables or network interfaces"
        );
    }
    let (package, version) = interface.split_once('@').map_or((interface, None), |(p, v)| (p, Some(v)));
    let matches = |export: &str| {
        let (e_name, e_version) = export.split_once('@').map_or((export, None), |(p, v)| (p, Some(v)));
        let name_ok = e_name == package || (!package.contains('/') && e_name.starts_with(&format!("{package}/")));
        name_ok && (version.is_none() || e_version == version)
    };
    if !exports.iter().any(|e| matches(e)) {
        bail!("dependency {name:?} does not export {interface:?} (it exports {exports:?})");
    }
    Ok(())
}

/// Plugs each dependency's exports into `main`'s imports and encodes the composed component.
pub fn compose(main: &[u8], dependencies: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("root:component", None, main.to_vec(), graph.types_mut())
        .context("loading component for composition")?;
    let socket = graph.register_package(socket)?;
    let mut plugs = Vec::new();
    for (index, (name, bytes)) in dependencies.iter().enumerate() {
        let package = Package::from_bytes(&format!("dependency:d{index}"), None, bytes.clone(), graph.types_mut())
            .with_context(|| format!("loading dependency {name:?}"))?;
        plugs.push(graph.register_package(package)?);
    }
    wac_graph::plug(&mut graph, plugs, socket).context("plugging dependencies into the component")?;
    graph.encode(EncodeOptions::default()).context("encoding composed component")
}
