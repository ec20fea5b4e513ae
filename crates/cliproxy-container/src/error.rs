use std::path::PathBuf;

/// What went wrong while sandboxing. The messages are about this library: which protection
/// failed and why. A program that reads its sandbox settings from a configuration file adds
/// the name of its own setting when it reports one (the variant says which protection it is).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Running as root while [`Config::require_non_root`](crate::Config::require_non_root) is on.
    #[error("refusing to run as root (uid 0): run as an unprivileged user")]
    Root,
    /// `no_new_privs` could not be set.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// The process could not be made non-dumpable, or its core file limit could not be set.
    #[error("memory protection: {what}: {source}")]
    ProtectMemory {
        /// What was being set.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The seccomp filter could not be built or installed.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// Landlock failed (not: unsupported, which is reported as such).
    #[error("landlock: {0}")]
    Landlock(String),
    /// A path given to landlock cannot be opened.
    #[error("landlock: cannot open {path} to allow it: {source}")]
    LandlockPath {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Landlock was asked for while other threads run: it would restrict only the calling
    /// thread and the threads it starts, leaving the others unrestricted.
    #[error(
        "landlock: {0} threads are already running; landlock restricts only the calling thread and the threads it starts, so apply the sandbox before starting any thread (before a logger, an async runtime or a thread pool)"
    )]
    ThreadsRunning(u32),
    /// This architecture has no allowlist.
    #[error(
        "seccomp filter: no syscall allowlist for this architecture (x86_64 and aarch64 have one)"
    )]
    UnsupportedArch,
    /// The posture could not be read from `/proc/self`.
    #[error("cannot read this process's posture from /proc/self: {0}")]
    Posture(std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
