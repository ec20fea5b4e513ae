//! The path guard: changes to protected paths need a maintainer as author and reviews from
//! other maintainers.
//!
//! A [`Policy`] (a TOML file, `integrity/path-guard.toml` in this repository) names the
//! protected path globs, the warn-only globs, the maintainers (by email) and the number of
//! `Reviewed-by:` trailers required. [`check_range`] walks every commit in `base..head` and
//! returns a [`Report`]: for each commit that touches a protected path,
//!
//! - the author email must be a maintainer's, and
//! - the message must end with at least `required_reviews` `Reviewed-by: Name <email>`
//!   trailers naming maintainers other than the author (emails compared case-insensitively,
//!   each reviewer counted once).
//!
//! Touching a path means adding, modifying, deleting it, changing its mode or type, or
//! renaming it: a rename counts for both its old and its new path, so moving a file into or
//! out of a protected directory is caught. Warn-only paths produce [`Warning`]s, never
//! violations.
//!
//! **Merge commits** are checked on their own changes only: the paths where the merge result
//! differs from every parent (`git diff-tree -c`), that is conflict resolutions and changes
//! made in the merge itself. Whatever a merge takes unchanged from one parent was made by the
//! commits on that side, which are either in the range (and checked one by one) or reachable
//! from `base` (and accepted before). A clean merge therefore passes whoever made it, and an
//! "evil merge" that edits a protected file is held to the same rules as any commit.
//!
//! ```
//! use cliproxy_integrity::guard::Policy;
//!
//! let policy = Policy::from_toml(
//!     r#"
//!     required_reviews = 1
//!     protected = ["crates/vault/**"]
//!     [[maintainers]]
//!     email = "alice@example.org"
//!     "#,
//! )?;
//! assert!(policy.is_protected("crates/vault/src/lib.rs"));
//! assert!(policy.is_maintainer("Alice@Example.org"));
//! # Ok::<(), cliproxy_integrity::guard::Error>(())
//! ```

pub(crate) mod git;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use self::git::{Git, GitFailure, nul_fields, printable};

/// What can stop the path guard from giving a verdict. A policy violation is not an error:
/// it is reported in [`Report::violations`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy file could not be read.
    #[error("{path}: cannot read the path-guard policy: {source}")]
    ReadPolicy {
        /// The policy file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The policy is not valid TOML, has an unknown or missing key, or a value is wrong.
    /// The message names the key (and, for TOML errors, shows the line).
    #[error("{}invalid path-guard policy: {message}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Policy {
        /// The policy file, when it was read from one.
        path: Option<PathBuf>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// `base` or `head` does not name a commit in the repository.
    #[error("bad revision `{rev}`: {reason}")]
    BadRevision {
        /// The revision as given.
        rev: String,
        /// git's explanation.
        reason: String,
    },
    /// A git command failed.
    #[error("`{command}` failed: {reason}")]
    Git {
        /// The command.
        command: String,
        /// git's explanation.
        reason: String,
    },
    /// git printed something this parser does not understand.
    #[error("unexpected output from `{command}`: {reason}")]
    Parse {
        /// The command.
        command: String,
        /// What was unexpected.
        reason: String,
    },
}

impl From<GitFailure> for Error {
    fn from(failure: GitFailure) -> Self {
        Self::Git { command: failure.command, reason: failure.reason }
    }
}

/// The path guard's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A maintainer: an email address, and a name for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Maintainer {
    /// The email, lower-cased.
    pub email: String,
    /// The display name, when the policy gives one.
    pub name: Option<String>,
}

/// A loaded, valid path-guard policy.
#[derive(Debug, Clone)]
pub struct Policy {
    protected: GlobSet,
    warn_only: GlobSet,
    maintainers: Vec<Maintainer>,
    required_reviews: u32,
}

