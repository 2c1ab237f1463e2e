//! The suites refuse to run against Wasm older than its sources: `cargo test` does not build the
//! release components the manifest names, so after an edit without `cargo xtask build` the tests
//! would pass or fail on yesterday's code.
//!
//! "Its sources" are what cargo itself compares: the dep-info file cargo writes beside each
//! artifact (`target/wasm32-wasip2/release/gateway.d`) lists every file the build read, the
//! component's own code, the workspace crates it uses and the WIT files its bindings include.
//! Any of those modified after the Wasm (or gone) is a stale build. Files the component does
//! not read (another crate, a README, a test) are not in the list, so a fresh `cargo xtask
//! build`, which leaves an unaffected component untouched, never trips the check. For
//! `Cargo.lock`, whose every edit cargo does not turn into a rebuild, the check asks the cargo
//! question instead: is every registry package the build read still the version the lock names?
//!
//! Each Wasm is checked once per test process: a few hundred `stat`s.
//!
//! [`ALLOW_STALE_ENV`] turns the refusal into a warning, for a tree where someone else's
//! unfinished edit would have to compile first; CI never sets it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, bail};

/// Set (to anything) to run on stale Wasm anyway, with a warning on stderr.
pub const ALLOW_STALE_ENV: &str = "HEALTH_E2E_ALLOW_STALE_WASM";

/// Every `"….wasm"` the manifest at `manifest` names (component sources and dependencies),
/// relative paths taken from the manifest's directory, checked with [`ensure_fresh`].
pub fn ensure_manifest_fresh(manifest: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    // A TOML basic string is what sits between every other pair of quotes on a line.
    let wasm = text.lines().flat_map(|line| line.split('"').skip(1).step_by(2)).filter(|s| s.ends_with(".wasm"));
    for path in wasm {
        ensure_fresh(&dir.join(path))?;
    }
    Ok(())
}

/// Fails with "run `cargo xtask build`" if `wasm` is missing or older than a source it was
/// built from. Wasm without a dep-info file beside it was not built by cargo and is not
/// checked.
pub fn ensure_fresh(wasm: &Path) -> anyhow::Result<()> {
    static FRESH: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    if FRESH.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get_or_insert_default().contains(wasm) {
        return Ok(());
    }
    let shown = wasm.strip_prefix(crate::root()).unwrap_or(wasm).display().to_string();
    let Ok(built) = std::fs::metadata(wasm).and_then(|m| m.modified()) else {
        bail!("{shown} is missing: run `cargo xtask build` (`cargo test` does not build the Wasm components)");
    };
    let dep_info = wasm.with_extension("d");
    let Ok(text) = std::fs::read_to_string(&dep_info) else { return Ok(()) };
    if let Some(why) = stale(&text, built)? {
        let message = format!(
            "{shown} is older than its sources ({why}): run `cargo xtask build` \
             (`cargo test` does not rebuild the Wasm components)"
        );
        if std::env::var_os(ALLOW_STALE_ENV).is_none() {
            bail!(message);
        }
        eprintln!("WARNING ({ALLOW_STALE_ENV} is set): {message}");
    }
    FRESH.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get_or_insert_default().insert(wasm.to_owned());
    Ok(())
}

/// Why an artifact built at `built` from the files of dep-info `text` is stale, if it is.
fn stale(text: &str, built: SystemTime) -> anyhow::Result<Option<String>> {
    let root = crate::root();
    let mut locked: Option<HashSet<String>> = None;
    for path in dep_info_paths(text) {
        if let Ok(relative) = path.strip_prefix(&root) {
            match std::fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(modified) if modified > built => return Ok(Some(format!("{} changed", relative.display()))),
                Ok(_) => {}
                Err(_) => return Ok(Some(format!("{} is gone", relative.display()))),
            }
        } else if let Some(package) = registry_package(&path) {
            let locked = match &mut locked {
                Some(locked) => locked,
                None => locked.insert(locked_packages(&root.join("Cargo.lock"))?),
            };
            if !locked.contains(package) {
                return Ok(Some(format!("Cargo.lock no longer names {package}")));
            }
        }
    }
    Ok(None)
}

