//! The subset of Spin's application manifest (v2) the host understands. Unknown fields are
//! ignored, as Spin ignores fields of triggers and features it does not run.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Variable {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    pub route: Route,
    pub component: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Route {
    Path(String),
    Private { private: bool },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Component {
    pub source: String,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub dependencies: BTreeMap<String, Dependency>,
    pub build: Option<Build>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dependency {
    pub path: String,
    pub export: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Build {
    pub command: String,
    pub workdir: Option<String>,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading manifest {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing manifest {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let manifest: Manifest = toml::from_str(text)?;
        if manifest.spin_manifest_version != 2 {
            bail!("unsupported spin_manifest_version {} (only 2)", manifest.spin_manifest_version);
        }
        for trigger in &manifest.trigger.http {
            if !manifest.component.contains_key(&trigger.component) {
                bail!("trigger references unknown component {:?}", trigger.component);
            }
            if let Route::Private { private: false } = trigger.route {
                bail!("route for component {:?} must be a path or {{ private = true }}", trigger.component);
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_components_and_variables() {
        let m = Manifest::parse(
            r#"spin_manifest_version = 2
            [application]
            name = "a"
            [variables]
            k = { required = true, secret = true }
            [[trigger.http]]
            route = "/x/..."
            component = "c"
            [[trigger.http]]
            route = { private = true }
            component = "c"
            [component.c]
            source = "c.wasm"
            key_value_stores = ["s"]
            [component.c.variables]
            k = "{{ k }}"
            "#,
        )
        .unwrap();
        assert_eq!(m.trigger.http[0].route, Route::Path("/x/...".into()));
        assert_eq!(m.trigger.http[1].route, Route::Private { private: true });
        assert!(m.variables["k"].required && m.variables["k"].secret);
        assert_eq!(m.component["c"].key_value_stores, ["s"]);
    }

    #[test]
    fn refuses_unknown_components_and_versions() {
        let bad = "spin_manifest_version = 2\n[application]\nname='a'\n[[trigger.http]]\nroute='/'\ncomponent='nope'\n";
        assert!(Manifest::parse(bad).unwrap_err().to_string().contains("nope"));
        assert!(Manifest::parse("spin_manifest_version = 1\n[application]\nname='a'\n").is_err());
    }
}
