//! The secret scanner: a true-positive and a false-positive test for every rule, the three
//! modes against real git repositories, the allowlist, the redaction, and the hook.
//!
//! Every key-shaped string here is built at run time (`fake_*`), so this file does not itself
//! trip the scanner when the project's tree is scanned.
#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use std::path::Path;
use std::process::Command;

use cliproxy_integrity::secrets::{
    self, Allowlist, Error, Finding, HookInstall, Mode, Report, Scanner,
};
use tempfile::TempDir;

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const URLSAFE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &str = "0123456789abcdef";

/// Deterministic random-looking characters: real keys are random, so the fakes must be too.
fn noise(seed: u64, len: usize, alphabet: &str) -> String {
    let alphabet = alphabet.as_bytes();
    let mut state =
        seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(alphabet[((state >> 33) % alphabet.len() as u64) as usize])
        })
        .collect()
}

fn fake_anthropic(seed: u64) -> String {
    format!("{}{}{}AA", "sk-ant-", "api03-", noise(seed, 93, URLSAFE))
}

fn fake_openai_project(seed: u64) -> String {
    format!("{}{}", "sk-proj-", noise(seed, 156, URLSAFE))
}

fn fake_openai_legacy(seed: u64) -> String {
    format!("{}{}{}{}", "sk-", noise(seed, 20, ALNUM), "T3BlbkFJ", noise(seed + 1, 20, ALNUM))
}

fn fake_google(seed: u64) -> String {
    format!("{}{}{}", "AI", "za", noise(seed, 35, URLSAFE))
}

fn fake_github(prefix: &str, seed: u64) -> String {
    format!("{prefix}_{}", noise(seed, 36, ALNUM))
}

fn fake_github_fine_grained(seed: u64) -> String {
    format!("{}{}{}_{}", "github_", "pat_", noise(seed, 22, ALNUM), noise(seed + 1, 59, ALNUM))
}

fn fake_aws(prefix: &str, seed: u64) -> String {
    format!("{prefix}{}", noise(seed, 16, UPPER_DIGITS))
}

fn fake_pem(kind: &str, seed: u64) -> String {
    let dashes = "-".repeat(5);
    let body: Vec<String> = (0..4).map(|i| noise(seed + i, 64, BASE64)).collect();
    format!(
        "{dashes}BEGIN {kind}PRIVATE KEY{dashes}\n{}\n{dashes}END {kind}PRIVATE KEY{dashes}\n",
        body.join("\n")
    )
}

fn scanner() -> Scanner {
    Scanner::new(Allowlist::default()).unwrap()
}

/// The rule ids found in `text`.
fn rules_in(text: &str) -> Vec<&'static str> {
    scanner().find("file.txt", text, 1).into_iter().map(|f| f.rule).collect()
}

/// Asserts that `secret` embedded in `line` is found by `rule` and only by it, and that
/// nothing printed shows the secret.
fn assert_found(rule: &str, line: &str, secret: &str) {
    let findings = scanner().find("dir/file.txt", &format!("first line\n{line}\nlast\n"), 1);
    assert_eq!(findings.len(), 1, "{rule}: {line:?} gave {findings:?}");
    let finding = &findings[0];
    assert_eq!(finding.rule, rule, "{line:?}");
    assert_eq!(finding.line, 2);
    assert_eq!(finding.fingerprint, secrets::fingerprint(rule, secret), "{line:?}");
    assert_redacted(finding, secret);
}

fn assert_redacted(finding: &Finding, secret: &str) {
    for shown in [finding.to_string(), format!("{finding:?}")] {
        assert!(!shown.contains(secret), "the secret is shown: {shown}");
        // Nothing beyond a short prefix: no 8 consecutive characters of the secret.
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(8) {
            let window: String = window.iter().collect();
            assert!(!shown.contains(&window), "{window:?} of the secret is shown: {shown}");
        }
    }
}