/// The policy file as written; turned into a [`Policy`] by [`Policy::from_toml`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    required_reviews: u32,
    protected: Vec<String>,
    #[serde(default)]
    warn_only: Vec<String>,
    maintainers: Vec<MaintainerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintainerEntry {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

impl Policy {
    /// Reads and validates a policy file. Errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ReadPolicy { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Policy { path: None, message } => {
                Error::Policy { path: Some(path.to_owned()), message }
            }
            other => other,
        })
    }

    /// Parses and validates a policy. Unknown keys are refused (a misspelt `protectd` must
    /// not silently protect nothing); errors name the key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let invalid = |message: String| Error::Policy { path: None, message };
        let file: PolicyFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let protected = globs("protected", &file.protected).map_err(invalid)?;
        let warn_only = globs("warn_only", &file.warn_only).map_err(invalid)?;
        let mut maintainers = Vec::with_capacity(file.maintainers.len());
        for (index, entry) in file.maintainers.into_iter().enumerate() {
            let email = entry.email.trim();
            if !is_plausible_email(email) {
                return Err(invalid(format!(
                    "maintainers[{index}].email: `{}` is not an email address",
                    printable(email)
                )));
            }
            maintainers.push(Maintainer { email: email.to_ascii_lowercase(), name: entry.name });
        }
        if maintainers.is_empty() {
            return Err(invalid("maintainers: at least one maintainer is required".to_owned()));
        }
        Ok(Self { protected, warn_only, maintainers, required_reviews: file.required_reviews })
    }

    /// Whether a repository-relative path (`/`-separated) is protected.
    pub fn is_protected(&self, path: &str) -> bool {
        self.protected.is_match(path)
    }

    /// Whether a path is warn-only (and not protected: protection wins).
    pub fn is_warn_only(&self, path: &str) -> bool {
        !self.is_protected(path) && self.warn_only.is_match(path)
    }

    /// Whether an email belongs to a maintainer (case-insensitive).
    pub fn is_maintainer(&self, email: &str) -> bool {
        let email = email.trim().to_ascii_lowercase();
        self.maintainers.iter().any(|m| m.email == email)
    }

    /// The maintainers.
    pub fn maintainers(&self) -> &[Maintainer] {
        &self.maintainers
    }

    /// The number of `Reviewed-by:` trailers from other maintainers a protected change needs.
    pub fn required_reviews(&self) -> u32 {
        self.required_reviews
    }
}

/// How much of a subject a report line shows.
const SUBJECT_CHARS: usize = 60;

/// A commit, as much of it as a report needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Commit {
    /// The full object id.
    pub id: String,
    /// The first line of the message.
    pub subject: String,
    /// The author email, as recorded in the commit (no `.mailmap`: it lives in the tree and
    /// could be changed by the very commit being checked).
    pub author_email: String,
    /// Whether the commit has more than one parent.
    pub is_merge: bool,
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.id.get(..10).unwrap_or(&self.id);
        // Long subjects are cut: the id names the commit, the subject only reminds.
        let mut subject: String = self.subject.chars().take(SUBJECT_CHARS).collect();
        if subject.len() < self.subject.len() {
            subject.push('…');
        }
        write!(f, "{short} \"{}\"", printable(&subject))?;
        if self.is_merge {
            f.write_str(" (merge)")?;
        }
        Ok(())
    }
}

/// How a commit touched a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The file was added.
    Added,
    /// The file's content changed.
    Modified,
    /// The file was deleted.
    Deleted,
    /// The file was renamed (from `Change::from`).
    Renamed,
    /// The file was copied (from `Change::from`, which is left unchanged).
    Copied,
    /// The file's type changed (regular file, symlink, submodule).
    TypeChanged,
    /// A merge commit's result differs from every parent at this path.
    MergeResolution,
}

/// One path a commit touched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The path after the change (the old path for a deletion).
    pub path: String,
    /// The old path of a rename or copy.
    pub from: Option<String>,
}

impl Change {
    /// The paths this change touches: both sides of a rename, only the new side of a copy.
    pub fn touched(&self) -> impl Iterator<Item = &str> {
        let from = match self.kind {
            ChangeKind::Renamed => self.from.as_deref(),
            _ => None,
        };
        std::iter::once(self.path.as_str()).chain(from)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = printable(&self.path);
        match (&self.from, self.kind) {
            (Some(from), ChangeKind::Renamed) => {
                write!(f, "{} -> {path} (renamed)", printable(from))
            }
            (Some(from), ChangeKind::Copied) => write!(f, "{} -> {path} (copied)", printable(from)),
            (_, ChangeKind::Added) => write!(f, "{path} (added)"),
            (_, ChangeKind::Deleted) => write!(f, "{path} (deleted)"),
            (_, ChangeKind::TypeChanged) => write!(f, "{path} (type changed)"),
            (_, ChangeKind::MergeResolution) => write!(f, "{path} (changed by the merge)"),
            _ => f.write_str(&path),
        }
    }
}

/// A rule of the policy that a commit broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The author email is not a maintainer's.
    AuthorNotMaintainer {
        /// The author email.
        author: String,
    },
    /// Too few `Reviewed-by:` trailers from maintainers other than the author.
    TooFewReviews {
        /// The policy's `required_reviews`.
        required: u32,
        /// The reviews that counted.
        found: u32,
        /// `Reviewed-by:` trailers that did not count, each with the reason.
        not_counted: Vec<String>,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AuthorNotMaintainer { author } => {
                write!(f, "author not a maintainer ({})", printable(author))
            }
            Self::TooFewReviews { required, found, not_counted } => {
                write!(
                    f,
                    "needs {required} Reviewed-by from maintainers other than the author, found {found}"
                )?;
                if !not_counted.is_empty() {
                    write!(f, " (not counted: {})", printable(&not_counted.join(", ")))?;
                }
                Ok(())
            }
        }
    }
}

