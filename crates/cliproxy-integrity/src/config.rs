//! The configuration section of this crate: [`IntegrityConfig`], one sub-section per check
//! (the path guard's policy and range, the secret scan's allowlist and mode, the release
//! directory and its public key), which builds the checks behind [`IntegrityCheck`].
//!
//! It deserialises from a map of these fields (unknown keys refused), so it can be one section
//! of a program's own configuration file, and it can be made from plain values too. Relative
//! paths are taken relative to the `root` given to `build` (the repository's top level); with
//! an empty `root` they stay relative to the working directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::check::{Error, IntegrityCheck, PathGuard, ReleaseVerification, Result, SecretScan};
use crate::{guard, release, secrets};

/// The integrity checks a program runs, and the files they read. The defaults are what
/// `cargo xtask` uses in this repository: the policy in `integrity/path-guard.toml`, the
/// allowlist in `integrity/secrets-allowlist.toml` (optional), every tracked file scanned, and
/// releases in `target/release-artifacts`.
///
/// [`IntegrityConfig::build`] builds the checks that are fully configured: the secret scan
/// unless it is disabled, the path guard once it has a base revision, and the release
/// verification once it has a public key.
///
/// ```
/// use cliproxy_integrity::IntegrityConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// std::fs::create_dir(tmp.path().join("dist"))?;
/// std::fs::write(tmp.path().join("dist/README.txt"), "run ./tool\n")?;
/// // The `integrity` section of a program's own configuration file.
/// let config: IntegrityConfig = toml::from_str(
///     r#"
///     [secrets]
///     mode = "directory"
///     dir = "dist"
///     "#,
/// )?;
/// for check in config.build(tmp.path())? {
///     assert!(check.run()?.is_empty(), "{}", check.name());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct IntegrityConfig {
    /// The path guard.
    pub path_guard: PathGuardConfig,
    /// The secret scanner.
    pub secrets: SecretsConfig,
    /// The verification of a signed release.
    pub release: ReleaseConfig,
}

impl IntegrityConfig {
    /// The checks this section configures (see the type's documentation), in the order path
    /// guard, secret scan, release verification, with relative paths taken from `root`.
    ///
    /// # Errors
    ///
    /// A policy, allowlist or public key file that cannot be read or is not valid.
    pub fn build(&self, root: &Path) -> Result<Vec<Box<dyn IntegrityCheck>>> {
        let mut checks: Vec<Box<dyn IntegrityCheck>> = Vec::new();
        if self.path_guard.base.is_some() {
            checks.push(Box::new(self.path_guard.build(root)?));
        }
        if self.secrets.enabled {
            checks.push(Box::new(self.secrets.build(root)?));
        }
        if self.release.public_key.is_some() {
            checks.push(Box::new(self.release.build(root)?));
        }
        Ok(checks)
    }
}

/// The path guard (`path_guard`): its policy file and the range of commits it checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PathGuardConfig {
    /// The policy file ([`guard::Policy`]): protected paths, maintainers, reviews required.
    pub policy: PathBuf,
    /// The commits checked are those reachable from `head` but not from `base` (a pull
    /// request's base branch, say). No default: without it there is no range to check.
    pub base: Option<String>,
    /// The last commit checked.
    pub head: String,
}

impl PathGuardConfig {
    /// The path guard over `base..head` of the repository at `root`, with its policy loaded.
    ///
    /// # Errors
    ///
    /// [`Error::NoBaseRevision`] without a `base`; [`Error::Guard`] when the policy cannot be
    /// read or is not valid.
    pub fn build(&self, root: &Path) -> Result<PathGuard> {
        let base = self.base.as_deref().ok_or(Error::NoBaseRevision)?;
        let policy = guard::Policy::load(&resolve(root, &self.policy))?;
        Ok(PathGuard::new(root, base, self.head.as_str(), policy))
    }
}

impl Default for PathGuardConfig {
    fn default() -> Self {
        Self {
            policy: PathBuf::from("integrity/path-guard.toml"),
            base: None,
            head: "HEAD".to_owned(),
        }
    }
}