#[test]
fn anthropic_keys() {
    let key = fake_anthropic(1);
    assert_found("anthropic-api-key", &format!("ANTHROPIC_API_KEY={key}"), &key);
    assert_found("anthropic-api-key", &format!("let k = \"{key}\";"), &key);
    // The e2e suite's planted token (only the generic rule, allowlisted for tests, sees a
    // token assignment there), and prose naming the prefix.
    assert_eq!(
        rules_in("const CLAUDE_TOKEN: &str = \"sk-ant-vault-claude-e2e-9a8b\";"),
        ["generic-secret-assignment"]
    );
    assert!(
        rules_in("Anthropic keys start with `sk-ant-` and are about 100 characters.").is_empty()
    );
}

#[test]
fn openai_keys() {
    let project = fake_openai_project(2);
    assert_found("openai-api-key", &format!("OPENAI_API_KEY=\"{project}\""), &project);
    let legacy = fake_openai_legacy(3);
    assert_found("openai-api-key", &format!("openai.api_key = '{legacy}'"), &legacy);
    let service = format!("{}{}", "sk-svcacct-", noise(4, 60, URLSAFE));
    assert_found("openai-api-key", &service, &service);
    // Planted test tokens with words and dashes, an `sk-` inside a word, letters only.
    assert!(rules_in("let planted = \"sk-planted-vault-token-5e0c11d4\";").is_empty());
    assert!(rules_in(&format!("task-{}", noise(5, 40, ALNUM))).is_empty());
    assert!(rules_in(&format!("sk-{}", "abcdefghij".repeat(4))).is_empty());
}

#[test]
fn google_api_keys() {
    let key = fake_google(6);
    assert_found("google-api-key", &format!("GEMINI_API_KEY={key}"), &key);
    assert_found(
        "google-api-key",
        &format!("url = \"https://x.googleapis.com/v1?key={key}\""),
        &key,
    );
    assert!(rules_in("gemini = \"AIza-vault-gemini-e2e-44d1\";").is_empty());
    // 35 characters after AIza, not more: a longer identifier is something else.
    assert!(rules_in(&format!("{}{}", "AIza", noise(7, 50, ALNUM))).is_empty());
}

#[test]
fn github_tokens() {
    for prefix in ["ghp", "gho", "ghu", "ghs", "ghr"] {
        let token = fake_github(prefix, 8);
        assert_found("github-token", &format!("GITHUB_TOKEN={token}"), &token);
    }
    let fine = fake_github_fine_grained(9);
    assert_found("github-token", &format!("token: {fine}"), &fine);
    assert!(rules_in("ghp_short and gho_ are prefixes").is_empty());
    // Inside an identifier (no word boundary) it is not a token.
    assert!(rules_in(&format!("my_ghp_{}", noise(10, 36, ALNUM))).is_empty());
}

#[test]
fn aws_access_key_ids() {
    for prefix in ["AKIA", "ASIA"] {
        let id = fake_aws(prefix, 11);
        assert_found("aws-access-key-id", &format!("aws_access_key_id = {id}"), &id);
    }
    // AWS's documentation example, lower case, too short, inside a longer word.
    assert!(rules_in("aws_access_key_id = AKIAIOSFODNN7EXAMPLE").is_empty());
    assert!(rules_in(&format!("akia{}", noise(12, 16, "abcdefghijklmnopqrstuvwxyz"))).is_empty());
    assert!(rules_in(&fake_aws("AKIA", 13)[..19]).is_empty());
    assert!(rules_in(&format!("X{}", fake_aws("AKIA", 14))).is_empty());
}

