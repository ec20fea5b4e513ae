use serde::Deserialize;

/// The `sandbox:` section.
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
}

impl Default for Config {
    fn default() -> Self {
        Self { require_non_root: true, no_new_privs: true, seccomp: true, landlock: true }
    }
}
