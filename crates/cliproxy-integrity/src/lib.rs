//! Layer 1 of cliproxy: code integrity, as a library that `cargo xtask` drives and other
//! projects can embed. No hyper, no tokio: it reads files, runs `git`, and signs with ring.
//!
//! - [`guard`]: the path guard. A policy file names protected paths, warn-only paths,
//!   maintainers and the reviews required; every commit in a range that touches a protected
//!   path must be by a maintainer and carry enough `Reviewed-by:` trailers.
//! - [`secrets`]: the secret scanner (provider keys, tokens, private keys, high-entropy
//!   assignments) over the staged changes, the tree or the history of a repository, or over
//!   the files of a directory, with an allowlist.
//! - [`release`]: `SHA256SUMS` and an Ed25519 signature over it in minisign's format, and
//!   the verifier.
//!
//! The three share one interface, [`IntegrityCheck`]: [`PathGuard`], [`SecretScan`] and
//! [`ReleaseVerification`] each run to a list of [`Finding`]s (what is wrong, and where; never
//! a secret's value), so a program can hold any set of them and gate on the verdict. The
//! modules keep the detailed reports for a program that wants more.
//!
//! The checks are built from one configuration section, [`IntegrityConfig`] (serde, unknown
//! keys refused): `path_guard` (the policy file, the `base..head` range), `secrets` (the mode,
//! the directory, the allowlist file) and `release` (the release directory, the public key
//! file). [`IntegrityConfig::build`] makes every check the section configures; each
//! sub-section builds its own check for a program that runs one at a time, as `cargo xtask
//! guard|secrets|release verify` do from their command lines. Its errors are this crate's
//! [`Error`]: about the files and the checks, never about a key of a program's config file.
//!
//! The section is not part of the server's configuration (`cliproxy-server`'s `Config` has no
//! `integrity:`): these checks guard the source and the release artefacts before a binary is
//! deployed, in CI and on a maintainer's machine, and a running server has no repository to
//! guard or scan; a binary that verified its own release could vouch only for itself, since a
//! tampered one would skip the check. A release is verified by whoever installs it, with
//! `cargo xtask release verify` or `minisign`.
//!
//! A release gate: the release directory holds no secret, then it is signed and verifies.
//!
//! ```
//! use cliproxy_integrity::release::{self, SecretKey};
//! use cliproxy_integrity::secrets::{Allowlist, Mode, Scanner};
//! use cliproxy_integrity::{IntegrityCheck, ReleaseVerification, SecretScan};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let dir = tmp.path().join("release");
//! std::fs::create_dir(&dir)?;
//! std::fs::write(dir.join("tool-1.0-x86_64-linux"), b"\x7fELF...")?;
//! std::fs::write(dir.join("README.txt"), "run ./tool\n")?;
//!
//! let scan = SecretScan::new(Scanner::new(Allowlist::default())?, &dir, Mode::Directory);
//! assert!(scan.run()?.is_empty());
//!
//! let key = SecretKey::generate()?;
//! release::sign_dir(&dir, &key, "timestamp:1700000000\tfile:SHA256SUMS")?;
//! let checks: Vec<Box<dyn IntegrityCheck>> =
//!     vec![Box::new(scan), Box::new(ReleaseVerification::new(&dir, key.public_key().clone()))];
//! for check in &checks {
//!     let findings = check.run()?;
//!     assert!(findings.is_empty(), "{}: {findings:?}", check.name());
//! }
//!
//! std::fs::write(dir.join("README.txt"), "run ./tool --yolo\n")?;
//! let findings = checks[1].run()?;
//! assert_eq!(findings[0].location, "README.txt");
//! # Ok(())
//! # }
//! ```

mod check;
mod config;
pub mod guard;
pub mod release;
pub mod secrets;

// The public interface is:
pub use check::{
    Error, Finding, IntegrityCheck, PathGuard, ReleaseVerification, Result, SecretScan,
};
pub use config::{IntegrityConfig, PathGuardConfig, ReleaseConfig, SecretsConfig};