#[test]
fn private_keys() {
    for kind in ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "] {
        let pem = fake_pem(kind, 15);
        let findings = scanner().find("key.pem", &format!("# key\n{pem}"), 1);
        assert_eq!(findings.len(), 1, "{kind}: {findings:?}");
        assert_eq!((findings[0].rule, findings[0].line), ("private-key", 2));
        let shown = findings[0].to_string();
        assert!(shown.contains(&format!("BEGIN {kind}PRIVATE KEY----- …")), "{shown}");
        assert!(!shown.contains(&noise(15, 64, BASE64)[..8]), "{shown}");
    }
    // A key pasted into a string literal with escaped newlines, and a legacy encrypted PEM.
    let escaped = fake_pem("RSA ", 16).replace('\n', "\\n");
    assert_eq!(rules_in(&format!("const KEY: &str = \"{escaped}\";")), ["private-key"]);
    let headers = fake_pem("RSA ", 17).replacen(
        "KEY-----\n",
        "KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF\n\n",
        1,
    );
    assert_eq!(rules_in(&headers), ["private-key"]);
    let pgp = format!(
        "{d}BEGIN PGP PRIVATE KEY BLOCK{d}\nVersion: x\n\n{}\n",
        noise(18, 64, BASE64),
        d = "-".repeat(5)
    );
    assert_eq!(rules_in(&pgp), ["private-key"]);
    // A header alone (documentation, a PEM parser), public keys and certificates.
    let d = "-".repeat(5);
    assert!(
        rules_in(&format!("files starting with {d}BEGIN PRIVATE KEY{d} are refused")).is_empty()
    );
    assert!(
        rules_in(&format!("if line == \"{d}BEGIN RSA PRIVATE KEY{d}\" {{\n    parse()\n}}"))
            .is_empty()
    );
    let public = fake_pem("", 19).replace("PRIVATE", "PUBLIC");
    assert!(rules_in(&public).is_empty());
    assert!(rules_in(&fake_pem("", 20).replace("PRIVATE KEY", "CERTIFICATE")).is_empty());
}

#[test]
fn generic_high_entropy_assignments() {
    let value = noise(21, 32, BASE64);
    for line in [
        format!("api_key = \"{value}\""),
        format!("DB_PASSWORD={value}"),
        format!("  \"client_secret\": \"{value}\","),
        format!("const SIGNING_TOKEN: &str = \"{value}\";"),
        format!("secret: {value}"),
        format!("auth.credential := '{value}'"),
    ] {
        assert_found("generic-secret-assignment", &line, &value);
    }
    let hex = noise(22, 40, HEX);
    assert_found("generic-secret-assignment", &format!("session_key = \"{hex}\""), &hex);
    for line in [
        // Code, templates and placeholders.
        "token = get_token_from_environment_variables()".to_owned(),
        "password = \"${DB_PASSWORD_FROM_THE_ENVIRONMENT}\"".to_owned(),
        "api_key = \"your-api-key-goes-here-0123456789\"".to_owned(),
        "secret = \"EXAMPLE0SECRET0VALUE0FOR0DOCS\"".to_owned(),
        // Too short, no digit, low entropy, not a secret-like name.
        "token = \"Ab3dE6gH9j\"".to_owned(),
        "key_path = \"/etc/cliproxy/keys/server.pem\"".to_owned(),
        "secret_key = \"aaaaaaaaaaaaaaaaaaaaaaaa1\"".to_owned(),
        "password = \"changeme_changeme_123\"".to_owned(),
        format!("sha256 = \"{}\"", noise(23, 64, HEX)),
        format!("token = \"{}\"", noise(24, 24, HEX).replace(|c: char| c.is_ascii_digit(), "a")),
    ] {
        assert!(rules_in(&line).is_empty(), "{line}: {:?}", rules_in(&line));
    }
}

#[test]
fn a_specific_rule_wins_over_the_generic_one() {
    let key = fake_openai_project(25);
    assert_eq!(rules_in(&format!("OPENAI_API_KEY = \"{key}\"")), ["openai-api-key"]);
}

#[test]
fn line_numbers_count_from_the_first_line_given() {
    let key = fake_aws("AKIA", 26);
    let findings = scanner().find("f", &format!("a\nb\n\nid {key}\n"), 10);
    assert_eq!(findings[0].line, 13);
}