/// A commit that touched a protected path and broke a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The commit.
    pub commit: Commit,
    /// The protected path it touched.
    pub change: Change,
    /// The rule it broke.
    pub rule: Rule,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.commit, self.change, self.rule)
    }
}

/// A commit that touched a warn-only path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// The commit.
    pub commit: Commit,
    /// The warn-only path it touched.
    pub change: Change,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: touches a warn-only path", self.commit, self.change)
    }
}

/// The verdict over a range of commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// One entry per (commit, protected path, rule broken).
    pub violations: Vec<Violation>,
    /// One entry per (commit, warn-only path).
    pub warnings: Vec<Warning>,
    /// The commits in the range, merges included.
    pub commits_checked: usize,
    /// The commits in the range that touched a protected path.
    pub commits_protected: usize,
}

impl Report {
    /// No violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The one-line verdict.
    pub fn summary(&self) -> String {
        let commits: BTreeSet<&str> =
            self.violations.iter().map(|v| v.commit.id.as_str()).collect();
        let warnings = match self.warnings.len() {
            0 => String::new(),
            1 => ", 1 warning".to_owned(),
            n => format!(", {n} warnings"),
        };
        if self.passed() {
            format!(
                "path guard: PASSED: {} commits checked, {} touching protected paths, no violation{warnings}",
                self.commits_checked, self.commits_protected
            )
        } else {
            format!(
                "path guard: FAILED: {} violations in {} of {} commits checked ({} touching protected paths){warnings}",
                self.violations.len(),
                commits.len(),
                self.commits_checked,
                self.commits_protected
            )
        }
    }
}

impl fmt::Display for Report {
    /// Violations, then warnings (prefixed `warning: `), then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for violation in &self.violations {
            writeln!(f, "{violation}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Checks every commit in `base..head` (reachable from `head`, not from `base`) of the
/// repository containing `repo` against the policy.
pub fn check_range(repo: &Path, base: &str, head: &str, policy: &Policy) -> Result<Report> {
    let git = Git::open(repo)?;
    let base_id = resolve(&git, base)?;
    let head_id = resolve(&git, head)?;
    let range = format!("{base_id}..{head_id}");
    let out = git.run(["rev-list", "--topo-order", "--reverse", &range])?;
    let mut report = Report::default();
    for id in String::from_utf8_lossy(&out).lines().map(str::trim).filter(|l| !l.is_empty()) {
        let raw = git.run(["cat-file", "commit", id])?;
        let parsed = parse_commit(id, &raw)?;
        let changes = changes(&git, id, &parsed.parents)?;
        report.commits_checked += 1;
        evaluate(policy, &parsed, &changes, &mut report);
    }
    Ok(report)
}

/// A commit object, parsed.
struct ParsedCommit {
    commit: Commit,
    parents: Vec<String>,
    message: String,
}

fn resolve(git: &Git, rev: &str) -> Result<String> {
    let spec = format!("{rev}^{{commit}}");
    let out = git.run(["rev-parse", "--verify", "--quiet", "--end-of-options", &spec]).map_err(
        |e| Error::BadRevision {
            rev: printable(rev),
            reason: if e.reason.starts_with("git exited") {
                "not a commit in this repository (a shallow clone may lack it: fetch more history)"
                    .to_owned()
            } else {
                e.reason
            },
        },
    )?;
    let id = String::from_utf8_lossy(&out).trim().to_owned();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadRevision { rev: printable(rev), reason: "not a commit".to_owned() });
    }
    Ok(id)
}