/// The secret scanner (`secrets`): what it scans, and the findings it allows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SecretsConfig {
    /// Whether [`IntegrityConfig::build`] builds the scan.
    pub enabled: bool,
    /// What is scanned: the staged changes, the tracked files, the history, or every file of
    /// a directory.
    pub mode: secrets::Mode,
    /// The directory scanned, under `root`; empty (the default) scans `root` itself.
    pub dir: PathBuf,
    /// The allowlist file ([`secrets::Allowlist`]).
    pub allowlist: PathBuf,
    /// Whether a missing allowlist file is an error. When it is not (the default), a missing
    /// file allows nothing: every finding is reported, so a lost file never hides one.
    pub allowlist_required: bool,
    /// Files (or a file's added lines) larger than this many bytes are skipped and listed.
    pub max_file_bytes: u64,
}

impl SecretsConfig {
    /// The secret scan of `dir` under `root`, with its allowlist loaded.
    ///
    /// # Errors
    ///
    /// [`Error::Secrets`] when the allowlist cannot be read (a missing file only when
    /// `allowlist_required`) or is not valid.
    pub fn build(&self, root: &Path) -> Result<SecretScan> {
        let path = resolve(root, &self.allowlist);
        let allowlist = if self.allowlist_required || path.exists() {
            secrets::Allowlist::load(&path)?
        } else {
            secrets::Allowlist::default()
        };
        let scanner = secrets::Scanner::new(allowlist)?.with_max_file_bytes(self.max_file_bytes);
        Ok(SecretScan::new(scanner, resolve(root, &self.dir), self.mode))
    }
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: secrets::Mode::All,
            dir: PathBuf::new(),
            allowlist: PathBuf::from("integrity/secrets-allowlist.toml"),
            allowlist_required: false,
            max_file_bytes: secrets::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// The verification of a signed release (`release`): where it is, and the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ReleaseConfig {
    /// The release directory: the artefacts, `SHA256SUMS` and `SHA256SUMS.minisig`.
    pub dir: PathBuf,
    /// The release public key, in minisign's format. No default: a key found next to the
    /// release it vouches for would vouch for nothing.
    pub public_key: Option<PathBuf>,
}

impl ReleaseConfig {
    /// The verification of the release in `dir` under `root`, with the public key read.
    ///
    /// # Errors
    ///
    /// [`Error::NoPublicKey`] without a `public_key`; [`Error::Release`] when the key file
    /// cannot be read or is not a minisign Ed25519 public key.
    pub fn build(&self, root: &Path) -> Result<ReleaseVerification> {
        let key = self.public_key.as_deref().ok_or(Error::NoPublicKey)?;
        let public_key = release::read_public_key(&resolve(root, key))?;
        Ok(ReleaseVerification::new(resolve(root, &self.dir), public_key))
    }
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("target/release-artifacts"), public_key: None }
    }
}

