//! The path guard against real, throwaway git repositories: one test per rule.
#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use std::path::Path;
use std::process::Command;

use cliproxy_integrity::guard::{self, ChangeKind, Error, Policy, Report, Rule};
use tempfile::TempDir;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";
const EVE: &str = "eve@example.org";
const MALLORY: &str = "mallory@example.org";

const POLICY: &str = r#"
required_reviews = 2
protected = ["protected/**", "deny.toml"]
warn_only = ["Cargo.lock", ".ci/**"]

[[maintainers]]
name = "Alice"
email = "Alice@Example.org"

[[maintainers]]
email = "bob@example.org"

[[maintainers]]
email = "carol@example.org"
"#;

/// A git repository in a temporary directory, isolated from the machine's git
/// configuration, with one commit on `main` that every test builds on.
struct Repo {
    dir: TempDir,
}

impl Repo {
    fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write("README", "hello\n");
        repo.write("protected/core.rs", "fn core() {}\n");
        repo.write("elsewhere/util.rs", "fn util() {}\n");
        repo.commit(ALICE, "Initial commit");
        repo.git(&["tag", "base"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_as(ALICE, args)
    }

    fn git_as(&self, email: &str, args: &[&str]) -> String {
        let home = self.dir.path().join(".home");
        std::fs::create_dir_all(&home).unwrap();
        let out = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"])
            .args(args)
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env("GIT_AUTHOR_NAME", "Someone")
            .env("GIT_AUTHOR_EMAIL", email)
            .env("GIT_COMMITTER_NAME", "Someone")
            .env("GIT_COMMITTER_EMAIL", email)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, path: &str, content: &str) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    /// Stages everything and commits as `email` with `message`.
    fn commit(&self, email: &str, message: &str) {
        self.git_as(email, &["add", "-A"]);
        self.git_as(email, &["commit", "-q", "--allow-empty", "-m", message]);
    }

    fn check(&self) -> Report {
        let policy = Policy::from_toml(POLICY).unwrap();
        guard::check_range(self.path(), "base", "HEAD", &policy).unwrap()
    }
}

fn reviewed(subject: &str, reviewers: &[&str]) -> String {
    let trailers: Vec<String> =
        reviewers.iter().map(|r| format!("Reviewed-by: Reviewer <{r}>")).collect();
    format!("{subject}\n\nWhy this change.\n\n{}\n", trailers.join("\n"))
}

#[test]
fn a_maintainer_with_enough_reviews_passes() {
    let repo = Repo::new();
    repo.write("protected/core.rs", "fn core() { changed() }\n");
    repo.commit(ALICE, &reviewed("Change core", &[BOB, CAROL]));
    let report = repo.check();
    assert!(report.passed(), "{report}");
    assert_eq!((report.commits_checked, report.commits_protected), (1, 1));
    assert!(report.to_string().contains("PASSED"), "{report}");
}

#[test]
fn commits_that_touch_no_protected_path_pass_whoever_wrote_them() {
    let repo = Repo::new();
    repo.write("elsewhere/util.rs", "fn util() { 1 }\n");
    repo.commit(EVE, "Unreviewed change elsewhere");
    let report = repo.check();
    assert!(report.passed(), "{report}");
    assert_eq!((report.commits_checked, report.commits_protected), (1, 0));
}

#[test]
fn an_author_who_is_not_a_maintainer_fails() {
    let repo = Repo::new();
    repo.write("protected/core.rs", "fn core() { evil() }\n");
    repo.commit(EVE, &reviewed("Sneak a change in", &[BOB, CAROL]));
    let report = repo.check();
    assert!(!report.passed());
    assert_eq!(report.violations.len(), 1, "{report}");
    let violation = &report.violations[0];
    assert_eq!(violation.rule, Rule::AuthorNotMaintainer { author: EVE.to_owned() });
    assert_eq!(violation.change.path, "protected/core.rs");
    let line = violation.to_string();
    assert!(line.contains("\"Sneak a change in\""), "{line}");
    assert!(line.contains("protected/core.rs: author not a maintainer"), "{line}");
    assert!(line.starts_with(&violation.commit.id[..10]), "{line}");
    assert!(report.to_string().contains("FAILED: 1 violations in 1 of 1 commits"), "{report}");
}

#[test]
fn too_few_reviews_fail() {
    let repo = Repo::new();
    repo.write("deny.toml", "[bans]\n");
    repo.commit(ALICE, &reviewed("Add deny.toml", &[BOB]));
    let report = repo.check();
    assert_eq!(report.violations.len(), 1, "{report}");
    assert!(
        report.violations[0].to_string().ends_with(
            "deny.toml (added): needs 2 Reviewed-by from maintainers other than the author, found 1"
        ),
        "{report}"
    );
}

#[test]
fn a_self_review_does_not_count_in_any_case() {
    let repo = Repo::new();
    repo.write("protected/core.rs", "fn core() { 2 }\n");
    repo.commit(ALICE, &reviewed("Review myself", &["ALICE@example.ORG", BOB]));
    let report = repo.check();
    assert_eq!(report.violations.len(), 1, "{report}");
    match &report.violations[0].rule {
        Rule::TooFewReviews { required: 2, found: 1, not_counted } => {
            assert_eq!(not_counted, &["alice@example.org is the author"]);
        }
        other => panic!("unexpected rule {other:?}"),
    }
}

#[test]
fn a_reviewer_who_is_not_a_maintainer_or_is_listed_twice_does_not_count() {
    let repo = Repo::new();
    repo.write("protected/core.rs", "fn core() { 3 }\n");
    repo.commit(ALICE, &reviewed("Friends review", &[BOB, MALLORY, "BOB@example.org"]));
    let report = repo.check();
    assert_eq!(report.violations.len(), 1, "{report}");
    let line = report.violations[0].to_string();
    assert!(line.contains("found 1"), "{line}");
    assert!(line.contains("mallory@example.org is not a maintainer"), "{line}");
    assert!(line.contains("bob@example.org listed twice"), "{line}");
}

#[test]
fn reviews_count_only_as_trailers_in_the_last_paragraph() {
    let repo = Repo::new();
    repo.write("protected/core.rs", "fn core() { 4 }\n");
    let message = format!(
        "Prose review\n\nReviewed-by: Bob <{BOB}>\nReviewed-by: Carol <{CAROL}>\n\nThe last paragraph is prose, so the lines above are not trailers.\n"
    );
    repo.commit(ALICE, &message);
    let report = repo.check();
    assert_eq!(report.violations.len(), 1, "{report}");
    assert!(report.violations[0].to_string().contains("found 0"), "{report}");
}

#[test]
fn both_rules_are_reported_and_every_protected_path_is_named() {
    let repo = Repo::new();
    repo.write("protected/core.rs", "fn core() { 5 }\n");
    repo.write("protected/more.rs", "fn more() {}\n");
    repo.commit(EVE, "Two files, no review");
    let report = repo.check();
    assert_eq!(report.violations.len(), 4, "{report}");
    let text = report.to_string();
    for expected in [
        "protected/core.rs: author not a maintainer (eve@example.org)",
        "protected/more.rs (added): author not a maintainer",
        "protected/core.rs: needs 2 Reviewed-by from maintainers other than the author, found 0",
        "protected/more.rs (added): needs 2",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn warn_only_paths_warn_but_pass() {
    let repo = Repo::new();
    repo.write("Cargo.lock", "# lock\n");
    repo.write(".ci/run", "#!/bin/sh\n");
    repo.commit(EVE, "Touch warn-only paths");
    let report = repo.check();
    assert!(report.passed(), "{report}");
    assert_eq!(report.warnings.len(), 2, "{report}");
    let text = report.to_string();
    assert!(text.contains("warning: "), "{text}");
    assert!(text.contains("Cargo.lock (added): touches a warn-only path"), "{text}");
    assert!(text.contains("2 warnings"), "{text}");
}

#[test]
fn a_rename_into_a_protected_path_is_caught() {
    let repo = Repo::new();
    repo.git(&["mv", "elsewhere/util.rs", "protected/util.rs"]);
    repo.commit(EVE, "Move util into protected");
    let report = repo.check();
    assert_eq!(report.violations.len(), 2, "{report}");
    let change = &report.violations[0].change;
    assert_eq!(change.kind, ChangeKind::Renamed);
    assert_eq!(change.from.as_deref(), Some("elsewhere/util.rs"));
    assert!(
        report.violations[0]
            .to_string()
            .contains("elsewhere/util.rs -> protected/util.rs (renamed)"),
        "{report}"
    );
}

#[test]
fn a_rename_out_of_a_protected_path_is_caught() {
    let repo = Repo::new();
    repo.git(&["mv", "protected/core.rs", "elsewhere/core.rs"]);
    repo.commit(EVE, "Move core out of protected");
    let report = repo.check();
    assert_eq!(report.violations.len(), 2, "{report}");
    assert_eq!(report.violations[0].change.path, "elsewhere/core.rs");
    assert!(report.to_string().contains("protected/core.rs -> elsewhere/core.rs (renamed)"));
}

#[test]
fn a_deletion_is_caught() {
    let repo = Repo::new();
    repo.git(&["rm", "-q", "protected/core.rs"]);
    repo.commit(EVE, "Delete core");
    let report = repo.check();
    assert_eq!(report.violations.len(), 2, "{report}");
    assert_eq!(report.violations[0].change.kind, ChangeKind::Deleted);
    assert!(report.to_string().contains("protected/core.rs (deleted): author not a maintainer"));
}

#[test]
fn odd_file_names_are_matched_and_printed_escaped() {
    let repo = Repo::new();
    repo.write("protected/with space.rs", "x\n");
    repo.write("protected/new\nline\u{1b}[31m.rs", "y\n");
    repo.write("protected/caf\u{e9}.rs", "z\n");
    repo.commit(EVE, "Odd names");
    let report = repo.check();
    let paths: Vec<&str> = report
        .violations
        .iter()
        .filter(|v| matches!(v.rule, Rule::AuthorNotMaintainer { .. }))
        .map(|v| v.change.path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["protected/caf\u{e9}.rs", "protected/new\nline\u{1b}[31m.rs", "protected/with space.rs"]
    );
    let text = report.to_string();
    assert!(text.contains("protected/new\\nline\\u{1b}[31m.rs (added)"), "{text}");
    assert!(!text.contains('\u{1b}'), "an escape sequence reached the output: {text:?}");
    assert_eq!(text.lines().count(), report.violations.len() + 1);
}

#[test]
fn a_branch_commit_merged_by_a_maintainer_is_still_checked() {
    let repo = Repo::new();
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("protected/core.rs", "fn core() { from_feature() }\n");
    repo.commit(EVE, "Feature work on core");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("elsewhere/other.rs", "fn other() {}\n");
    repo.commit(ALICE, "Main moves on");
    repo.git_as(ALICE, &["merge", "-q", "--no-ff", "-m", "Merge feature", "feature"]);
    let report = repo.check();
    assert_eq!(report.commits_checked, 3);
    assert!(!report.passed());
    assert!(
        report.violations.iter().all(|v| v.commit.subject == "Feature work on core"),
        "{report}"
    );
}

#[test]
fn a_clean_merge_passes_whoever_made_it() {
    let repo = Repo::new();
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("protected/core.rs", "fn core() { reviewed() }\n");
    repo.commit(ALICE, &reviewed("Reviewed core change", &[BOB, CAROL]));
    repo.git(&["checkout", "-q", "main"]);
    repo.write("elsewhere/other.rs", "fn other() {}\n");
    repo.commit(EVE, "Unrelated");
    // A merge button (or anyone) merging the reviewed branch adds no change of its own.
    repo.git_as(EVE, &["merge", "-q", "--no-ff", "-m", "Merge feature", "feature"]);
    let report = repo.check();
    assert!(report.passed(), "{report}");
    assert_eq!((report.commits_checked, report.commits_protected), (3, 1));
}

#[test]
fn an_evil_merge_that_changes_a_protected_path_is_caught() {
    let repo = Repo::new();
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("elsewhere/util.rs", "fn util() { feature() }\n");
    repo.commit(EVE, "Feature");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("README", "main\n");
    repo.commit(EVE, "Main");
    repo.git_as(EVE, &["merge", "-q", "--no-commit", "--no-ff", "feature"]);
    // A change slipped into the merge itself: in neither parent.
    repo.write("protected/core.rs", "fn core() { slipped_in() }\n");
    repo.commit(EVE, "Merge feature");
    let report = repo.check();
    assert_eq!(report.violations.len(), 2, "{report}");
    let violation = &report.violations[0];
    assert!(violation.commit.is_merge);
    assert_eq!(violation.change.kind, ChangeKind::MergeResolution);
    assert!(
        violation.to_string().contains("(merge): protected/core.rs (changed by the merge)"),
        "{violation}"
    );
}

#[test]
fn a_root_commit_in_the_range_is_checked_against_the_empty_tree() {
    let repo = Repo::new();
    repo.git(&["checkout", "-q", "--orphan", "orphan"]);
    repo.git(&["rm", "-rq", "--cached", "."]);
    repo.commit(EVE, "Orphan root");
    let report = repo.check();
    assert_eq!(report.commits_checked, 1);
    assert!(report.violations.iter().any(|v| v.change.path == "protected/core.rs"), "{report}");
}

#[test]
fn bad_policies_are_refused_naming_the_key() {
    let cases = [
        (POLICY.replace("protected = [", "protectd = ["), "protectd"),
        (POLICY.replace("required_reviews = 2", "required_reviews = \"two\""), "required_reviews"),
        (POLICY.replace("required_reviews = 2", ""), "required_reviews"),
        (POLICY.replace("\"bob@example.org\"", "\"bob\""), "maintainers[1].email"),
        (POLICY.replace("email = \"carol@example.org\"", "emial = \"c@x\""), "emial"),
        (POLICY.replace("\"deny.toml\"", "\"src/[unclosed\""), "protected[1]"),
        (POLICY.replace("\".ci/**\"", "\"{a,b\""), "warn_only[1]"),
    ];
    for (text, key) in cases {
        let error = Policy::from_toml(&text).unwrap_err();
        assert!(matches!(error, Error::Policy { .. }), "{error:?}");
        assert!(error.to_string().contains(key), "{key}: {error}");
    }
    let none = "required_reviews = 0\nprotected = []\nmaintainers = []\n";
    assert!(Policy::from_toml(none).unwrap_err().to_string().contains("maintainers"));
}

#[test]
fn a_policy_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("path-guard.toml");
    let error = Policy::load(&path).unwrap_err();
    assert!(matches!(error, Error::ReadPolicy { .. }));
    assert!(error.to_string().contains("path-guard.toml"), "{error}");
    std::fs::write(&path, POLICY.replace("warn_only", "warn")).unwrap();
    let error = Policy::load(&path).unwrap_err().to_string();
    assert!(error.contains("path-guard.toml") && error.contains("warn"), "{error}");
    std::fs::write(&path, POLICY).unwrap();
    assert_eq!(Policy::load(&path).unwrap().maintainers().len(), 3);
}

#[test]
fn globs_follow_path_segments() {
    let policy =
        Policy::from_toml(&POLICY.replace("\"deny.toml\"", "\"crates/*/src/lib.rs\"")).unwrap();
    assert!(policy.is_protected("protected/a/b/c.rs"));
    assert!(!policy.is_protected("not-protected/a.rs"));
    assert!(policy.is_protected("crates/vault/src/lib.rs"));
    assert!(!policy.is_protected("crates/vault/nested/src/lib.rs"), "`*` must not cross `/`");
    assert!(policy.is_warn_only("Cargo.lock"));
    assert!(!policy.is_warn_only("protected/Cargo.lock"));
    assert!(policy.is_maintainer(" ALICE@example.org "));
}

#[test]
fn a_bad_revision_is_an_error_naming_it() {
    let repo = Repo::new();
    let policy = Policy::from_toml(POLICY).unwrap();
    for (base, head) in
        [("no-such-branch", "HEAD"), ("base", "HEAD~7"), ("--output=/tmp/x", "HEAD")]
    {
        let error = guard::check_range(repo.path(), base, head, &policy).unwrap_err();
        let bad = if base == "base" { head } else { base };
        match &error {
            Error::BadRevision { rev, .. } => assert_eq!(rev, bad),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(error.to_string().contains(&format!("bad revision `{bad}`")), "{error}");
    }
}

#[test]
fn a_directory_outside_any_repository_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::from_toml(POLICY).unwrap();
    let error = guard::check_range(dir.path(), "HEAD~1", "HEAD", &policy).unwrap_err();
    assert!(matches!(error, Error::Git { .. }), "{error:?}");
}

/// The guard through the shared interface: each violation is one finding that names the
/// commit, the protected path and the rule; a clean range has none; a bad revision is no
/// verdict at all.
#[test]
fn the_guard_runs_as_an_integrity_check() {
    use cliproxy_integrity::{IntegrityCheck, PathGuard};
    let repo = Repo::new();
    let check = |head: &str| {
        PathGuard::new(repo.path(), "base", head, Policy::from_toml(POLICY).unwrap()).run()
    };
    assert_eq!(check("HEAD").unwrap(), Vec::new());
    repo.write("protected/core.rs", "fn core() { evil() }\n");
    repo.commit(EVE, &reviewed("Sneak a change in", &[BOB, CAROL]));
    let findings = check("HEAD").unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "path-guard");
    assert_eq!(findings[0].what, format!("author not a maintainer ({EVE})"));
    assert!(
        findings[0].location.ends_with("\"Sneak a change in\": protected/core.rs"),
        "{:?}",
        findings[0]
    );
    assert!(matches!(
        check("no-such-rev"),
        Err(cliproxy_integrity::Error::Guard(Error::BadRevision { .. }))
    ));
}
