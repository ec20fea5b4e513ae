//! `cliproxy-server audit verify` on files written by the audit sink: a good chain passes with
//! a summary; a flipped byte, a deleted line and two swapped lines each fail naming the line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cliproxy_audit::{AuditConfig, AuditSink, Event, FileSink, SinkOptions, What};

use super::{run, text};

/// An audit file of `n` lines written by the sink.
fn audit_file(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.log");
    let mut config = AuditConfig::default();
    config.enabled = true;
    config.file = path.clone();
    let sink = FileSink::open_with(&config, Arc::new(|_| {}), SinkOptions::default()).unwrap();
    for i in 1..=n {
        sink.write(
            &Event::new(What::ProviderRequest {
                model: "gpt-4o".to_owned(),
                status: 200,
                duration: Duration::from_millis(i),
                upstream: None,
                input_tokens: Some(i),
                output_tokens: Some(2 * i),
                cost: Some(i * 25),
                credential: None,
                outcome: "complete",
                error: None,
                formats: None,
            })
            .user("alice")
            .provider("openai"),
        );
    }
    sink.flush();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| format!("{l}\n")).collect()
}

/// Runs `audit verify audit.log` in `dir`: (exit code, stdout, stderr).
fn verify(dir: &Path) -> (Option<i32>, String, String) {
    let output = run(&["audit", "verify", "audit.log"], dir);
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn audit_verify_passes_a_good_chain_and_names_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_file(dir.path(), 20);
    let good = lines(&path);

    let (code, stdout, stderr) = verify(dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("ok: 1 file, 20 lines, seq 1..20, head "), "{stdout}");
    assert!(stdout.contains("checkpoints were not checked"), "{stdout}");
    assert!(stdout.contains("give --pubkey KEY, from `cliproxy-server audit pubkey`"), "{stdout}");

    // One byte flipped in line 7 (a token count 7 becomes 8).
    let mut flipped = good.clone();
    flipped[6] = flipped[6].replacen("\"input_tokens\":7", "\"input_tokens\":8", 1);
    assert_ne!(flipped[6], good[6]);
    std::fs::write(&path, flipped.concat()).unwrap();
    let (code, _, stderr) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("audit.log:7: seq 7: changed (hash does not match the line)"),
        "{stderr}"
    );

    let mut deleted = good.clone();
    deleted.remove(4);
    std::fs::write(&path, deleted.concat()).unwrap();
    let (code, _, stderr) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("audit.log:5: seq 6: seq 5 missing: line removed"), "{stderr}");

    let mut swapped = good.clone();
    swapped.swap(2, 3);
    std::fs::write(&path, swapped.concat()).unwrap();
    let (code, _, stderr) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("audit.log:3: seq 4: lines reordered"), "{stderr}");
}

#[test]
fn audit_verify_explains_itself_and_its_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let help = text(&run(&["audit", "verify", "--help"], dir.path()).stdout);
    assert!(help.contains("cannot catch") && help.contains("--pubkey"), "{help}");
    assert!(help.contains("may have been cut"), "{help}");
    assert_eq!(run(&["audit", "verify"], dir.path()).status.code(), Some(2));
    // A public key that is not one is a usage error naming the option.
    let bad = run(&["audit", "verify", "--pubkey", "abcd", "nope.log"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--pubkey"), "{}", text(&bad.stderr));
    let missing = run(&["audit", "verify", "nope.log"], dir.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("nope.log: cannot read"), "{}", text(&missing.stderr));
}
