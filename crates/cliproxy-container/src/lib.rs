//! Layer 2 of cliproxy: container hardening, usable by any Linux program that wants to lock
//! itself in.
//!
//! - [`syscalls`]: one syscall allowlist, each entry with its reason, plus the calls that are
//!   never legitimate ([`syscalls::HOSTILE`]).
//! - [`sandbox`]: the [`Sandbox`] trait and its implementation [`ProcessSandbox`], built from
//!   a [`Config`], which applies the allowlist in-process — `no_new_privs`, a seccomp filter
//!   on every thread (hostile calls kill the process, anything not allowed fails with
//!   `EPERM`), and landlock (read-only and read-write paths, nothing else) — and refuses to
//!   run as root unless allowed.
//! - [`profile`]: the same allowlist as a Docker seccomp profile, so the container runtime
//!   and the process enforce the same list.
//! - [`posture`]: what the process actually runs with (uid/gid, capabilities, `NoNewPrivs`,
//!   seccomp mode, read-only root), read from `/proc/self`.
//!
//! It depends on no other cliproxy crate and logs nothing: [`Sandbox::apply`] returns what it
//! put in place ([`Applied`]) and the caller decides what to say about it. Its errors are
//! about the sandbox; a program that reads these settings from its own configuration file
//! names its own keys when it reports them.
//!
//! An embedder builds the sandbox from plain values, applies it while the process has one
//! thread (first thing in `main`), then reads back its posture. The example turns on only
//! what a test process can take without harm (`no_new_privs` and the memory protection); a
//! worker would keep the defaults, seccomp and landlock included, and list its directories
//! in [`Paths`] (`examples/sandboxed_worker.rs` does).
//!
//! ```
//! use cliproxy_container::{Config, Paths, ProcessSandbox, Sandbox};
//!
//! let sandbox = ProcessSandbox::new(Config {
//!     require_non_root: false,
//!     no_new_privs: true,
//!     seccomp: false,
//!     landlock: false,
//!     protect_memory: true,
//! });
//! let applied = sandbox.apply(&Paths::default())?;
//! assert!(applied.no_new_privs && applied.protect_memory && !applied.seccomp);
//! let posture = sandbox.posture()?;
//! assert!(posture.no_new_privs);
//! println!("running with {posture}");
//! # Ok::<(), cliproxy_container::Error>(())
//! ```

mod config;
mod error;
pub mod posture;
pub mod profile;
pub mod sandbox;
pub mod syscalls;

// The public interface is:
pub use config::Config;
pub use error::{Error, Result};
pub use posture::Posture;
pub use sandbox::{Applied, Landlock, Paths, ProcessSandbox, Sandbox};