/// Parses `git cat-file commit` output: headers, a blank line, the message.
fn parse_commit(id: &str, raw: &[u8]) -> Result<ParsedCommit> {
    let text = String::from_utf8_lossy(raw);
    let (headers, message) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut parents = Vec::new();
    let mut author = None;
    for line in headers.lines() {
        if let Some(parent) = line.strip_prefix("parent ") {
            parents.push(parent.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("author ") {
            author = Some(ident_email(value));
        }
    }
    let author_email = author.flatten().ok_or_else(|| Error::Parse {
        command: format!("git cat-file commit {id}"),
        reason: "no author email in the commit header".to_owned(),
    })?;
    let subject = message.lines().next().unwrap_or("").trim().to_owned();
    Ok(ParsedCommit {
        commit: Commit { id: id.to_owned(), subject, author_email, is_merge: parents.len() > 1 },
        parents,
        message: message.to_owned(),
    })
}

/// The email of a `Name <email> timestamp zone` identity line.
fn ident_email(value: &str) -> Option<String> {
    let end = value.rfind('>')?;
    let start = value[..end].rfind('<')?;
    Some(value[start + 1..end].trim().to_owned())
}

/// The paths a commit touched: against its parent, against the empty tree for a root
/// commit, and for a merge the paths where the result differs from every parent.
fn changes(git: &Git, id: &str, parents: &[String]) -> Result<Vec<Change>> {
    if parents.len() > 1 {
        let out = git.run(["diff-tree", "-c", "-r", "-z", "--name-only", "--no-commit-id", id])?;
        return Ok(nul_fields(&out)
            .map(|path| Change { kind: ChangeKind::MergeResolution, path: lossy(path), from: None })
            .collect());
    }
    let base = ["diff-tree", "-r", "-z", "-M", "--name-status", "--no-commit-id"];
    let out = match parents.first() {
        Some(parent) => git.run(base.iter().copied().chain([parent.as_str(), id]))?,
        None => git.run(base.iter().copied().chain(["--root", id]))?,
    };
    parse_name_status(&out)
        .map_err(|reason| Error::Parse { command: format!("git diff-tree {id}"), reason })
}

/// Parses `--name-status -z` output: `STATUS\0path\0`, or `R<score>\0old\0new\0` for
/// renames and copies.
fn parse_name_status(out: &[u8]) -> std::result::Result<Vec<Change>, String> {
    let mut fields = nul_fields(out);
    let mut changes = Vec::new();
    while let Some(status) = fields.next() {
        let mut path =
            || fields.next().map(lossy).ok_or_else(|| "a status without its path".to_owned());
        let change = match status.first() {
            Some(b'R') => {
                let from = path()?;
                Change { kind: ChangeKind::Renamed, from: Some(from), path: path()? }
            }
            Some(b'C') => {
                let from = path()?;
                Change { kind: ChangeKind::Copied, from: Some(from), path: path()? }
            }
            Some(b'A') => Change { kind: ChangeKind::Added, path: path()?, from: None },
            Some(b'D') => Change { kind: ChangeKind::Deleted, path: path()?, from: None },
            Some(b'T') => Change { kind: ChangeKind::TypeChanged, path: path()?, from: None },
            // M, and anything newer git may print: treat it as a modification.
            Some(_) => Change { kind: ChangeKind::Modified, path: path()?, from: None },
            None => return Err("an empty status field".to_owned()),
        };
        changes.push(change);
    }
    Ok(changes)
}

/// Non-UTF-8 bytes in a path become U+FFFD. That cannot hide a path from a glob: a glob is
/// UTF-8, so a replaced byte could never have matched one of its literal characters, and
/// `*` matches the replacement as it would the byte.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Applies the policy to one commit and adds what it finds to the report.
fn evaluate(policy: &Policy, parsed: &ParsedCommit, changes: &[Change], report: &mut Report) {
    let commit = &parsed.commit;
    let protected: Vec<&Change> =
        changes.iter().filter(|c| c.touched().any(|p| policy.is_protected(p))).collect();
    for change in changes {
        if !protected.contains(&change) && change.touched().any(|p| policy.is_warn_only(p)) {
            report.warnings.push(Warning { commit: commit.clone(), change: change.clone() });
        }
    }
    if protected.is_empty() {
        return;
    }
    report.commits_protected += 1;
    let mut broken = Vec::new();
    if !policy.is_maintainer(&commit.author_email) {
        broken.push(Rule::AuthorNotMaintainer { author: commit.author_email.clone() });
    }
    let (found, not_counted) = count_reviews(policy, &commit.author_email, &parsed.message);
    if found < policy.required_reviews {
        broken.push(Rule::TooFewReviews { required: policy.required_reviews, found, not_counted });
    }
    for rule in broken {
        for change in &protected {
            report.violations.push(Violation {
                commit: commit.clone(),
                change: (*change).clone(),
                rule: rule.clone(),
            });
        }
    }
}

/// Counts the distinct maintainers other than the author in the `Reviewed-by:` trailers,
/// and says why each other `Reviewed-by:` did not count.
fn count_reviews(policy: &Policy, author: &str, message: &str) -> (u32, Vec<String>) {
    let author = author.trim().to_ascii_lowercase();
    let mut counted = BTreeSet::new();
    let mut not_counted = Vec::new();
    for (key, value) in trailers(message) {
        if !key.eq_ignore_ascii_case("reviewed-by") {
            continue;
        }
        let Some(email) = trailer_email(&value) else {
            not_counted.push(format!("`{value}` has no <email>"));
            continue;
        };
        if email == author {
            not_counted.push(format!("{email} is the author"));
        } else if !policy.is_maintainer(&email) {
            not_counted.push(format!("{email} is not a maintainer"));
        } else if !counted.insert(email.clone()) {
            not_counted.push(format!("{email} listed twice"));
        }
    }
    (u32::try_from(counted.len()).unwrap_or(u32::MAX), not_counted)
}

/// The trailers of a commit message: the `Key: value` lines of its last paragraph, which
/// must not be the subject paragraph and must consist only of trailers (continuation lines
/// start with whitespace; git's `(cherry picked from commit ...)` line is ignored). A last
/// paragraph with any other line has no trailers at all, as with `git interpret-trailers`:
/// a `Reviewed-by:` in the middle of prose does not count.
pub fn trailers(message: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = message.lines().collect();
    let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    let lines = &lines[..end];
    let Some(blank) = lines.iter().rposition(|l| l.trim().is_empty()) else {
        return Vec::new();
    };
    // The paragraph before the blank line must hold something: the subject.
    if !lines[..blank].iter().any(|l| !l.trim().is_empty()) {
        return Vec::new();
    }
    let mut trailers: Vec<(String, String)> = Vec::new();
    for line in &lines[blank + 1..] {
        if line.starts_with("(cherry picked from commit ") {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match trailers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                    continue;
                }
                None => return Vec::new(),
            }
        }
        match split_trailer(line) {
            Some((key, value)) => trailers.push((key.to_owned(), value.to_owned())),
            None => return Vec::new(),
        }
    }
    trailers
}