#[test]
fn the_report_never_contains_a_whole_secret() {
    let pem = fake_pem("", 32);
    let generic = noise(33, 40, BASE64);
    let secrets = [
        fake_anthropic(27),
        fake_openai_project(28),
        fake_google(29),
        fake_github("ghp", 30),
        fake_aws("ASIA", 31),
        // The key material, not the header (which is shown).
        pem.lines().nth(1).unwrap().to_owned(),
        generic.clone(),
    ];
    let repo = Repo::new();
    let text = format!("{}\n{pem}token = \"{generic}\"\n", secrets[..5].join("\n"));
    repo.write("leaks.txt", &text);
    repo.commit("Leaks");
    let report = scanner().scan(repo.path(), Mode::All).unwrap();
    assert_eq!(report.findings.len(), 7, "{report}");
    let shown = format!("{report}\n{report:?}");
    for secret in &secrets {
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(8) {
            let window: String = window.iter().collect();
            assert!(!shown.contains(&window), "{window:?} of a secret is shown:\n{shown}");
        }
    }
}

/// A git repository in a temporary directory, isolated from the machine's git configuration.
struct Repo {
    dir: TempDir,
}

impl Repo {
    fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let home = self.dir.path().join(".git").join("test-home");
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
            .env("GIT_AUTHOR_NAME", "Tester")
            .env("GIT_AUTHOR_EMAIL", "tester@example.org")
            .env("GIT_COMMITTER_NAME", "Tester")
            .env("GIT_COMMITTER_EMAIL", "tester@example.org")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, path: &str, content: &str) {
        self.write_bytes(path, content.as_bytes());
    }

    fn write_bytes(&self, path: &str, content: &[u8]) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    fn scan(&self, mode: Mode) -> Report {
        scanner().scan(self.path(), mode).unwrap()
    }
}

fn located(report: &Report) -> Vec<(Option<String>, String, usize, &'static str)> {
    report.findings.iter().map(|f| (f.commit.clone(), f.path.clone(), f.line, f.rule)).collect()
}

#[test]
fn staged_mode_scans_only_the_lines_the_index_adds() {
    let repo = Repo::new();
    let old = fake_github("ghp", 34);
    repo.write("config.txt", &format!("one\n{old}\nthree\n"));
    repo.commit("Already committed (the --all and --history scans cover it)");
    assert!(repo.scan(Mode::Staged).is_clean());

    let staged = fake_aws("AKIA", 35);
    repo.write("config.txt", &format!("one\n{old}\nthree\nfour\nid = {staged}\n"));
    repo.write("odd \"name\"\twith tab.txt", &format!("x\n{}\n", fake_google(36)));
    repo.write("with space.txt", &fake_github("ghs", 36));
    repo.git(&["add", "-A"]);
    // Only in the work tree: not part of the next commit.
    repo.write("unstaged.txt", &fake_anthropic(37));
    let report = repo.scan(Mode::Staged);
    assert_eq!(
        located(&report),
        [
            (None, "config.txt".to_owned(), 5, "aws-access-key-id"),
            (None, "odd \"name\"\twith tab.txt".to_owned(), 2, "google-api-key"),
            (None, "with space.txt".to_owned(), 1, "github-token"),
        ],
        "{report}"
    );
    assert!(report.to_string().contains("config.txt:5: aws-access-key-id: AKIA…(20 chars)"));
    assert!(
        report.to_string().contains("odd \"name\"\\twith tab.txt:2: google-api-key"),
        "{report}"
    );

    // Removing the secret is not a finding.
    repo.commit("Add");
    repo.write("config.txt", "one\nthree\n");
    repo.git(&["add", "-A"]);
    assert!(repo.scan(Mode::Staged).is_clean());
}

