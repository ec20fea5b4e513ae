use std::path::PathBuf;

/// What went wrong while sandboxing. Each variant names the `sandbox.*` key involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Running as root while `sandbox.require_non_root` is on.
    #[error(
        "refusing to run as root (uid 0): run as an unprivileged user, or set sandbox.require_non_root: false if you really must"
    )]
    Root,
    /// `no_new_privs` could not be set.
    #[error("sandbox.no_new_privs: cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// The process could not be made non-dumpable, or its core file limit could not be set.
    #[error("sandbox.protect_memory: {what}: {source}")]
    ProtectMemory {
        /// What was being set.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The seccomp filter could not be built or installed.
    #[error("sandbox.seccomp: {0}")]
    Seccomp(String),
    /// Landlock failed (not: unsupported, which is reported as such).
    #[error("sandbox.landlock: {0}")]
    Landlock(String),
    /// A path given to landlock cannot be opened.
    #[error("sandbox.landlock: cannot open {path} to allow it: {source}")]
    LandlockPath {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Landlock was asked for while other threads run: it would restrict only the calling
    /// thread and the threads it starts, leaving the others unrestricted.
    #[error(
        "sandbox.landlock: {0} threads are already running; landlock restricts only the calling thread and the threads it starts, so apply the sandbox before starting any thread (before the logger, the async runtime and the gateway)"
    )]
    ThreadsRunning(u32),
    /// This architecture has no allowlist.
    #[error(
        "sandbox.seccomp: no syscall allowlist for this architecture (x86_64 and aarch64 have one)"
    )]
    UnsupportedArch,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
