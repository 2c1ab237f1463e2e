//! The README's shell blocks, pasted in order into one `bash` as a newcomer would, against a
//! fresh application (issue 20, item 6): every ```` ```sh ```` block runs but those right
//! after a `<!-- not-run: reason -->` line (servers that run until stopped, the benchmark,
//! fuzzing), and the script stops at the first command that fails (`set -euo pipefail`).
//!
//! What differs from a fresh clone is only where the app is: `localhost:3000` in the blocks
//! becomes the harness's address, and `HEALTHCTL_URL` points `healthctl` there. The blocks run
//! in a fresh directory under `target/` (so `cargo run -p healthctl` finds the workspace, and
//! `.spin/` starts empty but for the `dev-secrets.env` that `cargo xtask up` would have
//! written, here with the harness's secrets), with `demo/`, `spin.toml` and a `runtime-config.toml`
//! placing the app's stores linked in and `python3` the interop
//! environment's (it has `jwcrypto`). Needs `bash`, `curl` and `jq` (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use health_e2e::runtime::REQUIRE_ALL_ENV;
use health_e2e::{MASTER_KEY, OPERATOR_TOKEN, TestApp, root, secrets};

/// The marker line that keeps the next block from running, with its reason.
const NOT_RUN: &str = "<!-- not-run:";

/// One ```` ```sh ```` block of a Markdown file.
#[derive(Debug, PartialEq)]
struct Block {
    /// Line of the opening fence, from 1.
    line: usize,
    text: String,
    /// Why it does not run, if it is marked so.
    not_run: Option<String>,
}

/// Every ```` ```sh ```` block of `markdown`, in order. A block is marked not to run by a
/// `<!-- not-run: reason -->` line right before its fence.
fn shell_blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        if lines[at].trim_end() != "```sh" {
            at += 1;
            continue;
        }
        let not_run = at
            .checked_sub(1)
            .and_then(|before| lines[before].trim().strip_prefix(NOT_RUN))
            .map(|rest| rest.trim_end_matches("-->").trim().to_owned());
        let end = (at + 1..lines.len()).find(|&i| lines[i].trim_end() == "```").unwrap_or(lines.len());
        blocks.push(Block { line: at + 1, text: lines[at + 1..end].join("\n"), not_run });
        at = end + 1;
    }
    blocks
}

/// The interop environment's Python (`cargo xtask test` makes it), whose directory goes first
/// on `PATH` so the README's `python3` has `jwcrypto`.
fn python() -> PathBuf {
    let path = std::env::var_os("HEALTH_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/interop-venv/bin/python"));
    assert!(path.exists(), "{} missing: `cargo xtask test` (or `cargo xtask interop-venv`) makes it", path.display());
    path
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The script: each runnable block after a line naming it, `localhost:3000` replaced by `addr`.
fn script(blocks: &[Block], addr: &str) -> String {
    // Each command traced on stderr with the second it started, shown when the test fails.
    let mut script = String::from("set -euo pipefail\nPS4='+ ${SECONDS}s '\nset -x\n");
    for block in blocks.iter().filter(|b| b.not_run.is_none()) {
        script.push_str(&format!("printf '\\n### README.md:{}\\n'\n", block.line));
        script.push_str(&format!("printf '\\n### README.md:{} at %s s\\n' \"$SECONDS\" >&2\n", block.line));
        script.push_str(&block.text.replace("localhost:3000", addr).replace("127.0.0.1:3000", addr));
        script.push('\n');
    }
    script.push_str("printf '\\n### README.md: done\\n'\n");
    script
}

/// `.spin/dev-secrets.env` as `cargo xtask up` writes it, with the harness's secrets (the app
/// already runs with them), in `dir`.
fn write_dev_secrets(dir: &Path) {
    let mut text = String::from("# Written by tests/e2e/readme.rs as `cargo xtask up` would.\n");
    text.push_str(&format!("HEALTH_OPERATOR_TOKEN={OPERATOR_TOKEN}\n"));
    let mut variables: Vec<_> = secrets(MASTER_KEY).into_iter().collect();
    variables.sort();
    for (name, value) in variables {
        text.push_str(&format!("{name}={value}\n"));
    }
    std::fs::create_dir_all(dir.join(".spin")).expect("creating .spin");
    std::fs::write(dir.join(".spin/dev-secrets.env"), text).expect("writing dev-secrets.env");
}