/// `path` taken relative to `root` unless it is absolute; an empty `path` is `root` itself.
fn resolve(root: &Path, path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() { root.to_owned() } else { root.join(path) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::SecretKey;
    use crate::secrets::Mode;

    /// A valid policy with two required reviews, so a test can tell it was the one loaded.
    const POLICY: &str = r#"
required_reviews = 2
protected = ["src/**"]
[[maintainers]]
email = "a@example.org"
[[maintainers]]
email = "b@example.org"
[[maintainers]]
email = "c@example.org"
"#;

    fn parse(text: &str) -> std::result::Result<IntegrityConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_section_is_the_defaults_xtask_uses() {
        let config = parse("").unwrap();
        assert_eq!(config, IntegrityConfig::default());
        assert_eq!(config.path_guard.policy, Path::new("integrity/path-guard.toml"));
        assert_eq!(config.path_guard.base, None);
        assert_eq!(config.path_guard.head, "HEAD");
        assert!(config.secrets.enabled);
        assert_eq!(config.secrets.mode, Mode::All);
        assert_eq!(config.secrets.dir, Path::new(""));
        assert_eq!(config.secrets.allowlist, Path::new("integrity/secrets-allowlist.toml"));
        assert!(!config.secrets.allowlist_required);
        assert_eq!(config.secrets.max_file_bytes, 1024 * 1024);
        assert_eq!(config.release.dir, Path::new("target/release-artifacts"));
        assert_eq!(config.release.public_key, None);
        // Empty sub-sections are their defaults too.
        assert_eq!(parse("[path_guard]\n[secrets]\n[release]\n").unwrap(), config);
    }

    #[test]
    fn every_field_is_read() {
        let config = parse(
            r#"
[path_guard]
policy = "policy/guard.toml"
base = "origin/main"
head = "feature"

[secrets]
enabled = false
mode = "directory"
dir = "dist"
allowlist = "policy/allow.toml"
allowlist_required = true
max_file_bytes = 4096

[release]
dir = "out/release"
public_key = "keys/release.pub"
"#,
        )
        .unwrap();
        let PathGuardConfig { policy, base, head } = config.path_guard;
        assert_eq!(policy, Path::new("policy/guard.toml"));
        assert_eq!(base.as_deref(), Some("origin/main"));
        assert_eq!(head, "feature");
        let SecretsConfig { enabled, mode, dir, allowlist, allowlist_required, max_file_bytes } =
            config.secrets;
        assert!(!enabled);
        assert_eq!(mode, Mode::Directory);
        assert_eq!(dir, Path::new("dist"));
        assert_eq!(allowlist, Path::new("policy/allow.toml"));
        assert!(allowlist_required);
        assert_eq!(max_file_bytes, 4096);
        let ReleaseConfig { dir, public_key } = config.release;
        assert_eq!(dir, Path::new("out/release"));
        assert_eq!(public_key.as_deref(), Some(Path::new("keys/release.pub")));
    }

    #[test]
    fn every_mode_is_read_by_its_name() {
        for (name, mode) in [
            ("staged", Mode::Staged),
            ("all", Mode::All),
            ("history", Mode::History),
            ("directory", Mode::Directory),
        ] {
            let config = parse(&format!("[secrets]\nmode = \"{name}\"\n")).unwrap();
            assert_eq!(config.secrets.mode, mode, "{name}");
        }
        let error = parse("[secrets]\nmode = \"everything\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown variant `everything`"), "{error}");
    }

    #[test]
    fn an_unknown_key_is_refused_and_named() {
        // A misspelt key must not silently leave a check at its default.
        let error = parse("pathguard = {}\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `pathguard`"), "{error}");
        assert!(error.contains("path_guard"), "the error lists the known keys: {error}");
        let error = parse("[secrets]\nallow_list = \"a.toml\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `allow_list`"), "{error}");
        let error = parse("[release]\npubkey = \"k.pub\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `pubkey`"), "{error}");
        let error = parse("[path_guard]\nprotected = []\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `protected`"), "{error}");
    }

    #[test]
    fn the_defaults_build_only_the_secret_scan_even_without_an_allowlist_file() {
        let tmp = tempfile::tempdir().unwrap();
        let checks = IntegrityConfig::default().build(tmp.path()).unwrap();
        let names: Vec<_> = checks.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["secret-scan"]);
    }

    #[test]
    fn a_full_section_builds_the_three_checks_from_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("policy")).unwrap();
        std::fs::write(root.join("policy/guard.toml"), POLICY).unwrap();
        // A planted key in the release, allowed by path in the configured allowlist.
        let dist = root.join("dist");
        std::fs::create_dir(&dist).unwrap();
        let planted = format!("{}{}", "AKIA", "Q3EGRYLFJX4ZU7TB");
        std::fs::write(dist.join("deploy.env"), format!("KEY_ID={planted}\n")).unwrap();
        std::fs::write(
            root.join("policy/allow.toml"),
            "[[allow]]\nreason = \"a fixture\"\npaths = [\"deploy.env\"]\n",
        )
        .unwrap();
        let key = SecretKey::generate().unwrap();
        release::sign_dir(&dist, &key, "timestamp:1700000000\tfile:SHA256SUMS").unwrap();
        std::fs::write(root.join("release.pub"), key.public_key().to_file_text()).unwrap();

        let mut config = IntegrityConfig::default();
        config.path_guard.policy = PathBuf::from("policy/guard.toml");
        config.path_guard.base = Some("origin/main".to_owned());
        config.secrets.mode = Mode::Directory;
        config.secrets.dir = PathBuf::from("dist");
        config.secrets.allowlist = PathBuf::from("policy/allow.toml");
        config.secrets.allowlist_required = true;
        config.release.dir = PathBuf::from("dist");
        // An absolute path is taken as it is.
        config.release.public_key = Some(root.join("release.pub"));

        let checks = config.build(root).unwrap();
        let names: Vec<_> = checks.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["path-guard", "secret-scan", "release-verification"]);
        // The scan and the verification pass: the allowlist read from the file allows the
        // planted key, and the key read from the file verifies the signature.
        assert_eq!(checks[1].run().unwrap(), []);
        assert_eq!(checks[2].run().unwrap(), []);
        let guard = config.path_guard.build(root).unwrap();
        assert_eq!(guard.policy().required_reviews(), 2, "the configured policy is loaded");

        // Without the allowlist the same scan reports the key (and not its value).
        config.secrets.allowlist = PathBuf::from("policy/none.toml");
        config.secrets.allowlist_required = false;
        let findings = config.secrets.build(root).unwrap().run().unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].location, "deploy.env:1");
        assert!(!findings[0].to_string().contains(&planted));
        // A file above the configured size is skipped, not scanned.
        config.secrets.max_file_bytes = 8;
        assert_eq!(config.secrets.build(root).unwrap().run().unwrap(), []);
    }

    #[test]
    fn a_missing_setting_or_a_malformed_file_is_a_typed_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("bad-policy.toml"), "required_reviews = \"two\"\n").unwrap();
        std::fs::write(root.join("bad-allow.toml"), "[[allow]]\npaths = [\"x\"]\n").unwrap();
        std::fs::write(root.join("bad.pub"), "untrusted comment: k\nnot base64 at all\n").unwrap();

        let mut config = IntegrityConfig::default();
        assert!(matches!(config.path_guard.build(root), Err(Error::NoBaseRevision)));
        assert!(matches!(config.release.build(root), Err(Error::NoPublicKey)));

        config.path_guard.base = Some("main".to_owned());
        config.path_guard.policy = PathBuf::from("bad-policy.toml");
        let error = config.build(root).unwrap_err();
        assert!(
            matches!(&error, Error::Guard(guard::Error::Policy { path: Some(p), .. }) if p.ends_with("bad-policy.toml")),
            "{error:?}"
        );
        config.path_guard.policy = PathBuf::from("missing.toml");
        let error = config.build(root).unwrap_err();
        assert!(matches!(&error, Error::Guard(guard::Error::ReadPolicy { .. })), "{error:?}");

        config.secrets.allowlist = PathBuf::from("bad-allow.toml");
        let error = config.secrets.build(root).unwrap_err();
        assert!(matches!(&error, Error::Secrets(secrets::Error::Allowlist { .. })), "{error:?}");
        assert!(error.to_string().contains("reason"), "the message names the key: {error}");
        config.secrets.allowlist = PathBuf::from("missing.toml");
        config.secrets.allowlist_required = true;
        let error = config.secrets.build(root).unwrap_err();
        assert!(
            matches!(&error, Error::Secrets(secrets::Error::ReadAllowlist { .. })),
            "{error:?}"
        );

        config.release.public_key = Some(PathBuf::from("bad.pub"));
        let error = config.release.build(root).unwrap_err();
        assert!(
            matches!(&error, Error::Release(release::Error::MalformedPublicKey(_))),
            "{error:?}"
        );
        config.release.public_key = Some(PathBuf::from("missing.pub"));
        let error = config.release.build(root).unwrap_err();
        assert!(matches!(&error, Error::Release(release::Error::Io { .. })), "{error:?}");
    }
}
