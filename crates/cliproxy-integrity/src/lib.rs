//! Layer 1 of cliproxy: code integrity, as a library that `cargo xtask` drives and other
//! projects can embed. No hyper, no tokio: it reads files, runs `git`, and signs with ring.
//!
//! - [`guard`]: the path guard. A policy file names protected paths, warn-only paths,
//!   maintainers and the reviews required; every commit in a range that touches a protected
//!   path must be by a maintainer and carry enough `Reviewed-by:` trailers.
//! - [`secrets`]: the secret scanner (provider keys, tokens, private keys, high-entropy
//!   assignments) over the staged changes, the tree or the history, with an allowlist.
//! - [`release`]: `SHA256SUMS` and an Ed25519 signature over it in minisign's format, and
//!   the verifier.

pub mod guard;
pub mod release;
pub mod secrets;