#[test]
fn staged_mode_works_before_the_first_commit_and_skips_binaries() {
    let repo = Repo::new();
    let key = fake_openai_legacy(38);
    repo.write("a.env", &format!("OPENAI_API_KEY={key}\n"));
    let mut binary = b"\x00\x01binary".to_vec();
    binary.extend_from_slice(key.as_bytes());
    repo.write_bytes("blob.bin", &binary);
    repo.git(&["add", "-A"]);
    let report = repo.scan(Mode::Staged);
    assert_eq!(located(&report), [(None, "a.env".to_owned(), 1, "openai-api-key")], "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(report.to_string().contains("blob.bin: not scanned: binary"), "{report}");
}

#[test]
fn all_mode_scans_tracked_files_in_the_work_tree() {
    let repo = Repo::new();
    repo.write("src/a.rs", "fn main() {}\n");
    repo.write("src/b.rs", "// clean\n");
    repo.write("big.txt", &format!("{}\n{}\n", "x".repeat(4096), fake_github("gho", 39)));
    repo.commit("Files");
    // Tracked file changed in the work tree: the work tree is what is scanned.
    let key = fake_anthropic(40);
    repo.write("src/b.rs", &format!("// clean\nconst K: &str = \"{key}\";\n"));
    // Untracked files are not part of the tree.
    repo.write("untracked.txt", &fake_anthropic(41));
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", repo.path().join("link")).unwrap();
        repo.git(&["add", "link"]);
    }
    let report = scanner().with_max_file_bytes(1024).scan(repo.path(), Mode::All).unwrap();
    assert_eq!(located(&report), [(None, "src/b.rs".to_owned(), 2, "anthropic-api-key")]);
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(report.to_string().contains("big.txt: not scanned: over the size cap"), "{report}");
    assert!(
        report.to_string().contains("SECRETS FOUND: 1 findings in 2 files scanned"),
        "{report}"
    );
}

#[test]
fn history_mode_finds_secrets_that_were_removed_later() {
    let repo = Repo::new();
    repo.write("README", "hello\n");
    repo.commit("Start");
    let key = fake_github_fine_grained(42);
    repo.write("notes.md", &format!("# Notes\n\nuse {key}\n"));
    let leaked = repo.commit("Leak");
    repo.write("notes.md", "# Notes\n");
    repo.commit("Remove the token");
    assert!(repo.scan(Mode::All).is_clean());
    let report = repo.scan(Mode::History);
    assert_eq!(
        located(&report),
        [(Some(leaked.clone()), "notes.md".to_owned(), 3, "github-token")],
        "{report}"
    );
    assert!(
        report
            .to_string()
            .starts_with(&format!("{}:notes.md:3: github-token: gith…", &leaked[..10]))
    );
}

