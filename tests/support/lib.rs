//! Shared helpers for the end-to-end tests: the real `spin.toml` loaded with test secrets and a
//! throwaway state directory, on the project's host or on real Spin ([`runtime`]), and a
//! one-line way to send it requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use health_core::{Component, DEMO_TENANT, Link, SecretKey};
use health_host::LoadOptions;
use health_identity::totp;

pub mod backup;
pub mod fresh;
pub mod oidc;
pub mod otlp;
pub mod runtime;
pub use runtime::{Runtime, Target};

/// Test secrets (never used outside tests).
pub const MASTER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const OPERATOR_TOKEN: &str = "operator-test-token";

/// The test key of one caller → callee link: a different one per link, so a test can attest
/// under another link's key than the one it calls on.
pub fn context_key(link: Link) -> SecretKey {
    SecretKey::from_bytes(health_core::derive(&SecretKey::from_bytes([0x22; 32]), link.key_variable()))
}

/// The `phi_wrapping_key` of a deployment whose `master_key` is `master_key` (hex): the key the
/// role services derived from it before they stopped holding it, what an upgrading operator
/// sets (`healthctl secrets phi-wrapping-key`).
pub fn phi_wrapping_key(master_key: &str) -> String {
    let master = SecretKey::from_hex(master_key).expect("master key is 64 hex characters");
    hex(health_core::phi::wrapping_key(&master).expose())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Demo users and their documented passwords.
pub const ALICE: (&str, &str) = ("alice", "alice-demo-2026");
pub const BOB: (&str, &str) = ("bob", "bob-demo-2026");
pub const DR_GREY: (&str, &str) = ("dr-grey", "grey-demo-2026");
pub const LAB: (&str, &str) = ("lab-north", "lab-demo-2026");
pub const ADMIN: (&str, &str) = ("admin", "admin-demo-2026");
/// The demo insurer, a confidential client (`client_credentials`).
pub const ACME: (&str, &str) = ("acme-health", "acme-health-demo-secret-2026");

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Every secret variable by name: `master_key`, the `phi_wrapping_key` derived from it (as an
/// upgraded deployment has it), each link's `context_key_*` and the operator token's hash.
pub fn secret_variables(master_key: &str) -> HashMap<String, String> {
    let mut secrets = HashMap::from([
        ("master_key".to_owned(), master_key.to_owned()),
        ("phi_wrapping_key".to_owned(), phi_wrapping_key(master_key)),
        ("operator_token_hash".to_owned(), health_core::sha256_hex(OPERATOR_TOKEN)),
    ]);
    for link in Link::ALL {
        secrets.insert(link.key_variable().to_owned(), hex(context_key(link).expose()));
    }
    secrets
}

/// The variables besides the secrets that every suite and the benchmarks run with: the demo
/// tenant on. `spin.toml` defaults `demo_tenant` to `false`, so that a production deployment
/// carries no published passwords; the tests rely on the demo seed.
pub const DEMO_VARIABLES: [(&str, &str); 1] = [("demo_tenant", "true")];

/// Rate limits far above what any suite sends from its one loopback address, so the limiter
/// counts every request (its cost is in every run) without refusing any; `tests/e2e/ratelimit.rs`
/// sets its own.
pub const HARNESS_RATE_LIMITS: [(&str, &str); 4] = [
    ("rate_limit_login", "100000/60"),
    ("rate_limit_read", "1000000/60"),
    ("rate_limit_write", "1000000/60"),
    ("rate_limit_admin", "1000000/60"),
];

/// [`secret_variables`], [`DEMO_VARIABLES`] and [`HARNESS_RATE_LIMITS`] as `SPIN_VARIABLE_*`,
/// for either runtime.
pub fn secrets(master_key: &str) -> HashMap<String, String> {
    let demo = DEMO_VARIABLES
        .iter()
        .chain(&HARNESS_RATE_LIMITS)
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()));
    secret_variables(master_key)
        .into_iter()
        .chain(demo)
        .map(|(name, value)| (format!("SPIN_VARIABLE_{}", name.to_uppercase()), value))
        .collect()
}

/// The application with its state in a temporary directory.
pub struct TestApp {
    pub app: Target,
    pub state: tempfile::TempDir,
    totp: std::sync::Mutex<Enrolled>,
}

