//! Layer 2 of cliproxy: container hardening.
//!
//! - [`syscalls`]: one syscall allowlist, each entry with its reason, plus the calls that are
//!   never legitimate ([`syscalls::HOSTILE`]).
//! - [`sandbox`]: applies it in-process — `no_new_privs`, a seccomp filter on every thread
//!   (hostile calls kill the process, anything not allowed fails with `EPERM`), and landlock
//!   (read-only and read-write paths, nothing else) — and refuses to run as root unless allowed.
//! - [`profile`]: the same allowlist as a Docker seccomp profile, so the container runtime
//!   and the process enforce the same list.
//! - [`posture`]: what the process actually runs with (uid/gid, capabilities, `NoNewPrivs`,
//!   seccomp mode, landlock, read-only root), read from `/proc/self`.
//!
//! It depends on no other cliproxy crate; the binary composes it.

mod config;
mod error;
pub mod posture;
pub mod profile;
pub mod sandbox;
pub mod syscalls;

// The public interface is:
pub use config::Config;
pub use error::{Error, Result};