#[test]
fn history_mode_sees_through_binary_attributes_and_into_merge_resolutions() {
    let repo = Repo::new();
    repo.write(".gitattributes", "hidden.txt -diff\n");
    repo.write("shared.txt", "line\n");
    repo.commit("Start");
    let hidden = fake_aws("ASIA", 43);
    repo.write("hidden.txt", &format!("{hidden}\n"));
    let hiding = repo.commit("A -diff attribute does not hide a file");

    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("shared.txt", "side\n");
    repo.commit("Side");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("shared.txt", "main\n");
    repo.commit("Main");
    let out = Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["-c", "user.name=T", "-c", "user.email=t@x", "merge", "-q", "side"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the merge should conflict");
    let evil = fake_anthropic(44);
    repo.write("shared.txt", &format!("resolved\n{evil}\n"));
    let merge = repo.commit("Merge side");

    let report = repo.scan(Mode::History);
    let mut found = located(&report);
    found.sort();
    let mut expected = vec![
        (Some(hiding), "hidden.txt".to_owned(), 1, "aws-access-key-id"),
        (Some(merge), "shared.txt".to_owned(), 2, "anthropic-api-key"),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report}");
}

#[test]
fn history_mode_on_an_empty_repository_is_clean() {
    let repo = Repo::new();
    let report = repo.scan(Mode::History);
    assert!(report.is_clean() && report.files_scanned == 0, "{report}");
}

#[test]
fn the_allowlist_allows_by_path_rule_and_fingerprint() {
    let repo = Repo::new();
    let fixture = noise(45, 32, BASE64);
    let documented = fake_google(46);
    let real = fake_aws("AKIA", 47);
    repo.write(
        "tests/fixture.rs",
        &format!("const TOKEN: &str = \"{fixture}\";\nconst ID: &str = \"{real}\";\n"),
    );
    repo.write("docs/setup.md", &format!("key={documented}\n"));
    repo.write("src/main.rs", &format!("const TOKEN: &str = \"{fixture}\";\n"));
    repo.commit("Fixtures");
    let allowlist = Allowlist::from_toml(&format!(
        r#"
        [[allow]]
        reason = "test fixtures"
        paths = ["tests/**"]
        rules = ["generic-secret-assignment"]

        [[allow]]
        reason = "the documented key"
        fingerprints = ["{}"]
        "#,
        secrets::fingerprint("google-api-key", &documented)
    ))
    .unwrap();
    assert_eq!(allowlist.len(), 2);
    let report = Scanner::new(allowlist).unwrap().scan(repo.path(), Mode::All).unwrap();
    // The AWS id in tests/ is a specific rule: still reported; the fixture outside tests/ too.
    assert_eq!(
        located(&report),
        [
            (None, "src/main.rs".to_owned(), 1, "generic-secret-assignment"),
            (None, "tests/fixture.rs".to_owned(), 2, "aws-access-key-id"),
        ],
        "{report}"
    );
    assert_eq!(report.allowed, 2);
    assert!(report.to_string().contains("2 allowed by the allowlist"), "{report}");
}

#[test]
fn bad_allowlists_are_refused_naming_the_key() {
    let cases = [
        (
            "[[allow]]\nreason = \"x\"\npaths = [\"a\"]\nrules = [\"no-such-rule\"]\n",
            "allow[0].rules[0]",
        ),
        ("[[allow]]\nreason = \"x\"\nfingerprints = [\"abc\"]\n", "allow[0].fingerprints[0]"),
        ("[[allow]]\nreason = \"\"\npaths = [\"a\"]\n", "allow[0].reason"),
        (
            "[[allow]]\nreason = \"x\"\nrules = [\"private-key\"]\n",
            "allow[0]: set `paths` or `fingerprints`",
        ),
        ("[[allow]]\nreason = \"x\"\npath = [\"a\"]\n", "path"),
        ("[[allow]]\nreason = \"x\"\npaths = [\"a/[\"]\n", "allow[0].paths[0]"),
        ("[[allowed]]\n", "allowed"),
    ];
    for (text, key) in cases {
        let error = Allowlist::from_toml(text).unwrap_err();
        assert!(matches!(error, Error::Allowlist { .. }), "{error:?}");
        assert!(error.to_string().contains(key), "{key}: {error}");
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("allowlist.toml");
    assert!(Allowlist::load(&missing).unwrap_err().to_string().contains("allowlist.toml"));
    assert!(Allowlist::from_toml("").unwrap().is_empty());
}

#[test]
fn every_rule_id_can_be_named_in_the_allowlist() {
    let ids: Vec<&str> = Scanner::rule_ids().collect();
    assert_eq!(ids.len(), 7);
    let text = format!("[[allow]]\nreason = \"x\"\npaths = [\"a\"]\nrules = {ids:?}\n");
    assert!(Allowlist::from_toml(&text).is_ok());
}

#[test]
fn hooks_install_writes_an_executable_pre_commit_hook() {
    let repo = Repo::new();
    let hook = repo.path().join(".git/hooks/pre-commit");
    match secrets::install_pre_commit_hook(repo.path(), "cargo xtask secrets --staged", false)
        .unwrap()
    {
        HookInstall::Installed(path) => assert_eq!(path, hook),
        other => panic!("{other:?}"),
    }
    let script = std::fs::read_to_string(&hook).unwrap();
    assert!(
        script.starts_with("#!/bin/sh\n")
            && script.ends_with("exec cargo xtask secrets --staged\n")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&hook).unwrap().permissions().mode() & 0o777, 0o755);
    }
    assert!(matches!(
        secrets::install_pre_commit_hook(repo.path(), "cargo xtask secrets --staged", false)
            .unwrap(),
        HookInstall::AlreadyInstalled(_)
    ));

    std::fs::write(&hook, "#!/bin/sh\nexec my-own-hook\n").unwrap();
    let error =
        secrets::install_pre_commit_hook(repo.path(), "cargo xtask secrets --staged", false)
            .unwrap_err();
    assert!(matches!(error, Error::HookExists { .. }));
    assert!(error.to_string().contains("--force"), "{error}");
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), "#!/bin/sh\nexec my-own-hook\n");
    assert!(matches!(
        secrets::install_pre_commit_hook(repo.path(), "cargo xtask secrets --staged", true)
            .unwrap(),
        HookInstall::Replaced(_)
    ));
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), script);
}

