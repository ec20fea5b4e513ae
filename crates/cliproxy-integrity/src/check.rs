//! The one interface the three checks share: [`IntegrityCheck`], whose [`run`] gives a
//! verdict as a list of [`Finding`]s (none: the check passed), and the three checks behind it
//! — [`PathGuard`] over a commit range, [`SecretScan`] over a repository or a directory, and
//! [`ReleaseVerification`] of a signed release directory.
//!
//! Each check keeps its own detailed report in its module ([`guard::Report`],
//! [`secrets::Report`], [`release::VerifiedRelease`]); a program that only needs "did it pass,
//! and if not, what and where" runs any of them through the trait.
//!
//! [`run`]: IntegrityCheck::run

use std::fmt;
use std::path::{Path, PathBuf};

use crate::guard::git::printable;
use crate::{guard, release, secrets};

/// An integrity check: something that looks at code or artefacts and says what is wrong.
pub trait IntegrityCheck: fmt::Debug + Send + Sync {
    /// A short, stable name (`path-guard`, `secret-scan`, `release-verification`).
    fn name(&self) -> &'static str;

    /// Runs the check. `Ok` with no finding means it passed; each finding is one thing wrong.
    /// An error means no verdict could be given (a file could not be read, git failed).
    fn run(&self) -> Result<Vec<Finding>>;
}

/// One thing a check found wrong: what, and where. It never holds a secret's value: a secret
/// is described by its rule, a redacted preview and a fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The [`IntegrityCheck::name`] of the check that found it.
    pub check: &'static str,
    /// What is wrong.
    pub what: String,
    /// Where: a file (with its line), a commit and a path, or a file of a release.
    pub location: String,
}

impl Finding {
    /// A finding of the check `check`.
    pub fn new(check: &'static str, what: impl Into<String>, location: impl Into<String>) -> Self {
        Self { check, what: what.into(), location: location.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.check, self.location, self.what)
    }
}

/// Why a check could not be built or could not give a verdict: the error of the check, or
/// a setting its [`IntegrityConfig`](crate::IntegrityConfig) section lacks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path guard could not run.
    #[error(transparent)]
    Guard(#[from] guard::Error),
    /// The secret scan could not run.
    #[error(transparent)]
    Secrets(#[from] secrets::Error),
    /// The release could not be read.
    #[error(transparent)]
    Release(#[from] release::Error),
    /// The path guard was asked for without a base revision: there is no range to check.
    #[error("the path guard needs a base revision: it checks the commits in base..head")]
    NoBaseRevision,
    /// The release verification was asked for without a public key to verify with.
    #[error("the release verification needs a public key file")]
    NoPublicKey,
}

/// The result type of [`IntegrityCheck::run`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The path guard over `base..head` of a repository: one finding per commit, protected path
/// and rule broken ([`guard::check_range`]). Warn-only paths are not findings.
#[derive(Debug)]
pub struct PathGuard {
    repo: PathBuf,
    base: String,
    head: String,
    policy: guard::Policy,
}

impl PathGuard {
    /// The guard of the commits in `base..head` of the repository containing `repo`.
    pub fn new(
        repo: impl Into<PathBuf>,
        base: impl Into<String>,
        head: impl Into<String>,
        policy: guard::Policy,
    ) -> Self {
        Self { repo: repo.into(), base: base.into(), head: head.into(), policy }
    }

    /// The policy the guard applies.
    pub fn policy(&self) -> &guard::Policy {
        &self.policy
    }

    /// Runs the guard to its detailed report (warnings included), which [`IntegrityCheck::run`]
    /// turns into findings.
    pub fn report(&self) -> guard::Result<guard::Report> {
        guard::check_range(&self.repo, &self.base, &self.head, &self.policy)
    }
}

impl IntegrityCheck for PathGuard {
    fn name(&self) -> &'static str {
        "path-guard"
    }

    fn run(&self) -> Result<Vec<Finding>> {
        let report = self.report()?;
        Ok(report
            .violations
            .iter()
            .map(|v| {
                Finding::new(self.name(), v.rule.to_string(), format!("{}: {}", v.commit, v.change))
            })
            .collect())
    }
}

/// The secret scanner over a git repository in one of its modes, or over every file beneath
/// a directory ([`secrets::Mode::Directory`]): one finding per secret the allowlist does not
/// allow.
#[derive(Debug)]
pub struct SecretScan {
    scanner: secrets::Scanner,
    root: PathBuf,
    mode: secrets::Mode,
}

impl SecretScan {
    /// Scans `root` (a directory in a work tree, or any directory with
    /// [`secrets::Mode::Directory`]) with `scanner`.
    pub fn new(scanner: secrets::Scanner, root: impl Into<PathBuf>, mode: secrets::Mode) -> Self {
        Self { scanner, root: root.into(), mode }
    }

    /// Runs the scan to its detailed report (skipped files and counts included), which
    /// [`IntegrityCheck::run`] turns into findings.
    pub fn report(&self) -> secrets::Result<secrets::Report> {
        self.scanner.scan(&self.root, self.mode)
    }
}

impl IntegrityCheck for SecretScan {
    fn name(&self) -> &'static str {
        "secret-scan"
    }

    fn run(&self) -> Result<Vec<Finding>> {
        let report = self.report()?;
        Ok(report
            .findings
            .iter()
            .map(|finding| {
                let mut location = String::new();
                if let Some(commit) = &finding.commit {
                    location.push_str(commit.get(..10).unwrap_or(commit));
                    location.push(':');
                }
                location.push_str(&format!("{}:{}", printable(&finding.path), finding.line));
                Finding::new(
                    self.name(),
                    format!("{}: {} ({})", finding.rule, finding.preview, finding.fingerprint),
                    location,
                )
            })
            .collect())
    }
}

