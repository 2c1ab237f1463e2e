//! Federation with a tenant's OpenID provider (issue 17 items 1, 2 and 4) against a real one:
//! `oidc-provider` (npm, certified) on a loopback port (`health_e2e::oidc`), two providers `a`
//! and `b` in one process, one app. The demo tenant is connected to `a` through its discovery
//! document, a second tenant to `b` through its JWK Set. Through the RFC 8693 token exchange at
//! `/auth/token`: the happy path per role (the provider's role claim ignored), MFA for the
//! configured roles by `amr`, wrong issuer, wrong audience, expired, future `iat`, `alg: none`,
//! HS256 keyed with the provider's public key, an unknown `kid` (one refetch, then refused, and
//! no second refetch within the cooldown), rotated provider keys picked up, a provider down
//! (cached keys keep working; none cached: refused, the provider asked once per cooldown), an unmapped email, a disabled user, tenant
//! A's provider's token presented for tenant B (no key of B's provider signed it), and `required` refusing passwords but the
//! break-glass admin's. Each refusal's precise reason is checked in the audit log. The browser
//! sign-in (item 5, the code flow with PKCE) has its own app: `browser_sign_in_with_the_code_flow_and_pkce`.

use health_e2e::oidc::{self, Provider};
use health_e2e::runtime::REQUIRE_ALL_ENV;
use health_e2e::{ADMIN, ALICE, OPERATOR_TOKEN, TestApp};
use serde_json::{Value, json};

const NORTH: &str = "demo-hospital";
const SOUTH: &str = "south-hospital";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The JWK Set refetch cooldown of both tenants' settings (`jwks_refetch_cooldown_secs`).
const COOLDOWN_SECS: u64 = 3;

async fn operator(app: &TestApp, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let reply = app.send(method, path, &[("content-type", "application/json"), ("authorization", &auth)], &body).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

async fn exchange(app: &TestApp, tenant: &str, token: &str, token_type: &str) -> (u16, Value) {
    let form = format!(
        "grant_type={}&subject_token={token}&subject_token_type={}&tenant={tenant}",
        "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
        token_type.replace(':', "%3A")
    );
    let reply = app.send("POST", "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], &form).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

/// The reason of the last token exchange in the audit log.
fn last_reason(app: &TestApp) -> String {
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = 'auth.token.exchange' ORDER BY rowid DESC LIMIT 1",
    );
    reasons.into_iter().next().unwrap_or_default()
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).expect("payload"))
        .expect("b64");
    serde_json::from_slice(&payload).expect("claims")
}

/// Links `external_id` to the tenant's user `username`, returning the user's id.
async fn link(app: &TestApp, tenant: &str, username: &str, external_id: &str) -> String {
    let (status, users) = operator(app, "GET", &format!("/auth/admin/users?tenant_id={tenant}"), Value::Null).await;
    assert_eq!(status, 200, "{users}");
    let id = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["username"] == username)
        .and_then(|u| u["id"].as_str())
        .unwrap_or_else(|| panic!("no user {username} in {users}"))
        .to_owned();
    let body = json!({ "tenant_id": tenant, "external_id": external_id });
    let (status, linked) = operator(app, "POST", &format!("/auth/admin/users/{id}/link"), body).await;
    assert_eq!(status, 200, "{linked}");
    id
}

/// Where the platform finds provider `a`'s keys.
enum Keys {
    Discovery,
    JwksUri,
}

/// A test's provider and app, the demo tenant connected to provider `a`.
struct Connected {
    idp: Provider,
    app: TestApp,
    /// Provider `a`'s issuer.
    a: String,
    /// The demo tenant's settings as set, for a test to change and set again.
    north: Value,
    /// The answer to setting them.
    set: Value,
}

