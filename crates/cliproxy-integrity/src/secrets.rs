//! Secret scanning: provider API keys, tokens, private keys and high-entropy assignments in
//! the staged changes, the tracked files or the whole history of a git repository, or in the
//! files beneath any directory.
//!
//! A [`Scanner`] holds the rules and an [`Allowlist`]; [`Scanner::scan`] runs one [`Mode`]
//! over a repository and returns a [`Report`]. A [`Finding`] never holds the secret: only
//! where it is, the rule, a redacted preview (`sk-a…(108 chars)`) and a fingerprint
//! (`sha256:` of the rule id and the secret) that the allowlist can name without quoting it.
//!
//! | rule id | matches |
//! |---|---|
//! | `anthropic-api-key` | `sk-ant-` and 40 or more key characters |
//! | `openai-api-key` | `sk-proj-`, `sk-svcacct-`, `sk-admin-` keys; legacy `sk-` + 32 or more alphanumerics |
//! | `google-api-key` | `AIza` and 35 characters |
//! | `github-token` | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` tokens, `github_pat_` tokens |
//! | `aws-access-key-id` | `AKIA` / `ASIA` and 16 characters (not AWS's `...EXAMPLE` ids) |
//! | `private-key` | a PEM `BEGIN ... PRIVATE KEY` header followed by key material |
//! | `generic-secret-assignment` | `key`/`secret`/`token`/`password` `= "value"` with a long, high-entropy value |
//!
//! ```
//! use cliproxy_integrity::secrets::{Allowlist, Scanner};
//!
//! let scanner = Scanner::new(Allowlist::default())?;
//! // Built at run time, so that this file does not itself hold a key-shaped string.
//! let key = format!("{}{}", "AKIA", "Q3EGRYLFJX4ZU7TB");
//! let findings = scanner.find("config.env", &format!("AWS_ACCESS_KEY_ID={key}\n"), 1);
//! assert_eq!(findings[0].rule, "aws-access-key-id");
//! assert!(!findings[0].to_string().contains(&key));
//! # Ok::<(), cliproxy_integrity::secrets::Error>(())
//! ```

mod allowlist;
mod diff;
mod rules;

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::digest;

pub use self::allowlist::Allowlist;
use self::diff::{Event, Parser};
use self::rules::{GENERIC, Preview, Rule};
use crate::guard::git::{Git, GitFailure, nul_fields, printable};

/// What can stop a scan. Findings are not errors: they are in [`Report::findings`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The allowlist file could not be read.
    #[error("{path}: cannot read the secrets allowlist: {source}")]
    ReadAllowlist {
        /// The allowlist file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The allowlist is not valid; the message names the key.
    #[error("{}invalid secrets allowlist: {message}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Allowlist {
        /// The allowlist file, when it was read from one.
        path: Option<PathBuf>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("`{command}` failed: {reason}")]
    Git {
        /// The command.
        command: String,
        /// git's explanation.
        reason: String,
    },
    /// A rule's regular expression did not compile (a bug in this crate).
    #[error("secret rules: {0}")]
    Rules(String),
    /// `hooks install` found a different hook in place and was not told to replace it.
    #[error(
        "{path} already exists and is not the hook this would install; look at it, then re-run with --force to replace it"
    )]
    HookExists {
        /// The existing hook.
        path: PathBuf,
    },
}

impl From<GitFailure> for Error {
    fn from(failure: GitFailure) -> Self {
        Self::Git { command: failure.command, reason: failure.reason }
    }
}

/// The scanner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Files (or, in diff modes, a file's added lines) larger than this are skipped and listed.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What to scan. In a configuration file (`mode` of [`SecretsConfig`]) it is written
/// `staged`, `all`, `history` or `directory`.
///
/// [`SecretsConfig`]: crate::SecretsConfig
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// The lines the index adds to `HEAD` (`git diff --cached`): what the next commit adds.
    Staged,
    /// Every tracked file, as it is in the work tree (`git ls-files`).
    All,
    /// Every line added by every commit reachable from `HEAD` (`git log -p`), merge
    /// resolutions included.
    History,
    /// Every regular file beneath a directory, without git: a release directory, an unpacked
    /// archive. Symbolic links are not followed and `.git` directories are not entered.
    Directory,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Staged => "staged changes",
            Self::All => "tracked files",
            Self::History => "history",
            Self::Directory => "files in the directory",
        })
    }
}

