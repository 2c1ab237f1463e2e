//! `allowed_outbound_hosts` matching, as Spin applies it to outbound HTTP: an entry
//! `scheme://host[:port]` where scheme, host and port may be `*` and host may be `*.suffix`.
//! Without a port, the scheme's default port is meant.

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
    fn refuses_malformed_entries() {
        assert!(AllowedHost::parse("example.com").is_err());
        assert!(AllowedHost::parse("http://example.com/path").is_err());
    }
}
