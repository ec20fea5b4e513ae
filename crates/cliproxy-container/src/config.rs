use std::sync::Arc;

use serde::Deserialize;

use crate::sandbox::{ProcessSandbox, Sandbox};

/// What [`ProcessSandbox`] applies. Every protection is on by default; a program turns off
/// what it cannot use (`Config { require_non_root: false, ..Config::default() }`). It
/// deserialises from a map of these fields (unknown fields are refused), so it can be one
/// section of a program's own configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Refuse to start as uid 0.
    pub require_non_root: bool,
    /// Set `no_new_privs`: no setuid binary or file capability can raise privileges.
    pub no_new_privs: bool,
    /// Install the seccomp filter built from the syscall allowlist (implies `no_new_privs`).
    pub seccomp: bool,
    /// Restrict the file system with landlock where the kernel supports it (best effort:
    /// an older kernel is reported, never silently ignored).
    pub landlock: bool,
    /// Keep the process's memory from other processes of its user and off the disk: it is
    /// made non-dumpable (`PR_SET_DUMPABLE` 0, so its `/proc/PID/environ`, `mem`, `maps`, ...
    /// belong to root and same-uid ptrace is refused) and its core file size limit is 0.
    /// Turn it off only to attach a debugger or collect a core file.
    pub protect_memory: bool,
}

impl Config {
    /// The sandbox this describes, behind its trait.
    pub fn build(&self) -> Arc<dyn Sandbox> {
        Arc::new(ProcessSandbox::new(self.clone()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            require_non_root: true,
            no_new_privs: true,
            seccomp: true,
            landlock: true,
            protect_memory: true,
        }
    }
}