fn split_trailer(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim_end();
    let valid = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && key.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric);
    valid.then(|| (key, value.trim()))
}

/// The lower-cased email of a trailer value: `Name <email>`, or a bare `email`.
fn trailer_email(value: &str) -> Option<String> {
    let email = match ident_email(value) {
        Some(email) => email,
        None if !value.contains(char::is_whitespace) => value.to_owned(),
        None => return None,
    };
    is_plausible_email(&email).then(|| email.to_ascii_lowercase())
}

fn is_plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !email
                    .contains(|c: char| c.is_whitespace() || c.is_control() || "<>,".contains(c))
        }
        None => false,
    }
}

/// Compiles a policy's glob list. `*` does not cross `/`; `**` does (gitignore-like).
fn globs(key: &str, patterns: &[String]) -> std::result::Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for (index, pattern) in patterns.iter().enumerate() {
        let glob = GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| {
            format!("{key}[{index}]: `{}` is not a valid glob: {e}", printable(pattern))
        })?;
        set.add(glob);
    }
    set.build().map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_come_from_the_last_paragraph_only() {
        let message = "Subject\n\nBody says Reviewed-by: A <a@x> in prose.\n\nReviewed-by: B <b@x>\nSigned-off-by: C <c@x>\n  continued\n";
        assert_eq!(
            trailers(message),
            vec![
                ("Reviewed-by".to_owned(), "B <b@x>".to_owned()),
                ("Signed-off-by".to_owned(), "C <c@x> continued".to_owned()),
            ]
        );
        assert!(trailers("Reviewed-by: A <a@x>\n").is_empty(), "a subject is not a trailer");
        assert!(trailers("Subject\n\nReviewed-by: A <a@x>\nnot a trailer\n").is_empty());
        assert_eq!(trailers("S\n\n(cherry picked from commit abc)\nReviewed-by: a@x\n").len(), 1);
    }

    #[test]
    fn trailer_emails() {
        assert_eq!(
            trailer_email("Alice <Alice@Example.org>").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(trailer_email("bob@example.org").as_deref(), Some("bob@example.org"));
        assert_eq!(trailer_email("Bob Smith"), None);
        assert_eq!(trailer_email("Bob <not-an-email>"), None);
    }

    #[test]
    fn name_status_parsing() {
        let out = b"M\0a b\0R087\0old\0new\nline\0D\0gone\0A\0added\0";
        let changes = parse_name_status(out).unwrap();
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[1].kind, ChangeKind::Renamed);
        assert_eq!(changes[1].touched().collect::<Vec<_>>(), ["new\nline", "old"]);
        assert_eq!(changes[1].to_string(), "old -> new\\nline (renamed)");
        assert!(parse_name_status(b"M\0").is_err());
    }
}