#[test]
fn the_installed_hook_runs_on_commit_and_respects_core_hooks_path() {
    let repo = Repo::new();
    repo.git(&["config", "core.hooksPath", "custom-hooks"]);
    // A command that refuses every commit stands in for `cargo xtask secrets --staged`.
    let installed = secrets::install_pre_commit_hook(repo.path(), "false", false).unwrap();
    assert_eq!(installed, HookInstall::Installed(repo.path().join("custom-hooks/pre-commit")));
    repo.write("file.txt", "x\n");
    repo.git(&["add", "-A"]);
    let out = Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["-c", "user.name=T", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"])
        .args(["commit", "-q", "-m", "refused by the hook"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the hook did not run");
}

/// A directory without git: every regular file beneath it is scanned and named relative to
/// it; a symbolic link is not followed, `.git` is not entered, binary files are skipped.
#[test]
fn a_directory_is_scanned_without_git() {
    let dir = TempDir::new().unwrap();
    let key = fake_aws("AKIA", 7);
    std::fs::create_dir_all(dir.path().join("etc/app")).unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join("etc/app/config.env"), format!("# app\nAWS_KEY={key}\n"))
        .unwrap();
    std::fs::write(dir.path().join("README"), "nothing to see\n").unwrap();
    std::fs::write(dir.path().join(".git/config"), format!("token={key}\n")).unwrap();
    std::fs::write(dir.path().join("blob.bin"), format!("\0{key}")).unwrap();
    let outside = TempDir::new().unwrap();
    std::fs::write(outside.path().join("other.env"), format!("AWS_KEY={key}\n")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("other.env"), dir.path().join("link.env"))
        .unwrap();

    let report = scanner().scan(dir.path(), Mode::Directory).unwrap();
    let found: Vec<(&str, usize, &str)> =
        report.findings.iter().map(|f| (f.path.as_str(), f.line, f.rule)).collect();
    assert_eq!(found, [("etc/app/config.env", 2, "aws-access-key-id")], "{report}");
    assert_eq!(report.files_scanned, 2, "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert_eq!(report.skipped[0].path, "blob.bin");
    assert!(
        report.summary().starts_with("secret scan of the files in the directory: SECRETS FOUND")
    );

    // The same through the shared interface: what and where, never the key.
    use cliproxy_integrity::{IntegrityCheck, SecretScan};
    let findings = SecretScan::new(scanner(), dir.path(), Mode::Directory).run().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, "secret-scan");
    assert_eq!(findings[0].location, "etc/app/config.env:2");
    assert!(findings[0].what.starts_with("aws-access-key-id: AKIA…(20 chars) (sha256:"));
    assert!(!findings[0].to_string().contains(&key), "{}", findings[0]);
    assert!(!format!("{:?}", findings[0]).contains(&key));

    std::fs::remove_file(dir.path().join("etc/app/config.env")).unwrap();
    assert_eq!(SecretScan::new(scanner(), dir.path(), Mode::Directory).run().unwrap(), []);
}
