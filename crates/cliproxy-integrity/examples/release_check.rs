//! A release gate for a tiny project of its own: the release directory is scanned for
//! secrets before it is signed, signed with a throwaway key, verified, then tampered with and
//! verified again. Every step runs through [`IntegrityCheck`], as a release pipeline holding
//! a list of checks would.
//!
//! 1. A planted (fake) cloud key in `deploy.env` is found, with its file and line and without
//!    its value; the clean files are not reported.
//! 2. With the file removed, the scan is clean; the release is signed (`SHA256SUMS` and
//!    `SHA256SUMS.minisig`) and verifies.
//! 3. One byte of one artefact changes: the verification fails and names that file.
//!
//! Steps 2 and 3 build their checks from a configuration section ([`IntegrityConfig`]), as
//! a pipeline reading its settings from a file would.
//!
//! Run it with `cargo run -p cliproxy-integrity --example release_check`; it exits 0 when
//! everything it shows held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "an example")]

use std::path::Path;

use cliproxy_integrity::release::{self, SecretKey};
use cliproxy_integrity::secrets::{Allowlist, Mode, Scanner};
use cliproxy_integrity::{Finding, IntegrityCheck, IntegrityConfig, SecretScan};

const BINARY: &str = "hello-1.0-x86_64-linux";

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-1.0");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(BINARY), b"\x7fELF pretend binary\n").unwrap();
    std::fs::write(dir.join("README.txt"), "Run ./hello-1.0-x86_64-linux to say hello.\n").unwrap();
    // A key someone left in the release by mistake. It is put together at run time so that
    // this source file does not itself hold a key-shaped string for a scanner to find.
    let planted = format!("{}{}", "AKIA", "Q3EGRYLFJX4ZU7TB");
    std::fs::write(dir.join("deploy.env"), format!("REGION=eu-west-1\nAWS_KEY_ID={planted}\n"))
        .unwrap();

    // 1. The scan finds the planted key, where it is, and nothing else.
    let scan = secret_scan(&dir);
    let findings = run(&scan);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].location, "deploy.env:2");
    assert!(findings[0].what.starts_with("aws-access-key-id"), "{}", findings[0]);
    assert!(!findings[0].to_string().contains(&planted), "a finding must not show the key");
    assert!(!findings.iter().any(|f| f.location.starts_with("README.txt")));

    // 2. Without it the release is clean; it is signed and verifies. The public key is kept
    // outside the release directory it vouches for.
    std::fs::remove_file(dir.join("deploy.env")).unwrap();
    assert_eq!(run(&secret_scan(&dir)), []);
    let key = SecretKey::generate().unwrap();
    let signed = release::sign_dir(&dir, &key, "timestamp:1700000000\tfile:SHA256SUMS").unwrap();
    println!("signed {} files with key {}", signed.checksums.len(), key.public_key().key_id());
    std::fs::write(tmp.path().join("hello.pub"), key.public_key().to_file_text()).unwrap();
    let config: IntegrityConfig = toml::from_str(
        r#"
        [secrets]
        mode = "directory"
        dir = "hello-1.0"

        [release]
        dir = "hello-1.0"
        public_key = "hello.pub"
        "#,
    )
    .unwrap();
    let checks = config.build(tmp.path()).unwrap();
    let names: Vec<_> = checks.iter().map(|check| check.name()).collect();
    assert_eq!(names, ["secret-scan", "release-verification"]);
    for check in &checks {
        assert_eq!(run(check.as_ref()), []);
    }

    // 3. One changed byte: the verification fails and names the file.
    let mut bytes = std::fs::read(dir.join(BINARY)).unwrap();
    bytes[1] ^= 0x20;
    std::fs::write(dir.join(BINARY), bytes).unwrap();
    let findings = run(checks[1].as_ref());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].location, BINARY);
    assert!(findings[0].what.contains("SHA-256 mismatch"), "{}", findings[0]);
    println!("release_check: every step held");
}

fn secret_scan(dir: &Path) -> SecretScan {
    SecretScan::new(Scanner::new(Allowlist::default()).unwrap(), dir, Mode::Directory)
}

/// Runs `check` and prints its verdict, as a release pipeline's log would show it.
fn run(check: &dyn IntegrityCheck) -> Vec<Finding> {
    let findings = check.run().unwrap_or_else(|e| panic!("{} could not run: {e}", check.name()));
    if findings.is_empty() {
        println!("{}: passed", check.name());
    }
    for finding in &findings {
        println!("{finding}");
    }
    findings
}
