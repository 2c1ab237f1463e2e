//! A real OpenID provider for the federation suite: `tests/oidc-provider/server.mjs`, the npm
//! package `oidc-provider` (certified) serving two providers (`a` and `b`) on one loopback
//! port, started as a child process and ended when dropped (or when this process ends: the
//! server exits once its stdin closes). Its dependencies are installed on first use (and when
//! the lock file is newer than the installation) with `npm ci` from the committed
//! `package-lock.json`.
//!
//! The tokens come from oidc-provider itself (its `IdToken` and `AccessToken` models); the
//! negative cases no provider issues are forged by the server with the provider's own keys.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Provider {
    child: Child,
    pub port: u16,
}

fn dir() -> PathBuf {
    crate::root().join("tests/oidc-provider")
}

/// Whether `node` and `npm` run here.
pub fn available() -> bool {
    let runs = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    runs("node") && runs("npm")
}

impl Provider {
    /// Installs the server's dependencies if they are missing, starts it and waits for its port.
    pub fn start() -> anyhow::Result<Self> {
        let dir = dir();
        // npm's record of what it installed, older than the lock file: install again.
        let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let installed = modified(dir.join("node_modules/.package-lock.json"));
        if installed.is_none() || installed < modified(dir.join("package-lock.json")) {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .context("running npm ci in tests/oidc-provider")?;
            anyhow::ensure!(status.success(), "npm ci in tests/oidc-provider failed: {status}");
        }
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node server.mjs")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading the server's port")?;
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the provider said {line:?}, not its port"))?;
        Ok(Self { child, port })
    }

    /// The scheme, host and port the app must be allowed to reach.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The issuer of provider `name` (`a` or `b`).
    pub fn issuer(&self, name: &str) -> String {
        format!("{}/{name}", self.origin())
    }

    /// POSTs `body` to the server's control API (`/control/...`) and returns its JSON answer.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.expect("provider connects");
        let request = format!(
            "POST /control/{path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("provider request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("provider answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200"), "control {path}: {answer}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("control {path} answered {body:?}: {e}"))
    }

    /// A token oidc-provider issues: `kind` `id_token` or `access_token` (a JWT, RFC 9068), from
    /// provider `name` to `client`, for `sub` with `claims` besides.
    pub async fn mint(&self, name: &str, client: &str, kind: &str, sub: &str, claims: Value) -> String {
        let body = json!({ "provider": name, "client": client, "kind": kind, "sub": sub, "claims": claims });
        token(self.control("mint", body).await)
    }

    /// A token signed with provider `name`'s current key material, as `alg` (`RS256`, `none`,
    /// `HS256` keyed with the public key's PEM), with `claims` overriding the defaults and
    /// `kid` overriding the key's.
    pub async fn forge(
        &self,
        name: &str,
        client: &str,
        alg: &str,
        sub: &str,
        claims: Value,
        kid: Option<&str>,
    ) -> String {
        let body = json!({ "provider": name, "client": client, "alg": alg, "sub": sub, "claims": claims, "kid": kid });
        token(self.control("forge", body).await)
    }

    /// [`Self::forge`] with every option of the control API in `body` (`provider`, `client`,
    /// `alg`, `sub`, `claims` where null leaves a claim out, `kid`, `typ` for the header, and
    /// `keyOf`: sign with that provider's key under this one's `kid`).
    pub async fn forge_with(&self, body: Value) -> String {
        token(self.control("forge", body).await)
    }

    /// How often provider `name`'s JWK Set was asked for (answered or not).
    pub async fn jwks_fetches(&self, name: &str) -> i64 {
        self.control("stats", json!({})).await[name]["jwks"].as_i64().expect("jwks count")
    }
}

/// The cookies a browser keeps for the provider (by name; the provider's paths are not told
/// apart: one browser, one sign-in at a time).
#[derive(Default)]
pub struct Jar(std::collections::BTreeMap<String, String>);

impl Provider {
    /// What a browser does at the provider: `method` `target` (a path and query, or an absolute
    /// URL of the provider) with the jar's cookies and a form `body`, keeping the cookies it
    /// sets; the status and the `Location`.
    pub async fn browse(&self, method: &str, target: &str, jar: &mut Jar, body: &str) -> (u16, Option<String>) {
        let path = target.strip_prefix(&self.origin()).unwrap_or(target);
        let cookies: Vec<String> = jar.0.iter().map(|(name, value)| format!("{name}={value}")).collect();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.expect("provider connects");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncookie: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.port,
            cookies.join("; "),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("provider request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("provider answer");
        let answer = String::from_utf8_lossy(&answer);
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut location = None;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            match name.trim().to_ascii_lowercase().as_str() {
                "location" => location = Some(value.trim().to_owned()),
                "set-cookie" => {
                    if let Some((cookie, value)) = value.trim().split(';').next().and_then(|c| c.split_once('=')) {
                        jar.0.insert(cookie.to_owned(), value.to_owned());
                    }
                }
                _ => {}
            }
        }
        if status >= 400 {
            panic!("{method} {path} at the provider: {answer}");
        }
        (status, location)
    }
}

fn token(answer: Value) -> String {
    answer["token"].as_str().expect("token").to_owned()
}

impl Drop for Provider {
    fn drop(&mut self) {
        // Ours to end: the child this value started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
