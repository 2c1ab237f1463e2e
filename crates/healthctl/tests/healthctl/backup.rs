//! `healthctl backup` as a script runs it, on store files made here (the drill against a
//! running platform is tests/e2e/backup.rs): a recipient key pair from `keygen`, an archive to
//! it, verify and restore with the private half; and the exit codes of what is refused.

use std::path::Path;
use std::process::{Command, Output};

fn healthctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_healthctl"))
        .current_dir(dir)
        .env("BACKUP_PASSPHRASE", "a passphrase for this test")
        .env("SHORT_PASSPHRASE", "short")
        .args(args)
        .output()
        .expect("healthctl runs")
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A runtime configuration with one database and one key-value store, relative paths as in the
/// repository's (`.spin/...`), and the spin.toml that uses them.
fn state(dir: &Path) {
    std::fs::create_dir(dir.join(".spin")).expect(".spin");
    let audit = rusqlite::Connection::open(dir.join(".spin/audit.db")).expect("opens");
    audit.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE audit_events (seq INTEGER); INSERT INTO audit_events VALUES (1), (2);").expect("audit");
    let keys = rusqlite::Connection::open(dir.join(".spin/private-keys.db")).expect("opens");
    keys.execute_batch(
        "CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key));
         INSERT INTO spin_key_value VALUES ('private-keys', 'demo-hospital/k1', x'00');",
    )
    .expect("keys");
    std::fs::write(
        dir.join("runtime-config.toml"),
        "[key_value_store.private-keys]\ntype = \"spin\"\npath = \".spin/private-keys.db\"\n\n\
         [sqlite_database.audit]\ntype = \"spin\"\npath = \".spin/audit.db\"\n",
    )
    .expect("config");
    std::fs::write(
        dir.join("spin.toml"),
        "[component.jwks]\nkey_value_stores = [\"private-keys\"]\nsqlite_databases = [\"audit\"]\n",
    )
    .expect("manifest");
}

#[test]
fn a_recipient_archive_round_trips_and_refusals_have_their_exit_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    state(dir);

    let keygen = healthctl(dir, &["backup", "keygen", "--out", "recipient.jwk"]);
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    std::fs::write(dir.join("recipient.pub.jwk"), &keygen.stdout).expect("public key");
    let public: serde_json::Value = serde_json::from_slice(&keygen.stdout).expect("a JWK");
    assert!(public.get("d").is_none(), "keygen printed the private key: {public}");
    let private = std::fs::read_to_string(dir.join("recipient.jwk")).expect("private key");
    assert!(private.contains("\"d\""));

    let created = healthctl(dir, &["backup", "create", "--out", "b.hbk", "--recipient", "recipient.pub.jwk"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let report: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON");
    assert_eq!(report["files"][0]["rows"]["audit_events"], 2);

    let verified = healthctl(dir, &["backup", "verify", "b.hbk", "--identity", "recipient.jwk"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let restored = healthctl(
        dir,
        &["backup", "restore", "b.hbk", "--into", "restored", "--confirm", "--identity", "recipient.jwk"],
    );
    assert!(restored.status.success(), "{}", stderr(&restored));
    let keys = rusqlite::Connection::open(dir.join("restored/private-keys.db")).expect("restored");
    let key: String = keys.query_row("SELECT key FROM spin_key_value", [], |r| r.get(0)).expect("row");
    assert_eq!(key, "demo-hospital/k1");

    // 2: usage and configuration.
    let mut bad_config = std::fs::read_to_string(dir.join("runtime-config.toml")).expect("config");
    bad_config.push_str("\n[key_value_store.revocations]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/1\"\n");
    std::fs::write(dir.join("cloud.toml"), bad_config).expect("cloud config");
    for (args, says) in [
        (vec!["backup", "restore", "b.hbk", "--into", "again", "--identity", "recipient.jwk"], "--confirm"),
        (
            vec!["backup", "restore", "b.hbk", "--into", "restored", "--confirm", "--identity", "recipient.jwk"],
            "not empty",
        ),
        (vec!["backup", "verify", "b.hbk", "--identity", "recipient.pub.jwk"], "private key"),
        (vec!["backup", "create", "--out", "b.hbk", "--passphrase-env", "BACKUP_PASSPHRASE"], "exists"),
        (vec!["backup", "create", "--out", "c.hbk", "--passphrase-env", "SHORT_PASSPHRASE"], "at least"),
        (vec!["backup", "create", "--out", "c.hbk", "--passphrase-env", "NO_SUCH_VARIABLE"], "not set"),
        (
            vec![
                "backup",
                "create",
                "--out",
                "c.hbk",
                "--passphrase-env",
                "BACKUP_PASSPHRASE",
                "--runtime-config-file",
                "cloud.toml",
            ],
            "redis",
        ),
    ] {
        let output = healthctl(dir, &args);
        assert_eq!(code(&output), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(says), "{args:?}: {}", stderr(&output));
    }
    assert!(!dir.join("again").exists() && !dir.join("c.hbk").exists());

    // 1: an archive that does not verify (a flipped byte, a wrong key), and nothing restored.
    let mut bytes = std::fs::read(dir.join("b.hbk")).expect("archive");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("flipped.hbk"), bytes).expect("flipped");
    let flipped = healthctl(dir, &["backup", "verify", "flipped.hbk", "--identity", "recipient.jwk"]);
    assert_eq!(code(&flipped), Some(1), "{}", stderr(&flipped));
    assert!(stderr(&flipped).contains("does not verify"), "{}", stderr(&flipped));
    let wrong = healthctl(
        dir,
        &["backup", "restore", "b.hbk", "--into", "wrong", "--confirm", "--passphrase-env", "BACKUP_PASSPHRASE"],
    );
    assert_eq!(code(&wrong), Some(1), "{}", stderr(&wrong));
    assert!(!dir.join("wrong").exists(), "a refused restore left its directory");
}