/// The files of a Makefile-style dep-info file (`out: a.rs b\ c.rs`, spaces escaped), every line.
fn dep_info_paths(text: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else { continue };
        let mut current = String::new();
        let mut chars = deps.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ' ' => paths.extend((!current.is_empty()).then(|| PathBuf::from(std::mem::take(&mut current)))),
                c => current.push(c),
            }
        }
        paths.extend((!current.is_empty()).then(|| PathBuf::from(current)));
    }
    paths
}

/// `name-version`, the directory of a crates.io source file in cargo's registry
/// (`…/registry/src/<index>/spin-sdk-5.2.0/src/lib.rs`).
fn registry_package(path: &Path) -> Option<&str> {
    let parts: Vec<_> = path.components().collect();
    let marker = [Component::Normal(OsStr::new("registry")), Component::Normal(OsStr::new("src"))];
    let at = parts.windows(2).position(|w| w == marker)?;
    parts.get(at + 3)?.as_os_str().to_str()
}

/// Every `name-version` in `Cargo.lock`.
fn locked_packages(lock: &Path) -> anyhow::Result<HashSet<String>> {
    let text = std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        line.strip_prefix(key).map(|v| v.trim_matches(|c| c == ' ' || c == '=' || c == '"'))
    }
    let mut packages = HashSet::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = value(line, "name =") {
            name = Some(n.to_owned());
        } else if let (Some(version), Some(n)) = (value(line, "version ="), name.take()) {
            packages.insert(format!("{n}-{version}"));
        }
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_paths_unescape_spaces_and_read_every_line() {
        let paths = dep_info_paths("/t/a.wasm: /w/a.rs /w/with\\ space.rs\n\n/t/b: /w/b.rs\n");
        assert_eq!(paths, ["/w/a.rs", "/w/with space.rs", "/w/b.rs"].map(PathBuf::from));
    }

    #[test]
    fn registry_package_is_the_directory_under_the_index() {
        let path = Path::new("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spin-sdk-5.2.0/src/lib.rs");
        assert_eq!(registry_package(path), Some("spin-sdk-5.2.0"));
        assert_eq!(registry_package(Path::new("/work/main/crates/core/src/lib.rs")), None);
    }

    #[test]
    fn a_source_newer_than_the_wasm_or_gone_is_stale_and_an_older_one_is_not() {
        let root = crate::root();
        let source = root.join("tests/support/fresh.rs");
        let modified = std::fs::metadata(&source).and_then(|m| m.modified()).expect("mtime");
        let text = format!("out.wasm: {}\n", source.display());
        assert_eq!(stale(&text, modified).expect("checks"), None);
        let before = modified - std::time::Duration::from_secs(1);
        assert_eq!(stale(&text, before).expect("checks"), Some("tests/support/fresh.rs changed".to_owned()));
        let gone = format!("out.wasm: {}\n", root.join("tests/support/no-such-file.rs").display());
        assert_eq!(stale(&gone, modified).expect("checks"), Some("tests/support/no-such-file.rs is gone".to_owned()));
    }

    #[test]
    fn a_registry_package_the_lock_no_longer_names_is_stale() {
        let text = "out.wasm: /r/registry/src/index/serde-0.0.1/src/lib.rs\n";
        let why = stale(text, SystemTime::now()).expect("checks");
        assert_eq!(why, Some("Cargo.lock no longer names serde-0.0.1".to_owned()));
        let lock = locked_packages(&crate::root().join("Cargo.lock")).expect("lock");
        let serde = lock.iter().find(|p| p.starts_with("serde-1.")).expect("serde is locked");
        let text = format!("out.wasm: /r/registry/src/index/{serde}/src/lib.rs\n");
        assert_eq!(stale(&text, SystemTime::now()).expect("checks"), None);
    }
}