/// TOTP secrets of the users an app enrolled, by tenant and username, and the last step each used.
type Enrolled = HashMap<(String, String), (Vec<u8>, i64)>;

/// How long before the next TOTP step the harness stops using a code of the step before now
/// (which the server accepts until then): more than a login can take on a loaded machine.
const PAST_STEP_MARGIN_SECS: i64 = 10;

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    i64::try_from(secs).expect("time")
}

impl TestApp {
    /// Loads the real `spin.toml`; `prepare` may seed the state directory first.
    pub fn start(prepare: impl FnOnce(&Path)) -> anyhow::Result<Self> {
        Self::start_with(prepare, None, &[], Runtime::selected())
    }

    /// Loads the real `spin.toml` on `runtime`, whatever `HEALTH_E2E_RUNTIME` says.
    pub fn start_on(runtime: Runtime) -> anyhow::Result<Self> {
        Self::start_with(|_| {}, None, &[], runtime)
    }

    /// Loads the real `spin.toml` with some variables set (`SPIN_VARIABLE_*` style names
    /// without the prefix, e.g. `("lockout_duration_secs", "2")`), as an operator would.
    pub fn start_with_variables(variables: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(|_| {}, None, variables, Runtime::selected())
    }

    /// [`Self::start_with_variables`] with environment variables besides (`OTEL_*`, say), as an
    /// operator would give them to `spin up` or the host.
    pub fn start_with_env(variables: &[(&str, &str)], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_options(|_| {}, None, variables, env, Runtime::selected())
    }

    /// The real `spin.toml` plus the host's probe component at `/probe/...`, allowed to call
    /// `jwks.spin.internal`: `/probe/call?url=http://jwks.spin.internal/...` forwards method,
    /// body and `x-health-*` headers, as a chained component would send them.
    pub fn start_with_probe() -> anyhow::Result<Self> {
        let release = root().join("target/wasm32-wasip2/release");
        let probe = format!(
            r#"
[[trigger.http]]
route = "/probe/..."
component = "probe"

[component.probe]
source = "{}"
allowed_outbound_hosts = ["http://jwks.spin.internal"]
[component.probe.dependencies]
"health:platform/authorizer@0.1.0" = {{ path = "{}" }}
"#,
            release.join("host_probe.wasm").display(),
            release.join("policy.wasm").display()
        );
        Self::start_with(|_| {}, Some(probe), &[], Runtime::selected())
    }

    fn start_with(
        prepare: impl FnOnce(&Path),
        extra_manifest: Option<String>,
        variables: &[(&str, &str)],
        runtime: Runtime,
    ) -> anyhow::Result<Self> {
        Self::start_with_options(prepare, extra_manifest, variables, &[], runtime)
    }

    fn start_with_options(
        prepare: impl FnOnce(&Path),
        extra_manifest: Option<String>,
        variables: &[(&str, &str)],
        raw_env: &[(&str, &str)],
        runtime: Runtime,
    ) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        // The project's runtime config, with every store moved into the temporary directory.
        let config = std::fs::read_to_string(root().join("runtime-config.toml"))?
            .replace("path = \".spin/", &format!("path = \"{}/", state.path().display()));
        let runtime_path = state.path().join("runtime-config.toml");
        std::fs::write(&runtime_path, config)?;
        prepare(state.path());
        let mut env = secrets(MASTER_KEY);
        for (name, value) in variables {
            env.insert(format!("SPIN_VARIABLE_{}", name.to_uppercase()), (*value).to_owned());
        }
        env.extend(raw_env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        let manifest = match extra_manifest {
            None => root().join("spin.toml"),
            Some(extra) => {
                // Same manifest, relative paths made absolute, in the state directory.
                let base = std::fs::read_to_string(root().join("spin.toml"))?
                    .replace("\"target/", &format!("\"{}/target/", root().display()));
                let path = state.path().join("spin.toml");
                std::fs::write(&path, base + &extra)?;
                path
            }
        };
        let options =
            LoadOptions { manifest, runtime_config: Some(runtime_path), state_dir: state.path().join(".spin"), env };
        Ok(Self { app: Target::load_on(runtime, &options)?, state, totp: std::sync::Mutex::default() })
    }

