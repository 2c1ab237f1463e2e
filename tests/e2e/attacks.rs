//! The attack corpus (issue 6): every numbered case of `tests/attacks/` is built by the
//! interpreter beside it and sent, one after another, through the gateway of one running app
//! (plus a second tenant created with the operator API). Each token attack must meet the same
//! 401 (`WWW-Authenticate: Bearer error="invalid_token"`, or `Bearer` alone where no bearer
//! credentials were sent, one `application/problem+json` body for all of them) while the audit
//! event of that very request carries the precise reason the case names. Control cases (genuine or validly forged tokens) must be accepted, so the
//! harness is shown able to tell the difference.

#[path = "../attacks/builder.rs"]
mod builder;

use std::collections::HashMap;
use std::time::Instant;

use builder::{Case, Env, Step, Tenant, segment_json};
use bytes::Bytes;
use health_e2e::{ALICE, BOB, OPERATOR_TOKEN, TestApp, root};
use health_jose::{Algorithm, PublicJwk, TenantKeys};
use serde_json::{Value, json};

/// The route every case targets (alice is patient p-1001). Authentication happens before
/// routing, so the 401 cases behave alike on any `/api/` path; the controls need it to exist.
const ROUTE: &str = "/api/patients/p-1001/records";
/// The second tenant, created through the operator API.
const TENANT_B: &str = "rival-hospital";
const DEMO: &str = "demo-hospital";
const INSURER: (&str, &str) = ("acme-health", "acme-health-demo-secret-2026");

fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    i64::try_from(secs).expect("time")
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default()
    }
}

/// `GET {ROUTE}{suffix}` with these raw `Authorization` values (bytes, so a case can send
/// what a `&str` cannot).
async fn attack(app: &TestApp, suffix: &str, authorization: &[Vec<u8>]) -> Answer {
    let path = format!("{ROUTE}{suffix}");
    let mut req = http::Request::builder().method("GET").uri(&path);
    for value in authorization {
        let value = http::HeaderValue::from_bytes(value).expect("a header value http accepts");
        req = req.header("authorization", value);
    }
    let req = req.body(Bytes::new()).expect("request");
    let res = app
        .app
        .handle_from(req, health_host::DEFAULT_CLIENT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}\nguest output:\n{}", app.app.guest_output().join("\n")));
    Answer { status: res.status().as_u16(), headers: res.headers().clone(), body: res.body().to_vec() }
}