/// A secret found. It holds no part of the secret beyond the four characters of the
/// preview.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The commit that added it (history mode).
    pub commit: Option<String>,
    /// The repository-relative path.
    pub path: String,
    /// The 1-based line (in the file as of that commit, or in the index, or the work tree).
    pub line: usize,
    /// The rule id.
    pub rule: &'static str,
    /// The first characters, `…` and the length; for a private key, its PEM header.
    pub preview: String,
    /// `sha256:` and the hex SHA-256 of `<rule id>:<secret>`, for the allowlist.
    pub fingerprint: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(commit) = &self.commit {
            write!(f, "{}:", commit.get(..10).unwrap_or(commit))?;
        }
        write!(
            f,
            "{}:{}: {}: {} ({})",
            printable(&self.path),
            self.line,
            self.rule,
            self.preview,
            self.fingerprint
        )
    }
}

/// A file that was not scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The commit (history mode).
    pub commit: Option<String>,
    /// The path.
    pub path: String,
    /// Why: binary, or over the size cap.
    pub reason: &'static str,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(commit) = &self.commit {
            write!(f, "{}:", commit.get(..10).unwrap_or(commit))?;
        }
        write!(f, "{}: not scanned: {}", printable(&self.path), self.reason)
    }
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// What was scanned.
    pub mode: Mode,
    /// The findings the allowlist does not allow.
    pub findings: Vec<Finding>,
    /// How many findings the allowlist allowed.
    pub allowed: usize,
    /// Files not scanned.
    pub skipped: Vec<Skipped>,
    /// Files scanned (in diff modes: file versions with added lines).
    pub files_scanned: usize,
}

impl Report {
    fn new(mode: Mode) -> Self {
        Self { mode, findings: Vec::new(), allowed: 0, skipped: Vec::new(), files_scanned: 0 }
    }

    /// No finding.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The one-line verdict.
    pub fn summary(&self) -> String {
        let verdict = if self.is_clean() { "clean" } else { "SECRETS FOUND" };
        format!(
            "secret scan of the {}: {verdict}: {} findings in {} files scanned ({} allowed by the allowlist, {} files skipped)",
            self.mode,
            self.findings.len(),
            self.files_scanned,
            self.allowed,
            self.skipped.len()
        )
    }
}

impl fmt::Display for Report {
    /// The findings, then the skipped files, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        for skipped in &self.skipped {
            writeln!(f, "{skipped}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// The compiled rules and the allowlist.
pub struct Scanner {
    rules: Vec<Rule>,
    allowlist: Allowlist,
    max_file_bytes: u64,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("rules", &self.rules.iter().map(|r| r.id).collect::<Vec<_>>())
            .field("allowlist", &self.allowlist)
            .field("max_file_bytes", &self.max_file_bytes)
            .finish()
    }
}

impl Scanner {
    /// Compiles the rules.
    pub fn new(allowlist: Allowlist) -> Result<Self> {
        let rules = rules::compile().map_err(Error::Rules)?;
        Ok(Self { rules, allowlist, max_file_bytes: DEFAULT_MAX_FILE_BYTES })
    }

    /// Changes the size above which a file is skipped.
    #[must_use]
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The ids of every rule.
    pub fn rule_ids() -> impl Iterator<Item = &'static str> {
        rules::ids()
    }

    /// Every finding in `text` (whose first line is line `first_line` of `path`), before the
    /// allowlist. A generic finding on text that a specific rule also matched is dropped.
    pub fn find(&self, path: &str, text: &str, first_line: usize) -> Vec<Finding> {
        let newlines: Vec<usize> =
            text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect();
        let mut found: Vec<(std::ops::Range<usize>, Finding)> = Vec::new();
        for rule in &self.rules {
            for captures in rule.regex.captures_iter(text) {
                let Some(secret) = captures.name("secret") else { continue };
                if !(rule.accept)(secret.as_str()) {
                    continue;
                }
                let span = secret.range();
                if rule.id == GENERIC
                    && found.iter().any(|(r, _)| r.start < span.end && span.start < r.end)
                {
                    continue;
                }
                let line = first_line + newlines.partition_point(|n| *n < span.start);
                found.push((
                    span,
                    Finding {
                        commit: None,
                        path: path.to_owned(),
                        line,
                        rule: rule.id,
                        preview: preview(rule.preview, secret.as_str()),
                        fingerprint: fingerprint(rule.id, secret.as_str()),
                    },
                ));
            }
        }
        let mut findings: Vec<Finding> = found.into_iter().map(|(_, f)| f).collect();
        findings.sort_by_key(|f| f.line);
        findings
    }