/// The verification of a signed release directory ([`release::verify_dir`]): the signature of
/// `SHA256SUMS`, then the digest of every file it lists. The first failure is the finding
/// (it names the file); a release that cannot be read at all is an error. Files that
/// `SHA256SUMS` does not list are not findings ([`release::VerifiedRelease::unlisted`]).
#[derive(Debug)]
pub struct ReleaseVerification {
    dir: PathBuf,
    public_key: release::PublicKey,
}

impl ReleaseVerification {
    /// Verifies the release in `dir` against `public_key`.
    pub fn new(dir: impl Into<PathBuf>, public_key: release::PublicKey) -> Self {
        Self { dir: dir.into(), public_key }
    }

    /// The release directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Verifies the release to its detailed result ([`release::verify_dir`]): the files that
    /// match, those `SHA256SUMS` does not list, the key id and the trusted comment. Any
    /// failure is an error here; [`IntegrityCheck::run`] turns the verdicts among them into
    /// a finding.
    pub fn verify(&self) -> release::Result<release::VerifiedRelease> {
        release::verify_dir(&self.dir, &self.public_key)
    }
}

impl IntegrityCheck for ReleaseVerification {
    fn name(&self) -> &'static str {
        "release-verification"
    }

    fn run(&self) -> Result<Vec<Finding>> {
        use release::Error as E;
        // A directory that is not there is no verdict; a release in it that lacks its
        // `SHA256SUMS` or signature is one (below).
        std::fs::metadata(&self.dir).map_err(|e| E::io(&self.dir, e))?;
        let error = match self.verify() {
            Ok(_) => return Ok(Vec::new()),
            Err(error) => error,
        };
        let location = match &error {
            // No verdict: the release could not be read, or this machine failed.
            // An unsigned release (no `SHA256SUMS` or no signature) is a verdict, not a
            // failure to read one.
            E::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                file_name(path)
            }
            E::Io { .. } | E::Random => return Err(error.into()),
            E::ChecksumMismatch { name, .. } | E::MissingArtifact { name } => name.clone(),
            E::UnsafeArtifact { path, .. } | E::TooLarge { path, .. } => file_name(path),
            E::MalformedChecksums { line, .. } => format!("{}:{line}", release::SUMS_FILE),
            E::BadSignature => release::SUMS_FILE.to_owned(),
            _ => release::SIGNATURE_FILE.to_owned(),
        };
        Ok(vec![Finding::new(self.name(), error.to_string(), location)])
    }
}

/// The name of a file of the release directory, as `SHA256SUMS` would list it.
fn file_name(path: &Path) -> String {
    printable(&path.file_name().unwrap_or(path.as_os_str()).to_string_lossy())
}