async fn operator(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Value {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = app.send(method, path, &headers, &body).await;
    assert!(matches!(reply.status, 200 | 201), "{method} {path}: {} {}", reply.status, reply.body);
    reply.json()
}

/// What the app publishes about `tenant` now (its active keys may have rotated), and the
/// private signing key of the active `kid`, unsealed from the store.
async fn tenant(app: &TestApp, id: &str, issuer: &str) -> Tenant {
    let listed = operator(app, "GET", &format!("/admin/keys/{id}"), None).await;
    let active = |key_use: &str| {
        listed["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .rev()
            .find(|k| k["use"] == key_use && k["status"] == "active")
            .unwrap_or_else(|| panic!("{id} has no active {key_use} key: {listed}"))
            .clone()
    };
    let (sig, enc) = (active("sig"), active("enc"));
    let published = app.send("GET", &format!("/jwk/{id}"), &[], "").await.json();
    let jwks: Vec<PublicJwk> = serde_json::from_value(published["keys"].clone()).expect("JWK Set");
    let find = |kid: &Value| jwks.iter().find(|k| k.kid == kid.as_str().expect("kid")).expect("published").clone();
    let (sig_jwk, enc_jwk) = (find(&sig["kid"]), find(&enc["kid"]));
    let sig_alg = Algorithm::parse(sig["alg"].as_str().expect("alg")).expect("known alg");
    Tenant {
        id: id.to_owned(),
        issuer: issuer.to_owned(),
        sig_key: app.private_key(id, &sig_jwk.kid, sig_alg),
        sig_kid: sig_jwk.kid.clone(),
        sig_alg,
        sig_jwk,
        enc_kid: enc_jwk.kid.clone(),
        enc_key: enc_jwk.p256_public_key().expect("P-256 encryption key"),
    }
}

async fn issuer(app: &TestApp, tenant: &str) -> String {
    let discovery = app.send("GET", &format!("/t/{tenant}/.well-known/openid-configuration"), &[], "").await;
    assert_eq!(discovery.status, 200, "{}", discovery.body);
    discovery.json()["issuer"].as_str().expect("issuer").to_owned()
}

/// The newest audit event (cases run one at a time, so it is the attack request's).
struct Audited {
    rowid: i64,
    reason: String,
    status: String,
    resource: String,
    request_id: String,
}

fn newest_event(app: &TestApp) -> Audited {
    let row = app.query_strings(
        "audit.db",
        "SELECT rowid || char(9) || reason || char(9) || status || char(9) || \
         coalesce(json_extract(event, '$.request_id'), '') || char(9) || \
         coalesce(json_extract(event, '$.resource'), '') FROM audit_events ORDER BY rowid DESC LIMIT 1",
    );
    let row = row.first().cloned().unwrap_or_else(|| "0\t\t\t\t".into());
    let mut fields = row.splitn(5, '\t').map(str::to_owned);
    let mut next = || fields.next().unwrap_or_default();
    let (rowid, reason, status, request_id, resource) = (next(), next(), next(), next(), next());
    Audited { rowid: rowid.parse().expect("rowid"), reason, status, resource, request_id }
}

fn user(name: &str) -> (&'static str, &'static str) {
    match name {
        "alice" => ALICE,
        "bob" => BOB,
        other => panic!("no demo user {other:?} in the corpus"),
    }
}

/// The `kid` of a JWS's header and its `tenant_id`.
fn kid_and_tenant(token: &str) -> (String, String) {
    let kid = segment_json(token, 0)["kid"].as_str().expect("kid").to_owned();
    let tenant = segment_json(token, 1)["tenant_id"].as_str().expect("tenant_id").to_owned();
    (kid, tenant)
}

async fn run_step(app: &TestApp, env: &mut Env, step: &Step) -> Result<(), String> {
    let slot = |env: &Env, name: &str| env.issued.get(name).cloned().ok_or(format!("no token in slot {name:?}"));
    match step {
        Step::Login { user: name, slot, refresh_as } => {
            let tokens = app.tokens(user(name)).await;
            env.issued.insert(slot.clone(), tokens["access_token"].as_str().expect("access token").to_owned());
            if let Some(refresh) = refresh_as {
                env.issued.insert(refresh.clone(), tokens["refresh_token"].as_str().expect("refresh").to_owned());
            }
        }
        Step::InsurerToken { slot } => {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", INSURER.0, INSURER.1));
            let headers =
                [("content-type", "application/x-www-form-urlencoded"), ("authorization", &format!("Basic {basic}"))];
            let reply = app.send("POST", "/auth/token", &headers, "grant_type=client_credentials").await;
            if reply.status != 200 {
                return Err(format!("client_credentials: {} {}", reply.status, reply.body));
            }
            env.issued.insert(slot.clone(), reply.json()["access_token"].as_str().expect("token").to_owned());
        }
        Step::Logout { token } | Step::LogoutAll { token } => {
            let path = if matches!(step, Step::Logout { .. }) { "/auth/logout" } else { "/auth/logout-all" };
            let reply =
                app.send("POST", path, &[("authorization", &format!("Bearer {}", slot(env, token)?))], "").await;
            if reply.status != 204 {
                return Err(format!("{path}: {} {}", reply.status, reply.body));
            }
        }
        Step::RevokeJti { token } => {
            let token = slot(env, token)?;
            let claims = segment_json(&token, 1);
            let body = json!({ "jti": claims["jti"], "tenant_id": claims["tenant_id"] });
            operator(app, "POST", "/admin/revoke-token", Some(body)).await;
        }
        Step::RotateSigningKey { tenant } => {
            let tenant = env.interp_str(tenant);
            operator(app, "POST", "/admin/rotate-key", Some(json!({ "tenant_id": tenant, "use": "sig" }))).await;
        }
        Step::RevokeKeyOf { token } => {
            let (kid, tenant) = kid_and_tenant(&slot(env, token)?);
            operator(app, "POST", "/admin/revoke-key", Some(json!({ "tenant_id": tenant, "kid": kid }))).await;
        }
        Step::EndRetiringWindowOf { token } => {
            let (kid, tenant) = kid_and_tenant(&slot(env, token)?);
            let conn = rusqlite::Connection::open(app.state.path().join("public-keys.db")).expect("public-keys");
            let name = format!("tenant/{tenant}");
            let stored: Vec<u8> = conn
                .query_row("SELECT value FROM spin_key_value WHERE store = 'public-keys' AND key = ?1", [&name], |r| {
                    r.get(0)
                })
                .expect("tenant key set");
            let mut set: TenantKeys = serde_json::from_slice(&stored).expect("key set");
            let record = set.keys.iter_mut().find(|k| k.jwk.kid == kid).ok_or("kid not in the set")?;
            if record.status != health_jose::KeyStatus::Retiring {
                return Err(format!("key {kid} is {:?}, not retiring", record.status));
            }
            record.not_after = Some(unix_now() - 1);
            conn.execute(
                "UPDATE spin_key_value SET value = ?1 WHERE store = 'public-keys' AND key = ?2",
                rusqlite::params![serde_json::to_vec(&set).expect("key set"), name],
            )
            .expect("key set written");
            let listed = operator(app, "GET", &format!("/admin/keys/{tenant}"), None).await;
            let status = listed["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid.as_str());
            if status.map(|k| &k["status"]) != Some(&json!("retired")) {
                return Err(format!("jwks does not see {kid} retired: {listed}"));
            }
        }
        Step::UseOnce { token } => {
            let first = attack(app, "", &[format!("Bearer {}", slot(env, token)?).into_bytes()]).await;
            if first.status == 401 {
                return Err(format!("the first use was refused ({:?})", newest_event(app).reason));
            }
        }
    }
    Ok(())
}

/// What every refusal must look like, taken from the first one and compared with the rest.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Outcome {
    name: String,
    title: String,
    attack: String,
    expected: (u16, Option<String>),
    status: u16,
    reason: String,
    problems: Vec<String>,
}

async fn run_case(
    app: &TestApp,
    env: &mut Env,
    issuers: &HashMap<String, String>,
    name: &str,
    case: &Case,
    refusal: &mut Option<Refusal>,
) -> Outcome {
    let mut problems = Vec::new();
    env.issued.clear();
    for step in &case.steps {
        if let Err(problem) = run_step(app, env, step).await {
            problems.push(format!("step {step:?}: {problem}"));
        }
    }
    for id in [DEMO, TENANT_B] {
        env.tenants.insert(id.to_owned(), tenant(app, id, &issuers[id]).await);
    }
    env.now = unix_now();
    let token = env.token(case);
    let authorization: Vec<Vec<u8>> =
        case.request.authorization.iter().map(|value| env.interp_bytes(&value.replace("${token}", &token))).collect();
    let suffix = env.interp_str(&case.request.path_suffix.replace("${token}", &token));
    let before = newest_event(app).rowid;
    let answer = attack(app, &suffix, &authorization).await;
    let audited = newest_event(app);
    let reason = audited.reason.clone();

    let expected = (case.expect.status, case.expect.reason.clone());
    if answer.status != case.expect.status {
        problems.push(format!("status {} (expected {})", answer.status, case.expect.status));
    }
    if case.expect.by_runtime {
        if audited.rowid > before {
            problems.push("an audit event was written: the request reached the application".into());
        }
    } else if audited.rowid <= before {
        problems.push("no audit event written for the request".into());
    } else {
        if audited.status != answer.status.to_string() {
            problems.push(format!("audited status {} for a {} answer", audited.status, answer.status));
        }
        let request_id = answer.header("x-request-id");
        if !audited.resource.starts_with(ROUTE) || (!request_id.is_empty() && audited.request_id != request_id) {
            problems.push(format!("newest audit event is not this request: {:?}", audited.resource));
        }
        if let Some(want) = &case.expect.reason
            && reason != *want
        {
            problems.push(format!("audit reason {reason:?} (expected {want:?})"));
        }
    }
    if case.expect.status == 401 {
        if case.expect.reason.is_none() {
            problems.push("a 401 case must name its audit reason".into());
        }
        if answer.status == 401 {
            let challenge = case.expect.challenge.as_deref().unwrap_or(r#"Bearer error="invalid_token""#);
            if answer.header("www-authenticate") != challenge {
                problems.push(format!("WWW-Authenticate {:?}", answer.header("www-authenticate")));
            }
            if answer.header("content-type") != "application/problem+json" {
                problems.push(format!("content-type {:?}", answer.header("content-type")));
            }
            if !reason.is_empty() && String::from_utf8_lossy(&answer.body).contains(&reason) {
                problems.push("the body reveals the audit reason".into());
            }
            // Every header the application sets but the request's own correlation id (`date`
            // and the framing headers come from the runtime's HTTP server).
            let mut headers: Vec<(String, String)> = answer
                .headers
                .keys()
                // The challenge is checked above: with or without an error code by the case.
                .filter(|k| {
                    !matches!(
                        k.as_str(),
                        "x-request-id" | "date" | "transfer-encoding" | "content-length" | "www-authenticate"
                    )
                })
                .map(|k| (k.to_string(), answer.header(k.as_str())))
                .collect();
            headers.sort();
            let this = Refusal { headers, body: answer.body.clone() };
            match refusal {
                None => *refusal = Some(this),
                Some(first) if *first != this => problems.push(format!(
                    "refusal differs from the first one: {:?} {:?} vs {:?} {:?}",
                    this.headers,
                    String::from_utf8_lossy(&this.body),
                    first.headers,
                    String::from_utf8_lossy(&first.body)
                )),
                Some(_) => {}
            }
        }
    }
    Outcome {
        name: name.to_owned(),
        title: case.title.clone(),
        attack: case.attack.clone(),
        expected,
        status: answer.status,
        reason,
        problems,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attack_in_the_corpus_is_refused_alike_and_audited_with_its_precise_reason() {
    let started = Instant::now();
    let cases = builder::load_all(&root().join("tests/attacks"));
    assert!(cases.len() >= 80, "the corpus has {} cases", cases.len());

    let app = TestApp::start(|_| {}).expect("app loads");
    let alice = app.token(ALICE).await; // creates the demo tenant
    operator(&app, "POST", "/admin/tenants", Some(json!({ "tenant_id": TENANT_B }))).await;
    let issuers: HashMap<String, String> = HashMap::from([
        (DEMO.to_owned(), issuer(&app, DEMO).await),
        (TENANT_B.to_owned(), issuer(&app, TENANT_B).await),
    ]);
    let mut tenants = HashMap::new();
    for id in [DEMO, TENANT_B] {
        tenants.insert(id.to_owned(), tenant(&app, id, &issuers[id]).await);
    }
    let alice_claims = match segment_json(&alice, 1) {
        Value::Object(claims) => claims,
        other => panic!("claims: {other}"),
    };
    let mut env = Env {
        tenants,
        tenant: DEMO.to_owned(),
        tenant_b: TENANT_B.to_owned(),
        alice_claims,
        attacker: builder::Attacker::new(),
        issued: HashMap::new(),
        now: unix_now(),
    };

    let mut refusal = None;
    let mut outcomes = Vec::new();
    for (name, case) in &cases {
        outcomes.push(run_case(&app, &mut env, &issuers, name, case, &mut refusal).await);
    }

    let mut report = String::new();
    for o in &outcomes {
        let verdict = if o.problems.is_empty() { "ok" } else { "FAIL" };
        report.push_str(&format!(
            "{verdict:4} {:48} expected {} {:28} got {} {}\n",
            o.name,
            o.expected.0,
            o.expected.1.as_deref().unwrap_or("-"),
            o.status,
            o.reason
        ));
        if !o.problems.is_empty() {
            report.push_str(&format!("       {}: {}\n", o.title, o.attack));
        }
        for problem in &o.problems {
            report.push_str(&format!("       {problem}\n"));
        }
    }
    let attacks = outcomes.iter().filter(|o| o.expected.0 == 401).count();
    let accepted: Vec<&str> =
        outcomes.iter().filter(|o| o.expected.0 == 401 && o.status != 401).map(|o| o.name.as_str()).collect();
    let controls: Vec<&Outcome> = outcomes.iter().filter(|o| o.expected.0 == 200).collect();
    let failed = outcomes.iter().filter(|o| !o.problems.is_empty()).count();
    eprintln!(
        "{report}\n{} cases ({attacks} attacks, {} controls), {failed} failed, {} attacks not refused with 401, {:.1} s",
        outcomes.len(),
        controls.len(),
        accepted.len(),
        started.elapsed().as_secs_f64()
    );

    assert!(!controls.is_empty(), "the corpus needs control cases");
    assert!(refusal.is_some(), "no refusal was seen at all");
    assert!(accepted.is_empty(), "attacks not refused with 401: {accepted:?}\n{report}");
    assert_eq!(failed, 0, "{failed} cases did not behave as expected:\n{report}");
    for tenant in [DEMO, TENANT_B] {
        let verified = operator(&app, "GET", &format!("/admin/audit/verify/{tenant}"), None).await;
        assert_eq!(verified["intact"], true, "{tenant}'s audit chain after the corpus: {verified}");
    }
}
