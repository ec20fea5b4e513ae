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
pub mod guard;
pub mod release;
pub mod secrets;

// The public interface is:
pub use check::{
    Error, Finding, IntegrityCheck, PathGuard, ReleaseVerification, Result, SecretScan,
};
