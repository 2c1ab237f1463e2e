//! `healthctl`: the platform operator's command-line tool. It talks to the admin API of a
//! running app (`cargo xtask up`, `spin up` or a deployment) with the operator token from
//! `HEALTH_OPERATOR_TOKEN`. It holds no keys; `secrets` computes, offline,
//! the value of a secret variable from a key the operator passes in the environment. `backup`
//! alone reads the stores themselves: it snapshots the files a runtime configuration places
//! them in, encrypted, and restores them into a new state directory (`backup.rs`). The
//! self-service commands (`patients access-log`, `patients export`, `auth change-password`),
//! `care-team`, `labs` and `orders` act as a signed-in user instead, with the access token in
//! `HEALTHCTL_ACCESS_TOKEN`.
//!
//! Exit codes: 0 done; 1 the server refused (4xx, its problem detail printed), the audit chain
//! is broken, or a backup does not verify; 2 bad usage or configuration; 3 the server failed or
//! could not be reached, or a store could not be read.

mod backup;
mod import;
mod labs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use health_core::TenantId;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(version, about = "Operate the health platform: tenants, keys, tokens and the audit trail")]
struct Cli {
    /// Base URL of the platform.
    #[arg(long, env = "HEALTHCTL_URL", default_value = "http://127.0.0.1:3000", global = true)]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants.
    #[command(subcommand)]
    Tenants(Tenants),
    /// Tenant keys.
    #[command(subcommand)]
    Keys(Keys),
    /// Access tokens.
    #[command(subcommand)]
    Tokens(Tokens),
    /// The hash-chained audit trail.
    #[command(subcommand)]
    Audit(Audit),
    /// A tenant's users (e.g. a new tenant's first admin). Passwords come from the
    /// `HEALTHCTL_PASSWORD` environment variable, never from arguments.
    #[command(subcommand)]
    Users(Users),
    /// Print the current TOTP code for a base32 secret (what an authenticator app shows).
    Totp {
        #[arg(long, env = "HEALTHCTL_TOTP_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// Compute secret variables offline (no server is contacted).
    #[command(subcommand)]
    Secrets(Secrets),
    /// Patients: the tenant admin registers them, links their accounts and imports them from a
    /// file; a patient reads their own data (the admin, the access log). The access token comes
    /// from `HEALTHCTL_ACCESS_TOKEN`.
    #[command(subcommand)]
    Patients(Patients),
    /// The signed-in user's own account; the access token comes from `HEALTHCTL_ACCESS_TOKEN`.
    #[command(subcommand)]
    Auth(Auth),
    /// Care teams: the tenant admin adds and ends memberships and lists a patient's team; a
    /// doctor lists their own patients. The access token comes from `HEALTHCTL_ACCESS_TOKEN`.
    #[command(subcommand)]
    CareTeam(CareTeam),
    /// The tenant admin's alerts (failed logins, scraping, break-glass, replays, chain breaks,
    /// ...): list and acknowledge. The admin's access token comes from `HEALTHCTL_ACCESS_TOKEN`.
    #[command(subcommand)]
    Alerts(Alerts),
    /// A tenant's OpenID provider (sign-in with the hospital's identity provider through the
    /// token exchange at `/auth/token`), and the provider identities linked to its users.
    #[command(subcommand)]
    Federation(Federation),
    /// Lab organisations: the tenant admin registers them and attaches lab users. The access
    /// token comes from `HEALTHCTL_ACCESS_TOKEN`.
    #[command(subcommand)]
    Labs(labs::Labs),
    /// Lab orders: a doctor orders a test and lists a patient's orders; a lab user lists their
    /// queue and appends results. The access token comes from `HEALTHCTL_ACCESS_TOKEN`.
    #[command(subcommand)]
    Orders(labs::Orders),
    /// Encrypted backups of the stores (local files), made while the platform serves; verify
    /// and restore into a new state directory. The passphrase comes from the environment
    /// variable `--passphrase-env` names (or a file), never from an argument.
    #[command(subcommand)]
    Backup(backup::Command),
}

#[derive(Subcommand)]
enum Federation {
    /// Connect the tenant to its provider (replacing any settings).
    Set {
        #[arg(long)]
        tenant: String,
        /// The provider's `iss`, exactly.
        #[arg(long)]
        issuer: String,
        /// The `aud` its tokens carry for this platform (the client id registered there).
        #[arg(long)]
        audience: String,
        /// The discovery document (its `jwks_uri` is followed); or `--jwks-uri`.
        #[arg(long, conflicts_with = "jwks_uri", required_unless_present = "jwks_uri")]
        discovery_url: Option<String>,
        #[arg(long)]
        jwks_uri: Option<String>,
        /// The claim linked identities are matched on.
        #[arg(long, default_value = "email")]
        subject_claim: String,
        /// Roles that must have used MFA at the provider (comma-separated).
        #[arg(long, value_delimiter = ',')]
        mfa_roles: Vec<String>,
        /// `amr` values that count as MFA (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "mfa")]
        mfa_amr: Vec<String>,
        /// `acr` values that count as MFA too (comma-separated).
        #[arg(long, value_delimiter = ',')]
        mfa_acr: Vec<String>,
        /// Seconds, at most 60.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(0..=60))]
        clock_tolerance: i64,
        /// Seconds between refetches of the provider's JWK Set for unknown `kid`s.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=3600))]
        jwks_refetch_cooldown: i64,
        /// Refuse local passwords for the tenant (but the break-glass admin's).
        #[arg(long, requires = "break_glass")]
        required: bool,
        /// The gateway accepts the provider's JWT access tokens directly (for linked users).
        #[arg(long)]
        accept_provider_tokens: bool,
        /// The admin's username that may still log in with a password when `--required`.
        #[arg(long)]
        break_glass: Option<String>,
    },
    /// The tenant's provider settings.
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Turn the provider off (the settings are kept): passwords work again, exchanges are refused.
    Disable {
        #[arg(long)]
        tenant: String,
    },
    /// Link a provider identity (the value of its subject claim, e.g. an email) to a user.
    Link {
        #[arg(long)]
        tenant: String,
        /// The user id (`u-...`, as `users list` shows it).
        #[arg(long)]
        id: String,
        #[arg(long)]
        external_id: String,
    },
}

#[derive(Subcommand)]
enum Alerts {
    /// The tenant's alerts, oldest first, every page (or only open or acknowledged ones).
    List {
        #[arg(long, value_parser = ["open", "acknowledged"])]
        status: Option<String>,
    },
    /// Acknowledge one alert by its id (as `alerts list` shows it).
    Ack {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
}

#[derive(Subcommand)]
enum CareTeam {
    /// Put a doctor on a patient's care team (tenant admin).
    Add {
        #[arg(long)]
        patient: String,
        /// The clinician's user id (`u-...`, as `users list` shows it).
        #[arg(long)]
        member: String,
        #[arg(long, value_parser = ["encounter", "referral", "admission", "consultation", "primary-care", "other"])]
        reason: String,
        /// Unix seconds; default now.
        #[arg(long)]
        starts_at: Option<i64>,
        /// Unix seconds; default none (until ended).
        #[arg(long)]
        ends_at: Option<i64>,
    },
    /// End a clinician's live and future memberships of a patient's care team now (tenant admin).
    End {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        member: String,
    },
    /// A patient's care team, ended memberships included (the admin, the patient, a member).
    List {
        #[arg(long)]
        patient: String,
    },
    /// The patients whose care team the signed-in doctor is on now.
    Patients,
}

#[derive(Subcommand)]
enum Patients {
    /// Who read or changed the patient's data, when and under which rule: every page of the
    /// access log, as one JSON document or one FHIR R4 Bundle of AuditEvents (IHE BALP).
    AccessLog {
        #[arg(long)]
        patient: String,
        #[arg(long, default_value = "json", value_parser = ["json", "fhir"])]
        format: String,
        /// Events asked per request (the server's largest page is 1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Everything held about the patient, with their access log, as one JSON document.
    Export {
        #[arg(long)]
        patient: String,
    },
    /// Register a patient (tenant admin). Without `--patient` the platform makes an id; with it,
    /// registering the same patient again changes nothing.
    Register {
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        given_name: String,
        #[arg(long)]
        family_name: String,
        /// `YYYY-MM-DD`.
        #[arg(long)]
        birth_date: String,
    },
    /// Link a patient's user account (its id, as `users list` shows it) to their record.
    Link {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        user: String,
    },
    /// Register every patient of an NDJSON or CSV file (columns `patient_id`, `given_name`,
    /// `family_name`, `birth_date`, optional `user_id` to link), reporting each failed row and
    /// going on; exits 1 if any row failed. Safe to run again.
    Import { file: std::path::PathBuf },
}

#[derive(Subcommand)]
enum Auth {
    /// Change the signed-in user's password: the current one from `HEALTHCTL_PASSWORD`, the
    /// new one from `HEALTHCTL_NEW_PASSWORD` (never arguments). Ends the user's other sessions.
    ChangePassword,
}

#[derive(Subcommand)]
enum Secrets {
    /// Print, as 64 hex characters, the `phi_wrapping_key` an upgrading deployment sets: the key
    /// the role services derived from `master_key` before they stopped holding it, so existing
    /// records keep opening. The master key comes from `HEALTHCTL_MASTER_KEY` (64 hex
    /// characters), never from an argument. A new deployment may use any random 32 bytes.
    PhiWrappingKey,
}

#[derive(Subcommand)]
enum Users {
    /// List a tenant's users (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Create a user with the password in `HEALTHCTL_PASSWORD` (12 to 1024 bytes).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        /// patient, doctor, nurse, pharmacist, receptionist, lab, insurance or admin.
        #[arg(long)]
        role: String,
    },
    /// Disable a user and end every session of theirs.
    Disable {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// Enable a disabled user.
    Enable {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// Set a new password (from `HEALTHCTL_PASSWORD`) and end every session.
    ResetPassword {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// Forget the user's TOTP enrolment (lost phone) and end every session.
    ResetMfa {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum Tokens {
    /// Revoke one access token of a tenant by its `jti`: the gateway refuses it from now on.
    /// A `jti` the tenant never issued is refused (exit 1, 404), nothing is written.
    Revoke {
        /// The token's `jti`. It is base64url, so it may begin with `-`: taken as the value.
        #[arg(long, allow_hyphen_values = true)]
        jti: String,
        /// The token's tenant (revocations are per tenant).
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum Audit {
    /// Check an audit hash chain link by link; exits 1 if it is broken.
    Verify {
        #[command(flatten)]
        chain: ChainArg,
    },
    /// Export an audit chain as NDJSON on stdout (`{"seq","hash","event"}` per line, in chain
    /// order), every page of it; redacted when the platform's `audit_redaction` is `strict`.
    Export {
        #[command(flatten)]
        chain: ChainArg,
        /// Only events at or after this Unix time.
        #[arg(long)]
        from: Option<u64>,
        /// Only events at or before this Unix time.
        #[arg(long)]
        to: Option<u64>,
        /// Only events with this outcome.
        #[arg(long, value_parser = ["allow", "deny", "error"])]
        outcome: Option<String>,
    },
}

/// Which chain: a tenant's, or (operator token only) `_unattributed`, the requests refused
/// before any tenant could be verified.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ChainArg {
    #[arg(long)]
    tenant: Option<String>,
    /// The `_unattributed` chain.
    #[arg(long)]
    unattributed: bool,
}

impl ChainArg {
    fn path_segment(&self) -> Result<String, Failure> {
        match &self.tenant {
            Some(t) => Ok(tenant(t)?.to_string()),
            None => Ok(health_core::audit::NO_TENANT.to_owned()),
        }
    }
}

/// Events per export request (the server's largest page).
const EXPORT_PAGE: usize = 1000;

#[derive(Subcommand)]
enum Tenants {
    /// Create a tenant (its signing key).
    Create { tenant: String },
}

#[derive(Subcommand)]
enum Keys {
    /// Rotate a tenant's key: a new active key; the old one retires after the token lifetime.
    Rotate {
        #[arg(long)]
        tenant: String,
        /// Signing (`sig`) or encryption (`enc`) key.
        #[arg(long = "use", default_value = "sig", value_parser = ["sig", "enc"])]
        key_use: String,
        /// Algorithm of the new key (default: the current key's).
        #[arg(long, value_parser = ["RS256", "ES256", "EdDSA", "ECDH-ES+A256KW", "RSA-OAEP-256"])]
        alg: Option<String>,
    },
    /// Revoke a key at once: every token it signed is refused.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The key's `kid`. It is base64url, so it may begin with `-`: taken as the value.
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
    },
    /// List a tenant's keys and their statuses.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug)]
enum Failure {
    Usage(String),
    Refused(u16, String),
    Unavailable(String),
    /// Something checked is not as it should be (a backup that does not verify).
    Invalid(String),
}

fn tenant(text: &str) -> Result<TenantId, Failure> {
    TenantId::parse(text).map_err(|e| Failure::Usage(format!("{text:?}: {e}")))
}

fn request(url: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
    let (status, text) = request_text(url, method, path, body)?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    match status {
        200..=299 => Ok(value),
        _ => Err(refusal(status, &value)),
    }
}

/// The failure for a non-2xx answer with its (problem details) body.
fn refusal(status: u16, value: &Value) -> Failure {
    match status {
        400..=499 => {
            let title = value["title"].as_str().unwrap_or("refused");
            let detail = value["detail"].as_str().map(|d| format!(": {d}")).unwrap_or_default();
            Failure::Refused(status, format!("{title}{detail}"))
        }
        _ => Failure::Unavailable(format!("server error {status}")),
    }
}

/// One request with the operator token: the status and the body as text.
fn request_text(url: &str, method: &str, path: &str, body: Option<Value>) -> Result<(u16, String), Failure> {
    let token = std::env::var("HEALTH_OPERATOR_TOKEN")
        .map_err(|_| Failure::Usage("HEALTH_OPERATOR_TOKEN is not set (the platform operator token)".into()))?;
    send(url, method, path, body, &token)
}

/// A signed-in user's access token, from `HEALTHCTL_ACCESS_TOKEN`.
fn user_token() -> Result<String, Failure> {
    std::env::var("HEALTHCTL_ACCESS_TOKEN")
        .map_err(|_| Failure::Usage("HEALTHCTL_ACCESS_TOKEN is not set (a signed-in user's access token)".into()))
}

/// One request with a signed-in user's access token (`HEALTHCTL_ACCESS_TOKEN`).
fn request_as_user(url: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
    let token = user_token()?;
    let (status, text) = send(url, method, path, body, &token)?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    match status {
        200..=299 => Ok(value),
        _ => Err(refusal(status, &value)),
    }
}

/// Sends one request with `token` as its bearer credential.
fn send(url: &str, method: &str, path: &str, body: Option<Value>, token: &str) -> Result<(u16, String), Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let target = format!("{}{path}", url.trim_end_matches('/'));
    let auth = format!("Bearer {token}");
    let result = match (method, body) {
        ("POST", Some(body)) => agent.post(&target).header("authorization", &auth).send_json(body),
        ("POST", None) => agent.post(&target).header("authorization", &auth).send_empty(),
        ("PUT", Some(body)) => agent.put(&target).header("authorization", &auth).send_json(body),
        ("PUT", None) => agent.put(&target).header("authorization", &auth).send_empty(),
        ("DELETE", None) => agent.delete(&target).header("authorization", &auth).call(),
        ("GET", None) => agent.get(&target).header("authorization", &auth).call(),
        (method, body) => {
            let with = if body.is_some() { "with" } else { "without" };
            return Err(Failure::Usage(format!("healthctl sends no {method} {with} a body")));
        }
    };
    let mut response = result.map_err(|e| Failure::Unavailable(format!("{target}: {e}")))?;
    let status = response.status().as_u16();
    let text =
        response.body_mut().read_to_string().map_err(|e| Failure::Unavailable(format!("reading response: {e}")))?;
    Ok((status, text))
}

/// Writes every page of an audit export to `out`; returns how many events it wrote.
fn export(
    url: &str,
    chain: &ChainArg,
    filters: &[(&str, String)],
    out: &mut impl std::io::Write,
) -> Result<usize, Failure> {
    let base = format!("/admin/audit/export/{}?limit={EXPORT_PAGE}", chain.path_segment()?);
    let base = filters.iter().fold(base, |path, (name, value)| format!("{path}&{name}={value}"));
    let (mut after, mut written) = (None::<i64>, 0);
    loop {
        let path = match after {
            Some(seq) => format!("{base}&after={seq}"),
            None => base.clone(),
        };
        let (status, text) = request_text(url, "GET", &path, None)?;
        if !(200..=299).contains(&status) {
            return Err(refusal(status, &serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        for line in &lines {
            let seq = serde_json::from_str::<Value>(line).ok().and_then(|v| v["seq"].as_i64());
            let seq = seq.ok_or_else(|| Failure::Unavailable("an export line without a seq".into()))?;
            writeln!(out, "{line}").map_err(|e| Failure::Unavailable(format!("writing the export: {e}")))?;
            after = Some(seq);
        }
        written += lines.len();
        if lines.len() < EXPORT_PAGE {
            return Ok(written);
        }
    }
}

fn run(cli: Cli) -> Result<Value, Failure> {
    let url = cli.url;
    match cli.command {
        Command::Tenants(Tenants::Create { tenant: t }) => {
            request(&url, "POST", "/admin/tenants", Some(json!({ "tenant_id": tenant(&t)? })))
        }
        Command::Keys(Keys::Rotate { tenant: t, key_use, alg }) => {
            let mut body = json!({ "tenant_id": tenant(&t)?, "use": key_use });
            if let Some(alg) = alg {
                body["alg"] = json!(alg);
            }
            request(&url, "POST", "/admin/rotate-key", Some(body))
        }
        Command::Keys(Keys::Revoke { tenant: t, kid }) => {
            request(&url, "POST", "/admin/revoke-key", Some(json!({ "tenant_id": tenant(&t)?, "kid": kid })))
        }
        Command::Keys(Keys::List { tenant: t }) => request(&url, "GET", &format!("/admin/keys/{}", tenant(&t)?), None),
        Command::Tokens(Tokens::Revoke { jti, tenant: t }) => {
            if jti.is_empty() || jti.len() > 128 {
                return Err(Failure::Usage("--jti must be 1 to 128 characters".into()));
            }
            request(&url, "POST", "/admin/revoke-token", Some(json!({ "jti": jti, "tenant_id": tenant(&t)? })))
        }
        Command::Users(command) => users(&url, command),
        Command::Patients(Patients::AccessLog { patient, format, page_size }) => {
            access_log(&url, &patient, &format, page_size)
        }
        Command::Patients(Patients::Export { patient }) => {
            request_as_user(&url, "GET", &format!("/api/patients/{}/export", patient_id(&patient)?), None)
        }
        Command::Patients(Patients::Register { patient, given_name, family_name, birth_date }) => {
            let mut body = json!({ "given_name": given_name, "family_name": family_name, "birth_date": birth_date });
            if let Some(id) = patient {
                body["patient_id"] = json!(patient_id(&id)?);
            }
            request_as_user(&url, "POST", "/api/admin/patients", Some(body))
        }
        Command::Patients(Patients::Link { patient, user }) => {
            let user =
                health_core::Opaque::parse(&user).map_err(|e| Failure::Usage(format!("--user {user:?}: {e}")))?;
            let path = format!("/api/admin/patients/{}/account", patient_id(&patient)?);
            request_as_user(&url, "PUT", &path, Some(json!({ "user_id": user })))
        }
        Command::Patients(Patients::Import { file }) => import_patients(&url, &file),
        Command::Auth(Auth::ChangePassword) => {
            let new = std::env::var("HEALTHCTL_NEW_PASSWORD")
                .map_err(|_| Failure::Usage("set HEALTHCTL_NEW_PASSWORD to the new password".into()))?;
            let body = json!({ "currentPassword": password()?, "newPassword": new });
            request_as_user(&url, "POST", "/api/auth/change-password", Some(body))
        }
        Command::CareTeam(command) => care_team(&url, command),
        Command::Alerts(Alerts::List { status }) => alerts(&url, status.as_deref()),
        Command::Alerts(Alerts::Ack { id }) => {
            request_as_user(&url, "POST", &format!("/api/admin/alerts/{id}/acknowledge"), None)
        }
        Command::Federation(command) => federation(&url, command),
        Command::Labs(command) => labs::labs(&url, command),
        Command::Orders(command) => labs::orders(&url, command),
        Command::Backup(command) => backup::run(command),
        Command::Totp { secret } => totp_code(&secret),
        Command::Secrets(Secrets::PhiWrappingKey) => {
            println!("{}", phi_wrapping_key()?);
            Ok(Value::Null)
        }
        Command::Audit(Audit::Verify { chain }) => {
            let name = chain.path_segment()?;
            let report = request(&url, "GET", &format!("/admin/audit/verify/{name}"), None)?;
            if report["intact"] == json!(true) {
                Ok(report)
            } else {
                let at = report["broken_at"].as_i64().unwrap_or_default();
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                Err(Failure::Refused(200, format!("audit chain of {name} is broken at event {at}")))
            }
        }
        Command::Audit(Audit::Export { chain, from, to, outcome }) => {
            let mut filters = Vec::new();
            filters.extend(from.map(|v| ("from", v.to_string())));
            filters.extend(to.map(|v| ("to", v.to_string())));
            filters.extend(outcome.map(|v| ("outcome", v)));
            let events = export(&url, &chain, &filters, &mut std::io::stdout().lock())?;
            eprintln!("healthctl: exported {events} events of {}", chain.path_segment()?);
            Ok(Value::Null)
        }
    }
}

fn federation(url: &str, command: Federation) -> Result<Value, Failure> {
    match command {
        Federation::Set {
            tenant: t,
            issuer,
            audience,
            discovery_url,
            jwks_uri,
            subject_claim,
            mfa_roles,
            mfa_amr,
            mfa_acr,
            clock_tolerance,
            jwks_refetch_cooldown,
            required,
            accept_provider_tokens,
            break_glass,
        } => {
            let settings = json!({
                "enabled": true, "required": required, "break_glass": break_glass, "issuer": issuer,
                "audience": audience, "discovery_url": discovery_url, "jwks_uri": jwks_uri,
                "subject_claim": subject_claim, "mfa_roles": mfa_roles, "mfa_amr": mfa_amr, "mfa_acr": mfa_acr,
                "clock_tolerance_secs": clock_tolerance, "jwks_refetch_cooldown_secs": jwks_refetch_cooldown,
                "accept_provider_tokens": accept_provider_tokens,
            });
            request(
                url,
                "POST",
                "/auth/admin/federation",
                Some(json!({ "tenant_id": tenant(&t)?, "settings": settings })),
            )
        }
        Federation::Show { tenant: t } => {
            request(url, "GET", &format!("/auth/admin/federation?tenant_id={}", tenant(&t)?), None)
        }
        Federation::Disable { tenant: t } => {
            request(url, "POST", "/auth/admin/federation/disable", Some(json!({ "tenant_id": tenant(&t)? })))
        }
        Federation::Link { tenant: t, id, external_id } => {
            let id = health_core::Opaque::parse(&id).map_err(|_| Failure::Usage("--id is not a user id".into()))?;
            let body = json!({ "tenant_id": tenant(&t)?, "external_id": external_id });
            request(url, "POST", &format!("/auth/admin/users/{id}/link"), Some(body))
        }
    }
}

/// `patients import`: every row tried, the report printed; a failed row makes the exit code 1.
fn import_patients(url: &str, file: &std::path::Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let token = user_token()?;
    let mut unavailable = None;
    let report =
        import::run(import::rows(&text), |method, path, body| match send(url, method, path, Some(body), &token) {
            Ok((status, text)) => (status, serde_json::from_str(&text).unwrap_or(Value::String(text))),
            Err(e) => {
                unavailable.get_or_insert(e);
                (0, Value::String("the platform did not answer".into()))
            }
        });
    if let Some(e) = unavailable.filter(|_| report["created"] == 0 && report["unchanged"] == 0) {
        return Err(e);
    }
    if report["errors"].as_array().is_some_and(|e| !e.is_empty()) {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Err(Failure::Invalid(format!(
            "{} of {} rows failed",
            report["errors"].as_array().map_or(0, Vec::len),
            report["rows"]
        )));
    }
    Ok(report)
}

/// Every page of the tenant's alerts, as one `{"tenant_id","alerts"}` document.
fn alerts(url: &str, status: Option<&str>) -> Result<Value, Failure> {
    let (mut all, mut tenant) = (Vec::new(), Value::Null);
    let mut after: Option<i64> = None;
    loop {
        let mut query = vec!["limit=1000".to_owned()];
        query.extend(status.map(|s| format!("status={s}")));
        query.extend(after.map(|a| format!("after={a}")));
        let mut page = request_as_user(url, "GET", &format!("/api/admin/alerts?{}", query.join("&")), None)?;
        if tenant.is_null() {
            tenant = page["tenant_id"].take();
        }
        if let Some(listed) = page["alerts"].as_array_mut() {
            all.append(listed);
        }
        match page["next_after"].as_i64() {
            Some(next) if after != Some(next) => after = Some(next),
            _ => break,
        }
    }
    Ok(json!({ "tenant_id": tenant, "alerts": all }))
}

fn care_team(url: &str, command: CareTeam) -> Result<Value, Failure> {
    let member_id =
        |text: &str| health_core::Opaque::parse(text).map_err(|e| Failure::Usage(format!("--member {text:?}: {e}")));
    match command {
        CareTeam::Add { patient, member, reason, starts_at, ends_at } => {
            let path = format!("/api/patients/{}/care-team/{}", patient_id(&patient)?, member_id(&member)?);
            let mut body = json!({ "reason": reason });
            if let Some(at) = starts_at {
                body["starts_at"] = json!(at);
            }
            if let Some(at) = ends_at {
                body["ends_at"] = json!(at);
            }
            request_as_user(url, "POST", &path, Some(body))
        }
        CareTeam::End { patient, member } => {
            let path = format!("/api/patients/{}/care-team/{}", patient_id(&patient)?, member_id(&member)?);
            request_as_user(url, "DELETE", &path, None)
        }
        CareTeam::List { patient } => {
            request_as_user(url, "GET", &format!("/api/patients/{}/care-team", patient_id(&patient)?), None)
        }
        CareTeam::Patients => request_as_user(url, "GET", "/api/care-team/patients", None),
    }
}

fn patient_id(text: &str) -> Result<health_core::PatientId, Failure> {
    health_core::PatientId::parse(text).map_err(|e| Failure::Usage(format!("--patient {text:?}: {e}")))
}

/// Every page of a patient's access log, joined: one JSON document (`entries`), or one FHIR
/// Bundle whose entries are every page's.
fn access_log(url: &str, patient: &str, format: &str, page_size: u32) -> Result<Value, Failure> {
    let patient = patient_id(patient)?;
    let base = format!("/api/patients/{patient}/access-log?format={format}&limit={page_size}");
    let mut joined: Option<Value> = None;
    let mut after = None::<i64>;
    loop {
        let path = after.map_or_else(|| base.clone(), |seq| format!("{base}&after={seq}"));
        let mut page = request_as_user(url, "GET", &path, None)?;
        let (items, next) = match format {
            "fhir" => {
                let next = page["link"][0]["url"]
                    .as_str()
                    .and_then(|u| u.rsplit_once("after="))
                    .and_then(|(_, rest)| rest.split('&').next().and_then(|n| n.parse::<i64>().ok()));
                (page["entry"].take(), next)
            }
            _ => (page["entries"].take(), page["next_after"].as_i64()),
        };
        let key = if format == "fhir" { "entry" } else { "entries" };
        let all = joined.get_or_insert_with(|| page.clone());
        if let (Some(all), Some(items)) = (all[key].as_array_mut(), items.as_array()) {
            all.extend(items.iter().cloned());
        } else {
            all[key] = items;
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut joined = joined.unwrap_or(Value::Null);
    if let Some(object) = joined.as_object_mut() {
        object.remove("link");
        object.remove("next_after");
    }
    Ok(joined)
}

fn password() -> Result<String, Failure> {
    std::env::var("HEALTHCTL_PASSWORD").map_err(|_| Failure::Usage("set HEALTHCTL_PASSWORD to the new password".into()))
}

fn users(url: &str, command: Users) -> Result<Value, Failure> {
    let action = |t: &str, id: &str, action: &str, body: Value| {
        let path = format!("/auth/admin/users/{id}/{action}");
        let mut body = body;
        body["tenant_id"] = json!(tenant(t)?);
        request(url, "POST", &path, Some(body))
    };
    match command {
        Users::List { tenant: t } => request(url, "GET", &format!("/auth/admin/users?tenant_id={}", tenant(&t)?), None),
        Users::Create { tenant: t, username, role } => {
            let body = json!({ "tenant_id": tenant(&t)?, "username": username, "role": role, "password": password()? });
            request(url, "POST", "/auth/admin/users", Some(body))
        }
        Users::Disable { tenant: t, id } => action(&t, &id, "disable", json!({})),
        Users::Enable { tenant: t, id } => action(&t, &id, "enable", json!({})),
        Users::ResetPassword { tenant: t, id } => action(&t, &id, "reset-password", json!({ "password": password()? })),
        Users::ResetMfa { tenant: t, id } => action(&t, &id, "reset-mfa", json!({})),
    }
}

/// `phi_wrapping_key` derived from the master key in `HEALTHCTL_MASTER_KEY`, as hex.
fn phi_wrapping_key() -> Result<String, Failure> {
    let master = std::env::var("HEALTHCTL_MASTER_KEY").map_err(|_| {
        Failure::Usage("set HEALTHCTL_MASTER_KEY to the deployment's master_key (64 hex characters)".into())
    })?;
    let master = health_core::SecretKey::from_hex(master.trim()).map_err(|_| {
        Failure::Usage("HEALTHCTL_MASTER_KEY must be 64 hex characters (32 bytes), as master_key is".into())
    })?;
    let key = health_core::phi::wrapping_key(&master);
    Ok(key.expose().iter().map(|b| format!("{b:02x}")).collect())
}

/// The shortest TOTP secret `healthctl totp` takes (RFC 4226 §4 requires 128 bits and
/// recommends 160; anything under 80 is not an enrolment's secret).
const TOTP_MIN_SECRET_BYTES: usize = 10;

fn totp_code(secret: &str) -> Result<Value, Failure> {
    // 80 bits at least (RFC 4226 §4): also catches a shell's `null` from an enrolment that
    // answered 409 (already enrolled) instead of a secret.
    let bytes = health_identity::totp::base32_decode(secret)
        .filter(|b| b.len() >= TOTP_MIN_SECRET_BYTES)
        .ok_or_else(|| Failure::Usage("--secret must be the base32 secret of an enrolment (80 bits or more)".into()))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or_default();
    let step = health_identity::totp::step_at(now);
    let remaining = health_identity::totp::STEP_SECS - now.rem_euclid(health_identity::totp::STEP_SECS);
    Ok(json!({ "otp": health_identity::totp::code(&bytes, step), "valid_for_secs": remaining }))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        // `Null`: the command wrote its own output (an NDJSON export, a secret's hex).
        Ok(Value::Null) => ExitCode::SUCCESS,
        Ok(value) => {
            // Not `println!`: a reader that stops early (`| head`) is not a panic.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("healthctl: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(status, message)) => {
            eprintln!("healthctl: refused ({status}): {message}");
            ExitCode::from(1)
        }
        Err(Failure::Unavailable(message)) => {
            eprintln!("healthctl: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Invalid(message)) => {
            eprintln!("healthctl: {message}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_refuses_what_is_not_an_enrolments_secret() {
        for bad in ["null", "", "JBSWY3DP", "not base32!"] {
            assert!(matches!(totp_code(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
        assert!(totp_code("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").is_ok());
    }

    #[test]
    fn self_service_commands_parse_and_refuse_bad_patient_ids() {
        let cli = Cli::try_parse_from(["healthctl", "patients", "access-log", "--patient", "p-1", "--format", "fhir"])
            .expect("parses");
        assert!(matches!(cli.command, Command::Patients(Patients::AccessLog { ref format, .. }) if format == "fhir"));
        assert!(
            Cli::try_parse_from(["healthctl", "patients", "access-log", "--patient", "p", "--format", "xml"]).is_err()
        );
        assert!(Cli::try_parse_from(["healthctl", "auth", "change-password"]).is_ok());
        assert!(matches!(patient_id("../p"), Err(Failure::Usage(_))));
    }

    #[test]
    fn care_team_commands_parse_and_refuse_bad_ids_before_sending() {
        let add =
            ["healthctl", "care-team", "add", "--patient", "p-1", "--member", "u-dr-grey", "--reason", "referral"];
        assert!(matches!(Cli::try_parse_from(add).expect("parses").command, Command::CareTeam(CareTeam::Add { .. })));
        let bad_reason = ["healthctl", "care-team", "add", "--patient", "p-1", "--member", "u-x", "--reason", "whim"];
        assert!(Cli::try_parse_from(bad_reason).is_err());
        assert!(Cli::try_parse_from(["healthctl", "care-team", "patients"]).is_ok());
        let end = CareTeam::End { patient: "p-1".into(), member: "u/../x".into() };
        assert!(matches!(care_team("http://127.0.0.1:1", end), Err(Failure::Usage(_))));
        let list = CareTeam::List { patient: "P-1".into() };
        assert!(matches!(care_team("http://127.0.0.1:1", list), Err(Failure::Usage(_))));
    }

    #[test]
    fn alert_commands_parse_and_refuse_a_bad_status_or_id() {
        let set = ["healthctl", "federation", "set", "--tenant", "t", "--issuer", "https://idp", "--audience", "a"];
        assert!(Cli::try_parse_from(set).is_err(), "a key source is required");
        let with = |extra: &[&'static str]| Cli::try_parse_from(set.iter().chain(extra).copied());
        assert!(with(&["--jwks-uri", "https://idp/jwks", "--mfa-roles", "doctor,admin"]).is_ok());
        assert!(with(&["--jwks-uri", "https://idp/jwks", "--discovery-url", "https://idp/.well-known"]).is_err());
        assert!(with(&["--jwks-uri", "https://idp/jwks", "--clock-tolerance", "61"]).is_err());
        assert!(with(&["--jwks-uri", "https://idp/jwks", "--required"]).is_err(), "required needs break-glass");
        let list = Cli::try_parse_from(["healthctl", "alerts", "list", "--status", "open"]).expect("parses");
        assert!(matches!(list.command, Command::Alerts(Alerts::List { status: Some(ref s) }) if s == "open"));
        let ack = Cli::try_parse_from(["healthctl", "alerts", "ack", "17"]).expect("parses");
        assert!(matches!(ack.command, Command::Alerts(Alerts::Ack { id: 17 })));
        assert!(Cli::try_parse_from(["healthctl", "alerts", "list", "--status", "closed"]).is_err());
        assert!(Cli::try_parse_from(["healthctl", "alerts", "ack", "0"]).is_err());
        assert!(Cli::try_parse_from(["healthctl", "alerts", "ack", "x"]).is_err());
    }

    #[test]
    fn a_jti_beginning_with_a_hyphen_is_a_value_not_an_option() {
        let cli =
            Cli::try_parse_from(["healthctl", "tokens", "revoke", "--tenant", "t", "--jti", "-vX3_a"]).expect("parses");
        match cli.command {
            Command::Tokens(Tokens::Revoke { jti, .. }) => assert_eq!(jti, "-vX3_a"),
            _ => panic!("not a revoke"),
        }
    }

    #[test]
    fn a_kid_beginning_with_a_hyphen_is_a_value_not_an_option() {
        let cli =
            Cli::try_parse_from(["healthctl", "keys", "revoke", "--tenant", "t", "--kid", "-3QfA_z"]).expect("parses");
        match cli.command {
            Command::Keys(Keys::Revoke { kid, .. }) => assert_eq!(kid, "-3QfA_z"),
            _ => panic!("not a key revoke"),
        }
    }
}
