//! The command line as an operator meets it: help texts, exit codes, and config errors that
//! name the key. (Being an integration test also makes `cargo test` build the binary that the
//! end-to-end suite in `tests/` launches.)

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed expectation fails the test")]

use std::process::{Command, Output};

mod audit;

fn run(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliproxy-server"))
        .args(args)
        .current_dir(dir)
        .env_remove("CLIPROXY_SERVER__PORT")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["demo", "--help"],
        &["keygen", "--help"],
        &["vault", "--help"],
        &["vault", "add", "--help"],
        &["vault", "list", "--help"],
        &["vault", "migrate", "--help"],
        &["vault", "rotate-key", "--help"],
    ] {
        let output = run(args, dir.path());
        assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
        let help = text(&output.stdout);
        assert!(help.contains("Usage:"), "{args:?}: {help}");
    }
    let top = text(&run(&["--help"], dir.path()).stdout);
    assert!(top.contains("78 configuration error"), "{top}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["frobnicate"], dir.path());
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn config_errors_exit_78_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "server:\n  limits:\n    bogus: 1\n").unwrap();
    let output = run(&["serve", "--config", "bad.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(78), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("`server.limits.bogus`"), "{}", text(&output.stderr));

    let output = run(&["--config", "missing.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(78));
    assert!(text(&output.stderr).contains("missing.yaml"));

    std::fs::write(dir.path().join("short.yaml"), "auth: {api_keys: [tooshort]}\n").unwrap();
    let output = run(&["--config", "short.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(78), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("auth.api_keys[0]"), "{}", text(&output.stderr));
    assert!(!text(&output.stderr).contains("tooshort"), "the key is never echoed");
}

#[test]
fn keygen_prints_three_distinct_keys() {
    let dir = tempfile::tempdir().unwrap();
    let first = text(&run(&["keygen"], dir.path()).stdout);
    let second = text(&run(&["keygen"], dir.path()).stdout);
    assert_ne!(first, second);
    for label in ["auth.api_keys", "management.secret_key", "auth.encryption.key"] {
        assert!(first.contains(label), "{first}");
    }
    let encryption = first.lines().find(|l| l.contains("auth.encryption.key")).unwrap();
    let key = encryption.split_whitespace().last().unwrap();
    assert_eq!(key.len(), 44, "32 bytes in base64: {key}");
}

#[test]
fn vault_add_reads_the_token_from_stdin_and_list_never_shows_it() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "auth: {dir: ./auths}\nproviders: {openai: {type: openai, models: ['gpt-*']}}\n",
    )
    .unwrap();
    let planted = "sk-planted-vault-token-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_cliproxy-server"))
        .args([
            "vault",
            "add",
            "-c",
            "c.yaml",
            "--provider",
            "openai",
            "--id",
            "main",
            "--label",
            "team a",
        ])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{planted}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!text(&output.stdout).contains(planted));

    let output = run(&["vault", "list", "-c", "c.yaml"], dir.path());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listing = text(&output.stdout);
    assert!(
        listing.contains("main") && listing.contains("openai") && listing.contains("team a"),
        "{listing}"
    );
    assert!(!listing.contains(planted), "{listing}");

    let output = run(&["vault", "add", "-c", "c.yaml", "--provider", "nope"], dir.path());
    assert_eq!(output.status.code(), Some(78));
    assert!(text(&output.stderr).contains("openai"), "lists the configured providers");
}