/// Starts the provider and an app allowed to reach it, and connects the demo tenant to
/// provider `a` (audience `health-north`, keys found through `keys`, `settings` besides) as the
/// operator; `None`, said once, where node and npm are missing.
async fn connected(test: &str, keys: Keys, settings: Value) -> Option<Connected> {
    if !oidc::available() {
        assert!(std::env::var_os(REQUIRE_ALL_ENV).is_none(), "federation: node and npm are needed");
        eprintln!("federation::{test}: NOT RUN here (no node/npm)");
        return None;
    }
    let idp = Provider::start().expect("the OpenID provider starts");
    let app = TestApp::start_with_variables(&[("federation_provider_hosts", &idp.origin())]).expect("app loads");
    let a = idp.issuer("a");
    let mut north = json!({ "enabled": true, "issuer": a, "audience": "health-north" });
    match keys {
        Keys::Discovery => north["discovery_url"] = json!(format!("{a}/.well-known/openid-configuration")),
        Keys::JwksUri => north["jwks_uri"] = json!(format!("{a}/jwks")),
    }
    for (name, value) in settings.as_object().expect("settings") {
        north[name] = value.clone();
    }
    let north = json!({ "tenant_id": NORTH, "settings": north });
    let (status, set) = operator(&app, "POST", "/auth/admin/federation", north.clone()).await;
    assert_eq!(status, 200, "{set}");
    Some(Connected { idp, app, a, north, set })
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_a_real_openid_provider_are_exchanged_with_every_check() {
    // Settings and links, through the admin API as the operator.
    let settings = json!({
        "mfa_roles": ["doctor", "admin"], "clock_tolerance_secs": 5, "jwks_refetch_cooldown_secs": COOLDOWN_SECS,
    });
    let test = "tokens_of_a_real_openid_provider_are_exchanged_with_every_check";
    let Some(Connected { idp, app, a, north, set }) = connected(test, Keys::Discovery, settings).await else { return };
    let b = idp.issuer("b");
    assert_eq!(set["federation"]["subject_claim"], "email", "{set}");
    let too_lenient = json!({ "tenant_id": NORTH, "settings": { "enabled": true, "issuer": a, "audience": "x",
        "jwks_uri": format!("{a}/jwks"), "clock_tolerance_secs": 61 }});
    assert_eq!(operator(&app, "POST", "/auth/admin/federation", too_lenient).await.0, 400);
    let (status, shown) =
        operator(&app, "GET", &format!("/auth/admin/federation?tenant_id={NORTH}"), Value::Null).await;
    assert_eq!((status, &shown["federation"]["issuer"]), (200, &json!(a)), "{shown}");
    link(&app, NORTH, "alice", "Alice@North.example").await;
    link(&app, NORTH, "dr-grey", "grey@north.example").await;
    link(&app, NORTH, "lab-north", "lab@north.example").await;
    link(&app, NORTH, "admin", "admin@north.example").await;
    let bob = link(&app, NORTH, "bob", "bob@north.example").await;
    // One identity, one user.
    let (users_status, users) =
        operator(&app, "GET", &format!("/auth/admin/users?tenant_id={NORTH}"), Value::Null).await;
    assert_eq!(users_status, 200);
    let alice_id = users["users"].as_array().expect("users").iter().find(|u| u["username"] == "alice").expect("alice")
        ["id"]
        .clone();
    let taken = json!({ "tenant_id": NORTH, "external_id": "alice@north.example" });
    assert_eq!(operator(&app, "POST", &format!("/auth/admin/users/{bob}/link"), taken).await.0, 409);

    // The happy path per role; the provider's role claim is ignored.
    let id_token = |sub: &'static str, claims: Value| {
        let idp = &idp;
        async move { idp.mint("a", "health-north", "id_token", sub, claims).await }
    };
    let token = id_token("p-alice", json!({ "email": "alice@north.example", "role": "admin" })).await;
    let (status, issued) = exchange(&app, NORTH, &token, ID_TOKEN).await;
    assert_eq!(status, 200, "{issued}\n{}", app.app.guest_output().join("\n"));
    assert_eq!(issued["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(issued["token_type"], "Bearer");
    assert!(issued["refresh_token"].is_string(), "{issued}");
    let platform = claims_of(issued["access_token"].as_str().expect("access_token"));
    assert_eq!((platform["role"].as_str(), &platform["sub"]), (Some("patient"), &alice_id), "{platform}");
    assert_eq!(last_reason(&app), "token_exchanged");

    let lab = id_token("p-lab", json!({ "email": "lab@north.example" })).await;
    let (status, issued) = exchange(&app, NORTH, &lab, ID_TOKEN).await;
    assert_eq!(status, 200, "{issued}");
    let orders = app.get_with("/api/lab/orders", issued["access_token"].as_str().expect("token")).await;
    assert_eq!(orders.status, 200, "{}", orders.body);

    let admin = id_token("p-admin", json!({ "email": "admin@north.example", "amr": ["pwd", "mfa"] })).await;
    let (status, issued) = exchange(&app, NORTH, &admin, ID_TOKEN).await;
    assert_eq!(status, 200, "{issued}");
    let admin_token = issued["access_token"].as_str().expect("token").to_owned();
    let audit = app.get_with("/api/admin/audit?limit=1", &admin_token).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    // The tenant's admin manages its own provider; a patient may not.
    let shown = app.get_with("/auth/admin/federation", &admin_token).await;
    assert_eq!(
        (shown.status, &shown.json()["federation"]["audience"]),
        (200, &json!("health-north")),
        "{}",
        shown.body
    );
    let patient = exchange(&app, NORTH, &token, ID_TOKEN).await.1["access_token"].as_str().expect("token").to_owned();
    assert_eq!(app.get_with("/auth/admin/federation", &patient).await.status, 403);

    // A doctor: refused without MFA, accepted with amr ["mfa"] (an access token, RFC 9068).
    let doctor = |amr: Value| {
        let idp = &idp;
        async move {
            idp.mint(
                "a",
                "health-north",
                "access_token",
                "p-grey",
                json!({ "email": "grey@north.example", "amr": amr }),
            )
            .await
        }
    };
    let (status, _) = exchange(&app, NORTH, &doctor(json!(["pwd"])).await, ACCESS_TOKEN).await;
    assert_eq!((status, last_reason(&app).as_str()), (400, "provider_mfa_required"));
    let (status, issued) = exchange(&app, NORTH, &doctor(json!(["pwd", "mfa"])).await, ACCESS_TOKEN).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(claims_of(issued["access_token"].as_str().expect("token"))["amr"], json!(["pwd", "mfa"]));

    // Tokens that are not the tenant's, or not valid, each refused with its reason.
    let alice = json!({ "email": "alice@north.example" });
    let now = health_e2e::unix_now();
    let cases = [
        (
            "wrong issuer",
            idp.forge(
                "a",
                "health-north",
                "RS256",
                "p-alice",
                json!({ "email": "alice@north.example", "iss": b }),
                None,
            )
            .await,
            "wrong_issuer",
        ),
        ("wrong audience", idp.mint("a", "other-app", "id_token", "p-alice", alice.clone()).await, "wrong_audience"),
        (
            "expired",
            idp.forge(
                "a",
                "health-north",
                "RS256",
                "p-alice",
                json!({ "email": "alice@north.example", "iat": now - 700, "exp": now - 100 }),
                None,
            )
            .await,
            "expired",
        ),
        (
            "future iat",
            idp.forge(
                "a",
                "health-north",
                "RS256",
                "p-alice",
                json!({ "email": "alice@north.example", "iat": now + 300, "exp": now + 900 }),
                None,
            )
            .await,
            "issued_in_future",
        ),
        // An unsecured JWS has an empty signature part: refused as malformed before its header.
        ("alg none", idp.forge("a", "health-north", "none", "p-alice", alice.clone(), None).await, "malformed_token"),
        (
            "HS256 with the public key",
            idp.forge("a", "health-north", "HS256", "p-alice", alice.clone(), None).await,
            "alg_mismatch",
        ),
        ("unmapped email", id_token("p-x", json!({ "email": "nobody@north.example" })).await, "unmapped_identity"),
    ];
    for (case, token, reason) in cases {
        let (status, body) = exchange(&app, NORTH, &token, ID_TOKEN).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{case}: {body}");
        assert_eq!(last_reason(&app), reason, "{case}");
    }

    // An ID token presented as an access token, and an access token as an ID token (RFC 9068 §4).
    let id = id_token("p-alice", alice.clone()).await;
    assert_eq!(exchange(&app, NORTH, &id, ACCESS_TOKEN).await.0, 400);
    assert_eq!(last_reason(&app), "wrong_typ");
    let access = idp.mint("a", "health-north", "access_token", "p-alice", alice.clone()).await;
    assert_eq!(exchange(&app, NORTH, &access, ID_TOKEN).await.0, 400);
    assert_eq!(last_reason(&app), "wrong_typ");
    assert_eq!(exchange(&app, NORTH, &access, "urn:ietf:params:oauth:token-type:jwt").await.0, 200);

    // A disabled local user.
    let (status, _) =
        operator(&app, "POST", &format!("/auth/admin/users/{bob}/disable"), json!({ "tenant_id": NORTH })).await;
    assert_eq!(status, 200);
    let (status, _) =
        exchange(&app, NORTH, &id_token("p-bob", json!({ "email": "bob@north.example" })).await, ID_TOKEN).await;
    assert_eq!((status, last_reason(&app).as_str()), (400, "user_disabled"));

    // An unknown kid: one refetch, then refused; another at once: no refetch (cooldown).
    tokio::time::sleep(std::time::Duration::from_secs(COOLDOWN_SECS + 1)).await;
    let fetched = idp.jwks_fetches("a").await;
    for kid in ["nope-1", "nope-2", "nope-3"] {
        let forged = idp.forge("a", "health-north", "RS256", "p-alice", alice.clone(), Some(kid)).await;
        assert_eq!(exchange(&app, NORTH, &forged, ID_TOKEN).await.0, 400);
        assert_eq!(last_reason(&app), "unknown_kid");
    }
    assert_eq!(idp.jwks_fetches("a").await, fetched + 1, "one refetch for a flood of unknown kids");

    // Rotated provider keys: the new kid is fetched once the cooldown has passed.
    tokio::time::sleep(std::time::Duration::from_secs(COOLDOWN_SECS + 1)).await;
    idp.control("rotate", json!({ "provider": "a" })).await;
    let (status, body) = exchange(&app, NORTH, &id_token("p-alice", alice.clone()).await, ID_TOKEN).await;
    assert_eq!(status, 200, "rotated key: {body}");
    assert_eq!(idp.jwks_fetches("a").await, fetched + 2);

    // The provider down: its cached keys keep working, even past the cooldown.
    idp.control("down", json!({ "provider": "a", "down": true })).await;
    tokio::time::sleep(std::time::Duration::from_secs(COOLDOWN_SECS + 1)).await;
    let forged = idp.forge("a", "health-north", "RS256", "p-alice", alice.clone(), Some("nope-4")).await;
    assert_eq!(exchange(&app, NORTH, &forged, ID_TOKEN).await.0, 400);
    let (status, body) = exchange(&app, NORTH, &id_token("p-alice", alice.clone()).await, ID_TOKEN).await;
    assert_eq!(status, 200, "cached keys while the provider is down: {body}");
    idp.control("down", json!({ "provider": "a", "down": false })).await;

    // A second tenant on provider b, down before its keys were ever fetched: refused.
    let (status, _) = operator(&app, "POST", "/admin/tenants", json!({ "tenant_id": SOUTH })).await;
    assert_eq!(status, 201);
    let new_user =
        json!({ "tenant_id": SOUTH, "username": "south-lab", "role": "lab", "password": "south-lab-password-2026" });
    assert_eq!(operator(&app, "POST", "/auth/admin/users", new_user).await.0, 201);
    link(&app, SOUTH, "south-lab", "lab@south.example").await;
    let south = json!({ "tenant_id": SOUTH, "settings": {
        "enabled": true, "issuer": b, "audience": "health-south", "jwks_uri": format!("{b}/jwks"),
        "jwks_refetch_cooldown_secs": COOLDOWN_SECS,
    }});
    assert_eq!(operator(&app, "POST", "/auth/admin/federation", south).await.0, 200);
    let south_lab = idp.mint("b", "health-south", "id_token", "p-s", json!({ "email": "lab@south.example" })).await;
    idp.control("down", json!({ "provider": "b", "down": true })).await;
    for _ in 0..3 {
        let (status, _) = exchange(&app, SOUTH, &south_lab, ID_TOKEN).await;
        assert_eq!((status, last_reason(&app).as_str()), (400, "provider_keys_unavailable"));
    }
    assert_eq!(idp.jwks_fetches("b").await, 1, "a provider that is down is asked once per cooldown");
    idp.control("down", json!({ "provider": "b", "down": false })).await;
    tokio::time::sleep(std::time::Duration::from_secs(COOLDOWN_SECS + 1)).await;
    let (status, body) = exchange(&app, SOUTH, &south_lab, ID_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    // Tenant A's provider's token presented for tenant B: no key of B's provider signed it.
    let (status, _) = exchange(&app, SOUTH, &id_token("p-alice", alice.clone()).await, ID_TOKEN).await;
    assert_eq!((status, last_reason(&app).as_str()), (400, "unknown_kid"));

    // Required: passwords refused but the break-glass admin's; the exchange goes on.
    let mut required = north.clone();
    required["settings"]["required"] = json!(true);
    required["settings"]["break_glass"] = json!("admin");
    assert_eq!(operator(&app, "POST", "/auth/admin/federation", required).await.0, 200);
    let refused = app.login(ALICE).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = 'auth.login' ORDER BY rowid DESC LIMIT 1",
    );
    assert_eq!(reasons, ["federation_required"]);
    app.tokens(ADMIN).await;
    assert_eq!(exchange(&app, NORTH, &id_token("p-alice", alice.clone()).await, ID_TOKEN).await.0, 200);
    // Turned off: the exchange is refused, passwords work again.
    let (status, _) = operator(&app, "POST", "/auth/admin/federation/disable", json!({ "tenant_id": NORTH })).await;
    assert_eq!(status, 200);
    assert_eq!(exchange(&app, NORTH, &id_token("p-alice", alice).await, ID_TOKEN).await.0, 400);
    assert_eq!(last_reason(&app), "federation_disabled");
    assert_eq!(app.login(ALICE).await.status, 200);
}

/// The reason of the last back-channel logout in the audit log.
fn last_logout_reason(app: &TestApp) -> String {
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = 'auth.federation.backchannel_logout' ORDER BY rowid DESC LIMIT 1",
    );
    reasons.into_iter().next().unwrap_or_default()
}

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    let form = format!("grant_type=refresh_token&refresh_token={token}");
    let reply = app.send("POST", "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], &form).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

/// The gateway's newest audit event for `path`: (tenant, actor, role, reason, status).
fn gateway_audit(app: &TestApp, path: &str) -> (String, String, String, String, String) {
    let row = app.query_strings(
        "audit.db",
        &format!(
            "SELECT tenant_id || '|' || COALESCE(json_extract(event, '$.actor_sub'), '') || '|' ||
             COALESCE(json_extract(event, '$.actor_role'), '') || '|' || reason || '|' || status
             FROM audit_events WHERE json_extract(event, '$.resource') = '{path}' ORDER BY rowid DESC LIMIT 1"
        ),
    );
    let row = row.first().unwrap_or_else(|| panic!("no audit event for {path}"));
    let parts: Vec<String> = row.split('|').map(str::to_owned).collect();
    (parts[0].clone(), parts[1].clone(), parts[2].clone(), parts[3].clone(), parts[4].clone())
}

/// The provider's access tokens at the gateway (issue 17 item 3) and its back-channel logout
/// (item 6), against the real provider, one app.
///
/// Item 3: with `accept_provider_tokens` off, a provider access token is refused as any
/// foreign token; on, oidc-provider's own JWT access token (RFC 9068) is a bearer token for the
/// linked local user and role, audited as a platform token is, while ID tokens, other
/// audiences and issuers, expired, over-long, `alg: none`, HS256 with the public key, unknown
/// `kid`, unmapped, disabled and MFA-less doctors' tokens are refused (401, each reason in the
/// audit log); the platform's own tokens are untouched.
///
/// Item 6 (OpenID Connect Back-Channel Logout 1.0): the real provider, told the platform's
/// `backchannel_logout_uri`, signs a logout token and POSTs it there (`Client#backchannelLogout`,
/// what its end_session endpoint does); the user's refresh token, platform access token and
/// provider access token stop working at once. Logout tokens the provider would never send (made
/// with its own key material) are refused with 400 `invalid_request` and end nothing.
#[tokio::test(flavor = "multi_thread")]
async fn provider_access_tokens_at_the_gateway_and_back_channel_logout() {
    let settings =
        json!({ "clock_tolerance_secs": 5, "jwks_refetch_cooldown_secs": COOLDOWN_SECS, "mfa_roles": ["doctor"] });
    let test = "provider_access_tokens_at_the_gateway_and_back_channel_logout";
    let Some(Connected { idp, app, a, mut north, .. }) = connected(test, Keys::JwksUri, settings).await else { return };
    link(&app, NORTH, "alice", "alice@north.example").await;
    link(&app, NORTH, "dr-grey", "grey@north.example").await;
    let bob = link(&app, NORTH, "bob", "bob@north.example").await;
    let alice_id = link(&app, NORTH, "alice", "alice@north.example").await;
    let records = "/api/patients/p-1001/records";

    // Item 3. Off (the default): a provider access token is a foreign token like any other.
    let access_token = |sub: &'static str, claims: Value| {
        let idp = &idp;
        async move { idp.mint("a", "health-north", "access_token", sub, claims).await }
    };
    let alice_claims = json!({ "email": "alice@north.example" });
    let provider_access = access_token("p-alice", alice_claims.clone()).await;
    assert_eq!(app.get_with(records, &provider_access).await.status, 401);
    assert_eq!(gateway_audit(&app, records).3, "missing_claim");
    north["settings"]["accept_provider_tokens"] = json!(true);
    let (status, set) = operator(&app, "POST", "/auth/admin/federation", north.clone()).await;
    assert_eq!((status, &set["federation"]["accept_provider_tokens"]), (200, &json!(true)), "{set}");
    // On: the provider's own access token, for the linked user and the local role.
    let reply = app.get_with(records, &provider_access).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (tenant, actor, role, _, status) = gateway_audit(&app, records);
    assert_eq!(
        (tenant.as_str(), actor.as_str(), role.as_str(), status.as_str()),
        (NORTH, alice_id.as_str(), "patient", "200")
    );
    // The same patient's record of another patient: the policy decides as for a platform token.
    assert_eq!(app.get_with("/api/patients/p-1002/records", &provider_access).await.status, 403);
    // A doctor: refused without MFA, through with amr ["mfa"].
    let grey = |amr: Value| access_token("p-grey", json!({ "email": "grey@north.example", "amr": amr }));
    assert_eq!(app.get_with(records, &grey(json!(["pwd"])).await).await.status, 401);
    assert_eq!(gateway_audit(&app, records).3, "provider_mfa_required");
    let doctor = app.get_with(records, &grey(json!(["pwd", "mfa"])).await).await;
    assert_ne!(doctor.status, 401, "{}", doctor.body);
    assert_eq!(gateway_audit(&app, records).2, "doctor");
    // Refused, each with its reason.
    let now = health_e2e::unix_now();
    let forge = |claims: Value, extra: Value| {
        let idp = &idp;
        let mut body = json!({ "provider": "a", "client": "health-north", "alg": "RS256", "sub": "p-alice",
            "typ": "at+jwt", "claims": claims });
        for (name, value) in extra.as_object().expect("options") {
            body[name] = value.clone();
        }
        async move { idp.forge_with(body).await }
    };
    let with = |changes: Value| {
        let mut c = json!({ "email": "alice@north.example", "jti": format!("at-{}", rand_suffix()) });
        for (name, value) in changes.as_object().expect("changes") {
            c[name] = value.clone();
        }
        c
    };
    assert_eq!(
        app.get_with(records, &forge(with(json!({})), json!({})).await).await.status,
        200,
        "a well-made one passes"
    );
    let cases = [
        ("an ID token", idp.mint("a", "health-north", "id_token", "p-alice", alice_claims.clone()).await, "wrong_typ"),
        (
            "another audience",
            idp.mint("a", "other-app", "access_token", "p-alice", alice_claims.clone()).await,
            "wrong_audience",
        ),
        ("another issuer", forge(with(json!({ "iss": idp.issuer("b") })), json!({})).await, "missing_claim"),
        ("expired", forge(with(json!({ "iat": now - 700, "exp": now - 100 })), json!({})).await, "expired"),
        ("future iat", forge(with(json!({ "iat": now + 300, "exp": now + 900 })), json!({})).await, "issued_in_future"),
        ("over the lifetime cap", forge(with(json!({ "exp": now + 7200 })), json!({})).await, "lifetime_too_long"),
        ("alg none", forge(with(json!({})), json!({ "alg": "none" })).await, "malformed_token"),
        ("HS256 with the public key", forge(with(json!({})), json!({ "alg": "HS256" })).await, "alg_mismatch"),
        ("unknown kid", forge(with(json!({})), json!({ "kid": "nope" })).await, "unknown_kid"),
        ("signed by another key", forge(with(json!({})), json!({ "keyOf": "b" })).await, "bad_signature"),
        ("no jti", forge(with(json!({ "jti": null })), json!({})).await, "missing_claim"),
        ("unmapped", access_token("p-x", json!({ "email": "nobody@north.example" })).await, "unmapped_identity"),
    ];
    for (case, token, reason) in cases {
        let reply = app.get_with(records, &token).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
        assert_eq!(gateway_audit(&app, records).3, reason, "{case}");
    }
    let (status, _) =
        operator(&app, "POST", &format!("/auth/admin/users/{bob}/disable"), json!({ "tenant_id": NORTH })).await;
    assert_eq!(status, 200);
    let bobs = access_token("p-bob", json!({ "email": "bob@north.example" })).await;
    assert_eq!(app.get_with(records, &bobs).await.status, 401);
    assert_eq!(gateway_audit(&app, records).3, "user_disabled");
    // The platform's own tokens as before.
    assert_eq!(app.get_with(records, &app.token(ALICE).await).await.status, 200);
    // One issuer and audience route to one tenant: a second tenant may not accept the same.
    assert_eq!(operator(&app, "POST", "/admin/tenants", json!({ "tenant_id": SOUTH })).await.0, 201);
    let mut south = north.clone();
    south["tenant_id"] = json!(SOUTH);
    let (status, body) = operator(&app, "POST", "/auth/admin/federation", south.clone()).await;
    assert_eq!(status, 400, "{body}");
    south["settings"]["audience"] = json!("health-south");
    assert_eq!(operator(&app, "POST", "/auth/admin/federation", south).await.0, 200);
    let url = app.app.url().await.expect("the app's URL");
    let endpoint = format!("/auth/federation/{NORTH}/backchannel-logout");
    let uri = format!("{url}{endpoint}");
    idp.control("backchannel", json!({ "provider": "a", "client": "health-north", "uri": uri })).await;

    // Alice signs in through the provider (session s-1): a platform access and refresh token.
    let id_token = idp
        .mint("a", "health-north", "id_token", "p-alice", json!({ "email": "alice@north.example", "sid": "s-1" }))
        .await;
    let (status, issued) = exchange(&app, NORTH, &id_token, ID_TOKEN).await;
    assert_eq!(status, 200, "{issued}");
    let access = issued["access_token"].as_str().expect("access").to_owned();
    let mut refresh_token = issued["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(app.get_with(records, &access).await.status, 200);

    // Logout tokens the provider never sends: 400 invalid_request, no-store, nothing ended.
    let post = |token: String| {
        let (app, endpoint) = (&app, &endpoint);
        async move {
            let form = format!("logout_token={token}");
            app.send("POST", endpoint, &[("content-type", "application/x-www-form-urlencoded")], &form).await
        }
    };
    let event = json!({ "http://schemas.openid.net/event/backchannel-logout": {} });
    let logout = |claims: Value, extra: Value| {
        let idp = &idp;
        let mut body = json!({ "provider": "a", "client": "health-north", "alg": "RS256", "sub": "p-alice",
            "typ": "logout+jwt", "claims": claims });
        for (name, value) in extra.as_object().expect("options") {
            body[name] = value.clone();
        }
        async move { idp.forge_with(body).await }
    };
    let claims = |changes: Value| {
        let mut c = json!({ "events": event, "jti": format!("j-{}", rand_suffix()), "sid": "s-1", "exp": health_e2e::unix_now() + 120 });
        for (name, value) in changes.as_object().expect("changes") {
            c[name] = value.clone();
        }
        c
    };
    let b = idp.issuer("b");
    let cases = [
        ("a nonce", logout(claims(json!({ "nonce": "n-1" })), json!({})).await, "logout_token_nonce"),
        ("wrong audience", logout(claims(json!({ "aud": "other-app" })), json!({})).await, "wrong_audience"),
        ("wrong issuer", logout(claims(json!({ "iss": b })), json!({})).await, "wrong_issuer"),
        ("unsigned", logout(claims(json!({})), json!({ "alg": "none" })).await, "malformed_token"),
        ("signed by another key", logout(claims(json!({})), json!({ "keyOf": "b" })).await, "bad_signature"),
        ("no events", logout(claims(json!({ "events": null })), json!({})).await, "not_a_logout_token"),
        ("neither sub nor sid", logout(claims(json!({ "sid": null })), json!({ "sub": null })).await, "missing_claim"),
        ("no jti", logout(claims(json!({ "jti": null })), json!({})).await, "missing_claim"),
        ("an ID token", id_token.clone(), "not_a_logout_token"),
    ];
    for (case, token, reason) in cases {
        let reply = post(token).await;
        assert_eq!(
            (reply.status, reply.json()["error"].as_str()),
            (400, Some("invalid_request")),
            "{case}: {}",
            reply.body
        );
        assert_eq!(reply.header("cache-control"), "no-store", "{case}");
        assert_eq!(last_logout_reason(&app), reason, "{case}");
    }
    assert_eq!(post(String::new()).await.status, 400);
    // A valid logout token for another subject: 200, and taken once (its jti replayed: 400).
    let other = logout(claims(json!({ "sid": null })), json!({ "sub": "p-nobody" })).await;
    let reply = post(other.clone()).await;
    assert_eq!((reply.status, reply.header("cache-control")), (200, "no-store"), "{}", reply.body);
    assert_eq!(last_logout_reason(&app), "provider_logout_unknown_subject");
    assert_eq!(post(other).await.status, 400);
    assert_eq!(last_logout_reason(&app), "logout_token_replayed");
    // A logout token is no sign-in.
    let as_sign_in = logout(claims(json!({ "email": "alice@north.example" })), json!({})).await;
    assert_eq!(exchange(&app, NORTH, &as_sign_in, "urn:ietf:params:oauth:token-type:jwt").await.0, 400);
    assert_eq!(last_reason(&app), "wrong_typ");
    // Nothing was ended.
    assert_eq!(app.get_with(records, &access).await.status, 200);
    assert_eq!(app.get_with(records, &provider_access).await.status, 200);
    let (status, rotated) = refresh(&app, &refresh_token).await;
    assert_eq!(status, 200, "{rotated}");
    refresh_token = rotated["refresh_token"].as_str().expect("refresh").to_owned();
    let access = rotated["access_token"].as_str().expect("access").to_owned();

    // The provider ends Alice's session: it signs a logout token and posts it to the platform.
    let delivered = idp
        .control("logout", json!({ "provider": "a", "client": "health-north", "sub": "p-alice", "sid": "s-1" }))
        .await;
    assert_eq!(delivered["delivered"], true, "{delivered}");
    assert_eq!(last_logout_reason(&app), "provider_logout");
    let refused = app.get_with(records, &access).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refresh(&app, &refresh_token).await.0, 400);
    // The provider's access tokens issued before the logout end with it too.
    assert_eq!(app.get_with(records, &provider_access).await.status, 401);
    assert_eq!(gateway_audit(&app, records).3, "subject_logged_out");
    // Signing in again at the provider works again.
    let again = idp
        .mint("a", "health-north", "id_token", "p-alice", json!({ "email": "alice@north.example", "sid": "s-2" }))
        .await;
    let (status, issued) = exchange(&app, NORTH, &again, ID_TOKEN).await;
    assert_eq!(status, 200, "{issued}");
    let access = issued["access_token"].as_str().expect("access").to_owned();
    assert_eq!(app.get_with(records, &access).await.status, 200);

    // Shared Signals / CAEP (RFC 8935 push): oidc-provider is no SSF transmitter, so these
    // Security Event Tokens are signed with its own key material here.
    let events = format!("/auth/federation/{NORTH}/events");
    let push = |set: String, media_type: &'static str| {
        let (app, events) = (&app, &events);
        async move { app.send("POST", events, &[("content-type", media_type)], &set).await }
    };
    let caep = "https://schemas.openid.net/secevent/caep/event-type/";
    let set = |event: &str, sub_id: Value, extra: Value| {
        let claims = json!({ "sub": null, "exp": null, "jti": format!("e-{}", rand_suffix()), "sub_id": sub_id,
            "events": { format!("{caep}{event}"): { "event_timestamp": health_e2e::unix_now() } } });
        logout(claims, extra)
    };
    let alice_email = json!({ "format": "email", "email": "Alice@north.example" });
    let event_reason = || {
        app.query_strings(
            "audit.db",
            "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = 'auth.federation.security_event' ORDER BY rowid DESC LIMIT 1",
        )
        .into_iter()
        .next()
        .unwrap_or_default()
    };
    let secevent = "application/secevent+jwt";
    let refusals = [
        (
            "a JWT typ",
            set("session-revoked", alice_email.clone(), json!({ "typ": "JWT" })).await,
            "invalid_request",
            "not_a_security_event",
        ),
        (
            "another audience",
            set("session-revoked", alice_email.clone(), json!({ "client": "other-app" })).await,
            "invalid_audience",
            "wrong_audience",
        ),
        (
            "another key",
            set("session-revoked", alice_email.clone(), json!({ "keyOf": "b", "typ": "secevent+jwt" })).await,
            "invalid_key",
            "bad_signature",
        ),
        (
            "a logout token",
            logout(claims(json!({})), json!({ "typ": "secevent+jwt" })).await,
            "invalid_request",
            "not_a_security_event",
        ),
    ];
    for (case, token, err, reason) in refusals {
        let reply = push(token, secevent).await;
        assert_eq!((reply.status, reply.json()["err"].as_str()), (400, Some(err)), "{case}: {}", reply.body);
        assert_eq!(event_reason(), reason, "{case}");
    }
    let revoked = set("session-revoked", alice_email.clone(), json!({ "typ": "secevent+jwt" })).await;
    assert_eq!(push(revoked.clone(), "application/jwt").await.status, 415);
    assert_eq!(app.get_with(records, &access).await.status, 200, "nothing ended by a refused event");
    let other = set(
        "session-revoked",
        json!({ "format": "email", "email": "nobody@north.example" }),
        json!({ "typ": "secevent+jwt" }),
    );
    assert_eq!(push(other.await, secevent).await.status, 202);
    assert_eq!(event_reason(), "security_event_ignored");
    assert_eq!(app.get_with(records, &access).await.status, 200);
    // session-revoked about Alice (by email): her sessions end; the same event again is a replay.
    assert_eq!(push(revoked.clone(), secevent).await.status, 202);
    assert_eq!(event_reason(), "provider_session_revoked");
    assert_eq!(app.get_with(records, &access).await.status, 401);
    assert_eq!(push(revoked, secevent).await.status, 400);
    assert_eq!(event_reason(), "security_event_replayed");
    // credential-change about the provider's subject p-alice (iss_sub): the same.
    let (status, issued) = exchange(&app, NORTH, &again, ID_TOKEN).await;
    assert_eq!(status, 200, "{issued}");
    let access = issued["access_token"].as_str().expect("access").to_owned();
    assert_eq!(app.get_with(records, &access).await.status, 200);
    let iss_sub = json!({ "format": "iss_sub", "iss": a, "sub": "p-alice" });
    let changed = set("credential-change", iss_sub, json!({ "typ": "secevent+jwt" })).await;
    assert_eq!(push(changed, secevent).await.status, 202);
    assert_eq!(event_reason(), "provider_session_revoked");
    assert_eq!(app.get_with(records, &access).await.status, 401);
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The reason of the last browser sign-in callback (or start, with `action`) in the audit log.
fn last_sign_in_reason(app: &TestApp, action: &str) -> String {
    let sql = format!(
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = '{action}' ORDER BY rowid DESC LIMIT 1"
    );
    app.query_strings("audit.db", &sql).into_iter().next().unwrap_or_default()
}

/// A query parameter of a URL (decoded).
fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    health_identity::form::parse(query.as_bytes()).ok()?.remove(name)
}