    /// Scans a repository (any directory inside its work tree), or, with
    /// [`Mode::Directory`], any directory.
    pub fn scan(&self, repo: &Path, mode: Mode) -> Result<Report> {
        if mode == Mode::Directory {
            return self.scan_directory(repo);
        }
        let git = Git::open(repo)?;
        match mode {
            // `Directory` was scanned above, without git.
            Mode::All | Mode::Directory => self.scan_tree(&git),
            Mode::Staged => {
                let args = [&["diff", "--cached"][..], DIFF_OPTIONS].concat();
                self.scan_patch(&git, Mode::Staged, &args)
            }
            Mode::History => {
                let has_head =
                    git.run(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]).is_ok();
                if !has_head {
                    return Ok(Report::new(Mode::History));
                }
                let args = [
                    &["-c", "log.showSignature=false", "-c", "log.showRoot=true", "log"][..],
                    DIFF_OPTIONS,
                    &["--cc", "--format=%x00commit %H", "HEAD"],
                ]
                .concat();
                self.scan_patch(&git, Mode::History, &args)
            }
        }
    }

    fn scan_tree(&self, git: &Git) -> Result<Report> {
        let mut report = Report::new(Mode::All);
        let out = git.run(["ls-files", "-z", "--cached", "--full-name"])?;
        for path in nul_fields(&out) {
            let path = String::from_utf8_lossy(path).into_owned();
            let full = git.root().join(&path);
            // Symlinks (their target is not content), submodules and files deleted from the
            // work tree are not scanned.
            let Ok(meta) = std::fs::symlink_metadata(&full) else { continue };
            if !meta.is_file() {
                continue;
            }
            self.scan_file(&mut report, &full, path, meta.len())?;
        }
        Ok(report)
    }

    /// Every regular file beneath `root`, in path order, named relative to it.
    fn scan_directory(&self, root: &Path) -> Result<Report> {
        let mut report = Report::new(Mode::Directory);
        let list = |path: &Path, source| Error::Io { path: path.to_owned(), op: "list", source };
        let mut files = Vec::new();
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| list(&dir, e))? {
                let entry = entry.map_err(|e| list(&dir, e))?;
                // The entry's own type: a symbolic link is not followed (its target is not
                // content of this directory), nor are sockets or devices read.
                let file_type = entry.file_type().map_err(|e| list(&entry.path(), e))?;
                if file_type.is_dir() && entry.file_name() != ".git" {
                    pending.push(entry.path());
                } else if file_type.is_file() {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        for full in files {
            let relative = full.strip_prefix(root).unwrap_or(&full);
            let path = relative.to_string_lossy().into_owned();
            let len = std::fs::symlink_metadata(&full)
                .map_err(|source| Error::Io { path: full.clone(), op: "read", source })?
                .len();
            self.scan_file(&mut report, &full, path, len)?;
        }
        Ok(report)
    }

    /// Scans one file of `len` bytes at `full`, reported as `path`: skipped when it is over
    /// the size cap or binary.
    fn scan_file(&self, report: &mut Report, full: &Path, path: String, len: u64) -> Result<()> {
        if len > self.max_file_bytes {
            report.skipped.push(Skipped { commit: None, path, reason: "over the size cap" });
            return Ok(());
        }
        let bytes = std::fs::read(full).map_err(|source| Error::Io {
            path: full.to_owned(),
            op: "read",
            source,
        })?;
        if bytes.contains(&0) {
            report.skipped.push(Skipped { commit: None, path, reason: "binary (NUL byte)" });
            return Ok(());
        }
        report.files_scanned += 1;
        let findings = self.find(&path, &String::from_utf8_lossy(&bytes), 1);
        self.record(report, findings);
        Ok(())
    }

    fn scan_patch(&self, git: &Git, mode: Mode, args: &[&str]) -> Result<Report> {
        let mut report = Report::new(mode);
        let mut parser = Parser::new(usize::try_from(self.max_file_bytes).unwrap_or(usize::MAX));
        let mut last_file: Option<(Option<String>, String)> = None;
        let mut sink = |event: Event<'_>| match event {
            Event::Added(chunk) => {
                let key = (chunk.commit.map(str::to_owned), chunk.path.to_owned());
                if last_file.as_ref() != Some(&key) {
                    report.files_scanned += 1;
                    last_file = Some(key);
                }
                let mut findings = self.find(chunk.path, chunk.text, chunk.first_line);
                for finding in &mut findings {
                    finding.commit = chunk.commit.map(str::to_owned);
                }
                self.record(&mut report, findings);
            }
            Event::Skipped { commit, path, reason } => report.skipped.push(Skipped {
                commit: commit.map(str::to_owned),
                path: path.to_owned(),
                reason,
            }),
        };
        git.stream_lines(args, |line| parser.line(line, &mut sink))?;
        parser.finish(&mut sink);
        Ok(report)
    }

    fn record(&self, report: &mut Report, findings: Vec<Finding>) {
        for finding in findings {
            if self.allowlist.allows(&finding) {
                report.allowed += 1;
            } else {
                report.findings.push(finding);
            }
        }
    }
}

