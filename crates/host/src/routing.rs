//! Spin's HTTP trigger routing: exact routes and `/...` wildcards, most specific first (an exact
//! match beats any wildcard; a longer wildcard prefix beats a shorter one). Private routes are
//! not in the table at all, so nothing from outside can reach them.

/// A matched route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub component: String,
    /// The route as written in the manifest, e.g. `/api/...`.
    pub raw_route: String,
    /// The route without the wildcard, e.g. `/api`.
    pub base_route: String,
    /// The part of the path after `base_route` (empty for exact routes).
    pub path_info: String,
}

#[derive(Debug, Clone)]
struct Entry {
    component: String,
    raw: String,
    prefix: String,
    wildcard: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    entries: Vec<Entry>,
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() }
}

impl Router {
    pub fn add(&mut self, route: &str, component: &str) -> anyhow::Result<()> {
        anyhow::ensure!(route.starts_with('/'), "route {route:?} for component {component:?} must start with '/'");
        let (prefix, wildcard) = match route.strip_suffix("/...") {
            Some(prefix) => (normalize(prefix), true),
            None if route == "/..." => ("/".to_owned(), true),
            None => (normalize(route), false),
        };
        if let Some(existing) = self.entries.iter().find(|e| e.prefix == prefix && e.wildcard == wildcard) {
            anyhow::bail!("duplicate route {route:?}: components {:?} and {component:?}", existing.component);
        }
        self.entries.push(Entry { component: component.to_owned(), raw: route.to_owned(), prefix, wildcard });
        Ok(())
    }

    /// The most specific route for `path` (no query string).
    pub fn route(&self, path: &str) -> Option<Match> {
        let path = normalize(path);
        let exact = self.entries.iter().find(|e| !e.wildcard && e.prefix == path);
        let best = exact.or_else(|| {
            self.entries
                .iter()
                .filter(|e| {
                    e.wildcard && (e.prefix == "/" || path == e.prefix || path.starts_with(&format!("{}/", e.prefix)))
                })
                .max_by_key(|e| e.prefix.len())
        })?;
        let path_info = if best.wildcard && best.prefix != "/" {
            path[best.prefix.len()..].to_owned()
        } else if best.wildcard {
            path.clone()
        } else {
            String::new()
        };
        Some(Match {
            component: best.component.clone(),
            raw_route: best.raw.clone(),
            base_route: if best.prefix == "/" && best.wildcard { String::new() } else { best.prefix.clone() },
            path_info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut r = Router::default();
        r.add("/api/...", "gateway").unwrap();
        r.add("/api/auth/validate", "auth").unwrap();
        r.add("/api/admin/...", "admin").unwrap();
        r.add("/hello", "hello").unwrap();
        r
    }

    #[test]
    fn exact_beats_wildcard_and_longer_prefix_wins() {
        let r = router();
        assert_eq!(r.route("/api/auth/validate").unwrap().component, "auth");
        assert_eq!(r.route("/api/auth/validate/x").unwrap().component, "gateway");
        assert_eq!(r.route("/api/admin/audit").unwrap().component, "admin");
        assert_eq!(r.route("/api/patients/1").unwrap().component, "gateway");
        assert_eq!(r.route("/api").unwrap().component, "gateway");
    }

    #[test]
    fn wildcard_matches_whole_segments_only() {
        let r = router();
        assert!(r.route("/apix").is_none());
        assert!(r.route("/hello/x").is_none());
        assert!(r.route("/").is_none());
    }

    #[test]
    fn reports_path_info_and_routes() {
        let m = router().route("/api/patients/1").unwrap();
        assert_eq!(
            (m.raw_route.as_str(), m.base_route.as_str(), m.path_info.as_str()),
            ("/api/...", "/api", "/patients/1")
        );
        assert_eq!(router().route("/hello").unwrap().path_info, "");
    }

    #[test]
    fn refuses_duplicates() {
        let mut r = router();
        assert!(r.add("/hello", "other").is_err());
    }
}