    /// Sends a request; a host error fails the test with the guests' output.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        send_from(&self.app, health_host::DEFAULT_CLIENT, method, path, headers, body).await
    }

    pub async fn login(&self, user: (&str, &str)) -> Reply {
        self.login_in(DEMO_TENANT, user).await
    }

    /// `POST /auth/login` of `tenant`'s user.
    pub async fn login_in(&self, tenant: &str, (username, password): (&str, &str)) -> Reply {
        let body = serde_json::json!({ "tenant": tenant, "username": username, "password": password });
        self.send("POST", "/auth/login", &[("content-type", "application/json")], &body.to_string()).await
    }

    /// The same manifest and state directory loaded again with another `master_key` (and the
    /// PHI wrapping key derived from it): what a thief holding a copy of the stores, but not the
    /// key, could run.
    pub fn reopen_with_master_key(&self, master_key: &str) -> anyhow::Result<Target> {
        self.reopen_with(secrets(master_key), ".spin-reopened")
    }

    /// The same manifest and state directory loaded again with the variables `env`
    /// (`SPIN_VARIABLE_*`), Spin's own state in `state_dir` under the state directory.
    pub fn reopen_with(&self, env: HashMap<String, String>, state_dir: &str) -> anyhow::Result<Target> {
        Target::load(&LoadOptions {
            manifest: root().join("spin.toml"),
            runtime_config: Some(self.state.path().join("runtime-config.toml")),
            // Its own state directory for what Spin keeps there (logs); the stores are the
            // runtime config's files, shared with `self`.
            state_dir: self.state.path().join(state_dir),
            env,
        })
    }

    /// A confidential client's access token (`client_credentials` with HTTP Basic), failing the
    /// test otherwise: for the demo insurer, a one-time nested JWE.
    pub async fn client_token(&self, (id, secret): (&str, &str)) -> String {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let headers =
            [("content-type", "application/x-www-form-urlencoded"), ("authorization", &format!("Basic {basic}"))];
        let reply = self.send("POST", "/auth/token", &headers, "grant_type=client_credentials").await;
        assert_eq!(reply.status, 200, "client_credentials for {id}: {}", reply.body);
        reply.json()["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Logs in and returns the access token, failing the test otherwise. Users whose role
    /// needs MFA are enrolled on first use, as a person with an authenticator app would.
    pub async fn token(&self, user: (&str, &str)) -> String {
        self.token_in(DEMO_TENANT, user).await
    }

    /// [`Self::token`] for a user of `tenant`.
    pub async fn token_in(&self, tenant: &str, user: (&str, &str)) -> String {
        self.tokens_in(tenant, user).await["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Logs in (enrolling TOTP if the role needs it) and returns the token response.
    pub async fn tokens(&self, user: (&str, &str)) -> serde_json::Value {
        self.tokens_in(DEMO_TENANT, user).await
    }

    /// [`Self::tokens`] for a user of `tenant`.
    pub async fn tokens_in(&self, tenant: &str, user: (&str, &str)) -> serde_json::Value {
        let mut reply = self.login_in(tenant, user).await;
        if reply.status == 403 && reply.body.contains("mfa-enrollment-required") {
            self.enroll_totp_in(tenant, user).await;
        }
        if self.totp.lock().expect("totp").contains_key(&(tenant.to_owned(), user.0.to_owned())) {
            let otp = self.next_otp_in(tenant, user.0).await;
            reply = self.login_with_otp_in(tenant, user, &otp).await;
        }
        assert_eq!(reply.status, 200, "login {}: {}\n{}", user.0, reply.body, self.app.guest_output().join("\n"));
        reply.json()
    }

    pub async fn login_with_otp(&self, user: (&str, &str), otp: &str) -> Reply {
        self.login_with_otp_in(DEMO_TENANT, user, otp).await
    }

    async fn login_with_otp_in(&self, tenant: &str, (username, password): (&str, &str), otp: &str) -> Reply {
        let body = serde_json::json!({ "tenant": tenant, "username": username, "password": password, "otp": otp });
        self.send("POST", "/auth/login", &[("content-type", "application/json")], &body.to_string()).await
    }

    /// Enrols `user` in TOTP (enroll, then confirm with the current code) and remembers the
    /// secret; returns the enroll response.
    pub async fn enroll_totp(&self, user: (&str, &str)) -> serde_json::Value {
        self.enroll_totp_in(DEMO_TENANT, user).await
    }

    async fn enroll_totp_in(&self, tenant: &str, (username, password): (&str, &str)) -> serde_json::Value {
        let body = serde_json::json!({ "tenant": tenant, "username": username, "password": password });
        let json = [("content-type", "application/json")];
        let enrolled = self.send("POST", "/auth/mfa/enroll", &json, &body.to_string()).await;
        assert_eq!(enrolled.status, 200, "enroll {username}: {}", enrolled.body);
        let enrolled = enrolled.json();
        let secret = totp::base32_decode(enrolled["secret"].as_str().expect("secret")).expect("base32");
        self.totp.lock().expect("totp").insert((tenant.to_owned(), username.to_owned()), (secret, i64::MIN));
        let otp = self.next_otp_in(tenant, username).await;
        let mut confirm = body;
        confirm["otp"] = otp.into();
        let confirmed = self.send("POST", "/auth/mfa/confirm", &json, &confirm.to_string()).await;
        assert_eq!(confirmed.status, 200, "confirm {username}: {}", confirmed.body);
        enrolled
    }

    /// A code for a step this user has not used yet, waiting for the clock when the window
    /// (one step either side of now, the one before only while the next is 10 s off or more)
    /// is used up.
    pub async fn next_otp(&self, username: &str) -> String {
        self.next_otp_in(DEMO_TENANT, username).await
    }

    async fn next_otp_in(&self, tenant: &str, username: &str) -> String {
        let key = (tenant.to_owned(), username.to_owned());
        loop {
            let now = unix_now();
            let now_step = totp::step_at(now);
            // The step before now is in the server's window too, until the clock reaches the
            // next step: used only while that is far enough off for the request to arrive first,
            // it gives three logins per step instead of two before a wait.
            let far_from_next_step = (now_step + 1) * totp::STEP_SECS - now >= PAST_STEP_MARGIN_SECS;
            let earliest = if far_from_next_step { now_step - 1 } else { now_step };
            {
                let mut enrolled = self.totp.lock().expect("totp");
                let (secret, last) = enrolled.get_mut(&key).expect("enrolled user");
                let step = (*last + 1).max(earliest);
                if step <= now_step + 1 {
                    *last = step;
                    return totp::code(secret, step);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// The first column of `sql` run against the database file `db` of the state directory.
    pub fn query_strings(&self, db: &str, sql: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.state.path().join(db)).expect("database opens");
        let mut stmt = conn.prepare(sql).expect("query prepares");
        stmt.query_map([], |r| r.get::<_, String>(0)).expect("query runs").collect::<Result<_, _>>().expect("rows read")
    }

    /// A tenant's (first stored) private signing key and its kid, unsealed from the
    /// private-keys store with the test master key: what an insider with the key would have.
    pub fn tenant_private_key(&self, tenant: &str) -> (String, rsa::RsaPrivateKey) {
        use rsa::pkcs8::DecodePrivateKey;
        let conn = rusqlite::Connection::open(self.state.path().join("private-keys.db")).expect("database opens");
        let (name, sealed): (String, Vec<u8>) = conn
            .query_row(
                "SELECT key, value FROM spin_key_value WHERE store = 'private-keys' AND key LIKE ?1 ORDER BY rowid LIMIT 1",
                [format!("{tenant}/%")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("a private key");
        let master = health_core::SecretKey::from_hex(MASTER_KEY).expect("master key");
        let der = master.open(name.as_bytes(), std::str::from_utf8(&sealed).expect("sealed text")).expect("unseals");
        let kid = name.split_once('/').expect("tenant/kid").1.to_owned();
        (kid, rsa::RsaPrivateKey::from_pkcs8_der(&der).expect("PKCS#8 key"))
    }

    /// A tenant's private key `kid` for `alg`, unsealed like [`Self::tenant_private_key`].
    pub fn private_key(&self, tenant: &str, kid: &str, alg: health_jose::Algorithm) -> health_jose::PrivateKey {
        let conn = rusqlite::Connection::open(self.state.path().join("private-keys.db")).expect("database opens");
        let name = format!("{tenant}/{kid}");
        let sealed: Vec<u8> = conn
            .query_row("SELECT value FROM spin_key_value WHERE store = 'private-keys' AND key = ?1", [&name], |r| {
                r.get(0)
            })
            .expect("the private key");
        let master = health_core::SecretKey::from_hex(MASTER_KEY).expect("master key");
        let der = master.open(name.as_bytes(), std::str::from_utf8(&sealed).expect("sealed text")).expect("unseals");
        health_jose::PrivateKey::from_pkcs8_der(alg, &der).expect("PKCS#8 key")
    }

    /// Sends `body` to `http://{service}.spin.internal{path}` through the probe (see
    /// [`Self::start_with_probe`]) with a caller context for `caller` attested as the component
    /// that serves every endpoint of `service` would: `auth` for `jwks`, else the gateway.
    /// Returns the chained service's reply.
    pub async fn chained(
        &self,
        service: &str,
        method: &str,
        path: &str,
        caller: Option<&health_core::Caller>,
        body: &str,
    ) -> Reply {
        let from = if service == "jwks" { Component::Auth } else { Component::Gateway };
        self.chained_as(from, service, method, path, caller, body).await
    }

    /// [`Self::chained`] with the context attested by `from` under the test key of its link to
    /// `service`: what that component, or whoever took it over, can send.
    pub async fn chained_as(
        &self,
        from: Component,
        service: &str,
        method: &str,
        path: &str,
        caller: Option<&health_core::Caller>,
        body: &str,
    ) -> Reply {
        use health_core::context::{CALLER_HEADER, FROM_HEADER, MAC_HEADER, PATH_HEADER, TIMESTAMP_HEADER, attest};
        let to = Component::parse(service).expect("a component");
        let link = Link::new(from, to).unwrap_or_else(|| panic!("no link {from:?} -> {to:?}"));
        let now = unix_now();
        let url = format!("/probe/call?url=http://{service}.spin.internal{path}");
        // The path in the header a role service reads it from (as the gateway forwards it); the
        // other receivers go by the URL and ignore it.
        let mut headers =
            vec![("content-type".to_owned(), "application/json".to_owned()), (PATH_HEADER.to_owned(), path.to_owned())];
        if let Some(caller) = caller {
            let att = attest(&context_key(link), link, method, path, body.as_bytes(), caller, now);
            headers.extend([
                (FROM_HEADER.to_owned(), att.from),
                (CALLER_HEADER.to_owned(), att.caller),
                (TIMESTAMP_HEADER.to_owned(), att.timestamp),
                (MAC_HEADER.to_owned(), att.mac),
            ]);
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let reply = self.send(method, &url, &headers, body).await;
        assert_eq!(reply.status, 200, "probe failed: {}", reply.body);
        let (status, body) = reply.body.split_once(' ').expect("status and body");
        Reply { status: status.parse().expect("status"), headers: http::HeaderMap::new(), body: body.to_owned() }
    }

    pub async fn get_with(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, &[("authorization", &format!("Bearer {token}"))], "").await
    }

    /// `method path` as an API client sends it: `token` as the bearer and `body`, if any, as
    /// JSON.
    pub async fn send_as(&self, method: &str, path: &str, token: &str, body: Option<&serde_json::Value>) -> Reply {
        let auth = format!("Bearer {token}");
        match body {
            Some(body) => {
                let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
                self.send(method, path, &headers, &body.to_string()).await
            }
            None => self.send(method, path, &[("authorization", &auth)], "").await,
        }
    }

    /// [`Self::send_as`], failing the test unless the answer is `status`; the answer's JSON
    /// (null if it has none).
    pub async fn expect_as(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        let reply = self.send_as(method, path, token, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends a request to `app` as if from client address `from` (what Spin reports as
/// `spin-client-addr`); a host error fails the test with the guests' output. Takes the
/// [`Target`] so concurrent tasks can each hold a clone.
pub async fn send_from(
    app: &Target,
    from: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Bytes::from(body.to_owned())).expect("valid request");
    let res = app
        .handle_from(req, from)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\nguest output:\n{}", app.guest_output().join("\n")));
    Reply {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: String::from_utf8_lossy(res.body()).into_owned(),
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}