#[tokio::test]
async fn every_shell_block_of_the_readme_runs_in_order_against_a_fresh_app() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("reading README.md");
    let blocks = shell_blocks(&readme);
    let unexplained: Vec<_> = blocks.iter().filter(|b| b.not_run.as_deref() == Some("")).map(|b| b.line).collect();
    assert!(unexplained.is_empty(), "README.md blocks marked not-run without a reason, at lines {unexplained:?}");
    let missing: Vec<_> = ["bash", "curl", "jq"].into_iter().filter(|p| !on_path(p)).collect();
    if !missing.is_empty() {
        let why = format!("{} not on PATH (Debian: apt-get install {})", missing.join(", "), missing.join(" "));
        assert!(std::env::var_os(REQUIRE_ALL_ENV).is_none(), "readme: cannot run: {why}");
        println!("readme::every_shell_block_of_the_readme_runs_in_order_against_a_fresh_app: NOT RUN here: {why}");
        return;
    }
    let python = python();
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("serving the app over HTTP");
    let addr = url.trim_start_matches("http://").to_owned();

    // A fresh directory inside the workspace: `cargo run -p healthctl` finds the workspace from
    // there, and whatever the blocks write (.spin/*.totp, summary.jwe, alice.json) stays in it.
    let target = root().join("target");
    std::fs::create_dir_all(&target).expect("creating target/");
    let work = tempfile::Builder::new().prefix("readme-").tempdir_in(&target).expect("work directory");
    std::os::unix::fs::symlink(root().join("demo"), work.path().join("demo")).expect("linking demo/");
    write_dev_secrets(work.path());
    // `healthctl backup` reads the stores `runtime-config.toml` places: this app's (absolute
    // paths), as the repository's file places `cargo xtask up`'s; and checks them against spin.toml.
    for (from, to) in
        [(app.state.path().join("runtime-config.toml"), "runtime-config.toml"), (root().join("spin.toml"), "spin.toml")]
    {
        std::os::unix::fs::symlink(from, work.path().join(to)).expect("linking the app's configuration");
    }
    let script_text = script(&blocks, &addr);

    let mut path = vec![python.parent().expect("python's directory").to_path_buf()];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(&script_text).current_dir(work.path());
    bash.env("PATH", std::env::join_paths(path).expect("PATH")).env("HEALTHCTL_URL", &url);
    // A newcomer's shell: nothing of this test's own environment that the blocks read.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_PRIMARY_", "HEALTHCTL_", "HEALTH_OPERATOR"];
        if ours.iter().any(|prefix| key.starts_with(prefix)) && key != "HEALTHCTL_URL" {
            bash.env_remove(key.as_ref());
        }
    }
    let output = tokio::task::spawn_blocking(move || bash.output()).await.expect("bash thread").expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_block = stdout.lines().rev().find_map(|l| l.strip_prefix("### ")).unwrap_or("none").to_owned();
    let shown = || {
        format!(
            "last block started: {last_block}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- guest output ---\n{}",
            app.app.guest_output().join("\n")
        )
    };
    // When each block started (shown with --nocapture).
    stderr.lines().filter(|l| l.starts_with("### ")).for_each(|l| println!("{l}"));
    assert!(output.status.success(), "the README's blocks failed ({}):\n{}", output.status, shown());
    assert_eq!(last_block, "README.md: done", "{}", shown());

    // A few outputs the README promises beside them.
    for promised in [
        "HTTP/1.1 200",                // Try it: Alice's own record
        "HTTP/1.1 403",                // Bob's record
        "HTTP/1.1 401",                // no token
        "\"intact\":true",             // the audit chain
        "\"insurer\":\"acme-health\"", // the consent, 201
    ] {
        assert!(stdout.contains(promised), "no {promised:?} in the output:\n{}", shown());
    }
    // The jwcrypto block prints the summary it decrypted.
    let jwcrypto = blocks.iter().find(|b| b.text.contains("from jwcrypto")).expect("the jwcrypto block");
    let marker = format!("### README.md:{}", jwcrypto.line);
    let decrypted: String =
        stdout.lines().skip_while(|l| *l != marker).skip(1).take_while(|l| !l.starts_with("### ")).collect();
    assert!(decrypted.contains("p-1001"), "the decrypted summary: {decrypted:?}\n{}", shown());
    for (file, content) in
        [(".spin/dr-grey.totp", ""), (".spin/admin.totp", ""), ("alice.json", "p-1001"), ("refused.ndjson", "deny")]
    {
        let text = std::fs::read_to_string(work.path().join(file)).unwrap_or_default();
        assert!(!text.trim().is_empty() && text.contains(content), "{file}: {text:?}\n{}", shown());
    }
}

#[test]
fn blocks_are_found_in_order_with_their_markers() {
    let markdown = "text\n```sh\necho one\n```\n<!-- not-run: serves forever -->\n```sh\nserve\n```\n```rust\nfn x() {}\n```\n```sh\necho two\necho three\n```\n";
    let blocks = shell_blocks(markdown);
    assert_eq!(
        blocks,
        [
            Block { line: 2, text: "echo one".into(), not_run: None },
            Block { line: 6, text: "serve".into(), not_run: Some("serves forever".into()) },
            Block { line: 12, text: "echo two\necho three".into(), not_run: None },
        ]
    );
    let script = script(&blocks, "127.0.0.1:9");
    assert!(script.contains("echo one") && script.contains("echo three") && !script.contains("serve\n"));
}