/// Options that make the patch independent of the user's git configuration: no colour, no
/// external diff or text conversion, fixed `a/` `b/` prefixes, paths from the top level, no
/// context lines, renames detected (a moved file is not re-reported), and every file treated
/// as text (a `-diff` or `binary` attribute in `.gitattributes` must not hide a file; the
/// parser skips content with NUL bytes itself).
const DIFF_OPTIONS: &[&str] = &[
    "-p",
    "-U0",
    "-M",
    "--text",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
];

fn preview(kind: Preview, secret: &str) -> String {
    let length = secret.chars().count();
    match kind {
        Preview::Prefix => {
            let start: String = secret.chars().take(4).collect();
            format!("{start}…({length} chars)")
        }
        Preview::PemHeader => {
            let header = secret
                .get(5..)
                .and_then(|rest| rest.find("-----"))
                .and_then(|end| secret.get(..end + 10))
                .unwrap_or("-----BEGIN PRIVATE KEY-----");
            format!("{header} …({length} chars)")
        }
    }
}

/// The fingerprint of a secret found by `rule`: `sha256:` and the hex SHA-256 of
/// `<rule id>:<secret>`. The allowlist names findings by it without quoting the secret.
pub fn fingerprint(rule: &str, secret: &str) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(rule.as_bytes());
    context.update(b":");
    context.update(secret.as_bytes());
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for byte in context.finish().as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// What [`install_pre_commit_hook`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookInstall {
    /// The hook was written.
    Installed(PathBuf),
    /// The same hook was already there.
    AlreadyInstalled(PathBuf),
    /// A different hook was replaced (`force`).
    Replaced(PathBuf),
}

/// The pre-commit hook script that runs `command`.
pub fn pre_commit_hook(command: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # Installed by `cargo xtask hooks install` (cliproxy): refuses a commit whose staged\n\
         # changes add a secret. See docs/security/secret-scanning.md.\n\
         exec {command}\n"
    )
}

/// Writes the pre-commit hook running `command` into the repository's hooks directory
/// (`git rev-parse --git-path hooks`, so `core.hooksPath` and worktrees are respected),
/// executable. A different existing hook is only replaced when `force` is set.
pub fn install_pre_commit_hook(repo: &Path, command: &str, force: bool) -> Result<HookInstall> {
    let git = Git::open(repo)?;
    let out = git.run(["rev-parse", "--git-path", "hooks"])?;
    let hooks = PathBuf::from(String::from_utf8_lossy(&out).trim_end_matches(['\n', '\r']));
    let hooks = if hooks.is_absolute() { hooks } else { git.root().join(hooks) };
    let path = hooks.join("pre-commit");
    let script = pre_commit_hook(command);
    let existing = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(Error::Io { path, op: "read", source }),
    };
    if existing.as_deref() == Some(script.as_bytes()) && is_executable(&path) {
        return Ok(HookInstall::AlreadyInstalled(path));
    }
    if existing.is_some() && !force {
        return Err(Error::HookExists { path });
    }
    std::fs::create_dir_all(&hooks).map_err(|source| Error::Io {
        path: hooks.clone(),
        op: "create",
        source,
    })?;
    // Written beside the hook, then renamed over it: git never runs a half-written hook.
    let temporary = hooks.join(".pre-commit.cliproxy-tmp");
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o755);
        let mut file = options.open(&temporary)?;
        file.write_all(script.as_bytes())?;
        file.sync_all()?;
        #[cfg(unix)]
        std::fs::set_permissions(&temporary, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(|source| Error::Io { path: path.clone(), op: "write", source })?;
    Ok(if existing.is_some() { HookInstall::Replaced(path) } else { HookInstall::Installed(path) })
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_never_hold_more_than_four_characters() {
        assert_eq!(preview(Preview::Prefix, "abcdefghijklmnop"), "abcd…(16 chars)");
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA";
        assert_eq!(preview(Preview::PemHeader, pem), "-----BEGIN RSA PRIVATE KEY----- …(48 chars)");
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint("r", "s").len(), 7 + 64);
        assert_ne!(fingerprint("r", "s"), fingerprint("q", "s"));
    }
}
