//! `allowed_outbound_hosts` matching, as Spin applies it to outbound HTTP: an entry
//! `scheme://host[:port]` where scheme, host and port may be `*` and host may be `*.suffix`.
//! Without a port, the scheme's default port is meant.
//!
//! An entry may use application variables (`"{{ alert_webhook_host }}"`), resolved as Spin
//! 4.0.2 resolves them (`crates/outbound-networking-config/src/allowed_hosts.rs`,
//! `crates/loader/src/local.rs`): at load, a template whose variables all have defaults must
//! give a valid entry with those defaults, else the app does not load; when the component runs,
//! the template is resolved with the variables' values, and if any entry then does not resolve
//! or parse, every outbound request of that component is denied (Spin's allowed-hosts check
//! fails as a whole, and a failed check denies). An empty value is such a failure in 4.0.2.

use anyhow::{Context, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: String,
    host: String,
    port: Option<String>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    pub fn parse(entry: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = entry
            .split_once("://")
            .with_context(|| format!("allowed_outbound_hosts entry {entry:?} needs a scheme"))?;
        if rest.contains('/') && rest.trim_end_matches('/').contains('/') {
            bail!("allowed_outbound_hosts entry {entry:?} must not contain a path");
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.to_owned())),
            None => (rest, None),
        };
        if host.is_empty() {
            bail!("allowed_outbound_hosts entry {entry:?} has no host");
        }
        Ok(Self { scheme: scheme.to_owned(), host: host.to_ascii_lowercase(), port })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let host_ok = self.host == "*"
            || self.host == host
            || self.host.strip_prefix("*.").is_some_and(|suffix| host.ends_with(&format!(".{suffix}")));
        let port = port.or_else(|| default_port(scheme));
        let port_ok = match &self.port {
            Some(p) if p == "*" => true,
            Some(p) => port.is_some_and(|actual| p.parse::<u16>().ok() == Some(actual)),
            None => port.is_some() && port == default_port(if self.scheme == "*" { scheme } else { &self.scheme }),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's `allowed_outbound_hosts` with its templates resolved: the entries, or `None`
/// when one did not resolve (every request denied, as in Spin). `Err` is a load error.
pub fn resolve(
    entries: &[String],
    declared: &std::collections::BTreeMap<String, crate::manifest::Variable>,
    values: &std::collections::HashMap<String, String>,
) -> anyhow::Result<Option<Vec<AllowedHost>>> {
    let mut resolved = Vec::new();
    let mut unresolved = None;
    for entry in entries {
        if !entry.contains("{{") {
            resolved.push(AllowedHost::parse(entry)?);
            continue;
        }
        // An unclosed `{{` is a load error, as Spin's `Template::new` makes it; a name that is
        // not a variable's is not (it fails to resolve, below, and denies everything).
        check_template(entry)?;
        let defaults: std::collections::HashMap<String, String> =
            declared.iter().filter_map(|(name, v)| Some((name.clone(), v.default.clone()?))).collect();
        // Validated with the defaults only when they resolve it (Spin: "we're missing a default
        // value so we can't validate further").
        if let Ok(with_defaults) = crate::variables::expand(entry, &defaults) {
            AllowedHost::parse(&with_defaults).with_context(|| {
                format!("using default variable value(s) with template {entry:?} results in invalid config {with_defaults:?}")
            })?;
        }
        match crate::variables::expand(entry, values).and_then(|value| AllowedHost::parse(&value)) {
            Ok(host) => resolved.push(host),
            Err(e) => unresolved = Some(format!("{entry:?}: {e:#}")),
        }
    }
    match unresolved {
        None => Ok(Some(resolved)),
        Some(why) => {
            tracing::error!("allowed_outbound_hosts entry {why}: every outbound request of the component is denied");
            Ok(None)
        }
    }
}

/// Every `{{` of `entry` closed by a `}}` (Spin's "unmatched '{{' in template").
fn check_template(entry: &str) -> anyhow::Result<()> {
    let mut rest = entry;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").with_context(|| format!("unmatched '{{{{' in template {entry:?}"))?;
        rest = &rest[start + end + 2..];
    }
    Ok(())
}

pub fn allowed(list: &[AllowedHost], scheme: &str, host: &str, port: Option<u16>) -> bool {
    list.iter().any(|a| a.allows(scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_wildcard_and_ports() {
        let a = AllowedHost::parse("http://patient.spin.internal").unwrap();
        assert!(a.allows("http", "patient.spin.internal", None));
        assert!(!a.allows("https", "patient.spin.internal", None));
        assert!(!a.allows("http", "doctor.spin.internal", None));
        assert!(!a.allows("http", "patient.spin.internal", Some(8080)));
        let w = AllowedHost::parse("http://*.spin.internal").unwrap();
        assert!(w.allows("http", "lab.spin.internal", None));
        assert!(!w.allows("http", "spin.internal.evil.com", None));
        let p = AllowedHost::parse("https://idp.example.com:8443").unwrap();
        assert!(p.allows("https", "idp.example.com", Some(8443)));
        assert!(!p.allows("https", "idp.example.com", None));
        assert!(AllowedHost::parse("*://*:*").unwrap().allows("http", "anything", Some(1)));
    }

    #[test]
    fn templates_resolve_with_the_values_and_deny_everything_when_they_do_not_parse() {
        use crate::manifest::Variable;
        let declared = std::collections::BTreeMap::from([
            (
                "hook".to_owned(),
                Variable { default: Some("http://gateway.spin.internal".into()), ..Variable::default() },
            ),
            ("bare".to_owned(), Variable { required: true, ..Variable::default() }),
        ]);
        let values = |hook: &str| std::collections::HashMap::from([("hook".to_owned(), hook.to_owned())]);
        let entries = ["http://a.spin.internal".to_owned(), "{{ hook }}".to_owned()];
        let hosts = resolve(&entries, &declared, &values("https://hooks.example.org:8443")).unwrap().unwrap();
        assert!(allowed(&hosts, "https", "hooks.example.org", Some(8443)));
        assert!(!allowed(&hosts, "https", "hooks.example.org", None));
        // A value that is no entry (an empty one included) denies every request, the literal ones too.
        assert_eq!(resolve(&entries, &declared, &values("")).unwrap(), None);
        assert_eq!(resolve(&entries, &declared, &values("hooks.example.org")).unwrap(), None);
        // A default that is no entry is a load error; a variable without a default is not checked at load.
        let bad_default = std::collections::BTreeMap::from([(
            "hook".to_owned(),
            Variable { default: Some("no-scheme".into()), ..Variable::default() },
        )]);
        assert!(resolve(&entries, &bad_default, &values("http://x")).is_err());
        assert!(resolve(&["http://{{ hook".to_owned()], &declared, &values("x")).is_err(), "unmatched");
        assert_eq!(resolve(&["{{ Hook }}".to_owned()], &declared, &values("x")).unwrap(), None, "no such variable");
        let bare = ["{{ bare }}".to_owned()];
        let no_value = std::collections::HashMap::new();
        assert_eq!(resolve(&bare, &declared, &no_value).unwrap(), None);
    }

    #[test]
    fn refuses_malformed_entries() {
        assert!(AllowedHost::parse("example.com").is_err());
        assert!(AllowedHost::parse("http://example.com/path").is_err());
    }
}