/// The value of cookie `name` among a reply's `Set-Cookie` headers, with the whole header.
fn set_cookie(reply: &health_e2e::Reply, name: &str) -> Option<(String, String)> {
    reply.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|header| {
        let pair = header.split(';').next()?;
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| (v.to_owned(), header.to_owned()))
    })
}

/// Browser sign-in (issue 17 item 5): the authorization code flow with PKCE against
/// oidc-provider, its own devInteractions login and consent, ending as a portal session; and
/// the refusals: an open redirect, an unknown, replayed or other browser's `state`, a code the
/// provider does not redeem. (The `nonce` check is `health_identity`'s unit test: oidc-provider
/// puts the request's nonce in the ID token, so no wrong one comes from it.)
#[tokio::test(flavor = "multi_thread")]
async fn browser_sign_in_with_the_code_flow_and_pkce() {
    let test = "browser_sign_in_with_the_code_flow_and_pkce";
    let settings = json!({ "mfa_roles": ["doctor", "admin"] });
    let Some(Connected { idp, app, a, .. }) = connected(test, Keys::Discovery, settings).await else { return };
    let callback = format!("http://portal.test/auth/federation/{NORTH}/callback");
    idp.control("signin-client", json!({ "provider": "a", "client": "health-north", "redirect_uris": [callback] }))
        .await;
    let claims = json!({ "email": "Alice@North.example", "email_verified": true });
    idp.control("account", json!({ "provider": "a", "account": "p-alice", "claims": claims })).await;
    let alice_id = link(&app, NORTH, "alice", "alice@north.example").await;

    let host = ("host", "portal.test");
    let authorize = |return_to: &'static str| {
        let app = &app;
        async move {
            let path = format!("/auth/federation/{NORTH}/authorize?return_to={return_to}");
            app.send("GET", &path, &[host], "").await
        }
    };
    // No open redirect.
    for evil in ["https%3A%2F%2Fevil.example%2F", "%2F%2Fevil", "%2F%5Cevil"] {
        let refused = authorize(evil).await;
        assert_eq!(refused.status, 400, "{evil}: {}", refused.body);
        assert!(refused.header("location").is_empty());
        assert_eq!(last_sign_in_reason(&app, "auth.federation.authorize"), "sign_in_return_to_refused");
    }
    let off = app.send("GET", &format!("/auth/federation/{SOUTH}/authorize"), &[host], "").await;
    assert_eq!(off.status, 400, "{}", off.body);
    // What the portal's sign-in page asks: offered by the tenant with a provider only.
    let offer = app.send("GET", &format!("/auth/federation/{NORTH}"), &[host], "").await.json();
    let authorize_path = format!("/auth/federation/{NORTH}/authorize");
    assert_eq!((&offer["sign_in"], offer["authorize"].as_str()), (&json!(true), Some(authorize_path.as_str())));
    for tenant in [SOUTH, "no-such-tenant"] {
        let none = app.send("GET", &format!("/auth/federation/{tenant}"), &[host], "").await.json();
        assert_eq!((&none["sign_in"], &none["authorize"]), (&json!(false), &Value::Null), "{tenant}");
    }

    // The start: state, nonce and PKCE, to the provider's authorization endpoint.
    let started = authorize("%2Fapp%2F%3Fview%3Drecords").await;
    assert_eq!(started.status, 302, "{}", started.body);
    let to_provider = started.header("location").to_owned();
    assert!(to_provider.starts_with(&format!("{a}/auth?")), "{to_provider}");
    let expect = [
        ("response_type", "code"),
        ("client_id", "health-north"),
        ("redirect_uri", callback.as_str()),
        ("scope", "openid email"),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in expect {
        assert_eq!(param(&to_provider, name).as_deref(), Some(value), "{name} in {to_provider}");
    }
    let state = param(&to_provider, "state").expect("state");
    assert!(param(&to_provider, "nonce").is_some_and(|n| n.len() >= 22));
    assert_eq!(param(&to_provider, "code_challenge").map(|c| c.len()), Some(43));
    let (browser, browser_header) = set_cookie(&started, "health_signin").expect("the browser's cookie");
    assert!(browser_header.contains("HttpOnly") && browser_header.contains("SameSite=Lax"), "{browser_header}");
    let browser_cookie = format!("health_signin={browser}");

    // At the provider: its login form, then its consent, then back to the callback.
    let mut jar = oidc::Jar::default();
    let mut next = to_provider.clone();
    let mut logged_in = false;
    let back = loop {
        let (status, location) = if next.contains("/interaction/") {
            let body = if logged_in { "prompt=consent" } else { "prompt=login&login=p-alice&password=any" };
            logged_in = true;
            idp.browse("POST", &next, &mut jar, body).await
        } else {
            idp.browse("GET", &next, &mut jar, "").await
        };
        let location = location.unwrap_or_else(|| panic!("{status} without a location at {next}"));
        if location.starts_with(&callback) {
            break location;
        }
        next = if location.starts_with('/') { format!("{}{location}", idp.origin()) } else { location };
    };
    assert_eq!(param(&back, "state").as_deref(), Some(state.as_str()));
    let code = param(&back, "code").expect("code");
    let back_path = back.strip_prefix("http://portal.test").expect("the callback's path").to_owned();

    // Another browser's callback (no cookie binding it): refused, and the state is used up.
    let other = authorize("%2Fapp%2F").await;
    let other_state = param(other.header("location"), "state").expect("state");
    let path = format!("/auth/federation/{NORTH}/callback?code={code}&state={other_state}");
    assert_eq!(app.send("GET", &path, &[host], "").await.status, 400);
    assert_eq!(last_sign_in_reason(&app, "auth.federation.callback"), "sign_in_state_unknown");
    // An unknown state.
    let path = format!("/auth/federation/{NORTH}/callback?code={code}&state=not-a-state");
    assert_eq!(app.send("GET", &path, &[host, ("cookie", &browser_cookie)], "").await.status, 400);
    assert_eq!(last_sign_in_reason(&app, "auth.federation.callback"), "sign_in_state_unknown");
    // A code the provider does not redeem.
    let bogus = authorize("%2Fapp%2F").await;
    let bogus_state = param(bogus.header("location"), "state").expect("state");
    let (bogus_browser, _) = set_cookie(&bogus, "health_signin").expect("cookie");
    let path = format!("/auth/federation/{NORTH}/callback?code=forged&state={bogus_state}");
    let refused = app.send("GET", &path, &[host, ("cookie", &format!("health_signin={bogus_browser}"))], "").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(last_sign_in_reason(&app, "auth.federation.callback"), "sign_in_code_refused");

    // The callback: signed in as a portal session, sent back where the sign-in began.
    let signed_in = app.send("GET", &back_path, &[host, ("cookie", &browser_cookie)], "").await;
    assert_eq!(signed_in.status, 303, "{}\n{}", signed_in.body, app.app.guest_output().join("\n"));
    assert_eq!(signed_in.header("location"), "/app/?view=records");
    assert_eq!(last_sign_in_reason(&app, "auth.federation.callback"), "provider_sign_in");
    let (refresh, refresh_header) = set_cookie(&signed_in, "health_portal_refresh").expect("the portal's cookie");
    assert!(refresh_header.contains("Path=/auth/portal") && refresh_header.contains("HttpOnly"), "{refresh_header}");
    // Replayed: refused.
    let replayed = app.send("GET", &back_path, &[host, ("cookie", &browser_cookie)], "").await;
    assert_eq!(replayed.status, 400);
    assert_eq!(last_sign_in_reason(&app, "auth.federation.callback"), "sign_in_state_unknown");

    // The page restores its session as after a reload.
    let pair = format!("health_portal_refresh={refresh}");
    let portal = [host, ("origin", "http://portal.test"), ("x-health-portal", "1"), ("cookie", pair.as_str())];
    let restored = app.send("POST", "/auth/portal/refresh", &portal, "").await;
    assert_eq!(restored.status, 200, "{}", restored.body);
    let platform = claims_of(restored.json()["access_token"].as_str().expect("access_token"));
    assert_eq!((platform["sub"].as_str(), platform["role"].as_str()), (Some(alice_id.as_str()), Some("patient")));
}
